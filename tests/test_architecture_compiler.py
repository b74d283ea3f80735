"""The aggregation table (rules W4, W5): one entry per declared aggregation, and a compiler
that branches on no aggregation name, so a new aggregation is one name plus one entry."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import mlforge
import mlforge.compiler
from mlforge.aggregations import AGGREGATIONS, PARTIALS, ZERO_WHEN_EMPTY
from mlforge.definitions.metrics import FUNCTIONS

SRC = Path(mlforge.__file__).parents[1]


def test_the_table_has_one_entry_per_declared_aggregation():
    assert tuple(AGGREGATIONS) == FUNCTIONS
    assert all(name == aggregation.name for name, aggregation in AGGREGATIONS.items())


def test_each_entry_is_made_of_known_partials_or_of_raw_values():
    for aggregation in AGGREGATIONS.values():
        assert set(aggregation.partials) <= set(PARTIALS), aggregation.name
        assert (aggregation.from_partials is None) == aggregation.needs_raw, aggregation.name
    assert [a.name for a in AGGREGATIONS.values() if a.needs_raw] == ["std", "median"]


def test_only_count_and_sum_read_zero_for_an_empty_window():  # contract W4
    assert frozenset({"count", "sum"}) == ZERO_WHEN_EMPTY


def test_a_declared_name_without_a_table_entry_fails_on_import():
    patch = "import mlforge.definitions.metrics as m; m.FUNCTIONS = (*m.FUNCTIONS, 'mode'); import mlforge.aggregations"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", patch], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "'mode'" in result.stderr


def test_the_compiler_names_no_aggregation_and_dispatches_by_no_name():
    tree = ast.parse(Path(mlforge.compiler.__file__).read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef) and node.body and isinstance(node.body[0], ast.Expr)
    }
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and id(node) not in docstrings}
    assert not literals & set(FUNCTIONS)
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "getattr" not in calls

"""Adversarial inputs (issue 16): what an attacker or a careless user gives mlforge.

More than 150 distinct bad inputs across CLI arguments, ``mlforge.yaml``, the definitions,
the data and the REST server. Every case asserts the exit code (or HTTP status), that the
message says what is wrong, where (``(in ...)``) and how to fix it (a ``fix:`` line, or the
``fix`` field of a REST answer), that no traceback is shown, and that nothing was written:
the project tree (sources, store, config) is byte-for-byte as it was (contracts E1-E3).

Each CLI case starts from a copy of a project built once (the helpers of
``test_cli_errors``), breaks one thing, and runs one command in-process.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import test_cli_errors
from mlforge.cli.app import run
from test_cli_errors import NO_ONLINE, append, delete, nothing, replace, write
from test_storage import gcs_endpoint, s3_endpoint  # noqa: F401  (the moto and GCS emulator fixtures)

# The fixtures of test_cli_errors: a sample project built once per module, copied per test.
built_template = test_cli_errors.built_template
project = test_cli_errors.project


# -- what every case checks ----------------------------------------------------------------
def tree(root: Path) -> dict[str, bytes]:
    """Every file of the project (sources, store, config), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def assert_clean_failure(text: str) -> None:
    """What, where and how to fix it; never a traceback (E1, E2)."""
    assert "error: " in text, text
    message = text[text.index("error: ") :]
    assert "(in " in message, f"no 'where' in:\n{message}"
    assert "\n  fix: " in message, f"no fix line in:\n{message}"
    assert "Traceback" not in text and 'File "' not in message.split("fix:")[-1]



@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    says: list[str]
    setup: Callable[[Path], None] = nothing
    env: dict[str, str] = field(default_factory=dict)
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    hidden: tuple[str, ...] = ()


def run_case(case: Case, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    case.setup(root)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = tree(root)
    capsys.readouterr()
    if case.patch is not None:
        with monkeypatch.context() as patched:
            case.patch(patched)
            code = run(case.args)
    else:
        code = run(case.args)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == case.code, text
    for fragment in case.says:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    for secret in case.hidden:
        assert secret not in text, f"the secret {secret!r} was printed:\n{text}"
    assert_clean_failure(captured.err)
    assert tree(root) == before  # E3: nothing written, nothing left behind
    return text


# -- CLI arguments -------------------------------------------------------------------------
ARGS = [
    Case("features-unknown", ["build", "--features", "nope"], 2, ["unknown feature(s) ['nope']", "user_spend"]),
    Case("features-one-unknown", ["build", "--features", "user_spend,nope"], 2, ["['nope']"]),
    Case("features-empty", ["build", "--features", ""], 2, ["no feature names given"]),
    Case("features-commas", ["build", "--features", ",,"], 2, ["no feature names given"]),
    Case("features-path", ["build", "--features", "../x"], 2, ["'../x'"]),
    Case("tags-unknown", ["build", "--tags", "gold"], 2, ["no feature has tag(s) ['gold']"]),
    Case("tags-empty", ["build", "--tags", ""], 2, ["no tags given"]),
    Case("schedule-unknown", ["build", "--schedule", "fortnightly"], 2, ["unknown schedule(s) ['fortnightly']"]),
    Case("schedule-empty", ["build", "--schedule", " "], 2, ["no schedules given"]),
    Case("schedule-list-unknown", ["list", "features", "--schedule", "yearly"], 2, ["unknown schedule(s) ['yearly']"]),
    Case("list-tags-unknown", ["list", "features", "--tags", "gold"], 2, ["no feature has tag(s) ['gold']"]),
    *[
        Case(f"last-{i}", ["build", "--last", value], 2, [fragment])
        for i, (value, fragment) in enumerate([
            ("7x", "unknown unit 'x'"), ("1mo", "months or years"), ("1y", "months or years"), ("soon", "cannot parse duration"),
            ("0d", "0d"), ("7", "'7'"), ("d", "'d'"), ("1.5d", "1.5d"), ("", "duration"), ("7dd", "7dd"), ("1e3s", "1e3s"),
        ])
    ],
    *[
        Case(f"since-{i}", ["build", "--since", value], 2, ["--since"])
        for i, value in enumerate(["yesterday", "2026-13-01", "2026-02-30", "01/02/2026", "", "2026-01-01T25:00"])
    ],
    Case("last-negative", ["build", "--last=-1d"], 2, ["-1d"]),
    Case("until-garbage", ["build", "--until", "later"], 2, ["--until"]),
    Case("last-with-since", ["build", "--last", "7d", "--since", "2026-01-01"], 2, ["--last cannot be combined"]),
    Case("full-refresh-since", ["build", "--full-refresh", "--since", "2026-01-01"], 2, ["--full-refresh cannot be combined"]),
    Case("full-refresh-last", ["build", "--full-refresh", "--last", "7d"], 2, ["--full-refresh cannot be combined"]),
    Case("since-after-until", ["build", "--since", "2026-02-01", "--until", "2026-01-01"], 2, ["is not before --until"]),
    Case("since-equals-until", ["build", "--since", "2026-01-01", "--until", "2026-01-01"], 2, ["is not before --until"]),
    Case("engine-unknown", ["build", "--engine", "spark"], 2, ["spark", "mlforge build --help"]),
    Case("option-unknown", ["build", "--bogus"], 2, ["--bogus"]),
    Case("option-value-missing", ["build", "--features"], 2, ["--features"]),
    Case("online-without-store", ["build", "--online"], 2, ["--online needs an online store"], NO_ONLINE),
    Case("format-unknown", ["list", "features", "--format", "xml"], 2, ["xml"]),
    Case("command-typo", ["bild"], 2, ["bild", "mlforge --help"]),
    Case("subcommand-unknown", ["list", "nope"], 2, ["nope"]),
    Case("versions-dotdot", ["list", "versions", "../x"], 2, ["not allowed"]),
    Case("versions-slash", ["list", "versions", "a/b"], 2, ["not allowed"]),
    Case("versions-empty", ["list", "versions", ""], 2, ["empty"]),
    Case("versions-control", ["list", "versions", "x\x01y"], 2, ["not allowed"]),
    Case("versions-huge", ["list", "versions", "x" * 1000], 2, ["1000"]),
    Case("inspect-unknown-feature", ["inspect", "feature", "nope"], 2, ["unknown feature 'nope'"]),
    Case("inspect-missing-arg", ["inspect", "feature"], 2, ["NAME"]),
    Case("inspect-unknown-version", ["inspect", "feature", "user_spend", "--version", "9.9.9"], 2, ["has no version 9.9.9"]),
    Case("inspect-bad-version", ["inspect", "feature", "user_spend", "--version", "1.x"], 2, ["1.x"]),
    Case("inspect-path-version", ["inspect", "feature", "user_spend", "--version", "../1.0.0"], 2, ["../1.0.0"]),
    Case("inspect-unknown-entity", ["inspect", "entity", "shop"], 2, ["unknown entity 'shop'"]),
    Case("inspect-unknown-source", ["inspect", "source", "nope"], 2, ["nope"]),
    Case("rollback-unknown-feature", ["rollback", "nope", "1.0.0", "--yes"], 2, ["nope"]),
    Case("rollback-unknown-version", ["rollback", "user_spend", "9.9.9", "--yes"], 2, ["9.9.9"]),
    Case("rollback-bad-version", ["rollback", "user_spend", "v1", "--yes"], 2, ["v1"]),
    Case("rollback-both", ["rollback", "user_spend", "1.0.0", "--previous"], 2, ["either a VERSION or --previous"]),
    Case("rollback-neither", ["rollback", "user_spend", "--yes"], 2, ["--previous"]),
    Case("rollback-nothing-earlier", ["rollback", "user_spend", "--previous", "--yes"], 2, ["no version before 1.0.0"]),
    Case("diff-unknown-feature", ["diff", "nope"], 4, ["nope"]),
    Case("diff-unknown-version", ["diff", "user_spend", "1.0.0", "7.0.0"], 4, ["7.0.0"]),
    Case("serve-port-high", ["serve", "--port", "70000"], 2, ["port 70000 is out of range"]),
    Case("serve-port-negative", ["serve", "--port", "-1"], 2, ["-1"]),
    Case("serve-port-text", ["serve", "--port", "abc"], 2, ["abc"]),
    Case("serve-workers-zero", ["serve", "--workers", "0"], 2, ["--workers"]),
    Case("serve-max-batch-zero", ["serve", "--max-batch", "0"], 2, ["--max-batch must be at least 1"]),
    Case("serve-without-online-store", ["serve"], 2, ["online store"], NO_ONLINE),
    Case("init-non-empty", ["init", "."], 2, ["already exists and is not empty"]),
    Case("validate-unknown-feature", ["validate", "--features", "nope"], 2, ["['nope']"]),
    Case("profile-format", ["profile", "--format", "yaml"], 2, ["yaml"]),
    Case("target-missing", ["build", "--target", "elsewhere/definitions.py"], 2, ["does not exist", "--target"]),
    Case("target-not-python", ["list", "features", "--target", "README.md"], 2, ["not a Python file"]),
    Case("target-empty-folder", ["list", "features", "--target", "data"], 2, ["does not exist"]),
    Case("target-env-missing", ["list", "features"], 2, ["does not exist"], env={"MLFORGE_TARGET": "nowhere"}),
]


# -- mlforge.yaml ----------------------------------------------------------------------------
LOCAL = "    offline_store: {KIND: local, path: ./feature_store}\n"
SECRET = "hunter2-Adversarial"


def yaml(dev: str) -> Callable[[Path], None]:
    """An mlforge.yaml whose default profile ``dev`` holds ``dev`` (lines 4 and on)."""
    return write("mlforge.yaml", f"default_profile: dev\nprofiles:\n  dev:\n{dev}")


YAML = [
    Case("yaml-tab", ["list", "features"], 2, ["malformed YAML", "mlforge.yaml:"], write("mlforge.yaml", "profiles:\n\tdev: {}\n")),
    Case("yaml-unclosed-bracket", ["list", "features"], 2, ["malformed YAML"], write("mlforge.yaml", "profiles: {dev: {engine: duckdb}\n")),
    Case("yaml-unclosed-quote", ["list", "features"], 2, ["malformed YAML"], write("mlforge.yaml", 'profiles:\n  dev:\n    engine: "duckdb\n')),
    Case("yaml-bad-indent", ["list", "features"], 2, ["malformed YAML"], write("mlforge.yaml", "profiles:\n  dev:\n    engine: duckdb\n   bad: 1\n")),
    Case("yaml-list", ["list", "features"], 2, ["must be a mapping"], write("mlforge.yaml", "- a\n- b\n")),
    Case("yaml-scalar", ["list", "features"], 2, ["must be a mapping"], write("mlforge.yaml", "just text\n")),
    Case("yaml-unknown-top-key", ["list", "features"], 2, ["unknown top-level key 'profils'", "mlforge.yaml:1"], write("mlforge.yaml", "profils: {}\n")),
    Case("yaml-profiles-list", ["list", "features"], 2, ["'profiles' must be a mapping"], write("mlforge.yaml", "default_profile: dev\nprofiles:\n  - dev\n")),
    Case("yaml-profiles-scalar", ["list", "features"], 2, ["'profiles' must be a mapping"], write("mlforge.yaml", "default_profile: dev\nprofiles: dev\n")),
    Case("yaml-profile-list", ["list", "features"], 2, ["profile 'dev' must be a mapping", "mlforge.yaml:3"], write("mlforge.yaml", "default_profile: dev\nprofiles:\n  dev: [duckdb]\n")),
    Case("yaml-unknown-profile-key", ["list", "features"], 2, ["unknown key 'engin'", "mlforge.yaml:5"], yaml(LOCAL + "    engin: duckdb\n")),
    Case("yaml-unknown-offline-kind", ["list", "features"], 2, ["unknown offline_store KIND 'ftp'", "mlforge.yaml:4"], yaml("    offline_store: {KIND: ftp}\n")),
    Case("yaml-unknown-online-kind", ["list", "features"], 2, ["unknown online_store KIND 'memcached'", "mlforge.yaml:5"], yaml(LOCAL + "    online_store: {KIND: memcached}\n")),
    Case("yaml-kind-missing", ["list", "features"], 2, ["offline_store must be a mapping with a KIND"], yaml("    offline_store: {path: ./fs}\n")),
    Case("yaml-store-scalar", ["list", "features"], 2, ["offline_store must be a mapping with a KIND"], yaml("    offline_store: ./fs\n")),
    Case("yaml-bad-local-option", ["list", "features"], 2, ["unknown option 'pth' for offline_store KIND 'local'"], yaml("    offline_store: {KIND: local, pth: ./fs}\n")),
    Case("yaml-bad-redis-option", ["list", "features"], 2, ["unknown option 'hots' for online_store KIND 'redis'", "host"], yaml(LOCAL + "    online_store: {KIND: redis, hots: x}\n")),
    Case("yaml-redis-port-text", ["list", "features"], 2, ["bad value for online_store KIND 'redis'", "mlforge.yaml:5"], yaml(LOCAL + "    online_store: {KIND: redis, port: abc}\n")),
    Case("yaml-redis-negative-ttl", ["list", "features"], 2, ["ttl must be a positive number"], yaml(LOCAL + "    online_store: {KIND: redis, ttl: -5}\n")),
    Case("yaml-dynamodb-no-table", ["list", "features"], 2, ["needs a table_name"], yaml(LOCAL + "    online_store: {KIND: dynamodb, table_name: ''}\n")),
    Case("yaml-databricks-bad-catalog", ["list", "features"], 2, ["catalog 'a b' is not a valid name"], yaml(LOCAL + "    online_store: {KIND: databricks, catalog: 'a b'}\n")),
    Case("yaml-databricks-bad-sync", ["list", "features"], 2, ["unknown sync_mode 'hourly'"], yaml(LOCAL + "    online_store: {KIND: databricks, catalog: main, sync_mode: hourly}\n")),
    Case("yaml-engine-unknown", ["list", "features"], 2, ["unknown engine 'spark'", "profiles.dev.engine"], yaml(LOCAL + "    engine: spark\n")),
    Case("yaml-engine-number", ["list", "features"], 2, ["unknown engine 3"], yaml(LOCAL + "    engine: 3\n")),
    Case("yaml-engine-list", ["list", "features"], 2, ["unknown engine ['duckdb']"], yaml(LOCAL + "    engine: [duckdb]\n")),
    Case("yaml-duplicate-profile", ["list", "features"], 2, ["profile 'dev' is defined twice", "mlforge.yaml:4"], write("mlforge.yaml", "default_profile: dev\nprofiles:\n  dev: {}\n  dev: {}\n")),
    Case("yaml-duplicate-setting", ["list", "features"], 2, ["key 'engine' is given twice", "mlforge.yaml:6", "line 5"], yaml(LOCAL + "    engine: duckdb\n    engine: polars\n")),
    Case("yaml-duplicate-option", ["list", "features"], 2, ["key 'path' is given twice", "mlforge.yaml:4"], yaml("    offline_store: {KIND: local, path: a, path: b}\n")),
    Case("yaml-duplicate-top-level", ["list", "features"], 2, ["key 'default_profile' is given twice", "mlforge.yaml:2"], write("mlforge.yaml", "default_profile: dev\ndefault_profile: dev\nprofiles: {dev: {}}\n")),
    Case("yaml-duplicate-other-profile", ["list", "features"], 2, ["is given twice", "profiles.prod.engine"], write("mlforge.yaml", "default_profile: dev\nprofiles:\n  dev: {}\n  prod:\n    engine: duckdb\n    engine: polars\n")),
    Case("yaml-unclosed-interpolation", ["list", "features"], 2, ["unclosed interpolation", "mlforge.yaml:4"], yaml('    offline_store: {KIND: local, path: "${oc.env:HOME"}\n')),
    Case("yaml-unclosed-after-valid", ["list", "features"], 2, ["unclosed interpolation"], yaml('    offline_store: {KIND: local, path: "${oc.env:HOME}/${oc.env:USER"}\n')),
    Case("yaml-wrong-resolver", ["list", "features"], 2, ["cannot interpolate '${env:HOME}'"], yaml('    offline_store: {KIND: local, path: "${env:HOME}"}\n')),
    Case("yaml-empty-variable", ["list", "features"], 2, ["cannot interpolate '${oc.env:}'"], yaml('    offline_store: {KIND: local, path: "${oc.env:}"}\n')),
    Case("yaml-bad-variable-name", ["list", "features"], 2, ["cannot interpolate"], yaml('    offline_store: {KIND: local, path: "${oc.env:1BAD}"}\n')),
    Case("yaml-missing-variable", ["list", "features"], 2, ["MLFORGE_ADV_UNSET is not set", "mlforge.yaml:4"], yaml('    offline_store: {KIND: local, path: "${oc.env:MLFORGE_ADV_UNSET}"}\n')),
    Case("yaml-secret-as-port", ["list", "features"], 2, ["option 'port'", "mlforge.yaml:5", "MLFORGE_ADV_SECRET", "***"], yaml(LOCAL + '    online_store: {KIND: redis, port: "${oc.env:MLFORGE_ADV_SECRET}"}\n'), env={"MLFORGE_ADV_SECRET": SECRET}, hidden=(SECRET,)),
    Case("yaml-secret-as-db", ["list", "features"], 2, ["option 'db'", "MLFORGE_ADV_SECRET"], yaml(LOCAL + '    online_store: {KIND: redis, db: "${oc.env:MLFORGE_ADV_SECRET}"}\n'), env={"MLFORGE_ADV_SECRET": SECRET}, hidden=(SECRET,)),
    Case("yaml-secret-as-ttl", ["list", "features"], 2, ["option 'ttl_seconds'", "MLFORGE_ADV_SECRET"], yaml(LOCAL + '    online_store: {KIND: dynamodb, table_name: t, ttl_seconds: "${oc.env:MLFORGE_ADV_SECRET}"}\n'), env={"MLFORGE_ADV_SECRET": SECRET}, hidden=(SECRET,)),
    Case("yaml-secret-as-kind", ["list", "features"], 2, ["unknown offline_store KIND '***'"], yaml('    offline_store: {KIND: "${oc.env:MLFORGE_ADV_SECRET}"}\n'), env={"MLFORGE_ADV_SECRET": SECRET}, hidden=(SECRET,)),
    Case("yaml-secret-as-engine", ["list", "features"], 2, ["unknown engine '***'"], yaml(LOCAL + '    engine: "${oc.env:MLFORGE_ADV_SECRET}"\n'), env={"MLFORGE_ADV_SECRET": SECRET}, hidden=(SECRET,)),
    Case("yaml-secret-inside-url", ["list", "features"], 2, ["option 'port'"], yaml(LOCAL + '    online_store: {KIND: redis, port: "6379-${oc.env:MLFORGE_ADV_SECRET}"}\n'), env={"MLFORGE_ADV_SECRET": SECRET}, hidden=(SECRET,)),
    Case("yaml-unknown-default-profile", ["list", "features"], 2, ["unknown profile 'qa'", "default_profile"], write("mlforge.yaml", "default_profile: qa\nprofiles: {dev: {}}\n")),
    Case("yaml-default-profile-list", ["list", "features"], 2, ["unknown profile"], write("mlforge.yaml", "default_profile: [dev]\nprofiles: {dev: {}}\n")),
    Case("profile-flag-unknown", ["build", "--profile", "staging"], 2, ["unknown profile 'staging'", "dev, prod"]),
    Case("profile-env-unknown", ["list", "features"], 2, ["unknown profile 'staging'"], env={"MLFORGE_PROFILE": "staging"}),
    Case("config-env-missing", ["list", "features"], 2, ["does not exist"], env={"MLFORGE_CONFIG": "nowhere.yaml"}),
    Case("engine-env-unknown", ["build"], 2, ["MLFORGE_ENGINE='spark'"], env={"MLFORGE_ENGINE": "spark"}),
    Case("profile-without-config", ["build", "--profile", "prod"], 2, ["no mlforge.yaml was found"], delete("mlforge.yaml")),
    Case(
        "yaml-read-though-definitions-set-all", ["list", "features"], 2, ["malformed YAML"],
        lambda root: (replace("definitions.py", "features=[features])", 'features=[features], offline_store=mlf.LocalStore("feature_store"), engine="duckdb")')(root), write("mlforge.yaml", "profiles: [\n")(root)),
    ),
]


# -- definitions ---------------------------------------------------------------------------------
def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for step in steps:
            step(root)

    return apply


SPEND_METRICS = 'mlf.Sum("amount", windows=["7d", "30d"], name="total_spend", unit="USD"),'


def metric(new: str) -> Callable[[Path], None]:
    return replace("features.py", SPEND_METRICS, new)


def extra_feature(decorator_args: str, body: str = "return t") -> Callable[[Path], None]:
    return append("features.py", f"\n\n@mlf.feature({decorator_args})\ndef extra(t):\n    {body}\n")


DEFINITIONS = [
    Case("syntax-error", ["build"], 2, ["syntax error", "definitions.py:6"], replace("definitions.py", "import features\n", "import features\n)\n")),
    Case("syntax-error-module", ["list", "features"], 2, ["syntax error", "features.py:"], append("features.py", "\ndef broken(:\n    pass\n")),
    Case("import-raises", ["build"], 2, ["ZeroDivisionError", "features.py"], append("features.py", "\nratio = 1 / 0\n")),
    Case("import-missing-module", ["list", "features"], 2, ["ModuleNotFoundError", "not_a_module_xyz"], append("features.py", "\nimport not_a_module_xyz\n")),
    Case("no-definitions", ["build"], 2, ["defines no Definitions object"], replace("definitions.py", "defs = mlf.Definitions", "spec = dict")),
    Case("two-definitions", ["build"], 2, ["2 Definitions objects"], append("definitions.py", "\nother = mlf.Definitions(name='x', features=[features])\n")),
    Case("no-definitions-file", ["build"], 2, ["no definitions.py found"], delete("definitions.py")),
    Case("window-not-multiple", ["build"], 2, ["window '36h' is not a whole multiple of the interval '1d'"], metric('mlf.Sum("amount", windows=["36h"], name="total_spend"),')),
    Case("window-months", ["build"], 2, ["months or years"], metric('mlf.Sum("amount", windows=["1mo"], name="total_spend"),')),
    Case("window-negative", ["build"], 2, ["-7d"], metric('mlf.Sum("amount", windows=["-7d"], name="total_spend"),')),
    Case("window-none", ["build"], 2, ["window"], metric('mlf.Sum("amount", windows=[], name="total_spend"),')),
    Case("window-garbage", ["build"], 2, ["cannot parse duration"], metric('mlf.Sum("amount", windows=["week"], name="total_spend"),')),
    Case("interval-zero", ["build"], 2, ["0d"], replace("features.py", 'timestamp="event_time",\n    interval="1d",\n    metrics=[\n        mlf.Sum', 'timestamp="event_time",\n    interval="0d",\n    metrics=[\n        mlf.Sum')),
    Case("aggregation-unknown", ["build"], 2, ["'mode'"], metric('mlf.Aggregate("amount", "mode", windows=["7d"]),')),
    Case("metric-field-number", ["build"], 2, ["42"], metric('mlf.Sum(42, windows=["7d"], name="total_spend"),')),
    Case("metric-names-clash", ["build"], 2, ["total_spend_7d"], metric('mlf.Sum("amount", windows=["7d"], name="total_spend"), mlf.Mean("amount", windows=["7d"], name="total_spend"),')),
    Case("metric-name-empty", ["build"], 2, ["name"], metric('mlf.Sum("amount", windows=["7d"], name=""),')),
    Case("two-schedules", ["list", "features"], 2, ["two schedule tags"], replace("features.py", 'tags=["users", "daily"]', 'tags=["users", "daily", "hourly"]')),
    Case("entity-name-path", ["build"], 2, ["../x"], replace("features.py", 'mlf.Entity(name="user"', 'mlf.Entity(name="../x"')),
    Case("entity-join-key-empty", ["build"], 2, ["join_key"], replace("features.py", 'join_key="user_id"', 'join_key=""')),
    Case("entity-from-columns-empty", ["build"], 2, ["from_columns"], replace("features.py", 'join_key="merchant_id"', 'join_key="merchant_id", from_columns=[]')),
    Case("features-not-features", ["build"], 2, ["neither a feature nor a module"], replace("definitions.py", "features=[features]", "features=[features, 42]")),
    Case(
        "features-same-name", ["build"], 2, ["two features are named 'user_spend'"],
        both(
            replace("definitions.py", "features=[features]", "features=[features, user_spend]"),
            replace("definitions.py", "import features\n", "import features\n\n\n@mlf.feature(source='data/users.parquet', keys=['user_id'])\ndef user_spend(t):\n    return t\n"),
        ),
    ),
    Case("feature-engine-unknown", ["build"], 2, ["spark"], extra_feature('source=users, keys=["user_id"], engine="spark"')),
    Case("feature-unknown-argument", ["build"], 2, ["ttl"], extra_feature('source=transactions, keys=["user_id"], timestamp="event_time", interval="1d", ttl="7d", metrics=[mlf.Sum("amount", windows=["7d"])]')),
    Case("validator-bad-range", ["build"], 2, ["in_range"], extra_feature('source=users, keys=["user_id"], validators={"user_id": [mlf.in_range(5, 1)]}')),
    Case("validator-bad-regex", ["build"], 2, ["matches_regex"], extra_feature('source=users, keys=["user_id"], validators={"user_id": [mlf.matches_regex("[")]}')),
    Case("validator-not-a-validator", ["build"], 2, ["validator"], extra_feature('source=users, keys=["user_id"], validators={"user_id": ["not_null"]}')),
    Case("source-unknown-format", ["build"], 2, ["x.xlsx"], extra_feature('source=mlf.Source("data/x.xlsx"), keys=["user_id"]')),
    Case("source-empty", ["build"], 2, ["Source needs a location", "features.py:"], extra_feature('source=mlf.Source(""), keys=["user_id"]')),
    Case("project-engine-unknown", ["build"], 2, ["spark"], replace("definitions.py", "features=[features])", 'features=[features], engine="spark")')),
]


# -- data ----------------------------------------------------------------------------------------
def truncate(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel if not rel.endswith("*") else sorted((root / rel[:-1]).glob("*.parquet"))[0]
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return apply


def block_import(module: str) -> Callable[[pytest.MonkeyPatch], None]:
    def apply(mp: pytest.MonkeyPatch) -> None:
        mp.setitem(sys.modules, module, None)  # as on an install without the extra

    return apply


def disk_full(mp: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(os, "fsync", full)


BAD_CSV = "user_id,ts,amount\nu1,not-a-date,1\nu2,31/31/2026,2\nu3,yesterday,3\n"

DATA = [
    Case("source-missing", ["build", "--features", "user_profile", "--force"], 1, ["users.parquet"], delete("data/users.parquet")),
    Case("source-truncated", ["build", "--features", "user_profile", "--force"], 1, ["users.parquet"], truncate("data/users.parquet")),
    Case("source-not-parquet", ["build", "--features", "user_profile", "--force"], 1, ["users.parquet"], write("data/users.parquet", "user_id,country\nu1,DE\n")),
    Case("source-empty-file", ["build", "--features", "user_profile", "--force"], 1, ["users.parquet"], write("data/users.parquet", "")),
    Case("source-timestamp-missing", ["build", "--features", "user_spend", "--force"], 1, ["timestamp column 'evt_time' is not in the source"], replace("features.py", 'timestamp="event_time",\n    interval="1d",\n    metrics=[\n        mlf.Sum', 'timestamp="evt_time",\n    interval="1d",\n    metrics=[\n        mlf.Sum')),
    Case("source-key-missing", ["build", "--features", "merchant_activity", "--force"], 1, ["shop_id"], replace("features.py", 'join_key="merchant_id"', 'join_key="shop_id"')),
    Case("function-missing-column", ["build", "--features", "user_profile", "--force"], 1, ["birthday"], replace("features.py", '"signup_date")', '"birthday")')),
    Case("function-returns-nothing", ["build", "--features", "user_profile", "--force"], 1, ["user_profile"], replace("features.py", 'return t.select("user_id", "country", "signup_date")', "return None")),
    Case("function-raises", ["build", "--features", "user_profile", "--force"], 1, ["user_profile", "KeyError"], replace("features.py", 'return t.select("user_id", "country", "signup_date")', 'return {}["x"]')),
    Case("validator-greater-than", ["build", "--features", "user_spend", "--force"], 1, ["greater_than(1000)"], replace("features.py", "mlf.greater_than(0)", "mlf.greater_than(1000)")),
    Case("validator-unique", ["build", "--features", "user_profile", "--force"], 1, ["unique"], replace("features.py", '{"user_id": [mlf.not_null(), mlf.unique()]}', '{"country": [mlf.unique()]}')),
    Case("validator-is-in", ["build", "--features", "user_profile", "--force"], 1, ["is_in"], replace("features.py", '{"user_id": [mlf.not_null(), mlf.unique()]}', '{"country": [mlf.is_in(["DE"])]}')),
    Case("validator-missing-column", ["build", "--features", "user_profile", "--force"], 1, ["nope"], replace("features.py", '{"user_id": [mlf.not_null(), mlf.unique()]}', '{"nope": [mlf.not_null()]}')),
    Case("validate-command", ["validate"], 1, ["greater_than(1000)"], replace("features.py", "mlf.greater_than(0)", "mlf.greater_than(1000)")),
    Case(
        "timestamps-unparseable", ["build", "--features", "extra"], 1, ["not-a-date"],
        both(write("data/events.csv", BAD_CSV), extra_feature('source=mlf.Source("data/events.csv", timestamp=mlf.Timestamp("ts", format="%Y-%m-%d")), keys=["user_id"], timestamp="ts"')),
    ),
    Case("stored-file-truncated", ["build", "--features", "user_spend", "--last", "3d", "--force"], 1, ["user_spend 1.0.0", "truncated", ".parquet"], truncate("feature_store/user_spend/1.0.0/data/*")),
    Case("stored-metadata-garbage", ["list", "versions", "user_spend"], 1, ["_metadata.json"], write("feature_store/user_spend/1.0.0/_metadata.json", "{not json")),
    Case("stored-pointer-garbage", ["build", "--features", "user_spend"], 1, ["_latest.json"], write("feature_store/user_spend/_latest.json", "garbage")),
    Case("catalog-table-on-duckdb", ["build"], 2, ["Unity Catalog table", "engine 'duckdb'"], extra_feature('source=mlf.Source("main.sales.orders"), keys=["user_id"]')),
    Case("engine-extra-missing", ["build", "--engine", "polars", "--force"], 2, ["'polars' is not installed", "pip install", "[polars]"], patch=block_import("polars")),
    Case(
        "databricks-online-over-local", ["build", "--online", "--force"], 2, ["requires UnityCatalogStore"],
        yaml(LOCAL + "    online_store: {KIND: databricks, catalog: main}\n"),
    ),
    Case("rollback-disk-full", ["rollback", "user_spend", "1.0.0", "--yes"], 1, ["No space left on device", "_latest.json"], patch=disk_full, setup=lambda root: run(["build", "--features", "user_spend", "--force"])),
    Case("build-disk-full", ["build", "--features", "user_profile", "--force"], 1, ["No space left on device"], patch=disk_full),
]


def assert_once(text: str, fragment: str) -> None:
    assert text.count(fragment) == 1, f"{fragment!r} not exactly once in:\n{text}"


@pytest.mark.parametrize("case", ARGS + YAML + DEFINITIONS + DATA, ids=lambda c: c.id)
def test_bad_input(case: Case, project: Path, monkeypatch, capsys):  # contract E1, E2, E3
    text = run_case(case, project, monkeypatch, capsys)
    if case.id == "engine-extra-missing":
        assert_once(text, "pip install")  # named once, not once per feature


def test_rollback_on_a_full_disk_leaves_no_temp_file(project, monkeypatch, capsys):
    run_case(Case("rollback-disk-full-2", ["rollback", "user_spend", "1.0.0", "--yes"], 1, ["No space left"], patch=disk_full, setup=lambda root: run(["build", "--features", "user_spend", "--force"])), project, monkeypatch, capsys)
    assert not list((project / "feature_store").rglob("*.tmp"))


# -- object stores down (S3 via moto, GCS via the emulator) -----------------------------------
def _dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


OUTAGES = [
    ("s3-missing-bucket", "s3", "{KIND: s3, bucket: no-such-bucket, region: us-east-1, endpoint_url: '%s'}", "bucket 'no-such-bucket' does not exist"),
    ("s3-unreachable", "s3", "{KIND: s3, bucket: b, region: us-east-1, endpoint_url: '%s'}", "the endpoint is unreachable"),
    ("gcs-missing-bucket", "gcs", "{KIND: gcs, bucket: no-such-bucket, endpoint_url: '%s'}", "bucket 'no-such-bucket' does not exist"),
    ("gcs-unreachable", "gcs", "{KIND: gcs, bucket: b, endpoint_url: '%s', retry_timeout: 1}", "the endpoint is unreachable"),
]


@pytest.mark.service
@pytest.mark.parametrize("command", [["list", "versions", "user_spend"], ["build", "--features", "user_profile"]], ids=["list", "build"])
@pytest.mark.parametrize(("name", "kind", "block", "says"), OUTAGES, ids=[o[0] for o in OUTAGES])
def test_object_store_outage_is_a_clear_error(name, kind, block, says, command, project, monkeypatch, capsys, request, tmp_path):
    endpoint = _dead_endpoint() if "unreachable" in name else request.getfixturevalue(f"{kind}_endpoint")
    monkeypatch.setenv("MLFORGE_CACHE_DIR", str(tmp_path / "cache"))
    case = Case(name, command, 1, [says, "fix:"], yaml("    offline_store: " + block % endpoint + "\n"))
    run_case(case, project, monkeypatch, capsys)


# -- hypothesis: whatever a duration or a date is, it is a clean exit 2 ------------------------
DURATION = re.compile(r"^\s*\d+\s*[smhdw]\s*$")


@given(st.text(alphabet=string.ascii_letters + string.digits + " .-+/:", max_size=8).filter(lambda s: not DURATION.match(s.strip())))
def test_any_bad_duration_is_exit_2(text):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = run(["build", "--last", text])  # checked before any project is loaded
    assert code == 2, err.getvalue()
    assert_clean_failure(err.getvalue())


# -- REST --------------------------------------------------------------------------------------
TOKEN = "adversarial-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "content-type": "application/json"}


@pytest.fixture(scope="module")
def rest(tmp_path_factory):
    """A served project: one feature in a MemoryStore, a token, a batch limit of 5."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import mlforge as mlf
    from mlforge.online.memory import MemoryStore
    from mlforge.serve import create_app

    @mlf.feature(source="data/users.parquet", keys=["user_id"])
    def user_profile(t):
        return t

    class Recording(MemoryStore):
        writes = 0

        def write(self, feature, key_columns, batches):
            self.writes += 1
            return super().write(feature, key_columns, batches)

    store = Recording()
    store.write("user_profile", ["user_id"], [{"user_id": "u1", "country": "DE"}])
    defs = mlf.Definitions("adversarial", [user_profile], offline_store=mlf.LocalStore(tmp_path_factory.mktemp("store")), online_store=store)
    with TestClient(create_app(defs, token=TOKEN, max_batch=5, max_body_bytes=4096)) as client:
        yield client, store


def body(value: object) -> bytes:
    return json.dumps(value).encode()


ONLINE = "/features/online"
BATCH = "/features/batch"
REST = [
    # (id, method, path, headers, body, status)
    ("no-token", "POST", ONLINE, {"content-type": "application/json"}, body({"features": ["user_profile"], "entity": {"user_id": "u1"}}), 401),
    ("wrong-token", "POST", ONLINE, {"Authorization": "Bearer nope", "content-type": "application/json"}, body({"features": ["user_profile"], "entity": {"user_id": "u1"}}), 401),
    ("basic-scheme", "POST", ONLINE, {"Authorization": f"Basic {TOKEN}"}, body({"features": ["user_profile"], "entity": {"user_id": "u1"}}), 401),
    ("token-on-get", "GET", "/features", {}, None, 401),
    ("token-prefix", "GET", "/features", {"Authorization": f"Bearer {TOKEN[:-1]}"}, None, 401),
    ("not-json", "POST", ONLINE, JSON, b"{not json", 422),
    ("empty-body", "POST", ONLINE, JSON, b"", 422),
    ("json-list", "POST", ONLINE, JSON, body([1, 2]), 422),
    ("json-string", "POST", ONLINE, JSON, body("user_profile"), 422),
    ("features-string", "POST", ONLINE, JSON, body({"features": "user_profile", "entity": {"user_id": "u1"}}), 422),
    ("features-empty", "POST", ONLINE, JSON, body({"features": [], "entity": {"user_id": "u1"}}), 422),
    ("features-numbers", "POST", ONLINE, JSON, body({"features": [1], "entity": {"user_id": "u1"}}), 422),
    ("entity-missing", "POST", ONLINE, JSON, body({"features": ["user_profile"]}), 422),
    ("entity-empty", "POST", ONLINE, JSON, body({"features": ["user_profile"], "entity": {}}), 422),
    ("entity-list", "POST", ONLINE, JSON, body({"features": ["user_profile"], "entity": ["u1"]}), 422),
    ("entity-nested", "POST", ONLINE, JSON, body({"features": ["user_profile"], "entity": {"user_id": {"$gt": ""}}}), 422),
    ("entity-nan", "POST", ONLINE, JSON, b'{"features": ["user_profile"], "entity": {"user_id": NaN}}', 422),
    ("entity-infinity", "POST", ONLINE, JSON, b'{"features": ["user_profile"], "entity": {"user_id": Infinity}}', 422),
    ("entity-minus-infinity", "POST", ONLINE, JSON, b'{"features": ["user_profile"], "entity": {"user_id": -Infinity}}', 422),
    ("entity-wrong-key", "POST", ONLINE, JSON, body({"features": ["user_profile"], "entity": {"uid": "u1"}}), 422),
    ("extra-field", "POST", ONLINE, JSON, body({"features": ["user_profile"], "entity": {"user_id": "u1"}, "debug": True}), 422),
    ("unknown-feature", "POST", ONLINE, JSON, body({"features": ["nope"], "entity": {"user_id": "u1"}}), 404),
    ("feature-path", "POST", ONLINE, JSON, body({"features": ["../x"], "entity": {"user_id": "u1"}}), 404),
    ("batch-entities-missing", "POST", BATCH, JSON, body({"features": ["user_profile"]}), 422),
    ("batch-entities-empty", "POST", BATCH, JSON, body({"features": ["user_profile"], "entities": []}), 422),
    ("batch-entity-scalar", "POST", BATCH, JSON, body({"features": ["user_profile"], "entities": ["u1"]}), 422),
    ("batch-unknown-feature", "POST", BATCH, JSON, body({"features": ["nope"], "entities": [{"user_id": "u1"}]}), 404),
    ("batch-over-limit", "POST", BATCH, JSON, body({"features": ["user_profile"], "entities": [{"user_id": f"u{i}"} for i in range(6)]}), 413),
    ("body-over-limit", "POST", BATCH, JSON, body({"features": ["user_profile"], "entities": [{"user_id": "u" * 100}] * 50}), 413),
    ("unknown-route", "GET", "/nope", AUTH, None, 404),
    ("unknown-route-post", "POST", "/admin", JSON, body({}), 404),
    ("unknown-feature-detail", "GET", "/features/nope", AUTH, None, 404),
    ("get-on-post-route", "GET", ONLINE, AUTH, None, 405),
    ("get-on-batch", "GET", BATCH, AUTH, None, 405),
    ("delete-features", "DELETE", "/features", AUTH, None, 405),
    ("put-online", "PUT", ONLINE, JSON, body({}), 405),
]


@pytest.mark.parametrize(("method", "path", "headers", "payload", "status"), [r[1:] for r in REST], ids=[r[0] for r in REST])
def test_bad_request(rest, method, path, headers, payload, status):  # contract O3
    client, store = rest
    writes = store.writes
    answer = client.request(method, path, headers=headers, content=payload)
    assert answer.status_code == status, answer.text
    reply = answer.json()
    assert reply.get("detail") and reply.get("fix"), reply  # what (and where), and how to fix it
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    assert store.writes == writes and store.read("user_profile", [{"user_id": "u1"}]) == [{"user_id": "u1", "country": "DE"}]  # nothing written


@pytest.mark.parametrize("failure", [AttributeError("'NoneType' object has no attribute 'sendall'"), ConnectionResetError("reset"), RuntimeError("boom"), KeyError("x")], ids=lambda e: type(e).__name__)
def test_any_store_client_failure_is_503(tmp_path, failure):  # contract O3, issue 16
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import mlforge as mlf
    from mlforge.online.memory import MemoryStore
    from mlforge.serve import create_app

    class Flaky(MemoryStore):
        def read(self, feature, keys):
            raise failure

    @mlf.feature(source="data/users.parquet", keys=["user_id"])
    def user_profile(t):
        return t

    defs = mlf.Definitions("flaky", [user_profile], offline_store=mlf.LocalStore(tmp_path / "s"), online_store=Flaky())
    with TestClient(create_app(defs, token="")) as client:
        answer = client.post(ONLINE, json={"features": ["user_profile"], "entity": {"user_id": "u1"}})
    assert answer.status_code == 503 and answer.json()["fix"], answer.text
    assert type(failure).__name__ in answer.json()["detail"] and "Traceback" not in answer.text


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8))
def test_any_json_body_is_answered_without_a_500(rest, value):
    client, _ = rest
    answer = client.post(ONLINE, headers=JSON, content=body(value))
    assert answer.status_code in (200, 404, 413, 422), answer.text
    if answer.status_code != 200:
        assert answer.json()["fix"]


def test_at_least_150_distinct_bad_inputs():
    cli = ARGS + YAML + DEFINITIONS + DATA
    assert len({c.id for c in cli}) == len(cli)
    counts = {"cli arguments": len(ARGS), "mlforge.yaml": len(YAML), "definitions": len(DEFINITIONS), "data": len(DATA) + 2 * len(OUTAGES), "rest": len(REST) + 4}
    assert sum(counts.values()) >= 150, counts  # 227 at the time of writing, besides the hypothesis draws


def test_an_engines_own_full_disk_error_says_to_free_space(tmp_path):  # contract E1
    """DuckDB reports a full disk as its own IOException, not an OSError."""
    import duckdb

    from mlforge.engines import get_engine
    from mlforge.errors import StoreError
    from mlforge.materialize import engine_failure
    from test_incremental import _feature

    failure = duckdb.IOException(f'IO Error: Could not write file "{tmp_path}/x.tmp": No space left on device')
    error = engine_failure(_feature(str(tmp_path / "events.parquet")), get_engine("duckdb"), failure)
    assert isinstance(error, StoreError) and "No space left on device" in error.what
    assert error.fix is not None and "free space" in error.fix and error.where == "feature 'spend'"

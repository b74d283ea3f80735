"""Version commands on bad input: ``diff`` of a damaged version, ``manifest --output`` to a
path that cannot be a file, ``diff`` / ``rollback`` of a feature that does not exist.

Each case runs the command line in-process on a copy of a built sample project.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import test_cli_errors
from mlforge.cli.app import run
from test_cli_errors import replace, store_snapshot

built_template = test_cli_errors.built_template
project = test_cli_errors.project

AVAILABLE = "available: merchant_activity, user_profile, user_spend"


def invoke(capsys, *tokens: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(tokens))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- diff reads both versions' files only as their records say (S7) ---------------------------
def damage(data: Path, how: str) -> str:
    """Damage one version's data directory; the name of the file the error must give."""
    first = sorted(data.glob("*.parquet"))[0]
    if how == "deleted":
        first.unlink()
    elif how == "truncated":
        half = first.read_bytes()[: first.stat().st_size // 2]
        first.unlink()  # versions may share a file by a hard link: damage this version's only
        first.write_bytes(half)
    else:  # a foreign file beside the listed ones
        shutil.copyfile(first, data / "zz-foreign.parquet")
        return "zz-foreign.parquet"
    return first.name


@pytest.mark.parametrize("version", ["1.0.0", "1.0.1"])
@pytest.mark.parametrize("how", ["deleted", "truncated", "foreign"])
def test_diff_of_a_damaged_version_is_an_error(project, capsys, how, version):  # contract S7, S4
    assert invoke(capsys, "build", "--features", "user_spend", "--force")[0] == 0
    code, out, _ = invoke(capsys, "diff", "user_spend", "1.0.0", "1.0.1", "--format", "json")
    assert code == 0 and json.loads(out)["kind"] == "NONE"  # the same rows, rebuilt
    name = damage(project / "feature_store" / "user_spend" / version / "data", how)
    code, out, err = invoke(capsys, "diff", "user_spend", "1.0.0", "1.0.1", "--format", "json")
    assert code == 4, out + err  # never PATCH "new data" (exit 1)
    assert out == ""
    assert f"data file {name!r} of user_spend {version}" in err and "fix:" in err
    assert "Traceback" not in err


# -- manifest --output (E1, E2) -------------------------------------------------------------
@pytest.mark.parametrize("where", ["missing-directory", "a-directory"])
def test_manifest_output_that_cannot_be_a_file_is_a_bad_argument(project, capsys, where):  # contract E1, E2
    output = project / "no-such-dir" / "m.json" if where == "missing-directory" else project
    code, out, err = invoke(capsys, "manifest", "--output", str(output))
    assert (code, out) == (2, ""), err
    assert "unexpected error" not in err and "Traceback" not in err
    assert str(output) in err and "(in --output)" in err and "fix:" in err
    assert not (project / "no-such-dir").exists()


def test_manifest_output_writes_the_file(project, capsys):
    code, _, err = invoke(capsys, "manifest", "--output", "m.json")
    assert code == 0 and "wrote m.json" in err
    assert "user_spend" in json.loads((project / "m.json").read_text())["features"]


# -- an undefined, never stored feature is unknown (E1, E2; S4: diff errors exit 4) ---------
@pytest.mark.parametrize(
    ("tokens", "exit_code"),
    [
        (["diff", "nope"], 4),
        (["diff", "nope", "1.0.0", "1.0.1"], 4),
        (["rollback", "nope", "1.0.0", "-y"], 2),
        (["rollback", "nope", "--previous", "-y"], 2),
    ],
    ids=["diff", "diff-versions", "rollback", "rollback-previous"],
)
def test_diff_and_rollback_of_an_unknown_feature(project, capsys, tokens, exit_code):  # contract E1, E2, S4
    before = store_snapshot(project)
    code, _, err = invoke(capsys, *tokens)
    assert code == exit_code, err
    assert "unknown feature 'nope'" in err and AVAILABLE in err
    assert f"(in `mlforge {' '.join(tokens)}`)" in err
    assert "has not been built" not in err and "has no version" not in err
    assert store_snapshot(project) == before


def test_a_stored_feature_no_longer_defined_is_not_unknown(project, capsys):  # contract S4
    replace("features.py", "def user_profile(", "def user_profile_v2(")(project)
    code, out, err = invoke(capsys, "diff", "user_profile")
    assert code == 0 and "nothing to compare" in out, err
    code, out, err = invoke(capsys, "rollback", "user_profile", "1.0.0", "-y")
    assert code == 0 and "latest is now 1.0.0" in out, err


def test_manifest_output_is_relative_to_where_the_command_runs(project, capsys, monkeypatch):  # contract E2
    # The project is found from a sub-folder and load() moves into it: --output was checked
    # in one directory and written in another.
    below = project / "reports"
    (below / "out").mkdir(parents=True)
    monkeypatch.chdir(below)
    code, _, err = invoke(capsys, "manifest", "--output", "out/m.json")
    assert code == 0, err
    assert (below / "out" / "m.json").is_file() and not (project / "out").exists()

"""The command line: parsing of every command, and end to end on a real project.

Most tests run the app in-process (fast); a few run ``python -m mlforge`` in a subprocess
to check the entry point, the exit codes and what reaches stdout when piped.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import CLI_ENV as ENV_VARS
from mlforge.cli import COMMANDS, fast_help
from mlforge.cli.app import make_app, run
from mlforge.cli.templates import write_project


def parse(*tokens: str):
    command, bound, _ = make_app().parse_args(list(tokens), exit_on_error=False, print_error=False)
    return command.__name__, bound.args, bound.kwargs


# -- parsing: one test per command ---------------------------------------------------------
def test_parse_init():
    assert parse("init", "demo", "--online", "redis", "--store", "s3", "--engine", "polars") == (
        "init", ("demo",), {"online": "redis", "store": "s3", "engine": "polars"},
    )


def test_parse_build():
    name, args, kwargs = parse(
        "build", "--features", "a,b", "--tags", "t", "--schedule", "daily", "--engine", "polars", "--online",
        "--since", "2026-01-01", "--until", "2026-01-15", "--force", "--preview", "--format", "json",
        "--profile", "prod", "--target", "x/definitions.py", "--verbose",
    )
    assert name == "build" and args == ()
    common = kwargs.pop("common")
    assert kwargs == {
        "features": "a,b", "tags": "t", "schedule": "daily", "engine": "polars", "online": True,
        "since": "2026-01-01", "until": "2026-01-15", "force": True, "preview": True, "format": "json",
    }
    assert (common.profile, str(common.target), common.verbose) == ("prod", "x/definitions.py", True)
    assert parse("build", "--last", "7d", "--full-refresh")[2] == {"last": "7d", "full_refresh": True}


def test_parse_validate():
    assert parse("validate", "-f", "a", "--engine", "duckdb") == ("validate", (), {"features": "a", "engine": "duckdb"})


@pytest.mark.parametrize("what", ["features", "entities", "sources"])
def test_parse_list(what):
    assert parse("list", what, "--format", "json") == (what, (), {"format": "json"})


def test_parse_list_features_filters():
    assert parse("list", "features", "--schedule", "daily", "--tags", "users")[2] == {"schedule": "daily", "tags": "users"}


def test_parse_list_versions():
    assert parse("list", "versions", "user_spend") == ("versions", ("user_spend",), {})


@pytest.mark.parametrize("what", ["feature", "entity", "source"])
def test_parse_inspect(what):
    assert parse("inspect", what, "x") == (what, ("x",), {})


def test_parse_inspect_version():
    assert parse("inspect", "feature", "x", "--version", "1.2.0")[2] == {"version": "1.2.0"}


def test_parse_diff():
    assert parse("diff", "f") == ("diff", ("f",), {})
    assert parse("diff", "f", "1.0.0", "1.1.0", "--format", "json") == ("diff", ("f", "1.0.0", "1.1.0"), {"format": "json"})


def test_parse_rollback():
    assert parse("rollback", "f", "1.0.0", "--dry-run") == ("rollback", ("f", "1.0.0"), {"dry_run": True})
    assert parse("rollback", "f", "--previous", "--yes") == ("rollback", ("f",), {"previous": True, "yes": True})


def test_parse_sync_manifest_profile():
    assert parse("sync", "--force") == ("sync", (), {"force": True})
    assert parse("manifest", "--output", "m.json")[2]["output"] == Path("m.json")
    assert parse("profile", "--validate") == ("profile", (), {"validate": True})


def test_parse_migrate():
    assert parse("migrate", "old_store", "--to", "new_store", "--features", "a,b", "--dry-run", "--format", "json") == (
        "migrate", (Path("old_store"),), {"to": Path("new_store"), "features": "a,b", "dry_run": True, "format": "json"},
    )


def test_parse_serve(monkeypatch):
    monkeypatch.delenv("MLFORGE_SERVE_TOKEN", raising=False)
    assert parse("serve", "--host", "0.0.0.0", "--port", "9000", "--workers", "2", "--token", "s3cret") == (
        "serve", (), {"host": "0.0.0.0", "port": 9000, "workers": 2, "token": "s3cret"},
    )
    monkeypatch.setenv("MLFORGE_SERVE_TOKEN", "from-env")
    assert parse("serve")[2]["token"] == "from-env"


def test_every_command_is_registered_and_has_help():
    app = make_app()
    for name, (_, summary) in COMMANDS.items():
        assert name in app and summary
    text = fast_help()
    assert all(name in text for name in COMMANDS)


# -- fast, light entry points ---------------------------------------------------------------
def test_help_and_import_stay_light():
    code = (
        "import sys, io, contextlib, mlforge, mlforge.cli\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try: mlforge.cli.main(['--help'])\n"
        "    except SystemExit as e: assert e.code == 0\n"
        "assert 'build' in buf.getvalue()\n"
        "heavy = [m for m in ('ibis', 'duckdb', 'rich', 'cyclopts', 'pyarrow', 'pydantic') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_python_m_mlforge_version():
    done = subprocess.run([sys.executable, "-m", "mlforge", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "mlforge 0.8.0"


def test_command_help(capsys):
    assert run(["build", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--full-refresh" in text and "--preview" in text and "--verbose" in text


# -- end to end on a real project -----------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A sample project built once, shared by the end-to-end tests of this module."""
    root = tmp_path_factory.mktemp("cli") / "shop"
    write_project(root, online=None, store="local", engine="duckdb")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for var in ENV_VARS:
            mp.delenv(var, raising=False)
        assert run(["build", "--format", "json"]) == 0
    return root


@pytest.fixture
def cli(project, monkeypatch, run_cli):
    monkeypatch.chdir(project)
    return run_cli


def test_first_build_published_every_feature(project):
    for name in ("user_spend", "merchant_activity", "user_profile"):
        assert (project / "feature_store" / name / "1.0.0" / "_metadata.json").is_file()


def test_second_build_skips_and_json_is_machine_readable(cli):
    code, out, _ = cli("build", "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert payload["ok"] is True
    assert {f["name"]: f["status"] for f in payload["features"]} == {
        "user_spend": "skipped", "merchant_activity": "skipped", "user_profile": "skipped",
    }


def test_build_table_summary_and_preview(cli):
    code, out, err = cli("build", "--features", "user_profile", "--preview")
    assert code == 0
    assert "0 built, 1 skipped, 0 failed" in out
    assert "user_profile (first 5 rows)" in out and "u000" in out
    assert "user_profile" in err  # the per-feature status line goes to stderr


def test_build_by_schedule_only_builds_that_schedule(cli):  # contract I2
    code, out, _ = cli("build", "--schedule", "daily", "--format", "json")
    assert code == 0
    assert [f["name"] for f in json.loads(out)["features"]] == ["user_spend"]


def test_build_by_tag(cli):
    code, out, _ = cli("build", "--tags", "merchants", "--format", "json")
    assert code == 0 and [f["name"] for f in json.loads(out)["features"]] == ["merchant_activity"]


def test_list_features_json_and_schedule_filter(cli):  # contract I2
    code, out, _ = cli("list", "features", "--format", "json")
    assert code == 0
    rows = {r["feature"]: r for r in json.loads(out)}
    assert set(rows) == {"user_spend", "merchant_activity", "user_profile"}
    assert rows["user_spend"]["schedule"] == "daily" and rows["user_spend"]["latest"] is not None
    code, out, _ = cli("list", "features", "--schedule", "daily", "--format", "json")
    assert [r["feature"] for r in json.loads(out)] == ["user_spend"]
    code, out, _ = cli("list", "features", "--schedule", "daily,weekly", "--format", "json")
    assert sorted(r["feature"] for r in json.loads(out)) == ["merchant_activity", "user_spend"]


def test_list_entities_and_sources(cli):
    code, out, _ = cli("list", "entities", "--format", "json")
    assert code == 0 and {r["entity"] for r in json.loads(out)} == {"user", "merchant"}
    code, out, _ = cli("list", "sources", "--format", "json")
    assert code == 0 and {r["source"] for r in json.loads(out)} == {"transactions", "users"}
    code, out, _ = cli("list", "sources")
    assert code == 0 and "data/transactions.parquet" in out


def test_list_versions(cli):
    code, out, _ = cli("list", "versions", "user_profile", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["version"] == "1.0.0" and [r["latest"] for r in rows] == [False] * (len(rows) - 1) + [True]


def test_inspect_feature_entity_source(cli):
    code, out, _ = cli("inspect", "feature", "user_spend", "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert payload["definition"]["keys"] == ["user_id"]
    assert "total_spend_7d" in payload["stored"]["schema"]
    code, out, _ = cli("inspect", "feature", "user_spend", "--version", "1.0.0")
    assert code == 0 and "stored version 1.0.0" in out and "total_spend_30d" in out
    code, out, _ = cli("inspect", "entity", "user", "--format", "json")
    assert code == 0 and json.loads(out)["features"] == ["user_profile", "user_spend"]
    code, out, _ = cli("inspect", "source", "transactions")
    assert code == 0 and "merchant_activity" in out


def test_validate_passes(cli):
    code, out, _ = cli("validate", "--format", "json")
    assert code == 0
    assert {r["status"] for r in json.loads(out)} == {"ok"}


def test_profile_shows_origin(cli, monkeypatch):
    monkeypatch.setenv("MLFORGE_ENGINE", "polars")
    code, out, _ = cli("profile", "--format", "json")
    assert code == 0
    settings = {r["setting"]: r for r in json.loads(out)["settings"]}
    assert settings["profile"]["value"] == "dev"
    assert (settings["engine"]["value"], settings["engine"]["from"]) == ("polars", "env")
    assert settings["engine"]["mlforge.yaml"] == "duckdb"  # the file's own value, not the env's
    code, out, _ = cli("profile", "--validate")
    assert code == 0 and "offline_store answers" in out


def test_target_flag_runs_from_elsewhere(cli, project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("list", "features", "--target", str(project), "--format", "json")
    assert code == 0 and len(json.loads(out)) == 3


def test_target_from_environment(cli, project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFORGE_TARGET", str(project / "definitions.py"))
    code, _out, _ = cli("list", "entities", "--format", "json")
    assert code == 0


def test_profile_flag_replaces_the_stores(cli, project, tmp_path):
    other = tmp_path / "other-store"
    config = project / "mlforge.yaml"
    original = config.read_text()
    try:
        config.write_text(original + f"  elsewhere:\n    offline_store:\n      KIND: local\n      path: {other}\n")
        code, out, _ = cli("build", "--features", "user_profile", "--profile", "elsewhere", "--format", "json")
        assert code == 0 and json.loads(out)["features"][0]["status"] == "built"
        assert (other / "user_profile" / "1.0.0").is_dir()
    finally:
        config.write_text(original)


def test_force_publishes_a_patch_version(project, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(copy)
    assert run(["build", "--features", "user_profile", "--force", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)["features"][0]
    assert (result["status"], result["version"]) == ("built", "1.0.1")


def test_piped_stdout_holds_only_the_result(project):
    """Through a pipe, stdout is exactly the JSON result; progress stays on stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    done = subprocess.run(
        [sys.executable, "-m", "mlforge", "list", "features", "--format", "json"],
        cwd=project, capture_output=True, text=True, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3
    assert "\x1b[" not in done.stdout  # no colour codes in a pipe


def test_subprocess_exit_code_for_bad_arguments(project):  # contract E2
    done = subprocess.run([sys.executable, "-m", "mlforge", "build", "--last", "7d", "--since", "2026-01-01"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.startswith("error: --last cannot be combined")


# -- version commands (core functions in mlforge.operations) ----------------------
@pytest.fixture
def operations():
    return pytest.importorskip("mlforge.operations")


@pytest.fixture
def versioned(project, tmp_path, monkeypatch, capsys):
    """A copy of the project where user_profile has versions 1.0.0 and 1.0.1."""
    copy = tmp_path / "versions"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(copy)
    assert run(["build", "--features", "user_profile", "--force"]) == 0
    capsys.readouterr()
    return copy


def test_diff_exit_code_is_the_change_kind(operations, versioned, capsys):  # contract S4
    code = run(["diff", "user_profile", "1.0.0", "1.0.0", "--format", "json"])
    assert code == 0, capsys.readouterr()
    assert json.loads(capsys.readouterr().out)["exit_code"] == 0
    code = run(["diff", "user_profile", "--format", "json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == payload["exit_code"] in (0, 1, 2, 3)
    assert run(["diff", "user_profile", "1.0.0", "7.7.7"]) == 4


def test_diff_after_a_rollback_to_the_first_version_names_a_pair_to_compare(operations, versioned, capsys):  # contract S4, E1
    assert run(["rollback", "user_profile", "1.0.0", "--yes"]) == 0
    capsys.readouterr()
    assert run(["diff", "user_profile"]) == 4
    message = capsys.readouterr().err
    assert "has no version before 1.0.0" in message and "`mlforge diff user_profile 1.0.0 1.0.1`" in message


def test_diff_of_a_feature_with_one_version_exits_0(cli):
    code, out, err = cli("diff", "merchant_activity")
    assert (code, err) == (0, "") and "merchant_activity has one version (1.0.0): nothing to compare with yet" in out
    code, out, _ = cli("diff", "merchant_activity", "--format", "json")
    assert code == 0 and json.loads(out)["exit_code"] == 0
    assert cli("diff", "merchant_activity", "1.0.0", "9.9.9")[0] == 4  # an explicit unknown version is still an error


def test_rollback_moves_only_the_pointer(operations, versioned, capsys):  # contract S4
    store = versioned / "feature_store" / "user_profile"
    assert run(["rollback", "user_profile", "--previous", "--dry-run"]) == 0
    assert json.loads((store / "_latest.json").read_text())["version"] == "1.0.1"
    assert run(["rollback", "user_profile", "1.0.0", "--yes"]) == 0
    assert json.loads((store / "_latest.json").read_text())["version"] == "1.0.0"
    assert (store / "1.0.1").is_dir()
    assert "latest is now 1.0.0" in capsys.readouterr().out


def test_rollback_without_yes_in_a_pipe_refuses(operations, versioned, monkeypatch, capsys):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    assert run(["rollback", "user_profile", "1.0.0"]) == 2
    assert "--yes" in capsys.readouterr().err


def test_manifest_is_json(operations, versioned, capsys):
    assert run(["manifest"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)


def test_rich_lives_only_in_cli():  # STYLE 13: the library logs, only cli/ prints
    src = Path(__file__).resolve().parents[1] / "src" / "mlforge"
    offenders = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if "cli" not in path.relative_to(src).parts and ("import rich" in path.read_text() or "from rich" in path.read_text())
    ]
    assert offenders == []


def test_global_options_may_come_before_the_command(cli):
    code, out, _ = cli("--verbose", "--profile", "dev", "list", "features", "--format", "json")
    assert code == 0 and len(json.loads(out)) == 3
    code, _out, err = cli("-v", "build", "--features", "nope")
    assert code == 2 and "Traceback" in err


def test_serve_wires_project_and_options(cli, project, monkeypatch):
    import types

    calls = []
    fake = types.ModuleType("mlforge.serve")
    fake.run = lambda defs, **kwargs: calls.append((defs, kwargs))
    from mlforge.serve import given_token

    fake.given_token = given_token
    monkeypatch.setitem(sys.modules, "mlforge.serve", fake)
    code, _out, err = cli("serve", "--port", "9123", "--workers", "2", "--token", "t0k", "--profile", "dev")
    assert code == 0, err
    defs, kwargs = calls[0]
    assert defs.name == "shop"
    assert kwargs["port"] == 9123 and kwargs["workers"] == 2 and kwargs["token"] == "t0k"
    assert kwargs["target"] == str(project / "definitions.py") and kwargs["profile"] == "dev"


def test_build_online_with_a_memory_profile(project, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlforge.online.memory")
    copy = tmp_path / "online"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "mlforge.yaml"
    config.write_text(config.read_text() + "  cache:\n    offline_store: {KIND: local, path: ./feature_store}\n    online_store: {KIND: memory}\n")
    monkeypatch.chdir(copy)
    assert run(["build", "--features", "user_profile", "--profile", "cache", "--online", "--format", "json"]) == 0, capsys.readouterr()
    assert json.loads(capsys.readouterr().out)["features"][0]["status"] in ("built", "skipped")


# -- progress: a terminal, a pipe, --quiet, --log-format json -------------------------------
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _copy(project, tmp_path, monkeypatch, name="copy"):
    copy = tmp_path / name
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(copy)
    return copy


def _expected_last_range(copy, days: int) -> str:
    """The range `--last Nd` recomputes on the sample data, which ended before today."""
    import pyarrow.parquet as pq

    newest = max(pq.read_table(copy / "data" / "transactions.parquet").column("event_time").to_pylist())
    since = (newest - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    return f"[{since:%Y-%m-%dT%H:%M:%SZ}, ∞)"


def test_build_in_a_terminal_shows_stages_and_the_range(project, tmp_path, monkeypatch):
    """A pseudo-terminal: the live display and one line per finished stage, with the
    range `--last` chose (counted back from the data's end, not from today)."""
    copy = _copy(project, tmp_path, monkeypatch)
    primary, secondary = pty.openpty()
    env = {**{k: v for k, v in os.environ.items() if k not in ENV_VARS}, "COLUMNS": "200", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    done = subprocess.Popen(
        [sys.executable, "-m", "mlforge", "build", "--features", "user_spend,merchant_activity", "--last", "3d", "--force"],
        cwd=copy, stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert done.wait(timeout=120) == 0
    text = b"".join(chunks).decode()
    assert "\x1b[" in text  # rich drew on a terminal
    lines = [ANSI.sub("", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    expected = _expected_last_range(copy, 3)
    for name in ("user_spend", "merchant_activity"):
        assert any(re.fullmatch(rf"{name} read/plan +\d+\.\d\ds", line) for line in lines), lines
        compute = [line for line in lines if re.match(rf"{name} compute +\d+\.\d\ds  range ", line)]
        assert compute and f"range {expected} (--last counted back from the newest event" in compute[0]
        assert any(re.fullmatch(rf"{name} write +\d+\.\d\ds  [\d,]+ rows", line) for line in lines), lines
        assert any(re.match(rf"✓ {name} built 1\.0\.1 · [\d,]+ rows written", line) for line in lines), lines
    assert any(expected in line and "│" in line for line in lines)  # the table's range column


def test_build_in_a_pipe_prints_one_line_per_feature(project, tmp_path, monkeypatch, capsys):
    _copy(project, tmp_path, monkeypatch)
    capsys.readouterr()
    assert run(["build", "--force"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert [line.split(" ")[:3] for line in lines] == [["✓", name, "built"] for name in ("user_spend", "merchant_activity", "user_profile")]
    for line in lines:
        assert re.search(r" · [\d,]+ rows written · range (full|\[\S+, \S+\)) · read/plan \d+\.\d\ds, compute \d+\.\d\ds, write \d+\.\d\ds \(\d+\.\d\ds\)$", line), line
    assert "range recomputed" in captured.out and "rows written" in captured.out and "3 built, 0 skipped, 0 failed" in captured.out


def test_build_quiet_prints_nothing_but_errors(cli):
    code, out, err = cli("build", "--quiet")
    assert (code, out, err) == (0, "", "")


def test_build_log_format_json_is_one_object_per_line(project, tmp_path, monkeypatch, capsys):
    _copy(project, tmp_path, monkeypatch)
    capsys.readouterr()
    assert run(["build", "--features", "user_profile", "--force", "--log-format", "json", "--format", "json"]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.err.strip().splitlines()]
    assert [(e["event"], e.get("stage")) for e in events] == [
        ("stage_start", "read/plan"), ("stage_end", "read/plan"), ("stage_start", "compute"), ("stage_end", "compute"),
        ("stage_start", "write"), ("stage_end", "write"), ("feature", None),
    ]
    assert events[-1]["status"] == "built" and events[-1]["rows_written"] == events[5]["rows"] > 0
    assert all(e["time"].endswith("+00:00") for e in events)
    assert json.loads(captured.out)["ok"] is True


@pytest.mark.parametrize("args", [["--help"], ["build", "--help"], ["--version"]])
def test_a_reader_that_goes_away_is_no_failure(args, tmp_path):
    """`mlforge build --help | head -1`: the reader closes the pipe before the command
    writes. No traceback, and not exit 1 (a failed build, E2): the shell's SIGPIPE code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFORGE_")}
    child = subprocess.Popen([sys.executable, "-m", "mlforge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # long before the interpreter has started and written anything
    code = child.wait(timeout=120)
    assert (code, child.stderr.read().decode()) == (141, "")


def test_diff_shows_a_moved_watermark_as_inspect_does(tmp_path, monkeypatch, capsys):  # contract S4
    from datetime import UTC, datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    def events(days: int) -> None:
        ts = [datetime(2026, 1, 1 + d, 12, tzinfo=UTC) for d in range(days)]
        pq.write_table(pa.table({"user_id": ["u1"] * days, "ts": ts, "amount": [1.0] * days}), tmp_path / "events.parquet")

    (tmp_path / "definitions.py").write_text(
        "import mlforge as mlf\n"
        "@mlf.feature(source='events.parquet', keys=['user_id'], timestamp='ts', interval='1d', metrics=[mlf.Sum('amount', windows=['2d'])])\n"
        "def spend(t):\n    return t\n"
        "defs = mlf.Definitions('p', [spend], offline_store=mlf.LocalStore('store'))\n"
    )
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("MLFORGE_")]:
        monkeypatch.delenv(var)
    events(3)
    assert run(["build", "-q"]) == 0
    events(5)
    assert run(["build", "-q"]) == 0
    capsys.readouterr()
    assert run(["diff", "spend", "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["changes"]["watermark"] == ["2026-01-04T00:00:00Z", "2026-01-06T00:00:00Z"]


def test_list_feature_sets_with_none_defined_says_so(cli):
    code, out, err = cli("list", "feature-sets")
    assert (code, out) == (0, "") and "no feature sets defined" in err and "mlf.FeatureSet" in err
    code, out, _ = cli("list", "feature-sets", "--format", "json")
    assert code == 0 and json.loads(out) == []

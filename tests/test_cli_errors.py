"""Bad input at the command line: one clear message, the right exit code, nothing written.

Each case starts from a copy of a project that has already been built once, breaks one
thing, runs one command in-process and checks the exit code, the message, the absence of
a traceback and that the offline store is byte-for-byte as it was (contract E2, E3).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlforge.cli.app import run
from mlforge.cli.templates import write_project


@pytest.fixture(scope="module")
def built_template(tmp_path_factory):
    """A sample project, built once for the whole module."""
    root = tmp_path_factory.mktemp("template") / "proj"
    write_project(root, online=None, store="local", engine="duckdb")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for var in ("MLFORGE_PROFILE", "MLFORGE_ENGINE", "MLFORGE_TARGET", "MLFORGE_CONFIG"):
            mp.delenv(var, raising=False)
        assert run(["build"]) == 0
    return root


@pytest.fixture
def project(built_template, tmp_path, monkeypatch):
    root = tmp_path / "proj"
    shutil.copytree(built_template, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(root)
    for var in ("MLFORGE_PROFILE", "MLFORGE_ENGINE", "MLFORGE_TARGET", "MLFORGE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return root


def store_snapshot(root: Path) -> dict[str, bytes]:
    store = root / "feature_store"
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


# -- ways to break a project ------------------------------------------------------------
def write(rel: str, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).write_text(text)

    return apply


def replace(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new))

    return apply


def append(rel: str, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        with (root / rel).open("a") as fh:
            fh.write(text)

    return apply


def delete(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        target = root / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return apply


def nothing(root: Path) -> None:
    return None


YAML_TWO_PROFILES = """\
default_profile: dev
profiles:
  dev:
    offline_store:
      KIND: local
      path: ./feature_store
  prod:
    offline_store:
      KIND: s3
      bucket: "${oc.env:MLFORGE_TEST_MISSING_BUCKET}"
"""


#: The project without the in-process online store `mlforge init` gives its dev profile.
NO_ONLINE = replace("mlforge.yaml", "    online_store:  # in-process: `mlforge serve` fills it from the offline store at start-up\n      KIND: memory\n", "")

@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    message: list[str]
    setup: Callable[[Path], None] = nothing
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # -- configuration: mlforge.yaml and profiles (contract E1: file, line, key) --------
    Case("malformed-yaml", ["build"], 2, ["malformed YAML", "mlforge.yaml:"], write("mlforge.yaml", "profiles:\n  dev:\n    engine: [duckdb\n")),
    Case("yaml-not-a-mapping", ["build"], 2, ["must be a mapping"], write("mlforge.yaml", "- just\n- a list\n")),
    Case("unknown-top-level-key", ["build"], 2, ["unknown top-level key 'profils'", "mlforge.yaml:1"], write("mlforge.yaml", "profils: {}\n")),
    Case("unknown-kind", ["build"], 2, ["unknown offline_store KIND 'ftp'", "mlforge.yaml:8", "profiles.dev.offline_store"], replace("mlforge.yaml", "KIND: local\n      path: ./feature_store\n    engine: duckdb\n  prod", "KIND: ftp\n    engine: duckdb\n  prod")),
    Case("kind-missing", ["build"], 2, ["offline_store must be a mapping with a KIND"], replace("mlforge.yaml", "      KIND: local\n      path: ./feature_store\n    engine: duckdb\n  prod", "      path: ./feature_store\n    engine: duckdb\n  prod")),
    Case("local-path-empty", ["build"], 2, ["offline_store path must name a folder, got ''", "profiles.dev.offline_store.path", "./feature_store"], replace("mlforge.yaml", "path: ./feature_store\n    engine: duckdb\n  prod", 'path: ""\n    engine: duckdb\n  prod')),
    Case("local-path-number", ["build"], 2, ["offline_store path must name a folder, got 5", "profiles.dev.offline_store.path"], replace("mlforge.yaml", "path: ./feature_store\n    engine: duckdb\n  prod", "path: 5\n    engine: duckdb\n  prod")),
    Case("bad-store-option", ["build"], 2, ["unknown option 'pth' for offline_store KIND 'local'", "profiles.dev.offline_store.pth", "its options are path"], replace("mlforge.yaml", "path: ./feature_store\n    engine: duckdb\n  prod", "pth: ./feature_store\n    engine: duckdb\n  prod")),
    Case("bad-store-value", ["list", "features"], 2, ["option 'port'", "mlforge.yaml:7 (profiles.dev.online_store.port)"], write("mlforge.yaml", "default_profile: dev\nprofiles:\n  dev:\n    online_store:\n      KIND: redis\n      host: localhost\n      port: abc\n")),
    Case("config-is-a-directory", ["list", "features"], 2, ["mlforge.yaml is a directory, not a mlforge.yaml file"], lambda root: (delete("mlforge.yaml")(root), (root / "mlforge.yaml").mkdir())),
    Case("config-not-utf8", ["list", "features"], 2, ["mlforge.yaml is not UTF-8 text", "save mlforge.yaml as UTF-8"], lambda root: (root / "mlforge.yaml").write_bytes("profiles: {}\n# caf\u00e9\n".encode("latin-1"))),
    Case("config-env-is-a-directory", ["list", "features"], 2, ["is a directory (in MLFORGE_CONFIG"], env={"MLFORGE_CONFIG": "feature_store"}),
    Case("profiles-not-a-mapping", ["list", "features"], 2, ["'profiles' must be a mapping of profile names to blocks, not int", "mlforge.yaml:1"], write("mlforge.yaml", "profiles: 3\n")),
    Case("unknown-profile-key", ["build"], 2, ["unknown key 'engin'", "mlforge.yaml:11"], replace("mlforge.yaml", "    engine: duckdb\n  prod", "    engin: duckdb\n  prod")),
    Case("unknown-engine-in-profile", ["build"], 2, ["unknown engine 'spark'", "profiles.dev.engine"], replace("mlforge.yaml", "    engine: duckdb\n  prod", "    engine: spark\n  prod")),
    Case("missing-env-var", ["build", "--profile", "prod"], 2, ["environment variable MLFORGE_TEST_MISSING_BUCKET is not set", "mlforge.yaml:10", "profiles.prod.offline_store.bucket"], write("mlforge.yaml", YAML_TWO_PROFILES)),
    Case("bad-interpolation", ["build"], 2, ["cannot interpolate '${env:HOME}'"], replace("mlforge.yaml", "path: ./feature_store\n    engine: duckdb\n  prod", "path: ${env:HOME}\n    engine: duckdb\n  prod")),
    Case("unknown-profile-flag", ["build", "--profile", "staging"], 2, ["unknown profile 'staging'", "available profiles: dev, prod"]),
    Case("empty-profile-flag", ["list", "features", "--profile", ""], 2, ["--profile is empty"]),
    Case("empty-profile-flag-profile-command", ["profile", "--profile", ""], 2, ["--profile is empty"]),
    Case("rollback-online-of-an-undefined-feature", ["rollback", "user_profile", "1.0.0", "--yes", "--online"], 2, ["feature 'user_profile' is stored but not defined"], replace("features.py", "def user_profile(t):", "def user_profile_renamed(t):")),
    Case("unknown-profile-env", ["list", "features"], 2, ["unknown profile 'staging'"], env={"MLFORGE_PROFILE": "staging"}),
    Case("unknown-default-profile", ["list", "features"], 2, ["unknown profile 'qa'", "default_profile"], replace("mlforge.yaml", "default_profile: dev", "default_profile: qa")),
    Case("bad-engine-env", ["build"], 2, ["invalid setting", "MLFORGE_ENGINE='spark'"], env={"MLFORGE_ENGINE": "spark"}),
    Case("profile-without-config", ["build", "--profile", "prod"], 2, ["no mlforge.yaml was found"], delete("mlforge.yaml")),
    # -- arguments (contract E2) -----------------------------------------------------
    Case("unknown-feature", ["build", "--features", "nope"], 2, ["unknown feature(s) ['nope']", "available: merchant_activity, user_profile, user_spend"]),
    Case("empty-feature-list", ["build", "--features", ""], 2, ["no feature names given", "--features", "merchant_activity, user_profile, user_spend"]),
    Case("blank-feature-list", ["build", "--features", " , "], 2, ["no feature names given"]),
    Case("unknown-tag", ["build", "--tags", "gold"], 2, ["no feature has tag(s) ['gold']"]),
    Case("unknown-schedule", ["build", "--schedule", "fortnightly"], 2, ["unknown schedule(s) ['fortnightly']", "daily"]),  # contract I2
    Case("unknown-schedule-list", ["list", "features", "--schedule", "yearly"], 2, ["unknown schedule(s) ['yearly']"]),  # contract I2
    Case("last-with-since", ["build", "--last", "7d", "--since", "2026-01-01"], 2, ["--last cannot be combined with --since/--until"]),
    Case("full-refresh-with-since", ["build", "--full-refresh", "--since", "2026-01-01"], 2, ["--full-refresh cannot be combined"]),
    Case("since-after-until", ["build", "--since", "2026-02-01", "--until", "2026-01-01"], 2, ["is not before --until"]),
    Case("bad-duration-unit", ["build", "--last", "7x"], 2, ["unknown unit 'x'"]),
    Case("duration-months", ["build", "--last", "1mo"], 2, ["months or years", "30d"]),  # contract T2
    Case("duration-garbage", ["build", "--last", "soon"], 2, ["cannot parse duration 'soon'"]),
    Case("unparseable-date", ["build", "--since", "yesterday"], 2, ["cannot parse --since value 'yesterday'"]),
    Case("unknown-engine-flag", ["build", "--engine", "spark"], 2, ["spark"]),
    Case("unknown-option", ["build", "--bogus"], 2, ["--bogus"]),
    Case("unknown-command", ["bild"], 2, ["bild"]),
    Case("online-without-store", ["build", "--online"], 2, ["--online needs an online store"], NO_ONLINE),
    Case("rollback-online-without-store", ["rollback", "user_spend", "1.0.0", "--yes", "--online"], 2, ["--online needs an online store", "mlforge rollback --online"], NO_ONLINE),
    Case("bad-format", ["list", "features", "--format", "xml"], 2, ["xml"]),
    Case("unsafe-feature-name", ["list", "versions", "../x"], 2, ["not allowed"]),  # contract E4
    Case("inspect-unknown-feature", ["inspect", "feature", "nope"], 2, ["unknown feature 'nope'"]),
    Case("inspect-unknown-version", ["inspect", "feature", "user_spend", "--version", "9.9.9"], 2, ["has no version 9.9.9", "available versions: 1.0.0"]),
    Case("inspect-unknown-entity", ["inspect", "entity", "shop"], 2, ["unknown entity 'shop'"]),
    # latest names a version whose metadata is gone: not "not built yet" (E1)
    Case("inspect-broken-pointer", ["inspect", "feature", "user_spend"], 2, ["has versions (1.0.0) but no latest one", "mlforge rollback user_spend 1.0.0"], write("feature_store/user_spend/_latest.json", '{"version": "1.0.1"}')),
    Case("sync-broken-pointer", ["sync"], 1, ["has versions (1.0.0) but no latest one", "mlforge rollback user_spend 1.0.0"], write("feature_store/user_spend/_latest.json", '{"version": "1.0.1"}')),
    Case("inspect-approx-without-stats", ["inspect", "feature", "user_spend", "--approx"], 2, ["--approx", "--stats --approx"]),
    Case("rollback-version-and-previous", ["rollback", "user_spend", "1.0.0", "--previous"], 2, ["either a VERSION or --previous"]),
    Case("serve-bad-port", ["serve", "--port", "70000"], 2, ["port 70000 is out of range"]),
    # an empty token asked for would serve without authentication, unsaid (O3)
    Case("serve-empty-token", ["serve", "--token", ""], 2, ["the bearer token is empty", "--token"]),
    Case("serve-blank-token-env", ["serve"], 2, ["the bearer token is empty", "MLFORGE_SERVE_TOKEN"], env={"MLFORGE_SERVE_TOKEN": "  "}),
    Case("serve-empty-token-beside-an-empty-file", ["serve"], 2, ["the bearer token is empty", "first line of"], write("token.txt", "\n"), env={"MLFORGE_SERVE_TOKEN": "", "MLFORGE_SERVE_TOKEN_FILE": "token.txt"}),
    Case("serve-empty-token-file", ["serve"], 2, ["the bearer token is empty", "first line of"], write("token.txt", "\nsecret\n"), env={"MLFORGE_SERVE_TOKEN_FILE": "token.txt"}),
    Case("init-into-non-empty", ["init", "."], 2, ["already exists and is not empty"]),
    # -- the definitions file --------------------------------------------------------
    Case("no-definitions-file", ["build"], 2, ["no definitions.py found"], delete("definitions.py")),
    Case("target-missing", ["build", "--target", "elsewhere/definitions.py"], 2, ["does not exist", "--target"]),
    Case("syntax-error", ["build"], 2, ["syntax error", "unmatched ')'", "definitions.py:6"], replace("definitions.py", "import features\n", "import features\n)\n")),
    Case("syntax-error-in-module", ["list", "features"], 2, ["syntax error", "features.py:"], append("features.py", "\ndef broken(:\n    pass\n")),
    Case("exit-at-import", ["list", "features"], 2, ["called exit(3)", "features.py"], append("features.py", "\nimport sys\nsys.exit(3)\n")),
    Case("import-error-user-frame", ["build"], 2, ["ZeroDivisionError", "features.py", "line"], append("features.py", "\nratio = 1 / 0\n")),
    Case("no-definitions-object", ["build"], 2, ["defines no Definitions object"], replace("definitions.py", "defs = mlf.Definitions", "spec = dict")),
    Case("two-definitions-objects", ["build"], 2, ["2 Definitions objects (defs, other)"], append("definitions.py", "\nother = mlf.Definitions(name='x', features=[features])\n")),
    Case("window-not-multiple", ["build"], 2, ["window '36h' is not a whole multiple of the interval '1d'", "user_spend", "features.py:"], replace("features.py", 'windows=["7d", "30d"], name="total_spend"', 'windows=["36h"], name="total_spend"')),
    Case("two-schedule-tags", ["list", "features"], 2, ["two schedule tags ['users', 'daily', 'hourly']".replace("'users', ", "")], replace("features.py", 'tags=["users", "daily"]', 'tags=["users", "daily", "hourly"]')),  # contract I2
    # -- failed builds and validation (exit 1, nothing written, E3) --------------------
    Case("missing-source-file", ["build", "--features", "user_profile", "--force"], 1, ["users.parquet"], delete("data/users.parquet")),
    Case("source-missing-column", ["build", "--features", "user_spend", "--force"], 1, ["timestamp column 'evt_time' is not in the source"], replace("features.py", 'timestamp="event_time",\n    interval="1d",\n    metrics=[\n        mlf.Sum', 'timestamp="evt_time",\n    interval="1d",\n    metrics=[\n        mlf.Sum')),
    Case("source-missing-key-column", ["build", "--features", "merchant_activity", "--force"], 1, ["shop_id"], replace("features.py", 'join_key="merchant_id"', 'join_key="shop_id"')),
    Case("function-selects-missing-column", ["build", "--features", "user_profile", "--force"], 1, ["user_profile", "birthday"], replace("features.py", '"signup_date")', '"birthday")')),
    Case("function-returns-no-table", ["build", "--features", "user_profile", "--force"], 1, ["the feature function returned int, not a table", "user_profile"], replace("features.py", 'return t.select("user_id", "country", "signup_date")', "return 42")),
    Case("validator-fails", ["build", "--features", "user_spend", "--force"], 1, ["validation failed", "greater_than(1000)"], replace("features.py", "mlf.greater_than(0)", "mlf.greater_than(1000)")),
    Case("validate-command-fails", ["validate"], 1, ["validation failed", "greater_than(1000)"], replace("features.py", "mlf.greater_than(0)", "mlf.greater_than(1000)")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, project: Path, monkeypatch, capsys):  # contract E2, E3
    case.setup(project)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = store_snapshot(project)
    code = run(case.args)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code == case.code, output
    for fragment in case.message:
        assert fragment in output, f"{fragment!r} not in:\n{output}"
    assert "Traceback" not in output  # contract E2: no traceback without --verbose
    assert store_snapshot(project) == before  # contract E3: nothing written
    assert not list((project / "feature_store").rglob(".staging-*"))


def test_import_error_shows_the_users_frame_not_ours(project, capsys):  # contract E1
    append("features.py", "\nratio = 1 / 0\n")(project)
    assert run(["build"]) == 2
    text = capsys.readouterr().err
    assert "features.py" in text and "ratio = 1 / 0" in text
    assert "mlforge/loader.py" not in text and "importlib" not in text


def test_verbose_adds_the_traceback(project, capsys):  # contract E2
    assert run(["build", "--features", "nope", "--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_missing_var_in_another_profile_does_not_break_this_one(project, capsys):
    write("mlforge.yaml", YAML_TWO_PROFILES)(project)
    assert run(["list", "features", "--format", "json"]) == 0
    assert "user_spend" in capsys.readouterr().out


def test_diff_errors_exit_4(project, capsys):  # contract S4
    pytest.importorskip("mlforge.operations")
    assert run(["diff", "nope"]) == 4
    assert "error:" in capsys.readouterr().err


def test_table_has_at_least_30_cases():
    assert len(CASES) >= 30


def test_a_relative_mlforge_config_is_read_from_where_the_command_runs(project, tmp_path, monkeypatch, capsys):  # contract E1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other.yaml").write_text("default_profile: x\nprofiles:\n  x:\n    offline_store: {KIND: local, path: ./other_store}\n")
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    monkeypatch.setenv("MLFORGE_CONFIG", "../../elsewhere/other.yaml")
    assert run(["profile"]) == 0, capsys.readouterr().err
    assert "other_store" in capsys.readouterr().out


def test_what_the_project_prints_on_import_stays_out_of_the_result(project, capsys):  # docs/cli.md: a pipe holds only the result
    replace("features.py", "import mlforge as mlf\n", "import mlforge as mlf\nprint('loading shop')\n")(project)
    assert run(["list", "features", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)  # the result alone
    assert "loading shop" in captured.err


def test_profiles_with_every_profile_commented_out_is_no_profiles(project, capsys):  # docs/profiles.md
    write("mlforge.yaml", "profiles:\n  # dev:\n  #   engine: duckdb\n")(project)
    assert run(["list", "features", "--format", "json"]) == 0, capsys.readouterr().err

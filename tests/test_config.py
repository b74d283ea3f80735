"""Profiles and settings: precedence flag > MLFORGE_* env > profile > default (STYLE 5),
interpolation only in the profile in use, and errors naming file, line and key (E1)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mlforge.config import env_settings, load_profile, profile_names, resolve_profile
from mlforge.errors import ConfigError, ProfileError, install_command, redact

CONFIG = """\
default_profile: dev
profiles:
  dev:
    offline_store:
      KIND: local
      path: ./store-dev
    engine: duckdb
  fast:
    offline_store: {KIND: local, path: "${oc.env:MLFORGE_TEST_STORE,./store-fast}"}
    engine: polars
  prod:
    offline_store:
      KIND: s3
      bucket: "${oc.env:MLFORGE_TEST_BUCKET}"
"""

# The example of ROADMAP-v0.8.0.md, "Profile Configuration", verbatim.
DATABRICKS = """\
profiles:
  databricks-dev:
    offline_store:
      KIND: unity-catalog
      catalog: dev
      schema: features
    engine: pyspark

  databricks-prod:
    offline_store:
      KIND: unity-catalog
      catalog: prod
      schema: features
    online_store:
      KIND: databricks-online-tables
      catalog: prod
      schema: features_online
      sync_mode: triggered
    engine: pyspark
"""


@pytest.fixture
def config(in_tmp: Path, monkeypatch) -> Path:
    for var in ("MLFORGE_TEST_STORE", "MLFORGE_TEST_BUCKET", "MLFORGE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    path = in_tmp / "mlforge.yaml"
    path.write_text(CONFIG)
    return path


def test_default_profile_is_used(config):
    resolved = resolve_profile()
    assert resolved.name == "dev"
    assert resolved.engine == "duckdb"
    assert Path(resolved.offline_store.path) == config.parent / "store-dev"


def test_precedence_flag_over_env_over_profile_over_default(config, monkeypatch):
    assert resolve_profile().engine == "duckdb"  # profile
    assert resolve_profile().origin["engine"] == "profile"
    monkeypatch.setenv("MLFORGE_ENGINE", "polars")
    assert resolve_profile().engine == "polars"  # env beats profile
    assert resolve_profile().origin["engine"] == "env"
    assert resolve_profile(engine="pyspark").engine == "pyspark"  # flag beats env
    assert resolve_profile(engine="pyspark").origin["engine"] == "flag"
    config.write_text("profiles:\n  dev: {}\n")
    monkeypatch.delenv("MLFORGE_ENGINE")
    assert resolve_profile("dev").engine is None  # default: Definitions falls back to duckdb
    assert resolve_profile("dev").origin["engine"] == "default"


def test_profile_flag_beats_env(config, monkeypatch):
    monkeypatch.setenv("MLFORGE_PROFILE", "fast")
    assert resolve_profile().name == "fast"
    assert resolve_profile("dev").name == "dev"
    assert env_settings(profile="dev").profile == "dev"
    assert env_settings().profile == "fast"


def test_env_settings_without_flags_or_variables_are_the_defaults(monkeypatch):
    import os

    from mlforge.config import EnvSettings

    for name in [n for n in os.environ if n.upper().startswith("MLFORGE_")]:
        monkeypatch.delenv(name)
    assert env_settings() == EnvSettings(profile=None, engine=None, config=None, target=None)
    monkeypatch.setenv("mlforge_engine", "polars")  # names are case-insensitive
    assert env_settings().engine == "polars"
    monkeypatch.setenv("mlforge_engine", "sqlite")
    with pytest.raises(ConfigError, match="MLFORGE_ENGINE='sqlite'"):
        env_settings()


def test_interpolation_default_and_env(config, monkeypatch):
    assert Path(resolve_profile("fast").offline_store.path).name == "store-fast"
    monkeypatch.setenv("MLFORGE_TEST_STORE", "/tmp/elsewhere")
    assert str(resolve_profile("fast").offline_store.path) == "/tmp/elsewhere"


def test_missing_variable_names_file_line_and_key(config):
    with pytest.raises(ConfigError) as info:
        resolve_profile("prod")
    text = str(info.value)
    assert "MLFORGE_TEST_BUCKET is not set" in text
    assert f"{config}:14" in text
    assert "profiles.prod.offline_store.bucket" in text


def test_missing_variable_in_another_profile_does_not_matter(config):
    assert resolve_profile("dev").name == "dev"
    assert resolve_profile("fast").name == "fast"


def test_load_profile_returns_settings_dict(config):
    settings = load_profile("fast")
    assert settings["engine"] == "polars" and settings["profile"] == "fast"
    assert "online_store" not in settings


def test_no_config_file(in_tmp):
    assert resolve_profile().name is None
    with pytest.raises(ConfigError, match=r"no mlforge\.yaml was found"):
        resolve_profile("prod")


def test_config_found_in_parent_directory(config, monkeypatch):
    sub = config.parent / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert resolve_profile().path == config


def test_explicit_config_path_via_env(in_tmp, monkeypatch):
    other = in_tmp / "conf" / "team.yaml"
    other.parent.mkdir()
    other.write_text("default_profile: x\nprofiles:\n  x: {engine: polars}\n")
    monkeypatch.setenv("MLFORGE_CONFIG", str(other))
    assert resolve_profile().engine == "polars"
    monkeypatch.setenv("MLFORGE_CONFIG", str(in_tmp / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_profile()


def test_profile_names(config):
    assert profile_names() == ["dev", "fast", "prod"]


def test_a_relative_path_from_the_environment_stays_hidden_once_resolved(in_tmp, monkeypatch):
    # LocalStore shows './s3cr3t_dir' resolved, '/.../s3cr3t_dir', which the mask missed.
    (in_tmp / "mlforge.yaml").write_text('default_profile: dev\nprofiles:\n  dev:\n    offline_store:\n      KIND: local\n      path: "${oc.env:MLFORGE_TEST_DIR}"\n')
    monkeypatch.setenv("MLFORGE_TEST_DIR", "./s3cr3t_dir")
    store = resolve_profile().as_settings()["offline_store"]
    assert "s3cr3t_dir" in repr(store) and "s3cr3t_dir" not in redact(repr(store))
    monkeypatch.setenv("MLFORGE_TEST_DIR", "./data")
    resolve_profile()
    assert redact("data file 2024-01.parquet") == "data file 2024-01.parquet"  # the word stays; the path part is hidden
    assert redact("/srv/data/x.parquet and /srv/database.db") == "/srv/***/x.parquet and /srv/database.db"


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("profiles:\n  dev:\n    engine: [duckdb\n", "malformed YAML", None),
        ("profiles:\n  dev:\n    offline_store: {KIND: ftp}\n", "unknown offline_store KIND 'ftp'", 3),
        ("profiles:\n  dev:\n    online_store: {KIND: memcache}\n", "unknown online_store KIND 'memcache'", 3),
        ("profiles:\n  dev:\n    engine: spark\n", "unknown engine 'spark'", 3),
        ("profiles:\n  dev:\n    offline: {KIND: local}\n", "unknown key 'offline'", 3),
        ("profiles:\n  dev:\n    offline_store: local\n", "must be a mapping with a KIND", 3),
        ("profiles: [dev]\n", "'profiles' must be a mapping", 1),
        ("profiles:\n  dev: [1]\n", "profile 'dev' must be a mapping", 2),
        ("profiles:\n  dev:\n    offline_store: {KIND: local, path: '${oc.env:}'}\n", "cannot interpolate", 3),
    ],
)
def test_config_errors_name_file_and_line(in_tmp, text, fragment, line):  # contract E1
    path = in_tmp / "mlforge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        resolve_profile("dev")
    message = str(info.value)
    assert fragment in message
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}" in message


def test_unknown_profile_lists_available(config):
    with pytest.raises(ConfigError, match=r"unknown profile 'qa'.*\n.*dev, fast, prod"):
        resolve_profile("qa")


def test_bad_engine_in_environment(config, monkeypatch):
    monkeypatch.setenv("MLFORGE_ENGINE", "spark")
    with pytest.raises(ConfigError, match="MLFORGE_ENGINE='spark'"):
        resolve_profile()


def test_roadmap_databricks_profiles_load_or_name_the_extra(in_tmp):
    (in_tmp / "mlforge.yaml").write_text(DATABRICKS)
    for name in ("databricks-dev", "databricks-prod"):
        try:
            resolved = resolve_profile(name)
        except ConfigError as exc:
            message = str(exc)
            assert "KIND 'unity-catalog'" in message or "KIND 'databricks-online-tables'" in message
            assert install_command("databricks") in message
            assert "mlforge.yaml:" in message
        else:
            assert resolved.engine == "pyspark"
            assert type(resolved.offline_store).__name__ == "UnityCatalogStore"
            if name == "databricks-prod":
                assert type(resolved.online_store).__name__ == "DatabricksOnlineStore"


def test_docs_profiles_example_is_the_roadmap_one():
    docs = Path(__file__).resolve().parents[1] / "docs" / "profiles.md"
    text = docs.read_text()
    assert textwrap.dedent(DATABRICKS).strip().replace("\n\n", "\n") in text.replace("\n\n", "\n")



# -- issue 16: secrets, duplicates, unclosed interpolation, always read ------------------------
SECRET_PORT = """\
default_profile: dev
profiles:
  dev:
    online_store:
      KIND: redis
      host: localhost
      port: "${oc.env:MLFORGE_TEST_SECRET}"
"""


def test_a_secret_where_a_number_belongs_is_masked_and_blamed_on_its_line(in_tmp, monkeypatch):
    (in_tmp / "mlforge.yaml").write_text(SECRET_PORT)
    monkeypatch.setenv("MLFORGE_TEST_SECRET", "hunter2-s3cr3t")
    with pytest.raises(ProfileError) as info:
        resolve_profile()
    text = str(info.value)
    assert "hunter2-s3cr3t" not in text and "***" in text
    assert "mlforge.yaml:7 (profiles.dev.online_store.port)" in text
    assert "MLFORGE_TEST_SECRET" in text  # the fix names the variable, never its value


def test_the_secret_stays_hidden_in_definitions_errors(in_tmp, monkeypatch):
    (in_tmp / "mlforge.yaml").write_text(SECRET_PORT)
    monkeypatch.setenv("MLFORGE_TEST_SECRET", "hunter2-s3cr3t")
    import mlforge as mlf

    with pytest.raises(ProfileError) as info:
        mlf.Definitions("x", [], offline_store=mlf.LocalStore(in_tmp / "s"), engine="duckdb", online_store=None)
    assert "hunter2-s3cr3t" not in str(info.value) and "definitions.py" not in str(info.value)
    assert redact("a hunter2-s3cr3t b") == "a *** b"


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("profiles:\n  dev: {engine: duckdb}\n  dev: {engine: polars}\n", "profile 'dev' is defined twice", 3),
        ("profiles:\n  dev:\n    engine: duckdb\n    engine: polars\n", "key 'engine' is given twice in profiles.dev", 4),
        ("profiles:\n  dev:\n    offline_store: {KIND: local, path: a, path: b}\n", "key 'path' is given twice", 3),
        ("default_profile: dev\ndefault_profile: prod\nprofiles: {dev: {}}\n", "key 'default_profile' is given twice", 2),
        ("profiles:\n  dev:\n    offline_store: {KIND: local, path: \"${oc.env:HOME\"}\n", "unclosed interpolation", 3),
        ("profiles:\n  dev:\n    offline_store: {KIND: local, path: \"a${oc.env:HOME}${b\"}\n", "unclosed interpolation", 3),
    ],
)
def test_duplicates_and_unclosed_interpolation_name_file_and_line(in_tmp, text, fragment, line):
    path = in_tmp / "mlforge.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        resolve_profile("dev")
    assert fragment in str(info.value) and f"{path}:{line}" in str(info.value)


def test_mlforge_yaml_is_read_even_when_definitions_set_everything(in_tmp):
    import mlforge as mlf

    (in_tmp / "mlforge.yaml").write_text("profiles:\n  dev:\n    engine: [duckdb\n")
    with pytest.raises(ProfileError, match="malformed YAML"):
        mlf.Definitions("x", [], offline_store=mlf.LocalStore(in_tmp / "s"), engine="duckdb")
    (in_tmp / "mlforge.yaml").write_text("default_profile: dev\nprofiles:\n  dev:\n    engine: polars\n    online_store: {KIND: memory}\n")
    defs = mlf.Definitions("x", [], offline_store=mlf.LocalStore(in_tmp / "s"), engine="duckdb")
    assert defs.origins == {"offline_store": "definitions", "online_store": "profile", "engine": "definitions"}
    assert type(defs.online_store).__name__ == "MemoryStore"  # the profile's online store is used
    assert defs.profile_settings.engine == "polars" and defs.engine_spec == "duckdb"


def test_install_commands_name_this_package_not_the_pypi_project():
    """PyPI's `mlforge` is an unrelated project: a hint installs the extra from this
    checkout (or what pip recorded), under pyproject's distribution name."""
    import tomllib

    from mlforge.errors import missing_extra

    root = Path(__file__).resolve().parents[1]
    name = tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]
    assert install_command("serve").startswith(f"pip install -e '{root}[serve]'") and name in install_command("serve")
    assert missing_extra("fastapi", "serve").fix == install_command("serve")
    stale = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("src", "docs", "examples")
        for path in sorted((root / folder).rglob("*"))
        if path.suffix in (".py", ".md", ".yml", ".yaml")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(stale in line for stale in ("pip install 'mlforge[", 'pip install "mlforge[', 'package: "mlforge[', "library `mlforge["))
    ]
    assert not stale, "hints that would install PyPI's unrelated `mlforge`:\n" + "\n".join(stale)


def test_an_engine_named_without_its_extra_says_how_to_install_it(monkeypatch):
    """E1: every path that makes an engine from its name (build, retrieval, serving) gets
    the install line, not a ModuleNotFoundError from the first import inside the engine."""
    import sys

    from mlforge.engines import get_engine
    from mlforge.errors import EngineError

    monkeypatch.setitem(sys.modules, "polars", None)  # as on an install without the extra
    with pytest.raises(EngineError, match="'polars' is not installed") as caught:
        get_engine("polars")
    assert caught.value.fix == install_command("polars") and caught.value.where == "engine 'polars'"


def test_an_unknown_engine_name_is_refused_where_it_is_given(tmp_path):
    import mlforge as mlf

    with pytest.raises(ConfigError, match="unknown engine 'duckdbb'") as caught:
        mlf.Definitions("shop", [], offline_store=mlf.LocalStore(tmp_path), engine="duckdbb")
    assert caught.value.where == "Definitions('shop', engine=...)" and "duckdb, polars, pyspark" in caught.value.fix


@pytest.mark.parametrize("path", ["", "  ", 5])
def test_a_local_store_needs_a_folder_of_its_own(path):
    import mlforge as mlf

    with pytest.raises(ConfigError, match="LocalStore needs a folder path") as caught:
        mlf.LocalStore(path)
    assert "./feature_store" in caught.value.fix


def test_a_bad_value_from_the_environment_is_blamed_on_its_own_option(in_tmp, monkeypatch):  # contract E1
    """Two options from the environment and one written: the rejected one is named with its
    line, not the written option that the store's fix text happens to quote."""
    (in_tmp / "mlforge.yaml").write_text(
        "default_profile: uc\nprofiles:\n  uc:\n    offline_store:\n      KIND: unity-catalog\n      catalog: main\n"
        "      schema: ${oc.env:UC_SCHEMA}\n      storage_root: ${oc.env:UC_ROOT}\n"
    )
    monkeypatch.setenv("UC_SCHEMA", "bad schema")
    monkeypatch.setenv("UC_ROOT", f"file://{in_tmp}/uc")
    with pytest.raises(ProfileError) as caught:
        resolve_profile().as_settings()
    assert "option 'schema'" in caught.value.what and "bad schema" not in str(caught.value)
    assert "mlforge.yaml:7" in str(caught.value) and "UC_SCHEMA" in caught.value.fix

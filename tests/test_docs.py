"""Every fenced code block of ``docs/*.md`` and ``README.md`` runs in a test, or says why not;
the API reference covers the public names; the engine capability page matches the engines.

Markers are HTML comments on the line(s) right before a fence (invisible on the site):

``<!-- not-runnable: REASON -->``
    the block is not run: it installs something, needs a Databricks workspace, a server or an
    MLflow run, shows output, or is a diagram or a synopsis. The reason is required.
``<!-- setup: NAME -->``
    ``SETUPS[NAME]`` (below) prepares the page's directory and namespace before the block.
``<!-- exit: N -->``
    the shell block's one command exits with ``N`` instead of 0 (``mlforge diff``'s codes).
``<!-- output -->``
    the block is what the page's previous Python block printed; compared line by line
    (trailing spaces ignored).
``<!-- test: NAME -->``
    run by the test module named in ``OTHER_TESTS`` (docs/storage.md's reading snippets).

Each page runs in a fresh temporary directory with one namespace (``mlf`` pre-imported, as
the page's first block imports it), its blocks in order, as a tutorial is read:

* ``python``: executed in the namespace;
* ``bash``/``sh``/``shell``: each command line (``#`` comments, ``\\`` continuations, ``&&``,
  ``VAR=value`` prefixes) runs. ``mlforge ...`` runs in-process through ``mlforge.cli.main``,
  the console script's entry point (a subprocess per command would cost seconds each);
  ``cd DIR`` moves the page into ``DIR``; the right side of a pipe reads the mlforge output in
  ``bash``. A block with any other command must be marked not-runnable;
* ``yaml`` with a top-level ``profiles:`` key is an ``mlforge.yaml``: ``mlforge.config``
  resolves every profile of it (an unset ``${oc.env:VAR}`` gets a dummy value; a store whose
  optional module is not installed counts as resolved, its error names the extra);
* any other block (output, diagrams, other languages) must be marked.

``test_every_block_runs_or_says_why`` lists the blocks that neither run nor carry a marker.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import shlex
import subprocess
import sys
import warnings
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import mlforge

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Pages someone else is writing now -> who. Neither run nor checked for markers here; once
#: every block of such a page runs or is marked, remove it from this set.
PAGES_OWNED_ELSEWHERE: dict[str, str] = {}
#: Page -> the test module that runs its ``<!-- test: NAME -->`` blocks.
OTHER_TESTS = {"docs/storage.md": "tests/test_storage.py"}
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell"}
YAML = {"yaml", "yml"}
SHELL_PROGRAMS = {"mlforge", "cd"}
ENV_VARS = ("MLFORGE_PROFILE", "MLFORGE_ENGINE", "MLFORGE_TARGET", "MLFORGE_CONFIG")

FENCE_OPEN = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*(?P<key>[a-z-]+)\s*(?::\s*(?P<value>.*?))?\s*-->\s*$")
MARKER_KEYS = {"not-runnable", "setup", "exit", "output", "test"}
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


@dataclass
class Block:
    """One fenced code block: where it is, its language, its dedented code and markers."""

    page: str
    line: int
    lang: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def page_name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown page, including indented ones (in list items)."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE_OPEN.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = [line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in lines[index + 1 : end]]
        markers: dict[str, str] = {}
        above = index - 1
        while above >= 0 and (marker := MARKER.match(lines[above])):
            markers.setdefault(marker["key"], (marker["value"] or "").strip())
            above -= 1
        blocks.append(Block(page_name(path), index + 1, opening["lang"].lower(), "\n".join(body), markers))
        index = end + 1
    return blocks


# -- shell blocks ---------------------------------------------------------------------------
def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block, as token lists (comments and continuations removed,
    ``a && b`` split into two)."""
    commands: list[list[str]] = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        while "&&" in tokens:
            cut = tokens.index("&&")
            commands.append(tokens[:cut])
            tokens = tokens[cut + 1 :]
        if tokens:
            commands.append(tokens)
    return commands


def split_command(tokens: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """``(environment prefix, command, what it is piped into)``."""
    env: dict[str, str] = {}
    while tokens and ASSIGNMENT.match(tokens[0]):
        name, value = tokens[0].split("=", 1)
        env[name] = value
        tokens = tokens[1:]
    if "|" in tokens:
        cut = tokens.index("|")
        return env, tokens[:cut], tokens[cut + 1 :]
    return env, tokens, []


def runnable_shell(code: str) -> bool:
    commands = [split_command(tokens)[1] for tokens in shell_commands(code)]
    return bool(commands) and all(command and command[0] in SHELL_PROGRAMS for command in commands)


def run_mlforge(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``mlforge ARGS`` in-process, as the console script runs it: (exit code, stdout, stderr).
    The working directory and the environment are restored afterwards."""
    from mlforge.cli import main

    env = env or {}
    saved = {name: os.environ.get(name) for name in env}
    cwd = os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(env)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(args)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(cwd)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code, out.getvalue(), err.getvalue()


# -- setups ---------------------------------------------------------------------------------
def init_project(page: PageRun) -> None:
    """The project ``mlforge init`` writes, in the page's directory, with small sample data
    (5 users, 20 days from 2026-01-01) so builds are quick. Puts ``defs`` (loaded as the CLI
    loads it), its ``transactions`` source, ``labels_df`` and ``entity_df`` (``user_id``,
    ``merchant_id``, ``label_time``) and ``features`` (two feature names) in the namespace."""
    import pandas as pd

    from mlforge.cli.templates import write_project, write_sample_data
    from mlforge.loader import load_definitions

    namespace, root = page.namespace, Path.cwd()
    write_project(root, online=None, store="local", engine="duckdb")
    write_sample_data(root / "data", users=5, merchants=3, days=20)
    namespace["defs"] = load_definitions(root / "definitions.py")
    namespace["transactions"] = mlforge.Source("data/transactions.parquet", timestamp="event_time")
    namespace["labels_df"] = pd.DataFrame({
        "user_id": ["u000", "u001", "u004"],
        "merchant_id": ["m00", "m01", "m02"],
        "label_time": pd.to_datetime(["2026-01-10 12:00", "2026-01-15 00:00", "2026-01-20 00:00"]),
    })
    namespace["entity_df"] = namespace["labels_df"]
    namespace["features"] = ["user_spend", "merchant_activity"]


def built_project(page: PageRun) -> None:
    """The ``init-project`` setup, with every feature built (version 1.0.0)."""
    init_project(page)
    assert all(f.status == "built" for f in page.namespace["defs"].build().features)


def add_a_metric(page: PageRun) -> None:
    """Give the ``mlforge init`` project's ``user_spend`` one more metric and build it:
    version 1.1.0 (MINOR)."""
    features = Path("features.py")
    anchor = 'mlf.Mean("amount", windows=["7d"], name="avg_amount", unit="USD"),'
    text = features.read_text()
    assert anchor in text, "the init template changed: update add_a_metric"
    features.write_text(text.replace(anchor, anchor + '\n        mlf.Max("amount", windows=["7d"], name="max_amount"),'))
    code, out, err = run_mlforge(["build", "--features", "user_spend", "--format", "json"])
    assert code == 0 and '"version": "1.1.0"' in out, out + err


class StubModel:
    """Stands for the reader's model in docs/mlflow.md."""

    def fit(self, inputs, target):
        assert len(inputs) == len(target) > 0
        return self


def mlflow_run(page: PageRun) -> None:
    """The ``built-project`` setup and a file-backed MLflow tracking store in
    ``./mlruns``; ``labels`` and ``entity_df`` (with a ``label`` column), ``inputs`` (feature
    columns), ``model`` (a stub with ``fit``) and ``run_id`` (a finished run) in the namespace.
    Autolog is turned off and open runs are ended when the page is done."""
    mlflow = pytest.importorskip("mlflow")
    from mlforge.integrations import mlflow as integration

    built_project(page)
    namespace = page.namespace
    page.monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a plain directory otherwise
    page.monkeypatch.setenv("MLFLOW_TRACKING_URI", (Path.cwd() / "mlruns").as_uri())
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    with mlflow.start_run() as run:
        namespace["run_id"] = run.info.run_id

    def clean_up() -> None:
        while mlflow.active_run():
            mlflow.end_run()
        integration.autolog(disable=True)

    page.cleanups.append(clean_up)
    labels = namespace["labels_df"].assign(label=[0, 1, 0])
    namespace.update(labels=labels, entity_df=labels, inputs=["total_spend_7d", "txn_count_7d"], model=StubModel())


def fresh_directory(page: PageRun) -> None:
    """The page goes on in a new empty directory (beside the first one, so no
    ``mlforge.yaml`` or ``definitions.py`` of earlier blocks is found above it)."""
    page.cwd = page.cwd.parent / f"{page.cwd.name}-{len(list(page.cwd.parent.iterdir()))}"
    page.cwd.mkdir()
    os.chdir(page.cwd)


SETUPS: dict[str, Callable[[PageRun], None]] = {
    "init-project": init_project,
    "built-project": built_project,
    "add-a-metric": add_a_metric,
    "mlflow-run": mlflow_run,
    "fresh-directory": fresh_directory,
}


# -- yaml blocks ----------------------------------------------------------------------------
def is_profiles_yaml(code: str) -> bool:
    import yaml

    try:
        data = yaml.safe_load(code)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and "profiles" in data


MISSING_EXTRA = ("is not available in this installation", "needs the optional dependency")


def check_profiles_yaml(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve every profile of an ``mlforge.yaml`` block with the real loader."""
    from mlforge.config import profile_names, resolve_profile
    from mlforge.errors import ConfigError

    folder = Path.cwd() / f".yaml-{block.line}"
    folder.mkdir()
    path = folder / "mlforge.yaml"
    path.write_text(block.code + "\n")
    for var in re.findall(r"\$\{oc\.env:(\w+)\}", block.code):
        if var not in os.environ:
            monkeypatch.setenv(var, "docs-example")
    names = profile_names(path)
    assert names, f"{block.where}: no profiles"
    for name in names:
        try:
            resolve_profile(name, path=path)
        except ConfigError as exc:
            if not any(text in str(exc) for text in MISSING_EXTRA):
                raise AssertionError(f"{block.where}: profile {name!r}: {exc}") from None


# -- running a page -------------------------------------------------------------------------
@dataclass
class PageRun:
    """The state of one page being run: its directory, namespace and last printed output."""

    monkeypatch: pytest.MonkeyPatch
    cwd: Path
    namespace: dict = field(default_factory=dict)
    printed: str | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def run(self, block: Block) -> None:
        assert runnable(block), f"{block.where}: run this block or mark it <!-- not-runnable: reason -->"
        os.chdir(self.cwd)
        if "setup" in block.markers:
            SETUPS[block.markers["setup"]](self)
        if "output" in block.markers:
            self.check_output(block)
        elif block.lang in PYTHON:
            self.run_python(block)
        elif block.lang in SHELL:
            self.run_shell(block)
        elif block.lang in YAML:
            check_profiles_yaml(block, self.monkeypatch)
        else:
            raise AssertionError(f"{block.where}: no way to run a {block.lang or 'plain'} block")

    def run_python(self, block: Block) -> None:
        printed = io.StringIO()
        with warnings.catch_warnings(), redirect_stdout(printed):
            warnings.simplefilter("ignore", FutureWarning)  # metrics.md shows the deprecated Rolling on purpose
            exec(compile(block.code, block.where, "exec"), self.namespace)
        self.printed = printed.getvalue()
        self.cwd = Path.cwd()

    def check_output(self, block: Block) -> None:
        assert self.printed is not None, f"{block.where}: an output block needs a Python block before it"
        shown = [line.rstrip() for line in block.code.strip("\n").splitlines()]
        printed = [line.rstrip() for line in self.printed.strip("\n").splitlines()]
        assert printed == shown, f"{block.where}: the page shows\n" + "\n".join(shown) + "\nbut the code prints\n" + "\n".join(printed)

    def run_shell(self, block: Block) -> None:
        commands = shell_commands(block.code)
        expected = int(block.markers.get("exit", "0"))
        assert expected == 0 or len(commands) == 1, f"{block.where}: an exit marker needs a block of one command"
        for tokens in commands:
            env, command, piped_into = split_command(tokens)
            if command[0] == "cd":
                self.cwd = (self.cwd / command[1]).resolve()
                os.chdir(self.cwd)
                continue
            code, out, err = run_mlforge(command[1:], env)
            shown = shlex.join(tokens)
            assert code == expected, f"{block.where}: `{shown}` exited {code}, expected {expected}\n{out[-3000:]}\n{err[-3000:]}"
            if piped_into:
                done = subprocess.run(["bash", "-o", "pipefail", "-c", shlex.join(piped_into)], input=out, capture_output=True, text=True, cwd=self.cwd)
                assert done.returncode == 0, f"{block.where}: `{shown}`: {done.stderr}"


def runnable(block: Block) -> bool:
    """Whether ``PageRun`` runs this block (given no not-runnable or test marker)."""
    if "output" in block.markers or block.lang in PYTHON:
        return True
    if block.lang in SHELL:
        return runnable_shell(block.code)
    return block.lang in YAML and is_profiles_yaml(block.code)


def checked_pages() -> list[Path]:
    return [page for page in pages() if page_name(page) not in PAGES_OWNED_ELSEWHERE]


def pages_to_run() -> list[str]:
    return [page_name(page) for page in checked_pages() if any(not skipped(block) for block in code_blocks(page))]


def skipped(block: Block) -> bool:
    return "not-runnable" in block.markers or "test" in block.markers


@pytest.mark.parametrize("page", pages_to_run())
def test_page_blocks_run(page, tmp_path, monkeypatch):
    start = tmp_path / "page"  # fresh_directory makes siblings of it
    start.mkdir()
    monkeypatch.chdir(start)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    module_name = "docs_" + re.sub(r"\W", "_", page)
    run = PageRun(monkeypatch, start, {"__name__": module_name, "mlf": mlforge})
    blocks = code_blocks(ROOT / page)
    try:
        for block in blocks:
            if not skipped(block):
                run.run(block)
    finally:
        for clean_up in run.cleanups:
            clean_up()
    if page == "docs/index.md":  # the getting-started page must keep a runnable example
        assert sum(not skipped(block) for block in blocks) >= 3
    if page == "docs/quickstart.md":  # build, training set, model, serve, online read: all run
        assert all(not skipped(block) for block in blocks) and len(blocks) >= 8


def test_readme_snippet_runs_as_is(tmp_path, monkeypatch):
    """The README's feature runs in a project `mlforge init` made, with nothing from a setup:
    every name it uses, it defines."""
    from mlforge.cli.templates import write_project, write_sample_data

    monkeypatch.chdir(tmp_path)
    write_project(tmp_path, online=None, store="local", engine="duckdb")
    write_sample_data(tmp_path / "data", users=5, merchants=3, days=20)
    snippet = next(block for block in code_blocks(ROOT / "README.md") if block.lang in PYTHON)
    namespace: dict = {"__name__": "readme"}
    exec(compile(snippet.code, snippet.where, "exec"), namespace)
    assert len(namespace["training"]) == 2 and "spend_7d" in namespace["training"].columns


def test_every_block_runs_or_says_why():
    """A block is run by test_page_blocks_run, by another test (``test:``), or marked
    ``not-runnable`` with a reason; anything else is listed here as file:line."""
    unhandled = [
        f"{block.where} ({block.lang or 'plain'})"
        for page in checked_pages()
        for block in code_blocks(page)
        if not skipped(block) and not runnable(block)
    ]
    assert not unhandled, "run these blocks or mark them <!-- not-runnable: reason -->:\n" + "\n".join(unhandled)


def test_markers_are_known_and_complete():
    problems = []
    for page in pages():
        for block in code_blocks(page):
            for key, value in block.markers.items():
                if key not in MARKER_KEYS:
                    problems.append(f"{block.where}: unknown marker {key!r} (known: {sorted(MARKER_KEYS)})")
                elif key in ("not-runnable", "setup", "exit", "test") and not value:
                    problems.append(f"{block.where}: <!-- {key}: ... --> needs a value")
            if block.markers.get("setup", "") not in ("", *SETUPS):
                problems.append(f"{block.where}: unknown setup {block.markers['setup']!r} (known: {sorted(SETUPS)})")
            if "test" in block.markers:
                module = OTHER_TESTS.get(block.page)
                if module is None or block.markers["test"] not in (ROOT / module).read_text():
                    problems.append(f"{block.where}: no test runs <!-- test: {block.markers['test']} -->")
    assert not problems, "\n".join(problems)


def test_blocks_and_markers_are_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- not-runnable -->\n<!-- setup: init-project -->\n```bash\npip install x\n```\n\n  - item\n\n    ```python\n    x = 1\n    ```\n")
    first, second = code_blocks(page)
    assert first.markers == {"not-runnable": "", "setup": "init-project"} and first.lang == "bash" and first.line == 5
    assert second.code == "x = 1" and second.line == 11 and not runnable_shell(first.code)


def test_shell_commands_split_like_a_shell():
    code = "cd shop && mlforge build   # first\nMLFORGE_PROFILE=prod mlforge list features\nmlforge build --format json | jq '.a | .b'\nA=1 \\\n  uvicorn x\n"
    assert [split_command(tokens) for tokens in shell_commands(code)] == [
        ({}, ["cd", "shop"], []),
        ({}, ["mlforge", "build"], []),
        ({"MLFORGE_PROFILE": "prod"}, ["mlforge", "list", "features"], []),
        ({}, ["mlforge", "build", "--format", "json"], ["jq", ".a | .b"]),
        ({"A": "1"}, ["uvicorn", "x"], []),
    ]
    assert not runnable_shell(code) and runnable_shell("mlforge build\ncd x")


def test_a_wrong_exit_code_or_output_fails_the_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = PageRun(monkeypatch, tmp_path)
    with pytest.raises(AssertionError, match="exited 2, expected 0"):  # no project here
        run.run(Block("page.md", 1, "bash", "mlforge list features"))
    run.run(Block("page.md", 5, "bash", "mlforge list features", {"exit": "2"}))
    run.run(Block("page.md", 9, "python", "print('a  ')\nprint('b')"))
    run.run(Block("page.md", 14, "", "a\nb", {"output": ""}))
    with pytest.raises(AssertionError, match="the page shows"):
        run.run(Block("page.md", 20, "", "a\nc", {"output": ""}))


# -- the API reference, the capability page, the site ---------------------------------------
def test_api_reference_covers_the_public_names():
    """Every name of `import mlforge as mlf` whose module exists is in docs/api.md."""
    text = (DOCS / "api.md").read_text()
    missing = []
    for name, module in mlforge._EXPORTS.items():
        try:
            importlib.import_module(module)
        except ImportError:  # a store whose module is not written yet (e.g. Unity Catalog)
            continue
        target = f"{module}.{mlforge._ALIASES.get(name, name)}"
        if f"::: {target}" not in text and not (f"::: {module}\n" in text and name in text):
            missing.append(target)
    assert not missing, f"add these to docs/api.md: {missing}"


def test_engine_matrix_is_generated_from_the_capabilities():
    done = subprocess.run([sys.executable, str(DOCS / "gen_matrix.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from mlforge.engines.base import CAPABILITIES

    page = (DOCS / "engines-matrix.md").read_text()
    assert all(f"`{cap}`" in page for cap in CAPABILITIES)


def test_figures_are_generated_and_shown():
    """docs/gen_figures.py drew every figure, and each one is on a page."""
    done = subprocess.run([sys.executable, str(DOCS / "gen_figures.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = {name for page in DOCS.glob("*.md") for name in re.findall(r"!\[[^\]]*\]\((figures/[\w.-]+)\)", page.read_text())}
    drawn = {f"figures/{path.name}" for path in (DOCS / "figures").glob("*.svg")}
    assert drawn and shown == drawn


def test_mkdocs_nav_lists_every_page():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))
    listed: set[str] = set()

    def walk(node):
        if isinstance(node, str):
            listed.add(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(config["nav"])
    assert {p.name for p in DOCS.glob("*.md")} == listed


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    """What `nox -s docs` runs: mkdocs-material + mkdocstrings, any warning fails."""
    pytest.importorskip("mkdocs")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_docstring_examples_run(monkeypatch, tmp_path):
    """The ``>>>`` examples in mlforge's docstrings (shown in the API reference) give what
    they say, as doctests."""
    import doctest
    import importlib
    import pkgutil

    import mlforge

    monkeypatch.chdir(tmp_path)
    failed: list[str] = []
    tried = 0
    for info in pkgutil.walk_packages(mlforge.__path__, "mlforge."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
        tried += result.attempted
        if result.failed:
            failed.append(f"{info.name}: {result.failed} of {result.attempted}")
    assert tried > 50 and not failed, failed

"""MLflow: record which feature versions a model was trained on, so the run can be reproduced.

``mlflow`` is imported only inside these functions (the ``mlflow`` extra);
``import mlforge`` never imports it.

* :func:`log_features_to_mlflow` logs feature names, versions, definition / schema / data
  hashes and column schemas to a run — as params, tags and a JSON artifact
  ``mlforge/retrieval_NNN.json`` that also holds the retrieval call when one is given.
* :func:`autolog` makes every ``get_training_data`` inside an active MLflow run do that
  by itself (through :data:`mlforge.retrieval.TRAINING_DATA_HOOKS`).
* :func:`load_logged_features` reads the artifacts back; its ``features`` are pinned
  ``(name, version)`` pairs to pass to ``get_training_data`` again.
* :func:`log_model` logs a model together with the training set it was fitted on (the
  feature set, the versions read, labels, timestamp, input columns) as the model artifact
  ``mlforge_features.json``; ``defs.score(model_uri, entity_df)`` and ``mlforge serve
  --model`` then look its features up by themselves (:mod:`mlforge.scoring`).

Example:
    >>> import mlflow, mlforge as mlf                                   # doctest: +SKIP
    >>> mlf.mlflow.autolog()                                            # doctest: +SKIP
    >>> with mlflow.start_run():                                        # doctest: +SKIP
    ...     train = defs.get_training_data(["user_spend"], labels, timestamp="ts")
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlforge.errors import ConfigError, MlforgeError, install_command
from mlforge.release import __version__
from mlforge.retrieval.training_set import MODEL_FEATURES_FILE, TrainingSet

log = logging.getLogger(__name__)

#: Where the JSON records go inside a run's artifacts.
ARTIFACT_DIR = "mlforge"
#: Tag counting the records of a run; records are numbered so repeated retrievals never clash.
COUNT_TAG = "mlforge.retrievals"
#: Metadata fields copied into each feature's record.
_METADATA_FIELDS = (
    "version", "keys", "timestamp", "interval", "schema", "definition_hash", "schema_hash",
    "data_hash", "source", "source_fingerprint", "rows", "created_at", "engine", "watermark",
)
#: Of those, the ones also logged as params/tags (short values only).
_TAGGED_FIELDS = ("version", "definition_hash", "schema_hash", "data_hash")
_MAX_PARAM = 500  # MLflow's smallest supported param value length across versions


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError("the MLflow integration needs mlflow", where="mlforge.integrations.mlflow", fix=install_command("mlflow")) from exc
    return mlflow


# -- logging ------------------------------------------------------------------------------
def log_features_to_mlflow(
    features: Sequence[Any] | str | None = None,
    run_id: str | None = None,
    definitions: Any = None,
    *,
    entity_df: Any = None,
    timestamp: str | None = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """Log the feature versions a model uses to an MLflow run; return the logged record.

    Args:
        features: names, ``(name, version)`` tuples or ``FeatureSpec`` objects (default: every
            feature of ``definitions`` that has a stored version). Unpinned names are
            resolved to the latest version now.
        run_id: the run to log to (default: the active run).
        definitions: the project (default: the ``definitions.py`` found from the current
            directory, as the CLI finds it).
        entity_df: the ``entity_df`` of the retrieval being recorded (only its columns, row
            count and, for local frames, a content hash are kept).
        timestamp: the retrieval's label-time column.
        rows: the row count of ``entity_df`` when known (saves counting a lazy frame).

    Per feature ``f`` the run gets params ``mlforge.f.version`` and tags
    ``mlforge.f.{version,definition_hash,schema_hash,data_hash}``, and the run gets the
    artifact ``mlforge/retrieval_NNN.json`` with the full record. Params cannot change in
    MLflow, so a later record with another version of ``f`` in the same run updates only
    the tags and adds an artifact.

    Raises:
        ConfigError: no run to log to, or mlflow is not installed.
        RetrievalError: an unknown feature or version.
    """
    mlflow = _mlflow()
    run_id = run_id or _active_run_id(mlflow)
    defs = definitions if definitions is not None else _load_project()
    record = training_record(defs, features, entity_df=entity_df, timestamp=timestamp, rows=rows)
    _write(_client(mlflow), run_id, record)
    log.info("logged %d feature(s) to MLflow run %s", len(record["features"]), run_id)
    return record


def training_record(defs: Any, features: Any = None, *, entity_df: Any = None, timestamp: str | None = None, rows: int | None = None) -> dict[str, Any]:
    """The JSON-ready record of a retrieval: what to log, without touching MLflow."""
    specs = feature_specs(defs, features)
    resolved = [_feature_record(defs, spec) for spec in specs]
    pinned = [[f["name"], f["version"]] if f["columns"] is None else {"name": f["name"], "version": f["version"], "columns": f["columns"]} for f in resolved]
    call: dict[str, Any] = {"features": pinned, "timestamp": timestamp}
    if entity_df is not None:
        call["entity_df"] = _describe_frame(entity_df, rows)
    return {
        "mlforge_version": __version__,
        "logged_at": datetime.now(UTC).isoformat(),
        "project": defs.name,
        "offline_store": repr(defs.offline_store),
        "features": resolved,
        "retrieval": call,
        "reproduce": _reproduce_snippet(pinned, timestamp),
    }


def feature_specs(defs: Any, features: Any) -> list[Any]:
    from mlforge.retrieval import feature_specs as parse_specs

    if features is None or (isinstance(features, Sequence) and not isinstance(features, (str, tuple)) and not features):
        stored = set(defs.offline_store.list_features())
        names = [n for n in sorted(defs.features or stored) if n in stored]
        if not names:
            raise ConfigError("no built features to log", fix="build them first (`mlforge build`), or name them")
        features = names
    return parse_specs(features)


def _feature_record(defs: Any, spec: Any) -> dict[str, Any]:
    from mlforge.errors import RetrievalError
    from mlforge.offline.base import resolve_version

    try:
        version = resolve_version(defs.offline_store, spec.name, spec.version)
        metadata = defs.offline_store.read_record(spec.name, version).to_dict()
    except MlforgeError as exc:
        raise RetrievalError(f"cannot log feature {spec.name!r} to MLflow: {exc.what}", where=exc.where, fix=exc.fix or "build it first: `mlforge build`") from exc
    record = {"name": spec.name, "columns": list(spec.columns) if spec.columns else None}
    record.update({k: metadata.get(k) for k in _METADATA_FIELDS})
    return record


def _describe_frame(frame: Any, rows: int | None) -> dict[str, Any]:
    """Columns, row count and (for in-memory frames) a content hash of ``entity_df``."""
    from mlforge.retrieval import frame_kind

    kind = frame_kind(frame)
    columns = frame.collect_schema().names() if kind == "polars" else frame.columns  # a LazyFrame resolves its schema
    described: dict[str, Any] = {"kind": kind, "columns": [str(c) for c in columns], "rows": rows}
    arrow = _as_arrow(frame, kind)
    if arrow is not None:
        described["rows"] = arrow.num_rows
        described["schema"] = {f.name: str(f.type) for f in arrow.schema}
        described["sha256"] = _arrow_sha256(arrow)
    elif rows is None:
        described["rows"] = _count(frame, kind)
    return described


def _count(frame: Any, kind: str) -> int:
    if kind == "spark":
        return int(frame.count())
    if kind == "polars":  # a LazyFrame
        import polars as pl

        return int(frame.select(pl.len()).collect().item())
    return int(frame.count().execute())


def _as_arrow(frame: Any, kind: str) -> Any:
    import pyarrow as pa

    if kind == "pandas":
        return pa.Table.from_pandas(frame, preserve_index=False)
    if kind == "polars" and hasattr(frame, "to_arrow"):
        return frame.to_arrow()
    if kind == "arrow":
        return frame
    return None  # Ibis, Spark and lazy Polars frames are not executed again just to hash them


def _arrow_sha256(table: Any) -> str:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _reproduce_snippet(pinned: list[Any], timestamp: str | None) -> str:
    features = ", ".join(repr(tuple(p)) if isinstance(p, list) else f"mlf.FeatureSpec({p['name']!r}, columns={p['columns']!r}, version={p['version']!r})" for p in pinned)
    ts = f", timestamp={timestamp!r}" if timestamp else ""
    return f"defs.get_training_data([{features}], entity_df{ts})"


def _write(client: Any, run_id: str, record: dict[str, Any]) -> None:
    from mlflow.entities import Param, RunTag

    run = _run(client, run_id)
    number = int(run.data.tags.get(COUNT_TAG, "0")) + 1
    tags = {COUNT_TAG: str(number), "mlforge.features": ",".join(f"{f['name']}@{f['version']}" for f in record["features"])}
    if record["project"]:
        tags["mlforge.project"] = str(record["project"])
    params: dict[str, str] = {}
    for feature in record["features"]:
        for field in _TAGGED_FIELDS:
            tags[f"mlforge.{feature['name']}.{field}"] = str(feature[field])
        params[f"mlforge.{feature['name']}.version"] = str(feature["version"])
    call = record["retrieval"]
    if call.get("timestamp"):
        params["mlforge.timestamp"] = call["timestamp"]
    if call.get("entity_df"):
        params["mlforge.entity_df.rows"] = str(call["entity_df"]["rows"])
        params["mlforge.entity_df.columns"] = ",".join(call["entity_df"]["columns"])[:_MAX_PARAM]
    # MLflow params are write-once: keep the first value of each, the tags hold the latest.
    params = {k: v for k, v in params.items() if k not in run.data.params}
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()], tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_dict(run_id, record, f"{ARTIFACT_DIR}/retrieval_{number:03d}.json")


def _client(mlflow: Any) -> Any:
    """An MLflow client of MLFLOW_TRACKING_URI; a tracking store MLflow refuses as it makes
    the client (a file store it no longer writes, an unknown scheme) is a ConfigError (E1).
    No request is made: the run's own read (:func:`_run`) is the first."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient()
    except MlflowException as exc:
        raise ConfigError(
            f"MLflow's tracking server cannot be used: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            where="MLFLOW_TRACKING_URI",
            fix="point MLFLOW_TRACKING_URI at a tracking server (http://...), or at a directory with MLFLOW_ALLOW_FILE_STORE=true (see docs/mlflow.md); a database store needs the full mlflow package, not mlflow-skinny",
        ) from None


def _run(client: Any, run_id: str) -> Any:
    """The MLflow run ``run_id``; one the tracking server does not know is a ConfigError (E1)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(
            f"MLflow run {run_id!r} cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            where=f"run_id={run_id!r}",
            fix="check the run id (mlflow ui, or mlflow.search_runs()) and MLFLOW_TRACKING_URI",
        ) from None


def _active_run_id(mlflow: Any) -> str:
    run = mlflow.active_run()
    if run is None:
        raise ConfigError("no MLflow run to log to", fix="call it inside `with mlflow.start_run():`, or pass run_id=")
    return run.info.run_id


def _load_project() -> Any:
    from mlforge.loader import load_definitions

    return load_definitions()


# -- autolog ------------------------------------------------------------------------------
def autolog(disable: bool = False) -> None:
    """Record every ``get_training_data`` call made inside an active MLflow run.

    After ``autolog()``, each retrieval (``defs.get_training_data`` or
    ``mlf.get_training_data``) inside ``mlflow.start_run()`` logs its feature versions,
    hashes, schemas and the call itself (features, timestamp column, ``entity_df`` rows and
    columns) as :func:`log_features_to_mlflow` does. Outside a run nothing is logged.
    ``autolog(disable=True)`` turns it off. Calling it twice registers it once.
    """
    _mlflow()  # fail now, naming the extra, rather than at the first retrieval
    from mlforge.retrieval import TRAINING_DATA_HOOKS

    if _autolog_hook in TRAINING_DATA_HOOKS:
        TRAINING_DATA_HOOKS.remove(_autolog_hook)
    if not disable:
        TRAINING_DATA_HOOKS.append(_autolog_hook)


def _autolog_hook(defs: Any, specs: Sequence[Any], entity_df: Any, timestamp: str | None, result: Any) -> None:
    mlflow = _mlflow()
    run = mlflow.active_run()
    if run is None:
        return
    rows = _row_count(result)
    log_features_to_mlflow(list(specs), run.info.run_id, defs, entity_df=entity_df, timestamp=timestamp, rows=rows)


def _row_count(result: Any) -> int | None:
    """Rows of the training frame (= rows of ``entity_df``, contract P1), when cheap: local
    results are in memory (lazy Polars and Ibis results wrap an executed table); a Spark
    result would be a job, so its ``entity_df`` is counted instead."""
    if hasattr(result, "num_rows"):  # PyArrow
        return int(result.num_rows)
    if hasattr(result, "height"):  # Polars DataFrame
        return int(result.height)
    if type(result).__module__.startswith("pandas"):
        return len(result)
    if hasattr(result, "collect_schema"):  # Polars LazyFrame over a collected frame
        import polars as pl

        return int(result.select(pl.len()).collect().item())
    if type(result).__module__.startswith("ibis"):
        return int(result.count().execute())
    return None


# -- reading back -------------------------------------------------------------------------
def load_logged_features(run_id: str, *, number: int | None = None) -> dict[str, Any]:
    """The record logged to ``run_id`` (the last one, or record ``number``).

    ``record["retrieval"]["features"]`` holds pinned ``[name, version]`` pairs (or specs
    with columns), ready for ``defs.get_training_data`` to read exactly what the run used.
    """
    mlflow = _mlflow()
    client = _client(mlflow)
    count = int(_run(client, run_id).data.tags.get(COUNT_TAG, "0"))
    if count == 0:
        raise ConfigError(f"MLflow run {run_id} has no mlforge record", fix="log one with mlf.log_features_to_mlflow or autolog()")
    number = count if number is None else number
    if not 1 <= number <= count:
        raise ConfigError(f"MLflow run {run_id} has records 1..{count}, not {number}", fix=f"pass number= between 1 and {count}")
    return mlflow.artifacts.load_dict(f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{ARTIFACT_DIR}/retrieval_{number:03d}.json")


def pinned_features(record: dict[str, Any]) -> list[Any]:
    """The feature requests of a record, as ``get_training_data`` takes them."""
    from mlforge.retrieval import FeatureSpec

    return [tuple(p) if isinstance(p, list) else FeatureSpec(p["name"], columns=p["columns"], version=p["version"]) for p in record["retrieval"]["features"]]


# -- models that carry their features ---------------------------------------------------------
def log_model(model: Any, artifact_path: str, *, training_set: TrainingSet | None = None, input_columns: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """Log ``model`` as an MLflow pyfunc model that knows its features.

    The model's artifacts get ``mlforge_features.json``: the training set's feature set, each
    feature pinned to the version read, the key, timestamp and label columns, and the input
    columns in the order the model was fitted on. ``defs.score(info.model_uri, entity_df)``
    (batch, point in time) and ``mlforge serve --model NAME=URI`` (online) read it and look
    the features up at those versions by themselves.

    Args:
        model: an ``mlflow.pyfunc.PythonModel``, or any object with ``predict(frame)``
            (a scikit-learn estimator, say), which is wrapped in one.
        artifact_path: the model's name within the run (MLflow 3's ``name``).
        training_set: what ``defs.training_set(...)`` returned for the data it was fitted on.
        input_columns: the model's inputs in fitting order (default: the training set's
            feature columns); ``entity_df`` columns among them must be given when scoring.
        **kwargs: passed to ``mlflow.pyfunc.log_model`` (``pip_requirements``,
            ``signature``, ``registered_model_name``...).

    Returns:
        MLflow's ``ModelInfo``; its ``model_uri`` is what ``defs.score`` takes.

    Raises:
        ConfigError: ``training_set`` is not a training set, the input columns are bad, the
            model has no ``predict``, or mlflow is not installed.

    Example:
        >>> ts = defs.training_set("delay_features", labels, label="arr_delay", timestamp="sched_dep_at")  # doctest: +SKIP
        >>> model.fit(ts.frame[list(ts.feature_columns)], ts.frame["arr_delay"])              # doctest: +SKIP
        >>> with mlflow.start_run():                                                          # doctest: +SKIP
        ...     info = mlf.mlflow.log_model(model, "model", training_set=ts)
        >>> defs.score(info.model_uri, upcoming, timestamp="sched_dep_at")                    # doctest: +SKIP
    """
    _mlflow()  # names the extra when MLflow is missing
    import mlflow
    import mlflow.pyfunc

    if not isinstance(training_set, TrainingSet):
        raise ConfigError(f"training_set must be a TrainingSet, got {type(training_set).__name__}", where="log_model(training_set=...)", fix="pass defs.training_set(features, entity_df, label=..., timestamp=...)")
    record = training_set.model_features(input_columns)
    metadata = {**(kwargs.pop("metadata", None) or {}), "mlforge": {"feature_set": record.feature_set, "versions": record.versions}}
    with tempfile.TemporaryDirectory(prefix="mlforge-model-") as folder:
        path = Path(folder) / MODEL_FEATURES_FILE
        path.write_text(record.to_json())
        artifacts = {**(kwargs.pop("artifacts", None) or {}), "mlforge_features": str(path)}
        where = {"name": artifact_path} if int(mlflow.__version__.split(".")[0]) >= 3 else {"artifact_path": artifact_path}
        info = mlflow.pyfunc.log_model(**where, python_model=_python_model(model), artifacts=artifacts, metadata=metadata, **kwargs)
    run = mlflow.active_run()
    if run is not None:
        tags = {"mlforge.model_features": ",".join(f"{s.name}@{s.version}" for s in record.features)}
        if record.feature_set:
            tags["mlforge.feature_set"] = record.feature_set
        mlflow.set_tags(tags)
    log.info("logged model %s with %d feature(s)", info.model_uri, len(record.features))
    return info


def _python_model(model: Any) -> Any:
    """``model`` as a pyfunc ``PythonModel``: as it is, or wrapped around its ``predict``."""
    import mlflow.pyfunc

    if isinstance(model, mlflow.pyfunc.PythonModel):
        return model
    if not callable(getattr(model, "predict", None)):
        raise ConfigError(f"cannot log a {type(model).__name__}: it has no predict method", where="log_model(model=...)", fix="pass an mlflow.pyfunc.PythonModel or an object with predict(frame), e.g. a fitted scikit-learn estimator")

    # Defined here so mlflow stays unimported until a model is logged; cloudpickle stores
    # the class with the model, so loading it needs MLflow only.
    class Predictor(mlflow.pyfunc.PythonModel):
        """Calls the wrapped model's ``predict`` on the input frame."""

        def __init__(self, wrapped: Any):
            self.wrapped = wrapped

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return self.wrapped.predict(model_input)

    return Predictor(model)

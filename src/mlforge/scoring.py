"""Scoring a logged model with the features it was trained on (batch: point in time; online: O1).

A model logged with ``mlf.mlflow.log_model(model, name, training_set=...)`` carries
``mlforge_features.json`` (:class:`~mlforge.retrieval.training_set.ModelFeatures`): the
features pinned to the versions the training set read, and the model's input columns in
order. :func:`load_model` reads it back with the model; :func:`score` looks the features up
point in time (rules P1-P4) at those versions and predicts; :func:`score_online` does the
same from the online store at a read time (rule O1), which is what ``mlforge serve``'s
``POST /models/{name}/predict`` calls. Both feed the model the same columns in the same
order, so for the same entities at the same moment they give the same predictions.

MLflow is imported only when a model is loaded (the ``mlflow`` extra: ``pip install -e '.[mlflow]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlforge import retrieval
from mlforge.errors import ConfigError, RetrievalError, missing_extra
from mlforge.retrieval.frames import finish, frame_kind, local_view, materialize_columns
from mlforge.retrieval.training_set import MODEL_FEATURES_FILE, ModelFeatures, columns_of

if TYPE_CHECKING:
    import pyarrow as pa

    from mlforge.definitions.feature import Feature
    from mlforge.workspace import Workspace

log = logging.getLogger(__name__)

#: The column scoring adds to the entity frame.
PREDICTION = "prediction"
#: Where ``log_model`` puts the record inside the model's directory (MLflow's ``artifacts``).
ARTIFACT_SUBDIR = "artifacts"


@dataclass(frozen=True)
class LoadedModel:
    """A logged model and the features it looks up.

    Attributes:
        uri: where it was loaded from (``runs:/…``, ``models:/…`` or a path).
        features: its :class:`ModelFeatures` record.
        model: the MLflow pyfunc model.
    """

    uri: str
    features: ModelFeatures
    model: Any = field(repr=False, compare=False)

    def predict(self, inputs: pa.Table) -> pa.Array:
        """One prediction per row of ``inputs`` (the input columns, in order)."""
        import numpy as np
        import pyarrow as pa

        if inputs.num_rows == 0:
            return pa.array([], pa.float64())
        raw = self.model.predict(inputs.to_pandas())
        values = np.asarray(raw.to_numpy() if type(raw).__module__.startswith("pandas") else raw)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or len(values) != inputs.num_rows:
            raise ConfigError(f"model {self.uri} returned predictions of shape {values.shape} for {inputs.num_rows} rows", fix="scoring takes one prediction per row: return a 1-D array (or a one-column frame)")
        return pa.array(values)


def load_model(uri: str) -> LoadedModel:
    """Load a model logged by ``mlf.mlflow.log_model`` and its feature record.

    Args:
        uri: an MLflow model URI (``runs:/<run_id>/<name>``, ``models:/<id or name/version>``)
            or a local model directory.

    Raises:
        ConfigError: the model cannot be found, or it was logged without a training set.
        EngineError: MLflow is not installed.
    """
    try:
        import mlflow.artifacts
        import mlflow.pyfunc
    except ImportError:
        raise missing_extra("mlflow", "mlflow") from None
    try:
        local = Path(uri) if Path(uri).is_dir() else Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:  # MLflow raises its own (and OS) errors for a bad URI
        raise ConfigError(f"cannot fetch model {uri!r}: {type(exc).__name__}: {exc}", where="model URI", fix="pass the model_uri that mlf.mlflow.log_model returned (runs:/<run_id>/<name> or models:/<id>), with MLFLOW_TRACKING_URI set to its store") from None
    record_path = local / ARTIFACT_SUBDIR / MODEL_FEATURES_FILE
    if not record_path.is_file():
        raise ConfigError(f"model {uri!r} has no {MODEL_FEATURES_FILE}: it was not logged with a training set", where="model URI", fix="log it with mlf.mlflow.log_model(model, name, training_set=defs.training_set(...))")
    features = ModelFeatures.from_json(record_path.read_text(), where=f"{uri} ({MODEL_FEATURES_FILE})")
    model = mlflow.pyfunc.load_model(str(local))
    log.info("loaded model %s: %s", uri, ", ".join(f"{s.name}@{s.version}" for s in features.features))
    return LoadedModel(uri, features, model)


def score(workspace: Workspace, defined: Mapping[str, Feature], loaded: LoadedModel, entity_df: Any, *, timestamp: str | None = None, engine: Any = None) -> Any:
    """``entity_df`` plus a ``prediction`` column: the features looked up point in time at the
    model's recorded versions (P1-P4), fed to the model in its input order.

    ``timestamp`` defaults to the training set's timestamp column when ``entity_df`` has it;
    without one every row reads the newest values. Returns the same kind of frame.
    """
    local, kind, wrap = local_view(entity_df, frame_kind(entity_df))
    columns = _check_entities(loaded, columns_of(local))
    if timestamp is None and loaded.features.timestamp in columns:
        timestamp = loaded.features.timestamp
    training = retrieval.training_data(workspace, defined, list(loaded.features.features), local, timestamp=timestamp, engine=engine)
    return wrap(_with_predictions(loaded, local, kind, training))


def score_online(workspace: Workspace, defined: Mapping[str, Feature], loaded: LoadedModel, entity_df: Any, *, at: Any = None) -> Any:
    """``entity_df`` plus a ``prediction`` column, the features read from the online store at
    read time ``at`` (rule O1; default now) at the model's recorded versions: the online
    store must serve exactly those versions. Returns the same kind of frame."""
    local, kind, wrap = local_view(entity_df, frame_kind(entity_df))
    _check_entities(loaded, columns_of(local))
    online = retrieval.online_features(workspace, defined, list(loaded.features.features), local, at=at)
    return wrap(_with_predictions(loaded, local, kind, online))


def _check_entities(loaded: LoadedModel, columns: list[str]) -> list[str]:
    if PREDICTION in columns:
        raise RetrievalError(f"entity_df already has a {PREDICTION!r} column", fix="rename or drop it before scoring")
    missing = [c for c in loaded.features.extra_inputs if c not in columns]
    if missing:
        raise RetrievalError(f"the model also reads the column(s) {missing}, which entity_df lacks", where=f"model {loaded.uri}", fix=f"add them to entity_df; its input columns are {list(loaded.features.input_columns)}")
    return columns


def _with_predictions(loaded: LoadedModel, local: Any, kind: str, looked_up: Any) -> Any:
    import pyarrow as pa

    inputs = materialize_columns(looked_up, kind, list(loaded.features.input_columns))
    return finish(local, kind, pa.table({PREDICTION: loaded.predict(inputs)}))

"""A training set that knows what it was built from, and the record a model keeps of it.

:class:`TrainingSet` is what ``Definitions.training_set`` (and ``get_training_data(...,
as_training_set=True)``) returns: the frame plus the feature set, the versions read, the
label and timestamp columns. :class:`ModelFeatures` is the part of it a logged model
carries (``mlforge_features.json`` among the model's artifacts), enough to look the same
features up again at the same versions, offline for batch scoring and online for serving.
It is written and read here only (``to_json`` / ``from_json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlforge.definitions.feature_set import FeatureSpec
from mlforge.errors import ConfigError
from mlforge.manifest import exact_types
from mlforge.retrieval.frames import arrow_schema, frame_columns, frame_kind

#: The artifact file of a logged model that holds its :class:`ModelFeatures`.
MODEL_FEATURES_FILE = "mlforge_features.json"
#: Bumped when the record's fields change incompatibly.
FORMAT = 1


@dataclass(frozen=True)
class ModelFeatures:
    """What a model needs to look its features up by itself.

    Attributes:
        project: the project the model was trained in.
        feature_set: the feature set trained on, or ``None`` for a plain feature list.
        features: the features, each pinned to the version the training set read.
        feature_columns: the value columns the features added, in training-set order.
        input_columns: the model's input columns, in the order it was fitted on (feature
            columns, and any ``entity_df`` columns the model also reads).
        keys: the join-key columns an entity is given by.
        natural_keys: join key -> the natural columns that may stand for it (rule K2).
        timestamp: the label-time column of the training set.
        label_columns: the label columns of the training set.
    """

    project: str
    feature_set: str | None
    features: tuple[FeatureSpec, ...]
    feature_columns: tuple[str, ...]
    input_columns: tuple[str, ...]
    keys: tuple[str, ...]
    natural_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()
    timestamp: str | None = None
    label_columns: tuple[str, ...] = ()
    #: The training frame's type of each ``entity_df`` column the model reads, as Ibis type
    #: text: a REST body (JSON, untyped) gives them these types. Empty in older records.
    input_types: tuple[tuple[str, str], ...] = ()
    format: int = FORMAT

    @property
    def versions(self) -> dict[str, str | None]:
        """Feature name -> the version the model was trained on."""
        return {s.name: s.version for s in self.features}

    @property
    def extra_inputs(self) -> list[str]:
        """Input columns that are not feature values: the caller must supply them."""
        return [c for c in self.input_columns if c not in self.feature_columns]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "project": self.project,
            "feature_set": self.feature_set,
            "features": [{"name": s.name, "version": s.version, "columns": list(s.columns) if s.columns else None} for s in self.features],
            "feature_columns": list(self.feature_columns),
            "input_columns": list(self.input_columns),
            "keys": list(self.keys),
            "natural_keys": {key: list(columns) for key, columns in self.natural_keys},
            "timestamp": self.timestamp,
            "label_columns": list(self.label_columns),
            "input_types": dict(self.input_types),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str, *, where: str = MODEL_FEATURES_FILE) -> ModelFeatures:
        """Read a record written by :meth:`to_json`.

        Raises:
            ConfigError: not such a record, or one of a newer format.
        """
        try:
            data = json.loads(text)
            if data.get("format", 0) > FORMAT:
                raise ConfigError(f"the model's feature record has format {data['format']}; this mlforge reads up to {FORMAT}", where=where, fix="upgrade mlforge")
            return cls(
                project=str(data["project"]),
                feature_set=data.get("feature_set"),
                features=tuple(FeatureSpec(f["name"], columns=f.get("columns"), version=f["version"]) for f in data["features"]),
                feature_columns=tuple(data["feature_columns"]),
                input_columns=tuple(data["input_columns"]),
                keys=tuple(data["keys"]),
                natural_keys=tuple((k, tuple(v)) for k, v in (data.get("natural_keys") or {}).items()),
                timestamp=data.get("timestamp"),
                label_columns=tuple(data.get("label_columns") or ()),
                input_types=tuple((str(k), str(v)) for k, v in (data.get("input_types") or {}).items()),
                format=int(data.get("format", FORMAT)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"the model's feature record is not readable: {type(exc).__name__}: {exc}", where=where, fix="log the model with mlf.mlflow.log_model(model, name, training_set=...)") from None


@dataclass(frozen=True)
class TrainingSet:
    """Point-in-time training data together with what it was built from.

    Attributes:
        frame: the training frame (the kind of ``entity_df``): ``entity_df`` plus the
            feature columns (rule P1).
        features: the features read, each pinned to the version read.
        feature_set: the feature set's name, when the request was one set.
        feature_columns: the value columns the features added, in order.
        label_columns: the label columns (part of ``entity_df``).
        timestamp: the label-time column, if any.
        keys: the join keys of the features; ``natural_keys`` the natural columns that may
            stand for a surrogate key (K2).
        project: the project's name.
    """

    frame: Any
    features: tuple[FeatureSpec, ...]
    feature_set: str | None
    feature_columns: tuple[str, ...]
    label_columns: tuple[str, ...]
    timestamp: str | None
    keys: tuple[str, ...]
    natural_keys: tuple[tuple[str, tuple[str, ...]], ...]
    project: str

    def __repr__(self) -> str:
        pinned = ", ".join(f"{s.name}@{s.version}" for s in self.features)
        return f"TrainingSet(feature_set={self.feature_set!r}, features=[{pinned}], labels={list(self.label_columns)}, timestamp={self.timestamp!r})"

    @property
    def versions(self) -> dict[str, str | None]:
        """Feature name -> the version read."""
        return {s.name: s.version for s in self.features}

    def load_df(self) -> Any:
        """The training frame (as the Databricks client names it)."""
        return self.frame

    def model_features(self, input_columns: Sequence[str] | None = None) -> ModelFeatures:
        """The record a model trained on this set keeps (see :class:`ModelFeatures`).

        Args:
            input_columns: the model's inputs in the order it was fitted on (default: the
                feature columns). Columns of ``entity_df`` may be among them; they must then
                be given again when scoring. Labels and unknown columns are refused.

        Raises:
            ConfigError: an input column is a label or not in the training frame.
        """
        inputs = tuple(self.feature_columns if input_columns is None else input_columns)
        if isinstance(input_columns, str) or not inputs:
            raise ConfigError("input_columns must be a non-empty list of column names", where="log_model(input_columns=...)", fix=f"e.g. input_columns={list(self.feature_columns)}")
        labels = [c for c in inputs if c in self.label_columns]
        if labels:
            raise ConfigError(f"input column(s) {labels} are labels", where="log_model(input_columns=...)", fix="a model cannot take its labels as inputs; leave them out")
        known = set(columns_of(self.frame))
        unknown = [c for c in inputs if c not in known]
        if unknown:
            raise ConfigError(f"input column(s) {unknown} are not in the training set", where="log_model(input_columns=...)", fix=f"choose from {sorted(known - set(self.label_columns))}")
        extra = [c for c in inputs if c not in self.feature_columns]
        schema = arrow_schema(self.frame, frame_kind(self.frame)) if extra else None
        types = exact_types(_fields(schema, extra)) if schema is not None else {}
        return ModelFeatures(
            project=self.project,
            feature_set=self.feature_set,
            features=self.features,
            feature_columns=self.feature_columns,
            input_columns=inputs,
            keys=self.keys,
            natural_keys=self.natural_keys,
            timestamp=self.timestamp,
            label_columns=self.label_columns,
            input_types=tuple((c, types[c]) for c in extra if c in types),
        )


def _fields(schema: Any, names: Sequence[str]) -> Any:
    """The fields of ``schema`` named in ``names``, in that order."""
    import pyarrow as pa

    return pa.schema([schema.field(name) for name in names])


def natural_keys_of(entities: Mapping[str, Sequence[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((key, tuple(columns)) for key, columns in sorted(entities.items()))


def columns_of(frame: Any) -> list[str]:
    """The column names of any frame retrieval accepts (a Polars LazyFrame resolves its schema)."""
    kind = frame_kind(frame)
    if kind == "polars" and type(frame).__name__ == "LazyFrame":
        return list(frame.collect_schema().names())
    return frame_columns(frame, kind)

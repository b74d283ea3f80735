"""mlforge: declare features in Python, build them with Ibis on DuckDB, Polars or PySpark,
store them versioned, and serve them point-in-time correct.

``import mlforge`` stays light: engines, cloud SDKs, servers and Ibis itself are imported
only when used. Public names resolve lazily through ``__getattr__``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mlforge.release import __version__

_EXPORTS: dict[str, str] = {
    # definitions
    "feature": "mlforge.definitions.feature",
    "Feature": "mlforge.definitions.feature",
    "Entity": "mlforge.definitions.entity",
    "Source": "mlforge.definitions.source",
    "ParquetFormat": "mlforge.definitions.source",
    "CSVFormat": "mlforge.definitions.source",
    "DeltaFormat": "mlforge.definitions.source",
    "Timestamp": "mlforge.definitions.source",
    "Aggregate": "mlforge.definitions.metrics",
    "Sum": "mlforge.definitions.metrics",
    "Count": "mlforge.definitions.metrics",
    "Mean": "mlforge.definitions.metrics",
    "Min": "mlforge.definitions.metrics",
    "Max": "mlforge.definitions.metrics",
    "Std": "mlforge.definitions.metrics",
    "Median": "mlforge.definitions.metrics",
    "Field": "mlforge.definitions.metrics",
    "Rolling": "mlforge.definitions.metrics",
    "not_null": "mlforge.definitions.validators",
    "unique": "mlforge.definitions.validators",
    "greater_than": "mlforge.definitions.validators",
    "greater_than_or_equal": "mlforge.definitions.validators",
    "less_than": "mlforge.definitions.validators",
    "less_than_or_equal": "mlforge.definitions.validators",
    "in_range": "mlforge.definitions.validators",
    "matches_regex": "mlforge.definitions.validators",
    "is_in": "mlforge.definitions.validators",
    # project and retrieval
    "Definitions": "mlforge.project",
    "FeatureSpec": "mlforge.retrieval",
    "FeatureSet": "mlforge.definitions.feature_set",
    "TrainingSet": "mlforge.retrieval.training_set",
    "get_training_data": "mlforge.project",
    "get_online_features": "mlforge.project",
    "surrogate_key": "mlforge.prepare",
    # stores
    "LocalStore": "mlforge.offline.local",
    "S3Store": "mlforge.offline.s3",
    "GCSStore": "mlforge.offline.gcs",
    "UnityCatalogStore": "mlforge.offline.unity_catalog",
    "MemoryStore": "mlforge.online.memory",
    "RedisStore": "mlforge.online.redis",
    "ValkeyStore": "mlforge.online.redis",
    "DynamoDBStore": "mlforge.online.dynamodb",
    "DatabricksOnlineStore": "mlforge.online.databricks",
    # errors
    "MlforgeError": "mlforge.errors",
    "log_features_to_mlflow": "mlforge.integrations.mlflow",
}
_ALIASES = {"surrogate_key": "surrogate_key_value"}

__all__ = sorted([*_EXPORTS, "errors", "mlflow"])

if TYPE_CHECKING:  # pragma: no cover
    from mlforge.definitions.entity import Entity
    from mlforge.definitions.feature import Feature, feature
    from mlforge.definitions.feature_set import FeatureSet
    from mlforge.definitions.metrics import (
        Aggregate,
        Count,
        Field,
        Max,
        Mean,
        Median,
        Min,
        Rolling,
        Std,
        Sum,
    )
    from mlforge.definitions.source import CSVFormat, DeltaFormat, ParquetFormat, Source, Timestamp
    from mlforge.offline.local import LocalStore
    from mlforge.project import Definitions


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), _ALIASES.get(name, name))
        globals()[name] = value
        return value
    if name == "mlflow":
        module = import_module("mlforge.integrations.mlflow")
        globals()[name] = module
        return module
    if name == "errors":
        return import_module("mlforge.errors")
    raise AttributeError(f"module 'mlforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

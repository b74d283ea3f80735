"""The registries of plugins: one per plugin kind, each spelled once.

* engines -- ``EngineName``; engine ``x`` lives in ``mlforge/engines/x.py`` (``ENGINE``);
* offline stores -- ``OFFLINE_KINDS`` (the ``KIND`` of an ``offline_store`` profile block);
* online stores -- ``ONLINE_KINDS`` (the ``KIND`` of an ``online_store`` block).

Config, the CLI and the definitions read these; nothing here imports a plugin, so the
registry sits below everything (plugin classes are imported only when a profile names
them).

>>> ENGINE_NAMES
('duckdb', 'polars', 'pyspark')
>>> sorted(OFFLINE_KINDS)
['gcs', 'local', 's3', 'unity-catalog']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

#: The engine names: the one place a new engine is declared.
EngineName = Literal["duckdb", "polars", "pyspark"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
#: The embedded default engine.
DEFAULT_ENGINE: EngineName = "duckdb"


@dataclass(frozen=True)
class Kind:
    """A store ``KIND``: where its class lives and which extra installs its dependencies."""

    module: str
    cls: str
    extra: str | None = None


#: KIND -> store class for ``offline_store`` blocks; objects are created from these lazily.
OFFLINE_KINDS: dict[str, Kind] = {
    "local": Kind("mlforge.offline.local", "LocalStore"),
    "s3": Kind("mlforge.offline.s3", "S3Store", "s3"),
    "gcs": Kind("mlforge.offline.gcs", "GCSStore", "gcs"),
    "unity-catalog": Kind("mlforge.offline.unity_catalog", "UnityCatalogStore", "databricks"),
}
#: KIND -> store class for ``online_store`` blocks (``databricks-online-tables`` is the
#: long spelling of ``databricks``).
ONLINE_KINDS: dict[str, Kind] = {
    "memory": Kind("mlforge.online.memory", "MemoryStore"),
    "redis": Kind("mlforge.online.redis", "RedisStore", "redis"),
    "valkey": Kind("mlforge.online.redis", "ValkeyStore", "valkey"),
    "dynamodb": Kind("mlforge.online.dynamodb", "DynamoDBStore", "dynamodb"),
    "databricks-online-tables": Kind("mlforge.online.databricks", "DatabricksOnlineStore", "databricks"),
    "databricks": Kind("mlforge.online.databricks", "DatabricksOnlineStore", "databricks"),
}

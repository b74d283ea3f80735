"""One module per Ibis backend. Nothing outside this package knows which engine runs.

Engine names are declared once, in :mod:`mlforge.plugins`; engine ``x`` lives in
``mlforge/engines/x.py``, whose ``ENGINE`` is its class (imported only when used).

>>> get_engine("duckdb").name
'duckdb'
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mlforge.errors import EngineError
from mlforge.plugins import DEFAULT_ENGINE, ENGINE_NAMES

if TYPE_CHECKING:
    from mlforge.engines.base import Engine



def engine_class(name: str) -> type[Engine]:
    """The class registered for ``name``; unknown names are an ``EngineError``."""
    key = name.lower()
    if key not in ENGINE_NAMES:
        raise EngineError(f"unknown engine {name!r}", fix=f"use one of {', '.join(ENGINE_NAMES)} (or pass an engine object / SparkSession)")
    return import_module(f"mlforge.engines.{key}").ENGINE


def get_engine(spec: Any = None) -> Engine:
    """Return an engine for a name (``"duckdb"``, ``"polars"``, ``"pyspark"``), an engine
    object, or a live Spark session (classic, Spark Connect, or Databricks Connect's
    ``DatabricksSession``). ``None`` means the embedded default, DuckDB."""
    from mlforge.engines.base import Engine

    if spec is None:
        spec = DEFAULT_ENGINE
    if isinstance(spec, Engine):
        return spec
    if not isinstance(spec, str):
        spark: Any = engine_class("pyspark")  # PySparkEngine(session=...)
        if spark.wraps(spec):
            return spark(session=spec)
    if not isinstance(spec, str):
        raise EngineError(f"unknown engine {spec!r}", fix=f"use one of {', '.join(ENGINE_NAMES)} (or pass an engine object / SparkSession)")
    engine = engine_class(spec)()
    engine.check_available()  # a missing extra says how to install it, on every path
    return engine

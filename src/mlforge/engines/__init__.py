"""One module per Ibis backend. Nothing outside this package knows which engine runs.

>>> from mlforge.engines import ENGINE_NAMES
>>> ENGINE_NAMES
('duckdb', 'polars', 'pyspark')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlforge.errors import EngineError

if TYPE_CHECKING:
    from mlforge.engines.base import Engine

ENGINE_NAMES: tuple[str, ...] = ("duckdb", "polars", "pyspark")


def get_engine(spec: Any = None) -> Engine:
    """Return an engine for a name (``"duckdb"``, ``"polars"``, ``"pyspark"``), an engine
    object, or a live ``SparkSession``. ``None`` means the embedded default, DuckDB."""
    from mlforge.engines.base import Engine

    if spec is None:
        spec = "duckdb"
    if isinstance(spec, Engine):
        return spec
    if type(spec).__name__ == "SparkSession" or "SparkSession" in type(spec).__name__:
        from mlforge.engines.pyspark import PySparkEngine

        return PySparkEngine(session=spec)
    if not isinstance(spec, str) or spec.lower() not in ENGINE_NAMES:
        raise EngineError(
            f"unknown engine {spec!r}",
            fix=f"use one of {', '.join(ENGINE_NAMES)} (or pass an engine object / SparkSession)",
        )
    name = spec.lower()
    if name == "duckdb":
        from mlforge.engines.duckdb import DuckDBEngine

        return DuckDBEngine()
    if name == "polars":
        from mlforge.engines.polars import PolarsEngine

        return PolarsEngine()
    from mlforge.engines.pyspark import PySparkEngine

    return PySparkEngine()

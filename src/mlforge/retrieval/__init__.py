"""Point-in-time retrieval (contract P1-P4, K2) and online lookups (O2).

Training data is built as Ibis expressions on one engine. The caller's ``entity_df``
gets a row number, then each requested feature is left-joined onto it:

* metric feature -- an equality join on the keys and the grid label
  ``floor(L / interval) * interval``; a missing grid row means empty windows (W4);
* non-metric feature with a timestamp -- a backward as-of join (``ts <= L``), natively
  where the engine has the ``asof_join`` capability, else joined on the keys, filtered to
  ``ts <= L`` and reduced to the newest match per row;
* no label timestamp (or a feature without one) -- the newest row of each key.

Local frames (pandas, Polars, PyArrow, Ibis on DuckDB/Polars) send only their key and
label columns to the engine and get the feature columns back in row order; a Spark
DataFrame stays in Spark from end to end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlforge.errors import RetrievalError
from mlforge.retrieval.frames import (
    _arrow_table,
    _bound_to,
    _choose_engine,
    _columns,
    _finish,
    _kind,
    _local_view,
    _materialize,
    _online_key,
    _plain_columns,
    _typed_array,
)
from mlforge.retrieval.joins import _ROW, _attach, _prepare
from mlforge.retrieval.specs import (
    FeatureSpec,
    _call_style,
    _check_outputs,
    _resolve,
    _specs,
    _surrogates,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from mlforge.engines.base import Engine

__all__ = ["TRAINING_DATA_HOOKS", "FeatureSpec", "get_online_features", "get_training_data"]

log = logging.getLogger(__name__)

#: Called after every ``get_training_data`` as ``hook(definitions, specs, entity_df, timestamp,
#: result)``; ``mlforge.integrations.mlflow.autolog()`` registers one. A failing hook is
#: logged, never raised: recording a retrieval must not break it.
TRAINING_DATA_HOOKS: list[Callable[..., None]] = []


# -- public API ---------------------------------------------------------------------------
def get_training_data(*args: Any, timestamp: str | None = None, definitions: Any = None, store: Any = None, engine: Any = None) -> Any:
    """Point-in-time correct training data: ``entity_df`` plus feature values (P1-P4).

    Two call styles::

        mlf.get_training_data(features, entity_df, timestamp="ts", definitions=defs)
        defs.get_training_data(features, entity_df, timestamp="ts")   # the same
        mlf.get_training_data(features, entity_df, timestamp="ts", store=mlf.LocalStore("fs"))

    Args:
        features: names, ``(name, version)`` tuples or :class:`FeatureSpec` objects.
        entity_df: pandas, Polars or PyArrow frame, Ibis table or Spark DataFrame with the
            features' key columns (or an entity's ``from_columns``, K2); the result is the
            same kind, with exactly its rows in order, all its columns and the features'
            value columns.
        timestamp: the label-time column of ``entity_df`` (naive values are UTC). Without
            it every row gets the newest stored row of its key.
        definitions: the project (``mlf.Definitions``); or ``store``: an offline store.
        engine: engine name or object to run on (default: the project's, DuckDB).

    Example:
        >>> import pandas as pd, mlforge as mlf
        >>> labels = pd.DataFrame({"user_id": ["u1"], "ts": pd.to_datetime(["2024-01-08"])})
        >>> mlf.get_training_data(["user_spend"], labels, timestamp="ts", definitions=defs)  # doctest: +SKIP
    """
    defs, features, entity_df = _call_style(args, definitions, store, engine, "get_training_data")
    specs = _specs(features)
    kind = _kind(entity_df)
    engine_obj = _choose_engine(defs, engine, entity_df, kind)
    if engine_obj.name == "pyspark" and kind in ("spark", "ibis") and _bound_to(entity_df, engine_obj, kind):
        result = _training_in_engine(defs, specs, entity_df, kind, timestamp, engine_obj)
    else:
        frame, local_kind, wrap = _local_view(entity_df, kind)
        result = wrap(_training_local(defs, specs, frame, local_kind, timestamp, engine_obj))
    for hook in list(TRAINING_DATA_HOOKS):
        try:
            hook(defs, specs, entity_df, timestamp, result)
        except Exception as exc:
            log.warning("training-data hook %r failed: %s: %s", hook, type(exc).__name__, exc)
    return result


def get_online_features(*args: Any, definitions: Any = None, store: Any = None) -> Any:
    """The newest feature values per entity from the online store (O1, O2, K2).

    Called as ``defs.get_online_features(features, entity_df)`` or
    ``mlf.get_online_features(features, entity_df, definitions=defs)``. Unknown entities
    get nulls. Returns the same kind of frame as ``entity_df``.
    """
    defs, features, entity_df = _call_style(args, definitions, store, None, "get_online_features")
    online = getattr(defs, "online_store", None)
    if online is None:
        raise RetrievalError("no online store is configured", fix="pass online_store=mlf.RedisStore(...) to Definitions, or set it in the profile")
    local, kind, wrap = _local_view(entity_df, _kind(entity_df))
    plans = [_resolve(defs, spec, None) for spec in _specs(features)]
    frame = _materialize(local, kind)
    _check_outputs(plans, frame.column_names)
    from mlforge.online.base import read_many

    rows = frame.to_pylist()
    key_rows = {plan.name: [_online_key(row, plan) for row in rows] for plan in plans}
    wanted = {name: [i for i, k in enumerate(keys) if k is not None] for name, keys in key_rows.items()}
    # One request for all features: stores that can (Redis pipelines) answer in one round trip.
    found = read_many(online, {name: [key_rows[name][i] for i in idx] for name, idx in wanted.items() if idx})
    columns: dict[str, pa.Array] = {}
    for plan in plans:
        by_row: list[dict[str, Any] | None] = [None] * len(rows)
        for i, value in zip(wanted[plan.name], found.get(plan.name, []), strict=True):
            by_row[i] = value
        for col in plan.values:
            columns[col] = _typed_array([r.get(col) if r else None for r in by_row], plan.metadata.schema.get(col))
    return wrap(_finish(local, kind, _arrow_table(columns, len(rows))))


# -- training data --------------------------------------------------------------------------
def _training_local(defs: Any, specs: list[FeatureSpec], frame: Any, kind: str, timestamp: str | None, engine: Engine) -> Any:
    """Send only keys and labels to the engine; append the feature columns in row order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = _columns(frame, kind)
    plans = [_resolve(defs, spec, engine) for spec in specs]
    _check_outputs(plans, columns)
    computed = _surrogates(plans, columns)
    if timestamp is not None and timestamp not in columns:
        raise RetrievalError(f"timestamp column {timestamp!r} is not in entity_df", fix=f"use one of {columns}")
    needed = [*{k for p in plans for k in p.keys if k in columns}, *{c for e in computed.values() for c in e.from_columns or ()}]
    needed = list(dict.fromkeys([*needed, *([timestamp] if timestamp else [])]))
    arrow = _plain_columns(_materialize(frame, kind, needed), plans, timestamp)
    arrow = arrow.append_column(_ROW, pa.array(range(arrow.num_rows), pa.int64()))
    base = _prepare(engine.from_arrow(arrow), plans, computed, timestamp, engine)
    result = _attach(base, plans, engine, point_in_time=timestamp is not None)
    values = [v for p in plans for v in p.values]
    out = engine.to_arrow(result.select(_ROW, *values))
    if out.num_rows != arrow.num_rows:  # P1 holds by construction; this guards the plan
        raise RetrievalError(f"retrieval produced {out.num_rows} rows for {arrow.num_rows} entity rows", fix="this is a bug in mlforge; please report it")
    out = out.take(pc.sort_indices(out.column(_ROW))).drop_columns([_ROW])
    return _finish(frame, kind, out)


def _training_in_engine(defs: Any, specs: list[FeatureSpec], frame: Any, kind: str, timestamp: str | None, engine: Engine) -> Any:
    """Spark: number the rows, join in Spark, sort back; nothing is collected."""
    from pyspark.sql import functions as F

    native = frame if kind == "spark" else engine.to_native(frame)
    columns = list(native.columns)
    plans = [_resolve(defs, spec, engine) for spec in specs]
    _check_outputs(plans, columns)
    computed = _surrogates(plans, columns)
    if timestamp is not None and timestamp not in columns:
        raise RetrievalError(f"timestamp column {timestamp!r} is not in entity_df", fix=f"use one of {columns}")
    base = _prepare(engine.from_native(native.withColumn(_ROW, F.monotonically_increasing_id())), plans, computed, timestamp, engine)
    result = _attach(base, plans, engine, point_in_time=timestamp is not None)
    values = [v for p in plans for v in p.values]
    out = engine.to_native(result.select(_ROW, *columns, *values)).orderBy(_ROW).drop(_ROW)
    return out if kind == "spark" else engine.from_native(out)

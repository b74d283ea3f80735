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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlforge.errors import MlforgeError, RetrievalError, VersionNotFound

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from mlforge.definitions.entity import Entity
    from mlforge.engines.base import Engine

log = logging.getLogger(__name__)

_ROW = "__mlforge_row"
_LABEL = "__mlforge_label"
_TS = "__mlforge_ts"
_ASOF = "__mlforge_asof_ts"
_NEWEST = "__mlforge_newest"
_KEY = "__mlforge_key_{}"
_EMPTY_ZERO = ("count", "sum")  # W4: these read 0 for an empty window, the rest null

#: Called after every ``get_training_data`` as ``hook(definitions, specs, entity_df, timestamp,
#: result)``; ``mlforge.integrations.mlflow.autolog()`` registers one. A failing hook is
#: logged, never raised: recording a retrieval must not break it.
TRAINING_DATA_HOOKS: list[Callable[..., None]] = []


@dataclass(frozen=True)
class FeatureSpec:
    """A requested feature: its name, optionally some of its value columns and a pinned version.

    ``"f"``, ``("f", "1.2.0")`` and ``FeatureSpec("f", version="1.2.0")`` are all accepted
    wherever a list of features is.

    >>> FeatureSpec("user_spend", columns=["spend_7d"], version="1.0.0").columns
    ('spend_7d',)
    """

    name: str
    columns: tuple[str, ...] | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise RetrievalError(f"a feature name must be a non-empty string, got {self.name!r}", fix="FeatureSpec('user_spend')")
        if self.columns is not None:
            cols = (self.columns,) if isinstance(self.columns, str) else tuple(self.columns)
            if not cols or not all(isinstance(c, str) and c for c in cols):
                raise RetrievalError(f"columns of feature {self.name!r} must be non-empty column names", fix="FeatureSpec('user_spend', columns=['spend_7d'])")
            object.__setattr__(self, "columns", cols)

    @classmethod
    def of(cls, item: Any) -> FeatureSpec:
        """A spec from a name, a ``(name, version)`` tuple, a spec or a ``Feature``."""
        if isinstance(item, FeatureSpec):
            return item
        if isinstance(item, str):
            return cls(item)
        if isinstance(item, tuple) and len(item) == 2 and all(isinstance(v, str) for v in item):
            return cls(item[0], version=item[1])
        name = getattr(item, "name", None)
        if isinstance(name, str) and hasattr(item, "keys") and hasattr(item, "source"):
            return cls(name)
        raise RetrievalError(f"cannot read {item!r} as a feature request", fix="pass 'name', ('name', '1.2.0') or mlf.FeatureSpec(name, columns=..., version=...)")


@dataclass(frozen=True)
class _Plan:
    """One requested feature, resolved against its stored version."""

    name: str
    version: str
    keys: tuple[str, ...]
    timestamp: str | None
    interval: int | None  # grid step in seconds; metric features only
    values: tuple[str, ...]
    empty_zero: frozenset[str]
    entities: tuple[Entity, ...]
    metadata: dict[str, Any] = field(compare=False, repr=False)
    table: Any = field(default=None, compare=False, repr=False)


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
            columns[col] = _typed_array([r.get(col) if r else None for r in by_row], plan.metadata["schema"].get(col))
    return wrap(_finish(local, kind, _arrow_table(columns, len(rows))))


# -- requests -----------------------------------------------------------------------------
def _call_style(args: tuple[Any, ...], definitions: Any, store: Any, engine: Any, fn: str) -> tuple[Any, Any, Any]:
    if len(args) == 3 and _is_definitions(args[0]):
        return args
    if len(args) != 2:
        raise RetrievalError(f"{fn} takes (features, entity_df)", fix=f"{fn}(['feature'], entity_df, definitions=defs)")
    if definitions is None and store is None:
        raise RetrievalError(f"{fn} needs definitions= (a mlf.Definitions) or store= (an offline store)", fix=f"{fn}(features, entity_df, definitions=defs)")
    if definitions is None:
        from mlforge.project import Definitions

        definitions = Definitions("retrieval", [], offline_store=store, engine=engine or "duckdb")
    return definitions, args[0], args[1]


def _is_definitions(obj: Any) -> bool:
    return hasattr(obj, "offline_store") and hasattr(obj, "read_feature")


def _specs(features: Any) -> list[FeatureSpec]:
    from mlforge.versioning import is_version

    single_pair = isinstance(features, tuple) and len(features) == 2 and isinstance(features[1], str) and is_version(features[1])
    if isinstance(features, (str, FeatureSpec)) or single_pair:
        features = [features]
    specs = [FeatureSpec.of(f) for f in features]
    if not specs:
        raise RetrievalError("no features requested", fix="pass at least one feature name")
    return specs


def _resolve(defs: Any, spec: FeatureSpec, engine: Engine | None) -> _Plan:
    """The stored version a spec asks for: keys, timestamp, grid and value columns."""
    from mlforge.definitions.durations import parse_duration
    from mlforge.definitions.names import check_name

    try:
        check_name(spec.name, kind="feature")
        store = defs.offline_store
        if not store.list_versions(spec.name):
            known = sorted(set(store.list_features()) | set(getattr(defs, "features", {})))
            built = spec.name in getattr(defs, "features", {})
            fix = f"build it first: `mlforge build --features {spec.name}`" if built else f"known features: {', '.join(known) or 'none'}"
            raise RetrievalError(f"unknown feature {spec.name!r}: it has no stored version", fix=fix)
        metadata = store.read_metadata(spec.name, spec.version)
        table = defs.read_feature(spec.name, version=metadata["version"], engine=engine) if engine is not None else None
    except VersionNotFound as exc:
        raise RetrievalError(exc.what, where=exc.where or f"feature {spec.name!r}", fix=exc.fix) from exc
    except RetrievalError:
        raise
    except MlforgeError as exc:
        raise RetrievalError(exc.what, where=exc.where, fix=exc.fix) from exc
    keys = tuple(metadata["keys"])
    ts = metadata.get("timestamp")
    metrics = metadata.get("metrics") or []
    order = list(table.columns) if table is not None else [m["name"] for m in metrics] + sorted(metadata["schema"])
    values = [c for c in dict.fromkeys(order) if c not in keys and c != ts]
    if spec.columns is not None:
        unknown = [c for c in spec.columns if c not in values]
        if unknown:
            note = " (key and timestamp columns are not feature values)" if set(unknown) & {*keys, ts} else ""
            raise RetrievalError(f"feature {spec.name!r} has no value column(s) {unknown}{note}", where=f"version {metadata['version']}", fix=f"choose from {values}")
        values = list(spec.columns)
    return _Plan(
        name=spec.name,
        version=metadata["version"],
        keys=keys,
        timestamp=ts if table is None or ts in table.columns else None,
        interval=parse_duration(metadata["interval"]) if metrics and metadata.get("interval") else None,
        values=tuple(values),
        empty_zero=frozenset(m["name"] for m in metrics if m["function"] in _EMPTY_ZERO),
        entities=_entities(metadata),
        metadata=metadata,
        table=table,
    )


def _entities(metadata: dict[str, Any]) -> tuple[Entity, ...]:
    from mlforge.definitions.entity import Entity

    return tuple(Entity(e["name"], e["join_key"], tuple(e.get("from_columns") or ()) or None) for e in metadata.get("entities") or [])


def _check_outputs(plans: list[_Plan], entity_columns: Sequence[str]) -> None:
    """P3: every added column is new, and no two features add the same one."""
    owner: dict[str, str] = {}
    for plan in plans:
        for col in plan.values:
            if col in entity_columns:
                raise RetrievalError(f"feature {plan.name!r} adds column {col!r}, which entity_df already has", fix=f"rename that entity_df column, or select other columns: FeatureSpec({plan.name!r}, columns=[...])")
            if col in owner:
                raise RetrievalError(f"features {owner[col]!r} and {plan.name!r} both produce column {col!r}", fix=f"select distinct columns, e.g. FeatureSpec({plan.name!r}, columns=[...])")
            owner[col] = plan.name


def _surrogates(plans: list[_Plan], columns: Sequence[str]) -> dict[str, Entity]:
    """K2: join keys entity_df lacks but can compute from an entity's natural columns."""
    computed: dict[str, Entity] = {}
    for plan in plans:
        for key in plan.keys:
            if key in columns or key in computed:
                continue
            entity = next((e for e in plan.entities if e.join_key == key and e.from_columns), None)
            if entity is not None and all(c in columns for c in entity.from_columns or ()):
                computed[key] = entity
                continue
            natural = f" (or its natural columns {list(entity.from_columns or ())})" if entity else ""
            raise RetrievalError(f"entity_df lacks the key column {key!r}{natural}", where=f"feature {plan.name!r}", fix=f"add it to entity_df; it has {list(columns)}")
    return computed


# -- training data: frames and engines ----------------------------------------------------
def _kind(frame: Any) -> str:
    module = type(frame).__module__.split(".")[0]
    kinds = {"pandas": "pandas", "polars": "polars", "pyarrow": "arrow", "ibis": "ibis", "pyspark": "spark"}
    if module in kinds and (module != "polars" or hasattr(frame, "collect_schema")):
        return kinds[module]
    raise RetrievalError(f"entity_df is a {type(frame).__name__}, not a frame mlforge reads", fix="pass a pandas, Polars or PyArrow frame, an Ibis table or a Spark DataFrame")


def _choose_engine(defs: Any, engine: Any, frame: Any, kind: str) -> Engine:
    if kind == "spark" and engine is None and _engine_name(defs) != "pyspark":
        from mlforge.engines import get_engine

        return get_engine(frame.sparkSession)
    return defs.engine_for(None, engine)


def _engine_name(defs: Any) -> str | None:
    spec = getattr(defs, "engine_spec", None)
    return spec if isinstance(spec, str) else getattr(spec, "name", None)


def _bound_to(frame: Any, engine: Engine, kind: str) -> bool:
    if kind == "spark":
        return True
    try:
        return frame._find_backend() is engine.con
    except Exception:  # an unbound memtable runs anywhere
        return False


def _materialize(frame: Any, kind: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Some (or all) columns of a local frame as a PyArrow table."""
    import pyarrow as pa

    if kind == "pandas":
        return pa.Table.from_pandas(frame if columns is None else frame[list(columns)], preserve_index=False)
    if kind == "polars":
        return (frame if columns is None else frame.select(list(columns))).to_arrow()
    return frame if columns is None else frame.select(list(columns))


def _local_view(frame: Any, kind: str) -> tuple[Any, str, Any]:
    """A frame that is executed once, its kind, and how to turn a result back into ``kind``.

    Lazy inputs (Ibis, Spark, Polars LazyFrame) are executed here exactly once, so the
    feature columns are appended to the very rows they were computed for.
    """
    if kind == "ibis":
        import ibis

        return frame.to_pyarrow(), "arrow", ibis.memtable
    if kind == "spark":
        session = frame.sparkSession
        return frame.toArrow(), "arrow", session.createDataFrame
    if kind == "polars" and not hasattr(frame, "to_arrow"):
        return frame.collect(), "polars", lambda out: out.lazy()
    return frame, kind, lambda out: out


def _columns(frame: Any, kind: str) -> list[str]:
    if kind == "arrow":
        return list(frame.column_names)
    return list(frame.columns)


def _finish(frame: Any, kind: str, features: pa.Table) -> Any:
    """A local ``frame`` with the feature columns appended, as the same kind of frame."""
    if kind == "pandas":
        values = features.to_pandas()
        return frame.assign(**{c: values[c].array for c in features.column_names})
    if kind == "polars":
        import polars as pl

        return frame.hstack(pl.from_arrow(features).get_columns()) if features.num_columns else frame
    for name in features.column_names:
        frame = frame.append_column(name, features.column(name))
    return frame


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


def _plain_columns(arrow: pa.Table, plans: list[_Plan], timestamp: str | None) -> pa.Table:
    """Decode dictionary (categorical) columns and type all-null ones (an empty or all-None
    pandas column), so every engine can join them with the stored keys."""
    import pyarrow as pa

    stored = {k: p.table[k].type().to_pyarrow() for p in plans for k in p.keys}
    for i, column in enumerate(arrow.columns):
        name, dtype = arrow.column_names[i], column.type
        if pa.types.is_dictionary(dtype):
            arrow = arrow.set_column(i, name, column.cast(dtype.value_type))
        elif pa.types.is_null(dtype):
            target = pa.timestamp("us") if name == timestamp else stored.get(name, pa.string())
            arrow = arrow.set_column(i, name, column.cast(target))
    return arrow


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


# -- training data: the joins -------------------------------------------------------------
def _prepare(base: ir.Table, plans: list[_Plan], computed: dict[str, Entity], timestamp: str | None, engine: Engine) -> ir.Table:
    """Add computed join keys (K2) and the label as a naive UTC timestamp; check key types."""
    import ibis.expr.datatypes as dt

    from mlforge.prepare import add_surrogate_key

    for entity in computed.values():
        base = add_surrogate_key(base, entity, engine, where="entity_df")
    if timestamp is not None:
        dtype = base[timestamp].type()
        if not dtype.is_timestamp():
            raise RetrievalError(f"timestamp column {timestamp!r} of entity_df has type {dtype}, not a timestamp", fix="convert it first (pd.to_datetime, pl.col(...).str.to_datetime); naive values are read as UTC")
        label = engine.to_utc_naive(base[timestamp]) if dtype.timezone else base[timestamp]
        base = base.mutate(**{_LABEL: label.cast(dt.Timestamp(scale=6))})
    for plan in plans:
        for key in plan.keys:
            left, right = base[key].type(), plan.table[key].type()
            if not (left.is_integer() and right.is_integer()) and not (left.is_string() and right.is_string()) and left.copy(nullable=True) != right.copy(nullable=True):
                raise RetrievalError(f"key column {key!r} is {left} in entity_df but {right} in feature {plan.name!r}", fix=f"cast entity_df[{key!r}] to {right}")
    return base


def _attach(base: ir.Table, plans: list[_Plan], engine: Engine, *, point_in_time: bool) -> ir.Table:
    for plan in plans:
        base = _join_feature(base, plan, engine, point_in_time)
    return base


def _join_feature(base: ir.Table, plan: _Plan, engine: Engine, point_in_time: bool) -> ir.Table:
    """Left-join one feature's value columns onto ``base``; never changes its row count."""
    import ibis
    import ibis.expr.datatypes as dt

    table = plan.table
    keys = {_KEY.format(i): _key_as(table[k], base[k].type()) for i, k in enumerate(plan.keys)}
    right = table.select(**keys, **({_TS: _naive(table[plan.timestamp], engine)} if plan.timestamp else {}), **{v: table[v] for v in plan.values})

    def on(left: ir.Table, other: ir.Table) -> list[Any]:
        return [left[k] == other[rk] for k, rk in zip(plan.keys, keys, strict=True)]

    if not point_in_time or plan.timestamp is None:
        latest = _latest(right, list(keys), _TS if plan.timestamp else None)
        return base.left_join(latest, on(base, latest)).select(*base.columns, *plan.values)
    if plan.interval is not None:
        grid = f"__mlforge_grid_{plan.interval}"
        if grid not in base.columns:
            seconds = engine.epoch_seconds(base[_LABEL])
            base = base.mutate(**{grid: ((seconds // plan.interval) * plan.interval).as_timestamp("s").cast(dt.Timestamp(scale=6))})
        joined = base.left_join(right, [*on(base, right), base[grid] == right[_TS]]).select(*base.columns, *plan.values)
        filled = {v: ibis.ifelse(joined[_LABEL].isnull(), joined[v], joined[v].fill_null(0)) for v in plan.values if v in plan.empty_zero}
        return joined.mutate(**filled) if filled else joined
    if engine.supports("asof_join"):
        # Same-named "on" columns on both sides: Ibis mis-compiles as-of joins whose
        # columns differ in name; DuckDB's ASOF counts ts == L as known (ties included).
        right = right.rename(**{_LABEL: _TS})
        return base.asof_join(right, on=_LABEL, predicates=on(base, right)).select(*base.columns, *plan.values)
    return _portable_asof(base, right, plan, list(keys))


def _portable_asof(base: ir.Table, right: ir.Table, plan: _Plan, rkeys: list[str]) -> ir.Table:
    """Backward as-of join from equality joins and a group-by (engines without asof)."""
    probe = base.select(_ROW, _LABEL, *plan.keys)
    events = right.select(*rkeys, _TS)
    pairs = probe.inner_join(events, [probe[k] == events[rk] for k, rk in zip(plan.keys, rkeys, strict=True)])
    pairs = pairs.filter(pairs[_TS] <= pairs[_LABEL])
    newest = pairs.group_by(_ROW).aggregate(**{_ASOF: pairs[_TS].max()})
    with_ts = base.left_join(newest, base[_ROW] == newest[_ROW]).select(*base.columns, _ASOF)
    rows = right.distinct(on=[*rkeys, _TS], keep="first")
    on = [with_ts[k] == rows[rk] for k, rk in zip(plan.keys, rkeys, strict=True)] + [with_ts[_ASOF] == rows[_TS]]
    return with_ts.left_join(rows, on).select(*base.columns, *plan.values)


def _latest(right: ir.Table, rkeys: list[str], ts: str | None) -> ir.Table:
    """One row per key: the newest by ``ts`` (any one of them when there is no ``ts``)."""
    if ts is not None:
        newest = right.group_by(rkeys).aggregate(**{_NEWEST: right[ts].max()})
        right = right.inner_join(newest, [*rkeys, right[ts] == newest[_NEWEST]]).select(*right.columns)
    return right.distinct(on=rkeys, keep="first")


def _key_as(col: ir.Value, dtype: Any) -> ir.Value:
    """The stored key in entity_df's type (Polars joins only equal types); an integer out
    of that type's range matches nothing rather than failing."""
    if col.type().copy(nullable=True) == dtype.copy(nullable=True):
        return col
    return col.try_cast(dtype)


def _naive(col: ir.TimestampValue, engine: Engine) -> ir.TimestampValue:
    import ibis.expr.datatypes as dt

    value = engine.to_utc_naive(col) if col.type().timezone else col
    return value.cast(dt.Timestamp(scale=6))


# -- online lookups -----------------------------------------------------------------------
def _online_key(row: dict[str, Any], plan: _Plan) -> dict[str, Any] | None:
    from mlforge.prepare import surrogate_key_value

    key: dict[str, Any] = {}
    for name in plan.keys:
        if name in row:
            key[name] = row[name]
            continue
        entity = next((e for e in plan.entities if e.join_key == name and e.from_columns and all(c in row for c in e.from_columns)), None)
        if entity is None:
            raise RetrievalError(f"entity_df lacks the key column {name!r}", where=f"feature {plan.name!r}", fix=f"add it to entity_df; it has {list(row)}")
        key[name] = surrogate_key_value(*[row[c] for c in entity.from_columns or ()])
    return None if any(v is None for v in key.values()) else key


def _typed_array(values: list[Any], canonical: str | None) -> pa.Array:
    import pyarrow as pa

    from mlforge.manifest import arrow_schema

    if canonical is None:
        return pa.array(values)
    try:
        return pa.array(values, type=arrow_schema({"v": canonical}).field("v").type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(values)


def _arrow_table(columns: dict[str, pa.Array], rows: int) -> pa.Table:
    import pyarrow as pa

    return pa.table(columns) if columns else pa.table({}).slice(0, rows)

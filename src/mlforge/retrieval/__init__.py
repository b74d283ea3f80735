"""Point-in-time retrieval (contract P1-P4, K2, O4) and online lookups (O1, O2).

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
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlforge.engines.base import Capability
from mlforge.errors import RetrievalError, caller_stacklevel
from mlforge.online.publication import Publication, read_time
from mlforge.retrieval.frames import (
    arrow_table,
    bound_to,
    check_online_key_types,
    datetime_columns,
    entity_rows_table,
    finish,
    frame_columns,
    frame_kind,
    is_entity_rows,
    local_view,
    materialize_columns,
    online_key,
    plain_columns,
    typed_array,
)
from mlforge.retrieval.joins import ROW, attach, prepare_base
from mlforge.retrieval.online import check_metadata_columns, lookup, metadata_columns
from mlforge.retrieval.specs import (
    FeatureSpec,
    check_case_clashes,
    check_join_columns,
    check_outputs,
    check_whole_frame_columns,
    feature_specs,
    join_columns,
    resolve,
    surrogates,
    without_given_natural_columns,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pyarrow as pa

    from mlforge.definitions.feature import Feature
    from mlforge.engines.base import Engine
    from mlforge.workspace import Workspace

__all__ = ["TRAINING_DATA_HOOKS", "FeatureSpec", "feature_specs", "online_features", "training_data"]

log = logging.getLogger(__name__)

#: Called after every ``get_training_data`` as ``hook(definitions, specs, entity_df, timestamp,
#: result)``; ``mlforge.integrations.mlflow.autolog()`` registers one. A failing hook is
#: logged, never raised: recording a retrieval must not break it.
TRAINING_DATA_HOOKS: list[Callable[..., None]] = []


# -- the two services -----------------------------------------------------------------------
def training_data(workspace: Workspace, defined: Mapping[str, Feature], specs: list[FeatureSpec], entity_df: Any, *, timestamp: str | None = None, engine: Any = None) -> Any:
    """Point-in-time correct training data: ``entity_df`` plus the features' values
    (P1-P4); see :func:`mlforge.project.get_training_data` for the arguments."""
    kind = frame_kind(entity_df)
    if timestamp is None:
        _warn_without_timestamp(entity_df, kind)
    engine_obj = _engine_for_frame(workspace, engine, entity_df, kind)
    if engine_obj.supports(Capability.DISTRIBUTED) and kind in ("spark", "ibis") and bound_to(entity_df, engine_obj, kind):
        return _training_in_engine(workspace, defined, specs, entity_df, kind, timestamp, engine_obj)
    frame, local_kind, wrap = local_view(entity_df, kind)
    return wrap(_training_local(workspace, defined, specs, frame, local_kind, timestamp, engine_obj))


def online_features(workspace: Workspace, defined: Mapping[str, Feature], specs: list[FeatureSpec], entity_df: Any, *, at: Any = None, with_metadata: bool = False) -> Any:
    """Feature values per entity at read time ``at`` from the online store (O1, O2, O4, K2):
    what ``get_training_data`` gives for a label at ``at`` (default: now). Unknown entities
    get what training gives an entity without rows. With ``with_metadata``, two columns per
    feature follow its values: ``{feature}__label_time`` (the instant the values belong to)
    and ``{feature}__known`` (whether the store holds the entity). Returns the same kind of
    frame as ``entity_df``."""
    import pyarrow as pa

    online = workspace.online_store
    if online is None:
        raise RetrievalError("no online store is configured", fix="pass online_store=mlf.RedisStore(...) to Definitions, or set it in the profile")
    when = read_time(at)
    if is_entity_rows(entity_df):  # Feast's entity_rows: answered as rows too
        local, kind, wrap = entity_rows_table(entity_df), "arrow", pa.Table.to_pylist
    else:
        local, kind, wrap = local_view(entity_df, frame_kind(entity_df))
    plans = [resolve(workspace, defined, spec, None) for spec in specs]
    frame = materialize_columns(local, kind)
    plans = without_given_natural_columns(plans, specs, frame.column_names)
    check_outputs(plans, frame.column_names)
    check_online_key_types(plans, frame.schema)
    if with_metadata:
        check_metadata_columns([p.name for p in plans], [*frame.column_names, *(v for p in plans for v in p.values)])
    rows = frame.to_pylist()
    stand_ins = {plan.name: Publication.from_record(plan.metadata) for plan in plans}
    # One request for all features and their publication records: one round trip where the store batches.
    pinned = {spec.name: spec.version for spec in specs if spec.version is not None}
    readings = lookup(online, stand_ins, {plan.name: [online_key(row, plan) for row in rows] for plan in plans}, when, pinned, {plan.name: plan.values for plan in plans})
    columns: dict[str, pa.Array] = {}
    for plan in plans:
        answers = readings[plan.name]
        for col in plan.values:
            columns[col] = typed_array([r.values.get(col) for r in answers], plan.metadata.schema.get(col), plan.metadata.types.get(col), column=col)
        if with_metadata:
            label_col, known_col = metadata_columns(plan.name)
            columns[label_col] = pa.array([r.label_time for r in answers], pa.timestamp("us", tz="UTC"))
            columns[known_col] = pa.array([r.known for r in answers], pa.bool_())
    return wrap(finish(local, kind, arrow_table(columns, len(rows))))


def _warn_without_timestamp(entity_df: Any, kind: str) -> None:
    """Without ``timestamp=`` every row gets the newest stored row (P2); when the labels have
    exactly one datetime column that is rarely what was meant, so say which column it is."""
    found = datetime_columns(entity_df, kind)
    if len(found) == 1:
        warnings.warn(
            f"get_training_data got no timestamp=, so every row gets the newest stored values of its key (rule P2), "
            f"although entity_df has the datetime column {found[0]!r}; pass timestamp={found[0]!r} for point-in-time values",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )


def _engine_for_frame(workspace: Workspace, engine: Any, frame: Any, kind: str) -> Engine:
    """A Spark DataFrame is joined in its own session unless the project runs on Spark."""
    if kind == "spark" and engine is None and workspace.engine_name != "pyspark":
        return workspace.engine_for(None, frame.sparkSession)
    return workspace.engine_for(None, engine)


# -- training data --------------------------------------------------------------------------
def _training_local(workspace: Workspace, defined: Mapping[str, Feature], specs: list[FeatureSpec], frame: Any, kind: str, timestamp: str | None, engine: Engine) -> Any:
    """Send only keys and labels to the engine; append the feature columns in row order."""
    import numpy
    import pyarrow as pa

    columns = frame_columns(frame, kind)
    plans = [resolve(workspace, defined, spec, engine) for spec in specs]
    plans = without_given_natural_columns(plans, specs, columns)
    check_outputs(plans, columns)
    computed = surrogates(plans, columns)
    if timestamp is not None and timestamp not in columns:
        raise RetrievalError(f"timestamp column {timestamp!r} is not in entity_df", fix=f"use one of {columns}")
    needed = join_columns(plans, computed, columns, timestamp)
    check_join_columns(needed)
    check_case_clashes(plans, needed)
    arrow = plain_columns(materialize_columns(frame, kind, needed), plans, timestamp)
    arrow = arrow.append_column(ROW, pa.array(numpy.arange(arrow.num_rows, dtype=numpy.int64)))  # not range(): ~0.09 s per 1M rows
    base = prepare_base(engine.from_arrow(arrow), plans, computed, timestamp, engine)
    result = attach(base, plans, engine, point_in_time=timestamp is not None)
    values = [v for p in plans for v in p.values]
    # The engine puts the rows back in the caller's order (its sort runs on every core; a
    # sort and take in PyArrow afterwards cost ~0.4 s of one core at 1M rows).
    out = engine.to_arrow(result.select(ROW, *values).order_by(ROW))
    if out.num_rows != arrow.num_rows:  # P1 holds by construction; this guards the plan
        names = ", ".join(dict.fromkeys(p.name for p in plans))
        raise RetrievalError(
            f"retrieval produced {out.num_rows} rows for {arrow.num_rows} entity rows: a stored version of {names} holds two rows for one key "
            "and time, which mlforge never writes",
            fix=f"if a version's files were altered (the read checks their sizes and row counts, not their content), rebuild it: "
            f"`mlforge build --features {names.replace(', ', ',')} --force`; otherwise this is a bug in mlforge, please report it",
        )
    return finish(frame, kind, out.drop_columns([ROW]))


def _training_in_engine(workspace: Workspace, defined: Mapping[str, Feature], specs: list[FeatureSpec], frame: Any, kind: str, timestamp: str | None, engine: Engine) -> Any:
    """Spark: number the rows, join in Spark, sort back; nothing is collected."""
    from pyspark.sql import functions as F

    native = frame if kind == "spark" else engine.to_native(frame)
    columns = list(native.columns)
    plans = [resolve(workspace, defined, spec, engine) for spec in specs]
    plans = without_given_natural_columns(plans, specs, columns)
    check_outputs(plans, columns)
    computed = surrogates(plans, columns)
    if timestamp is not None and timestamp not in columns:
        raise RetrievalError(f"timestamp column {timestamp!r} is not in entity_df", fix=f"use one of {columns}")
    check_join_columns([timestamp] if timestamp is not None else [])
    check_whole_frame_columns(join_columns(plans, computed, columns, timestamp), columns, ROW)
    check_case_clashes(plans, columns)
    base = prepare_base(engine.from_native(native.withColumn(ROW, F.monotonically_increasing_id())), plans, computed, timestamp, engine)
    result = attach(base, plans, engine, point_in_time=timestamp is not None)
    values = [v for p in plans for v in p.values]
    out = engine.to_native(result.select(ROW, *columns, *values)).orderBy(ROW).drop(ROW)
    return out if kind == "spark" else engine.from_native(out)

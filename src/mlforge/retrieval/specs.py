"""What a retrieval asks for: feature specs, resolved against their stored versions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlforge.aggregations import ZERO_WHEN_EMPTY
from mlforge.definitions.durations import parse_duration
from mlforge.definitions.entity import Entity
from mlforge.definitions.feature import Feature
from mlforge.definitions.feature_set import FeatureSet, FeatureSpec
from mlforge.definitions.names import UNCARRIED_NAMES, check_column_name, check_name
from mlforge.errors import CorruptVersion, MlforgeError, RetrievalError, VersionNotFound
from mlforge.records import VersionRecord
from mlforge.versioning import is_version

if TYPE_CHECKING:
    from mlforge.engines.base import Engine
    from mlforge.workspace import Workspace


@dataclass(frozen=True)
class Plan:
    """One requested feature, resolved against its stored version."""

    name: str
    version: str
    keys: tuple[str, ...]
    timestamp: str | None
    interval: int | None  # grid step in seconds; metric features only
    ttl: int | None  # seconds a row stays valid after its timestamp (O4); non-metric only
    values: tuple[str, ...]
    empty_zero: frozenset[str]
    entities: tuple[Entity, ...]
    metadata: VersionRecord = field(compare=False, repr=False)
    table: Any = field(default=None, compare=False, repr=False)


def feature_specs(features: Any) -> list[FeatureSpec]:
    """The specs of a request: one name, spec, ``(name, version)`` pair or feature set, or a
    list of them (a set stands for its members)."""
    single_pair = isinstance(features, tuple) and len(features) == 2 and isinstance(features[1], str) and is_version(features[1])
    if isinstance(features, (str, FeatureSpec, FeatureSet)) or single_pair:
        features = [features]
    specs = [spec for f in features for spec in (f.specs if isinstance(f, FeatureSet) else (FeatureSpec.of(f),))]
    if not specs:
        raise RetrievalError("no features requested", fix="pass at least one feature name")
    return specs


def resolve(workspace: Workspace, defined: Mapping[str, Feature], spec: FeatureSpec, engine: Engine | None) -> Plan:
    """The stored version a spec asks for: keys, timestamp, grid and value columns."""
    try:
        view, colon, column = spec.name.partition(":")
        if colon and view and column:  # Feast's "view:feature" reference (":" is in no feature name)
            raise RetrievalError(
                f"{spec.name!r} names a feature and a column the way Feast does; mlforge names features, and a feature's columns with FeatureSpec",
                fix=f"ask for the feature, {view!r}, or only that column: mlf.FeatureSpec({view!r}, columns=[{column!r}])",
            )
        check_name(spec.name, kind="feature")
        store = workspace.offline_store
        if not store.list_versions(spec.name):
            known = sorted(set(store.list_features()) | set(defined))
            built = spec.name in defined
            fix = f"build it first: `mlforge build --features {spec.name}`" if built else f"known features: {', '.join(known) or 'none'}"
            raise RetrievalError(f"unknown feature {spec.name!r}: it has no stored version", fix=fix)
        record = store.read_record(spec.name, spec.version)
        table = store.read(spec.name, engine, record.version) if engine is not None else None
    except VersionNotFound as exc:
        raise RetrievalError(exc.what, where=exc.where or f"feature {spec.name!r}", fix=exc.fix) from exc
    except (RetrievalError, CorruptVersion):  # a damaged version is the store's problem (S7), not the request's
        raise
    except MlforgeError as exc:
        raise RetrievalError(exc.what, where=exc.where, fix=exc.fix) from exc
    keys = record.keys
    ts = record.timestamp
    metrics = record.metrics
    order = list(table.columns) if table is not None else [m.name for m in metrics] + list(record.schema)  # stored order (older records: by name)
    values = [c for c in dict.fromkeys(order) if c not in keys and c != ts]
    if spec.columns is not None:
        unknown = [c for c in spec.columns if c not in values]
        if unknown:
            note = " (key and timestamp columns are not feature values)" if set(unknown) & {*keys, ts} else ""
            raise RetrievalError(f"feature {spec.name!r} has no value column(s) {unknown}{note}", where=f"version {record.version}", fix=f"choose from {values}")
        values = list(spec.columns)
    return Plan(
        name=spec.name,
        version=record.version or "",
        keys=keys,
        timestamp=ts if table is None or ts in table.columns else None,
        interval=parse_duration(record.interval) if metrics and record.interval else None,
        ttl=parse_duration(record.ttl) if record.ttl and not metrics else None,
        values=tuple(values),
        empty_zero=frozenset(m.name for m in metrics if m.function in ZERO_WHEN_EMPTY),
        entities=_entities(record),
        metadata=record,
        table=table,
    )


def _entities(record: VersionRecord) -> tuple[Entity, ...]:
    return tuple(Entity(e.name, e.join_key, e.from_columns or None) for e in record.entities)


def without_given_natural_columns(plans: list[Plan], specs: Sequence[FeatureSpec], entity_columns: Sequence[str]) -> list[Plan]:
    """The plans, less the value columns ``entity_df`` already holds as an entity's natural
    columns (K2): a feature whose function returns an entity's ``from_columns`` stores them
    beside the join key (K1); when ``entity_df`` holds *all* of them (it names the entity by
    them, with or without the join key) they are not added again. Holding only some, it reads
    by the join key, and those are value columns like any other: one ``entity_df`` also holds
    clashes (:func:`check_outputs`), since its value may not be the stored one. A column the
    request names (``FeatureSpec(columns=...)``) always stays, and clashes: the function may
    have changed the stored values."""
    import dataclasses

    given = set(entity_columns)
    out = []
    for plan, spec in zip(plans, specs, strict=True):
        natural = {c for entity in plan.entities if entity.from_columns and set(entity.from_columns) <= given for c in entity.from_columns}
        if spec.columns is None and natural.intersection(plan.values):
            plan = dataclasses.replace(plan, values=tuple(v for v in plan.values if v not in natural))
        out.append(plan)
    return out


def check_outputs(plans: list[Plan], entity_columns: Sequence[str]) -> None:
    """P3: every added column is new, and no two features add the same one."""
    owner: dict[str, str] = {}
    for plan in plans:
        for col in plan.values:
            if col in entity_columns:
                raise RetrievalError(f"feature {plan.name!r} adds column {col!r}, which entity_df already has", fix=f"rename that entity_df column, or select other columns: FeatureSpec({plan.name!r}, columns=[...])")
            if col in owner:
                raise RetrievalError(f"features {owner[col]!r} and {plan.name!r} both produce column {col!r}", fix=f"select distinct columns, e.g. FeatureSpec({plan.name!r}, columns=[...])")
            owner[col] = plan.name


def check_join_columns(columns: Sequence[str]) -> None:
    """The key and label columns of entity_df that go into the engine: each a name every
    engine carries (not mlforge's reserved prefix, no NUL, not a Polars pattern: E5), and
    none two differing only by case, which DuckDB and Spark cannot hold in one table."""
    folded: dict[str, str] = {}
    for col in columns:
        try:
            if col not in UNCARRIED_NAMES:  # `self` goes into the engine as entity_df's column, not through an Ibis method
                check_column_name(col, kind="entity_df column")
        except MlforgeError as exc:
            raise RetrievalError(exc.what, where="entity_df, a key or the label-time column that goes into the engine", fix="rename the column in entity_df") from None
        other = folded.setdefault(col.lower(), col)
        if other != col:
            raise RetrievalError(
                f"entity_df's key and label columns {other!r} and {col!r} differ only by case: DuckDB and Spark read them as one column",
                fix="rename one of them in entity_df",
            )


def join_columns(plans: list[Plan], computed: Mapping[str, Entity], columns: Sequence[str], timestamp: str | None) -> list[str]:
    """The columns of entity_df the join reads: the keys it holds, the natural columns of
    the keys computed from them (K2), and the label-time column."""
    keys = [k for p in plans for k in p.keys if k in columns]
    natural = [c for e in computed.values() for c in e.from_columns or ()]
    return list(dict.fromkeys([*keys, *natural, *([timestamp] if timestamp else [])]))


def check_whole_frame_columns(joined: Sequence[str], columns: Sequence[str], row: str) -> None:
    """A Spark ``entity_df`` goes into the query whole: none of its ``columns`` may be the
    name of mlforge's row number ``row``, and none of the ``joined`` ones (key and label
    columns) may differ only by case from another, which Spark cannot tell apart (E1, E5; a
    local frame sends only its key and label columns, so its other columns never meet them)."""
    if row in columns:
        raise RetrievalError(f"entity_df has a column named {row!r}, the name of the row number mlforge adds on Spark", where="entity_df", fix="rename that column")
    for col in joined:
        twins = [c for c in columns if c != col and c.lower() == col.lower()]
        if twins:
            raise RetrievalError(
                f"entity_df's column {col!r}, which the join reads, differs only by case from its column {twins[0]!r}: Spark reads them as one column",
                where="entity_df",
                fix=f"rename or drop {twins[0]!r}",
            )


def check_case_clashes(plans: list[Plan], join_columns: Sequence[str]) -> None:
    """The columns of one engine query -- entity_df's that go in and the features' value
    columns -- none two differing only by case (E5): DuckDB and Spark fold case, and the
    query failed with a raw binder error."""
    folded = {c.lower(): ("entity_df", c) for c in join_columns}
    for plan in plans:
        for col in plan.values:
            owner, other = folded.setdefault(col.lower(), (f"feature {plan.name!r}", col))
            if other != col:
                raise RetrievalError(
                    f"feature {plan.name!r} adds column {col!r}, which differs only by case from {owner}'s {other!r}: DuckDB and Spark read them as one column",
                    fix=f"rename {other!r}, or select other columns: FeatureSpec({plan.name!r}, columns=[...])",
                )


def surrogates(plans: list[Plan], columns: Sequence[str]) -> dict[str, Entity]:
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
            raise missing_key(plan, key, columns)
    return computed


def missing_key(plan: Plan, key: str, columns: Sequence[str]) -> RetrievalError:
    """The error for an ``entity_df`` (or entity) without ``key``, naming the natural
    columns that may stand for it (K2)."""
    entity = next((e for e in plan.entities if e.join_key == key and e.from_columns), None)
    natural = f" (or its natural columns {list(entity.from_columns or ())})" if entity else ""
    return RetrievalError(f"entity_df lacks the key column {key!r}{natural}", where=f"feature {plan.name!r}", fix=f"add it to entity_df; it has {list(columns)}")


def pin_versions(workspace: Workspace, defined: Mapping[str, Feature], specs: Sequence[FeatureSpec]) -> list[tuple[FeatureSpec, Plan]]:
    """Each spec pinned to the version it resolves to now (its own, else the latest),
    with its plan; only version records are read."""
    plans = [resolve(workspace, defined, spec, None) for spec in specs]
    return [(spec.pinned(plan.version), plan) for spec, plan in zip(specs, plans, strict=True)]

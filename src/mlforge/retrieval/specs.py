"""What a retrieval asks for: feature specs, resolved against their stored versions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlforge.aggregations import ZERO_WHEN_EMPTY
from mlforge.errors import MlforgeError, RetrievalError, VersionNotFound

if TYPE_CHECKING:
    from mlforge.definitions.entity import Entity
    from mlforge.engines.base import Engine


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
        empty_zero=frozenset(m["name"] for m in metrics if m["function"] in ZERO_WHEN_EMPTY),
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

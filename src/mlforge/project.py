"""``Definitions``: the set of features of a project, and its public façade."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlforge.definitions.feature import SCHEDULES, Feature
from mlforge.definitions.names import check_name
from mlforge.errors import ConfigError, DefinitionError, DefinitionErrors
from mlforge.incremental import plan_range
from mlforge.materialize import BuildOptions, BuildResult, build_feature

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.definitions.entity import Entity
    from mlforge.definitions.source import Source
    from mlforge.engines.base import Engine

log = logging.getLogger(__name__)


class Definitions:
    """A project's features, stores and engine.

    Args:
        name: project name.
        features: feature objects and/or modules containing them.
        offline_store: where versions are stored (default ``LocalStore("feature_store")``).
        online_store: where the latest values are served from (optional).
        engine: ``"duckdb"`` (default), ``"polars"``, ``"pyspark"`` or an engine object.
        profile: a profile of ``mlforge.yaml`` supplying stores and engine.

    Example:
        >>> import mlforge as mlf
        >>> defs = mlf.Definitions("demo", features=[])
        >>> defs.list_features()
        []
    """

    def __init__(
        self,
        name: str,
        features: Iterable[Feature | ModuleType] | Feature | ModuleType = (),
        *,
        offline_store: Any = None,
        online_store: Any = None,
        engine: Any = None,
        profile: str | None = None,
    ):
        self.name = name
        self.features: dict[str, Feature] = _collect_features(features)
        self.profile = profile
        if profile is not None or offline_store is None or engine is None:
            settings = _profile_settings(profile)
            offline_store = offline_store if offline_store is not None else settings.get("offline_store")
            online_store = online_store if online_store is not None else settings.get("online_store")
            engine = engine if engine is not None else settings.get("engine")
        if offline_store is None:
            from mlforge.offline.local import LocalStore

            offline_store = LocalStore("feature_store")
        self.offline_store = offline_store
        self.online_store = online_store
        self.engine_spec = engine
        self._engines: dict[str, Engine] = {}

    def __repr__(self) -> str:
        return f"Definitions({self.name!r}, features={sorted(self.features)})"

    # -- engines -------------------------------------------------------------------
    def engine_for(self, feature: Feature | None = None, override: Any = None) -> Engine:
        """The engine to run ``feature`` on: build override > feature's own > project's."""
        from mlforge.engines import get_engine
        from mlforge.engines.base import Engine as EngineBase

        spec = override if override is not None else (feature.engine if feature and feature.engine else self.engine_spec)
        if isinstance(spec, EngineBase):
            return spec
        key = spec if isinstance(spec, str) else ("duckdb" if spec is None else f"obj-{id(spec)}")
        if key not in self._engines:
            self._engines[key] = get_engine(spec)
        return self._engines[key]

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

    # -- selection -----------------------------------------------------------------
    def select(self, feature_names: Sequence[str] | str | None = None, *, tags: Sequence[str] | str | None = None, schedule: Sequence[str] | str | None = None) -> list[Feature]:
        """Features by name, tag and schedule; unknown names are errors."""
        names = _split(feature_names)
        if feature_names is not None and not names:  # `--features ""` must not mean "all"
            raise ConfigError("no feature names given", where="--features / feature_names", fix=f"name at least one feature ({', '.join(sorted(self.features)) or 'none defined'}), or leave the option out to build every feature")
        chosen = list(self.features.values())
        if names:
            unknown = [n for n in names if n not in self.features]
            if unknown:
                raise ConfigError(f"unknown feature(s) {unknown}", fix=f"available: {', '.join(sorted(self.features)) or 'none'}")
            chosen = [self.features[n] for n in names]
        tag_list = _split(tags)
        if tag_list:
            known_tags = {t for f in self.features.values() for t in f.tags}
            unknown = [t for t in tag_list if t not in known_tags]
            if unknown:
                raise ConfigError(f"no feature has tag(s) {unknown}", fix=f"known tags: {', '.join(sorted(known_tags)) or 'none'}")
            chosen = [f for f in chosen if set(f.tags) & set(tag_list)]
        schedules = _split(schedule)
        if schedules:
            unknown = [s for s in schedules if s not in SCHEDULES]
            if unknown:
                raise ConfigError(f"unknown schedule(s) {unknown}", fix=f"known schedules: {', '.join(SCHEDULES)}")
            chosen = [f for f in chosen if f.schedule in schedules]
        return chosen

    def list_features(self, tags: Sequence[str] | str | None = None, schedule: Sequence[str] | str | None = None) -> list[str]:
        return [f.name for f in self.select(tags=tags, schedule=schedule)] if (tags or schedule) else sorted(self.features)

    def list_entities(self) -> list[Entity]:
        seen: dict[str, Entity] = {}
        for f in self.features.values():
            for e in f.entities:
                seen.setdefault(e.name, e)
        return [seen[k] for k in sorted(seen)]

    def list_sources(self) -> list[Source]:
        seen: dict[str, Source] = {}
        for f in self.features.values():
            seen.setdefault(f.source.location, f.source)
        return [seen[k] for k in sorted(seen)]

    # -- building ------------------------------------------------------------------
    def build(
        self,
        feature_names: Sequence[str] | str | None = None,
        *,
        tags: Sequence[str] | str | None = None,
        schedule: Sequence[str] | str | None = None,
        since: Any = None,
        until: Any = None,
        last: Any = None,
        full_refresh: bool = False,
        online: bool = False,
        engine: Any = None,
        force: bool = False,
        now: int | None = None,
        progress: Any = None,
    ) -> BuildResult:
        """Build the selected features and publish new versions where anything changed.

        Returns a :class:`~mlforge.materialize.BuildResult`; a failed feature is listed
        there (with its error) and leaves nothing written.
        """
        chosen = self.select(feature_names, tags=tags, schedule=schedule)
        plan_range(since=since, until=until, last=last, full_refresh=full_refresh, now=now)  # argument errors first
        if online and self.online_store is None:
            raise ConfigError("--online needs an online store", fix="set online_store= in Definitions or in the profile")
        options = BuildOptions(since=since, until=until, last=last, full_refresh=full_refresh, force=force, now=now)
        result = BuildResult()
        for feature in chosen:
            if progress is not None:
                progress(feature.name, "start")
            outcome = build_feature(feature, self.engine_for(feature, engine), self.offline_store, options)
            if online and outcome.status in ("built", "skipped") and outcome.version:
                outcome = self._publish_online(feature, outcome)
            result.features.append(outcome)
            if progress is not None:
                progress(feature.name, outcome)
        return result

    def _publish_online(self, feature: Feature, outcome: Any) -> Any:
        from mlforge.errors import MlforgeError
        from mlforge.online.publish import publish_latest

        try:
            publish_latest(self, feature, outcome.version)
        except MlforgeError as exc:
            outcome.status, outcome.error = "failed", exc
        return outcome

    def validate(self, feature_names: Sequence[str] | str | None = None, *, engine: Any = None) -> dict[str, str]:
        """Run each feature function and its validators without writing anything.

        Returns ``{feature: "ok" | error message}``.
        """
        from mlforge.errors import MlforgeError
        from mlforge.materialize import _validate
        from mlforge.prepare import prepare_input, run_function

        report: dict[str, str] = {}
        for feature in self.select(feature_names):
            try:
                eng = self.engine_for(feature, engine)
                output = run_function(feature, prepare_input(feature, eng), eng)
                if feature.metrics:
                    from mlforge.compiler import check_metric_inputs

                    check_metric_inputs(feature, output.schema())
                _validate(feature, output)
                report[feature.name] = "ok"
            except MlforgeError as exc:
                report[feature.name] = str(exc)
        return report

    # -- reading -------------------------------------------------------------------
    def read_feature(self, name: str, *, version: str | None = None, engine: Any = None) -> ir.Table:
        """The stored table of a feature version (latest by default) as an Ibis expression."""
        check_name(name, kind="feature")
        feature = self.features.get(name)
        return self.offline_store.read(name, self.engine_for(feature, engine), version)

    def list_versions(self, name: str) -> list[str]:
        return self.offline_store.list_versions(check_name(name, kind="feature"))

    def get_training_data(self, features: Sequence[Any], entity_df: Any, *, timestamp: str | None = None, engine: Any = None) -> Any:
        """Point-in-time correct training data (P1-P4): ``entity_df`` plus feature values."""
        from mlforge.retrieval import get_training_data

        return get_training_data(self, features, entity_df, timestamp=timestamp, engine=engine)

    def get_online_features(self, features: Sequence[Any], entity_df: Any) -> Any:
        """The latest feature values per entity from the online store (O1-O2, K2)."""
        from mlforge.retrieval import get_online_features

        return get_online_features(self, features, entity_df)


def _split(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [s for v in value for s in str(v).split(",")]
    return [s.strip() for s in items if s.strip()]


def _collect_features(items: Iterable[Feature | ModuleType] | Feature | ModuleType) -> dict[str, Feature]:
    if isinstance(items, (Feature, ModuleType)):
        items = [items]
    found: dict[str, Feature] = {}
    problems: list[DefinitionError] = []
    for item in items:
        if isinstance(item, ModuleType):
            candidates = [v for v in vars(item).values() if isinstance(v, Feature)]
        elif isinstance(item, Feature):
            candidates = [item]
        else:
            problems.append(DefinitionError(f"{item!r} is neither a feature nor a module", fix="pass @mlf.feature functions or modules that define them"))
            continue
        for feature in candidates:
            other = found.get(feature.name)
            if other is not None and other is not feature:
                problems.append(DefinitionError(f"two features are named {feature.name!r}", fix="rename one of the functions"))
            found[feature.name] = feature
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise DefinitionErrors(problems)
    return found


def _profile_settings(profile: str | None) -> dict[str, Any]:
    """Stores and engine from ``mlforge.yaml`` (when present) for ``profile``."""
    try:
        from mlforge.config import load_profile
    except ImportError:  # pragma: no cover
        return {}
    return load_profile(profile)

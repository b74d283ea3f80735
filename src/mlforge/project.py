"""``Definitions``: the set of features of a project, and its public façade.

``Definitions`` registers and selects features and delegates the work to the services
(``materialize``, ``publishing``, ``operations``, ``retrieval``), handing them its typed
:class:`~mlforge.workspace.Workspace`. The module-level ``get_training_data`` and
``get_online_features`` are the same calls for code that holds a store, not a project.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlforge import operations, retrieval, scoring
from mlforge.compiler import check_metric_inputs
from mlforge.config import Profile, resolve_profile
from mlforge.definitions.feature import SCHEDULES, Feature
from mlforge.definitions.feature_set import FeatureSet, FeatureSpec
from mlforge.definitions.names import check_name
from mlforge.errors import (
    BuildError,
    ConfigError,
    DefinitionError,
    DefinitionErrors,
    MlforgeError,
    RetrievalError,
)
from mlforge.incremental import plan_range
from mlforge.materialize import (
    BuildOptions,
    BuildResult,
    FeatureResult,
    build_feature,
    check_runnable,
    engine_failure,
    validate_output,
)
from mlforge.offline.local import LocalStore
from mlforge.online.base import check_storable
from mlforge.plugins import ENGINE_NAMES
from mlforge.prepare import prepare_input, run_function
from mlforge.publishing import check_publishable, publish_latest
from mlforge.retrieval import TRAINING_DATA_HOOKS, feature_specs
from mlforge.retrieval.specs import pin_versions
from mlforge.retrieval.training_set import TrainingSet, columns_of
from mlforge.stages import Reporter, Stage, StageClock
from mlforge.versioning import is_version
from mlforge.workspace import Workspace

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.definitions.entity import Entity
    from mlforge.definitions.source import Source
    from mlforge.engines.base import Engine
    from mlforge.offline.base import OfflineStore
    from mlforge.online.base import OnlineStore

log = logging.getLogger(__name__)


class Definitions:
    """A project's features, stores and engine.

    Args:
        name: project name.
        features: feature objects and/or modules containing them (a module's
            :class:`~mlforge.definitions.feature_set.FeatureSet` objects are registered too).
        offline_store: where versions are stored (default ``LocalStore("feature_store")``).
        online_store: where the latest values are served from (optional).
        engine: ``"duckdb"`` (default), ``"polars"``, ``"pyspark"`` or an engine object.
        profile: a profile of ``mlforge.yaml`` supplying stores and engine.
        feature_sets: feature sets to register besides those found in ``features``.

    Raises:
        DefinitionError: two features or sets share a name, or a set names an unknown feature.

    ``mlforge.yaml`` is read and its profile in use validated whenever the file is present,
    even when every setting is given here; a setting given here wins over the profile's
    (``origins`` says where each one came from, ``mlforge profile`` prints it).

    Example:
        >>> import mlforge as mlf
        >>> defs = mlf.Definitions("demo", features=[])
        >>> defs.list_features()
        []
    """

    def __init__(
        self,
        name: str,
        features: Iterable[Feature | FeatureSet | ModuleType] | Feature | ModuleType = (),
        *,
        offline_store: Any = None,
        online_store: Any = None,
        engine: Any = None,
        profile: str | None = None,
        feature_sets: Iterable[FeatureSet] = (),
    ):
        self.name = name
        if isinstance(engine, str) and engine.lower() not in ENGINE_NAMES:  # E1: say where, not at the first build
            raise ConfigError(f"unknown engine {engine!r}", where=f"Definitions({name!r}, engine=...)", fix=f"use one of {', '.join(ENGINE_NAMES)}, an engine object or a SparkSession")
        self.features: dict[str, Feature] = _collect_features(features)
        #: The registered feature sets by name.
        self.feature_sets: dict[str, FeatureSet] = _collect_feature_sets(features, feature_sets, self.features)
        self.profile = profile
        #: The profile of mlforge.yaml as resolved when this project was declared.
        self.profile_settings: Profile = resolve_profile(profile)
        declared = {"offline_store": offline_store, "online_store": online_store, "engine": engine}
        #: Where each setting in effect came from: "definitions", "profile", "env", "flag" or "default".
        self.origins: dict[str, str] = {}
        from_profile = self.profile_settings.as_settings()
        for key, value in declared.items():
            if value is not None:
                self.origins[key] = "definitions"
            else:
                declared[key] = from_profile.get(key)
                self.origins[key] = self.profile_settings.origin.get(key, "default") if declared[key] is not None else "default"
        #: The settings given to ``Definitions(...)`` itself (``None`` where not given).
        self.declared = {"offline_store": offline_store, "online_store": online_store, "engine": engine}
        offline_store, online_store, engine = declared["offline_store"], declared["online_store"], declared["engine"]
        #: The stores and engines the services work on.
        self.workspace = Workspace(offline_store if offline_store is not None else LocalStore("feature_store"), online_store, engine)

    def __repr__(self) -> str:
        return f"Definitions({self.name!r}, features={sorted(self.features)})"

    # -- stores and engines (held by the workspace) ---------------------------------
    @property
    def offline_store(self) -> OfflineStore:
        return self.workspace.offline_store

    @offline_store.setter
    def offline_store(self, store: OfflineStore) -> None:
        self.workspace.offline_store = store

    @property
    def online_store(self) -> OnlineStore | None:
        return self.workspace.online_store

    @online_store.setter
    def online_store(self, store: OnlineStore | None) -> None:
        self.workspace.online_store = store

    @property
    def engine_spec(self) -> Any:
        return self.workspace.engine_spec

    @engine_spec.setter
    def engine_spec(self, engine: Any) -> None:
        self.workspace.engine_spec = engine

    def engine_for(self, feature: Feature | None = None, override: Any = None) -> Engine:
        """The engine to run ``feature`` on: build override > feature's own > project's."""
        return self.workspace.engine_for(feature, override)

    def close(self) -> None:
        """Close the engines this project created."""
        self.workspace.close()

    # -- selection -----------------------------------------------------------------
    def select(self, feature_names: Sequence[str | FeatureSet] | str | FeatureSet | None = None, *, tags: Sequence[str] | str | None = None, schedule: Sequence[str] | str | None = None) -> list[Feature]:
        """Features by name, tag and schedule; unknown names are errors. A feature set (or
        its name) stands for its members."""
        names = self._expand_sets(_split(_set_members(feature_names, self.features)))
        if feature_names is not None and not names:  # `--features ""` must not mean "all"
            raise ConfigError("no feature names given", where="--features / feature_names", fix=f"name at least one feature ({', '.join(sorted(self.features)) or 'none defined'}), or leave the option out to build every feature")
        chosen = list(self.features.values())
        if names:
            unknown = [n for n in names if n not in self.features]
            if unknown:
                sets = f"; feature sets: {', '.join(sorted(self.feature_sets))}" if self.feature_sets else ""
                raise ConfigError(f"unknown feature(s) {unknown}", where="--features / feature_names", fix=f"available: {', '.join(sorted(self.features)) or 'none'}{sets}")
            chosen = [self.features[n] for n in names]
        tag_list = _split(tags)
        if tags is not None and not tag_list:  # `--tags ""` must not mean "any tag"
            raise ConfigError("no tags given", where="--tags / tags", fix="name at least one tag, or leave the option out")
        if tag_list:
            known_tags = {t for f in self.features.values() for t in f.tags}
            unknown = [t for t in tag_list if t not in known_tags]
            if unknown:
                raise ConfigError(f"no feature has tag(s) {unknown}", where="--tags / tags", fix=f"known tags: {', '.join(sorted(known_tags)) or 'none'}")
            chosen = [f for f in chosen if set(f.tags) & set(tag_list)]
        schedules = _split(schedule)
        if schedule is not None and not schedules:
            raise ConfigError("no schedules given", where="--schedule / schedule", fix=f"name one of {', '.join(SCHEDULES)}, or leave the option out")
        if schedules:
            unknown = [s for s in schedules if s not in SCHEDULES]
            if unknown:
                raise ConfigError(f"unknown schedule(s) {unknown}", where="--schedule / schedule", fix=f"known schedules: {', '.join(SCHEDULES)}")
            chosen = [f for f in chosen if f.schedule in schedules]
        return chosen

    def _expand_sets(self, names: list[str]) -> list[str]:
        expanded = [member for n in names for member in (self.feature_sets[n].feature_names if n in self.feature_sets else [n])]
        return list(dict.fromkeys(expanded))

    def list_features(self, tags: Sequence[str] | str | None = None, schedule: Sequence[str] | str | None = None) -> list[str]:
        return [f.name for f in self.select(tags=tags, schedule=schedule)] if (tags is not None or schedule is not None) else sorted(self.features)

    def list_feature_sets(self) -> list[str]:
        return sorted(self.feature_sets)

    def feature_set(self, name: str) -> FeatureSet:
        """The registered feature set ``name``.

        Raises:
            ConfigError: no such set.
        """
        found = self.feature_sets.get(name)
        if found is None:
            raise ConfigError(f"unknown feature set {name!r}", fix=f"available: {', '.join(sorted(self.feature_sets)) or 'none (declare one with mlf.FeatureSet)'}")
        return found

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
        progress: Reporter | None = None,
        raise_on_error: bool = True,
    ) -> BuildResult:
        """Build the selected features and publish new versions where anything changed.

        Each stage of each feature and each feature's outcome is logged (``logging`` at
        INFO, loggers ``mlforge.stages`` and ``mlforge.project``) and, when given, sent to
        ``progress``: a
        :class:`~mlforge.stages.StageEvent` as a stage starts and ends, then the feature's
        :class:`~mlforge.materialize.FeatureResult`.

        A failed feature leaves nothing written; the others still build. Then a
        :class:`~mlforge.errors.BuildError` naming the failed features is raised, unless
        ``raise_on_error=False``: then the returned
        :class:`~mlforge.materialize.BuildResult` lists them with their errors.
        """
        chosen = self.select(feature_names, tags=tags, schedule=schedule)
        plan_range(since=since, until=until, last=last, full_refresh=full_refresh, now=now)  # argument errors first
        if online:
            check_publishable(self.workspace)  # E3: before any compute, not after the offline publish
        check_runnable([(feature, self.engine_for(feature, engine)) for feature in chosen])
        options = BuildOptions(since=since, until=until, last=last, full_refresh=full_refresh, force=force, now=now, check_columns=check_storable if online else None)
        result = BuildResult()
        for feature in chosen:
            runs_on = self.engine_for(feature, engine)
            outcome = build_feature(feature, runs_on, self.offline_store, options, progress)
            if online and outcome.status in ("built", "skipped") and outcome.version:
                outcome = self._publish_online(feature, outcome, progress, runs_on)
            result.features.append(outcome)
            log.info("%s: %s %s (%.2fs)%s", feature.name, outcome.status, outcome.version or "", outcome.seconds, f": {outcome.error}" if outcome.error else "")
            if progress is not None:
                progress(outcome)
        if result.failed and raise_on_error:
            raise _build_failed(result)
        return result

    def _publish_online(self, feature: Feature, outcome: FeatureResult, progress: Reporter | None, engine: Engine) -> FeatureResult:
        clock = StageClock(feature.name, progress)
        clock.enter(Stage.PUBLISH)
        try:
            published = publish_latest(self.workspace, feature, outcome.version, engine=engine)  # the build's engine (--engine first)
        except MlforgeError as exc:
            outcome.status, outcome.error = "failed", exc
        else:
            outcome.online_written, outcome.online_removed = published.written, published.removed
        outcome.seconds = round(outcome.seconds + clock.close(), 3)
        return outcome

    def validate(self, feature_names: Sequence[str] | str | None = None, *, engine: Any = None) -> dict[str, str]:
        """Run each feature function and its validators without writing anything.

        Returns ``{feature: "ok" | error message}``.
        """
        report: dict[str, str] = {}
        for feature in self.select(feature_names):
            eng = None
            try:
                eng = self.engine_for(feature, engine)
                output = run_function(feature, prepare_input(feature, eng), eng)
                if feature.metrics:
                    check_metric_inputs(feature, output.schema())
                validate_output(feature, output)
                report[feature.name] = "ok"
            except MlforgeError as exc:
                report[feature.name] = str(exc)
            except Exception as exc:  # the engine failed running the function (E1: say why)
                if eng is None:
                    raise
                if eng.is_interrupt(exc):
                    raise KeyboardInterrupt from exc
                report[feature.name] = str(engine_failure(feature, eng, exc))
        return report

    # -- reading -------------------------------------------------------------------
    def read_feature(self, name: str, *, version: str | None = None, engine: Any = None) -> ir.Table:
        """The stored table of a feature version (latest by default) as an Ibis expression."""
        check_name(name, kind="feature")
        feature = self.features.get(name)
        return self.offline_store.read(name, self.engine_for(feature, engine), version)

    def list_versions(self, name: str) -> list[str]:
        return self.offline_store.list_versions(check_name(name, kind="feature"))

    def get_training_data(
        self,
        features: Any,
        entity_df: Any,
        *,
        timestamp: str | None = None,
        engine: Any = None,
        label: Sequence[str] | str | None = None,
        as_training_set: bool = False,
    ) -> Any:
        """Point-in-time correct training data (P1-P4): ``entity_df`` plus feature values.

        ``features`` may be a feature set (or its name). With ``as_training_set=True`` the
        result is a :class:`~mlforge.retrieval.training_set.TrainingSet` (see
        :meth:`training_set`); otherwise the frame. See :func:`get_training_data` for the
        other arguments."""
        if as_training_set:
            return self.training_set(features, entity_df, label=label, timestamp=timestamp, engine=engine)
        specs, from_set = self._request(features)
        if from_set:  # a set is read at the versions it resolves to now, and records them
            specs = self.resolve_versions(specs)
        result = retrieval.training_data(self.workspace, self.features, specs, entity_df, timestamp=timestamp, engine=engine)
        for hook in list(TRAINING_DATA_HOOKS):
            try:
                hook(self, specs, entity_df, timestamp, result)
            except Exception as exc:  # recording a retrieval must not break it
                log.warning("training-data hook %r failed: %s: %s", hook, type(exc).__name__, exc)
        return result

    def training_set(self, features: Any, entity_df: Any, *, label: Sequence[str] | str | None = None, timestamp: str | None = None, engine: Any = None) -> TrainingSet:
        """Training data that knows what it was built from: the frame of
        :meth:`get_training_data` plus the feature set, the version of each feature read,
        the label columns and the timestamp column. A model logged with it
        (``mlf.mlflow.log_model(model, name, training_set=ts)``) looks the same features up
        by itself (:meth:`score`, ``mlforge serve --model``).

        Args:
            features: a feature set (or its name), or feature names / ``(name, version)`` /
                ``FeatureSpec``; every feature is pinned to the version read.
            entity_df: the entities, label times and labels (rule P1).
            label: the label column(s) of ``entity_df``.
            timestamp: the label-time column of ``entity_df``.
            engine: the engine to run on.

        Raises:
            RetrievalError: a label column is not in ``entity_df``, or any retrieval error.

        Example:
            >>> ts = defs.training_set("delay_features", labels, label="arr_delay", timestamp="sched_dep_at")  # doctest: +SKIP
            >>> ts.versions  # doctest: +SKIP
            {'carrier_delays': '1.0.0', 'route_delays': '1.0.0'}
        """
        specs, _ = self._request(features)
        set_name = _set_name(features, self.feature_sets)
        labels = tuple(_split(label))
        given = columns_of(entity_df)
        missing = [c for c in labels if c not in given]
        if missing:
            raise RetrievalError(f"label column(s) {missing} are not in entity_df", fix=f"entity_df has {given}")
        pinned = pin_versions(self.workspace, self.features, specs)
        frame = self.get_training_data([spec for spec, _ in pinned], entity_df, timestamp=timestamp, engine=engine)
        added = [c for c in columns_of(frame) if c not in set(given)]
        natural = {e.join_key: tuple(e.from_columns) for _, plan in pinned for e in plan.entities if e.from_columns}
        return TrainingSet(
            frame=frame,
            features=tuple(spec for spec, _ in pinned),
            feature_set=set_name,
            feature_columns=tuple(added),
            label_columns=labels,
            timestamp=timestamp,
            keys=tuple(dict.fromkeys(k for _, plan in pinned for k in plan.keys)),
            natural_keys=tuple(sorted(natural.items())),
            project=self.name,
        )

    def get_online_features(self, features: Any, entity_df: Any, *, at: Any = None, with_metadata: bool = False) -> Any:
        """Feature values per entity from the online store at read time ``at`` (O1, O2, O4, K2).

        ``features`` may be a feature set (or its name): it is read at the versions it
        resolves to (:meth:`resolve_versions`), and the online store must serve exactly
        those. See :func:`get_online_features` for the arguments."""
        specs, from_set = self._request(features)
        if from_set:
            specs = self.resolve_versions(specs)
        return retrieval.online_features(self.workspace, self.features, specs, entity_df, at=at, with_metadata=with_metadata)

    def resolve_versions(self, features: Any) -> list[FeatureSpec]:
        """The features of a request (a set, its name, or a feature list), each pinned to the
        version it reads now: a pinned version as given, otherwise the latest stored one.

        Raises:
            RetrievalError: a feature without a stored version, or a pinned version that
                does not exist.
        """
        specs = features if isinstance(features, list) and all(isinstance(s, FeatureSpec) for s in features) else self._request(features)[0]
        return [spec for spec, _ in pin_versions(self.workspace, self.features, specs)]

    def _request(self, features: Any) -> tuple[list[FeatureSpec], bool]:
        """The specs of a request, the names of registered sets expanded; and whether it
        involves a set."""
        items = [features] if isinstance(features, (str, FeatureSet, FeatureSpec)) or _is_pair(features) else list(features)
        specs: list[FeatureSpec] = []
        from_set = False
        for item in items:
            if isinstance(item, str) and item in self.feature_sets:
                item = self.feature_sets[item]
            if isinstance(item, FeatureSet):
                _check_members(item, self.features)
                from_set = True
                specs += item.specs
            else:
                specs += feature_specs([item])
        if not specs:
            raise RetrievalError("no features requested", fix="pass at least one feature name or a feature set")
        return specs, from_set

    # -- models --------------------------------------------------------------------------
    def load_model(self, model_uri: str) -> scoring.LoadedModel:
        """A model logged with ``mlf.mlflow.log_model(..., training_set=...)`` and the
        features it reads (see :mod:`mlforge.scoring`); needs ``mlforge[mlflow]``."""
        return scoring.load_model(model_uri)

    def score(self, model_uri: str | scoring.LoadedModel, entity_df: Any, *, timestamp: str | None = None, engine: Any = None) -> Any:
        """Batch scoring: ``entity_df`` plus a ``prediction`` column.

        The model's features are looked up point in time (P1-P4) at the versions it was
        trained on (recorded in its ``mlforge_features.json``, not the latest) and fed to
        it in its recorded input order.

        Args:
            model_uri: ``runs:/<run_id>/<name>``, ``models:/…``, a local model directory, or
                a model from :meth:`load_model`.
            entity_df: entities (key columns or an entity's natural columns, K2) and label
                times; also any ``entity_df`` columns the model reads. Same kinds as
                :meth:`get_training_data`; the result is the same kind.
            timestamp: the label-time column (default: the training set's timestamp column
                when ``entity_df`` has it; without one every row reads the newest values).
            engine: the engine to run the lookup on.

        Example:
            >>> scored = defs.score(info.model_uri, upcoming, timestamp="sched_dep_at")  # doctest: +SKIP
        """
        loaded = model_uri if isinstance(model_uri, scoring.LoadedModel) else scoring.load_model(model_uri)
        return scoring.score(self.workspace, self.features, loaded, entity_df, timestamp=timestamp, engine=engine)

    def score_online(self, model_uri: str | scoring.LoadedModel, entity_df: Any, *, at: Any = None) -> Any:
        """``entity_df`` plus a ``prediction`` column, the model's features read from the
        online store at read time ``at`` (rule O1; default now) at its recorded versions:
        what ``mlforge serve``'s ``POST /models/{name}/predict`` answers."""
        loaded = model_uri if isinstance(model_uri, scoring.LoadedModel) else scoring.load_model(model_uri)
        return scoring.score_online(self.workspace, self.features, loaded, entity_df, at=at)

    # -- version operations --------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """Every feature defined or stored, its latest version and each version's metadata."""
        return operations.build_manifest(self.workspace, self.features, self.name)

    def sync(self, force: bool = False) -> list[dict[str, Any]]:
        """Rebuild data files of versions whose metadata alone is present (``mlforge sync``)."""
        return operations.sync(self.workspace, self.features, force)


# -- retrieval without a project ------------------------------------------------------------
def get_training_data(
    *args: Any,
    timestamp: str | None = None,
    definitions: Definitions | None = None,
    store: Any = None,
    engine: Any = None,
    label: Sequence[str] | str | None = None,
    as_training_set: bool = False,
) -> Any:
    """Point-in-time correct training data: ``entity_df`` plus feature values (P1-P4).

    Two call styles::

        mlf.get_training_data(features, entity_df, timestamp="ts", definitions=defs)
        defs.get_training_data(features, entity_df, timestamp="ts")   # the same
        mlf.get_training_data(features, entity_df, timestamp="ts", store=mlf.LocalStore("fs"))

    Args:
        features: names, ``(name, version)`` tuples or :class:`~mlforge.retrieval.FeatureSpec`
            objects, or a feature set (``mlf.FeatureSet`` or the name of a registered one).
        entity_df: pandas, Polars or PyArrow frame, Ibis table or Spark DataFrame with the
            features' key columns (or an entity's ``from_columns``, K2); the result is the
            same kind, with exactly its rows in order, all its columns and the features'
            value columns.
        timestamp: the label-time column of ``entity_df`` (naive values are UTC). Without
            it every row gets the newest stored row of its key.
        definitions: the project (``mlf.Definitions``); or ``store``: an offline store.
        engine: engine name or object to run on (default: the project's, DuckDB).
        label: the label column(s) of ``entity_df`` (recorded in a training set).
        as_training_set: return a :class:`~mlforge.retrieval.training_set.TrainingSet`
            (frame, features pinned to the versions read, labels, timestamp) instead of
            the frame.

    Example:
        >>> import pandas as pd, mlforge as mlf
        >>> labels = pd.DataFrame({"user_id": ["u1"], "ts": pd.to_datetime(["2024-01-08"])})
        >>> mlf.get_training_data(["user_spend"], labels, timestamp="ts", definitions=defs)  # doctest: +SKIP
    """
    defs, features, entity_df = _call_style(args, definitions, store, engine, "get_training_data")
    return defs.get_training_data(features, entity_df, timestamp=timestamp, engine=engine, label=label, as_training_set=as_training_set)


def get_online_features(*args: Any, definitions: Definitions | None = None, store: Any = None, at: Any = None, with_metadata: bool = False) -> Any:
    """Feature values per entity from the online store at a read time (O1, O2, O4, K2).

    Called as ``defs.get_online_features(features, entity_df)`` or
    ``mlf.get_online_features(features, entity_df, definitions=defs)``. The values are
    exactly what ``get_training_data`` gives for a label at the read time (rule P2), for
    read times at or after the published version's watermark.

    Args:
        features: names, ``(name, version)`` tuples or ``FeatureSpec`` objects, or a feature
            set (read at the versions it resolves to; the store must serve those).
        entity_df: pandas, Polars or PyArrow frame, Ibis table or Spark DataFrame with the
            features' key columns (or an entity's ``from_columns``); the result is the same
            kind, with its rows and columns plus the features' value columns. A non-empty
            list of dicts (Feast's entity rows) answers a list of dicts.
        at: the read time (a datetime, naive = UTC, or ISO 8601 text); default: now.
        with_metadata: also add, per feature, ``{feature}__label_time`` (the instant the
            values belong to: the grid label of a metric feature, also for an entity
            without rows; the row's timestamp of another, null when no row counts) and ``{feature}__known`` (whether the store
            holds the entity: unknown entities get what training gives an entity without
            rows, W4 values for metric features).

    Raises:
        RetrievalError: ``at`` is before the watermark of a published version.
    """
    defs, features, entity_df = _call_style(args, definitions, store, None, "get_online_features")
    return defs.get_online_features(features, entity_df, at=at, with_metadata=with_metadata)


def _call_style(args: tuple[Any, ...], definitions: Definitions | None, store: Any, engine: Any, fn: str) -> tuple[Definitions, Any, Any]:
    if len(args) == 3 and isinstance(args[0], Definitions):
        return args[0], args[1], args[2]
    if len(args) != 2:
        raise RetrievalError(f"{fn} takes (features, entity_df)", fix=f"{fn}(['feature'], entity_df, definitions=defs)")
    if definitions is None and store is None:
        raise RetrievalError(f"{fn} needs definitions= (a mlf.Definitions) or store= (an offline store)", fix=f"{fn}(features, entity_df, definitions=defs)")
    if definitions is None:
        definitions = Definitions("retrieval", [], offline_store=store, engine=engine or "duckdb")
    return definitions, args[0], args[1]


def _build_failed(result: BuildResult) -> BuildError:
    """One error naming every failed feature and the first line of its error."""
    failed = result.failed
    lines = [f"{len(failed)} of {len(result.features)} feature(s) failed to build:"]
    for f in failed:
        lines.append(f"- {f.name}: {str(f.error).splitlines()[0] if f.error else 'failed'}")
        if isinstance(f.error, MlforgeError) and f.error.fix:  # each feature's own remedy (E1)
            lines.append(f"    fix: {f.error.fix}")
    error = BuildError("\n".join(lines), fix="nothing of a failed feature was written; fix its error, or pass raise_on_error=False to get the BuildResult")
    error.__cause__ = failed[0].error
    return error


def _split(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [s for v in value for s in str(v).split(",")]
    return [s.strip() for s in items if s.strip()]


def _collect_features(items: Iterable[Feature | FeatureSet | ModuleType] | Feature | ModuleType) -> dict[str, Feature]:
    if isinstance(items, (Feature, FeatureSet, ModuleType)):
        items = [items]
    found: dict[str, Feature] = {}
    problems: list[DefinitionError] = []
    for item in items:
        if isinstance(item, ModuleType):
            candidates = [v for v in vars(item).values() if isinstance(v, Feature)]
        elif isinstance(item, Feature):
            candidates = [item]
        elif isinstance(item, FeatureSet):
            continue  # registered by _collect_feature_sets
        else:
            problems.append(DefinitionError(f"{item!r} is neither a feature nor a module", fix="pass @mlf.feature functions or modules that define them"))
            continue
        for feature in candidates:
            other = found.get(feature.name)
            if other is not None and other is not feature:
                problems.append(DefinitionError(f"two features are named {feature.name!r}", fix="rename one of the functions"))
            found[feature.name] = feature
    folded: dict[str, str] = {}
    for name in found:  # E4: a name becomes a folder or table name, and some are case-blind
        first = folded.setdefault(name.lower(), name)
        if first != name:
            problems.append(
                DefinitionError(
                    f"features {first!r} and {name!r} differ only by case: their versions would share a folder on a case-insensitive file system, and a table in Unity Catalog",
                    fix="rename one of the functions",
                )
            )
    DefinitionErrors.raise_if_any(problems)
    return found



def _collect_feature_sets(items: Iterable[Any] | Feature | ModuleType, extra: Iterable[FeatureSet], features: dict[str, Feature]) -> dict[str, FeatureSet]:
    """The feature sets of the modules and items given, and ``extra``; a name shared with
    another set or a feature, or a member that is not a feature, is a definition error."""
    items = [items] if isinstance(items, (Feature, FeatureSet, ModuleType)) else list(items)
    candidates = [v for item in items if isinstance(item, ModuleType) for v in vars(item).values() if isinstance(v, FeatureSet)]
    candidates += [item for item in items if isinstance(item, FeatureSet)]
    problems: list[DefinitionError] = []
    for item in extra:
        if isinstance(item, FeatureSet):
            candidates.append(item)
        else:
            problems.append(DefinitionError(f"{item!r} is not a feature set", where="Definitions(feature_sets=...)", fix="pass mlf.FeatureSet(name, features=[...]) objects"))
    found: dict[str, FeatureSet] = {}
    for feature_set in candidates:
        other = found.get(feature_set.name)
        if other is not None and other is not feature_set:
            problems.append(DefinitionError(f"two feature sets are named {feature_set.name!r}", fix="rename one of them"))
        elif feature_set.name in features:
            problems.append(DefinitionError(f"feature set {feature_set.name!r} has the name of a feature", fix="give the set another name: a name in a feature list must say which one it means"))
        try:
            _check_members(feature_set, features)
        except DefinitionError as exc:
            problems.append(exc)
        found[feature_set.name] = feature_set
    DefinitionErrors.raise_if_any(problems)
    return found


def _check_members(feature_set: FeatureSet, features: dict[str, Feature]) -> None:
    unknown = [n for n in feature_set.feature_names if n not in features]
    if unknown:
        raise DefinitionError(
            f"feature set {feature_set.name!r} names unknown feature(s) {unknown}",
            where=f"feature set {feature_set.name!r}",
            fix=f"use features of this project ({', '.join(sorted(features)) or 'none defined'}), or add those features to Definitions",
        )


def _set_members(names: Sequence[str | FeatureSet] | str | FeatureSet | None, features: dict[str, Feature]) -> Sequence[str] | str | None:
    """Feature names with each ``FeatureSet`` object replaced by its members."""
    if isinstance(names, FeatureSet):
        names = [names]
    if names is None or isinstance(names, str):
        return names
    for item in names:
        if isinstance(item, FeatureSet):
            _check_members(item, features)
    return [",".join(item.feature_names) if isinstance(item, FeatureSet) else item for item in names]


def _set_name(features: Any, sets: dict[str, FeatureSet]) -> str | None:
    """The set's name when the request is exactly one feature set."""
    if isinstance(features, FeatureSet):
        return features.name
    if isinstance(features, str) and features in sets:
        return features
    return None


def _is_pair(features: Any) -> bool:
    return isinstance(features, tuple) and len(features) == 2 and isinstance(features[1], str) and is_version(features[1])

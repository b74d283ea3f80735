"""The one orchestrator of a build: source -> function -> metrics -> store -> version."""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from mlforge import fingerprints
from mlforge.compiler import LabelRange, added_integer_fields, compile_metrics
from mlforge.definitions.names import check_column_name, check_distinct_columns
from mlforge.engines.base import UNITS_PER_SECOND, Capability, catalog_table_error, utc_literal
from mlforge.engines.monthfiles import (
    END_OF_TIME,
    UNTIMED,
    file_spans,
    is_month_start,
    month_end,
    part_key,
)
from mlforge.equivalence import FLOAT_RTOL, files_equivalent
from mlforge.errors import BuildError, EngineError, MlforgeError, ValidationFailed
from mlforge.incremental import BuildRange, next_watermark, plan_range
from mlforge.manifest import canonical_schema, digests_hash, exact_types, file_digests
from mlforge.offline.blobs import disk_error
from mlforge.offline.verify import parquet_files
from mlforge.prepare import prepare_input, range_filter_place, run_function, unparsed_timestamps
from mlforge.records import BuiltRange, EntityRecord, MetricRecord, VersionRecord
from mlforge.stages import Reporter, Stage, StageClock
from mlforge.versioning import NEW_DATA, Change, ChangeKind, classify, next_version, sort_versions

if TYPE_CHECKING:
    from collections.abc import Callable

    import ibis.expr.types as ir
    import pyarrow.parquet as pq

    from mlforge.definitions.feature import Feature
    from mlforge.engines.base import Engine
    from mlforge.offline.base import OfflineStore

log = logging.getLogger(__name__)

#: Internal column naming each row's month file (``year * 100 + month``); never stored.
PARTITION = "__mlforge_month"
_GROUP_ROWS = "__mlforge_group_rows"


@dataclass
class FeatureResult:
    """The outcome of building one feature."""

    name: str
    status: str  # "built" | "skipped" | "failed"
    version: str | None = None
    rows: int | None = None
    rows_written: int | None = None  # rows of the files this build wrote (not reused months)
    seconds: float = 0.0
    change: str | None = None
    reason: str | None = None
    dropped_rows: int = 0
    build_range: str = "full"
    online_written: int | None = None  # entities `build --online` wrote to the online store
    online_removed: int | None = None  # entities it removed (gone from the version, or every window empty)
    error: MlforgeError | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["error"] = str(self.error) if self.error else None
        return out


@dataclass
class BuildResult:
    """What ``Definitions.build`` did, feature by feature."""

    features: list[FeatureResult] = field(default_factory=list)

    @property
    def built(self) -> list[FeatureResult]:
        return [f for f in self.features if f.status == "built"]

    @property
    def skipped(self) -> list[FeatureResult]:
        return [f for f in self.features if f.status == "skipped"]

    @property
    def failed(self) -> list[FeatureResult]:
        return [f for f in self.features if f.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def __getitem__(self, name: str) -> FeatureResult:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features], "ok": self.ok}


@dataclass(frozen=True)
class BuildOptions:
    since: Any = None
    until: Any = None
    last: Any = None
    full_refresh: bool = False
    force: bool = False
    now: int | None = None
    #: Checks the output's column names before anything is written (``build --online``:
    #: names an online store cannot hold fail the feature first, rule E3).
    check_columns: Callable[[list[str]], None] | None = None


def check_runnable(plan: list[tuple[Feature, Engine]]) -> None:
    """Fail before any compute when an engine cannot run a selected feature: a package the
    engine needs is missing (said once, with the ``pip install`` line, not once per
    feature), or a feature reads a Unity Catalog table on an engine that reads only files."""
    checked: set[int] = set()
    problems: list[EngineError] = []
    for feature, engine in plan:
        if id(engine) not in checked:
            engine.check_available()
            checked.add(id(engine))
        if feature.source.is_table and not engine.supports(Capability.CATALOG_TABLES):
            problems.append(catalog_table_error(engine.name, feature.source.location, feature.name))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise EngineError(
            f"{len(problems)} features read Unity Catalog tables on an engine that reads only files: " + ", ".join(repr(p.where) for p in problems),
            fix=problems[0].fix,
        )


def build_feature(feature: Feature, engine: Engine, store: OfflineStore, options: BuildOptions, report: Reporter | None = None) -> FeatureResult:
    """Build one feature and publish a version if anything changed. Never raises for
    build problems: they are reported in the result (and nothing is written, E3).
    ``report`` receives a :class:`~mlforge.stages.StageEvent` as each stage starts and ends."""
    started = time.perf_counter()
    clock = StageClock(feature.name, report)
    try:
        result = _build(feature, engine, store, options, clock)
    except MlforgeError as exc:
        result = FeatureResult(feature.name, "failed", error=exc)
    except Exception as exc:  # an engine or filesystem failure: report it, keep going
        if engine.is_interrupt(exc):  # Ctrl-C inside a query stops the whole build
            raise KeyboardInterrupt from exc
        log.debug("build of %s failed", feature.name, exc_info=True)
        result = FeatureResult(feature.name, "failed", error=engine_failure(feature, engine, exc))
    clock.close(rows=result.rows_written)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def engine_failure(feature: Feature, engine: Engine, exc: Exception) -> MlforgeError:
    """What a build or a validation of ``feature`` reports for an error of the engine or
    the filesystem (E1): a full disk or read-only store by name, text timestamps past the
    format's sample that do not parse (T1), else the engine's own words."""
    if isinstance(exc, OSError) and exc.errno is not None:  # a full disk, a read-only store...
        error: MlforgeError = disk_error(f"write the build of {feature.name!r} to", exc.filename or "the store", exc, where=None if exc.filename else f"feature {feature.name!r}")
    elif os.strerror(errno.ENOSPC) in str(exc):  # an engine's own I/O error (DuckDB's IOException) for a full disk
        error = disk_error(f"write the build of {feature.name!r} to", "the store or the engine's temporary folder", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), where=f"feature {feature.name!r}")
    else:
        try:
            unparsed = unparsed_timestamps(feature, engine)
        except Exception:  # the diagnosis is a courtesy: the engine's own error still stands
            log.debug("feature %s: could not check its timestamp texts", feature.name, exc_info=True)
            unparsed = None
        error = unparsed or BuildError(f"{type(exc).__name__}: {exc}", where=f"feature {feature.name!r}", fix="see the message above; run with --verbose for the traceback")
    if error.where is None:
        error.locate(f"feature {feature.name!r}")
    error.__cause__ = exc
    return error


def _build(feature: Feature, engine: Engine, store: OfflineStore, options: BuildOptions, clock: StageClock) -> FeatureResult:
    clock.enter(Stage.READ)
    store.use_engine(engine)  # Unity Catalog: the engine picks the data path
    previous_version = store.latest_version(feature.name)
    previous = store.read_record(feature.name, previous_version) if previous_version else None
    source_input = prepare_input(feature, engine)
    definition_hash = fingerprints.definition_hash(feature, source_input.schema())
    source_fp = fingerprints.source_fingerprint(feature.source)
    build_range = _plan(feature, options, previous, definition_hash, source_input)
    if previous is not None and not options.force and _already_built(feature, options, previous, definition_hash, source_fp, build_range):
        return FeatureResult(feature.name, "skipped", version=previous_version, rows=previous.rows, rows_written=0, reason="unchanged definition and source", build_range=build_range.describe())
    ts = feature.timestamp_column
    whole = run_function(feature, source_input, engine)  # every event's row
    output = whole
    if not build_range.is_full:
        # A native frame's lineage is not Ibis's to read: its rows are filtered.
        place = "output" if feature.native_frame is not None or ts not in whole.columns else range_filter_place(whole, source_input, ts)
        if place == "none" and previous is not None:
            log.warning("feature %s: its function computes a row from other events (a window, aggregate or subquery over the rows), so a range of them is not what a full refresh stores: this build is a full refresh", feature.name)
            build_range = BuildRange()
        elif place == "source":
            output = run_function(feature, _in_range(feature, source_input, build_range), engine)  # the filter reaches the scan
        else:  # the function moves event times (or a first build's range of a function reading every event)
            output = _in_range(feature, whole, build_range)
    clock.enter(Stage.COMPUTE, build_range.explain())
    check_output_names(feature, output)
    if feature.metrics:
        labels = LabelRange(build_range.since, build_range.until) if not build_range.is_full else None
        result_expr = compile_metrics(feature, output, engine, labels)
    else:
        result_expr = _non_metric_output(feature, output, build_range)
    # What the stores cannot hold is refused before anything is computed (E5).
    store.check_columns(feature.name, result_expr.schema())
    if options.check_columns is not None:
        options.check_columns(list(result_expr.columns))
    validate_output(feature, output)
    if not build_range.is_full:
        # A row check holds for the range's rows alone; unique() is about every row, and a
        # range build that checked only its own would store what a full refresh rejects (I1).
        validate_output(feature, whole, whole_table_only=True)
    dropped = 0
    splits: list[int] = []  # instants where a month's rows start a new file
    next_step = None  # the grid step after the newest event read
    if feature.metrics:
        dropped, newest = _dropped_and_newest(feature, output, engine)
        check_integer_totals(feature, output, engine)
        if newest is not None and feature.interval_seconds:
            # Where the next build continues (the watermark this one records): the labels
            # from there on go to a file of their own, which that build replaces unread.
            next_step = (newest // feature.interval_seconds + 1) * feature.interval_seconds
            splits.append(next_step)
    reused: list[str] = []
    if not build_range.is_full and previous_version:
        result_expr, reused, kept_splits = _merge_with_previous(feature, store, engine, previous_version, result_expr, build_range)
        splits += kept_splits
    has_time = bool(ts and ts in result_expr.columns)
    order = [*feature.keys, *([ts] if has_time else [])]
    if has_time:
        # One file per month of timestamps, split where the next build starts: an
        # incremental build rewrites only the files its range reaches.
        assert ts is not None
        result_expr = result_expr.mutate(**{PARTITION: _file_key(engine, result_expr[ts], splits)})
    staging = store.stage(feature.name)
    try:
        _reuse_files(reused, staging.data_dir)
        engine.write_parquet(result_expr, staging.data_dir, PARTITION if has_time else None, order)
        clock.enter(Stage.WRITE)
        known = _reused_digests(reused, previous)
        metadata = _metadata(feature, result_expr.drop(PARTITION) if has_time else result_expr, staging.data_dir, definition_hash, source_fp, build_range, previous, engine, known, next_step)
        if not feature.metrics:  # a metric feature's grid rows are one per key and label
            metadata = metadata.with_changes(tied_rows=_tied_rows(feature, staging.data_dir, engine))
        now_latest = store.latest_version(feature.name)
        if now_latest != previous_version:
            # Another build (or a rollback) moved latest while this one computed: whether
            # anything changed is judged against what latest names now (S2, S8).
            log.info("feature %s: latest moved from %s to %s during the build; the change is judged against the latter", feature.name, previous_version, now_latest)
            previous_version = now_latest
            previous = store.read_record(feature.name, now_latest) if now_latest else None
        change = _change_from(feature, store, previous_version, previous, metadata, staging.data_dir)
        if change.kind is ChangeKind.NONE and not options.force:
            store.discard(staging)
            reason = f"rebuilt data equals the latest version (canonical types, floats within {FLOAT_RTOL:g} relative)"
            if not build_range.is_full and previous is not None and previous.source_fingerprint not in (None, source_fp):
                # the source changed outside what a range recomputes (a late event, a correction)
                reason += f"; the source changed since, but this build recomputes only {build_range.describe()}: if earlier events changed, `mlforge build --features {feature.name} --since DATE` or `--full-refresh` takes them in"
            return FeatureResult(feature.name, "skipped", version=previous_version, rows=metadata.rows, rows_written=0, reason=reason, build_range=build_range.describe(), dropped_rows=dropped)
        versions = store.list_versions(feature.name)
        adopted = None if options.force else _adopt_equal_commit(feature, store, versions, previous_version, metadata, staging.data_dir)
        if adopted is not None:
            store.discard(staging)
            return FeatureResult(feature.name, "skipped", version=adopted, rows=metadata.rows, rows_written=0, reason=f"rebuilt data equals {adopted}, published but not latest (by a build beside this one, or one stopped before its last step); latest moved to it", build_range=build_range.describe(), dropped_rows=dropped)
        follows, reason = _numbered_after(store, feature.name, versions, previous_version, change, metadata)
        kind = ChangeKind.PATCH if reason.kind is ChangeKind.NONE else reason.kind
        written = _rows_written(staging.data_dir, reused)
        version = next_version(versions, follows, kind)
        metadata = metadata.with_changes(version=version, change=kind.name, reason=reason.reason if reason.kind is not ChangeKind.NONE else "forced rebuild")
        store.publish(staging, version, metadata)
    except BaseException:
        store.discard(staging)
        raise
    return FeatureResult(
        feature.name, "built", version=version, rows=metadata.rows, rows_written=written, change=kind.name, reason=metadata.reason,
        dropped_rows=dropped, build_range=build_range.describe(),
    )


def _change_from(feature: Feature, store: OfflineStore, version: str | None, record: VersionRecord | None, metadata: VersionRecord, data_dir: str) -> Change:
    """The staged build's change from stored ``version`` (S2); none when the definition and
    schema are the same and so is the data -- by hash, or by rows where only the bytes differ."""
    change = classify(record, metadata)
    if change.reason == NEW_DATA and _same_rows(feature, store, version, record, metadata, data_dir):
        return Change(ChangeKind.NONE, "unchanged")
    return change


def _adopt_equal_commit(feature: Feature, store: OfflineStore, versions: list[str], latest: str | None, metadata: VersionRecord, data_dir: str) -> str | None:
    """The version above ``latest`` this build equals, once ``latest`` has moved to it; else
    ``None``.

    Two builds of the same inputs started together: one commits its version and then moves
    the pointer; the other, checking between the two steps, would publish the same rows
    again as the next PATCH. A version above latest is either such a commit (or one whose
    build died before its pointer move) or a version a rollback put latest below; the
    store's pointer tells them apart (:meth:`~mlforge.offline.base.OfflineStore.adopt_commit`),
    and only a commit is adopted. After a rollback the rows are published again.
    """
    highest = sort_versions(versions)[-1] if versions else None
    if highest is None or highest == latest:
        return None
    try:
        above = store.read_record(feature.name, highest)
    except MlforgeError:
        return None  # damaged: numbered past by _numbered_after
    if _change_from(feature, store, highest, above, metadata, data_dir).kind is not ChangeKind.NONE:
        return None
    return highest if store.adopt_commit(feature.name, highest) is not None else None


def _numbered_after(store: OfflineStore, name: str, versions: list[str], latest: str | None, change: Change, metadata: VersionRecord) -> tuple[str | None, Change]:
    """The version a new one is numbered after, and the change its label names (S2).

    That is the highest version there is: ``latest`` unless a rollback left newer ones, or
    another build has committed one whose pointer has not moved yet. The label then
    describes the step from that version -- a build of 1.0.0's definition after a rollback
    from 2.0.0 (or beside a build committing 2.0.0) drops 2.0.0's columns: 3.0.0, MAJOR,
    never 2.0.1 labelled PATCH.
    """
    highest = sort_versions(versions)[-1] if versions else None
    if highest is None or highest == latest:
        return latest, change
    try:
        above = store.read_record(name, highest)
    except MlforgeError as exc:  # a damaged record: number past it, label from latest
        log.warning("feature %s: cannot read the record of %s (%s); the new version is labelled from %s", name, highest, exc.what, latest)
        return latest, change
    log.info("feature %s: %s is newer than latest (%s); the new version is numbered and labelled from it", name, highest, latest)
    step = classify(above, metadata)
    if step.kind is ChangeKind.NONE:  # what the highest holds, published again as latest
        return highest, Change(ChangeKind.PATCH, f"the rows of {highest}, published again")
    return highest, step


def _plan(feature: Feature, options: BuildOptions, previous: VersionRecord | None, definition_hash: str, source: ir.Table) -> BuildRange:
    interval = feature.interval_seconds
    watermark = previous.watermark if previous else None
    definition_changed = previous is not None and previous.definition_hash != definition_hash
    if feature.timestamp_column is None or definition_changed:
        # No time axis to split on, or the stored rows no longer match the definition.
        if definition_changed and (options.since or options.until or options.last):
            log.warning("feature %s: definition changed, so this build is a full refresh", feature.name)
        return BuildRange()
    # --last on data that ended before now counts back from the newest event, not from now.
    data_end = _newest_event(source, feature.timestamp_column) if options.last is not None else None
    if previous is None:
        # A first build computes what it is asked for (a backfill range), or everything.
        return plan_range(since=options.since, until=options.until, last=options.last, full_refresh=options.full_refresh, now=options.now, interval=interval, data_end=data_end)
    return plan_range(
        since=options.since, until=options.until, last=options.last, full_refresh=options.full_refresh,
        now=options.now, watermark=watermark, interval=interval, data_end=data_end,
    )


def _already_built(feature: Feature, options: BuildOptions, previous: VersionRecord | None, definition_hash: str, source_fp: str, build_range: BuildRange) -> bool:
    """Whether the latest version already holds what this build would compute (S2): same
    definition, same source, and the range it asks for lies inside the previous build's.
    Neither the engine nor the plan enters: they do not change the output (W8)."""
    if previous is None or previous.definition_hash != definition_hash or previous.source_fingerprint != source_fp:
        return False
    if not fingerprints.fingerprints_content(feature.source):
        # The fingerprint is the location, which says nothing of new events: every build
        # computes (a plain one continues from the watermark) and is skipped only when the
        # rebuilt rows equal the stored ones.
        return False
    built = previous.build_range
    return BuildRange(built.since, built.until).covers(build_range)


def _same_rows(feature: Feature, store: OfflineStore, previous_version: str | None, previous: VersionRecord | None, metadata: VersionRecord, data_dir: str) -> bool:
    """Whether the staged files hold the previous version's rows (canonical types, floats
    within the tolerance of :mod:`mlforge.equivalence`); on any doubt, no."""
    if previous is None or previous_version is None:
        return False
    return rows_equivalent(
        store, metadata, previous_version, previous, parquet_files(data_dir)
    )


def rows_equivalent(store: OfflineStore, record: VersionRecord, earlier_version: str, earlier: VersionRecord, files: list[str]) -> bool:
    """Whether ``files`` (of the version ``record`` describes) hold the rows of the stored
    ``earlier_version`` (canonical types, floats within the tolerance of
    :mod:`mlforge.equivalence`): what makes a build skip (S2) and ``diff`` say identical (S4).
    On any doubt, no."""
    identical = {n for n, d in record.file_digests.items() if earlier.file_digests.get(n) == d}
    order = [*record.keys, *([record.timestamp] if record.timestamp else [])]
    try:
        return files_equivalent(
            store.data_files(record.name, earlier_version), files, order, identical=identical
        )
    except (MlforgeError, OSError, ValueError) as exc:  # unreadable or remote files: not equal
        log.debug("feature %s: cannot compare with %s (%s); treating the data as new", record.name, earlier_version, exc)
        return False


def _newest_event(source: ir.Table, ts: str) -> int | None:
    """The newest event's instant (epoch seconds) in the source; one aggregate in the engine."""
    if ts not in source.columns:
        return None
    newest = source[ts].max().to_pyarrow().as_py()
    if newest is None:
        return None
    return int((newest if newest.tzinfo else newest.replace(tzinfo=UTC)).timestamp())


def _in_range(feature: Feature, table: ir.Table, build_range: BuildRange) -> ir.Table:
    """The events a range needs (I1): of the source, where the filter reaches the scan, or
    of the function's output, when the function moves event times or reads every event."""
    import ibis

    ts = feature.timestamp_column
    if build_range.is_full or ts is None or ts not in table.columns:
        return table
    start, end = build_range.read_range(feature.max_window_seconds) if feature.metrics else build_range.labels
    conditions = []
    if start is not None:
        conditions.append(table[ts] >= utc_literal(start))
    if end is not None:
        conditions.append(table[ts] < utc_literal(end))
    if feature.metrics or not conditions:  # events without a timestamp take part in no metric (W9)
        return table.filter(conditions)
    # A feature without metrics stores its rows without a timestamp too (untimed.parquet):
    # they belong to no range, so every build recomputes them, as a full refresh would (I1).
    return table.filter(ibis.or_(ibis.and_(*conditions), table[ts].isnull()))


def _non_metric_output(feature: Feature, output: ir.Table, build_range: BuildRange) -> ir.Table:
    ts = feature.timestamp_column
    if ts and ts in output.columns:
        output = output.mutate(**{ts: output[ts].cast("timestamp('UTC', 6)")})
    return output


def _merge_with_previous(feature: Feature, store: OfflineStore, engine: Engine, version: str, fresh: ir.Table, build_range: BuildRange) -> tuple[ir.Table, list[str], list[int]]:
    """Rows for the files a range reaches (previous rows outside the range plus the fresh
    ones), the previous version's files the range does not reach, to reuse as they are, and
    the instants where those reused files end inside their month (the rows written must
    start new files there, see :func:`_file_key`).

    Month files and parts are judged by the span their names give
    (:func:`~mlforge.engines.monthfiles.file_spans`): one outside the range is reused, one
    inside it is replaced without being read, one across its bounds is read and filtered.
    A small part just before the range is read too, so a run of short builds merges its
    parts instead of leaving one file per build.
    """
    import ibis

    ts = feature.timestamp_column
    splits: list[int] = []
    if store.capabilities.month_files:
        reused, read, splits = _reach(store.data_files(feature.name, version), build_range)
        if reused and _types_moved(reused[0], fresh):
            # The source's exact types moved (int64 -> int32: the same canonical type, so a
            # PATCH): a version's files hold one type per column, so the kept files are
            # rewritten in the new types too, not hard-linked beside them.
            read, reused, splits = sorted([*reused, *read]), [], []
        if not read:
            return fresh, reused, splits
        stored = engine.read_parquet_files(read)
    else:  # a table store (Delta): read the version as a table; the store replaces only the range
        reused = []
        stored = store.read(feature.name, engine, version)
    fresh_columns = list(fresh.columns)
    assert ts is not None  # a range build needs the time axis (_plan_range falls back to full otherwise)
    label = stored[ts]
    outside = []
    if build_range.since is not None:
        outside.append(label < utc_literal(build_range.since, zoned=True))
    if build_range.until is not None:
        outside.append(label >= utc_literal(build_range.until, zoned=True))
    keep = stored.filter(ibis.or_(*outside)) if outside else stored.limit(0)
    keep = keep.select(*fresh_columns)
    if keep.schema() != fresh.schema():
        keep = keep.cast(fresh.schema())
    return keep.union(fresh), reused, splits


def _types_moved(stored_file: str, fresh: ir.Table) -> bool:
    """Whether a column of ``fresh`` has another exact type than in ``stored_file``."""
    import pyarrow.parquet as pq

    stored = exact_types(pq.read_schema(stored_file))
    return any(stored.get(name, kind) != kind for name, kind in exact_types(fresh.schema().to_pyarrow()).items())


#: A part just before a range with fewer rows than this is read and rewritten with the
#: range's rows rather than kept as a file of its own: a run of daily builds then rewrites
#: at most this many earlier rows each, and a month holds a few files, not one per build.
MERGED_PART_ROWS = 1 << 17


def _reach(files: list[str], build_range: BuildRange) -> tuple[list[str], list[str], list[int]]:
    """The files a range build reuses as they are, those it reads and filters, and where
    the reused ones end inside their month; the others (wholly inside the range) it
    replaces without reading them. ``files`` are local copies, named as the engine wrote
    them (object stores strip their build tokens)."""
    import pyarrow.parquet as pq

    spans = file_spans([os.path.basename(f) for f in files])
    since = -math.inf if build_range.since is None else build_range.since
    until = math.inf if build_range.until is None else build_range.until
    reused, read = [], []
    for path in files:
        name = os.path.basename(path)
        span = spans.get(name)
        if name == f"{UNTIMED}.parquet":
            continue  # rows without a timestamp: every build recomputes them (see _in_range)
        if span is not None and (span[1] <= since or span[0] >= until):
            reused.append(path)
        elif span is None or not (since <= span[0] and span[1] <= until):
            read.append(path)
    # A small part ending where the range starts, inside its month, is merged.
    for path in list(reused):
        span = spans.get(os.path.basename(path))
        if span is not None and span[1] == since and not is_month_start(span[1]) and pq.read_metadata(path).num_rows < MERGED_PART_ROWS:
            reused.remove(path)
            read.append(path)
    ends = [spans[os.path.basename(p)][1] for p in reused if os.path.basename(p) in spans]
    return reused, read, [end for end in ends if not is_month_start(end)]


def _file_key(engine: Engine, label: ir.TimestampValue, splits: list[int]) -> ir.IntegerValue:
    """The file a stored row goes to: its month (``202403`` -> ``2024-03.parquet``), or,
    from a split inside that month on, the part starting at the newest such split
    (``20240316000000`` -> ``2024-03-16T000000.parquet``)."""
    import ibis

    month = engine.month_key(label).cast("int64")
    inside = sorted({s for s in splits if not is_month_start(s)}, reverse=True)
    if not inside:
        return cast("ir.IntegerValue", month)
    parts = []
    for start in inside:
        end = month_end(start)
        within = label >= utc_literal(start, zoned=True)
        if end < END_OF_TIME:  # December 9999 has no end a timestamp can hold
            within = within & (label < utc_literal(end, zoned=True))
        parts.append((within, ibis.literal(part_key(start), type="int64")))
    return cast("ir.IntegerValue", ibis.cases(*parts, else_=month))


def _reuse_files(paths: list[str], data_dir: str) -> None:
    """Put unchanged files of the previous version into the new one (hard links where possible)."""
    for path in paths:
        target = os.path.join(data_dir, os.path.basename(path))
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _rows_written(data_dir: str, reused: list[str]) -> int:
    """Rows of the files this build wrote: all but the month files it took over unchanged."""
    import pyarrow.parquet as pq

    kept = {os.path.basename(p) for p in reused}
    return sum(pq.read_metadata(f).num_rows for f in parquet_files(data_dir) if os.path.basename(f) not in kept)


def _dropped_and_newest(feature: Feature, output: ir.Table, engine: Engine) -> tuple[int, int | None]:
    """How many events have a null key or timestamp (they take part in no metric, W9), and
    the newest of the others (epoch seconds), in one aggregate."""
    import ibis

    ts = feature.timestamp_column
    assert ts is not None  # metric features have a timestamp
    nulls = cast("ir.BooleanValue", ibis.or_(*[output[k].isnull() for k in feature.keys], output[ts].isnull()))
    valid = cast("ir.BooleanValue", ibis.and_(*[output[k].notnull() for k in feature.keys], output[ts].notnull()))
    seconds = cast("ir.IntegerColumn", engine.epoch_seconds(output[ts]))
    summary = output.aggregate(dropped=output.count(where=nulls), newest=seconds.max(where=valid))
    row = engine.to_arrow(summary).to_pylist()[0]
    # a conditional count over no rows is null on some engines (PySpark), zero on others
    return int(row["dropped"] or 0), None if row["newest"] is None else int(row["newest"])


#: The largest total of an integer field's absolute values per key that cannot overflow an
#: int64 partial: 2**63 less a margin for the float64 rounding of the total itself.
INT64_SAFE_TOTAL = 0.999 * 2.0**63


def check_integer_totals(feature: Feature, output: ir.Table, engine: Engine) -> None:
    """Fail before compute when an integer field that a sum or mean adds up could pass
    int64 for some key (W5, W8): Polars would wrap it silently and DuckDB would fail late.

    One scalar query over the events that take part (W9) bounds every key at once; only when
    that bound is reached are the keys grouped to find one whose values really add up past it.
    """
    import ibis

    fields = added_integer_fields(feature, output.schema())
    if not fields:
        return
    ts = feature.timestamp_column
    assert ts is not None
    events = output.filter([output[k].notnull() for k in feature.keys] + [output[ts].notnull()])
    magnitudes = {f: events[f].cast("float64").abs() for f in fields}
    overall = [m.sum() for m in magnitudes.values()]
    bound = engine.fetch_scalar(cast("ir.Scalar", overall[0] if len(overall) == 1 else ibis.greatest(*overall)))
    if bound is None or bound < INT64_SAFE_TOTAL:
        return
    per_key = events.group_by(list(feature.keys)).aggregate(
        [m.sum().name(f) for f, m in magnitudes.items()]
    )
    for f in fields:
        worst = engine.to_arrow(per_key.order_by(ibis.desc(f)).limit(1)).to_pylist()
        if worst and worst[0][f] is not None and worst[0][f] >= INT64_SAFE_TOTAL:
            key = {k: worst[0][k] for k in feature.keys}
            raise BuildError(
                f"the values of integer column {f!r} for key {key} add up to {worst[0][f]:.3g} in absolute value: "
                f"a sum or mean of them could pass int64 (about 9.22e18), which engines cannot hold alike",
                where=f"feature {feature.name!r}",
                fix=f"cast {f!r} to float64 in the feature function (or scale it down) before summing it",
            )


def check_output_names(feature: Feature, output: ir.Table) -> None:
    """The function's output columns, before anything is computed (E5): each carried
    through every engine exactly, none under mlforge's reserved prefix, no two differing
    only by case."""
    where = f"the output of feature {feature.name!r}"
    for column in output.columns:
        check_column_name(column, kind="column", where=where)
    check_distinct_columns(list(output.columns), kind="column", where=where)


def validate_output(feature: Feature, output: ir.Table, *, whole_table_only: bool = False) -> None:
    """Run the feature's validators inside the engine; fail with counts per check and up
    to :data:`EXAMPLE_ROWS` offending rows of each failed check. ``whole_table_only``:
    only the checks about all rows at once (``unique``), none of those about one row."""
    if not feature.validators or (
        whole_table_only and not any(v.name == "unique" for _, vs in feature.validators for v in vs)
    ):
        return
    aggs: dict[str, Any] = {}
    checks: list[tuple[str, str, Any]] = []
    for column, validators in feature.validators:
        if column not in output.columns:
            raise ValidationFailed(
                f"validator column {column!r} is not in the feature function's output",
                where=f"feature {feature.name!r}",
                fix=f"validate one of {list(output.columns)}",
            )
        for i, validator in enumerate(validators):
            alias = f"v_{len(checks)}_{i}"
            col = output[column]
            if validator.name == "unique":
                aggs[alias] = col.count() - col.nunique(where=col.notnull())
            elif whole_table_only:
                continue
            elif validator.violation is not None:
                aggs[alias] = validator.violation(col).cast("int64").sum().fill_null(0)
            else:  # a named check without a row predicate counts nothing
                continue
            checks.append((alias, column, validator))
    counts = output.aggregate(**aggs).to_pyarrow().to_pylist()[0]
    failed = [(column, validator, int(counts[alias])) for alias, column, validator in checks if counts[alias]]
    if failed:
        examples = [f"\n    {column}: {v.describe()}: {row}" for column, v, _ in failed for row in _offending_rows(feature, output, column, v)]
        raise ValidationFailed(
            "validation failed: " + "; ".join(f"{column}: {v.describe()} failed for {n} row(s)" for column, v, n in failed),
            where=f"feature {feature.name!r}",
            fix="fix the data or the feature function, or relax the validator; nothing was written"
            + (f"\n  offending rows (up to {EXAMPLE_ROWS} per check):" + "".join(examples) if examples else ""),
        )


#: Offending rows a validation error shows per failed check.
EXAMPLE_ROWS = 5


def _offending_rows(feature: Feature, output: ir.Table, column: str, validator: Any) -> list[str]:
    """Up to :data:`EXAMPLE_ROWS` rows failing one check (keys, timestamp and the column),
    in key order; for ``unique``, rows whose value is duplicated."""
    ts = feature.timestamp_column
    shown = list(dict.fromkeys([*(k for k in feature.keys if k in output.columns), *([ts] if ts in output.columns else []), column]))
    col = output[column]
    if validator.violation is not None:
        bad = output.filter(validator.violation(col))
    else:
        repeated = output.filter(col.notnull()).group_by(column).aggregate(__mlforge_n=col.count())
        bad = output.semi_join(repeated.filter(repeated["__mlforge_n"] > 1), column)
    rows = bad.select(*shown).order_by(shown).limit(EXAMPLE_ROWS).to_pyarrow().to_pylist()
    return [", ".join(f"{name}={value.isoformat() if isinstance(value, datetime) else repr(value)}" for name, value in row.items()) for row in rows]


def _reused_digests(reused: list[str], previous: VersionRecord | None) -> dict[str, str]:
    """Digests of the files an incremental build took over unchanged (hard links of the
    previous version's files), from the previous version's metadata."""
    recorded = previous.file_digests if previous else {}
    names = {os.path.basename(p) for p in reused}
    return {name: digest for name, digest in recorded.items() if name in names}


def _metadata(
    feature: Feature, expr: ir.Table, data_dir: str, definition_hash: str, source_fp: str, build_range: BuildRange, previous: VersionRecord | None,
    engine: Engine, known_digests: dict[str, str], next_step: int | None,
) -> VersionRecord:
    """The version's record; ``next_step``: for a metric feature, the grid step after the
    newest event the build read. Events from the start of that event's step on (later
    ones, and late ones within it) change only labels from ``next_step`` on: the label at
    the event's own step aggregates events before it. So the next build continues there.
    (Not from the newest stored label: a range build keeps the labels after its ``until``
    from the version before.)"""
    import pyarrow.parquet as pq

    files = parquet_files(data_dir)
    digests = file_digests(files, known_digests)
    footers = [pq.read_metadata(f) for f in files]
    rows = sum(footer.num_rows for footer in footers)
    if feature.metrics:
        newest = next_step
    else:
        newest = _newest_label(footers, feature.timestamp_column) if feature.timestamp_column else None
    metric_info = tuple(
        MetricRecord(c.output_name, c.field, c.function, c.window, c.description, c.unit) for c in feature.metric_columns
    )
    return VersionRecord(
        name=feature.name,
        keys=tuple(feature.keys),
        entities=tuple(EntityRecord(e.name, e.join_key, tuple(e.from_columns or ())) for e in feature.entities),
        timestamp=feature.timestamp_column,
        interval=feature.interval,
        ttl=feature.ttl,
        schema=canonical_schema(expr.schema()),
        types=exact_types(footers[0].schema.to_arrow_schema()) if footers else {},
        metrics=metric_info,
        tags=tuple(feature.tags),
        description=feature.description,
        rows=rows,
        created_at=datetime.now(tz=UTC).isoformat(),
        definition_hash=definition_hash,
        schema_hash=fingerprints.stable_hash(canonical_schema(expr.schema())),
        data_hash=digests_hash(digests),
        file_digests=digests,
        source=feature.source.location,
        source_fingerprint=source_fp,
        build_range=BuiltRange(build_range.since, build_range.until),
        watermark=next_watermark(previous.watermark if previous else None, build_range, newest),
        engine=engine.name,
        format="parquet",
    )


def _tied_rows(feature: Feature, data_dir: str, engine: Engine) -> int:
    """How many written rows share their keys and timestamp (their keys, for a feature
    without one) with another row: every read picks one row of such a group by value
    (:meth:`Engine.last_per_group`), so training and online agree. Rows with a null key or
    timestamp match no label and do not count."""
    files = parquet_files(data_dir)
    if not files:
        return 0
    table = engine.read_parquet_files(files)
    ts = feature.timestamp_column
    by = [*feature.keys, *([ts] if ts and ts in table.columns else [])]
    table = table.filter(*[table[c].notnull() for c in by])
    groups = table.group_by(by).aggregate(**{_GROUP_ROWS: table.count()})
    return int(engine.fetch_scalar(groups.filter(groups[_GROUP_ROWS] > 1)[_GROUP_ROWS].sum()) or 0)


def _newest_label(footers: list[pq.FileMetaData], ts: str) -> int | None:
    """The newest timestamp in the written files, in epoch seconds, from their Parquet
    statistics (no data scan). Timestamps are read as their stored integers: turning a
    statistic into a ``datetime`` makes pyarrow import pandas (~0.3 s of a 3 s build)."""
    import pyarrow as pa

    newest = None
    for meta in footers:
        schema = meta.schema.to_arrow_schema()
        if ts not in schema.names:
            return None
        idx = schema.get_field_index(ts)
        kind = schema.field(idx).type
        per_second = UNITS_PER_SECOND[kind.unit] if pa.types.is_timestamp(kind) else 1_000_000
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(idx).statistics
            if stats is not None and stats.has_min_max and isinstance(stats.max_raw, int):  # not INT96 bytes
                seconds = int(stats.max_raw) // per_second
                newest = seconds if newest is None else max(newest, seconds)
    return newest


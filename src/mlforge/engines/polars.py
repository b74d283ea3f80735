"""Polars: a single-machine engine through Ibis's Polars backend.

Ibis's Polars backend has no window functions, only equality joins and no SHA-256, so
metric frames are rolled by Polars itself (the compiler's ``rolling`` plan; metrics that
need raw values take the portable plan) and surrogate keys are computed natively.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, cast

from mlforge.engines.asof import AsofJoin
from mlforge.engines.base import (
    Capability,
    Engine,
    RollingFrame,
    orderable,
    ordered,
    temp_table_name,
)
from mlforge.engines.monthfiles import ROW_GROUP_ROWS, partition_file, write_partitioned_batches
from mlforge.engines.sources import fixed_offset_columns, names_itself
from mlforge.errors import missing_extra

if TYPE_CHECKING:
    import ibis.expr.datatypes as dt
    import ibis.expr.types as ir


class PolarsEngine(Engine):
    """Runs Ibis expressions on Polars lazy frames."""

    name: ClassVar[str] = "polars"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.ROLLING_FRAMES, Capability.NATIVE_FRAMES, Capability.DELTA_SOURCES, Capability.CASE_SENSITIVE_NAMES})
    native_frame: ClassVar[str | None] = "polars"
    requires: ClassVar[tuple[str, ...]] = ("polars",)
    extra: ClassVar[str | None] = "polars"

    def _connect(self) -> Any:
        try:
            import ibis
            import polars  # noqa: F401
        except ImportError:
            raise missing_extra("polars", "polars", where="engine 'polars'") from None
        return ibis.polars.connect()

    def _read_parquet(self, location: str) -> ir.Table:
        import polars as pl

        offsets = fixed_offset_columns(location)
        if offsets:
            # Polars' scan stops (a panic) at a zone such as "+05:30": read through Arrow,
            # naming the same instants in UTC (rule T1 converts them to UTC anyway).
            import pyarrow as pa
            import pyarrow.dataset as ds

            table = ds.dataset(location, format="parquet").to_table()
            for name in offsets:
                i = table.schema.get_field_index(name)
                table = table.set_column(i, name, table.column(name).cast(pa.timestamp(table.schema.field(name).type.unit, tz="UTC")))
            return self.con.create_table(temp_table_name(), _plain_text(pl.DataFrame(table).lazy()))
        # a path with glob characters that names a file or directory as it is reads that
        # alone (a directory's hive partitions too, which glob=False would not look for)
        literal = names_itself(location)
        scan = pl.scan_parquet(location, glob=False, hive_partitioning=True if os.path.isdir(location) else None) if literal else pl.scan_parquet(location)
        return self.con.create_table(temp_table_name(), _plain_text(_without_maps(scan)))

    def read_parquet_files(self, files: list[str]) -> ir.Table:
        import polars as pl

        return self.con.create_table(temp_table_name(), _plain_text(_without_maps(pl.scan_parquet(files, glob=False))))

    def epoch_seconds(self, col: ir.TimestampValue) -> ir.IntegerValue:
        # Casting a timestamp to int64 yields its raw ticks, in the column's unit.
        scale = cast("dt.Timestamp", col.type()).scale
        per_second = 10 ** (6 if scale is None else scale)
        return cast("ir.IntegerValue", col.cast("int64")) // per_second

    def parse_timestamp(self, col: ir.StringValue, fmt: str) -> ir.TimestampValue:
        # Formats are Python strftime codes (T1); in chrono ``%f`` reads nanosecond digits,
        # so ".250000" would become 250 µs. ``%.f`` reads a decimal fraction as Python does.
        # Polars parses to nanoseconds while Ibis types the result with no scale, which
        # epoch_seconds reads as microseconds: fix the unit explicitly.
        import ibis.expr.datatypes as dt

        return cast("ir.TimestampValue", col.as_timestamp(fmt.replace(".%f", "%.f")).cast(dt.Timestamp(scale=6)))

    def to_utc_naive(self, col: ir.TimestampValue) -> ir.TimestampValue:
        import ibis.expr.datatypes as dt

        scale = cast("dt.Timestamp", col.type()).scale
        return cast("ir.TimestampValue", col.cast(dt.Timestamp(timezone="UTC", scale=scale)).cast(dt.Timestamp(scale=scale)))

    def sha256_hex(self, col: ir.StringValue) -> ir.StringValue:
        raise NotImplementedError("the Polars engine computes surrogate keys natively")

    def add_hex_digest_column(self, table: ir.Table, text: ir.StringValue, out: str) -> ir.Table:
        """Add ``out`` = first 32 hex characters of SHA-256 of ``text`` (rule K1)."""
        import polars as pl

        lazy = self.con.compile(table.mutate(__mlforge_key_text=text))

        def digest(series: pl.Series) -> pl.Series:
            return pl.Series(
                [hashlib.sha256(v.encode("utf-8")).hexdigest()[:32] for v in series.to_list()],
                dtype=pl.String,
            )

        lazy = lazy.with_columns(pl.col("__mlforge_key_text").map_batches(digest, return_dtype=pl.String).alias(out)).drop(
            "__mlforge_key_text"
        )
        self._digest_columns.add(out)
        return self.con.create_table(temp_table_name(), lazy)

    @cached_property
    def _digest_columns(self) -> set[str]:
        """Columns computed by the Python SHA-256 above: a filter on one cannot pass the
        Python function down to the source, so each key range would hash every source row
        again; results keyed by one are written as one range (:func:`key_ranges`)."""
        return set()

    def asof_backward(self, base: ir.Table, right: ir.Table, join: AsofJoin) -> ir.Table:
        """Polars' own ``join_asof`` on the compiled lazy frames: Ibis lowers as-of joins
        on Polars wrongly for unsorted input."""
        import polars as pl

        matched_row = "__mlforge_match_row"
        labels = self.to_native(join.usable_labels(base).select(join.row, join.label, *join.left_keys)).sort(join.label)
        events = self.to_native(join.usable_events(right).select(*join.right_keys, join.time, *join.values)).sort(join.time)
        matched = labels.join_asof(
            events, left_on=join.label, right_on=join.time, by_left=list(join.left_keys), by_right=list(join.right_keys), strategy="backward", check_sortedness=False
        )
        found = self.from_native(matched.select(pl.col(join.row).alias(matched_row), *join.values))
        return base.left_join(found, base[join.row] == found[matched_row]).select(*base.columns, *join.values)

    def last_per_group(self, table: ir.Table, by: Sequence[str], order: Sequence[str] | None = None) -> ir.Table:
        """:meth:`Engine.last_per_group` in Polars: sorted by ``order`` with nulls first, the
        last row of each group (Polars sorts NaN above every number, as the SQL engines do)."""
        frame = self.to_native(table)
        columns = orderable(table, by, order)
        if columns:
            frame = frame.sort(columns, nulls_last=False, maintain_order=True)
        return self.from_native(frame.unique(subset=list(by), keep="last", maintain_order=False))

    def rolling_frames(self, partials: ir.Table, keys: Sequence[str], label: str, frames: Sequence[RollingFrame], max_steps: int) -> ir.Table:
        """The labels and frames of :meth:`Engine.rolling_frames` in one lazy Polars query.

        Sorted by key and label, each ``partials`` row stands for the labels from its own
        up to the next row's, at most ``max_steps`` of them: together exactly the labels
        with a row among their last ``max_steps``, each once and in order, with no join.
        Each frame is Polars' rolling aggregation over the last ``steps`` labels (by value,
        so the gaps between rows count as labels), per key.
        """
        import polars as pl

        keys = list(keys)
        own_label = "__mlforge_own_label"
        rows = self.to_native(partials).sort([*keys, label])
        # Float sums roll as two exact halves (see _split_exactly); the others as they are.
        split = {f.column for f in frames if f.rolls_with == "sum" and partials[f.column].type().is_floating()}
        rows = rows.with_columns(*(half for column in split for half in _split_exactly(column, keys)))
        start = pl.col(label)
        following = start.shift(-1).over(keys)
        stop = pl.min_horizontal(following.fill_null(start + max_steps), start + max_steps)
        spine = rows.with_columns(pl.int_ranges(start, stop, dtype=pl.Int64).alias(own_label)).explode(own_label)
        values = [v for column in dict.fromkeys(frame.column for frame in frames) for v in (_halves(column) if column in split else (column,))]
        # A row's partials belong to its own label only; the labels it stands for after it get nulls.
        own = pl.col(own_label) == pl.col(label)
        spine = spine.select(*keys, pl.col(own_label).alias(label), *(pl.when(own).then(pl.col(v)).alias(v) for v in values))

        def roll(column: str, frame: RollingFrame) -> pl.Expr:
            return getattr(pl.col(column), frame.rolls_with)().rolling(index_column=label, period=f"{frame.steps}i").over(keys)

        rolled = spine.select(
            *keys,
            label,
            *((pl.sum_horizontal(*(roll(h, f) for h in _halves(f.column))) if f.column in split else roll(f.column, f)).alias(f.name) for f in frames),
        )
        return self.from_native(rolled)

    def to_native(self, table: ir.Table) -> Any:
        return self.con.compile(table)

    def native_input(self, table: ir.Table, *, eager: bool) -> Any:
        lazy = self.to_native(table)
        return lazy.collect() if eager else lazy

    def from_native(self, frame: Any) -> ir.Table:
        import polars as pl

        return self.con.create_table(temp_table_name(), frame.lazy() if isinstance(frame, pl.DataFrame) else frame)

    def to_arrow(self, expr: ir.Table) -> Any:
        """The rows as Arrow, in the types Ibis gives the expression (what DuckDB returns and
        the version's files hold): Polars' own are ``large_string``, ``large_binary`` and
        ``large_list``, and a categorical comes out as a dictionary."""

        table = self.con.compile(expr).collect().to_arrow()
        try:
            return table.cast(expr.schema().to_pyarrow())
        except (ValueError, TypeError, NotImplementedError):  # Arrow errors; a type Ibis and Polars map apart (a map): as Polars gives it
            return table

    def write_parquet(self, expr: ir.Table, data_dir: str, partition_by: str | None = None, order: Sequence[str] = ()) -> None:
        """As :meth:`Engine.write_parquet`. Month files are written from the result taken
        out in parts, each a range of the first ``order`` column (:func:`key_ranges`), so
        at most one part (``PART_ROWS`` rows or so) is held at once: the whole result of a
        10M-event build was 6.3 GiB of memory, a part ~1.3 GiB. A range filter on a key
        reaches Polars' scan of the source through the rolling plan (windows ``over`` the
        keys, group-bys by them), so each part reads and computes only its own keys.
        Parts follow each other in key order, so each month file's rows stay in ``order``.
        """
        if partition_by is None:
            _plain_text(self.con.compile(ordered(expr, order))).sink_parquet(f"{data_dir}/part-00000.parquet", compression="zstd", row_group_size=1 << 20)
            return
        import polars as pl

        lazy = _plain_text(self.con.compile(expr))
        parts = key_ranges(lazy, order[0]) if order and order[0] not in self._digest_columns else [None]
        if parts == [None]:
            _write_months(_collect_in_order(lazy, order), partition_by, data_dir)
            return
        frames = (_collect_in_order(lazy.filter(part), order) for part in parts)
        schema = pl.DataFrame(schema=lazy.collect_schema()).to_arrow().schema
        write_partitioned_batches(_month_batches(frames, partition_by), schema, data_dir, partition_by)


def _without_maps(lazy: Any) -> Any:
    """Map columns as lists of ``{key, value}`` structs: Polars reads a Parquet map as its
    own Map type, which Ibis cannot name, so a source holding one could not be read at all,
    even by a feature that leaves the column out."""
    import polars as pl

    map_type = getattr(pl, "Map", None)  # Polars 2; Polars 1 read Parquet maps as lists of structs already
    maps = {name: dtype for name, dtype in lazy.collect_schema().items() if map_type is not None and dtype.base_type() is map_type}
    return lazy.with_columns(pl.col(n).cast(pl.List(pl.Struct({"key": d.key, "value": d.value}))) for n, d in maps.items()) if maps else lazy


def _plain_text(lazy: Any) -> Any:
    """Categorical and enum columns as plain text, as Ibis types them and DuckDB stores
    them, on reading (sources and stored versions) and on writing: stored as Arrow
    dictionaries, a categorical key could not be joined on later, and a build's fresh rows
    could not be unioned with stored ones (Polars refuses to mix categorical and text)."""
    import polars as pl
    import polars.selectors as cs

    return lazy.with_columns(cs.categorical().cast(pl.String), cs.enum().cast(pl.String))


#: Rows of a build's result that the Polars engine aims to hold at once (~1.3 GiB for a
#: key, a timestamp and six metric columns): results past it are collected in key ranges.
PART_ROWS = 16_000_000
#: One key in this many (by hash) is counted to place the key ranges' bounds; with fewer
#: than ``_SAMPLED_KEYS`` keys in the sample, every key is counted.
KEY_SAMPLE = 16
_SAMPLED_KEYS = 64


def _halves(column: str) -> tuple[str, str]:
    return f"{column}__mlforge_high", f"{column}__mlforge_low"


def _split_exactly(column: str, keys: list[str]) -> list[Any]:
    """``column`` as two columns that add up to it exactly, so that rolling sums of each are
    exact and their total is the window's sum to the last bit (W8).

    Polars rolls a sum by adding the values that enter a frame and subtracting those that
    leave it; after a large value leaves, its rounding stays behind (1e15 then 1.1 rolled
    to 1.125; lognormal amounts drifted 1e-8 from DuckDB's sums). Here ``unit`` is, per key,
    the power of two with ``sum(|column|) <= 2**52 * unit`` (per key, so one key's huge values
    leave the others' halves fine); the high half is each value rounded to a
    multiple of ``unit``, so every sum of high halves a frame can hold is a multiple of
    ``unit`` below ``2**53 * unit``: exact, however values enter and leave. The low half,
    the exact rest (below ``unit / 2``), is too small for its own drift to show. An
    infinite value is its own high half (a frame holding one is not finite either way);
    so is every value when the finite ones add up past the float range.
    """
    import polars as pl

    high, low = _halves(column)
    value = pl.col(column).cast(pl.Float64)
    finite = value.is_finite()
    total = pl.when(finite).then(value.abs()).sum().over(keys)
    unit = pl.lit(2.0).pow(total.log(2).ceil() - 52)
    exact = finite & total.is_finite() & (unit > 0)
    high_half = pl.when(exact).then((value / unit).round(0) * unit).otherwise(value)
    return [high_half.alias(high), pl.when(exact).then(value - high_half).otherwise(0.0).alias(low)]


def _collect_in_order(lazy: Any, order: Sequence[str]) -> Any:
    """``lazy`` collected, its rows in ``order`` (ascending, nulls last, as Ibis's
    ``order_by``; ties keep their order). When it already comes out so (the rolling plan
    yields its rows by key and label) the sort is skipped: at 1M events it cost ~1.9 s
    of CPU on sorted rows. Sorted by Polars directly, not through an Ibis table, which
    the backend would keep (and with it every range) for the engine's lifetime."""
    frame = lazy.collect()
    if order and not in_order(frame, order):
        frame = frame.sort(list(order), nulls_last=True, maintain_order=True)
    return frame


def key_ranges(lazy: Any, key: str) -> list[Any]:
    """Filters (Polars expressions) on ``key`` that split ``lazy``'s rows into parts of
    about ``PART_ROWS`` rows, in ascending key order with null keys in the last part
    (where Ibis's ``order_by`` puts them); ``[None]`` (no filter) when one part holds it all.

    The rows per key are counted on a sample of the keys (one in ``KEY_SAMPLE``), which
    costs about a tenth of counting them all (3.5 s at 10M events) and places the bounds
    about as well; only the parts' sizes depend on it, never the rows written.
    """
    import polars as pl

    column = pl.col(key)
    if not _orderable(lazy.collect_schema()[key]):
        return [None]
    sampled = lazy.filter(column.hash(seed=0) % KEY_SAMPLE == 0)
    counts, scale = _rows_per_key(sampled, key), KEY_SAMPLE
    if len(counts) < _SAMPLED_KEYS:
        counts, scale = _rows_per_key(lazy, key), 1
    bounds: list[Any] = []
    held = 0
    for value, rows in counts:
        if held and held + rows * scale > PART_ROWS:
            bounds.append(value)
            held = 0
        held += rows * scale
    if not bounds:
        return [None]
    parts = [column < bounds[0]]
    parts += [(column >= low) & (column < high) for low, high in itertools.pairwise(bounds)]
    parts.append((column >= bounds[-1]) | column.is_null())
    return parts


def _rows_per_key(lazy: Any, key: str) -> list[tuple[Any, int]]:
    """``(key value, rows)`` of ``lazy``'s non-null keys, in ascending key order."""
    import polars as pl

    counts = lazy.group_by(key).agg(pl.len().alias("rows")).drop_nulls(key).sort(key).collect()
    return list(counts.iter_rows())


def _orderable(dtype: Any) -> bool:
    """Whether Polars' ``<`` on ``dtype`` agrees with the order Ibis's ``order_by`` sorts
    it in: integers, strings, booleans, dates and times (not floats, whose NaN compares
    unlike it sorts, nor nested or binary values)."""
    import polars as pl

    return bool(dtype.is_integer() or dtype.is_temporal() or dtype in (pl.String, pl.Boolean))


def _months(frame: Any, partition_by: str) -> Any:
    """``(month, rows)`` of a collected frame, one month at a time: a filter keeps the
    frame's row order, and the writer then never gathers rows (that was ~1.5 s at 1M)."""
    import polars as pl

    month = pl.col(partition_by)
    for value in frame.get_column(partition_by).unique().sort(nulls_last=True):
        yield value, frame.filter(month.is_null() if value is None else month == value)


def _write_months(frame: Any, partition_by: str, data_dir: str) -> None:
    """Write each month of a collected frame whole, with Polars' own writer (it encodes
    and compresses without the GIL, ~0.35 s less than the streaming writer for 1M events),
    two months at a time and at most ``_MONTHS_IN_FLIGHT`` taken out at once."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    def write(rows: Any, path: str) -> None:
        rows.drop(partition_by).write_parquet(path, compression="zstd", row_group_size=ROW_GROUP_ROWS)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlforge-months") as pool:
        writes: deque[Future[None]] = deque()
        for value, rows in _months(frame, partition_by):
            writes.append(pool.submit(write, rows, f"{data_dir}/{partition_file(value)}"))
            while len(writes) >= _MONTHS_IN_FLIGHT:
                writes.popleft().result()
        while writes:
            writes.popleft().result()


#: Months taken out of a collected frame and not yet written, at most.
_MONTHS_IN_FLIGHT = 3


def _month_batches(frames: Any, partition_by: str) -> Any:
    """Arrow batches of each collected part in turn, a month at a time (:func:`_months`);
    a part is dropped before the next is collected."""
    frame = next(frames, None)
    while frame is not None:
        for _, rows in _months(frame, partition_by):
            yield from rows.to_arrow().to_batches()
        frame = None
        frame = next(frames, None)


def in_order(frame: Any, order: Sequence[str]) -> bool:
    """Whether ``frame``'s rows are already ascending by ``order`` with no null in those
    columns -- then any sort by ``order`` (nulls first or last, stable or not) keeps it.

    >>> import polars as pl
    >>> in_order(pl.DataFrame({"k": ["a", "a", "b"], "t": [2, 3, 1]}), ["k", "t"])
    True
    >>> in_order(pl.DataFrame({"k": ["a", "b", "a"], "t": [1, 1, 2]}), ["k", "t"])
    False
    >>> in_order(pl.DataFrame({"k": ["a", None], "t": [1, 2]}), ["k", "t"])
    False
    """
    import polars as pl

    # Row i is at or after row i-1: compared column by column, the last one may be equal.
    after = pl.col(order[-1]) >= pl.col(order[-1]).shift(1)
    for column in reversed(order[:-1]):
        now, before = pl.col(column), pl.col(column).shift(1)
        after = (now > before) | ((now == before) & after)
    nulls = pl.any_horizontal([pl.col(c).is_null() for c in order]).any()
    ok, has_nulls = frame.select(after.slice(1).all().alias("ok"), nulls.alias("nulls")).row(0)
    return bool(ok) and not has_nulls


#: The class the engine registry (:mod:`mlforge.engines`) builds for 'polars'.
ENGINE = PolarsEngine

"""The month-file writer: a stored version's rows as one Parquet file per month of the
feature timestamp (``2024-03.parquet``, ``untimed.parquet``), written in bounded memory.

Engines without their own partitioned writer hand it Arrow batches; Spark writes
hive-style directories that :func:`flatten_partitions` renames to the same layout.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa


def write_arrow_table(table: pa.Table, data_dir: str, partition_by: str | None = None) -> None:
    """Write an Arrow table as one file, or one file per value of ``partition_by``
    (engines without a native partitioned writer), streamed through
    :func:`write_partitioned_batches`, which keeps the extra memory to a few buffers."""
    import pyarrow.parquet as pq

    if partition_by is None:
        pq.write_table(table, f"{data_dir}/part-00000.parquet", row_group_size=ROW_GROUP_ROWS, **parquet_options(table.schema))
        return
    write_partitioned_batches(table.to_batches(), table.schema, data_dir, partition_by)


def _runs(values: pa.Array | pa.ChunkedArray) -> list[tuple[Any, int, int]] | None:
    """``(value, start, length)`` of each run of equal values, or ``None`` when a value
    appears in more than one run (the column is not sorted by it)."""
    import pyarrow as pa
    import pyarrow.compute

    pc: Any = pyarrow.compute  # functions generated at import time: no stubs to check
    if len(values) == 0:
        return []
    combined = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    encoded = pc.run_end_encode(combined)
    ends = encoded.run_ends.to_pylist()
    run_values = encoded.values.to_pylist()
    if len(set(run_values)) != len(run_values):
        return None
    starts = [0, *ends[:-1]]
    return [(value, start, end - start) for value, start, end in zip(run_values, starts, ends, strict=True)]


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """Writer options for a stored feature's Parquet files: zstd, and dictionary encoding
    only for text and binary columns.

    Metric values are mostly distinct, so a dictionary is built and then abandoned page
    after page; sorted numeric keys compress as well without one. Without dictionaries on
    those columns the files of the 1M-event build are ~13% smaller, and writing them takes
    about half the CPU time (``benchmarks/README.md``, issue 20).

    >>> import pyarrow as pa
    >>> parquet_options(pa.schema([("user", pa.string()), ("spend", pa.float64())]))
    {'compression': 'zstd', 'use_dictionary': ['user']}
    >>> parquet_options(pa.schema([("user_id", pa.int64())]))["use_dictionary"]
    False
    """
    import pyarrow as pa

    kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view, pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view, pa.types.is_dictionary)
    text = [f.name for f in schema if any(kind(f.type) for kind in kinds)]
    return {"compression": "zstd", "use_dictionary": text or False}


#: Rows per Parquet row group of a stored feature.
ROW_GROUP_ROWS = 1 << 20
#: Rows a partition buffers before it writes them as a row group: with one buffer per month
#: open at once, this bounds the writer's memory whatever the size of the result.
PARTITION_BUFFER_ROWS = 1 << 18


def write_partitioned_batches(batches: Any, schema: pa.Schema, data_dir: str, partition_by: str) -> None:
    """Write a stream of record batches as one file per value of ``partition_by``.

    Each file gets its rows in stream order (a sorted stream gives sorted files); the
    partition column is not written. Memory stays bounded: a partition's rows are written
    once ``PARTITION_BUFFER_ROWS`` of them have arrived, and at most
    ``_WRITES_IN_FLIGHT`` such writes wait for the writer thread.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    index = schema.get_field_index(partition_by)
    stored = schema.remove(index)
    writers: dict[Any, pq.ParquetWriter] = {}
    pending: dict[Any, list[pa.RecordBatch]] = {}
    pending_rows: dict[Any, int] = {}
    in_flight: deque[Future[None]] = deque()
    last_write: dict[Any, Future[None]] = {}
    # Writer threads compress and write (pyarrow releases the GIL) while this thread fetches
    # and splits the next batches; different files are written in parallel, and each write
    # of a file waits for the previous one, so every file keeps its rows in stream order.
    pool = ThreadPoolExecutor(max_workers=_WRITER_THREADS, thread_name_prefix="mlforge-writer")

    def write_after(previous: Future[None] | None, writer: pq.ParquetWriter, rows: pa.Table) -> None:
        if previous is not None:
            previous.result()
        writer.write_table(rows, row_group_size=ROW_GROUP_ROWS)

    def flush(value: Any) -> None:
        rows = pa.Table.from_batches(pending.pop(value), stored)
        pending_rows.pop(value)
        if value not in writers:
            writers[value] = pq.ParquetWriter(f"{data_dir}/{partition_file(value)}", stored, **parquet_options(stored))
        # A queued write's predecessor was queued earlier, so it is running or done: no
        # worker ever waits for a write that no worker has picked up.
        last_write[value] = pool.submit(write_after, last_write.get(value), writers[value], rows)
        in_flight.append(last_write[value])
        while len(in_flight) > _WRITES_IN_FLIGHT:
            in_flight.popleft().result()

    try:
        for batch in batches:
            for value, part in _split(batch, index):
                pending.setdefault(value, []).append(part)
                pending_rows[value] = pending_rows.get(value, 0) + part.num_rows
                if pending_rows[value] >= PARTITION_BUFFER_ROWS:
                    flush(value)
        for value in list(pending):
            flush(value)
        while in_flight:
            in_flight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for writer in writers.values():
            writer.close()


def _split(batch: pa.RecordBatch, index: int) -> list[tuple[Any, pa.RecordBatch]]:
    """``(value, rows)`` per value of column ``index`` of ``batch``, without that column,
    each value's rows in batch order: one stable sort and one gather for the whole batch
    rather than one filter per value."""
    import pyarrow.compute

    pc: Any = pyarrow.compute  # functions generated at import time: no stubs to check
    keys = batch.column(index)
    rest = batch.drop_columns([batch.schema.names[index]])
    runs = _runs(keys)
    if runs is None:
        order = pc.sort_indices(keys)  # a stable sort
        keys, rest = keys.take(order), rest.take(order)
        runs = _runs(keys)
        assert runs is not None  # sorted: each value is one run
    return [(value, rest.slice(start, length)) for value, start, length in runs]


#: Threads compressing and writing partition files, and the writes queued for them before
#: the stream waits: together they bound the buffered rows to a few partition buffers.
_WRITER_THREADS = 2
_WRITES_IN_FLIGHT = 3


def partition_file(value: Any) -> str:
    """File name of one partition: ``2024-03.parquet`` for the month key ``202403`` (an
    integer, or its digits as Spark names the partition's directory) or ``"2024-03"``;
    ``2024-03-16T000000.parquet`` for the part key ``20240316000000`` (:func:`part_key`);
    rows without a timestamp go to ``untimed.parquet`` (not ``_...``: Spark and Hadoop
    readers skip such files).

    >>> partition_file(202403), partition_file("202403"), partition_file("2024-03"), partition_file(None)
    ('2024-03.parquet', '2024-03.parquet', '2024-03.parquet', 'untimed.parquet')
    >>> partition_file(20240316063000), partition_file("20240316063000")
    ('2024-03-16T063000.parquet', '2024-03-16T063000.parquet')
    """
    if value is None or value == "__HIVE_DEFAULT_PARTITION__":
        return f"{UNTIMED}.parquet"
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        if number >= _PART_KEYS:
            day, clock = divmod(number, 1_000_000)
            year_month, day = divmod(day, 100)
            year, month = divmod(year_month, 100)
            return f"{year:04d}-{month:02d}-{day:02d}T{clock:06d}.parquet"
        year, month = divmod(number, 100)
        return f"{year:04d}-{month:02d}.parquet"
    return f"{value}.parquet"


#: Part keys (``yyyymmddHHMMSS``) are at least this; month keys (``yyyymm``) are below it.
_PART_KEYS = 10**8


def part_key(instant: int) -> int:
    """The partition value of the part of a month that starts at ``instant`` (epoch
    seconds, UTC): ``yyyymmddHHMMSS``, named ``yyyy-mm-ddTHHMMSS.parquet``.

    >>> part_key(1_710_547_200)  # 2024-03-16 00:00:00 UTC
    20240316000000
    """
    m = datetime.fromtimestamp(instant, tz=UTC)
    return ((m.year * 100 + m.month) * 100 + m.day) * 1_000_000 + m.hour * 10_000 + m.minute * 100 + m.second


def month_start(instant: int) -> int:
    """The first instant of ``instant``'s month (epoch seconds, UTC)."""
    moment = datetime.fromtimestamp(instant, tz=UTC)
    return int(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())


#: 10000-01-01 00:00:00 UTC, where December 9999 ends: no ``datetime`` can hold it.
END_OF_TIME = 253_402_300_800


def is_month_start(instant: int) -> bool:
    """Whether ``instant`` is the first instant of a month (the end of December 9999 too).

    >>> is_month_start(1_709_251_200), is_month_start(1_710_547_200), is_month_start(253_402_300_800)
    (True, False, True)
    """
    return instant >= END_OF_TIME or month_start(instant) == instant


def month_end(instant: int) -> int:
    """The first instant of the month after ``instant``'s (epoch seconds, UTC).

    >>> month_end(253_399_622_400) - 253_399_622_400  # 9999-12-01: the month after is year 10000
    2678400
    """
    moment = datetime.fromtimestamp(instant, tz=UTC)
    if moment.year == 9999 and moment.month == 12:  # past the last datetime
        return END_OF_TIME
    if moment.month == 12:
        return int(datetime(moment.year + 1, 1, 1, tzinfo=UTC).timestamp())
    return int(datetime(moment.year, moment.month + 1, 1, tzinfo=UTC).timestamp())


def file_start(name: str) -> int | None:
    """The first instant a month file or part may hold (epoch seconds, UTC), from its name:
    ``2024-03.parquet`` starts with its month, ``2024-03-16T063000.parquet`` at that
    instant; ``None`` for any other name (``untimed.parquet``, ``part-00000.parquet``).

    >>> file_start("2024-03.parquet"), file_start("2024-03-16T000000.parquet"), file_start("untimed.parquet")
    (1709251200, 1710547200, None)
    """
    stem = name.removesuffix(".parquet")
    digits = stem.replace("-", "").replace("T", "")
    if not name.endswith(".parquet") or not digits.isdigit() or len(digits) not in (6, 14):
        return None
    if len(digits) == 6:
        year, month, day, clock = int(digits[:4]), int(digits[4:6]), 1, 0
    else:
        year, month, day, clock = int(digits[:4]), int(digits[4:6]), int(digits[6:8]), int(digits[8:])
    if partition_file(int(digits)) != name:  # exactly the names partition_file gives
        return None
    hour, rest = divmod(clock, 10_000)
    try:
        moment = datetime(year, month, day, hour, *divmod(rest, 100), tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp())


def file_spans(names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``name -> [start, end)``: the instants each month file or part of a version may hold.

    A part holds the rows of its month from its start to the next part's start (or the
    month's end): every row of a version lies in the span of its file's name. Names that
    are no month file or part are left out.

    >>> spans = file_spans(["2024-03.parquet", "2024-03-16T000000.parquet", "2024-04.parquet", "untimed.parquet"])
    >>> spans["2024-03.parquet"], spans["2024-03-16T000000.parquet"], spans["2024-04.parquet"]
    ((1709251200, 1710547200), (1710547200, 1711929600), (1711929600, 1714521600))
    """
    starts = sorted((start, name) for name in names if (start := file_start(name)) is not None)
    spans: dict[str, tuple[int, int]] = {}
    for i, (start, name) in enumerate(starts):
        end = month_end(start)
        if i + 1 < len(starts):
            end = min(end, starts[i + 1][0])
        spans[name] = (start, end)
    return spans


#: Name of the month file holding rows whose timestamp is null.
UNTIMED = "untimed"


def flatten_partitions(root: str, data_dir: str, column: str) -> None:
    """Move hive-style output ``root/<column>=<value>/*.parquet`` to ``data_dir/<value>.parquet``.

    Each partition directory must hold exactly one file (writers are asked for that).
    """
    for entry in sorted(os.listdir(root)):
        if not entry.startswith(f"{column}="):
            continue
        value = unquote(entry.split("=", 1)[1])
        files = sorted(f for f in os.listdir(os.path.join(root, entry)) if f.endswith(".parquet"))
        if len(files) != 1:
            raise RuntimeError(f"expected one file in partition {entry}, found {files}")
        os.replace(os.path.join(root, entry, files[0]), os.path.join(data_dir, partition_file(None if value == "__HIVE_DEFAULT_PARTITION__" else value)))

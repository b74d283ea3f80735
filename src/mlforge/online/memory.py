"""``MemoryStore``: an in-process online store for tests, notebooks and single-process serving.

Rows are kept encoded (the shared codec of :mod:`mlforge.online.base`), so values come back
as fresh objects with the same types as from Redis or DynamoDB.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from mlforge.online.base import (
    UNREADABLE,
    OnlineCapabilities,
    decode_row,
    encode_row,
    key_text,
    keyed_rows,
    not_an_mlforge_row,
    ttl_seconds,
)


class MemoryStore:
    """An online store in a dict; nothing survives the process.

    >>> import pyarrow as pa
    >>> store = MemoryStore()
    >>> store.write("spend", ["user_id"], [pa.table({"user_id": [1], "total": [2.5]})])
    1
    >>> store.read("spend", [{"user_id": 1}, {"user_id": 2}])
    [{'user_id': 1, 'total': 2.5}, None]
    """

    capabilities: ClassVar[OnlineCapabilities] = OnlineCapabilities(in_process=True)

    kind = "memory"

    def __init__(self, ttl: float | None = None):
        self.ttl = ttl_seconds(ttl, "MemoryStore")
        self._rows: dict[str, dict[str, tuple[str, float | None]]] = {}
        self._lock = threading.Lock()
        self._clock = time.monotonic  # replaceable in tests

    def __repr__(self) -> str:
        return f"MemoryStore(ttl={self.ttl})"

    def write(self, feature: str, key_columns: list[str], batches: Iterable[Any]) -> int:
        expires = None if self.ttl is None else self._clock() + self.ttl
        written = 0
        encoded = [(key, encode_row(row)) for key, row in keyed_rows(key_columns, batches)]
        with self._lock:
            rows = self._rows.setdefault(feature, {})
            for key, text in encoded:
                rows[key] = (text, expires)
                written += 1
        return written

    def delete(self, feature: str, keys: list[dict[str, Any]]) -> int:
        texts = [key_text(k) for k in keys]
        with self._lock:
            rows = self._rows.get(feature, {})
            for text in texts:
                rows.pop(text, None)
        return len(texts)

    def read(self, feature: str, keys: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        now = self._clock()
        rows = self._rows.get(feature, {})
        out: list[dict[str, Any] | None] = []
        try:
            for key in keys:
                hit = rows.get(key_text(key))
                out.append(None if hit is None or (hit[1] is not None and hit[1] <= now) else decode_row(hit[0]))
        except UNREADABLE as exc:
            raise not_an_mlforge_row(
                f"a stored row of {feature!r}", exc, where="MemoryStore",
                fix="re-publish it with `mlforge build --online`; values written with store.write must be rows mlforge encodes",
            ) from None
        return out

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

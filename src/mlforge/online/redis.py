"""``RedisStore`` and ``ValkeyStore``: the online store on a Redis-protocol server.

Keys are ``{prefix}:{feature}:{key_text}`` and values the JSON rows of the shared codec
(:mod:`mlforge.online.base`). Writes go through non-transactional pipelines of
``SET key value [PX ttl]``, one round trip per batch; a read of one or several features
is one ``MGET`` of all their keys (a pipeline of them past ``READ_BATCH`` keys). The client
module (``redis`` or ``valkey``) is imported on first use. ``mlforge serve`` reads through
the client's asyncio flavour (``read_many_async``), one client per event loop, so a read
never waits for a thread.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from mlforge.errors import MlforgeError, OnlineStoreError, missing_extra
from mlforge.online.base import (
    UNREADABLE,
    OnlineCapabilities,
    chunked,
    decode_row,
    key_text,
    keyed_rows,
    not_an_mlforge_row,
    ttl_seconds,
)
from mlforge.online.base import encode_row as _encode_row

log = logging.getLogger(__name__)

WRITE_BATCH = 2_000
READ_BATCH = 1_000


class RedisStore:
    """Latest feature rows in Redis.

    Args:
        host, port, db, password: where the server is.
        ttl: seconds (or ``timedelta``) after which a written row expires; ``None`` keeps it.
        prefix: first part of every key, so several projects can share a database.
        socket_timeout: seconds to wait for the server before failing with ``OnlineStoreError``.

    Example:
        >>> store = RedisStore(host="localhost", port=6379, ttl=86_400)
        >>> store.key("user_spend", {"user_id": 42})
        b'mlforge:user_spend:42'
    """

    capabilities: ClassVar[OnlineCapabilities] = OnlineCapabilities(batched_reads=True, async_reads=True)

    kind = "redis"
    _module: ClassVar[str] = "redis"
    _client_class: ClassVar[str] = "Redis"
    _product: ClassVar[str] = "Redis"
    _base_error: ClassVar[str] = "RedisError"

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        password: str | None = None,
        ttl: float | None = None,
        prefix: str = "mlforge",
        socket_timeout: float = 5.0,
    ):
        self.host, self.port, self.db, self.password = host, int(port), int(db), password
        self.ttl = ttl_seconds(ttl, type(self).__name__)
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self._client: Any = None
        self._async: tuple[asyncio.AbstractEventLoop, Any] | None = None  # (loop, client)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self.host!r}, port={self.port}, db={self.db}, prefix={self.prefix!r}, ttl={self.ttl})"

    @property
    def where(self) -> str:
        return f"{self._product} at {self.host}:{self.port}/{self.db}"

    # -- client -----------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self, flavour: str = "") -> Any:
        """A client of the module, or of its ``.asyncio`` flavour."""
        try:
            module = importlib.import_module(f"{self._module}{flavour}")
        except ImportError:
            raise missing_extra(self._module, self._module) from None
        retry = importlib.import_module(f"{self._module}{flavour}.retry")
        backoff = importlib.import_module(f"{self._module}.backoff")
        return getattr(module, self._client_class)(
            host=self.host,
            port=self.port,
            db=self.db,
            password=self.password,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
            # one quick retry: a down server must fail fast (serve answers 503), not hang
            retry=retry.Retry(backoff.NoBackoff(), 1),
        )

    def _call(self, action: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; any client failure, including the client's own bugs (an
        ``AttributeError`` in a connection handshake under load), is an OnlineStoreError,
        which the server answers with 503 (O3)."""
        try:
            return fn(*args)
        except MlforgeError:
            raise
        except Exception as exc:
            raise self._failure(action, exc) from None

    def _failure(self, action: str, exc: Exception) -> OnlineStoreError:
        base_error = getattr(importlib.import_module(f"{self._module}.exceptions"), self._base_error)
        answered = "answered" if isinstance(exc, base_error) else "client failed with"
        return OnlineStoreError(
            f"cannot {action}: {self.where} {answered} {type(exc).__name__}: {exc}",
            where=repr(self),
            fix=f"check that {self._product} is running and that host, port, db and password in the online_store settings are right",
        )

    def key(self, feature: str, key: dict[str, Any]) -> bytes:
        return f"{self.prefix}:{feature}:{key_text(key)}".encode()

    # -- protocol ---------------------------------------------------------------------
    def write(self, feature: str, key_columns: list[str], batches: Iterable[Any]) -> int:
        px = None if self.ttl is None else max(1, int(self.ttl * 1000))
        head = f"{self.prefix}:{feature}:"
        written = 0
        for chunk in chunked(keyed_rows(key_columns, batches), WRITE_BATCH):
            values = [((head + text).encode(), _encode_row(row)) for text, row in chunk]
            self._call(f"write {len(chunk)} rows of {feature!r}", self._set_all, values, px)
            written += len(chunk)
        return written

    def delete(self, feature: str, keys: list[dict[str, Any]]) -> int:
        for chunk in chunked(keys, WRITE_BATCH):
            self._call(f"delete {len(chunk)} entities of {feature!r}", self.client.delete, *[self.key(feature, k) for k in chunk])
        return len(keys)

    def _set_all(self, values: list[tuple[bytes, str]], px: int | None) -> Any:
        pipe = self.client.pipeline(transaction=False)
        for key, value in values:
            pipe.set(key, value, px=px)
        return pipe.execute()

    def read(self, feature: str, keys: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        return self.read_many({feature: keys})[feature]

    def _decode(self, feature: str, raw: list[Any]) -> list[dict[str, Any] | None]:
        try:
            return [None if value is None else decode_row(value) for value in raw]
        except UNREADABLE as exc:
            raise not_an_mlforge_row(
                f"a stored row of {feature!r}", exc, where=f"{self.where}, prefix {self.prefix!r}",
                fix="another program writes under this prefix: give mlforge its own prefix or db, and re-publish with `mlforge build --online`",
            ) from None

    def read_many(self, requests: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any] | None]]:
        """Several features in one round trip: one ``MGET`` of every key (a pipeline of
        ``MGET`` of ``READ_BATCH`` keys each past that)."""
        keys = self._keys(requests)
        raw = self._call(f"read {', '.join(requests)}", self._mget_chunks, keys) if keys else []
        return self._split(requests, raw)

    async def read_many_async(self, requests: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any] | None]]:
        """:meth:`read_many` on the running event loop, through the asyncio client of this
        loop."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            self._async = (loop, self._connect(".asyncio"))
        client = self._async[1]
        keys = self._keys(requests)
        try:
            if len(keys) <= READ_BATCH:
                raw = await client.mget(keys) if keys else []
            else:
                pipe = client.pipeline(transaction=False)
                for chunk in chunked(keys, READ_BATCH):
                    pipe.mget(chunk)
                raw = [value for answer in await pipe.execute() for value in answer]
        except MlforgeError:
            raise
        except Exception as exc:
            raise self._failure(f"read {', '.join(requests)}", exc) from None
        return self._split(requests, raw)

    def _keys(self, requests: Mapping[str, list[dict[str, Any]]]) -> list[bytes]:
        return [self.key(feature, k) for feature, keys in requests.items() for k in keys]

    def _split(self, requests: Mapping[str, list[dict[str, Any]]], raw: list[Any]) -> dict[str, list[dict[str, Any] | None]]:
        """The answer to :meth:`_keys`, decoded and split back by feature."""
        out: dict[str, list[dict[str, Any] | None]] = {}
        at = 0
        for feature, keys in requests.items():
            out[feature] = self._decode(feature, raw[at : at + len(keys)])
            at += len(keys)
        return out

    def _mget_chunks(self, keys: list[bytes]) -> list[Any]:
        if len(keys) <= READ_BATCH:
            return self.client.mget(keys)
        pipe = self.client.pipeline(transaction=False)
        for chunk in chunked(keys, READ_BATCH):
            pipe.mget(chunk)
        return [value for answer in pipe.execute() for value in answer]

    def ping(self) -> None:
        self._call("ping", lambda: self.client.ping())

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._call("close the connection", client.close)


class ValkeyStore(RedisStore):
    """Latest feature rows in Valkey, through the ``valkey`` client (same wire protocol,
    same key layout and options as :class:`RedisStore`)."""

    kind = "valkey"
    _module = "valkey"
    _client_class = "Valkey"
    _product = "Valkey"
    _base_error = "ValkeyError"

"""``LakebaseReader``: batched point lookups on the PostgreSQL of a Lakebase database instance.

The read side of :class:`~mlforge.online.databricks.DatabricksOnlineStore`. An online table
``{catalog}.{schema}.{feature}`` is served as table ``"{schema}"."{feature}"`` in database
``database`` of the instance's ``read_write_dns``. The reader connects as the workspace user
with a short-lived token from ``database.generate_database_credential``, refreshes an expired
token once, transparently, and keeps a small pool of sessions for reads from many threads.
Each lookup is one ``SELECT`` for all keys. ``psycopg`` (and the SDK's error classes) are
imported on first use.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, LiteralString, cast

from mlforge.errors import MlforgeError, OnlineStoreError, missing_extra

log = logging.getLogger(__name__)

POOL_SIZE = 8
_INTERNAL_PREFIX = "__mlforge"
_INTEGER = {"smallint", "integer", "bigint"}

# ``api(action, call)`` runs ``call(workspace_client)``; an SDK error becomes an OnlineStoreError
# whose ``__cause__`` is the SDK error.
Api = Callable[[str, Callable[[Any], Any]], Any]


class NoOnlineStore(OnlineStoreError):
    """The online store (database instance) does not exist: nothing was published yet."""


class LakebaseReader:
    """Reads online tables from the PostgreSQL of one Lakebase database instance.

    Args:
        instance: name of the database instance (= the online store).
        schema: PostgreSQL schema of the online tables.
        api: runs one workspace call (see ``Api``); asked for the instance, the user and tokens.
        where: names the workspace in error messages; asked when an error is raised, because
            the workspace client is created lazily.
        port, database, sslmode, connect_timeout: how to reach PostgreSQL on the instance.
    """

    def __init__(
        self,
        instance: str,
        schema: str,
        *,
        api: Api,
        where: Callable[[], str],
        port: int = 5432,
        database: str = "databricks_postgres",
        sslmode: str = "prefer",
        connect_timeout: float = 10.0,
    ):
        self.instance, self.schema = instance, schema
        self.port, self.database, self.sslmode, self.connect_timeout = int(port), database, sslmode, connect_timeout
        self._api, self._where = api, where
        self.idle: list[Any] = []  # a small pool: serve reads from many threads
        self._params: dict[str, Any] | None = None
        self._password: str | None = None
        self._columns: dict[str, dict[str, str]] = {}
        self._lock = threading.RLock()

    # -- connections --------------------------------------------------------------------
    def _fresh_password(self) -> str:
        credential = self._api(
            f"get a database credential for {self.instance!r}",
            lambda client: client.database.generate_database_credential(instance_names=[self.instance], request_id=str(uuid.uuid4())),
        )
        self._password = credential.token
        return credential.token

    def _connection_params(self) -> dict[str, Any]:
        """Where and as whom to connect; asked of the workspace once (reconnects need no API call)."""
        from databricks.sdk.errors import NotFound

        if self._params is None:
            try:
                instance = self._api(f"get database instance {self.instance!r}", lambda client: client.database.get_database_instance(self.instance))
            except OnlineStoreError as exc:
                if isinstance(exc.__cause__, NotFound):
                    raise NoOnlineStore(exc.what, where=exc.where, fix="publish a feature first (`mlforge build --online`), or check online_store=") from exc.__cause__
                raise
            user = self._api("get the current user", lambda client: client.current_user.me()).user_name
            self._params = {
                "host": instance.read_write_dns, "port": self.port, "dbname": self.database, "user": user, "sslmode": self.sslmode,
                "connect_timeout": max(1, int(self.connect_timeout)), "autocommit": True, "options": "-c timezone=UTC",
            }
        return self._params

    def _connect(self) -> Any:
        psycopg = _psycopg()
        params = self._connection_params()
        with self._lock:  # the first connections of many threads share one credential
            refreshed = self._password is None
            password = self._password or self._fresh_password()
        while True:
            try:
                return psycopg.connect(password=password, **params)
            except psycopg.OperationalError as exc:
                if refreshed:  # a fresh token failed too: not an expiry
                    raise OnlineStoreError(
                        f"cannot connect to PostgreSQL of {self.instance!r} at {params['host']}:{self.port}/{self.database} as {params['user']}: {exc}".strip(),
                        where=self._where(),
                        fix="check that the online store is AVAILABLE, that pg_port/pg_database are right, and that the user may use the instance (databricks_superuser or a granted role)",
                    ) from None
                log.info("database credential for %s rejected (expired?); refreshing it once", self.instance)
                with self._lock:  # threads that hit the same expiry share one refresh
                    stale, password = password, self._password
                    if password is None or password == stale:
                        password = self._fresh_password()
                refreshed = True

    def _acquire(self) -> Any:
        with self._lock:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
        return self._connect()

    def _release(self, conn: Any) -> None:
        with self._lock:
            if not conn.closed and len(self.idle) < POOL_SIZE:
                self.idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    # -- statements ---------------------------------------------------------------------
    def query(self, action: str, sql: Any, params: Any = None) -> list[tuple]:
        """Run one statement on a pooled connection; a dropped session (an expired token ends
        them) empties the pool and is retried once on a fresh connection."""
        psycopg = _psycopg()
        for attempt in (1, 2):
            try:
                conn = self._acquire()
            except MlforgeError:
                raise
            except Exception as exc:  # any client failure is the store's, never a 500 (O3)
                raise self._client_failed(action, exc) from None
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, params)
                    rows = cur.fetchall()
            except psycopg.OperationalError as exc:
                conn.close()
                self.close()  # the other idle sessions are most likely gone too
                if attempt == 2:
                    raise OnlineStoreError(f"cannot {action}: PostgreSQL of {self.instance!r} answered {exc}", where=self._where(), fix="check that the online store is AVAILABLE in the workspace") from None
                continue
            except psycopg.Error as exc:
                self._release(conn)  # autocommit: the session is still usable
                raise OnlineStoreError(f"cannot {action}: PostgreSQL of {self.instance!r} answered {type(exc).__name__}: {exc}", where=self._where(), fix="re-publish the feature with `mlforge build --online`") from None
            except Exception as exc:
                conn.close()  # a session the client broke is not reused
                raise self._client_failed(action, exc) from None
            self._release(conn)
            return rows
        raise AssertionError("unreachable")

    def _client_failed(self, action: str, exc: Exception) -> OnlineStoreError:
        return OnlineStoreError(
            f"cannot {action}: the PostgreSQL client failed with {type(exc).__name__}: {exc}",
            where=self._where(),
            fix="retry; if it persists, check the online store's state in the workspace and the psycopg version",
        )

    def table_columns(self, feature: str) -> dict[str, str]:
        """``{column: postgres type}`` of an online table; empty when it does not exist (yet)."""
        if feature not in self._columns:
            regclass = f'"{self.schema}"."{feature.replace(chr(34), chr(34) * 2)}"'
            rows = self.query(
                f"describe online table {feature!r}",
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                [regclass],
            )
            if not rows:
                return {}
            self._columns[feature] = dict(rows)
        return self._columns[feature]

    def forget(self, feature: str) -> None:
        """Drop the cached columns of ``feature``: its table was (re-)published."""
        self._columns.pop(feature, None)

    def count(self, feature: str) -> int:
        from psycopg import sql

        if not self.table_columns(feature):
            return 0
        return int(self.query(f"count {feature!r}", sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.schema, feature)))[0][0])

    def lookup(self, feature: str, names: list[str], wanted: list[tuple], columns: dict[str, str]) -> dict[tuple, dict[str, Any]]:
        """The rows of ``feature`` whose key columns ``names`` equal one of ``wanted``, by key."""
        from psycopg import sql

        if not wanted:
            return {}
        visible = [c for c in columns if not c.startswith(_INTERNAL_PREFIX)]
        arrays = [sorted({w[i] for w in wanted}, key=repr) if len(names) == 1 else [w[i] for w in wanted] for i in range(len(names))]
        casts = [sql.SQL("%s::{}[]").format(sql.SQL(cast(LiteralString, columns[n]))) for n in names]  # type names read from the catalog
        if len(names) == 1:
            where = sql.SQL("{} = ANY({})").format(sql.Identifier(names[0]), casts[0])
        else:
            where = sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(casts))
        query = sql.SQL("SELECT {} FROM {} WHERE {}").format(sql.SQL(", ").join(map(sql.Identifier, visible)), sql.Identifier(self.schema, feature), where)
        try:
            rows = self.query(f"read {feature!r}", query, arrays)
        except OnlineStoreError:
            self.forget(feature)  # the table may have been re-created with other columns
            raise
        out = {}
        for row in rows:
            record = {c: utc(v) for c, v in zip(visible, row, strict=True)}
            out[tuple(record[n] for n in names)] = record
        return out


    def lookup_texts(self, requests: dict[str, tuple[str, str, list[str]]]) -> dict[str, dict[str, str]]:
        """One ``SELECT ... UNION ALL ...`` over several tables keyed by one text column:
        ``{table: (key column, value column, keys)}`` -> ``{table: {key: value}}``."""
        from psycopg import sql

        asked = {table: spec for table, spec in requests.items() if spec[2]}
        if not asked:
            return {table: {} for table in requests}
        parts, params = [], []
        for table, (key_column, value_column, keys) in asked.items():
            parts.append(sql.SQL("SELECT {}, {}, {} FROM {} WHERE {} = ANY(%s)").format(
                sql.Literal(table), sql.Identifier(key_column), sql.Identifier(value_column),
                sql.Identifier(self.schema, table), sql.Identifier(key_column),
            ))
            params.append(sorted(set(keys)))
        try:
            rows = self.query(f"read {', '.join(asked)}", sql.SQL(" UNION ALL ").join(parts), params)
        except OnlineStoreError:
            for table in asked:
                self.forget(table)  # a table may have been re-created with other columns
            raise
        out: dict[str, dict[str, str]] = {table: {} for table in requests}
        for table, key, value in rows:
            out[table][key] = value
        return out


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise missing_extra("psycopg", "databricks") from None
    return psycopg


# -- key values ---------------------------------------------------------------------------
def coerce_key(key: dict[str, Any], names: list[str], columns: dict[str, str]) -> tuple | None:
    """Key values in their column's type (JSON often carries ids as strings); None: cannot match.

    >>> coerce_key({"user_id": "42"}, ["user_id"], {"user_id": "bigint"})
    (42,)
    >>> coerce_key({"user_id": 4.5}, ["user_id"], {"user_id": "bigint"}) is None
    True
    """
    values = []
    for name in names:
        try:
            value = _coerce(key[name], columns[name])
        except (TypeError, ValueError, ArithmeticError):
            return None
        if value is None:
            return None
        values.append(value)
    return tuple(values)


def _coerce(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind in _INTEGER:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            return None
        return value if isinstance(value, int) else int(value if isinstance(value, float) else str(value))
    if kind == "text":
        return value if isinstance(value, str) else (str(value).lower() if isinstance(value, bool) else _key_text(value))
    if kind in ("double precision", "real"):
        return None if isinstance(value, bool) else float(value)
    if kind.startswith("numeric"):
        from decimal import Decimal

        return None if isinstance(value, bool) else Decimal(str(value))
    if kind == "date" and isinstance(value, str):
        from datetime import date

        return date.fromisoformat(value)
    if kind.startswith("timestamp"):
        value = datetime.fromisoformat(value) if isinstance(value, str) else value
        return utc(value) if kind.startswith("timestamp with") else value
    return value


def _key_text(value: Any) -> str:
    from mlforge.online.base import key_text

    return key_text({"k": value})


def utc(value: Any) -> Any:
    """Timestamps come back as UTC instants (T1), whatever the session's zone."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value

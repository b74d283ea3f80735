"""A loopback Databricks workspace for tests, spoken to by the real ``databricks-sdk``.

``FakeWorkspace`` is a threaded stdlib HTTP server that answers the documented REST paths
the SDK calls (JSON in, JSON out, bearer token checked, Databricks-style error bodies), backed
by real Delta tables (``deltalake``) and a real PostgreSQL (the ``postgres`` fixture, started
with ``initdb`` + ``pg_ctl``). Nothing is mocked inside the SDK: tests build an ordinary
``WorkspaceClient(host=ws.host, token=ws.token)``.

Endpoints (method + path, as in ``databricks/sdk/service/*.py``)::

    GET    /.well-known/databricks-config                    (no auth, host metadata)
    GET    /api/2.0/preview/scim/v2/Me                        current_user.me
    GET    /api/2.1/unity-catalog/catalogs/{name}             catalogs.get (every catalog exists)
    POST   /api/2.1/unity-catalog/schemas                     schemas.create
    GET    /api/2.1/unity-catalog/schemas[/{full_name}]       schemas.list / get
    POST   /api/2.1/unity-catalog/tables                      tables.create
    GET    /api/2.1/unity-catalog/tables                      tables.list (catalog_name, schema_name)
    GET    /api/2.1/unity-catalog/tables/{full_name}          tables.get
    GET    /api/2.1/unity-catalog/tables/{full_name}/exists   tables.exists
    DELETE /api/2.1/unity-catalog/tables/{full_name}          tables.delete
    POST   /api/2.1/unity-catalog/constraints                 table_constraints.create (PRIMARY KEY)
    POST   /api/2.0/unity-catalog/temporary-table-credentials temporary_table_credentials
    POST   /api/2.0/unity-catalog/temporary-path-credentials  temporary_path_credentials
    POST   /api/2.0/feature-store/online-stores               feature_store.create_online_store
    GET    /api/2.0/feature-store/online-stores[/{name}]      list_online_stores / get_online_store
    DELETE /api/2.0/feature-store/online-stores/{name}        delete_online_store
    POST   /api/2.0/feature-store/tables/{source}/publish     feature_store.publish_table
    DELETE /api/2.0/feature-store/online-tables/{name}        feature_store.delete_online_table
    GET    /api/2.0/database/instances/{name}                 database.get_database_instance
    POST   /api/2.0/database/credentials                      database.generate_database_credential
    GET    /api/2.0/database/synced_tables/{name}             database.get_synced_database_table
    GET    /api/2.0/pipelines/{id}                            pipelines.get
    POST   /api/2.0/pipelines/{id}/updates                    pipelines.start_update
    GET    /api/2.0/pipelines/{id}/updates/{update_id}        pipelines.get_update
    POST   /api/2.0/online-tables, GET|DELETE .../{name}      legacy online_tables (retired 2026-01-15)

**Publishing is real.** An online store is a database instance at ``127.0.0.1`` (the
``postgres`` fixture's port). An online table ``catalog.schema.table`` is the PostgreSQL
table ``"schema"."table"`` in database ``databricks_postgres``. A sync (publish, pipeline
update, continuous poll) reads the source Delta table at its ``storage_location``, keeps the
newest row per key (keys and time-series column from the table's PRIMARY KEY constraint,
as Databricks does; else from the Delta configuration ``mlforge.keys`` / ``mlforge.timestamp``
or the UC table ``properties``), and replaces the
PostgreSQL table in one transaction, so a failed sync leaves the previous rows readable.
SNAPSHOT and TRIGGERED sync at publish and on each ``start_update``; CONTINUOUS syncs at
publish and then follows new Delta versions (a background poll every ``poll_seconds``).

Types: Delta/Arrow ints, floats, bools, strings, dates, decimals and binary map to the
matching PostgreSQL types; zoned timestamps to ``timestamptz``, ``timestamp_ntz`` to
``timestamp``; lists, structs and maps to ``jsonb`` (as Databricks synced tables do).

**Faults.** ``ws.fail(path, status, times)`` makes the next ``times`` calls whose path starts
with ``path`` answer ``status`` with ``{"error_code", "message"}`` (429/503 carry
``Retry-After: 0``; the SDK retries those by itself until ``retry_timeout_seconds``, which
``ws.client()`` sets to a few seconds). ``ws.fail_sync()`` makes the next pipeline update
FAIL, ``ws.expire_database_credentials()`` expires the PostgreSQL password handed out by
``generate_database_credential`` (and drops open sessions), ``ws.expire_storage_credentials``
makes the next vended storage credentials come back already expired.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

PG_DATABASE = "databricks_postgres"
USER_NAME = "mlforge-test@example.com"
STATUS_CODES = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "RESOURCE_ALREADY_EXISTS", 429: "REQUEST_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def now_ms() -> int:
    return int(time.time() * 1000)


# -- PostgreSQL ---------------------------------------------------------------------------
def postgres_bin_dir() -> Path | None:
    """Where ``initdb``/``pg_ctl`` live: ``MLFORGE_PG_BIN``, Debian's versioned dir, or PATH."""
    if os.environ.get("MLFORGE_PG_BIN"):
        return Path(os.environ["MLFORGE_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(re.findall(r"/(\d+)/bin", p)[0]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster on ``127.0.0.1:port``; ``admin`` is its superuser."""

    bin_dir: Path
    base_dir: Path
    port: int
    admin: str = "postgres"
    admin_password: str = field(default_factory=lambda: secrets.token_hex(12))
    host: str = "127.0.0.1"
    run_as: str | None = None  # the unprivileged OS user the server runs as when we are root

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", self.run_as, "--", *command] if shutil.which("runuser") else ["su", self.run_as, "-s", "/bin/sh", "-c", " ".join(map(_shell_quote, command))]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> None:
        pwfile = self.base_dir / "pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.admin_password + "\n")
        if self.run_as:
            shutil.chown(self.base_dir, self.run_as)
            shutil.chown(pwfile, self.run_as)
        init = self._run("initdb", "-D", str(self.data_dir), "-U", self.admin, f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C")
        pwfile.unlink()
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stderr or init.stdout}")
        options = f"-p {self.port} -k {self.base_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        started = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.base_dir / "server.log"), "-o", options, "-w", "-t", "60", "start")
        if started.returncode:
            log = (self.base_dir / "server.log").read_text() if (self.base_dir / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr or started.stdout}\n{log}")
        with self.connect("postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def connect(self, dbname: str = PG_DATABASE, *, autocommit: bool = False) -> Any:
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.admin, password=self.admin_password, dbname=dbname, autocommit=autocommit, connect_timeout=10)


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def start_postgres() -> PostgresServer:
    """Start a cluster, or ``pytest.skip`` with the reason when this machine cannot."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql, or set MLFORGE_PG_BIN")
    pytest.importorskip("psycopg", reason="psycopg is not installed (the databricks extra)")
    run_as = None
    if os.geteuid() == 0:
        import pwd

        run_as = os.environ.get("MLFORGE_PG_USER", "postgres")
        try:
            pwd.getpwnam(run_as)
        except KeyError:
            pytest.skip(f"running as root and there is no unprivileged OS user {run_as!r} to run PostgreSQL as (the postgresql package creates 'postgres'; or set MLFORGE_PG_USER)")
    base_dir = Path(tempfile.mkdtemp(prefix="mlforge-pg-"))
    base_dir.chmod(0o755)
    server = PostgresServer(bin_dir=bin_dir, base_dir=base_dir, port=free_port(), run_as=run_as)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    return server


_shared: dict[str, Any] = {"server": None, "users": 0}


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on a free loopback port for the whole session (see ``start_postgres``).

    Each test module that imports the fixture gets its own session-scoped instance from
    pytest; they share one cluster, stopped when the last of them is torn down.
    """
    if _shared["server"] is None:
        _shared["server"] = start_postgres()
    _shared["users"] += 1
    yield _shared["server"]
    _shared["users"] -= 1
    if _shared["users"] == 0:
        _shared["server"].stop()
        _shared["server"] = None


# -- errors and state ---------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.error_code = error_code or STATUS_CODES.get(status, "UNKNOWN")


@dataclass
class Fault:
    path: str
    status: int
    remaining: int
    method: str | None
    error_code: str | None
    message: str | None


class SyncFailed(Exception):
    pass


@dataclass
class SyncedTable:
    name: str
    source: str
    online_store: str
    mode: str
    pipeline_id: str
    state: str = "SYNCED_TABLE_PROVISIONING_INITIAL_SNAPSHOT"
    message: str = ""
    last_version: int | None = None
    rows: int = 0
    legacy: bool = False


@dataclass
class Pipeline:
    pipeline_id: str
    synced: SyncedTable
    updates: list[dict[str, Any]] = field(default_factory=list)  # newest first


Route = tuple[str, re.Pattern, str]
_ROUTES: list[Route] = []


def route(method: str, pattern: str):
    def register(fn):
        _ROUTES.append((method, re.compile(f"^{pattern}$"), fn.__name__))
        return fn

    return register


# -- the workspace ------------------------------------------------------------------------
class FakeWorkspace:
    """The server and its state. ``start()`` binds a free loopback port; ``stop()`` ends it.

    Attributes:
        host: ``http://127.0.0.1:PORT``. token: the only accepted bearer token.
        storage_root: a ``file://`` URI of a temp dir for external tables.
        postgres: the :class:`PostgresServer` online stores live on.
        calls: ``(method, path)`` of every authenticated request, for assertions.
    """

    def __init__(self, postgres: PostgresServer, storage_dir: Path, *, token: str | None = None, user_name: str = USER_NAME, poll_seconds: float = 0.1):
        self.postgres = postgres
        self.token = token or f"dapi{secrets.token_hex(16)}"
        self.user_name = user_name
        self.storage_dir = Path(storage_dir)
        self.storage_root = self.storage_dir.resolve().as_uri()
        self.poll_seconds = poll_seconds
        self.tables: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        self.online_stores: dict[str, dict[str, Any]] = {}
        self.synced: dict[str, SyncedTable] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.calls: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.sync_faults: list[str] = []
        self.storage_credentials_expired = 0  # how many vended credentials come back expired (-1: all)
        self._pg_token: str | None = None  # the password every current database credential carries
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # lifecycle
    def start(self) -> FakeWorkspace:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **config: Any) -> Any:
        """A real ``WorkspaceClient`` for this workspace (SDK retries bounded to a few seconds)."""
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        config.setdefault("retry_timeout_seconds", 5)
        return WorkspaceClient(config=Config(host=self.host, token=self.token, **config))

    # faults
    def fail(self, path: str, status: int, times: int = 1, *, method: str | None = None, error_code: str | None = None, message: str | None = None) -> None:
        """Answer the next ``times`` requests whose path starts with ``path`` with ``status``."""
        with self._lock:
            self.faults.append(Fault(path, status, times, method, error_code, message))

    def fail_sync(self, times: int = 1, message: str = "sync pipeline failed: executor lost (injected)") -> None:
        """The next ``times`` syncs fail after loading, before commit (previous rows stay)."""
        with self._lock:
            self.sync_faults.extend([message] * times)

    def expire_database_credentials(self) -> None:
        """Expire the PostgreSQL password of the workspace user and end its open sessions."""
        from psycopg import sql

        with self._lock, self.postgres.connect(autocommit=True) as conn:
            self._pg_token = None
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [self.user_name]).fetchone():
                conn.execute(sql.SQL("ALTER ROLE {} VALID UNTIL '2000-01-01'").format(sql.Identifier(self.user_name)))
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [self.user_name])

    def expire_storage_credentials(self, times: int | None = 1) -> None:
        """The next ``times`` vended storage credentials (``None``: all) come back already expired."""
        self.storage_credentials_expired = -1 if times is None else times

    def online_rows(self, online_table_name: str) -> list[dict[str, Any]]:
        """The rows PostgreSQL holds for an online table, ordered by its first column."""
        from psycopg.rows import dict_row

        _, schema, table = online_table_name.split(".")
        with self.postgres.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY 1')
            return cur.fetchall()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.remaining > 0 and path.startswith(fault.path) and (fault.method in (None, method)):
                    fault.remaining -= 1
                    return fault
        return None

    # dispatch
    def handle(self, method: str, path: str, query: dict[str, str], body: dict[str, Any], auth: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path == "/.well-known/databricks-config":
            return 200, {"oidc_endpoint": f"{self.host}/oidc", "workspace_id": "1234567890123456", "cloud": "aws"}, {}
        if auth != f"Bearer {self.token}":
            return 401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}, {}
        self.calls.append((method, path))
        fault = self._take_fault(method, path)
        if fault is not None:
            headers = {"Retry-After": "0"} if fault.status in (429, 503) else {}
            code = fault.error_code or STATUS_CODES.get(fault.status, "UNKNOWN")
            return fault.status, {"error_code": code, "message": fault.message or f"injected {fault.status} for {path}"}, headers
        for route_method, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                try:
                    return 200, getattr(self, name)(*map(unquote, match.groups()), query=query, body=body) or {}, {}
                except ApiError as exc:
                    return exc.status, {"error_code": exc.error_code, "message": exc.message}, {}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{method} {path}'"}, {}

    # identity
    @route("GET", r"/api/2\.0/preview/scim/v2/Me")
    def me(self, *, query, body):
        return {"id": "1001", "userName": self.user_name, "active": True, "displayName": "mlforge test"}

    # Unity Catalog
    @route("GET", r"/api/2\.1/unity-catalog/catalogs/([^/]+)")
    def get_catalog(self, name, *, query, body):
        return {"name": name, "owner": self.user_name, "catalog_type": "MANAGED_CATALOG"}

    @route("POST", r"/api/2\.1/unity-catalog/schemas")
    def create_schema(self, *, query, body):
        full_name = f"{body['catalog_name']}.{body['name']}"
        with self._lock:
            if full_name in self.schemas:
                raise ApiError(409, f"Schema '{full_name}' already exists", "SCHEMA_ALREADY_EXISTS")
            self.schemas[full_name] = {**body, "full_name": full_name, "owner": self.user_name, "created_at": now_ms()}
            return self.schemas[full_name]

    @route("GET", r"/api/2\.1/unity-catalog/schemas")
    def list_schemas(self, *, query, body):
        return {"schemas": [s for s in self.schemas.values() if s["catalog_name"] == query.get("catalog_name")]}

    @route("GET", r"/api/2\.1/unity-catalog/schemas/([^/]+)")
    def get_schema(self, full_name, *, query, body):
        catalog, _, name = full_name.partition(".")
        return self.schemas.get(full_name) or {"catalog_name": catalog, "name": name, "full_name": full_name, "owner": self.user_name}

    @route("POST", r"/api/2\.1/unity-catalog/tables")
    def create_table(self, *, query, body):
        full_name = f"{body['catalog_name']}.{body['schema_name']}.{body['name']}"
        with self._lock:
            if full_name in self.tables:
                raise ApiError(409, f"Table '{full_name}' already exists", "TABLE_ALREADY_EXISTS")
            if body.get("table_type") == "EXTERNAL" and not body.get("storage_location"):
                raise ApiError(400, "an EXTERNAL table needs a storage_location")
            info = {**body, "full_name": full_name, "table_id": str(uuid.uuid4()), "owner": self.user_name, "created_at": now_ms(), "updated_at": now_ms()}
            self.tables[full_name] = info
            return info

    @route("GET", r"/api/2\.1/unity-catalog/tables")
    def list_tables(self, *, query, body):
        return {"tables": [t for t in self.tables.values() if t["catalog_name"] == query.get("catalog_name") and t["schema_name"] == query.get("schema_name")]}

    @route("GET", r"/api/2\.1/unity-catalog/tables/([^/]+)/exists")
    def table_exists(self, full_name, *, query, body):
        return {"table_exists": full_name in self.tables}

    @route("GET", r"/api/2\.1/unity-catalog/tables/([^/]+)")
    def get_table(self, full_name, *, query, body):
        return self._table(full_name)

    @route("DELETE", r"/api/2\.1/unity-catalog/tables/([^/]+)")
    def delete_table(self, full_name, *, query, body):
        with self._lock:
            self._table(full_name)
            del self.tables[full_name]

    def _table(self, full_name: str) -> dict[str, Any]:
        try:
            return self.tables[full_name]
        except KeyError:
            raise ApiError(404, f"Table '{full_name}' does not exist.", "TABLE_DOES_NOT_EXIST") from None

    def _aws_credentials(self, url: str) -> dict[str, Any]:
        with self._lock:
            expired = self.storage_credentials_expired != 0
            if self.storage_credentials_expired > 0:
                self.storage_credentials_expired -= 1
        expires = datetime.now(UTC) + (timedelta(minutes=-5) if expired else timedelta(hours=1))
        return {
            "aws_temp_credentials": {"access_key_id": "ASIAFAKE" + secrets.token_hex(6).upper(), "secret_access_key": secrets.token_hex(20), "session_token": secrets.token_hex(32)},
            "expiration_time": int(expires.timestamp() * 1000),
            "url": url,
        }

    @route("POST", r"/api/2\.1/unity-catalog/constraints")
    def create_constraint(self, *, query, body):
        table = self._table(body.get("full_name_arg", ""))
        constraint = body.get("constraint") or {}
        with self._lock:
            held = table.setdefault("table_constraints", [])
            if "primary_key_constraint" in constraint and any("primary_key_constraint" in c for c in held):
                raise ApiError(409, f"Table '{table['full_name']}' already has a primary key.", "RESOURCE_ALREADY_EXISTS")
            held.append(constraint)
        return constraint

    @route("POST", r"/api/2\.0/unity-catalog/temporary-table-credentials")
    def temporary_table_credentials(self, *, query, body):
        table = next((t for t in self.tables.values() if t["table_id"] == body.get("table_id")), None)
        if table is None:
            raise ApiError(404, f"Table with id '{body.get('table_id')}' does not exist.", "TABLE_DOES_NOT_EXIST")
        return self._aws_credentials(table.get("storage_location", ""))

    @route("POST", r"/api/2\.0/unity-catalog/temporary-path-credentials")
    def temporary_path_credentials(self, *, query, body):
        if not body.get("url"):
            raise ApiError(400, "url is required")
        return self._aws_credentials(body["url"])

    # online feature store
    @route("POST", r"/api/2\.0/feature-store/online-stores")
    def create_online_store(self, *, query, body):
        name = body.get("name") or ""
        with self._lock:
            if name in self.online_stores:
                raise ApiError(409, f"Online store '{name}' already exists.")
            self.online_stores[name] = {"name": name, "capacity": body.get("capacity", "CU_1"), "state": "AVAILABLE", "creator": self.user_name, "creation_time": datetime.now(UTC).isoformat(), "read_replica_count": body.get("read_replica_count", 0)}
            return self.online_stores[name]

    @route("GET", r"/api/2\.0/feature-store/online-stores")
    def list_online_stores(self, *, query, body):
        return {"online_stores": list(self.online_stores.values())}

    @route("GET", r"/api/2\.0/feature-store/online-stores/([^/]+)")
    def get_online_store(self, name, *, query, body):
        return self._online_store(name)

    @route("DELETE", r"/api/2\.0/feature-store/online-stores/([^/]+)")
    def delete_online_store(self, name, *, query, body):
        with self._lock:
            self._online_store(name)
            del self.online_stores[name]

    def _online_store(self, name: str) -> dict[str, Any]:
        try:
            return self.online_stores[name]
        except KeyError:
            raise ApiError(404, f"Online store '{name}' does not exist.", "RESOURCE_DOES_NOT_EXIST") from None

    @route("POST", r"/api/2\.0/feature-store/tables/([^/]+)/publish")
    def publish_table(self, source, *, query, body):
        spec = body.get("publish_spec") or {}
        online_table = spec.get("online_table_name", "")
        self._table(source)
        self._online_store(spec.get("online_store", ""))
        if online_table.count(".") != 2:
            raise ApiError(400, f"online_table_name must be a three-part name catalog.schema.table, got '{online_table}'")
        self._source_layout(source)  # fails early (400) when the source has no primary key
        synced, created = self._synced_for(online_table, source, spec.get("online_store", ""), spec.get("publish_mode", "TRIGGERED"))
        if created:
            self._start_update(self.pipelines[synced.pipeline_id], cause="API_CALL")
        return {"online_table_name": online_table, "pipeline_id": synced.pipeline_id}

    def _synced_for(self, name: str, source: str, store: str, mode: str, legacy: bool = False) -> tuple[SyncedTable, bool]:
        with self._lock:
            existing = self.synced.get(name)
            if existing is not None:
                if existing.source != source:
                    raise ApiError(409, f"Online table '{name}' already exists and syncs from '{existing.source}'.")
                return existing, False
            synced = SyncedTable(name=name, source=source, online_store=store, mode=mode, pipeline_id=str(uuid.uuid4()), legacy=legacy)
            self.synced[name] = synced
            self.pipelines[synced.pipeline_id] = Pipeline(synced.pipeline_id, synced)
            return synced, True

    @route("DELETE", r"/api/2\.0/feature-store/online-tables/([^/]+)")
    def delete_online_table(self, name, *, query, body):
        from psycopg import sql

        with self._lock:
            synced = self._synced(name)
            del self.synced[name]
            self.pipelines.pop(synced.pipeline_id, None)
        _, schema, table = name.split(".")
        with self._sync_lock, self.postgres.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))

    def _synced(self, name: str) -> SyncedTable:
        try:
            return self.synced[name]
        except KeyError:
            raise ApiError(404, f"Synced table '{name}' does not exist.", "RESOURCE_DOES_NOT_EXIST") from None

    # Lakebase database instances
    @route("GET", r"/api/2\.0/database/instances/([^/]+)")
    def get_database_instance(self, name, *, query, body):
        store = self._online_store(name)
        return {"name": name, "capacity": store["capacity"], "state": "AVAILABLE", "pg_version": "PG_VERSION_16", "read_write_dns": "127.0.0.1", "read_only_dns": "127.0.0.1", "creator": self.user_name, "uid": name}

    @route("POST", r"/api/2\.0/database/credentials")
    def generate_database_credential(self, *, query, body):
        from psycopg import sql

        names = body.get("instance_names") or []
        if not names:
            raise ApiError(400, "instance_names is required")
        for name in names:
            self._online_store(name)
        # Databricks hands out many credentials that are valid at once; a PostgreSQL role has
        # one password, so every credential issued until the next expiry carries the same one
        # (a new password per call would wrongly revoke the credentials other threads hold).
        with self._lock:
            if self._pg_token is None:
                token, role = f"pgtok-{secrets.token_hex(16)}", sql.Identifier(self.user_name)
                with self.postgres.connect(autocommit=True) as conn:
                    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [self.user_name]).fetchone():
                        conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {} VALID UNTIL 'infinity'").format(role, sql.Literal(token)))
                    else:
                        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(token)))
                        conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(role))
                self._pg_token = token
            token = self._pg_token
        return {"token": token, "expiration_time": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}

    @route("GET", r"/api/2\.0/database/synced_tables/([^/]+)")
    def get_synced_table(self, name, *, query, body):
        synced = self._synced(name)
        status: dict[str, Any] = {"detailed_state": synced.state, "message": synced.message, "pipeline_id": synced.pipeline_id}
        if synced.last_version is not None:
            status["last_sync"] = {"delta_table_sync_info": {"delta_commit_version": synced.last_version}}
        return {"name": name, "database_instance_name": synced.online_store, "logical_database_name": PG_DATABASE, "data_synchronization_status": status,
                "spec": {"source_table_full_name": synced.source, "scheduling_policy": synced.mode, "existing_pipeline_id": synced.pipeline_id}}

    # pipelines
    @route("GET", r"/api/2\.0/pipelines/([^/]+)")
    def get_pipeline(self, pipeline_id, *, query, body):
        pipeline = self._pipeline(pipeline_id)
        latest = [{"update_id": u["update_id"], "state": u["state"], "creation_time": u["creation_time_iso"]} for u in pipeline.updates]
        running = pipeline.updates and pipeline.updates[0]["state"] in ("QUEUED", "RUNNING")
        return {"pipeline_id": pipeline_id, "name": f"sync {pipeline.synced.name}", "state": "RUNNING" if running else ("FAILED" if pipeline.updates and pipeline.updates[0]["state"] == "FAILED" else "IDLE"),
                "creator_user_name": self.user_name, "latest_updates": latest, "spec": {"id": pipeline_id, "continuous": pipeline.synced.mode == "CONTINUOUS"}}

    @route("POST", r"/api/2\.0/pipelines/([^/]+)/updates")
    def start_update(self, pipeline_id, *, query, body):
        pipeline = self._pipeline(pipeline_id)
        if pipeline.updates and pipeline.updates[0]["state"] in ("QUEUED", "RUNNING") and pipeline.synced.mode != "CONTINUOUS":
            raise ApiError(409, f"An update is already running for pipeline '{pipeline_id}'.", "RESOURCE_CONFLICT")
        return {"update_id": self._start_update(pipeline, cause=body.get("cause", "API_CALL"), full_refresh=bool(body.get("full_refresh")))}

    @route("GET", r"/api/2\.0/pipelines/([^/]+)/updates/([^/]+)")
    def get_update(self, pipeline_id, update_id, *, query, body):
        pipeline = self._pipeline(pipeline_id)
        update = next((u for u in pipeline.updates if u["update_id"] == update_id), None)
        if update is None:
            raise ApiError(404, f"Update '{update_id}' does not exist in pipeline '{pipeline_id}'.", "RESOURCE_DOES_NOT_EXIST")
        public = {k: v for k, v in update.items() if k != "creation_time_iso"}
        return {"update": public}

    def _pipeline(self, pipeline_id: str) -> Pipeline:
        try:
            return self.pipelines[pipeline_id]
        except KeyError:
            raise ApiError(404, f"Pipeline '{pipeline_id}' does not exist.", "RESOURCE_DOES_NOT_EXIST") from None

    # legacy Online Tables (retired by Databricks on 2026-01-15; kept for the opt-in path)
    @route("POST", r"/api/2\.0/online-tables")
    def create_legacy_online_table(self, *, query, body):
        name = body.get("name", "")
        spec = body.get("spec") or {}
        source = spec.get("source_table_full_name", "")
        self._table(source)
        mode = "CONTINUOUS" if "run_continuously" in spec else "TRIGGERED"
        synced, created = self._synced_for(name, source, "legacy-online-tables", mode, legacy=True)
        if not created:
            raise ApiError(409, f"Online table '{name}' already exists.")
        self._start_update(self.pipelines[synced.pipeline_id], cause="API_CALL")
        return self.get_legacy_online_table(name, query=query, body=body)

    @route("GET", r"/api/2\.0/online-tables/([^/]+)")
    def get_legacy_online_table(self, name, *, query, body):
        synced = self._synced(name)
        state = {"SYNCED_TABLE_PROVISIONING_INITIAL_SNAPSHOT": "PROVISIONING_INITIAL_SNAPSHOT", "SYNCED_TABLE_ONLINE_PIPELINE_FAILED": "ONLINE_PIPELINE_FAILED", "SYNCED_TABLE_ONLINE_CONTINUOUS_UPDATE": "ONLINE_CONTINUOUS_UPDATE"}.get(synced.state, "ONLINE_NO_PENDING_UPDATE")
        return {"name": name, "spec": {"source_table_full_name": synced.source, "pipeline_id": synced.pipeline_id}, "status": {"detailed_state": state, "message": synced.message}, "unity_catalog_provisioning_state": "ACTIVE"}

    @route("DELETE", r"/api/2\.0/online-tables/([^/]+)")
    def delete_legacy_online_table(self, name, *, query, body):
        return self.delete_online_table(name, query=query, body=body)

    # syncing ------------------------------------------------------------------------
    def _start_update(self, pipeline: Pipeline, *, cause: str, full_refresh: bool = False) -> str:
        update = {"update_id": str(uuid.uuid4()), "pipeline_id": pipeline.pipeline_id, "state": "RUNNING", "cause": cause, "full_refresh": full_refresh,
                  "creation_time": now_ms(), "creation_time_iso": datetime.now(UTC).isoformat()}
        with self._lock:
            synced = pipeline.synced
            if not pipeline.updates:
                synced.state = "SYNCED_TABLE_PROVISIONING_INITIAL_SNAPSHOT"
            else:
                synced.state = "SYNCED_TABLE_ONLINE_UPDATING_PIPELINE_RESOURCES" if synced.mode == "CONTINUOUS" else "SYNCED_TABLE_ONLINE_TRIGGERED_UPDATE"
            pipeline.updates.insert(0, update)
        thread = threading.Thread(target=self._run_update, args=(pipeline, update), daemon=True)
        thread.start()
        self._threads.append(thread)
        return update["update_id"]

    def _run_update(self, pipeline: Pipeline, update: dict[str, Any]) -> None:
        synced = pipeline.synced
        try:
            self._sync(synced)
        except Exception as exc:  # the pipeline FAILS; the online rows stay as they were
            synced.state, synced.message = "SYNCED_TABLE_ONLINE_PIPELINE_FAILED", f"{type(exc).__name__}: {exc}"
            update["state"] = "FAILED"
            return
        if synced.mode == "CONTINUOUS":
            synced.state, synced.message = "SYNCED_TABLE_ONLINE_CONTINUOUS_UPDATE", "continuously following the source"
            update["state"] = "RUNNING"  # a continuous update never completes
            self._follow(pipeline, update)
        else:
            synced.state, synced.message = "SYNCED_TABLE_ONLINE_NO_PENDING_UPDATE", f"synced Delta version {synced.last_version}"
            update["state"] = "COMPLETED"

    def _follow(self, pipeline: Pipeline, update: dict[str, Any]) -> None:
        from deltalake import DeltaTable

        synced = pipeline.synced
        while not self._stopped.wait(self.poll_seconds):
            if self.synced.get(synced.name) is not synced or pipeline.updates[0] is not update:
                return  # deleted, or superseded by a newer update
            try:
                version = DeltaTable(self._table(synced.source)["storage_location"]).version()
                if version != synced.last_version:
                    self._sync(synced)
                    synced.state, synced.message = "SYNCED_TABLE_ONLINE_CONTINUOUS_UPDATE", f"synced Delta version {synced.last_version}"
            except Exception as exc:
                synced.state, synced.message = "SYNCED_TABLE_ONLINE_PIPELINE_FAILED", f"{type(exc).__name__}: {exc}"
                update["state"] = "FAILED"
                return

    def _source_layout(self, source: str) -> tuple[str, list[str], str | None]:
        """(storage location, key columns, timestamp column) of a registered Delta table."""
        from deltalake import DeltaTable

        info = self._table(source)
        location = info.get("storage_location")
        if not location:
            raise ApiError(400, f"Table '{source}' has no storage location the fake can read (register it as an EXTERNAL Delta table).")
        try:
            configuration = DeltaTable(location).metadata().configuration
        except Exception as exc:
            raise ApiError(400, f"Table '{source}' is not a readable Delta table at {location}: {exc}") from None
        primary = next((c["primary_key_constraint"] for c in info.get("table_constraints") or [] if "primary_key_constraint" in c), None)
        if primary is not None:  # what Databricks itself reads: PRIMARY KEY (keys, ts TIMESERIES)
            return location, list(primary["child_columns"]), (primary.get("timeseries_columns") or [None])[0]
        properties = {**(info.get("properties") or {}), **configuration}
        keys = [k.strip() for k in (properties.get("mlforge.keys") or "").split(",") if k.strip()]
        if not keys:
            raise ApiError(400, f"Table '{source}' has no primary key: publishing needs the key columns (Delta property mlforge.keys).", "INVALID_PARAMETER_VALUE")
        return location, keys, properties.get("mlforge.timestamp") or None

    def _sync(self, synced: SyncedTable) -> None:
        import pyarrow as pa
        from deltalake import DeltaTable, QueryBuilder

        with self._sync_lock:
            location, keys, timestamp = self._source_layout(synced.source)
            delta = DeltaTable(location)
            version = delta.version()
            # delta-rs's Rust reader: to_pyarrow_table() leaves Python file objects to Arrow's
            # IO threads, which can abort the test process at exit.
            table = pa.table(QueryBuilder().register("source", delta).execute("SELECT * FROM source"))
            table = table.cast(pa.schema(delta.schema()))
            rows = newest_per_key(table.to_pylist(), keys, timestamp)
            _, schema, name = synced.name.split(".")
            with self.postgres.connect() as conn:  # one transaction: readers see old rows or new rows
                replace_table(conn, schema, name, table.schema, keys, rows)
                with self._lock:
                    failure = self.sync_faults.pop(0) if self.sync_faults else None
                if failure:
                    conn.rollback()
                    raise SyncFailed(failure)
                conn.commit()
            synced.last_version, synced.rows = version, len(rows)


def newest_per_key(rows: list[dict[str, Any]], keys: list[str], timestamp: str | None) -> list[dict[str, Any]]:
    newest: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        if any(v is None for v in key):
            continue
        held = newest.get(key)
        if held is None or (timestamp and row[timestamp] is not None and (held[timestamp] is None or row[timestamp] >= held[timestamp])):
            newest[key] = row
    return list(newest.values())


def pg_type(arrow_type: Any) -> str:
    import pyarrow as pa

    checks = [
        (pa.types.is_boolean, "boolean"), (pa.types.is_int8, "smallint"), (pa.types.is_int16, "smallint"), (pa.types.is_int32, "integer"),
        (pa.types.is_int64, "bigint"), (pa.types.is_float32, "real"), (pa.types.is_float64, "double precision"),
        (pa.types.is_string, "text"), (pa.types.is_large_string, "text"), (pa.types.is_date, "date"),
        (pa.types.is_binary, "bytea"), (pa.types.is_large_binary, "bytea"),
    ]
    for check, name in checks:
        if check(arrow_type):
            return name
    if pa.types.is_timestamp(arrow_type):
        return "timestamp with time zone" if arrow_type.tz else "timestamp without time zone"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_nested(arrow_type):
        return "jsonb"
    if pa.types.is_duration(arrow_type):
        return "interval"
    return "text"


def replace_table(conn: Any, schema: str, name: str, arrow_schema: Any, keys: list[str], rows: list[dict[str, Any]]) -> None:
    from psycopg import sql
    from psycopg.types.json import Jsonb

    target = sql.Identifier(schema, name)
    types = {f.name: pg_type(f.type) for f in arrow_schema}
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in types.items())
    primary_key = sql.SQL(", ").join(map(sql.Identifier, keys))
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
        cur.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(target, columns, primary_key))
        jsonb = [c for c, t in types.items() if t == "jsonb"]
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, sql.SQL(", ").join(map(sql.Identifier, types)))) as copy:
            for row in rows:
                for column in jsonb:
                    row[column] = None if row[column] is None else Jsonb(_jsonable(row[column]))
                copy.write_row([row[c] for c in types])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (datetime,)):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _handler_for(workspace: FakeWorkspace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return None

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                status, payload, headers = 400, {"error_code": "MALFORMED_REQUEST", "message": "request body is not JSON"}, {}
            else:
                try:
                    status, payload, headers = workspace.handle(self.command, parts.path, query, body, self.headers.get("Authorization"))
                except Exception as exc:  # a bug in the fake: answer like the platform does
                    status, payload, headers = 500, {"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}, {}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

    return Handler


@pytest.fixture
def databricks_workspace(postgres, tmp_path, monkeypatch):
    """A fresh fake workspace per test, on the session's PostgreSQL.

    ``DATABRICKS_HOST``/``DATABRICKS_TOKEN`` point at it (and ``~/.databrickscfg`` is ignored),
    so ``WorkspaceClient()`` with the SDK's default auth chain reaches it too.
    """
    storage = tmp_path / "uc-storage"
    storage.mkdir()
    workspace = FakeWorkspace(postgres, storage).start()
    for var in ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_AUTH_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", workspace.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", workspace.token)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    with contextlib.ExitStack() as stack:
        stack.callback(workspace.stop)
        yield workspace

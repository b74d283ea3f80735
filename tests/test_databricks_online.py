"""``DatabricksOnlineStore`` against the real ``databricks-sdk``, a loopback workspace and a real
PostgreSQL (``fake_databricks``): publish in every sync mode, serve, and fail clearly (O1, O2).

Source tables are real Delta tables under the workspace's ``storage_root``, registered in
the fake Unity Catalog with ``tables.create`` exactly as the delta-rs path of
``UnityCatalogStore`` registers them (Delta properties ``mlforge.keys``/``mlforge.timestamp``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import warnings
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from fake_databricks import databricks_workspace, postgres  # noqa: F401
from mlforge.errors import ConfigError, OnlineStoreError
from test_online_stores import assert_same_typed

service = pytest.mark.service
CATALOG = "main"


def ts(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


class DeltaSource:
    """What the delta-rs path of ``UnityCatalogStore`` leaves behind: an external Delta table
    ``main.features.{feature}`` registered in Unity Catalog, its keys in Delta properties."""

    kind = "unity-catalog"
    catalog, schema = CATALOG, "features"

    def __init__(self, workspace, client):
        self.workspace, self.client = workspace, client
        self.keys: dict[str, list[str]] = {}

    def table_name(self, feature: str) -> str:
        return f"{self.catalog}.{self.schema}.{feature}"

    def location(self, feature: str) -> str:
        return f"{self.workspace.storage_root}/{self.schema}/{feature}"

    def write(self, feature: str, table: pa.Table, keys: list[str], timestamp: str | None = "ts", mode: str = "overwrite") -> None:
        from databricks.sdk.service.catalog import ColumnInfo, DataSourceFormat, TableType
        from deltalake import DeltaTable, write_deltalake

        write_deltalake(self.location(feature), table, mode=mode, configuration={"delta.enableChangeDataFeed": "true"} if mode == "overwrite" else None)
        properties = {"mlforge.keys": ",".join(keys), "mlforge.timestamp": timestamp or ""}
        DeltaTable(self.location(feature)).alter.set_table_properties(properties, raise_if_not_exists=False)
        self.keys[feature] = keys
        if not self.client.tables.exists(self.table_name(feature)).table_exists:
            columns = [ColumnInfo(name=f.name, type_text=str(f.type), position=i) for i, f in enumerate(table.schema)]
            self.client.tables.create(
                name=feature, catalog_name=self.catalog, schema_name=self.schema, table_type=TableType.EXTERNAL,
                data_source_format=DataSourceFormat.DELTA, storage_location=self.location(feature), columns=columns,
            )

    def read_metadata(self, feature: str, version: str | None = None) -> dict:
        return {"keys": self.keys[feature], "timestamp": "ts", "version": version or "1.0.0"}


def spend(rows: list[tuple]) -> pa.Table:
    user_id, when, total = zip(*rows, strict=True)
    return pa.table({"user_id": pa.array(user_id, pa.int64()), "ts": pa.array(when, pa.timestamp("us", tz="UTC")), "total": pa.array(total, pa.float64())})


V1 = [(1, ts(1), 1.0), (1, ts(2), 2.0), (2, ts(1), 5.0)]
V2 = [(1, ts(3), 9.0), (3, ts(3), 7.0)]  # appended: a newer row for 1, a new entity 3


@pytest.fixture
def ws(databricks_workspace):  # noqa: F811
    return databricks_workspace


@pytest.fixture
def make_store(ws):
    from mlforge.online.databricks import DatabricksOnlineStore

    made = []

    def make(sync_mode="triggered", client=None, **options):
        options.setdefault("online_store", f"store-{uuid.uuid4().hex[:8]}")
        options.setdefault("schema", f"online_{uuid.uuid4().hex[:8]}")  # one PostgreSQL schema per test
        options.setdefault("pg_port", ws.postgres.port)
        store = DatabricksOnlineStore(CATALOG, sync_mode=sync_mode, client=client or ws.client(), poll_interval=0.02, sync_timeout=20, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def source(ws):
    return DeltaSource(ws, ws.client())


def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def totals(store, feature="spend", users=(1, 2, 3)):
    rows = store.read(feature, [{"user_id": u} for u in users])
    return [None if r is None else r["total"] for r in rows]


def posts(ws, suffix: str) -> int:
    return sum(1 for method, path in ws.calls if method == "POST" and path.endswith(suffix))


# -- the fake speaks the SDK ----------------------------------------------------------------
@service
def test_fake_answers_the_sdk_and_checks_the_token(ws):
    import requests
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    from databricks.sdk.errors import Unauthenticated

    meta = requests.get(f"{ws.host}/.well-known/databricks-config", timeout=5).json()
    assert meta["workspace_id"] and meta["oidc_endpoint"].startswith(ws.host)
    assert ws.client().current_user.me().user_name == ws.user_name
    started = time.monotonic()
    default = WorkspaceClient()  # env auth chain (DATABRICKS_HOST/TOKEN), default 300 s retry budget
    assert default.config.workspace_id == meta["workspace_id"]  # host metadata was read, not timed out on
    assert default.current_user.me().user_name == ws.user_name
    assert time.monotonic() - started < 30
    wrong = WorkspaceClient(config=Config(host=ws.host, token="dapi-wrong", retry_timeout_seconds=2))
    with pytest.raises(Unauthenticated):
        wrong.current_user.me()
    assert ("GET", "/api/2.0/preview/scim/v2/Me") in ws.calls


@service
def test_unity_catalog_tables_and_vended_credentials(ws, source):
    from databricks.sdk.errors import NotFound, ResourceConflict
    from databricks.sdk.service.catalog import (
        DataSourceFormat,
        PathOperation,
        TableOperation,
        TableType,
    )

    client = source.client
    source.write("spend", spend(V1), ["user_id"])
    info = client.tables.get("main.features.spend")
    assert info.storage_location == source.location("spend") and info.table_type == TableType.EXTERNAL
    assert [t.name for t in client.tables.list(catalog_name="main", schema_name="features")] == ["spend"]
    with pytest.raises(ResourceConflict):
        client.tables.create(name="spend", catalog_name="main", schema_name="features", table_type=TableType.EXTERNAL, data_source_format=DataSourceFormat.DELTA, storage_location=info.storage_location)
    creds = client.temporary_table_credentials.generate_temporary_table_credentials(table_id=info.table_id, operation=TableOperation.READ_WRITE)
    assert creds.aws_temp_credentials.access_key_id and creds.expiration_time > time.time() * 1000
    ws.expire_storage_credentials()  # the next one only
    url = f"{ws.storage_root}/features/new"
    path = client.temporary_path_credentials.generate_temporary_path_credentials(url=url, operation=PathOperation.PATH_READ_WRITE)
    assert path.aws_temp_credentials.session_token and path.expiration_time < time.time() * 1000
    assert client.temporary_path_credentials.generate_temporary_path_credentials(url=url, operation=PathOperation.PATH_READ_WRITE).expiration_time > time.time() * 1000
    client.tables.delete("main.features.spend")
    assert not client.tables.exists("main.features.spend").table_exists
    with pytest.raises(NotFound):
        client.tables.get("main.features.spend")


# -- publish and serve, every sync mode -----------------------------------------------------
@service
@pytest.mark.parametrize("sync_mode", ["snapshot", "triggered", "continuous"])
def test_sync_modes_publish_and_serve_the_newest_row_per_entity(ws, source, make_store, sync_mode):
    # contract O1: the online table holds the newest row per entity of the published table
    store = make_store(sync_mode)
    source.write("spend", spend(V1), ["user_id"])
    assert store.publish_table(source, "spend", "1.0.0") == 2
    assert totals(store) == [2.0, 5.0, None]
    (constraint,) = source.client.tables.get("main.features.spend").table_constraints  # what Databricks reads the keys from
    assert constraint.primary_key_constraint.child_columns == ["user_id"] and constraint.primary_key_constraint.timeseries_columns == ["ts"]
    assert store.read("spend", [{"user_id": 1}])[0] == {"user_id": 1, "ts": ts(2), "total": 2.0}

    source.write("spend", spend(V2), ["user_id"], mode="append")
    if sync_mode == "continuous":  # the pipeline follows new Delta versions by itself
        assert eventually(lambda: totals(store) == [9.0, 5.0, 7.0]), totals(store)
    else:  # snapshot / triggered: nothing moves until the next publish
        time.sleep(0.3)
        assert totals(store) == [2.0, 5.0, None]
        assert store.publish_table(source, "spend", "1.0.1") == 3
        assert totals(store) == [9.0, 5.0, 7.0]
        assert posts(ws, "/updates") == 1  # the re-publish refreshed through pipelines.start_update
    assert posts(ws, "/publish") == (1 if sync_mode == "continuous" else 2)
    assert ws.online_rows(store.table_name("spend"))[0]["total"] == 9.0


@service
def test_start_update_refreshes_a_triggered_table(ws, source, make_store):
    store = make_store("triggered")
    source.write("spend", spend(V1), ["user_id"])
    store.publish_table(source, "spend")
    pipeline_id = source.client.database.get_synced_database_table(store.table_name("spend")).data_synchronization_status.pipeline_id
    source.write("spend", spend(V2), ["user_id"], mode="append")
    update_id = source.client.pipelines.start_update(pipeline_id).update_id
    assert eventually(lambda: source.client.pipelines.get_update(pipeline_id, update_id).update.state.value == "COMPLETED")
    assert totals(store) == [9.0, 5.0, 7.0]


@service
def test_a_republish_waits_for_a_running_update(ws, source, make_store):
    store = make_store("triggered")
    source.write("spend", spend(V1), ["user_id"])
    store.publish_table(source, "spend")
    source.write("spend", spend(V2), ["user_id"], mode="append")
    ws.fail("/api/2.0/pipelines/", 409, times=1, method="POST", error_code="RESOURCE_CONFLICT", message="An update is already running")
    assert store.publish_table(source, "spend") == 3
    assert posts(ws, "/updates") == 2 and totals(store) == [9.0, 5.0, 7.0]


@service
def test_composite_keys_and_one_query_per_read(ws, source, make_store):
    store = make_store()
    routes = pa.table({"origin": ["JFK", "JFK", "SFO"], "dest": ["LAX", "SFO", "JFK"], "ts": pa.array([ts(1)] * 3, pa.timestamp("us", tz="UTC")), "n": [1, 2, 3]})
    source.write("routes", routes, ["origin", "dest"])
    assert store.publish_table(source, "routes") == 3
    keys = [{"origin": "SFO", "dest": "JFK"}, {"dest": "LAX", "origin": "JFK"}, {"origin": "LAX", "dest": "JFK"}, {"origin": "JFK", "dest": "LAX"}]
    statements = []
    run = store._query
    store._query = lambda action, sql, params=None: statements.append(sql) or run(action, sql, params)
    assert [r and r["n"] for r in store.read("routes", keys)] == [3, 1, None, 1]
    assert len(statements) == 1  # one round trip for all keys (the column types are cached)


# -- contract O2 ----------------------------------------------------------------------------
@service
def test_values_round_trip_with_their_types(ws, source, make_store):
    # contract O2: ints stay ints, floats stay floats, timestamps stay timestamps (UTC, T1)
    table = pa.table(
        {
            "user_id": pa.array([1, 2, 3], pa.int64()),
            "ts": pa.array([ts(2, 3), ts(3), ts(4)], pa.timestamp("us", tz="UTC")),
            "count_7d": pa.array([0, 5, None], pa.int64()),
            "small": pa.array([1, None, -3], pa.int32()),
            "whole_float": pa.array([1.0, 2.0, None], pa.float64()),
            "ratio": pa.array([0.1, float("nan"), float("inf")], pa.float64()),
            "flag": pa.array([True, False, None]),
            "name": pa.array(["ä", "", None]),
            "seen": pa.array([datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), None, datetime(1999, 12, 31, 23, 59, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
            "naive": pa.array([datetime(2024, 1, 2, 3), None, datetime(2024, 1, 3)], pa.timestamp("us")),
            "day": pa.array([date(2024, 1, 2), None, date(1999, 12, 31)], pa.date32()),
            "amount": pa.array([Decimal("1.10"), None, Decimal("-3.00")], pa.decimal128(10, 2)),
            "raw": pa.array([b"\x00\xff", None, b""], pa.binary()),
            "tags": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
            "point": pa.array([{"x": 1, "y": 2.5}, None, {"x": None, "y": 0.0}]),
        }
    )
    source.write("typed", table, ["user_id"])
    store = make_store()
    assert store.publish_table(source, "typed") == 3
    rows = store.read("typed", [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}])
    for got, expected in zip(rows, table.to_pylist(), strict=True):
        if expected["naive"] is not None:  # stored instants are UTC (T1): naive ones come back zoned
            expected["naive"] = expected["naive"].replace(tzinfo=UTC)
        assert_same_typed(got, expected)
        for column, value in expected.items():
            if isinstance(value, datetime):
                assert got[column].utcoffset().total_seconds() == 0, column


@service
def test_unknown_entities_are_none_not_errors(ws, source, make_store):
    # contract O2: reads of unknown entities return nulls, never errors
    store = make_store()
    assert store.read("never_published", [{"user_id": 1}]) == [None]
    source.write("spend", spend(V1), ["user_id"])
    store.publish_table(source, "spend")
    users = [2, "1", None, "not-a-number", 99, 2, 2.0, 2.5, True]
    assert totals(store, users=users) == [5.0, 2.0, None, None, None, 5.0, 5.0, None, None]
    assert store.read("spend", []) == []


# -- failures -------------------------------------------------------------------------------
@service
def test_unknown_source_table_is_a_clear_404(ws, source, make_store):
    store = make_store()
    with pytest.raises(OnlineStoreError) as caught:
        store.publish_table(source, "never_built")
    message = str(caught.value)
    assert "main.features.never_built" in message and "NotFound" in message and "build it first" in message
    assert ws.synced == {}  # nothing half-made


@service
def test_an_existing_online_store_is_reused(ws, source, make_store):
    from databricks.sdk.errors import ResourceConflict
    from databricks.sdk.service.ml import OnlineStore

    store = make_store(online_store="shared-store")
    source.client.feature_store.create_online_store(OnlineStore(name="shared-store", capacity="CU_2"))
    with pytest.raises(ResourceConflict):  # what the SDK raises on 409
        source.client.feature_store.create_online_store(OnlineStore(name="shared-store", capacity="CU_1"))
    source.write("spend", spend(V1), ["user_id"])
    assert store.publish_table(source, "spend") == 2
    assert [s.name for s in source.client.feature_store.list_online_stores()] == ["shared-store"]
    assert ws.online_stores["shared-store"]["capacity"] == "CU_2"


@service
@pytest.mark.parametrize("status", [429, 503])
def test_throttling_is_retried_by_the_sdk(ws, source, make_store, status):
    store = make_store()
    source.write("spend", spend(V1), ["user_id"])
    ws.fail("/api/2.0/feature-store/tables/", status, times=2)
    started = time.monotonic()
    assert store.publish_table(source, "spend") == 2
    assert posts(ws, "/publish") == 3 and time.monotonic() - started < 5


@service
def test_persistent_throttling_is_a_clear_error(ws, source, make_store):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    impatient = WorkspaceClient(config=Config(host=ws.host, token=ws.token, retry_timeout_seconds=1))
    store = make_store(client=impatient)
    source.write("spend", spend(V1), ["user_id"])
    ws.fail("/api/2.0/feature-store/tables/", 503, times=1000)
    started = time.monotonic()
    with pytest.raises(OnlineStoreError) as caught:
        store.publish_table(source, "spend")
    assert time.monotonic() - started < 5
    assert "TemporarilyUnavailable" in str(caught.value) and "retry" in caught.value.fix


@service
def test_permission_denied_says_what_to_grant(ws, source, make_store):
    store = make_store()
    source.write("spend", spend(V1), ["user_id"])
    ws.fail("/api/2.0/feature-store/tables/", 403, message="User does not have SELECT on table main.features.spend")
    with pytest.raises(OnlineStoreError) as caught:
        store.publish_table(source, "spend")
    assert "PermissionDenied" in str(caught.value) and "SELECT" in caught.value.fix


@service
@pytest.mark.parametrize("sync_mode", ["triggered", "snapshot"])
def test_a_failing_sync_is_a_clear_error_and_keeps_the_previous_rows(ws, source, make_store, sync_mode):
    store = make_store(sync_mode)
    source.write("spend", spend(V1), ["user_id"])
    store.publish_table(source, "spend")
    source.write("spend", spend(V2), ["user_id"], mode="append")
    ws.fail_sync(message="executor lost (injected)")
    with pytest.raises(OnlineStoreError) as caught:
        store.publish_table(source, "spend")
    assert "FAILED" in str(caught.value) and "executor lost" in str(caught.value) and "previous rows" in str(caught.value)
    assert totals(store) == [2.0, 5.0, None]  # no half state
    assert store.publish_table(source, "spend") == 3  # the next publish recovers
    assert totals(store) == [9.0, 5.0, 7.0]


@service
def test_a_failing_continuous_sync_keeps_the_rows_and_a_republish_restarts_it(ws, source, make_store):
    store = make_store("continuous")
    source.write("spend", spend(V1), ["user_id"])
    store.publish_table(source, "spend")
    ws.fail_sync(message="source schema changed (injected)")
    source.write("spend", spend(V2), ["user_id"], mode="append")

    def state():
        return source.client.database.get_synced_database_table(store.table_name("spend")).data_synchronization_status.detailed_state.value

    assert eventually(lambda: state() == "SYNCED_TABLE_ONLINE_PIPELINE_FAILED"), state()
    assert totals(store) == [2.0, 5.0, None]
    assert store.publish_table(source, "spend") == 3
    assert totals(store) == [9.0, 5.0, 7.0] and state() == "SYNCED_TABLE_ONLINE_CONTINUOUS_UPDATE"


@service
def test_concurrent_reads_share_a_small_pool(ws, source, make_store):
    from concurrent.futures import ThreadPoolExecutor

    from mlforge.online import databricks

    store = make_store()
    source.write("spend", spend(V1), ["user_id"])
    store.publish_table(source, "spend")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: totals(store), range(64)))
    assert answers == [[2.0, 5.0, None]] * 64
    assert len(store._idle) <= databricks.POOL_SIZE
    before = posts(ws, "/api/2.0/database/credentials")
    ws.expire_database_credentials()  # every pooled session ends at once
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: totals(store), range(8))) == [[2.0, 5.0, None]] * 8
    assert posts(ws, "/api/2.0/database/credentials") == before + 1  # the threads shared one refresh


@service
def test_a_failing_first_sync_leaves_no_rows(ws, source, make_store):
    store = make_store()
    source.write("spend", spend(V1), ["user_id"])
    ws.fail_sync()
    with pytest.raises(OnlineStoreError, match="FAILED"):
        store.publish_table(source, "spend")
    assert totals(store) == [None, None, None]


@service
def test_expired_database_credentials_are_refreshed(ws, source, make_store):
    store = make_store()
    source.write("spend", spend(V1), ["user_id"])
    store.publish_table(source, "spend")
    assert totals(store) == [2.0, 5.0, None]
    before = posts(ws, "/api/2.0/database/credentials")
    ws.expire_database_credentials()  # the password stops working and open sessions end
    assert totals(store) == [2.0, 5.0, None]
    assert posts(ws, "/api/2.0/database/credentials") == before + 1
    store.close()
    assert totals(store) == [2.0, 5.0, None]  # a reconnect reuses the fresh token
    assert posts(ws, "/api/2.0/database/credentials") == before + 1
    store.ping()


@service
def test_ping_fails_clearly_when_postgres_is_unreachable(ws, source, make_store):
    store = make_store(pg_port=1, connect_timeout=2)
    from databricks.sdk.service.ml import OnlineStore

    source.client.feature_store.create_online_store(OnlineStore(name=store.online_store, capacity="CU_1"))
    with pytest.raises(OnlineStoreError, match="cannot connect to PostgreSQL"):
        store.ping()


def test_write_is_refused_with_the_way_to_publish():
    from mlforge.online.databricks import DatabricksOnlineStore, PublishOnlyError

    store = DatabricksOnlineStore(CATALOG)
    with pytest.raises(PublishOnlyError) as caught:
        store.write("spend", ["user_id"], [pa.table({"user_id": [1]})])
    assert isinstance(caught.value, OnlineStoreError) and "mlforge build --online" in caught.value.fix


def test_missing_workspace_auth_is_a_clear_error(tmp_path, monkeypatch):
    from mlforge.online.databricks import DatabricksOnlineStore

    for var in [v for v in os.environ if v.startswith(("DATABRICKS_", "ARM_", "AZURE_", "GOOGLE_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(OnlineStoreError) as caught:
        DatabricksOnlineStore(CATALOG).ping()
    assert "DATABRICKS_HOST" in caught.value.fix


def test_settings_are_validated():
    from mlforge.online.databricks import DatabricksOnlineStore

    with pytest.raises(ConfigError, match="sync_mode"):
        DatabricksOnlineStore(CATALOG, sync_mode="hourly")
    with pytest.raises(ConfigError, match="schema"):
        DatabricksOnlineStore(CATALOG, schema="../x")
    assert DatabricksOnlineStore(CATALOG, sync_mode="CONTINUOUS").sync_mode == "continuous"


def test_publishing_requires_a_unity_catalog_offline_store(tmp_path):
    import pyarrow.parquet as pq

    import mlforge as mlf
    from mlforge.online.databricks import DatabricksOnlineStore

    pq.write_table(spend(V1), tmp_path / "tx.parquet")

    @mlf.feature(source=str(tmp_path / "tx.parquet"), keys=["user_id"], timestamp="ts")
    def last_spend(t):
        return t

    defs = mlf.Definitions("uc", [last_spend], offline_store=mlf.LocalStore(tmp_path / "store"), online_store=DatabricksOnlineStore(CATALOG))
    with pytest.raises(ConfigError, match="requires UnityCatalogStore as offline store"):
        defs.build(online=True)
    assert not (tmp_path / "store").exists()  # contract E3: refused before any compute, nothing published


@service
def test_legacy_online_tables_only_on_request_with_a_deprecation_warning(ws, source, make_store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_store()  # the default never warns
    with pytest.warns(DeprecationWarning, match="retired on 2026-01-15"):
        store = make_store(legacy_online_tables=True)
    source.write("spend", spend(V1), ["user_id"])
    store.publish_table(source, "spend")
    assert posts(ws, "/api/2.0/online-tables") == 1 and posts(ws, "/publish") == 0
    assert [r["total"] for r in ws.online_rows(store.table_name("spend"))] == [2.0, 5.0]
    source.write("spend", spend(V2), ["user_id"], mode="append")
    store.publish_table(source, "spend")  # exists (409): refreshed through its pipeline
    assert posts(ws, "/updates") == 1
    assert [r["total"] for r in ws.online_rows(store.table_name("spend"))] == [9.0, 5.0, 7.0]
    with pytest.raises(OnlineStoreError, match="Feature Serving"):
        store.read("spend", [{"user_id": 1}])


def test_importing_the_store_stays_light():
    # STYLE 2: databricks-sdk and psycopg load on first use only
    code = "import mlforge.online.databricks, sys; print(sorted(m for m in ('databricks.sdk', 'psycopg') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# -- a real workspace -----------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("DATABRICKS_HOST"), reason="needs a real Databricks workspace (set DATABRICKS_HOST and auth)")
def test_live_publish_and_read():
    """Publish a tiny Delta table to a real online store and read it back over PostgreSQL.

    Needs ``MLFORGE_LIVE_SOURCE`` (a UC Delta table keyed by a NOT NULL ``user_id``; Change Data
    Feed on for triggered syncs), optionally ``MLFORGE_LIVE_TIMESTAMP``, ``MLFORGE_LIVE_KEY``,
    ``MLFORGE_LIVE_CATALOG`` / ``MLFORGE_LIVE_ONLINE_STORE``. Run with ``pytest -m live``.
    """
    from mlforge.online.databricks import DatabricksOnlineStore

    table = os.environ.get("MLFORGE_LIVE_SOURCE")
    if not table:
        pytest.skip("set MLFORGE_LIVE_SOURCE=catalog.schema.table (a Delta table keyed by user_id)")
    catalog, schema, feature = table.split(".")

    class LiveSource:
        kind = "unity-catalog"

        def table_name(self, name):
            return f"{catalog}.{schema}.{name}"

        def read_metadata(self, name, version=None):  # used only when the table has no primary key yet
            return {"keys": ["user_id"], "timestamp": os.environ.get("MLFORGE_LIVE_TIMESTAMP") or None}

    store = DatabricksOnlineStore(os.environ.get("MLFORGE_LIVE_CATALOG", catalog), sync_mode="triggered", online_store=os.environ.get("MLFORGE_LIVE_ONLINE_STORE", "mlforge-live"), pg_sslmode="require")
    try:
        assert store.publish_table(LiveSource(), feature) > 0
        store.ping()
        row = store.read(feature, [{"user_id": os.environ.get("MLFORGE_LIVE_KEY", "1")}, {"user_id": "no-such-entity-mlforge"}])
        assert row[1] is None
    finally:
        store.close()


# -- end to end: UnityCatalogStore -> build --online -> get_online_features ------------------
EVENTS = {
    "user_id": ["a", "a", "b", "c"],
    "ts": [datetime(2024, 1, 1, 5), datetime(2024, 1, 3, 5), datetime(2024, 1, 2, 1), datetime(2024, 1, 2, 1)],
    "amt": [1, 2, 5, 7],
}


@service
@pytest.mark.parametrize("sync_mode", ["triggered", "snapshot"])
def test_build_online_then_get_online_features(ws, tmp_path, sync_mode):
    # contract O1: build --online publishes the built version's newest row per entity
    import pyarrow.parquet as pq

    import mlforge as mlf
    from mlforge.online.databricks import DatabricksOnlineStore

    UnityCatalogStore = pytest.importorskip("mlforge.offline.unity_catalog", reason="UnityCatalogStore is not in this checkout yet").UnityCatalogStore
    source = tmp_path / "tx.parquet"
    pq.write_table(pa.table(EVENTS), source)

    @mlf.feature(source=str(source), keys=["user_id"], timestamp="ts")
    def last_purchase(t):
        return t.select("user_id", "ts", "amt")

    online = DatabricksOnlineStore("main", sync_mode=sync_mode, client=ws.client(), pg_port=ws.postgres.port, schema=f"online_{uuid.uuid4().hex[:8]}", poll_interval=0.02, sync_timeout=20)
    offline = UnityCatalogStore("main", client=ws.client(), storage_root=ws.storage_root)
    defs = mlf.Definitions("uc", [last_purchase], offline_store=offline, online_store=online)
    result = defs.build(online=True)
    assert [f.status for f in result.features] == ["built"], [f.error for f in result.features]
    entities = pa.table({"user_id": ["a", "b", "zz"]})
    got = defs.get_online_features(["last_purchase"], entities).to_pylist()
    assert [r["amt"] for r in got] == [2, 5, None]
    assert got[0]["user_id"] == "a" and type(got[0]["amt"]) is int

    pq.write_table(pa.table({"user_id": ["a", "zz"], "ts": [datetime(2024, 1, 9), datetime(2024, 1, 9)], "amt": [40, 41]}), tmp_path / "tx.parquet")
    assert [f.status for f in defs.build(online=True).features] == ["built"]
    again = defs.get_online_features(["last_purchase"], entities).to_pylist()
    assert (again[0]["amt"], again[2]["amt"]) == (40, 41)

    # contract O3: mlforge serve reads through the same store
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    http = TestClient(create_app(defs))
    assert http.get("/health").json()["status"] == "ok"
    answer = http.post("/features/batch", json={"features": ["last_purchase"], "entities": [{"user_id": "zz"}, {"user_id": "nobody"}]})
    assert answer.status_code == 200
    assert [r["features"]["last_purchase"] for r in answer.json()["results"]] == [{"user_id": "zz", "ts": "2024-01-09T00:00:00+00:00", "amt": 41}, None]
    online.close()


@service
def test_a_damaged_tail_is_refused_not_read_at_another_label(ws, tmp_path):
    # a value whose rows no longer match its labels reads as an OnlineStoreError, never as
    # the values of another label
    import pyarrow.parquet as pq
    from psycopg import sql

    import mlforge as mlf
    from mlforge.offline.unity_catalog import UnityCatalogStore
    from mlforge.online.databricks import VALUE_COLUMN, DatabricksOnlineStore

    source = tmp_path / "tx.parquet"
    pq.write_table(pa.table(EVENTS), source)

    @mlf.feature(source=str(source), keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["3d"], name="spend")])
    def spend_3d(t):
        return t.select("user_id", "ts", "amt")

    schema = f"online_{uuid.uuid4().hex[:8]}"
    online = DatabricksOnlineStore("main", sync_mode="triggered", client=ws.client(), pg_port=ws.postgres.port, schema=schema, poll_interval=0.02, sync_timeout=20)
    defs = mlf.Definitions("uc", [spend_3d], offline_store=UnityCatalogStore("main", client=ws.client(), storage_root=ws.storage_root), online_store=online)
    assert [f.status for f in defs.build(online=True).features] == ["built"]
    at = datetime(2024, 1, 4, 12)
    entities = pa.table({"user_id": ["a", "b", "c"]})
    assert [r["spend_3d"] for r in defs.get_online_features(["spend_3d"], entities, at=at).to_pylist()] == [3, 5, 7]  # 2024-01-01..03
    with ws.postgres.connect(autocommit=True) as conn:  # drop the first row line of every tail of two or more rows
        damaged = conn.execute(
            sql.SQL("UPDATE {} SET {} = regexp_replace({}, %s, '') WHERE {} ~ %s").format(
                sql.Identifier(schema, "spend_3d"), sql.Identifier(VALUE_COLUMN), sql.Identifier(VALUE_COLUMN), sql.Identifier(VALUE_COLUMN)
            ),
            ["\n\\[[^\n]*\\],", "\\],\n"],
        ).rowcount
    assert damaged >= 1
    with pytest.raises(OnlineStoreError, match=r"not an mlforge row .*a tail of \d+ labels holds \d+ rows"):
        defs.get_online_features(["spend_3d"], entities, at=at)
    online.close()

"""The few Unity Catalog REST calls the store makes, through ``databricks-sdk``.

Tables are looked up (``GET /api/2.1/unity-catalog/tables/{full_name}``) and registered as
external Delta tables (``POST /api/2.1/unity-catalog/tables``); delta-rs gets short-lived
storage credentials from ``temporary-table-credentials`` / ``temporary-path-credentials``.
Every SDK error becomes a :class:`StoreError` that names the call and the table.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mlforge.errors import StoreError

#: manifest type names -> Unity Catalog column type names.
_TYPES = {
    "int8": "BYTE", "int16": "SHORT", "int32": "INT", "int64": "LONG", "float32": "FLOAT", "float64": "DOUBLE",
    "string": "STRING", "bool": "BOOLEAN", "date": "DATE",
}


def get_table(client: Any, full_name: str) -> Any:
    """The table's ``TableInfo``, or ``None`` when Unity Catalog does not know it."""
    from databricks.sdk.errors import NotFound

    try:
        return client.tables.get(full_name)
    except NotFound:
        return None
    except Exception as exc:
        raise _store_error("look up", full_name, exc) from exc


def table_credentials(client: Any, info: Any) -> dict[str, str] | None:
    """delta-rs storage options for an existing table (``None`` for local files)."""
    from databricks.sdk.service.catalog import TableOperation

    def fetch() -> Any:
        return client.temporary_table_credentials.generate_temporary_table_credentials(table_id=info.table_id, operation=TableOperation.READ_WRITE)

    return _options(_fresh(fetch, info.full_name), info.storage_location, info.full_name)


def path_credentials(client: Any, location: str) -> dict[str, str] | None:
    """delta-rs storage options for a path that becomes a new external table."""
    from databricks.sdk.service.catalog import PathOperation

    def fetch() -> Any:
        return client.temporary_path_credentials.generate_temporary_path_credentials(url=location, operation=PathOperation.PATH_CREATE_TABLE)

    return _options(_fresh(fetch, location), location, location)


def register_table(client: Any, catalog: str, schema: str, name: str, location: str, columns_schema: Mapping[str, str], properties: dict[str, str]) -> None:
    """Register (or keep) the external Delta table at ``location``."""
    from databricks.sdk.errors import ResourceAlreadyExists, ResourceConflict
    from databricks.sdk.service.catalog import (
        ColumnInfo,
        ColumnTypeName,
        DataSourceFormat,
        TableType,
    )

    full = f"{catalog}.{schema}.{name}"
    columns = []
    for position, (column, kind) in enumerate(columns_schema.items()):
        type_name = "TIMESTAMP" if kind.startswith("timestamp") else _TYPES.get(kind, "STRING")
        columns.append(ColumnInfo(name=column, type_name=ColumnTypeName(type_name), type_text=type_name.lower(), position=position, nullable=True))
    try:
        client.tables.create(
            name=name, catalog_name=catalog, schema_name=schema, table_type=TableType.EXTERNAL,
            data_source_format=DataSourceFormat.DELTA, storage_location=location, columns=columns, properties=properties,
        )
    except (ResourceConflict, ResourceAlreadyExists):
        return  # registered by an earlier build: the Delta log is the schema's source of truth
    except Exception as exc:
        raise _store_error("register", full, exc) from exc


def _fresh(fetch: Any, what: str) -> Any:
    """Credentials that are not already expired (asked for twice at most)."""
    for _ in range(2):
        try:
            response = fetch()
        except Exception as exc:
            raise _store_error("get storage credentials for", what, exc) from exc
        expires = response.expiration_time
        if expires is None or expires / 1000 > time.time() + 30:
            return response
    raise StoreError(f"Unity Catalog handed out expired storage credentials for {what}", fix="check the workspace clock and the credential vending setup, then retry")


def _options(response: Any, location: str | None, what: str) -> dict[str, str] | None:
    if location is None or location.startswith(("file:", "/")):
        return None  # a local stack: nothing to authenticate
    if response.aws_temp_credentials is not None:
        aws = response.aws_temp_credentials
        return {"AWS_ACCESS_KEY_ID": aws.access_key_id, "AWS_SECRET_ACCESS_KEY": aws.secret_access_key, "AWS_SESSION_TOKEN": aws.session_token}
    if response.azure_user_delegation_sas is not None:
        return {"SAS_TOKEN": response.azure_user_delegation_sas.sas_token}
    raise StoreError(
        f"Unity Catalog vended credentials for {what} that delta-rs cannot use here",
        fix="write this table with engine='pyspark' (the Spark path), which needs no vended credentials",
    )


def _store_error(action: str, what: str, exc: Exception) -> StoreError:
    from databricks.sdk.errors import NotFound, PermissionDenied, TooManyRequests

    fix = "check the workspace URL, the token and that Unity Catalog is enabled"
    if isinstance(exc, PermissionDenied):
        fix = f"grant the principal USE CATALOG/USE SCHEMA and MODIFY/SELECT on {what} (or EXTERNAL USE LOCATION for a new path)"
    elif isinstance(exc, NotFound):
        fix = f"create the catalog and schema of {what} first"
    elif isinstance(exc, TooManyRequests):
        fix = "the workspace is rate limiting; retry later"
    return StoreError(f"Unity Catalog could not {action} {what}: {type(exc).__name__}: {exc}", fix=fix)

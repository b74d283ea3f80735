"""``DynamoDBStore``: the online store in one DynamoDB table.

Table layout: partition key ``pk`` (string) = ``{feature}:{key_text}``; attribute ``v``
(string) = the JSON row of the shared codec (:mod:`mlforge.online.base`); with a TTL,
attribute ``expires_at`` (number, epoch seconds) is DynamoDB's TTL attribute. DynamoDB
deletes expired items lazily (within days), so reads also drop items past
``expires_at`` themselves.

Writes and deletes use ``BatchWriteItem`` (25 items a request), reads ``BatchGetItem``
(100 keys a request; ``read_many`` asks for several features' keys in one request);
unprocessed items and keys are retried with exponential backoff.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from mlforge.errors import MlforgeError, OnlineStoreError, missing_extra
from mlforge.online.base import (
    UNREADABLE,
    OnlineCapabilities,
    chunked,
    decode_row,
    encode_row,
    key_text,
    keyed_rows,
    not_an_mlforge_row,
    ttl_seconds,
)

log = logging.getLogger(__name__)

WRITE_BATCH = 25  # BatchWriteItem limit
READ_BATCH = 100  # BatchGetItem limit
MAX_ATTEMPTS = 8
TTL_ATTRIBUTE = "expires_at"


class DynamoDBStore:
    """Latest feature rows in a DynamoDB table.

    Args:
        table_name: the table; created on first write when ``auto_create`` (on-demand billing).
        region: AWS region (default: the AWS SDK's configuration).
        endpoint_url: e.g. ``http://localhost:8000`` for DynamoDB Local or moto.
        ttl_seconds: rows expire this long after they were written; ``None`` keeps them.
        auto_create: create the table (and enable TTL) when it does not exist.

    Example:
        >>> store = DynamoDBStore("features_online", region="eu-west-1", ttl_seconds=86_400)
        >>> store.item_key("user_spend", {"user_id": 42})
        {'pk': {'S': 'user_spend:42'}}
    """

    capabilities: ClassVar[OnlineCapabilities] = OnlineCapabilities(batched_reads=True)

    kind = "dynamodb"

    def __init__(self, table_name: str, region: str | None = None, endpoint_url: str | None = None, ttl_seconds: float | None = None, auto_create: bool = True):
        if not isinstance(table_name, str) or not table_name:
            from mlforge.errors import ConfigError

            raise ConfigError("DynamoDBStore needs a table_name", fix="DynamoDBStore('features_online')")
        self.table_name = table_name
        self.region = region
        self.endpoint_url = endpoint_url
        self.ttl = _ttl(ttl_seconds)
        self.auto_create = auto_create
        self._client: Any = None
        self._table_ready = False
        self._clock = time.time  # replaceable in tests

    def __repr__(self) -> str:
        return f"DynamoDBStore({self.table_name!r}, region={self.region!r}, endpoint_url={self.endpoint_url!r})"

    # -- client -----------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise missing_extra("boto3", "dynamodb") from None
            config = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
            self._client = self._guard("connect", lambda: boto3.client("dynamodb", region_name=self.region, endpoint_url=self.endpoint_url, config=config))
        return self._client

    def _guard(self, action: str, fn: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            error = OnlineStoreError(
                f"cannot {action}: DynamoDB table {self.table_name!r} answered {code}: {exc.response.get('Error', {}).get('Message', exc)}",
                where=repr(self),
                fix="check the table name, region and the IAM permissions (dynamodb:BatchGetItem, BatchWriteItem, DescribeTable, CreateTable)",
            )
            error.code = code
            raise error from None
        except BotoCoreError as exc:
            raise OnlineStoreError(
                f"cannot {action}: DynamoDB is unreachable: {exc}",
                where=repr(self),
                fix="check endpoint_url, region and AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE...)",
            ) from None
        except MlforgeError:
            raise
        except Exception as exc:  # the client's own failures are the store's too: 503, never 500 (O3)
            raise OnlineStoreError(
                f"cannot {action}: the DynamoDB client failed with {type(exc).__name__}: {exc}",
                where=repr(self),
                fix="retry; if it persists, check endpoint_url, region and the boto3 version",
            ) from None

    def item_key(self, feature: str, key: dict[str, Any]) -> dict[str, Any]:
        return {"pk": {"S": f"{feature}:{key_text(key)}"}}

    # -- table --------------------------------------------------------------------------
    def _table_exists(self) -> bool:
        try:
            self._guard("describe the table", lambda: self.client.describe_table(TableName=self.table_name))
        except OnlineStoreError as exc:
            if exc.code == "ResourceNotFoundException":
                return False
            raise
        return True

    def ensure_table(self) -> None:
        """Create the table (and enable TTL) unless it exists."""
        if self._table_ready:
            return
        if not self._table_exists():
            if not self.auto_create:
                raise OnlineStoreError(f"DynamoDB table {self.table_name!r} does not exist", where=repr(self), fix="create it with partition key 'pk' (string), or pass auto_create=True")
            log.info("creating DynamoDB table %s", self.table_name)
            self._guard("create the table", lambda: self.client.create_table(
                TableName=self.table_name,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            ))
            self._guard("wait for the table", lambda: self.client.get_waiter("table_exists").wait(TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}))
            if self.ttl is not None:
                self._guard("enable TTL", lambda: self.client.update_time_to_live(TableName=self.table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}))
        self._table_ready = True

    # -- protocol -----------------------------------------------------------------------
    def write(self, feature: str, key_columns: list[str], batches: Iterable[Any]) -> int:
        self.ensure_table()
        expires = None if self.ttl is None else str(math.ceil(self._clock() + self.ttl))
        written = 0
        for chunk in chunked(keyed_rows(key_columns, batches), WRITE_BATCH):
            items: dict[str, dict[str, Any]] = {}  # duplicate keys in one request are an error: last wins
            for text, row in chunk:
                item = {"pk": {"S": f"{feature}:{text}"}, "v": {"S": encode_row(row)}}
                if expires is not None:
                    item[TTL_ATTRIBUTE] = {"N": expires}
                items[text] = item
            self._batch_write([{"PutRequest": {"Item": item}} for item in items.values()], feature)
            written += len(chunk)
        return written

    def _batch_write(self, requests: list[dict[str, Any]], feature: str) -> None:
        pending = {self.table_name: requests}
        for attempt in range(MAX_ATTEMPTS):
            answer = self._guard(f"write rows of {feature!r}", lambda p=pending: self.client.batch_write_item(RequestItems=p))
            pending = answer.get("UnprocessedItems") or {}
            if not pending:
                return
            _backoff(attempt)
        raise OnlineStoreError(f"DynamoDB kept {sum(map(len, pending.values()))} rows of {feature!r} unprocessed after {MAX_ATTEMPTS} attempts", where=repr(self), fix="raise the table's write capacity or use on-demand billing")

    def delete(self, feature: str, keys: list[dict[str, Any]]) -> int:
        self.ensure_table()
        texts = list(dict.fromkeys(key_text(k) for k in keys))  # duplicates in one request are an error
        for chunk in chunked(texts, WRITE_BATCH):
            self._batch_write([{"DeleteRequest": {"Key": {"pk": {"S": f"{feature}:{t}"}}}} for t in chunk], feature)
        return len(keys)

    def read(self, feature: str, keys: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        pks = [f"{feature}:{key_text(k)}" for k in keys]
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunked(list(dict.fromkeys(pks)), READ_BATCH):  # duplicates are an error
            found.update(self._live_items(chunk, feature))
        return [self._decoded(found[pk], feature) if pk in found else None for pk in pks]

    def read_many(self, requests: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any] | None]]:
        """Several features in one ``BatchGetItem`` (up to its 100 keys; more: feature by feature)."""
        pks = {feature: [f"{feature}:{key_text(k)}" for k in keys] for feature, keys in requests.items()}
        wanted = list(dict.fromkeys(pk for feature_pks in pks.values() for pk in feature_pks))
        if len(wanted) > READ_BATCH:
            return {feature: self.read(feature, keys) for feature, keys in requests.items()}
        found = self._live_items(wanted, ", ".join(requests)) if wanted else {}
        return {feature: [self._decoded(found[pk], feature) if pk in found else None for pk in feature_pks] for feature, feature_pks in pks.items()}

    def _decoded(self, item: dict[str, Any], feature: str) -> dict[str, Any]:
        try:
            return decode_row(item["v"]["S"])
        except UNREADABLE as exc:
            raise not_an_mlforge_row(
                f"a stored item of {feature!r}", exc, where=repr(self),
                fix="another program writes to this table: give mlforge its own table, and re-publish with `mlforge build --online`",
            ) from None

    def _live_items(self, pks: list[str], what: str) -> dict[str, dict[str, Any]]:
        """The items of ``pks`` (at most READ_BATCH) that exist and have not expired, by key."""
        now = self._clock()
        found = {}
        for item in self._batch_get([{"pk": {"S": pk}} for pk in pks], what):
            expires = item.get(TTL_ATTRIBUTE)
            if expires is not None and float(expires["N"]) <= now:
                continue
            found[item["pk"]["S"]] = item
        return found

    def _batch_get(self, keys: list[dict[str, Any]], feature: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        pending = {self.table_name: {"Keys": keys}}
        for attempt in range(MAX_ATTEMPTS):
            try:
                answer = self._guard(f"read {feature!r}", lambda p=pending: self.client.batch_get_item(RequestItems=p))
            except OnlineStoreError as exc:
                if exc.code == "ResourceNotFoundException" and self.auto_create:
                    return []  # nothing was ever published: every entity is unknown (O2)
                raise
            items += answer.get("Responses", {}).get(self.table_name, [])
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                return items
            _backoff(attempt)
        raise OnlineStoreError(f"DynamoDB left keys of {feature!r} unprocessed after {MAX_ATTEMPTS} attempts", where=repr(self), fix="raise the table's read capacity or use on-demand billing")

    def ping(self) -> None:
        """DynamoDB answers for this table (a missing table is fine while ``auto_create``)."""
        if not self._table_exists() and not self.auto_create:
            raise OnlineStoreError(f"DynamoDB table {self.table_name!r} does not exist", where=repr(self), fix="create it with partition key 'pk' (string), or pass auto_create=True")

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._guard("close the client", client.close)


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * 2**attempt))


def _ttl(value: Any) -> float | None:
    return ttl_seconds(value, "DynamoDBStore")

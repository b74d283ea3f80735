"""``S3Store``: the versioned layout of ``LocalStore`` in an S3 bucket (or an S3-compatible
service such as MinIO, via ``endpoint_url``). See :mod:`mlforge.offline.objectstore`."""

from __future__ import annotations

import builtins
import os
from typing import Any

from mlforge.errors import MlforgeError, StoreError, missing_extra
from mlforge.offline.blobs import Tagged, join_key
from mlforge.offline.objectstore import ObjectStore


class S3Store(ObjectStore):
    """Feature versions under ``s3://bucket/prefix/``.

    Credentials come from the usual boto3 chain (environment, profile, instance role);
    ``endpoint_url`` (or ``AWS_ENDPOINT_URL_S3``) points at an S3-compatible service.

    >>> S3Store("my-bucket", prefix="features")
    S3Store('s3://my-bucket/features')
    """

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.endpoint_url = endpoint_url
        super().__init__(location=f"s3://{join_key(bucket, self.prefix)}", cache_dir=cache_dir, staging_dir=staging_dir)
        self.blobs = S3Blobs(bucket, self.prefix, region=region, endpoint_url=endpoint_url)

    def __repr__(self) -> str:
        return f"S3Store({self.location!r})"


class S3Blobs:
    """The blob layer over boto3; the client is created on first use. Every client failure
    becomes a :class:`~mlforge.errors.StoreError` saying what failed (a missing bucket, an
    unreachable endpoint, missing credentials, a denied request), where and how to fix it."""

    def __init__(self, bucket: str, prefix: str, *, region: str | None, endpoint_url: str | None):
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.endpoint_url = endpoint_url
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise missing_extra("boto3", "s3", where=f"S3Store('s3://{self.bucket}')") from None
            # Bounded: an unreachable endpoint fails in seconds, not after minutes of retries.
            config = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
            self._client = boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config)
        return self._client

    def _call(self, action: str, key: str, fn: Any, *, absent: tuple[str, ...] = ()) -> Any:
        """``fn()``, with client errors translated; a code in ``absent`` returns ``None``."""
        try:
            return fn()
        except MlforgeError:
            raise
        except Exception as exc:
            if absent and _code(exc) in absent:
                return None
            raise _store_error(action, self.uri(key), exc, self.bucket, self.endpoint_url) from None

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def get(self, key: str) -> bytes | None:
        return self._call("read", key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read(), absent=("NoSuchKey", "404", "NotFound"))

    def put(self, key: str, data: bytes) -> None:
        self._call("write", key, lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        # 412: the object exists; 409: a concurrent conditional put is in flight.
        done = self._call(
            "create", key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*") or True,
            absent=("PreconditionFailed", "412", "ConditionalRequestConflict", "409"),
        )
        return done is not None

    def get_with_tag(self, key: str) -> Tagged | None:
        def read() -> Tagged:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return Tagged(response["Body"].read(), response["ETag"])

        return self._call("read", key, read, absent=("NoSuchKey", "404", "NotFound"))

    def put_if_tag(self, key: str, data: bytes, tag: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        # 412: changed (or created) meanwhile; 409: a concurrent conditional put is in
        # flight; 404: deleted meanwhile (If-Match on a missing key).
        done = self._call(
            "write", key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition) or True,
            absent=("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"),
        )
        return done is not None

    def exists(self, key: str) -> bool:
        found = self._call("check", key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)) or True, absent=("404", "NoSuchKey", "NotFound"))
        if found is None:
            self._check_bucket(key)  # HEAD cannot tell a missing object from a missing bucket
        return found is not None

    def upload(self, local_path: str, key: str) -> None:
        self._call("upload to", key, lambda: self.client.upload_file(local_path, self.bucket, self._key(key)))

    def download(self, key: str, local_path: str) -> None:
        self._call("download", key, lambda: self.client.download_file(self.bucket, self._key(key), local_path))

    def _pages(self, prefix: str, **kwargs: Any) -> Any:
        paginator = self.client.get_paginator("list_objects_v2")
        return paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix) if prefix else _dir(self.prefix), **kwargs)

    def list(self, prefix: str) -> builtins.list[str]:
        strip = len(_dir(self.prefix))
        return self._call("list", prefix, lambda: sorted(obj["Key"][strip:] for page in self._pages(prefix) for obj in page.get("Contents", [])))

    def sizes(self, prefix: str) -> dict[str, int]:
        strip = len(_dir(self.prefix))
        return self._call("list", prefix, lambda: {obj["Key"][strip:]: int(obj["Size"]) for page in self._pages(prefix) for obj in page.get("Contents", [])})

    def children(self, prefix: str) -> builtins.list[str]:
        prefix = _dir(prefix)
        base = len(_dir(self._key(prefix))) if prefix else len(_dir(self.prefix))
        names = self._call("list", prefix, lambda: {p["Prefix"][base:].rstrip("/") for page in self._pages(prefix, Delimiter="/") for p in page.get("CommonPrefixes", [])})
        return sorted(n for n in names if n)

    def delete(self, keys: builtins.list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._call("delete from", keys[start], lambda c=chunk: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": c, "Quiet": True}))

    _bucket_seen = False

    def _check_bucket(self, key: str) -> None:
        if not self._bucket_seen:
            self._call("check the bucket of", key, lambda: self.client.head_bucket(Bucket=self.bucket))
            self._bucket_seen = True


def _dir(prefix: str) -> str:
    return f"{prefix.strip('/')}/" if prefix.strip("/") else ""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _store_error(action: str, uri: str, exc: Exception, bucket: str, endpoint: str | None) -> StoreError:
    """A boto3 failure as what went wrong, where, and how to fix it."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    code = _code(exc)
    service = f"S3 at {endpoint}" if endpoint else "S3"
    if code == "NoSuchBucket" or "NoSuchBucket" in str(exc) or (code in ("404", "NotFound") and action.startswith("check the bucket")):
        return StoreError(f"cannot {action} {uri}: the bucket {bucket!r} does not exist", where=service, fix=f"create the bucket {bucket!r}, or fix the bucket name (S3Store(bucket=...) / 'bucket:' in mlforge.yaml)")
    if isinstance(exc, BotoConnectionError):
        return StoreError(f"cannot {action} {uri}: the endpoint is unreachable ({type(exc).__name__})", where=service, fix="check endpoint_url (or AWS_ENDPOINT_URL_S3), the region and the network; then re-run")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StoreError(f"cannot {action} {uri}: no AWS credentials were found", where=service, fix="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run where an instance role applies")
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
        return StoreError(f"cannot {action} {uri}: access denied ({code})", where=service, fix="check the credentials and that they allow s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on the bucket")
    detail = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
    return StoreError(f"cannot {action} {uri}: {detail}", where=service, fix="check the bucket name, the credentials and the network")

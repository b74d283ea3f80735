"""``S3Store``: the versioned layout of ``LocalStore`` in an S3 bucket (or an S3-compatible
service such as MinIO, via ``endpoint_url``). See :mod:`mlforge.offline.objectstore`."""

from __future__ import annotations

import builtins
import os
from typing import Any

from mlforge.errors import StoreError, missing_extra
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
    """The blob layer over boto3; the client is created on first use."""

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
            except ImportError:
                raise missing_extra("boto3", "s3") from None
            self._client = boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint_url)
        return self._client

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise _store_error("read", self.uri(key), exc) from exc

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except Exception as exc:
            # 412: the object exists; 409: a concurrent conditional put is in flight.
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise
        return True

    def get_with_tag(self, key: str) -> Tagged | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise _store_error("read", self.uri(key), exc) from exc
        return Tagged(response["Body"].read(), response["ETag"])

    def put_if_tag(self, key: str, data: bytes, tag: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except Exception as exc:
            # 412: changed (or created) meanwhile; 409: a concurrent conditional put is in
            # flight; 404: deleted meanwhile (If-Match on a missing key).
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"):
                return False
            raise
        return True

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _store_error("check", self.uri(key), exc) from exc
        return True

    def upload(self, local_path: str, key: str) -> None:
        self.client.upload_file(local_path, self.bucket, self._key(key))

    def download(self, key: str, local_path: str) -> None:
        self.client.download_file(self.bucket, self._key(key), local_path)

    def _pages(self, prefix: str, **kwargs: Any) -> Any:
        paginator = self.client.get_paginator("list_objects_v2")
        return paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix) if prefix else _dir(self.prefix), **kwargs)

    def list(self, prefix: str) -> builtins.list[str]:
        strip = len(_dir(self.prefix))
        return sorted(obj["Key"][strip:] for page in self._pages(prefix) for obj in page.get("Contents", []))

    def sizes(self, prefix: str) -> dict[str, int]:
        strip = len(_dir(self.prefix))
        return {obj["Key"][strip:]: int(obj["Size"]) for page in self._pages(prefix) for obj in page.get("Contents", [])}

    def children(self, prefix: str) -> builtins.list[str]:
        prefix = _dir(prefix)
        base = len(_dir(self._key(prefix))) if prefix else len(_dir(self.prefix))
        names = {p["Prefix"][base:].rstrip("/") for page in self._pages(prefix, Delimiter="/") for p in page.get("CommonPrefixes", [])}
        return sorted(n for n in names if n)

    def delete(self, keys: builtins.list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})


def _dir(prefix: str) -> str:
    return f"{prefix.strip('/')}/" if prefix.strip("/") else ""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _store_error(action: str, uri: str, exc: Exception) -> StoreError:
    return StoreError(f"cannot {action} {uri}: {exc}", fix="check the bucket name, the credentials and the network")

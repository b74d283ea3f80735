"""``GCSStore``: the versioned layout of ``LocalStore`` in a Google Cloud Storage bucket.
See :mod:`mlforge.offline.objectstore`."""

from __future__ import annotations

import builtins
import contextlib
import os
from typing import Any

from mlforge.errors import MlforgeError, StoreError, missing_extra
from mlforge.offline.blobs import Tagged, join_key
from mlforge.offline.objectstore import ObjectStore

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
#: Seconds the client keeps retrying a failing request before the store reports it.
RETRY_TIMEOUT = 30.0


class GCSStore(ObjectStore):
    """Feature versions under ``gs://bucket/prefix/``.

    Credentials come from Application Default Credentials. ``endpoint_url`` (or the
    ``STORAGE_EMULATOR_HOST`` environment variable) points at an emulator, which is used
    with anonymous credentials.

    >>> GCSStore("my-bucket", prefix="features")
    GCSStore('gs://my-bucket/features')
    """

    kind = "gcs"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        project: str | None = None,
        endpoint_url: str | None = None,
        retry_timeout: float = RETRY_TIMEOUT,
        cache_dir: str | os.PathLike[str] | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        super().__init__(location=f"gs://{join_key(bucket, self.prefix)}", cache_dir=cache_dir, staging_dir=staging_dir)
        self.blobs = GCSBlobs(bucket, self.prefix, project=project, endpoint_url=endpoint_url, retry_timeout=retry_timeout)

    def __repr__(self) -> str:
        return f"GCSStore({self.location!r})"


class GCSBlobs:
    """The blob layer over google-cloud-storage; the client is created on first use. Every
    client failure becomes a :class:`~mlforge.errors.StoreError` saying what failed (a
    missing bucket, an unreachable endpoint, missing credentials, a denied request), where
    and how to fix it; retries stop after ``retry_timeout`` seconds."""

    def __init__(self, bucket: str, prefix: str, *, project: str | None, endpoint_url: str | None, retry_timeout: float = RETRY_TIMEOUT):
        self.bucket_name = bucket
        self.prefix = prefix
        self.project = project
        self.endpoint_url = endpoint_url
        self.retry_timeout = float(retry_timeout)
        self._bucket: Any = None
        self._bucket_seen = False

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            try:
                from google.cloud import storage
            except ImportError:
                raise missing_extra("google-cloud-storage", "gcs", where=f"GCSStore('gs://{self.bucket_name}')") from None
            endpoint = self.endpoint
            if endpoint:
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(project=self.project or "mlforge", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint})
            else:
                client = self._call("connect to", "", lambda: storage.Client(project=self.project))
            self._bucket = client.bucket(self.bucket_name)
        return self._bucket

    @property
    def endpoint(self) -> str | None:
        endpoint = self.endpoint_url or os.environ.get(EMULATOR_ENV)
        if endpoint and "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        return endpoint

    @property
    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_timeout)

    def _call(self, action: str, key: str, fn: Any) -> Any:
        try:
            return fn()
        except (MlforgeError, _Absent):
            raise
        except Exception as exc:
            raise self._error(action, key, exc) from None

    def _error(self, action: str, key: str, exc: Exception) -> StoreError:
        """A google-cloud-storage failure as what went wrong, where, and how to fix it."""
        from google.api_core import exceptions as api

        uri, service = self.uri(key), self._service
        if isinstance(exc, api.NotFound):
            if action == "download":  # a listed object vanished; the bucket answered
                return StoreError(f"cannot download {uri}: the object does not exist", where=service, fix="the version's files changed under it: run `mlforge sync`, or `mlforge rollback` to another version")
            return self._no_bucket(action, key)
        if isinstance(exc, (api.Forbidden, api.Unauthorized)):
            return StoreError(f"cannot {action} {uri}: access denied ({type(exc).__name__})", where=service, fix="check the credentials and that they may list, read, create and delete objects in the bucket (roles/storage.objectAdmin)")
        if type(exc).__name__ == "DefaultCredentialsError":
            return StoreError(f"cannot {action} {uri}: no Google Cloud credentials were found", where=service, fix="run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS")
        if isinstance(exc, (api.RetryError, api.ServiceUnavailable, api.GatewayTimeout, ConnectionError, TimeoutError, OSError)) or "Connection" in type(exc).__name__:
            return StoreError(f"cannot {action} {uri}: the endpoint is unreachable ({type(exc).__name__}, gave up after {self.retry_timeout:g}s)", where=service, fix=f"check the network{' and endpoint_url / ' + EMULATOR_ENV if self.endpoint else ''}; then re-run")
        return StoreError(f"cannot {action} {uri}: {type(exc).__name__}: {exc}", where=service, fix="check the bucket name, the credentials and the network")

    @property
    def _service(self) -> str:
        return f"GCS at {self.endpoint}" if self.endpoint else "GCS"

    def _no_bucket(self, action: str, key: str) -> StoreError:
        return StoreError(
            f"cannot {action} {self.uri(key)}: the bucket {self.bucket_name!r} does not exist",
            where=self._service,
            fix=f"create the bucket {self.bucket_name!r}, or fix the bucket name (GCSStore(bucket=...) / 'bucket:' in mlforge.yaml)",
        )

    def _check_bucket(self, key: str) -> None:
        """A missing object and a missing bucket look alike on object calls: tell them apart once."""
        if self._bucket_seen:
            return
        if not self._call("check the bucket of", key, lambda: self.bucket.exists(retry=self._retry)):
            raise self._no_bucket("read", key)
        self._bucket_seen = True

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._key(key)}"

    def get(self, key: str) -> bytes | None:
        try:
            return self._call("read", key, lambda: self._get(key))
        except _Absent:
            self._check_bucket(key)
            return None

    def _get(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._key(key)).download_as_bytes(retry=self._retry)
        except NotFound:
            raise _Absent from None

    def put(self, key: str, data: bytes) -> None:
        self._call("write", key, lambda: self.bucket.blob(self._key(key)).upload_from_string(data, content_type="application/json", retry=self._retry))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        def create() -> bool:
            try:
                self.bucket.blob(self._key(key)).upload_from_string(data, content_type="application/json", if_generation_match=0, retry=self._retry)
            except PreconditionFailed:
                return False
            return True

        return self._call("create", key, create)

    def get_with_tag(self, key: str) -> Tagged | None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        def read() -> Tagged | None:
            for _ in range(5):
                blob = self.bucket.get_blob(self._key(key), retry=self._retry)
                if blob is None:
                    return None
                generation = blob.generation  # read first: a download resets it from its headers
                try:  # the bytes of exactly that generation; a newer one means read again
                    return Tagged(blob.download_as_bytes(if_generation_match=generation, retry=self._retry), str(generation))
                except (PreconditionFailed, NotFound):
                    continue
            raise StoreError(f"{self.uri(key)} kept changing while it was read", where=self._service, fix="retry")

        found = self._call("read", key, read)
        if found is None:
            self._check_bucket(key)
        return found

    def put_if_tag(self, key: str, data: bytes, tag: str | None) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        def write() -> bool:
            try:
                self.bucket.blob(self._key(key)).upload_from_string(data, content_type="application/json", if_generation_match=int(tag) if tag is not None else 0, retry=self._retry)
            except PreconditionFailed:
                return False
            return True

        return self._call("write", key, write)

    def exists(self, key: str) -> bool:
        found = bool(self._call("check", key, lambda: self.bucket.blob(self._key(key)).exists(retry=self._retry)))
        if not found:
            self._check_bucket(key)
        return found

    def sizes(self, prefix: str) -> dict[str, int]:
        strip = len(self._dir(""))
        return self._call("list", prefix, lambda: {b.name[strip:]: int(b.size) for b in self.bucket.client.list_blobs(self.bucket, prefix=self._dir(prefix), retry=self._retry)})

    def upload(self, local_path: str, key: str) -> None:
        self._call("upload to", key, lambda: self.bucket.blob(self._key(key)).upload_from_filename(local_path, content_type="application/octet-stream", retry=self._retry))

    def download(self, key: str, local_path: str) -> None:
        self._call("download", key, lambda: self.bucket.blob(self._key(key)).download_to_filename(local_path, retry=self._retry))

    def _dir(self, prefix: str) -> str:
        full = self._key(prefix) if prefix else self.prefix
        return f"{full.strip('/')}/" if full.strip("/") else ""

    def list(self, prefix: str) -> builtins.list[str]:
        strip = len(self._dir(""))
        return self._call("list", prefix, lambda: sorted(b.name[strip:] for b in self.bucket.client.list_blobs(self.bucket, prefix=self._dir(prefix), retry=self._retry)))

    def children(self, prefix: str) -> builtins.list[str]:
        base = self._dir(prefix)

        def names() -> list[str]:
            pages = self.bucket.client.list_blobs(self.bucket, prefix=base, delimiter="/", retry=self._retry)
            for _ in pages:  # the prefixes are filled while iterating
                pass
            return sorted(p[len(base):].rstrip("/") for p in pages.prefixes if p[len(base):].rstrip("/"))

        return self._call("list", prefix, names)

    def delete(self, keys: builtins.list[str]) -> None:
        from google.api_core.exceptions import NotFound

        for key in keys:
            with contextlib.suppress(NotFound):
                self.bucket.blob(self._key(key)).delete(retry=self._retry)


class _Absent(Exception):
    """An object that does not exist (not an error of the store)."""

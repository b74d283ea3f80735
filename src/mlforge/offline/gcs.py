"""``GCSStore``: the versioned layout of ``LocalStore`` in a Google Cloud Storage bucket.
See :mod:`mlforge.offline.objectstore`."""

from __future__ import annotations

import builtins
import contextlib
import os
from typing import Any

from mlforge.errors import StoreError, missing_extra
from mlforge.offline.blobs import Tagged, join_key
from mlforge.offline.objectstore import ObjectStore

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


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
        cache_dir: str | os.PathLike[str] | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        super().__init__(location=f"gs://{join_key(bucket, self.prefix)}", cache_dir=cache_dir, staging_dir=staging_dir)
        self.blobs = GCSBlobs(bucket, self.prefix, project=project, endpoint_url=endpoint_url)

    def __repr__(self) -> str:
        return f"GCSStore({self.location!r})"


class GCSBlobs:
    """The blob layer over google-cloud-storage; the client is created on first use."""

    def __init__(self, bucket: str, prefix: str, *, project: str | None, endpoint_url: str | None):
        self.bucket_name = bucket
        self.prefix = prefix
        self.project = project
        self.endpoint_url = endpoint_url
        self._bucket: Any = None

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            try:
                from google.cloud import storage
            except ImportError:
                raise missing_extra("google-cloud-storage", "gcs") from None
            endpoint = self.endpoint_url or os.environ.get(EMULATOR_ENV)
            if endpoint:
                from google.auth.credentials import AnonymousCredentials

                if "://" not in endpoint:
                    endpoint = f"http://{endpoint}"
                client = storage.Client(project=self.project or "mlforge", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint})
            else:
                client = storage.Client(project=self.project)
            self._bucket = client.bucket(self.bucket_name)
        return self._bucket

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._key(key)}"

    def get(self, key: str) -> bytes | None:
        from google.api_core.exceptions import GoogleAPIError, NotFound

        try:
            return self.bucket.blob(self._key(key)).download_as_bytes()
        except NotFound:
            return None
        except GoogleAPIError as exc:
            raise StoreError(f"cannot read {self.uri(key)}: {exc}", fix="check the bucket name, the credentials and the network") from exc

    def put(self, key: str, data: bytes) -> None:
        self.bucket.blob(self._key(key)).upload_from_string(data, content_type="application/json")

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.bucket.blob(self._key(key)).upload_from_string(data, content_type="application/json", if_generation_match=0)
        except PreconditionFailed:
            return False
        return True

    def get_with_tag(self, key: str) -> Tagged | None:
        from google.api_core.exceptions import GoogleAPIError, NotFound, PreconditionFailed

        try:
            for _ in range(5):
                blob = self.bucket.get_blob(self._key(key))
                if blob is None:
                    return None
                generation = blob.generation  # read first: a download resets it from its headers
                try:  # the bytes of exactly that generation; a newer one means read again
                    return Tagged(blob.download_as_bytes(if_generation_match=generation), str(generation))
                except (PreconditionFailed, NotFound):
                    continue
        except GoogleAPIError as exc:
            raise StoreError(f"cannot read {self.uri(key)}: {exc}", fix="check the bucket name, the credentials and the network") from exc
        raise StoreError(f"{self.uri(key)} kept changing while it was read", fix="retry")

    def put_if_tag(self, key: str, data: bytes, tag: str | None) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.bucket.blob(self._key(key)).upload_from_string(data, content_type="application/json", if_generation_match=int(tag) if tag is not None else 0)
        except PreconditionFailed:
            return False
        return True

    def exists(self, key: str) -> bool:
        return bool(self.bucket.blob(self._key(key)).exists())

    def sizes(self, prefix: str) -> dict[str, int]:
        strip = len(self._dir(""))
        return {b.name[strip:]: int(b.size) for b in self.bucket.client.list_blobs(self.bucket, prefix=self._dir(prefix))}

    def upload(self, local_path: str, key: str) -> None:
        self.bucket.blob(self._key(key)).upload_from_filename(local_path, content_type="application/octet-stream")

    def download(self, key: str, local_path: str) -> None:
        self.bucket.blob(self._key(key)).download_to_filename(local_path)

    def _dir(self, prefix: str) -> str:
        full = self._key(prefix) if prefix else self.prefix
        return f"{full.strip('/')}/" if full.strip("/") else ""

    def list(self, prefix: str) -> builtins.list[str]:
        strip = len(self._dir(""))
        return sorted(b.name[strip:] for b in self.bucket.client.list_blobs(self.bucket, prefix=self._dir(prefix)))

    def children(self, prefix: str) -> builtins.list[str]:
        base = self._dir(prefix)
        pages = self.bucket.client.list_blobs(self.bucket, prefix=base, delimiter="/")
        for _ in pages:  # the prefixes are filled while iterating
            pass
        return sorted(p[len(base):].rstrip("/") for p in pages.prefixes if p[len(base):].rstrip("/"))

    def delete(self, keys: builtins.list[str]) -> None:
        from google.api_core.exceptions import NotFound

        for key in keys:
            with contextlib.suppress(NotFound):
                self.bucket.blob(self._key(key)).delete()

"""A tiny object-store interface: the only layer in which Local, S3 and GCS stores differ.

Keys are ``/``-separated and relative to the store's root (bucket + prefix, or a local
directory). Every operation is a single object operation; the versioning logic above it
(:mod:`mlforge.offline.versioned`) relies on only two guarantees:

* ``put`` replaces an object atomically: a reader sees the old bytes or the new ones;
* ``put_if_absent`` creates an object only if no object has that key, atomically, and says
  whether it did (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, local ``link(2)``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol


class Blobs(Protocol):
    """What a store needs from a filesystem or an object store."""

    def uri(self, key: str) -> str: ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or ``None`` when there is no such object."""

    def put(self, key: str, data: bytes) -> None:
        """Create or atomically replace an object."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create an object unless one exists; ``False`` if it existed (nothing written)."""

    def exists(self, key: str) -> bool: ...

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` with its size in bytes, from one listing."""

    def upload(self, local_path: str, key: str) -> None: ...

    def download(self, key: str, local_path: str) -> None: ...

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursively), sorted."""

    def children(self, prefix: str) -> list[str]:
        """The names of the "directories" directly under ``prefix``."""

    def delete(self, keys: list[str]) -> None:
        """Delete objects; missing ones are ignored."""


def join_key(prefix: str, key: str) -> str:
    """``prefix/key`` with no doubled or leading slashes.

    >>> join_key("a/b/", "c"), join_key("", "c")
    ('a/b/c', 'c')
    """
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


class LocalBlobs:
    """Objects as files under a local directory; writes are durable (fsync) and atomic."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        tmp = self._write_temp(target, data)
        os.replace(tmp, target)
        fsync_dir(target.parent)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        tmp = self._write_temp(target, data)
        try:
            os.link(tmp, target)  # fails if the target exists: an atomic create-only
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(target.parent)
        return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def sizes(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix)
        if not base.is_dir():
            return {}
        return {p.relative_to(self.root).as_posix(): p.stat().st_size for p in sorted(base.rglob("*")) if p.is_file()}

    def upload(self, local_path: str, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_path, target)

    def download(self, key: str, local_path: str) -> None:
        shutil.copyfile(self._path(key), local_path)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def children(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    @staticmethod
    def _write_temp(target: Path, data: bytes) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


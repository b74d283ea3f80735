"""A tiny object-store interface: the only layer in which Local, S3 and GCS stores differ.

Keys are ``/``-separated and relative to the store's root (bucket + prefix, or a local
directory). Every operation is a single object operation; the versioning logic above it
(:mod:`mlforge.offline.versioned`) relies on only two guarantees:

* ``put`` replaces an object atomically: a reader sees the old bytes or the new ones;
* ``put_if_absent`` creates an object only if no object has that key, atomically, and says
  whether it did (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, local ``link(2)``);
* ``put_if_tag`` replaces an object only if it is still in the state a ``get_with_tag``
  saw, atomically (S3 ``If-Match`` on the ETag, GCS ``ifGenerationMatch`` on the
  generation, local a compare and ``rename(2)`` under an ``flock(2)`` lock file). The latest
  pointer moves by this compare-and-swap (S8).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import NamedTuple, Protocol

from mlforge.errors import StoreError


class Tagged(NamedTuple):
    """An object's bytes and a tag naming that state of it, for :meth:`Blobs.put_if_tag`."""

    data: bytes
    tag: str


class Blobs(Protocol):
    """What a store needs from a filesystem or an object store."""

    def uri(self, key: str) -> str: ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or ``None`` when there is no such object."""

    def put(self, key: str, data: bytes) -> None:
        """Create or atomically replace an object."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create an object unless one exists; ``False`` if it existed (nothing written)."""

    def get_with_tag(self, key: str) -> Tagged | None:
        """The object's bytes and its tag (ETag, generation, content hash), or ``None``."""

    def put_if_tag(self, key: str, data: bytes, tag: str | None) -> bool:
        """Replace the object only if its tag is still ``tag`` (``None``: only if there is no
        object); ``False`` if it changed meanwhile (nothing written)."""

    def exists(self, key: str) -> bool: ...

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` with its size in bytes, from one listing."""

    def upload(self, local_path: str, key: str) -> None: ...

    def download(self, key: str, local_path: str) -> None: ...

    def list(self, prefix: str) -> builtins.list[str]:
        """Every key under ``prefix`` (recursively), sorted."""

    def children(self, prefix: str) -> builtins.list[str]:
        """The names of the "directories" directly under ``prefix``."""

    def delete(self, keys: builtins.list[str]) -> None:
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
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # a directory where a file belongs, no permission: E1, not a bare OSError
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}", where=str(path), fix=f"mlforge keeps a file there: move {path} aside or restore it, and check its permissions") from None

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        tmp = self._write_temp(target, data)
        try:
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise disk_error("write", target, exc) from None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        tmp = self._write_temp(target, data)
        try:
            os.link(tmp, target)  # fails if the target exists: an atomic create-only
        except FileExistsError:
            return False
        except OSError as exc:
            raise disk_error("create", target, exc) from None
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(target.parent)
        return True

    def get_with_tag(self, key: str) -> Tagged | None:
        data = self.get(key)
        return None if data is None else Tagged(data, _content_tag(data))

    def put_if_tag(self, key: str, data: bytes, tag: str | None) -> bool:
        # The content is the tag: whoever holds the lock sees exactly what it compares with.
        target = self._path(key)
        tmp = self._write_temp(target, data)
        try:
            with _locked(target.parent / f".{target.name}.lock"):
                current = self.get(key)
                if (None if current is None else _content_tag(current)) != tag:
                    return False
                os.replace(tmp, target)
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
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path, target)
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise disk_error("write", target, exc) from None

    def download(self, key: str, local_path: str) -> None:
        shutil.copyfile(self._path(key), local_path)

    def list(self, prefix: str) -> builtins.list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def children(self, prefix: str) -> builtins.list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def delete(self, keys: builtins.list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    @staticmethod
    def _write_temp(target: Path, data: bytes) -> Path:
        """``data`` in a temporary file beside ``target``; on any failure (a full disk) the
        temporary file is removed and the error says what, where and how to fix it."""
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise disk_error("write", target, exc) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp


def disk_error(action: str, path: str | os.PathLike[str], exc: OSError, *, where: str | None = None) -> StoreError:
    """A failed local write as a :class:`StoreError`: a full disk or quota, a read-only
    filesystem, a permission; nothing half-written is left behind by the callers."""
    fixes = {
        errno.ENOSPC: "free space on that filesystem (or point the store elsewhere) and re-run; nothing was changed",
        errno.EDQUOT: "raise the disk quota or free space, and re-run; nothing was changed",
        errno.EROFS: "the filesystem is read-only: point the store at a writable path",
        errno.EACCES: "check the permissions of the store's directory",
        errno.EPERM: "check the permissions of the store's directory",
    }
    reason = exc.strerror or type(exc).__name__
    return StoreError(f"cannot {action} {path}: {reason}", where=where or str(Path(path).parent), fix=fixes.get(exc.errno or 0, "check the disk and the permissions of the store's directory, then re-run"))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _content_tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Generator[None]:
    """Hold an exclusive ``flock(2)`` on ``lock_path``; the kernel releases it if the
    process dies, so a killed build never leaves the pointer locked."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

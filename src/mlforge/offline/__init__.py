"""Versioned offline stores behind one protocol: local, S3 and GCS share one implementation
(:mod:`mlforge.offline.versioned`) over a tiny blob layer (:mod:`mlforge.offline.blobs`).

``S3Store`` and ``GCSStore`` live in their own modules so that importing this package never
imports a cloud SDK (their clients are created on first use anyway).
"""

from mlforge.offline.base import OfflineStore, Staging, resolve_version
from mlforge.offline.local import LocalStore
from mlforge.offline.versioned import VersionedStore

__all__ = ["LocalStore", "OfflineStore", "Staging", "VersionedStore", "resolve_version"]

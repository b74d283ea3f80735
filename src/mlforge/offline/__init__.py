"""Versioned offline stores behind one protocol (local today; S3, GCS, Unity Catalog next)."""

from mlforge.offline.base import OfflineStore, Staging, resolve_version
from mlforge.offline.local import LocalStore

__all__ = ["LocalStore", "OfflineStore", "Staging", "resolve_version"]

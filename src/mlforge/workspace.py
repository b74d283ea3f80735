"""``Workspace``: the stores and engines a project runs on, typed, for the services.

The services (``materialize``, ``publishing``, ``operations``, ``retrieval``) take a
``Workspace`` and the features they work on; only the public face
(:class:`mlforge.project.Definitions`), the loader, the server, the integrations and the
CLI know ``Definitions``.

>>> from mlforge.offline.local import LocalStore
>>> ws = Workspace(LocalStore("feature_store"))
>>> ws.engine_for().name
'duckdb'
>>> ws.close()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlforge.engines import get_engine
from mlforge.engines.base import Engine

if TYPE_CHECKING:
    from mlforge.definitions.feature import Feature
    from mlforge.offline.base import OfflineStore
    from mlforge.online.base import OnlineStore


@dataclass
class Workspace:
    """Where a project's features are stored and served, and the engines that build them.

    Attributes:
        offline_store: the versioned offline store.
        online_store: the online store, or ``None``.
        engine_spec: the project's engine: a name, an engine object, a SparkSession or
            ``None`` (the embedded default, DuckDB).
    """

    offline_store: OfflineStore
    online_store: OnlineStore | None = None
    engine_spec: Any = None
    _engines: dict[str, Engine] = field(default_factory=dict, repr=False)

    @property
    def engine_name(self) -> str | None:
        """The name of the project's engine, when it is known without creating it."""
        spec = self.engine_spec
        if isinstance(spec, str):
            return spec.lower()
        return spec.name if isinstance(spec, Engine) else None

    def engine_for(self, feature: Feature | None = None, override: Any = None) -> Engine:
        """The engine to run ``feature`` on: build override > feature's own > project's.

        Engines made from names are created once and reused until :meth:`close`."""
        spec = override if override is not None else (feature.engine if feature is not None and feature.engine else self.engine_spec)
        if isinstance(spec, Engine):
            return spec
        key = spec.lower() if isinstance(spec, str) else ("duckdb" if spec is None else f"obj-{id(spec)}")
        if key not in self._engines:
            self._engines[key] = get_engine(spec)
        return self._engines[key]

    def close(self) -> None:
        """Close the engines this workspace created."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

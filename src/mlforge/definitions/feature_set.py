"""What a retrieval asks for: :class:`FeatureSpec` (one feature, maybe pinned) and
:class:`FeatureSet` (a named list of them, declared once for training and serving)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlforge.definitions.feature import Feature
from mlforge.definitions.names import check_name
from mlforge.errors import DefinitionError, DefinitionErrors, RetrievalError

# The shape of a semver version (``versioning.is_version`` says the same; definitions sit
# below it and cannot import it).
_VERSION = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


@dataclass(frozen=True)
class FeatureSpec:
    """A requested feature: its name, optionally some of its value columns and a pinned version.

    ``"f"``, ``("f", "1.2.0")`` and ``FeatureSpec("f", version="1.2.0")`` are all accepted
    wherever a list of features is.

    >>> FeatureSpec("user_spend", columns=["spend_7d"], version="1.0.0").columns
    ('spend_7d',)
    """

    name: str
    columns: tuple[str, ...] | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise RetrievalError(f"a feature name must be a non-empty string, got {self.name!r}", fix="FeatureSpec('user_spend')")
        if self.columns is not None:
            cols = (self.columns,) if isinstance(self.columns, str) else tuple(self.columns)
            if not cols or not all(isinstance(c, str) and c for c in cols):
                raise RetrievalError(f"columns of feature {self.name!r} must be non-empty column names", fix="FeatureSpec('user_spend', columns=['spend_7d'])")
            object.__setattr__(self, "columns", cols)

    @classmethod
    def of(cls, item: Any) -> FeatureSpec:
        """A spec from a name, a ``(name, version)`` tuple, a spec or a ``Feature``."""
        if isinstance(item, FeatureSpec):
            return item
        if isinstance(item, str):
            return cls(item)
        if isinstance(item, tuple) and len(item) == 2 and all(isinstance(v, str) for v in item):
            return cls(item[0], version=item[1])
        if isinstance(item, Feature):
            return cls(item.name)
        raise RetrievalError(f"cannot read {item!r} as a feature request", fix="pass 'name', ('name', '1.2.0') or mlf.FeatureSpec(name, columns=..., version=...)")

    def pinned(self, version: str) -> FeatureSpec:
        """The same request, pinned to ``version``."""
        return FeatureSpec(self.name, columns=self.columns, version=version)


@dataclass(frozen=True, init=False)
class FeatureSet:
    """A named set of features, declared next to them and used for training and serving.

    Members are names, ``(name, version)`` pairs (a pinned version), ``FeatureSpec`` objects
    or ``@mlf.feature`` functions. A set is accepted wherever a feature list is; the versions
    it resolves to (pinned ones as given, the others the latest at the time) are recorded
    with every training set it produces, and serving it reads exactly those versions.

    Args:
        name: the set's name (letters, digits, ``_``, ``-``); it must not be a feature's name.
        features: the members, in the order their columns appear.
        description: what the set is for.

    Example:
        >>> import mlforge as mlf
        >>> delays = mlf.FeatureSet("delays", features=["carrier_delays", ("route_delays", "1.2.0")])
        >>> [(s.name, s.version) for s in delays.specs]
        [('carrier_delays', None), ('route_delays', '1.2.0')]

    Raises:
        DefinitionError: a bad name, no members, a member that is not a feature request,
            a malformed version, or the same feature twice.
    """

    name: str
    specs: tuple[FeatureSpec, ...]
    description: str | None

    def __init__(self, name: str, features: Sequence[Any] = (), *, description: str | None = None):
        check_name(name, kind="feature set")
        where = f"feature set {name!r}"
        if isinstance(features, (str, FeatureSpec, Feature)) or not isinstance(features, Sequence) or not features:
            raise DefinitionError("a feature set needs a list of at least one feature", where=where, fix=f"mlf.FeatureSet({name!r}, features=['user_spend', ('merchant_activity', '1.0.0')])")
        specs: list[FeatureSpec] = []
        problems: list[DefinitionError] = []
        for item in features:
            try:
                spec = FeatureSpec.of(item)
            except RetrievalError as exc:
                problems.append(DefinitionError(exc.what, where=where, fix=exc.fix))
                continue
            if spec.version is not None and not _VERSION.fullmatch(spec.version):
                problems.append(DefinitionError(f"version {spec.version!r} of feature {spec.name!r} is not a version like 1.2.0", where=where, fix=f"pin a stored version, e.g. ({spec.name!r}, '1.0.0'), or give the name alone for the latest"))
            if any(s.name == spec.name for s in specs):
                problems.append(DefinitionError(f"feature {spec.name!r} is in the set twice", where=where, fix="list each feature once (select several columns with mlf.FeatureSpec(name, columns=[...]))"))
            specs.append(spec)
        DefinitionErrors.raise_if_any(problems)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "specs", tuple(specs))
        object.__setattr__(self, "description", description)

    def __repr__(self) -> str:
        members = ", ".join(s.name if s.version is None else f"{s.name}@{s.version}" for s in self.specs)
        return f"FeatureSet({self.name!r}, [{members}])"

    @property
    def feature_names(self) -> list[str]:
        """The member features' names, in order."""
        return [s.name for s in self.specs]

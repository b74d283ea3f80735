"""Entities: what a feature row is about, and how its join key is made (contract K1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import InitVar, dataclass

from mlforge.definitions.names import check_name
from mlforge.errors import DefinitionError


@dataclass(frozen=True)
class Entity:
    """A business entity with a join key.

    With ``from_columns`` the join key is a surrogate key computed from those columns
    (rule K1): the first 16 bytes of SHA-256 over ``v1 \\x1f v2 \\x1f ...`` as hex.

    >>> Entity(name="user", join_key="user_id").key_columns
    ('user_id',)

    Feast's spelling of one join key, ``join_keys=["user_id"]``, is accepted too:

    >>> Entity(name="user", join_keys=["user_id"]).join_key
    'user_id'
    """

    name: str
    join_key: str = ""
    from_columns: tuple[str, ...] | None = None
    join_keys: InitVar[Sequence[str] | None] = None

    def __post_init__(self, join_keys: Sequence[str] | None) -> None:
        check_name(self.name, kind="entity")
        if join_keys is not None:
            keys = [join_keys] if isinstance(join_keys, str) else list(join_keys)
            if self.join_key:
                raise DefinitionError(f"entity {self.name!r} has both join_key={self.join_key!r} and join_keys={keys!r}", fix="give one of them: Entity(name='user', join_key='user_id')")
            if len(keys) != 1:
                raise DefinitionError(
                    f"entity {self.name!r}: join_keys={keys!r}, but an entity has exactly one join key column",
                    fix="Entity(name='user', join_key='user_id'); for a key made of several columns, a surrogate key: Entity(name='route', join_key='route_id', from_columns=['origin', 'dest'])",
                )
            object.__setattr__(self, "join_key", keys[0])
        if not isinstance(self.join_key, str) or not self.join_key:
            raise DefinitionError(
                f"entity {self.name!r} needs a join_key column name",
                fix="Entity(name='user', join_key='user_id')",
            )
        if self.from_columns is not None:
            cols = (self.from_columns,) if isinstance(self.from_columns, str) else tuple(self.from_columns)
            if not cols or not all(isinstance(c, str) and c for c in cols):
                raise DefinitionError(
                    f"entity {self.name!r}: from_columns must be a non-empty list of column names",
                    fix="Entity(name='route', join_key='route_id', from_columns=['origin', 'dest'])",
                )
            if self.join_key in cols:
                raise DefinitionError(
                    f"entity {self.name!r}: join_key {self.join_key!r} cannot also be one of from_columns",
                    fix="name the surrogate key column differently, e.g. f'{name}_id'",
                )
            object.__setattr__(self, "from_columns", cols)

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The single column that identifies the entity in stored features."""
        return (self.join_key,)

    @property
    def is_surrogate(self) -> bool:
        return self.from_columns is not None

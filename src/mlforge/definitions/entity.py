"""Entities: what a feature row is about, and how its join key is made (contract K1)."""

from __future__ import annotations

from dataclasses import dataclass

from mlforge.definitions.names import check_name
from mlforge.errors import DefinitionError


@dataclass(frozen=True)
class Entity:
    """A business entity with a join key.

    With ``from_columns`` the join key is a surrogate key computed from those columns
    (rule K1): the first 16 bytes of SHA-256 over ``v1 \\x1f v2 \\x1f ...`` as hex.

    >>> Entity(name="user", join_key="user_id").key_columns
    ('user_id',)
    """

    name: str
    join_key: str
    from_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_name(self.name, kind="entity")
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

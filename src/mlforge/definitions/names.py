"""Names that become paths, table names or keys (contract E4)."""

from __future__ import annotations

import re

from mlforge.errors import DefinitionError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
MAX_LENGTH = 200


def _shown(name: str) -> str:
    """``name`` as a message shows it: a hostile 1,000-character name is cut, not echoed."""
    return repr(name) if len(name) <= 60 else f"{name[:40]!r}... ({len(name)} characters)"


def check_name(name: object, *, kind: str) -> str:
    """Return ``name`` if it is safe as a path segment, table name and key; raise otherwise."""
    if not isinstance(name, str) or not name:
        raise DefinitionError(
            f"{kind} name {name!r} is empty or not a string",
            fix=f"give the {kind} a name of letters, digits, '_' or '-'",
        )
    if len(name) > MAX_LENGTH:
        raise DefinitionError(f"{kind} name {_shown(name)} is longer than {MAX_LENGTH} characters", fix=f"use a name of at most {MAX_LENGTH} characters")
    if not _NAME.match(name):
        raise DefinitionError(
            f"{kind} name {_shown(name)} is not allowed: names become file paths, table names and keys",
            fix="use letters, digits, '_' and '-' only, starting with a letter or '_' "
            "(no '/', '..', spaces or control characters)",
        )
    return name

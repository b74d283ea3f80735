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
    if re.match(r"_+mlforge", name, flags=re.IGNORECASE):
        raise DefinitionError(
            f"{kind} name {_shown(name)} starts with '_mlforge', which mlforge reserves for its own tables and keys "
            "(Unity Catalog's `_mlforge_metadata`, Databricks' `_mlforge_online_*`)",
            fix=f"rename the {kind} (e.g. {name.lstrip('_')!r})",
        )
    return name


#: Columns mlforge adds while it computes and reads start with this (any case); user
#: columns may not, or an internal column would silently take the user's place (E5).
RESERVED_PREFIX = "__mlforge"
#: The name a source column takes when the engine cannot read it under its own (DuckDB
#: renames ``Amount`` beside ``amount`` to ``Amount_1``): this prefix, then its own name.
#: Unused, it is dropped like any column; in a feature's output it is refused.
UNREADABLE_PREFIX = "__mlforge_unreadable__"


def check_column_name(name: object, *, kind: str, where: str | None = None) -> str:
    """Return ``name`` if every engine carries it through exactly as a column name (E5);
    raise otherwise: empty, a NUL character (DuckDB's parser and Polars stop at it), or
    mlforge's reserved prefix.

    >>> check_column_name("amount; DROP TABLE x", kind="column")
    'amount; DROP TABLE x'
    >>> check_column_name("__mlforge_label", kind="column")
    Traceback (most recent call last):
    ...
    mlforge.errors.DefinitionError: column name '__mlforge_label' starts with '__mlforge', which mlforge reserves for its own columns
      fix: rename the column (e.g. in the feature function: t.rename(new_name='__mlforge_label'))
    """
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"{kind} name {name!r} is empty or not a string", where=where, fix=f"give the {kind} a non-empty name")
    if "\x00" in name:
        raise DefinitionError(f"{kind} name {_shown(name)} contains a NUL character", where=where, fix="remove the NUL character from the name")
    if name.startswith(UNREADABLE_PREFIX):
        given = name[len(UNREADABLE_PREFIX) :]
        raise DefinitionError(
            f"source column {_shown(given)} cannot be read under its own name on this engine: it is empty, repeated, "
            "or differs only by case from another column, and DuckDB (like Spark) resolves names without case",
            where=where,
            fix="rename it in the source file, leave it out of the feature function's output, or build with engine='polars'",
        )
    if name.lower().startswith(RESERVED_PREFIX):
        raise DefinitionError(
            f"{kind} name {_shown(name)} starts with {RESERVED_PREFIX!r}, which mlforge reserves for its own columns",
            where=where,
            fix=f"rename the column (e.g. in the feature function: t.rename(new_name={name!r}))",
        )
    if is_column_pattern(name):
        raise DefinitionError(
            f"{kind} name {_shown(name)} is what Polars reads as a pattern of column names ('*': every column; '^...$': a regular expression), "
            "so the Polars engine would select other columns under it",
            where=where,
            fix="rename the column (e.g. in the feature function: t.rename(amount=" + repr(name) + ")); every engine refuses it, so a version reads the same on each",
        )
    if name in UNCARRIED_NAMES:
        raise DefinitionError(
            f"{kind} name {name!r} is the name Ibis gives a table in its own methods, so mlforge cannot carry a column named so",
            where=where,
            fix=f'rename the column (e.g. in the feature function: t.rename({name}_="{name}"))',
        )
    return name


def is_column_pattern(name: str) -> bool:
    """Whether Polars takes ``name`` as a pattern, not a name: ``pl.col("*")`` is every
    column and ``pl.col("^a.*$")`` every column matching the regular expression.

    >>> is_column_pattern("^amt.*$"), is_column_pattern("*"), is_column_pattern("a*"), is_column_pattern("^a")
    (True, True, False, False)
    """
    return name == "*" or (len(name) > 1 and name.startswith("^") and name.endswith("$"))


#: Column names Ibis's table methods cannot take as named expressions (``select(self=...)``
#: clashes with the method's own first parameter).
UNCARRIED_NAMES = frozenset({"self"})


def check_distinct_columns(names: list[str], *, kind: str, where: str | None = None) -> None:
    """Raise if two of ``names`` differ only by case: DuckDB and Spark resolve column
    names without regard to case, so one would be renamed or lost (E5).

    >>> check_distinct_columns(["user", "spend", "USER"], kind="column")
    Traceback (most recent call last):
    ...
    mlforge.errors.DefinitionError: columns 'user' and 'USER' differ only by case: DuckDB and Spark read them as one column
      fix: rename one of them
    """
    seen: dict[str, str] = {}
    for name in names:
        folded = name.lower()
        if folded in seen and seen[folded] != name:
            raise DefinitionError(f"{kind}s {_shown(seen[folded])} and {_shown(name)} differ only by case: DuckDB and Spark read them as one column", where=where, fix="rename one of them")
        seen.setdefault(folded, name)

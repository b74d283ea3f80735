"""Rolling-window metrics: ``Aggregate`` and its shorthands, and the deprecated ``Rolling``.

A metric aggregates one source field over one or more trailing windows on a feature's
grid (contract W1-W6).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import timedelta

from mlforge.definitions.durations import format_duration, parse_duration
from mlforge.errors import DefinitionError, MlforgeDeprecationWarning

#: The aggregation names a metric may use (W5), checked when a metric is declared. Each has
#: one entry in :data:`mlforge.aggregations.AGGREGATIONS`, which says how it is computed.
FUNCTIONS: tuple[str, ...] = ("count", "sum", "mean", "min", "max", "std", "median")


@dataclass(frozen=True)
class Field:
    """A source column with metadata; accepted wherever a column name is.

    >>> Field("amt", unit="USD").name
    'amt'
    """

    name: str
    description: str | None = None
    unit: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DefinitionError("Field needs a column name", fix="Field('amt', unit='USD')")


@dataclass(frozen=True)
class MetricColumn:
    """One output column of a metric: ``function`` of ``field`` over ``window_seconds``."""

    output_name: str
    field: str
    function: str
    window: str
    window_seconds: int
    description: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Aggregate:
    """Aggregate ``field`` with ``function`` over each of ``windows``.

    Output columns are ``{name}_{window}`` when ``name`` is given, else
    ``{field}_{function}_{window}`` (rule W6).

    Examples:
        >>> [c.output_name for c in Aggregate("amt", "sum", ["7d"], name="spend").columns("f", [])]
        ['spend_7d']
    """

    field: str | Field
    function: str
    windows: tuple[str, ...]
    name: str | None = None
    description: str | None = None
    unit: str | None = None

    def __post_init__(self) -> None:
        field_obj = self.field if isinstance(self.field, Field) else None
        field_name = field_obj.name if field_obj else self.field
        if not isinstance(field_name, str) or not field_name:
            raise DefinitionError(f"Aggregate field {self.field!r} must be a column name or Field", fix="mlf.Sum('amt', windows=['7d'])")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise DefinitionError(
                f"metric name {self.name!r} of the metric on {field_name!r} is empty or not a string",
                where=f"metric on {field_name!r}",
                fix="give a name like name='total_spend', or leave name out for '{field}_{function}_{window}'",
            )
        if self.function not in FUNCTIONS:
            raise DefinitionError(
                f"unknown aggregation {self.function!r} for field {field_name!r}",
                fix=f"use one of {', '.join(FUNCTIONS)}",
            )
        windows = (self.windows,) if isinstance(self.windows, (str, timedelta)) else tuple(self.windows or ())
        if not windows:
            raise DefinitionError(f"metric on {field_name!r} has no windows", fix="pass windows=['7d', '30d']")
        spelled = tuple(
            w if isinstance(w, str) else format_duration(parse_duration(w, where=f"metric on {field_name!r}"))
            for w in windows
        )
        for w in spelled:
            parse_duration(w, where=f"window of metric on {field_name!r}")
        object.__setattr__(self, "windows", spelled)
        if self.description is None and field_obj is not None:
            object.__setattr__(self, "description", field_obj.description)
        if self.unit is None and field_obj is not None:
            object.__setattr__(self, "unit", field_obj.unit)
        object.__setattr__(self, "field", field_name)

    @property
    def field_name(self) -> str:
        """The source column (a ``Field`` is replaced by its name when declared)."""
        return self.field.name if isinstance(self.field, Field) else self.field

    def columns(self, feature_name: str, tags: list[str] | tuple[str, ...]) -> list[MetricColumn]:
        """The output columns this metric produces."""
        out = []
        for window in self.windows:
            name = f"{self.name}_{window}" if self.name else f"{self.field}_{self.function}_{window}"
            out.append(
                MetricColumn(name, self.field_name, self.function, window, parse_duration(window), self.description, self.unit)
            )
        return out


def _shorthand(function: str):
    def make(field: str | Field, windows, *, name: str | None = None, description: str | None = None, unit: str | None = None) -> Aggregate:
        return Aggregate(field, function, windows, name=name, description=description, unit=unit)

    make.__name__ = function.capitalize()
    make.__qualname__ = make.__name__
    make.__doc__ = f"``Aggregate(field, {function!r}, windows, ...)``: the {function} of ``field`` per window."
    return make


Sum = _shorthand("sum")
Count = _shorthand("count")
Mean = _shorthand("mean")
Min = _shorthand("min")
Max = _shorthand("max")
Std = _shorthand("std")
Median = _shorthand("median")


@dataclass(frozen=True)
class Rolling:
    """Deprecated v0.7 metric: ``aggregations`` maps columns to function lists. Emits a
    :class:`~mlforge.errors.MlforgeDeprecationWarning` (a ``DeprecationWarning`` that is also a
    ``FutureWarning``, shown by default) naming the replacement.

    Output names keep the v0.7 form ``{tag}__{column}__{agg}__{interval}__{window}``
    (rule W6). Use :class:`Aggregate` or the shorthands instead.
    """

    windows: tuple[str, ...]
    aggregations: dict[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        warnings.warn(
            "mlforge.Rolling is deprecated since 0.8.0 and will be removed in 1.0; use "
            "mlforge.Aggregate or the shorthands mlf.Sum/Count/Mean/Min/Max/Std/Median, e.g. "
            "mlf.Sum('amt', windows=['7d'], name='total_spend')",
            MlforgeDeprecationWarning,
            stacklevel=3,
        )
        windows = (self.windows,) if isinstance(self.windows, (str, timedelta)) else tuple(self.windows or ())
        if not windows:
            raise DefinitionError("Rolling has no windows", fix="pass windows=['7d', '30d']")
        spelled = tuple(w if isinstance(w, str) else format_duration(parse_duration(w)) for w in windows)
        for w in spelled:
            parse_duration(w, where="Rolling windows")
        if not isinstance(self.aggregations, dict) or not self.aggregations:
            raise DefinitionError("Rolling needs aggregations={'column': ['sum', ...]}", fix="Rolling(windows=['7d'], aggregations={'amt': ['sum']})")
        aggs = {}
        for column, functions in self.aggregations.items():
            functions = (functions,) if isinstance(functions, str) else tuple(functions)
            for function in functions:
                if function not in FUNCTIONS:
                    raise DefinitionError(f"unknown aggregation {function!r} for column {column!r} in Rolling", fix=f"use one of {', '.join(FUNCTIONS)}")
            aggs[column] = functions
        object.__setattr__(self, "windows", spelled)
        object.__setattr__(self, "aggregations", aggs)

    def __hash__(self) -> int:
        return hash((self.windows, tuple((k, v) for k, v in self.aggregations.items())))

    def columns(self, feature_name: str, tags: list[str] | tuple[str, ...], interval: str = "") -> list[MetricColumn]:
        tag = tags[0] if tags else feature_name
        out = []
        for column, functions in self.aggregations.items():
            for function in functions:
                for window in self.windows:
                    name = f"{tag}__{column}__{function}__{interval}__{window}"
                    out.append(MetricColumn(name, column, function, window, parse_duration(window)))
        return out


Metric = Aggregate | Rolling

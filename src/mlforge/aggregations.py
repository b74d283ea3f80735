"""The aggregation table the metric compiler reads: one entry per aggregation (W4, W5).

An :class:`Aggregation` states which input types it accepts, its stored type (W5), its
value for an empty window (W4), how it runs over a window's raw events (the spread plan),
and which :data:`PARTIALS` it is made of -- those drive both the spread plan's
per-bucket partials and the window plan's ``over()`` frames (see :mod:`mlforge.compiler`).
An aggregation without partials needs raw events and so always runs on the spread plan.

**Adding an aggregation**: add its name to :data:`mlforge.definitions.metrics.FUNCTIONS`
(definitions validate names when declared and must not import Ibis) and its entry to
:data:`AGGREGATIONS` below, in the same order; importing this module fails if the two
disagree. A shorthand such as ``mlf.Sum`` is optional. Then teach ``tests/oracle.py`` the
aggregation and add it to the parity suite's functions.

The entries build Ibis expressions from the expressions they are given, so this module
imports Ibis only where it must build a value of its own (the median's typed null).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mlforge.definitions.metrics import FUNCTIONS

if TYPE_CHECKING:
    import ibis.expr.datatypes as dt
    import ibis.expr.types as ir

__all__ = ["ADDS_UP", "AGGREGATIONS", "COUNTED_BY", "PARTIALS", "ZERO_WHEN_EMPTY", "Aggregation", "Partial"]


@dataclass(frozen=True)
class Partial:
    """A partial aggregate of one field per ``(keys, bucket)``, and how the partials of
    several buckets roll up into one value: with ``where=`` on the spread plan, under
    ``over()`` on the window plan, by the engine's own ``rolls_with`` on the rolling plan."""

    name: str
    of_bucket: Callable[[ir.Column], ir.Scalar]
    roll_up: Callable[..., ir.Scalar]  # (partials, where=None)
    rolls_with: str  # the aggregation ``roll_up`` applies, named for native lowerings


def _as_summed(values: Any) -> Any:
    """A field summed in the type its sum is stored in (W5): a float in float64 (Polars summed
    float32 in float32: 1.1 + 0.3 read 1.4000000953674316 against DuckDB's
    1.4000000357627869), a narrower integer in int64 (Polars summed int32 in int32: two
    2^31 - 1 read -2). uint64 stays: its sums past 2^63 are refused before compute."""
    dtype = values.type()
    if dtype.is_floating() and not dtype.is_float64():
        return values.cast("float64")
    if dtype.is_integer() and not (dtype.is_int64() or dtype.is_uint64()):
        return values.cast("int64")
    return values


def _std_of_raw(values: Any, in_window: Any) -> Any:
    """The sample deviation of a window; NaN when it holds an infinity among two or more
    values, as IEEE arithmetic gives it on Polars and Spark (DuckDB's own stops the query
    with "STDDEV_SAMP is out of range")."""
    import ibis

    x = values.cast("float64")
    infinite = x.isinf()
    finite = x.std(how="sample", where=in_window & ~infinite)
    return ibis.ifelse(infinite.any(where=in_window).fill_null(False) & (x.count(where=in_window) >= 2), ibis.literal(float("nan"), type="float64"), finite)


#: The partials, in the order they are computed per bucket.
PARTIALS: dict[str, Partial] = {
    partial.name: partial
    for partial in (
        Partial("count", of_bucket=lambda values: values.count(), roll_up=lambda partials, where=None: partials.sum(where=where), rolls_with="sum"),
        Partial("sum", of_bucket=lambda values: _as_summed(values).sum(), roll_up=lambda partials, where=None: partials.sum(where=where), rolls_with="sum"),
        Partial("min", of_bucket=lambda values: values.min(), roll_up=lambda partials, where=None: partials.min(where=where), rolls_with="min"),
        Partial("max", of_bucket=lambda values: values.max(), roll_up=lambda partials, where=None: partials.max(where=where), rolls_with="max"),
    )
}


@dataclass(frozen=True)
class Aggregation:
    """Everything the compiler knows about one aggregation.

    ``from_partials`` combines the rolled-up values of ``partials`` (keyed by partial
    name); both are empty for an aggregation that needs a window's raw events.
    """

    name: str
    accepts: Callable[[dt.DataType], bool]  # input types; others fail before compute
    output_type: Callable[[dt.DataType], Any]  # the stored type given the field's (W5)
    zero_when_empty: bool  # W4: 0 for an empty window, else null
    of_raw: Callable[[ir.Column, ir.BooleanValue], ir.Scalar]  # (values, in_window)
    partials: tuple[str, ...] = ()
    from_partials: Callable[[Mapping[str, ir.Value]], ir.Value] | None = None
    #: Whether it is read from the values less a per-key reference (it does not change
    #: when every value moves by the same amount): an engine's own ``std`` of values far
    #: from 0 (2**40 + 0, 1, 3) loses digits to cancellation -- 2e-5 relative on DuckDB
    #: and Polars, not on Spark -- which values near 0 keep.
    centred: bool = False

    @property
    def needs_raw(self) -> bool:
        """Whether only the raw events give this aggregation (spread plan only)."""
        return not self.partials


def _any_type(dtype: dt.DataType) -> bool:
    return True


def _numeric(dtype: dt.DataType) -> bool:
    return dtype.is_numeric()


def _ordered(dtype: dt.DataType) -> bool:
    return dtype.is_numeric() or dtype.is_temporal() or dtype.is_string()


def _float64(dtype: dt.DataType) -> str:
    return "float64"


def _same_type(dtype: dt.DataType) -> dt.DataType:
    return dtype


def _sum_type(dtype: dt.DataType) -> str:
    return "int64" if dtype.is_integer() or dtype.is_boolean() else "float64"


def _mean_of_partials(rolled: Mapping[str, ir.Value]) -> ir.Value:
    import ibis

    total = cast("ir.NumericValue", rolled["sum"].cast("float64"))
    count = cast("ir.NumericValue", rolled["count"].nullif(ibis.literal(0)).cast("float64"))
    return total / count


def _mean_of_raw(values: ir.Column, in_window: ir.BooleanValue) -> ir.Scalar:
    """The exact sum over the count, as from partials: integers past 2^53 are not rounded
    one by one (2^53+1 and -2^53 have the mean 0.5, not 0.0)."""
    return cast("ir.Scalar", _mean_of_partials({"sum": _as_summed(values).sum(where=in_window), "count": values.count(where=in_window)}))


def _median_of_raw(values: ir.Column, in_window: ir.BooleanValue) -> ir.Scalar:
    # Not ``where=``: Ibis turns that into percentile(x, IF(cond, 0.5, NULL)) on Spark,
    # which rejects a non-constant percentage.
    import ibis

    return cast("ir.NumericColumn", in_window.ifelse(values.cast("float64"), ibis.null("float64"))).median()


#: The aggregations, keyed and ordered like :data:`mlforge.definitions.metrics.FUNCTIONS`.
AGGREGATIONS: dict[str, Aggregation] = {
    aggregation.name: aggregation
    for aggregation in (
        Aggregation(
            "count",
            accepts=_any_type,
            output_type=lambda dtype: "int64",
            zero_when_empty=True,
            of_raw=lambda values, in_window: values.count(where=in_window),
            partials=("count",),
            from_partials=lambda rolled: rolled["count"],
        ),
        Aggregation(
            "sum",
            accepts=_numeric,
            output_type=_sum_type,
            zero_when_empty=True,
            of_raw=lambda values, in_window: _as_summed(values).sum(where=in_window),
            partials=("sum",),
            from_partials=lambda rolled: rolled["sum"],
        ),
        Aggregation(
            "mean",
            accepts=_numeric,
            output_type=_float64,
            zero_when_empty=False,
            of_raw=_mean_of_raw,
            partials=("sum", "count"),
            from_partials=_mean_of_partials,
        ),
        Aggregation(
            "min",
            accepts=_ordered,
            output_type=_same_type,
            zero_when_empty=False,
            of_raw=lambda values, in_window: values.min(where=in_window),
            partials=("min",),
            from_partials=lambda rolled: rolled["min"],
        ),
        Aggregation(
            "max",
            accepts=_ordered,
            output_type=_same_type,
            zero_when_empty=False,
            of_raw=lambda values, in_window: values.max(where=in_window),
            partials=("max",),
            from_partials=lambda rolled: rolled["max"],
        ),
        Aggregation(
            "std",  # sample (n-1); null for fewer than two values
            accepts=_numeric,
            output_type=_float64,
            zero_when_empty=False,
            of_raw=_std_of_raw,
            centred=True,
        ),
        Aggregation(
            "median",  # exact
            accepts=_numeric,
            output_type=_float64,
            zero_when_empty=False,
            of_raw=_median_of_raw,
        ),
    )
}

if tuple(AGGREGATIONS) != FUNCTIONS:
    raise ImportError(
        f"mlforge.aggregations.AGGREGATIONS {tuple(AGGREGATIONS)} does not match "
        f"mlforge.definitions.metrics.FUNCTIONS {FUNCTIONS}: every declared aggregation needs one entry, in the same order"
    )

#: The aggregations that read 0 for an empty window rather than null (rule W4).
ZERO_WHEN_EMPTY: frozenset[str] = frozenset(name for name, aggregation in AGGREGATIONS.items() if aggregation.zero_when_empty)

#: A partial that a rolling plan adds and subtracts -> the partial counting the same values:
#: where that count is 0 the frame is empty, and its rolled value must be exactly 0 (W4),
#: whatever float residue the additions and subtractions left.
COUNTED_BY: dict[str, str] = {"sum": "count"}

#: The partials that add a field's values up: on an integer field they are int64 on some
#: engines (Polars wraps past 2**63, DuckDB widens), so a build first checks that no key's
#: values can add up past int64 (:func:`mlforge.compiler.integer_totals`).
ADDS_UP: frozenset[str] = frozenset({"sum"})

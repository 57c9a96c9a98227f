"""Interval maths and verdicts (bottom layer; imports only ``format``).

A ratio's interval is the IQR pairing [q1_a / q3_b, q3_a / q1_b] of the two variants' repeat samples
(the most pessimistic and optimistic pairing of their quartiles); counts are exact (low = high).
A verdict never contradicts its interval:

- **holds**: the whole interval meets the claim;
- **inconclusive**: the interval straddles the claim;
- **partly**: the whole interval is short of the claim but on the right side of 1 (a gain);
- **does not hold**: the whole interval is short of the claim and a gain is not established.

A run that missed its target time is censored: its time to target lies in [budget, inf). Quartiles
of such times are intervals themselves, so a ratio can be a bound ("< 1.003x") and is judged as the
interval (0, bound].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..results import Row
from .format import fmt, fmt_ratio

HOLDS, PARTLY, FAILS, INCONCLUSIVE = "holds", "partly", "does not hold", "inconclusive"
NOT_MEASURED = "not measured on this machine"


@dataclass(frozen=True)
class Ratio:
    """After/before: ``point`` = ratio of medians (NaN when only a bound is known), ``lo``/``hi`` the
    interval (``lo`` = 0 or ``hi`` = inf for a one-sided bound)."""

    point: float
    lo: float
    hi: float

    @property
    def exact(self) -> bool:
        return self.lo == self.hi


def ratio_interval(a: Row, b: Row) -> tuple[float, float, float]:
    """(ratio of medians a/b, low, high) with the IQR interval; exact counts give low = high = ratio."""
    r = a.value / b.value if b.value else math.nan
    if a.stats and b.stats and a.stats.n > 1 and b.stats.n > 1 and b.stats.q1 and b.stats.q3:
        return r, a.stats.q1 / b.stats.q3, a.stats.q3 / b.stats.q1
    if a.stats and a.stats.n > 1 and b.value:  # one side repeated, the other exact (e.g. one process)
        return r, a.stats.q1 / b.value, a.stats.q3 / b.value
    if b.stats and b.stats.n > 1 and b.stats.q1 and b.stats.q3:
        return r, a.value / b.stats.q3, a.value / b.stats.q1
    return r, r, r


def ratio_of(a: Row, b: Row) -> Ratio:
    return Ratio(*ratio_interval(a, b))


def diff_interval(a: Row, b: Row) -> tuple[float, float, float]:
    """(a - b of medians, low, high) with the IQR pairing [q1_a - q3_b, q3_a - q1_b]."""
    d = a.value - b.value

    def q(r: Row) -> tuple[float, float]:
        return (r.stats.q1, r.stats.q3) if r.stats and r.stats.n > 1 else (r.value, r.value)

    (a1, a3), (b1, b3) = q(a), q(b)
    return d, a1 - b3, a3 - b1


def verdict(ratio: float | None, claim: float | None, higher: bool, lo: float | None = None,
            hi: float | None = None) -> str:
    """Grade after/before against the claimed ratio ``claim`` (``higher``: the claim is a gain
    >= claim, else a reduction <= claim) over the interval [lo, hi] (default: the point)."""
    if ratio is None or (math.isnan(ratio) and (lo is None or hi is None)):
        return NOT_MEASURED
    if claim is None:
        return "-"
    lo = ratio if lo is None else lo
    hi = ratio if hi is None else hi
    if higher:
        if lo >= claim:
            return HOLDS
        if hi < claim:
            return PARTLY if lo > 1 else FAILS
        return INCONCLUSIVE
    if hi <= claim:
        return HOLDS
    if lo > claim:
        return PARTLY if hi < 1 else FAILS
    return INCONCLUSIVE


def diff_verdict(lo: float, hi: float, tolerance: float) -> str:
    """'No loss' within ``tolerance`` (same unit as the difference after - before): holds when the
    whole interval is >= -tolerance, does not hold when the whole interval is below it."""
    if lo >= -tolerance:
        return HOLDS
    if hi < -tolerance:
        return FAILS
    return INCONCLUSIVE


def fmt_change(r: Ratio, claim: float | None = None) -> str:
    """'0.375x', '3.34x [3.03, 3.52]', '< 1.003x' (upper bound), '> 1.2x' (lower bound), '-'."""
    refs = (1.0, claim)
    if r.lo == 0 and math.isinf(r.hi):
        return "unknown (both bounds open)"
    if r.lo == 0 and (math.isnan(r.point) or r.point == 0):
        return f"< {fmt_ratio(r.hi, refs)}x"
    if math.isinf(r.hi) and (math.isnan(r.point) or math.isinf(r.point)):
        return f"> {fmt_ratio(r.lo, refs)}x"
    if math.isnan(r.point):
        return "-"
    s = f"{fmt_ratio(r.point, refs)}x"
    if not r.exact:
        s += f" [{fmt_ratio(r.lo, refs)}, {fmt_ratio(r.hi, refs)}]"
    return s


# -- censored times (time to target) --------------------------------------------------------------

def _quantile(xs: list[float], p: float) -> float:
    """Linear-interpolation quantile of sorted ``xs`` (as ``Stats.of``), inf-safe."""
    pos = (len(xs) - 1) * p
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi or xs[lo] == xs[hi]:
        return xs[lo]
    if math.isinf(xs[hi]):
        return math.inf
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def censored_quartiles(times: list[float | None], budgets: list[float]) -> dict:
    """Quartiles of times to target where None = missed within its budget (time in [budget, inf)).
    Returns {"low": (q1, median, q3), "high": (q1, median, q3), "n", "reached"}: each quartile lies
    between its ``low`` and ``high`` value (equal when every run reached the target)."""
    low = sorted(t if t is not None else b for t, b in zip(times, budgets))
    high = sorted(t if t is not None else math.inf for t in times)
    return {"low": tuple(_quantile(low, p) for p in (0.25, 0.5, 0.75)),
            "high": tuple(_quantile(high, p) for p in (0.25, 0.5, 0.75)),
            "n": len(times), "reached": sum(t is not None for t in times)}


def censored_ratio(after: dict, before: dict) -> Ratio:
    """After/before time ratio from two :func:`censored_quartiles`: the interval pairs the
    quartiles' extreme ends, [q1_a(low) / q3_b(high), q3_a(high) / q1_b(low)]; the point is the
    ratio of medians when both medians are known, else NaN (a bound)."""
    (a1l, aml, _), (_, amh, a3h) = after["low"], after["high"]  # optimistic ends: low; pessimistic: high
    (b1l, bml, _), (_, bmh, b3h) = before["low"], before["high"]

    def div(x: float, y: float) -> float:
        if math.isinf(y):
            return 0.0 if not math.isinf(x) else math.nan
        return x / y if y else math.inf

    exact_medians = aml == amh and bml == bmh
    point = aml / bml if exact_medians and bml else math.nan
    if after["n"] <= 1 and before["n"] <= 1 and exact_medians:
        return Ratio(point, point, point)
    lo, hi = div(a1l, b3h), div(a3h, b1l)
    return Ratio(point, 0.0 if math.isnan(lo) else lo, math.inf if math.isnan(hi) else hi)


def describe_times(q: dict, fmt_s=lambda s: f"{fmt(s)} s") -> str:
    """'300 s', '290 s [280, 310] n=3', 'not reached in 600 s', '> 600 s (1 of 3 reached)'."""
    (l1, lm, _), (_, hm, h3) = q["low"], q["high"]
    if q["reached"] == 0:
        return f"not reached in {fmt(lm)} s" + (f" (0 of {q['n']} seeds)" if q["n"] > 1 else "")
    if lm != hm:
        return f"> {fmt(lm)} s (median not reached: {q['reached']} of {q['n']} seeds reached)"
    s = fmt_s(lm)
    if q["n"] > 1:
        top = fmt(h3) if not math.isinf(h3) else "> budget"
        s += f" [{fmt(l1)}, {top}] n={q['n']}" + ("" if q["reached"] == q["n"] else f", {q['reached']} reached")
    return s


def target_verdict(lo: float, hi: float, target: float, higher: bool = True) -> str:
    """A target that is not a gain over a reference (a fraction of peak, a ratio against a peer):
    holds when the whole interval meets it, does not hold when none of it does, else inconclusive."""
    if math.isnan(lo) or math.isnan(hi):
        return NOT_MEASURED
    meets_all = lo >= target if higher else hi <= target
    meets_none = hi < target if higher else lo > target
    return HOLDS if meets_all else FAILS if meets_none else INCONCLUSIVE

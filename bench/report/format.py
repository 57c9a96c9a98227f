"""Bottom layer of the report: reading a row, formatting numbers, markdown tables.

Imports nothing from the rest of ``bench.report`` (sections import this, never the reverse).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..results import Results, Row


def ok_row(res: Results | None, variant: str, metric: str) -> Row | None:
    """The row when it was measured (status ok, a value), else None."""
    if res is None:
        return None
    r = res.get(variant, metric)
    return r if r is not None and r.status == "ok" and r.value is not None else None


def infer_batch(res: Results) -> int:
    """The profile's inference batch (the `bN` in ``infer/fps_bN``)."""
    return int(res.profile.get("infer_batch", 8))


def arm_batch(res: Results) -> int:
    """The batch the inference arms ran at (the `bN` in ``arm/<arm>/fps_bN``)."""
    return int(res.profile.get("arm_batch", 8))


#: Feature flags that change an arm's arithmetic away from fp32 (bench.measure.arms.Arm.features), checked in this order.
REDUCED_NUMERICS = ("int8_static", "int8", "int8_except_text", "bf16", "bf16_image", "fp16")


def numerics(features) -> str:
    """The arm's arithmetic: what the accuracy verdict is about (inference_mode, text_cache, compile and
    layout change no number beyond fp32 rounding; their parity column says so): "fp32" or a REDUCED_NUMERICS key."""
    f = set(features)
    return next((key for key in REDUCED_NUMERICS if key in f), "fp32")


def group(res: Results, name: str) -> str:
    """A variant's group: main, ladder, loo, peer, machine (default main)."""
    return (res.variants.get(name) or {}).get("group", "main")


def fmt(x: float | None, digits: int = 3) -> str:
    """Plain number: '-' for missing/NaN, thousands separators from 1000 up, else `digits` significant."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_ratio(x: float | None, refs: Iterable[float | None] = (1.0,), digits: int = 3) -> str:
    """A ratio with as many significant digits as it takes (3 to 6) for the printed number to sit on
    the same side of every reference as the true one: 60.2/60 prints 1.003, not 1."""
    if x is None or math.isnan(x) or math.isinf(x):
        return fmt(x)
    refs = [r for r in refs if r is not None]
    for d in range(digits, 7):
        s = f"{x:.{d}g}"
        shown = float(s)
        if all((shown > r) == (x > r) and (shown < r) == (x < r) for r in refs):
            return s
    return s


def fmt_value(row: Row | None, scale: float = 1.0, missing: str = "not measured", with_n: bool = True) -> str:
    """Median with its spread: '4.55 [4.28, 4.70] n=3' when repeats exist, else the value; ``missing`` when
    there is no row."""
    if row is None:
        return missing
    s = fmt(row.value * scale)
    if row.stats and row.stats.n > 1:
        s += f" [{fmt(row.stats.q1 * scale)}, {fmt(row.stats.q3 * scale)}]" + (f" n={row.stats.n}" if with_n else "")
    return s


def fmt_iqr(row: Row | None, scale: float = 1.0) -> str:
    """Median [q1, q3] (no n), '-' when missing: for dense tables."""
    return fmt_value(row, scale, missing="-", with_n=False)


def md(rows: list[dict], columns: list[str] | None = None) -> str:
    """A markdown table (pandas ``DataFrame.to_markdown``, GitHub pipes) with a blank line around it;
    `_nothing measured_` for no rows. Cells are printed as given (strings keep their formatting)."""
    import pandas as pd

    if not rows:
        return "\n_nothing measured_\n"
    # cells as text before pandas sees them: an int column with a gap must not turn into floats
    records = [{k: "-" if v is None else str(v).replace("|", "/") for k, v in r.items()} for r in rows]
    frame = pd.DataFrame.from_records(records, columns=columns).fillna("-")
    return "\n" + frame.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


def extras_variant(res: Results) -> str:
    """The variant the extras (arms, scaling, roofline sentence) were measured on."""
    return res.profile.get("extras_variant", "optimized")

"""Data-parallel scaling section: training samples/s of ``ovd train`` at 1 and N processes with the same
per-process batch (rows ``dataparallel/samples_per_s_p{P}t{T}``, ``bench.measure.dataparallel``), and what the
report derives from them (never stored):

- scaling efficiency of N processes = throughput(N processes x T threads) / (N x throughput(1 process x T
  threads)): 1.0 is linear scaling, 1/N means the extra devices bought nothing;
- the same cores used two ways, N processes x 1 thread against 1 process x N threads: which to run here.

Each ratio carries the IQR interval of ``judge.ratio_interval`` (an efficiency's interval is the ratio's
divided by N): a "which is faster" statement is made only when the whole interval is on one side of 1.
"""

from __future__ import annotations

from ..measure.dataparallel import METRIC_PREFIX, config_key, parse_config_key
from ..results import Results, Row
from .format import fmt, fmt_iqr, fmt_ratio, md
from .judge import Ratio, ratio_of

TITLE = "\n## Data-parallel scaling: what a second device buys in training\n\n"
EFF = "scaling efficiency = ratio / N"


def config_rows(res: Results) -> dict[tuple[int, int], Row]:
    """(processes, threads per process) -> the measured samples/s row of the profile's data-parallel variant."""
    variant = res.profile.get("dataparallel_variant")
    out = {}
    for row in res.rows:
        if row.metric.startswith(METRIC_PREFIX) and row.status == "ok" and row.value is not None \
                and (variant is None or row.variant == variant):
            out[parse_config_key(row.metric[len(METRIC_PREFIX):])] = row
    return dict(sorted(out.items()))


def efficiency(n_procs: Row, one_proc: Row, processes: int) -> Ratio:
    """throughput(N processes) / (N x throughput(1 process)), both at the same threads per process, with the
    IQR interval of the throughput ratio divided by N."""
    r = ratio_of(n_procs, one_proc)
    return Ratio(r.point / processes, r.lo / processes, r.hi / processes)


def _fmt(r: Ratio, refs=(1.0,)) -> str:
    s = fmt_ratio(r.point, refs)
    return s if r.exact else f"{s} [{fmt_ratio(r.lo, refs)}, {fmt_ratio(r.hi, refs)}]"


def _faster(r: Ratio, a: str, b: str) -> str:
    """Which of a (numerator) and b is faster, only when the whole interval says so."""
    if r.lo > 1:
        return f"{a} is faster: run that"
    if r.hi < 1:
        return f"{b} is faster: run that"
    return "no clear winner (the interval straddles 1)"


def _name(processes: int, threads: int) -> str:
    return f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"


def throughput_table(rows: dict[tuple[int, int], Row]) -> list[dict]:
    out = []
    for (p, t), row in rows.items():
        x = row.extra
        out.append({"configuration": f"`{config_key(p, t)}` {_name(p, t)}", "accelerator": x.get("accelerator"),
                    "batch per process": x.get("batch_size_per_process"), "global batch": x.get("global_batch"),
                    "samples/s (median [q1, q3])": fmt_iqr(row), "repeats": row.stats.n if row.stats else 1,
                    "timed steps": x.get("timed_steps"),
                    "whole `ovd train` run, first repeat (s)": fmt(x.get("process_seconds"))})
    return out


def comparison_table(rows: dict[tuple[int, int], Row]) -> list[dict]:
    """Efficiency of every N-process configuration against 1 process with the same threads, and every
    N processes x 1 thread against 1 process x N threads (the same cores)."""
    out = []
    for (p, t), row in rows.items():
        if p > 1 and (1, t) in rows:
            e = efficiency(row, rows[(1, t)], p)
            speedup = ratio_of(row, rows[(1, t)])
            out.append({"comparison": f"{_name(p, t)} vs {_name(1, t)}",
                        "throughput ratio": f"{_fmt(speedup, (1.0, float(p)))}x",
                        EFF: _fmt(e, (1.0,)), "reading": _efficiency_words(e)})
    for (p, t), row in rows.items():
        if p > 1 and t == 1 and (1, p) in rows:
            r = ratio_of(row, rows[(1, p)])
            out.append({"comparison": f"{_name(p, 1)} vs {_name(1, p)} (the same {p} cores)",
                        "throughput ratio": f"{_fmt(r)}x", EFF: "-",
                        "reading": _faster(r, _name(p, 1), _name(1, p))})
    for (p, t), row in rows.items():
        if p == 1 and t > 1 and (1, 1) in rows:
            e = efficiency(row, rows[(1, 1)], t)
            out.append({"comparison": f"{_name(1, t)} vs {_name(1, 1)} (threads, for context)",
                        "throughput ratio": f"{_fmt(ratio_of(row, rows[(1, 1)]), (1.0, float(t)))}x",
                        EFF: _fmt(e, (1.0,)), "reading": _efficiency_words(e)})
    return out


def _efficiency_words(e: Ratio) -> str:
    if e.lo >= 0.9:
        return "near-linear (>= 0.9)"
    if e.hi < 0.5:
        return "poor (< 0.5)"
    return f"between {fmt(e.lo, 2)} and {fmt(e.hi, 2)}"


def _failures(res: Results) -> list[str]:
    out = []
    for tid, task in sorted(res.tasks.items()):
        if tid.startswith("dataparallel:") and task.get("status") != "ok":
            errs = [o.get("error") or "" for o in task.get("outcomes", {}).values() if o.get("status") != "ok"]
            out.append(f"- `{tid}`: {(errs[0] if errs else 'failed').splitlines()[0][:300]}")
    return out


def _method(res: Results, rows: dict[tuple[int, int], Row]) -> str:
    prof = res.profile
    any_row = next(iter(rows.values()), None)
    x = any_row.extra if any_row else {}
    return (f"Method: `ovd train --preset {x.get('preset', prof.get('dataparallel_variant', '?'))} --devices N "
            f"--strategy ddp` (gloo on the CPU, NCCL on GPUs; `auto` for 1 process) with `--limit-val-batches 0`, "
            f"each configuration in a fresh process group with `OMP_NUM_THREADS` = threads per process; the "
            f"same batch per process in every configuration ({x.get('batch_size_per_process', '?')}, precision "
            f"{x.get('precision', '?')}), so N processes train N times the samples per step. Samples/s is what "
            f"`ovd train` writes into `summary.json` (`train_throughput`): {x.get('timed_steps', '?')} steps timed "
            f"on rank 0 after {x.get('warmup_steps', '?')} warm-up step(s), samples of all processes; process "
            f"start-up, DDP set-up and the final checkpoint are excluded (the whole run's wall time is listed). "
            f"Configurations are interleaved across repeats; intervals are the IQR pairing of the repeats "
            f"(`judge.ratio_interval`); efficiency = throughput(N processes) / (N x throughput(1 process with "
            f"the same threads per process)).\n")


def section(res: Results) -> list[str]:
    rows = config_rows(res)
    failures = _failures(res)
    if not rows and not failures:
        return []
    parts = [TITLE, _method(res, rows), md(throughput_table(rows)), md(comparison_table(rows))]
    if any(r.extra.get("spans_epochs") for r in rows.values()):
        parts.append("\nSome timed steps crossed an epoch boundary (the loader's restart is inside the clock).\n")
    if failures:
        parts += ["\nFailed processes:\n\n", "\n".join(failures) + "\n"]
    return parts

"""Regression gate: compare NEW results against a REFERENCE.

Refused (:class:`IncomparableResults`) when the two runs differ in profile name, threads, device kind
(cpu / cuda) or torch major.minor, unless ``allow_env_change``: their numbers answer different questions.

- Parameter and FLOP counts must match exactly (unless ``allow_size_change``).
- Within-run ratios: each variant against its reference variant (optimized vs baseline among them),
  so a reference made on one machine gates another (the only speed checks that do). Speed ratios may not
  fall by more than ``speed_tolerance`` (relative), memory ratios may not rise by more than
  ``memory_tolerance``.
  A ratio cannot see a change that slows every variant alike (shared code: the image encoder, the
  data path), hence the three checks below, which gate only against a reference from the same machine: on
  another one such a change passes (re-record the reference on the machine that gates). A ratio whose variants ran at another precision in NEW than in
  REFERENCE (``train.precision: auto`` is bf16 on a CPU with AVX512-BF16 or AMX, fp32 on an AVX2 one) is listed,
  not gated: it answers another question (on a Zen 5 EPYC, optimized-tiny's training samples/s over
  baseline-tiny's read 3.43x in bf16 against 2.87x in an fp32 reference, its training memory ratio 0.98 against 0.72).
- Root variants (no ``reference``; peers excluded) are also gated on
  * **efficiency**: achieved FLOP/s (``flops/per_image`` x ``infer/fps_b{N}`` at the profile's inference
    batch N) / the same run's measured matmul peak for that precision (``roofline/peak_{dtype}_torch``,
    else ``roofline/peak_{dtype}``), only when both runs name the same machine (as for latency below);
    otherwise listed, not gated. Dividing by a peak measured in the same run cancels a host's speed and
    momentary load (see the tolerance rule), not its microarchitecture: with the same code baseline-tiny's
    efficiency at batch 4 read 0.70 on a Zen 5 EPYC (the quick reference) and 0.58 on a Zen 4 one (CI,
    2026-12-01: a 1.22x "regression"), 0.51 on a Zen 3 and 0.35 on a Xeon (their default-profile reports);
  * **latency p50** at batch 1 and N, only with ``gate_latency`` (``ovd-bench compare --gate-latency``) and when
    both runs name the same machine (``device``, ``cpu_model`` and, where both record it, ``cpu_features``);
    otherwise listed, not gated. Raw milliseconds
    from two sessions are off by default: a shared VM drifts between sessions in ways no within-run spread sees.
    On CI's 2-core EPYC the same code's fastest b1 process read 82 ms (the reference), 73 ms (CI, 2026-11-30 01:44)
    and, ten minutes later, 81 ms in one of 8 processes and over 106 ms in the other seven; three of those, drawn
    at random, fail a 20% cap five times in eight. This check failed CI on unchanged code;
  * **time to target** (``accuracy/time_to_target_s``) when the reference reached the target.
- Accuracy (grounding mAP50 and R@1, and vocabulary mAP50, the metric time to target uses, on the val and novel
  splits: :data:`ACCURACY`) may not drop by more than ``accuracy_margin`` (absolute). As for any row, one that only
  NEW has (a reference recorded before the metric was gated) is not gated: it is listed, with a note that says so.
- A metric that was measured in REFERENCE but errors in NEW fails. Improvements never fail.
- A measurement of NEW some of whose repeat processes failed (``extra["failed_repeats"]``, written by
  :func:`bench.results.aggregate`) fails when the gate compares any of its rows: its statistics rest on the
  processes that survived ("k of n repeats failed").
- The gate refuses (:class:`NothingToGate`, exit 2) a REFERENCE without a successful row, and any comparison that
  made no check: zero checks would read "0/0 checks passed". The tolerances and the margin are fractions (0.4 is
  40%), refused outside a sane range (``--speed-tolerance 40`` passed every ratio).
- Except: a measurement of the machine itself (group "machine": the bf16, fp16 and int8 matmul peaks) that NEW's
  machine does not offer (a not-measured row with its reason, or a missing per-backend row ``peak_<dtype>_<backend>``
  whose aggregate ``peak_<dtype>`` is not measured with its reason; any other missing row fails) passes as "not gated" when the
  two runs name different machines (``device`` / ``cpu_model`` / ``cpu_features``): a reference made on a CPU
  with AVX512-BF16 and VNNI still gates an AVX2-only one. On the same machine its absence fails like any other row's.

Statistic of the speed checks (ratios, efficiency, latency): each run's **fastest process** (max FPS, samples/s
and peak; min latency), not the median over processes. Contention on a shared host only ever adds time, so it
moves the fastest process least, while a code regression slows every process, the fastest included (the reading
of ``timeit``'s docs). CI on a shared 2-core VM showed why: one run's three processes of the same code gave
baseline-tiny b1 latencies of 126, 73 and 107 ms; the median (107) read as a 26% regression against a
reference's 85 ms, the fastest (73 against 82) as none. Time to target keeps the median: its spread is the seed's.

Tolerance rule (:class:`SpreadRule`): tolerance = ``factor`` x the two runs' spreads combined in quadrature,
clamped to [``floor``, ``cap``]; a check fails when NEW is slower than REFERENCE by more than that (slowdown =
ref/new for higher-is-better metrics, new/ref for lower-is-better ones; fail when slowdown > 1 + tolerance).
- Speed (:data:`SPEED_RULE`): a run's spread of a metric is its **relative range** over processes, fastest /
  slowest - 1 (:func:`relative_range`); a derived metric's inputs add in quadrature. A regression must so stand
  out of both runs' own scatter. The range, not a MAD: that same VM is bimodal (a process runs ~1.3x faster or
  slower for seconds at a time, model and matmul peak alike but not together: in one process b4 went from 20 to
  14 images/s while the peak stayed at 60 GFLOP/s), and a MAD over three processes hides the minority mode
  that the fastest-process statistic picks. Floor 10% (drift a run cannot see), cap 45% (a 1.5x slowdown always
  fails): on a quiet machine (ranges of a few %) a 10% slowdown is resolved; on that VM the efficiency check's
  tolerance reaches the cap, and the note beside each check says which bound set it.
- Time to target (:data:`TRAINING_RULE`): 3 x the robust sigma 1.4826 x MAD / median over seeds
  (:func:`relative_spread`), in [15%, 50%].
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .errors import UsageError
from .results import Results, Row, failed_repeats

HIGHER_BETTER_SPEED = ("train/samples_per_s", "infer/fps_b1", "infer/fps_b{n}")
LOWER_BETTER_MEMORY = ("memory/train_total", "memory/infer_total")
ACCURACY = tuple(f"accuracy/{split}/{m}" for split in ("val", "novel") for m in ("mAP50", "R@1", "vocab_mAP50"))
EXACT_PREFIXES = ("params/", "flops/per_image")
TIME_TO_TARGET = "accuracy/time_to_target_s"
#: Variant groups that are not our model's roots: peers (someone else's code) and the machine itself.
NOT_GATED_GROUPS = ("peer", "machine")
_PRECISION_DTYPE = {"fp32": "fp32", "32-true": "fp32", "bf16": "bf16", "bf16-mixed": "bf16", "fp16": "fp16",
                    "16-mixed": "fp16"}


class IncomparableResults(UsageError):
    """REFERENCE and NEW were measured under different conditions (profile, threads, device, torch)."""


class NothingToGate(UsageError):
    """The comparison would make no check: a gate that checks nothing must not pass."""


@dataclass(frozen=True)
class SpreadRule:
    """Tolerance = clamp(factor x sqrt(sum of squared relative spreads), floor, cap) (see the module doc)."""

    factor: float = 3.0
    floor: float = 0.10
    cap: float = 0.20

    def __post_init__(self) -> None:
        if not (self.factor > 0 and 0 <= self.floor <= self.cap):
            raise ValueError(f"SpreadRule needs factor > 0 and 0 <= floor <= cap, got {self}")

    def tolerance(self, spreads: list[float]) -> tuple[float, str]:
        """(tolerance as a fraction, a note saying which bound set it)."""
        combined = math.sqrt(sum(s * s for s in spreads))
        raw = self.factor * combined
        if raw > self.cap:
            return self.cap, f"spread {combined:.1%} capped"
        if raw < self.floor:
            return self.floor, f"spread {combined:.1%}, floor"
        return raw, f"spread {combined:.1%}"


#: Speed (efficiency, latency) on relative ranges: a 1.5x slowdown always fails (cap 45%); drift under 10% never does.
SPEED_RULE = SpreadRule(1.0, 0.10, 0.45)
#: Time to target varies more between seeds: a wider cap.
TRAINING_RULE = SpreadRule(3.0, 0.15, 0.50)


@dataclass
class Check:
    variant: str
    metric: str
    kind: str
    reference: float | None
    new: float | None
    limit: str
    passed: bool
    note: str = ""


@dataclass
class Comparison:
    checks: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list:
        return [c for c in self.checks if not c.passed]

    def table(self, only_failures: bool = False) -> str:
        import pandas as pd

        rows = [c for c in self.checks if not only_failures or not c.passed]
        if not rows:
            return "(no checks)"
        df = pd.DataFrame([{"result": "ok" if c.passed else "REGRESSION", "variant": c.variant, "metric": c.metric,
                            "kind": c.kind, "reference": _fmt(c.reference), "new": _fmt(c.new), "limit": c.limit,
                            "note": c.note} for c in rows])
        return df.to_string(index=False)


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.6g}" if isinstance(x, float) else str(x)


# -- comparability ----------------------------------------------------------------------------

def _torch_minor(version) -> str | None:
    if not version:
        return None
    parts = str(version).split("+")[0].split(".")
    return ".".join(parts[:2])


def _device_kind(res: Results) -> str | None:
    dev = res.environment.get("device")
    if dev is None:
        return None
    return "cpu" if str(dev).lower() == "cpu" else "cuda"


def _threads(res: Results):
    return res.profile.get("threads", res.environment.get("threads"))


def environment_differences(reference: Results, new: Results) -> list[str]:
    """What makes the two runs incomparable: profile name, threads, device kind, torch major.minor.
    A field missing from either file is not compared."""
    fields = (("profile", lambda r: r.profile.get("name")), ("threads", _threads), ("device", _device_kind),
              ("torch", lambda r: _torch_minor(r.environment.get("torch"))))
    out = []
    for name, get in fields:
        a, b = get(reference), get(new)
        if a is not None and b is not None and a != b:
            out.append(f"{name} {a} vs {b}")
    return out


def _same_machine(reference: Results, new: Results) -> tuple[bool, str]:
    """Same ``device`` and ``cpu_model``, and same ``cpu_features`` where both files record them (older ones
    do not): "AMD EPYC" names hosts with and without AVX-512 bf16."""
    keys = ("device", "cpu_model")
    if all(r.environment.get("cpu_features") is not None for r in (reference, new)):
        keys += ("cpu_features",)
    a = tuple(reference.environment.get(k) for k in keys)
    b = tuple(new.environment.get(k) for k in keys)
    return a == b and None not in a, f"{' / '.join(map(str, a))} vs {' / '.join(map(str, b))}"


def _machine_cannot(reference: Results, variant: str, metric: str, new_rows: dict[tuple[str, str], Row]) -> Row | None:
    """The NEW row that says the machine cannot measure REFERENCE's ``metric`` of the machine itself (group
    "machine": the matmul peaks), or None. That is the row itself, not measured with its reason; or, for a
    per-backend peak ``roofline/peak_<dtype>_<backend>`` that NEW lacks, the aggregate ``roofline/peak_<dtype>``
    not measured with its reason (the roofline writes no per-backend rows for a dtype the CPU has no
    instructions for). Otherwise a missing row is not excused (the code lost it), nor an error (the code failed)."""
    if (reference.variants.get(variant) or {}).get("group") != "machine":
        return None
    row = new_rows.get((variant, metric))
    if row is None and metric.startswith("roofline/peak_") and metric.count("_") >= 2:
        row = new_rows.get((variant, metric.rsplit("_", 1)[0]))
    return row if row is not None and row.status == "not-measured" and row.error else None


# -- spreads and derived metrics --------------------------------------------------------------

def _finite_samples(row: Row) -> list[float]:
    """A row's repeat samples that are numbers (None, NaN and inf dropped)."""
    return [float(x) for x in row.samples if x is not None and math.isfinite(float(x))]


def relative_spread(row: Row | None) -> float:
    """Robust relative sigma of a row's repeat samples: 1.4826 x MAD / |median| (0 with < 2 samples)."""
    if row is None:
        return 0.0
    xs = _finite_samples(row)
    if len(xs) < 2:
        return 0.0
    med = statistics.median(xs)
    if med == 0:
        return 0.0
    mad = statistics.median(abs(x - med) for x in xs)
    return 1.4826 * mad / abs(med)


def relative_range(row: Row | None) -> float:
    """A row's relative range over its processes: max / min - 1 of its finite positive samples (0 with < 2)."""
    if row is None:
        return 0.0
    xs = [x for x in _finite_samples(row) if x > 0]
    return max(xs) / min(xs) - 1.0 if len(xs) >= 2 else 0.0


def fastest(row: Row, higher: bool) -> float:
    """The fastest process's value of a speed row: the max of its samples for higher-is-better metrics, the min
    for lower-is-better ones; the row's value when it has no finite sample."""
    xs = _finite_samples(row)
    if not xs:
        return float(row.value)
    return max(xs) if higher else min(xs)


def _ok(res: Results, variant: str, metric: str) -> Row | None:
    r = res.get(variant, metric)
    return r if r is not None and r.status == "ok" and r.value is not None else None


def _infer_batch(res: Results) -> int | None:
    n = res.profile.get("infer_batch")
    return int(n) if n else None


def _peak_row(res: Results, precision: str) -> Row | None:
    """The matmul peak the run measured for ``precision`` through torch (the backend the model uses),
    else the best backend's."""
    dtype = _PRECISION_DTYPE.get(str(precision), "fp32")
    for variant in [v for v, spec in res.variants.items() if spec.get("group") == "machine"] or ["machine"]:
        for metric in (f"roofline/peak_{dtype}_torch", f"roofline/peak_{dtype}"):
            row = _ok(res, variant, metric)
            if row is not None:
                return row
    return None


def efficiency(res: Results, variant: str, batch: int) -> tuple[float, float, str] | None:
    """(achieved FLOP/s / measured matmul peak of the run's fastest processes (:func:`fastest`), its spread (the
    inputs' relative ranges in quadrature), the peak's metric name), or None when the run lacks the FLOP count,
    the FPS row at ``batch`` or the roofline."""
    flops, fps = _ok(res, variant, "flops/per_image"), _ok(res, variant, f"infer/fps_b{batch}")
    if flops is None or fps is None:
        return None
    peak = _peak_row(res, (fps.extra or {}).get("precision", "fp32"))
    if peak is None or not peak.value:
        return None
    value = flops.value * fastest(fps, True) / fastest(peak, True)
    return value, math.hypot(relative_range(fps), relative_range(peak)), peak.metric


def _gate(cmp: Comparison, variant: str, metric: str, kind: str, ref: float, new: float, higher: bool,
          spreads: list[float], rule: SpreadRule, note: str = "") -> None:
    tol, why = rule.tolerance(spreads)
    slowdown = (ref / new if new else math.inf) if higher else (new / ref if ref else math.inf)
    bound = ref / (1 + tol) if higher else ref * (1 + tol)
    limit = f"{'>=' if higher else '<='} {bound:.4g} ({tol:.0%}: {why})"
    passed = slowdown <= 1 + tol
    text = f"{slowdown:.2f}x slower" if slowdown > 1 else f"{1 / slowdown:.2f}x faster" if slowdown > 0 else ""
    cmp.checks.append(Check(variant, metric, kind, ref, new, limit, passed, "; ".join(x for x in (text, note) if x)))


def _own_infer_batch(res: Results, variant: str, n: int | None) -> int | None:
    """The inference batch ``variant``'s FLOP-counted speed was timed at: the profile's ``n``, else the batch of its
    own ``infer/fps_b{B}`` rows (a factory without a ``batch_size`` argument is measured at its own batch only)."""
    if n is not None and _ok(res, variant, f"infer/fps_b{n}") is not None:
        return n
    own = [int(r.metric.rsplit("_b", 1)[1]) for r in res.rows if r.variant == variant and r.status == "ok"
           and r.metric.startswith("infer/fps_b") and r.metric.rsplit("_b", 1)[1].isdigit()]
    return max(own, default=n)


def _root_variants(res: Results) -> list[str]:
    return [v for v, spec in res.variants.items()
            if not spec.get("reference") and spec.get("group") not in NOT_GATED_GROUPS]


def _gate_roots(cmp: Comparison, reference: Results, new: Results, speed_rule: SpreadRule,
                training_rule: SpreadRule, machine: tuple[bool, str], gate_latency: bool) -> None:
    """``machine``: :func:`_same_machine` of the two runs (whether latency can be gated, and the names);
    ``gate_latency``: gate raw latency at all (see the module doc)."""
    same, machines = machine
    for v in _root_variants(reference):
        n = _own_infer_batch(reference, v, _infer_batch(reference))
        # efficiency: needs the roofline in the reference; missing from NEW is a failure
        if n is not None:
            e_ref = efficiency(reference, v, n)
            if e_ref is not None:
                e_new = efficiency(new, v, n)
                label = f"efficiency b{n} (FLOP/s / {e_ref[2]})"
                if e_new is None:
                    cmp.checks.append(Check(v, label, "efficiency", e_ref[0], None, "present", False,
                                            "FLOPs, FPS or the roofline missing in NEW"))
                elif not same:
                    cmp.checks.append(Check(v, label, "efficiency", e_ref[0], e_new[0], "-", True,
                                            f"not gated: different machines ({machines}); a model's share of its "
                                            "machine's GEMM peak depends on the CPU, not only on the code"))
                else:
                    _gate(cmp, v, label, "efficiency", e_ref[0], e_new[0], True, [e_ref[1], e_new[1]], speed_rule)
        for b in sorted({1, n} - {None}):
            metric = f"infer/latency_p50_ms_b{b}"
            rr, nr = _ok(reference, v, metric), _ok(new, v, metric)
            if rr is None or nr is None:
                continue  # absence / errors are caught by the per-row status checks
            if not gate_latency or not same:
                why = ("raw time across sessions (--gate-latency on a dedicated machine)" if not gate_latency else
                       f"different machines ({machines})")
                cmp.checks.append(Check(v, metric, "latency", fastest(rr, False), fastest(nr, False), "-", True,
                                        f"not gated: {why}" + ("; efficiency covers it" if same else "")))
                continue
            _gate(cmp, v, f"{metric} (fastest process)", "latency", fastest(rr, False), fastest(nr, False), False,
                  [relative_range(rr), relative_range(nr)], speed_rule)
        rr = _ok(reference, v, TIME_TO_TARGET)
        if rr is not None:
            nr = new.get(v, TIME_TO_TARGET)
            if nr is not None and nr.status == "ok" and nr.value is not None:
                if not same:
                    cmp.checks.append(Check(v, TIME_TO_TARGET, "time-to-target", rr.value, nr.value, "-", True,
                                            f"not gated: different machines ({machines})"))
                else:
                    _gate(cmp, v, TIME_TO_TARGET, "time-to-target", rr.value, nr.value, False,
                          [relative_spread(rr), relative_spread(nr)], training_rule)
            elif nr is not None and nr.status == "not-measured":
                cmp.checks.append(Check(v, TIME_TO_TARGET, "time-to-target", rr.value, None, "reached", False,
                                        f"target not reached in NEW: {(nr.error or '')[:100]}"))


# -- the gate ----------------------------------------------------------------------------------

def _ratio(res: Results, variant: str, metric: str, speed: bool) -> float | None:
    """``variant``'s ``metric`` over its reference variant's: of the fastest processes for a ``speed`` metric
    (higher is better), of the values otherwise (memory)."""
    ref_name = (res.variants.get(variant) or {}).get("reference")
    if not ref_name:
        return None
    rows = _ok(res, variant, metric), _ok(res, ref_name, metric)
    if None in rows:
        return None
    a, b = (fastest(r, True) for r in rows) if speed else (r.value for r in rows)
    return a / b if b else None


def _precisions(res: Results, variant: str, metric: str) -> tuple[str | None, str | None]:
    """The precision ``variant``'s ``metric`` and its reference variant's ran at (None where not recorded)."""
    ref_name = (res.variants.get(variant) or {}).get("reference")
    return res.precision(variant, metric), res.precision(ref_name, metric)


def _precision_change(reference: Results, new: Results, variant: str, metric: str) -> str:
    """Why a ratio cannot be gated: a side ran at another precision in NEW than in REFERENCE ("auto" resolves by
    machine: bf16 on a CPU with AVX512-BF16 or AMX, fp32 on an AVX2 one), so the two ratios answer different
    questions; "" when every recorded precision matches."""
    ref, new_ = _precisions(reference, variant, metric), _precisions(new, variant, metric)
    if any(a and b and a != b for a, b in zip(ref, new_)):
        return (f"not gated: precision {'/'.join(map(str, ref))} in the reference, {'/'.join(map(str, new_))} in NEW "
                "(train.precision auto resolves by machine)")
    return ""


def _speed_metrics(res: Results) -> list[str]:
    return sorted({r.metric for r in res.rows if r.metric.startswith("infer/fps_") or r.metric == "train/samples_per_s"})


def _check_tolerances(speed_tolerance: float, memory_tolerance: float, accuracy_margin: float) -> None:
    """Refuse a tolerance outside its sane range; most likely a percentage (``--speed-tolerance 40`` let every ratio
    fall to nothing). NaN fails every comparison, hence refused too."""
    for flag, value, ok, accepted in (
            ("--speed-tolerance", speed_tolerance, 0 < speed_tolerance < 1, "in (0, 1)"),
            ("--memory-tolerance", memory_tolerance, 0 < memory_tolerance < 10, "in (0, 10)"),
            ("--accuracy-margin", accuracy_margin, 0 <= accuracy_margin < 1, "in [0, 1)")):
        if not ok:
            raise UsageError(f"{flag} {value:g}: expected a fraction {accepted} (0.4 means 40%)")


def _failed_repeats(cmp: Comparison, compared: list[Row]) -> None:
    """One failing check per NEW measurement (variant, measurement) of which some repeat processes failed, among the
    rows the gate ``compared``: their statistics rest on the processes that survived (:func:`failed_repeats`)."""
    for group in failed_repeats(compared):
        rows = group.rows
        cmp.checks.append(Check(group.variant, f"{group.measurement} repeats", "repeats", None, None, "all ok", False,
                                f"{group.failed} of {group.planned} repeats failed (gated rows: {rows[0].metric}"
                                + (f" and {len(rows) - 1} more" if len(rows) > 1 else "")
                                + f"): {group.last_error[:100]}"))


def compare(reference: Results, new: Results, speed_tolerance: float = 0.4, memory_tolerance: float = 0.3,
            accuracy_margin: float = 0.02, allow_size_change: bool = False, *, allow_env_change: bool = False,
            speed_rule: SpreadRule = SPEED_RULE, training_rule: SpreadRule = TRAINING_RULE,
            gate_latency: bool = False) -> Comparison:
    """Every check of the module doc; raises :class:`IncomparableResults` when the runs' profile,
    threads, device kind or torch major.minor differ (unless ``allow_env_change``), :class:`NothingToGate` when it
    would make no check, :class:`UsageError` for a tolerance that is not a fraction in its range."""
    _check_tolerances(speed_tolerance, memory_tolerance, accuracy_margin)
    if not any(r.status == "ok" for r in reference.rows):
        errors = sum(r.status == "error" for r in reference.rows)
        raise NothingToGate(f"REFERENCE has no successful rows to gate against ({len(reference.rows)} rows, "
                            f"{errors} errors); give the results.json of a run that measured something")
    diffs = environment_differences(reference, new)
    if diffs and not allow_env_change:
        raise IncomparableResults(f"REFERENCE and NEW are not comparable: {'; '.join(diffs)}; re-run NEW under "
                                  "the reference's conditions, or pass --allow-env-change to compare anyway")
    cmp = Comparison()
    ref_rows = {r.key: r for r in reference.rows}
    new_rows = {r.key: r for r in new.rows}
    same_machine, machines = _same_machine(reference, new)
    compared = []  # NEW's rows the gate reads, for the failed-repeats check
    for key, rr in ref_rows.items():
        variant, metric = key
        nr = new_rows.get(key)
        if rr.status != "ok":
            continue
        cannot = None if same_machine else _machine_cannot(reference, variant, metric, new_rows)
        if cannot is not None:
            # a peak the NEW machine has no instructions for (bf16 without AVX512-BF16/AMX, int8 without VNNI) says
            # nothing about the code; on the same machine its absence fails as any other row's
            cmp.checks.append(Check(variant, metric, "presence", rr.value, None, "-", True,
                                    f"not gated: a measurement of the machine, and NEW ran on another ({machines}); "
                                    f"not measured there: {cannot.error[:100]}"))
            continue
        if nr is None:
            cmp.checks.append(Check(variant, metric, "presence", rr.value, None, "present", False,
                                    "measured in the reference, missing in NEW"))
            continue
        compared.append(nr)
        if nr.status != "ok" and not (nr.status == "not-measured" and metric.startswith("accuracy/")):
            cmp.checks.append(Check(variant, metric, "status", rr.value, None, "ok", False,
                                    f"{nr.status}: {(nr.error or '')[:120]}"))
            continue
        if metric.startswith(EXACT_PREFIXES):
            same = rr.value == nr.value
            cmp.checks.append(Check(variant, metric, "exact", rr.value, nr.value, "equal", same or allow_size_change,
                                    "" if same else ("size change allowed" if allow_size_change else "count changed")))
        elif metric in ACCURACY and nr.value is not None:
            ok = nr.value >= rr.value - accuracy_margin
            cmp.checks.append(Check(variant, metric, "accuracy", rr.value, nr.value, f">= ref - {accuracy_margin}",
                                    ok))
    for key, nr in new_rows.items():
        # as for any row only NEW has, not gated (an older reference lacks it), but listed: the gate did not check it
        if key[1] in ACCURACY and key not in ref_rows and nr.status == "ok" and nr.value is not None:
            cmp.checks.append(Check(key[0], key[1], "accuracy", None, nr.value, "-", True,
                                    "not gated: not in the reference (recorded before this metric was gated); "
                                    "re-record the reference to gate it"))
    for metric in _speed_metrics(reference) + list(LOWER_BETTER_MEMORY):
        higher = not metric.startswith("memory/")
        for variant in reference.variants:
            r_ref = _ratio(reference, variant, metric, higher)
            if r_ref is None:
                continue
            r_new = _ratio(new, variant, metric, higher)
            ref_name = reference.variants[variant].get("reference")
            label = f"{metric} ratio vs {ref_name}" + (" (fastest processes)" if higher else "")
            if r_new is None:
                cmp.checks.append(Check(variant, label, "ratio", r_ref, None, "present", False, "ratio missing in NEW"))
                continue
            changed = _precision_change(reference, new, variant, metric)
            if changed:
                cmp.checks.append(Check(variant, label, "ratio", r_ref, r_new, "-", True, changed))
                continue
            if higher:
                ok = r_new >= r_ref * (1 - speed_tolerance)
                limit = f">= {r_ref * (1 - speed_tolerance):.3g}"
            else:
                ok = r_new <= r_ref * (1 + memory_tolerance)
                limit = f"<= {r_ref * (1 + memory_tolerance):.3g}"
            cmp.checks.append(Check(variant, label, "ratio", r_ref, r_new, limit, ok))
    _gate_roots(cmp, reference, new, speed_rule, training_rule, (same_machine, machines), gate_latency)
    _failed_repeats(cmp, compared)
    if not cmp.checks:
        raise NothingToGate(f"the comparison made no check: none of REFERENCE's {len(ref_rows)} rows is one the gate "
                            "compares (counts, accuracy, speed and memory ratios, efficiency, time to target); "
                            "give the results.json of a run of the variants")
    if diffs:
        cmp.checks.append(Check("-", "environment", "environment", None, None, "same", True,
                                "compared anyway (--allow-env-change): " + "; ".join(diffs)))
    return cmp


__all__ = ["compare", "Comparison", "Check", "IncomparableResults", "NothingToGate", "SpreadRule", "SPEED_RULE",
           "TRAINING_RULE", "environment_differences", "efficiency", "fastest", "relative_range", "relative_spread"]

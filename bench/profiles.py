"""Run profiles as data: which variants get which measurements, repeats, batch sizes, budgets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .variants import VARIANTS, ladder_of, leave_one_out_of


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    static_variants: tuple = ()  # params + FLOPs
    memory_variants: tuple = ()
    speed_variants: tuple = ()
    accuracy_variants: tuple = ()
    repeats: int = 5  # speed processes per variant (interleaved ABAB); memory runs once per process kind
    warmup: int = 1  # untimed calls per process
    iters: int = 3  # timed calls per process (the process's statistic is their median)
    train_batch: int = 8  # common training batch ("at the same batch size"); preset_batch variants use their own
    infer_batch: int = 8  # the "larger batch" for inference (batch 1 is always measured)
    memory_preset_batch: tuple = ()  # also measure training memory at the preset's own batch for these
    accuracy_budget_s: float = 0.0
    accuracy_target_map50: float | None = None
    timeout_s: float = 900.0  # per measurement process
    pair: tuple = ("baseline", "optimized")  # the before/after pair of the seed table
    # torch threads per measurement process (None: all cores). quick uses 1: on a shared 2-core machine,
    # 2 OpenMP threads next to another busy process slowed steps 10-70x and made the gate flaky.
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def names(self) -> list[str]:
        seen: list[str] = []
        for group in (self.static_variants, self.memory_variants, self.speed_variants, self.accuracy_variants):
            for v in group:
                if v not in seen:
                    seen.append(v)
        return seen


def _speed_ladder(root: str, opt: str) -> tuple:
    names = [root, opt] + [v.name for v in ladder_of(root) + leave_one_out_of(opt) if not v.accuracy_only]
    return tuple(names)


def _accuracy_arms(root: str, opt: str) -> tuple:
    return (root, opt, f"{root}+onecycle", f"{root}+learned-queries")


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick", "tiny presets, 2 repeats, no accuracy training (CI smoke + regression gate; < 3 min on 2 CPU cores)",
        static_variants=("baseline-tiny", "optimized-tiny", "baseline-tiny+sdpa"),
        memory_variants=("baseline-tiny", "optimized-tiny"),
        speed_variants=("baseline-tiny", "optimized-tiny", "baseline-tiny+sdpa"),
        repeats=2, warmup=1, iters=3, train_batch=4, infer_batch=4, timeout_s=300, threads=1,
        pair=("baseline-tiny", "optimized-tiny"),
    ),
    "default": Profile(
        "default", "CPU: full-size baseline/optimized for params/FLOPs/memory/speed, the ladder at tiny size, "
        "tiny accuracy runs with a short budget (< 15 min on 2 CPU cores)",
        static_variants=("baseline", "optimized") + _speed_ladder("baseline-tiny", "optimized-tiny"),
        memory_variants=("baseline", "optimized", "baseline-tiny", "optimized-tiny"),
        speed_variants=("baseline", "optimized") + _speed_ladder("baseline-tiny", "optimized-tiny"),
        accuracy_variants=("baseline-tiny", "optimized-tiny"),
        repeats=5, warmup=1, iters=2, train_batch=4, infer_batch=4,
        accuracy_budget_s=120, accuracy_target_map50=0.3, timeout_s=600,
        pair=("baseline", "optimized"),
    ),
    "full": Profile(
        "full", "GPU: everything at full size (ladder, leave-one-out, AMP fp16 and bf16), accuracy arms",
        static_variants=_speed_ladder("baseline", "optimized"),
        memory_variants=_speed_ladder("baseline", "optimized"),
        speed_variants=_speed_ladder("baseline", "optimized"),
        memory_preset_batch=("baseline", "optimized"),
        accuracy_variants=_accuracy_arms("baseline", "optimized"),
        repeats=5, warmup=3, iters=10, train_batch=8, infer_batch=8,
        accuracy_budget_s=1800, accuracy_target_map50=0.5, timeout_s=3600,
        pair=("baseline", "optimized"),
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(PROFILES)}")
    return PROFILES[name]


def restrict(profile: Profile, variants: list[str]) -> Profile:
    """The profile with every variant list cut to ``variants`` (``--variants a,b``)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}")
    keep = lambda group: tuple(v for v in variants if v in group) or ()  # noqa: E731
    groups = {k: keep(getattr(profile, k)) for k in ("static_variants", "memory_variants", "speed_variants",
                                                      "accuracy_variants", "memory_preset_batch")}
    # A variant named explicitly but absent from the profile still gets the static and speed measurements.
    for v in variants:
        if v not in profile.names():
            groups["static_variants"] += (v,)
            groups["speed_variants"] += (v,)
    import dataclasses

    return dataclasses.replace(profile, **groups)


def default_profile_name() -> str:
    import torch

    return "full" if torch.cuda.is_available() else "default"


def with_overrides(profile: Profile, **kw) -> Profile:
    import dataclasses

    return dataclasses.replace(profile, **{k: v for k, v in kw.items() if v is not None})


__all__ = ["Profile", "PROFILES", "get_profile", "restrict", "default_profile_name", "with_overrides", "field"]

"""Run profiles as data: which variants get which measurements, repeats, batch sizes, budgets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import UsageError
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
    # speed processes for each variant of ``pair`` (the rows the seed table's verdicts read); None = repeats.
    # Rides the same interleaved rounds: rounds past ``repeats`` visit only the pair.
    pair_repeats: int | None = None
    warmup: int = 1  # untimed calls per process
    iters: int = 3  # timed calls per process (the process's statistic is their median)
    train_batch: int = 8  # common training batch ("at the same batch size"); preset_batch variants use their own
    infer_batch: int = 8  # the "larger batch" for inference (batch 1 is always measured)
    memory_preset_batch: tuple = ()  # also measure training memory at the preset's own batch for these
    accuracy_budget_s: float = 0.0
    accuracy_target_map50: float | None = None
    accuracy_eval_every_s: float = 60.0  # training seconds between evaluations on the val split (the curve)
    accuracy_seeds: tuple = (0,)  # one training run per seed (tasks accuracy:{variant}:{seed}); rows aggregate seeds
    # the real training loop (data loader, optimizer, scheduler) of each pair variant, in the speed rounds:
    # ``train_loop_steps`` timed steps after ``train_loop_warmup`` untimed ones; 0 = not planned.
    train_loop_steps: int = 0
    train_loop_warmup: int = 1
    train_loop_repeats: int = 2  # processes per pair variant (the first rounds)
    timeout_s: float = 900.0  # per measurement process
    pair: tuple = ("baseline", "optimized")  # the before/after pair of the seed table
    # torch threads per measurement process (None: all cores). quick uses 1: on a shared 2-core machine,
    # 2 OpenMP threads next to another busy process slowed steps 10-70x and made the gate flaky.
    threads: int | None = None
    # -- issue 5 extras (each selectable with `ovd-bench run --extras a,b`) ---------------------
    extras: tuple = ()  # subset of EXTRAS
    extras_variant: str = "optimized"  # the model the scaling curves and the arms run on
    peers: tuple = ("peer:grounding-dino-t", "peer:owlvit-b32")
    peer_image_size: int = 224  # matched input (pixels per side); peers get our prompt's token count
    peer_repeats: int = 3  # speed processes per peer (interleaved with the variants' speed rounds)
    roofline_repeats: int = 3  # matmul-peak processes, one per speed round
    roofline_sizes: tuple = ()  # () = the device's default sizes (bench.measure.roofline)
    scaling_axes: tuple = ()  # ((axis, (values...)), ...), axes from bench.measure.scaling.AXES
    scaling_batch: int = 1  # batch size of the points of the non-batch axes
    scaling_repeats: int = 1  # processes per point
    scaling_warmup: int = 1
    scaling_iters: int = 2
    arms: tuple = ()  # arm names (bench.measure.arms.ARMS); the fp32 eager reference is always timed
    arm_batch: int = 8
    arm_repeats: int = 2  # processes for the arms that share one
    arm_isolated_repeats: int = 1  # processes per isolated arm (torch.compile, ONNX: slow set-up)
    arm_rounds: int = 2  # interleaved rounds per process
    arm_iters: int = 1  # timed calls per arm per round
    # -- issue 14: data-parallel scaling of `ovd train` (bench.measure.dataparallel) ---------------
    dataparallel_variant: str = "optimized-tiny"  # the preset `ovd train` trains (tiny on the CPU: cheap)
    dataparallel_configs: tuple = ()  # ((processes, threads per process), ...); () = the machine's defaults
    dataparallel_batch: int | None = 8  # per process (the same in every configuration); None: the preset's
    dataparallel_steps: int = 4  # timed steps per process
    dataparallel_warmup: int = 1  # untimed steps first
    dataparallel_repeats: int = 2  # processes per configuration, one per speed round (interleaved)
    # -- issue 9: saturating batch sweep (bench.measure.sweep) and the backbone ceiling (bench.measure.ceiling) --
    sweep_variants: tuple = ()  # () = the pair
    sweep_modes: tuple = ("infer", "train")
    sweep_repeats: int = 3  # processes per (variant, mode), interleaved; the peak-batch rows read their spread
    sweep_max_batch: int = 1024
    sweep_warmup: int = 1
    sweep_iters: int = 2
    ceiling_variants: tuple = ()  # () = the pair
    ceiling_batch: int | None = None  # None: infer_batch
    ceiling_repeats: int = 3  # processes per variant, one per speed round
    ceiling_rounds: int = 3  # interleaved rounds (e2e, backbone alone, timm direct) per process
    # -- issue 11: inference arms judged by accuracy on trained checkpoints of the accuracy runs ------------
    arms_accuracy: tuple = ()  # arm names (bench.measure.arms_accuracy); () = not planned
    arms_accuracy_variant: str = "optimized-tiny"  # must be one of accuracy_variants (its checkpoint is judged)
    arms_accuracy_images: int = 100  # evaluation images per split
    # accuracy seeds whose checkpoint of arms_accuracy_variant the arms are judged on (one task each); None: the
    # first seed only. With several, an arm counts as accepted only when every checkpoint accepts it.
    arms_accuracy_seeds: tuple | None = None
    time_limit_s: float | None = None  # default for `ovd-bench run --time-limit` (the gpu profile: 8 minutes)

    def __post_init__(self) -> None:
        if self.repeats < 0:
            raise UsageError(f"profile {self.name}: repeats must be >= 0 (0: no speed processes), got {self.repeats}")
        if self.pair_repeats is not None and self.pair_repeats < 0:
            raise UsageError(f"profile {self.name}: pair_repeats must be >= 0 or None, got {self.pair_repeats}")
        if self.train_loop_steps < 0 or self.train_loop_warmup < 0 or self.train_loop_repeats < 0:
            raise UsageError(f"profile {self.name}: train_loop_steps/warmup/repeats must be >= 0")
        if self.train_batch < 1 or self.infer_batch < 1:
            raise UsageError(f"profile {self.name}: train_batch and infer_batch must be >= 1, got "
                             f"{self.train_batch} and {self.infer_batch}")
        if self.sweep_repeats < 1 or self.sweep_max_batch < 1 or self.ceiling_repeats < 1 or self.ceiling_rounds < 1:
            raise UsageError(f"profile {self.name}: sweep/ceiling repeats, rounds and max batch must be >= 1")
        if self.arms_accuracy and self.arms_accuracy_variant not in self.accuracy_variants:
            raise UsageError(f"profile {self.name}: arms_accuracy_variant {self.arms_accuracy_variant!r} is not trained "
                             f"by this profile (accuracy_variants {list(self.accuracy_variants)})")
        if self.arms_accuracy_seeds is not None and (not self.arms_accuracy_seeds or not set(
                self.arms_accuracy_seeds) <= set(self.accuracy_seeds)):
            raise UsageError(f"profile {self.name}: arms_accuracy_seeds {self.arms_accuracy_seeds!r} must be a "
                             f"non-empty subset of accuracy_seeds {list(self.accuracy_seeds)}")
        if self.dataparallel_steps < 1 or self.dataparallel_warmup < 0 or self.dataparallel_repeats < 0 or any(
                len(c) != 2 or min(c) < 1 for c in self.dataparallel_configs):
            raise UsageError(f"profile {self.name}: dataparallel_steps must be >= 1, warmup/repeats >= 0, configs "
                             f"(processes, threads) pairs of ints >= 1; got {self.dataparallel_configs}")

    @property
    def pair_rounds(self) -> int:
        """Speed processes per pair variant."""
        return self.repeats if self.pair_repeats is None else self.pair_repeats

    def to_dict(self) -> dict:
        return asdict(self)

    def names(self) -> list[str]:
        """Every variant the profile measures (the roofline measures the machine, not a variant)."""
        seen: list[str] = []
        groups = [self.static_variants, self.memory_variants, self.speed_variants, self.accuracy_variants]
        if "scaling" in self.extras or "arms" in self.extras:
            groups.append((self.extras_variant,))
        if "sweep" in self.extras:
            groups.append(self.sweep_variants or self.pair)
        if "ceiling" in self.extras:
            groups.append(self.ceiling_variants or self.pair)
        if "dataparallel" in self.extras:
            groups.append((self.dataparallel_variant,))
        if "peers" in self.extras:
            groups.append(self.peers)
        for group in groups:
            for v in group:
                if v not in seen:
                    seen.append(v)
        return seen


def _speed_ladder(root: str, opt: str) -> tuple:
    names = [root, opt] + [v.name for v in ladder_of(root) + leave_one_out_of(opt) if not v.accuracy_only]
    return tuple(names)


#: The extras (issues 5, 9, 14), in the order `--extras all` runs them.
EXTRAS = ("sweep", "ceiling", "peers", "roofline", "scaling", "arms", "dataparallel")

#: Arms sharing one process (interleaved, paired with the fp32 eager reference) and isolated ones.
_CPU_ARMS = ("inference-mode", "channels-last", "bf16-autocast", "bf16-image", "int8-dynamic", "int8-except-text",
             "text-cache", "inference-mode+text-cache", "int8+text-cache", "int8-except-text+text-cache",
             "bf16+text-cache", "bf16-image+text-cache", "compile", "compile-frozen+text-cache", "onnx-ort",
             "onnx-ort-int8-static")
# fp16 and CUDA-graph arms run on CUDA only (skipped on the CPU with that reason)
_GPU_ONLY_ARMS = ("fp16-autocast", "fp16+text-cache", "compile-max-autotune", "cuda-graphs", "bf16+cuda-graphs")
_ALL_ARMS = _CPU_ARMS + _GPU_ONLY_ARMS
# Not in the CPU default (all three stay in `full`, and `ovd-bench run --add-arms NAME` adds one back): plain
# torch.compile (about 76 s of compilation for 1.09x; the frozen compile is the better compile arm), ONNX Runtime
# static int8 (about 30 s a process; rejected on both trained checkpoints of dacdfeb's and fa9757d's accuracy runs;
# the accuracy profile still judges it) and the frozen compile: 1.16x [1.15, 1.17] on the 2-core Xeon (2e541f4e9c)
# and 1.09x [1.08, 1.11] on the 2-core AVX2 EPYC (fa9757d), paying off after 7,100 and 14,000 images, for 257 s
# and 273 s of those runs (a cold compile of 168-180 s, then 2 warm-cache processes): the largest single cost of
# the default profile (issue 11: about 15 minutes on 2 cores, the rest to `full`). ONNX Runtime fp32 stays: the
# fastest exact arm on the EPYC (1.25x), 16-24 s a process.
# bf16-image alone (the image encoder in bf16, the rest fp32) is in `full` too: its cached-text arm is the one a user
# ships, and on a CPU without native bf16 each bf16 arm costs about 30 s a process (the AVX2 EPYC: 9 s a call).
_CPU_DEFAULT_SKIPS_ARMS = ("compile", "compile-frozen+text-cache", "onnx-ort-int8-static", "bf16-image")

_FULL_SCALING = (("batch", (1, 2, 4, 8, 16, 32)), ("image_size", (224, 256, 320, 384, 448, 512)),
                 ("prompt_tokens", (8, 16, 32, 64, 128, 256)), ("num_queries", (10, 20, 50, 100, 200)))
# CPU default: few points, the largest ones bounded so the whole run stays under ~15 minutes.
_LIGHT_SCALING = (("batch", (1, 4, 16)), ("image_size", (224, 384, 512)),
                  ("prompt_tokens", (8, 64, 256)), ("num_queries", (20, 100, 200)))


def parse_extras(text: str | None) -> tuple | None:
    """``--extras`` value -> tuple of extras: "all", "none"/"", or a comma list of EXTRAS; None -> None."""
    if text is None:
        return None
    text = text.strip().lower()
    if text in ("none", ""):
        return ()
    if text == "all":
        return EXTRAS
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [x for x in names if x not in EXTRAS]
    if unknown:
        raise UsageError(f"unknown extras {unknown}; choose from {list(EXTRAS)}, 'all' or 'none'")
    return names


def _accuracy_arms(root: str, opt: str) -> tuple:
    return (root, opt, f"{root}+onecycle", f"{root}+learned-queries")


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick", "tiny presets, 3 repeats of every variant, the matmul peak, no accuracy training "
        "(CI smoke + regression gate; about 4.5 min on 2 CPU cores)",
        static_variants=("baseline-tiny", "optimized-tiny", "baseline-tiny+sdpa"),
        memory_variants=("baseline-tiny", "optimized-tiny"),
        speed_variants=("baseline-tiny", "optimized-tiny", "baseline-tiny+sdpa"),
        # iters 8, not 3: on CI's shared 2-core VM one b1 call takes 70 or 110 ms in bursts of several calls,
        # so a median of 3 calls read one burst; with 3 calls the within-run ratio baseline-tiny+sdpa /
        # baseline-tiny (fastest processes, b1) ranged 0.75-1.39 over 13 runs of the same code and failed
        # the gate on unchanged code (CI, 2026-11-30); with 8 calls, 0.82-1.25 over 4 runs. repeats 3, not 2: the
        # gate compares fastest processes, and a variant with fewer processes draws the machine's fast mode less often
        repeats=3, pair_repeats=3, warmup=1, iters=8, train_batch=4, infer_batch=4, timeout_s=300, threads=1,
        pair=("baseline-tiny", "optimized-tiny"), train_loop_steps=6, train_loop_warmup=1, train_loop_repeats=2,
        # the gate's efficiency check divides by this run's matmul peak: 512 and 1024 reach the CPU's peak
        # within ~3% (2048 adds nothing, 256 is 25% low for bf16) in ~2 s of timing per process
        extras=("roofline",), roofline_repeats=3, roofline_sizes=(512, 1024),
    ),
    "default": Profile(
        "default", "CPU: full-size baseline/optimized for params/FLOPs/memory/speed, the one-factor ladder at tiny "
        "size, the matmul peak, inference arms; 5 interleaved repeats of the pair, 3 of every arm, 2 of the ladder; no "
        "training runs (accuracy, time to target and the arms' accuracy come from the `accuracy` profile: pass its "
        "folder with --accuracy); the batch sweep, the backbone ceiling and data-parallel scaling are one flag away "
        "(--extras sweep,ceiling,roofline,arms,dataparallel) and in `full`, with the peers and the scaling curves; "
        "so is the frozen-compile arm (--add-arms compile-frozen+text-cache); measured durations per machine: README",
        static_variants=("baseline", "optimized") + _speed_ladder("baseline-tiny", "optimized-tiny"),
        memory_variants=("baseline", "optimized", "baseline-tiny", "optimized-tiny"),
        speed_variants=("baseline", "optimized", "baseline-tiny", "optimized-tiny")
        + tuple(v.name for v in ladder_of("baseline-tiny") if not v.accuracy_only),
        # Budget (82a2cb1's run of the previous plan, 1,336 s): speed 340 s in 36 processes (pair 5 repeats: the
        # verdicts issue; tiny pair and ladder 2), arms 252 s (3 processes each), static 110 s, train_loop 71 s,
        # memory 47 s, roofline 17 s, runner ~110 s. The issue-11 re-plan (about 15 min on 2 cores) moved out the
        # batch sweep (225 s; capped at batch 8 on 2 cores, where both variants' training peaks only hit the cap,
        # so its peak-batch table said little here), the backbone ceiling (84 s) and data-parallel scaling (83 s):
        # their settings below stay, so `--extras ...` or `--sweep` adds them back sized for this machine. That plan
        # ran in 931 s (9b96cd7); the frozen-compile arm then added 3 processes of about 85 s and ORT static int8
        # left (3 of about 30 s): about 18 min. On the 2-core AVX2 EPYC the plan took 40 min with a new interpreter
        # per process and 21-26 min (3 runs) once the processes forked from a preloaded server (e921d0d). The
        # frozen-compile arm then left for `full` (see _CPU_DEFAULT_SKIPS_ARMS): 257-273 s less.
        repeats=2, pair_repeats=5, warmup=1, iters=2, train_batch=4, infer_batch=4,
        train_loop_steps=6, train_loop_warmup=1, train_loop_repeats=2, timeout_s=600,
        pair=("baseline", "optimized"),
        extras=("roofline", "arms"), peer_repeats=2, roofline_repeats=3,
        roofline_sizes=(512, 1024), scaling_axes=_LIGHT_SCALING, scaling_batch=1,
        scaling_repeats=1, scaling_warmup=1, scaling_iters=2, arms=tuple(a for a in _CPU_ARMS if a not in _CPU_DEFAULT_SKIPS_ARMS),
        # the isolated arm (ONNX Runtime fp32, 16-24 s a process): 3 processes
        arm_batch=8, arm_repeats=3, arm_isolated_repeats=3, arm_rounds=2, arm_iters=1,
        # ovd train, optimized-tiny, batch 8 per process, 1 + 4 steps: 3 configurations x 2 repeats
        dataparallel_variant="optimized-tiny", dataparallel_batch=8, dataparallel_steps=4, dataparallel_warmup=1,
        dataparallel_repeats=2,
        sweep_repeats=3, sweep_max_batch=8, sweep_warmup=1, sweep_iters=1, ceiling_repeats=3, ceiling_rounds=3,
    ),
    "accuracy": Profile(
        "accuracy", "CPU: the accuracy bar of the tiny pair: 10 minutes of training each, 2 seeds each "
        "(interleaved), on the built-in synthetic set, val curve every minute, seen (val) and novel splits, then "
        "the inference arms judged on the trained optimized-tiny checkpoint of each seed (about 58 min on "
        "a 2-core Xeon)",
        static_variants=("baseline-tiny", "optimized-tiny"),
        # 2 seeds, not 3: a third costs 25 more minutes on 2 cores; the spread is then [min, max] of two runs.
        accuracy_variants=("baseline-tiny", "optimized-tiny"), accuracy_seeds=(0, 1),
        # The target is the vocabulary protocol's val mAP50 (absent classes are false positives): 0.7 is the
        # issue's goal for 10 minutes of training; the grounding mAP50 target it replaces was 0.8.
        repeats=0, accuracy_budget_s=600, accuracy_target_map50=0.7, accuracy_eval_every_s=60, timeout_s=1800,
        pair=("baseline-tiny", "optimized-tiny"),
        # every arm that changes numbers or the backend: the ONNX Runtime graphs (fp32, static int8 calibrated on
        # training images) as `ovd predict --backend onnxruntime` runs them, bf16 (the whole forward, and the image
        # encoder only), dynamic int8 of every Linear and of every Linear but the text encoder's
        arms_accuracy=("eager", "bf16-autocast", "bf16-image", "int8-dynamic", "int8-except-text", "onnx-ort",
                       "onnx-ort-int8-static"),
        arms_accuracy_variant="optimized-tiny",
        arms_accuracy_images=200,  # per split: 1 point of mAP50 is a few captions; about 70 s for 3 arms
        # both seeds' checkpoints: int8-except-text passed on an earlier checkpoint and failed on 34ed067's seed-0
        # one by 0.07 vocab mAP50 points, so a verdict from one checkpoint can be luck
        arms_accuracy_seeds=(0, 1),
    ),
    "gpu": Profile(
        "gpu", "GPU campaign for a short device window (at most 8 minutes on one H200): the pair's saturating "
        "batch sweep (inference and training) and the backbone ceiling first, then parameters, memory, the pair "
        "at the common batch (5 interleaved repeats), the matmul peaks and the overhead-removing arms; stops "
        "starting tasks at the time limit and marks the report INCOMPLETE (finish with --resume)",
        static_variants=("baseline", "optimized"), memory_variants=("baseline", "optimized"),
        # the pair, then the training arms (bf16 autocast, fused AdamW, compiled step, all three) on optimized
        speed_variants=("baseline", "optimized", "optimized+bf16", "optimized+fused-adamw", "optimized+compile-train",
                        "optimized+train-arms"),
        memory_preset_batch=("baseline", "optimized"),
        repeats=3, pair_repeats=5, warmup=3, iters=10, train_batch=8, infer_batch=8, timeout_s=300,
        pair=("baseline", "optimized"),
        # Not yet timed on a device (no GPU in the session that wrote it): about 60 processes of ~5 s start-up
        # each plus their work; the time limit keeps the window and --resume finishes what it cut.
        extras=("sweep", "ceiling", "roofline", "arms"), roofline_repeats=3, ceiling_batch=128, ceiling_repeats=3,
        sweep_repeats=3, sweep_max_batch=1024, sweep_warmup=1, sweep_iters=3,
        # bf16-image+text-cache: what `ovd predict --precision bf16-image` runs, so the recommendation can name it here
        arms=("bf16-autocast", "fp16-autocast", "channels-last", "text-cache", "fp16+text-cache", "bf16+text-cache",
              "bf16-image+text-cache", "cuda-graphs", "bf16+cuda-graphs"),
        arm_batch=128, arm_repeats=3, arm_isolated_repeats=1, arm_rounds=3, arm_iters=5,
        time_limit_s=480.0,
    ),
    "full": Profile(
        "full", "GPU: everything at full size (ladder, leave-one-out, AMP fp16 and bf16), accuracy arms",
        static_variants=_speed_ladder("baseline", "optimized"),
        memory_variants=_speed_ladder("baseline", "optimized"),
        speed_variants=_speed_ladder("baseline", "optimized"),
        memory_preset_batch=("baseline", "optimized"),
        accuracy_variants=_accuracy_arms("baseline", "optimized"),
        repeats=5, warmup=3, iters=10, train_batch=8, infer_batch=8,
        train_loop_steps=20, train_loop_warmup=3, train_loop_repeats=5,
        accuracy_budget_s=1800, accuracy_target_map50=0.5, timeout_s=3600,
        pair=("baseline", "optimized"),
        extras=EXTRAS, peer_repeats=5, roofline_repeats=5, scaling_axes=_FULL_SCALING, scaling_batch=8,
        scaling_repeats=3, scaling_warmup=3, scaling_iters=10, arms=_ALL_ARMS, arm_batch=8, arm_repeats=5,
        arm_isolated_repeats=3, arm_rounds=3, arm_iters=5,
        # 1..N GPUs, the preset's batch per GPU
        dataparallel_variant="optimized", dataparallel_batch=None, dataparallel_steps=20, dataparallel_warmup=3,
        dataparallel_repeats=3,
    ),
}


def add_arms(profile: Profile, text: str | None) -> Profile:
    """``--add-arms a,b``: the profile with these arms (bench.measure.arms.ARMS) added to its own, and the arms
    extra switched on; None or "" -> the profile unchanged."""
    names = tuple(x.strip() for x in (text or "").split(",") if x.strip())
    if not names:
        return profile
    from .measure.arms import ARMS, REFERENCE

    unknown = [n for n in names if n not in ARMS or n == REFERENCE]
    if unknown:
        raise UsageError(f"unknown arms {unknown}; choose from {[a for a in ARMS if a != REFERENCE]}")
    import dataclasses

    return dataclasses.replace(profile, arms=tuple(dict.fromkeys(profile.arms + names)),
                               extras=tuple(dict.fromkeys(profile.extras + ("arms",))))


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UsageError(f"unknown profile {name!r}; choose one of {list(PROFILES)}")
    return PROFILES[name]


def restrict(profile: Profile, variants: list[str]) -> Profile:
    """The profile with every variant list cut to ``variants`` (``--variants a,b``)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UsageError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
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

    return "gpu" if torch.cuda.is_available() else "default"


def with_overrides(profile: Profile, **kw) -> Profile:
    """The profile with the given fields replaced (None = keep). An explicit ``repeats`` (``--repeats N``)
    is the user's count for every speed variant, the pair included, unless ``pair_repeats`` is given too."""
    import dataclasses

    kw = {k: v for k, v in kw.items() if v is not None}
    if "repeats" in kw:
        kw.setdefault("pair_repeats", None)
    return dataclasses.replace(profile, **kw)


__all__ = ["Profile", "PROFILES", "EXTRAS", "get_profile", "parse_extras", "restrict", "default_profile_name",
           "with_overrides", "add_arms", "field"]

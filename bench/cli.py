"""``ovd-bench run | report | compare | profile``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/scipy load (DESIGN.md)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _report_dir(kind: str, profile: str, default_profile: str) -> Path:
    base = Path.cwd() / "reports" / kind
    return base if profile == default_profile else base / profile


def cmd_run(args) -> int:
    from .env import capture, machine_kind
    from .profiles import default_profile_name, get_profile, parse_extras, restrict, with_overrides
    from .report import render
    from .runner import log, run_profile

    default = default_profile_name()
    name = args.profile or default
    profile = get_profile(name)
    if args.variants:
        profile = restrict(profile, [v.strip() for v in args.variants.split(",") if v.strip()])
    try:
        extras = parse_extras(args.extras)
    except ValueError as err:
        print(f"ovd-bench run: {err}", file=sys.stderr)
        return 2
    profile = with_overrides(profile, repeats=args.repeats, accuracy_budget_s=args.accuracy_budget, extras=extras)
    if args.no_accuracy:
        import dataclasses

        profile = dataclasses.replace(profile, accuracy_variants=())
    from ovd.config import parse_override

    if args.set:
        from .common import GLOBAL_OVERRIDES_ENV

        overrides = dict(parse_override(item) for item in args.set)
        os.environ[GLOBAL_OVERRIDES_ENV] = json.dumps(overrides)  # inherited by every worker process
    if args.extras_only:
        import dataclasses

        profile = dataclasses.replace(profile, static_variants=(), memory_variants=(), speed_variants=(),
                                      accuracy_variants=(), memory_preset_batch=())
    kind = args.machine_kind or machine_kind(args.device if args.device != "auto" else None)
    threads = args.threads or profile.threads or os.cpu_count() or 1
    report_dir = _report_dir(kind, name, default)
    out = Path(args.out) if args.out else report_dir
    command = "ovd-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    env = capture(command, threads)
    env["machine_kind"] = kind
    if args.set:
        env["global_overrides"] = dict(parse_override(item) for item in args.set)
    log(f"profile {name}: {len(profile.names())} variants, {profile.repeats} repeats, {threads} threads, extras "
        f"{','.join(profile.extras) or 'none'} -> {out}")
    results = run_profile(profile, out, threads, args.device, resume=args.resume, command=command, environment=env)
    report = render(results, out)
    log(f"report: {report}")
    if not args.no_report_copy and out.resolve() != report_dir.resolve():
        report_dir.mkdir(parents=True, exist_ok=True)
        for f in out.iterdir():
            if f.suffix in (".md", ".png", ".json", ".csv") and f.is_file():
                shutil.copy2(f, report_dir / f.name)
        log(f"copied report to {report_dir}")
    errors = [r for r in results.rows if r.status == "error"]
    if errors:
        log(f"{len(errors)} metrics failed (recorded in results.json and the report)")
    return 0


def cmd_report(args) -> int:
    from .report import render
    from .results import Results

    res = Results.load(args.results)
    out = Path(args.out) if args.out else Path(args.results).parent
    print(render(res, out))
    return 0


def cmd_compare(args) -> int:
    from .compare import compare
    from .results import Results, ResultsError

    try:
        ref, new = Results.load(args.reference), Results.load(args.new)
    except ResultsError as err:
        print(f"ovd-bench compare: {err}", file=sys.stderr)
        return 2
    cmp = compare(ref, new, args.speed_tolerance, args.memory_tolerance, args.accuracy_margin, args.allow_size_change)
    print(cmp.table(only_failures=not args.verbose and not cmp.passed) if not cmp.passed or args.verbose
          else cmp.table())
    n = len(cmp.checks)
    print(f"\n{n - len(cmp.failures)}/{n} checks passed" + ("" if cmp.passed else f"; {len(cmp.failures)} REGRESSIONS"))
    return 0 if cmp.passed else 1


def cmd_profile(args) -> int:
    from .profile import profile_variant

    out = args.out or str(Path.cwd() / "reports" / "profiles" / args.variant)
    paths = profile_variant(args.variant, out, batch=args.batch, steps=args.steps, threads=args.threads,
                            device=args.device)
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovd-bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="measure the variants of a profile and write results + REPORT.md")
    r.add_argument("--profile", choices=["quick", "default", "accuracy", "full"], help="default: 'default' on CPU, 'full' on CUDA")
    r.add_argument("--out", help="output folder (default reports/<machine-kind>/[<profile>])")
    r.add_argument("--resume", help="folder with a results.json whose finished tasks are kept")
    r.add_argument("--variants", help="comma-separated variant names (restricts the profile)")
    r.add_argument("--machine-kind", help="report folder name, e.g. cpu-2core, gpu-h100")
    r.add_argument("--no-report-copy", action="store_true", help="write only into --out, not into reports/")
    r.add_argument("--repeats", type=int, help="override the profile's repeat count")
    r.add_argument("--threads", type=int, help="torch threads per measurement (default: the profile's, else all cores)")
    r.add_argument("--accuracy-budget", type=float, help="training seconds per accuracy run")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="config override for every variant, e.g. text.pretrained=false (recorded in the results)")
    r.add_argument("--no-accuracy", action="store_true", help="skip the training (accuracy) runs")
    r.add_argument("--extras", help="issue-5 extras to run: a comma list of peers, roofline, scaling, arms; "
                   "'all' or 'none' (default: the profile's; quick has none)")
    r.add_argument("--extras-only", action="store_true",
                   help="run only the extras (no params/FLOPs/memory/speed/accuracy of the variants)")
    r.set_defaults(func=cmd_run)
    rp = sub.add_parser("report", help="render REPORT.md and plots from a results.json")
    rp.add_argument("results")
    rp.add_argument("--out")
    rp.set_defaults(func=cmd_report)
    c = sub.add_parser("compare", help="regression gate: exit 1 when NEW regresses against REFERENCE")
    c.add_argument("reference")
    c.add_argument("new")
    c.add_argument("--speed-tolerance", type=float, default=0.4,
                   help="allowed relative drop of a within-run speed ratio (default 0.4)")
    c.add_argument("--memory-tolerance", type=float, default=0.3,
                   help="allowed relative rise of a within-run memory ratio (default 0.3)")
    c.add_argument("--accuracy-margin", type=float, default=0.02, help="allowed absolute mAP50/R@1 drop (default 0.02)")
    c.add_argument("--allow-size-change", action="store_true", help="parameter/FLOP count changes are intended")
    c.add_argument("--verbose", action="store_true", help="print every check")
    c.set_defaults(func=cmd_compare)
    pr = sub.add_parser("profile", help="torch.profiler trace + top operators for one variant")
    pr.add_argument("--variant", required=True)
    pr.add_argument("--out")
    pr.add_argument("--batch", type=int, default=4)
    pr.add_argument("--steps", type=int, default=2)
    pr.add_argument("--threads", type=int)
    pr.add_argument("--device", default="auto")
    pr.set_defaults(func=cmd_profile)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # results.json was written after every finished measurement: nothing done is lost
        where = getattr(args, "out", None) or "the output folder"
        print(f"\novd-bench: interrupted; finished measurements are in {where}/results.json. "
              f"Continue with: ovd-bench run ... --resume {where}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

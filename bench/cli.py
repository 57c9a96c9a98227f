"""``ovd-bench run | report | compare | profile``.

A user mistake (a :class:`bench.errors.UsageError`, or a bad command line) ends with one line on
stderr, ``ovd-bench <cmd>: <problem>; <what is accepted>``, and exit status 2; an internal error
keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/scipy load (DESIGN.md)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .errors import UsageError  # noqa: E402 - imports nothing heavy; the env defaults above come first


class _CommandLineError(Exception):
    """A command-line mistake argparse found; carries the one line to print."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage block and exits; we want one line and a return code (tests call main)."""

    def error(self, message: str):
        raise _CommandLineError(f"{self.prog}: {message}; see {self.prog} --help")


def writable_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create ``path`` (and parents) and prove a file can be written in it, before any measurement;
    raises :class:`UsageError` naming the folder otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UsageError(f"cannot write to the output folder {path} ({err.strerror or err}); "
                         f"give {flag} a writable folder") from None
    return path


def new_run_dir(kind: str, root: str | Path = "runs") -> Path:
    """A fresh ``runs/<machine-kind>-<UTC YYYYmmdd-HHMMSS>`` folder (``-2``, ``-3``... on a clash).
    ``runs/`` is git-ignored: a run never touches the clone's tracked files (``reports/`` is only
    written when ``--out reports/<machine>`` asks for it)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(root) / f"{kind}-{stamp}"
    writable_dir(base.parent)
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UsageError(f"cannot create a new run folder next to {base}; give --out a folder")


def _overrides(items: list[str]) -> dict:
    from ovd.config import parse_override

    try:
        return dict(parse_override(item) for item in items)
    except ValueError as err:
        raise UsageError(f"--set: {err}") from None


#: Path-valued flags whose machine-specific values are not recorded in results and reports.
_PATH_FLAGS = {"--out": "OUT", "--resume": "DIR", "--accuracy": "ACCURACY"}


def recorded_command(argv: list[str]) -> str:
    """The command as the results record it: a path flag's value stays when it is relative (a folder in the
    clone, e.g. reports/cpu-2core) and becomes a placeholder (OUT, DIR, ACCURACY) when it is absolute, so no
    machine's paths land in a committed report."""
    out, pending = [], None
    for arg in argv:
        if pending is not None:
            out.append(_PATH_FLAGS[pending] if os.path.isabs(arg) else arg)
            pending = None
            continue
        flag, eq, value = arg.partition("=")
        if flag in _PATH_FLAGS and eq:
            out.append(f"{flag}={_PATH_FLAGS[flag] if os.path.isabs(value) else value}")
        else:
            out.append(arg)
            pending = arg if arg in _PATH_FLAGS else None
    return "ovd-bench " + " ".join(shlex.quote(a) for a in out)


def _results_file(path: str | Path) -> Path:
    """A results.json, or the run folder holding it."""
    p = Path(path)
    return p / "results.json" if p.is_dir() else p


def _accuracy_results(path: str | None, here: dict, any_machine: bool = False):
    """``--accuracy PATH``: the accuracy profile's results.json (or its folder), for the Training Time and mAP
    rows of the seed table and the arms' accuracy verdicts; None when not given. ``here``: the machine the
    report is for (an environment dict, :func:`bench.env.same_machine`); an accuracy run from another machine is refused unless
    ``any_machine``: its training steps and its reduced-precision numerics are that machine's."""
    if not path:
        return None
    from .env import machine_identity, same_machine
    from .results import Results

    acc = Results.load(_results_file(path))
    if same_machine(acc.environment, here) is False and not any_machine:
        raise UsageError(f"--accuracy {path}: that run was measured on {machine_identity(acc.environment)}, this "
                         f"report is for {machine_identity(here)}; its "
                         "training times and arm verdicts (bf16 and int8 round differently on other CPUs) are that "
                         "machine's; pass --accuracy-any-machine to use it anyway (the report then says so)")
    return acc


def cmd_run(args) -> int:
    from .env import capture, machine_kind
    from .profiles import add_arms, default_profile_name, get_profile, parse_extras, restrict, with_overrides
    from .report import render
    from .runner import log, run_profile

    default = default_profile_name()
    name = args.profile or default
    profile = get_profile(name)
    user_models = []
    if args.model:  # bring your own model: NAME=package.module:function (bench.sources.ModelUnderTest)
        from .sources import resolve_factory
        from .variants import add_user_models, get_variant, register_user_model

        user_models = [register_user_model(m) for m in args.model]
        # the worker processes import the factory: let them see the caller's folder, first (their own working
        # folder, the clone, must not shadow a same-named module of the caller's, e.g. a copy of examples/)
        from .sources import CALLER_PATH_ENV

        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)
        os.environ[CALLER_PATH_ENV] = os.getcwd()
        sys.path.insert(0, os.getcwd())
        for user in user_models:  # a factory that cannot be imported is a usage error, found before a folder is made
            resolve_factory(get_variant(user).source.target)
        args.variants = ",".join(dict.fromkeys([*(args.variants or "").split(","), *user_models]))
    if args.variants:
        profile = restrict(profile, [v.strip() for v in args.variants.split(",") if v.strip()])
    if user_models:
        profile = add_user_models(profile, user_models)
    extras = parse_extras(args.extras)
    if args.sweep:  # the saturating batch sweep on top of whatever extras the profile (or --extras) runs
        extras = tuple(dict.fromkeys((*(profile.extras if extras is None else extras), "sweep")))
    profile = with_overrides(profile, repeats=args.repeats, accuracy_budget_s=args.accuracy_budget, extras=extras,
                             train_batch=args.train_batch, infer_batch=args.infer_batch)
    profile = add_arms(profile, args.add_arms)
    if args.no_accuracy:
        import dataclasses

        profile = dataclasses.replace(profile, accuracy_variants=())
    if args.set:
        from .common import GLOBAL_OVERRIDES_ENV

        overrides = _overrides(args.set)
        os.environ[GLOBAL_OVERRIDES_ENV] = json.dumps(overrides)  # inherited by every worker process
    if args.extras_only:
        import dataclasses

        profile = dataclasses.replace(profile, static_variants=(), memory_variants=(), speed_variants=(),
                                      accuracy_variants=(), memory_preset_batch=())
    kind = args.machine_kind or machine_kind(args.device if args.device != "auto" else None)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1 (torch threads per measurement), got {args.threads}")
    threads = args.threads or profile.threads or os.cpu_count() or 1
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise UsageError(f"--time-limit must be a finite number of seconds > 0, got {args.time_limit}")
    if args.resume:  # a --resume the run would refuse fails before a folder is made
        from .runner import plan, resumed_tasks

        resumed_tasks(plan(profile), args.resume, threads, resume_any=args.resume_any)
    from .env import this_machine

    accuracy = _accuracy_results(args.accuracy, this_machine(), args.accuracy_any_machine)  # so does a bad --accuracy
    # A run writes only into its own folder; reports/ is refreshed by asking for it with --out.
    out = writable_dir(args.out) if args.out else new_run_dir(kind)
    args.out = str(out)  # the Ctrl-C message in main() names it
    log(f"run folder: {out}")
    command = recorded_command(sys.argv[1:])
    env = capture(command, threads)
    env["machine_kind"] = kind
    if args.set:
        env["global_overrides"] = _overrides(args.set)
    log(f"profile {name}: {len(profile.names())} variants, {profile.repeats} repeats, {threads} threads, extras "
        f"{','.join(profile.extras) or 'none'} -> {out}")
    previous = _terminate_as_interrupt()  # `timeout` / a scheduler's SIGTERM: write the partial report, then stop
    try:
        results = run_profile(profile, out, threads, args.device, resume=args.resume, command=command,
                              environment=env, resume_any=args.resume_any,
                              time_limit_s=args.time_limit if args.time_limit is not None else profile.time_limit_s,
                              fresh_interpreter=args.fresh_interpreter)
    except KeyboardInterrupt:
        _partial_report(out, accuracy)
        raise
    finally:
        _restore_terminate(previous)
    report = render(results, out, accuracy=accuracy)
    log(f"report: {report}")
    errors = [r for r in results.rows if r.status == "error"]
    if errors:
        log(f"{len(errors)} metrics failed (recorded in results.json and the report)")
    log(f"run folder: {out}")
    if results.rows and len(errors) == len(results.rows):
        log("every measurement failed: exit status 1")
        return 1
    return 0


def _terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt (so the partial report is written); returns the previous handler
    (None where handlers cannot be set: not the main thread)."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def _restore_terminate(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _partial_report(out: Path, accuracy) -> None:
    """After Ctrl-C or SIGTERM: REPORT.md from the measurements saved so far (marked INCOMPLETE)."""
    from .report import render
    from .results import Results
    from .runner import log

    path = Path(out) / "results.json"
    if not path.exists():
        return
    try:
        log(f"partial report: {render(Results.load(path), out, accuracy=accuracy)}")
    except Exception as err:  # noqa: BLE001  (the measurements are safe in results.json either way)
        log(f"partial report not written ({type(err).__name__}: {err}); results are in {path}")


def cmd_report(args) -> int:
    from .report import render
    from .results import Results

    path = _results_file(args.results)  # a run folder or its results.json
    res = Results.load(path)
    out = writable_dir(args.out if args.out else path.parent)
    print(render(res, out, accuracy=_accuracy_results(args.accuracy, res.environment, args.accuracy_any_machine)))
    return 0


def cmd_compare(args) -> int:
    from .compare import compare
    from .results import Results

    # a run folder or its results.json, as for report; ResultsError: one line, exit 2 (main)
    ref, new = Results.load(_results_file(args.reference)), Results.load(_results_file(args.new))
    cmp = compare(ref, new, args.speed_tolerance, args.memory_tolerance, args.accuracy_margin, args.allow_size_change,
                  allow_env_change=args.allow_env_change, gate_latency=args.gate_latency)
    print(cmp.table(only_failures=not args.verbose and not cmp.passed) if not cmp.passed or args.verbose
          else cmp.table())
    n = len(cmp.checks)
    print(f"\n{n - len(cmp.failures)}/{n} checks passed" + ("" if cmp.passed else f"; {len(cmp.failures)} REGRESSIONS"))
    return 0 if cmp.passed else 1


def cmd_profile(args) -> int:
    from .profile import profile_variant
    from .variants import get_variant

    get_variant(args.variant)  # an unknown name fails before a folder is made
    out = str(writable_dir(args.out or Path("runs") / "profiles" / args.variant))
    paths = profile_variant(args.variant, out, batch=args.batch, steps=args.steps, threads=args.threads,
                            device=args.device)
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


ACCURACY_HELP = ("results.json (or its folder) of an `ovd-bench run --profile accuracy` run: the seed table's Training "
                 "Time and mAP rows then come from it (the report names that run)")
ANY_MACHINE_HELP = ("with --accuracy: use an accuracy run measured on another machine (CPU model and features, or GPU); "
                    "refused otherwise, and the report says so when used")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="ovd-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="measure the variants of a profile and write results + REPORT.md")
    r.add_argument("--profile", help="quick, default, accuracy, gpu or full (bench/profiles.py); "
                   "default: 'default' on CPU, 'gpu' on CUDA")
    r.add_argument("--out", help="output folder (default: a new runs/<machine-kind>-<UTC YYYYmmdd-HHMMSS>/; "
                   "--out reports/<machine-kind> refreshes the committed report)")
    r.add_argument("--resume", help="folder with a results.json whose finished tasks are kept (those this run "
                   "plans with the same parameters, on the same machine and thread count)")
    r.add_argument("--accuracy", metavar="PATH", help=ACCURACY_HELP)
    r.add_argument("--accuracy-any-machine", action="store_true", help=ANY_MACHINE_HELP)
    r.add_argument("--resume-any", action="store_true",
                   help="with --resume: keep finished tasks measured on another commit or source hash "
                   "(the results then record every source hash)")
    r.add_argument("--variants", help="comma-separated variant names (restricts the profile)")
    r.add_argument("--model", action="append", metavar="NAME=PKG.MODULE:FUNCTION",
                   help="bring your own model: benchmark the factory build(device) -> bench.sources.ModelUnderTest "
                        "under NAME (repeatable; with no --variants only these models run)")
    r.add_argument("--machine-kind", help="machine name recorded in the results and used in the run folder's name, "
                   "e.g. cpu-2core, gpu-h100 (default: detected)")
    r.add_argument("--no-report-copy", action="store_true",
                   help="accepted for old scripts; does nothing (a run never copies into reports/)")
    r.add_argument("--repeats", type=int, help="override the profile's repeat count")
    r.add_argument("--threads", type=int, help="torch threads per measurement (default: the profile's, else all cores)")
    r.add_argument("--accuracy-budget", type=float, help="training seconds per accuracy run")
    r.add_argument("--train-batch", type=int, help="override the profile's common training batch")
    r.add_argument("--infer-batch", type=int, help="override the profile's inference batch (batch 1 is always measured)")
    r.add_argument("--sweep", action="store_true",
                   help="add the saturating batch sweep (inference and training, the pair, doubling batches until "
                        "out of memory or throughput gains < 5%% twice)")
    r.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop starting measurements that would end past this many seconds; the report is marked "
                        "INCOMPLETE and lists what was not run (finish with --resume)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda")
    r.add_argument("--fresh-interpreter", action="store_true",
                   help="start every measurement in a new Python interpreter (the default on CUDA and for memory; "
                        "on the CPU under Linux the others fork from a server that imported the libraries once, 5-10 s "
                        "less per measurement on 2 cores)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="config override for every variant, e.g. text.pretrained=false (recorded in the results)")
    r.add_argument("--no-accuracy", action="store_true", help="skip the training (accuracy) runs")
    from .profiles import EXTRAS

    r.add_argument("--extras", help=f"extras to run: a comma list of {', '.join(EXTRAS)}; 'all' or 'none' "
                   "(default: the profile's; quick has only the roofline, which its efficiency gate needs)")
    r.add_argument("--add-arms", metavar="NAME[,NAME]",
                   help="inference arms (bench/measure/arms.py) to run besides the profile's, e.g. "
                        "compile-frozen+text-cache (in `full`, not in the CPU default: 168-180 s of compilation "
                        "for 1.09-1.16x on 2 cores); switches the arms extra on")
    r.add_argument("--extras-only", action="store_true",
                   help="run only the extras (no params/FLOPs/memory/speed/accuracy of the variants)")
    r.set_defaults(func=cmd_run)
    rp = sub.add_parser("report", help="render REPORT.md and plots from a results.json")
    rp.add_argument("results", help="a run folder or its results.json")
    rp.add_argument("--out")
    rp.add_argument("--accuracy", metavar="PATH", help=ACCURACY_HELP)
    rp.add_argument("--accuracy-any-machine", action="store_true", help=ANY_MACHINE_HELP)
    rp.set_defaults(func=cmd_report)
    c = sub.add_parser("compare", help="regression gate: exit 1 when NEW regresses against REFERENCE")
    c.add_argument("reference", help="a run folder or its results.json")
    c.add_argument("new", help="a run folder or its results.json")
    c.add_argument("--speed-tolerance", type=float, default=0.4,
                   help="allowed relative drop of a within-run speed ratio, a fraction in (0, 1): 0.4 means 40%% "
                        "(default 0.4)")
    c.add_argument("--memory-tolerance", type=float, default=0.3,
                   help="allowed relative rise of a within-run memory ratio, a fraction in (0, 10) (default 0.3)")
    c.add_argument("--accuracy-margin", type=float, default=0.02,
                   help="allowed absolute drop of mAP50, R@1 and vocabulary mAP50 (val and novel), in [0, 1) "
                        "(default 0.02)")
    c.add_argument("--allow-size-change", action="store_true", help="parameter/FLOP count changes are intended")
    c.add_argument("--allow-env-change", action="store_true",
                   help="compare although profile, threads, device kind or torch major.minor differ")
    c.add_argument("--gate-latency", action="store_true",
                   help="also gate the root variants' raw latency p50 (same machine only): for a dedicated machine; "
                        "a shared VM drifts past the tolerance between sessions (bench/compare.py)")
    c.add_argument("--verbose", action="store_true", help="print every check")
    c.set_defaults(func=cmd_compare)
    pr = sub.add_parser("profile", help="torch.profiler trace + top operators for one variant")
    pr.add_argument("--variant", required=True)
    pr.add_argument("--out", help="output folder (default runs/profiles/<variant>)")
    pr.add_argument("--batch", type=int, default=4)
    pr.add_argument("--steps", type=int, default=2)
    pr.add_argument("--threads", type=int)
    pr.add_argument("--device", default="auto")
    pr.set_defaults(func=cmd_profile)
    return p


def _one_line(err: UsageError) -> str:
    """The message on one line, ending with what is accepted (results-file errors may not say it)."""
    from .results import ResultsError

    message = " ".join(str(err).split())
    if isinstance(err, ResultsError) and ";" not in message:
        message += "; expected a results.json written by `ovd-bench run`"
    return message


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _CommandLineError as err:
        print(err, file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except UsageError as err:  # a user mistake: one line; anything else keeps its traceback
        print(f"ovd-bench {args.command}: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # results.json was written after every finished measurement: nothing done is lost
        where = getattr(args, "out", None) or "the output folder"
        print(f"\novd-bench: interrupted; finished measurements are in {where}/results.json. "
              f"Continue with: ovd-bench run ... --resume {where}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

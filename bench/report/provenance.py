"""Which code produced a results file: commit, dirty flag, source hash, and whether rows come from
more than one source hash (a resumed run across edits). Uses ``bench.env.provenance_summary`` when it
exists, else reads the run's and every task's recorded environment."""

from __future__ import annotations

from ..results import Results, failed_repeats


def _fallback_summary(res: Results) -> dict:
    envs = [res.environment] + [t.get("environment") or {} for t in res.tasks.values() if isinstance(t, dict)]
    commits = sorted({str(e["git_commit"]) for e in envs if e.get("git_commit")})
    hashes = {str(h) for e in envs if e.get("source_hash") for h in [e["source_hash"]]}
    hashes |= {str(h) for h in res.environment.get("source_hashes") or []}
    return {"commits": commits, "source_hashes": sorted(hashes), "mixed": len(hashes) > 1,
            "current_source_hash": None}


def summary(res: Results) -> dict:
    """{"commits": [...], "source_hashes": [...], "mixed": bool, "current_source_hash": str | None}."""
    try:
        from ..env import provenance_summary
    except ImportError:  # bench.env without it (older tree): read the recorded environments ourselves
        return _fallback_summary(res)
    return provenance_summary(res)


UNKNOWN = "unknown"


def _short(h: str | None, n: int = 12) -> str:
    return f"`{h[:n]}`" if h and h != UNKNOWN else "unknown"


def lines(res: Results, label: str = "This report") -> list[str]:
    """Markdown lines naming the run (command, date), commit(s), dirty flag and source hash(es)."""
    env = res.environment
    s = summary(res)
    commit = env.get("git_commit") or (s["commits"][0] if len(s["commits"]) == 1 else None)
    dirty = env.get("git_dirty")
    src = env.get("source_hash") or (s["source_hashes"][0] if len(s["source_hashes"]) == 1 else None)
    out = [f"{label}: `{res.command or env.get('command') or '?'}` on {env.get('date_utc', '?')}, commit "
           f"{_short(commit)}" + (" with uncommitted changes under ovd/ or bench/" if dirty else
                                  "" if dirty is False else " (dirty state unknown)")
           + f", source hash {_short(src)}."]
    if len(s["commits"]) > 1:
        out.append(f"**Rows come from {len(s['commits'])} commits**: " + ", ".join(_short(c) for c in s["commits"]) + ".")
    if len(s["source_hashes"]) > 1:  # "mixed" is also set by several commits with one source hash
        out.append(f"**Rows come from {len(s['source_hashes'])} different source hashes** (a run resumed across code "
                   "changes): " + ", ".join(_short(h) for h in s["source_hashes"]) + "; numbers from different "
                   "sources are not strictly comparable.")
    cur = s.get("current_source_hash")
    if src in (None, UNKNOWN):
        out.append("No source hash was recorded for these results (measured before the suite recorded one): "
                   "whether the current code would measure the same cannot be checked.")
    elif cur and len(s["source_hashes"]) <= 1 and cur != src:
        out.append(f"The code rendering this report (source hash {_short(cur)}) differs from the code that measured it.")
    return out


def incomplete_lines(res: Results) -> list[str]:
    """An INCOMPLETE banner when planned tasks have no outcome (a run cut short by ``--time-limit``, Ctrl-C or
    a kill) or the run never recorded its end; [] for a complete run or an older file without a plan."""
    planned = res.profile.get("planned_tasks") or []
    missing = [t for t in planned if t not in res.tasks]
    ended = "suite_seconds" in res.environment
    if not missing and (ended or not planned):
        return []
    why = (f"stopped by the time limit of {res.environment['stopped_by_time_limit_s']:.0f} s"
           if res.environment.get("stopped_by_time_limit_s") else
           "the run did not finish (interrupted or killed)" if not ended else "tasks were skipped")
    listed = ", ".join(f"`{t}`" for t in missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
    return [f"**INCOMPLETE**: {len(missing)} of {len(planned)} planned measurements were not run ({why})"
            + (f": {listed}" if missing else "") + ". Sections that need them are missing or partial; "
            "finish with `ovd-bench run ... --resume <this folder>`."]


def failed_repeat_lines(res: Results) -> list[str]:
    """A warning when some repeat processes of a measurement failed while others succeeded: its figures then
    rest on fewer processes than planned (``extra["failed_repeats"]``, :func:`bench.results.aggregate`); [] when
    none did. A measurement whose every process failed is an error row, reported where its figure would be."""
    groups = failed_repeats(res.rows)
    if not groups:
        return []
    listed = "; ".join(f"`{g.variant}` {g.measurement}: {g.failed} of {g.planned} processes failed "
                       f"({g.last_error.splitlines()[0][:120] if g.last_error else 'no message'})" for g in groups)
    return [f"**Failed repeats**: {len(groups)} measurements rest on fewer processes than planned, so their medians "
            f"and intervals are narrower evidence than the rest: {listed}."]

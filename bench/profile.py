"""``ovd-bench profile``: a torch.profiler trace (Chrome/Perfetto JSON) of inference and one training
step of a variant, and a top-operators table ("where does the time go")."""

from __future__ import annotations

from pathlib import Path


def profile_variant(variant: str, out_dir: str | Path, batch: int = 4, steps: int = 2, threads: int | None = None,
                    device: str = "auto", top: int = 25) -> dict:
    """Write ``trace_infer.json``, ``trace_train.json`` and ``top_ops.md`` into ``out_dir``; returns paths."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from .common import (
        build_model,
        limit_thread_pools,
        make_batch,
        make_forward,
        make_train_step,
        resolve_device,
        synchronize,
    )
    from .variants import get_variant

    limit_thread_pools(threads)
    var = get_variant(variant)
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(var.preset, var.overrides, dev)
    data = make_batch(model, batch, dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    tables, paths = [], {}
    for mode, fn in (("infer", make_forward(model, data, dev)), ("train", make_train_step(model, data, dev))):
        fn()  # warm-up
        synchronize(dev)
        with profile(activities=activities, record_shapes=True, profile_memory=True) as prof:
            for _ in range(steps):
                with record_function(f"{mode}_step"):
                    fn()
            synchronize(dev)
        trace = out_dir / f"trace_{mode}.json"
        prof.export_chrome_trace(str(trace))
        paths[f"trace_{mode}"] = str(trace)
        sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        tables.append(f"## {mode} ({steps} calls, batch {batch})\n\n```\n"
                      + prof.key_averages().table(sort_by=sort, row_limit=top) + "\n```\n")
    md = out_dir / "top_ops.md"
    md.write_text(f"# torch.profiler: {variant}\n\nOpen the traces in https://ui.perfetto.dev or chrome://tracing.\n\n"
                  + "\n".join(tables))
    paths["top_ops"] = str(md)
    return paths

"""FLOPs of one inference forward per image, with ``torch.utils.flop_counter.FlopCounterMode``.

Unit: **FLOPs = 2 x multiply-accumulates** (FlopCounterMode's convention; fvcore counts MACs).
Only matrix multiplies, convolutions and attention are counted (elementwise ops, norms and
softmax are not, by FlopCounterMode's convention). The attention inside SDPA on the CPU
(``aten._scaled_dot_product_flash_attention_for_cpu``) has no formula in torch, so an SDPA model
would look cheaper than it is: :data:`EXTRA_FORMULAS` adds it (and the CUDA variants, in case a
torch version lacks them). Compute ops seen without a formula are listed in ``uncounted_ops``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from bench.measure.specs import FlopsSpec
from bench.results import Row, measured

UNIT = "FLOPs (2*MACs)"
#: Op names that do real arithmetic; seen without a formula they are reported as uncounted.
_COMPUTE_OP = re.compile(r"(attention|conv|\bmm\b|matmul|bmm|addmm|linear|einsum|_scaled_mm)")


def _extra_formulas() -> dict:
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    def fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    def bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    table = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention",
                 "_scaled_dot_product_fused_attention_overrideable"):
        if hasattr(aten, name):
            table[getattr(aten, name)] = fwd  # FlopCounterMode applies shape_wrapper
    for name in ("_scaled_dot_product_flash_attention_for_cpu_backward",
                 "_scaled_dot_product_efficient_attention_backward",
                 "_scaled_dot_product_flash_attention_backward", "_scaled_dot_product_cudnn_attention_backward",
                 "_scaled_dot_product_fused_attention_overrideable_backward"):
        if hasattr(aten, name):
            table[getattr(aten, name)] = bwd
    return table


@dataclass
class FlopsResult:
    """``per_image``: forward FLOPs per image (unit :data:`UNIT`) at ``batch_size`` with the fixed prompt
    of ``prompt_tokens`` tokens; ``per_module``: the same split by top-level component;
    ``by_op``: FLOPs per aten op; ``uncounted_ops``: compute ops seen without a formula -> calls."""

    per_image: float
    unit: str = UNIT
    batch_size: int = 1
    prompt_tokens: int = 0
    per_module: dict = field(default_factory=dict)
    by_op: dict = field(default_factory=dict)
    uncounted_ops: dict = field(default_factory=dict)

    def rows(self) -> list[Row]:
        extra = {"uncounted_ops": self.uncounted_ops, "batch_size": self.batch_size,
                 "prompt_tokens": self.prompt_tokens}
        out = [measured("flops/per_image", self.per_image, self.unit, extra)]
        for name, v in self.per_module.items():
            out.append(measured(f"flops/{name}", v, self.unit))
        return out


def count_flops(fn, mods=None) -> tuple[int, dict, dict, dict]:
    """Run ``fn()`` under FlopCounterMode (with the SDPA formulas) and an op recorder.

    Returns (total FLOPs, per-module-path FLOPs, FLOPs by op, uncounted compute ops -> calls)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    seen: Counter = Counter()

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen[func._overloadpacket] += 1
            return func(*args, **(kwargs or {}))

    counter = FlopCounterMode(mods, display=False, depth=None, custom_mapping=_extra_formulas())
    with counter, _Recorder():
        fn()
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    by_op = {str(op): int(v) for op, v in counts.get("Global", {}).items()}
    per_module = {k: int(sum(v.values())) for k, v in counts.items() if k != "Global"}
    known = set(counter.flop_registry)
    uncounted = {str(op): n for op, n in seen.items() if op not in known and _COMPUTE_OP.search(str(op))}
    del torch
    return int(total), per_module, by_op, uncounted


def _measure_under_test(spec: FlopsSpec) -> FlopsResult:
    """A factory's / hub model's forward on its example inputs (prompt_tokens unknown: 0)."""
    import torch

    from bench.sources import build_under_test

    mut = build_under_test(spec.source, "cpu", spec.batch_size)
    mut.module.eval()

    def fwd():
        with torch.no_grad():
            mut.forward()

    total, _, by_op, uncounted = count_flops(fwd)
    b = mut.batch_size
    return FlopsResult(total / b, UNIT, b, 0, {}, {k: v / b for k, v in by_op.items()}, uncounted)


def measure(spec: FlopsSpec | dict) -> FlopsResult:
    import torch

    from bench.common import build_model, make_batch

    spec = FlopsSpec.coerce(spec)
    if not spec.is_preset:
        return _measure_under_test(spec)
    batch_size = spec.batch_size
    model = build_model(spec.source.preset, spec.source.overrides, "cpu").eval()
    batch = make_batch(model, batch_size, "cpu")

    def fwd():
        with torch.no_grad():
            model(batch.images, batch.input_ids, batch.attention_mask)

    total, per_path, by_op, uncounted = count_flops(fwd)
    per_module = {}
    for name in ("image_encoder", "text_encoder", "fusion", "box_head"):
        key = next((k for k in per_path if k.endswith(f".{name}") and k.count(".") == 1), None)
        per_module[name] = per_path.get(key, 0) / batch_size if key else 0.0
    return FlopsResult(total / batch_size, UNIT, batch_size, int(batch.input_ids.shape[1]), per_module,
                       {k: v / batch_size for k, v in by_op.items()}, uncounted)

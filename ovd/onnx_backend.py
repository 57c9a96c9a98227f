"""The detector's forward run by onnxruntime: ``ovd predict --backend onnxruntime`` and the benchmark's ONNX
arms (``bench.measure.arms``: speed; ``bench.measure.arms_accuracy``: accuracy on a trained checkpoint) all
build :class:`OnnxDetector`, so the arm the report judges is what predict runs.

Why fixed shapes: the forward is exported with ``torch.onnx.export`` at a fixed batch size and a fixed token
count. With dynamic axes the exported graph fails at run time (the language-guided query selection's
gathers keep a traced size), so inputs are padded instead:

- tokens: a prompt of ``t`` tokens is padded (``input_ids`` 0, ``attention_mask`` 0) up to the next
  multiple of :data:`TOKEN_BUCKET` (at most ``text.max_tokens``); padded tokens are masked everywhere in the
  model, so real tokens get the same outputs (a test checks it), and each bucket is exported once, on first use;
- batch: a batch of ``b`` images runs in chunks of the exported batch size; a short last chunk is filled with
  copies of its last image, whose outputs are dropped.

``quantize="int8"``: static int8 post-training quantization of the exported graph by onnxruntime
(``quantize_static``, QDQ format, per-channel int8 weights of the :data:`INT8_STATIC_OPS` nodes, uint8
activations calibrated by MinMax on the ``calibration`` batches the caller gives: training images for the
benchmark's accuracy arms, the first images of the run for ``ovd predict``). PyTorch 2 export quantization
is not used: ``quantize_pt2e`` and the x86 Inductor quantizer are absent from torch 2.14.1 here (they moved
to the separate ``torchao`` package).

Outputs match :meth:`ovd.models.detector.OpenVocabDetector.forward`'s ``pred_logits`` (B, Q, t),
``pred_boxes`` (B, Q, 4) normalized cxcywh, ``text_mask`` (B, t); no auxiliary outputs (inference only).
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

from .models.detector import OpenVocabDetector

TOKEN_BUCKET = 16  # prompts are padded to a multiple of this many tokens (one exported graph per bucket)
INT8_STATIC_OPS = ("Conv", "MatMul", "Gemm")  # the GEMM-heavy ops quantized; the rest stays fp32
INPUT_NAMES = ("images", "input_ids", "attention_mask")
OUTPUT_NAMES = ("pred_logits", "pred_boxes")
QUANTIZATIONS = ("none", "int8")


class _Outputs(torch.nn.Module):
    """Only pred_logits and pred_boxes leave the exported graph."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.m = model

    def forward(self, images, input_ids, attention_mask):
        out = self.m(images, input_ids, attention_mask)
        return out["pred_logits"], out["pred_boxes"]


def export_onnx(model: torch.nn.Module, images, input_ids, attention_mask, path: str | Path) -> str:
    """Export ``model``'s forward at the shapes of the example inputs (CPU tensors) to ``path``: the TorchScript
    exporter, else the dynamo exporter. Returns which one worked; raises RuntimeError naming both errors."""
    wrap = _Outputs(model).eval()
    errors = []
    for dynamo in (False, True):
        try:
            with torch.no_grad():
                torch.onnx.export(wrap, (images, input_ids, attention_mask), str(path), dynamo=dynamo,
                                  opset_version=17, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES))
            return "dynamo" if dynamo else "torchscript"
        except Exception as err:  # noqa: BLE001  (recorded; the next exporter is tried)
            errors.append(f"dynamo={dynamo}: {type(err).__name__}: {str(err)[:300]}")
    raise RuntimeError("ONNX export failed; " + " | ".join(errors))


class _CalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader``: feeds dicts of numpy inputs, then None."""

    def __init__(self, feeds: list[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # onnxruntime >= 1.17 may call it; one pass is all MinMax needs
        pass


def quantize_static_qdq(fp32_path: str | Path, int8_path: str | Path, feeds: list[dict]) -> None:
    """Static int8 QDQ quantization of the :data:`INT8_STATIC_OPS` nodes of an ONNX file (per-channel int8
    weights, uint8 activations, MinMax calibration on ``feeds``: dicts of numpy inputs). Raises RuntimeError
    naming onnxruntime's error when it fails."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    try:
        quantize_static(str(fp32_path), str(int8_path), _CalibrationReader(feeds), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(INT8_STATIC_OPS))
    except Exception as err:  # noqa: BLE001  (re-raised with the step named)
        raise RuntimeError(f"onnxruntime quantize_static (QDQ, per-channel) failed on this model: "
                           f"{type(err).__name__}: {str(err)[:600]}") from err


def _providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider"]
    raise ValueError(f"onnxruntime cannot run on {device.type} here (available providers: "
                     f"{', '.join(ort.get_available_providers())}; for CUDA install onnxruntime-gpu)")


class OnnxDetector(torch.nn.Module):
    """An :class:`~ovd.models.detector.OpenVocabDetector` whose forward runs in onnxruntime sessions.

    ``predict``, ``preprocess``, ``tokenize``, ``processor`` and ``encode_text`` are the torch model's (one
    input processor, one post-processing): only the forward changes. ``text_tokens`` passed to the forward
    are ignored: the exported graph includes the text encoder.

    Args:
        model: the detector (its weights are copied to the CPU for export; it is not changed).
        batch_size: the exported batch size (larger batches run in chunks, smaller ones are padded).
        quantize: "none" (fp32) or "int8" (static QDQ, calibrated on ``calibration``; CPU only).
        calibration: with int8, a list of (images (b, 3, S, S) normalized, input_ids (b, t), attention_mask
            (b, t)) CPU batches from the model's input processor.
        device: where the sessions run ("cpu", or "cuda" with onnxruntime-gpu).
        workdir: where the .onnx files go (default: a temporary folder removed with this object).
        threads: onnxruntime intra-op threads (default ``torch.get_num_threads()``).
    """

    def __init__(self, model: OpenVocabDetector, batch_size: int = 8, quantize: str = "none",
                 calibration: list | None = None, device: str | torch.device = "cpu",
                 workdir: str | Path | None = None, threads: int | None = None):
        super().__init__()
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize={quantize!r}: accepted: {', '.join(QUANTIZATIONS)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        self.device = torch.device(device)
        if quantize == "int8":
            if self.device.type != "cpu":
                raise ValueError("onnxruntime static int8 runs on the CPU only here; use quantize='none' on CUDA")
            if not calibration:
                raise ValueError("quantize='int8' needs calibration batches (images, input_ids, attention_mask)")
        self.providers = _providers(self.device)
        self.model = copy.deepcopy(model).cpu().eval()
        self.config = model.config
        self.batch_size = batch_size
        self.quantize = quantize
        self.calibration = list(calibration or [])
        self.threads = threads
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="ovd-onnx-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self._sessions: dict[int, object] = {}
        self.notes: dict = {"backend": "onnxruntime", "providers": self.providers, "batch_size": batch_size,
                            "quantization": "none", "exported": {}}

    # the torch model's inference API: only the forward differs
    predict = OpenVocabDetector.predict
    preprocess = OpenVocabDetector.preprocess
    tokenize = OpenVocabDetector.tokenize
    _label = OpenVocabDetector.__dict__["_label"]

    @property
    def processor(self):
        return self.model.processor

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids.cpu(), attention_mask.cpu())

    # -- shapes -----------------------------------------------------------------------------------
    def bucket(self, tokens: int) -> int:
        """The exported token count for a prompt of ``tokens`` tokens."""
        limit = self.config.text.max_tokens
        if tokens > limit:
            raise ValueError(f"{tokens} tokens exceed text.max_tokens={limit} (the processor truncates prompts)")
        return min(limit, -(-tokens // TOKEN_BUCKET) * TOKEN_BUCKET)

    def _chunks(self, images, input_ids, attention_mask, tokens: int):
        """Numpy feeds of exactly (batch_size, 3, S, S) / (batch_size, tokens), and each chunk's real size."""
        pad = tokens - input_ids.shape[1]
        ids = torch.nn.functional.pad(input_ids.cpu().long(), (0, pad))
        mask = torch.nn.functional.pad(attention_mask.cpu().long(), (0, pad))
        images = images.detach().cpu().float()
        for start in range(0, images.shape[0], self.batch_size):
            parts = [t[start:start + self.batch_size] for t in (images, ids, mask)]
            real = parts[0].shape[0]
            if real < self.batch_size:  # fill with copies of the last sample (their outputs are dropped)
                parts = [torch.cat([p, p[-1:].expand(self.batch_size - real, *p.shape[1:])]) for p in parts]
            yield {n: p.contiguous().numpy() for n, p in zip(INPUT_NAMES, parts)}, real

    # -- sessions ---------------------------------------------------------------------------------
    def session(self, tokens: int):
        """The onnxruntime session for a token bucket, exported (and quantized) on first use."""
        if tokens in self._sessions:
            return self._sessions[tokens]
        import onnxruntime as ort

        t0 = time.perf_counter()
        S = self.config.image.image_size
        example = (torch.zeros(self.batch_size, 3, S, S), torch.zeros(self.batch_size, tokens, dtype=torch.long),
                   torch.ones(self.batch_size, tokens, dtype=torch.long))
        path = self.workdir / f"detector-b{self.batch_size}-t{tokens}.onnx"
        self.notes["exporter"] = export_onnx(self.model, *example, path)
        if self.quantize == "int8":
            q_path = path.with_suffix(".int8.onnx")
            feeds = [f for images, ids, mask in self.calibration for f, _ in self._chunks(images, ids, mask, tokens)]
            quantize_static_qdq(path, q_path, feeds)
            self.notes["quantization"] = (f"onnxruntime quantize_static QDQ of {'/'.join(INT8_STATIC_OPS)}, "
                                          f"per-channel QInt8 weights, QUInt8 activations, MinMax on "
                                          f"{len(feeds)} calibration batches")
            path = q_path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's idle workers spin after each run by default: interleaved with torch work in the same process
        # they would steal its cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions[tokens] = ort.InferenceSession(str(path), opts, providers=self.providers)
        self.notes["exported"][tokens] = round(time.perf_counter() - t0, 3)
        return self._sessions[tokens]

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                text_tokens: torch.Tensor | None = None) -> dict:
        """images (B, 3, S, S) normalized; input_ids / attention_mask (B, t). ``text_tokens`` is ignored.
        Returns {"pred_logits" (B, Q, t), "pred_boxes" (B, Q, 4) normalized cxcywh, "text_mask" (B, t) bool}
        on ``images``' device."""
        t = input_ids.shape[1]
        tokens = self.bucket(t)
        sess = self.session(tokens)
        logits, boxes = [], []
        for feeds, real in self._chunks(images, input_ids, attention_mask, tokens):
            lo, bo = sess.run(list(OUTPUT_NAMES), feeds)
            logits.append(torch.from_numpy(lo[:real, :, :t]))
            boxes.append(torch.from_numpy(bo[:real]))
        out_device = images.device
        return {"pred_logits": torch.cat(logits).to(out_device), "pred_boxes": torch.cat(boxes).to(out_device),
                "text_mask": (attention_mask != 0).to(out_device)}


def calibration_batches(model: OpenVocabDetector, images, prompts, batch_size: int) -> list[tuple]:
    """(images, input_ids, attention_mask) CPU batches of ``batch_size`` from PIL ``images`` and their prompts
    (caption strings) through the model's input processor: the calibration data of ``quantize="int8"``."""
    out = []
    for start in range(0, len(images), batch_size):
        pixels, _ = model.processor.images(images[start:start + batch_size])
        enc = model.processor.tokenize(list(prompts[start:start + batch_size]))
        out.append((pixels.cpu(), enc["input_ids"].cpu(), enc["attention_mask"].cpu()))
    return out

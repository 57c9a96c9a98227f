"""Batch prediction (``ovd predict --images``): list the input images, run the detector over them in
batches, and write one record per image as JSON Lines or as a COCO results file.

Box formats: the model returns **xyxy in pixels** of each original image (``model.predict``);
JSON Lines keeps that, COCO results use COCO's **[x, y, width, height] in pixels**.

Unreadable images (missing, corrupt, truncated, not an image) never stop a run: each is named in a
warning on stderr, skipped and counted; the caller decides the exit status from the summary.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch

from .data.errors import DataError
from .data.images import load_image
from .inference_options import BACKENDS, COMPILE_MODES, FORMATS, PRECISIONS, QUANTIZATIONS

#: File name endings taken from a folder (compared case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: the top-level submodule ``--quantize int8-except-text`` keeps in fp32: int8 there cost most of the accuracy the
#: all-Linear transform lost on the trained tiny checkpoint (the image encoder, fusion and box head alone lost none)
FP32_SUBMODULE = "text_encoder"
#: the top-level submodule ``--precision bf16-image`` runs under bf16 autocast: the Swin backbone and its projection,
#: about 4/5 of the full-size optimized forward's time; what reads its features (fusion, query selection, scores) stays
#: fp32, where bf16 rounding swaps near-tied proposals
BF16_SUBMODULE = "image_encoder"
#: images (the first readable ones of the run, with the run's prompt) that calibrate onnxruntime's static int8 graph
CALIBRATION_IMAGES = 32
#: compile mode -> ``torch.compile`` keyword arguments. ``ovd predict --compile`` offers
#: :data:`~ovd.inference_options.COMPILE_MODES`; "max-autotune" and "reduce-overhead" (CUDA graphs) are the benchmark's
#: GPU arms only.
COMPILE_KWARGS = {"default": {}, "frozen": {"options": {"freezing": True}}, "max-autotune": {"mode": "max-autotune"},
                  "reduce-overhead": {"mode": "reduce-overhead"}}


# -- inputs ---------------------------------------------------------------------------------
def list_images(spec: str) -> list[Path]:
    """The images named by ``spec``, in a stable order.

    - a folder: its image files (``IMAGE_SUFFIXES``, any case), sorted by name, not recursive;
    - a ``.txt`` list file: one path per line, in file order; relative paths are relative to the
      list file's folder; blank lines and lines starting with ``#`` are ignored;
    - a glob pattern (``*``, ``?``, ``[...]``; ``**`` recurses): the matching files, sorted;
    - an existing file: that one image.

    Paths are not opened here: a listed file that is missing or unreadable is skipped later with a
    warning. Raises ``ValueError`` when ``spec`` names nothing.
    """
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"--images {spec}: no image files in this folder; accepted endings: "
                             f"{', '.join(IMAGE_SUFFIXES)} (any case)")
        return found
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise ValueError(f"--images {spec}: list file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"--images {spec}: the list file is not valid UTF-8 text ({exc.reason} at byte "
                             f"{exc.start})") from exc
        found = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entry = Path(line).expanduser()
                found.append(entry if entry.is_absolute() else path.parent / entry)
        if not found:
            raise ValueError(f"--images {spec}: the list file names no image (one path per line; blank lines "
                             "and # comments are ignored)")
        return found
    if glob.has_magic(spec):
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not found:
            raise ValueError(f"--images {spec}: the pattern matches no file")
        return found
    if path.is_file():
        return [path]
    raise ValueError(f"--images {spec}: no such file or folder; accepted: a folder of images, a glob pattern, "
                     "or a .txt file with one image path per line")


def parse_prompt(prompt: str, phrases: bool) -> str | list[str]:
    """``--prompt`` -> what ``model.predict`` takes per image: the caption string, or (``phrases``)
    the comma-separated phrases as a list."""
    if not prompt.strip():
        raise ValueError("--prompt is empty; give a caption, or comma-separated phrases with --phrases")
    if not phrases:
        return prompt
    parts = [p.strip() for p in prompt.split(",")]
    if any(not p for p in parts):
        raise ValueError(f"--prompt {prompt!r}: an empty phrase between commas; with --phrases give "
                         "comma-separated non-empty phrases, e.g. \"red circle, blue square\"")
    return parts


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``/``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use auto or cpu")
        return torch.device(name)
    raise ValueError(f"--device {name!r}: accepted: auto, cpu, cuda, cuda:N")


def autocast_for(precision: str, device: torch.device, model: torch.nn.Module | None = None):
    """The context that runs inference at ``precision``: fp32 as is, bf16 under ``torch.autocast``, bf16-image with
    only ``model``'s image encoder under it (:func:`submodule_autocast`; ``model`` required)."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "bf16-image":
        if model is None:
            raise ValueError("--precision bf16-image needs the model whose image encoder it runs in bf16")
        return submodule_autocast(model, BF16_SUBMODULE, device, torch.bfloat16)
    raise ValueError(f"--precision {precision!r}: accepted: {', '.join(PRECISIONS)}")


@contextlib.contextmanager
def submodule_autocast(model: torch.nn.Module, name: str, device: torch.device, dtype: torch.dtype):
    """Within the block, every call of ``model.<name>`` made by this thread runs under ``torch.autocast(dtype)`` and
    its floating-point outputs (tensors, in dicts/lists/tuples at any depth) are handed on as fp32, so the rest of the
    forward computes in fp32. The model is not changed: two forward hooks on the submodule, removed on exit (the
    post-hook runs even when the forward raises, so autocast never stays on). Like ``torch.autocast`` the scope is
    per thread (another thread's calls of the same model run as they would without the block), and blocks nest: the
    post-hooks run last-in first-out, so each autocast is left in the order it was entered. A copy of the model made
    inside the block (``copy.deepcopy`` copies hooks) runs as it would without it once the block is left.
    ``ValueError`` when ``model`` has no such submodule, or when it or the submodule is compiled."""
    sub = getattr(model, name, None)
    if not isinstance(sub, torch.nn.Module):
        raise ValueError(f"--precision bf16-image: the model ({type(model).__name__}) has no {name!r} submodule to "
                         "run in bf16; use --precision bf16 (the whole forward) or fp32")
    if any(getattr(m, "_orig_mod", None) is not None or getattr(m, "_compiled_call_impl", None) is not None
           for m in (model, sub)):
        # a compiled graph traced without the hooks does not call them: the block would silently run fp32
        raise ValueError("--precision bf16-image: the model is compiled (torch.compile); its autocast is scoped by "
                         "module hooks, which the compiled graph does not run. Use it before compiling, or "
                         "--precision bf16 (the whole forward)")
    owner = threading.get_ident()
    open_contexts = []  # entered and left by the owner thread only
    block_open = [True]  # False once the block is left: hooks copied with the model do nothing then

    def enter(_module, _args):
        if not block_open[0] or threading.get_ident() != owner:
            return
        ctx = torch.autocast(device_type=device.type, dtype=dtype)
        ctx.__enter__()
        open_contexts.append(ctx)

    def leave(_module, _args, output):
        if not block_open[0] or threading.get_ident() != owner or not open_contexts:
            return None
        open_contexts.pop().__exit__(None, None, None)
        return _as_fp32(output)

    # prepend: the post-hook of a block opened later (an inner one) runs first, leaving its autocast first
    handles = [sub.register_forward_pre_hook(enter),
               sub.register_forward_hook(leave, always_call=True, prepend=True)]
    try:
        yield
    finally:
        block_open[0] = False
        for handle in handles:
            handle.remove()
        while open_contexts:
            open_contexts.pop().__exit__(None, None, None)


def _as_fp32(value):
    """``value`` with every floating tensor that is not fp32 cast to fp32 (containers rebuilt, the rest as is)."""
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, dict):
        return {k: _as_fp32(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple takes its fields as arguments
        return type(value)(*(_as_fp32(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_as_fp32(v) for v in value)
    return value


def check_inference_options(precision: str, quantize: str, device: torch.device, backend: str = "torch",
                            compile: str = "none") -> None:
    """Raise ``ValueError`` for an option set ``ovd predict`` cannot run on ``device``: an unknown name, int8 off
    the CPU (PyTorch has no quantized Linear kernels there; onnxruntime's static int8 runs on the CPU here),
    int8 with bf16 or bf16-image, bf16 or bf16-image with onnxruntime (the exported graph is fp32), compile with
    onnxruntime, with int8 (the benchmark measured torch.compile on the unquantized torch model only) or with
    bf16-image (its autocast is scoped by module hooks, not measured compiled)."""
    if compile not in COMPILE_MODES:
        raise ValueError(f"--compile {compile!r}: accepted: {', '.join(COMPILE_MODES)}")
    if compile != "none" and backend != "torch":
        raise ValueError(f"--compile {compile} compiles the PyTorch model; --backend {backend} runs its own graph. "
                         "Use one or the other")
    if compile != "none" and precision == "bf16-image":
        raise ValueError(f"--compile {compile} with --precision bf16-image: not supported (its autocast is scoped "
                         "to the image encoder by module hooks, which the benchmark did not measure compiled); use "
                         "--precision bf16 with --compile, or bf16-image without it")
    if compile != "none" and quantize != "none":
        raise ValueError(f"--compile {compile} with --quantize {quantize}: not supported (the benchmark measured "
                         "torch.compile on the unquantized model only); use one or the other")
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: accepted: {', '.join(PRECISIONS)}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"--quantize {quantize!r}: accepted: {', '.join(QUANTIZATIONS)}")
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: accepted: {', '.join(BACKENDS)}")
    if quantize.startswith("int8") and torch.device(device).type != "cpu":
        raise ValueError(f"--quantize {quantize}: int8 inference runs on the CPU only here (PyTorch has no "
                         f"quantized Linear kernels for {torch.device(device).type}); use --device cpu, or "
                         "--quantize none with --precision bf16 on the GPU")
    if quantize.startswith("int8") and precision != "fp32":
        raise ValueError(f"--quantize {quantize} with --precision {precision}: int8 layers take fp32 activations; "
                         f"use --precision fp32 with --quantize {quantize}")
    if backend == "onnxruntime" and quantize == "int8-except-text":
        raise ValueError("--quantize int8-except-text is PyTorch's dynamic int8 (--backend torch); with --backend "
                         "onnxruntime use --quantize int8 (static int8 of the exported graph)")
    if backend == "onnxruntime" and precision != "fp32":
        raise ValueError(f"--backend onnxruntime with --precision {precision}: the exported graph is fp32; use "
                         "--precision fp32 (optionally with --quantize int8: static int8)")


def prepare_for_inference(model: torch.nn.Module, precision: str = "fp32", quantize: str = "none",
                          backend: str = "torch", batch_size: int = 8,
                          calibration: Sequence[tuple] | None = None, compile: str = "none") -> torch.nn.Module:
    """The model ``ovd predict`` runs, in eval mode.

    - ``backend="torch"``: the model itself; with ``quantize="int8"`` a copy with dynamic int8 quantization of
      every ``nn.Linear`` (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantized per
      call, fp32 in and out; ``model``'s weights are left as they are); with ``quantize="int8-except-text"`` the
      same but the text encoder (:data:`FP32_SUBMODULE`) stays fp32.
    - ``backend="onnxruntime"``: :class:`ovd.onnx_backend.OnnxDetector` (the forward exported at
      ``batch_size`` and run by onnxruntime, same ``predict``); with ``quantize="int8"`` its static int8 QDQ
      graph, calibrated on ``calibration``: (PIL image, caption) pairs (``ovd predict`` gives the first
      :data:`CALIBRATION_IMAGES` readable images of the run with its prompt).
    - ``compile`` ("default"/"frozen", torch backend, no quantization): ``model`` itself, compiled in place by
      :func:`compile_for_inference`; compilation happens on its first call.

    ``precision`` ("fp32"/"bf16"/"bf16-image") is only checked here; its autocast is applied per call
    (:func:`autocast_for`).
    See :func:`check_inference_options` for what is refused. The benchmark's arms (``bench.measure.arms``,
    ``bench.measure.arms_accuracy``) build the same objects, so the arm the report accepts is what predict runs.
    """
    device = next(model.parameters()).device
    check_inference_options(precision, quantize, device, backend, compile)
    model = model.eval()
    if backend == "onnxruntime":
        from .onnx_backend import OnnxDetector, calibration_batches

        batches = None
        if quantize == "int8":
            if not calibration:
                raise ValueError("--backend onnxruntime --quantize int8 needs calibration images; none could be read")
            images, captions = zip(*calibration)
            batches = calibration_batches(model, list(images), list(captions), batch_size)
        return OnnxDetector(model, batch_size=batch_size, quantize=quantize, calibration=batches, device=device)
    if quantize == "none":
        return compile_for_inference(model, compile) if compile != "none" else model
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    if quantize == "int8-except-text":
        if not isinstance(getattr(model, FP32_SUBMODULE, None), torch.nn.Module):
            raise ValueError(f"--quantize int8-except-text: the model has no {FP32_SUBMODULE!r} submodule to keep in "
                             "fp32; use --quantize int8")
        # qconfig by module name: "" (the whole model) quantized, the text encoder's subtree not
        return quantize_dynamic(model, {"": default_dynamic_qconfig, FP32_SUBMODULE: None}, dtype=torch.qint8)
    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def compile_for_inference(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``model``, compiled in place (``nn.Module.compile``: every call of the module, ``model.predict``'s included,
    goes through ``torch.compile`` with :data:`COMPILE_KWARGS` ``[mode]``), returned for chaining.

    Compilation happens on the first call (about a minute on 2 CPU cores for ``optimized``) and again for each new
    input shape; ``predict_images(fixed_batch=True)`` keeps one shape. "frozen" folds the weights in as they are
    now: the model must not be trained afterwards."""
    if mode not in COMPILE_KWARGS:
        raise ValueError(f"compile mode {mode!r}: accepted: {', '.join(COMPILE_KWARGS)}")
    model.compile(**COMPILE_KWARGS[mode])
    return model


def calibration_pairs(paths: Sequence[Path], prompt: str | list[str], limit: int = CALIBRATION_IMAGES) -> list[tuple]:
    """(PIL image, caption) for the first ``limit`` readable ``paths`` (unreadable ones are skipped here and
    reported by the prediction pass): the static int8 graph's calibration data."""
    from .processor import prompt_caption

    caption = prompt_caption(prompt)
    out = []
    for i, path in enumerate(paths):
        if len(out) >= limit:
            break
        image = _load(i + 1, path)
        if not isinstance(image, Skipped):
            out.append((image, caption))
    return out


# -- inference --------------------------------------------------------------------------------
@dataclass
class ImagePrediction:
    """One image's detections. ``boxes``: (K, 4) xyxy pixels as lists; ``scores``: K floats in
    [0, 1]; ``labels``: K phrase strings. ``index``: 1-based position in the input list."""

    index: int
    file: str
    width: int
    height: int
    boxes: list[list[float]]
    scores: list[float]
    labels: list[str]


@dataclass
class Skipped:
    """An input that could not be read; ``reason`` is the loader's message without the path."""

    index: int
    file: str
    reason: str


@dataclass
class Summary:
    total: int
    processed: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def line(self, max_named: int = 20) -> str:
        """``N images, K skipped: a.jpg (reason), ...`` (the first ``max_named`` skips are named)."""
        text = f"{self.total} images, {len(self.skipped)} skipped"
        if self.skipped:
            named = ", ".join(f"{s.file} ({s.reason})" for s in self.skipped[:max_named])
            more = len(self.skipped) - max_named
            text += ": " + named + (f", and {more} more" if more > 0 else "")
        return text


def _load(index: int, path: Path):
    try:
        return load_image(path)
    except DataError as err:
        reason = str(err)
        prefix = f"{path}: "
        return Skipped(index, str(path), reason[len(prefix):] if reason.startswith(prefix) else reason)


def encode_prompt(model, prompt: str | list[str], batch_size: int, precision: str = "fp32") -> torch.Tensor:
    """The prompt's text tokens (batch_size, T, D), ``model.encode_text`` of ``batch_size`` copies of its caption
    tokenized as ``model.predict`` tokenizes it: computed once per run, since every image gets the same prompt."""
    from .processor import prompt_caption

    caption = prompt_caption(prompt)
    enc = model.tokenize([caption] * batch_size)
    device = next(model.parameters()).device
    with torch.inference_mode(), autocast_for(precision, device, model):
        return model.encode_text(enc["input_ids"].to(device), enc["attention_mask"].to(device))


def predict_images(model, paths: Sequence[Path], prompt: str | list[str], batch_size: int = 8,
                   threshold: float = 0.3, text_threshold: float = 0.25, precision: str = "fp32",
                   progress: bool = True, cache_text: bool = False,
                   fixed_batch: bool = False) -> Iterator[ImagePrediction | Skipped]:
    """Run ``model.predict`` over ``paths`` in batches of ``batch_size`` images, in input order.

    Yields an :class:`ImagePrediction` per image read, or a :class:`Skipped` per image that could
    not be read (a batch goes on without it). A tqdm bar on stderr counts images.

    ``cache_text``: the prompt's text encoding is computed once (:func:`encode_prompt`) and passed to every
    batch instead of running the text encoder per batch (the benchmark's ``text_cache`` feature; same numbers up
    to fp32 rounding). ``fixed_batch``: a short batch (the last one, or one with unreadable images) is padded
    with copies of its last image to ``batch_size`` and the copies' outputs dropped, so a compiled model sees one
    input shape and compiles once.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be a positive integer")
    device = next(model.parameters()).device
    text_tokens = encode_prompt(model, prompt, batch_size, precision) if cache_text else None
    with tqdm(total=len(paths), unit="img", file=sys.stderr, disable=not progress, desc="predict") as bar:
        for start in range(0, len(paths), batch_size):
            loaded = [_load(i + 1, p) for i, p in enumerate(paths[start:start + batch_size], start)]
            readable = [(i, paths[i], img) for i, img in enumerate(loaded, start) if not isinstance(img, Skipped)]
            by_index = {}
            if readable:
                images = [img for _, _, img in readable]
                if fixed_batch:
                    images += images[-1:] * (batch_size - len(images))
                cached = {"text_tokens": text_tokens[:len(images)]} if text_tokens is not None else {}
                with autocast_for(precision, device, model):
                    outputs = model.predict(images, [prompt] * len(images), threshold=threshold,
                                            text_threshold=text_threshold, **cached)[:len(readable)]
                by_index = {i: (p, img, out) for (i, p, img), out in zip(readable, outputs)}
            for i, item in enumerate(loaded, start):
                if isinstance(item, Skipped):
                    yield item
                else:
                    path, img, out = by_index[i]
                    yield ImagePrediction(
                        index=i + 1, file=str(path), width=img.width, height=img.height,
                        boxes=[[round(float(v), 2) for v in box] for box in out["boxes"].float().tolist()],
                        scores=[round(float(s), 4) for s in out["scores"].float().tolist()],
                        labels=list(out["labels"]))
                bar.update(1)


# -- outputs ----------------------------------------------------------------------------------
class AtomicTextFile:
    """``with AtomicTextFile(path) as f: f.write(...)``: writes go to a temporary file next to
    ``path`` that replaces ``path`` (``os.replace``) when the block ends normally and is deleted
    when it raises or when :meth:`discard` was called, so a crash never leaves half a file and an
    earlier file at ``path`` survives a failed run."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._discard = False

    def __enter__(self) -> AtomicTextFile:
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._fh: IO[str] = os.fdopen(fd, "w", encoding="utf-8")
        return self

    def write(self, text: str) -> None:
        self._fh.write(text)

    def discard(self) -> None:
        self._discard = True

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and not self._discard:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                os.replace(self._tmp, self.path)
                return
        finally:
            self._fh.close()
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)


def check_writable(out: str) -> None:
    """Fail before any inference when ``out``'s folder is missing or not writable."""
    if out == "-":
        return
    folder = Path(out).resolve().parent
    if not folder.is_dir():
        raise ValueError(f"--out {out}: folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {out}: folder {folder} is not writable; choose another path")


def jsonl_record(pred: ImagePrediction) -> dict:
    """The JSON Lines record: {"file", "width", "height", "boxes": [[x0, y0, x1, y1] pixels], "scores", "labels"}."""
    return {"file": pred.file, "width": pred.width, "height": pred.height, "boxes": pred.boxes,
            "scores": pred.scores, "labels": pred.labels}


class CocoCollector:
    """Accumulates a COCO results list and the images/categories needed to read it.

    ``image_id`` is the image's 1-based position in the input list; ``category_id`` numbers the
    phrases of the prompt from 1 (``--phrases``), or otherwise the distinct labels in order of first
    appearance. ``meta()`` is a COCO dataset skeleton (images, categories, no annotations), so
    ``COCO(meta_file).loadRes(results_file)`` reads the results directly.
    """

    def __init__(self, phrases: Sequence[str] | None = None) -> None:
        self.categories: dict[str, int] = {p: i for i, p in enumerate(phrases or [], 1)}
        self.images: list[dict] = []
        self.results: list[dict] = []

    def _category(self, label: str) -> int:
        if label not in self.categories:
            self.categories[label] = len(self.categories) + 1
        return self.categories[label]

    def add(self, pred: ImagePrediction) -> None:
        self.images.append({"id": pred.index, "file_name": pred.file, "width": pred.width, "height": pred.height})
        for (x0, y0, x1, y1), score, label in zip(pred.boxes, pred.scores, pred.labels):
            self.results.append({"image_id": pred.index, "category_id": self._category(label),
                                 "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)], "score": score})

    def meta(self, info: dict) -> dict:
        return {"info": info, "images": self.images,
                "categories": [{"id": i, "name": name} for name, i in self.categories.items()],
                "annotations": []}


def meta_path(out: str | Path) -> Path:
    """The COCO sidecar of a results file: ``FILE.meta.json``."""
    return Path(f"{out}.meta.json")


def write_predictions(predictions: Iterator[ImagePrediction | Skipped], summary: Summary, out: str,
                      fmt: str = "jsonl", phrases: Sequence[str] | None = None, info: dict | None = None,
                      warn: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> list[Path]:
    """Consume ``predictions`` into ``out`` and fill ``summary``; returns the files written.

    ``jsonl``: one record per readable image (:func:`jsonl_record`); ``out="-"`` streams to stdout.
    ``coco``: ``out`` holds the COCO results list, ``out.meta.json`` its images and categories.
    Files are written atomically; nothing is written when no image could be read.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: accepted: {', '.join(FORMATS)}")
    if out == "-" and fmt != "jsonl":
        raise ValueError("--out - writes JSON Lines only; give a file name for --format coco")

    def consume(emit: Callable[[ImagePrediction], None]) -> None:
        for item in predictions:
            if isinstance(item, Skipped):
                summary.skipped.append(item)
                warn(f"warning: skipped {item.file}: {item.reason}")
            else:
                summary.processed += 1
                emit(item)

    if out == "-":
        consume(lambda p: (sys.stdout.write(json.dumps(jsonl_record(p)) + "\n"), sys.stdout.flush()))
        return []
    out_path = Path(out)
    if fmt == "jsonl":
        with AtomicTextFile(out_path) as fh:  # streamed: memory stays flat on long lists
            consume(lambda p: fh.write(json.dumps(jsonl_record(p)) + "\n"))
            if not summary.processed:
                fh.discard()
        return [out_path] if summary.processed else []
    coco = CocoCollector(phrases)
    consume(coco.add)
    if not summary.processed:
        return []
    skipped = [{"file": s.file, "reason": s.reason} for s in summary.skipped]
    with AtomicTextFile(meta_path(out_path)) as fh:
        fh.write(json.dumps(coco.meta({**(info or {}), "results": out_path.name, "skipped": skipped}), indent=1))
    with AtomicTextFile(out_path) as fh:
        fh.write(json.dumps(coco.results))
    if not coco.results:
        warn(f"warning: {out_path}: no detection passed the threshold, so the COCO results list is empty; "
             "pycocotools' COCO.loadRes cannot read an empty list (lower --threshold, or check the prompt)")
    return [out_path, meta_path(out_path)]

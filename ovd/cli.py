"""`ovd train | eval | predict | data`: the detector's command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/scipy load (DESIGN.md)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger("ovd")

DEFAULT_PRESET = "optimized-tiny"  # `ovd train` without --preset (and without --resume: that continues its own)


def _overrides(items: list[str] | None) -> dict:
    from .config import parse_override

    return dict(parse_override(s) for s in items or [])


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="dataset folder; default: the built-in synthetic set (generated once)")
    p.add_argument("--format", default="flickr30k", choices=["flickr30k", "mdetr"], help="dataset layout")


def _finite_or_none(value) -> int | None:
    import math

    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += _config_diff(x, y, f"{prefix}{key}.")
        elif x != y:
            keys.append(f"{prefix}{key}")
    return keys


def _resume_config(path: str, preset: str | None, overrides: dict):
    """The config of the run ``--resume`` continues: the checkpoint's own, and the run's budget as it was given
    (``{"total_steps", "time_budget_s"}`` from the checkpoint: --max-steps and --max-time). Read (weights_only)
    before anything is written; a requested --preset/--set that would change it is refused in one line, since the
    weights, optimizer state and schedule belong to the checkpoint's config."""
    from .config import DetectorConfig, get_config, with_overrides
    from .training.module import read_checkpoint

    ckpt = read_checkpoint(path)
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise ValueError(f"--resume {path}: a weights-only checkpoint (no optimizer or loop state) cannot be "
                         "resumed; resume from checkpoints/last.ckpt or interrupted.ckpt of an `ovd train` run")
    stored = DetectorConfig.from_dict(ckpt["hyper_parameters"]["config"])
    if preset is None:
        requested = with_overrides(stored, overrides)
    else:
        requested = get_config(preset, overrides)
    differ = [k for k in _config_diff(stored.to_dict(), requested.to_dict()) if k != "name"]
    if differ or stored.name != requested.name:
        shown = ", ".join(f"{k} (checkpoint {_dotted(stored.to_dict(), k)!r}, requested "
                          f"{_dotted(requested.to_dict(), k)!r})" for k in differ[:4])
        shown += f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        what = (f"was trained with preset {stored.name}, not the requested {requested.name}"
                if stored.name != requested.name else f"was trained with preset {stored.name} but other settings")
        raise ValueError(f"--resume {path}: the checkpoint {what} ({shown or 'same settings'}); drop --preset/--set "
                         "to continue it with its own config, or start a new run without --resume")
    hparams = ckpt["hyper_parameters"]
    return stored, {"total_steps": hparams.get("total_steps"), "time_budget_s": hparams.get("time_budget_s")}


def _dotted(data: dict, key: str):
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _check_out_folder(out: Path, resume: str | None) -> None:
    """Refuse an --out that already holds a training run, unless --resume continues that run: a second run
    would write last-v1.ckpt beside the first run's last.ckpt and overwrite its config.json and summary.json."""
    checkpoints = [out / "checkpoints" / name for name in ("interrupted.ckpt", "last.ckpt")]
    marker = next((m for m in (*checkpoints, out / "summary.json") if m.exists()), None)
    if marker is None:
        return
    if resume is not None and out.resolve() in Path(resume).resolve().parents:
        return  # continues the run in this folder
    latest = max((c for c in checkpoints if c.exists()), key=lambda c: c.stat().st_mtime, default=checkpoints[1])
    raise ValueError(f"--out {out} already holds a training run ({marker.relative_to(out)}); choose a new --out, "
                     f"or continue that run with --resume {latest}")


def cmd_train(args) -> int:
    import lightning as L
    import torch

    from .config import get_config
    from .training.module import DetectorModule
    from .training.run import (
        InterruptCheckpoint,
        StepClock,
        TimeBudget,
        build_datamodule,
        limit_threads,
        parse_duration,
        require_records,
        standard_callbacks,
        trainer_kwargs,
    )

    if args.num_nodes < 1:
        raise ValueError(f"--num-nodes {args.num_nodes}: must be a positive integer")
    if args.throughput_warmup_steps < 0:
        raise ValueError(f"--throughput-warmup-steps {args.throughput_warmup_steps}: must be an integer >= 0")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be a positive integer (records per split)")
    budget_s = parse_duration(args.max_time) if args.max_time else None
    max_steps = args.max_steps
    out = Path(args.out)
    _check_out_folder(out, args.resume)
    limit_threads()
    overrides = _overrides(args.set)
    if args.precision:
        overrides["train.precision"] = args.precision
    if args.batch_size:
        overrides["train.batch_size"] = args.batch_size
    if args.resume:
        config, budget = _resume_config(args.resume, args.preset, overrides)  # before anything is written
        if budget_s is None and max_steps is None:
            # neither --max-time nor --max-steps given: the resumed run keeps the checkpoint's own budget (its
            # clock and one-cycle schedule), instead of Lightning's 10-epoch default and an LR schedule sized to it
            budget_s = float(budget["time_budget_s"]) if budget["time_budget_s"] else None
            max_steps = int(budget["total_steps"]) if budget["total_steps"] else None
    else:
        config = get_config(args.preset or DEFAULT_PRESET, overrides)
    L.seed_everything(config.train.seed, workers=True)
    dm = build_datamodule(config, args.data_root, args.format, limit=args.limit)
    require_records(dm, dm.splits["train"])
    if args.limit_val_batches:
        require_records(dm, dm.splits["val"])
    # --max-time: the training-seconds budget of train_and_evaluate (the suite's accuracy runs): the same
    # TimeBudget clock (validation excluded) stops the run, and the one-cycle schedule is stretched to it.
    module = DetectorModule(config, total_steps=max_steps if max_steps and max_steps > 0 else None,
                            time_budget_s=budget_s)
    callbacks = standard_callbacks(out / "checkpoints", patience=args.early_stopping)
    callbacks.append(InterruptCheckpoint(out / "checkpoints" / "interrupted.ckpt"))
    clock = StepClock(args.throughput_warmup_steps)  # summary.json's train_throughput (ovd-bench reads it)
    callbacks.append(clock)
    if budget_s is not None:
        callbacks.append(TimeBudget(budget_s, progress=False))
    from lightning.pytorch.loggers import TensorBoardLogger

    # no epoch cap unless asked: a step or time budget decides when the run ends
    max_epochs = args.max_epochs if args.max_epochs else (-1 if max_steps or budget_s else 10)
    trainer = _trainer_or_usage_error(
        accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, num_nodes=args.num_nodes,
        max_steps=max_steps or -1, max_epochs=max_epochs, **trainer_kwargs(),  # TrainStep owns precision, clipping
        val_check_interval=args.val_check_interval, check_val_every_n_epoch=1 if args.val_check_interval is None else None,
        limit_val_batches=args.limit_val_batches, callbacks=callbacks,
        logger=TensorBoardLogger(str(out), name="tb"), default_root_dir=str(out), log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    out.mkdir(parents=True, exist_ok=True)  # after the trainer accepted --accelerator/--devices: no empty folder
    # Under DDP every process runs this function; the trainer knows its global rank from the launcher's
    # environment (Lightning's own, torchrun, SLURM), so only rank 0 writes files. Lightning shards the
    # data itself (it wraps the loaders' samplers in a DistributedSampler) and the evaluator's
    # torchmetrics states are summed across processes on compute().
    if trainer.is_global_zero:
        config.save(out / "config.json")
    trainer.fit(module, datamodule=dm, ckpt_path=args.resume, weights_only=True)
    best = callbacks[0].best_model_path or callbacks[0].last_model_path
    summary = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    if trainer.is_global_zero:
        record = {"checkpoint": best, "last": callbacks[0].last_model_path, "metrics": summary,
                  "global_step": trainer.global_step, "world_size": trainer.world_size,
                  "num_nodes": trainer.num_nodes, "train_batches_per_epoch": _finite_or_none(trainer.num_training_batches),
                  "train_throughput": clock.throughput(trainer.world_size, torch.get_num_threads())}
        if budget_s is not None:
            record["train_seconds"] = module.train_seconds
        (out / "summary.json").write_text(json.dumps(record, indent=2))
        print(json.dumps(record, indent=2))
    return 0


def _trainer_or_usage_error(**kwargs):
    """``L.Trainer(**kwargs)``, with Lightning's refusal of the hardware flags (``--accelerator gpu`` on a machine
    without one, more ``--devices`` than it has) as a ``ValueError``: one line, not a traceback."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except MisconfigurationException as err:
        raise ValueError(f"--accelerator {kwargs.get('accelerator')} --devices {kwargs.get('devices')}: {err}") from None


def cmd_eval(args) -> int:
    import torch

    from .training.metrics import load_predictions, score_prediction_file, sentence_keys

    if args.predictions:
        if args.protocol != "grounding":
            raise SystemExit("ovd eval --predictions scores the grounding protocol only; drop --protocol vocabulary "
                             "or evaluate a --checkpoint")
        if not args.data_root:
            raise SystemExit("ovd eval --predictions needs --data-root (the dataset the predictions are for)")
        from .data.dataset import GroundingDataset
        from .data.readers import load_records

        records = load_records(args.data_root, args.format, args.split)
        dataset = GroundingDataset(records, split=args.split)
        if not len(dataset):
            raise ValueError(f"split {args.split!r} of {args.data_root} ({args.format}) has no records: nothing to "
                             "score; check its split file or choose another --data-root/--split")
        phrases = {(str(s.record.image_id), int(s.record.sentence_id)): [p["gt_boxes_xyxy"] for p in s.phrases]
                   for s in dataset.samples}
        result = score_prediction_file(load_predictions(args.predictions), phrases, all_sentences=sentence_keys(records))
        print(json.dumps(result, indent=2))
        return 0
    if not args.checkpoint:
        raise SystemExit("ovd eval needs --checkpoint C (or --predictions FILE)")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be a positive integer (records of the split)")
    from .training.module import load_checkpoint
    from .training.run import build_datamodule, limit_threads, require_records

    limit_threads()
    module = load_checkpoint(args.checkpoint)
    if torch.cuda.is_available():
        module = module.cuda()
    dm = build_datamodule(module.config, args.data_root, args.format, limit=args.limit)
    require_records(dm, args.split)
    if args.protocol == "vocabulary":
        from .training.vocabulary_eval import evaluate_vocabulary

        metrics = evaluate_vocabulary(module.model, dm.dataset(args.split))
    else:
        metrics = module.evaluate(dm.dataloader_for(args.split))
    result = {f"{args.split}/{k}": v for k, v in metrics.items()}
    print(json.dumps(result, indent=2))
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_image_out(out: Path, image: Path) -> None:
    """``ovd predict --image``'s --out, checked before the model loads: .json (the detections) or an image file
    name PIL can write (the drawing), in an existing writable folder, and not the input image."""
    from PIL import Image

    from .batch_predict import check_writable

    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name: .json for the detections, or an image such as "
                         ".png for the drawing")
    if _same_file(out, image):
        raise ValueError(f"--out {out} is the input image; the drawing would overwrite it: choose another file name")
    Image.init()
    writable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    if out.suffix.lower() != ".json" and out.suffix.lower() not in writable:
        raise ValueError(f"--out {out}: unknown file ending {out.suffix or '(none)'}; accepted: .json (the detections "
                         "as JSON) or an image ending Pillow writes (.png, .jpg, .jpeg, .bmp, .webp, .tif, ...)")
    check_writable(str(out))


def cmd_predict(args) -> int:
    if args.images is not None:
        return _predict_many(args)
    from PIL import ImageDraw

    from .batch_predict import autocast_for, calibration_pairs, prepare_for_inference
    from .data.images import load_image
    from .training.module import load_checkpoint

    out = Path(args.out) if args.out else Path(args.image).with_suffix(".pred.png")
    _check_image_out(out, Path(args.image))  # before the model loads and runs
    module = load_checkpoint(args.checkpoint)  # on the CPU
    image = load_image(args.image)
    prompt = [p.strip() for p in args.prompt.split(",")] if args.phrases else args.prompt
    model = prepare_for_inference(module.model, args.precision, args.quantize, args.backend, batch_size=1,
                                  calibration=calibration_pairs([Path(args.image)], prompt), compile=args.compile)
    with autocast_for(args.precision, next(model.parameters()).device, model):
        result = model.predict([image], [prompt], threshold=args.threshold, text_threshold=args.text_threshold)[0]
    record = {"image": str(args.image), "prompt": args.prompt,
              "detections": [{"box_xyxy": [round(v, 2) for v in b.tolist()], "score": round(float(s), 4), "label": lab}
                             for b, s, lab in zip(result["boxes"], result["scores"], result["labels"])]}
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(record, indent=2) + "\n")
    else:
        draw = ImageDraw.Draw(image)
        for det in record["detections"]:
            draw.rectangle(det["box_xyxy"], outline=(255, 0, 0), width=2)
            draw.text((det["box_xyxy"][0] + 2, det["box_xyxy"][1] + 2), f"{det['label']} {det['score']:.2f}",
                      fill=(255, 0, 0))
        image.save(out)
        record["drawing"] = str(out)
    print(json.dumps(record, indent=2))
    return 0


def _predict_many(args) -> int:
    """``ovd predict --images``: everything a user can get wrong is checked before the model loads."""
    from .batch_predict import (
        Summary,
        calibration_pairs,
        check_inference_options,
        check_writable,
        list_images,
        meta_path,
        parse_prompt,
        predict_images,
        prepare_for_inference,
        resolve_device,
        write_predictions,
    )
    from .training.module import load_checkpoint

    if args.out is None:
        raise ValueError("ovd predict --images needs --out FILE (or --out - for JSON Lines on stdout)")
    if args.out == "-" and args.format != "jsonl":
        raise ValueError("--out - writes JSON Lines only; give a file name for --format coco")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be a positive integer")
    if args.out != "-" and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name, e.g. --out {Path(args.out) / 'preds.jsonl'}")
    check_writable(args.out)
    prompt = parse_prompt(args.prompt, args.phrases)
    device = resolve_device(args.device)
    check_inference_options(args.precision, args.quantize, device, args.backend, args.compile)  # before loading
    paths = list_images(args.images)
    if args.out != "-":
        # the output file (and --format coco's FILE.meta.json) must be neither an input image nor the list file
        outs = [Path(args.out)] + ([meta_path(args.out)] if args.format == "coco" else [])
        for target in outs:
            what = f"--out {args.out}" + ("" if target == Path(args.out) else f" (its sidecar {target})")
            if _same_file(target, Path(args.images)):
                raise ValueError(f"{what} is the --images list file; writing there would overwrite it: choose "
                                 "another file name")
            if any(_same_file(target, path) for path in paths):
                raise ValueError(f"{what} is one of the input images; writing there would overwrite it: choose "
                                 "another file name")
    module = load_checkpoint(args.checkpoint)
    calibration = (calibration_pairs(paths, prompt) if args.backend == "onnxruntime" and args.quantize == "int8"
                   else None)
    model = prepare_for_inference(module.model.to(device), args.precision, args.quantize, args.backend,
                                  batch_size=args.batch_size, calibration=calibration, compile=args.compile)
    if args.compile != "none" and not args.no_progress:
        print(f"ovd predict: --compile {args.compile}: the first batch compiles the model (about a minute on 2 CPU "
              "cores)", file=sys.stderr)
    summary = Summary(total=len(paths))
    predictions = predict_images(model, paths, prompt, batch_size=args.batch_size, threshold=args.threshold,
                                 text_threshold=args.text_threshold, precision=args.precision,
                                 progress=not args.no_progress, cache_text=args.backend == "torch",
                                 fixed_batch=args.compile != "none")
    info = {"checkpoint": str(args.checkpoint), "prompt": args.prompt, "phrases": bool(args.phrases),
            "threshold": args.threshold, "text_threshold": args.text_threshold, "precision": args.precision,
            "quantize": args.quantize, "backend": args.backend, "compile": args.compile}
    from tqdm import tqdm

    written = write_predictions(predictions, summary, args.out, args.format,
                                phrases=prompt if args.phrases else None, info=info,
                                warn=lambda msg: tqdm.write(msg, file=sys.stderr))  # keeps the bar intact
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    print(summary.line(), file=sys.stderr)
    if not summary.processed:
        print("ovd predict: no image could be read; nothing written", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import list_presets
    from .inference_options import BACKENDS, COMPILE_MODES, FORMATS, PRECISIONS, QUANTIZATIONS

    parser = argparse.ArgumentParser(prog="ovd", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset with Lightning")
    t.add_argument("--preset", default=None, choices=list_presets(),
                   help="default optimized-tiny; with --resume, the checkpoint's own (a different one is refused)")
    _add_data_args(t)
    t.add_argument("--out", default="runs/train", help="folder for checkpoints, config and TensorBoard logs")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--max-epochs", type=int, default=None)
    t.add_argument("--max-time", default=None, metavar="DD:HH:MM:SS",
                   help="training-time budget, as train_and_evaluate's max_time_s: time inside training steps "
                   "(validation and data loading not counted); the one-cycle schedule is stretched to it and no "
                   "epoch cap applies unless --max-epochs is given")
    t.add_argument("--precision", default=None, help="override train.precision (auto, 32-true, 16-mixed, bf16-mixed)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--accelerator", default="auto")
    t.add_argument("--devices", default="auto")
    t.add_argument("--strategy", default="auto", help="e.g. ddp (gloo on CPU)")
    t.add_argument("--num-nodes", type=int, default=1,
                   help="machines in the run (Lightning Trainer num_nodes); start one process per device on each "
                   "with torchrun or srun, see the README")
    t.add_argument("--limit", type=int, default=None, help="use at most this many records per split")
    t.add_argument("--limit-val-batches", type=float, default=1.0)
    t.add_argument("--val-check-interval", type=int, default=None, help="validate every N training steps")
    t.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE")
    t.add_argument("--resume", default=None,
                   help="checkpoint to resume from (continues the same run with the checkpoint's config; --out may "
                   "be the folder it is in, any other --out must not hold a run)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. fusion.attention=mha")
    t.add_argument("--throughput-warmup-steps", type=int, default=1, metavar="N",
                   help="untimed first steps of summary.json's train_throughput (samples/s of all processes)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="mAP and Recall@k of a checkpoint, or score a predictions file")
    e.add_argument("--checkpoint")
    e.add_argument("--predictions", help="MDETR-style predictions JSON to score with the same protocol")
    _add_data_args(e)
    e.add_argument("--split", default="val")
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--protocol", choices=("grounding", "vocabulary"), default="grounding",
                   help="grounding: phrase mAP and Recall@k of each caption's phrases (default); vocabulary: "
                   "detection AP with the split's whole class vocabulary as the prompt, absent classes "
                   "included, plus the absent-phrase false-positive rate and present-phrase recall")
    e.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "predict", help="detect prompted phrases: one image (JSON + a PNG with boxes) or many (JSON Lines or COCO)",
        description="--image: one image, JSON on stdout and a PNG with the boxes. --images: many images in "
        "batches; unreadable ones are named, skipped and counted; exit status 0 when at least one image was "
        "processed, else 2. JSON Lines: one line per image {file, width, height, boxes: [[x0, y0, x1, y1] "
        "pixels], scores, labels}. COCO: FILE is the results list pycocotools' COCO.loadRes reads "
        "({image_id, category_id, bbox: [x, y, w, h] pixels, score}); FILE.meta.json holds the images "
        "(id = 1-based position in the input list) and the categories (the phrases with --phrases, else the "
        "labels seen), as a COCO dataset without annotations: COCO('FILE.meta.json').loadRes('FILE').")
    p.add_argument("--checkpoint", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="one image file")
    source.add_argument("--images", metavar="DIR|GLOB|LIST.txt",
                        help="a folder (jpg, jpeg, png, bmp, webp; sorted), a quoted glob pattern, or a .txt file "
                        "with one path per line (relative to the list file; blank lines and # comments ignored)")
    p.add_argument("--prompt", required=True, help="a caption, or comma-separated phrases with --phrases")
    p.add_argument("--phrases", action="store_true", help="treat --prompt as comma-separated phrases")
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--text-threshold", type=float, default=0.25)
    p.add_argument("--out", default=None,
                   help="--image: a .json file for the detections, or an image file (.png, .jpg, ...) for the "
                   "drawing (default IMAGE.pred.png), never the input image; --images: the output file (not a "
                   "folder), written atomically, or - for JSON Lines on stdout")
    p.add_argument("--format", default="jsonl", choices=FORMATS, help="--images output format")
    p.add_argument("--batch-size", type=int, default=8, help="--images: images per forward pass")
    p.add_argument("--device", default="auto", help="--images: auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="--image and --images: bf16 runs the whole forward under "
                   "torch.autocast(dtype=torch.bfloat16); bf16-image only the image encoder (most of the work), "
                   "the text encoder, fusion and box head staying fp32 (the benchmark's bf16-image arms)")
    p.add_argument("--quantize", default="none", choices=QUANTIZATIONS,
                   help="int8 (CPU only, with --precision fp32): with --backend torch, dynamic int8 quantization "
                   "of every nn.Linear (int8 weights, fp32 activations); with --backend onnxruntime, static int8 "
                   "(QDQ) calibrated on the first 32 readable input images with the prompt. int8-except-text "
                   "(--backend torch): dynamic int8 of every nn.Linear but the text encoder's. See the benchmark "
                   "report's accuracy-judged arms")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="onnxruntime: the forward exported to ONNX (at --batch-size, prompts padded to a multiple "
                   "of 16 tokens) and run by onnxruntime with every graph optimization; fp32 only")
    p.add_argument("--compile", default="none", choices=COMPILE_MODES,
                   help="torch.compile the model (--backend torch, --quantize none, --precision fp32 or bf16): "
                   "default (Inductor) or frozen (Inductor with the weights folded in as constants: the benchmark's compile-frozen arm). The "
                   "first batch compiles (about a minute on 2 CPU cores); --images pads the last batch to "
                   "--batch-size so nothing compiles twice")
    p.add_argument("--no-progress", action="store_true", help="--images: no progress bar on stderr")
    p.set_defaults(func=cmd_predict)

    from .data.commands import add_data_commands

    add_data_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # treat SIGTERM like Ctrl-C: save and exit
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"ovd: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

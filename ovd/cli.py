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


def _overrides(items: list[str] | None) -> dict:
    from .config import parse_override

    return dict(parse_override(s) for s in items or [])


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="dataset folder; default: the built-in synthetic set (generated once)")
    p.add_argument("--format", default="flickr30k", choices=["flickr30k", "mdetr"], help="dataset layout")


def cmd_train(args) -> int:
    import lightning as L
    import torch

    from .config import get_config
    from .training.module import DetectorModule
    from .training.run import (
        InterruptCheckpoint,
        build_datamodule,
        limit_threads,
        resolve_precision,
        standard_callbacks,
    )

    limit_threads()
    overrides = _overrides(args.set)
    if args.precision:
        overrides["train.precision"] = args.precision
    if args.batch_size:
        overrides["train.batch_size"] = args.batch_size
    config = get_config(args.preset, overrides)
    L.seed_everything(config.train.seed, workers=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.json")
    dm = build_datamodule(config, args.data_root, args.format, limit=args.limit)
    module = DetectorModule(config, total_steps=args.max_steps if args.max_steps and args.max_steps > 0 else None)
    callbacks = standard_callbacks(out / "checkpoints", patience=args.early_stopping)
    callbacks.append(InterruptCheckpoint(out / "checkpoints" / "interrupted.ckpt"))
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer = L.Trainer(
        accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
        precision=resolve_precision(config.train.precision, args.accelerator),
        max_steps=args.max_steps or -1, max_epochs=args.max_epochs if args.max_epochs else (None if args.max_steps else 10),
        max_time=args.max_time, gradient_clip_val=config.train.grad_clip or None,
        val_check_interval=args.val_check_interval, check_val_every_n_epoch=1 if args.val_check_interval is None else None,
        limit_val_batches=args.limit_val_batches, callbacks=callbacks,
        logger=TensorBoardLogger(str(out), name="tb"), default_root_dir=str(out), log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=args.resume, weights_only=True)
    best = callbacks[0].best_model_path or callbacks[0].last_model_path
    summary = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    if trainer.is_global_zero:
        record = {"checkpoint": best, "last": callbacks[0].last_model_path, "metrics": summary}
        (out / "summary.json").write_text(json.dumps(record, indent=2))
        print(json.dumps(record, indent=2))
    return 0


def cmd_eval(args) -> int:
    import torch

    from .training.metrics import load_predictions, score_prediction_file

    if args.predictions:
        if not args.data_root:
            raise SystemExit("ovd eval --predictions needs --data-root (the dataset the predictions are for)")
        from .data.dataset import GroundingDataset
        from .data.readers import load_records

        dataset = GroundingDataset(load_records(args.data_root, args.format, args.split), split=args.split)
        phrases = {(str(s.record.image_id), int(s.record.sentence_id)): [p["gt_boxes_xyxy"] for p in s.phrases]
                   for s in dataset.samples}
        result = score_prediction_file(load_predictions(args.predictions), phrases)
        print(json.dumps(result, indent=2))
        return 0
    if not args.checkpoint:
        raise SystemExit("ovd eval needs --checkpoint C (or --predictions FILE)")
    from .training.module import load_checkpoint
    from .training.run import build_datamodule, limit_threads

    limit_threads()
    module = load_checkpoint(args.checkpoint)
    if torch.cuda.is_available():
        module = module.cuda()
    dm = build_datamodule(module.config, args.data_root, args.format, limit=args.limit)
    result = {f"{args.split}/{k}": v for k, v in module.evaluate(dm.dataloader_for(args.split)).items()}
    print(json.dumps(result, indent=2))
    return 0


def cmd_predict(args) -> int:
    from PIL import ImageDraw

    from .data.images import load_image
    from .training.module import load_checkpoint

    module = load_checkpoint(args.checkpoint)
    image = load_image(args.image)
    prompt = [p.strip() for p in args.prompt.split(",")] if args.phrases else args.prompt
    result = module.model.predict([image], [prompt], threshold=args.threshold, text_threshold=args.text_threshold)[0]
    record = {"image": str(args.image), "prompt": args.prompt,
              "detections": [{"box_xyxy": [round(v, 2) for v in b.tolist()], "score": round(float(s), 4), "label": lab}
                             for b, s, lab in zip(result["boxes"], result["scores"], result["labels"])]}
    out_png = Path(args.out) if args.out else Path(args.image).with_suffix(".pred.png")
    draw = ImageDraw.Draw(image)
    for det in record["detections"]:
        draw.rectangle(det["box_xyxy"], outline=(255, 0, 0), width=2)
        draw.text((det["box_xyxy"][0] + 2, det["box_xyxy"][1] + 2), f"{det['label']} {det['score']:.2f}", fill=(255, 0, 0))
    image.save(out_png)
    record["drawing"] = str(out_png)
    print(json.dumps(record, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import list_presets

    parser = argparse.ArgumentParser(prog="ovd", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset with Lightning")
    t.add_argument("--preset", default="optimized-tiny", choices=list_presets())
    _add_data_args(t)
    t.add_argument("--out", default="runs/train", help="folder for checkpoints, config and TensorBoard logs")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--max-epochs", type=int, default=None)
    t.add_argument("--max-time", default=None, help="wall-clock limit DD:HH:MM:SS")
    t.add_argument("--precision", default=None, help="override train.precision (auto, 32-true, 16-mixed, bf16-mixed)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--accelerator", default="auto")
    t.add_argument("--devices", default="auto")
    t.add_argument("--strategy", default="auto", help="e.g. ddp (gloo on CPU)")
    t.add_argument("--limit", type=int, default=None, help="use at most this many records per split")
    t.add_argument("--limit-val-batches", type=float, default=1.0)
    t.add_argument("--val-check-interval", type=int, default=None, help="validate every N training steps")
    t.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE")
    t.add_argument("--resume", default=None, help="checkpoint to resume from (continues the same run)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. fusion.attention=mha")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="mAP and Recall@k of a checkpoint, or score a predictions file")
    e.add_argument("--checkpoint")
    e.add_argument("--predictions", help="MDETR-style predictions JSON to score with the same protocol")
    _add_data_args(e)
    e.add_argument("--split", default="val")
    e.add_argument("--limit", type=int, default=None)
    e.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="detect prompted phrases in one image; JSON + a PNG with boxes")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--prompt", required=True, help="a caption, or comma-separated phrases with --phrases")
    p.add_argument("--phrases", action="store_true", help="treat --prompt as comma-separated phrases")
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--text-threshold", type=float, default=0.25)
    p.add_argument("--out", default=None, help="PNG path for the drawing")
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

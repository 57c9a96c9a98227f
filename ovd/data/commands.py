"""``ovd data synth|stats``: argparse wiring for the data layer (the CLI calls
``add_data_commands(subparsers)``)."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import DataError
from .readers import FORMATS


def _synth(args: argparse.Namespace) -> int:
    from .synthetic import check_output_folder, write_synthetic_dataset

    check_output_folder(args.out, overwrite=args.overwrite)  # before anything is written

    out = write_synthetic_dataset(
        args.out,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        num_novel=args.num_novel,
        image_size=(args.width, args.height),
        captions_per_image=args.captions_per_image,
        progress=True,
    )
    print(out)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .stats import dataset_stats

    try:
        stats = dataset_stats(args.root, args.format, args.split, fast=args.fast, progress=True)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for key, value in stats.items():
            if key not in ("skipped", "rejected_files"):
                print(f"{key:18s} {value}")
        print("skipped" + ("" if stats["skipped"] else "            none"))
        for reason, count in stats["skipped"].items():
            print(f"  {reason:16s} {count}")
        # every rejected file by name: a count alone does not say which file to fix
        print("rejected files" + ("" if stats["rejected_files"] else "     none"))
        for item in stats["rejected_files"]:
            print(f"  {item['reason']:16s} {item['file']}: {item['error']}")
    return 0


def add_data_commands(subparsers) -> argparse.ArgumentParser:
    """Register ``data`` with ``synth`` and ``stats`` on an argparse subparsers object."""
    data = subparsers.add_parser("data", help="generate or inspect datasets")
    sub = data.add_subparsers(dest="data_command", required=True)

    synth = sub.add_parser("synth", help="write the synthetic dataset in the Flickr30k Entities layout")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--num-train", type=int, default=1600)
    synth.add_argument("--num-val", type=int, default=200)
    synth.add_argument("--num-test", type=int, default=200)
    synth.add_argument("--num-novel", type=int, default=200)
    synth.add_argument("--width", type=int, default=160)
    synth.add_argument("--height", type=int, default=120)
    synth.add_argument("--captions-per-image", type=int, default=2)
    synth.add_argument("--overwrite", action="store_true",
                       help="write into a folder that is not empty (its split files, images and synthetic.json "
                       "are replaced)")
    synth.set_defaults(func=_synth)

    stats = sub.add_parser("stats", help="count images, captions, phrases, boxes and skipped items of a split")
    stats.add_argument("--root", required=True)
    stats.add_argument("--format", choices=FORMATS, default="flickr30k")
    stats.add_argument("--split", default="train")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--fast", action="store_true", help="read image headers only, do not decode")
    stats.set_defaults(func=_stats)
    return data

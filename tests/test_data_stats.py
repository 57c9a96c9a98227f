"""`ovd data stats` as a validator: every file it rejects is named in the table, in --json and in the log."""

from __future__ import annotations

import argparse
import json
import logging
import re

import pytest

from ovd.data.commands import add_data_commands
from ovd.data.stats import dataset_stats
from ovd.data.synthetic import write_synthetic_dataset


@pytest.fixture
def damaged(tmp_path):
    """A 3-image train split: image 1 corrupt, image 2's annotation giving the wrong size, image 3 fine.
    Returns (root, corrupt image path, mismatched image path)."""
    root = write_synthetic_dataset(tmp_path / "s", seed=0, num_train=3, num_val=1, num_test=1, num_novel=1,
                                   image_size=(64, 48))
    first, second, _ = (root / "train.txt").read_text().split()
    corrupt = root / "Images" / f"{first}.jpg"
    corrupt.write_bytes(b"junk")
    xml = root / "Annotations" / f"{second}.xml"
    xml.write_text(re.sub(r"<width>\d+</width>", "<width>80</width>", xml.read_text()))
    return root, corrupt, root / "Images" / f"{second}.jpg"


def stats_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "stats", *argv])
    return args.func(args)


def test_stats_names_every_rejected_file(damaged, caplog):
    root, corrupt, mismatched = damaged
    with caplog.at_level(logging.WARNING, logger="ovd.data.stats"):
        stats = dataset_stats(root, "flickr30k", "train")
    assert stats["skipped"]["bad_image"] == 1 and stats["skipped"]["size_mismatch"] == 1
    rejected = {item["file"]: item for item in stats["rejected_files"]}
    assert set(rejected) == {str(corrupt), str(mismatched)}
    assert rejected[str(corrupt)]["reason"] == "bad_image"
    assert rejected[str(corrupt)]["error"].startswith("not a recognised image file")
    assert rejected[str(mismatched)] == {"file": str(mismatched), "reason": "size_mismatch",
                                         "error": "image is 64x48 (WxH), the annotation says 80x48"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{corrupt}: rejected (bad_image)" in logged and f"{mismatched}: rejected (size_mismatch)" in logged


def test_stats_cli_table_and_json_name_the_files(damaged, capsys):
    root, corrupt, mismatched = damaged
    assert stats_cli("--root", str(root), "--split", "train") == 0
    table = capsys.readouterr().out
    assert re.search(rf"bad_image\s+{re.escape(str(corrupt))}: ", table)
    assert re.search(rf"size_mismatch\s+{re.escape(str(mismatched))}: image is 64x48", table)
    assert stats_cli("--root", str(root), "--split", "train", "--json", "--fast") == 0
    files = {item["file"]: item["reason"] for item in json.loads(capsys.readouterr().out)["rejected_files"]}
    assert files == {str(corrupt): "bad_image", str(mismatched): "size_mismatch"}


def test_clean_split_rejects_nothing(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "s", seed=0, num_train=2, num_val=1, num_test=1, num_novel=1,
                                   image_size=(64, 48))
    assert dataset_stats(root, "flickr30k", "train")["rejected_files"] == []
    assert stats_cli("--root", str(root), "--split", "train") == 0
    assert re.search(r"^rejected files\s+none$", capsys.readouterr().out, re.M)

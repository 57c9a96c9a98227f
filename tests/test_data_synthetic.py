"""Synthetic dataset: determinism, readability by the real reader, the open-vocabulary
split, the cache helper, stats, the data module and the CLI commands."""

from __future__ import annotations

import argparse
import filecmp
import json
import re

import pytest
import torch

from ovd.data.commands import add_data_commands
from ovd.data.datamodule import GroundingDataModule
from ovd.data.errors import DataError
from ovd.data.flickr30k import load_flickr30k
from ovd.data.stats import dataset_stats
from ovd.data.synthetic import default_synthetic_root, ensure_synthetic_dataset, write_synthetic_dataset

SMALL = dict(num_train=40, num_val=8, num_test=8, num_novel=20, image_size=(96, 72))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), seed=3, **SMALL)


def test_same_seed_same_files(synth, tmp_path):
    again = write_synthetic_dataset(tmp_path / "again", seed=3, **SMALL)
    for sub in ("Sentences", "Annotations"):
        names = sorted(p.name for p in (synth / sub).iterdir())
        assert names == sorted(p.name for p in (again / sub).iterdir())
        _, mismatch, errors = filecmp.cmpfiles(synth / sub, again / sub, names, shallow=False)
        assert not mismatch and not errors
    for name in ("train.txt", "val.txt", "test.txt", "novel.txt", "synthetic.json"):
        assert (synth / name).read_bytes() == (again / name).read_bytes()
    other = write_synthetic_dataset(tmp_path / "other", seed=4, **SMALL)
    assert (other / "Sentences").joinpath("1000001.txt").read_text() != (synth / "Sentences" / "1000001.txt").read_text()


def test_real_reader_reads_it(synth):
    meta = json.loads((synth / "synthetic.json").read_text())
    for split, n in (("train", 40), ("val", 8), ("test", 8), ("novel", 20)):
        records = load_flickr30k(synth, split)
        assert len({r.image_id for r in records}) == n
        for r in records:
            assert (r.width, r.height) == tuple(meta["params"]["image_size"])
            assert 1 <= len(r.boxes) <= 4 and not r.notes
            for b in r.boxes:
                x0, y0, x1, y1 = b.xyxy
                assert 0 <= x0 < x1 <= r.width and 0 <= y0 < y1 <= r.height
            assert any(p.chain_id in r.chains_with_boxes for p in r.phrases)


def _words(synth, split):
    return {w for r in load_flickr30k(synth, split) for w in re.findall(r"[a-z]+", r.caption.lower())}


def _pairs(synth, split):
    return {tuple(p.text.split()[-2:]) for r in load_flickr30k(synth, split) for p in r.phrases if p.chain_id in r.chains_with_boxes}


def test_novel_vocabulary_only_in_novel_split(synth):
    meta = json.loads((synth / "synthetic.json").read_text())
    novel_words = set(meta["novel_colours"]) | set(meta["novel_shapes"])
    held_out = {tuple(c) for c in meta["held_out_combos"]}
    for split in ("train", "val", "test"):
        assert not novel_words & _words(synth, split)
        assert not held_out & _pairs(synth, split)
    novel_pairs = _pairs(synth, "novel")
    assert novel_words & _words(synth, "novel")
    # every novel caption names at least one novel object
    for r in load_flickr30k(synth, "novel"):
        texts = [p.text for p in r.phrases if p.chain_id in r.chains_with_boxes]
        assert any(set(t.split()) & novel_words or tuple(t.split()[-2:]) in held_out for t in texts), r.caption
    assert novel_pairs


def test_stats_on_synthetic(synth):
    stats = dataset_stats(synth, "flickr30k", "train")
    assert stats["images"] == 40 and stats["sentences"] == 80
    assert stats["boxes"] >= 40 and stats["phrases_with_box"] >= 80
    assert stats["phrases"] >= stats["phrases_with_box"] and stats["chains"] >= stats["boxes"]
    assert stats["skipped"] == {}
    assert dataset_stats(synth, "flickr30k", "train", fast=True)["boxes"] == stats["boxes"]


def test_stats_counts_bad_images(tmp_path):
    root = write_synthetic_dataset(tmp_path / "s", seed=0, **{**SMALL, "num_train": 3})
    (root / "Images" / "1000001.jpg").write_bytes(b"junk")
    assert dataset_stats(root, "flickr30k", "train")["skipped"] == {"bad_image": 1}


def test_ensure_generates_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("OVD_CACHE", str(tmp_path / "cache"))
    assert default_synthetic_root() == tmp_path / "cache" / "synthetic-v1"
    params = {**SMALL, "num_train": 4, "num_novel": 2}
    root = ensure_synthetic_dataset(**params)
    assert root == default_synthetic_root() and (root / "synthetic.json").is_file()
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic_dataset(**params) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp  # not regenerated
    assert [p.name for p in root.parent.iterdir()] == ["synthetic-v1"]  # no temp folder left
    with pytest.raises(DataError, match="written with"):
        ensure_synthetic_dataset(**{**params, "seed": 9})


def test_ensure_never_trusts_a_half_written_folder(tmp_path, monkeypatch):
    import ovd.data.synthetic as synthetic

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_synthetic_dataset", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []  # interrupted: nothing that looks like a dataset
    partial = tmp_path / "partial"
    (partial / "Images").mkdir(parents=True)
    with pytest.raises(DataError, match="not a finished synthetic dataset"):
        ensure_synthetic_dataset(partial)


def test_datamodule_batches(synth, tokenizer):
    dm = GroundingDataModule(synth, tokenizer, format="flickr30k", max_tokens=40, image_size=48, batch_size=4, limit=12, seed=1)
    dm.setup("fit")
    assert len(dm.dataset("train")) == 12
    batch = next(iter(dm.train_dataloader()))
    B, T = batch["input_ids"].shape
    assert batch["images"].shape == (4, 3, 48, 48) and B == 4 and T <= 40
    assert batch["attention_mask"].shape == (B, T) and batch["attention_mask"].dtype == torch.long
    for target, meta in zip(batch["targets"], batch["meta"]):
        n = target["boxes"].shape[0]
        assert n >= 1 and target["positive_map"].shape == (n, T)
        assert target["positive_map"].sum(1).min() >= 1  # every box has tokens
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()
        assert all(p["token_mask"].shape == (T,) and p["token_mask"].any() for p in meta["phrases"])
    again = next(iter(dm.train_dataloader()))
    assert [m["caption"] for m in again["meta"]] == [m["caption"] for m in batch["meta"]]  # seeded shuffle
    novel = next(iter(dm.dataloader_for("novel")))
    assert novel["images"].shape[0] == 4


def test_cli_commands(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(["data", "synth", "--out", str(out), "--num-train", "3", "--num-val", "1",
                              "--num-test", "1", "--num-novel", "2", "--width", "64", "--height", "48"])
    assert args.func(args) == 0
    assert len((out / "train.txt").read_text().split()) == 3
    capsys.readouterr()
    args = parser.parse_args(["data", "stats", "--root", str(out), "--format", "flickr30k", "--split", "novel", "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2
    args = parser.parse_args(["data", "stats", "--root", str(out), "--split", "missing"])
    assert args.func(args) == 2

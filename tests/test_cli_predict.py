"""`ovd predict --images`: folder / glob / list-file inputs, JSON Lines and COCO outputs, unreadable
images skipped and counted, atomic writes, bf16 autocast. A tiny random-weight checkpoint; threshold 0
keeps every query (20 per image for optimized-tiny), so counts are exact."""

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

import ovd
import ovd.training.module
from ovd.batch_predict import ImagePrediction, Skipped, Summary, list_images, predict_images, write_predictions
from ovd.cli import main as ovd_main
from ovd.training.module import load_checkpoint

PHRASES = ["red circle", "blue square"]
SIZES = {"a.png": (80, 60), "b.png": (96, 96), "d.png": (120, 70), "e.png": (64, 100), "f.JPG": (90, 90)}
QUERIES = 20  # optimized-tiny's box_head.num_queries


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_checkpoint(checkpoint)


@pytest.fixture
def fast_load(loaded, monkeypatch):
    """Reuse the module loaded once (loading the 100 MB checkpoint costs seconds per call)."""
    monkeypatch.setattr(ovd.training.module, "load_checkpoint", lambda path: loaded)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """5 readable images of different sizes (one with an upper-case ending), a corrupt PNG that sorts
    between them, and a file that is not an image by its ending (ignored)."""
    root = tmp_path_factory.mktemp("imgs")
    for name, (w, h) in SIZES.items():
        img = Image.new("RGB", (w, h), (240, 240, 240))
        ImageDraw.Draw(img).ellipse([w // 4, h // 4, w // 2, h // 2], fill=(220, 20, 20))
        img.save(root / name, format="JPEG" if name.endswith(".JPG") else "PNG")
    (root / "c_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "notes.md").write_text("not an image")
    return root


def _run(argv, capsys):
    code = ovd_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_to_jsonl_skips_and_counts_the_corrupt_file(checkpoint, image_dir, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    code, _, err = _run(["predict", "--checkpoint", str(checkpoint), "--images", str(image_dir), "--prompt",
                         ", ".join(PHRASES), "--phrases", "--threshold", "0", "--batch-size", "2", "--out", str(out)],
                        capsys)
    assert code == 0, err
    records = _records(out)
    assert [Path(r["file"]).name for r in records] == ["a.png", "b.png", "d.png", "e.png", "f.JPG"]  # sorted
    for r in records:
        w, h = SIZES[Path(r["file"]).name]
        assert (r["width"], r["height"]) == (w, h)
        assert len(r["boxes"]) == len(r["scores"]) == len(r["labels"]) == QUERIES
        assert set(r["labels"]) <= set(PHRASES)
        boxes = torch.tensor(r["boxes"])
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert boxes[:, 0::2].min() >= -0.01 and boxes[:, 2].max() <= w + 0.01 and boxes[:, 3].max() <= h + 0.01
    assert "warning: skipped" in err and "c_broken.png" in err
    summary = [line for line in err.splitlines() if line.startswith("6 images, 1 skipped: ")]
    assert len(summary) == 1 and "c_broken.png (" in summary[0], err
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was moved, not left behind


def test_coco_output_loads_with_pycocotools(image_dir, tmp_path, capsys, fast_load):
    from pycocotools.coco import COCO

    out, jsonl = tmp_path / "preds.json", tmp_path / "preds.jsonl"
    common = ["predict", "--checkpoint", "unused.ckpt", "--images", str(image_dir), "--prompt", ", ".join(PHRASES),
              "--phrases", "--threshold", "0", "--no-progress"]
    assert _run(common + ["--format", "coco", "--out", str(out)], capsys)[0] == 0
    assert _run(common + ["--out", str(jsonl)], capsys)[0] == 0

    # A ground truth built independently from the image list: ids are 1-based input positions.
    listing = list_images(str(image_dir))
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "file_name": str(p), "width": SIZES.get(p.name, (1, 1))[0],
                              "height": SIZES.get(p.name, (1, 1))[1]} for i, p in enumerate(listing, 1)],
                  "categories": [{"id": i, "name": n} for i, n in enumerate(PHRASES, 1)], "annotations": []}
    gt.createIndex()
    dt = gt.loadRes(str(out))
    assert len(dt.getAnnIds()) == 5 * QUERIES
    broken_id = [p.name for p in listing].index("c_broken.png") + 1
    assert sorted(dt.getImgIds(imgIds=[a["image_id"] for a in dt.dataset["annotations"]])) == sorted(
        i for i in range(1, 7) if i != broken_id)

    # bbox [x, y, w, h] agrees with the JSON Lines boxes [x0, y0, x1, y1] of the same image
    first = _records(jsonl)[0]
    anns = dt.loadAnns(dt.getAnnIds(imgIds=[1]))
    assert [a["score"] for a in anns] == first["scores"]
    for a, (x0, y0, x1, y1), label in zip(anns, first["boxes"], first["labels"]):
        assert a["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.011)
        assert dt.loadCats(a["category_id"])[0]["name"] == label

    # the sidecar is a COCO dataset skeleton that reads the results as is
    meta_path = Path(f"{out}.meta.json")
    meta = json.loads(meta_path.read_text())
    assert [c["name"] for c in meta["categories"]] == PHRASES
    assert [s["file"] for s in meta["info"]["skipped"]] == [str(image_dir / "c_broken.png")]
    assert len(COCO(str(meta_path)).loadRes(str(out)).getAnnIds()) == 5 * QUERIES


def test_list_file_to_stdout(image_dir, tmp_path, capsys, fast_load):
    lists = tmp_path / "lists"
    lists.mkdir()
    rel = Path(os.path.relpath(image_dir, lists))  # relative to the list file's folder
    listing = lists / "images.txt"
    listing.write_text(f"# two images and a missing one\n\n{rel / 'b.png'}\n  {image_dir / 'a.png'}  \n"
                       f"{rel / 'gone.png'}\n")
    code, out, err = _run(["predict", "--checkpoint", "unused.ckpt", "--images", str(listing), "--prompt",
                           "a red circle", "--threshold", "0", "--out", "-", "--no-progress"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["file"]).name for r in records] == ["b.png", "a.png"]  # list order
    assert all(len(r["boxes"]) == QUERIES for r in records)
    assert "3 images, 1 skipped: " in err and "gone.png (image file not found)" in err


def test_glob_pattern(image_dir, tmp_path, capsys, fast_load):
    out = tmp_path / "glob.jsonl"
    code, _, err = _run(["predict", "--checkpoint", "unused.ckpt", "--images", str(image_dir / "[ab]*.png"),
                         "--prompt", "red circle", "--phrases", "--threshold", "0", "--out", str(out)], capsys)
    assert code == 0, err
    assert [Path(r["file"]).name for r in _records(out)] == ["a.png", "b.png"]
    assert "2 images, 0 skipped" in err


def test_nothing_readable_exits_2_and_keeps_the_old_file(tmp_path, capsys, fast_load):
    (tmp_path / "x.png").write_bytes(b"garbage")
    out = tmp_path / "preds.jsonl"
    out.write_text("earlier results\n")
    code, _, err = _run(["predict", "--checkpoint", "unused.ckpt", "--images", str(tmp_path / "x.png"), "--prompt",
                         "red circle", "--out", str(out)], capsys)
    assert code == 2
    assert "1 images, 1 skipped: " in err and "nothing written" in err
    assert out.read_text() == "earlier results\n" and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("extra, message", [
    ([], "needs --out FILE"),
    (["--out", "-", "--format", "coco"], "writes JSON Lines only"),
    (["--out", "nowhere/sub/p.jsonl"], "does not exist"),
    (["--out", "p.jsonl", "--batch-size", "0"], "--batch-size 0"),
    (["--out", "p.jsonl", "--prompt", "red circle,,blue", "--phrases"], "empty phrase"),
    (["--out", "p.jsonl", "--device", "tpu"], "accepted: auto, cpu, cuda"),
])
def test_mistakes_fail_before_the_model_loads(image_dir, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)

    def no_load(path):
        raise AssertionError("the checkpoint must not be loaded for a command-line mistake")

    monkeypatch.setattr(ovd.training.module, "load_checkpoint", no_load)
    argv = ["predict", "--checkpoint", "unused.ckpt", "--images", str(image_dir), "--prompt", "red circle"] + extra
    code, _, err = _run(argv, capsys)
    assert code == 2 and message in err, err


def test_empty_folder_and_unmatched_glob(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ovd.training.module, "load_checkpoint", lambda path: pytest.fail("loaded"))
    (tmp_path / "empty").mkdir()
    for spec, message in [(tmp_path / "empty", "no image files in this folder"),
                          (tmp_path / "*.webp", "matches no file"), (tmp_path / "absent.txt", "list file not found"),
                          (tmp_path / "absent", "no such file or folder")]:
        code, _, err = _run(["predict", "--checkpoint", "c", "--images", str(spec), "--prompt", "x", "--out",
                             str(tmp_path / "p.jsonl")], capsys)
        assert code == 2 and message in err, (spec, err)


class _AutocastProbe(torch.nn.Linear):
    """Stands in for the detector: records the autocast state ``predict`` runs under."""

    def __init__(self):
        super().__init__(1, 1)
        self.seen = []

    def predict(self, images, prompts, threshold=0.3, text_threshold=0.25):
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": []} for _ in images]


def test_bf16_runs_under_autocast_and_fp32_does_not(image_dir):
    paths = [image_dir / "a.png", image_dir / "b.png"]
    probe = _AutocastProbe()
    list(predict_images(probe, paths, "x", batch_size=2, precision="bf16", progress=False))
    list(predict_images(probe, paths, "x", batch_size=2, precision="fp32", progress=False))
    assert probe.seen[0] == (True, torch.bfloat16) and probe.seen[1][0] is False


def test_bf16_end_to_end(image_dir, tmp_path, capsys, fast_load):
    out = tmp_path / "bf16.jsonl"
    code, _, err = _run(["predict", "--checkpoint", "unused.ckpt", "--images", str(image_dir / "a.png"), "--prompt",
                         "red circle", "--phrases", "--threshold", "0", "--precision", "bf16", "--out", str(out)],
                        capsys)
    assert code == 0, err
    assert len(_records(out)[0]["boxes"]) == QUERIES


def test_a_crash_mid_run_leaves_no_partial_file(tmp_path):
    def crashing():
        yield ImagePrediction(1, "a.png", 10, 10, [[0, 0, 5, 5]], [0.9], ["x"])
        yield Skipped(2, "b.png", "corrupt")
        raise RuntimeError("killed")

    out = tmp_path / "p.jsonl"
    for fmt in ("jsonl", "coco"):
        with pytest.raises(RuntimeError, match="killed"):
            write_predictions(crashing(), Summary(total=3), str(out), fmt, warn=lambda msg: None)
        assert list(tmp_path.iterdir()) == []  # no output, no temporary file, no sidecar

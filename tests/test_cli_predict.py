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

    # no detection at all: the empty list pycocotools cannot load is written, with a warning saying so
    empty = tmp_path / "empty.json"
    code, _, err = _run(common[:-3] + ["--threshold", "1.0", "--no-progress", "--format", "coco", "--out", str(empty)],
                        capsys)
    assert code == 0 and json.loads(empty.read_text()) == [] and "COCO.loadRes cannot read an empty list" in err

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
    (["--out", "p.jsonl", "--compile", "frozen", "--backend", "onnxruntime"], "runs its own graph"),
    (["--out", "p.jsonl", "--compile", "default", "--quantize", "int8"], "not supported"),
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


def _boxes_and_scores(predictions) -> list:
    return [(p.file, p.boxes, p.scores, p.labels) for p in predictions if isinstance(p, ImagePrediction)]


def _assert_same_detections(got: list, want: list, box_px: float = 0.02, score: float = 2e-4) -> None:
    """Same files, labels and box counts; boxes (rounded to 0.01 px) and scores (to 1e-4) equal up to rounding."""
    assert [g[0] for g in got] == [w[0] for w in want] and [g[3] for g in got] == [w[3] for w in want]
    for (_, gb, gs, _), (_, wb, ws, _) in zip(got, want):
        assert len(gb) == len(wb) and len(gb) > 0
        assert float((torch.tensor(gb) - torch.tensor(wb)).abs().max()) <= box_px
        assert float((torch.tensor(gs) - torch.tensor(ws)).abs().max()) <= score


def test_cached_text_and_fixed_batches_give_the_same_detections(loaded, image_dir):
    """The prompt encoded once (``cache_text``) and short batches padded to the batch size (``fixed_batch``: what
    ``--compile`` uses) change no detection: 5 readable images and a corrupt one in batches of 2."""
    model = loaded.model.eval()
    paths = list_images(str(image_dir))
    kwargs = dict(prompt=PHRASES, batch_size=2, threshold=0.0, progress=False)
    want = _boxes_and_scores(predict_images(model, paths, **kwargs))
    got = _boxes_and_scores(predict_images(model, paths, cache_text=True, fixed_batch=True, **kwargs))
    assert len(want) == len(SIZES)
    _assert_same_detections(got, want)


class _BatchProbe(torch.nn.Linear):
    """Stands in for the detector: records the batch sizes and cached text ``predict`` is given."""

    def __init__(self):
        super().__init__(1, 1)
        self.seen = []

    def predict(self, images, prompts, threshold=0.3, text_threshold=0.25, text_tokens=None):
        self.seen.append((len(images), None if text_tokens is None else tuple(text_tokens.shape[:1])))
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": []} for _ in images]


def test_fixed_batch_pads_short_batches_and_drops_the_copies(image_dir):
    paths = [image_dir / n for n in ("a.png", "c_broken.png", "b.png", "d.png", "e.png")]
    probe = _BatchProbe()
    out = list(predict_images(probe, paths, "x", batch_size=2, fixed_batch=True, progress=False))
    # batches: (a, broken) -> a padded to 2; (b, d); (e) padded to 2; one record per input, in order
    assert [n for n, _ in probe.seen] == [2, 2, 2]
    assert [type(p).__name__ for p in out] == ["ImagePrediction", "Skipped", "ImagePrediction", "ImagePrediction",
                                                "ImagePrediction"]
    probe.seen.clear()
    list(predict_images(probe, paths, "x", batch_size=2, progress=False))
    assert [n for n, _ in probe.seen] == [1, 2, 1]


def test_text_tokens_that_do_not_match_the_prompts_are_refused(loaded, image_dir):
    from ovd.batch_predict import encode_prompt

    model = loaded.model.eval()
    tokens = encode_prompt(model, PHRASES, batch_size=3)
    with pytest.raises(ValueError, match="do not match"):
        model.predict(torch.rand(2, 3, 64, 64), [PHRASES] * 2, text_tokens=tokens)


@pytest.mark.slow
def test_compile_frozen_end_to_end_matches_eager(checkpoint, image_dir, tmp_path, capsys):
    """``ovd predict --compile frozen`` (the benchmark's compile-frozen+text-cache arm) gives eager's detections;
    5 images at batch 2 compile once (about a minute). The checkpoint is loaded from disk: --compile compiles the
    loaded model in place, which must not leak into the module-scoped ``loaded`` other tests share."""
    argv = ["predict", "--checkpoint", str(checkpoint), "--images", str(image_dir), "--prompt", ", ".join(PHRASES),
            "--phrases", "--threshold", "0", "--batch-size", "2", "--no-progress"]
    code, _, err = _run(argv + ["--out", str(tmp_path / "eager.jsonl")], capsys)
    assert code == 0, err
    code, _, err = _run(argv + ["--compile", "frozen", "--out", str(tmp_path / "frozen.jsonl")], capsys)
    assert code == 0, err
    want, got = _records(tmp_path / "eager.jsonl"), _records(tmp_path / "frozen.jsonl")
    as_tuples = [[(r["file"], r["boxes"], r["scores"], r["labels"]) for r in recs] for recs in (got, want)]
    _assert_same_detections(*as_tuples)


#: the dtype the first nn.Linear of each part computes in, per --precision
COMPUTES_IN = {"bf16": {"image_encoder": torch.bfloat16, "text_encoder": torch.bfloat16, "box_head": torch.bfloat16},
               "bf16-image": {"image_encoder": torch.bfloat16, "text_encoder": torch.float32,
                              "box_head": torch.float32}}


def _first_linear_dtypes(model) -> tuple[dict, list]:
    seen, handles = {}, []
    for part in COMPUTES_IN["bf16"]:
        linear = next(m for m in getattr(model, part).modules() if isinstance(m, torch.nn.Linear))

        def hook(_m, _args, out, part=part):
            seen.setdefault(part, out.dtype)

        handles.append(linear.register_forward_hook(hook))
    return seen, handles


@pytest.mark.parametrize("precision", ["bf16", "bf16-image"])
def test_bf16_end_to_end(image_dir, tmp_path, capsys, fast_load, loaded, precision):
    """Both predict paths run the precision asked for (each part's first Linear records its dtype), and fp32 again
    after the run."""
    out = tmp_path / "bf16.jsonl"
    seen, handles = _first_linear_dtypes(loaded.model)
    try:
        code, _, err = _run(["predict", "--checkpoint", "unused.ckpt", "--images", str(image_dir / "a.png"),
                             "--prompt", "red circle", "--phrases", "--threshold", "0", "--precision", precision,
                             "--out", str(out)], capsys)
    finally:
        for h in handles:
            h.remove()
    assert code == 0, err
    assert len(_records(out)[0]["boxes"]) == QUERIES
    assert seen == COMPUTES_IN[precision]
    # the single-image path too (--image): its JSON on stdout
    seen, handles = _first_linear_dtypes(loaded.model)
    try:
        code, stdout, err = _run(["predict", "--checkpoint", "unused.ckpt", "--image", str(image_dir / "a.png"),
                                  "--prompt", "red circle", "--phrases", "--threshold", "0", "--precision", precision,
                                  "--out", str(tmp_path / "one.json")], capsys)
    finally:
        for h in handles:
            h.remove()
    assert code == 0, err
    assert len(json.loads(stdout)["detections"]) == QUERIES
    assert seen == COMPUTES_IN[precision]
    assert not torch.is_autocast_enabled("cpu")


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


def _no_load(monkeypatch):
    def no_load(path):
        raise AssertionError("the checkpoint must not be loaded for a bad --out")

    monkeypatch.setattr(ovd.training.module, "load_checkpoint", no_load)


@pytest.mark.parametrize("out, message", [
    ("{image}", "is the input image"),
    ("pred.txt", "accepted: .json (the detections as JSON) or an image ending"),
    ("pred", "unknown file ending (none)"),
    ("{folder}", "is a folder"),
    ("nowhere/p.png", "does not exist"),
])
def test_single_image_out_is_checked_before_the_model_loads(image_dir, tmp_path, capsys, monkeypatch, out,
                                                              message):
    monkeypatch.chdir(tmp_path)
    _no_load(monkeypatch)
    image = tmp_path / "v.png"
    image.write_bytes((image_dir / "a.png").read_bytes())
    out = out.format(image=image, folder=tmp_path)
    code, _, err = _run(["predict", "--checkpoint", "unused.ckpt", "--image", str(image), "--prompt", "red circle",
                         "--out", out], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert image.read_bytes() == (image_dir / "a.png").read_bytes()


def test_single_image_to_json_and_to_jpeg(image_dir, tmp_path, capsys, fast_load):
    out = tmp_path / "pred.json"
    code, stdout, err = _run(["predict", "--checkpoint", "unused.ckpt", "--image", str(image_dir / "a.png"),
                              "--prompt", "red circle, blue square", "--phrases", "--threshold", "0", "--out",
                              str(out)], capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record == json.loads(stdout) and len(record["detections"]) == QUERIES and "drawing" not in record
    jpg = tmp_path / "pred.jpg"
    code, stdout, err = _run(["predict", "--checkpoint", "unused.ckpt", "--image", str(image_dir / "a.png"),
                              "--prompt", "red circle", "--out", str(jpg)], capsys)
    assert code == 0, err
    assert json.loads(stdout)["drawing"] == str(jpg) and Image.open(jpg).format == "JPEG"


@pytest.mark.parametrize("fmt, out", [("jsonl", "{list}"), ("coco", "{list}"), ("coco", "{folder}/b")])
def test_many_images_out_that_is_the_list_file_or_an_input_is_refused(image_dir, tmp_path, capsys, monkeypatch,
                                                                       fmt, out):
    """--out the --images list itself (or a COCO sidecar FILE.meta.json landing on an input) would overwrite it."""
    _no_load(monkeypatch)
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes((image_dir / "a.png").read_bytes())
    (folder / "b.meta.json").write_text("{}")  # an input only through the list below
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/a.png\nimgs/b.meta.json\n")
    before = listing.read_text()
    code, _, err = _run(["predict", "--checkpoint", "unused.ckpt", "--images", str(listing), "--prompt", "red circle",
                         "--format", fmt, "--out", out.format(list=listing, folder=folder)], capsys)
    assert code == 2 and "would overwrite it" in err and len(err.strip().splitlines()) == 1, err
    assert listing.read_text() == before and (folder / "b.meta.json").read_text() == "{}"


@pytest.mark.parametrize("out, message", [("{folder}", "is a folder; give a file name"),
                                          ("{folder}/a.png", "is one of the input images")])
def test_many_images_out_is_checked_before_the_model_loads(image_dir, tmp_path, capsys, monkeypatch, out, message):
    _no_load(monkeypatch)
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes((image_dir / "a.png").read_bytes())
    code, _, err = _run(["predict", "--checkpoint", "unused.ckpt", "--images", str(folder), "--prompt", "red circle",
                         "--out", out.format(folder=folder)], capsys)
    assert code == 2 and message in err, err
    assert (folder / "a.png").read_bytes() == (image_dir / "a.png").read_bytes()

"""A trained checkpoint is reused only when config, data, seed and budget match (issue 11, items 1 and 5)."""

import json

import pytest

import ovd
from ovd.training import reuse, run
from ovd.training.module import load_checkpoint
from ovd.training.reuse import fingerprint_path, reuse_reason, train_or_reuse, training_fingerprint, write_fingerprint


@pytest.fixture
def data_root(tmp_path):
    """A fake Flickr30k-layout folder: two record files, a split list and one "image"."""
    root = tmp_path / "data"
    for rel, text in {"Annotations/1.xml": "<annotation><box>1 2 3 4</box></annotation>",
                      "Sentences/1.txt": "a [/EN#1/other red circle]", "train.txt": "1\n",
                      "Images/1.jpg": "not really a jpeg"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture(scope="module")
def config():
    return ovd.get_config("optimized-tiny", {"train.batch_size": 2})


def _fp(config, root, **kw):
    kw.setdefault("budget_s", 60)
    return training_fingerprint(config, root, **kw)


def test_fingerprint_is_stable_and_plain(config, data_root):
    first, second = _fp(config, data_root), _fp(config, data_root)
    assert first == second
    assert json.loads(json.dumps(first)) == first  # JSON-plain: tuples already lists
    assert first["data"]["root"] == str(data_root.resolve()) and first["data"]["format"] == "flickr30k"
    assert first["config"]["train"]["batch_size"] == 2 and first["version"] == 1
    assert (first["seed"], first["budget_s"], first["limit"]) == (0, 60.0, None)


def test_fingerprint_changes_with_config_seed_and_one_annotation_byte(config, data_root):
    base = _fp(config, data_root)
    assert _fp(ovd.get_config("optimized-tiny", {"train.batch_size": 1}), data_root) != base
    assert _fp(config, data_root, seed=1) != base
    assert _fp(config, data_root, budget_s=30) != base
    ann = data_root / "Annotations" / "1.xml"
    ann.write_bytes(ann.read_bytes().replace(b"1 2", b"1 3"))
    assert _fp(config, data_root)["data"]["sha256"] != base["data"]["sha256"]


def test_images_and_hidden_files_are_not_hashed(config, data_root):
    base = _fp(config, data_root)["data"]["sha256"]
    (data_root / "Images" / "1.jpg").write_text("other pixels")
    (data_root / ".cache").write_text("anything")
    assert _fp(config, data_root)["data"]["sha256"] == base
    (data_root / "val.txt").write_text("1\n")  # a new split file counts
    assert _fp(config, data_root)["data"]["sha256"] != base


def test_missing_data_root_is_a_clear_error(config, tmp_path):
    with pytest.raises(ValueError, match="no such dataset folder"):
        _fp(config, tmp_path / "absent")


def test_fingerprint_path_is_a_sidecar(tmp_path):
    assert fingerprint_path(tmp_path / "tiny.ckpt") == tmp_path / "tiny.ckpt.fingerprint.json"


def test_reuse_reason_for_each_mismatch(config, data_root, tmp_path):
    ckpt = tmp_path / "run" / "tiny.ckpt"
    fp = _fp(config, data_root)
    assert reuse_reason(ckpt, fp) == f"no checkpoint at {ckpt}"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    assert reuse_reason(ckpt, fp) == f"no fingerprint next to {ckpt}"
    write_fingerprint(ckpt, fp)
    assert not list(ckpt.parent.glob(".*.tmp"))  # the atomic write left no temporary file
    assert json.loads(fingerprint_path(ckpt).read_text())["checkpoint_sha256"]
    assert reuse_reason(ckpt, fp) is None
    assert reuse_reason(ckpt, _fp(config, data_root)) is None  # a fresh fingerprint of the same inputs

    lr = config.train.lr
    other = ovd.get_config("optimized-tiny", {"train.batch_size": 2, "train.lr": lr * 2})
    assert reuse_reason(ckpt, _fp(other, data_root)) == f"config differs: train.lr {lr} != {lr * 2}"
    three = ovd.get_config("optimized-tiny", {"train.batch_size": 1, "train.lr": lr * 2, "train.seed": 3,
                                              "box_head.num_queries": 7})
    reason = reuse_reason(ckpt, _fp(three, data_root))  # four keys differ: the first three, in field order
    assert reason == (f"config differs: box_head.num_queries {config.box_head.num_queries} != 7, "
                      f"train.batch_size 2 != 1, train.lr {lr} != {lr * 2} (+1 more)")
    assert reuse_reason(ckpt, _fp(config, data_root, seed=1)) == "seed differs: 0 != 1"
    assert reuse_reason(ckpt, _fp(config, data_root, budget_s=30)) == "budget differs: 60.0 != 30.0"
    assert reuse_reason(ckpt, _fp(config, data_root, limit=8)) == "limit differs: None != 8"
    assert reuse_reason(ckpt, _fp(config, data_root, data_format="mdetr")) == "data differs"
    (data_root / "Sentences" / "1.txt").write_text("a [/EN#1/other red square]")
    assert reuse_reason(ckpt, _fp(config, data_root)) == "data differs"

    ckpt.write_bytes(b"weights, tampered")
    assert reuse_reason(ckpt, fp) == "checkpoint changed since it was written (sha256)"
    fingerprint_path(ckpt).write_text("{not json")
    assert reuse_reason(ckpt, fp).startswith("fingerprint ") and "unreadable" in reuse_reason(ckpt, fp)


def test_write_fingerprint_needs_the_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_fingerprint(tmp_path / "absent.ckpt", {"version": 1})


@pytest.fixture
def fake_training(monkeypatch):
    """Replace the trainer by one that writes a small checkpoint; returns the list of its calls' kwargs."""
    calls = []

    def fake(config, data_root=None, max_time_s=600, eval_every_s=60, seed=0, splits=("val", "novel"),
             progress=True, data_format="flickr30k", limit=None, checkpoint_path=None, **kw):
        calls.append({"seed": seed, "max_time_s": max_time_s, "eval_every_s": eval_every_s, "splits": splits})
        checkpoint_path.write_bytes(f"weights seed={seed} call={len(calls)}".encode())
        # the real trainer writes the sidecar itself (run.train_and_evaluate with checkpoint_path)
        write_fingerprint(checkpoint_path, training_fingerprint(config, data_root, data_format, seed, max_time_s, limit))
        return {"train_seconds": 1.5}

    monkeypatch.setattr(run, "train_and_evaluate", fake)
    return calls


def test_train_or_reuse_trains_once_then_reuses(config, data_root, tmp_path, fake_training, caplog):
    ckpt = tmp_path / "run" / "tiny.ckpt"
    ckpt.parent.mkdir()
    first = train_or_reuse(config, ckpt, data_root=data_root, budget_s=5)
    assert first == {"checkpoint": str(ckpt), "reused": False, "reason": f"no checkpoint at {ckpt}",
                     "train_seconds": 1.5}
    assert fake_training == [{"seed": 0, "max_time_s": 5, "eval_every_s": 5, "splits": ()}]
    with caplog.at_level("INFO", logger=reuse.__name__):
        second = train_or_reuse(config, ckpt, data_root=data_root, budget_s=5)
    assert second == {"checkpoint": str(ckpt), "reused": True, "reason": None, "train_seconds": 0.0}
    assert len(fake_training) == 1 and "reusing checkpoint" in caplog.text

    third = train_or_reuse(config, ckpt, data_root=data_root, budget_s=5, seed=1)
    assert third["reused"] is False and third["reason"] == "seed differs: 0 != 1" and len(fake_training) == 2
    assert ckpt.read_bytes() == b"weights seed=1 call=2"
    assert train_or_reuse(config, ckpt, data_root=data_root, budget_s=5, seed=1)["reused"] is True


def test_a_tampered_checkpoint_is_retrained(config, data_root, tmp_path, fake_training):
    ckpt = tmp_path / "tiny.ckpt"
    train_or_reuse(config, ckpt, data_root=data_root, budget_s=5)
    ckpt.write_bytes(b"someone else's weights")
    out = train_or_reuse(config, ckpt, data_root=data_root, budget_s=5)
    assert out["reused"] is False and out["reason"] == "checkpoint changed since it was written (sha256)"
    assert len(fake_training) == 2 and reuse_reason(ckpt, _fp(config, data_root, budget_s=5)) is None


def test_train_or_reuse_rejects_a_bad_budget(config, data_root, tmp_path, fake_training):
    with pytest.raises(ValueError, match="budget_s"):
        train_or_reuse(config, tmp_path / "tiny.ckpt", data_root=data_root, budget_s=0)
    assert fake_training == []


def test_real_training_writes_a_sidecar_that_train_or_reuse_accepts(config, tmp_path, monkeypatch):
    """The real trainer (tiny, 2 s) writes checkpoint + sidecar; train_or_reuse then reuses it untrained."""
    from ovd.data.synthetic import write_synthetic_dataset

    root = tmp_path / "synth"
    write_synthetic_dataset(root, seed=1, num_train=8, num_val=4, num_test=2, num_novel=2)
    ckpt = tmp_path / "run" / "tiny.ckpt"
    out = run.train_and_evaluate(config, data_root=str(root), max_time_s=2, eval_every_s=2, splits=(),
                                 progress=False, limit=4, checkpoint_path=ckpt)
    assert out["steps"] > 0 and fingerprint_path(ckpt).is_file()
    assert load_checkpoint(ckpt).config.to_dict() == config.to_dict()

    def must_not_train(*args, **kwargs):
        raise AssertionError("train_and_evaluate called although the checkpoint matches")

    monkeypatch.setattr(run, "train_and_evaluate", must_not_train)
    assert train_or_reuse(config, ckpt, data_root=root, budget_s=2, limit=4)["reused"] is True
    other_seed = training_fingerprint(config, root, seed=1, budget_s=2, limit=4)
    assert reuse_reason(ckpt, other_seed) == "seed differs: 0 != 1"

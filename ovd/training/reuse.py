"""Reuse a trained checkpoint only when the config, data, seed and budget that produced it match.

:func:`ovd.training.run.train_and_evaluate` (given ``checkpoint_path``) writes a sidecar
``<checkpoint>.fingerprint.json`` next to the weights: what trained them (:func:`training_fingerprint`) plus
the checkpoint's own sha256. :func:`reuse_reason` compares a wanted fingerprint with the sidecar and says,
in one line, why the checkpoint cannot be reused (None: it can). :func:`train_or_reuse` trains only then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import DetectorConfig
from ..data.errors import DataError

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
#: Files skipped by the data hash (by suffix, lower case): the images. Hashing every JPEG of a real dataset
#: takes minutes; the records (annotations, sentences, split lists, json) name every image and box.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
BUILT_IN = "built-in"
_CHUNK = 1 << 20


def _sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_sha256(root: str | Path) -> str:
    """Hex sha256 over a dataset's record files: every file under ``root`` that is not an image (see
    :data:`IMAGE_SUFFIXES`) and not hidden (a name starting with "."), sorted by relative POSIX path, each
    hashed as path, size and bytes. Images are excluded for speed: a changed pixel goes unnoticed, a changed,
    added or removed annotation, caption or split file does not."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            files.append((rel.as_posix(), path))
    digest = hashlib.sha256()
    for rel, path in sorted(files):
        data = path.read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """The JSON round trip of ``value`` (tuples become lists), so a fresh fingerprint equals a stored one."""
    return json.loads(json.dumps(value))


def training_fingerprint(config: DetectorConfig, data_root: str | Path | None = None, data_format: str = "flickr30k",
                         seed: int = 0, budget_s: float | None = None, limit: int | None = None) -> dict:
    """What a trained checkpoint depends on: {"config": the config as a plain dict, "data": {"root": the
    resolved absolute folder or "built-in", "format", "sha256": :func:`data_sha256` (images excluded)},
    "seed", "budget_s" (training seconds, float or None), "limit", "version"}.

    ``data_root=None`` is the built-in synthetic set, resolved (and generated if missing) as
    :func:`ovd.training.run.build_datamodule` does, always read in the "flickr30k" format.
    """
    if data_root is None:
        from ..data.synthetic import ensure_synthetic_dataset

        resolved, root_name, data_format = ensure_synthetic_dataset(progress=True), BUILT_IN, "flickr30k"
    else:
        resolved = Path(data_root).resolve()
        root_name = str(resolved)
    return _plain({
        "config": config.to_dict(),
        "data": {"root": root_name, "format": data_format, "sha256": data_sha256(resolved)},
        "seed": seed, "budget_s": None if budget_s is None else float(budget_s), "limit": limit,
        "version": FINGERPRINT_VERSION,
    })


def fingerprint_path(ckpt: str | Path) -> Path:
    """The sidecar of a checkpoint: ``<ckpt>.fingerprint.json`` (``run/tiny.ckpt.fingerprint.json``)."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.name + ".fingerprint.json")


def write_fingerprint(ckpt: str | Path, fingerprint: dict) -> Path:
    """Write ``fingerprint`` plus "checkpoint_sha256" (of the file at ``ckpt``, which must exist) to the
    sidecar atomically (a temporary file in the same folder, then ``os.replace``). Returns the sidecar path."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist; no fingerprint written")
    target = fingerprint_path(ckpt)
    payload = {**_plain(fingerprint), "checkpoint_sha256": _sha256_file(ckpt)}
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _flatten(data: Any, prefix: str = "") -> dict:
    """{"train.lr": 0.001, ...}: nested dicts as dotted keys; lists and scalars are leaves."""
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


_MISSING = "<missing>"


def _config_diff(stored: dict, wanted: dict, most: int = 3) -> str | None:
    """"config differs: train.lr 0.0001 != 0.0002" (stored != wanted, at most ``most`` keys, in the config's
    field order); None when equal."""
    old, new = _flatten(stored), _flatten(wanted)
    keys = list(old) + [k for k in new if k not in old]
    diffs = [f"{k} {json.dumps(old.get(k, _MISSING))} != {json.dumps(new.get(k, _MISSING))}"
             for k in keys if old.get(k, _MISSING) != new.get(k, _MISSING)]
    if not diffs:
        return None
    more = f" (+{len(diffs) - most} more)" if len(diffs) > most else ""
    return "config differs: " + ", ".join(diffs[:most]) + more


def _read_sidecar(ckpt: Path) -> tuple[dict | None, str | None]:
    """(stored fingerprint, None), or (None, why it cannot be used)."""
    side = fingerprint_path(ckpt)
    if not side.is_file():
        return None, f"no fingerprint next to {ckpt}"
    try:
        stored = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"fingerprint {side} unreadable ({type(err).__name__})"
    if not isinstance(stored, dict):
        return None, f"fingerprint {side} unreadable (not an object)"
    return stored, None


def reuse_reason(ckpt: str | Path, fingerprint: dict) -> str | None:
    """None when the checkpoint at ``ckpt`` was written from ``fingerprint`` (:func:`training_fingerprint`)
    and is unchanged since; else the first reason, one line: "no checkpoint at P", "no fingerprint next to P",
    "checkpoint changed since it was written (sha256)", "fingerprint version differs: 0 != 1",
    "config differs: train.lr 0.0001 != 0.0002" (stored != wanted, up to 3 dotted keys), "data differs",
    "seed differs: 0 != 1", "budget differs: 60.0 != 30.0", "limit differs: None != 8"."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        return f"no checkpoint at {ckpt}"
    stored, why = _read_sidecar(ckpt)
    if why is not None:
        return why
    if stored.get("checkpoint_sha256") != _sha256_file(ckpt):
        return "checkpoint changed since it was written (sha256)"
    wanted = _plain(fingerprint)
    if stored.get("version") != wanted.get("version"):
        return f"fingerprint version differs: {stored.get('version')} != {wanted.get('version')}"
    config = _config_diff(stored.get("config") or {}, wanted.get("config") or {})
    if config is not None:
        return config
    if stored.get("data") != wanted.get("data"):
        return "data differs"
    for key, label in (("seed", "seed"), ("budget_s", "budget"), ("limit", "limit")):
        if stored.get(key) != wanted.get(key):
            return f"{label} differs: {stored.get(key)} != {wanted.get(key)}"
    return None


def train_or_reuse(config: DetectorConfig, checkpoint_path: str | Path, *, data_root: str | Path | None = None,
                   data_format: str = "flickr30k", seed: int = 0, budget_s: float = 60,
                   eval_every_s: float | None = None, limit: int | None = None, progress: bool = False) -> dict:
    """Train ``config`` for ``budget_s`` training seconds into ``checkpoint_path`` unless the checkpoint there
    came from the same config, data, seed, budget and limit (:func:`reuse_reason`); then reuse it.

    Training goes through :func:`ovd.training.run.train_and_evaluate` with no split evaluated at the end (only
    the checkpoint is wanted); ``eval_every_s`` None: one curve point at the end of the budget. The trainer
    writes the sidecar fingerprint once the checkpoint is saved; it is removed first, so a crash mid-training
    leaves nothing that looks reusable.

    Returns {"checkpoint": str, "reused": bool, "reason": why it was (re)trained, None when reused,
    "train_seconds": training seconds of this call (0.0 when reused)}.
    """
    from . import run

    if budget_s is None or budget_s <= 0:
        raise ValueError(f"budget_s={budget_s!r} must be a positive number of training seconds")
    checkpoint_path = Path(checkpoint_path)
    fingerprint = training_fingerprint(config, data_root, data_format, seed, budget_s, limit)
    reason = reuse_reason(checkpoint_path, fingerprint)
    if reason is None:
        log.info("reusing checkpoint %s (same config, data, seed and budget)", checkpoint_path)
        return {"checkpoint": str(checkpoint_path), "reused": True, "reason": None, "train_seconds": 0.0}
    log.info("training checkpoint %s for %.0f s: %s", checkpoint_path, budget_s, reason)
    fingerprint_path(checkpoint_path).unlink(missing_ok=True)  # a crash mid-training must not look reusable
    started = time.perf_counter()
    out = run.train_and_evaluate(
        config, data_root=None if data_root is None else str(data_root), max_time_s=budget_s,
        eval_every_s=budget_s if eval_every_s is None else eval_every_s, seed=seed, splits=(), progress=progress,
        data_format=data_format, limit=limit, checkpoint_path=checkpoint_path)
    seconds = out.get("train_seconds") if isinstance(out, dict) else None
    return {"checkpoint": str(checkpoint_path), "reused": False, "reason": reason,
            "train_seconds": float(seconds if seconds is not None else time.perf_counter() - started)}

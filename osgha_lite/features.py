"""On-disk cache of encoder features.

A cached array is keyed by

    sha256(encoder identity, dataset, split, modality, digest of the inputs)

where the digest of the inputs covers the bytes of every image file (or the
text of every caption) in order. Any change of weights, data, order or split
gives a new key, so stale features are never reused. Files are written
atomically; long extractions are saved in shards of ``shard_size`` items, so
an interrupted run resumes from the last finished shard.

The cache folder is ``$OSGHA_CACHE_DIR`` or the repository's ``.cache/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from osgha_lite.atomic import atomic_save_npy, atomic_write_json
from osgha_lite.data import PROJECT_ROOT

CACHE_ENV = "OSGHA_CACHE_DIR"


def cache_root() -> Path:
    """``$OSGHA_CACHE_DIR`` if set, else ``<repository>/.cache``."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser().resolve() if value else PROJECT_ROOT / ".cache"


def inputs_digest(items: Sequence, modality: str) -> str:
    """SHA-256 over the inputs in order: file bytes for images, UTF-8 text for texts."""
    digest = hashlib.sha256()
    for item in items:
        if modality == "image":
            with open(item, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
        else:
            digest.update(hashlib.sha256(str(item).encode("utf-8")).digest())
    return digest.hexdigest()


def feature_key(identity: str, dataset: str, split: str, modality: str, digest: str) -> str:
    """The cache key of one feature array (hex SHA-256)."""
    payload = json.dumps([identity, dataset, split, modality, digest])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cached_features(
    encoder,
    items: Sequence,
    dataset: str,
    split: str,
    batch_size: int = 64,
    shard_size: int = 1024,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Features of ``items`` from ``encoder``, read from the cache or computed and stored.

    Args:
        encoder: an object with ``identity``, ``modality``, ``dim`` and
            ``encode(items, batch_size, progress)`` (see :mod:`osgha_lite.encoders`).
        items: image paths or texts.
        dataset, split: recorded in the key and the file name.
        shard_size: items per resumable shard.
    """
    folder = Path(cache_dir) if cache_dir else cache_root() / "features"
    digest = inputs_digest(items, encoder.modality)
    key = feature_key(encoder.identity, dataset, split, encoder.modality, digest)
    stem = f"{dataset}-{split}-{encoder.modality}-{key[:20]}"
    final = folder / f"{stem}.npy"
    if final.exists():
        array = np.load(final)
        if array.shape == (len(items), encoder.dim):
            return array
    shards_dir = folder / f"{stem}.shards"
    shards = []
    for number, start in enumerate(range(0, len(items), shard_size)):
        shard_file = shards_dir / f"{number:05d}.npy"
        chunk = items[start:start + shard_size]
        if shard_file.exists():
            shard = np.load(shard_file)
            if shard.shape == (len(chunk), encoder.dim):
                shards.append(shard)
                continue
        if progress and len(items) > shard_size:
            print(f"{stem}: items {start}-{start + len(chunk) - 1} of {len(items)}", flush=True)
        shard = encoder.encode(chunk, batch_size=batch_size, progress=progress).astype(np.float32)
        atomic_save_npy(shard_file, shard)
        shards.append(shard)
    array = np.concatenate(shards) if shards else np.zeros((0, encoder.dim), np.float32)
    atomic_save_npy(final, array)
    atomic_write_json(folder / f"{stem}.json", {
        "encoder": encoder.identity, "dataset": dataset, "split": split,
        "modality": encoder.modality, "inputs_sha256": digest, "key": key, "shape": list(array.shape),
    })
    shutil.rmtree(shards_dir, ignore_errors=True)
    return array

"""On-disk cache of encoder features.

A cached array is keyed by

    sha256(encoder identity, dataset, split, modality, digest of the inputs)

where the digest of the inputs covers the bytes of every image file (or the
text of every caption) in order. Any change of weights, data, order or split
gives a new key, so stale features are never reused. Files are written
atomically; long extractions are saved in shards of ``shard_size`` items, so
an interrupted run resumes from the last finished shard.

Local features (image regions, text tokens; :func:`cached_local_features`)
are cached the same way, keyed by the encoder's ``local_identity(size)``, as
a float16 ``[N, size, D]`` array and a ``[N, size]`` mask. They come from
the same forward pass as the global features, which are stored under the
global key on the way, so asking for local features first costs no second
pass over the images.

A split selected from another (a protocol split such as ``adapt``, which
takes some of the ``train`` images; ``CaptionDataset.source``) is never
encoded again: :func:`split_features` and :func:`split_local_features` read
its parent's cached array and take its rows.

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
from osgha_lite.data import PROJECT_ROOT, CaptionDataset

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


def _stem(encoder_identity: str, items: Sequence, dataset: str, split: str, modality: str,
          digest: str | None = None) -> tuple[str, str, str]:
    digest = digest or inputs_digest(items, modality)
    key = feature_key(encoder_identity, dataset, split, modality, digest)
    return f"{dataset}-{split}-{modality}-{key[:20]}", key, digest


def _write_meta(path: Path, identity: str, dataset: str, split: str, modality: str, digest: str, key: str,
                shape) -> None:
    atomic_write_json(path, {"encoder": identity, "dataset": dataset, "split": split, "modality": modality,
                             "inputs_sha256": digest, "key": key, "shape": list(shape)})


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
    stem, key, digest = _stem(encoder.identity, items, dataset, split, encoder.modality)
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
    _write_meta(folder / f"{stem}.json", encoder.identity, dataset, split, encoder.modality, digest, key, array.shape)
    shutil.rmtree(shards_dir, ignore_errors=True)
    return array


def cached_local_features(
    encoder,
    items: Sequence,
    dataset: str,
    split: str,
    size: int,
    batch_size: int = 64,
    shard_size: int = 1024,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Local features ``[N, size, D]`` (float16, memory-mapped when read from the cache) and
    their mask ``[N, size]`` (bool), cached.

    ``encoder`` needs ``local_identity(size)`` and ``encode_local(items, size,
    batch_size, progress) -> (global, local, mask)``. The global features of
    the same pass are saved where :func:`cached_features` looks for them.
    """
    folder = Path(cache_dir) if cache_dir else cache_root() / "features"
    digest = inputs_digest(items, encoder.modality)
    identity = encoder.local_identity(size)
    stem, key, _ = _stem(identity, items, dataset, split, encoder.modality, digest)
    global_stem, global_key, _ = _stem(encoder.identity, items, dataset, split, encoder.modality, digest)
    local_file, mask_file = folder / f"{stem}.local.npy", folder / f"{stem}.mask.npy"
    if local_file.exists() and mask_file.exists():
        local, mask = np.load(local_file, mmap_mode="r"), np.load(mask_file)
        if local.shape[0] == len(items) and mask.shape == local.shape[:2]:  # images: size x size cells
            return local, mask
    shards_dir = folder / f"{stem}.shards"
    parts: dict[str, list[np.ndarray]] = {"global": [], "local": [], "mask": []}
    for number, start in enumerate(range(0, len(items), shard_size)):
        files = {name: shards_dir / f"{number:05d}.{name}.npy" for name in parts}
        chunk = items[start:start + shard_size]
        if all(f.exists() for f in files.values()):
            loaded = {name: np.load(f) for name, f in files.items()}
            if all(len(a) == len(chunk) for a in loaded.values()):
                for name, array in loaded.items():
                    parts[name].append(array)
                continue
        if progress and len(items) > shard_size:
            print(f"{stem} (local): items {start}-{start + len(chunk) - 1} of {len(items)}", flush=True)
        computed = dict(zip(parts, encoder.encode_local(chunk, size=size, batch_size=batch_size, progress=progress)))
        for name, array in computed.items():
            atomic_save_npy(files[name], array)
            parts[name].append(array)
    if not parts["global"]:
        raise ValueError(f"cached_local_features: no items for {dataset}/{split}")
    local, mask, pooled = (np.concatenate(parts[n]) for n in ("local", "mask", "global"))
    global_file = folder / f"{global_stem}.npy"
    if not global_file.exists():
        atomic_save_npy(global_file, pooled.astype(np.float32))
        _write_meta(folder / f"{global_stem}.json", encoder.identity, dataset, split, encoder.modality, digest,
                    global_key, pooled.shape)
    atomic_save_npy(local_file, local)
    atomic_save_npy(mask_file, mask)
    _write_meta(folder / f"{stem}.json", identity, dataset, split, encoder.modality, digest, key, local.shape)
    shutil.rmtree(shards_dir, ignore_errors=True)
    return local, mask


def _items(data: CaptionDataset, modality: str) -> list:
    return list(data.image_paths) if modality == "image" else list(data.captions)


def split_features(encoder, data: CaptionDataset, **options) -> np.ndarray:
    """:func:`cached_features` of a dataset split's images or captions (by ``encoder.modality``).

    A split selected from another (``data.source``) takes its rows from the
    parent split's cached features.
    """
    if data.source is not None:
        return split_features(encoder, data.source.parent, **options)[data.source.rows(encoder.modality)]
    return cached_features(encoder, _items(data, encoder.modality), data.name, data.split, **options)


def split_local_features(encoder, data: CaptionDataset, size: int, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cached_local_features` of a dataset split, with the parent's rows for a selected split."""
    if data.source is not None:
        local, mask = split_local_features(encoder, data.source.parent, size, **options)
        rows = data.source.rows(encoder.modality)
        return local[rows], mask[rows]
    return cached_local_features(encoder, _items(data, encoder.modality), data.name, data.split, size, **options)

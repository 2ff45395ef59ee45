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

Integrity: every array file (final arrays, shards, local features and
masks) is an ``.npy`` without pickles whose SHA-256 is recorded in a sidecar
JSON written after it (``<stem>.json`` for finished arrays, ``NNNNN.json``
for a shard). On a read the bytes must hash to the recorded value and the
shape must fit the items; otherwise (missing sidecar, truncated or garbled
bytes, unparsable file, wrong shape) a :class:`CacheWarning` names the file
and the entry (or just that shard) is computed again and rewritten. Arrays
cached before hashes were recorded (a sidecar without ``sha256``) are
checked for shape and finite values, then their hash is recorded.

Texts of an encoder whose vectors do not depend on their batch
(``batch_independent``, MiniLM) are looked up text by text in a store shared
by every list (:mod:`osgha_lite.backbones.text_store`): a caption that five lists
hold is encoded once. The store's shards are the resumable unit then.

Images that cannot be decoded: while the image encoder collects them
(:func:`osgha_lite.backbones.image_decode.collect_undecodable`, as ``evaluate`` and
``search index`` do), their feature rows are NaN and are cached as such, so
a later run finds them without decoding anything. Every image array that
leaves this module passes :func:`check_decoded`: while collecting, the NaN
rows' files are added to the encoder's list; otherwise they raise
:class:`~osgha_lite.backbones.image_decode.UndecodableImages` naming every such file, so
a NaN row never reaches a caller that did not ask for it.

The cache folder is ``$OSGHA_CACHE_DIR`` or the repository's ``.cache/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from osgha_lite.atomic import (
    IntegrityError,
    atomic_save_npy,
    atomic_write_json,
    file_sha256,
    load_npy,
    load_verified_npy,
)
from osgha_lite.data import CaptionDataset
from osgha_lite.backbones.image_decode import UndecodableImages, decode_problem
from osgha_lite.backbones.text_store import encode_with_store, store_for
from osgha_lite.paths import CACHE_ENV, cache_root  # noqa: F401 - also reachable from here


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


def _meta(identity: str, dataset: str, split: str, modality: str, digest: str, key: str, shape) -> dict:
    return {"encoder": identity, "dataset": dataset, "split": split, "modality": modality,
            "inputs_sha256": digest, "key": key, "shape": list(shape)}


class CacheWarning(UserWarning):
    """A cached file was damaged or incomplete and is computed again (the message names it)."""


def _write_entry(meta_path: Path, arrays: dict[Path, np.ndarray], meta: dict) -> None:
    """Write the arrays, then their sidecar ``meta_path`` with each file's SHA-256 (so the sidecar comes last)."""
    hashes = {path.name: atomic_save_npy(path, array) for path, array in arrays.items()}
    atomic_write_json(meta_path, {**meta, "sha256": hashes})


def _read_entry(meta_path: Path, files: list[Path], key: str, fits: Callable[[list[np.ndarray]], str | None],
                mmap: tuple[bool, ...] | None = None, adopt: bool = True) -> list[np.ndarray] | None:
    """The arrays of a cache entry verified against their sidecar, or ``None`` (absent or damaged: recompute).

    ``fits(arrays)`` returns ``None`` when the shapes fit the request, else what is wrong. A damaged entry
    gives a :class:`CacheWarning` naming the file. With ``adopt``, an entry written before hashes were
    recorded is checked for shape and finite values and its hashes are added to the sidecar.
    """
    mmap = mmap or (False,) * len(files)
    modes = ["r" if m else None for m in mmap]
    if not meta_path.exists():
        present = [path for path in files if path.exists()]
        if present:
            _warn(f"{present[0]}: no sidecar {meta_path.name} with its SHA-256 (the write was interrupted)")
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        _warn(f"{meta_path}: unreadable sidecar ({error})")
        return None
    if meta.get("key") != key:
        _warn(f"{meta_path}: records key {meta.get('key')!r}, expected {key!r}")
        return None
    hashes = meta.get("sha256")
    try:
        if hashes is None and adopt:
            arrays = [load_npy(path, mode) for path, mode in zip(files, modes)]
        elif not isinstance(hashes, dict) or any(path.name not in hashes for path in files):
            _warn(f"{meta_path}: no SHA-256 recorded for {', '.join(p.name for p in files)}")
            return None
        else:
            arrays = [load_verified_npy(path, hashes[path.name], mode) for path, mode in zip(files, modes)]
    except IntegrityError as error:
        _warn(str(error))
        return None
    problem = fits(arrays)
    if problem:
        _warn(f"{files[0]}: {problem}")
        return None
    if hashes is None:
        for path, array in zip(files, arrays):
            rows = max(1, (1 << 24) // max(1, array[:1].nbytes))
            if array.dtype.kind == "f" and not all(np.isfinite(array[i:i + rows]).all()
                                                    for i in range(0, len(array), rows)):
                _warn(f"{path}: non-finite values in an array cached before hashes were recorded")
                return None
        meta["sha256"] = {path.name: file_sha256(path) for path in files}
        try:
            atomic_write_json(meta_path, meta)
        except OSError as error:  # a read-only cache stays usable; the check runs again next time
            print(f"{meta_path}: checked (shape, finite values) but cannot record its SHA-256 ({error})")
    return arrays


def undecodable_rows(array: np.ndarray) -> np.ndarray:
    """Indices of the NaN rows of an image feature array (``[N, ...]``): images that could not be decoded."""
    if not len(array):
        return np.zeros(0, np.int64)
    first = np.asarray(array[(slice(None),) + (0,) * (array.ndim - 1)], dtype=np.float32)
    return np.flatnonzero(np.isnan(first))


def check_decoded(encoder, items: Sequence, array: np.ndarray) -> None:
    """Let ``array`` (features of ``items``) through unless it has rows of undecodable images (NaN).

    While ``encoder.undecodable`` collects (a dict), their paths and problems
    are added to it; otherwise :class:`~osgha_lite.backbones.image_decode.UndecodableImages`
    names every such file. Texts are never checked.
    """
    if encoder.modality != "image":
        return
    rows = undecodable_rows(array)
    if not len(rows):
        return
    collected = getattr(encoder, "undecodable", None)
    problems = {}
    for row in rows:
        path = os.fspath(items[row])
        problems[path] = (collected or {}).get(path) or decode_problem(path)
    if collected is None:
        raise UndecodableImages(problems)
    collected.update(problems)


def _warn(problem: str) -> None:
    warnings.warn(f"{problem}; computing it again", CacheWarning, stacklevel=4)


def cached_features(
    encoder,
    items: Sequence,
    dataset: str,
    split: str,
    batch_size: int = 64,
    shard_size: int = 1024,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    check: bool = True,
) -> np.ndarray:
    """Features of ``items`` from ``encoder``, read from the cache or computed and stored.

    Args:
        encoder: an object with ``identity``, ``modality``, ``dim`` and
            ``encode(items, batch_size, progress)`` (see :mod:`osgha_lite.backbones.encoders`).
        items: image paths or texts.
        dataset, split: recorded in the key and the file name.
        shard_size: items per resumable shard.
        check: pass the result through :func:`check_decoded`; ``False`` returns
            the NaN rows of undecodable images unchecked (for a caller that
            checks the rows it takes).
    """
    folder = Path(cache_dir) if cache_dir else cache_root() / "features"
    stem, key, digest = _stem(encoder.identity, items, dataset, split, encoder.modality)
    final, meta_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    found = _read_entry(meta_path, [final], key, _shape_check((len(items), encoder.dim)))
    if found is not None:
        if check:
            check_decoded(encoder, items, found[0])
        return found[0]
    if encoder.modality == "text" and getattr(encoder, "batch_independent", False):
        # each distinct text once per encoder, across lists and notebooks (osgha_lite.backbones.text_store)
        store = store_for(folder, encoder.identity, encoder.dim,
                          warn=lambda message: warnings.warn(message, CacheWarning, stacklevel=2))
        array = encode_with_store(encoder, list(items), store, batch_size, shard_size, progress,
                                  log=(lambda line: print(f"{stem}: {line}", flush=True)) if progress else None)
        _write_entry(meta_path, {final: array},
                     _meta(encoder.identity, dataset, split, encoder.modality, digest, key, array.shape))
        return array
    shards_dir = folder / f"{stem}.shards"
    shards = []
    for number, start in enumerate(range(0, len(items), shard_size)):
        shard_file = shards_dir / f"{number:05d}.npy"
        chunk = items[start:start + shard_size]
        found = _read_entry(shards_dir / f"{number:05d}.json", [shard_file], key,
                            _shape_check((len(chunk), encoder.dim)), adopt=False)
        if found is not None:
            shards.append(found[0])
            continue
        if progress and len(items) > shard_size:
            print(f"{stem}: items {start}-{start + len(chunk) - 1} of {len(items)}", flush=True)
        shard = encoder.encode(chunk, batch_size=batch_size, progress=progress).astype(np.float32)
        _write_entry(shards_dir / f"{number:05d}.json", {shard_file: shard}, {"key": key, "start": start})
        shards.append(shard)
    array = np.concatenate(shards) if shards else np.zeros((0, encoder.dim), np.float32)
    _write_entry(meta_path, {final: array},
                 _meta(encoder.identity, dataset, split, encoder.modality, digest, key, array.shape))
    shutil.rmtree(shards_dir, ignore_errors=True)
    if check:
        check_decoded(encoder, items, array)
    return array


def _shape_check(shape: tuple[int, ...]) -> Callable[[list[np.ndarray]], str | None]:
    def check(arrays: list[np.ndarray]) -> str | None:
        return None if arrays[0].shape == shape else f"shape {arrays[0].shape}, expected {shape}"
    return check


def _local_check(n_items: int) -> Callable[[list[np.ndarray]], str | None]:
    def check(arrays: list[np.ndarray]) -> str | None:
        if len(arrays) == 2:  # a finished entry: local [N, size, D], mask [N, size] (images: size x size cells)
            local, mask = arrays
            fits = local.ndim == 3 and local.shape[0] == n_items and mask.shape == local.shape[:2]
            return None if fits else f"shapes {local.shape} and {mask.shape} do not fit {n_items} items"
        lengths = [len(a) for a in arrays]
        return None if all(n == n_items for n in lengths) else f"{lengths} rows, expected {n_items}"
    return check


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
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Local features ``[N, size, D]`` (float16, memory-mapped when read from the cache) and
    their mask ``[N, size]`` (bool), cached.

    ``encoder`` needs ``local_identity(size)`` and ``encode_local(items, size,
    batch_size, progress) -> (global, local, mask)``. The global features of
    the same pass are saved where :func:`cached_features` looks for them.
    ``check`` as for :func:`cached_features`.
    """
    folder = Path(cache_dir) if cache_dir else cache_root() / "features"
    digest = inputs_digest(items, encoder.modality)
    identity = encoder.local_identity(size)
    stem, key, _ = _stem(identity, items, dataset, split, encoder.modality, digest)
    global_stem, global_key, _ = _stem(encoder.identity, items, dataset, split, encoder.modality, digest)
    local_file, mask_file = folder / f"{stem}.local.npy", folder / f"{stem}.mask.npy"
    found = _read_entry(folder / f"{stem}.json", [local_file, mask_file], key, _local_check(len(items)),
                        mmap=(True, False))
    if found is not None:
        if check:
            check_decoded(encoder, items, found[0])
        return found[0], found[1]
    shards_dir = folder / f"{stem}.shards"
    parts: dict[str, list[np.ndarray]] = {"global": [], "local": [], "mask": []}
    for number, start in enumerate(range(0, len(items), shard_size)):
        files = {name: shards_dir / f"{number:05d}.{name}.npy" for name in parts}
        shard_meta = shards_dir / f"{number:05d}.json"
        chunk = items[start:start + shard_size]
        found = _read_entry(shard_meta, list(files.values()), key, _local_check(len(chunk)), adopt=False)
        if found is not None:
            for name, array in zip(parts, found):
                parts[name].append(array)
            continue
        if progress and len(items) > shard_size:
            print(f"{stem} (local): items {start}-{start + len(chunk) - 1} of {len(items)}", flush=True)
        computed = dict(zip(parts, encoder.encode_local(chunk, size=size, batch_size=batch_size, progress=progress)))
        _write_entry(shard_meta, {files[name]: array for name, array in computed.items()}, {"key": key, "start": start})
        for name, array in computed.items():
            parts[name].append(array)
    if not parts["global"]:
        raise ValueError(f"cached_local_features: no items for {dataset}/{split}")
    local, mask, pooled = (np.concatenate(parts[n]) for n in ("local", "mask", "global"))
    global_file, global_meta = folder / f"{global_stem}.npy", folder / f"{global_stem}.json"
    if _read_entry(global_meta, [global_file], global_key, _shape_check((len(items), encoder.dim))) is None:
        _write_entry(global_meta, {global_file: pooled.astype(np.float32)},
                     _meta(encoder.identity, dataset, split, encoder.modality, digest, global_key, pooled.shape))
    _write_entry(folder / f"{stem}.json", {local_file: local, mask_file: mask},
                 _meta(identity, dataset, split, encoder.modality, digest, key, local.shape))
    shutil.rmtree(shards_dir, ignore_errors=True)
    if check:
        check_decoded(encoder, items, local)
    return local, mask


def _items(data: CaptionDataset, modality: str) -> list:
    return list(data.image_paths) if modality == "image" else list(data.captions)


def split_features(encoder, data: CaptionDataset, **options) -> np.ndarray:
    """:func:`cached_features` of a dataset split's images or captions (by ``encoder.modality``).

    A split selected from another (``data.source``) takes its rows from the
    parent split's cached features; only the rows it takes are checked
    (:func:`check_decoded`), so a split that leaves out the parent's
    undecodable images reads the parent's cache.
    """
    if data.source is not None:
        array = split_features(encoder, data.source.parent, **{**options, "check": False})
        array = array[data.source.rows(encoder.modality)]
        if options.get("check", True):
            check_decoded(encoder, _items(data, encoder.modality), array)
        return array
    return cached_features(encoder, _items(data, encoder.modality), data.name, data.split, **options)


def split_local_features(encoder, data: CaptionDataset, size: int, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cached_local_features` of a dataset split, with the parent's rows for a selected split
    (checked as in :func:`split_features`)."""
    if data.source is not None:
        local, mask = split_local_features(encoder, data.source.parent, size, **{**options, "check": False})
        rows = data.source.rows(encoder.modality)
        local, mask = local[rows], mask[rows]
        if options.get("check", True):
            check_decoded(encoder, _items(data, encoder.modality), local)
        return local, mask
    return cached_local_features(encoder, _items(data, encoder.modality), data.name, data.split, size, **options)

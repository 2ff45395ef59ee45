"""Fault injection: damaged caches are named and recomputed, damaged checkpoints are refused, keys cover dev.

Each test damages a file the way storage faults do (same-size garbled bytes,
truncation, a foreign file in place) and checks what the reader does:
feature caches and shards give a :class:`CacheWarning` naming the file and
are computed again, bit-identical to a clean run; checkpoints raise a
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from toy_training import clustered_split, toy_heads

from osgha_lite.atomic import IntegrityError, load_npy, load_verified_npy
from osgha_lite.backbones import LiteBackbone
from osgha_lite.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from osgha_lite.backbones.features import CacheWarning, cached_features, cached_local_features
from osgha_lite.train.fit import SplitFeatures, TrainConfig, checkpoint_finished, fit

ITEMS = [f"caption number {i}" for i in range(10)]


class Encoder:
    """Deterministic features from the SHA-256 of each item; records which items it encoded."""

    identity, modality, dim = "hash-encoder", "text", 8

    def __init__(self):
        self.encoded: list[str] = []

    def vector(self, item: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(item.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)

    def encode(self, items, batch_size=64, progress=True):
        self.encoded += list(items)
        return np.stack([self.vector(item) for item in items])

    def local_identity(self, size):
        return f"{self.identity}:local{size}"

    def encode_local(self, items, size, batch_size=64, progress=True):
        self.encoded += list(items)
        pooled = np.stack([self.vector(item) for item in items])
        local = (pooled[:, None, :] * np.arange(1, size + 1)[None, :, None]).astype(np.float16)
        return pooled, local, np.ones((len(items), size), bool)


def _garble(path, offset_from_end: int = 16, count: int = 8) -> None:
    """Overwrite ``count`` bytes near the end with 0xFF (same size; float32 0xFFFFFFFF is NaN)."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end:-offset_from_end + count] = b"\xff" * count
    path.write_bytes(bytes(data))


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _clean(tmp_path, **options) -> np.ndarray:
    return cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path / "clean", progress=False, **options)


# --------------------------------------------------------------------------- feature caches
def test_garbled_feature_file_is_named_and_rebuilt_identical_to_a_clean_run(tmp_path):
    clean = _clean(tmp_path)
    first = cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path, progress=False)
    (final,) = tmp_path.glob("*.npy")
    size = final.stat().st_size
    _garble(final)
    assert final.stat().st_size == size
    assert not np.isfinite(np.load(final, allow_pickle=False)).all()  # what the old reader returned
    encoder = Encoder()
    with pytest.warns(CacheWarning, match=rf"{final}: contents do not match the recorded SHA-256.*computing it again"):
        rebuilt = cached_features(encoder, ITEMS, "demo", "test", cache_dir=tmp_path, progress=False)
    assert encoder.encoded == ITEMS
    np.testing.assert_array_equal(rebuilt, clean)
    np.testing.assert_array_equal(rebuilt, first)
    assert np.isfinite(rebuilt).all()
    again = Encoder()
    np.testing.assert_array_equal(cached_features(again, ITEMS, "demo", "test", cache_dir=tmp_path,
                                                  progress=False), clean)
    assert again.encoded == []  # the rewritten entry verifies


def test_garbled_shard_is_recomputed_and_not_concatenated(tmp_path):
    clean = _clean(tmp_path, shard_size=4)
    class Interrupted(Encoder):
        def encode(self, items, batch_size=64, progress=True):
            if len(self.encoded) >= 8:
                raise KeyboardInterrupt("simulated interruption after two shards")
            return super().encode(items, batch_size, progress)

    with pytest.raises(KeyboardInterrupt):
        cached_features(Interrupted(), ITEMS, "demo", "test", shard_size=4, cache_dir=tmp_path, progress=False)
    (shards_dir,) = tmp_path.glob("*.shards")
    shard = shards_dir / "00001.npy"
    _garble(shard)
    encoder = Encoder()
    with pytest.warns(CacheWarning, match=rf"{shard}: contents do not match the recorded SHA-256"):
        out = cached_features(encoder, ITEMS, "demo", "test", shard_size=4, cache_dir=tmp_path, progress=False)
    assert encoder.encoded == ITEMS[4:]  # shard 0 was reused, the garbled shard 1 and the missing shard 2 computed
    np.testing.assert_array_equal(out, clean)


def test_truncated_feature_file_is_named_and_rebuilt(tmp_path):
    clean = _clean(tmp_path)
    cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path, progress=False)
    (final,) = tmp_path.glob("*.npy")
    _truncate(final)
    with pytest.raises(ValueError):  # what the old reader did: a raw error without the file's name
        np.load(final, allow_pickle=False)
    with pytest.warns(CacheWarning, match=rf"{final}: contents do not match"):
        out = cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(out, clean)


def test_truncated_local_feature_file_is_named_and_rebuilt(tmp_path):
    clean_local, clean_mask = cached_local_features(Encoder(), ITEMS, "demo", "test", size=3,
                                                    cache_dir=tmp_path / "clean", progress=False)
    cached_local_features(Encoder(), ITEMS, "demo", "test", size=3, cache_dir=tmp_path, progress=False)
    (local_file,) = tmp_path.glob("*.local.npy")
    _truncate(local_file, 0.8)
    encoder = Encoder()
    with pytest.warns(CacheWarning, match=rf"{local_file}: contents do not match"):
        local, mask = cached_local_features(encoder, ITEMS, "demo", "test", size=3, cache_dir=tmp_path,
                                            progress=False)
    assert encoder.encoded == ITEMS
    np.testing.assert_array_equal(local, clean_local)
    np.testing.assert_array_equal(mask, clean_mask)


def test_missing_sidecar_means_an_interrupted_write_and_is_rebuilt(tmp_path):
    clean = _clean(tmp_path)
    cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path, progress=False)
    (meta,) = tmp_path.glob("*.json")
    meta.unlink()
    with pytest.warns(CacheWarning, match="no sidecar .* with its SHA-256 .*computing it again"):
        out = cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(out, clean)


def _make_legacy(tmp_path) -> tuple:
    """A cache entry as written before hashes were recorded: the sidecar has no ``sha256``."""
    cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path, progress=False)
    (final,), (meta,) = tmp_path.glob("*.npy"), tmp_path.glob("*.json")
    record = json.loads(meta.read_text())
    del record["sha256"]
    meta.write_text(json.dumps(record))
    return final, meta


def test_an_entry_cached_before_hashes_is_checked_and_its_hash_recorded(tmp_path, capsys):
    clean = _clean(tmp_path)
    final, meta = _make_legacy(tmp_path)
    encoder = Encoder()
    out = cached_features(encoder, ITEMS, "demo", "test", cache_dir=tmp_path, progress=False)
    assert encoder.encoded == [] and np.array_equal(out, clean)
    assert json.loads(meta.read_text())["sha256"] == {final.name: hashlib.sha256(final.read_bytes()).hexdigest()}


def test_an_entry_cached_before_hashes_with_nan_or_a_pickle_is_rebuilt(tmp_path):
    clean = _clean(tmp_path)
    final, meta = _make_legacy(tmp_path)
    _garble(final)
    with pytest.warns(CacheWarning, match=rf"{final}: non-finite values"):
        np.testing.assert_array_equal(cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path,
                                                      progress=False), clean)
    final, meta = _make_legacy(tmp_path)
    np.save(final, np.array([{"not": "features"}], dtype=object), allow_pickle=True)
    with pytest.warns(CacheWarning, match=rf"{final}: cannot be read as a .npy array"):
        np.testing.assert_array_equal(cached_features(Encoder(), ITEMS, "demo", "test", cache_dir=tmp_path,
                                                      progress=False), clean)


def test_verified_reader_names_the_file(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(4.0))
    with pytest.raises(IntegrityError, match=rf"{path}: contents do not match the recorded SHA-256"):
        load_verified_npy(path, "0" * 64)
    with pytest.raises(IntegrityError, match=rf"{tmp_path / 'b.npy'}: file is missing"):
        load_verified_npy(tmp_path / "b.npy", "0" * 64)
    np.save(path, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(IntegrityError, match=rf"{path}: cannot be read"):
        load_npy(path)


# --------------------------------------------------------------------------- checkpoints
CONFIG = TrainConfig(epochs=3, batch_size=32, lr=3e-3, weight_decay=0.0, patience=10, device="cpu")


@pytest.fixture
def trained(tmp_path):
    train, dev = clustered_split(60, 2, 1), clustered_split(20, 2, 2)
    checkpoint = tmp_path / "run.safetensors"
    history = fit(toy_heads(train), train, dev, CONFIG, checkpoint=checkpoint, progress=False)
    assert checkpoint_finished(checkpoint)
    return train, dev, checkpoint, history


def test_truncated_checkpoint_is_refused_by_name(trained):
    train, dev, checkpoint, _ = trained
    _truncate(checkpoint, 0.9)
    message = rf"{checkpoint}: truncated .*this checkpoint cannot be used\. Delete the file to train this model again"
    with pytest.raises(CheckpointError, match=message):
        checkpoint_finished(checkpoint)
    with pytest.raises(CheckpointError, match=message):
        fit(toy_heads(train), train, dev, CONFIG, checkpoint=checkpoint, progress=False)


def test_checkpoint_with_corrupted_tensor_bytes_is_not_a_finished_run(trained):
    train, dev, checkpoint, history = trained
    data = bytearray(checkpoint.read_bytes())
    data[-4096:] = bytes(4096)  # zeroed tensor bytes, same size: the old loader returned a "finished" run
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{checkpoint}: damaged \(contents do not match the SHA-256"):
        checkpoint_finished(checkpoint)
    with pytest.raises(CheckpointError, match="Delete the file to train this model again"):
        fit(toy_heads(train), train, dev, CONFIG, checkpoint=checkpoint, progress=False)
    checkpoint.unlink()  # what the message says: then the run is trained again, identical to the first
    again = fit(toy_heads(train), train, dev, CONFIG, checkpoint=checkpoint, progress=False)
    assert again.epochs[1:] == history.epochs[1:] and again.best_rsum == history.best_rsum


def test_checkpoint_with_edited_state_or_table_is_refused(trained):
    _, _, checkpoint, _ = trained
    raw = checkpoint.read_bytes()
    for old, new in ((b'\\"finished\\": true', b'\\"finished\\": fals'), (b'"F32"', b'"I32"')):
        assert old in raw
        checkpoint.write_bytes(raw.replace(old, new, 1))
        with pytest.raises(CheckpointError, match=rf"{checkpoint}: "):
            load_checkpoint(checkpoint)


def _with_header(path, change) -> None:
    """Rewrite the JSON header of the safetensors file ``path`` through ``change`` (same tensor bytes)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.dumps(change(json.loads(raw[8:8 + size]))).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + size:])


HEADER_TYPE_FAULTS = {
    "metadata-list": (lambda h: {**h, "__metadata__": list(h["__metadata__"].items())},
                      "__metadata__ must be an object of strings, found an array"),
    "state-number": (lambda h: {**h, "__metadata__": {**h["__metadata__"], "state": 5}},
                     "__metadata__.state must be a string, found an integer"),
    "sha256-null": (lambda h: {**h, "__metadata__": {**h["__metadata__"], "sha256": None}},
                    "__metadata__.sha256 must be a string, found null"),
    "tensor-string": (lambda h: {**h, next(k for k in h if k != "__metadata__"): "x"},
                      "tensor '.*' must be an object, found a string"),
    "offsets-strings": (lambda h: {**h, next(k for k in h if k != "__metadata__"): {"dtype": "F32", "shape": [1],
                                                                                     "data_offsets": ["0", "4"]}},
                        "tensor '.*' needs a string dtype, an integer shape and two integer data_offsets"),
}


@pytest.mark.parametrize("fault", sorted(HEADER_TYPE_FAULTS))
def test_a_header_value_of_the_wrong_type_is_the_same_refusal(trained, fault):
    """Valid JSON of the wrong type (``__metadata__`` as a list, a numeric ``state``) used to end in a raw
    AttributeError; it is refused like any other damage, naming the file and what to do."""
    train, dev, checkpoint, _ = trained
    change, problem = HEADER_TYPE_FAULTS[fault]
    _with_header(checkpoint, change)
    message = (rf"{checkpoint}: unreadable header \({problem}\); this checkpoint cannot be used\. "
               r"Delete the file to train this model again")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match=message):
        checkpoint_finished(checkpoint)
    with pytest.raises(CheckpointError, match=message):
        fit(toy_heads(train), train, dev, CONFIG, checkpoint=checkpoint, progress=False)


def test_checkpoint_round_trip_is_exact(tmp_path):
    state = {"tensors": {"a": torch.randn(3, 4), "b": torch.arange(5), "rng": torch.get_rng_state()},
             "groups": [{"betas": (0.9, 0.999), "params": [0, 1], "lr": 1e-3, "fused": None}],
             "by_number": {0: {"step": torch.tensor(3.0)}}, "best": float("-inf"), "name": "x"}
    save_checkpoint(tmp_path / "s.safetensors", state)
    back = load_checkpoint(tmp_path / "s.safetensors")
    assert back["groups"] == state["groups"] and back["best"] == state["best"] and back["name"] == "x"
    assert list(back["by_number"]) == [0] and torch.equal(back["by_number"][0]["step"], torch.tensor(3.0))
    for key, value in state["tensors"].items():
        assert torch.equal(back["tensors"][key], value) and back["tensors"][key].dtype == value.dtype


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_in_place_of_a_checkpoint_is_never_executed(tmp_path):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "run.safetensors"
    checkpoint.write_bytes(pickle.dumps({"version": 2, "history": {"finished": True}, "x": _Marker(marker)}))
    with pytest.raises(CheckpointError, match=str(checkpoint)):
        load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError):
        checkpoint_finished(checkpoint)
    assert not marker.exists()
    pickle.loads(checkpoint.read_bytes())  # the payload is live: unpickling it would have made the marker
    assert marker.exists()


# --------------------------------------------------------------------------- checkpoint keys
def test_changing_the_dev_split_changes_the_heads_key():
    backbone = LiteBackbone()
    train_data = SimpleNamespace(name="demo", captions=["a"] * 40)
    train, dev = clustered_split(20, 2, 1), clustered_split(10, 2, 2)
    key = backbone.heads_key(train_data, train, dev)
    assert backbone.heads_key(train_data, train, clustered_split(10, 2, 2)) == key
    moved = SplitFeatures(dev.images, dev.texts, dev.text_to_image.flip(0))
    assert backbone.heads_key(train_data, train, moved) != key
    assert backbone.heads_key(train_data, train, clustered_split(10, 2, 3)) != key
    train_moved = SplitFeatures(train.images, train.texts, train.text_to_image.flip(0))
    assert backbone.heads_key(train_data, train_moved, dev) != key


def test_changing_the_dev_split_changes_the_method_checkpoint(tmp_path, monkeypatch):
    from osgha_lite.train.experiment import Embedded, method_checkpoint

    monkeypatch.setenv("OSGHA_CACHE_DIR", str(tmp_path))

    def embedded(seed: int, text_to_image=None) -> Embedded:
        rng = np.random.default_rng(seed)
        pairs = np.repeat(np.arange(5), 2) if text_to_image is None else text_to_image
        return Embedded(rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(10, 4)).astype(np.float32),
                        pairs, np.zeros((10, 1, 4), np.float32), np.zeros((10, 1), bool))

    prepared = SimpleNamespace(adapter=SimpleNamespace(config=lambda: {"adapter": "linear"}),
                               train_config=TrainConfig())
    train, dev = embedded(0), embedded(1)

    def path(train, dev):
        return method_checkpoint("m", {"adapter": "linear"}, {"name": "p"}, prepared, "backbone", train, dev)

    reference = path(train, dev)
    assert reference.suffix == ".safetensors" and reference.parent == tmp_path / "adapters"
    assert path(train, embedded(1)) == reference
    assert path(train, embedded(1, np.repeat(np.arange(5), 2)[::-1].copy())) != reference
    assert path(embedded(0, np.repeat(np.arange(5), 2)[::-1].copy()), dev) != reference

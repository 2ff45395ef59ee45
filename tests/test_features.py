"""Feature cache: reuse, invalidation on any input change, resume after interruption."""

from __future__ import annotations

import numpy as np
import pytest

from osgha_lite.encoders import build_encoder
from osgha_lite.features import cached_features

TEXTS = ["a dog runs on the grass", "two children play football", "a red car", "a cat sleeps", "snow"]


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("minilm-l6-v2", device="cpu")


class Counting:
    """Wraps a real encoder and counts the items it encodes; can fail after N calls."""

    def __init__(self, encoder, fail_after: int | None = None):
        self.encoder, self.fail_after, self.items, self.calls = encoder, fail_after, 0, 0
        self.identity, self.modality, self.dim = encoder.identity, encoder.modality, encoder.dim

    def encode(self, items, batch_size=64, progress=True):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.items += len(items)
        return self.encoder.encode(items, batch_size=batch_size, progress=False)


def test_second_call_reads_the_cache(minilm, tmp_path):
    counting = Counting(minilm)
    first = cached_features(counting, TEXTS, "demo", "test", cache_dir=tmp_path, progress=False)
    second = cached_features(counting, TEXTS, "demo", "test", cache_dir=tmp_path, progress=False)
    assert counting.items == len(TEXTS)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (5, 384) and first.dtype == np.float32
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.glob("*.shards"))


def test_any_input_change_gives_a_new_entry(minilm, tmp_path):
    counting = Counting(minilm)
    cached_features(counting, TEXTS, "demo", "test", cache_dir=tmp_path, progress=False)
    changed = TEXTS[:-1] + ["snow falls"]
    out = cached_features(counting, changed, "demo", "test", cache_dir=tmp_path, progress=False)
    cached_features(counting, TEXTS, "demo", "dev", cache_dir=tmp_path, progress=False)
    assert counting.items == 3 * len(TEXTS)
    assert len(list(tmp_path.glob("*.npy"))) == 3
    np.testing.assert_allclose(out[-1], minilm.encode(["snow falls"], progress=False)[0], atol=1e-5)


def test_interrupted_extraction_resumes_from_finished_shards(minilm, tmp_path):
    interrupted = Counting(minilm, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        cached_features(interrupted, TEXTS, "demo", "test", shard_size=2, cache_dir=tmp_path, progress=False)
    assert interrupted.items == 4  # two shards of two finished and were saved
    resumed = Counting(minilm)
    out = cached_features(resumed, TEXTS, "demo", "test", shard_size=2, cache_dir=tmp_path, progress=False)
    assert resumed.items == 1  # only the last shard was computed
    np.testing.assert_allclose(out, minilm.encode(TEXTS, progress=False), atol=1e-5)


def test_image_cache_keys_on_file_bytes(data_env, tmp_path):
    from osgha_lite.data import load_dataset

    encoder = Counting(build_encoder("efficientnet-lite0", device="cpu"))
    data = load_dataset("flickr8k", "dev")
    first = cached_features(encoder, data.image_paths, "flickr8k", "dev", cache_dir=tmp_path, progress=False)
    assert first.shape == (1, 1280) and encoder.items == 1
    cached_features(encoder, data.image_paths, "flickr8k", "dev", cache_dir=tmp_path, progress=False)
    assert encoder.items == 1

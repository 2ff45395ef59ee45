"""Feature cache: reuse, invalidation on any input change, resume after interruption."""

from __future__ import annotations

import numpy as np
import pytest

from osgha_lite.backbones.encoders import build_encoder, length_groups
from osgha_lite.backbones.features import cached_features

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


class CountingLocal(Counting):
    """Counts local-feature passes too."""

    def local_identity(self, size):
        return self.encoder.local_identity(size)

    def encode_local(self, items, size, batch_size=64, progress=True):
        self.calls += 1
        self.items += len(items)
        return self.encoder.encode_local(items, size=size, batch_size=batch_size, progress=False)


def test_local_features_fill_the_global_cache_in_the_same_pass(minilm, tmp_path):
    from osgha_lite.backbones.features import cached_local_features

    counting = CountingLocal(minilm)
    tokens, mask = cached_local_features(counting, TEXTS, "demo", "test", size=8, shard_size=2,
                                         cache_dir=tmp_path, progress=False)
    assert tokens.shape == (5, 8, 384) and tokens.dtype == np.float16 and mask.shape == (5, 8)
    assert mask.sum(1).tolist() == [8, 6, 5, 5, 3]  # [CLS] + word pieces + [SEP], "a dog runs on the grass" cut at 8
    pooled = cached_features(counting, TEXTS, "demo", "test", cache_dir=tmp_path, progress=False)
    again, _ = cached_local_features(counting, TEXTS, "demo", "test", size=8, cache_dir=tmp_path, progress=False)
    assert counting.items == len(TEXTS)  # one pass served local, global and the second local call
    np.testing.assert_allclose(pooled, minilm.encode(TEXTS, progress=False), atol=1e-5)  # other padding, same vectors
    np.testing.assert_array_equal(again, tokens)
    # Tokens are scaled so that their mean is the sentence vector (exact for captions that fit).
    mean = (tokens[1:].astype(np.float32) * mask[1:, :, None]).sum(1) / mask[1:].sum(1, keepdims=True)
    np.testing.assert_allclose(mean, pooled[1:], atol=2e-3)
    assert not list(tmp_path.glob("*.shards"))


def test_image_grid_averages_close_to_the_global_vector(data_env, tmp_path):
    from osgha_lite.data import load_dataset

    encoder = build_encoder("efficientnet-lite0", device="cpu")
    paths = load_dataset("flickr8k", "train").image_paths[:2]
    pooled, regions, mask = encoder.encode_local(paths, size=7, progress=False)
    np.testing.assert_array_equal(pooled, encoder.encode(paths, progress=False))
    assert regions.shape == (2, 49, 1280) and mask.all()
    np.testing.assert_allclose(regions.astype(np.float32).mean(1), pooled, atol=2e-2)  # 7x7 grid: exact up to float16


def test_image_grid_cache_is_read_back(data_env, tmp_path):
    """A grid of size x size cells is found in the cache on the second call (no second pass)."""
    from osgha_lite.data import load_dataset
    from osgha_lite.backbones.features import cached_local_features

    counting = CountingLocal(build_encoder("efficientnet-lite0", device="cpu"))
    paths = load_dataset("flickr8k", "train").image_paths[:2]
    first, _ = cached_local_features(counting, paths, "demo", "train", size=2, cache_dir=tmp_path, progress=False)
    second, _ = cached_local_features(counting, paths, "demo", "train", size=2, cache_dir=tmp_path, progress=False)
    assert first.shape == (2, 4, 1280) and counting.items == 2
    np.testing.assert_array_equal(first, second)


# --------------------------------------------------------------------------- selected splits
class Fake:
    """A deterministic stand-in encoder: each item's vector comes from the SHA-256 of its name; counts calls."""

    def __init__(self, modality: str, dim: int = 6):
        self.identity, self.modality, self.dim = f"fake-{modality}", modality, dim
        self.calls, self.items = 0, []

    def vector(self, item) -> np.ndarray:
        import hashlib

        name = item.name if self.modality == "image" else str(item)
        raw = np.frombuffer(hashlib.sha256(name.encode()).digest()[: self.dim], dtype=np.uint8)
        return raw.astype(np.float32) / 255.0

    def encode(self, items, batch_size=64, progress=True):
        self.calls += 1
        self.items += list(items)
        return np.stack([self.vector(item) for item in items]).astype(np.float32)

    def local_identity(self, size):
        return f"{self.identity}:local{size}"

    def encode_local(self, items, size, batch_size=64, progress=True):
        self.calls += 1
        self.items += list(items)
        pooled = np.stack([self.vector(item) for item in items]).astype(np.float32)
        local = np.repeat(pooled[:, None, :], size, axis=1) * np.arange(1, size + 1)[None, :, None]
        mask = np.arange(size)[None, :] < (np.arange(len(items)) % size + 1)[:, None]
        return pooled, local.astype(np.float16), mask


@pytest.mark.parametrize("modality", ["image", "text"])
def test_split_features_of_a_selected_split_reads_the_parents_rows(data_env, modality):
    from osgha_lite.data import load_dataset
    from osgha_lite.backbones.features import cache_root, split_features

    train = load_dataset("flickr8k", "train")
    adapt = train.select_images(np.array([3, 1]), "adapt")
    encoder = Fake(modality)
    selected = split_features(encoder, adapt, progress=False)
    assert encoder.calls == 1 and len(encoder.items) == (4 if modality == "image" else 9)  # the parent, once
    parent = split_features(encoder, train, progress=False)
    assert encoder.calls == 1  # read from the cache
    items = adapt.image_paths if modality == "image" else adapt.captions
    np.testing.assert_array_equal(selected, np.stack([encoder.vector(i) for i in items]))
    np.testing.assert_array_equal(selected, parent[adapt.source.rows(modality)])
    assert selected.shape == (2 if modality == "image" else 5, encoder.dim)
    files = sorted(p.name for p in (cache_root() / "features").glob("*.npy"))
    assert len(files) == 1 and files[0].startswith(f"flickr8k-train-{modality}-")  # nothing stored as adapt
    # a selection of a selection still reads the first parent's cache
    nested = adapt.select_images(np.array([1]), "one")
    np.testing.assert_array_equal(split_features(encoder, nested, progress=False), selected[adapt.text_to_image == 1]
                                  if modality == "text" else selected[[1]])
    assert encoder.calls == 1


def test_split_features_of_a_plain_split_is_cached_features(data_env):
    from osgha_lite.data import load_dataset
    from osgha_lite.backbones.features import split_features

    dev = load_dataset("flickr8k", "dev")
    encoder = Fake("text")
    out = split_features(encoder, dev, progress=False)
    assert encoder.items == dev.captions
    np.testing.assert_array_equal(out, cached_features(encoder, dev.captions, "flickr8k", "dev", progress=False))
    assert encoder.calls == 1


def test_split_local_features_of_a_selected_split_reads_the_parents_rows(data_env):
    from osgha_lite.data import load_dataset
    from osgha_lite.backbones.features import split_features, split_local_features

    train = load_dataset("flickr8k", "train")
    adapt = train.select_images(np.array([0, 2]), "adapt")
    encoder = Fake("text")
    local, mask = split_local_features(encoder, adapt, 3, progress=False)
    assert encoder.calls == 1 and encoder.items == train.captions  # one pass over the parent
    parent_local, parent_mask = split_local_features(encoder, train, 3, progress=False)
    rows = adapt.source.rows("text")
    assert local.shape == (4, 3, encoder.dim) and mask.shape == (4, 3)
    np.testing.assert_array_equal(local, np.asarray(parent_local)[rows])
    np.testing.assert_array_equal(mask, parent_mask[rows])
    expected = np.stack([encoder.vector(c) for c in adapt.captions])
    np.testing.assert_allclose(local[:, 0].astype(np.float32), expected, atol=1e-3)
    # the global features of the same pass serve the selected split too
    np.testing.assert_array_equal(split_features(encoder, adapt, progress=False), expected)
    assert encoder.calls == 1


def test_smoke_limited_protocol_split_still_reads_the_parents_cache(data_env):
    from osgha_lite.data import load_profile_split
    from osgha_lite.backbones.features import split_features

    profile = {"name": "tiny", "dataset": "flickr8k", "smoke_images": 1,
               "protocol": {"kind": "disjoint", "pretrain_images": 2, "seed": 0}}
    encoder = Fake("text")
    split_features(encoder, load_profile_split({**profile, "smoke_images": None}, "train"), progress=False)
    assert encoder.calls == 1
    split_features(encoder, load_profile_split(profile, "adapt"), progress=False)
    assert encoder.calls == 1


def test_length_groups_never_mix_lengths():
    lengths = [5, 3, 5, 9, 3, 5, 5]
    order, batches = length_groups(lengths, batch_size=2)
    assert [lengths[i] for i in order] == sorted(lengths)
    assert sorted(order.tolist()) == list(range(len(lengths)))
    for batch in batches:
        picked = {lengths[i] for i in order[batch]}
        assert len(picked) == 1 and batch.stop - batch.start <= 2
    assert sum(b.stop - b.start for b in batches) == len(lengths)
    with pytest.raises(ValueError, match="batch_size"):
        length_groups(lengths, 0)


def test_a_caption_vector_does_not_depend_on_its_batch(minilm):
    """Bit for bit: the same vector alone, in any batch of any size, and among texts of other lengths."""
    texts = ["a dog runs along the beach chasing a red ball thrown by a child", "snow", "two men ride bikes",
             "a cat", "a very long caption about a crowded street market full of people buying fruit and bread",
             "two women ride horses", "a man is jumping", "a girl in a pink dress climbs the stairs"]
    one_by_one = np.concatenate([minilm.encode([t], progress=False) for t in texts])
    for batch_size in (2, 3, 64):
        np.testing.assert_array_equal(minilm.encode(texts, batch_size=batch_size, progress=False), one_by_one)
    reordered = texts[::-1] + ["an extra caption of yet another length, with a comma"]
    np.testing.assert_array_equal(minilm.encode(reordered, progress=False)[:len(texts)][::-1], one_by_one)
    sentences, tokens, mask = minilm.encode_local(texts, size=8, batch_size=2, progress=False)
    np.testing.assert_array_equal(sentences, one_by_one)
    assert mask[1].sum() < mask[0].sum() == 8  # "snow" has fewer tokens than the long first caption
    assert "unpadded" in minilm.identity


class SharedFake(Fake):
    """A :class:`Fake` text encoder whose vectors do not depend on their batch, so lists share them."""

    batch_independent = True


def test_each_distinct_text_is_encoded_once_across_lists(tmp_path):
    encoder = SharedFake("text")
    first = cached_features(encoder, ["a dog", "a cat", "a dog"], "lists", "one", cache_dir=tmp_path,
                            progress=False)
    assert encoder.items == ["a dog", "a cat"]  # a text repeated in a list is encoded once
    second = cached_features(encoder, ["a cat", "two birds", "a dog"], "lists", "two", cache_dir=tmp_path,
                             progress=False)
    assert encoder.items == ["a dog", "a cat", "two birds"]
    np.testing.assert_array_equal(second, np.stack([encoder.vector(t) for t in ["a cat", "two birds", "a dog"]]))
    np.testing.assert_array_equal(first[[0, 2]], second[[2, 2]])
    # a new process (a fresh store object) reads the shards from disk
    from osgha_lite.backbones import text_store

    text_store._STORES.clear()
    fresh = SharedFake("text")
    third = cached_features(fresh, ["two birds", "a dog"], "lists", "three", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(third, second[[1, 2]])
    assert fresh.items == []


def test_a_damaged_text_shard_is_named_and_encoded_again(tmp_path):
    from osgha_lite.backbones import text_store
    from osgha_lite.backbones.features import CacheWarning

    encoder = SharedFake("text")
    cached_features(encoder, ["a dog", "a cat"], "lists", "one", cache_dir=tmp_path, progress=False)
    shard = next((tmp_path / "texts").rglob("*.npy"))
    shard.write_bytes(shard.read_bytes()[:-8] + b"garbage!")
    text_store._STORES.clear()
    again = SharedFake("text")
    with pytest.warns(CacheWarning, match=f"{shard.stem}.json: text-vector shard ignored"):
        out = cached_features(again, ["a cat", "a dog"], "lists", "two", cache_dir=tmp_path, progress=False)
    assert sorted(again.items) == ["a cat", "a dog"]
    np.testing.assert_array_equal(out, np.stack([again.vector("a cat"), again.vector("a dog")]))


def test_minilm_shares_vectors_between_lists_bit_for_bit(minilm, tmp_path):
    texts = ["a dog runs on the grass", "snow", "two men ride bikes down a long hill"]
    direct = minilm.encode(texts, progress=False)
    cached_features(minilm, texts[:2], "lists", "one", cache_dir=tmp_path, progress=False)
    shared = cached_features(minilm, texts[::-1], "lists", "two", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(shared, direct[::-1])

"""Description sources of the quality ladder and their fidelity, on small hand-made splits and vectors."""

from __future__ import annotations

import numpy as np
import pytest

from osgha_lite.data import CaptionDataset
from osgha_lite.llm.descriptions import SOURCE_KINDS, description_fidelity, human_descriptions, split_descriptions


def dataset(split: str, per_image: list[list[str]]) -> CaptionDataset:
    captions = [c for texts in per_image for c in texts]
    index = np.repeat(np.arange(len(per_image)), [len(t) for t in per_image]).astype(np.int64)
    return CaptionDataset(name="toy", split=split, image_ids=[f"{split}{i}" for i in range(len(per_image))],
                          image_paths=[], captions=captions, text_to_image=index)


ADAPT = dataset("adapt", [
    ["A dog runs .", "a dog runs .  ", "A brown dog sprints .", "A puppy plays .", "A dog on grass ."],
    ["A lonely cat ."],  # no other caption: no description
    ["Two kids .", "Children play ."],
])
DEV = dataset("dev", [["A red car .", "A parked car ."], ["Snow falls .", "A snowy street .", "Winter ."]])
TEST = dataset("test", [["A boat .", "A ship at sea ."]])


def test_human_descriptions_of_the_first_caption_of_each_image():
    assert human_descriptions(ADAPT, k=2) == {
        "A dog runs .": ["A brown dog sprints .", "A puppy plays ."],  # the same text in other case is left out
        "Two kids .": ["Children play ."],
    }
    assert human_descriptions(ADAPT, k=10)["A dog runs ."] == ["A brown dog sprints .", "A puppy plays .",
                                                              "A dog on grass ."]


def test_human_descriptions_of_all_captions():
    out = human_descriptions(ADAPT, k=1, captions="all")
    assert out == {
        "A dog runs .": ["A brown dog sprints ."],
        "a dog runs .  ": ["A brown dog sprints ."],
        "A brown dog sprints .": ["A dog runs ."],
        "A puppy plays .": ["A dog runs ."],
        "A dog on grass .": ["A dog runs ."],
        "Two kids .": ["Children play ."],
        "Children play .": ["Two kids ."],
    }
    for caption, texts in human_descriptions(ADAPT, k=3, captions="all").items():
        assert len(texts) <= 3 and all(t.strip().lower() != caption.strip().lower() for t in texts)
    with pytest.raises(ValueError, match="'first' or 'all'"):
        human_descriptions(ADAPT, k=1, captions="some")


def test_split_descriptions_per_source_kind():
    splits = {"adapt": ADAPT, "dev": DEV, "test": TEST}
    assert set(SOURCE_KINDS) == {"none", "llm", "human-train", "human-test-ceiling"}
    assert split_descriptions({"kind": "none"}, splits, 2) == {"adapt": {}, "dev": {}, "test": {}}

    llm = {"A dog runs .": ["An LLM text ."], "A red car .": ["Another ."]}
    out = split_descriptions({"kind": "llm"}, splits, 2, llm_texts=llm)
    assert out == {"adapt": llm, "dev": llm, "test": llm}
    with pytest.raises(ValueError, match="llm_texts"):
        split_descriptions({"kind": "llm"}, splits, 2)

    train_only = split_descriptions({"kind": "human-train"}, splits, 2)
    assert train_only["adapt"] == human_descriptions(ADAPT, 2, "first") and train_only["adapt"]
    assert train_only["dev"] == {} and train_only["test"] == {}

    ceiling = split_descriptions({"kind": "human-test-ceiling"}, splits, 2)
    assert ceiling["adapt"] == train_only["adapt"]  # training gets the same as human-train
    assert ceiling["dev"] == human_descriptions(DEV, 2, "all")
    assert ceiling["dev"]["Winter ."] == ["Snow falls .", "A snowy street ."]
    assert ceiling["test"] == {"A boat .": ["A ship at sea ."], "A ship at sea .": ["A boat ."]}

    with pytest.raises(ValueError, match="unknown description source kind 'gpt'"):
        split_descriptions({"kind": "gpt"}, splits, 2)


def _captions(n_images: int, per_image: int, dim: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_images * per_image, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.repeat(np.arange(n_images), per_image)


def test_descriptions_equal_to_their_caption_are_fully_faithful():
    captions, text_to_image = _captions(8, 2)
    descriptions = np.repeat(captions[:, None, :], 3, axis=1)
    mask = np.zeros((16, 3), bool)
    mask[::2, :2] = True  # the first caption of each image has two descriptions
    out = description_fidelity(captions, descriptions, mask, text_to_image)
    assert out == {"fidelity": 1.0, "top1": 1.0, "n": 16}


def test_descriptions_equal_to_another_images_caption_never_rank_first():
    captions, text_to_image = _captions(8, 2)
    other = (np.arange(16) + 2) % 16  # a caption of the next image
    assert (text_to_image[other] != text_to_image).all()
    descriptions = captions[other][:, None, :]
    mask = np.ones((16, 1), bool)
    out = description_fidelity(captions, descriptions, mask, text_to_image)
    assert out["top1"] == 0.0 and out["n"] == 16
    assert 0.0 <= out["fidelity"] < 1.0


def test_no_descriptions_give_nan_and_the_draw_is_seeded():
    captions, text_to_image = _captions(6, 3, seed=1)
    empty = description_fidelity(captions, np.zeros((18, 2, 64), np.float32), np.zeros((18, 2), bool),
                                 text_to_image)
    assert np.isnan(empty["fidelity"]) and np.isnan(empty["top1"]) and empty["n"] == 0

    rng = np.random.default_rng(2)
    noisy = captions[:, None, :] + 1.2 * rng.normal(size=(18, 4, 64)).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=-1, keepdims=True)
    mask = rng.random((18, 4)) < 0.7
    first = description_fidelity(captions, noisy, mask, text_to_image, seed=5)
    assert first == description_fidelity(captions, noisy, mask, text_to_image, seed=5)
    assert first["n"] == int(mask.sum()) and 0.0 < first["top1"] <= first["fidelity"] <= 1.0


class _BoundedRng:
    """A numpy Generator that gives up after ``limit`` draws (turns an endless redraw loop into an error)."""

    def __init__(self, seed, limit: int = 1000):
        self.rng, self.left = np.random.Generator(np.random.PCG64(seed)), limit

    def integers(self, *args, **kwargs):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("still drawing partner captions after 1000 draws")
        return self.rng.integers(*args, **kwargs)


def test_a_split_of_one_image_ends_with_an_error_or_nan(monkeypatch):
    from osgha_lite.llm import descriptions

    captions, text_to_image = _captions(1, 3)
    monkeypatch.setattr(descriptions.np.random, "default_rng", _BoundedRng)
    try:
        out = description_fidelity(captions, captions[:, None, :], np.ones((3, 1), bool), text_to_image)
    except ValueError:
        return
    assert np.isnan(out["fidelity"]) and np.isnan(out["top1"])

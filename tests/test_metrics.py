"""Tests of osgha_lite.metrics.retrieval against a slow reference, eccv-caption and hand cases."""

from __future__ import annotations

import json
import math
import statistics
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from osgha_lite.metrics.retrieval import (
    coco_1k_metrics,
    coco_5k_metrics,
    image_query_ranks,
    metric_names,
    query_ranks,
    retrieval_metrics,
    text_query_ranks,
)

# ---------------------------------------------------------------------------
# Slow, obvious reference: sort every gallery with an explicit tie-break.
# ---------------------------------------------------------------------------


def reference_ranks(sims: np.ndarray, text_to_image: list[int], ties: str) -> tuple[list, list]:
    """1-based ranks by sorting each query's gallery.

    Among equal scores, the pessimistic rule lists negatives before positives
    and the optimistic rule lists positives first; the rank is the position of
    the first positive in that order.
    """
    scores = sims.tolist()
    n_images, n_texts = len(scores), len(text_to_image)
    negatives_first = ties == "pessimistic"

    image_ranks = []
    for image in range(n_images):
        def key(text, image=image):
            is_positive = text_to_image[text] == image
            return (-scores[image][text], is_positive if negatives_first else not is_positive)

        order = sorted(range(n_texts), key=key)
        first = next(pos for pos, text in enumerate(order) if text_to_image[text] == image)
        image_ranks.append(first + 1)

    text_ranks = []
    for text in range(n_texts):
        def key(image, text=text):
            is_positive = text_to_image[text] == image
            return (-scores[image][text], is_positive if negatives_first else not is_positive)

        order = sorted(range(n_images), key=key)
        text_ranks.append(order.index(text_to_image[text]) + 1)
    return image_ranks, text_ranks


def reference_metrics(sims, text_to_image, ks=(1, 5, 10), ties="pessimistic") -> dict:
    image_ranks, text_ranks = reference_ranks(np.asarray(sims), list(text_to_image), ties)
    result = {}
    for direction, ranks in (("i2t", image_ranks), ("t2i", text_ranks)):
        for k in ks:
            result[f"{direction}_R@{k}"] = 100.0 * sum(r <= k for r in ranks) / len(ranks)
    result["rsum"] = sum(result.values())
    result["i2t_medr"] = math.floor(statistics.median(image_ranks))
    result["i2t_meanr"] = sum(image_ranks) / len(image_ranks)
    result["t2i_medr"] = math.floor(statistics.median(text_ranks))
    result["t2i_meanr"] = sum(text_ranks) / len(text_ranks)
    return result


def random_layout(rng: np.random.Generator, n_images: int) -> np.ndarray:
    """Shuffled text_to_image with 1..7 captions per image (1 and 7 both present)."""
    counts = rng.integers(1, 8, size=n_images)
    counts[0], counts[-1] = 1, 7
    mapping = np.repeat(np.arange(n_images), counts)
    return rng.permutation(mapping)


def random_scores(rng, n_images, mapping, tied: bool) -> np.ndarray:
    """Scores with signal; ``tied`` rounds them to a few levels so ties abound."""
    scores = rng.standard_normal((n_images, mapping.size))
    scores[mapping, np.arange(mapping.size)] += 1.0
    return np.round(scores) if tied else scores.astype(np.float32)


def assert_metrics_equal(ours: dict, expected: dict) -> None:
    assert list(ours) == list(expected)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name
        assert type(ours[name]) is float, name


# ---------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_loop(seed, tied, ties):
    rng = np.random.default_rng(seed)
    n_images = 23
    mapping = random_layout(rng, n_images)
    sims = random_scores(rng, n_images, mapping, tied)
    expected = reference_metrics(sims, mapping, ties=ties)
    assert_metrics_equal(retrieval_metrics(sims, mapping, ties=ties), expected)
    # Block size never changes the result (1 row, uneven blocks, one block).
    for chunk_size in (1, 4, 7, n_images, 1000):
        assert_metrics_equal(
            retrieval_metrics(sims, mapping, chunk_size=chunk_size, ties=ties), expected
        )


def test_ties_really_occur_and_rules_differ():
    rng = np.random.default_rng(0)
    mapping = random_layout(rng, 23)
    sims = random_scores(rng, 23, mapping, tied=True)
    pessimistic = query_ranks(sims, mapping, ties="pessimistic")
    optimistic = query_ranks(sims, mapping, ties="optimistic")
    assert np.all(pessimistic.image_ranks >= optimistic.image_ranks)
    assert np.any(pessimistic.text_ranks > optimistic.text_ranks)
    assert np.any(pessimistic.image_ranks > optimistic.image_ranks)


def test_rank_helpers_match_reference_and_torch_input():
    rng = np.random.default_rng(5)
    mapping = random_layout(rng, 17)
    sims = random_scores(rng, 17, mapping, tied=True)
    image_ranks, text_ranks = reference_ranks(sims, list(mapping), "pessimistic")
    np.testing.assert_array_equal(image_query_ranks(sims, mapping), image_ranks)
    np.testing.assert_array_equal(text_query_ranks(sims, mapping), text_ranks)
    tensor_result = retrieval_metrics(torch.from_numpy(sims), torch.from_numpy(mapping))
    assert tensor_result == retrieval_metrics(sims, mapping)
    half = retrieval_metrics(torch.from_numpy(sims).to(torch.bfloat16), mapping.tolist())
    assert half == retrieval_metrics(sims, mapping)  # small integers are exact in bfloat16


def test_custom_ks_and_names():
    rng = np.random.default_rng(3)
    mapping = random_layout(rng, 12)
    sims = random_scores(rng, 12, mapping, tied=False)
    result = retrieval_metrics(sims, mapping, ks=(2, 3))
    assert list(result) == metric_names((2, 3))
    assert_metrics_equal(result, reference_metrics(sims, mapping, ks=(2, 3)))


# ---------------------------------------------------------------------------
# Hand cases
# ---------------------------------------------------------------------------


def test_identity_is_perfect():
    sims = np.eye(12, dtype=np.float32)
    result = retrieval_metrics(sims, np.arange(12))
    assert result == {
        **{f"{d}_R@{k}": 100.0 for d in ("i2t", "t2i") for k in (1, 5, 10)},
        "rsum": 600.0, "i2t_medr": 1.0, "i2t_meanr": 1.0, "t2i_medr": 1.0, "t2i_meanr": 1.0,
    }


def test_reversed_is_worst():
    # The true pair scores lowest in every row and column: every rank is 12.
    sims = -np.eye(12)
    result = retrieval_metrics(sims, np.arange(12))
    assert all(result[f"{d}_R@{k}"] == 0.0 for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert result["rsum"] == 0.0
    assert result["i2t_medr"] == result["t2i_medr"] == 12.0
    assert result["i2t_meanr"] == result["t2i_meanr"] == 12.0


def test_constant_scores_get_worst_rank_under_pessimistic_rule():
    sims = np.zeros((4, 8))
    mapping = np.repeat(np.arange(4), 2)
    pessimistic = query_ranks(sims, mapping)
    # Image query: all 6 other-image captions tie with the best caption -> rank 7.
    np.testing.assert_array_equal(pessimistic.image_ranks, [7, 7, 7, 7])
    np.testing.assert_array_equal(pessimistic.text_ranks, [4] * 8)
    optimistic = query_ranks(sims, mapping, ties="optimistic")
    np.testing.assert_array_equal(optimistic.image_ranks, [1] * 4)
    np.testing.assert_array_equal(optimistic.text_ranks, [1] * 8)


def test_multi_caption_by_hand():
    # Texts 0, 2 describe image 0; texts 1, 3, 4 image 1 (not consecutive).
    mapping = np.array([0, 1, 0, 1, 1])
    sims = np.array(
        [
            [0.2, 0.9, 0.5, 0.1, 0.3],  # image 0: best caption text 2 (0.5) after text 1 -> rank 2
            [0.8, 0.4, 0.6, 0.7, 0.0],  # image 1: best caption text 3 (0.7) after 0 -> rank 2
        ]
    )
    ranks = query_ranks(sims, mapping)
    np.testing.assert_array_equal(ranks.image_ranks, [2, 2])
    # Text 0: 0.2 vs 0.8 -> 2; text 1: 0.4 vs 0.9 -> 2; text 2: 0.5 vs 0.6 -> 2;
    # text 3: 0.7 vs 0.1 -> 1; text 4: 0.0 vs 0.3 -> 2.
    np.testing.assert_array_equal(ranks.text_ranks, [2, 2, 2, 1, 2])
    result = retrieval_metrics(sims, mapping, ks=(1, 2))
    assert result["i2t_R@1"] == 0.0 and result["i2t_R@2"] == 100.0
    assert result["t2i_R@1"] == 20.0 and result["t2i_R@2"] == 100.0
    assert result["rsum"] == 220.0
    assert result["t2i_medr"] == 2.0 and result["t2i_meanr"] == pytest.approx(1.8)


def test_even_count_median_is_floored():
    # Text ranks 1 and 2 -> median 1.5 -> medr 1 (VSE++ convention).
    sims = np.array([[1.0, 0.0], [0.0, 1.0]])
    sims[1, 1] = -1.0  # text 1 (image 1) now ranks image 0 first
    result = retrieval_metrics(sims, [0, 1])
    assert result["t2i_medr"] == 1.0 and result["t2i_meanr"] == 1.5


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def test_validation_errors():
    sims = np.zeros((3, 4))
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.zeros(4), [0, 1, 2, 2])
    with pytest.raises(ValueError, match="4 columns"):
        retrieval_metrics(sims, [0, 1, 2])
    with pytest.raises(ValueError, match=r"sims\.T"):
        retrieval_metrics(np.zeros((4, 3)), [0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*texts \[3\] -> values \[5\]"):
        retrieval_metrics(sims, [0, 1, 2, 5])
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(sims, [0, 1, 2, -1])
    with pytest.raises(TypeError, match="integer"):
        retrieval_metrics(sims, [0.0, 1.0, 2.0, 2.0])
    with pytest.raises(ValueError, match=r"1-D"):
        retrieval_metrics(sims, [[0, 1, 2, 2]])
    with pytest.raises(ValueError, match="empty"):
        retrieval_metrics(np.zeros((0, 4)), [0, 0, 0, 0])
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(sims, [0, 1, 2, 2], ks=(0, 5))
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(sims, [0, 1, 2, 2], ties="random")
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_metrics(sims, [0, 1, 2, 2], chunk_size=0)


def test_uncaptioned_images_are_named():
    sims = np.zeros((6, 3))
    with pytest.raises(ValueError, match=r"3 image\(s\) have no caption.*\[1, 3, 4\]"):
        retrieval_metrics(sims, [0, 2, 5])


def test_nan_scores_are_rejected():
    sims = np.zeros((5, 5))
    sims[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\[3\]"):
        retrieval_metrics(sims, np.arange(5), chunk_size=2)


# ---------------------------------------------------------------------------
# COCO protocols
# ---------------------------------------------------------------------------


def test_coco_1k_is_mean_of_explicit_folds():
    rng = np.random.default_rng(11)
    n_images, n_folds = 40, 5
    mapping = random_layout(rng, n_images)
    sims = random_scores(rng, n_images, mapping, tied=True)
    folds = []
    for fold in range(n_folds):
        images = np.arange(fold * 8, (fold + 1) * 8)
        # Explicit boolean selection of the fold's texts, re-indexed by hand.
        keep = np.isin(mapping, images)
        local = {int(image): row for row, image in enumerate(images)}
        folds.append(
            reference_metrics(sims[images][:, keep], [local[int(i)] for i in mapping[keep]])
        )
    expected = {name: sum(f[name] for f in folds) / n_folds for name in folds[0]}
    assert_metrics_equal(coco_1k_metrics(sims, mapping, n_folds=n_folds), expected)
    assert coco_5k_metrics(sims, mapping) == retrieval_metrics(sims, mapping)
    with pytest.raises(ValueError, match="equal folds"):
        coco_1k_metrics(sims[:39][:, mapping < 39], mapping[mapping < 39], n_folds=5)


# ---------------------------------------------------------------------------
# Against eccv-caption (independent COCO 1K/5K Recall@K) on the real layout
# ---------------------------------------------------------------------------


def _ranked_prefixes(block: np.ndarray, own_columns, depth: int) -> list[np.ndarray]:
    """For each row, the shortest prefix of its full ranking holding ``depth`` own-gallery items.

    eccv-caption wants, per query, gallery ids sorted by score; for COCO 1K it
    keeps only the ids of the query's fold. Passing the full 25,000-long
    lists for 30,000 queries would take minutes and gigabytes in its pure
    Python loops, so each list is cut right after the ``depth``-th item of the
    query's own gallery: the first ``depth`` ids it sees are then exactly
    those of the full list (scores are continuous float64, so no ties).
    ``own_columns=None`` means the whole gallery (COCO 5K).
    """
    own = block if own_columns is None else block[:, own_columns]
    threshold = np.partition(own, own.shape[1] - depth, axis=1)[:, own.shape[1] - depth]
    prefixes = []
    for row, cut in zip(block, threshold):
        kept = np.flatnonzero(row >= cut)
        prefixes.append(kept[np.argsort(-row[kept], kind="stable")])
    return prefixes


@pytest.fixture(scope="module")
def eccv_coco_layout():
    eccv_caption = pytest.importorskip("eccv_caption")
    data = Path(eccv_caption.__file__).parent / "data"
    caption_ids = np.load(data / "coco_test_ids.npy")  # 25,000 caption ids, fold order
    raw = json.loads((data / "original_caption_to_image.json").read_text())
    caption_to_image = {int(caption): int(images[0]) for caption, images in raw.items()}
    # Image order: first appearance in the caption id list, which is the order
    # eccv-caption's COCO 1K folds (5,000 consecutive caption ids each) follow.
    image_ids = list(dict.fromkeys(caption_to_image[int(c)] for c in caption_ids))
    return caption_ids, caption_to_image, np.array(image_ids)


def test_against_eccv_caption_coco_5k_and_1k(eccv_coco_layout):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "failed to import ujson"
        from eccv_caption import Metrics
    caption_ids, caption_to_image, image_ids = eccv_coco_layout
    assert image_ids.size == 5000 and caption_ids.size == 25000
    rng = np.random.default_rng(0)

    # Our text order: a random permutation of the captions, so nothing can
    # rely on captions being grouped by image.
    text_ids = caption_ids[rng.permutation(caption_ids.size)]
    image_row = {int(image): row for row, image in enumerate(image_ids)}
    mapping = np.array([image_row[caption_to_image[int(c)]] for c in text_ids])

    # Structured scores: captions are noisy copies of their image embedding,
    # giving recalls well inside (0, 100). float64 so that no two scores tie.
    image_emb = rng.standard_normal((5000, 32))
    text_emb = image_emb[mapping] + 1.7 * rng.standard_normal((mapping.size, 32))
    sims = image_emb @ text_emb.T

    ours_5k = coco_5k_metrics(sims, mapping)
    ours_1k = coco_1k_metrics(sims, mapping)
    # Without ties the tie rule must not matter, otherwise the comparison is moot.
    assert retrieval_metrics(sims, mapping, ties="optimistic") == ours_5k
    assert 5.0 < ours_5k["t2i_R@1"] < ours_5k["i2t_R@10"] < 95.0

    # Ranked id lists per query, built fold by fold (the folds partition both
    # images and texts): 5K lists rank the whole gallery, 1K lists are cut
    # after the query's fold holds ``depth`` items (eccv filters to the fold).
    depth = 10
    i2t_5k, t2i_5k, i2t_1k, t2i_1k = {}, {}, {}, {}
    for start in range(0, 5000, 1000):
        rows = np.arange(start, start + 1000)
        fold_texts = np.flatnonzero((mapping >= start) & (mapping < start + 1000))
        image_block = sims[start:start + 1000]
        text_block = np.ascontiguousarray(sims[:, fold_texts].T)
        for lists, block, own, queries, query_ids, gallery_ids in (
            (i2t_5k, image_block, None, rows, image_ids, text_ids),
            (i2t_1k, image_block, fold_texts, rows, image_ids, text_ids),
            (t2i_5k, text_block, None, fold_texts, text_ids, image_ids),
            (t2i_1k, text_block, rows, fold_texts, text_ids, image_ids),
        ):
            for query, ranked in zip(queries, _ranked_prefixes(block, own, depth)):
                lists[int(query_ids[query])] = gallery_ids[ranked].tolist()
    assert len(i2t_1k) == len(i2t_5k) == 5000 and len(t2i_1k) == len(t2i_5k) == 25000

    metrics = Metrics()
    for k in (1, 5, 10):
        eccv_5k = metrics.coco_5k_recalls({"i2t": i2t_5k, "t2i": t2i_5k}, "all", K=k)
        eccv_1k = metrics.coco_1k_recalls({"i2t": i2t_1k, "t2i": t2i_1k}, "all", K=k)
        for direction in ("i2t", "t2i"):
            assert ours_5k[f"{direction}_R@{k}"] == pytest.approx(100 * eccv_5k[direction], abs=1e-9)
            assert ours_1k[f"{direction}_R@{k}"] == pytest.approx(100 * eccv_1k[direction], abs=1e-9)

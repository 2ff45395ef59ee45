"""Tests for osgha_lite.metrics.gallery: blockwise exact Recall@K, top-k search in blocks, FAISS indexes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from osgha_lite.metrics import gallery
from osgha_lite.metrics.gallery import (
    GalleryError,
    GalleryIndex,
    blockwise_query_ranks,
    blockwise_retrieval_metrics,
    check_vectors,
    dense_search,
    tiled_scores,
    topk_recall,
)
from osgha_lite.metrics.retrieval import query_ranks, retrieval_metrics
from osgha_lite.apps.search import top_k


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def paired(n_images: int, dim: int, seed: int, noise: float = 0.9):
    """Unit image vectors, 1-5 noisy unit captions per image, captions in shuffled order."""
    rng = np.random.default_rng(seed)
    images = unit(rng.standard_normal((n_images, dim)))
    mapping = rng.permutation(np.repeat(np.arange(n_images), rng.integers(1, 6, n_images)))
    texts = unit(images[mapping] + noise * rng.standard_normal((mapping.size, dim)))
    return images, texts, mapping


def halves(n: int, dim: int, rng) -> np.ndarray:
    """Unit vectors with four entries of +-1/2: every inner product is a multiple of 1/4, exact in any order."""
    x = np.zeros((n, dim), dtype=np.float32)
    for row in range(n):
        x[row, rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("rows,cols", [(97, 1000), (1, 333), (2000, 20000)])
def test_blockwise_metrics_equal_retrieval_metrics_on_the_same_scores(ties, rows, cols):
    images, texts, mapping = paired(2000, 64, seed=1)
    sims = tiled_scores(images, texts, mapping, block_rows=rows, block_cols=cols)
    # the tiles are the product up to the BLAS's last bits
    assert np.abs(sims - images @ texts.T).max() < 1e-5
    expected = retrieval_metrics(sims, mapping, ties=ties)
    got = blockwise_retrieval_metrics(images, texts, mapping, ties=ties, block_rows=rows, block_cols=cols)
    assert got == expected
    ranks = blockwise_query_ranks(images, texts, mapping, ties=ties, block_rows=rows, block_cols=cols)
    reference = query_ranks(sims, mapping, ties=ties)
    np.testing.assert_array_equal(ranks.image_ranks, reference.image_ranks)
    np.testing.assert_array_equal(ranks.text_ranks, reference.text_ranks)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_blockwise_metrics_equal_retrieval_metrics_with_many_ties(ties):
    rng = np.random.default_rng(2)
    images = halves(3000, 16, rng)
    images[1500:1600] = images[:100]  # duplicated images: every score of the copy ties
    mapping = rng.permutation(np.repeat(np.arange(3000), rng.integers(1, 4, 3000)))
    texts = halves(mapping.size, 16, rng)
    copies = rng.random(mapping.size) < 0.3
    texts[copies] = images[mapping[copies]]  # a caption equal to its image ties with the image's copy
    sims = images @ texts.T
    own = sims[mapping, np.arange(mapping.size)]
    assert np.count_nonzero(sims == own[None, :]) > 2 * mapping.size  # ties with the positive are common
    expected = retrieval_metrics(sims, mapping, ties=ties)  # one-call product: exact here, so no tiling needed
    got = blockwise_retrieval_metrics(images, texts, mapping, ties=ties, block_rows=61, block_cols=900)
    assert got == expected
    assert 0 < got["t2i_R@1"] < 100 and 0 < got["i2t_R@1"] < 100


def test_pessimistic_and_optimistic_differ_on_ties_as_in_metrics():
    rng = np.random.default_rng(3)
    images = halves(400, 8, rng)
    mapping = np.repeat(np.arange(400), 2)
    images[200:] = images[:200]  # two identical images: each caption ties with the other image
    texts = images[mapping].copy()
    pessimistic = blockwise_retrieval_metrics(images, texts, mapping, block_rows=50, block_cols=128)
    optimistic = blockwise_retrieval_metrics(images, texts, mapping, ties="optimistic", block_rows=50, block_cols=128)
    assert optimistic["t2i_R@1"] == 100.0 and pessimistic["t2i_R@1"] == 0.0
    assert pessimistic == retrieval_metrics(images @ texts.T, mapping)


def test_captions_already_in_image_order_are_not_copied(monkeypatch):
    images, texts, mapping = paired(300, 32, seed=4)
    order = np.argsort(mapping, kind="stable")
    seen = []
    monkeypatch.setattr(gallery, "score_tile", lambda i, t, r, c: seen.append(t) or i[r] @ t[c].T)
    sorted_texts = texts[order]
    blockwise_query_ranks(images, sorted_texts, mapping[order], block_rows=64, block_cols=256)
    assert all(t is sorted_texts for t in seen)


def test_the_block_size_is_respected_and_memory_stays_bounded(monkeypatch):
    images, texts, mapping = paired(1500, 32, seed=5)
    shapes = []
    real = gallery.score_tile

    def recording(*args):
        tile = real(*args)
        shapes.append(tile.shape)
        return tile

    monkeypatch.setattr(gallery, "score_tile", recording)
    blockwise_query_ranks(images, texts, mapping, block_rows=50, block_cols=400)
    assert max(s[0] for s in shapes) <= 50 and max(s[1] for s in shapes) <= 400
    covered = sum(r * c for r, c in shapes)
    assert covered >= images.shape[0] * texts.shape[0]  # every score was computed (plus the band pass)
    monkeypatch.setattr(gallery, "score_tile", real)

    full_bytes = 4 * images.shape[0] * texts.shape[0]
    tracemalloc.start()
    blockwise_query_ranks(images, texts, mapping, block_rows=50, block_cols=400)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # inputs are already float32: the peak is the sorted copy of texts, counters and one tile
    assert peak < texts.nbytes + 64 * (images.shape[0] + texts.shape[0]) + 8 * 50 * 400 + (1 << 20)
    assert peak < full_bytes / 4


def test_dense_search_is_brute_force_top_k_with_ties_in_gallery_order():
    rng = np.random.default_rng(6)
    items = halves(500, 8, rng)  # many ties
    queries = halves(40, 8, rng)
    scores, indices = dense_search(queries, items, k=7, block_rows=9)
    for q in range(40):
        brute = queries[q] @ items.T
        np.testing.assert_array_equal(indices[q], top_k(brute, 7))
        np.testing.assert_array_equal(scores[q], brute[top_k(brute, 7)])
    _, everything = dense_search(queries, items, k=500, block_rows=16)
    assert everything[0].tolist() == top_k(queries[0] @ items.T, 500).tolist()


def test_flat_index_is_exact():
    images, texts, _ = paired(2000, 64, seed=7)
    exact_scores, exact = dense_search(texts[:300], images, k=10)
    index = GalleryIndex.build(images, "flat", threads=1)
    assert index.exact and index.size == 2000
    scores, found = index.search(texts[:300], k=10, block_rows=64)
    np.testing.assert_array_equal(found, exact)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6)
    assert topk_recall(found, exact) == 1.0
    # with ties the order among equal scores is FAISS's own, the scores are the exact top k
    rng = np.random.default_rng(8)
    items, queries = halves(600, 8, rng), halves(50, 8, rng)
    tied_scores, _ = GalleryIndex.build(items, threads=1).search(queries, k=12)
    np.testing.assert_allclose(tied_scores, dense_search(queries, items, 12)[0], atol=1e-6)


def clustered(n: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((64, dim)))
    return unit(centres[rng.integers(0, 64, n)] + 0.35 * rng.standard_normal((n, dim)))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_report_their_recall_against_exact(kind):
    items = clustered(4000, 32, seed=9)
    queries = clustered(200, 32, seed=10)
    _, exact = dense_search(queries, items, k=10)
    index = GalleryIndex.build(items, kind, nlist=64, nprobe=2, ef_search=16, threads=1)
    assert not index.exact
    _, found = index.search(queries, k=10)
    low = topk_recall(found, exact)
    assert 0.2 < low <= 1.0
    if kind == "ivf":
        index.set_search_effort(nprobe=64)  # every cell scanned: exact
    else:
        index.set_search_effort(ef_search=400)
    _, found = index.search(queries, k=10)
    high = topk_recall(found, exact)
    assert high >= low and high > 0.95
    if kind == "ivf":
        assert high == 1.0


def test_ivf_is_deterministic_for_a_seed():
    items = clustered(3000, 16, seed=11)
    queries = clustered(100, 16, seed=12)
    first = GalleryIndex.build(items, "ivf", nlist=32, nprobe=3, seed=5, threads=1).search(queries, 5)[1]
    again = GalleryIndex.build(items, "ivf", nlist=32, nprobe=3, seed=5, threads=1).search(queries, 5)[1]
    np.testing.assert_array_equal(first, again)


def test_topk_recall_counts_the_shared_items():
    assert topk_recall(np.array([[1, 2], [3, -1]]), np.array([[2, 1], [4, 3]])) == 0.75
    with pytest.raises(GalleryError, match="must both be"):
        topk_recall(np.zeros((2, 3)), np.zeros((2, 2)))


def test_inputs_that_cannot_be_used_are_refused_with_the_reason():
    images, texts, mapping = paired(50, 16, seed=13)
    with pytest.raises(GalleryError, match="dimension 8 but the gallery has dimension 16"):
        dense_search(texts[:, :8], images, k=3)
    with pytest.raises(GalleryError, match="dimension 8 but the gallery has dimension 16"):
        GalleryIndex.build(images).search(unit(texts[:, :8]), k=3)
    with pytest.raises(GalleryError, match="dimension 8"):
        blockwise_retrieval_metrics(images, unit(texts[:, :8]), mapping)
    scaled = images.copy()
    scaled[[3, 7]] *= 2
    with pytest.raises(GalleryError, match=r"2 row\(s\) whose L2 norm is not 1 \(rows \[3, 7\]"):
        blockwise_retrieval_metrics(scaled, texts, mapping)
    assert blockwise_query_ranks(scaled, texts, mapping, unit=False).image_ranks.shape == (50,)
    broken = texts.copy()
    broken[5, 0] = np.nan
    with pytest.raises(GalleryError, match=r"NaN or infinite entries in 1 row\(s\): \[5\]"):
        GalleryIndex.build(images).search(broken, k=1)
    with pytest.raises(GalleryError, match="2-D"):
        check_vectors(images[0], "queries")
    with pytest.raises(GalleryError, match="k=51 exceeds the gallery size 50"):
        dense_search(texts, images, k=51)
    with pytest.raises(GalleryError, match="unknown index kind 'lsh'"):
        GalleryIndex.build(images, "lsh")
    with pytest.raises(GalleryError, match="nprobe applies to an ivf index"):
        GalleryIndex.build(images).set_search_effort(nprobe=3)
    with pytest.raises(GalleryError, match="block_rows must be a positive integer"):
        blockwise_query_ranks(images, texts, mapping, block_rows=0)
    with pytest.raises(ValueError, match="have no caption"):
        blockwise_query_ranks(images, texts[mapping != 4], mapping[mapping != 4])
    with pytest.raises(ValueError, match="ties must be one of"):
        blockwise_query_ranks(images, texts, mapping, ties="random")

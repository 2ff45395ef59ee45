r"""Retrieval over galleries too large for one score matrix: top-k search and exact Recall@K in blocks.

A gallery of 100,000 images and 500,000 captions has a 100,000 x 500,000
score matrix (200 GB in float32); nothing here ever holds it. Scores are inner
products :math:`s(q, g) = \langle q, g \rangle` of unit vectors (cosine
similarities), computed a block at a time.

Top-k search
------------
:class:`GalleryIndex` wraps a FAISS index over the gallery rows:

- ``"flat"`` (``IndexFlatIP``): exact, every query scored against every item;
- ``"ivf"`` (``IndexIVFFlat``): approximate, the gallery split into ``nlist``
  k-means cells (seeded), a query scans only its ``nprobe`` nearest cells;
- ``"hnsw"`` (``IndexHNSWFlat``): approximate, a navigable small-world graph
  of ``hnsw_m`` links per node searched with beam width ``ef_search``.

Queries go through in blocks of ``block_rows``; only the ``[n_queries, k]``
answers are kept. :func:`dense_search` is the NumPy reference: one
``block_rows x n_gallery`` score block at a time, the top k by
``argpartition``, best first and, as in :func:`osgha_lite.apps.search.top_k`, equal
scores in gallery order. FAISS returns tied items in its own order, and its
BLAS may round a score in the last bit differently from NumPy's, so the exact
index and the reference agree on the top-k *scores*, and on the indices
wherever no two scores of a query's top k + 1 are within rounding of each
other. :func:`topk_recall` measures an approximate index against an exact one:
:math:`|A_q \cap E_q| / k` averaged over the queries.

Exact Recall@K in blocks
------------------------
:func:`blockwise_query_ranks` gives the ranks of :func:`osgha_lite.metrics.retrieval.query_ranks`
with the same notation and tie rules (pessimistic by default) from the
embeddings, without the matrix. Texts are taken in the order of their image
(a stable sort of ``text_to_image``; a copy of ``texts`` only when it is not
already in that order) and the matrix :math:`S = I T^\top` is cut on a fixed
grid of tiles of ``block_rows`` images x ``block_cols`` texts, each computed
as ``images[a:b] @ texts[c:d].T`` (float32).

1. The thresholds: the tiles holding the positive pairs (a band along the
   diagonal, about ``2 * block_cols`` texts per image row) give every text's
   own score :math:`p_t = S_{g(t)t}`, every image's best caption score
   :math:`b_i = \max_{t:\,g(t)=i} p_t` and :math:`e_i = \#\{t : g(t) = i,\ p_t = b_i\}`.
2. One pass over all tiles counts, per image row and per text column,

   .. math:: c_i = \#\{t : S_{it} \ge b_i\}, \qquad c_t = \#\{i : S_{it} \ge p_t\}

   (``>`` for ``ties="optimistic"``). The ranks are then
   :math:`r^{\mathrm{i2t}}_i = 1 + c_i - e_i` and :math:`r^{\mathrm{t2i}}_t = c_t`
   (the positives scoring :math:`\ge b_i` are exactly the :math:`e_i` captions
   tied at the maximum, and a text's own image counts once in :math:`c_t`);
   optimistically :math:`1 + c_i` and :math:`1 + c_t`, as in ``metrics.py``,
   which counts every item there.

A tile is computed with the same shapes and operands in both steps, so a
threshold is bit-for-bit the score it is compared with. BLAS libraries round
a product's last bit differently for different block shapes (OpenBLAS does),
so the numbers are those of :func:`osgha_lite.metrics.retrieval.retrieval_metrics` on
:func:`tiled_scores`, the same tiles assembled into a matrix (checked in the
tests, ties included); against ``images @ texts.T`` computed in one call they
agree exactly whenever no two scores of a query are within that last bit
(always for inputs whose products are exact, e.g. entries that are multiples
of 1/2). Memory: one ``block_rows x block_cols`` float32 tile and a boolean
mask of the same shape, plus ``O(n_images + n_texts)`` counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osgha_lite.metrics.retrieval import (
    BLOCK_ENTRIES,
    DEFAULT_KS,
    QueryRanks,
    format_indices,
    to_numpy,
    validate_ks,
    validate_ties,
    metrics_from_ranks,
    validate_retrieval_inputs,
)

INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")
UNIT_TOLERANCE = 1e-3  # largest accepted | ||x|| - 1 | of a row
CHECK_ROWS = 1 << 14  # rows checked at a time by check_vectors
TRAIN_POINTS_PER_CELL = 64  # IVF k-means trains on at most this many (seeded) sample rows per cell


class GalleryError(ValueError):
    """Input that a gallery search or evaluation cannot use; the message says what to do."""


# --------------------------------------------------------------------------- inputs


def check_vectors(vectors: Any, name: str, dim: int | None = None, unit: bool = True) -> np.ndarray:
    """``vectors`` as a C-ordered float32 ``[n, d]`` array (no copy when it already is one).

    Refuses, naming ``name`` and the offending rows: an array that is not 2-D
    or is empty, a width other than ``dim``, NaN or infinite entries, and
    (with ``unit``) rows whose L2 norm is off 1 by more than
    :data:`UNIT_TOLERANCE`, since inner products are cosines only for unit rows.
    """
    array = to_numpy(vectors, name)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise GalleryError(f"{name} must be a non-empty 2-D [n, d] array of row vectors, got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise GalleryError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if dim is not None and array.shape[1] != dim:
        raise GalleryError(
            f"{name} has dimension {array.shape[1]} but the gallery has dimension {dim}; "
            "embed queries and gallery with the same model (same joint space)"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.empty(array.shape[0], dtype=bool)
    squares = np.empty(array.shape[0], dtype=np.float64)
    for start in range(0, array.shape[0], CHECK_ROWS):  # in chunks: no [n, d] temporary
        chunk = array[start:start + CHECK_ROWS]
        finite[start:start + CHECK_ROWS] = np.isfinite(chunk).all(axis=1)
        squares[start:start + CHECK_ROWS] = np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64)
    bad = np.flatnonzero(~finite)
    if bad.size:
        raise GalleryError(f"{name} has NaN or infinite entries in {bad.size} row(s): {format_indices(bad)}")
    if unit:
        norms = np.sqrt(squares)
        off = np.flatnonzero(np.abs(norms - 1.0) > UNIT_TOLERANCE)
        if off.size:
            raise GalleryError(
                f"{name} has {off.size} row(s) whose L2 norm is not 1 (rows {format_indices(off)}, "
                f"first norm {norms[off[0]]:.6g}); normalise them first (x / np.linalg.norm(x, axis=1, "
                "keepdims=True)) or pass unit=False if raw inner products are meant"
            )
    return array


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise GalleryError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- top-k search


def _order_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest entries of each row, best first, ties in column order."""
    n = scores.shape[1]
    if k >= n:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, part, axis=1)
    kth = picked.min(axis=1)
    # order the k picked items by (score descending, column ascending)
    order = np.lexsort((part, -picked), axis=1)
    best = np.take_along_axis(part, order, axis=1)
    # argpartition chooses freely among items tied with the k-th score: redo those rows stably
    tied = np.flatnonzero(np.count_nonzero(scores >= kth[:, None], axis=1) > k)
    for row in tied:
        best[row] = np.argsort(-scores[row], kind="stable")[:k]
    return best


def dense_search(queries: Any, gallery: Any, k: int, block_rows: int | None = None,
                 unit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` of every query by NumPy, one ``block_rows x n_gallery`` score block at a time.

    ``block_rows`` defaults to :data:`osgha_lite.metrics.retrieval.BLOCK_ENTRIES` //
    ``n_gallery`` (about 4 M scores per block; with ``argpartition``'s int64
    indices about 64 MB). Returns ``(scores, indices)``, both ``[n_queries,
    k]`` (float32, int64), best first; equal scores keep gallery order.
    """
    gallery = check_vectors(gallery, "gallery", unit=unit)
    queries = check_vectors(queries, "queries", dim=gallery.shape[1], unit=unit)
    if block_rows is None:
        block_rows = max(1, BLOCK_ENTRIES // gallery.shape[0])
    k, block_rows = _positive(k, "k"), _positive(block_rows, "block_rows")
    if k > gallery.shape[0]:
        raise GalleryError(f"k={k} exceeds the gallery size {gallery.shape[0]}")
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], block_rows):
        stop = min(start + block_rows, queries.shape[0])
        block = queries[start:stop] @ gallery.T
        best = _order_top_k(block, k)
        indices[start:stop] = best
        scores[start:stop] = np.take_along_axis(block, best, axis=1)
    return scores, indices


def topk_recall(found: np.ndarray, exact: np.ndarray) -> float:
    r"""Mean over queries of :math:`|A_q \cap E_q| / k`: the share of the exact top k that ``found`` returned."""
    found, exact = np.asarray(found), np.asarray(exact)
    if found.shape != exact.shape or found.ndim != 2:
        raise GalleryError(f"found {found.shape} and exact {exact.shape} must both be [n_queries, k]")
    hits = sum(np.intersect1d(a[a >= 0], b).size for a, b in zip(found, exact))
    return hits / exact.size


@dataclass
class GalleryIndex:
    """A FAISS index over unit gallery rows; :meth:`search` answers queries in blocks.

    Build it with :meth:`build`. ``kind`` is one of :data:`INDEX_KINDS`;
    ``exact`` is True only for ``"flat"``. ``params`` records the settings.
    """

    kind: str
    dim: int
    size: int
    index: Any = field(repr=False)
    params: dict = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    @classmethod
    def build(cls, gallery: Any, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 16,
              hnsw_m: int = 32, ef_search: int = 64, ef_construction: int = 80, seed: int = 0,
              threads: int | None = None, unit: bool = True) -> GalleryIndex:
        """Index ``gallery`` (``[n, d]`` unit rows).

        ``nlist`` (IVF cells) defaults to :math:`\\lceil 4\\sqrt{n} \\rceil`
        capped at ``n // 39`` (FAISS wants about 39 training points per cell);
        the k-means runs on at most :data:`TRAIN_POINTS_PER_CELL` x ``nlist``
        rows sampled with ``seed`` (all rows when fewer). ``threads`` sets FAISS's OpenMP
        threads (default: :data:`osgha_lite.runtime.DEFAULT_THREADS`).
        """
        import faiss

        from osgha_lite.runtime import DEFAULT_THREADS

        if kind not in INDEX_KINDS:
            raise GalleryError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
        faiss.omp_set_num_threads(_positive(threads or DEFAULT_THREADS, "threads"))
        vectors = check_vectors(gallery, "gallery", unit=unit)
        n, dim = vectors.shape
        params: dict = {}
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            nlist = _positive(nlist, "nlist") if nlist is not None else max(1, min(int(np.ceil(4 * np.sqrt(n))), n // 39))
            if nlist > n:
                raise GalleryError(f"nlist={nlist} cells for {n} gallery items; use at most {n}")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(seed)
            index.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
            index.train(vectors)
            index.nprobe = min(_positive(nprobe, "nprobe"), nlist)
            params = {"nlist": nlist, "nprobe": index.nprobe, "seed": int(seed)}
        else:
            index = faiss.IndexHNSWFlat(dim, _positive(hnsw_m, "hnsw_m"), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = _positive(ef_construction, "ef_construction")
            index.hnsw.efSearch = _positive(ef_search, "ef_search")
            params = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        index.add(vectors)
        return cls(kind, dim, n, index, params)

    def set_search_effort(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change ``nprobe`` (IVF) or ``ef_search`` (HNSW) without rebuilding."""
        if nprobe is not None:
            if self.kind != "ivf":
                raise GalleryError(f"nprobe applies to an ivf index, not {self.kind!r}")
            self.index.nprobe = min(_positive(nprobe, "nprobe"), self.params["nlist"])
            self.params["nprobe"] = self.index.nprobe
        if ef_search is not None:
            if self.kind != "hnsw":
                raise GalleryError(f"ef_search applies to an hnsw index, not {self.kind!r}")
            self.index.hnsw.efSearch = _positive(ef_search, "ef_search")
            self.params["ef_search"] = self.index.hnsw.efSearch

    def search(self, queries: Any, k: int, block_rows: int = 4096,
               unit: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` gallery items of every query: ``(scores, indices)``, ``[n_queries, k]``, best first.

        Queries are passed ``block_rows`` at a time. An approximate index may
        find fewer than ``k`` items for a query; the rest are index ``-1``
        with score ``-inf``.
        """
        queries = check_vectors(queries, "queries", dim=self.dim, unit=unit)
        k, block_rows = _positive(k, "k"), _positive(block_rows, "block_rows")
        if k > self.size:
            raise GalleryError(f"k={k} exceeds the gallery size {self.size}")
        scores = np.empty((queries.shape[0], k), dtype=np.float32)
        indices = np.empty((queries.shape[0], k), dtype=np.int64)
        for start in range(0, queries.shape[0], block_rows):
            stop = min(start + block_rows, queries.shape[0])
            scores[start:stop], indices[start:stop] = self.index.search(queries[start:stop], k)
        scores[indices < 0] = -np.inf
        return scores, indices


# --------------------------------------------------------------------------- exact Recall@K in blocks


def score_tile(images: np.ndarray, texts: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Scores of images ``rows`` against texts ``cols``: ``images[rows] @ texts[cols].T`` (float32)."""
    return images[rows] @ texts[cols].T


@dataclass
class _Grid:
    """The validated inputs of a blockwise evaluation, texts in image order."""

    images: np.ndarray
    texts: np.ndarray  # rows sorted by image (stable)
    owner: np.ndarray  # image of each sorted text
    order: np.ndarray  # sorted position -> original text index
    first: np.ndarray  # first[i]: sorted position of image i's first caption (n_images + 1 entries)
    rows: int
    cols: int

    def tiles(self) -> list[slice]:
        """The text columns of every tile of a row band."""
        n_texts = self.texts.shape[0]
        return [slice(c, min(c + self.cols, n_texts)) for c in range(0, n_texts, self.cols)]


def _grid(images: Any, texts: Any, text_to_image: Any, block_rows: int, block_cols: int, unit: bool) -> _Grid:
    images = check_vectors(images, "images", unit=unit)
    texts = check_vectors(texts, "texts", dim=images.shape[1], unit=unit)
    # the mapping checks of metrics.py, on a zero-stride stand-in for the (never built) score matrix
    shape_only = np.broadcast_to(np.zeros((), dtype=np.float32), (images.shape[0], texts.shape[0]))
    _, mapping = validate_retrieval_inputs(shape_only, text_to_image)
    order = np.argsort(mapping, kind="stable")
    if not np.array_equal(order, np.arange(order.size)):
        texts = texts[order]
    first = np.searchsorted(mapping[order], np.arange(images.shape[0] + 1))
    return _Grid(images, texts, mapping[order], order, first,
                 _positive(block_rows, "block_rows"), _positive(block_cols, "block_cols"))


def _thresholds(grid: _Grid) -> np.ndarray:
    """Every (sorted) text's score with its own image, read from the tiles of the main pass."""
    n_images = grid.images.shape[0]
    own = np.empty(grid.texts.shape[0], dtype=np.float32)
    for start in range(0, n_images, grid.rows):
        rows = slice(start, min(start + grid.rows, n_images))
        lo, hi = grid.first[rows.start], grid.first[rows.stop]
        for cols in grid.tiles():
            if cols.stop <= lo or cols.start >= hi:
                continue
            tile = score_tile(grid.images, grid.texts, rows, cols)
            positions = np.arange(max(lo, cols.start), min(hi, cols.stop))
            own[positions] = tile[grid.owner[positions] - start, positions - cols.start]
    return own


def blockwise_query_ranks(images: Any, texts: Any, text_to_image: Any, *, ties: str = "pessimistic",
                          block_rows: int = 256, block_cols: int = 16384, unit: bool = True) -> QueryRanks:
    """1-based ranks of every image query and text query, as :func:`osgha_lite.metrics.retrieval.query_ranks`
    on ``images @ texts.T``, without the matrix (see the module docstring for the tiles and the rule).

    ``images`` ``[n_images, d]``, ``texts`` ``[n_texts, d]`` (unit rows unless
    ``unit=False``), ``text_to_image[t]`` the row of text ``t``'s image. Memory
    beyond the inputs: one ``block_rows x block_cols`` tile at a time.
    """
    ties = validate_ties(ties)
    grid = _grid(images, texts, text_to_image, block_rows, block_cols, unit)
    n_images, n_texts = grid.images.shape[0], grid.texts.shape[0]
    own = _thresholds(grid)
    best = np.maximum.reduceat(own, grid.first[:-1])  # every image has a caption (checked)
    at_best = np.add.reduceat((own == best[grid.owner]).astype(np.int64), grid.first[:-1])

    compare = np.greater_equal if ties == "pessimistic" else np.greater
    image_count = np.zeros(n_images, dtype=np.int64)
    text_count = np.zeros(n_texts, dtype=np.int64)
    mask = np.empty((min(grid.rows, n_images), min(grid.cols, n_texts)), dtype=bool)
    for start in range(0, n_images, grid.rows):
        rows = slice(start, min(start + grid.rows, n_images))
        for cols in grid.tiles():
            tile = score_tile(grid.images, grid.texts, rows, cols)
            out = mask[: tile.shape[0], : tile.shape[1]]
            compare(tile, best[rows, None], out=out)
            image_count[rows] += np.count_nonzero(out, axis=1)
            compare(tile, own[None, cols], out=out)
            text_count[cols] += np.add.reduce(out.view(np.uint8), axis=0, dtype=np.int64)

    if ties == "pessimistic":
        image_ranks, sorted_text_ranks = 1 + image_count - at_best, text_count
    else:
        image_ranks, sorted_text_ranks = 1 + image_count, 1 + text_count
    text_ranks = np.empty(n_texts, dtype=np.int64)
    text_ranks[grid.order] = sorted_text_ranks
    return QueryRanks(image_ranks=image_ranks, text_ranks=text_ranks)


def blockwise_retrieval_metrics(images: Any, texts: Any, text_to_image: Any, ks: Sequence[int] = DEFAULT_KS, *,
                                ties: str = "pessimistic", block_rows: int = 256, block_cols: int = 16384,
                                unit: bool = True) -> dict[str, float]:
    """The dict of :func:`osgha_lite.metrics.retrieval.retrieval_metrics` (R@K both ways, rSum, medr, meanr)
    from embeddings, in blocks: :func:`blockwise_query_ranks` then
    :func:`osgha_lite.metrics.retrieval.metrics_from_ranks`."""
    ks = validate_ks(ks)
    ranks = blockwise_query_ranks(images, texts, text_to_image, ties=ties, block_rows=block_rows,
                                  block_cols=block_cols, unit=unit)
    return metrics_from_ranks(ranks.image_ranks, ranks.text_ranks, ks)


def tiled_scores(images: Any, texts: Any, text_to_image: Any, *, block_rows: int = 256, block_cols: int = 16384,
                 unit: bool = True) -> np.ndarray:
    """The full ``[n_images, n_texts]`` matrix assembled from the tiles the blockwise evaluation computes
    (texts in their original order). For checks at sizes where the matrix fits."""
    grid = _grid(images, texts, text_to_image, block_rows, block_cols, unit)
    n_images, n_texts = grid.images.shape[0], grid.texts.shape[0]
    sims = np.empty((n_images, n_texts), dtype=np.float32)
    for start in range(0, n_images, grid.rows):
        rows = slice(start, min(start + grid.rows, n_images))
        for cols in grid.tiles():
            sims[rows, grid.order[cols]] = score_tile(grid.images, grid.texts, rows, cols)
    return sims

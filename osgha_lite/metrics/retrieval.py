r"""Cross-modal retrieval metrics: Recall@K, rSum, median and mean rank.

Notation
--------
``sims`` is an ``(n_images, n_texts)`` score matrix :math:`S`, higher means
more similar. ``text_to_image`` is the map :math:`g`: text :math:`t` describes
image :math:`g(t)`. Images may have any number (at least one) of captions, in
any order; nothing assumes "captions ``5i .. 5i+4`` belong to image ``i``".
The ground truth is held as an explicit boolean positives matrix, as in
LAION-AI/CLIP_benchmark:

.. math:: P_{it} = [\,g(t) = i\,].

Ranks (1-based) and the tie rule
--------------------------------
Image query :math:`i` (image-to-text, "i2t") searches all texts. Its score is
that of its best caption, :math:`b_i = \max_{t:\,P_{it}} S_{it}`, and

.. math:: r^{\mathrm{i2t}}_i = 1 + \#\{\,t : \neg P_{it},\; S_{it} \ge b_i\,\}.

Text query :math:`t` (text-to-image, "t2i") searches all images and has the
single positive :math:`g(t)`:

.. math:: r^{\mathrm{t2i}}_t = 1 + \#\{\,i \ne g(t) : S_{it} \ge S_{g(t)t}\,\}.

This is the **pessimistic** tie rule (the default, ``ties="pessimistic"``):
a negative whose score *equals* the positive's score is counted as ranked
ahead of it, so a model cannot earn recall by giving many items the same
score (a constant score matrix gives every query the worst rank, not rank 1).
Other captions of the same image never count against an image query.
``ties="optimistic"`` counts only strictly greater scores,
:math:`1 + \#\{t : S_{it} > b_i\}`, the best case of an arbitrary tie order.
Without ties both rules give the ranks that sorting gives. Sorting-based
code (``argsort``/``topk``) breaks ties in an arbitrary, implementation
dependent order, which is why the rule is fixed here.

Metrics (all recalls in percent)
--------------------------------
.. math::

    \mathrm{R@K}_{\mathrm{i2t}} = \frac{100}{n_I} \sum_i [\,r^{\mathrm{i2t}}_i \le K\,],
    \qquad
    \mathrm{R@K}_{\mathrm{t2i}} = \frac{100}{n_T} \sum_t [\,r^{\mathrm{t2i}}_t \le K\,],

    \mathrm{rSum} = \sum_{K \in \{1,5,10\}} \mathrm{R@K}_{\mathrm{i2t}} + \mathrm{R@K}_{\mathrm{t2i}}.

An image query is a hit at K when *any* of its captions is in the top K.
``medr`` is :math:`\lfloor \mathrm{median}(r) \rfloor` (the VSE++/SCAN
convention; for an odd number of queries it is the plain median) and
``meanr`` is the mean of the 1-based ranks.

Memory
------
Ranks are computed in blocks of image rows. A block of ``rows x n_texts``
entries is compared against per-query thresholds and reduced to counts at
once, so besides ``sims`` itself only a few block-sized temporaries live at
any time (about 4 M entries per block by default): 5,000 x 25,000 float32
scores (500 MB) need well under 100 MB more. ``sims`` should be C-ordered
(row blocks are then contiguous); a torch tensor is viewed as NumPy without a
copy when it is a CPU float32/float64 tensor, and copied to the CPU otherwise.

COCO protocols
--------------
``coco_5k_metrics`` evaluates all 5,000 test images and 25,000 captions at
once. ``coco_1k_metrics`` splits the images, in their given order, into 5
consecutive folds of 1,000 images; each fold keeps the captions of its
images, is evaluated alone, and every metric (medr and meanr included) is
the mean over the folds. This is the fold definition of the original VSE++
evaluation code and of the ``eccv-caption`` package (folds of 5,000
consecutive caption ids of the Karpathy test split, whose captions are
grouped by image).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
TIE_RULES: tuple[str, ...] = ("pessimistic", "optimistic")
BLOCK_ENTRIES = 1 << 22  # entries of sims compared per block (about 4 M)
MAX_LISTED = 20  # indices listed in an error message


class QueryRanks(NamedTuple):
    """1-based ranks of every query, computed once against the full gallery.

    ``image_ranks[i]`` is the rank of image query ``i`` among all texts (its
    best caption), ``text_ranks[t]`` the rank of text query ``t`` among all
    images. Both are int64 arrays.
    """

    image_ranks: np.ndarray
    text_ranks: np.ndarray


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


def to_numpy(array: Any, name: str) -> np.ndarray:
    """NumPy view of a NumPy array, torch tensor or nested sequence."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a project dependency
        torch = None
    if torch is not None and isinstance(array, torch.Tensor):
        tensor = array.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        return tensor.cpu().numpy()
    try:
        return np.asarray(array)
    except Exception as error:  # noqa: BLE001 - re-raised with context
        raise TypeError(f"{name} must be an array or tensor, got {type(array).__name__}") from error


def format_indices(indices: np.ndarray) -> str:
    listed = ", ".join(str(int(i)) for i in indices[:MAX_LISTED])
    more = f", ... ({indices.size - MAX_LISTED} more)" if indices.size > MAX_LISTED else ""
    return f"[{listed}{more}]"


def validate_retrieval_inputs(sims: Any, text_to_image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check ``sims`` and ``text_to_image`` and return them as NumPy arrays.

    Returns ``(scores, text_to_image)``: ``scores`` is ``sims`` as a 2-D
    floating array (not copied when it already is one), ``text_to_image`` a
    1-D int64 array. NaN scores are detected later, block by block, by
    :func:`query_ranks`.

    Raises ``ValueError``/``TypeError`` naming the field and what to do when
    ``sims`` is not 2-D or empty, ``text_to_image`` is not a 1-D integer array
    with one entry per column of ``sims``, an index is out of range, or an
    image has no caption.
    """
    scores = to_numpy(sims, "sims")
    if scores.ndim != 2:
        raise ValueError(
            f"sims must be a 2-D (n_images, n_texts) score matrix, got shape {scores.shape}"
        )
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"sims is empty (shape {scores.shape}); need at least one image and one text")
    if scores.dtype.kind in "biu":
        scores = scores.astype(np.float64)
    elif scores.dtype.kind != "f":
        raise TypeError(f"sims must hold real numbers, got dtype {scores.dtype}")

    n_images, n_texts = scores.shape
    mapping = to_numpy(text_to_image, "text_to_image")
    if mapping.ndim != 1:
        raise ValueError(
            f"text_to_image must be 1-D (one image index per text), got shape {mapping.shape}"
        )
    if mapping.size and mapping.dtype.kind not in "iu":
        raise TypeError(
            f"text_to_image must hold integer image indices, got dtype {mapping.dtype}; "
            "convert it with .astype(int) (ids must first be mapped to row indices of sims)"
        )
    if mapping.size != n_texts:
        hint = ""
        if mapping.size == n_images and n_images != n_texts:
            hint = " It matches the number of rows: if sims is (n_texts, n_images), pass sims.T."
        raise ValueError(
            f"text_to_image has {mapping.size} entries but sims has {n_texts} columns (texts); "
            f"sims must be (n_images, n_texts) with text_to_image[t] the row of text t's image.{hint}"
        )
    mapping = mapping.astype(np.int64, copy=False)
    bad = np.flatnonzero((mapping < 0) | (mapping >= n_images))
    if bad.size:
        raise ValueError(
            f"text_to_image has {bad.size} index(es) outside [0, {n_images}) (sims has {n_images} "
            f"rows): texts {format_indices(bad)} -> values {format_indices(mapping[bad])}"
        )
    uncaptioned = np.flatnonzero(np.bincount(mapping, minlength=n_images) == 0)
    if uncaptioned.size:
        raise ValueError(
            f"{uncaptioned.size} image(s) have no caption in text_to_image: image indices "
            f"{format_indices(uncaptioned)}. Image-to-text recall needs at least one caption per "
            "image: drop those rows from sims or fix text_to_image."
        )
    return scores, mapping


def validate_ks(ks: Iterable[int]) -> tuple[int, ...]:
    values = tuple(ks)
    if not values or any(
        isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in values
    ):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"ks has repeated values: {ks!r}")
    return tuple(int(k) for k in values)


def validate_ties(ties: str) -> str:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    return ties


def _rows_per_block(chunk_size: int | None, n_texts: int) -> int:
    if chunk_size is None:
        return max(1, BLOCK_ENTRIES // n_texts)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of image rows, got {chunk_size!r}")
    return int(chunk_size)


# ---------------------------------------------------------------------------
# Ranks
# ---------------------------------------------------------------------------


def query_ranks(
    sims: Any,
    text_to_image: Any,
    *,
    ties: str = "pessimistic",
    chunk_size: int | None = None,
) -> QueryRanks:
    r"""1-based ranks of all image queries and all text queries, in one pass.

    Image query :math:`i`: :math:`r_i = 1 + \#\{t : \neg P_{it}, S_{it} \ge b_i\}`
    with :math:`b_i` the best score among its captions; text query :math:`t`:
    :math:`r_t = 1 + \#\{i \ne g(t) : S_{it} \ge S_{g(t)t}\}` (``ties=
    "optimistic"`` uses :math:`>` instead and counts every item). See the
    module docstring for the tie rule.

    ``chunk_size`` is the number of image rows per block (default: about 4 M
    entries per block). The result does not depend on it.
    """
    ties = validate_ties(ties)
    scores, mapping = validate_retrieval_inputs(sims, text_to_image)
    n_images, n_texts = scores.shape
    rows = _rows_per_block(chunk_size, n_texts)

    # Score of every text with its own image, S[g(t), t] (n_texts values).
    true_text_scores = scores[mapping, np.arange(n_texts)]
    image_ranks = np.empty(n_images, dtype=np.int64)
    texts_ahead = np.zeros(n_texts, dtype=np.int64)
    lowest = -np.inf

    for start in range(0, n_images, rows):
        stop = min(start + rows, n_images)
        block = scores[start:stop]
        if np.isnan(block).any():
            nan_rows = start + np.flatnonzero(np.isnan(block).any(axis=1))
            raise ValueError(
                f"sims contains NaN in {nan_rows.size} row(s) of this block, first rows "
                f"{format_indices(nan_rows)}; check the embeddings for NaN before scoring"
            )
        # Explicit positives of this block: positives[r, t] = (g(t) == start + r).
        positives = mapping[None, :] == np.arange(start, stop)[:, None]
        best_positive = np.where(positives, block, lowest).max(axis=1)
        if ties == "pessimistic":
            image_ahead = (block >= best_positive[:, None]) & ~positives
            text_ahead = (block >= true_text_scores[None, :]) & ~positives
        else:
            image_ahead = block > best_positive[:, None]
            text_ahead = block > true_text_scores[None, :]
        image_ranks[start:stop] = 1 + np.count_nonzero(image_ahead, axis=1)
        texts_ahead += np.count_nonzero(text_ahead, axis=0)

    return QueryRanks(image_ranks=image_ranks, text_ranks=1 + texts_ahead)


def image_query_ranks(
    sims: Any, text_to_image: Any, *, ties: str = "pessimistic", chunk_size: int | None = None
) -> np.ndarray:
    """1-based rank of each image query's best caption among all texts (``n_images`` ints).

    Runs the same pass as :func:`query_ranks`; call that when both directions are needed.
    """
    return query_ranks(sims, text_to_image, ties=ties, chunk_size=chunk_size).image_ranks


def text_query_ranks(
    sims: Any, text_to_image: Any, *, ties: str = "pessimistic", chunk_size: int | None = None
) -> np.ndarray:
    """1-based rank of each text query's image among all images (``n_texts`` ints).

    Runs the same pass as :func:`query_ranks`; call that when both directions are needed.
    """
    return query_ranks(sims, text_to_image, ties=ties, chunk_size=chunk_size).text_ranks


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Keys of :func:`retrieval_metrics`, in order, for the given ``ks``."""
    ks = validate_ks(ks)
    recalls = [f"{direction}_R@{k}" for direction in ("i2t", "t2i") for k in ks]
    return [*recalls, "rsum", "i2t_medr", "i2t_meanr", "t2i_medr", "t2i_meanr"]


def floor_median(ranks: np.ndarray) -> float:
    """:math:`\\lfloor \\mathrm{median}(r) \\rfloor` of 1-based ranks (VSE++ ``medr``)."""
    return float(np.floor(np.median(ranks)))


def metrics_from_ranks(
    image_ranks: np.ndarray, text_ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    r"""Recall@K (percent), rSum, medr and meanr from 1-based query ranks.

    :math:`\mathrm{R@K} = 100 \cdot \#\{q : r_q \le K\} / n_q` per direction,
    ``rsum`` the sum of all recalls of both directions, ``medr`` the floored
    median and ``meanr`` the mean rank. Values are plain Python floats.
    """
    ks = validate_ks(ks)
    image_ranks = np.asarray(image_ranks)
    text_ranks = np.asarray(text_ranks)
    if image_ranks.size == 0 or text_ranks.size == 0:
        raise ValueError("need at least one image query and one text query")
    result: dict[str, float] = {}
    for direction, ranks in (("i2t", image_ranks), ("t2i", text_ranks)):
        for k in ks:
            result[f"{direction}_R@{k}"] = 100.0 * np.count_nonzero(ranks <= k) / ranks.size
    result["rsum"] = float(sum(result.values()))
    result = {name: float(value) for name, value in result.items()}
    result["i2t_medr"] = floor_median(image_ranks)
    result["i2t_meanr"] = float(image_ranks.mean())
    result["t2i_medr"] = floor_median(text_ranks)
    result["t2i_meanr"] = float(text_ranks.mean())
    return result


def retrieval_metrics(
    sims: Any,
    text_to_image: Any,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int | None = None,
    *,
    ties: str = "pessimistic",
) -> dict[str, float]:
    r"""Image-to-text and text-to-image retrieval metrics of a score matrix.

    Parameters
    ----------
    sims:
        ``(n_images, n_texts)`` scores (NumPy array or torch tensor), higher
        is more similar, e.g. cosine similarities of L2-normalized embeddings.
    text_to_image:
        ``n_texts`` integers, ``text_to_image[t]`` is the row of ``sims``
        holding text ``t``'s image. Captions per image may vary (at least 1).
    ks:
        The K of Recall@K (default 1, 5, 10).
    chunk_size:
        Image rows scored per block (default: about 4 M entries per block);
        bounds the extra memory, never changes the result.
    ties:
        ``"pessimistic"`` (default): negatives tied with the positive count
        as ranked ahead of it; ``"optimistic"``: they do not.

    Returns
    -------
    dict
        ``i2t_R@K`` and ``t2i_R@K`` for every K (percent), ``rsum`` (their
        sum), ``i2t_medr``, ``i2t_meanr``, ``t2i_medr``, ``t2i_meanr``
        (1-based ranks). With
        :math:`r^{\mathrm{i2t}}_i = 1 + \#\{t : \neg P_{it}, S_{it} \ge \max_{t': P_{it'}} S_{it'}\}`
        and :math:`r^{\mathrm{t2i}}_t = 1 + \#\{i \ne g(t) : S_{it} \ge S_{g(t)t}\}`,
        :math:`\mathrm{R@K} = 100 \cdot \mathrm{mean}[r \le K]`.
    """
    ks = validate_ks(ks)
    ranks = query_ranks(sims, text_to_image, ties=ties, chunk_size=chunk_size)
    return metrics_from_ranks(ranks.image_ranks, ranks.text_ranks, ks)


def coco_5k_metrics(
    sims: Any,
    text_to_image: Any,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int | None = None,
    *,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """COCO 5K protocol: :func:`retrieval_metrics` over all images and captions at once."""
    return retrieval_metrics(sims, text_to_image, ks=ks, chunk_size=chunk_size, ties=ties)


def fold_slices(n_images: int, n_folds: int) -> list[slice]:
    """Consecutive, equal image folds ``[f*m, (f+1)*m)`` with ``m = n_images / n_folds``."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ValueError(f"n_folds must be a positive integer, got {n_folds!r}")
    if n_images % n_folds:
        raise ValueError(
            f"{n_images} images cannot be split into {n_folds} equal folds; the COCO 1K protocol "
            "needs the 5,000 test images (5 folds of 1,000)"
        )
    size = n_images // n_folds
    return [slice(fold * size, (fold + 1) * size) for fold in range(n_folds)]


def coco_1k_metrics(
    sims: Any,
    text_to_image: Any,
    n_folds: int = 5,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int | None = None,
    *,
    ties: str = "pessimistic",
) -> dict[str, float]:
    r"""COCO 1K protocol: mean of the metrics of ``n_folds`` consecutive image folds.

    The images are split, in row order, into ``n_folds`` folds of
    :math:`m = n_I / n_{\mathrm{folds}}` images (1,000 for COCO 5K). Fold
    :math:`f` keeps images :math:`[fm, (f+1)m)` and exactly the texts whose
    image is among them (in their original order); it is evaluated alone with
    :func:`retrieval_metrics`. Every returned value, ``rsum``, ``medr`` and
    ``meanr`` included, is the unweighted mean over the folds.
    """
    ks = validate_ks(ks)
    scores, mapping = validate_retrieval_inputs(sims, text_to_image)
    per_fold = []
    for images in fold_slices(scores.shape[0], n_folds):
        texts = np.flatnonzero((mapping >= images.start) & (mapping < images.stop))
        fold_scores = scores[images][:, texts]
        per_fold.append(
            retrieval_metrics(
                fold_scores, mapping[texts] - images.start, ks=ks, chunk_size=chunk_size, ties=ties
            )
        )
    return {name: float(np.mean([fold[name] for fold in per_fold])) for name in per_fold[0]}

r"""Bootstrap confidence intervals for retrieval metrics and per-item means.

What is resampled
-----------------
The unit of resampling is the **image**: a draw picks :math:`n_I` images with
replacement, and each drawn image brings all of its captions (as text
queries) along. The captions of one image are not independent samples: they
describe the same picture, share its difficulty and are usually all hit or
all missed together. Resampling captions one by one would treat 25,000
correlated text queries as 25,000 independent ones and give intervals that
are too narrow; resampling images keeps each cluster of captions whole
(a cluster bootstrap).

The gallery is kept fixed
-------------------------
A rank depends on the gallery as well as on the query: if a draw repeats an
image, that image's captions would appear twice in the text gallery, and a
missing image would leave the image gallery. Re-ranking every draw against
its own gallery would cost a full evaluation per draw. Like most retrieval
studies we use the standard cheap approximation: ranks are computed **once**
against the full, fixed gallery (:func:`osgha_lite.metrics.retrieval.query_ranks`) and
only the *queries* are resampled. The interval therefore describes the
uncertainty due to the choice of queries at the evaluated gallery size,
which is the quantity a reported R@K refers to.

How a draw is evaluated
-----------------------
A draw is a vector of multiplicities :math:`w \in \mathbb{N}^{n_I}`,
:math:`\sum_i w_i = n_I`. With :math:`h_i = [r^{\mathrm{i2t}}_i \le K]`, the
caption count :math:`c_i` and the caption hits
:math:`H_i = \sum_{t:\,g(t)=i} [r^{\mathrm{t2i}}_t \le K]` of image :math:`i`:

.. math::

    \mathrm{R@K}^{*}_{\mathrm{i2t}} = 100\,\frac{\sum_i w_i h_i}{\sum_i w_i},
    \qquad
    \mathrm{R@K}^{*}_{\mathrm{t2i}} = 100\,\frac{\sum_i w_i H_i}{\sum_i w_i c_i},

and likewise for the mean ranks; medians are weighted medians (floored, as
in :func:`osgha_lite.metrics.retrieval.metrics_from_ranks`). These are exactly the
metrics of the explicitly resampled query set, computed with a few matrix
products per batch of draws instead of re-scoring.

The interval
------------
Percentile bootstrap: with :math:`B` draws of a statistic :math:`\theta^{*}`,
the :math:`1-\alpha` interval is the :math:`\alpha/2` and
:math:`1-\alpha/2` empirical quantiles of :math:`\theta^{*}_1..\theta^{*}_B`
(linear interpolation). The point estimate is the statistic on the original
data. :func:`bootstrap_difference` evaluates two systems on the *same* draws
(paired bootstrap), so the interval of :math:`\theta_a - \theta_b` accounts for
the correlation between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from osgha_lite.metrics.retrieval import (
    DEFAULT_KS,
    QueryRanks,
    to_numpy,
    validate_ks,
    metric_names,
    metrics_from_ranks,
    query_ranks,
    validate_retrieval_inputs,
)
from osgha_lite.runtime import DEFAULT_SEED, generator, progress_bar

DRAW_ENTRIES = 1 << 21  # entries of one batch of draws (draws x items), about 2 M


class ConfidenceInterval(NamedTuple):
    """Point estimate and percentile interval ``[low, high]`` (plain floats)."""

    point: float
    low: float
    high: float


def _validate_bootstrap_args(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), e.g. 0.05 for a 95% interval, got {alpha!r}")


def _draw_batches(
    n_items: int, n_boot: int, seed: int, width: int, progress: bool, desc: str
):
    """Yield ``(b, n_items)`` multiplicity matrices of resamples, ``n_boot`` rows in all.

    Each row counts how often every item was drawn in ``n_items`` draws with
    replacement. Batches are sized so that ``b * width`` stays near
    ``DRAW_ENTRIES``; the batch size depends only on the data shape, so a seed
    always gives the same draws.
    """
    rng = generator(seed)
    batch = max(1, min(n_boot, DRAW_ENTRIES // max(width, 1)))
    with progress_bar(total=n_boot, desc=desc, disable=not progress, unit="draw", leave=False) as bar:
        for start in range(0, n_boot, batch):
            size = min(batch, n_boot - start)
            picks = rng.integers(0, n_items, size=(size, n_items))
            picks += (np.arange(size) * n_items)[:, None]
            counts = np.bincount(picks.ravel(), minlength=size * n_items)
            yield counts.reshape(size, n_items)
            bar.update(size)


def _weighted_floor_median(sorted_values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    r"""Floored median of ``sorted_values`` repeated ``weights[d]`` times, per row ``d``.

    For a multiset of :math:`N` values sorted ascending, the median is the
    mean of the elements at 1-based positions :math:`\lceil N/2 \rceil` and
    :math:`\lfloor N/2 \rfloor + 1` (the same one when :math:`N` is odd).
    """
    cumulative = np.cumsum(weights, axis=1)
    total = cumulative[:, -1]
    lower_position = (total + 1) // 2
    upper_position = total // 2 + 1
    lower = sorted_values[np.count_nonzero(cumulative < lower_position[:, None], axis=1)]
    upper = sorted_values[np.count_nonzero(cumulative < upper_position[:, None], axis=1)]
    return np.floor((lower + upper) / 2.0)


class _RankSummary:
    """Per-image sufficient statistics of the query ranks, for weighted metrics."""

    def __init__(self, ranks: QueryRanks, text_to_image: np.ndarray, ks: tuple[int, ...]):
        n_images = ranks.image_ranks.size
        image_ranks = ranks.image_ranks
        text_ranks = ranks.text_ranks
        self.ks = ks
        self.names = metric_names(ks)
        self.n_images = n_images
        self.n_texts = text_ranks.size
        self.image_hits = np.stack([(image_ranks <= k) for k in ks], axis=1).astype(np.float64)
        self.image_rank = image_ranks.astype(np.float64)
        self.captions = np.bincount(text_to_image, minlength=n_images).astype(np.float64)
        self.caption_hits = np.stack(
            [np.bincount(text_to_image, weights=(text_ranks <= k), minlength=n_images) for k in ks],
            axis=1,
        )
        self.caption_rank_sum = np.bincount(
            text_to_image, weights=text_ranks.astype(np.float64), minlength=n_images
        )
        image_order = np.argsort(image_ranks, kind="stable")
        self.image_sorted_ranks = image_ranks[image_order].astype(np.float64)
        self.image_sort_order = image_order
        text_order = np.argsort(text_ranks, kind="stable")
        self.text_sorted_ranks = text_ranks[text_order].astype(np.float64)
        self.text_sorted_images = text_to_image[text_order]

    def weighted_metrics(self, weights: np.ndarray) -> np.ndarray:
        """``(b, n_metrics)`` metrics, columns in ``self.names`` order, for ``(b, n_images)`` weights."""
        weights = weights.astype(np.float64, copy=False)
        image_total = weights.sum(axis=1, keepdims=True)
        text_total = weights @ self.captions
        i2t_recall = 100.0 * (weights @ self.image_hits) / image_total
        t2i_recall = 100.0 * (weights @ self.caption_hits) / text_total[:, None]
        recall_sum = i2t_recall.sum(axis=1) + t2i_recall.sum(axis=1)
        i2t_medr = _weighted_floor_median(self.image_sorted_ranks, weights[:, self.image_sort_order])
        i2t_meanr = (weights @ self.image_rank) / image_total[:, 0]
        t2i_medr = _weighted_floor_median(self.text_sorted_ranks, weights[:, self.text_sorted_images])
        t2i_meanr = (weights @ self.caption_rank_sum) / text_total
        return np.column_stack(
            [i2t_recall, t2i_recall, recall_sum, i2t_medr, i2t_meanr, t2i_medr, t2i_meanr]
        )


def _interval(point: float, draws: np.ndarray, alpha: float) -> ConfidenceInterval:
    low, high = np.quantile(draws, [alpha / 2.0, 1.0 - alpha / 2.0])
    return ConfidenceInterval(float(point), float(low), float(high))


def _bootstrap_systems(
    systems: Sequence[QueryRanks],
    mapping: np.ndarray,
    n_boot: int,
    seed: int,
    alpha: float,
    ks: tuple[int, ...],
    progress: bool,
    combine,
) -> dict[str, ConfidenceInterval]:
    """Shared loop: one set of image draws, every system evaluated on each draw."""
    summaries = [_RankSummary(ranks, mapping, ks) for ranks in systems]
    names = summaries[0].names
    points = [metrics_from_ranks(ranks.image_ranks, ranks.text_ranks, ks) for ranks in systems]
    point = combine([np.array([p[name] for name in names]) for p in points])
    draws = []
    width = max(summaries[0].n_images, summaries[0].n_texts)
    for weights in _draw_batches(
        summaries[0].n_images, n_boot, seed, width, progress, "bootstrap"
    ):
        draws.append(combine([summary.weighted_metrics(weights) for summary in summaries]))
    stacked = np.concatenate(draws, axis=0)
    return {
        name: _interval(point[column], stacked[:, column], alpha) for column, name in enumerate(names)
    }


def bootstrap_from_ranks(
    ranks: QueryRanks,
    text_to_image: Any,
    n_boot: int = 1000,
    seed: int = DEFAULT_SEED,
    alpha: float = 0.05,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = False,
) -> dict[str, ConfidenceInterval]:
    """Image-resampling bootstrap intervals from precomputed :class:`QueryRanks`.

    Same result as :func:`bootstrap_metrics` on the matrix the ranks came
    from; use it when the ranks are already at hand.
    """
    _validate_bootstrap_args(n_boot, alpha)
    ks = validate_ks(ks)
    mapping = _validate_rank_mapping(ranks, text_to_image)
    return _bootstrap_systems([ranks], mapping, n_boot, seed, alpha, ks, progress, lambda v: v[0])


def _validate_rank_mapping(ranks: QueryRanks, text_to_image: Any) -> np.ndarray:
    mapping = to_numpy(text_to_image, "text_to_image")
    if mapping.ndim != 1 or mapping.size != ranks.text_ranks.size or mapping.dtype.kind not in "iu":
        raise ValueError(
            f"text_to_image must be 1-D integers with one entry per text query "
            f"({ranks.text_ranks.size}), got shape {mapping.shape} dtype {mapping.dtype}"
        )
    mapping = mapping.astype(np.int64, copy=False)
    if mapping.size and (mapping.min() < 0 or mapping.max() >= ranks.image_ranks.size):
        raise ValueError(f"text_to_image values must lie in [0, {ranks.image_ranks.size})")
    return mapping


def bootstrap_metrics(
    sims: Any,
    text_to_image: Any,
    n_boot: int = 1000,
    seed: int = DEFAULT_SEED,
    alpha: float = 0.05,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "pessimistic",
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict[str, ConfidenceInterval]:
    r"""Percentile bootstrap intervals of every :func:`~osgha_lite.metrics.retrieval.retrieval_metrics` value.

    Image queries are resampled with replacement, each with all its captions;
    ranks are computed once against the fixed full gallery (module
    docstring). Returns ``metric -> ConfidenceInterval(point, low, high)``,
    a named tuple, with ``point`` equal to ``retrieval_metrics(sims,
    text_to_image)[metric]`` and ``[low, high]`` the :math:`\alpha/2` and
    :math:`1-\alpha/2` quantiles of ``n_boot`` resampled values.
    """
    _validate_bootstrap_args(n_boot, alpha)
    ks = validate_ks(ks)
    scores, mapping = validate_retrieval_inputs(sims, text_to_image)
    ranks = query_ranks(scores, mapping, ties=ties, chunk_size=chunk_size)
    return _bootstrap_systems([ranks], mapping, n_boot, seed, alpha, ks, progress, lambda v: v[0])


def bootstrap_difference(
    sims_a: Any,
    sims_b: Any,
    text_to_image: Any,
    n_boot: int = 1000,
    seed: int = DEFAULT_SEED,
    alpha: float = 0.05,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "pessimistic",
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict[str, ConfidenceInterval]:
    r"""Paired bootstrap interval of :math:`\theta(a) - \theta(b)` for every metric.

    Both score matrices (same images, same texts, same ``text_to_image``)
    are evaluated on the same image draws, so the interval reflects how the
    two systems differ on the same queries. An interval that excludes 0 means
    the difference is significant at level ``alpha`` (two-sided, under the
    fixed-gallery approximation). ``point`` is ``metric(a) - metric(b)``.
    """
    _validate_bootstrap_args(n_boot, alpha)
    ks = validate_ks(ks)
    scores_a, mapping = validate_retrieval_inputs(sims_a, text_to_image)
    scores_b = to_numpy(sims_b, "sims_b")
    if scores_a.shape != scores_b.shape:
        raise ValueError(
            f"sims_a {scores_a.shape} and sims_b {scores_b.shape} must score the same images and texts"
        )
    scores_b, _ = validate_retrieval_inputs(scores_b, mapping)
    ranks_a = query_ranks(scores_a, mapping, ties=ties, chunk_size=chunk_size)
    ranks_b = query_ranks(scores_b, mapping, ties=ties, chunk_size=chunk_size)
    return _bootstrap_systems(
        [ranks_a, ranks_b], mapping, n_boot, seed, alpha, ks, progress, lambda v: v[0] - v[1]
    )


def bootstrap_mean_ci(
    values: Any,
    n_boot: int = 1000,
    seed: int = DEFAULT_SEED,
    alpha: float = 0.05,
    *,
    groups: Any = None,
    progress: bool = False,
) -> ConfidenceInterval:
    r"""Percentile bootstrap interval of the mean of per-item values.

    Without ``groups``, items are resampled independently:
    :math:`\bar v^{*} = \frac1n \sum_j w_j v_j`. With ``groups`` (one integer
    per item, e.g. ``text_to_image`` for per-caption values), whole groups
    are resampled with replacement and the statistic is the mean over all
    items of the drawn groups,
    :math:`\sum_g w_g S_g / \sum_g w_g n_g` with :math:`S_g` and :math:`n_g`
    the sum and size of group :math:`g` (the cluster bootstrap used for the
    retrieval metrics). ``point`` is the plain mean of ``values``.
    """
    _validate_bootstrap_args(n_boot, alpha)
    data = to_numpy(values, "values").astype(np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        bad = np.flatnonzero(~np.isfinite(data))
        raise ValueError(f"values has {bad.size} non-finite entries, first at index {int(bad[0])}")
    if groups is None:
        sums, sizes = data, np.ones_like(data)
    else:
        labels = to_numpy(groups, "groups")
        if labels.shape != data.shape or labels.dtype.kind not in "iu":
            raise ValueError(
                f"groups must be integers with one entry per value ({data.size}), "
                f"got shape {labels.shape} dtype {labels.dtype}"
            )
        _, labels = np.unique(labels, return_inverse=True)
        sums = np.bincount(labels, weights=data)
        sizes = np.bincount(labels).astype(np.float64)
    point = float(data.mean())
    draws = []
    for weights in _draw_batches(sums.size, n_boot, seed, sums.size, progress, "bootstrap mean"):
        weights = weights.astype(np.float64)
        draws.append((weights @ sums) / (weights @ sizes))
    return _interval(point, np.concatenate(draws), alpha)

r"""The entropy report of notebook 02: every measure of :mod:`~osgha_lite.metrics.entropy` on one split,
with its 95% interval, as rows of one table.

:mod:`osgha_lite.metrics.entropy` holds the estimators; this module applies
them to a test split (images, captions, and the captions' LLM descriptions,
all embedded in one shared space) and attaches an interval to each value.
Everything is a function of arrays (no data loading, no backbone), so the
notebook passes in what it loaded and embedded.

The rows
--------
An :class:`EntropyTable` collects one row per ``(measure, side)``: the
value, its interval ``low``/``high``, the number of items ``n`` it was
computed on and the measure's maximum where it has one. The sides are
``images``, ``captions``, ``captions+descriptions`` and the differences
``captions - images``, ``captions+descriptions - images`` and
``captions+descriptions - captions``. A value that cannot be computed (no
descriptions) is a row of NaN with ``n = 0``, never a substitute.

The intervals
-------------
* **Means of per-item values** (per-image lexical entropy, per-query
  retrieval entropy, per-point kNN terms):
  :func:`osgha_lite.metrics.bootstrap.bootstrap_mean_ci`, resampling
  images; per-caption values are resampled with their image
  (``groups=text_to_image``).
* **Set-level values** (spectral entropy, effective rank):
  :func:`bootstrap_rows` recomputes the statistic on :math:`B` seeded
  resamples :math:`r^{*}_1..r^{*}_B` of the rows. A resample repeats about
  a third of the rows (:math:`1 - (1 - 1/n)^n \approx 1 - 1/e` distinct),
  and repeated rows lower the spectral entropy of *every* draw; the draws
  are therefore recentred on the point estimate :math:`\hat\theta`,

  .. math::

      \tilde\theta^{*}_b = \theta^{*}_b - \overline{\theta^{*}} + \hat\theta ,

  before the :math:`\alpha/2` and :math:`1 - \alpha/2` quantiles are taken,
  so that the interval shows the sampling spread and not that artefact.
* **Differences** are computed on the *same* draws (a paired bootstrap).

The embedded sets
-----------------
The embedding measures compare sets of equal size :math:`n`: the images,
**one caption per image** (:func:`one_caption_per_image`) and the same
captions **+ descriptions**, fused as the L2-normalised mean
(:func:`fuse_descriptions`)

.. math::

    t^{+} = \frac{t + \sum_{k=1}^{K} e_k}{\lVert t + \sum_{k=1}^{K} e_k \rVert}.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from osgha_lite.metrics.bootstrap import ConfidenceInterval, bootstrap_mean_ci
from osgha_lite.metrics.entropy import (
    LexicalEntropyTable,
    RetrievalEntropy,
    bidirectional_retrieval_entropy,
    fixed_projection,
    projected_knn_entropy,
    spectral_entropy,
    tokenize,
)
from osgha_lite.runtime import generator

__all__ = [
    "DescriptionCoverage",
    "description_coverage",
    "EntropyTable",
    "bootstrap_rows",
    "caption_token_budget",
    "lexical_rows",
    "one_caption_per_image",
    "fuse_descriptions",
    "knn_point_bits",
    "spectral_intervals",
    "spectral_rows",
    "knn_rows",
    "learned_temperature",
    "image_minus_caption",
    "retrieval_rows",
    "entropy_record",
    "verdict",
    "entropy_verdicts",
]

DESCRIBED = "captions+descriptions"
DIFFERENCES = ("captions - images", "captions+descriptions - images", "captions+descriptions - captions")


# ---------------------------------------------------------------------------
# Which captions and images have descriptions
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DescriptionCoverage:
    """Which captions and images have LLM descriptions.

    Attributes
    ----------
    caption_described:
        Shape ``(n_texts,)``: caption ``t`` has at least one description.
    image_described:
        Shape ``(n_images,)``: *every* caption of the image has one.
    described_images:
        The indices of the described images (``flatnonzero(image_described)``).
    summary:
        The coverage as written to the result file: the share of captions
        with descriptions, the share of fully described images, the mean
        number of descriptions of a described caption and the maximum used.
    """

    caption_described: np.ndarray
    image_described: np.ndarray
    described_images: np.ndarray
    summary: dict[str, float]

    @property
    def any(self) -> bool:
        """At least one image has all its captions described."""
        return self.described_images.size > 0


def description_coverage(description_mask: np.ndarray, text_to_image: np.ndarray, n_images: int,
                         max_descriptions: int) -> DescriptionCoverage:
    """The coverage of a split's descriptions from the ``(n_texts, K)`` slot mask of its embedded descriptions.

    ``description_mask[t, k]`` says that slot ``k`` of caption ``t`` holds a
    description; ``text_to_image[t]`` is the image of caption ``t``.
    """
    mask = np.asarray(description_mask, dtype=bool)
    caption_described = mask.any(axis=1)
    per_image = np.bincount(text_to_image, minlength=n_images)
    image_described = np.bincount(text_to_image, weights=caption_described, minlength=n_images) == per_image
    summary = {
        "captions": float(caption_described.mean()),
        "images_fully_described": float(image_described.mean()),
        "descriptions_per_described_caption": float(mask.sum(1)[caption_described].mean())
        if caption_described.any() else 0.0,
        "max_descriptions": int(max_descriptions),
    }
    return DescriptionCoverage(caption_described, image_described, np.flatnonzero(image_described), summary)


# ---------------------------------------------------------------------------
# The table and its intervals
# ---------------------------------------------------------------------------


@dataclass
class EntropyTable:
    """The rows of the entropy table, and the bootstrap settings every row shares.

    ``n_boot_items`` draws for means of per-item values
    (:meth:`mean_ci`), ``n_boot_sets`` for set-level statistics
    (:func:`bootstrap_rows`, one eigendecomposition per draw), all seeded
    with ``seed``.
    """

    n_boot_items: int
    n_boot_sets: int
    seed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, measure: str, side: str, ci: ConfidenceInterval | None = None, *, n: int = 0,
               maximum: float = np.nan) -> None:
        """Append one row; ``ci`` is a ConfidenceInterval, or None for an unavailable value (NaN, ``n = 0``)."""
        point, low, high = ci if ci is not None else (np.nan, np.nan, np.nan)
        self.rows.append({"measure": measure, "side": side, "value": point, "low": low, "high": high,
                          "n": int(n) if ci is not None else 0, "max": maximum})

    def mean_ci(self, values: np.ndarray, groups: np.ndarray | None = None) -> ConfidenceInterval:
        """Bootstrap interval of the mean of per-item values (images resampled, captions with their image)."""
        return bootstrap_mean_ci(values, self.n_boot_items, self.seed, groups=groups)

    def row(self, measure: str, side: str) -> dict[str, Any]:
        """The row of ``(measure, side)`` (the first, if recorded twice)."""
        for row in self.rows:
            if row["measure"] == measure and row["side"] == side:
                return row
        raise KeyError(f"no row ({measure!r}, {side!r})")

    def measures(self, *prefixes: str) -> list[dict[str, Any]]:
        """The rows whose measure starts with one of ``prefixes``, in order."""
        return [row for row in self.rows if row["measure"].startswith(prefixes)]


def bootstrap_rows(statistic: Callable[[np.ndarray], Sequence[float]], n_rows: int, n_boot: int = 200,
                   seed: int = 0, alpha: float = 0.05) -> list[ConfidenceInterval]:
    r"""Recentred percentile intervals of a set-level ``statistic(row_indices) -> values``.

    The point estimate :math:`\hat\theta = \theta(0..n-1)` uses every row;
    each of ``n_boot`` seeded draws resamples ``n_rows`` rows with
    replacement (``osgha_lite.runtime.generator(seed).integers``). All values
    of one call share the draws, so differences returned by ``statistic``
    are paired. The draws are recentred on the point estimate,
    :math:`\tilde\theta^{*}_b = \theta^{*}_b - \overline{\theta^{*}} + \hat\theta`,
    and the interval is the :math:`\alpha/2`, :math:`1 - \alpha/2` quantiles
    of :math:`\tilde\theta^{*}` (see the module docstring for why).
    """
    point = np.asarray(statistic(np.arange(n_rows)), dtype=np.float64)
    rng = generator(seed)
    draws = np.array([statistic(rng.integers(0, n_rows, n_rows)) for _ in range(n_boot)])
    draws = draws - draws.mean(axis=0) + point  # recentre: repeated rows shift every draw
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return [ConfidenceInterval(float(p), float(lo), float(hi)) for p, lo, hi in zip(point, low, high)]


# ---------------------------------------------------------------------------
# 1. Lexical entropy
# ---------------------------------------------------------------------------

LEXICAL_MEASURES = (("lexical_plugin_bits", "plugin_bits"), ("lexical_miller_madow_bits", "miller_madow_bits"),
                    ("lexical_rarefied_bits", "rarefied_bits"), ("lexical_tokens", "n_tokens"))


def caption_token_budget(captions: Sequence[str], text_to_image: np.ndarray, n_images: int) -> int:
    """The rarefaction budget :math:`B`: the smallest number of caption word tokens of any image."""
    tokens = np.bincount(text_to_image, weights=[len(tokenize(c)) for c in captions], minlength=n_images)
    return int(tokens.min())


def lexical_rows(table: EntropyTable, captions: LexicalEntropyTable, described: LexicalEntropyTable | None,
                 described_images: np.ndarray) -> None:
    """Record the plug-in, Miller-Madow, rarefied and token-count rows of the lexical entropy per image.

    For each measure: the mean over all images of the captions-only bags,
    the mean over ``described_images`` of the bags with descriptions, and the
    mean per-image gain on those images (a paired difference). ``described``
    is None (or ``described_images`` empty) when there are no descriptions:
    the last two rows are then unavailable.
    """
    has = described is not None and described_images.size > 0
    for measure, attribute in LEXICAL_MEASURES:
        before = getattr(captions, attribute).astype(np.float64)
        table.record(measure, "captions", table.mean_ci(before), n=before.size)
        if has:
            after = getattr(described, attribute).astype(np.float64)[described_images]
            table.record(measure, DESCRIBED, table.mean_ci(after), n=described_images.size)
            table.record(measure, DIFFERENCES[2], table.mean_ci(after - before[described_images]),
                         n=described_images.size)
        else:
            table.record(measure, DESCRIBED)
            table.record(measure, DIFFERENCES[2])


# ---------------------------------------------------------------------------
# 2. Embedding space
# ---------------------------------------------------------------------------


def one_caption_per_image(captions: Sequence[str], text_to_image: np.ndarray, n_images: int,
                          seed: int = 0) -> np.ndarray:
    """One caption index per image, a seeded choice among the image's captions whose text is unique in the split.

    Unique texts keep duplicate points out of the kNN estimate (identical
    captions embed to identical vectors). Raises ``ValueError`` when an
    image has no caption with a unique text.
    """
    text_counts = Counter(captions)
    candidates: list[list[int]] = [[] for _ in range(n_images)]
    for j, (caption, image) in enumerate(zip(captions, text_to_image)):
        if text_counts[caption] == 1:
            candidates[image].append(j)
    lacking = [i for i, c in enumerate(candidates) if not c]
    if lacking:
        raise ValueError(f"images {lacking[:5]} have no caption with a unique text; one caption per image is needed")
    rng = generator(seed)
    return np.array([rng.choice(c) for c in candidates])


def fuse_descriptions(texts: np.ndarray, descriptions: np.ndarray, mask: np.ndarray,
                      eps: float = 1e-12) -> np.ndarray:
    r"""Each caption fused with its descriptions: :math:`t^{+} = (t + \sum_k e_k) / \lVert t + \sum_k e_k \rVert`.

    ``texts`` is ``(n_texts, d)``, ``descriptions`` ``(n_texts, K, d)`` with
    zero rows in the empty slots and ``mask`` ``(n_texts, K)``. The sum is
    divided by :math:`1 + \#\{k\}` first (the mean; the normalisation makes
    the division immaterial up to rounding); the result is float32 with unit
    rows. A caption without descriptions is only renormalised.
    """
    counts = 1.0 + np.asarray(mask).sum(axis=1, keepdims=True)
    mean = np.asarray((texts + descriptions.sum(axis=1)) / counts, dtype=np.float32)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), eps)


def knn_point_bits(X: np.ndarray, dim_out: int = 16, k: int = 3, seed: int = 0) -> np.ndarray:
    r"""Per-point Kozachenko-Leonenko terms (bits); their mean is ``projected_knn_entropy(X, dim_out, k, seed=seed)``.

    With :math:`r_i` the distance from :math:`Px_i` to its :math:`k`-th
    nearest neighbour after the fixed projection :math:`P`
    (:func:`~osgha_lite.metrics.entropy.fixed_projection`) and :math:`h` the
    estimate,

    .. math::

        h_i = h + \frac{d_{\mathrm{out}}}{\ln 2}\,(\ln r_i - \overline{\ln r}),

    so that :math:`\frac1n \sum_i h_i = h`. Bootstrapping the mean of the
    :math:`h_i` holds the neighbours fixed (resampling points with
    replacement would create duplicates, for which the estimator is
    undefined). Duplicate rows raise ``ValueError``.
    """
    total = projected_knn_entropy(X, dim_out, k, seed=seed, duplicates="error")
    data = np.asarray(X, dtype=np.float64)
    Z = data @ fixed_projection(data.shape[1], dim_out, seed)
    log_radii = np.log(cKDTree(Z).query(Z, k=k + 1)[0][:, k])
    return total + dim_out * (log_radii - log_radii.mean()) / math.log(2)


def spectral_intervals(images: np.ndarray, captions: np.ndarray, described: np.ndarray | None = None, *,
                       rows: np.ndarray | None = None, n_boot: int = 200,
                       seed: int = 0) -> dict[str, ConfidenceInterval]:
    """Spectral entropy of images, captions (and captions + descriptions) on ``rows``, and their differences.

    The three sets are aligned row by row (row ``i`` of each belongs to
    image ``i``); each draw of :func:`bootstrap_rows` takes the same rows of
    every set, and each entropy is computed once per draw, so the
    differences are paired. Keys: ``images``, ``captions`` and
    ``captions - images``, plus ``captions+descriptions``,
    ``captions+descriptions - images`` and ``captions+descriptions - captions``
    when ``described`` is given. ``rows`` defaults to all rows.
    """
    subset = np.arange(len(images)) if rows is None else np.asarray(rows)

    def statistic(r: np.ndarray) -> list[float]:
        chosen = subset[r]
        s = [spectral_entropy(images[chosen]), spectral_entropy(captions[chosen])]
        if described is not None:
            s.append(spectral_entropy(described[chosen]))
            return [s[0], s[1], s[2], s[1] - s[0], s[2] - s[0], s[2] - s[1]]
        return [s[0], s[1], s[1] - s[0]]

    names = (["images", "captions", DESCRIBED, *DIFFERENCES] if described is not None
             else ["images", "captions", DIFFERENCES[0]])
    return dict(zip(names, bootstrap_rows(statistic, subset.size, n_boot, seed)))


def spectral_rows(table: EntropyTable, images: np.ndarray, captions: np.ndarray, described: np.ndarray,
                  described_images: np.ndarray) -> dict[str, ConfidenceInterval]:
    r"""Record the ``spectral_bits`` and ``effective_rank`` rows; return the spectral intervals by side.

    Images and captions use every row. When every image is described, the
    "+ descriptions" values come from the same draws; otherwise they are
    computed on ``described_images`` only (all three sets re-estimated
    there), and are unavailable when none is described. The maximum of the
    spectral entropy is :math:`\log_2 \min(n, d)`; the effective rank
    :math:`2^S` is monotone in :math:`S`, so its interval is the image of the
    spectral one.
    """
    n_images, dim = images.shape
    n_described = described_images.size
    full = n_described == n_images
    spectral = spectral_intervals(images, captions, described if full else None,
                                  n_boot=table.n_boot_sets, seed=table.seed)
    if n_described and not full:
        on_described = spectral_intervals(images, captions, described, rows=described_images,
                                          n_boot=table.n_boot_sets, seed=table.seed)
        for side in (DESCRIBED, *DIFFERENCES[1:]):
            spectral[side] = on_described[side]
    maximum = math.log2(min(n_images, dim))
    for side, n, top in (("images", n_images, maximum), ("captions", n_images, maximum), (DESCRIBED, n_described, maximum),
                         (DIFFERENCES[0], n_images, np.nan), (DIFFERENCES[1], n_described, np.nan),
                         (DIFFERENCES[2], n_described, np.nan)):
        table.record("spectral_bits", side, spectral.get(side), n=n, maximum=top)
    for side, n in (("images", n_images), ("captions", n_images), (DESCRIBED, n_described)):
        ci = spectral.get(side)
        table.record("effective_rank", side, None if ci is None else ConfidenceInterval(*(2.0 ** v for v in ci)),
                     n=n, maximum=min(n_images, dim))
    return spectral


def knn_rows(table: EntropyTable, images: np.ndarray, captions: np.ndarray, described: np.ndarray,
             described_images: np.ndarray, dim_out: int = 16, k: int = 3) -> dict[str, np.ndarray | None]:
    """Record the ``knn_bits`` rows; return the per-point terms of each set (:func:`knn_point_bits`).

    Images and captions use every row; ``captions+descriptions`` and the
    differences involving it are re-estimated on ``described_images`` (all
    sets at that :math:`n`, because the estimate's bias depends on
    :math:`n`). Differences are per-point and paired. The projection seed is
    the table's seed. The returned ``captions+descriptions`` terms (on the
    described images) are None when none is described.
    """
    terms: dict[str, np.ndarray | None] = {
        "images": knn_point_bits(images, dim_out, k, table.seed),
        "captions": knn_point_bits(captions, dim_out, k, table.seed),
        DESCRIBED: None,
    }
    n_images, n_described = len(images), described_images.size
    table.record("knn_bits", "images", table.mean_ci(terms["images"]), n=n_images)
    table.record("knn_bits", "captions", table.mean_ci(terms["captions"]), n=n_images)
    captions_minus_images = table.mean_ci(terms["captions"] - terms["images"])
    if n_described:
        images_sub = knn_point_bits(images[described_images], dim_out, k, table.seed)
        captions_sub = knn_point_bits(captions[described_images], dim_out, k, table.seed)
        terms[DESCRIBED] = plus = knn_point_bits(described[described_images], dim_out, k, table.seed)
        table.record("knn_bits", DESCRIBED, table.mean_ci(plus), n=n_described)
        table.record("knn_bits", DIFFERENCES[0], captions_minus_images, n=n_images)
        table.record("knn_bits", DIFFERENCES[1], table.mean_ci(plus - images_sub), n=n_described)
        table.record("knn_bits", DIFFERENCES[2], table.mean_ci(plus - captions_sub), n=n_described)
    else:
        table.record("knn_bits", DESCRIBED)
        table.record("knn_bits", DIFFERENCES[0], captions_minus_images, n=n_images)
        table.record("knn_bits", DIFFERENCES[1])
        table.record("knn_bits", DIFFERENCES[2])
    return terms


# ---------------------------------------------------------------------------
# 3. Retrieval entropy
# ---------------------------------------------------------------------------


def learned_temperature(history: Any, default: float = 0.05) -> tuple[float, str]:
    """The temperature for every retrieval-entropy row, and where it comes from.

    ``history`` is a training history with ``epochs`` (one dict per epoch,
    with a ``"temperature"``) and ``best_epoch`` (the kept epoch), such as
    the lite heads' ``backbone.history``; the kept epoch's temperature is
    used. Without one (None, no epochs, or no temperature), ``default``.
    """
    learned = (history.epochs[history.best_epoch].get("temperature")
               if history is not None and history.epochs and history.best_epoch >= 0 else None)
    if learned:
        return float(learned), f"learned by the lite heads (kept epoch {history.best_epoch})"
    return float(default), "fixed default: the backbone records no learned temperature"


def image_minus_caption(i2t: np.ndarray, t2i: np.ndarray, text_to_image: np.ndarray) -> np.ndarray:
    r"""Per image :math:`i`: its i2t value minus the mean t2i value of its captions, :math:`v_i - \frac{1}{|T_i|}\sum_{t \in T_i} u_t`."""
    n_images = len(i2t)
    per_image = np.bincount(text_to_image, minlength=n_images)
    return i2t - np.bincount(text_to_image, weights=t2i, minlength=n_images) / per_image


RETRIEVAL_MEASURES = (("retrieval_i2t_bits", "i2t_bits"), ("retrieval_t2i_bits", "t2i_bits"),
                      ("retrieval_i2t_normalized", "i2t_normalized"), ("retrieval_t2i_normalized", "t2i_normalized"))


def retrieval_rows(table: EntropyTable, images: np.ndarray, texts: np.ndarray, texts_described: np.ndarray | None,
                   text_to_image: np.ndarray, temperature: float) -> dict[str, RetrievalEntropy]:
    r"""Record the retrieval-entropy rows; return the :class:`~osgha_lite.metrics.entropy.RetrievalEntropy` by side.

    Similarities are the products of the unit embeddings, ``images @ texts.T``;
    ``captions+descriptions`` replaces the captions by ``texts_described``
    (:func:`fuse_descriptions`; None when no caption has descriptions) in
    the gallery and as queries. Per side: i2t and t2i entropy in bits
    (maxima :math:`\log_2 G`) and normalised, and the per-image gap
    ``retrieval_i2t-t2i_normalized`` (:func:`image_minus_caption`). Then the
    paired gains of the normalised entropies, ``captions+descriptions - captions``.
    Per-caption values are resampled with their image.
    """
    n_images, n_texts = len(images), len(texts)
    retrieval = {"captions": bidirectional_retrieval_entropy(images @ texts.T, temperature)}
    if texts_described is not None:
        retrieval[DESCRIBED] = bidirectional_retrieval_entropy(images @ texts_described.T, temperature)
    maxima = {"i2t_bits": math.log2(n_texts), "t2i_bits": math.log2(n_images), "i2t_normalized": 1.0,
              "t2i_normalized": 1.0}
    for side in ("captions", DESCRIBED):
        result = retrieval.get(side)
        for measure, attribute in RETRIEVAL_MEASURES:
            t2i = attribute.startswith("t2i")
            ci = None if result is None else table.mean_ci(getattr(result, attribute), text_to_image if t2i else None)
            table.record(measure, side, ci, n=n_texts if t2i else n_images, maximum=maxima[attribute])
        gap = None if result is None else table.mean_ci(
            image_minus_caption(result.i2t_normalized, result.t2i_normalized, text_to_image))
        table.record("retrieval_i2t-t2i_normalized", side, gap, n=n_images)
    base, augmented = retrieval["captions"], retrieval.get(DESCRIBED)
    for measure, attribute in RETRIEVAL_MEASURES[2:]:
        t2i = attribute.startswith("t2i")
        gain = None if augmented is None else table.mean_ci(
            getattr(augmented, attribute) - getattr(base, attribute), text_to_image if t2i else None)
        table.record(measure, DIFFERENCES[2], gain, n=n_texts if t2i else n_images)
    return retrieval


# ---------------------------------------------------------------------------
# The result file and the verdicts
# ---------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def entropy_record(table: EntropyTable, *, dataset: str, backbone: str, config: Mapping[str, Any],
                   coverage: Mapping[str, Any], temperature: float, temperature_source: str, knn_k: int,
                   knn_dim: int, rarefied_tokens: int, rarefied_draws: int = 20) -> dict[str, Any]:
    """The JSON record of the table: ``metrics``, ``intervals`` and ``n`` keyed ``"measure[side]"``.

    An unavailable value is ``null`` (and its interval too), so the file
    stays valid JSON. ``config`` (the profile) and ``coverage``
    (:attr:`DescriptionCoverage.summary`, as ``description_coverage``) are
    copied in; ``settings`` records what the values depend on: the
    retrieval temperature and its source, the kNN ``k`` and projection
    dimension (projection seed: the table's seed), the rarefaction budget and
    draws, and the table's bootstrap draws and seed.
    """
    keyed = {f"{row['measure']}[{row['side']}]": row for row in table.rows}
    return {
        "method": "entropy",
        "dataset": dataset,
        "split": "test",
        "backbone": backbone,
        "metrics": {key: _finite(row["value"]) for key, row in keyed.items()},
        "intervals": {key: ([_finite(row["low"]), _finite(row["high"])] if np.isfinite(row["value"]) else None)
                      for key, row in keyed.items()},
        "n": {key: int(row["n"]) for key, row in keyed.items()},
        "config": dict(config),
        "description_coverage": dict(coverage),
        "settings": {
            "temperature": temperature,
            "temperature_source": temperature_source,
            "knn": {"k": knn_k, "projection_dim": knn_dim, "projection_seed": table.seed},
            "lexical_rarefied_tokens": rarefied_tokens,
            "lexical_rarefied_draws": rarefied_draws,
            "bootstrap": {"per_item_draws": table.n_boot_items, "set_level_draws": table.n_boot_sets,
                          "seed": table.seed},
            "one_caption_per_image": "seeded choice among captions with a unique text",
        },
    }


def verdict(table: EntropyTable, measure: str, side: str, claim: str, sign: int) -> str:
    """One line: does ``claim`` hold, i.e. has the difference ``(measure, side)`` the sign ``sign`` (+1 or -1)?

    The line gives the difference, its 95% interval and whether the interval
    excludes 0 (the sign is then not a sampling accident).
    """
    row = table.row(measure, side)
    if not np.isfinite(row["value"]):
        return f"{measure:26s} {claim}: unavailable (no descriptions)"
    holds = bool(np.sign(row["value"]) == sign)
    excludes_zero = bool(row["low"] > 0 or row["high"] < 0)
    return (f"{measure:26s} {claim}: {holds} (difference {row['value']:+.3f}, 95% CI "
            f"[{row['low']:+.3f}, {row['high']:+.3f}], CI excludes 0: {excludes_zero})")


def entropy_verdicts(table: EntropyTable, n_images: int, n_texts: int) -> list[str]:
    """The answers of notebook 02 to the paper's three-part premise, computed from the table, one line each.

    1. Is the text side's entropy lower than the image side's
       (``captions - images`` of the spectral and kNN entropies)?
    2. Are the two retrieval directions unequal (``retrieval_i2t-t2i_normalized``),
       next to the i2t floor :math:`\\log_2(n_T / n_I) / \\log_2 n_T` of a
       perfect model spreading its belief evenly over an image's captions?
    3. Do LLM descriptions raise the text side's entropy
       (``captions+descriptions - captions``), and does the gap to the images close?
    """
    lines = ["1. Is the text side's entropy lower than the image side's?"]
    lines += ["   " + verdict(table, m, DIFFERENCES[0], "captions < images", -1) for m in ("spectral_bits", "knn_bits")]
    lines.append("2. Are the two retrieval directions unequal (normalised entropy, i2t - t2i per image)?")
    gap = table.row("retrieval_i2t-t2i_normalized", "captions")
    lines.append(f"   i2t {table.row('retrieval_i2t_normalized', 'captions')['value']:.3f} vs "
                 f"t2i {table.row('retrieval_t2i_normalized', 'captions')['value']:.3f}: difference {gap['value']:+.3f} "
                 f"[{gap['low']:+.3f}, {gap['high']:+.3f}], unequal: {bool(gap['low'] > 0 or gap['high'] < 0)} "
                 f"(i2t floor for a perfect model spreading over {n_texts / n_images:.0f} captions: "
                 f"{math.log2(n_texts / n_images) / math.log2(n_texts):.3f})")
    lines.append("3. Do LLM descriptions raise the text side's entropy?")
    lines += ["   " + verdict(table, m, DIFFERENCES[2], "+descriptions > captions", +1)
              for m in ("lexical_plugin_bits", "lexical_miller_madow_bits", "lexical_rarefied_bits", "spectral_bits",
                        "knn_bits")]
    lines.append("   ...and does the gap to the images close?")
    lines += ["   " + verdict(table, m, DIFFERENCES[1], "captions+descriptions < images", -1)
              for m in ("spectral_bits", "knn_bits")]
    described = table.row("retrieval_i2t-t2i_normalized", DESCRIBED)
    if np.isfinite(described["value"]):
        lines.append(f"   retrieval with descriptions: i2t - t2i {described['value']:+.3f} "
                     f"[{described['low']:+.3f}, {described['high']:+.3f}] (captions alone: {gap['value']:+.3f})")
    else:
        lines.append("   retrieval with descriptions: unavailable (no descriptions)")
    return lines

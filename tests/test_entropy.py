"""Known-answer and reference tests for osgha_lite.metrics.entropy and osgha_lite.metrics.entropy_report."""

from __future__ import annotations

import json
import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.special import logsumexp
from scipy.stats import entropy as scipy_entropy
from scipy.stats import ortho_group

from osgha_lite.metrics import entropy as E
from osgha_lite.metrics import entropy_report as R
from osgha_lite.metrics.bootstrap import ConfidenceInterval, bootstrap_mean_ci

# ---------------------------------------------------------------------------
# Lexical
# ---------------------------------------------------------------------------


def test_tokenize_lowercases_and_splits_on_non_alphanumerics():
    assert E.tokenize("A dog's ball, 2 kids.") == ["a", "dog", "s", "ball", "2", "kids"]
    assert E.tokenize("Black-and-white  DOG_run .") == ["black", "and", "white", "dog", "run"]
    assert E.tokenize("Café über 3D") == ["café", "über", "3d"]
    assert E.tokenize(" . ") == []


def test_tokenize_rejects_non_strings():
    with pytest.raises(TypeError, match="NaN"):
        E.tokenize(float("nan"))


@pytest.mark.parametrize("n", [1, 2, 3, 8, 1000])
def test_shannon_uniform_is_log2_n(n):
    assert E.shannon_entropy(np.full(n, 7)) == pytest.approx(math.log2(n), abs=1e-12)


def test_shannon_single_outcome_is_zero_and_zeros_are_ignored():
    assert E.shannon_entropy([5]) == 0.0
    assert E.shannon_entropy([0, 5, 0]) == 0.0
    assert E.shannon_entropy([1, 1, 0, 0]) == pytest.approx(1.0)


def test_shannon_matches_scipy_reference_and_accepts_counters():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, size=50)
    assert E.shannon_entropy(counts) == pytest.approx(scipy_entropy(counts, base=2), rel=1e-12)
    assert E.shannon_entropy(counts, base=math.e) == pytest.approx(scipy_entropy(counts), rel=1e-12)
    # scale-free: probabilities give the same value as counts
    assert E.shannon_entropy(counts / counts.sum()) == pytest.approx(E.shannon_entropy(counts), rel=1e-12)
    assert E.shannon_entropy(Counter("aabbbc")) == pytest.approx(scipy_entropy([2, 3, 1], base=2))


@pytest.mark.parametrize("bad", [[], [0, 0], [1, -1], [1, float("nan")]])
def test_shannon_rejects_invalid_counts(bad):
    with pytest.raises(ValueError):
        E.shannon_entropy(bad)


def test_shannon_rejects_invalid_base():
    with pytest.raises(ValueError, match="base"):
        E.shannon_entropy([1, 1], base=1)


def test_miller_madow_known_values():
    # [1, 1]: plug-in 1 bit, m = 2, N = 2 -> + 1 / (4 ln 2) bits
    assert E.miller_madow_entropy([1, 1]) == pytest.approx(1 + 1 / (4 * math.log(2)))
    assert E.miller_madow_entropy([1, 1], base=math.e) == pytest.approx(math.log(2) + 0.25)
    assert E.miller_madow_entropy([9]) == 0.0  # m - 1 = 0: no correction
    counts = [3, 0, 5, 2]  # m = 3, N = 10
    expected = scipy_entropy(counts, base=2) + 2 / (20 * math.log(2))
    assert E.miller_madow_entropy(counts) == pytest.approx(expected)
    with pytest.raises(ValueError, match="integer"):
        E.miller_madow_entropy([0.5, 0.5])


def test_miller_madow_reduces_small_sample_bias():
    # Draws from a uniform distribution over 20 outcomes: plug-in is biased low.
    rng = np.random.default_rng(1)
    truth = math.log2(20)
    plugin, corrected = [], []
    for _ in range(200):
        counts = np.bincount(rng.integers(0, 20, size=40), minlength=20)
        plugin.append(E.shannon_entropy(counts))
        corrected.append(E.miller_madow_entropy(counts))
    assert np.mean(plugin) < truth
    assert abs(np.mean(corrected) - truth) < abs(np.mean(plugin) - truth) / 3


def test_rarefied_entropy():
    counts = np.full(50, 4)  # 200 tokens, 50 types
    assert E.rarefied_entropy(counts, 200, n_draws=3) == pytest.approx(math.log2(50))
    small = E.rarefied_entropy(counts, 20, n_draws=30, seed=3)
    assert small < math.log2(20) + 1e-12  # at most log2 of the sample size
    assert small > 3.5  # 20 draws from 50 types are mostly distinct
    assert small == E.rarefied_entropy(counts, 20, n_draws=30, seed=3)  # seeded
    assert E.rarefied_entropy([7], 3) == 0.0
    with pytest.raises(ValueError, match="sample_size"):
        E.rarefied_entropy(counts, 201)


def test_lexical_entropy_pools_texts():
    assert E.lexical_entropy(["a b", "c d"]) == pytest.approx(2.0)
    assert E.lexical_entropy(["Dog dog .", "DOG"]) == 0.0
    assert E.lexical_entropy(["a a b"]) == pytest.approx(scipy_entropy([2, 1], base=2))
    assert E.lexical_entropy(["a b"], estimator="miller_madow") == pytest.approx(1 + 1 / (4 * math.log(2)))
    with pytest.raises(ValueError, match="no alphanumeric"):
        E.lexical_entropy([" . ", ""])
    with pytest.raises(ValueError, match="estimator"):
        E.lexical_entropy(["a"], estimator="nsb")


def test_per_image_lexical_entropy_uses_explicit_index():
    captions = ["a b", "x", "c d", "x x", "a"]
    index = np.array([1, 0, 1, 0, 1])
    table = E.per_image_lexical_entropy(captions, index)
    assert table.plugin_bits.shape == (2,)
    assert table.plugin_bits[0] == 0.0  # image 0: x x x
    assert table.plugin_bits[1] == pytest.approx(E.lexical_entropy(["a b", "c d", "a"]))
    assert table.miller_madow_bits[1] == pytest.approx(E.lexical_entropy(["a b c d a"], estimator="miller_madow"))
    np.testing.assert_array_equal(table.n_tokens, [3, 5])
    np.testing.assert_array_equal(table.n_types, [1, 4])
    assert table.rarefied_bits is None
    summary = table.summary()
    assert summary["plugin_bits"] == pytest.approx(table.plugin_bits.mean())
    assert set(summary) == {"plugin_bits", "miller_madow_bits", "n_tokens", "n_types"}


def test_per_image_lexical_entropy_with_descriptions():
    captions = ["a dog", "a dog", "a cat"]
    index = [0, 0, 1]
    descriptions = [["brown fur", "park"], [], ["sofa"]]
    table = E.per_image_lexical_entropy(captions, index, descriptions=descriptions)
    assert table.plugin_bits[0] == pytest.approx(E.lexical_entropy(["a dog a dog brown fur park"]))
    assert table.plugin_bits[1] == pytest.approx(math.log2(3))  # a cat sofa
    only = E.per_image_lexical_entropy(captions, index, descriptions=descriptions, include_captions=False)
    assert only.plugin_bits[0] == pytest.approx(math.log2(3))
    assert only.plugin_bits[1] == 0.0
    base = E.per_image_lexical_entropy(captions, index)
    assert np.all(table.plugin_bits > base.plugin_bits)


def test_per_image_lexical_entropy_per_caption_and_rarefied():
    captions = ["a b c d e f", "a a b b", "x y z w v u t s"]
    table = E.per_image_lexical_entropy(captions, np.arange(3), rarefy_to=4, n_draws=10, seed=5)
    np.testing.assert_allclose(table.plugin_bits, [math.log2(6), 1.0, 3.0])
    assert table.rarefied_bits[0] == pytest.approx(2.0)  # 4 distinct of 6 distinct tokens
    assert table.rarefied_bits[1] <= 1.0 + 1e-12
    assert table.rarefied_bits[2] == pytest.approx(2.0)
    assert table.summary()["rarefied_bits"] == pytest.approx(table.rarefied_bits.mean())
    with pytest.raises(ValueError, match="smallest image"):
        E.per_image_lexical_entropy(captions, np.arange(3), rarefy_to=5)


def test_per_image_lexical_entropy_rarefied_seed_is_per_image():
    captions = ["a a b c", "d e e f f g g h"]
    full = E.per_image_lexical_entropy(captions, [0, 1], rarefy_to=3, seed=2)
    # caption order does not matter: each image's draws are seeded by (seed, image index)
    swapped = E.per_image_lexical_entropy(captions[::-1], [1, 0], rarefy_to=3, seed=2)
    np.testing.assert_allclose(full.rarefied_bits, swapped.rarefied_bits)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"captions": ["a", "b"], "caption_to_image": [0]}, "one entry per caption"),
        ({"captions": ["a", "b"], "caption_to_image": [0, 2], "n_images": 2}, r"\[0, 2\)"),
        ({"captions": ["a", "b"], "caption_to_image": [0, 0], "n_images": 2}, "no token"),
        ({"captions": ["a", "b"], "caption_to_image": [0, 1], "descriptions": [["x"]]}, "aligned"),
        ({"captions": ["a", "b"], "caption_to_image": [0, 1], "descriptions": ["x", "y"]}, None),
        ({"captions": ["a"], "caption_to_image": [0], "include_captions": False}, "include_captions"),
        ({"captions": ["a"], "caption_to_image": [0.0]}, "integer"),
    ],
)
def test_per_image_lexical_entropy_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        E.per_image_lexical_entropy(**kwargs)


def test_summarize():
    summary = E.summarize([1.0, 2.0, 3.0, 10.0])
    assert summary == pytest.approx(
        {"mean": 4.0, "std": np.std([1, 2, 3, 10], ddof=1), "median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    )
    with pytest.raises(ValueError, match="NaN"):
        E.summarize([1.0, float("nan")])


# ---------------------------------------------------------------------------
# Spectral entropy
# ---------------------------------------------------------------------------


def _reference_spectral_entropy(X, centre=True):
    X = np.asarray(X, dtype=np.float64)
    if centre:
        X = X - X.mean(axis=0)
    C = X.T @ X / len(X)
    lam = np.clip(np.linalg.eigvalsh(C / np.trace(C)), 0, None)
    lam = lam[lam > 1e-15]
    return float(-(lam * np.log2(lam)).sum())


def test_identical_vectors_have_zero_spectral_entropy():
    x = np.random.default_rng(0).standard_normal(32)
    X = np.tile(x, (50, 1))
    assert E.spectral_entropy(X) == 0.0
    assert E.spectral_entropy(X, centre=False) == pytest.approx(0.0, abs=1e-9)  # rank one
    assert E.effective_rank(X) == 1.0
    assert E.covariance_spectrum(X).size == 0
    assert E.spectral_entropy(np.zeros((4, 3))) == 0.0


@pytest.mark.parametrize("d", [2, 7, 64])
def test_isotropic_data_has_spectral_entropy_log2_d(d):
    X = 3.0 * np.vstack([np.eye(d), -np.eye(d)])  # exactly isotropic, mean zero
    assert E.spectral_entropy(X) == pytest.approx(math.log2(d), abs=1e-10)
    assert E.effective_rank(X) == pytest.approx(d, rel=1e-9)
    sample = np.random.default_rng(d).standard_normal((20000, d))
    assert E.spectral_entropy(sample) == pytest.approx(math.log2(d), abs=0.01)


def test_spectral_entropy_counts_equally_used_directions():
    Q = ortho_group.rvs(10, random_state=0)
    coefficients = np.zeros((6, 10))
    coefficients[:, :3] = np.vstack([np.eye(3), -np.eye(3)])  # 3 directions, equal variance
    X = coefficients @ Q.T + 4.0  # rotated and shifted
    assert E.effective_rank(X) == pytest.approx(3.0, rel=1e-9)
    assert E.spectral_entropy(X) == pytest.approx(math.log2(3), abs=1e-10)


def test_spectral_entropy_matches_reference_and_both_gram_sides():
    rng = np.random.default_rng(2)
    tall = rng.standard_normal((300, 20)) @ rng.standard_normal((20, 20)) + 5.0
    wide = rng.standard_normal((8, 40))
    for X in (tall, wide):
        for centre in (True, False):
            assert E.spectral_entropy(X, centre=centre) == pytest.approx(
                _reference_spectral_entropy(X, centre), abs=1e-9
            )
    spectrum = E.covariance_spectrum(tall)
    assert spectrum.sum() == pytest.approx(1.0)
    assert np.all(np.diff(spectrum) <= 0)
    assert E.spectral_entropy(tall, base=math.e) == pytest.approx(E.spectral_entropy(tall) * math.log(2))


def test_spectral_entropy_invariances():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 16)) * np.linspace(0.2, 3.0, 16)
    reference = E.spectral_entropy(X)
    Q = ortho_group.rvs(16, random_state=1)
    assert E.spectral_entropy(X @ Q) == pytest.approx(reference, abs=1e-10)  # rotation
    assert E.spectral_entropy(7.5 * X) == pytest.approx(reference, abs=1e-10)  # scale
    assert E.spectral_entropy(X + 100.0) == pytest.approx(reference, abs=1e-8)  # translation (centred)
    # the uncentred second moment sees the offset as one dominant direction
    assert E.spectral_entropy(X + 100.0, centre=False) < reference - 1.0


# ---------------------------------------------------------------------------
# Fixed projection and k-NN entropy
# ---------------------------------------------------------------------------


def test_fixed_projection_is_seeded_and_orthogonal():
    P = E.fixed_projection(384, 16, seed=0)
    assert P.shape == (384, 16)
    np.testing.assert_allclose(P.T @ P, (384 / 16) * np.eye(16), atol=1e-10)
    Q = E.fixed_projection(384, 16, seed=0, preserve_norm=False)
    np.testing.assert_allclose(Q.T @ Q, np.eye(16), atol=1e-12)
    np.testing.assert_array_equal(P, E.fixed_projection(384, 16, seed=0))
    assert not np.allclose(P, E.fixed_projection(384, 16, seed=1))
    with pytest.raises(ValueError, match="dim_out"):
        E.fixed_projection(8, 16)


def test_fixed_projection_preserves_expected_squared_norm():
    rng = np.random.default_rng(4)
    for dim_in in (64, 1280):
        X = rng.standard_normal((4000, dim_in))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        projected = X @ E.fixed_projection(dim_in, 16, seed=0)
        assert np.mean(np.sum(projected**2, axis=1)) == pytest.approx(1.0, rel=0.05)


def _gaussian_entropy_nats(cov):
    d = cov.shape[0]
    return 0.5 * math.log((2 * math.pi * math.e) ** d * np.linalg.det(cov))


@pytest.mark.parametrize("d, tolerance", [(1, 0.05), (2, 0.05), (5, 0.2)])
def test_knn_entropy_matches_gaussian_closed_form(d, tolerance):
    rng = np.random.default_rng(10 + d)
    A = rng.standard_normal((d, d))
    cov = A @ A.T / d + 0.5 * np.eye(d)
    X = rng.multivariate_normal(np.zeros(d), cov, size=3000)
    truth = _gaussian_entropy_nats(cov)
    assert E.knn_entropy(X, k=3, base=math.e) == pytest.approx(truth, abs=tolerance)
    assert E.knn_entropy(X, k=3) == pytest.approx(truth / math.log(2), abs=tolerance / math.log(2))


def test_knn_entropy_uniform_cube_is_zero():
    X = np.random.default_rng(5).random((3000, 3))
    assert E.knn_entropy(X, k=3, base=math.e) == pytest.approx(0.0, abs=0.1)


def test_knn_entropy_matches_brute_force_reference():
    from scipy.special import digamma, gammaln

    rng = np.random.default_rng(6)
    X = rng.standard_normal((200, 4))
    k, n, d = 2, 200, 4
    distances = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    radii = np.sort(distances, axis=1)[:, k - 1]
    log_volume = 0.5 * d * math.log(math.pi) - gammaln(d / 2 + 1)
    expected = digamma(n) - digamma(k) + log_volume + d * np.log(radii).mean()
    assert E.knn_entropy(X, k=k, base=math.e) == pytest.approx(expected, rel=1e-12)


def test_knn_entropy_scaling_translation_rotation():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((500, 3))
    reference = E.knn_entropy(X)
    assert E.knn_entropy(2.0 * X) - reference == pytest.approx(3 * 1.0, abs=1e-9)  # + d log2 a
    assert E.knn_entropy(X + 50.0) == pytest.approx(reference, abs=1e-9)
    Q = ortho_group.rvs(3, random_state=2)
    assert E.knn_entropy(X @ Q) == pytest.approx(reference, abs=1e-9)


def test_knn_entropy_duplicates_are_dropped_or_rejected():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 2))
    with_duplicates = np.vstack([X, X[:50], X[:10]])
    assert E.knn_entropy(with_duplicates) == pytest.approx(E.knn_entropy(X), abs=1e-12)
    assert np.isfinite(E.knn_entropy(with_duplicates, k=1))
    with pytest.raises(ValueError, match="duplicate"):
        E.knn_entropy(with_duplicates, duplicates="error")
    with pytest.raises(ValueError, match="distinct points"):
        E.knn_entropy(np.tile(X[:1], (20, 1)))


def test_projected_knn_entropy_compares_modalities_at_one_dimension():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((800, 64))
    expected = E.knn_entropy(X @ E.fixed_projection(64, 8, seed=3), k=3)
    assert E.projected_knn_entropy(X, dim_out=8, k=3, seed=3) == pytest.approx(expected, rel=1e-12)
    # isotropic unit-norm clouds of different width land near the same value after projection
    a = rng.standard_normal((1500, 64))
    b = rng.standard_normal((1500, 512))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    assert E.projected_knn_entropy(a, dim_out=8) == pytest.approx(E.projected_knn_entropy(b, dim_out=8), abs=0.3)


# ---------------------------------------------------------------------------
# Retrieval entropy
# ---------------------------------------------------------------------------


def _reference_retrieval_entropy(sims, temperature):
    logp = sims / temperature - logsumexp(sims / temperature, axis=1, keepdims=True)
    return -(np.exp(logp) * logp).sum(axis=1) / math.log(2)


def test_equal_similarities_give_log2_gallery_size():
    sims = np.full((4, 37), 0.3)
    np.testing.assert_allclose(E.retrieval_entropy(sims, 0.07), math.log2(37), atol=1e-12)
    np.testing.assert_allclose(E.retrieval_entropy(sims, 0.07, normalized=True), 1.0, atol=1e-12)
    np.testing.assert_allclose(E.retrieval_entropy(sims, 0.07, axis=0), 2.0, atol=1e-12)


def test_peaked_similarities_give_zero_entropy_without_overflow():
    sims = np.zeros((3, 1000))
    sims[np.arange(3), [0, 10, 999]] = 1.0
    values = E.retrieval_entropy(sims, 0.001)  # logits of 1000: exp would overflow unshifted
    assert np.all(np.isfinite(values))
    assert np.all(values < 1e-6)


def test_retrieval_entropy_matches_reference_with_any_chunking_and_axis():
    rng = np.random.default_rng(11)
    sims = rng.uniform(-1, 1, size=(23, 41)).astype(np.float32)
    expected = _reference_retrieval_entropy(sims.astype(np.float64), 0.05)
    for chunk_size in (1, 7, 1000):
        np.testing.assert_allclose(E.retrieval_entropy(sims, 0.05, chunk_size=chunk_size), expected, rtol=1e-10)
    np.testing.assert_allclose(E.retrieval_entropy(sims.T, 0.05, axis=0, chunk_size=5), expected, rtol=1e-10)


def test_retrieval_entropy_increases_with_temperature():
    sims = np.random.default_rng(12).uniform(-1, 1, size=(50, 200))
    temperatures = [0.01, 0.03, 0.07, 0.2, 1.0, 10.0]
    values = np.stack([E.retrieval_entropy(sims, t) for t in temperatures])
    assert np.all(np.diff(values, axis=0) > 0)
    assert np.all(values[-1] < math.log2(200) + 1e-12)
    assert np.all(values[-1] > math.log2(200) - 0.01)


def test_bidirectional_retrieval_entropy():
    rng = np.random.default_rng(13)
    sims = rng.uniform(-1, 1, size=(10, 50))
    result = E.bidirectional_retrieval_entropy(sims, 0.1, chunk_size=4)
    assert result.i2t_bits.shape == (10,) and result.t2i_bits.shape == (50,)
    np.testing.assert_allclose(result.i2t_bits, _reference_retrieval_entropy(sims, 0.1), rtol=1e-10)
    np.testing.assert_allclose(result.t2i_bits, _reference_retrieval_entropy(sims.T, 0.1), rtol=1e-10)
    np.testing.assert_allclose(result.i2t_normalized, result.i2t_bits / math.log2(50))
    np.testing.assert_allclose(result.t2i_normalized, result.t2i_bits / math.log2(10))
    summary = result.summary()
    assert summary["i2t_bits"] == pytest.approx(result.i2t_bits.mean())
    assert summary["t2i_normalized"] == pytest.approx(result.t2i_normalized.mean())
    assert summary["i2t_max_bits"] == pytest.approx(math.log2(50))
    assert summary["temperature"] == 0.1


@pytest.mark.parametrize(
    "sims, temperature, message",
    [
        (np.zeros((2, 3)), 0.0, "temperature"),
        (np.zeros(3), 0.1, "2-D"),
        (np.array([[0.0, np.nan]]), 0.1, "NaN"),
    ],
)
def test_retrieval_entropy_errors(sims, temperature, message):
    with pytest.raises(ValueError, match=message):
        E.retrieval_entropy(sims, temperature)


def test_retrieval_entropy_large_matrix_is_chunked_quickly():
    sims = np.random.default_rng(14).uniform(-1, 1, size=(500, 25000)).astype(np.float32)
    values = E.retrieval_entropy(sims, 0.07, chunk_size=128)
    assert values.shape == (500,)
    np.testing.assert_allclose(values[:3], _reference_retrieval_entropy(sims[:3].astype(np.float64), 0.07))


# ---------------------------------------------------------------------------
# The report of notebook 02 (osgha_lite.metrics.entropy_report)
# ---------------------------------------------------------------------------

SIDES = ["images", "captions", "captions+descriptions", "captions - images", "captions+descriptions - images",
         "captions+descriptions - captions"]


def _unit_rows(rng, n, d, scales=None):
    x = rng.standard_normal((n, d)) * (1.0 if scales is None else scales)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_description_coverage_counts_captions_and_fully_described_images():
    mask = np.array([[True, True], [True, False], [False, False], [True, False], [True, True], [True, True]])
    text_to_image = np.array([0, 0, 1, 1, 2, 2])
    coverage = R.description_coverage(mask, text_to_image, 3, max_descriptions=2)
    np.testing.assert_array_equal(coverage.caption_described, [True, True, False, True, True, True])
    np.testing.assert_array_equal(coverage.image_described, [True, False, True])  # image 1 lacks one caption's
    np.testing.assert_array_equal(coverage.described_images, [0, 2])
    assert coverage.any
    assert coverage.summary == {"captions": pytest.approx(5 / 6), "images_fully_described": pytest.approx(2 / 3),
                                "descriptions_per_described_caption": pytest.approx(8 / 5), "max_descriptions": 2}
    none = R.description_coverage(np.zeros((6, 2), bool), text_to_image, 3, max_descriptions=2)
    assert not none.any and none.described_images.size == 0
    assert none.summary["descriptions_per_described_caption"] == 0.0


def test_entropy_table_records_rows_and_unavailable_values():
    table = R.EntropyTable(n_boot_items=50, n_boot_sets=10, seed=3)
    values = np.arange(10, dtype=float)
    table.record("m", "captions", table.mean_ci(values), n=10, maximum=4.0)
    table.record("m", "captions+descriptions", n=7)
    table.record("other", "images", ConfidenceInterval(1.0, 0.5, 1.5), n=3)
    row = table.row("m", "captions")
    assert (row["value"], row["n"], row["max"]) == (4.5, 10, 4.0)
    assert (row["low"], row["high"]) == tuple(bootstrap_mean_ci(values, 50, 3))[1:]
    missing = table.row("m", "captions+descriptions")
    assert np.isnan(missing["value"]) and np.isnan(missing["low"]) and missing["n"] == 0  # no substitute, n = 0
    assert [r["measure"] for r in table.measures("m")] == ["m", "m"]
    assert [r["side"] for r in table.measures("oth", "m")] == ["captions", "captions+descriptions", "images"]
    with pytest.raises(KeyError):
        table.row("m", "images")


def test_bootstrap_rows_is_paired_recentred_and_seeded():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(40)

    def statistic(rows):
        first, second = a[rows].mean(), a[rows].mean() + 2.0
        return [first, second, second - first]

    first, second, difference = R.bootstrap_rows(statistic, 40, n_boot=100, seed=5)
    assert first.point == pytest.approx(a.mean()) and first.low < first.point < first.high
    # the same draws for every value: a constant offset has a degenerate interval
    assert difference.point == pytest.approx(2.0)
    assert difference.low == pytest.approx(2.0) and difference.high == pytest.approx(2.0)
    assert second.low - first.low == pytest.approx(2.0)
    assert R.bootstrap_rows(statistic, 40, n_boot=100, seed=5) == [first, second, difference]
    assert R.bootstrap_rows(statistic, 40, n_boot=100, seed=6)[0] != first

    # recentring: the number of distinct rows is n on all rows but about (1 - 1/e) n in every draw;
    # without recentring the interval would lie far below the point estimate
    (distinct,) = R.bootstrap_rows(lambda rows: [np.unique(rows).size], 40, n_boot=200, seed=1)
    assert distinct.point == 40 and distinct.low <= 40 <= distinct.high


def test_caption_token_budget_is_the_smallest_image_bag():
    captions = ["a b c", "d", "e f", "g h i j"]
    assert R.caption_token_budget(captions, np.array([0, 0, 1, 1]), 2) == 4
    assert R.caption_token_budget(captions, np.array([0, 1, 1, 1]), 2) == 3


def test_lexical_rows_record_means_and_paired_gains():
    captions = ["a dog runs", "a dog", "a cat sits", "the cat"]
    index = np.array([0, 0, 1, 1])
    descriptions = [["brown fur in a park"], ["grass"], ["sofa by a window"], ["grey"]]
    before = E.per_image_lexical_entropy(captions, index, rarefy_to=3, seed=0)
    after = E.per_image_lexical_entropy(captions, index, descriptions=descriptions, rarefy_to=3, seed=0)
    table = R.EntropyTable(n_boot_items=20, n_boot_sets=5)
    R.lexical_rows(table, before, after, np.array([0, 1]))
    assert len(table.rows) == 12
    gain = table.row("lexical_plugin_bits", "captions+descriptions - captions")
    assert gain["value"] == pytest.approx(np.mean(after.plugin_bits - before.plugin_bits)) and gain["value"] > 0
    assert table.row("lexical_tokens", "captions")["value"] == pytest.approx(np.mean(before.n_tokens))
    assert table.row("lexical_tokens", "captions+descriptions")["n"] == 2
    only = R.EntropyTable(n_boot_items=20, n_boot_sets=5)
    R.lexical_rows(only, before, None, np.array([], dtype=int))
    assert [r["side"] for r in only.rows[:3]] == ["captions", "captions+descriptions", "captions+descriptions - captions"]
    assert all(np.isnan(r["value"]) for r in only.rows if r["side"] != "captions")


def test_one_caption_per_image_picks_unique_texts_of_each_image():
    captions = ["a dog", "a dog", "a brown dog", "a cat", "a black cat", "a cat"]
    index = np.array([0, 0, 0, 1, 1, 1])
    chosen = R.one_caption_per_image(captions, index, 2, seed=0)
    np.testing.assert_array_equal(chosen, [2, 4])  # the only unique text of each image
    many = ["x0", "x1", "x2", "y0", "y1"]
    picks = {tuple(R.one_caption_per_image(many, np.array([0, 0, 0, 1, 1]), 2, seed=s)) for s in range(20)}
    assert all(index_ in (0, 1, 2) and other in (3, 4) for index_, other in picks) and len(picks) > 1
    np.testing.assert_array_equal(R.one_caption_per_image(many, np.array([0, 0, 0, 1, 1]), 2, seed=4),
                                  R.one_caption_per_image(many, np.array([0, 0, 0, 1, 1]), 2, seed=4))
    with pytest.raises(ValueError, match="unique text"):
        R.one_caption_per_image(["a", "a", "b"], np.array([0, 1, 1]), 2)


def test_fuse_descriptions_is_the_normalised_mean():
    texts = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    descriptions = np.zeros((3, 2, 2), dtype=np.float32)
    descriptions[0, 0] = [0.0, 1.0]
    descriptions[1, :] = [[0.0, 1.0], [0.0, 1.0]]
    mask = np.array([[True, False], [True, True], [False, False]])
    fused = R.fuse_descriptions(texts, descriptions, mask)
    assert fused.dtype == np.float32
    np.testing.assert_allclose(fused, [[2 ** -0.5, 2 ** -0.5], [0.0, 1.0], [0.6, 0.8]], rtol=1e-6)


def test_knn_point_bits_average_to_the_projected_estimate():
    X = _unit_rows(np.random.default_rng(1), 120, 24)
    terms = R.knn_point_bits(X, dim_out=8, k=3, seed=2)
    assert terms.shape == (120,)
    assert terms.mean() == pytest.approx(E.projected_knn_entropy(X, 8, 3, seed=2))
    # a point with a far k-th neighbour contributes more than one in a dense region
    Z = X @ E.fixed_projection(24, 8, 2)
    radii = cKDTree(Z).query(Z, k=4)[0][:, 3]
    assert terms[np.argmax(radii)] == terms.max() and terms[np.argmin(radii)] == terms.min()


def test_spectral_intervals_and_rows():
    rng = np.random.default_rng(2)
    images = _unit_rows(rng, 60, 8)
    captions = _unit_rows(rng, 60, 8, scales=np.array([3, 2, 1, 1, 0.5, 0.2, 0.1, 0.1]))
    described = _unit_rows(rng, 60, 8, scales=np.array([3, 1, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1]))
    intervals = R.spectral_intervals(images, captions, described, n_boot=30, seed=0)
    assert list(intervals) == SIDES
    s_img, s_cap, s_des = (E.spectral_entropy(x) for x in (images, captions, described))
    assert intervals["images"].point == pytest.approx(s_img)
    assert intervals["captions - images"].point == pytest.approx(s_cap - s_img)
    assert intervals["captions+descriptions - captions"].point == pytest.approx(s_des - s_cap)
    assert intervals["captions - images"].high < 0  # anisotropic captions spread over fewer directions
    subset = R.spectral_intervals(images, captions, rows=np.arange(0, 60, 2), n_boot=10)
    assert list(subset) == SIDES[:2] + SIDES[3:4]
    assert subset["captions"].point == pytest.approx(E.spectral_entropy(captions[::2]))

    full = R.EntropyTable(n_boot_items=20, n_boot_sets=30)
    spectral = R.spectral_rows(full, images, captions, described, np.arange(60))
    assert spectral == intervals
    assert [(r["measure"], r["side"]) for r in full.rows] == (
        [("spectral_bits", s) for s in SIDES] + [("effective_rank", s) for s in SIDES[:3]])
    assert full.row("spectral_bits", "images")["max"] == pytest.approx(3.0)  # log2 min(n, d)
    rank = full.row("effective_rank", "captions")
    assert rank["value"] == pytest.approx(2 ** s_cap) and rank["high"] == pytest.approx(2 ** intervals["captions"].high)

    partial = R.EntropyTable(n_boot_items=20, n_boot_sets=30)
    R.spectral_rows(partial, images, captions, described, np.arange(40))
    assert partial.row("spectral_bits", "captions")["value"] == pytest.approx(s_cap)  # all rows
    plus = partial.row("spectral_bits", "captions+descriptions")
    assert plus["value"] == pytest.approx(E.spectral_entropy(described[:40])) and plus["n"] == 40
    none = R.EntropyTable(n_boot_items=20, n_boot_sets=30)
    R.spectral_rows(none, images, captions, described, np.array([], dtype=int))
    assert np.isnan(none.row("effective_rank", "captions+descriptions")["value"])
    assert none.row("spectral_bits", "captions - images")["value"] == pytest.approx(s_cap - s_img)


def test_knn_rows_compare_sets_at_one_size():
    rng = np.random.default_rng(3)
    images, captions = _unit_rows(rng, 80, 16), _unit_rows(rng, 80, 16)
    described = 0.5 * captions + 0.5 * _unit_rows(rng, 80, 16)
    table = R.EntropyTable(n_boot_items=30, n_boot_sets=5, seed=1)
    terms = R.knn_rows(table, images, captions, described, np.arange(50), dim_out=4, k=3)
    assert [r["side"] for r in table.rows] == ["images", "captions", *SIDES[2:]]
    assert terms["captions+descriptions"].shape == (50,)
    assert table.row("knn_bits", "images")["value"] == pytest.approx(E.projected_knn_entropy(images, 4, 3, seed=1))
    gain = table.row("knn_bits", "captions+descriptions - captions")
    expected = E.projected_knn_entropy(described[:50], 4, 3, seed=1) - E.projected_knn_entropy(captions[:50], 4, 3, seed=1)
    assert gain["value"] == pytest.approx(expected) and gain["n"] == 50
    assert gain["value"] < 0  # averaging pulls the points together
    none = R.EntropyTable(n_boot_items=30, n_boot_sets=5, seed=1)
    assert R.knn_rows(none, images, captions, described, np.array([], dtype=int), dim_out=4)["captions+descriptions"] is None
    assert [np.isnan(r["value"]) for r in none.rows] == [False, False, True, False, True, True]


def test_learned_temperature_uses_the_kept_epoch():
    history = SimpleNamespace(epochs=[{"temperature": 0.07}, {"temperature": 0.04}, {}], best_epoch=1)
    assert R.learned_temperature(history) == (0.04, "learned by the lite heads (kept epoch 1)")
    for missing in (None, SimpleNamespace(epochs=[], best_epoch=0), SimpleNamespace(epochs=[{}], best_epoch=0),
                    SimpleNamespace(epochs=[{"temperature": 0.1}], best_epoch=-1)):
        value, source = R.learned_temperature(missing, default=0.05)
        assert value == 0.05 and source.startswith("fixed default")


def test_image_minus_caption_averages_each_images_captions():
    gap = R.image_minus_caption(np.array([1.0, 0.5]), np.array([0.2, 0.4, 0.1, 0.3, 0.5]), np.array([0, 0, 1, 1, 1]))
    np.testing.assert_allclose(gap, [0.7, 0.2])


def test_retrieval_rows_both_directions_with_and_without_descriptions():
    rng = np.random.default_rng(4)
    images = _unit_rows(rng, 12, 6).astype(np.float32)
    index = np.repeat(np.arange(12), 3)
    texts = _unit_rows(rng, 36, 6).astype(np.float32)
    described = _unit_rows(rng, 36, 6).astype(np.float32)
    table = R.EntropyTable(n_boot_items=40, n_boot_sets=5)
    retrieval = R.retrieval_rows(table, images, texts, described, index, 0.1)
    assert set(retrieval) == {"captions", "captions+descriptions"}
    assert len(table.rows) == 12
    expected = E.bidirectional_retrieval_entropy(images @ texts.T, 0.1)
    i2t = table.row("retrieval_i2t_bits", "captions")
    assert i2t["value"] == pytest.approx(expected.i2t_bits.mean()) and i2t["max"] == pytest.approx(math.log2(36))
    t2i = table.row("retrieval_t2i_normalized", "captions")
    assert (t2i["n"], t2i["max"]) == (36, 1.0)
    assert (t2i["low"], t2i["high"]) == tuple(bootstrap_mean_ci(expected.t2i_normalized, 40, 0, groups=index))[1:]
    gap = table.row("retrieval_i2t-t2i_normalized", "captions")
    assert gap["value"] == pytest.approx(np.mean(R.image_minus_caption(expected.i2t_normalized,
                                                                       expected.t2i_normalized, index)))
    gain = table.row("retrieval_i2t_normalized", "captions+descriptions - captions")
    assert gain["value"] == pytest.approx(retrieval["captions+descriptions"].i2t_normalized.mean()
                                          - expected.i2t_normalized.mean())
    alone = R.EntropyTable(n_boot_items=40, n_boot_sets=5)
    R.retrieval_rows(alone, images, texts, None, index, 0.1)
    assert len(alone.rows) == 12
    assert sum(np.isnan(r["value"]) for r in alone.rows) == 7  # the five described rows and the two gains


def _verdict_table(described=True):
    table = R.EntropyTable(n_boot_items=10, n_boot_sets=5)
    ci = ConfidenceInterval
    for measure in ("lexical_plugin_bits", "lexical_miller_madow_bits", "lexical_rarefied_bits"):
        table.record(measure, "captions+descriptions - captions", ci(1.0, 0.8, 1.2) if described else None, n=5)
    for measure in ("spectral_bits", "knn_bits"):
        table.record(measure, "captions - images", ci(-0.1, -0.3, 0.05), n=5)
        table.record(measure, "captions+descriptions - images", ci(-0.4, -0.5, -0.3) if described else None, n=5)
        table.record(measure, "captions+descriptions - captions", ci(-0.3, -0.4, -0.2) if described else None, n=5)
    table.record("retrieval_i2t_normalized", "captions", ci(0.6, 0.55, 0.65), n=5)
    table.record("retrieval_t2i_normalized", "captions", ci(0.5, 0.45, 0.55), n=25)
    table.record("retrieval_i2t-t2i_normalized", "captions", ci(0.1, 0.05, 0.15), n=5)
    table.record("retrieval_i2t-t2i_normalized", "captions+descriptions", ci(0.12, 0.07, 0.17) if described else None,
                 n=5)
    return table


def test_entropy_verdicts_read_the_sign_and_the_interval():
    lines = R.entropy_verdicts(_verdict_table(), n_images=5, n_texts=25)
    assert len(lines) == 15
    assert lines[1].startswith("   spectral_bits") and "captions < images: True" in lines[1]
    assert "CI excludes 0: False" in lines[1]  # [-0.3, +0.05] straddles 0
    assert "unequal: True" in lines[4] and f"{math.log2(5) / math.log2(25):.3f}" in lines[4]
    assert "+descriptions > captions: True" in lines[6] and "CI excludes 0: True" in lines[6]
    assert "+descriptions > captions: False" in lines[9]  # spectral_bits gain is negative
    assert lines[-1] == "   retrieval with descriptions: i2t - t2i +0.120 [+0.070, +0.170] (captions alone: +0.100)"
    bare = R.entropy_verdicts(_verdict_table(described=False), n_images=5, n_texts=25)
    assert "unavailable (no descriptions)" in bare[6] and bare[-1].endswith("unavailable (no descriptions)")


def test_entropy_record_keys_values_and_settings():
    table = _verdict_table(described=False)
    record = R.entropy_record(table, dataset="toy", backbone="b", config={"name": "lite"}, coverage={"captions": 0.0},
                              temperature=0.05, temperature_source="fixed", knn_k=3, knn_dim=16, rarefied_tokens=30)
    key = "spectral_bits[captions - images]"
    assert record["metrics"][key] == -0.1 and record["intervals"][key] == [-0.3, 0.05] and record["n"][key] == 5
    unavailable = "lexical_plugin_bits[captions+descriptions - captions]"
    assert record["metrics"][unavailable] is None and record["intervals"][unavailable] is None
    assert record["n"][unavailable] == 0
    assert len(record["metrics"]) == len(table.rows)
    assert record["settings"]["knn"] == {"k": 3, "projection_dim": 16, "projection_seed": 0}
    assert record["settings"]["bootstrap"] == {"per_item_draws": 10, "set_level_draws": 5, "seed": 0}
    assert (record["method"], record["split"], record["description_coverage"]) == ("entropy", "test", {"captions": 0.0})
    json.dumps(record, allow_nan=False)  # valid JSON: no NaN anywhere

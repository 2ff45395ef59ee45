"""Known-answer and reference tests for osgha_lite.metrics.entropy."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import entropy as scipy_entropy
from scipy.stats import ortho_group

from osgha_lite.metrics import entropy as E

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

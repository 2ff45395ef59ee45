"""Tests for osgha_lite.losses: hand-computed values, loop references, gradients, masking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from osgha_lite.losses import (
    CombinedLoss,
    InfoNCELoss,
    LogitScale,
    TripletLoss,
    contrastive_ground_truth,
    contrastive_logits,
    hardest_negative_triplet_loss,
    infonce_loss,
    positives_mask,
)



pytestmark = pytest.mark.usefixtures("single_thread")

# Image features = identity, so the score matrix S = I T^T equals SCORES exactly.
SCORES = [[0.5, 0.6], [0.1, 0.4]]


def score_features(scores=SCORES, dtype=torch.float64):
    scores = torch.tensor(scores, dtype=dtype)
    return torch.eye(scores.shape[0], dtype=dtype), scores.T.contiguous()


def lse(*values):
    return math.log(sum(math.exp(v) for v in values))


def random_pairs(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)
    return img, txt


def loop_infonce(img, txt, scale, positives):
    """Multi-positive InfoNCE written with explicit loops over anchors."""
    s = (img @ txt.T * scale).tolist()
    n_i, n_t = len(s), len(s[0])
    i2t = [lse(*s[i]) - lse(*[s[i][j] for j in range(n_t) if positives[i][j]]) for i in range(n_i)]
    t2i = [
        lse(*[s[i][j] for i in range(n_i)]) - lse(*[s[i][j] for i in range(n_i) if positives[i][j]])
        for j in range(n_t)
    ]
    return 0.5 * (sum(i2t) / n_i + sum(t2i) / n_t)


def loop_triplet(img, txt, margin, ids, max_violation=True):
    """VSE++ loss written with explicit loops (sum over anchors)."""
    s = (img @ txt.T).tolist()
    n = len(s)
    total = 0.0
    for i in range(n):
        negatives = [j for j in range(n) if ids[j] != ids[i]]
        text_costs = [max(0.0, margin + s[i][j] - s[i][i]) for j in negatives]
        image_costs = [max(0.0, margin + s[j][i] - s[i][i]) for j in negatives]
        reduce = max if max_violation else sum
        total += (reduce(text_costs) if negatives else 0.0) + (reduce(image_costs) if negatives else 0.0)
    return total


# ---------------------------------------------------------------- logits and ground truth


def test_contrastive_logits_are_scaled_cosines_and_transposes():
    img, txt = score_features()
    per_image, per_text = contrastive_logits(img, txt, 2.0)
    torch.testing.assert_close(per_image, 2.0 * torch.tensor(SCORES, dtype=torch.float64))
    torch.testing.assert_close(per_text, per_image.T)


def test_positives_mask_and_ground_truth():
    assert positives_mask(torch.tensor([3, 3, 7])).tolist() == [
        [True, True, False], [True, True, False], [False, False, True]
    ]
    # Non-square: 2 images, 3 texts describing images [5, 9, 5].
    assert positives_mask(torch.tensor([5, 9]), torch.tensor([5, 9, 5])).tolist() == [
        [True, False, True], [False, True, False]
    ]
    assert torch.equal(contrastive_ground_truth(3), torch.eye(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        contrastive_ground_truth(3, torch.tensor([0, 1]))


# ---------------------------------------------------------------- InfoNCE


def test_infonce_hand_computed_value():
    img, txt = score_features()
    expected = 0.5 * (
        ((lse(0.5, 0.6) - 0.5) + (lse(0.1, 0.4) - 0.4)) / 2
        + ((lse(0.5, 0.1) - 0.5) + (lse(0.6, 0.4) - 0.4)) / 2
    )
    assert infonce_loss(img, txt, 1.0).item() == pytest.approx(expected, rel=1e-12)


def test_infonce_equals_clip_cross_entropy_without_duplicates():
    img, txt = random_pairs(n=7)
    scale = 14.0
    logits = scale * img @ txt.T
    labels = torch.arange(7)
    clip = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    torch.testing.assert_close(infonce_loss(img, txt, scale), clip)


def test_infonce_multi_positive_matches_loop_reference():
    img, txt = random_pairs(n=6, seed=1)
    ids = torch.tensor([0, 0, 1, 2, 2, 2])
    img = img[[0, 0, 2, 3, 3, 3]]  # repeated images share features, as in a real batch
    expected = loop_infonce(img, txt, 10.0, positives_mask(ids).tolist())
    assert infonce_loss(img, txt, 10.0, image_ids=ids).item() == pytest.approx(expected, rel=1e-12)


def test_infonce_non_square_positives_matches_loop_reference():
    img, _ = random_pairs(n=3, seed=2)
    _, txt = random_pairs(n=5, seed=3)
    positives = positives_mask(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1, 2, 2]))
    expected = loop_infonce(img, txt, 5.0, positives.tolist())
    assert infonce_loss(img, txt, 5.0, positives=positives).item() == pytest.approx(expected, rel=1e-12)


def test_infonce_same_image_captions_are_not_negatives():
    img, txt = random_pairs(n=4, seed=4)
    # Every row shows the same image: there are no negatives at all, so the loss is exactly 0.
    assert infonce_loss(img, txt, 20.0, image_ids=torch.zeros(4, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-12)
    # Rows 0 and 1 share an image: the loss never penalizes the score of (image 0, text 1).
    # With image features = identity the score matrix is a free parameter; check its gradient.
    scores = torch.randn(4, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)

    def score_gradient(image_ids):
        s = scores.clone().requires_grad_(True)
        infonce_loss(eye, s.T, 5.0, image_ids=image_ids).backward()
        return s.grad

    shared = score_gradient(torch.tensor([0, 0, 1, 2]))
    assert shared[0, 1] <= 0 and shared[1, 0] <= 0  # positives: pulled together (or left alone)
    assert shared[0, 2] > 0  # a true negative is still pushed apart
    assert score_gradient(None)[0, 1] > 0  # without image ids, text 1 is a negative of image 0


def test_infonce_rejects_rows_without_positives_and_bad_shapes():
    img, txt = random_pairs(n=3)
    with pytest.raises(ValueError, match="at least one positive"):
        infonce_loss(img, txt, 1.0, positives=torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="paired batch needs"):
        infonce_loss(img, txt[:2], 1.0)
    with pytest.raises(ValueError, match="not both"):
        infonce_loss(img, txt, 1.0, image_ids=torch.arange(3), positives=torch.eye(3, dtype=torch.bool))


def test_infonce_gradcheck_double():
    img, txt = random_pairs(n=5, d=4, seed=5)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 1, 1, 2, 3])
    assert torch.autograd.gradcheck(lambda i, t, s: infonce_loss(i, t, s, image_ids=ids), (img, txt, scale))
    assert torch.autograd.gradcheck(lambda i, t, s: infonce_loss(i, t, s), (img, txt, scale))


def test_temperature_is_learnable_log_parameterized_and_clamped():
    loss_fn = InfoNCELoss()
    assert loss_fn.logit_scale.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert loss_fn.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert loss_fn.logit_scale.temperature == pytest.approx(0.07, rel=1e-6)
    img, txt = random_pairs(n=6, dtype=torch.float32)
    loss_fn(img, txt).backward()
    grad = loss_fn.logit_scale.log_scale.grad
    assert grad is not None and grad.abs().item() > 0
    assert [name for name, _ in loss_fn.named_parameters()] == ["logit_scale.log_scale"]

    clamped = LogitScale()
    with torch.no_grad():
        clamped.log_scale.fill_(math.log(500.0))
    value = clamped()
    assert value.item() == pytest.approx(100.0, rel=1e-6)
    value.backward()
    assert clamped.log_scale.grad.item() == 0.0

    frozen = InfoNCELoss(learnable_temperature=False)
    assert not frozen.logit_scale.log_scale.requires_grad
    with pytest.raises(ValueError, match="exceeds"):
        LogitScale(init_temperature=0.001)


# ---------------------------------------------------------------- VSE++ triplet


def test_triplet_hand_computed_value():
    img, txt = score_features()
    # image 0: 0.2 + 0.6 - 0.5 = 0.3; image 1: 0.2 + 0.1 - 0.4 < 0
    # text 0: 0.2 + 0.1 - 0.5 < 0;   text 1: 0.2 + 0.6 - 0.4 = 0.4
    assert hardest_negative_triplet_loss(img, txt, margin=0.2, reduction="sum").item() == pytest.approx(0.7)
    assert hardest_negative_triplet_loss(img, txt, margin=0.2).item() == pytest.approx(0.35)


def test_triplet_hardest_vs_sum_and_loop_reference():
    img, txt = random_pairs(n=6, seed=6)
    ids = list(range(6))
    for max_violation in (True, False):
        expected = loop_triplet(img, txt, 0.3, ids, max_violation)
        got = hardest_negative_triplet_loss(img, txt, 0.3, max_violation=max_violation, reduction="sum")
        assert got.item() == pytest.approx(expected, rel=1e-12)
    hardest = hardest_negative_triplet_loss(img, txt, 0.3)
    summed = hardest_negative_triplet_loss(img, txt, 0.3, max_violation=False)
    assert hardest <= summed


def test_triplet_masks_same_image_pairs():
    img, txt = random_pairs(n=6, seed=7)
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    img = img[[0, 0, 2, 2, 2, 5]]
    expected = loop_triplet(img, txt, 0.2, ids.tolist())
    got = hardest_negative_triplet_loss(img, txt, 0.2, image_ids=ids, reduction="sum")
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # A caption of the same image scored above the positive is not a violation once masked.
    img2, txt2 = score_features([[0.5, 0.9], [0.9, 0.5]])
    assert hardest_negative_triplet_loss(img2, txt2, 0.2).item() > 0
    assert hardest_negative_triplet_loss(img2, txt2, 0.2, image_ids=torch.tensor([4, 4])).item() == 0.0


def test_triplet_gradcheck_double():
    img, txt = random_pairs(n=5, d=4, seed=8)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    ids = torch.tensor([0, 1, 1, 2, 3])
    assert torch.autograd.gradcheck(
        lambda i, t: hardest_negative_triplet_loss(i, t, margin=1.0, image_ids=ids), (img, txt)
    )
    assert torch.autograd.gradcheck(
        lambda i, t: hardest_negative_triplet_loss(i, t, margin=1.0, max_violation=False), (img, txt)
    )


# ---------------------------------------------------------------- combined


def test_combined_loss_is_weighted_sum_of_terms():
    img, txt = random_pairs(n=6, seed=9, dtype=torch.float32)
    ids = torch.tensor([0, 0, 1, 2, 3, 3])
    combined = CombinedLoss({"infonce": 1.0, "triplet": 0.5}, margin=0.1, init_temperature=0.05)
    expected = infonce_loss(img, txt, 20.0, image_ids=ids) + 0.5 * hardest_negative_triplet_loss(
        img, txt, 0.1, image_ids=ids
    )
    torch.testing.assert_close(combined(img, txt, image_ids=ids), expected)
    terms = combined.terms(img, txt, image_ids=ids)
    assert set(terms) == {"infonce", "triplet", "total"}
    assert combined.logit_scale is combined.losses["infonce"].logit_scale
    assert len(list(combined.parameters())) == 1


def test_combined_loss_skips_zero_weights_and_validates():
    only_triplet = CombinedLoss({"infonce": 0.0, "triplet": 1.0})
    assert list(only_triplet.losses) == ["triplet"]
    assert only_triplet.logit_scale is None
    assert list(CombinedLoss().losses) == ["infonce"]
    with pytest.raises(ValueError, match="unknown loss terms"):
        CombinedLoss({"cosine": 1.0})
    with pytest.raises(ValueError, match="unknown options"):
        CombinedLoss(temperature=0.1)
    with pytest.raises(ValueError, match="every weight is 0"):
        CombinedLoss({"infonce": 0.0})
    assert isinstance(TripletLoss(), torch.nn.Module)

"""EntityCLIP, APSE-IPIK and HGAN adapters: shapes, the math of each part, and the training terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from osgha_lite.methods import AdapterContext, build_adapter
from osgha_lite.methods.apse_ipik import APSEIPIKAdapter, PromptPool
from osgha_lite.methods.entityclip import EntityCLIPAdapter, hardest_negatives
from osgha_lite.methods.hgan import FeatureGraph, HGANAdapter
from osgha_lite.losses import CombinedLoss

DIM = 16


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _batch_ids() -> torch.Tensor:
    return torch.tensor([0, 0, 1, 2, 2, 3])


# --------------------------------------------------------------------------- EntityCLIP
def test_entityclip_registered_and_test_time_path_ignores_explanations():
    torch.manual_seed(0)
    adapter = build_adapter("entityclip", DIM, heads=2)
    assert isinstance(adapter, EntityCLIPAdapter)
    adapter.eval()
    texts = _unit(6, DIM)
    context = AdapterContext(description_features=_unit(6, 1, DIM, seed=1), description_mask=torch.ones(6, 1, dtype=torch.bool))
    plain, with_context = adapter.encode_texts(texts), adapter.encode_texts(texts, context)
    assert torch.equal(plain, with_context)
    assert torch.allclose(plain.norm(dim=1), torch.ones(6), atol=1e-5)
    assert adapter.encode_images(_unit(3, DIM, seed=2)).shape == (3, DIM)


def test_hardest_negatives_skip_the_same_image():
    similarity = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.95, 0.3], [0.2, 0.6, 0.5]])
    ids = torch.tensor([0, 0, 1])
    text_for_image, image_for_text = hardest_negatives(similarity, ids)
    assert text_for_image.tolist() == [2, 2, 1]  # rows 0 and 1 share an image: only column 2 is a negative
    assert image_for_text.tolist() == [2, 2, 1]
    lone = hardest_negatives(torch.rand(2, 2), torch.tensor([5, 5]))[0]
    assert lone.tolist() == [0, 1]  # no other image in the batch: the row itself (dropped by the caller)


def test_fused_text_keeps_captions_without_explanation():
    torch.manual_seed(0)
    adapter = EntityCLIPAdapter(DIM, heads=2)
    texts, explanations = _unit(4, DIM), _unit(4, DIM, seed=3)
    mask = torch.tensor([True, False, True, False])
    fused = adapter.fuse_text(texts, explanations, mask)
    assert torch.equal(fused[~mask], texts[~mask])
    assert torch.allclose(fused.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(fused[mask], texts[mask])


def test_match_logits_ignore_a_missing_explanation():
    torch.manual_seed(0)
    adapter = EntityCLIPAdapter(DIM, heads=2).eval()
    images, texts = _unit(3, DIM), _unit(3, DIM, seed=1)
    mask = torch.tensor([False, False, True])
    first = adapter.match_logits(images, texts, _unit(3, DIM, seed=2), mask)
    second = adapter.match_logits(images, texts, _unit(3, DIM, seed=5), mask)
    assert torch.allclose(first[:2], second[:2], atol=1e-6)
    assert not torch.allclose(first[2], second[2])


def test_entityclip_auxiliary_loss_trains_every_training_part():
    torch.manual_seed(0)
    adapter = EntityCLIPAdapter(DIM, heads=2).train()
    ids = _batch_ids()
    context = AdapterContext(description_features=_unit(6, 1, DIM, seed=1),
                             description_mask=torch.tensor([[True], [False], [True], [True], [False], [True]]))
    images = adapter.encode_images(_unit(4, DIM)[ids])
    texts = adapter.encode_texts(_unit(6, DIM, seed=2), context)
    loss = adapter.auxiliary_loss(images, texts, ids, CombinedLoss())
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    for part in (adapter.explanation_expert, adapter.gate, adapter.itm_head, adapter.text_gate, adapter.attention):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), part
    assert adapter.auxiliary_loss(images, texts, ids, CombinedLoss()).item() == 0.0  # kept state is consumed


# --------------------------------------------------------------------------- APSE-IPIK
def test_prompt_pool_selects_top_k_by_key_cosine_and_mixes_by_softmax():
    torch.manual_seed(0)
    pool = PromptPool(DIM, size=6, top_k=2, temperature=0.5)
    query = _unit(3, DIM, seed=4)
    mixed, top, index = pool(query)
    cosine = query @ F.normalize(pool.keys, dim=-1).T
    expected_index = cosine.argsort(dim=1, descending=True)[:, :2]
    assert torch.equal(index, expected_index)
    weights = torch.softmax(cosine.gather(1, expected_index) / 0.5, dim=1)
    assert torch.allclose(mixed, (weights[..., None] * pool.prompts[expected_index]).sum(1), atol=1e-6)
    with pytest.raises(ValueError, match="top_k"):
        PromptPool(DIM, size=3, top_k=4)


def test_apse_alpha_zero_is_the_frozen_image_vector():
    adapter = APSEIPIKAdapter(DIM, alpha=0.0).eval()
    images = _unit(5, DIM)
    assert torch.allclose(adapter.encode_images(images), images, atol=1e-6)


def test_apse_auxiliary_terms():
    torch.manual_seed(0)
    adapter = APSEIPIKAdapter(DIM, pool_size=5, top_k=2, perspective_weight=0.0, key_weight=1.0).train()
    ids = _batch_ids()
    images = adapter.encode_images(_unit(4, DIM)[ids])
    similarity = _unit(4, DIM)[ids] @ F.normalize(adapter.pool.keys, dim=-1).T
    expected = (1 - similarity.topk(2, dim=1).values).mean()
    loss = adapter.auxiliary_loss(images, adapter.encode_texts(_unit(6, DIM, seed=1)), ids, CombinedLoss())
    assert torch.allclose(loss, expected, atol=1e-6)

    adapter = APSEIPIKAdapter(DIM, perspective_weight=1.0, key_weight=0.0).train()
    mask = torch.tensor([[True, False, True]] * 4 + [[False, False, True]] * 2)
    context = AdapterContext(description_features=_unit(6, 3, DIM, seed=2), description_mask=mask)
    images = adapter.encode_images(_unit(4, DIM)[ids], context)
    loss = adapter.auxiliary_loss(images, adapter.encode_texts(_unit(6, DIM, seed=1)), ids, CombinedLoss())
    assert loss.item() > 0
    loss.backward()
    assert adapter.text_adapter.mlp[0].weight.grad.abs().sum() > 0  # perspectives go through the caption adapter


# --------------------------------------------------------------------------- HGAN
def _local_context(rows: int, nodes: int, seed: int, lengths: list[int] | None = None) -> AdapterContext:
    mask = torch.ones(rows, nodes, dtype=torch.bool)
    if lengths is not None:
        mask = torch.arange(nodes)[None] < torch.tensor(lengths)[:, None]
    return AdapterContext(local_features=torch.randn(rows, nodes, DIM, generator=torch.Generator().manual_seed(seed)),
                          local_mask=mask)


def test_feature_graph_is_row_stochastic_over_real_nodes():
    torch.manual_seed(0)
    graph = FeatureGraph(DIM)
    context = _local_context(2, 5, 0, lengths=[5, 3])
    adjacency = graph.adjacency(context.local_features, context.local_mask)
    assert torch.allclose(adjacency.sum(-1), torch.ones(2, 5), atol=1e-6)
    assert adjacency[1, :, 3:].abs().max() == 0


def test_hgan_combined_vector_gives_the_weighted_three_level_similarity():
    torch.manual_seed(0)
    weights = {"global": 0.5, "local": 0.3, "fused": 0.2}
    adapter = HGANAdapter(DIM, slots=3, level_weights=weights).eval()
    images, texts = _unit(3, DIM), _unit(4, DIM, seed=1)
    image_context, text_context = _local_context(3, 4, 1), _local_context(4, 6, 2, lengths=[6, 2, 4, 1])
    combined = adapter.encode_images(images, image_context) @ adapter.encode_texts(texts, text_context).T
    levels = adapter.level_similarity(adapter.levels(images, "image", image_context),
                                      adapter.levels(texts, "text", text_context))
    expected = sum(weights[k] * levels[k] for k in weights) / sum(weights.values())
    assert torch.allclose(combined, expected, atol=1e-5)
    assert adapter.encode_images(images, image_context).shape == (3, adapter.out_dim)
    assert torch.allclose(adapter.encode_texts(texts, text_context).norm(dim=1), torch.ones(4), atol=1e-5)


def test_hgan_padding_tokens_do_not_matter_and_local_features_are_required():
    torch.manual_seed(0)
    adapter = HGANAdapter(DIM).eval()
    texts = _unit(2, DIM)
    context = _local_context(2, 5, 0, lengths=[5, 2])
    changed = AdapterContext(local_features=context.local_features.clone(), local_mask=context.local_mask)
    changed.local_features[1, 2:] = 100.0
    assert torch.allclose(adapter.encode_texts(texts, context), adapter.encode_texts(texts, changed), atol=1e-6)
    with pytest.raises(ValueError, match="local features"):
        adapter.encode_texts(texts)


def test_hgan_auxiliary_loss_reaches_graph_and_slots():
    torch.manual_seed(0)
    adapter = HGANAdapter(DIM, slots=2, level_weight=1.0).train()
    ids = _batch_ids()
    images = adapter.encode_images(_unit(4, DIM)[ids], _local_context(4, 4, 1).select(ids))
    texts = adapter.encode_texts(_unit(6, DIM, seed=1), _local_context(6, 5, 2, lengths=[5, 4, 3, 5, 2, 1]))
    loss = adapter.auxiliary_loss(images, texts, ids, CombinedLoss())
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    assert adapter.slot_queries.grad.abs().sum() > 0
    assert adapter.graphs["text"].message.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="level_weights"):
        HGANAdapter(DIM, level_weights={"global": -1.0})

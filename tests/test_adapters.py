"""Tests for osgha_lite.methods: the common interface, baselines and the registry."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from osgha_lite.methods import (
    ADAPTERS,
    AdapterContext,
    BottleneckAdapter,
    IdentityAdapter,
    LinearHead,
    RetrievalAdapter,
    build_adapter,
    encode_batched,
)
from osgha_lite.methods.hypergraph import HypergraphAdapter, MemoryBank
from osgha_lite.losses import CombinedLoss



pytestmark = pytest.mark.usefixtures("single_thread")
DIM = 16


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def toy_split(n_images=12, captions_per_image=2, seed=0):
    """Captions are noisy, rotated copies of their image's feature: learnable, not solved by the identity."""
    images = unit(n_images, DIM, seed=seed)
    text_to_image = torch.arange(n_images).repeat_interleave(captions_per_image)
    rotation = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(seed + 3))).Q
    noise = 0.5 * unit(len(text_to_image), DIM, seed=seed + 1)
    texts = F.normalize(images[text_to_image] @ rotation + noise, dim=-1)
    descriptions = F.normalize(texts[:, None, :] + 0.5 * unit(len(text_to_image), 2, DIM, seed=seed + 2), dim=-1)
    return images, texts, text_to_image, descriptions


def built(name, **options):
    torch.manual_seed(0)
    adapter = build_adapter(name, DIM, **options)
    images, texts, text_to_image, _ = toy_split()
    adapter.set_memory(MemoryBank.from_train_split(images, texts, text_to_image))
    return adapter.eval()


def test_registry_covers_every_adapter_and_rejects_unknowns():
    from osgha_lite.methods.apse_ipik import APSEIPIKAdapter
    from osgha_lite.methods.entityclip import EntityCLIPAdapter
    from osgha_lite.methods.hgan import HGANAdapter

    expected_types = {
        "identity": IdentityAdapter, "linear": LinearHead,
        "bottleneck": BottleneckAdapter, "hypergraph": HypergraphAdapter,
        "entityclip": EntityCLIPAdapter, "apse-ipik": APSEIPIKAdapter, "hgan": HGANAdapter,
    }
    assert set(ADAPTERS) == set(expected_types)
    for name, cls in expected_types.items():
        adapter = build_adapter(name, DIM)
        assert type(adapter) is cls and isinstance(adapter, RetrievalAdapter) and adapter.name == name
    with pytest.raises(ValueError, match="unknown adapter 'mlp'"):
        build_adapter("mlp", DIM)
    with pytest.raises(ValueError, match="bad options"):
        build_adapter("bottleneck", DIM, ratio=0.2)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_adapter_returns_unit_vectors_of_the_right_shape(name):
    adapter = built(name)
    images, texts, _, descriptions = toy_split(seed=5)
    # Local features (image regions, caption tokens) for HGAN; the other adapters ignore them.
    image_context = AdapterContext(local_features=images[:5, None, :].repeat(1, 3, 1))
    text_context = AdapterContext(description_features=descriptions[:7], local_features=texts[:7, None, :].repeat(1, 2, 1))
    image_out = adapter.encode_images(images[:5], image_context)
    text_out = adapter.encode_texts(texts[:7], text_context)
    out_dim = adapter.out_dim if name == "hgan" else DIM  # HGAN concatenates its three levels
    assert image_out.shape == (5, out_dim) and text_out.shape == (7, out_dim)
    torch.testing.assert_close(image_out.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(text_out.norm(dim=-1), torch.ones(7))
    torch.testing.assert_close(adapter.encode(images[:5], "image", image_context), image_out)
    config = adapter.config()
    assert json.loads(json.dumps(config))["name"] == name
    assert config["uses_test_gallery"] is False
    assert adapter.trainable == (name != "identity")
    assert adapter.trainable == any(True for _ in adapter.parameters())
    with pytest.raises(ValueError, match="modality"):
        adapter.encode(images[:2], "audio")


def test_identity_adapter_is_the_frozen_backbone():
    adapter = IdentityAdapter(DIM)
    x = unit(4, DIM, seed=1)
    torch.testing.assert_close(adapter.encode_images(x), x)
    torch.testing.assert_close(adapter.encode_texts(2.0 * x), x)
    assert list(adapter.parameters()) == [] and not adapter.uses_memory


def test_linear_head_is_one_affine_map_per_modality():
    torch.manual_seed(0)
    head = LinearHead(DIM, out_dim=6, image_dim=10, text_dim=DIM)
    images, texts = unit(3, 10, seed=2), unit(3, DIM, seed=3)
    expected_images = F.normalize(images @ head.image_proj.weight.T + head.image_proj.bias, dim=-1)
    expected_texts = F.normalize(texts @ head.text_proj.weight.T + head.text_proj.bias, dim=-1)
    torch.testing.assert_close(head.encode_images(images), expected_images)
    torch.testing.assert_close(head.encode_texts(texts), expected_texts)
    with pytest.raises(ValueError, match=r"\[batch, 10\]"):
        head.encode_images(texts)


def test_bottleneck_adapter_matches_clip_adapter_formula():
    torch.manual_seed(0)
    adapter = BottleneckAdapter(DIM, reduction=4, alpha=0.2).eval()
    assert adapter.image_adapter[0].weight.shape == (DIM // 4, DIM)
    x = unit(5, DIM, seed=4)
    w1, w2 = adapter.text_adapter[0].weight, adapter.text_adapter[2].weight
    branch = torch.relu(torch.relu(x @ w1.T) @ w2.T)
    torch.testing.assert_close(adapter.encode_texts(x), F.normalize(0.2 * branch + 0.8 * x, dim=-1))
    assert not torch.allclose(adapter.encode_images(x), adapter.encode_texts(x))  # separate branches
    torch.testing.assert_close(BottleneckAdapter(DIM, alpha=0.0).encode_images(x), x)
    with pytest.raises(ValueError, match="alpha"):
        BottleneckAdapter(DIM, alpha=1.5)


def test_bottleneck_branches_train_independently():
    adapter = BottleneckAdapter(DIM).train()
    adapter.encode_images(unit(4, DIM, seed=6)).sum().backward()
    assert all(p.grad is not None for p in adapter.image_adapter.parameters())
    assert all(p.grad is None for p in adapter.text_adapter.parameters())


@pytest.mark.parametrize("precomputed", [False, True])
def test_context_select_and_encode_batched_agree_with_one_batch(precomputed):
    adapter = built("hypergraph", k=2, hyperedges=("semantic", "knn", "pair"), hubness_weight=1.0, hubness_k=3)
    _, texts, _, descriptions = toy_split(seed=7)
    context = AdapterContext(description_features=descriptions, description_mask=torch.ones(24, 2, dtype=torch.bool))
    if precomputed:
        context.links = adapter.precompute_links(texts, "text")
    sub = context.select(slice(3, 6))
    assert sub.description_features.shape == (3, 2, DIM) and sub.description_mask.shape == (3, 2)
    if precomputed:  # the links are sliced with the rows, every part of them
        assert len(sub.links) == 3 and torch.equal(sub.links.pair_rows, context.links.pair_rows[3:6])
        torch.testing.assert_close(sub.links.cohesion, context.links.cohesion[3:6])
    whole = adapter.encode_texts(texts, context)
    assert whole.shape == (24, adapter.out_dim) == (24, DIM + 2)
    batched = encode_batched(adapter, texts, "text", context, batch_size=5)
    torch.testing.assert_close(batched, whole, rtol=0, atol=1e-6)
    moved = context.to("cpu")
    assert moved.links is not None if precomputed else moved.links is None


@pytest.mark.parametrize("name", ["linear", "bottleneck", "hypergraph"])
def test_one_training_loop_trains_any_adapter(name):
    """A minimal loop written only against the common interface lowers the training loss."""
    images, texts, text_to_image, descriptions = toy_split(n_images=16, seed=8)
    torch.manual_seed(0)
    options = {"k": 2, "hyperedges": ("semantic", "knn", "pair"), "hubness_weight": 1.0, "hubness_k": 3}
    adapter = build_adapter(name, DIM, **(options if name == "hypergraph" else {}))
    adapter.set_memory(MemoryBank.from_train_split(images, texts, text_to_image))
    # Fixed temperature, so only the adapter's own parameters can lower the loss.
    criterion = CombinedLoss({"infonce": 1.0, "triplet": 0.5}, learnable_temperature=False)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-2)
    text_context = AdapterContext(description_features=descriptions, group_ids=text_to_image)
    image_context = AdapterContext(group_ids=text_to_image)

    def loss_value():
        image_out = adapter.encode_images(images[text_to_image], image_context)
        text_out = adapter.encode_texts(texts, text_context)
        return criterion(image_out, text_out, image_ids=text_to_image)

    adapter.train()
    first = loss_value().item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_value()
        loss.backward()
        optimizer.step()
    last = loss_value().item()
    assert last < 0.9 * first, f"{name}: loss {first:.3f} -> {last:.3f}"


def test_gather_rows_equals_indexing_with_repeats():
    from osgha_lite.methods import gather_rows

    x = torch.randn(5, 3, 2, requires_grad=True)
    index = torch.tensor([[4, 4], [0, 2]])
    torch.testing.assert_close(gather_rows(x, index), x[index])
    gather_rows(x, index).sum().backward()
    assert x.grad[4].sum().item() == pytest.approx(2 * 3 * 2) and x.grad[1].abs().sum() == 0

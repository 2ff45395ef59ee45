"""Tests for osgha_lite.hypergraph: incidence builders, HGNN convolution, memory bank, adapter."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from osgha_lite.adapters import AdapterContext
from osgha_lite.hypergraph import (
    IMAGE,
    TEXT,
    Hypergraph,
    HypergraphAdapter,
    MemoryBank,
    build_query_hypergraph,
    combine_hypergraphs,
    edge_degrees,
    hypergraph_conv,
    hypergraph_from_edges,
    knn_hyperedges,
    memory_neighbours,
    nearest_neighbours,
    semantic_hyperedges,
    vertex_degrees,
)



@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits on a busy shared CPU (and is faster)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def unit(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def dense_reference_conv(X, H, w, Theta=None):
    """X' = Dv^-1/2 H W De^-1 H^T Dv^-1/2 X Theta with explicit diagonal matrices (0^-p := 0)."""
    dv = H @ w
    de = H.sum(dim=0)
    Dv_inv_sqrt = torch.diag(torch.where(dv > 0, dv.rsqrt(), torch.zeros_like(dv)))
    De_inv = torch.diag(torch.where(de > 0, 1.0 / de, torch.zeros_like(de)))
    W = torch.diag(w)
    Theta = torch.eye(X.shape[1], dtype=X.dtype) if Theta is None else Theta
    return Dv_inv_sqrt @ H @ W @ De_inv @ H.T @ Dv_inv_sqrt @ X @ Theta


def random_incidence(n_nodes, n_edges, density, seed):
    g = torch.Generator().manual_seed(seed)
    H = (torch.rand(n_nodes, n_edges, generator=g) < density).double()
    H[0] = 0.0  # an isolated vertex
    H[:, -1] = 0.0  # an empty hyperedge
    w = torch.rand(n_edges, generator=g, dtype=torch.float64) + 0.1
    return H, w


def small_memory(n_images=6, n_texts=12, d=8, seed=1):
    image_features = unit(n_images, d, seed=seed)
    text_features = unit(n_texts, d, seed=seed + 1)
    text_to_image = torch.arange(n_texts) % n_images
    return MemoryBank.from_train_split(image_features, text_features, text_to_image)


# ---------------------------------------------------------------- convolution


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hypergraph_conv_matches_dense_reference(seed):
    H, w = random_incidence(9, 7, 0.35, seed)
    X = unit(9, 5, seed=seed + 10, dtype=torch.float64)
    Theta = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = dense_reference_conv(X, H, w, Theta)
    torch.testing.assert_close(hypergraph_conv(X, H.to_sparse(), w, Theta), expected)
    torch.testing.assert_close(hypergraph_conv(X, H, w, Theta), expected)
    torch.testing.assert_close(hypergraph_conv(X, H.to_sparse(), w), dense_reference_conv(X, H, w))
    assert torch.all(hypergraph_conv(X, H, w, Theta)[0] == 0)  # isolated vertex gets the zero message


def test_hypergraph_conv_from_index_lists_and_degrees():
    graph = hypergraph_from_edges([[0, 1, 2], [2, 3], [1, 3, 4]], n_nodes=6, weights=[1.0, 2.0, 0.5])
    H = graph.dense_incidence().double()
    assert H.tolist() == [
        [1, 0, 0], [1, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]
    ]
    w = graph.edge_weights.double()
    torch.testing.assert_close(vertex_degrees(graph.incidence().double(), w), torch.tensor([1.0, 1.5, 3.0, 2.5, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(edge_degrees(graph.incidence().double()), torch.tensor([3.0, 2.0, 3.0], dtype=torch.float64))
    X = unit(6, 4, seed=3, dtype=torch.float64)
    torch.testing.assert_close(hypergraph_conv(X, graph.incidence(), graph.edge_weights), dense_reference_conv(X, H, w))
    assert graph.members(2) == [1, 3, 4]


def test_hypergraph_conv_gradcheck_double():
    H, w = random_incidence(6, 5, 0.5, seed=4)
    X = unit(6, 3, seed=5, dtype=torch.float64).requires_grad_(True)
    Theta = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    w = w.requires_grad_(True)
    sparse_H = H.to_sparse()
    assert torch.autograd.gradcheck(lambda x, t, ww: hypergraph_conv(x, sparse_H, ww, t), (X, Theta, w))


def test_no_hyperedges_gives_zeros():
    X = unit(5, 4, seed=6)
    assert torch.equal(hypergraph_conv(X, torch.zeros(5, 0).to_sparse(), torch.zeros(0)), torch.zeros(5, 4))
    empty = Hypergraph(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0), 5)
    assert torch.equal(hypergraph_conv(X, empty.incidence(), empty.edge_weights, torch.eye(4)), torch.zeros(5, 4))


def test_singleton_hyperedges_give_x_theta():
    X = unit(5, 4, seed=7, dtype=torch.float64)
    Theta = torch.randn(4, 6, dtype=torch.float64)
    graph = hypergraph_from_edges([[v] for v in range(5)], n_nodes=5, weights=[0.3, 1.0, 2.0, 5.0, 0.7])
    torch.testing.assert_close(hypergraph_conv(X, graph.incidence(), graph.edge_weights.double(), Theta), X @ Theta)


def test_hypergraph_conv_scales_to_40k_nodes_50k_edges():
    n_nodes, n_edges, per_edge = 40_000, 50_000, 10
    g = torch.Generator().manual_seed(0)
    graph = Hypergraph(
        torch.randint(0, n_nodes, (n_edges * per_edge,), generator=g),
        torch.arange(n_edges).repeat_interleave(per_edge),
        torch.rand(n_edges, generator=g),
        n_nodes,
    )
    X = torch.randn(n_nodes, 64, generator=g, requires_grad=True)
    start = time.perf_counter()
    out = hypergraph_conv(X, graph.incidence(), graph.edge_weights, torch.randn(64, 64, generator=g))
    out.sum().backward()
    elapsed = time.perf_counter() - start
    assert out.shape == (n_nodes, 64) and torch.isfinite(out).all()
    assert elapsed < 30, f"hypergraph_conv forward+backward took {elapsed:.1f} s"


# ---------------------------------------------------------------- incidence builders


def test_semantic_hyperedges_from_lists_and_padded_tensor():
    graph = semantic_hyperedges([0, 1, 2], [[3, 4], [], [5]], n_nodes=6, weight=2.0)
    assert graph.n_edges == 2  # caption 1 has no descriptions: no hyperedge
    assert [graph.members(e) for e in range(2)] == [[0, 3, 4], [2, 5]]
    assert graph.edge_weights.tolist() == [2.0, 2.0]
    padded = semantic_hyperedges(torch.tensor([0, 1, 2]), torch.tensor([[3, 4], [-1, -1], [5, -1]]), n_nodes=6)
    assert [padded.members(e) for e in range(padded.n_edges)] == [[0, 3, 4], [2, 5]]
    with pytest.raises(ValueError, match="3 captions but 2"):
        semantic_hyperedges([0, 1, 2], [[3], [4]], n_nodes=6)


def brute_force_neighbours(features, query, candidates, k, groups=None):
    sims = {c: float(F.cosine_similarity(features[query], features[c], dim=0)) for c in candidates}
    allowed = [c for c in candidates if c != query and (groups is None or groups[c] != groups[query])]
    return sorted(sorted(allowed, key=lambda c: -sims[c])[:k])


def test_knn_hyperedges_match_brute_force():
    features = unit(12, 6, seed=8)
    graph = knn_hyperedges(features, k=3)
    assert graph.n_edges == 12
    for node in range(12):
        expected = brute_force_neighbours(features, node, range(12), 3)
        assert graph.members(node) == sorted([node, *expected])
    # Restricted candidates and groups: nodes 0..5 are images of groups 0..5, 6..11 captions of groups 0..5.
    groups = torch.tensor(list(range(6)) * 2)
    restricted = knn_hyperedges(
        features, k=2, query_node_ids=torch.tensor([6, 7]), candidate_node_ids=torch.arange(6), group_ids=groups
    )
    for edge, query in enumerate([6, 7]):
        expected = brute_force_neighbours(features, query, range(6), 2, groups.tolist())
        assert restricted.members(edge) == sorted([query, *expected])
        assert int(groups[query]) not in groups[restricted.members(edge)][:-1].tolist()


def test_nearest_neighbours_marks_missing_candidates_invalid():
    queries, candidates = unit(2, 4, seed=9), unit(3, 4, seed=10)
    indices, valid = nearest_neighbours(
        queries, candidates, k=5, query_groups=torch.tensor([0, 1]), candidate_groups=torch.tensor([0, 0, 1])
    )
    assert indices.shape == (2, 3)
    assert valid.tolist() == [[True, False, False], [True, True, False]]
    assert indices[0, 0].item() == 2


def test_combine_hypergraphs_renumbers_edges():
    a = hypergraph_from_edges([[0, 1]], n_nodes=4, weights=1.0)
    b = hypergraph_from_edges([[1, 2, 3], [0, 3]], n_nodes=4, weights=[2.0, 3.0])
    combined = combine_hypergraphs(a, b)
    assert combined.n_edges == 3
    assert [combined.members(e) for e in range(3)] == [[0, 1], [1, 2, 3], [0, 3]]
    assert combined.edge_weights.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="node counts differ"):
        combine_hypergraphs(a, hypergraph_from_edges([[0]], n_nodes=5))


# ---------------------------------------------------------------- memory bank


def test_memory_bank_from_train_split_subsample_is_seeded_and_proportional():
    image_features, text_features = unit(10, 4, seed=11), unit(50, 4, seed=12)
    text_to_image = torch.arange(50) // 5
    full = MemoryBank.from_train_split(image_features, text_features, text_to_image)
    assert len(full) == 60 and int((full.modality == IMAGE).sum()) == 10
    torch.testing.assert_close(full.group_ids[10:], text_to_image)
    bank = MemoryBank.from_train_split(image_features, text_features, text_to_image, max_nodes=12, seed=3)
    assert len(bank) == 12
    assert int((bank.modality == IMAGE).sum()) == 2 and int((bank.modality == TEXT).sum()) == 10
    texts = bank.modality == TEXT
    torch.testing.assert_close(bank.features[texts], text_features[bank.source_index[texts]])
    torch.testing.assert_close(bank.group_ids[texts], text_to_image[bank.source_index[texts]])
    torch.testing.assert_close(bank.group_ids[~texts], bank.source_index[~texts])
    again = MemoryBank.from_train_split(image_features, text_features, text_to_image, max_nodes=12, seed=3)
    assert torch.equal(bank.source_index, again.source_index)
    other = MemoryBank.from_train_split(image_features, text_features, text_to_image, max_nodes=12, seed=4)
    assert not torch.equal(bank.source_index, other.source_index)


# ---------------------------------------------------------------- per-query hypergraphs


def test_build_query_hypergraph_structure():
    memory = small_memory()
    query = unit(1, 8, seed=20)
    descriptions = unit(1, 3, 8, seed=21)
    mask = torch.tensor([[True, False, True]])
    ego = build_query_hypergraph(query, descriptions, mask, candidates=memory, k=2)
    # Nodes: query, 2 descriptions, 2 image copies, 2 caption copies.
    assert ego.graph.n_nodes == 7 and ego.graph.n_edges == 3 and ego.n_queries == 1
    assert [ego.graph.members(e) for e in range(3)] == [[0, 1, 2], [0, 3, 4], [0, 5, 6]]
    torch.testing.assert_close(ego.node_features[1:3], descriptions[0, [0, 2]])
    for pool, nodes in ((IMAGE, [3, 4]), (TEXT, [5, 6])):
        rows = (memory.modality == pool).nonzero().flatten()
        best = rows[(memory.features[rows] @ query[0]).topk(2).indices]
        torch.testing.assert_close(ego.node_features[nodes], memory.features[best])
    joint = build_query_hypergraph(query, None, None, candidates=memory, k=3, split_modalities=False)
    assert joint.graph.n_edges == 1 and joint.graph.members(0) == [0, 1, 2, 3]
    best = (memory.features @ query[0]).topk(3).indices
    torch.testing.assert_close(joint.neighbour_memory_index, best)


def test_training_rows_never_link_to_their_own_image_group():
    image_features, text_features = unit(8, 8, seed=30), unit(24, 8, seed=31)
    text_to_image = torch.arange(24) // 3
    memory = MemoryBank.from_train_split(image_features, text_features, text_to_image)
    rows = torch.tensor([0, 4, 17])
    # Without groups a train caption's nearest memory caption is its own copy (cosine 1).
    plain = build_query_hypergraph(text_features[rows], candidates=memory, k=2)
    text_copies = plain.neighbour_memory_index[plain.neighbour_memory_index >= 8]
    assert set((memory.source_index[text_copies]).tolist()) >= set(rows.tolist())
    guarded = build_query_hypergraph(text_features[rows], candidates=memory, k=2, query_groups=text_to_image[rows])
    owners = guarded.node_owner[guarded.n_queries :]
    linked_groups = memory.group_ids[guarded.neighbour_memory_index]
    assert not torch.any(linked_groups == text_to_image[rows][owners])


def test_memory_neighbours_layout_and_precomputed_rows_give_the_same_graph():
    memory = small_memory()
    queries, groups = unit(5, 8, seed=22), torch.tensor([0, 1, 2, 3, 4])
    rows = memory_neighbours(queries, memory, k=2, query_groups=groups)
    assert rows.shape == (5, 4)
    assert torch.all(memory.modality[rows[:, :2]] == IMAGE) and torch.all(memory.modality[rows[:, 2:]] == TEXT)
    assert not torch.any(memory.group_ids[rows] == groups[:, None])
    sims = memory.features[rows] @ queries[:, :, None]
    assert torch.all(sims[:, 0] >= sims[:, 1]) and torch.all(sims[:, 2] >= sims[:, 3])  # most similar first
    searched = build_query_hypergraph(queries, candidates=memory, k=2, query_groups=groups)
    given = build_query_hypergraph(queries, candidates=memory, k=2, neighbour_rows=rows)
    assert torch.equal(searched.graph.node_index, given.graph.node_index)
    assert torch.equal(searched.graph.edge_index, given.graph.edge_index)
    torch.testing.assert_close(searched.node_features, given.node_features)
    # More neighbours requested than allowed candidates: padded with -1, no edge for an empty block.
    tiny = MemoryBank.from_features(unit(2, 8, seed=23), torch.tensor([IMAGE, IMAGE]))
    padded = memory_neighbours(queries[:1], tiny, k=3)
    assert padded[0, 2:].tolist() == [-1, -1, -1, -1]
    assert build_query_hypergraph(queries[:1], candidates=tiny, k=3, neighbour_rows=padded).graph.n_edges == 1


# ---------------------------------------------------------------- adapter


def make_adapter(dim=8, memory=None, **options):
    torch.manual_seed(0)
    adapter = HypergraphAdapter(dim, **options)
    adapter.set_memory(memory if memory is not None else small_memory(d=dim))
    return adapter.eval()


def test_adapter_forward_matches_dense_computation():
    adapter = make_adapter(reduced_dim=4, k=2, alpha=0.3, num_layers=2)
    queries, descriptions = unit(3, 8, seed=40), unit(3, 2, 8, seed=41)
    with torch.no_grad():
        out = adapter.encode_texts(queries, AdapterContext(description_features=descriptions))
        ego = adapter.build_hypergraph(queries, descriptions)
        H = ego.graph.dense_incidence()
        z = ego.node_features @ adapter.down.weight.T
        for theta in adapter.thetas:
            z = torch.relu(dense_reference_conv(z, H, ego.graph.edge_weights, theta.weight.T))
        message = z[:3] @ adapter.up.weight.T
        expected = F.normalize(0.3 * message + 0.7 * queries, dim=-1)
    torch.testing.assert_close(out, expected)
    assert out.shape == (3, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_adapter_without_reduction_convolves_in_full_dimension():
    adapter = make_adapter(use_reduction=False, k=2, alpha=0.5)
    assert isinstance(adapter.down, torch.nn.Identity) and adapter.thetas[0].weight.shape == (8, 8)
    assert adapter.reduced_dim == 8
    queries = unit(4, 8, seed=42)
    with torch.no_grad():
        out = adapter.encode_images(queries)
        ego = adapter.build_hypergraph(queries)
        # Single layer, no reduction: the last conv has no ReLU.
        message = dense_reference_conv(
            ego.node_features, ego.graph.dense_incidence(), ego.graph.edge_weights, adapter.thetas[0].weight.T
        )[:4]
    torch.testing.assert_close(out, F.normalize(0.5 * message + 0.5 * queries, dim=-1))


def test_query_without_hyperedges_passes_through_normalized():
    adapter = make_adapter(hyperedges=("semantic",))
    x = unit(4, 8, seed=43)
    # Images have no descriptions, so with semantic hyperedges only they are isolated: m = 0, f(x) = x.
    torch.testing.assert_close(adapter.encode_images(x), x, rtol=0, atol=1e-7)
    # Captions whose descriptions are all masked out (the "without LLM descriptions" ablation) too.
    context = AdapterContext(description_features=unit(4, 2, 8, seed=44), description_mask=torch.zeros(4, 2, dtype=torch.bool))
    torch.testing.assert_close(adapter.encode_texts(x, context), x, rtol=0, atol=1e-7)
    # Inputs that are not unit-norm come out as x / |x| (the (1 - alpha) factor cancels in normalization).
    torch.testing.assert_close(adapter.encode_images(3.0 * x), x, rtol=0, atol=1e-7)
    with_descriptions = adapter.encode_texts(x, AdapterContext(description_features=unit(4, 2, 8, seed=44)))
    assert not torch.allclose(with_descriptions, x)


def test_knn_only_adapter_ignores_descriptions():
    adapter = make_adapter(hyperedges=("knn",), k=2)
    x = unit(3, 8, seed=45)
    context = AdapterContext(description_features=unit(3, 4, 8, seed=46))
    torch.testing.assert_close(adapter.encode_texts(x, context), adapter.encode_texts(x))


def test_inductive_adaptation_of_a_query_ignores_other_queries():
    adapter = make_adapter(k=3, num_layers=2)
    queries, descriptions = unit(6, 8, seed=47), unit(6, 3, 8, seed=48)
    alone = adapter.adapt(queries[2:3], descriptions[2:3])
    together = adapter.adapt(queries, descriptions)[2:3]
    others = torch.cat([unit(4, 8, seed=49), queries[2:3]])
    other_descriptions = torch.cat([unit(4, 3, 8, seed=50), descriptions[2:3]])
    with_different_batch = adapter.adapt(others, other_descriptions)[4:5]
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, with_different_batch, rtol=0, atol=1e-6)
    assert not adapter.uses_test_gallery and adapter.config()["test_mode"] == "inductive"
    gallery = MemoryBank.from_features(unit(5, 8, seed=51), torch.full((5,), IMAGE))
    with pytest.raises(ValueError, match="test_mode is 'inductive'"):
        adapter.encode_images(queries, AdapterContext(gallery=gallery))


def test_transductive_mode_is_labeled_and_uses_the_gallery():
    adapter = make_adapter(k=2, test_mode="transductive")
    assert adapter.uses_test_gallery and adapter.config()["uses_test_gallery"] is True
    queries = unit(2, 8, seed=52)
    near = F.normalize(queries + 0.05 * unit(2, 8, seed=53), dim=-1)
    gallery = MemoryBank.from_features(torch.cat([near, queries]), torch.full((4,), IMAGE))
    without = adapter.encode_images(queries)
    with_gallery = adapter.encode_images(queries, AdapterContext(gallery=gallery))
    assert not torch.allclose(without, with_gallery)
    ego = adapter.build_hypergraph(queries, gallery=gallery)
    linked = ego.neighbour_memory_index - len(adapter.memory)
    owners = ego.node_owner[ego.n_queries :]
    assert 2 not in linked.tolist() and 3 not in linked.tolist()  # copies of the queries themselves are skipped
    assert 0 in linked[owners == 0].tolist() and 1 in linked[owners == 1].tolist()  # near neighbours are linked


def test_adapter_trains_end_to_end_with_memory_and_groups():
    memory = small_memory(n_images=6, n_texts=12)
    adapter = make_adapter(memory=memory, k=2).train()
    captions = memory.features[memory.modality == TEXT][:4]
    groups = memory.group_ids[memory.modality == TEXT][:4]
    context = AdapterContext(description_features=unit(4, 2, 8, seed=54), group_ids=groups)
    out = adapter.encode_texts(captions, context)
    images = adapter.encode_images(memory.features[:4], AdapterContext(group_ids=memory.group_ids[:4]))
    (out * images).sum().backward()
    for name, parameter in adapter.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert not any(b.requires_grad for b in adapter.buffers())


def test_precomputed_neighbours_reproduce_the_training_forward():
    memory = small_memory()
    adapter = make_adapter(memory=memory, k=2)
    texts = memory.features[memory.modality == TEXT]
    groups = memory.group_ids[memory.modality == TEXT]
    rows = adapter.precompute_neighbours(texts, groups, batch_size=5)
    assert rows.shape == (len(texts), 4)
    descriptions = unit(len(texts), 2, 8, seed=56)
    plain = AdapterContext(description_features=descriptions, group_ids=groups)
    cached = AdapterContext(description_features=descriptions, neighbour_rows=rows)
    batch = torch.tensor([3, 0, 7])
    torch.testing.assert_close(
        adapter.encode_texts(texts[batch], plain.select(batch)), adapter.encode_texts(texts[batch], cached.select(batch))
    )


def test_adapter_state_dict_round_trip_restores_memory():
    adapter = make_adapter(k=2)
    state = adapter.state_dict()
    assert state["memory_features"].shape == (18, 8)
    restored = HypergraphAdapter(8, k=2)
    assert restored.memory is None
    restored.load_state_dict(state)
    assert len(restored.memory) == 18
    x = unit(3, 8, seed=55)
    torch.testing.assert_close(restored.eval().encode_images(x), adapter.encode_images(x))


def test_adapter_errors_are_explicit():
    with pytest.raises(ValueError, match="unknown hyperedge kinds"):
        HypergraphAdapter(8, hyperedges=("semantic", "visual"))
    with pytest.raises(ValueError, match="test_mode"):
        HypergraphAdapter(8, test_mode="oracle")
    without_memory = HypergraphAdapter(8)
    with pytest.raises(ValueError, match="set_memory"):
        without_memory.encode_images(unit(2, 8))
    with pytest.raises(ValueError, match="no LLM descriptions"):
        make_adapter().encode_images(unit(2, 8), AdapterContext(description_features=unit(2, 1, 8)))
    with pytest.raises(ValueError, match=r"\[batch, 8\]"):
        make_adapter().encode_images(unit(2, 6))

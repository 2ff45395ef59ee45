"""Tests for osgha_lite.methods.hypergraph: incidence builders, HGNN convolution, memory bank, adapter."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from osgha_lite.methods import AdapterContext
from osgha_lite.methods.hypergraph import (
    IMAGE,
    TEXT,
    Hypergraph,
    HypergraphAdapter,
    MemoryBank,
    build_query_hypergraph,
    combine_hypergraphs,
    edge_degrees,
    hypergraph_conv,
    hypergraph_conv_rows,
    hypergraph_from_edges,
    knn_hyperedges,
    hubness_beta_squared,
    hubness_cohesion,
    hubness_phase,
    memory_links,
    memory_neighbours,
    nearest_neighbour_similarities,
    nearest_neighbours,
    neighbour_table,
    paired_rows,
    semantic_hyperedges,
    vertex_degrees,
)
from osgha_lite.methods.hypergraph import HUBNESS_PHASE_SCALE



pytestmark = pytest.mark.usefixtures("single_thread")


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


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_rows", [0, 1, 4, 9])
def test_hypergraph_conv_rows_are_the_first_rows_and_commute_with_a_projection(seed, n_rows):
    H, w = random_incidence(9, 7, 0.35, seed)
    X = unit(9, 5, seed=seed + 10, dtype=torch.float64)
    P = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = dense_reference_conv(X, H, w)[:n_rows]
    for incidence in (H, H.to_sparse()):
        rows = hypergraph_conv_rows(X, incidence, w, n_rows)
        assert rows.shape == (n_rows, 5)
        torch.testing.assert_close(rows, expected)
        torch.testing.assert_close(rows @ P, hypergraph_conv(X @ P, incidence, w)[:n_rows])
    if n_rows:
        assert torch.all(hypergraph_conv_rows(X, H, w, n_rows)[0] == 0)  # the isolated vertex
    assert torch.all(hypergraph_conv_rows(X, H[:, :0], w[:0], n_rows) == 0)
    with pytest.raises(ValueError, match="n_rows 10 outside"):
        hypergraph_conv_rows(X, H, w, 10)


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


@pytest.mark.parametrize("init", ["pca", "random"])
def test_adapter_forward_matches_dense_computation(init):
    adapter = make_adapter(reduced_dim=4, k=2, alpha=0.3, num_layers=2, init=init)
    queries, descriptions = unit(3, 8, seed=40), unit(3, 2, 8, seed=41)
    with torch.no_grad():
        out = adapter.encode_texts(queries, AdapterContext(description_features=descriptions))
        ego = adapter.build_hypergraph(queries, descriptions)
        H = ego.graph.dense_incidence()
        z = ego.node_features @ adapter.down.weight.T
        for layer, theta in enumerate(adapter.thetas):
            z = dense_reference_conv(z, H, ego.graph.edge_weights, theta.weight.T)
            if layer < len(adapter.thetas) - 1:  # ReLU between layers, none after the last (HGNN's output layer)
                z = torch.relu(z)
        message = z[:3] @ adapter.up.weight.T
        expected = F.normalize(0.3 * message + 0.7 * queries, dim=-1)
    torch.testing.assert_close(out, expected)
    assert out.shape == (3, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize("hyperedges", [("semantic", "knn"), ("semantic", "pair")])
def test_one_layer_adapter_projects_only_the_query_rows_with_the_same_values_and_gradients(hyperedges):
    """The one-layer forward aggregates before projecting; values and weight gradients match the
    project-every-node formula of the class docstring."""
    adapter = make_adapter(reduced_dim=4, k=2, alpha=0.3, hyperedges=hyperedges).double().train()
    queries, descriptions = unit(3, 8, seed=43, dtype=torch.float64), unit(3, 2, 8, seed=44, dtype=torch.float64)
    out = adapter.encode_texts(queries, AdapterContext(description_features=descriptions))
    weights = unit(3, 8, seed=45, dtype=torch.float64)  # a linear read-out (|out| is 1, so out**2 has no gradient)
    fast = torch.autograd.grad((out * weights).sum(), [adapter.down.weight, adapter.thetas[0].weight, adapter.up.weight])
    ego = adapter.build_hypergraph(queries, descriptions)
    z = dense_reference_conv(ego.node_features @ adapter.down.weight.T, ego.graph.dense_incidence().double(),
                             ego.graph.edge_weights.double(), adapter.thetas[0].weight.T)
    expected = F.normalize(0.3 * (z[:3] @ adapter.up.weight.T) + 0.7 * queries, dim=-1)
    torch.testing.assert_close(out, expected)
    reference = torch.autograd.grad((expected * weights).sum(),
                                    [adapter.down.weight, adapter.thetas[0].weight, adapter.up.weight])
    for got, want in zip(fast, reference):
        assert want.abs().max() > 1e-3
        torch.testing.assert_close(got, want)


def test_adapter_without_reduction_convolves_in_full_dimension():
    adapter = make_adapter(use_reduction=False, k=2, alpha=0.5)
    assert isinstance(adapter.down, torch.nn.Identity) and adapter.thetas[0].weight.shape == (8, 8)
    assert adapter.reduced_dim == 8
    queries = unit(4, 8, seed=42)
    with torch.no_grad():
        out = adapter.encode_images(queries)
        ego = adapter.build_hypergraph(queries)
        # Single layer, no reduction: the last conv has no ReLU; pca init starts from Theta = I.
        torch.testing.assert_close(adapter.thetas[0].weight, torch.eye(8))
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


@pytest.mark.parametrize("options", [
    {"k": 2},
    {"k": 2, "hyperedges": ("semantic", "pair"), "hubness_weight": 1.0, "hubness_k": 3},
    {"k": 2, "hyperedges": ("knn", "pair"), "split_modalities": False, "hubness_weight": 0.5, "hubness_k": 4},
])
def test_precomputed_links_reproduce_the_training_forward(options):
    memory = small_memory()
    adapter = make_adapter(memory=memory, **options)
    texts = memory.features[memory.modality == TEXT]
    groups = memory.group_ids[memory.modality == TEXT]
    links = adapter.precompute_links(texts, "text", groups, batch_size=5)
    assert len(links) == len(texts)
    if "knn" in adapter.hyperedges:
        assert links.neighbour_rows.shape == (len(texts), (2 if adapter.split_modalities else 1) * 2)
    descriptions = unit(len(texts), 2, 8, seed=56)
    plain = AdapterContext(description_features=descriptions, group_ids=groups)
    cached = AdapterContext(description_features=descriptions, links=links)
    batch = torch.tensor([3, 0, 7])
    torch.testing.assert_close(
        adapter.encode_texts(texts[batch], plain.select(batch)), adapter.encode_texts(texts[batch], cached.select(batch))
    )
    # A wider table searched once gives the same links as the adapter's own search.
    table = neighbour_table(texts, memory, "text", 4, 6, groups)
    from_table = adapter.precompute_links(texts, "text", groups, table=table)
    for name in ("neighbour_rows", "pair_rows", "cohesion"):
        torch.testing.assert_close(getattr(from_table, name), getattr(links, name))
    with pytest.raises(ValueError, match="too small"):
        adapter.precompute_links(texts, "text", groups, table=neighbour_table(texts, memory, "text", 1, 1, groups))


def test_adapter_state_dict_holds_weights_and_restores_with_the_same_memory():
    memory = small_memory()
    adapter = make_adapter(memory=memory, k=2, hyperedges=("knn", "pair"), hubness_weight=1.0, hubness_k=3)
    with torch.no_grad():
        for parameter in adapter.parameters():  # move away from the initialisation
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(57)))
    state = adapter.state_dict()
    assert not any(key.startswith("memory_") for key in state)  # the bank is rebuilt, not stored
    assert set(state) == {"down.weight", "up.weight", "thetas.0.weight", "hubness_centre"}
    restored = HypergraphAdapter(8, k=2, hyperedges=("knn", "pair"), hubness_weight=1.0, hubness_k=3, init="random")
    assert restored.memory is None
    restored.set_memory(memory)
    restored.load_state_dict(state)
    assert len(restored.memory) == 18
    x = unit(3, 8, seed=55)
    torch.testing.assert_close(restored.eval().encode_images(x), adapter.encode_images(x))
    torch.testing.assert_close(restored.encode_texts(x), adapter.encode_texts(x))


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


# ---------------------------------------------------------------- pair hyperedges


def pair_memory():
    """3 images (rows 0-2) and 7 captions (rows 3-9); image 0 has captions 3, 4, 9, image 1 has 5, 6, 7, image 2 has 8."""
    text_to_image = torch.tensor([0, 0, 1, 1, 1, 2, 0])
    return MemoryBank.from_train_split(unit(3, 8, seed=60), unit(7, 8, seed=61), text_to_image)


def test_paired_rows_are_the_other_modality_of_the_same_image():
    memory = pair_memory()
    partners = paired_rows(memory, torch.tensor([[0, 4], [-1, 9], [2, 8]]))
    assert partners.shape == (3, 2, 3)  # width = the largest group (3 captions)
    assert partners.tolist() == [
        [[3, 4, 9], [0, -1, -1]],
        [[-1, -1, -1], [0, -1, -1]],
        [[8, -1, -1], [2, -1, -1]],
    ]
    # A subsampled bank may miss a caption's image: no partner then.
    without_image_0 = MemoryBank(memory.features[1:], memory.modality[1:], memory.group_ids[1:], memory.source_index[1:])
    assert paired_rows(without_image_0, torch.tensor([2])).tolist() == [[-1, -1, -1]]  # caption 3 (row 2 now)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_memory_links_pairs_match_brute_force(modality):
    memory = small_memory()  # 6 images, 12 captions, caption j belongs to image j % 6
    queries, groups = unit(4, 8, seed=62), torch.tensor([0, 1, 2, 3])
    links = memory_links(queries, memory, modality, k=2, query_groups=groups, use_knn=False, use_pairs=True)
    own = IMAGE if modality == "image" else TEXT
    for q in range(4):
        pool = [r for r in range(len(memory)) if memory.modality[r] == own and memory.group_ids[r] != groups[q]]
        nearest = sorted(pool, key=lambda r: -float(memory.features[r] @ queries[q]))[:2]
        expected = sorted(
            r for r in range(len(memory))
            if memory.modality[r] != own and int(memory.group_ids[r]) in {int(memory.group_ids[n]) for n in nearest}
        )
        got = links.pair_rows[q]
        assert sorted(got[got >= 0].tolist()) == expected
        assert not torch.any(memory.group_ids[got[got >= 0]] == groups[q])
    assert links.neighbour_rows.shape == (4, 0) and torch.equal(links.cohesion, torch.zeros(4))
    sliced = links[torch.tensor([2, 0])]
    assert torch.equal(sliced.pair_rows, links.pair_rows[[2, 0]]) and len(sliced) == 2


def test_build_query_hypergraph_pair_hyperedge_structure():
    memory = small_memory()
    query = unit(2, 8, seed=63)
    ego = build_query_hypergraph(query, candidates=memory, k=1, pair_rows=torch.tensor([[7, -1, 9], [-1, -1, -1]]),
                                 pair_weight=2.0)
    # kNN first (query 0: copies 2, 3; query 1: copies 4, 5), then the pair copies of query 0 (nodes 6, 7).
    assert ego.graph.n_nodes == 8 and ego.graph.n_edges == 5
    assert ego.graph.members(4) == [0, 6, 7]  # query 1 has no partner: no pair hyperedge
    assert ego.graph.edge_weights.tolist() == [1.0, 1.0, 1.0, 1.0, 2.0]
    assert ego.neighbour_memory_index[-2:].tolist() == [7, 9]
    torch.testing.assert_close(ego.node_features[6:], memory.features[[7, 9]])
    with pytest.raises(ValueError, match="pair_rows"):
        build_query_hypergraph(query, candidates=memory, use_knn=False, pair_rows=torch.tensor([[99], [0]]))


# ---------------------------------------------------------------- hubness correction


def test_hubness_cohesion_matches_brute_force():
    memory = small_memory()
    queries, groups = unit(3, 8, seed=64), torch.tensor([1, 2, 3])
    cohesion = hubness_cohesion(queries, memory, "image", k=3, query_groups=groups)
    for q in range(3):
        captions = [r for r in range(len(memory)) if memory.modality[r] == TEXT and memory.group_ids[r] != groups[q]]
        sims = sorted((float(memory.features[r] @ queries[q]) for r in captions), reverse=True)[:3]
        assert cohesion[q].item() == pytest.approx(sum(sims) / 3, abs=1e-6)
    values = nearest_neighbour_similarities(queries, memory.features[:6], k=2)[1]
    torch.testing.assert_close(values[:, 0], (queries @ memory.features[:6].T).max(dim=1).values)


def test_hubness_phase_gives_unit_vectors_and_the_csls_correction():
    g = torch.Generator().manual_seed(65)
    z_v, z_t = unit(20, 16, seed=66, dtype=torch.float64), unit(30, 16, seed=67, dtype=torch.float64)
    r_v = 0.2 + 0.5 * torch.rand(20, generator=g, dtype=torch.float64)
    r_t = 0.2 + 0.5 * torch.rand(30, generator=g, dtype=torch.float64)
    c_v, c_t, weight = 0.45, 0.4, 1.0
    beta2 = hubness_beta_squared(weight)
    assert beta2 == pytest.approx(0.5 / (HUBNESS_PHASE_SCALE + 0.5))
    u_v = torch.cat([(1 - beta2) ** 0.5 * z_v, hubness_phase(r_v, c_v, "image", weight)], dim=1)
    u_t = torch.cat([(1 - beta2) ** 0.5 * z_t, hubness_phase(r_t, c_t, "text", weight)], dim=1)
    torch.testing.assert_close(u_v.norm(dim=1), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(u_t.norm(dim=1), torch.ones(30, dtype=torch.float64))
    # Exactly: (1 - b^2) z_v.z_t - b^2 sin(gamma (r_v - c_v + r_t - c_t)).
    shift = HUBNESS_PHASE_SCALE * ((r_v - c_v)[:, None] + (r_t - c_t)[None, :])
    torch.testing.assert_close(u_v @ u_t.T, (1 - beta2) * (z_v @ z_t.T) - beta2 * torch.sin(shift))
    # To first order: CSLS with weight lambda, z.z - lambda/2 (r_v + r_t) + const, up to the scale 1 - b^2.
    csls = z_v @ z_t.T - weight / 2 * ((r_v - c_v)[:, None] + (r_t - c_t)[None, :])
    assert torch.max(torch.abs((u_v @ u_t.T) / (1 - beta2) - csls)) < 0.02
    # A hub caption (high cohesion) loses score against every image.
    hub = hubness_phase(torch.tensor([0.9]), c_t, "text", weight)
    plain = hubness_phase(torch.tensor([0.4]), c_t, "text", weight)
    phases_v = hubness_phase(r_v, c_v, "image", weight)
    assert torch.all(phases_v.float() @ hub.T < phases_v.float() @ plain.T)


def test_adapter_with_hubness_appends_the_phase_of_its_cohesion():
    memory = small_memory()
    options = dict(k=2, hyperedges=("pair",), hubness_k=3)
    corrected = make_adapter(memory=memory, hubness_weight=1.0, **options)
    plain = make_adapter(memory=memory, hubness_weight=0.0, **options)
    assert corrected.out_dim == 10 and plain.out_dim == 8 and corrected.config()["out_dim"] == 10
    x = unit(5, 8, seed=68)
    out = corrected.encode_images(x)
    assert out.shape == (5, 10)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    beta2 = hubness_beta_squared(1.0)
    torch.testing.assert_close(out[:, :8] / (1 - beta2) ** 0.5, plain.encode_images(x))
    # The centre is the mean cohesion of the memory's own images (each without its own group).
    images = memory.modality == IMAGE
    centre = hubness_cohesion(memory.features[images], memory, "image", 3, memory.group_ids[images]).mean()
    torch.testing.assert_close(corrected.hubness_centre[IMAGE], centre)
    expected = hubness_phase(hubness_cohesion(x, memory, "image", 3), centre, "image", 1.0)
    torch.testing.assert_close(out[:, 8:], expected)
    texts = corrected.encode_texts(x)
    assert not torch.allclose(texts[:, 8:], out[:, 8:])  # the text phase turns the other way


def test_pca_init_starts_from_the_principal_subspace_of_the_memory():
    g = torch.Generator().manual_seed(69)
    scales = torch.tensor([6.0, 4.0, 3.0, 0.5, 0.4, 0.3, 0.2, 0.1])
    images = F.normalize(torch.randn(30, 8, generator=g) * scales, dim=-1)
    texts = F.normalize(torch.randn(60, 8, generator=g) * scales, dim=-1)
    memory = MemoryBank.from_train_split(images, texts, torch.arange(60) % 30)
    adapter = make_adapter(memory=memory, reduced_dim=3, k=2, alpha=1.0, hyperedges=("knn",))
    down = adapter.down.weight
    torch.testing.assert_close(down @ down.T, torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(adapter.up.weight, down.T)
    centred = memory.features - memory.features.mean(0)
    top = torch.linalg.svd(centred, full_matrices=False).Vh[:3]
    torch.testing.assert_close(down.T @ down, top.T @ top, atol=1e-5, rtol=0)
    # Before training, the message is the parameter-free convolution projected onto that subspace.
    x = unit(4, 8, seed=70)
    with torch.no_grad():
        ego = adapter.build_hypergraph(x)
        conv = dense_reference_conv(ego.node_features, ego.graph.dense_incidence(), ego.graph.edge_weights)[:4]
        torch.testing.assert_close(adapter.encode_texts(x), F.normalize(conv @ top.T @ top, dim=-1), atol=1e-5,
                                   rtol=0)
    random_init = make_adapter(memory=memory, reduced_dim=3, init="random")
    assert not torch.allclose(random_init.down.weight @ random_init.down.weight.T, torch.eye(3))


def test_inductive_with_pairs_and_hubness_ignores_other_queries():
    adapter = make_adapter(k=2, hyperedges=("semantic", "knn", "pair"), hubness_weight=1.2, hubness_k=4, num_layers=2)
    queries, descriptions = unit(6, 8, seed=71), unit(6, 3, 8, seed=72)
    alone = adapter.adapt(queries[2:3], descriptions[2:3], modality="text")
    together = adapter.adapt(queries, descriptions, modality="text")[2:3]
    shuffled = adapter.adapt(torch.cat([unit(4, 8, seed=73), queries[2:3]]),
                             torch.cat([unit(4, 3, 8, seed=74), descriptions[2:3]]), modality="text")[4:5]
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, shuffled, rtol=0, atol=1e-6)
    for kind in ("image", "text"):  # the image and text sides are not the same function
        assert adapter.adapt(queries, modality=kind).shape == (6, 10)
    assert not torch.allclose(adapter.adapt(queries, modality="image"), adapter.adapt(queries, modality="text"))


def test_adapters_on_the_same_bank_share_its_decomposition_and_cohesion(monkeypatch):
    from osgha_lite.methods.hypergraph import adapter as adapter_module

    monkeypatch.setattr(adapter_module, "_DERIVED", {})
    calls = []
    svd = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: calls.append(1) or svd(*a, **k))
    first = make_adapter(reduced_dim=4, hubness_weight=1.0, hubness_k=3, memory=small_memory(seed=7))
    second = make_adapter(reduced_dim=4, hubness_weight=1.0, hubness_k=3, memory=small_memory(seed=7))
    assert len(calls) == 1
    torch.testing.assert_close(first.down.weight, second.down.weight, rtol=0, atol=0)
    torch.testing.assert_close(first.hubness_centre, second.hubness_centre, rtol=0, atol=0)
    other = make_adapter(reduced_dim=4, hubness_weight=1.0, hubness_k=3, memory=small_memory(seed=8))
    assert len(calls) == 2 and not torch.equal(other.down.weight, first.down.weight)
    fresh = HypergraphAdapter(8, reduced_dim=4, hubness_weight=1.0, hubness_k=3)
    fresh._init_principal_subspace(small_memory(seed=7).features)  # without a digest: computed again
    assert len(calls) == 3 and torch.equal(fresh.down.weight, first.down.weight)

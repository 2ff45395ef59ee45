r"""Weighted hypergraphs over one node set, their builders, and HGNN's convolution.

A hypergraph's hyperedges join several nodes at once. Nodes here are
images, captions and the captions' LLM descriptions, all vectors of one
frozen embedding space.

* :class:`Hypergraph` - incidence as index lists (``node_index``,
  ``edge_index``) plus edge weights; :meth:`Hypergraph.incidence` gives the
  sparse COO matrix ``H`` (``n_nodes x n_edges``).
* :func:`semantic_hyperedges`, :func:`knn_hyperedges`,
  :func:`combine_hypergraphs`, :func:`hypergraph_from_edges` - pure builders;
  :func:`nearest_neighbours` and :func:`nearest_neighbour_similarities` - the
  cosine search behind similarity hyperedges and the memory links
  (:mod:`osgha_lite.methods.hypergraph.links`).
* :func:`hypergraph_conv` - HGNN's convolution with sparse matmuls
  (:func:`vertex_degrees`, :func:`edge_degrees`; the formula is in its
  docstring); :func:`hypergraph_conv_rows` - the first rows of it only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Hypergraph",
    "combine_hypergraphs",
    "edge_degrees",
    "hypergraph_conv",
    "hypergraph_conv_rows",
    "hypergraph_from_edges",
    "knn_hyperedges",
    "nearest_neighbour_similarities",
    "nearest_neighbours",
    "semantic_hyperedges",
    "vertex_degrees",
]


# --------------------------------------------------------------------------- incidence


@dataclass(frozen=True)
class Hypergraph:
    """A weighted hypergraph as incidence index lists.

    Entry ``t`` says node ``node_index[t]`` belongs to hyperedge
    ``edge_index[t]``, i.e. ``H[node_index[t], edge_index[t]] = 1``.
    ``edge_weights[e]`` is :math:`W_{ee}`; the number of hyperedges is
    ``len(edge_weights)``.
    """

    node_index: Tensor
    edge_index: Tensor
    edge_weights: Tensor
    n_nodes: int

    def __post_init__(self) -> None:
        if self.node_index.shape != self.edge_index.shape or self.node_index.ndim != 1:
            raise ValueError(
                "Hypergraph: node_index and edge_index must be 1-D of equal length, got "
                f"{tuple(self.node_index.shape)} and {tuple(self.edge_index.shape)}"
            )
        if self.node_index.numel():
            if int(self.node_index.min()) < 0 or int(self.node_index.max()) >= self.n_nodes:
                raise ValueError(f"Hypergraph: node_index outside [0, {self.n_nodes})")
            if int(self.edge_index.min()) < 0 or int(self.edge_index.max()) >= self.n_edges:
                raise ValueError(f"Hypergraph: edge_index outside [0, {self.n_edges})")

    @property
    def n_edges(self) -> int:
        return int(self.edge_weights.numel())

    @property
    def nnz(self) -> int:
        return int(self.node_index.numel())

    def incidence(self, dtype: torch.dtype | None = None) -> Tensor:
        """Sparse COO incidence matrix ``H`` of shape ``[n_nodes, n_edges]`` (coalesced)."""
        dtype = dtype or self.edge_weights.dtype
        indices = torch.stack([self.node_index, self.edge_index])
        values = torch.ones(self.nnz, dtype=dtype, device=self.node_index.device)
        # Indices were range-checked in __post_init__, so the per-call invariant check is skipped.
        shape = (self.n_nodes, self.n_edges)
        return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()

    def dense_incidence(self, dtype: torch.dtype | None = None) -> Tensor:
        return self.incidence(dtype).to_dense()

    def members(self, edge: int) -> list[int]:
        """Sorted node ids of hyperedge ``edge`` (for inspection and tests)."""
        return sorted(self.node_index[self.edge_index == edge].tolist())

    def to(self, device: torch.device | str) -> Hypergraph:
        return Hypergraph(
            self.node_index.to(device), self.edge_index.to(device), self.edge_weights.to(device), self.n_nodes
        )


def empty_hypergraph(n_nodes: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Hypergraph:
    index = torch.zeros(0, dtype=torch.long, device=device)
    return Hypergraph(index, index.clone(), torch.zeros(0, dtype=dtype, device=device), n_nodes)


def hypergraph_from_edges(
    edges: Sequence[Sequence[int]], n_nodes: int, weights: float | Sequence[float] = 1.0
) -> Hypergraph:
    """A hypergraph from explicit node lists, one list per hyperedge (for small graphs and tests)."""
    node_index = [int(node) for edge in edges for node in edge]
    edge_index = [e for e, edge in enumerate(edges) for _ in edge]
    if isinstance(weights, (int, float)):
        edge_weights = torch.full((len(edges),), float(weights))
    else:
        edge_weights = torch.as_tensor(weights, dtype=torch.float32)
        if edge_weights.shape != (len(edges),):
            raise ValueError(f"hypergraph_from_edges: {len(edges)} edges but {edge_weights.numel()} weights")
    return Hypergraph(
        torch.tensor(node_index, dtype=torch.long), torch.tensor(edge_index, dtype=torch.long), edge_weights, n_nodes
    )


def semantic_hyperedges(
    caption_node_ids: Sequence[int] | Tensor,
    description_node_ids_per_caption: Sequence[Sequence[int]] | Tensor,
    n_nodes: int,
    weight: float = 1.0,
) -> Hypergraph:
    """One hyperedge ``{caption} ∪ {its descriptions}`` per caption that has descriptions.

    ``description_node_ids_per_caption[i]`` lists the description nodes of
    caption ``caption_node_ids[i]``: a list of lists, or a ``[n_captions, K]``
    long tensor where negative entries are padding. A caption with no
    descriptions gets no hyperedge (the "without LLM descriptions" ablation).
    """
    caption_ids = torch.as_tensor(caption_node_ids, dtype=torch.long).reshape(-1)
    if isinstance(description_node_ids_per_caption, Tensor):
        rows = [row[row >= 0].tolist() for row in description_node_ids_per_caption]
    else:
        rows = [list(row) for row in description_node_ids_per_caption]
    if len(rows) != caption_ids.numel():
        raise ValueError(
            f"semantic_hyperedges: {caption_ids.numel()} captions but {len(rows)} description lists"
        )
    edges = [[int(c), *row] for c, row in zip(caption_ids.tolist(), rows) if row]
    return hypergraph_from_edges(edges, n_nodes, weight)


@torch.no_grad()
def nearest_neighbours(
    queries: Tensor,
    candidates: Tensor,
    k: int,
    query_groups: Tensor | None = None,
    candidate_groups: Tensor | None = None,
    max_similarity: float | None = None,
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """The ``k`` most cosine-similar candidates of each query.

    Candidate ``j`` is excluded for query ``i`` when
    ``query_groups[i] == candidate_groups[j]`` (both given), or when their
    cosine exceeds ``max_similarity`` (given). Returns ``(indices, valid)``,
    both ``[n_queries, min(k, n_candidates)]``, most similar first;
    ``valid[i, j]`` is False where fewer than ``k`` candidates were allowed.
    Work is done in chunks of ``chunk_size`` queries to bound memory.
    """
    indices, values = nearest_neighbour_similarities(
        queries, candidates, k, query_groups, candidate_groups, max_similarity, chunk_size
    )
    return indices, torch.isfinite(values)


@torch.no_grad()
def nearest_neighbour_similarities(
    queries: Tensor,
    candidates: Tensor,
    k: int,
    query_groups: Tensor | None = None,
    candidate_groups: Tensor | None = None,
    max_similarity: float | None = None,
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """:func:`nearest_neighbours` with the cosines instead of the mask: ``(indices, values)``, -inf where invalid."""
    if (query_groups is None) != (candidate_groups is None):
        raise ValueError("nearest_neighbours: pass both query_groups and candidate_groups, or neither")
    n_queries, n_candidates = queries.shape[0], candidates.shape[0]
    width = min(int(k), n_candidates)
    if width <= 0 or n_queries == 0:
        empty = torch.zeros((n_queries, max(width, 0)), dtype=torch.long, device=queries.device)
        return empty, empty.to(queries.dtype)
    queries = F.normalize(queries, dim=-1)
    candidates = F.normalize(candidates, dim=-1)
    if query_groups is not None:
        query_groups = torch.as_tensor(query_groups, device=queries.device)
        candidate_groups = torch.as_tensor(candidate_groups, device=queries.device)
    all_indices, all_values = [], []
    for start in range(0, n_queries, chunk_size):
        sims = queries[start : start + chunk_size] @ candidates.T
        if max_similarity is not None:
            sims.masked_fill_(sims > max_similarity, float("-inf"))
        if query_groups is not None:
            sims.masked_fill_(query_groups[start : start + chunk_size, None] == candidate_groups[None, :], float("-inf"))
        values, indices = sims.topk(width, dim=1)
        all_indices.append(indices)
        all_values.append(values)
    return torch.cat(all_indices), torch.cat(all_values)


def knn_hyperedges(
    features: Tensor,
    k: int,
    query_node_ids: Tensor | None = None,
    candidate_node_ids: Tensor | None = None,
    group_ids: Tensor | None = None,
    weight: float = 1.0,
    chunk_size: int = 2048,
) -> Hypergraph:
    """Similarity hyperedges: each query node with its ``k`` nearest candidates by cosine.

    All nodes live in one set with ``features[n]`` for node ``n`` (images and
    texts alike, so neighbours come from both modalities). Queries default to
    every node, candidates to every node. A node is never its own neighbour;
    with ``group_ids`` (e.g. the image index of every image and caption
    node), no node links to a candidate of its own group either. A query
    with no allowed candidate gets no hyperedge (never a singleton edge).
    """
    n_nodes = features.shape[0]
    device = features.device
    queries = torch.arange(n_nodes, device=device) if query_node_ids is None else torch.as_tensor(query_node_ids, device=device)
    candidates = torch.arange(n_nodes, device=device) if candidate_node_ids is None else torch.as_tensor(candidate_node_ids, device=device)
    # Exclusion by equal keys: node ids (the node itself), or group ids, which also cover the node itself.
    if group_ids is None:
        query_keys, candidate_keys = queries, candidates
    else:
        groups = torch.as_tensor(group_ids, device=device)
        query_keys, candidate_keys = groups[queries], groups[candidates]
    neighbours, valid = nearest_neighbours(
        features[queries], features[candidates], k, query_keys, candidate_keys, chunk_size=chunk_size
    )
    has_edge = valid.any(dim=1)
    edge_of_query = torch.cumsum(has_edge.long(), 0) - 1
    rows, cols = valid.nonzero(as_tuple=True)
    node_index = torch.cat([queries[has_edge], candidates[neighbours[rows, cols]]])
    edge_index = torch.cat([edge_of_query[has_edge], edge_of_query[rows]])
    edge_weights = torch.full((int(has_edge.sum()),), float(weight), dtype=features.dtype, device=device)
    return Hypergraph(node_index, edge_index, edge_weights, n_nodes)


def combine_hypergraphs(*graphs: Hypergraph) -> Hypergraph:
    """Union of the hyperedges of several hypergraphs over the same nodes (edges renumbered in order)."""
    if not graphs:
        raise ValueError("combine_hypergraphs: give at least one hypergraph")
    n_nodes = graphs[0].n_nodes
    if any(g.n_nodes != n_nodes for g in graphs):
        raise ValueError(f"combine_hypergraphs: node counts differ: {[g.n_nodes for g in graphs]}")
    offsets = [0]
    for graph in graphs[:-1]:
        offsets.append(offsets[-1] + graph.n_edges)
    dtype = torch.result_type(*(g.edge_weights for g in graphs)) if len(graphs) > 1 else graphs[0].edge_weights.dtype
    return Hypergraph(
        torch.cat([g.node_index for g in graphs]),
        torch.cat([g.edge_index + off for g, off in zip(graphs, offsets)]),
        torch.cat([g.edge_weights.to(dtype) for g in graphs]),
        n_nodes,
    )



# --------------------------------------------------------------------------- convolution


def vertex_degrees(H: Tensor, edge_weights: Tensor) -> Tensor:
    r""":math:`d(v) = \sum_e W_{ee} H_{ve}` for every vertex (``H`` sparse COO or dense)."""
    if H.is_sparse:
        H = H.coalesce()
        rows, cols = H.indices()
        contributions = H.values() * edge_weights[cols]
        return torch.zeros(H.shape[0], dtype=contributions.dtype, device=H.device).index_add(0, rows, contributions)
    return H @ edge_weights


def edge_degrees(H: Tensor) -> Tensor:
    r""":math:`\delta(e) = \sum_v H_{ve}` for every hyperedge (``H`` sparse COO or dense)."""
    if H.is_sparse:
        H = H.coalesce()
        _, cols = H.indices()
        return torch.zeros(H.shape[1], dtype=H.dtype, device=H.device).index_add(0, cols, H.values())
    return H.sum(dim=0)


def _safe_power(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` where ``x > 0``, else 0 (the convention for empty vertices and edges)."""
    positive = x > 0
    safe = torch.where(positive, x, torch.ones_like(x))  # keeps the unused branch finite for autograd
    return torch.where(positive, safe**exponent, torch.zeros_like(x))


def _normalisers(H: Tensor, edge_weights: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`d(v)^{-1/2}` per vertex and :math:`W_{ee} / \delta(e)` per hyperedge (``0^{-p} = 0``)."""
    inv_sqrt_dv = _safe_power(vertex_degrees(H, edge_weights), -0.5)
    return inv_sqrt_dv, edge_weights * _safe_power(edge_degrees(H), -1.0)


def hypergraph_conv(X: Tensor, H: Tensor, edge_weights: Tensor, Theta: Tensor | None = None) -> Tensor:
    r"""HGNN hypergraph convolution (Feng et al. 2019), without bias or activation.

    .. math::

        X' = D_v^{-1/2}\, H\, W\, D_e^{-1}\, H^\top D_v^{-1/2}\, X\, \Theta

    with incidence :math:`H \in \mathbb{R}^{n \times m}` (sparse COO or
    dense), :math:`W = \mathrm{diag}(\text{edge\_weights})`, vertex degrees
    :math:`(D_v)_{vv} = \sum_e W_{ee} H_{ve}`, edge degrees
    :math:`(D_e)_{ee} = \sum_v H_{ve}`, and ``Theta`` of shape
    ``[d_in, d_out]`` (None means the identity).

    Isolated vertices (:math:`d(v) = 0`, no hyperedge, or only weight-0
    hyperedges) and empty hyperedges (:math:`\delta(e) = 0`) use the
    convention :math:`0^{-1/2} = 0^{-1} = 0`: an isolated vertex receives the
    zero message and sends nothing, so with a residual connection it passes
    through unchanged. With no hyperedges at all the result is all zeros.
    Cost: two sparse-dense products with ``nnz(H)`` entries. Half-precision
    inputs (mixed precision) are computed in float32 and returned as float32.
    """
    if H.ndim != 2 or H.shape[0] != X.shape[0]:
        raise ValueError(f"hypergraph_conv: H has shape {tuple(H.shape)}, expected [{X.shape[0]}, n_edges]")
    if edge_weights.shape != (H.shape[1],):
        raise ValueError(
            f"hypergraph_conv: edge_weights has shape {tuple(edge_weights.shape)}, expected ({H.shape[1]},)"
        )
    if X.dtype in (torch.float16, torch.bfloat16):
        # Sparse products need float32; under mixed precision the convolution runs in float32.
        with torch.autocast(X.device.type, enabled=False):
            return hypergraph_conv(X.float(), H, edge_weights, None if Theta is None else Theta.float())
    with torch.autocast(X.device.type, enabled=False):
        return _hypergraph_conv(X, H, edge_weights, Theta)


def _hypergraph_conv(X: Tensor, H: Tensor, edge_weights: Tensor, Theta: Tensor | None) -> Tensor:
    Y = X if Theta is None else X @ Theta.to(X.dtype)
    if H.shape[1] == 0 or (H.is_sparse and H._nnz() == 0):
        return Y.new_zeros(Y.shape)
    H = H.to(Y.dtype)
    edge_weights = edge_weights.to(Y.dtype)
    if H.is_sparse:
        H = H.coalesce()
    inv_sqrt_dv, edge_scale = _normalisers(H, edge_weights)
    Y = inv_sqrt_dv[:, None] * Y
    if H.is_sparse:
        H_transposed = torch.sparse_coo_tensor(
            H.indices().flip(0), H.values(), (H.shape[1], H.shape[0]), check_invariants=False
        ).coalesce()
        messages = torch.sparse.mm(H_transposed, Y)  # H^T Dv^-1/2 X Theta
        out = torch.sparse.mm(H, edge_scale[:, None] * messages)
    else:
        out = H @ (edge_scale[:, None] * (H.T @ Y))
    return inv_sqrt_dv[:, None] * out


def hypergraph_conv_rows(X: Tensor, H: Tensor, edge_weights: Tensor, n_rows: int) -> Tensor:
    r"""Rows ``[0, n_rows)`` of :func:`hypergraph_conv` ``(X, H, edge_weights)`` (no ``Theta``).

    .. math::

        X'_{v} = d(v)^{-1/2} \sum_{e \ni v} \frac{W_{ee}}{\delta(e)}
                 \sum_{u \in e} d(u)^{-1/2} X_u, \qquad v < n_{rows}

    The convolution is linear in ``X`` and acts on it from the left, so
    for any right factor :math:`P`, ``hypergraph_conv(X @ P)[:n_rows]``
    equals ``hypergraph_conv_rows(X, ...) @ P``. A one-layer adapter whose
    output needs only its query rows (:class:`~osgha_lite.methods.hypergraph.adapter.HypergraphAdapter`)
    therefore aggregates the raw node features first and projects only
    ``n_rows`` vectors, instead of projecting every node. Same conventions
    as :func:`hypergraph_conv` (isolated vertices and empty hyperedges give
    zero); ``H`` sparse COO or dense; float32 under mixed precision.
    """
    if H.ndim != 2 or H.shape[0] != X.shape[0]:
        raise ValueError(f"hypergraph_conv_rows: H has shape {tuple(H.shape)}, expected [{X.shape[0]}, n_edges]")
    if edge_weights.shape != (H.shape[1],):
        raise ValueError(
            f"hypergraph_conv_rows: edge_weights has shape {tuple(edge_weights.shape)}, expected ({H.shape[1]},)"
        )
    if not 0 <= n_rows <= X.shape[0]:
        raise ValueError(f"hypergraph_conv_rows: n_rows {n_rows} outside [0, {X.shape[0]}]")
    with torch.autocast(X.device.type, enabled=False):
        X = X.float() if X.dtype in (torch.float16, torch.bfloat16) else X
        if H.shape[1] == 0 or (H.is_sparse and H._nnz() == 0):
            return X.new_zeros((n_rows, X.shape[1]))
        H = H.to(X.dtype)
        edge_weights = edge_weights.to(X.dtype)
        H = H.coalesce() if H.is_sparse else H.to_sparse().coalesce()
        inv_sqrt_dv, edge_scale = _normalisers(H, edge_weights)
        nodes, edges = H.indices()
        values = H.values()
        # messages[e] = W_ee / delta(e) * sum_{u in e} H_ue d(u)^-1/2 X_u
        gathered = (values * inv_sqrt_dv[nodes])[:, None] * X[nodes]
        messages = X.new_zeros((H.shape[1], X.shape[1])).index_add(0, edges, gathered)
        messages = edge_scale[:, None] * messages
        keep = nodes < n_rows
        rows, row_edges = nodes[keep], edges[keep]
        out = X.new_zeros((n_rows, X.shape[1])).index_add(0, rows, values[keep][:, None] * messages[row_edges])
        return inv_sqrt_dv[:n_rows, None] * out

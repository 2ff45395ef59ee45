r"""Hypergraphs over images, captions and LLM descriptions, and the hypergraph adapter.

What the paper says and what is this project's reading
-------------------------------------------------------
OS-HGAdapter (arXiv 2510.13131) trains a hypergraph adapter on a frozen
image-text embedding space. The paper's code is not available; from its text
we take: nodes are images, captions and the captions' LLM descriptions;
hyperedges join several nodes at once, namely each caption with its own
descriptions (*semantic* hyperedges) and each node with its nearest
neighbours across both modalities (*similarity* hyperedges); the convolution
is HGNN's (Feng et al. 2019), run in a reduced dimension and mixed with the
input by a residual ratio. Everything below that goes beyond that - how the
memory bank is built, the per-query ("ego") hypergraphs, how training rows
avoid linking to their own image, activation placement, the inductive test
protocol - is our design and is documented where it is made.

Pieces
------
* :class:`Hypergraph` - incidence as index lists (``node_index``,
  ``edge_index``) plus edge weights; :meth:`Hypergraph.incidence` gives the
  sparse COO matrix ``H`` (``n_nodes x n_edges``).
* :func:`semantic_hyperedges`, :func:`knn_hyperedges`,
  :func:`combine_hypergraphs`, :func:`hypergraph_from_edges` - pure builders.
* :func:`hypergraph_conv` - HGNN's convolution with sparse matmuls.
* :class:`MemoryBank` - a fixed set of training-split nodes.
* :func:`build_query_hypergraph` - the per-query hypergraphs the adapter
  convolves, for training and test alike.
* :class:`HypergraphAdapter` - the module (interface of
  :mod:`osgha_lite.adapters`).

Test-time protocol (inductive by default)
-----------------------------------------
A query (a test image or caption) is adapted using only itself, its own LLM
descriptions and the memory bank of *training* nodes, fixed after training.
Each query gets its own small hypergraph (its "ego" hypergraph): the query,
its description nodes, and private copies of its ``k`` nearest memory nodes
per modality. Because no node is shared between two queries' hypergraphs,
the adapted vector of a query does not depend on which other queries or
gallery items are processed with it - no test-gallery information can leak.
A transductive mode (``test_mode="transductive"``) additionally lets queries
link to test-gallery nodes passed in ``context.gallery``; it is off by
default and :attr:`HypergraphAdapter.uses_test_gallery` says when it is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from osgha_lite.adapters import AdapterContext, RetrievalAdapter

IMAGE, TEXT = 0, 1  # modality codes in MemoryBank.modality
HYPEREDGE_KINDS = ("semantic", "knn")
TEST_MODES = ("inductive", "transductive")
#: In transductive mode a candidate this similar to the query is taken to be
#: the query itself (it is in the gallery too) and is not linked.
DUPLICATE_SIMILARITY = 0.9999

__all__ = [
    "DUPLICATE_SIMILARITY",
    "HYPEREDGE_KINDS",
    "IMAGE",
    "TEST_MODES",
    "TEXT",
    "Hypergraph",
    "HypergraphAdapter",
    "MemoryBank",
    "QueryHypergraph",
    "build_query_hypergraph",
    "combine_hypergraphs",
    "edge_degrees",
    "hypergraph_conv",
    "hypergraph_from_edges",
    "knn_hyperedges",
    "memory_neighbours",
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


def _empty(n_nodes: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Hypergraph:
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
    if (query_groups is None) != (candidate_groups is None):
        raise ValueError("nearest_neighbours: pass both query_groups and candidate_groups, or neither")
    n_queries, n_candidates = queries.shape[0], candidates.shape[0]
    width = min(int(k), n_candidates)
    if width <= 0 or n_queries == 0:
        empty = torch.zeros((n_queries, max(width, 0)), dtype=torch.long, device=queries.device)
        return empty, empty.bool()
    queries = F.normalize(queries, dim=-1)
    candidates = F.normalize(candidates, dim=-1)
    if query_groups is not None:
        query_groups = torch.as_tensor(query_groups, device=queries.device)
        candidate_groups = torch.as_tensor(candidate_groups, device=queries.device)
    all_indices, all_valid = [], []
    for start in range(0, n_queries, chunk_size):
        sims = queries[start : start + chunk_size] @ candidates.T
        if max_similarity is not None:
            sims.masked_fill_(sims > max_similarity, float("-inf"))
        if query_groups is not None:
            sims.masked_fill_(query_groups[start : start + chunk_size, None] == candidate_groups[None, :], float("-inf"))
        values, indices = sims.topk(width, dim=1)
        all_indices.append(indices)
        all_valid.append(torch.isfinite(values))
    return torch.cat(all_indices), torch.cat(all_valid)


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
    inv_sqrt_dv = _safe_power(vertex_degrees(H, edge_weights), -0.5)
    edge_scale = edge_weights * _safe_power(edge_degrees(H), -1.0)
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


# --------------------------------------------------------------------------- memory bank


@dataclass(frozen=True)
class MemoryBank:
    """A fixed set of training-split nodes that test queries may link to.

    ``features[i]`` is the frozen (L2-normalized) feature of memory node
    ``i``, ``modality[i]`` is :data:`IMAGE` (0) or :data:`TEXT` (1),
    ``group_ids[i]`` the train-split image index it belongs to (an image's
    own index, a caption's ``text_to_image``), ``source_index[i]`` its row in
    the train image or caption features.
    """

    features: Tensor
    modality: Tensor
    group_ids: Tensor
    source_index: Tensor

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        for name in ("modality", "group_ids", "source_index"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"MemoryBank: {name} must have shape ({n},), got {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    def from_train_split(
        cls,
        image_features: Tensor,
        text_features: Tensor,
        text_to_image: Tensor,
        max_nodes: int | None = None,
        seed: int = 0,
    ) -> MemoryBank:
        """All train images and captions, or a seeded subsample of at most ``max_nodes``.

        When subsampling, each modality keeps its share:
        ``round(max_nodes * n_images / (n_images + n_texts))`` images and the
        rest captions, drawn without replacement by ``torch.randperm`` with a
        generator seeded by ``seed`` and kept in their original order. Images
        come first, then captions.
        """
        device = image_features.device
        text_features = text_features.to(device)
        text_to_image = torch.as_tensor(text_to_image, dtype=torch.long, device=device)
        n_images, n_texts = image_features.shape[0], text_features.shape[0]
        if text_to_image.shape != (n_texts,):
            raise ValueError(
                f"MemoryBank.from_train_split: text_to_image has shape {tuple(text_to_image.shape)}, "
                f"expected ({n_texts},)"
            )
        image_rows = torch.arange(n_images)
        text_rows = torch.arange(n_texts)
        total = n_images + n_texts
        if max_nodes is not None and max_nodes < total:
            keep_images = round(max_nodes * n_images / total)
            generator = torch.Generator().manual_seed(seed)
            image_rows = torch.randperm(n_images, generator=generator)[:keep_images].sort().values
            text_rows = torch.randperm(n_texts, generator=generator)[: max_nodes - keep_images].sort().values
        image_rows, text_rows = image_rows.to(device), text_rows.to(device)
        return cls(
            features=torch.cat([image_features[image_rows], text_features[text_rows]]),
            modality=torch.cat([torch.full_like(image_rows, IMAGE), torch.full_like(text_rows, TEXT)]),
            group_ids=torch.cat([image_rows, text_to_image[text_rows]]),
            source_index=torch.cat([image_rows, text_rows]),
        )

    @classmethod
    def from_features(cls, features: Tensor, modality: Tensor, group_ids: Tensor | None = None) -> MemoryBank:
        """A bank from explicit rows (e.g. a test gallery); groups default to ``-1 - row`` (all distinct)."""
        n = features.shape[0]
        rows = torch.arange(n, device=features.device)
        return cls(
            features,
            torch.as_tensor(modality, dtype=torch.long, device=features.device).reshape(n),
            -1 - rows if group_ids is None else torch.as_tensor(group_ids, dtype=torch.long, device=features.device),
            rows,
        )

    def concat(self, other: MemoryBank) -> MemoryBank:
        return MemoryBank(
            torch.cat([self.features, other.features]),
            torch.cat([self.modality, other.modality]),
            torch.cat([self.group_ids, other.group_ids]),
            torch.cat([self.source_index, other.source_index]),
        )

    def to(self, device: torch.device | str) -> MemoryBank:
        return MemoryBank(*(t.to(device) for t in (self.features, self.modality, self.group_ids, self.source_index)))


# --------------------------------------------------------------------------- per-query hypergraphs


def memory_neighbours(
    query_features: Tensor,
    candidates: MemoryBank | None,
    k: int,
    query_groups: Tensor | None = None,
    split_modalities: bool = True,
    max_similarity: float | None = None,
) -> Tensor:
    """Rows of ``candidates`` that each query links to, ``[n_queries, n_pools * k]``, -1 for none.

    With ``split_modalities`` there are two pools, the ``k`` nearest
    candidate images (columns ``[0, k)``) then the ``k`` nearest candidate
    captions (columns ``[k, 2k)``); otherwise one pool of either modality.
    Each block is ordered most similar first. Exclusions as in
    :func:`nearest_neighbours` (same group, or cosine above ``max_similarity``).
    """
    if candidates is None or len(candidates) == 0:
        raise ValueError(
            "memory_neighbours: kNN hyperedges need a candidate bank; set the adapter's "
            "memory with set_memory(MemoryBank.from_train_split(...)) or drop 'knn' from hyperedges"
        )
    device = query_features.device
    if split_modalities:
        pools = [(candidates.modality == m).nonzero(as_tuple=True)[0] for m in (IMAGE, TEXT)]
    else:
        pools = [torch.arange(len(candidates), device=candidates.features.device)]
    blocks = []
    for pool in pools:
        block = torch.full((query_features.shape[0], k), -1, dtype=torch.long, device=device)
        if pool.numel():
            neighbours, valid = nearest_neighbours(
                query_features,
                candidates.features[pool].to(device=device, dtype=query_features.dtype),
                k,
                query_groups,
                None if query_groups is None else candidates.group_ids[pool],
                max_similarity=max_similarity,
            )
            width = neighbours.shape[1]
            block[:, :width] = torch.where(valid, pool.to(device)[neighbours], torch.full_like(neighbours, -1))
        blocks.append(block)
    return torch.cat(blocks, dim=1)


@dataclass(frozen=True)
class QueryHypergraph:
    """The disjoint union of the queries' ego hypergraphs.

    Node rows of ``node_features``: ``[0, n_queries)`` the queries, then the
    description nodes, then the neighbour copies. ``node_owner[n]`` is the
    query a node belongs to; ``neighbour_memory_index`` gives, for each
    neighbour copy (in node order), its row in the candidate bank.
    """

    node_features: Tensor
    graph: Hypergraph
    n_queries: int
    node_owner: Tensor
    neighbour_memory_index: Tensor


def build_query_hypergraph(
    query_features: Tensor,
    description_features: Tensor | None = None,
    description_mask: Tensor | None = None,
    candidates: MemoryBank | None = None,
    k: int = 5,
    query_groups: Tensor | None = None,
    split_modalities: bool = True,
    use_semantic: bool = True,
    use_knn: bool = True,
    semantic_weight: float = 1.0,
    knn_weight: float = 1.0,
    max_similarity: float | None = None,
    neighbour_rows: Tensor | None = None,
) -> QueryHypergraph:
    r"""Build one ego hypergraph per query and return their disjoint union.

    For query :math:`q` (a row of ``query_features``):

    * **semantic hyperedge** (``use_semantic``): :math:`\{q\} \cup D_q`, its
      valid description nodes ``description_features[q, j]`` with
      ``description_mask[q, j]`` (all valid by default); none when
      :math:`D_q = \emptyset` (images, or captions without descriptions).
    * **similarity hyperedges** (``use_knn``): with ``split_modalities``
      (default), one hyperedge :math:`\{q\} \cup N^{img}_k(q)` with its ``k``
      nearest candidate images and one :math:`\{q\} \cup N^{txt}_k(q)` with
      its ``k`` nearest candidate captions - so every query reaches both
      modalities even though cross-modal cosines are lower than within-modal
      ones (the modality gap); otherwise one hyperedge with its ``k`` nearest
      candidates of either modality. Candidates of the query's own group
      (``query_groups`` vs ``candidates.group_ids``) and, with
      ``max_similarity``, near-copies of the query are skipped.

    ``neighbour_rows`` (from :func:`memory_neighbours` on the same
    ``candidates``) skips the neighbour search; features are frozen, so the
    neighbours of training rows can be computed once before training.

    Neighbours enter as *private copies* (new nodes with the memory node's
    features), so no node is shared between two queries: every query's
    output depends on its own ego hypergraph only.
    """
    device, dtype = query_features.device, query_features.dtype
    n_queries = query_features.shape[0]
    feature_blocks = [query_features]
    owner_blocks = [torch.arange(n_queries, device=device)]
    node_lists: list[Tensor] = []
    edge_lists: list[Tensor] = []
    weight_lists: list[Tensor] = []
    n_nodes, n_edges = n_queries, 0
    neighbour_memory_index = torch.zeros(0, dtype=torch.long, device=device)

    def add_edges(owners_with_edge: Tensor, member_owner: Tensor, member_nodes: Tensor, weight: float) -> None:
        """One hyperedge per query in ``owners_with_edge``: the query plus its members."""
        nonlocal n_edges
        edge_of_owner = torch.full((n_queries,), -1, dtype=torch.long, device=device)
        edge_of_owner[owners_with_edge] = n_edges + torch.arange(owners_with_edge.numel(), device=device)
        node_lists.extend([owners_with_edge, member_nodes])
        edge_lists.extend([edge_of_owner[owners_with_edge], edge_of_owner[member_owner]])
        weight_lists.append(torch.full((owners_with_edge.numel(),), float(weight), dtype=dtype, device=device))
        n_edges += owners_with_edge.numel()

    if use_semantic and description_features is not None:
        if description_features.ndim != 3 or description_features.shape[0] != n_queries:
            raise ValueError(
                "build_query_hypergraph: description_features must be [n_queries, K, dim], got "
                f"{tuple(description_features.shape)} for {n_queries} queries"
            )
        mask = (
            torch.ones(description_features.shape[:2], dtype=torch.bool, device=device)
            if description_mask is None
            else description_mask.to(device=device, dtype=torch.bool)
        )
        if mask.shape != description_features.shape[:2]:
            raise ValueError(
                f"build_query_hypergraph: description_mask has shape {tuple(mask.shape)}, "
                f"expected {tuple(description_features.shape[:2])}"
            )
        owner, slot = mask.nonzero(as_tuple=True)
        description_nodes = n_nodes + torch.arange(owner.numel(), device=device)
        feature_blocks.append(description_features[owner, slot].to(dtype))
        owner_blocks.append(owner)
        n_nodes += owner.numel()
        add_edges(mask.any(dim=1).nonzero(as_tuple=True)[0], owner, description_nodes, semantic_weight)

    if use_knn:
        if neighbour_rows is None:
            neighbour_rows = memory_neighbours(
                query_features, candidates, k, query_groups, split_modalities, max_similarity
            )
        elif (
            candidates is None
            or neighbour_rows.ndim != 2
            or neighbour_rows.shape[0] != n_queries
            or (neighbour_rows.numel() and int(neighbour_rows.max()) >= len(candidates))
        ):
            raise ValueError(
                "build_query_hypergraph: neighbour_rows must be [n_queries, n_pools * k] rows of the "
                "candidate bank it was computed for (see HypergraphAdapter.precompute_neighbours)"
            )
        n_pools = 2 if split_modalities else 1
        if neighbour_rows.shape[1] % n_pools:
            raise ValueError(
                f"build_query_hypergraph: neighbour_rows has {neighbour_rows.shape[1]} columns, "
                f"not a multiple of {n_pools} pools"
            )
        copies = []
        for block in neighbour_rows.to(device).chunk(n_pools, dim=1):
            owner, slot = (block >= 0).nonzero(as_tuple=True)
            memory_rows = block[owner, slot]
            copy_nodes = n_nodes + torch.arange(owner.numel(), device=device)
            feature_blocks.append(candidates.features[memory_rows].to(dtype))
            owner_blocks.append(owner)
            copies.append(memory_rows)
            n_nodes += owner.numel()
            add_edges((block >= 0).any(dim=1).nonzero(as_tuple=True)[0], owner, copy_nodes, knn_weight)
        neighbour_memory_index = torch.cat(copies)

    if node_lists:
        graph = Hypergraph(torch.cat(node_lists), torch.cat(edge_lists), torch.cat(weight_lists), n_nodes)
    else:
        graph = _empty(n_nodes, device, dtype)
    return QueryHypergraph(
        node_features=torch.cat(feature_blocks),
        graph=graph,
        n_queries=n_queries,
        node_owner=torch.cat(owner_blocks),
        neighbour_memory_index=neighbour_memory_index,
    )


# --------------------------------------------------------------------------- the adapter

_MEMORY_BUFFERS = ("memory_features", "memory_modality", "memory_group_ids", "memory_source_index")


class HypergraphAdapter(RetrievalAdapter):
    r"""OS-HGAdapter's hypergraph adapter (this project's reading; see the module docstring).

    Forward for a batch of queries :math:`x \in \mathbb{R}^{B\times d}`
    (L2-normalized frozen features), with their ego hypergraph
    (:func:`build_query_hypergraph`) of node features :math:`X` (queries
    first):

    .. math::

        Z_0 &= \mathrm{Dropout}(X)\, P_\downarrow \qquad (P_\downarrow \in \mathbb{R}^{d\times r})\\
        Z_l &= \sigma\big(D_v^{-1/2} H W D_e^{-1} H^\top D_v^{-1/2} Z_{l-1} \Theta_l\big), \quad l = 1..L\\
        m &= (Z_L)_{1..B}\, P_\uparrow \qquad (P_\uparrow \in \mathbb{R}^{r\times d})\\
        f(x) &= \frac{\alpha\, m + (1-\alpha)\, x}{\lVert \alpha\, m + (1-\alpha)\, x\rVert}

    :math:`\sigma` is ReLU. With ``use_reduction=False`` (the ablation
    without reduce-and-restore) :math:`P_\downarrow, P_\uparrow` are the
    identity, :math:`\Theta_l \in \mathbb{R}^{d\times d}`, and the last layer
    has no ReLU (its output is the message itself, as HGNN's last layer).
    All maps are bias-free, so a query with no hyperedge gets :math:`m = 0`
    and :math:`f(x) = x / \lVert x \rVert` - it passes through unchanged.
    The residual convention follows CLIP-Adapter: ``alpha`` is the weight of
    the adapted message, ``1 - alpha`` of the input.

    Options: ``reduced_dim`` (default ``dim // 4``), ``alpha`` (0.2),
    ``num_layers`` (1), ``hyperedges`` (subset of ``("semantic", "knn")``),
    ``k`` neighbours per modality (5), ``split_modalities`` (True),
    ``semantic_weight`` / ``knn_weight`` (1.0), ``use_reduction`` (True),
    ``dropout`` (0.0), ``test_mode`` (``"inductive"``).

    Memory: :meth:`set_memory` stores a :class:`MemoryBank` of training
    nodes as buffers, so they are saved in and restored from the
    ``state_dict`` with the weights (the bank is fixed after training).

    Training: call :meth:`encode_images` / :meth:`encode_texts` on train
    batches with ``context.group_ids`` = the train image index of each row.
    The memory then acts as "the rest of the train bank": memory nodes of
    the row's own image (the row itself, its image, its sibling captions) are
    not linked, which keeps a row from trivially linking to its own copy and
    mirrors test time, where a query's image and captions are never in the
    memory. Inputs and memory are frozen, so :meth:`precompute_neighbours`
    can find every training row's memory neighbours once; pass them as
    ``context.neighbour_rows`` (same result, no search per step).

    Test time: inductive by default (query + its descriptions + memory;
    see the module docstring). ``test_mode="transductive"`` also links
    ``context.gallery`` nodes and sets :attr:`uses_test_gallery`; with the
    default mode a gallery is refused with an error.
    """

    name = "hypergraph"
    uses_memory = True
    uses_descriptions = True

    def __init__(
        self,
        dim: int,
        reduced_dim: int | None = None,
        alpha: float = 0.2,
        num_layers: int = 1,
        hyperedges: Sequence[str] = HYPEREDGE_KINDS,
        k: int = 5,
        split_modalities: bool = True,
        semantic_weight: float = 1.0,
        knn_weight: float = 1.0,
        use_reduction: bool = True,
        dropout: float = 0.0,
        test_mode: str = "inductive",
    ) -> None:
        super().__init__()
        hyperedges = tuple(hyperedges)
        unknown = sorted(set(hyperedges) - set(HYPEREDGE_KINDS))
        if unknown:
            raise ValueError(f"HypergraphAdapter: unknown hyperedge kinds {unknown}; known: {HYPEREDGE_KINDS}")
        if test_mode not in TEST_MODES:
            raise ValueError(f"HypergraphAdapter: test_mode must be one of {TEST_MODES}, got {test_mode!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"HypergraphAdapter: alpha must be in [0, 1], got {alpha}")
        if num_layers < 1 or k < 1:
            raise ValueError(f"HypergraphAdapter: num_layers and k must be >= 1, got {num_layers} and {k}")
        self.dim = int(dim)
        self.reduced_dim = int(reduced_dim or max(1, dim // 4)) if use_reduction else self.dim
        self.alpha = float(alpha)
        self.num_layers = int(num_layers)
        self.hyperedges = hyperedges
        self.k = int(k)
        self.split_modalities = bool(split_modalities)
        self.semantic_weight = float(semantic_weight)
        self.knn_weight = float(knn_weight)
        self.use_reduction = bool(use_reduction)
        self.dropout_p = float(dropout)
        self.test_mode = test_mode
        self.dropout = nn.Dropout(dropout)
        if self.use_reduction:
            self.down = nn.Linear(self.dim, self.reduced_dim, bias=False)
            self.up = nn.Linear(self.reduced_dim, self.dim, bias=False)
        else:
            self.down = nn.Identity()
            self.up = nn.Identity()
        self.thetas = nn.ModuleList(
            nn.Linear(self.reduced_dim, self.reduced_dim, bias=False) for _ in range(self.num_layers)
        )
        for name in _MEMORY_BUFFERS:
            self.register_buffer(name, None)

    # -- interface -----------------------------------------------------------------

    @property
    def uses_test_gallery(self) -> bool:
        return self.test_mode == "transductive"

    def set_memory(self, bank: MemoryBank | None) -> None:
        """Store ``bank`` (moved to this module's device) as buffers; None clears the memory."""
        if bank is None:
            for name in _MEMORY_BUFFERS:
                self._buffers[name] = None
            return
        if bank.features.shape[1] != self.dim:
            raise ValueError(f"HypergraphAdapter.set_memory: bank has dim {bank.features.shape[1]}, adapter {self.dim}")
        device = self._device()
        values = (bank.features, bank.modality, bank.group_ids, bank.source_index)
        for name, value in zip(_MEMORY_BUFFERS, values):
            self._buffers[name] = value.detach().to(device)

    @property
    def memory(self) -> MemoryBank | None:
        if self.memory_features is None:
            return None
        return MemoryBank(self.memory_features, self.memory_modality, self.memory_group_ids, self.memory_source_index)

    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        context = context or AdapterContext()
        if context.description_features is not None:
            raise ValueError("HypergraphAdapter.encode_images: images have no LLM descriptions; pass none")
        return self.adapt(
            x,
            memory=context.memory,
            query_groups=context.group_ids,
            gallery=context.gallery,
            neighbour_rows=context.neighbour_rows,
        )

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        context = context or AdapterContext()
        return self.adapt(
            x,
            context.description_features,
            context.description_mask,
            memory=context.memory,
            query_groups=context.group_ids,
            gallery=context.gallery,
            neighbour_rows=context.neighbour_rows,
        )

    def config(self) -> dict[str, Any]:
        memory = self.memory
        return {
            **super().config(), "dim": self.dim, "reduced_dim": self.reduced_dim, "alpha": self.alpha,
            "num_layers": self.num_layers, "hyperedges": list(self.hyperedges), "k": self.k,
            "split_modalities": self.split_modalities, "semantic_weight": self.semantic_weight,
            "knn_weight": self.knn_weight, "use_reduction": self.use_reduction, "dropout": self.dropout_p,
            "test_mode": self.test_mode, "memory_size": 0 if memory is None else len(memory),
        }

    # -- computation ---------------------------------------------------------------

    def build_hypergraph(
        self,
        query_features: Tensor,
        query_description_features: Tensor | None = None,
        description_mask: Tensor | None = None,
        memory: MemoryBank | None = None,
        query_groups: Tensor | None = None,
        gallery: MemoryBank | None = None,
        neighbour_rows: Tensor | None = None,
    ) -> QueryHypergraph:
        """The ego hypergraphs :meth:`adapt` convolves (exposed for inspection)."""
        memory = memory if memory is not None else self.memory
        max_similarity = None
        if gallery is not None and neighbour_rows is not None:
            raise ValueError("HypergraphAdapter: precomputed neighbour_rows cannot be combined with a gallery")
        if gallery is not None:
            if self.test_mode != "transductive":
                raise ValueError(
                    "HypergraphAdapter: a test gallery was passed but test_mode is 'inductive'; "
                    "inductive adaptation uses only the query, its descriptions and the train memory. "
                    "Build the adapter with test_mode='transductive' to link gallery nodes."
                )
            memory = gallery if memory is None else memory.concat(gallery.to(memory.features.device))
            max_similarity = DUPLICATE_SIMILARITY
        return build_query_hypergraph(
            query_features,
            query_description_features,
            description_mask,
            candidates=memory,
            k=self.k,
            query_groups=query_groups,
            split_modalities=self.split_modalities,
            use_semantic="semantic" in self.hyperedges,
            use_knn="knn" in self.hyperedges,
            semantic_weight=self.semantic_weight,
            knn_weight=self.knn_weight,
            max_similarity=max_similarity,
            neighbour_rows=neighbour_rows if "knn" in self.hyperedges else None,
        )

    @torch.no_grad()
    def precompute_neighbours(
        self, features: Tensor, group_ids: Tensor | None = None, batch_size: int = 4096, progress: bool = False
    ) -> Tensor:
        """Memory neighbours of many rows at once, for ``AdapterContext.neighbour_rows``.

        The features and the memory bank are frozen, so the neighbours of the
        training rows never change: computing them once (with the rows'
        ``group_ids``) saves the neighbour search in every training step.
        Valid only for this adapter's current memory, ``k`` and
        ``split_modalities``; call again after :meth:`set_memory`.
        """
        blocks = []
        for start in tqdm(range(0, features.shape[0], batch_size), desc="memory neighbours", disable=not progress):
            rows = slice(start, start + batch_size)
            blocks.append(
                memory_neighbours(
                    features[rows], self.memory, self.k,
                    None if group_ids is None else group_ids[rows], self.split_modalities,
                )
            )
        if not blocks:
            return torch.zeros((0, (2 if self.split_modalities else 1) * self.k), dtype=torch.long)
        return torch.cat(blocks)

    def adapt(
        self,
        query_features: Tensor,
        query_description_features: Tensor | None = None,
        description_mask: Tensor | None = None,
        memory: MemoryBank | None = None,
        query_groups: Tensor | None = None,
        gallery: MemoryBank | None = None,
        neighbour_rows: Tensor | None = None,
    ) -> Tensor:
        """Adapted, L2-normalized query vectors ``[B, dim]`` (formula in the class docstring).

        ``query_description_features`` ``[B, K, dim]`` with optional
        ``description_mask`` ``[B, K]``; ``memory`` defaults to the stored
        bank; ``query_groups`` ``[B]`` only during training; ``gallery`` only
        in transductive mode; ``neighbour_rows`` from :meth:`precompute_neighbours`
        (optional, skips the neighbour search).
        """
        if query_features.ndim != 2 or query_features.shape[1] != self.dim:
            raise ValueError(
                f"HypergraphAdapter.adapt: expected query features [batch, {self.dim}], got {tuple(query_features.shape)}"
            )
        ego = self.build_hypergraph(
            query_features, query_description_features, description_mask, memory, query_groups, gallery,
            neighbour_rows,
        )
        incidence = ego.graph.incidence(query_features.dtype)
        z = self.down(self.dropout(ego.node_features))
        for layer, theta in enumerate(self.thetas):
            z = hypergraph_conv(z, incidence, ego.graph.edge_weights, theta.weight.T)
            if self.use_reduction or layer < self.num_layers - 1:
                z = F.relu(z)
        message = self.up(z[: ego.n_queries])
        return F.normalize(self.alpha * message + (1.0 - self.alpha) * query_features, dim=-1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # The memory buffers' sizes are only known from the checkpoint: make room before loading.
        for name in _MEMORY_BUFFERS:
            key = prefix + name
            if key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key], device=self._device())
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _device(self) -> torch.device:
        return next(self.parameters()).device


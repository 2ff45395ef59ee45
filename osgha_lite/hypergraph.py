r"""Hypergraphs over images, captions and LLM descriptions, and the hypergraph adapter.

What the paper says and what is this project's reading
-------------------------------------------------------
OS-HGAdapter (arXiv 2510.13131) trains a hypergraph adapter on a frozen
image-text embedding space. The paper's code is not available; from its text
we take: nodes are images, captions and the captions' LLM descriptions;
hyperedges join several nodes at once, namely each caption with its own
descriptions (*semantic* hyperedges) and nodes with related nodes across
both modalities; the convolution is HGNN's (Feng et al. 2019), run in a
reduced dimension, restored to the original one and mixed with the input by
a residual ratio; the adapter is meant to correct positive and negative
matching errors. Everything below that goes beyond that is our design and
is documented where it is made:

* the memory bank of training nodes and the per-query ("ego") hypergraphs;
* *similarity* hyperedges to a query's nearest memory images and captions
  (``"knn"``), and *pair* hyperedges (``"pair"``): a training image and its
  own captions belong together, so a query linked to its nearest training
  nodes of its own modality reaches their partners of the other modality
  (a caption reaches the images of the training captions most like it).
  Within-modality similarity is far more reliable than cross-modal
  similarity in a weak joint space, and on the lite backbone pair
  hyperedges beat kNN hyperedges on dev;
* the *hubness correction*: nodes that are close to many nodes of the other
  modality (hubs) win too many queries, a classic source of false
  positives in cross-modal retrieval. The cohesion of a query's cross-modal
  kNN hyperedge (mean similarity to its ``hubness_k`` nearest memory nodes
  of the other modality) is subtracted from every score as in CSLS
  (Conneau et al. 2018), through two extra output coordinates
  (:func:`hubness_phase`), so retrieval is still a dot product of unit
  vectors;
* initialising the reduction on the memory's principal subspace, activation
  placement, how training rows avoid linking to their own image, and the
  inductive test protocol.

Pieces
------
* :class:`Hypergraph` - incidence as index lists (``node_index``,
  ``edge_index``) plus edge weights; :meth:`Hypergraph.incidence` gives the
  sparse COO matrix ``H`` (``n_nodes x n_edges``).
* :func:`semantic_hyperedges`, :func:`knn_hyperedges`,
  :func:`combine_hypergraphs`, :func:`hypergraph_from_edges` - pure builders.
* :func:`hypergraph_conv` - HGNN's convolution with sparse matmuls.
* :class:`MemoryBank` - a fixed set of training-split nodes;
  :func:`paired_rows` - the partners of a memory node (its image or its
  captions).
* :func:`neighbour_table`, :class:`NeighbourTable`, :func:`memory_links`,
  :class:`MemoryLinks` - what each query needs from the bank (kNN rows, pair
  rows, hubness cohesion), searched once and shared between settings.
* :func:`build_query_hypergraph` - the per-query hypergraphs the adapter
  convolves, for training and test alike.
* :func:`hubness_cohesion`, :func:`hubness_phase` - the hubness correction.
* :class:`HypergraphAdapter` - the module (interface of
  :mod:`osgha_lite.adapters`).

Test-time protocol (inductive by default)
-----------------------------------------
A query (a test image or caption) is adapted using only itself, its own LLM
descriptions and the memory bank of *training* nodes, fixed after training.
Each query gets its own small hypergraph (its "ego" hypergraph): the query,
its description nodes, and private copies of the memory nodes it links to
(kNN neighbours, pair partners); its hubness cohesion uses the memory only
too. Because no node is shared between two queries' hypergraphs,
the adapted vector of a query does not depend on which other queries or
gallery items are processed with it - no test-gallery information can leak.
A transductive mode (``test_mode="transductive"``) additionally lets queries
link to test-gallery nodes passed in ``context.gallery``; it is off by
default and :attr:`HypergraphAdapter.uses_test_gallery` says when it is on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from osgha_lite.adapters import AdapterContext, RetrievalAdapter

IMAGE, TEXT = 0, 1  # modality codes in MemoryBank.modality
HYPEREDGE_KINDS = ("semantic", "knn", "pair")
TEST_MODES = ("inductive", "transductive")
#: In transductive mode a candidate this similar to the query is taken to be
#: the query itself (it is in the gallery too) and is not linked.
DUPLICATE_SIMILARITY = 0.9999

__all__ = [
    "DUPLICATE_SIMILARITY",
    "HUBNESS_PHASE_SCALE",
    "HYPEREDGE_KINDS",
    "IMAGE",
    "TEST_MODES",
    "TEXT",
    "Hypergraph",
    "HypergraphAdapter",
    "MemoryBank",
    "MemoryLinks",
    "NeighbourTable",
    "QueryHypergraph",
    "build_query_hypergraph",
    "combine_hypergraphs",
    "edge_degrees",
    "hubness_beta_squared",
    "hubness_cohesion",
    "hubness_phase",
    "hypergraph_conv",
    "hypergraph_from_edges",
    "knn_hyperedges",
    "memory_links",
    "memory_neighbours",
    "nearest_neighbour_similarities",
    "neighbour_table",
    "nearest_neighbours",
    "paired_rows",
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


# --------------------------------------------------------------------------- links of queries to the memory

MODALITY_CODES = {"image": IMAGE, "text": TEXT}


def _modality_code(modality: str | int) -> int:
    if isinstance(modality, str):
        if modality not in MODALITY_CODES:
            raise ValueError(f"modality must be one of {sorted(MODALITY_CODES)}, got {modality!r}")
        return MODALITY_CODES[modality]
    if int(modality) not in (IMAGE, TEXT):
        raise ValueError(f"modality code must be IMAGE ({IMAGE}) or TEXT ({TEXT}), got {modality!r}")
    return int(modality)


def _check_bank(candidates: MemoryBank | None, who: str) -> MemoryBank:
    if candidates is None or len(candidates) == 0:
        raise ValueError(
            f"{who}: kNN, pair hyperedges and the hubness correction need a candidate bank; set the "
            "adapter's memory with set_memory(MemoryBank.from_train_split(...)), or use only 'semantic' "
            "hyperedges and hubness_weight=0"
        )
    return candidates


def _pool_neighbours(
    query_features: Tensor,
    candidates: MemoryBank,
    pool: Tensor,
    k: int,
    query_groups: Tensor | None,
    max_similarity: float | None,
) -> tuple[Tensor, Tensor]:
    """Bank rows of the ``k`` nearest members of ``pool`` (-1 where none) and their cosines (-inf where none)."""
    device = query_features.device
    rows = torch.full((query_features.shape[0], k), -1, dtype=torch.long, device=device)
    values = torch.full((query_features.shape[0], k), float("-inf"), dtype=query_features.dtype, device=device)
    if pool.numel() and k > 0:
        neighbours, sims = nearest_neighbour_similarities(
            query_features,
            candidates.features[pool].to(device=device, dtype=query_features.dtype),
            k,
            query_groups,
            None if query_groups is None else candidates.group_ids[pool],
            max_similarity=max_similarity,
        )
        width = neighbours.shape[1]
        valid = torch.isfinite(sims)
        rows[:, :width] = torch.where(valid, pool.to(device)[neighbours], torch.full_like(neighbours, -1))
        values[:, :width] = sims
    return rows, values


def _modality_pool(candidates: MemoryBank, modality: int) -> Tensor:
    return (candidates.modality == modality).nonzero(as_tuple=True)[0]


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
    candidates = _check_bank(candidates, "memory_neighbours")
    if split_modalities:
        pools = [_modality_pool(candidates, m) for m in (IMAGE, TEXT)]
    else:
        pools = [torch.arange(len(candidates), device=candidates.features.device)]
    blocks = [_pool_neighbours(query_features, candidates, pool, k, query_groups, max_similarity)[0] for pool in pools]
    return torch.cat(blocks, dim=1)


def paired_rows(candidates: MemoryBank, rows: Tensor) -> Tensor:
    """For each bank row, the bank rows of the *other* modality in its group, ``[*rows.shape, P]``.

    A training image and its captions share a group (the image's index), so
    the partners of a caption are its image and the partners of an image
    are its captions. ``P`` is the largest partner count in the bank (5 for
    Flickr); missing partners and entries for ``rows == -1`` are -1.
    """
    rows = torch.as_tensor(rows, dtype=torch.long)
    device = candidates.features.device
    flat = rows.reshape(-1).to(device)
    valid = flat >= 0
    safe = flat.clamp_min(0)
    pools, width = {}, 0
    for modality in (IMAGE, TEXT):
        pool = _modality_pool(candidates, modality)
        groups = candidates.group_ids[pool]
        order = torch.argsort(groups, stable=True)
        pools[modality] = (pool[order], groups[order])
        if groups.numel():
            width = max(width, int(torch.unique(groups, return_counts=True)[1].max()))
    out = torch.full((flat.numel(), width), -1, dtype=torch.long, device=device)
    if flat.numel() and width:
        query_groups, query_modality = candidates.group_ids[safe], candidates.modality[safe]
        for modality in (IMAGE, TEXT):
            partner_pool, partner_groups = pools[TEXT if modality == IMAGE else IMAGE]
            selected = valid & (query_modality == modality)
            if not selected.any() or partner_pool.numel() == 0:
                continue
            groups = query_groups[selected]
            start = torch.searchsorted(partner_groups, groups, side="left")
            end = torch.searchsorted(partner_groups, groups, side="right")
            index = start[:, None] + torch.arange(width, device=device)
            found = index < end[:, None]
            partners = partner_pool[index.clamp_max(partner_pool.numel() - 1)]
            out[selected] = torch.where(found, partners, torch.full_like(partners, -1))
    return out.reshape(*rows.shape, width).to(rows.device)


def hubness_cohesion(
    query_features: Tensor,
    candidates: MemoryBank | None,
    modality: str | int,
    k: int,
    query_groups: Tensor | None = None,
    max_similarity: float | None = None,
) -> Tensor:
    r"""Cohesion of each query's cross-modal kNN hyperedge: :math:`r(q) = \frac1k \sum_{j \in N^{\bar m}_k(q)} \cos(q, m_j)`.

    :math:`N^{\bar m}_k(q)` are the ``k`` nearest bank nodes of the other
    modality than the query's (``modality``), with the exclusions of
    :func:`nearest_neighbours`. A large :math:`r(q)` marks a *hub*, a node
    close to many nodes of the other modality whatever its content; CSLS
    (Conneau et al. 2018) subtracts it from the similarity. Queries with no
    allowed neighbour get 0. Returns ``[n_queries]``.
    """
    candidates = _check_bank(candidates, "hubness_cohesion")
    other = TEXT if _modality_code(modality) == IMAGE else IMAGE
    _, values = _pool_neighbours(query_features, candidates, _modality_pool(candidates, other), k, query_groups,
                                 max_similarity)
    valid = torch.isfinite(values)
    total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=1)
    return total / valid.sum(dim=1).clamp_min(1)


@dataclass(frozen=True)
class MemoryLinks:
    """Precomputed links of query rows to a memory bank.

    ``neighbour_rows`` ``[B, n_pools * k]``: the kNN-hyperedge neighbours
    (:func:`memory_neighbours`); ``pair_rows`` ``[B, P']``: the members of the
    pair hyperedge (:func:`memory_links`); ``cohesion`` ``[B]``: the hubness
    cohesion (:func:`hubness_cohesion`). Row-sliceable with ``links[rows]``
    (so :meth:`osgha_lite.adapters.AdapterContext.select` slices it) and
    movable with :meth:`to`. Valid only for the bank and settings they were
    computed with.
    """

    neighbour_rows: Tensor
    pair_rows: Tensor
    cohesion: Tensor

    def __post_init__(self) -> None:
        n = self.cohesion.shape[0]
        if self.neighbour_rows.shape[0] != n or self.pair_rows.shape[0] != n or self.cohesion.ndim != 1:
            raise ValueError(
                "MemoryLinks: neighbour_rows, pair_rows and cohesion must have the same number of rows, got "
                f"{tuple(self.neighbour_rows.shape)}, {tuple(self.pair_rows.shape)}, {tuple(self.cohesion.shape)}"
            )

    def __len__(self) -> int:
        return int(self.cohesion.shape[0])

    def __getitem__(self, rows: Tensor | slice) -> MemoryLinks:
        return MemoryLinks(self.neighbour_rows[rows], self.pair_rows[rows], self.cohesion[rows])

    def to(self, device: torch.device | str) -> MemoryLinks:
        return MemoryLinks(self.neighbour_rows.to(device), self.pair_rows.to(device), self.cohesion.to(device))

    @staticmethod
    def cat(parts: Sequence[MemoryLinks]) -> MemoryLinks:
        return MemoryLinks(
            torch.cat([p.neighbour_rows for p in parts]),
            torch.cat([p.pair_rows for p in parts]),
            torch.cat([p.cohesion for p in parts]),
        )


@dataclass(frozen=True)
class NeighbourTable:
    """The nearest memory nodes of each query row in its own and in the other modality, with cosines.

    ``same_rows`` / ``same_sims`` ``[B, w_same]`` and ``other_rows`` /
    ``other_sims`` ``[B, w_other]``: bank rows (-1 where none) and cosines
    (-inf where none), most similar first, for queries of ``modality``.
    One table serves every setting with ``k <= w_same``, ``k <= w_other``
    and ``hubness_k <= w_other`` (:meth:`links`), so an experiment that
    tries many settings searches the bank once per split.
    """

    modality: int
    same_rows: Tensor
    same_sims: Tensor
    other_rows: Tensor
    other_sims: Tensor

    def __len__(self) -> int:
        return int(self.same_rows.shape[0])

    @property
    def widths(self) -> tuple[int, int]:
        return int(self.same_rows.shape[1]), int(self.other_rows.shape[1])

    def __getitem__(self, rows: Tensor | slice) -> NeighbourTable:
        return NeighbourTable(self.modality, self.same_rows[rows], self.same_sims[rows], self.other_rows[rows],
                              self.other_sims[rows])

    @staticmethod
    def cat(parts: Sequence[NeighbourTable]) -> NeighbourTable:
        return NeighbourTable(parts[0].modality, *(torch.cat([getattr(p, name) for p in parts]) for name in
                                                   ("same_rows", "same_sims", "other_rows", "other_sims")))

    def links(
        self,
        candidates: MemoryBank,
        k: int = 5,
        split_modalities: bool = True,
        use_knn: bool = True,
        use_pairs: bool = False,
        hubness_k: int = 0,
    ) -> MemoryLinks:
        """The :class:`MemoryLinks` of these rows for one setting (see :func:`memory_links`)."""
        w_same, w_other = self.widths
        if k > w_same or k > w_other or hubness_k > w_other:
            raise ValueError(
                f"NeighbourTable.links: table widths {self.widths} are too small for k={k}, hubness_k={hubness_k}; "
                "build it with neighbour_table(..., same_width, other_width) large enough"
            )
        n_queries, device = len(self), self.same_rows.device
        empty = torch.zeros((n_queries, 0), dtype=torch.long, device=device)
        neighbour_rows, pair_rows = empty, empty
        if use_knn:
            if split_modalities:
                blocks = [self.same_rows[:, :k], self.other_rows[:, :k]]
                neighbour_rows = torch.cat(blocks if self.modality == IMAGE else blocks[::-1], dim=1)
            else:  # the joint top k is the top k of the union of both pools' top k
                sims = torch.cat([self.same_sims[:, :k], self.other_sims[:, :k]], dim=1)
                rows = torch.cat([self.same_rows[:, :k], self.other_rows[:, :k]], dim=1)
                values, order = sims.topk(k, dim=1)
                picked = rows.gather(1, order)
                neighbour_rows = torch.where(torch.isfinite(values), picked, torch.full_like(picked, -1))
        if use_pairs:
            pair_rows = paired_rows(candidates, self.same_rows[:, :k]).reshape(n_queries, -1).to(device)
        if hubness_k > 0:
            values = self.other_sims[:, :hubness_k]
            valid = torch.isfinite(values)
            total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=1)
            cohesion = total / valid.sum(dim=1).clamp_min(1)
        else:
            cohesion = torch.zeros(n_queries, dtype=self.same_sims.dtype, device=device)
        return MemoryLinks(neighbour_rows, pair_rows, cohesion)


@torch.no_grad()
def neighbour_table(
    query_features: Tensor,
    candidates: MemoryBank | None,
    modality: str | int,
    same_width: int,
    other_width: int,
    query_groups: Tensor | None = None,
    max_similarity: float | None = None,
) -> NeighbourTable:
    """Search the bank once: the ``same_width`` / ``other_width`` nearest nodes of the query's own / other modality.

    Exclusions as in :func:`nearest_neighbours` (same group, or cosine above
    ``max_similarity``).
    """
    candidates = _check_bank(candidates, "neighbour_table")
    code = _modality_code(modality)
    other = TEXT if code == IMAGE else IMAGE
    same_rows, same_sims = _pool_neighbours(query_features, candidates, _modality_pool(candidates, code), same_width,
                                            query_groups, max_similarity)
    other_rows, other_sims = _pool_neighbours(query_features, candidates, _modality_pool(candidates, other),
                                              other_width, query_groups, max_similarity)
    return NeighbourTable(code, same_rows, same_sims, other_rows, other_sims)


def memory_links(
    query_features: Tensor,
    candidates: MemoryBank | None,
    modality: str | int,
    k: int = 5,
    query_groups: Tensor | None = None,
    split_modalities: bool = True,
    use_knn: bool = True,
    use_pairs: bool = False,
    hubness_k: int = 0,
    max_similarity: float | None = None,
) -> MemoryLinks:
    r"""Everything a query needs from the bank: kNN rows, pair rows, hubness cohesion.

    * ``neighbour_rows`` (``use_knn``): as :func:`memory_neighbours`.
    * ``pair_rows`` (``use_pairs``): the bank nodes of the other modality
      paired with the query's ``k`` nearest bank nodes of its *own*
      modality, :math:`P_k(q) = \bigcup_{n \in N^{m}_k(q)} \mathrm{partners}(n)`
      (:func:`paired_rows`): for a caption, the images of its nearest
      training captions; for an image, the captions of its nearest training
      images. Flattened to ``[B, k * P]``, -1 where missing.
    * ``cohesion`` (``hubness_k > 0``): as :func:`hubness_cohesion` with
      ``hubness_k`` neighbours, else zeros.

    ``modality`` is the queries' modality (``"image"``/``"text"``);
    exclusions (``query_groups``, ``max_similarity``) apply to every search,
    and partners share their neighbour's group, so a training row never
    reaches a node of its own image. Implemented as one
    :func:`neighbour_table` search and :meth:`NeighbourTable.links`.
    """
    if not (use_knn or use_pairs or hubness_k > 0):
        empty = torch.zeros((query_features.shape[0], 0), dtype=torch.long, device=query_features.device)
        return MemoryLinks(empty, empty, torch.zeros(query_features.shape[0], dtype=query_features.dtype,
                                                     device=query_features.device))
    table = neighbour_table(query_features, candidates, modality, k, max(k, hubness_k), query_groups, max_similarity)
    return table.links(candidates, k, split_modalities, use_knn, use_pairs, hubness_k)


# --------------------------------------------------------------------------- per-query hypergraphs


@dataclass(frozen=True)
class QueryHypergraph:
    """The disjoint union of the queries' ego hypergraphs.

    Node rows of ``node_features``: ``[0, n_queries)`` the queries, then the
    description nodes, then the kNN neighbour copies, then the pair-partner
    copies. ``node_owner[n]`` is the query a node belongs to;
    ``neighbour_memory_index`` gives, for each memory copy (kNN and pair, in
    node order), its row in the candidate bank.
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
    pair_rows: Tensor | None = None,
    pair_weight: float = 1.0,
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
    * **pair hyperedge** (when ``pair_rows`` is given, from
      :func:`memory_links`): :math:`\{q\} \cup P_k(q)`, the other-modality
      partners of the query's nearest same-modality memory nodes (our
      design: the path query - similar training caption - its image, or
      query - similar training image - its captions, collapsed into one
      hyperedge; weight ``pair_weight``). No hyperedge for a query whose row
      is all -1.

    ``neighbour_rows`` (from :func:`memory_neighbours` on the same
    ``candidates``) skips the neighbour search; features are frozen, so the
    neighbours of training rows can be computed once before training.

    Neighbours and partners enter as *private copies* (new nodes with the
    memory node's features), so no node is shared between two queries:
    every query's output depends on its own ego hypergraph only.
    """
    device, dtype = query_features.device, query_features.dtype
    n_queries = query_features.shape[0]
    feature_blocks = [query_features]
    owner_blocks = [torch.arange(n_queries, device=device)]
    node_lists: list[Tensor] = []
    edge_lists: list[Tensor] = []
    weight_lists: list[Tensor] = []
    memory_copies: list[Tensor] = []
    n_nodes, n_edges = n_queries, 0

    def add_edges(owners_with_edge: Tensor, member_owner: Tensor, member_nodes: Tensor, weight: float) -> None:
        """One hyperedge per query in ``owners_with_edge``: the query plus its members."""
        nonlocal n_edges
        edge_of_owner = torch.full((n_queries,), -1, dtype=torch.long, device=device)
        edge_of_owner[owners_with_edge] = n_edges + torch.arange(owners_with_edge.numel(), device=device)
        node_lists.extend([owners_with_edge, member_nodes])
        edge_lists.extend([edge_of_owner[owners_with_edge], edge_of_owner[member_owner]])
        weight_lists.append(torch.full((owners_with_edge.numel(),), float(weight), dtype=dtype, device=device))
        n_edges += owners_with_edge.numel()

    def add_memory_block(block: Tensor, weight: float) -> None:
        """One hyperedge per query with a valid entry in ``block`` ([n_queries, width] bank rows, -1 = none)."""
        nonlocal n_nodes
        owner, slot = (block >= 0).nonzero(as_tuple=True)
        rows = block[owner, slot]
        copy_nodes = n_nodes + torch.arange(owner.numel(), device=device)
        feature_blocks.append(candidates.features[rows.to(candidates.features.device)].to(device=device, dtype=dtype))
        owner_blocks.append(owner)
        memory_copies.append(rows)
        n_nodes += owner.numel()
        add_edges((block >= 0).any(dim=1).nonzero(as_tuple=True)[0], owner, copy_nodes, weight)

    def check_rows(rows: Tensor, name: str) -> Tensor:
        if (
            candidates is None
            or rows.ndim != 2
            or rows.shape[0] != n_queries
            or (rows.numel() and int(rows.max()) >= len(candidates))
        ):
            raise ValueError(
                f"build_query_hypergraph: {name} must be [n_queries, width] rows of the candidate bank it was "
                "computed for (see HypergraphAdapter.precompute_links)"
            )
        return rows.to(device)

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
        else:
            neighbour_rows = check_rows(neighbour_rows, "neighbour_rows")
        n_pools = 2 if split_modalities else 1
        if neighbour_rows.shape[1] % n_pools:
            raise ValueError(
                f"build_query_hypergraph: neighbour_rows has {neighbour_rows.shape[1]} columns, "
                f"not a multiple of {n_pools} pools"
            )
        for block in neighbour_rows.to(device).chunk(n_pools, dim=1):
            add_memory_block(block, knn_weight)

    if pair_rows is not None:
        add_memory_block(check_rows(pair_rows, "pair_rows"), pair_weight)

    if node_lists:
        graph = Hypergraph(torch.cat(node_lists), torch.cat(edge_lists), torch.cat(weight_lists), n_nodes)
    else:
        graph = _empty(n_nodes, device, dtype)
    return QueryHypergraph(
        node_features=torch.cat(feature_blocks),
        graph=graph,
        n_queries=n_queries,
        node_owner=torch.cat(owner_blocks),
        neighbour_memory_index=(torch.cat(memory_copies) if memory_copies
                                else torch.zeros(0, dtype=torch.long, device=device)),
    )


# --------------------------------------------------------------------------- hubness correction

#: Scale :math:`\gamma` of the hubness phase (see :func:`hubness_phase`); keeps
#: :math:`|\gamma (r_v - c_v + r_t - c_t)| < \pi / 2` for cohesions in [-1, 1].
HUBNESS_PHASE_SCALE = 0.75


def hubness_phase(cohesion: Tensor, centre: float | Tensor, modality: str | int, weight: float) -> Tensor:
    r"""Two extra coordinates that make a dot product subtract the hubness of both ends.

    For an image :math:`v` and a caption :math:`t` with cohesions
    :math:`r_v, r_t` (:func:`hubness_cohesion`) and memory means
    :math:`c_v, c_t` (``centre``), the phases are

    .. math::

        \theta_v = \gamma (r_v - c_v) + \pi/4, \qquad \theta_t = -\gamma (r_t - c_t) - \pi/4

    and the coordinates :math:`\beta(\cos\theta, \sin\theta)`, so that

    .. math::

        \beta^2 \cos(\theta_v - \theta_t) = -\beta^2 \sin\big(\gamma (r_v - c_v + r_t - c_t)\big)
        \approx -\beta^2 \gamma\,(r_v + r_t) + \text{const},

    decreasing in :math:`r_v + r_t` (strictly, as long as the argument stays
    in :math:`(-\pi/2, \pi/2)`, which :data:`HUBNESS_PHASE_SCALE` ensures).
    Appended to :math:`\sqrt{1-\beta^2}\, z` (:math:`z` unit), the result is
    a unit vector whose dot product is, to first order,
    :math:`(1-\beta^2)\,[\,z_v^\top z_t - \tfrac{\lambda}{2}(r_v + r_t)\,]` + const
    with :math:`\beta^2 = \frac{\lambda/2}{\gamma + \lambda/2}`: CSLS with
    weight :math:`\lambda` (``weight``; :math:`\lambda = 1` is CSLS's
    :math:`2\cos - r_v - r_t` up to scale). Returns ``[B, 2]``.
    """
    sign = 1.0 if _modality_code(modality) == IMAGE else -1.0
    beta = math.sqrt(hubness_beta_squared(weight))
    theta = sign * (HUBNESS_PHASE_SCALE * (cohesion - centre) + math.pi / 4)
    return beta * torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)


def hubness_beta_squared(weight: float) -> float:
    r""":math:`\beta^2 = \frac{\lambda/2}{\gamma + \lambda/2}` for hubness weight :math:`\lambda` (0 gives 0)."""
    return (weight / 2) / (HUBNESS_PHASE_SCALE + weight / 2)


# --------------------------------------------------------------------------- the adapter

_MEMORY_BUFFERS = ("memory_features", "memory_modality", "memory_group_ids", "memory_source_index")
INITS = ("pca", "random")


class HypergraphAdapter(RetrievalAdapter):
    r"""OS-HGAdapter's hypergraph adapter (this project's reading; see the module docstring).

    Forward for a batch of queries :math:`x \in \mathbb{R}^{B\times d}` of
    one modality (L2-normalized frozen features), with their ego hypergraph
    (:func:`build_query_hypergraph`) of node features :math:`X` (queries
    first):

    .. math::

        Z_0 &= \mathrm{Dropout}(X)\, P_\downarrow \qquad (P_\downarrow \in \mathbb{R}^{d\times r})\\
        Z_l &= \sigma_l\big(D_v^{-1/2} H W D_e^{-1} H^\top D_v^{-1/2} Z_{l-1} \Theta_l\big), \quad l = 1..L\\
        m &= (Z_L)_{1..B}\, P_\uparrow \qquad (P_\uparrow \in \mathbb{R}^{r\times d})\\
        z &= \frac{\alpha\, m + (1-\alpha)\, x}{\lVert \alpha\, m + (1-\alpha)\, x\rVert}\\
        f(x) &= \big[\sqrt{1-\beta^2}\, z,\ \beta\cos\theta(x),\ \beta\sin\theta(x)\big]
        \quad\text{(only with } \lambda > 0\text{)}

    :math:`\sigma_l` is ReLU between layers and the identity after the last
    one (HGNN's output layer), so a one-layer adapter is linear in the node
    features. ``init="pca"`` (default) starts from a meaningful adapter:
    :meth:`set_memory` sets :math:`P_\downarrow` to the top-``r`` principal
    directions of the memory bank, :math:`P_\uparrow = P_\downarrow^\top`
    and :math:`\Theta_l = I`, so before training the message is the
    parameter-free HGNN convolution projected onto the bank's principal
    subspace (with ``use_reduction=False``: the convolution itself);
    ``init="random"`` keeps PyTorch's default initialization. With
    ``use_reduction=False`` (the ablation without reduce-and-restore)
    :math:`P_\downarrow, P_\uparrow` are the identity and
    :math:`\Theta_l \in \mathbb{R}^{d\times d}`. All maps are bias-free, so
    a query with no hyperedge gets :math:`m = 0` and :math:`z = x / \lVert x
    \rVert`. The residual convention follows CLIP-Adapter: ``alpha`` is the
    weight of the adapted message, ``1 - alpha`` of the input.

    The last line is the **hubness correction** (our design, one reading of
    the paper's "correcting positive and negative matching errors"): with
    ``hubness_weight`` :math:`\lambda > 0` two coordinates are appended
    (:func:`hubness_phase`), built from the cohesion :math:`r(x)` of the
    query's cross-modal kNN hyperedge of ``hubness_k`` memory nodes
    (:func:`hubness_cohesion`) and the bank's mean cohesion per modality
    (buffer ``hubness_centre``, set by :meth:`set_memory`). The image-caption
    dot product then subtracts :math:`\tfrac{\lambda}{2}(r_v + r_t)` to first
    order, as CSLS does: a caption or image that is close to many training
    nodes of the other modality (a hub) stops winning every query. Outputs
    are unit vectors of size ``out_dim = dim + 2`` (``dim`` when
    :math:`\lambda = 0`). Inductive: :math:`r(x)` uses the memory only.

    Hyperedge kinds (``hyperedges``): ``"semantic"`` (caption + its LLM
    descriptions), ``"knn"`` (the query with its ``k`` nearest memory images
    and, separately, captions), ``"pair"`` (the query with the other-modality
    partners of its ``k`` nearest same-modality memory nodes - cross-modal
    evidence reached through intra-modal similarity; see
    :func:`memory_links`).

    Options: ``reduced_dim`` (default ``dim // 4``), ``alpha`` (0.2),
    ``num_layers`` (1), ``hyperedges`` (subset of :data:`HYPEREDGE_KINDS`,
    default semantic + knn), ``k`` neighbours per pool (5),
    ``split_modalities`` (True), ``semantic_weight`` / ``knn_weight`` /
    ``pair_weight`` (1.0), ``use_reduction`` (True), ``dropout`` (0.0),
    ``test_mode`` (``"inductive"``), ``hubness_weight`` (0.0, off),
    ``hubness_k`` (200), ``init`` (``"pca"``).

    Memory: :meth:`set_memory` stores a :class:`MemoryBank` of training
    nodes as non-persistent buffers (they move with ``.to(device)`` but are
    not in the ``state_dict``): the bank is the training split's frozen
    features, rebuilt identically by ``MemoryBank.from_train_split``, so a
    checkpoint holds the weights and ``hubness_centre`` only. To restore an
    adapter, build it with the same options, call :meth:`set_memory` with
    the same bank, then ``load_state_dict``.

    Training: call :meth:`encode_images` / :meth:`encode_texts` on train
    batches with ``context.group_ids`` = the train image index of each row.
    The memory then acts as "the rest of the train bank": memory nodes of
    the row's own image (the row itself, its image, its sibling captions) are
    not linked, which keeps a row from trivially linking to its own copy and
    mirrors test time, where a query's image and captions are never in the
    memory. Inputs and memory are frozen, so :meth:`precompute_links` can
    find every row's links once; pass them as ``context.links`` (same
    result, no search per step).

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
        hyperedges: Sequence[str] = ("semantic", "knn"),
        k: int = 5,
        split_modalities: bool = True,
        semantic_weight: float = 1.0,
        knn_weight: float = 1.0,
        pair_weight: float = 1.0,
        use_reduction: bool = True,
        dropout: float = 0.0,
        test_mode: str = "inductive",
        hubness_weight: float = 0.0,
        hubness_k: int = 200,
        init: str = "pca",
    ) -> None:
        super().__init__()
        hyperedges = tuple(hyperedges)
        unknown = sorted(set(hyperedges) - set(HYPEREDGE_KINDS))
        if unknown:
            raise ValueError(f"HypergraphAdapter: unknown hyperedge kinds {unknown}; known: {HYPEREDGE_KINDS}")
        if test_mode not in TEST_MODES:
            raise ValueError(f"HypergraphAdapter: test_mode must be one of {TEST_MODES}, got {test_mode!r}")
        if init not in INITS:
            raise ValueError(f"HypergraphAdapter: init must be one of {INITS}, got {init!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"HypergraphAdapter: alpha must be in [0, 1], got {alpha}")
        if num_layers < 1 or k < 1:
            raise ValueError(f"HypergraphAdapter: num_layers and k must be >= 1, got {num_layers} and {k}")
        if hubness_weight < 0 or (hubness_weight > 0 and hubness_k < 1):
            raise ValueError(
                f"HypergraphAdapter: hubness_weight must be >= 0 and hubness_k >= 1, got {hubness_weight} and "
                f"{hubness_k}"
            )
        self.dim = int(dim)
        self.reduced_dim = int(reduced_dim or max(1, dim // 4)) if use_reduction else self.dim
        if self.reduced_dim > self.dim:
            raise ValueError(f"HypergraphAdapter: reduced_dim {self.reduced_dim} exceeds dim {self.dim}")
        self.alpha = float(alpha)
        self.num_layers = int(num_layers)
        self.hyperedges = hyperedges
        self.k = int(k)
        self.split_modalities = bool(split_modalities)
        self.semantic_weight = float(semantic_weight)
        self.knn_weight = float(knn_weight)
        self.pair_weight = float(pair_weight)
        self.use_reduction = bool(use_reduction)
        self.dropout_p = float(dropout)
        self.test_mode = test_mode
        self.hubness_weight = float(hubness_weight)
        self.hubness_k = int(hubness_k)
        self.init = init
        self.out_dim = self.dim + (2 if self.hubness_weight > 0 else 0)
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
        if init == "pca":
            with torch.no_grad():
                for theta in self.thetas:
                    theta.weight.copy_(torch.eye(self.reduced_dim))
        for name in _MEMORY_BUFFERS:
            # Not persistent: the bank is derived data (the training split's frozen features), rebuilt by
            # set_memory, so checkpoints hold only the weights (kilobytes, not the bank's tens of megabytes).
            self.register_buffer(name, None, persistent=False)
        # Mean hubness cohesion of the memory's images and captions (set by set_memory).
        self.register_buffer("hubness_centre", torch.zeros(2))

    # -- interface -----------------------------------------------------------------

    @property
    def uses_test_gallery(self) -> bool:
        return self.test_mode == "transductive"

    def set_memory(self, bank: MemoryBank | None) -> None:
        """Store ``bank`` (moved to this module's device) as buffers; None clears the memory.

        With ``init="pca"`` and reduction, also sets :math:`P_\\downarrow` /
        :math:`P_\\uparrow` from the bank's principal directions (see the class
        docstring; trained weights loaded afterwards replace them). With the
        hubness correction on, computes ``hubness_centre``, the mean cohesion
        of the bank's own images and captions (each excluding its own group).
        """
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
        if self.init == "pca" and self.use_reduction:
            self._init_principal_subspace(self.memory_features)
        if self.hubness_weight > 0:
            self.hubness_centre.copy_(self._memory_cohesion_means())

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
            links=context.links,
            modality="image",
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
            links=context.links,
            modality="text",
        )

    def config(self) -> dict[str, Any]:
        memory = self.memory
        return {
            **super().config(), "dim": self.dim, "out_dim": self.out_dim, "reduced_dim": self.reduced_dim,
            "alpha": self.alpha, "num_layers": self.num_layers, "hyperedges": list(self.hyperedges), "k": self.k,
            "split_modalities": self.split_modalities, "semantic_weight": self.semantic_weight,
            "knn_weight": self.knn_weight, "pair_weight": self.pair_weight, "use_reduction": self.use_reduction,
            "dropout": self.dropout_p, "test_mode": self.test_mode, "hubness_weight": self.hubness_weight,
            "hubness_k": self.hubness_k, "init": self.init, "memory_size": 0 if memory is None else len(memory),
        }

    # -- computation ---------------------------------------------------------------

    @property
    def _needs_links(self) -> bool:
        return "knn" in self.hyperedges or "pair" in self.hyperedges or self.hubness_weight > 0

    def _links(
        self, query_features: Tensor, modality: str, memory: MemoryBank | None, query_groups: Tensor | None,
        max_similarity: float | None,
    ) -> MemoryLinks:
        return memory_links(
            query_features, memory, modality, self.k, query_groups, self.split_modalities,
            use_knn="knn" in self.hyperedges, use_pairs="pair" in self.hyperedges,
            hubness_k=self.hubness_k if self.hubness_weight > 0 else 0, max_similarity=max_similarity,
        )

    def _resolve_memory(self, memory: MemoryBank | None, gallery: MemoryBank | None,
                        links: MemoryLinks | None) -> tuple[MemoryBank | None, float | None]:
        memory = memory if memory is not None else self.memory
        if gallery is None:
            return memory, None
        if links is not None:
            raise ValueError("HypergraphAdapter: precomputed links cannot be combined with a gallery")
        if self.test_mode != "transductive":
            raise ValueError(
                "HypergraphAdapter: a test gallery was passed but test_mode is 'inductive'; "
                "inductive adaptation uses only the query, its descriptions and the train memory. "
                "Build the adapter with test_mode='transductive' to link gallery nodes."
            )
        memory = gallery if memory is None else memory.concat(gallery.to(memory.features.device))
        return memory, DUPLICATE_SIMILARITY

    def build_hypergraph(
        self,
        query_features: Tensor,
        query_description_features: Tensor | None = None,
        description_mask: Tensor | None = None,
        memory: MemoryBank | None = None,
        query_groups: Tensor | None = None,
        gallery: MemoryBank | None = None,
        links: MemoryLinks | None = None,
        modality: str = "text",
    ) -> QueryHypergraph:
        """The ego hypergraphs :meth:`adapt` convolves (exposed for inspection)."""
        memory, max_similarity = self._resolve_memory(memory, gallery, links)
        use_knn, use_pairs = "knn" in self.hyperedges, "pair" in self.hyperedges
        if links is None and (use_knn or use_pairs):
            links = self._links(query_features, modality, memory, query_groups, max_similarity)
        return build_query_hypergraph(
            query_features,
            query_description_features,
            description_mask,
            candidates=memory,
            k=self.k,
            query_groups=query_groups,
            split_modalities=self.split_modalities,
            use_semantic="semantic" in self.hyperedges,
            use_knn=use_knn,
            semantic_weight=self.semantic_weight,
            knn_weight=self.knn_weight,
            max_similarity=max_similarity,
            neighbour_rows=links.neighbour_rows if use_knn else None,
            pair_rows=links.pair_rows if use_pairs else None,
            pair_weight=self.pair_weight,
        )

    @property
    def table_widths(self) -> tuple[int, int]:
        """Smallest :class:`NeighbourTable` widths (same, other modality) this adapter's links need."""
        hubness_k = self.hubness_k if self.hubness_weight > 0 else 0
        return self.k, max(self.k, hubness_k)

    @torch.no_grad()
    def precompute_links(
        self, features: Tensor, modality: str, group_ids: Tensor | None = None, batch_size: int = 4096,
        progress: bool = False, table: NeighbourTable | None = None,
    ) -> MemoryLinks:
        """Memory links (kNN rows, pair rows, hubness cohesion) of many rows, for ``AdapterContext.links``.

        The features and the memory bank are frozen, so the links of the
        training rows (with their ``group_ids``) and of dev/test queries
        (without) never change: computing them once saves the searches in
        every training step and evaluation. ``table`` (a
        :class:`NeighbourTable` of the same rows against this adapter's
        memory, at least :attr:`table_widths` wide) skips the search. Valid
        only for this adapter's current memory and options; call again after
        :meth:`set_memory`.
        """
        if table is None:
            blocks = [
                neighbour_table(features[rows], self.memory, modality, *self.table_widths,
                                None if group_ids is None else group_ids[rows])
                for rows in tqdm([slice(s, s + batch_size) for s in range(0, features.shape[0], batch_size)],
                                 desc=f"memory links ({modality}s)", disable=not progress)
            ]
            if not blocks:
                return self._links(features[:0], modality, self.memory, None, None)
            table = NeighbourTable.cat(blocks)
        if len(table) != features.shape[0] or table.modality != _modality_code(modality):
            raise ValueError(
                f"HypergraphAdapter.precompute_links: the table has {len(table)} rows of modality {table.modality}, "
                f"the features {features.shape[0]} rows of {modality!r}"
            )
        hubness_k = self.hubness_k if self.hubness_weight > 0 else 0
        return table.links(self.memory, self.k, self.split_modalities, "knn" in self.hyperedges,
                           "pair" in self.hyperedges, hubness_k)

    def adapt(
        self,
        query_features: Tensor,
        query_description_features: Tensor | None = None,
        description_mask: Tensor | None = None,
        memory: MemoryBank | None = None,
        query_groups: Tensor | None = None,
        gallery: MemoryBank | None = None,
        links: MemoryLinks | None = None,
        modality: str = "text",
    ) -> Tensor:
        """Adapted, L2-normalized query vectors ``[B, out_dim]`` (formula in the class docstring).

        ``query_description_features`` ``[B, K, dim]`` with optional
        ``description_mask`` ``[B, K]``; ``memory`` defaults to the stored
        bank; ``query_groups`` ``[B]`` only during training; ``gallery`` only
        in transductive mode; ``links`` from :meth:`precompute_links`
        (optional, skips the searches); ``modality`` of the queries
        (``"image"`` or ``"text"``: pair hyperedges and the hubness phase
        depend on it).
        """
        if query_features.ndim != 2 or query_features.shape[1] != self.dim:
            raise ValueError(
                f"HypergraphAdapter.adapt: expected query features [batch, {self.dim}], got {tuple(query_features.shape)}"
            )
        memory, max_similarity = self._resolve_memory(memory, gallery, links)
        if links is None and self._needs_links:
            links = self._links(query_features, modality, memory, query_groups, max_similarity)
        ego = self.build_hypergraph(
            query_features, query_description_features, description_mask, memory, query_groups, None, links,
            modality,
        )
        incidence = ego.graph.incidence(query_features.dtype)
        z = self.down(self.dropout(ego.node_features))
        for layer, theta in enumerate(self.thetas):
            z = hypergraph_conv(z, incidence, ego.graph.edge_weights, theta.weight.T)
            if layer < self.num_layers - 1:
                z = F.relu(z)
        message = self.up(z[: ego.n_queries])
        adapted = F.normalize(self.alpha * message + (1.0 - self.alpha) * query_features, dim=-1)
        if self.hubness_weight == 0:
            return adapted
        centre = self.hubness_centre[_modality_code(modality)]
        phase = hubness_phase(links.cohesion.to(adapted), centre, modality, self.hubness_weight)
        scale = math.sqrt(1.0 - hubness_beta_squared(self.hubness_weight))
        return torch.cat([scale * adapted, phase], dim=-1)

    # -- initialisation --------------------------------------------------------------

    @torch.no_grad()
    def _init_principal_subspace(self, features: Tensor) -> None:
        """:math:`P_\\downarrow` = top-``r`` right singular vectors of the centred features, :math:`P_\\uparrow = P_\\downarrow^\\top`."""
        centred = features.float() - features.float().mean(dim=0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        basis = torch.zeros(self.reduced_dim, self.dim, device=features.device)
        width = min(self.reduced_dim, vh.shape[0])
        basis[:width] = vh[:width]
        self.down.weight.copy_(basis.to(self.down.weight))
        self.up.weight.copy_(basis.T.to(self.up.weight))

    @torch.no_grad()
    def _memory_cohesion_means(self, max_rows: int = 2048) -> Tensor:
        """Mean cohesion of the bank's images and of its captions, each excluding its own group.

        Estimated on at most ``max_rows`` evenly spaced nodes per modality:
        the centre only keeps the phase in its linear range, and any
        constant gives the same rankings while it does.
        """
        memory = self.memory
        means = torch.zeros(2, device=memory.features.device)
        for code in (IMAGE, TEXT):
            pool = _modality_pool(memory, code)
            if pool.numel() == 0:
                continue
            rows = pool[torch.linspace(0, pool.numel() - 1, min(max_rows, pool.numel())).round().long()]
            means[code] = hubness_cohesion(memory.features[rows], memory, code, self.hubness_k,
                                           memory.group_ids[rows]).mean()
        return means

    def _device(self) -> torch.device:
        return next(self.parameters()).device

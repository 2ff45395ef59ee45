"""The per-query ("ego") hypergraphs the adapter convolves, for training and test alike.

Each query gets its own small hypergraph (its "ego" hypergraph): the query,
its description nodes, and private copies of the memory nodes it links to
(kNN neighbours, pair partners), so no node is shared between two queries'
hypergraphs. The memory bank and the per-query hypergraphs are our design.
Hyperedges:

* *semantic* (from the paper): a caption with its own LLM descriptions;
* *similarity* hyperedges to a query's nearest memory images and captions
  (``"knn"``), and *pair* hyperedges (``"pair"``): a training image and its
  own captions belong together, so a query linked to its nearest training
  nodes of its own modality reaches their partners of the other modality
  (a caption reaches the images of the training captions most like it).
  Within-modality similarity is far more reliable than cross-modal
  similarity in a weak joint space, and on the lite backbone pair
  hyperedges beat kNN hyperedges on dev. Both kinds are our design; the
  paper says only that hyperedges join nodes with related nodes across both
  modalities.

:func:`build_query_hypergraph` builds the hypergraphs of a batch of queries
at once and returns their disjoint union, a :class:`QueryHypergraph`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from osgha_lite.methods.hypergraph.links import memory_neighbours
from osgha_lite.methods.hypergraph.memory import MemoryBank
from osgha_lite.methods.hypergraph.structure import Hypergraph, empty_hypergraph

__all__ = ["QueryHypergraph", "build_query_hypergraph"]


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
      :func:`~osgha_lite.methods.hypergraph.links.memory_links`):
      :math:`\{q\} \cup P_k(q)`, the other-modality
      partners of the query's nearest same-modality memory nodes (our
      design: the path query - similar training caption - its image, or
      query - similar training image - its captions, collapsed into one
      hyperedge; weight ``pair_weight``). No hyperedge for a query whose row
      is all -1.

    ``neighbour_rows`` (from
    :func:`~osgha_lite.methods.hypergraph.links.memory_neighbours` on the same
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
        graph = empty_hypergraph(n_nodes, device, dtype)
    return QueryHypergraph(
        node_features=torch.cat(feature_blocks),
        graph=graph,
        n_queries=n_queries,
        node_owner=torch.cat(owner_blocks),
        neighbour_memory_index=(torch.cat(memory_copies) if memory_copies
                                else torch.zeros(0, dtype=torch.long, device=device)),
    )

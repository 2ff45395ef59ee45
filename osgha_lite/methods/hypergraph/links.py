"""What each query needs from the memory bank, searched once and shared between settings.

A query links to the bank in three ways: its kNN hyperedges (its nearest
memory images and captions), its pair hyperedge (the other-modality partners
of its nearest memory nodes of its own modality) and its hubness cohesion
(how close it is to its nearest memory nodes of the other modality). The
inputs and the bank are frozen, so these links can be searched once per
split and reused by every training step, evaluation and setting.

* :func:`neighbour_table`, :class:`NeighbourTable`, :func:`memory_links`,
  :class:`MemoryLinks` - what each query needs from the bank (kNN rows, pair
  rows, hubness cohesion), searched once and shared between settings.
* :func:`memory_neighbours` - the kNN rows alone.
* :func:`hubness_cohesion` - the cohesion :math:`r(q)` of the hubness
  correction (:mod:`osgha_lite.methods.hypergraph.hubness`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from osgha_lite.methods.hypergraph.memory import IMAGE, TEXT, MemoryBank, modality_code, modality_pool, paired_rows
from osgha_lite.methods.hypergraph.structure import nearest_neighbour_similarities

__all__ = [
    "MemoryLinks",
    "NeighbourTable",
    "hubness_cohesion",
    "memory_links",
    "memory_neighbours",
    "neighbour_table",
]


# --------------------------------------------------------------------------- links of queries to the memory


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
    :func:`~osgha_lite.methods.hypergraph.structure.nearest_neighbours` (same group,
    or cosine above ``max_similarity``).
    """
    candidates = _check_bank(candidates, "memory_neighbours")
    if split_modalities:
        pools = [modality_pool(candidates, m) for m in (IMAGE, TEXT)]
    else:
        pools = [torch.arange(len(candidates), device=candidates.features.device)]
    blocks = [_pool_neighbours(query_features, candidates, pool, k, query_groups, max_similarity)[0] for pool in pools]
    return torch.cat(blocks, dim=1)


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
    :func:`~osgha_lite.methods.hypergraph.structure.nearest_neighbours`. A large
    :math:`r(q)` marks a *hub*, a node
    close to many nodes of the other modality whatever its content; CSLS
    (Conneau et al. 2018) subtracts it from the similarity. Queries with no
    allowed neighbour get 0. Returns ``[n_queries]``.
    """
    candidates = _check_bank(candidates, "hubness_cohesion")
    other = TEXT if modality_code(modality) == IMAGE else IMAGE
    _, values = _pool_neighbours(query_features, candidates, modality_pool(candidates, other), k, query_groups,
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
    (so :meth:`osgha_lite.methods.AdapterContext.select` slices it) and
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

    Exclusions as in :func:`~osgha_lite.methods.hypergraph.structure.nearest_neighbours`
    (same group, or cosine above ``max_similarity``).
    """
    candidates = _check_bank(candidates, "neighbour_table")
    code = modality_code(modality)
    other = TEXT if code == IMAGE else IMAGE
    same_rows, same_sims = _pool_neighbours(query_features, candidates, modality_pool(candidates, code), same_width,
                                            query_groups, max_similarity)
    other_rows, other_sims = _pool_neighbours(query_features, candidates, modality_pool(candidates, other),
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
      (:func:`~osgha_lite.methods.hypergraph.memory.paired_rows`): for a caption,
      the images of its nearest training captions; for an image, the
      captions of its nearest training images. Flattened to ``[B, k * P]``,
      -1 where missing.
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

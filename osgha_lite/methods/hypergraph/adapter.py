r"""The hypergraph adapter: OS-HGAdapter as this project reads it.

:class:`HypergraphAdapter` (interface of :mod:`osgha_lite.methods`) runs
HGNN's convolution (:func:`~osgha_lite.methods.hypergraph.structure.hypergraph_conv`)
over each query's ego hypergraph
(:func:`~osgha_lite.methods.hypergraph.query.build_query_hypergraph`) in a reduced
dimension, restores the original one and mixes the result with the input by
a residual ratio, as the paper describes (:mod:`osgha_lite.methods.hypergraph`).
Beyond the paper, and documented where they are made, this module adds:
initialising the reduction on the memory's principal subspace, activation
placement, how training rows avoid linking to their own image, and the
inductive test protocol (class docstring and below); the memory bank
(:mod:`~osgha_lite.methods.hypergraph.memory`), kNN and pair hyperedges
(:mod:`~osgha_lite.methods.hypergraph.query`) and the hubness correction
(:mod:`~osgha_lite.methods.hypergraph.hubness`) are documented in their modules.

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
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from osgha_lite.atomic import array_digest
from osgha_lite.methods.base import AdapterContext, RetrievalAdapter
from osgha_lite.methods.dropout import PortableDropout
from osgha_lite.methods.hypergraph.hubness import hubness_beta_squared, hubness_phase
from osgha_lite.methods.hypergraph.links import MemoryLinks, NeighbourTable, hubness_cohesion, memory_links, neighbour_table
from osgha_lite.methods.hypergraph.memory import IMAGE, TEXT, MemoryBank, modality_code, modality_pool
from osgha_lite.methods.hypergraph.query import QueryHypergraph, build_query_hypergraph
from osgha_lite.methods.hypergraph.structure import hypergraph_conv, hypergraph_conv_rows
from osgha_lite.runtime import progress_bar

__all__ = ["DUPLICATE_SIMILARITY", "HYPEREDGE_KINDS", "INITS", "TEST_MODES", "HypergraphAdapter"]

HYPEREDGE_KINDS = ("semantic", "knn", "pair")
TEST_MODES = ("inductive", "transductive")
#: In transductive mode a candidate this similar to the query is taken to be
#: the query itself (it is in the gallery too) and is not linked.
DUPLICATE_SIMILARITY = 0.9999

_MEMORY_BUFFERS = ("memory_features", "memory_modality", "memory_group_ids", "memory_source_index")
INITS = ("pca", "random")

#: What set_memory derives from a bank (principal directions, mean cohesions), by the bank's content
#: digest and the options used: methods and sweeps share one training bank, and these are deterministic
#: functions of it, so each is computed once per process. The last few banks are kept.
_DERIVED: dict[tuple, Tensor] = {}
_DERIVED_LIMIT = 16


def _derived(key: tuple, compute) -> Tensor:
    if key not in _DERIVED:
        if len(_DERIVED) >= _DERIVED_LIMIT:
            _DERIVED.pop(next(iter(_DERIVED)))
        _DERIVED[key] = compute().detach().cpu()
    return _DERIVED[key]


class HypergraphAdapter(RetrievalAdapter):
    r"""OS-HGAdapter's hypergraph adapter (this project's reading; see the module docstring).

    Forward for a batch of queries :math:`x \in \mathbb{R}^{B\times d}` of
    one modality (L2-normalized frozen features), with their ego hypergraph
    (:func:`~osgha_lite.methods.hypergraph.query.build_query_hypergraph`) of node
    features :math:`X` (queries first):

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
    (:func:`~osgha_lite.methods.hypergraph.hubness.hubness_phase`), built from the
    cohesion :math:`r(x)` of the query's cross-modal kNN hyperedge of
    ``hubness_k`` memory nodes
    (:func:`~osgha_lite.methods.hypergraph.links.hubness_cohesion`) and the bank's
    mean cohesion per modality (buffer ``hubness_centre``, set by
    :meth:`set_memory`). The image-caption
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
    :func:`~osgha_lite.methods.hypergraph.links.memory_links`).

    Options: ``reduced_dim`` (default ``dim // 4``), ``alpha`` (0.2),
    ``num_layers`` (1), ``hyperedges`` (subset of :data:`HYPEREDGE_KINDS`,
    default semantic + knn), ``k`` neighbours per pool (5),
    ``split_modalities`` (True), ``semantic_weight`` / ``knn_weight`` /
    ``pair_weight`` (1.0), ``use_reduction`` (True), ``dropout`` (0.0),
    ``test_mode`` (``"inductive"``), ``hubness_weight`` (0.0, off),
    ``hubness_k`` (200), ``init`` (``"pca"``).

    Memory: :meth:`set_memory` stores a
    :class:`~osgha_lite.methods.hypergraph.memory.MemoryBank` of training
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
        self.dropout = PortableDropout(dropout)
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
        if (self.init == "pca" and self.use_reduction) or self.hubness_weight > 0:
            bank_digest = array_digest(*values)
        if self.init == "pca" and self.use_reduction:
            self._init_principal_subspace(self.memory_features, bank_digest)
        if self.hubness_weight > 0:
            centre = _derived(("cohesion", bank_digest, self.hubness_k), self._memory_cohesion_means)
            self.hubness_centre.copy_(centre.to(self.hubness_centre))

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
        """Smallest :class:`~osgha_lite.methods.hypergraph.links.NeighbourTable` widths (same, other modality) this
        adapter's links need."""
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
        :class:`~osgha_lite.methods.hypergraph.links.NeighbourTable` of the same rows
        against this adapter's memory, at least :attr:`table_widths` wide)
        skips the search. Valid
        only for this adapter's current memory and options; call again after
        :meth:`set_memory`.
        """
        if table is None:
            blocks = [
                neighbour_table(features[rows], self.memory, modality, *self.table_widths,
                                None if group_ids is None else group_ids[rows])
                for rows in progress_bar([slice(s, s + batch_size) for s in range(0, features.shape[0], batch_size)],
                                 desc=f"memory links ({modality}s)", disable=not progress)
            ]
            if not blocks:
                return self._links(features[:0], modality, self.memory, None, None)
            table = NeighbourTable.cat(blocks)
        if len(table) != features.shape[0] or table.modality != modality_code(modality):
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
        nodes = self.dropout(ego.node_features)
        if self.num_layers == 1:
            # One layer is linear in the node features: aggregate them first, then project the query
            # rows only (hypergraph_conv_rows), rather than projecting every node of the ego graphs.
            z = hypergraph_conv_rows(nodes, incidence, ego.graph.edge_weights, ego.n_queries)
            message = self.up(self.thetas[0](self.down(z)))
        else:
            z = self.down(nodes)
            for layer, theta in enumerate(self.thetas):
                z = hypergraph_conv(z, incidence, ego.graph.edge_weights, theta.weight.T)
                if layer < self.num_layers - 1:
                    z = F.relu(z)
            message = self.up(z[: ego.n_queries])
        adapted = F.normalize(self.alpha * message + (1.0 - self.alpha) * query_features, dim=-1)
        if self.hubness_weight == 0:
            return adapted
        centre = self.hubness_centre[modality_code(modality)]
        phase = hubness_phase(links.cohesion.to(adapted), centre, modality, self.hubness_weight)
        scale = math.sqrt(1.0 - hubness_beta_squared(self.hubness_weight))
        return torch.cat([scale * adapted, phase], dim=-1)

    # -- initialisation --------------------------------------------------------------

    @torch.no_grad()
    def _init_principal_subspace(self, features: Tensor, digest: str | None = None) -> None:
        """:math:`P_\\downarrow` = top-``r`` right singular vectors of the centred features, :math:`P_\\uparrow = P_\\downarrow^\\top`.
        ``digest`` (of the bank) lets adapters on the same bank share one decomposition."""

        def right_singular_vectors() -> Tensor:
            centred = features.float() - features.float().mean(dim=0)
            return torch.linalg.svd(centred, full_matrices=False)[2]

        vh = (right_singular_vectors() if digest is None else
              _derived(("svd", digest), right_singular_vectors).to(features.device))
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
            pool = modality_pool(memory, code)
            if pool.numel() == 0:
                continue
            rows = pool[torch.linspace(0, pool.numel() - 1, min(max_rows, pool.numel())).round().long()]
            means[code] = hubness_cohesion(memory.features[rows], memory, code, self.hubness_k,
                                           memory.group_ids[rows]).mean()
        return means

    def _device(self) -> torch.device:
        return next(self.parameters()).device

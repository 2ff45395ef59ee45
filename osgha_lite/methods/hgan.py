r"""HGAN (Guo et al., arXiv 2212.08281): hierarchical graph alignment, on frozen local and global features.

What the paper describes
------------------------
Local features (image regions, words) as well as global ones; a feature
graph per modality that relates the local nodes; a multi-granularity
feature aggregation and rearrangement module (MFAR) that gathers the
graph's nodes into a shared set of semantic slots, so that image and text
slots line up; and similarity at three levels (local, global, fused),
combined for retrieval.

What is reproduced here, and how (our reading where the paper is silent)
------------------------------------------------------------------------
Inputs are the backbone's frozen features: the global vectors
:math:`x, t \in \mathbb{R}^d` and local features in the same space
(:meth:`osgha_lite.backbones.Backbone.embed_local`: a 4x4 grid of
EfficientNet-Lite0 regions or ViT patch tokens; MiniLM or CLIP token
states), :math:`V \in \mathbb{R}^{L \times d}` with a mask. Nothing of the
encoders is fine-tuned (the paper fine-tunes its own encoders).

* **Feature graph** (per modality): nodes :math:`\hat V = \operatorname{normalize}(V)`;
  edges from a learned affinity, :math:`A = \operatorname{softmax}\big((\hat V W_q)(\hat V W_k)^\top / \sqrt{r}\big)`
  over the real nodes; one graph-convolution step with a residual,
  :math:`G = \hat V + \operatorname{ReLU}(A \hat V W_g)`.
* **MFAR**: ``slots`` learned queries :math:`Q \in \mathbb{R}^{C \times d}`,
  **shared by both modalities**, attend over the graph's nodes,
  :math:`S = \operatorname{softmax}_{\text{nodes}}(Q G^\top / \sqrt d)\,G`: the
  nodes are aggregated at the granularity of each slot and rearranged into
  the same slot order for images and captions, so slot :math:`c` of an image
  is compared with slot :math:`c` of a caption. A second, coarse granularity
  is the masked mean of the nodes, :math:`\bar g`.
* **Three levels**: global :math:`\hat g = E(x)` (residual bottleneck, as
  CLIP-Adapter); local :math:`\hat s_c = \operatorname{normalize}(S_c)`;
  fused :math:`\hat f = \operatorname{normalize}(\hat g + \operatorname{normalize}(\bar g + \tfrac1C\sum_c S_c))`.
* **Combined similarity**: with level weights :math:`w_g, w_l, w_f`,

  .. math::

      s(i, t) = \frac{w_g \langle \hat g_i, \hat g_t\rangle + \frac{w_l}{C}\sum_c \langle \hat s_{ic}, \hat s_{tc}\rangle
                + w_f \langle \hat f_i, \hat f_t\rangle}{w_g + w_l + w_f},

  obtained as the dot product of the unit vectors
  :math:`[\sqrt{w_g}\,\hat g;\ \sqrt{w_l / C}\,\hat s_1; \dots;\ \sqrt{w_f}\,\hat f] / \sqrt{w_g + w_l + w_f}`,
  so retrieval stays a dual-encoder matrix product (output dimension
  :math:`(C + 2)\,d`).
* **Loss**: InfoNCE on the combined similarity (the harness's main term)
  plus, weighted by ``level_weight``, the mean of an InfoNCE term per level.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from osgha_lite.methods.base import AdapterContext, RetrievalAdapter, check_input
from osgha_lite.methods.baselines import Expert
from osgha_lite.losses import infonce_loss

LEVELS = ("global", "local", "fused")


class FeatureGraph(nn.Module):
    """One affinity graph over a row's local nodes and a residual graph convolution (module docstring)."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        rank = max(1, dim // reduction)
        self.query, self.key = nn.Linear(dim, rank, bias=False), nn.Linear(dim, rank, bias=False)
        self.message = nn.Linear(dim, dim, bias=False)
        nn.init.normal_(self.message.weight, std=0.01)
        self.scale = 1.0 / math.sqrt(rank)

    def adjacency(self, nodes: Tensor, mask: Tensor) -> Tensor:
        """Row-stochastic ``[B, L, L]`` affinities over the real nodes (padding gets no weight)."""
        logits = (self.query(nodes) @ self.key(nodes).transpose(1, 2)) * self.scale
        return torch.softmax(logits.masked_fill(~mask[:, None, :], float("-inf")), dim=-1)

    def forward(self, nodes: Tensor, mask: Tensor) -> Tensor:
        out = nodes + F.relu(self.adjacency(nodes, mask) @ self.message(nodes))
        return out * mask[..., None]


class HGANAdapter(RetrievalAdapter):
    """Feature graphs, MFAR slots and three-level similarity on frozen features (module docstring).

    Args:
        dim: feature dimension (global and local).
        slots: :math:`C`, the shared MFAR slots.
        reduction: bottleneck reduction of the global experts and of the graph affinities.
        alpha: residual ratio of the global experts.
        level_weights: ``{"global": w_g, "local": w_l, "fused": w_f}``.
        level_weight: weight of the per-level InfoNCE terms.
    """

    name = "hgan"

    def __init__(self, dim: int, slots: int = 4, reduction: int = 4, alpha: float = 0.2,
                 level_weights: dict[str, float] | None = None, level_weight: float = 0.5) -> None:
        super().__init__()
        weights = {"global": 0.5, "local": 0.25, "fused": 0.25, **(level_weights or {})}
        if sorted(weights) != sorted(LEVELS) or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"HGANAdapter: level_weights needs non-negative {LEVELS} with a positive sum, got {weights}")
        self.dim, self.n_slots, self.reduction, self.alpha = int(dim), int(slots), int(reduction), float(alpha)
        self.level_weights, self.level_weight = {k: float(weights[k]) for k in LEVELS}, float(level_weight)
        self.global_experts = nn.ModuleDict({m: Expert(dim, reduction, alpha) for m in ("image", "text")})
        self.graphs = nn.ModuleDict({m: FeatureGraph(dim, reduction) for m in ("image", "text")})
        self.slot_queries = nn.Parameter(torch.randn(slots, dim) / math.sqrt(dim))
        self._kept: dict[str, dict[str, Tensor]] = {}

    @property
    def out_dim(self) -> int:
        return (self.n_slots + 2) * self.dim

    def mfar(self, graph_nodes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(slots [B, C, d], coarse mean [B, d])``: slot attention over the nodes and their masked mean."""
        logits = (self.slot_queries @ graph_nodes.transpose(1, 2)) / math.sqrt(self.dim)
        attention = torch.softmax(logits.masked_fill(~mask[:, None, :], float("-inf")), dim=-1)
        mean = graph_nodes.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1)
        return attention @ graph_nodes, mean

    def levels(self, x: Tensor, modality: str, context: AdapterContext | None) -> dict[str, Tensor]:
        """The unit vectors of each level: ``global [B, d]``, ``local [B, C, d]``, ``fused [B, d]``."""
        if context is None or context.local_features is None:
            raise ValueError(f"HGANAdapter: {modality} rows need local features (context.local_features); "
                             "set \"local\": true on the method so the harness loads them")
        nodes = context.local_features.to(x.dtype)
        mask = context.local_mask.bool() if context.local_mask is not None else torch.ones(nodes.shape[:2], dtype=torch.bool, device=x.device)
        mask = mask | ~mask.any(dim=1, keepdim=True)  # a row without nodes keeps its (zero) nodes
        graph = self.graphs[modality](F.normalize(nodes, dim=-1) * mask[..., None], mask)
        slots, mean = self.mfar(graph, mask)
        glob = self.global_experts[modality](x)
        local_summary = F.normalize(mean + slots.mean(dim=1), dim=-1)
        return {"global": glob, "local": F.normalize(slots, dim=-1),
                "fused": F.normalize(glob + local_summary, dim=-1)}

    def combine(self, levels: dict[str, Tensor]) -> Tensor:
        """The unit vector whose dot products are the weighted three-level similarity."""
        w = self.level_weights
        parts = [math.sqrt(w["global"]) * levels["global"],
                 math.sqrt(w["local"] / self.n_slots) * levels["local"].flatten(1),
                 math.sqrt(w["fused"]) * levels["fused"]]
        return torch.cat(parts, dim=1) / math.sqrt(sum(w.values()))

    def _encode(self, x: Tensor, modality: str, context: AdapterContext | None) -> Tensor:
        check_input(x, self.dim, f"HGANAdapter.encode_{modality}s")
        levels = self.levels(x, modality, context)
        if self.training:
            self._kept[modality] = levels
        return self.combine(levels)

    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        return self._encode(x, "image", context)

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        return self._encode(x, "text", context)

    def level_similarity(self, image_levels: dict[str, Tensor], text_levels: dict[str, Tensor]) -> dict[str, Tensor]:
        """Image x text similarity matrices of each level (local: mean over slots of slot-wise cosines)."""
        local = torch.einsum("icd,tcd->it", image_levels["local"], text_levels["local"]) / self.n_slots
        return {"global": image_levels["global"] @ text_levels["global"].T, "local": local,
                "fused": image_levels["fused"] @ text_levels["fused"].T}

    def auxiliary_loss(self, images: Tensor, texts: Tensor, image_ids: Tensor, loss_fn) -> Tensor:
        """``level_weight`` x the mean InfoNCE of the three levels of the last batch."""
        kept, self._kept = self._kept, {}
        if "image" not in kept or "text" not in kept or not self.level_weight:
            return images.new_zeros(())
        scale = loss_fn.scale()
        terms = []
        for level in LEVELS:
            if level == "local":
                image_part = kept["image"]["local"].flatten(1) / math.sqrt(self.n_slots)
                text_part = kept["text"]["local"].flatten(1) / math.sqrt(self.n_slots)
            else:
                image_part, text_part = kept["image"][level], kept["text"][level]
            terms.append(infonce_loss(image_part, text_part, scale, image_ids=image_ids))
        return self.level_weight * torch.stack(terms).mean()

    def train(self, mode: bool = True) -> "HGANAdapter":
        self._kept = {}
        return super().train(mode)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "dim": self.dim, "slots": self.n_slots, "reduction": self.reduction,
                "alpha": self.alpha, "level_weights": self.level_weights, "level_weight": self.level_weight,
                "out_dim": self.out_dim}

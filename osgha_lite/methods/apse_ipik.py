r"""APSE-IPIK (AAAI 2025) on a frozen embedding space: an adaptive prompt pool and implicit knowledge.

What the paper describes
------------------------
A vision-language model writes descriptions of each image from several
perspectives (the global scene, the background, the entities): *implicit
prior knowledge* that a caption alone lacks. An instance-level,
query-based prompt pool (key-prompt pairs; the image's query selects its
top-k prompts by key similarity) adapts the image representation, and
extra alignment terms pull the image towards each perspective text.

What is reproduced here, and how (our reading where the paper is silent)
------------------------------------------------------------------------
On the backbone's frozen, L2-normalized vectors (:math:`x` image,
:math:`t` caption, :math:`p_v` perspective texts):

* **Prompt pool**: keys :math:`K \in \mathbb{R}^{M \times d}` and prompts
  :math:`P \in \mathbb{R}^{M \times d}`. The query is the frozen image
  vector; :math:`s_m = \cos(x, K_m)`; the top-``top_k`` prompts are mixed by
  :math:`w = \operatorname{softmax}(s_{\mathrm{top}} / \tau)` and added as a
  residual: :math:`v = \operatorname{normalize}((1-\alpha)\,x + \alpha\,W_o
  \textstyle\sum_m w_m P_m)`. The frozen features have no token sequence to
  prepend prompts to, so the prompt acts as an additive, instance-selected
  offset: our approximation of prompt tuning at the feature level.
* **Caption side**: a CLIP-Adapter style residual bottleneck (the paper
  tunes the text side through its own prompts; not specified for frozen
  features).
* **Key loss** (as in query-key prompt pools, L2P):
  :math:`\mathcal{L}_{key} = \frac{1}{B k} \sum_b \sum_{m \in \mathrm{top}(b)} (1 - s_{bm})`.
* **Perspective alignment**: each perspective text goes through the caption
  adapter and is contrasted with the adapted images,
  :math:`\mathcal{L}_{persp} = \frac{1}{V} \sum_v \mathcal{L}_{NCE}(v, g(p_v))`
  over the batch rows that have perspective :math:`v`.

.. math:: \mathcal{L} = \mathcal{L}_{NCE}(v, g(t)) + \lambda_{p}\,\mathcal{L}_{persp} + \lambda_{k}\,\mathcal{L}_{key}

**Where the perspectives come from.** With Ollama a user can run a vision
model on the images themselves (``python -m osgha_lite augment --vision``,
template ``perspectives_vlm_v1``). Offline no vision model exists here, so
the default derives the three perspectives from an LLM reading the image's
first three *training captions* (template ``perspectives_v1``): results are
labelled "caption-derived perspectives". Because those texts are made from
captions, they are used **only in training** and only for training
images; test images are encoded from their pixels' features and the prompt
pool alone, never from their captions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from osgha_lite.methods.base import AdapterContext, RetrievalAdapter, check_input
from osgha_lite.methods.baselines import Expert
from osgha_lite.losses import infonce_loss


class PromptPool(nn.Module):
    """Key-prompt pairs; a query selects its ``top_k`` prompts by cosine similarity to the keys."""

    def __init__(self, dim: int, size: int = 20, top_k: int = 4, temperature: float = 0.1) -> None:
        super().__init__()
        if not 1 <= top_k <= size:
            raise ValueError(f"PromptPool: top_k must be in [1, size={size}], got {top_k}")
        self.size, self.top_k, self.temperature = int(size), int(top_k), float(temperature)
        self.keys = nn.Parameter(F.normalize(torch.randn(size, dim), dim=-1))
        self.prompts = nn.Parameter(torch.randn(size, dim) * 0.02)

    def forward(self, query: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mixed prompt [B, d], selected similarities [B, k], selected indices [B, k])``."""
        similarity = F.normalize(query, dim=-1) @ F.normalize(self.keys, dim=-1).T
        top, index = similarity.topk(self.top_k, dim=-1)
        weights = torch.softmax(top / self.temperature, dim=-1)
        # sum_m w_m P_m as a dense [B, M] weight matrix times the pool: the same value as
        # gathering P[index], with a gradient that does not depend on thread scheduling
        dense = torch.zeros_like(similarity).scatter(1, index, weights)
        return dense @ self.prompts, top, index


class APSEIPIKAdapter(RetrievalAdapter):
    """Prompt pool on images, residual adapter on captions, perspective and key terms (module docstring).

    Args:
        dim: feature dimension.
        pool_size, top_k, temperature: the prompt pool.
        alpha: residual ratio of the prompt offset (images) and of the caption adapter.
        reduction: caption adapter bottleneck reduction.
        perspective_weight, key_weight: :math:`\\lambda_p`, :math:`\\lambda_k`.
    """

    name = "apse-ipik"

    def __init__(self, dim: int, pool_size: int = 20, top_k: int = 4, temperature: float = 0.1,
                 alpha: float = 0.2, reduction: int = 4, perspective_weight: float = 0.5,
                 key_weight: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"APSEIPIKAdapter: alpha must be in [0, 1], got {alpha}")
        self.dim, self.alpha, self.reduction = int(dim), float(alpha), int(reduction)
        self.perspective_weight, self.key_weight = float(perspective_weight), float(key_weight)
        self.pool = PromptPool(dim, pool_size, top_k, temperature)
        self.prompt_out = nn.Linear(dim, dim)
        self.text_adapter = Expert(dim, reduction, alpha)
        self._kept: dict[str, Tensor] = {}

    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.dim, "APSEIPIKAdapter.encode_images")
        prompt, similarity, _ = self.pool(x)
        out = F.normalize((1.0 - self.alpha) * x + self.alpha * self.prompt_out(prompt), dim=-1)
        if self.training:
            self._kept["key_similarity"] = similarity
            if context is not None and context.description_features is not None:
                self._kept["perspectives"] = context.description_features
                self._kept["perspective_mask"] = context.description_mask.bool()
        return out

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.dim, "APSEIPIKAdapter.encode_texts")
        return self.text_adapter(x)

    def auxiliary_loss(self, images: Tensor, texts: Tensor, image_ids: Tensor, loss_fn) -> Tensor:
        """:math:`\\lambda_p L_{persp} + \\lambda_k L_{key}` of the last batch (rows: the batch's pairs)."""
        kept, self._kept = self._kept, {}
        total = images.new_zeros(())
        if "key_similarity" in kept:
            total = total + self.key_weight * (1.0 - kept["key_similarity"]).mean()
        if "perspectives" in kept:
            perspectives, mask = kept["perspectives"], kept["perspective_mask"]
            terms = []
            for view in range(perspectives.shape[1]):
                rows = mask[:, view]
                if int(rows.sum()) < 2 or len(torch.unique(image_ids[rows])) < 2:
                    continue
                encoded = self.text_adapter(perspectives[rows, view])
                terms.append(infonce_loss(images[rows], encoded, loss_fn.scale(), image_ids=image_ids[rows]))
            if terms:
                total = total + self.perspective_weight * torch.stack(terms).mean()
        return total

    def train(self, mode: bool = True) -> "APSEIPIKAdapter":
        self._kept = {}
        return super().train(mode)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "dim": self.dim, "pool_size": self.pool.size, "top_k": self.pool.top_k,
                "temperature": self.pool.temperature, "alpha": self.alpha, "reduction": self.reduction,
                "perspective_weight": self.perspective_weight, "key_weight": self.key_weight,
                "test_time": "prompt pool on the image vector; perspectives used in training only"}

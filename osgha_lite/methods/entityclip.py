r"""EntityCLIP (Wang et al., arXiv 2410.17810) on a frozen embedding space.

What the paper describes
------------------------
EntityCLIP targets entity-centric retrieval (news photos and captions full
of names). An LLM writes an *explanation text* for each caption, which acts
as a bridge between the caption's entities and the image. Multimodal
Attentive Experts (MMAE) turn image, text and explanation into expert
features with attention across the three inputs; Gated Integrative
image-text matching (GI-ITM) aggregates the experts with an adaptive gate
before a matching loss. The training loss is a contrastive loss on the base
features, a gated feature-matching term and a contrastive loss on the fused
features. At test time only the encoders are needed.

What is reproduced here, and how (our reading where the paper is silent)
------------------------------------------------------------------------
Everything works on the backbone's frozen, L2-normalized vectors
(:math:`x` image, :math:`t` caption, :math:`e` explanation, all in
:math:`\mathbb{R}^d`); the encoders themselves are not fine-tuned.

* **Explanations**: SmolLM2-135M through Ollama with the prompt
  ``osgha_lite/llm/prompts/explanations_v1.txt`` (one explanation per caption,
  same client and cache as the descriptions; cache
  ``data/augmentations/flickr8k.explanations.jsonl``). Explanations exist
  for the training captions that were sent to the LLM (the first caption of
  a subset of training images); the others train without one (masked).
* **Experts** (one per input): CLIP-Adapter style residual bottlenecks,
  :math:`E_m(v) = \operatorname{normalize}(\alpha\,a_m(v) + (1-\alpha)\,v)`
  with :math:`a_m` ``Linear-ReLU-Linear-ReLU``.
* **MMAE attention**: the three expert outputs of a (image, caption,
  explanation) triple form a 3-token sequence; one multi-head self-attention
  layer with a residual connection mixes them (the explanation token is
  masked out where a caption has none).
* **GI-ITM**: a gate :math:`g = \operatorname{softmax}(W_g[a_1; a_2; a_3])`
  over the three attended tokens gives :math:`h = \sum_k g_k a_k`; an MLP
  head scores :math:`h` as matching or not. Matching triples are the batch's
  pairs; non-matching ones take, for every image, its hardest in-batch
  caption of another image and, for every caption, its hardest image (by
  the base similarity), as in ALBEF-style ITM. Loss: binary cross-entropy.
* **Fused contrastive term**: the caption fused with its explanation,
  :math:`f = \operatorname{normalize}(\gamma\,E_t(t) + (1-\gamma)\,E_e(e))`
  with :math:`\gamma = \sigma(w^\top[E_t(t); E_e(e)] + b)`, is contrasted
  with the images (InfoNCE, the main term's temperature).

Training loss, as in the paper's form:

.. math::

    \mathcal{L} = \mathcal{L}_{\mathrm{NCE}}(E_i(x), E_t(t))
      + \lambda_{\mathrm{itm}}\,\mathcal{L}_{\mathrm{GI\text{-}ITM}}
      + \lambda_{\mathrm{fused}}\,\mathcal{L}_{\mathrm{NCE}}(E_i(x), f)

**Test time**: only :math:`E_i(x)` and :math:`E_t(t)`; the explanation
branch, the attention layer and the ITM head are dropped, as in the paper's
dual-encoder inference (and no test caption needs an LLM call). The
explanation therefore acts only through training: it shapes the text and
image experts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from osgha_lite.methods.base import AdapterContext, RetrievalAdapter, check_input, gather_rows
from osgha_lite.methods.baselines import Expert
from osgha_lite.losses import infonce_loss


def hardest_negatives(similarity: Tensor, image_ids: Tensor) -> tuple[Tensor, Tensor]:
    """For a paired batch: per image row the hardest caption of another image, per caption
    the hardest image of another image (by ``similarity[i, j]`` = image i x caption j).

    Rows whose batch holds no other image get themselves (callers drop them with the
    returned validity masks' help: ``text_for_image[i] == i`` only then).
    """
    same = image_ids[:, None] == image_ids[None, :]
    masked = similarity.masked_fill(same, float("-inf"))
    text_for_image = masked.argmax(dim=1)
    image_for_text = masked.argmax(dim=0)
    none = same.all(dim=1)
    text_for_image = torch.where(none, torch.arange(len(image_ids), device=similarity.device), text_for_image)
    image_for_text = torch.where(none, torch.arange(len(image_ids), device=similarity.device), image_for_text)
    return text_for_image, image_for_text


class EntityCLIPAdapter(RetrievalAdapter):
    """EntityCLIP's experts, MMAE attention and GI-ITM on frozen features (module docstring).

    Args:
        dim: feature dimension.
        reduction, alpha: expert bottleneck reduction and residual ratio.
        heads: attention heads of the MMAE layer (must divide ``dim``).
        itm_weight, fused_weight: :math:`\\lambda_{itm}`, :math:`\\lambda_{fused}`.
    """

    name = "entityclip"
    uses_descriptions = True

    def __init__(self, dim: int, reduction: int = 4, alpha: float = 0.2, heads: int = 4,
                 itm_weight: float = 1.0, fused_weight: float = 1.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"EntityCLIPAdapter: heads={heads} must divide dim={dim}")
        self.dim, self.reduction, self.alpha, self.heads = int(dim), int(reduction), float(alpha), int(heads)
        self.itm_weight, self.fused_weight = float(itm_weight), float(fused_weight)
        self.image_expert = Expert(dim, reduction, alpha)
        self.text_expert = Expert(dim, reduction, alpha)
        self.explanation_expert = Expert(dim, reduction, alpha)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Linear(3 * dim, 3)
        self.itm_head = nn.Sequential(nn.Linear(dim, dim // reduction), nn.ReLU(), nn.Linear(dim // reduction, 1))
        self.text_gate = nn.Linear(2 * dim, 1)
        self._kept: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ encoders (test-time path)
    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.dim, "EntityCLIPAdapter.encode_images")
        out = self.image_expert(x)
        if self.training:
            self._kept["images"] = out
        return out

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.dim, "EntityCLIPAdapter.encode_texts")
        out = self.text_expert(x)
        if self.training:
            self._kept["texts"] = out
            if context is not None and context.description_features is not None:
                self._kept["explanations"] = self.explanation_expert(context.description_features[:, 0])
                self._kept["explanation_mask"] = context.description_mask[:, 0].bool()
        return out

    # ------------------------------------------------------------------ training-only parts
    def fuse_text(self, texts: Tensor, explanations: Tensor, mask: Tensor) -> Tensor:
        """The caption gated with its explanation (captions without one stay as they are)."""
        gamma = torch.sigmoid(self.text_gate(torch.cat([texts, explanations], dim=-1)))
        fused = F.normalize(gamma * texts + (1.0 - gamma) * explanations, dim=-1)
        return torch.where(mask[:, None], fused, texts)

    def match_logits(self, images: Tensor, texts: Tensor, explanations: Tensor, mask: Tensor) -> Tensor:
        """GI-ITM score of (image, caption, explanation) triples: MMAE attention, gate, head."""
        tokens = torch.stack([images, texts, explanations], dim=1)
        padding = torch.stack([torch.zeros_like(mask), torch.zeros_like(mask), ~mask], dim=1)
        attended, _ = self.attention(tokens, tokens, tokens, key_padding_mask=padding, need_weights=False)
        attended = self.norm(tokens + attended).masked_fill(padding[..., None], 0.0)
        gate_logits = self.gate(attended.flatten(1)).masked_fill(padding, float("-inf"))
        fused = (torch.softmax(gate_logits, dim=-1)[..., None] * attended).sum(dim=1)
        return self.itm_head(fused).squeeze(-1)

    def auxiliary_loss(self, images: Tensor, texts: Tensor, image_ids: Tensor, loss_fn) -> Tensor:
        """:math:`\\lambda_{itm} L_{GI-ITM} + \\lambda_{fused} L_{NCE}(E_i(x), f)` of the last batch."""
        kept, self._kept = self._kept, {}
        if "explanations" not in kept:
            return images.new_zeros(())
        explanations, mask = kept["explanations"], kept["explanation_mask"]
        fused = self.fuse_text(texts, explanations, mask)
        total = self.fused_weight * infonce_loss(images, fused, loss_fn.scale(), image_ids=image_ids)
        with torch.no_grad():
            text_for_image, image_for_text = hardest_negatives(images @ texts.T, image_ids)
        valid = text_for_image != torch.arange(len(image_ids), device=images.device)
        rows = torch.arange(len(image_ids), device=images.device)
        negative_texts, negative_images = text_for_image[valid], image_for_text[valid]  # with repeats
        logits = torch.cat([
            self.match_logits(images, texts, explanations, mask),
            self.match_logits(images[valid], gather_rows(texts, negative_texts),
                              gather_rows(explanations, negative_texts), mask[negative_texts]),
            self.match_logits(gather_rows(images, negative_images), texts[rows[valid]], explanations[valid],
                              mask[valid]),
        ])
        labels = torch.cat([torch.ones(len(rows), device=images.device),
                            torch.zeros(2 * int(valid.sum()), device=images.device)])
        return total + self.itm_weight * F.binary_cross_entropy_with_logits(logits, labels)

    def train(self, mode: bool = True) -> "EntityCLIPAdapter":
        self._kept = {}
        return super().train(mode)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "dim": self.dim, "reduction": self.reduction, "alpha": self.alpha,
                "heads": self.heads, "itm_weight": self.itm_weight, "fused_weight": self.fused_weight,
                "test_time": "image and text experts only; explanation branch dropped"}

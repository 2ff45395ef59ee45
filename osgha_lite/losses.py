"""Image-text alignment losses: symmetric InfoNCE and VSE++ hardest-negative triplet.

The paper trains its adapter with image-text contrastive objectives; it does
not give their exact form, so the choices below (multi-positive InfoNCE,
VSE++ max-violation, how they are weighted) are this project's
interpretation, written to be testable piece by piece.

All functions take L2-normalized features, so ``x @ y.T`` is cosine
similarity. A *paired batch* holds ``B`` rows ``(image_features[i],
text_features[i])`` that belong together; with several captions per image
the same image can occur in several rows, and ``image_ids[i]`` names the
image of row ``i``. Rows with the same image id are positives of each other
and are never used as negatives.

Layout (after open_clip's ``loss.py``):

* :class:`LogitScale` - the learnable inverse temperature (an ``nn.Module``).
* :func:`contrastive_logits` - the two similarity matrices, scaled.
* :func:`positives_mask` / :func:`contrastive_ground_truth` - which pairs
  are positives.
* :func:`infonce_loss` / :func:`hardest_negative_triplet_loss` - the losses.
* :class:`InfoNCELoss`, :class:`TripletLoss`, :class:`CombinedLoss` - thin
  modules holding parameters and options for a training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

DEFAULT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0
DEFAULT_MARGIN = 0.2

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_TEMPERATURE",
    "LOSS_TERMS",
    "MAX_LOGIT_SCALE",
    "CombinedLoss",
    "InfoNCELoss",
    "LogitScale",
    "TripletLoss",
    "contrastive_ground_truth",
    "contrastive_logits",
    "hardest_negative_triplet_loss",
    "infonce_loss",
    "positives_mask",
]


class LogitScale(nn.Module):
    r"""Learnable inverse temperature ``s = 1 / tau``, stored as ``log s``.

    As in CLIP, the parameter is ``log_scale`` initialised to
    ``log(1 / init_temperature)`` (``init_temperature=0.07`` gives
    ``s = 14.29``) and the scale used is

    .. math:: s = \exp(\min(\text{log\_scale}, \log s_{\max})), \quad s_{\max} = 100.

    CLIP clamps the parameter in place after each optimizer step; clamping in
    the forward pass has the same effect on the value used and needs no hook
    in the training loop (the gradient is zero while the clamp is active).
    """

    def __init__(
        self,
        init_temperature: float = DEFAULT_TEMPERATURE,
        max_scale: float = MAX_LOGIT_SCALE,
        learnable: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < init_temperature:
            raise ValueError(f"LogitScale: init_temperature must be > 0, got {init_temperature}")
        if not 1.0 / init_temperature <= max_scale:
            raise ValueError(
                f"LogitScale: 1/init_temperature = {1 / init_temperature:.3f} exceeds "
                f"max_scale = {max_scale}; raise max_scale or the temperature"
            )
        self.max_scale = float(max_scale)
        log_scale = torch.tensor(math.log(1.0 / init_temperature))
        self.log_scale = nn.Parameter(log_scale, requires_grad=learnable)

    def forward(self) -> Tensor:
        return torch.clamp(self.log_scale, max=math.log(self.max_scale)).exp()

    @property
    def temperature(self) -> float:
        """Current temperature ``1 / s`` as a Python float (for logging)."""
        return float(1.0 / self.forward().detach())


def contrastive_logits(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float
) -> tuple[Tensor, Tensor]:
    r"""Scaled similarity matrices, as open_clip's ``get_logits``.

    .. math:: L^{i2t} = s \, I T^\top \in \mathbb{R}^{N_i \times N_t}, \qquad L^{t2i} = (L^{i2t})^\top.

    Returns ``(logits_per_image, logits_per_text)``.
    """
    logits_per_image = logit_scale * image_features @ text_features.T
    return logits_per_image, logits_per_image.T


def positives_mask(image_ids: Tensor, text_image_ids: Tensor | None = None) -> Tensor:
    r"""Boolean positives matrix ``P[i, j] = (image_ids[i] == text_image_ids[j])``.

    ``image_ids`` names the image of each image row, ``text_image_ids`` the
    image each text row describes. In a paired batch both are the same
    vector (the default), and ``P`` is true on the diagonal and wherever two
    rows share an image.
    """
    image_ids = torch.as_tensor(image_ids)
    text_image_ids = image_ids if text_image_ids is None else torch.as_tensor(text_image_ids)
    if image_ids.ndim != 1 or text_image_ids.ndim != 1:
        raise ValueError(
            "positives_mask: image_ids and text_image_ids must be 1-D, got shapes "
            f"{tuple(image_ids.shape)} and {tuple(text_image_ids.shape)}"
        )
    return image_ids[:, None] == text_image_ids[None, :].to(image_ids.device)


def contrastive_ground_truth(
    batch_size: int, image_ids: Tensor | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Positives of a paired batch of ``batch_size`` rows, as a bool ``[B, B]`` matrix.

    Without ``image_ids`` every row is its own image (the identity, i.e.
    open_clip's ``arange`` labels); with them, ``positives_mask(image_ids)``.
    """
    if image_ids is None:
        return torch.eye(batch_size, dtype=torch.bool, device=device)
    image_ids = torch.as_tensor(image_ids, device=device)
    if image_ids.shape != (batch_size,):
        raise ValueError(
            f"contrastive_ground_truth: image_ids has shape {tuple(image_ids.shape)}, "
            f"expected ({batch_size},) - one image id per row of the batch"
        )
    return positives_mask(image_ids)


def _resolve_positives(
    image_features: Tensor,
    text_features: Tensor,
    image_ids: Tensor | None,
    positives: Tensor | None,
    caller: str,
) -> Tensor:
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    if positives is not None:
        if image_ids is not None:
            raise ValueError(f"{caller}: pass image_ids or positives, not both")
        positives = torch.as_tensor(positives, device=image_features.device).bool()
        if positives.shape != (n_images, n_texts):
            raise ValueError(
                f"{caller}: positives has shape {tuple(positives.shape)}, expected "
                f"({n_images}, {n_texts}) = (rows of image_features, rows of text_features)"
            )
        return positives
    if n_images != n_texts:
        raise ValueError(
            f"{caller}: {n_images} image rows and {n_texts} text rows; a paired batch needs "
            "equal counts, otherwise pass an explicit positives mask"
        )
    return contrastive_ground_truth(n_images, image_ids, device=image_features.device)


def infonce_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    image_ids: Tensor | None = None,
    positives: Tensor | None = None,
) -> Tensor:
    r"""Symmetric, multi-positive InfoNCE (CLIP's loss when every row is its own image).

    With logits :math:`L = s\,IT^\top` and positives :math:`P` (see
    :func:`positives_mask`), each image row ``i`` and each text column ``j``
    contributes the MIL-NCE term (Miech et al. 2020), which puts all of an
    anchor's positives in the numerator and only its negatives and positives
    in the denominator:

    .. math::

        \ell^{i2t}_i = \log \sum_{j} e^{L_{ij}} - \log \sum_{j:\,P_{ij}} e^{L_{ij}}, \qquad
        \ell^{t2i}_j = \log \sum_{i} e^{L_{ij}} - \log \sum_{i:\,P_{ij}} e^{L_{ij}},

        \mathcal{L} = \tfrac12\Big(\tfrac{1}{N_i}\sum_i \ell^{i2t}_i + \tfrac{1}{N_t}\sum_j \ell^{t2i}_j\Big).

    So captions of the same image are never pushed apart: they count as
    positives, not negatives. When ``P`` is the identity this is exactly
    CLIP's ``(CE(L, arange) + CE(L^T, arange)) / 2``.

    Positives come from, in order: ``positives`` (bool ``[N_i, N_t]``, any
    shape), ``image_ids`` (paired batch, ``P = positives_mask(image_ids)``),
    or the identity (paired batch, one image per row). Every row and column
    of ``P`` must contain at least one positive.
    """
    positives = _resolve_positives(image_features, text_features, image_ids, positives, "infonce_loss")
    if not bool(positives.any(dim=1).all()) or not bool(positives.any(dim=0).all()):
        raise ValueError(
            "infonce_loss: every image row and every text column needs at least one positive; "
            "check image_ids / positives"
        )
    logits_per_image, _ = contrastive_logits(image_features, text_features, logit_scale)
    masked = logits_per_image.masked_fill(~positives, float("-inf"))
    image_to_text = torch.logsumexp(logits_per_image, dim=1) - torch.logsumexp(masked, dim=1)
    text_to_image = torch.logsumexp(logits_per_image, dim=0) - torch.logsumexp(masked, dim=0)
    return 0.5 * (image_to_text.mean() + text_to_image.mean())


def hardest_negative_triplet_loss(
    image_features: Tensor,
    text_features: Tensor,
    margin: float = DEFAULT_MARGIN,
    image_ids: Tensor | None = None,
    max_violation: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""VSE++ bidirectional hinge loss (Faghri et al. 2018) on a paired batch.

    With cosine scores :math:`S = IT^\top`, row ``i`` a positive pair
    :math:`(I_i, T_i)`, and negatives :math:`\mathcal{N}(i) = \{j : \text{id}_j \ne \text{id}_i\}`
    (rows of other images; without ``image_ids`` every other row):

    .. math::

        c^{i2t}_{ij} = [\alpha + S_{ij} - S_{ii}]_+, \qquad
        c^{t2i}_{ji} = [\alpha + S_{ji} - S_{ii}]_+, \qquad j \in \mathcal{N}(i)

    ``max_violation=True`` (VSE++) keeps the hardest negative per anchor,
    ``max_violation=False`` (VSE0) sums over all negatives:

    .. math::

        \ell_i = \max_{j\in\mathcal{N}(i)} c^{i2t}_{ij} + \max_{j\in\mathcal{N}(i)} c^{t2i}_{ji}
        \quad\text{or}\quad \ell_i = \sum_{j\in\mathcal{N}(i)} \big(c^{i2t}_{ij} + c^{t2i}_{ji}\big).

    Here :math:`c^{t2i}_{ji}` is text ``i`` (anchor) against image ``j``. An
    anchor without negatives contributes 0. ``reduction="sum"`` gives the
    original VSE++ value; ``"mean"`` (default) divides by ``B`` so the loss
    scale does not depend on the batch size.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"hardest_negative_triplet_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    positives = _resolve_positives(
        image_features, text_features, image_ids, None, "hardest_negative_triplet_loss"
    )
    scores = image_features @ text_features.T
    diagonal = scores.diagonal()
    # cost_text[i, j]: image i as anchor, text j as negative; cost_image[i, j]: text j as anchor, image i as negative.
    cost_text = (margin + scores - diagonal[:, None]).clamp(min=0).masked_fill(positives, 0.0)
    cost_image = (margin + scores - diagonal[None, :]).clamp(min=0).masked_fill(positives, 0.0)
    if max_violation:
        per_anchor = cost_text.max(dim=1).values + cost_image.max(dim=0).values
    else:
        per_anchor = cost_text.sum(dim=1) + cost_image.sum(dim=0)
    return per_anchor.mean() if reduction == "mean" else per_anchor.sum()


class InfoNCELoss(nn.Module):
    """:func:`infonce_loss` with a learnable :class:`LogitScale` (``self.logit_scale``)."""

    def __init__(
        self,
        init_temperature: float = DEFAULT_TEMPERATURE,
        max_scale: float = MAX_LOGIT_SCALE,
        learnable_temperature: bool = True,
    ) -> None:
        super().__init__()
        self.logit_scale = LogitScale(init_temperature, max_scale, learnable_temperature)

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        image_ids: Tensor | None = None,
        positives: Tensor | None = None,
    ) -> Tensor:
        return infonce_loss(image_features, text_features, self.logit_scale(), image_ids, positives)


class TripletLoss(nn.Module):
    """:func:`hardest_negative_triplet_loss` with its options fixed at construction."""

    def __init__(
        self, margin: float = DEFAULT_MARGIN, max_violation: bool = True, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.margin = float(margin)
        self.max_violation = bool(max_violation)
        self.reduction = reduction

    def forward(
        self, image_features: Tensor, text_features: Tensor, image_ids: Tensor | None = None
    ) -> Tensor:
        return hardest_negative_triplet_loss(
            image_features, text_features, self.margin, image_ids, self.max_violation, self.reduction
        )


def _build_infonce(options: Mapping) -> nn.Module:
    return InfoNCELoss(
        init_temperature=options.get("init_temperature", DEFAULT_TEMPERATURE),
        max_scale=options.get("max_scale", MAX_LOGIT_SCALE),
        learnable_temperature=options.get("learnable_temperature", True),
    )


def _build_triplet(options: Mapping) -> nn.Module:
    return TripletLoss(
        margin=options.get("margin", DEFAULT_MARGIN),
        max_violation=options.get("max_violation", True),
        reduction=options.get("triplet_reduction", "mean"),
    )


#: Loss terms :class:`CombinedLoss` knows, by name. Each builder reads the
#: options it needs from CombinedLoss's keyword options.
LOSS_TERMS: dict[str, Callable[[Mapping], nn.Module]] = {
    "infonce": _build_infonce,
    "triplet": _build_triplet,
}
_KNOWN_OPTIONS = {
    "init_temperature", "max_scale", "learnable_temperature",
    "margin", "max_violation", "triplet_reduction",
}


class CombinedLoss(nn.Module):
    r"""Weighted sum of named loss terms: :math:`\mathcal{L} = \sum_k w_k \mathcal{L}_k`.

    ``weights`` maps term names from :data:`LOSS_TERMS` (``"infonce"``,
    ``"triplet"``) to weights; terms with weight 0 are neither built nor
    computed. Options: ``init_temperature``, ``max_scale``,
    ``learnable_temperature`` (InfoNCE); ``margin``, ``max_violation``,
    ``triplet_reduction`` (triplet). The InfoNCE temperature parameter is
    part of this module, so pass ``CombinedLoss.parameters()`` to the
    optimizer together with the adapter's.

    ``forward`` returns the total; :meth:`terms` returns every unweighted
    term and ``"total"``, for logging.
    """

    def __init__(self, weights: Mapping[str, float] | None = None, **options) -> None:
        super().__init__()
        weights = {"infonce": 1.0} if weights is None else dict(weights)
        unknown = sorted(set(weights) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"CombinedLoss: unknown loss terms {unknown}; known: {sorted(LOSS_TERMS)}")
        bad_options = sorted(set(options) - _KNOWN_OPTIONS)
        if bad_options:
            raise ValueError(f"CombinedLoss: unknown options {bad_options}; known: {sorted(_KNOWN_OPTIONS)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"CombinedLoss: weights must be >= 0, got {weights}")
        self.weights = {name: float(w) for name, w in weights.items() if w != 0}
        if not self.weights:
            raise ValueError("CombinedLoss: every weight is 0; give at least one term a positive weight")
        self.losses = nn.ModuleDict({name: LOSS_TERMS[name](options) for name in self.weights})

    @property
    def logit_scale(self) -> LogitScale | None:
        """The InfoNCE :class:`LogitScale`, or None when InfoNCE is not used."""
        return self.losses["infonce"].logit_scale if "infonce" in self.losses else None

    def scale(self) -> Tensor | float:
        """The InfoNCE logit scale, or ``1 / DEFAULT_TEMPERATURE`` when InfoNCE is not used
        (for methods' auxiliary contrastive terms, which share the main term's temperature)."""
        scale = self.logit_scale
        return scale() if scale is not None else 1.0 / DEFAULT_TEMPERATURE

    def terms(
        self, image_features: Tensor, text_features: Tensor, image_ids: Tensor | None = None
    ) -> dict[str, Tensor]:
        values = {
            name: loss(image_features, text_features, image_ids=image_ids)
            for name, loss in self.losses.items()
        }
        values["total"] = sum(self.weights[name] * value for name, value in values.items())
        return values

    def forward(
        self, image_features: Tensor, text_features: Tensor, image_ids: Tensor | None = None
    ) -> Tensor:
        return self.terms(image_features, text_features, image_ids)["total"]

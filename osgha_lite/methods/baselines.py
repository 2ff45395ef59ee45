"""The baselines every method is compared with, and the residual expert the related methods share.

* ``identity`` - :class:`IdentityAdapter`, the frozen backbone.
* ``linear`` - :class:`LinearHead`, one linear map per modality.
* ``bottleneck`` - :class:`BottleneckAdapter`, CLIP-Adapter (Gao et al. 2021),
  built from :func:`bottleneck_mlp`.
* :class:`Expert` - CLIP-Adapter's residual bottleneck as a module of its own:
  the experts of EntityCLIP (:mod:`osgha_lite.methods.entityclip`), APSE-IPIK's
  text adapter and HGAN's global experts.

All implement the interface of :mod:`osgha_lite.methods.base`.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from osgha_lite.methods.base import AdapterContext, RetrievalAdapter, check_input
from osgha_lite.methods.dropout import PortableDropout

__all__ = ["BottleneckAdapter", "Expert", "IdentityAdapter", "LinearHead", "bottleneck_mlp"]


class IdentityAdapter(RetrievalAdapter):
    """The frozen backbone: returns its (re-normalized) input. No parameters, nothing to train."""

    name = "identity"
    trainable = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.dim, "IdentityAdapter.encode_images")
        return F.normalize(x, dim=-1)

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.dim, "IdentityAdapter.encode_texts")
        return F.normalize(x, dim=-1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "dim": self.dim}


class LinearHead(RetrievalAdapter):
    r"""One affine map per modality, then L2 normalization.

    .. math:: f_I(x) = \frac{A_I x + b_I}{\lVert A_I x + b_I\rVert}, \qquad f_T(x) = \frac{A_T x + b_T}{\lVert A_T x + b_T\rVert}

    ``image_dim`` / ``text_dim`` default to ``dim`` and ``out_dim`` to
    ``dim``; they may differ (e.g. 1280-d image and 384-d text encoders mapped
    to a 256-d joint space). ``dropout`` is applied to the input during
    training. Layers use PyTorch's default initialization (seed first).
    """

    name = "linear"

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        image_dim: int | None = None,
        text_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.image_dim = int(image_dim or dim)
        self.text_dim = int(text_dim or dim)
        self.out_dim = int(out_dim or dim)
        self.dropout_p = float(dropout)
        self.bias = bool(bias)
        self.dropout = PortableDropout(dropout)
        self.image_proj = nn.Linear(self.image_dim, self.out_dim, bias=bias)
        self.text_proj = nn.Linear(self.text_dim, self.out_dim, bias=bias)

    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.image_dim, "LinearHead.encode_images")
        return F.normalize(self.image_proj(self.dropout(x)), dim=-1)

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.text_dim, "LinearHead.encode_texts")
        return F.normalize(self.text_proj(self.dropout(x)), dim=-1)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(), "image_dim": self.image_dim, "text_dim": self.text_dim,
            "out_dim": self.out_dim, "dropout": self.dropout_p, "bias": self.bias,
        }


def bottleneck_mlp(dim: int, hidden: int) -> nn.Sequential:
    """CLIP-Adapter's MLP: ``Linear(d, h, bias=False) - ReLU - Linear(h, d, bias=False) - ReLU``."""
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=False),
        nn.ReLU(),
        nn.Linear(hidden, dim, bias=False),
        nn.ReLU(),
    )


class BottleneckAdapter(RetrievalAdapter):
    r"""CLIP-Adapter (Gao et al. 2021): a residual bottleneck MLP per modality.

    .. math::

        a(x) = \mathrm{ReLU}(W_2\,\mathrm{ReLU}(W_1 x)), \quad W_1 \in \mathbb{R}^{d/\rho \times d},\ W_2 \in \mathbb{R}^{d \times d/\rho}

        f(x) = \frac{\alpha\, a(x) + (1-\alpha)\, x}{\lVert \alpha\, a(x) + (1-\alpha)\, x \rVert}

    with reduction :math:`\rho` (``reduction``, default 4 as in CLIP-Adapter)
    and residual ratio :math:`\alpha` (``alpha``, default 0.2, CLIP-Adapter's
    ratio for the visual branch). One adapter for images, one for texts.
    ``dropout`` (default 0) acts on the adapter branch's input only.
    """

    name = "bottleneck"

    def __init__(self, dim: int, reduction: int = 4, alpha: float = 0.2, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"BottleneckAdapter: alpha must be in [0, 1], got {alpha}")
        if reduction < 1 or dim // reduction < 1:
            raise ValueError(f"BottleneckAdapter: reduction {reduction} leaves no hidden units for dim {dim}")
        self.dim = int(dim)
        self.reduction = int(reduction)
        self.alpha = float(alpha)
        self.dropout_p = float(dropout)
        self.dropout = PortableDropout(dropout)
        self.image_adapter = bottleneck_mlp(self.dim, self.dim // self.reduction)
        self.text_adapter = bottleneck_mlp(self.dim, self.dim // self.reduction)

    def _mix(self, x: Tensor, adapter: nn.Module) -> Tensor:
        return F.normalize(self.alpha * adapter(self.dropout(x)) + (1.0 - self.alpha) * x, dim=-1)

    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.dim, "BottleneckAdapter.encode_images")
        return self._mix(x, self.image_adapter)

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        check_input(x, self.dim, "BottleneckAdapter.encode_texts")
        return self._mix(x, self.text_adapter)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(), "dim": self.dim, "reduction": self.reduction,
            "alpha": self.alpha, "dropout": self.dropout_p,
        }


class Expert(nn.Module):
    r"""A residual bottleneck expert: :math:`\operatorname{normalize}(\alpha\,a(v) + (1-\alpha)\,v)`."""

    def __init__(self, dim: int, reduction: int, alpha: float) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.mlp = bottleneck_mlp(dim, max(1, dim // reduction))

    def forward(self, v: Tensor) -> Tensor:
        return F.normalize(self.alpha * self.mlp(v) + (1.0 - self.alpha) * v, dim=-1)

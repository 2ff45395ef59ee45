"""Adapters on a frozen image-text embedding space, behind one interface.

The interface every adapter implements (so one training loop and one
evaluation loop handle all of them):

``adapter.encode_images(x, context=None) -> Tensor``
``adapter.encode_texts(x, context=None) -> Tensor``
    ``x`` is ``[B, dim]`` L2-normalized frozen features; the result is
    ``[B, out_dim]`` L2-normalized. ``context`` is an :class:`AdapterContext`
    (or None) carrying what some adapters need besides the features:

    * ``description_features`` ``[B, K, dim]`` and ``description_mask``
      ``[B, K]`` - LLM texts about each row: a caption's descriptions (or
      EntityCLIP's explanation), an image's perspective texts (APSE-IPIK);
    * ``local_features`` ``[B, L, dim]`` and ``local_mask`` ``[B, L]`` - the
      row's local features in the backbone's space: image regions or caption
      tokens (HGAN);
    * ``group_ids`` ``[B]`` - during training, the train-split image index of
      each row (an image's own index, a caption's ``text_to_image``); memory
      nodes of the same image are then hidden from that row, as they are at
      test time;
    * ``links`` - optional precomputed links of each row to the memory bank
      (a :class:`~osgha_lite.hypergraph.MemoryLinks` from
      ``HypergraphAdapter.precompute_links``): the inputs and the memory are
      frozen, so every row's neighbours can be found once, not in every step;
    * ``memory`` - overrides the adapter's own memory bank for this call;
    * ``gallery`` - test-gallery nodes, used only by an adapter in
      transductive mode (an inductive adapter refuses them).

``adapter.set_memory(bank)``
    Hands the adapter the training-split :class:`~osgha_lite.hypergraph.MemoryBank`.
    A no-op for adapters with ``uses_memory = False``; call it for every
    adapter before training.

Class attributes tell the loops what to pass: ``uses_memory``,
``uses_descriptions``, ``uses_test_gallery`` (True only for a transductive
adapter; the results writer should record it), ``trainable`` (False for
:class:`IdentityAdapter`, which has no parameters). :meth:`RetrievalAdapter.config`
returns the options as a JSON-ready dict for the results file.

Adapters here:

* ``identity`` - :class:`IdentityAdapter`, the frozen backbone.
* ``linear`` - :class:`LinearHead`, one linear map per modality.
* ``bottleneck`` - :class:`BottleneckAdapter`, CLIP-Adapter (Gao et al. 2021).
* ``hypergraph`` - :class:`~osgha_lite.hypergraph.HypergraphAdapter`, the
  OS-HGAdapter reading of this project.
* ``entityclip`` - :class:`~osgha_lite.entityclip.EntityCLIPAdapter`.
* ``apse-ipik`` - :class:`~osgha_lite.apse_ipik.APSEIPIKAdapter`.
* ``hgan`` - :class:`~osgha_lite.hgan.HGANAdapter`.

Build any of them by name with :func:`build_adapter` (a dict registry,
:data:`ADAPTERS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from osgha_lite.dropout import PortableDropout

MODALITIES = ("image", "text")

__all__ = [
    "ADAPTERS",
    "MODALITIES",
    "AdapterContext",
    "BottleneckAdapter",
    "IdentityAdapter",
    "LinearHead",
    "RetrievalAdapter",
    "build_adapter",
    "encode_batched",
]


@dataclass
class AdapterContext:
    """What an adapter may need besides a batch of features (see the module docstring).

    Every per-row field has the batch's rows in its first dimension;
    :meth:`select` takes the same rows from each of them, so a context for a
    whole split can be sliced along with the features.
    """

    description_features: Tensor | None = None
    description_mask: Tensor | None = None
    group_ids: Tensor | None = None
    # memory and gallery hold an osgha_lite.hypergraph.MemoryBank, links an osgha_lite.hypergraph.MemoryLinks;
    # typed Any because that package builds on this module, so this module does not import it.
    memory: Any = None
    gallery: Any = None
    links: Any = None
    local_features: Tensor | None = None
    local_mask: Tensor | None = None

    _PER_ROW = ("description_features", "description_mask", "group_ids", "links", "local_features", "local_mask")

    def select(self, rows: Tensor | slice) -> AdapterContext:
        """The context of rows ``rows`` (index tensor or slice); memory and gallery are shared.

        Per-row fields are indexed with ``field[rows]`` (tensors, and
        :class:`~osgha_lite.hypergraph.MemoryLinks`, which slices all its parts).
        """
        changes = {
            name: getattr(self, name)[rows]
            for name in self._PER_ROW
            if getattr(self, name) is not None
        }
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> AdapterContext:
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                changes[field.name] = value.to(device)
        return dataclasses.replace(self, **changes)


class RetrievalAdapter(nn.Module):
    """Base class: the interface documented at the top of :mod:`osgha_lite.adapters`."""

    name: str = "base"
    uses_memory: bool = False
    uses_descriptions: bool = False
    trainable: bool = True

    @property
    def uses_test_gallery(self) -> bool:
        """True when test-gallery nodes influence outputs (transductive); record it with results."""
        return False

    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        raise NotImplementedError

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        raise NotImplementedError

    def encode(self, x: Tensor, modality: str, context: AdapterContext | None = None) -> Tensor:
        """``encode_images`` or ``encode_texts`` by modality name (``"image"`` / ``"text"``)."""
        encoders = {"image": self.encode_images, "text": self.encode_texts}
        if modality not in encoders:
            raise ValueError(f"{type(self).__name__}.encode: modality must be one of {MODALITIES}, got {modality!r}")
        return encoders[modality](x, context)

    def set_memory(self, bank: MemoryBank | None) -> None:
        """Accept the training-split memory bank; adapters without memory ignore it."""

    def config(self) -> dict[str, Any]:
        """Options of this adapter as a JSON-ready dict (for the results file)."""
        return {"name": self.name, "uses_test_gallery": self.uses_test_gallery}


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` for an index with repeats, as a one-hot matrix product.

    Plain indexing back-propagates through a scatter-add whose summation
    order over repeated rows varies between CPU threads and runs; the matrix
    product gives the same gradient in a fixed order, so training is
    deterministic.
    """
    one_hot = torch.nn.functional.one_hot(index.reshape(-1), x.shape[0]).to(x.dtype)
    return (one_hot @ x.reshape(x.shape[0], -1)).reshape(*index.shape, *x.shape[1:])


def _check_input(x: Tensor, dim: int, who: str) -> None:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who}: expected features of shape [batch, {dim}], got {tuple(x.shape)}")


class IdentityAdapter(RetrievalAdapter):
    """The frozen backbone: returns its (re-normalized) input. No parameters, nothing to train."""

    name = "identity"
    trainable = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    def encode_images(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        _check_input(x, self.dim, "IdentityAdapter.encode_images")
        return F.normalize(x, dim=-1)

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        _check_input(x, self.dim, "IdentityAdapter.encode_texts")
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
        _check_input(x, self.image_dim, "LinearHead.encode_images")
        return F.normalize(self.image_proj(self.dropout(x)), dim=-1)

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        _check_input(x, self.text_dim, "LinearHead.encode_texts")
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
        _check_input(x, self.dim, "BottleneckAdapter.encode_images")
        return self._mix(x, self.image_adapter)

    def encode_texts(self, x: Tensor, context: AdapterContext | None = None) -> Tensor:
        _check_input(x, self.dim, "BottleneckAdapter.encode_texts")
        return self._mix(x, self.text_adapter)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(), "dim": self.dim, "reduction": self.reduction,
            "alpha": self.alpha, "dropout": self.dropout_p,
        }


def _lazy(module: str, class_name: str) -> Callable[..., RetrievalAdapter]:
    """A builder importing ``osgha_lite.<module>.<class_name>`` on first use (those modules
    build on this one's base class, so they cannot be imported here at load time)."""

    def build(dim: int, **options: Any) -> RetrievalAdapter:
        import importlib

        return getattr(importlib.import_module(f"osgha_lite.{module}"), class_name)(dim, **options)

    return build


#: Adapter builders by name: ``ADAPTERS[name](dim, **options)``.
ADAPTERS: dict[str, Callable[..., RetrievalAdapter]] = {
    "identity": IdentityAdapter,
    "linear": LinearHead,
    "bottleneck": BottleneckAdapter,
    "hypergraph": _lazy("hypergraph", "HypergraphAdapter"),
    "entityclip": _lazy("entityclip", "EntityCLIPAdapter"),
    "apse-ipik": _lazy("apse_ipik", "APSEIPIKAdapter"),
    "hgan": _lazy("hgan", "HGANAdapter"),
}


def build_adapter(name: str, dim: int, **options: Any) -> RetrievalAdapter:
    """Build the adapter registered as ``name`` for ``dim``-dimensional features.

    ``options`` go to the adapter's constructor (see each class). Unknown
    names or options raise a ``ValueError`` that lists what is accepted.
    """
    if name not in ADAPTERS:
        raise ValueError(f"build_adapter: unknown adapter {name!r}; known: {sorted(ADAPTERS)}")
    try:
        return ADAPTERS[name](dim, **options)
    except TypeError as error:
        raise ValueError(f"build_adapter({name!r}): bad options {sorted(options)}: {error}") from error


@torch.no_grad()
def encode_batched(
    adapter: RetrievalAdapter,
    features: Tensor,
    modality: str,
    context: AdapterContext | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> Tensor:
    """Encode a whole split in batches (no gradients), slicing ``context`` along with the rows.

    Returns ``[N, out_dim]`` L2-normalized features on ``features``' device.
    The caller chooses ``adapter.eval()`` / ``.train()``.
    """
    outputs = []
    starts = range(0, features.shape[0], batch_size)
    for start in tqdm(starts, desc=f"encode {modality}s", disable=not progress, leave=False):
        rows = slice(start, start + batch_size)
        batch_context = None if context is None else context.select(rows)
        outputs.append(adapter.encode(features[rows], modality, batch_context))
    if not outputs:
        return features.new_zeros((0, features.shape[1]))
    return torch.cat(outputs)

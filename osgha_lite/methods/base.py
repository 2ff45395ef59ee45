"""Adapters on a frozen image-text embedding space, behind one interface.

The interface every adapter implements (so one training loop and one
evaluation loop handle all of them):

``adapter.encode_images(x, context=None) -> Tensor`` and ``adapter.encode_texts(x, context=None) -> Tensor``
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
      (a :class:`~osgha_lite.methods.hypergraph.MemoryLinks` from
      ``HypergraphAdapter.precompute_links``): the inputs and the memory are
      frozen, so every row's neighbours can be found once, not in every step;
    * ``memory`` - overrides the adapter's own memory bank for this call;
    * ``gallery`` - test-gallery nodes, used only by an adapter in
      transductive mode (an inductive adapter refuses them).

``adapter.set_memory(bank)``
    Hands the adapter the training-split :class:`~osgha_lite.methods.hypergraph.MemoryBank`.
    A no-op for adapters with ``uses_memory = False``; call it for every
    adapter before training.

Class attributes tell the loops what to pass: ``uses_memory``,
``uses_descriptions``, ``uses_test_gallery`` (True only for a transductive
adapter; the results writer should record it), ``trainable`` (False for
:class:`IdentityAdapter`, which has no parameters). :meth:`RetrievalAdapter.config`
returns the options as a JSON-ready dict for the results file.

Adapters (this module holds only their interface and the helpers they share:
:func:`check_input`, :func:`gather_rows`, :func:`encode_batched`):

* ``identity`` - :class:`~osgha_lite.methods.baselines.IdentityAdapter`, the frozen backbone.
* ``linear`` - :class:`~osgha_lite.methods.baselines.LinearHead`, one linear map per modality.
* ``bottleneck`` - :class:`~osgha_lite.methods.baselines.BottleneckAdapter`, CLIP-Adapter (Gao et al. 2021).
* ``hypergraph`` - :class:`~osgha_lite.methods.hypergraph.HypergraphAdapter`, the
  OS-HGAdapter reading of this project.
* ``entityclip`` - :class:`~osgha_lite.methods.entityclip.EntityCLIPAdapter`.
* ``apse-ipik`` - :class:`~osgha_lite.methods.apse_ipik.APSEIPIKAdapter`.
* ``hgan`` - :class:`~osgha_lite.methods.hgan.HGANAdapter`.

Build any of them by name with :func:`osgha_lite.methods.build_adapter` (a dict
registry of plain imports, :data:`osgha_lite.methods.registry.ADAPTERS`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from osgha_lite.runtime import progress_bar

MODALITIES = ("image", "text")

__all__ = [
    "MODALITIES",
    "AdapterContext",
    "RetrievalAdapter",
    "check_input",
    "encode_batched",
    "gather_rows",
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
    # memory and gallery hold an osgha_lite.methods.hypergraph.MemoryBank, links an osgha_lite.methods.hypergraph.MemoryLinks;
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
        :class:`~osgha_lite.methods.hypergraph.MemoryLinks`, which slices all its parts).
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
    """Base class: the interface documented at the top of :mod:`osgha_lite.methods.base`."""

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


def check_input(x: Tensor, dim: int, who: str) -> None:
    """Raise a ValueError naming ``who`` unless ``x`` is ``[batch, dim]``."""
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who}: expected features of shape [batch, {dim}], got {tuple(x.shape)}")


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
    for start in progress_bar(starts, desc=f"encode {modality}s", disable=not progress, leave=False):
        rows = slice(start, start + batch_size)
        batch_context = None if context is None else context.select(rows)
        outputs.append(adapter.encode(features[rows], modality, batch_context))
    if not outputs:
        return features.new_zeros((0, features.shape[1]))
    return torch.cat(outputs)

"""The memory bank: a fixed set of training-split nodes that queries link to.

The memory bank of training nodes is our design, beyond the paper's
description (:mod:`osgha_lite.methods.hypergraph`): the nodes a query links to are
training images and captions, fixed after training, both for training rows
(minus the nodes of their own image) and for test queries (see the
test-time protocol in :mod:`osgha_lite.methods.hypergraph.adapter`).

* :data:`IMAGE`, :data:`TEXT` - the modality codes in
  :attr:`MemoryBank.modality`.
* :class:`MemoryBank` - a fixed set of training-split nodes;
  :func:`paired_rows` - the partners of a memory node (its image or its
  captions): a training image and its own captions belong together, which
  is what *pair* hyperedges use (:mod:`osgha_lite.methods.hypergraph.query`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IMAGE, TEXT = 0, 1  # modality codes in MemoryBank.modality

__all__ = [
    "IMAGE",
    "MODALITY_CODES",
    "TEXT",
    "MemoryBank",
    "paired_rows",
]


# --------------------------------------------------------------------------- memory bank


@dataclass(frozen=True)
class MemoryBank:
    """A fixed set of training-split nodes that test queries may link to.

    ``features[i]`` is the frozen (L2-normalized) feature of memory node
    ``i``, ``modality[i]`` is :data:`IMAGE` (0) or :data:`TEXT` (1),
    ``group_ids[i]`` the train-split image index it belongs to (an image's
    own index, a caption's ``text_to_image``), ``source_index[i]`` its row in
    the train image or caption features.
    """

    features: Tensor
    modality: Tensor
    group_ids: Tensor
    source_index: Tensor

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        for name in ("modality", "group_ids", "source_index"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"MemoryBank: {name} must have shape ({n},), got {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    def from_train_split(
        cls,
        image_features: Tensor,
        text_features: Tensor,
        text_to_image: Tensor,
        max_nodes: int | None = None,
        seed: int = 0,
    ) -> MemoryBank:
        """All train images and captions, or a seeded subsample of at most ``max_nodes``.

        When subsampling, each modality keeps its share:
        ``round(max_nodes * n_images / (n_images + n_texts))`` images and the
        rest captions, drawn without replacement by ``torch.randperm`` with a
        generator seeded by ``seed`` and kept in their original order. Images
        come first, then captions.
        """
        device = image_features.device
        text_features = text_features.to(device)
        text_to_image = torch.as_tensor(text_to_image, dtype=torch.long, device=device)
        n_images, n_texts = image_features.shape[0], text_features.shape[0]
        if text_to_image.shape != (n_texts,):
            raise ValueError(
                f"MemoryBank.from_train_split: text_to_image has shape {tuple(text_to_image.shape)}, "
                f"expected ({n_texts},)"
            )
        image_rows = torch.arange(n_images)
        text_rows = torch.arange(n_texts)
        total = n_images + n_texts
        if max_nodes is not None and max_nodes < total:
            keep_images = round(max_nodes * n_images / total)
            generator = torch.Generator().manual_seed(seed)
            image_rows = torch.randperm(n_images, generator=generator)[:keep_images].sort().values
            text_rows = torch.randperm(n_texts, generator=generator)[: max_nodes - keep_images].sort().values
        image_rows, text_rows = image_rows.to(device), text_rows.to(device)
        return cls(
            features=torch.cat([image_features[image_rows], text_features[text_rows]]),
            modality=torch.cat([torch.full_like(image_rows, IMAGE), torch.full_like(text_rows, TEXT)]),
            group_ids=torch.cat([image_rows, text_to_image[text_rows]]),
            source_index=torch.cat([image_rows, text_rows]),
        )

    @classmethod
    def from_features(cls, features: Tensor, modality: Tensor, group_ids: Tensor | None = None) -> MemoryBank:
        """A bank from explicit rows (e.g. a test gallery); groups default to ``-1 - row`` (all distinct)."""
        n = features.shape[0]
        rows = torch.arange(n, device=features.device)
        return cls(
            features,
            torch.as_tensor(modality, dtype=torch.long, device=features.device).reshape(n),
            -1 - rows if group_ids is None else torch.as_tensor(group_ids, dtype=torch.long, device=features.device),
            rows,
        )

    def concat(self, other: MemoryBank) -> MemoryBank:
        return MemoryBank(
            torch.cat([self.features, other.features]),
            torch.cat([self.modality, other.modality]),
            torch.cat([self.group_ids, other.group_ids]),
            torch.cat([self.source_index, other.source_index]),
        )

    def to(self, device: torch.device | str) -> MemoryBank:
        return MemoryBank(*(t.to(device) for t in (self.features, self.modality, self.group_ids, self.source_index)))


MODALITY_CODES = {"image": IMAGE, "text": TEXT}


def modality_code(modality: str | int) -> int:
    if isinstance(modality, str):
        if modality not in MODALITY_CODES:
            raise ValueError(f"modality must be one of {sorted(MODALITY_CODES)}, got {modality!r}")
        return MODALITY_CODES[modality]
    if int(modality) not in (IMAGE, TEXT):
        raise ValueError(f"modality code must be IMAGE ({IMAGE}) or TEXT ({TEXT}), got {modality!r}")
    return int(modality)


def modality_pool(candidates: MemoryBank, modality: int) -> Tensor:
    return (candidates.modality == modality).nonzero(as_tuple=True)[0]


def paired_rows(candidates: MemoryBank, rows: Tensor) -> Tensor:
    """For each bank row, the bank rows of the *other* modality in its group, ``[*rows.shape, P]``.

    A training image and its captions share a group (the image's index), so
    the partners of a caption are its image and the partners of an image
    are its captions. ``P`` is the largest partner count in the bank (5 for
    Flickr); missing partners and entries for ``rows == -1`` are -1.
    """
    rows = torch.as_tensor(rows, dtype=torch.long)
    device = candidates.features.device
    flat = rows.reshape(-1).to(device)
    valid = flat >= 0
    safe = flat.clamp_min(0)
    pools, width = {}, 0
    for modality in (IMAGE, TEXT):
        pool = modality_pool(candidates, modality)
        groups = candidates.group_ids[pool]
        order = torch.argsort(groups, stable=True)
        pools[modality] = (pool[order], groups[order])
        if groups.numel():
            width = max(width, int(torch.unique(groups, return_counts=True)[1].max()))
    out = torch.full((flat.numel(), width), -1, dtype=torch.long, device=device)
    if flat.numel() and width:
        query_groups, query_modality = candidates.group_ids[safe], candidates.modality[safe]
        for modality in (IMAGE, TEXT):
            partner_pool, partner_groups = pools[TEXT if modality == IMAGE else IMAGE]
            selected = valid & (query_modality == modality)
            if not selected.any() or partner_pool.numel() == 0:
                continue
            groups = query_groups[selected]
            start = torch.searchsorted(partner_groups, groups, side="left")
            end = torch.searchsorted(partner_groups, groups, side="right")
            index = start[:, None] + torch.arange(width, device=device)
            found = index < end[:, None]
            partners = partner_pool[index.clamp_max(partner_pool.numel() - 1)]
            out[selected] = torch.where(found, partners, torch.full_like(partners, -1))
    return out.reshape(*rows.shape, width).to(rows.device)

"""The in-memory form of one split of an image-caption dataset, and the data root.

A :class:`CaptionDataset` is a list of images and a list of captions joined
by an explicit caption-to-image index ``text_to_image``
(``text_to_image[j] = i`` means caption ``j`` describes image ``i``).
Nothing assumes five consecutive captions per image; counts may vary.

What a reader skipped on request (``skip_missing``, ``skip_bad_rows``) is
counted in ``skipped`` with the first few examples in ``skip_examples``;
what it kept on purpose although it looks odd (rows repeated in the source,
kept because the published benchmark keeps them) is counted in ``kept``.
``skipped`` is in :meth:`CaptionDataset.summary`, all three in ``summary(details=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osgha_lite.paths import DATA_ROOT_ENV, PROJECT_ROOT, data_root  # noqa: F401 - also reachable from here

SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """Bad or missing input data; the message names the file and line (or field) and what to do."""


class SkippedDataWarning(UserWarning):
    """Rows or images were skipped (or odd rows kept) on request; the message gives the count and examples."""


@dataclass(frozen=True)
class CaptionDataset:
    """Images and captions of one split, with an explicit caption-to-image index.

    Attributes:
        name: registered dataset name, e.g. ``"flickr8k"``.
        split: ``"train"``, ``"dev"`` or ``"test"``.
        image_ids: one identifier per image (file name for Flickr, COCO id for COCO).
        image_paths: absolute path of each image, aligned with ``image_ids``.
        captions: every caption of the split.
        text_to_image: ``int64`` array, ``text_to_image[j]`` is the image index of caption ``j``.
        skipped: what was skipped on request (reason -> count); empty when nothing was.
        source: for a protocol split, the dataset and rows it was selected from.
        skip_examples: reason -> the first few skipped items, each naming its file and line.
        kept: reason -> count of odd rows kept on purpose (e.g. repeated captions a benchmark keeps).
    """

    name: str
    split: str
    image_ids: list[str]
    image_paths: list[Path]
    captions: list[str]
    text_to_image: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    source: "SplitSource | None" = None
    skip_examples: dict[str, list[str]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def n_texts(self) -> int:
        return len(self.captions)

    def captions_per_image(self) -> np.ndarray:
        """Number of captions of each image (``int64``, length ``n_images``)."""
        return np.bincount(self.text_to_image, minlength=self.n_images)

    def subset(self, n_images: int) -> "CaptionDataset":
        """The first ``n_images`` images and all their captions (for smoke runs).

        A selected split stays selected from its parent (its features are
        still read from the parent's cache).
        """
        if self.source is not None:
            return self.source.parent.select_images(self.source.images[:n_images], self.split)
        keep = self.text_to_image < n_images
        return CaptionDataset(
            name=self.name,
            split=self.split,
            image_ids=self.image_ids[:n_images],
            image_paths=self.image_paths[:n_images],
            captions=[c for c, k in zip(self.captions, keep) if k],
            text_to_image=self.text_to_image[keep],
            skipped=dict(self.skipped), skip_examples=dict(self.skip_examples), kept=dict(self.kept),
        )

    def select_images(self, images: np.ndarray, split: str) -> "CaptionDataset":
        """The images ``images`` (indices, in the given order) with all their captions, named ``split``.

        The result's ``source`` records this dataset and the rows taken, so
        that cached features of this dataset can be reused for it.
        """
        images = np.asarray(images, dtype=np.int64)
        if len(np.unique(images)) != len(images) or (len(images) and (images.min() < 0 or images.max() >= self.n_images)):
            raise ValueError(f"{self.name}/{self.split}: image indices must be distinct and in [0, {self.n_images})")
        position = np.full(self.n_images, -1, dtype=np.int64)
        position[images] = np.arange(len(images))
        texts = np.flatnonzero(position[self.text_to_image] >= 0)
        texts = texts[np.argsort(position[self.text_to_image[texts]], kind="stable")]
        return CaptionDataset(
            name=self.name, split=split,
            image_ids=[self.image_ids[i] for i in images], image_paths=[self.image_paths[i] for i in images],
            captions=[self.captions[j] for j in texts], text_to_image=position[self.text_to_image[texts]],
            skipped=dict(self.skipped), source=SplitSource(self, images, texts),
            skip_examples=dict(self.skip_examples), kept=dict(self.kept),
        )

    def summary(self, details: bool = False) -> dict:
        """Counts as plain numbers (for tables and result files).

        ``skipped`` counts what was skipped per reason; with ``details=True``
        also ``skip_examples`` (the first few skipped items per reason, each
        naming its file and line) and ``kept`` (odd rows kept on purpose).
        """
        per_image = self.captions_per_image()
        summary = {
            "dataset": self.name,
            "split": self.split,
            "images": self.n_images,
            "captions": self.n_texts,
            "captions_per_image_min": int(per_image.min()) if self.n_images else 0,
            "captions_per_image_max": int(per_image.max()) if self.n_images else 0,
            "skipped": dict(self.skipped),
        }
        if details:
            summary["skip_examples"] = {reason: list(items) for reason, items in self.skip_examples.items()}
            summary["kept"] = dict(self.kept)
        return summary


@dataclass(frozen=True)
class SplitSource:
    """Where the rows of a selected split come from: ``parent``'s images ``images`` and captions ``texts``."""

    parent: CaptionDataset
    images: np.ndarray
    texts: np.ndarray

    def rows(self, modality: str) -> np.ndarray:
        """The parent's row indices of this split's images (``"image"``) or captions (``"text"``)."""
        return self.images if modality == "image" else self.texts

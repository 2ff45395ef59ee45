"""Image-caption datasets behind one registry.

Every reader returns a :class:`CaptionDataset`: a list of images and a list of
captions joined by an explicit caption-to-image index ``text_to_image``
(``text_to_image[j] = i`` means caption ``j`` describes image ``i``). Nothing
assumes five consecutive captions per image; counts may vary.

Datasets live under one data root, taken from the environment variable
``OSGHA_DATA_ROOT`` (default: the repository's ``data/`` folder). Readers only
read: nothing is ever written under the data root.

Registered datasets (``DATASETS``) map a name to a reader (``READERS``) and a
sub-folder of the data root:

=====================  ==========  ==========================================
name                   reader      layout under ``<root>/<folder>``
=====================  ==========  ==========================================
``flickr8k``           flickr8k    ``images/``, ``captions.txt``,
                                   ``Flickr_8k.{train,dev,test}Images.txt``
``flickr30k``          karpathy    ``dataset_flickr30k.json``, ``images/``
``mscoco``             karpathy    ``dataset_coco.json``, ``images/`` (holding
                                   ``train2014/`` and ``val2014/``)
``mscoco-2014``        coco        ``annotations/captions_{train,val}2014.json``,
                                   ``images/{train,val}2014/``
=====================  ==========  ==========================================

Splits are ``train``, ``dev`` and ``test`` for every dataset (Karpathy's
``val`` is called ``dev``; its ``restval`` is added to ``train`` as most
retrieval papers do). ``mscoco-2014`` has ``train`` and ``dev`` (= val2014).

Protocol splits (:func:`load_profile_split`): a profile's ``"protocol"``
divides the training images between the backbone and the methods.

* ``{"kind": "disjoint", "pretrain_images": N, "seed": S}``: a seeded
  permutation of the ``train`` images puts ``N`` of them in ``pretrain``
  (what the lite backbone's heads are fitted on) and the rest in ``adapt``
  (what every method trains on and keeps in its memory). No image is in both,
  as CLIP never saw the pairs an adapter trains on. The images keep their
  ``train`` order inside each part.
* ``{"kind": "shared"}`` (the default): ``pretrain`` and ``adapt`` are both
  the whole ``train`` split (the paper profiles, whose CLIP backbone trains
  nothing here, and the ``lite-shared`` comparison profile).

A protocol split remembers where its rows come from (``source``), so the
feature cache reads the ``train`` features instead of encoding them again.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT_ENV = "OSGHA_DATA_ROOT"
SPLITS = ("train", "dev", "test")
PROTOCOL_SPLITS = ("pretrain", "adapt")
PROTOCOL_KINDS = ("shared", "disjoint")


class DataError(ValueError):
    """Bad or missing input data; the message names the file and line."""


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
    """

    name: str
    split: str
    image_ids: list[str]
    image_paths: list[Path]
    captions: list[str]
    text_to_image: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    source: "SplitSource | None" = None

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
            skipped=dict(self.skipped),
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
        )

    def summary(self) -> dict:
        """Counts as plain numbers (for tables and result files)."""
        per_image = self.captions_per_image()
        return {
            "dataset": self.name,
            "split": self.split,
            "images": self.n_images,
            "captions": self.n_texts,
            "captions_per_image_min": int(per_image.min()) if self.n_images else 0,
            "captions_per_image_max": int(per_image.max()) if self.n_images else 0,
            "skipped": dict(self.skipped),
        }


@dataclass(frozen=True)
class SplitSource:
    """Where the rows of a selected split come from: ``parent``'s images ``images`` and captions ``texts``."""

    parent: CaptionDataset
    images: np.ndarray
    texts: np.ndarray

    def rows(self, modality: str) -> np.ndarray:
        """The parent's row indices of this split's images (``"image"``) or captions (``"text"``)."""
        return self.images if modality == "image" else self.texts


def data_root() -> Path:
    """The data root: ``$OSGHA_DATA_ROOT`` if set (relative paths are taken from
    the current directory), else the repository's ``data/`` folder."""
    value = os.environ.get(DATA_ROOT_ENV)
    if value:
        return Path(value).expanduser().resolve()
    return PROJECT_ROOT / "data"


# --------------------------------------------------------------------------- readers

Reader = Callable[..., CaptionDataset]
READERS: dict[str, Reader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Decorator adding a reader function to :data:`READERS`."""

    def wrap(function: Reader) -> Reader:
        READERS[name] = function
        return function

    return wrap


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one named dataset: its reader, folder and reader options."""

    reader: str
    folder: str
    options: dict = field(default_factory=dict)
    download_help: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "flickr8k": DatasetSpec(
        "flickr8k", "flickr8k",
        download_help="see data/README.md, section Flickr8k (Kaggle layout)",
    ),
    "flickr30k": DatasetSpec(
        "karpathy", "flickr30k", {"json_name": "dataset_flickr30k.json"},
        download_help="see data/README.md, section Flickr30K (Karpathy split)",
    ),
    "mscoco": DatasetSpec(
        "karpathy", "coco", {"json_name": "dataset_coco.json"},
        download_help="see data/README.md, section MS-COCO (Karpathy split)",
    ),
    "mscoco-2014": DatasetSpec(
        "coco", "coco",
        download_help="see data/README.md, section MS-COCO (official 2014 annotations)",
    ),
}


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    skip_missing: bool = False,
    skip_bad_rows: bool = False,
    verify_images: bool = False,
) -> CaptionDataset:
    """Read split ``split`` of the registered dataset ``name``.

    Args:
        name: a key of :data:`DATASETS`.
        split: ``"train"``, ``"dev"`` or ``"test"``.
        root: data root; default :func:`data_root`.
        skip_missing: skip images that a split list names but that have no
            image file or no caption (counted in ``skipped``) instead of raising.
        skip_bad_rows: skip caption rows that do not parse (counted) instead of raising.
        verify_images: also decode every image (slower) and treat undecodable
            ones as missing.

    Raises:
        DataError: naming the file (and line) that is wrong and what to do.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; use one of {', '.join(SPLITS)}")
    spec = DATASETS[name]
    folder = Path(root).expanduser().resolve() if root is not None else data_root()
    folder = folder / spec.folder
    if not folder.is_dir():
        raise DataError(
            f"dataset folder {folder} does not exist. Set {DATA_ROOT_ENV} to the folder that "
            f"holds '{spec.folder}/' ({spec.download_help})."
        )
    dataset = READERS[spec.reader](
        folder, split, name=name, skip_missing=skip_missing, skip_bad_rows=skip_bad_rows, **spec.options
    )
    if verify_images:
        dataset = _verify_images(dataset, skip_missing)
    return dataset


def _assemble(
    name: str,
    split: str,
    ordered_ids: list[str],
    paths: dict[str, Path],
    captions: dict[str, list[str]],
    skipped: Counter,
    skip_missing: bool,
    list_source: str,
    list_lines: dict[str, int] | None = None,
) -> CaptionDataset:
    """Join images and captions in the order of ``ordered_ids``; check that each
    image exists and has at least one caption."""
    image_ids, image_paths, texts, index = [], [], [], []
    for image_id in ordered_ids:
        path = paths[image_id]
        where = f"{list_source}" + (f", line {list_lines[image_id]}" if list_lines else "")
        problem = None
        if not path.is_file():
            problem = ("missing_image", f"{where} names image {image_id!r} but {path} does not exist")
        elif not captions.get(image_id):
            problem = ("no_caption", f"{where} names image {image_id!r} which has no caption")
        if problem:
            if skip_missing:
                skipped[problem[0]] += 1
                continue
            raise DataError(problem[1] + "; fix the file or load with skip_missing=True to skip such images")
        position = len(image_ids)
        image_ids.append(image_id)
        image_paths.append(path)
        for caption in captions[image_id]:
            texts.append(caption)
            index.append(position)
    if not image_ids:
        raise DataError(f"{list_source}: split {split!r} has no usable image")
    return CaptionDataset(name, split, image_ids, image_paths, texts,
                          np.asarray(index, dtype=np.int64), dict(skipped))


@register_reader("flickr8k")
def read_flickr8k(folder: Path, split: str, name: str = "flickr8k", skip_missing: bool = False,
                  skip_bad_rows: bool = False) -> CaptionDataset:
    """Kaggle layout: ``captions.txt`` (CSV, header ``image,caption``), ``images/``
    and the official ``Flickr_8k.{train,dev,test}Images.txt`` split lists."""
    captions_file = folder / "captions.txt"
    list_file = folder / f"Flickr_8k.{split}Images.txt"
    for required in (captions_file, list_file, folder / "images"):
        if not required.exists():
            raise DataError(f"{required} is missing; expected the Kaggle Flickr8k layout (see data/README.md)")
    skipped: Counter = Counter()
    captions: dict[str, list[str]] = {}
    with open(captions_file, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
            raise DataError(f"{captions_file}, line 1: expected the header 'image,caption', found {header!r}")
        for row in reader:
            line = reader.line_num
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                if skip_bad_rows:
                    skipped["bad_caption_row"] += 1
                    continue
                raise DataError(
                    f"{captions_file}, line {line}: expected 'image,caption' with both fields non-empty, "
                    f"found {row!r}; fix the row or load with skip_bad_rows=True"
                )
            captions.setdefault(row[0].strip(), []).append(row[1].strip())
    ordered, lines = [], {}
    with open(list_file, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            image_id = line.strip()
            if image_id and image_id not in lines:
                ordered.append(image_id)
                lines[image_id] = line_number
    paths = {image_id: folder / "images" / image_id for image_id in ordered}
    return _assemble(name, split, ordered, paths, captions, skipped, skip_missing, str(list_file), lines)


_KARPATHY_SPLITS = {"train": ("train", "restval"), "dev": ("val",), "test": ("test",)}


@register_reader("karpathy")
def read_karpathy(folder: Path, split: str, name: str, json_name: str, skip_missing: bool = False,
                  skip_bad_rows: bool = False) -> CaptionDataset:
    """Karpathy split files (``dataset_flickr30k.json``, ``dataset_coco.json``):
    ``{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}``.
    Images are read from ``images/<filepath>/<filename>``."""
    json_file = folder / json_name
    if not json_file.is_file():
        raise DataError(f"{json_file} is missing; see data/README.md for the Karpathy split files")
    try:
        content = json.loads(json_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{json_file}, line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DataError(f"{json_file}: expected an object with an 'images' list")
    skipped: Counter = Counter()
    wanted = _KARPATHY_SPLITS[split]
    ordered, paths, captions = [], {}, {}
    for position, entry in enumerate(content["images"]):
        where = f"{json_file}, images[{position}]"
        if not isinstance(entry, dict) or "filename" not in entry or "split" not in entry:
            if skip_bad_rows:
                skipped["bad_image_entry"] += 1
                continue
            raise DataError(f"{where}: needs 'filename' and 'split'; fix it or load with skip_bad_rows=True")
        if entry["split"] not in wanted:
            continue
        image_id = str(entry.get("cocoid", entry["filename"]))
        texts = []
        for k, sentence in enumerate(entry.get("sentences", [])):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str) or not raw.strip():
                if skip_bad_rows:
                    skipped["bad_caption_row"] += 1
                    continue
                raise DataError(f"{where}.sentences[{k}]: no 'raw' caption text; fix it or load with skip_bad_rows=True")
            texts.append(raw.strip())
        ordered.append(image_id)
        paths[image_id] = folder / "images" / entry.get("filepath", "") / entry["filename"]
        captions[image_id] = texts
    return _assemble(name, split, ordered, paths, captions, skipped, skip_missing, str(json_file))


_COCO_SPLITS = {"train": "train2014", "dev": "val2014"}


@register_reader("coco")
def read_coco(folder: Path, split: str, name: str, skip_missing: bool = False,
              skip_bad_rows: bool = False) -> CaptionDataset:
    """Official COCO caption annotations ``annotations/captions_<set>.json``
    (``images`` with ``id``/``file_name``, ``annotations`` with ``image_id``/``caption``);
    images under ``images/<set>/``. ``train`` is train2014 and ``dev`` is val2014."""
    if split not in _COCO_SPLITS:
        raise DataError(f"{name} has splits {', '.join(_COCO_SPLITS)}; for the 5K test split use 'mscoco' (Karpathy)")
    image_set = _COCO_SPLITS[split]
    json_file = folder / "annotations" / f"captions_{image_set}.json"
    if not json_file.is_file():
        raise DataError(f"{json_file} is missing; see data/README.md for the COCO annotation files")
    try:
        content = json.loads(json_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{json_file}, line {error.lineno}: not valid JSON ({error.msg})") from None
    skipped: Counter = Counter()
    ordered, paths = [], {}
    for position, image in enumerate(content.get("images", [])):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"{json_file}, images[{position}]: needs 'id' and 'file_name'")
        image_id = str(image["id"])
        ordered.append(image_id)
        paths[image_id] = folder / "images" / image_set / image["file_name"]
    captions: dict[str, list[str]] = {}
    for position, note in enumerate(content.get("annotations", [])):
        ok = isinstance(note, dict) and isinstance(note.get("caption"), str) and note["caption"].strip()
        if not ok or str(note.get("image_id")) not in paths:
            if skip_bad_rows:
                skipped["bad_caption_row"] += 1
                continue
            raise DataError(
                f"{json_file}, annotations[{position}]: needs a non-empty 'caption' and an 'image_id' listed "
                f"in 'images'; fix it or load with skip_bad_rows=True"
            )
        captions.setdefault(str(note["image_id"]), []).append(note["caption"].strip())
    return _assemble(name, split, ordered, paths, captions, skipped, skip_missing, str(json_file))


def _verify_images(dataset: CaptionDataset, skip_missing: bool) -> CaptionDataset:
    """Decode every image; undecodable ones raise, or are skipped and counted."""
    from PIL import Image

    bad = []
    for position, path in enumerate(dataset.image_paths):
        try:
            with Image.open(path) as image:
                image.convert("RGB")
        except Exception as error:  # PIL raises several types for broken files
            if not skip_missing:
                raise DataError(f"{path}: cannot decode image ({error}); remove it or load with skip_missing=True") from None
            bad.append(position)
    if not bad:
        return dataset
    keep_images = [i for i in range(dataset.n_images) if i not in set(bad)]
    remap = {old: new for new, old in enumerate(keep_images)}
    keep_texts = [j for j, i in enumerate(dataset.text_to_image) if int(i) in remap]
    skipped = Counter(dataset.skipped)
    skipped["undecodable_image"] += len(bad)
    return CaptionDataset(
        dataset.name, dataset.split,
        [dataset.image_ids[i] for i in keep_images],
        [dataset.image_paths[i] for i in keep_images],
        [dataset.captions[j] for j in keep_texts],
        np.asarray([remap[int(dataset.text_to_image[j])] for j in keep_texts], dtype=np.int64),
        dict(skipped),
    )


def protocol_settings(profile: dict) -> dict:
    """The profile's ``"protocol"`` with defaults filled in (see the module docstring); checked."""
    protocol = {"kind": "shared", "seed": profile.get("seed", 0), **profile.get("protocol", {})}
    where = f"profile {profile.get('name')!r}, field 'protocol'"
    if protocol["kind"] not in PROTOCOL_KINDS:
        raise ValueError(f"{where}: unknown kind {protocol['kind']!r}; known: {', '.join(PROTOCOL_KINDS)}")
    if protocol["kind"] == "disjoint":
        n = protocol.get("pretrain_images")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{where}: a disjoint protocol needs 'pretrain_images', a positive integer, not {n!r}")
    return protocol


def split_train_images(n_images: int, pretrain_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``pretrain`` and ``adapt`` images among ``n_images`` training images.

    A permutation drawn with ``numpy.random.default_rng(seed)``; its first
    ``pretrain_images`` entries are ``pretrain``, the rest ``adapt``; each
    part is returned sorted (the images keep their ``train`` order).
    """
    if not 0 < pretrain_images < n_images:
        raise ValueError(f"pretrain_images must be between 1 and {n_images - 1} (the train split has "
                         f"{n_images} images), not {pretrain_images}")
    order = np.random.default_rng(seed).permutation(n_images)
    return np.sort(order[:pretrain_images]), np.sort(order[pretrain_images:])


def load_profile_split(profile: dict, split: str) -> CaptionDataset:
    """Split ``split`` of the profile's dataset with the profile's data options (``profile["data"]``).

    ``split`` is ``train``, ``dev``, ``test`` or a protocol split
    (``pretrain``, ``adapt``; see the module docstring). With
    ``profile["smoke_images"]`` only that many images.
    """
    if split in PROTOCOL_SPLITS:
        protocol = protocol_settings(profile)
        train = load_dataset(profile["dataset"], "train", **profile.get("data", {}))
        if protocol["kind"] == "shared":
            data = train
        else:
            parts = dict(zip(PROTOCOL_SPLITS, split_train_images(train.n_images, protocol["pretrain_images"],
                                                                 protocol["seed"])))
            data = train.select_images(parts[split], split)
    else:
        data = load_dataset(profile["dataset"], split, **profile.get("data", {}))
    limit = profile.get("smoke_images")
    return data.subset(int(limit)) if limit else data

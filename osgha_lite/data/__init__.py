"""Datasets by name: declarations, readers and the training protocol splits.

:func:`load_dataset` reads one split of a dataset into a
:class:`~osgha_lite.data.captionset.CaptionDataset` (images, captions and an
explicit caption-to-image index). A dataset is *declared* in a small JSON
object (reader, folder, reader options; :mod:`osgha_lite.data.declarations`)
and read by one of the readers of :mod:`osgha_lite.data.readers`; nothing about a
particular dataset is written in code. Built-in declarations
(``osgha_lite/data/datasets/*.json``):

=====================  ==========  ==========================================
name                   reader      layout under ``<data root>/<folder>``
=====================  ==========  ==========================================
``flickr8k``           flickr8k    ``flickr8k/``: ``images/``, ``captions.txt``,
                                   ``Flickr_8k.{train,dev,test}Images.txt``
``flickr30k``          karpathy    ``flickr30k/``: ``dataset_flickr30k.json``, ``images/``
``mscoco``             karpathy    ``coco/``: ``dataset_coco.json``, ``images/``
                                   (holding ``train2014/`` and ``val2014/``)
``mscoco-2014``        coco        ``coco/``: ``annotations/captions_{train,val}2014.json``,
                                   ``images/{train,val}2014/``
``mscoco-2017``        coco        ``coco/``: ``annotations/captions_{train,val}2017.json``,
                                   ``images/{train,val}2017/``
=====================  ==========  ==========================================

A dataset of one's own is declared in a JSON file (``load_dataset(path, split)``),
in the repository's ``data/examples/<name>/dataset.json``, or in a profile's
``"datasets"`` (``load_dataset(name, split, profile=profile)``).

Datasets live under one data root, taken from the environment variable
``OSGHA_DATA_ROOT`` (default: the repository's ``data/`` folder). Readers only
read: nothing is ever written under the data root.

Splits are ``train``, ``dev`` and ``test`` for every dataset (Karpathy's
``val`` is called ``dev``; its ``restval`` is added to ``train`` as most
retrieval papers do). The COCO declarations have ``train`` and ``dev``.

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

Reading order
-------------
1. this module - datasets by name (:func:`load_dataset`) and the protocol
   splits (:func:`load_profile_split`);
2. :mod:`~osgha_lite.data.captionset` - :class:`CaptionDataset`, the in-memory
   form every reader returns;
3. :mod:`~osgha_lite.data.declarations` - the JSON declarations
   (``datasets/*.json``) that name a reader, a folder and options;
4. :mod:`~osgha_lite.data.readers` - one reader per on-disk layout;
5. :mod:`~osgha_lite.data.textfiles` - strict UTF-8, CSV, JSON and JSON Lines.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from osgha_lite.data.captionset import SPLITS, CaptionDataset, DataError, SkippedDataWarning, SplitSource
from osgha_lite.data.declarations import DATASETS, DatasetSpec, find_declaration, read_declaration
from osgha_lite.paths import DATA_ROOT_ENV, PROJECT_ROOT, data_root
from osgha_lite.data.readers import READERS, register_reader
from osgha_lite.data.readers import verify_images as decode_every_image

__all__ = [
    "CaptionDataset", "DataError", "DatasetSpec", "DATASETS", "DATA_ROOT_ENV", "PROJECT_ROOT", "PROTOCOL_SPLITS",
    "READERS", "SPLITS", "SkippedDataWarning", "SplitSource", "data_root", "load_dataset", "load_profile_split",
    "protocol_settings", "read_declaration", "register_reader", "split_train_images",
]

PROTOCOL_SPLITS = ("pretrain", "adapt")
PROTOCOL_KINDS = ("shared", "disjoint")


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    skip_missing: bool = False,
    skip_bad_rows: bool = False,
    verify_images: bool = False,
    profile: dict | None = None,
) -> CaptionDataset:
    """Read split ``split`` of the dataset ``name``.

    Args:
        name: a declared name (the profile's ``"datasets"``, a built-in, an
            example under ``data/examples/``) or the path of a declaration
            ``.json`` file; see :mod:`osgha_lite.data.declarations`.
        split: ``"train"``, ``"dev"`` or ``"test"``.
        root: data root; default :func:`data_root`.
        skip_missing: skip images that have no image file or no caption
            (counted, with examples, in ``skipped``/``skip_examples`` and a
            warning) instead of raising.
        skip_bad_rows: skip caption rows with an empty or missing field and
            repeated rows (counted and reported) instead of raising. Neither
            option hides a file that cannot be parsed, a wrong JSON type, a
            repeated image or a path that leaves the dataset folder.
        verify_images: also decode every image (slower) and treat undecodable
            ones as missing.
        profile: a profile whose ``"datasets"`` may declare ``name``.

    Raises:
        DataError: naming the file (and line or field) that is wrong and what to do.
    """
    spec = find_declaration(name, profile)
    label = spec.name or name
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {label}; use one of {', '.join(SPLITS)}")
    root_folder = Path(root).expanduser().resolve() if root is not None else data_root()
    folder, options = spec.resolve(root_folder)
    if not folder.is_dir():
        raise DataError(
            f"dataset folder {folder} of {label} does not exist (folder {spec.folder!r} in {spec.where()}). "
            f"Set {DATA_ROOT_ENV} to the data root that holds it" + (f" ({spec.download_help})." if spec.download_help
                                                                     else ".")
        )
    dataset = READERS[spec.reader](
        folder, split, name=label, skip_missing=skip_missing, skip_bad_rows=skip_bad_rows, **options
    )
    if verify_images:
        dataset = decode_every_image(dataset, skip_missing)
    return dataset


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

    The dataset may be declared in the profile's ``"datasets"`` (see
    :mod:`osgha_lite.data.declarations`).

    ``split`` is ``train``, ``dev``, ``test`` or a protocol split
    (``pretrain``, ``adapt``; see the module docstring). With
    ``profile["smoke_images"]`` only that many images.
    """
    if split in PROTOCOL_SPLITS:
        protocol = protocol_settings(profile)
        train = load_dataset(profile["dataset"], "train", profile=profile, **profile.get("data", {}))
        if protocol["kind"] == "shared":
            data = train
        else:
            parts = dict(zip(PROTOCOL_SPLITS, split_train_images(train.n_images, protocol["pretrain_images"],
                                                                 protocol["seed"])))
            data = train.select_images(parts[split], split)
    else:
        data = load_dataset(profile["dataset"], split, profile=profile, **profile.get("data", {}))
    limit = profile.get("smoke_images")
    return data.subset(int(limit)) if limit else data

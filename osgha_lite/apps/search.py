"""Search a folder of images by text, and a set of captions by image, in any method's space.

::

    python -m osgha_lite search index photos/                      # embed every image once (cached)
    python -m osgha_lite search query "a dog runs on the beach" --k 5
    python -m osgha_lite search query "a dog runs on the beach" --method os-hgadapter
    python -m osgha_lite search query --image photos/dog.jpg --k 5   # top captions of Flickr8k test

The same from Python::

    space = load_space(profile, "os-hgadapter")
    search = Searcher(space, index_images(space.backbone, list_images("photos/")),
                      index_captions(space.backbone, captions))
    search.text_to_images("a dog runs on the beach", k=5)   # DataFrame: rank, score, path
    search.image_to_captions("photos/dog.jpg", k=5)          # DataFrame: rank, score, caption

A *space* (:func:`load_space`) is the profile's frozen backbone
(``frozen-backbone``) or the backbone followed by one of the profile's
trained methods, loaded from its checkpoint (trained first on the profile's
adapt images when there is none, as in notebook 03). Scores are cosine
similarities :math:`s(q, g) = \\langle f(q), f(g) \\rangle` of unit vectors,
with :math:`f` the method's encoder of the query's or the gallery item's
modality; results are the ``k`` largest, ties broken by gallery order.

Gallery images are encoded through the feature cache
(:mod:`osgha_lite.backbones.features`, keyed by the bytes of every file), so indexing
the same files again reads the cache; the CLI also keeps the last index
under ``<cache>/search/<name>.json`` and the ``.npy`` file it names, written
as one unit (:func:`save_index`), so that a query does not re-read the
folder. Any file name the file system holds is indexed; the CLI prints
bytes that are not UTF-8 as ``\\xff`` (:func:`osgha_lite.apps.cli.display_path`).
Queries are encoded directly, never cached. Trained methods adapt gallery
and queries inductively: no LLM texts, memory links against the training
memory only (:meth:`osgha_lite.train.experiment.ScoredMethod.encode`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from osgha_lite.atomic import IntegrityError, atomic_write_bytes, load_verified_npy
from osgha_lite.apps.cli import add_debug_option, run_reporting_errors
from osgha_lite.data.declarations import PLAIN_NAME_RULE, is_plain_name
from osgha_lite.backbones.features import cached_local_features
from osgha_lite.paths import cache_root, display_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
INDEX_DATASET = "search"  # dataset and split names of indexed files in the feature cache


class SearchError(ValueError):
    """A search request that cannot be answered; the message says what to do."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, by suffix), sorted by path."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise SearchError(f"{folder} is not a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SearchError(f"{folder} holds no image file (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first; equal scores keep their gallery order."""
    if k < 1:
        raise SearchError(f"k must be at least 1, not {k}")
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


@dataclass
class ImageIndex:
    """Gallery images in the backbone's space: ``vectors`` ``[n, d]`` unit rows, ``local`` for HGAN;
    ``skipped``: images left out because they cannot be decoded (path -> problem)."""

    paths: list[Path]
    vectors: np.ndarray
    identity: str
    local: tuple | None = None
    skipped: dict = field(default_factory=dict)


@dataclass
class CaptionIndex:
    """Captions in the backbone's space: ``vectors`` ``[n, d]`` unit rows, ``local`` for HGAN."""

    texts: list[str]
    vectors: np.ndarray
    identity: str
    local: tuple | None = None


def _local(backbone, items, modality: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cached local features of ``items`` projected into the backbone's space (float32) and their mask."""
    from osgha_lite.backbones import local_options

    options = local_options(backbone.local)
    encoder = backbone.image_encoder if modality == "image" else backbone.text_encoder
    size = options["image_grid"] if modality == "image" else options["text_tokens"]
    local, mask = cached_local_features(encoder, list(items), INDEX_DATASET, "index", size, progress=progress)
    return backbone.project_local(local, modality), np.asarray(mask)


def index_images(backbone, paths, local: bool = False, progress: bool = True,
                 skip_undecodable: bool = False) -> ImageIndex:
    """Embed gallery images (through the feature cache, keyed by their bytes); ``local`` also their regions.

    Each image is decoded once. One that cannot be decoded raises
    :class:`~osgha_lite.backbones.image_decode.UndecodableImages` naming every such file,
    or, with ``skip_undecodable``, is left out of the index and listed in its
    ``skipped`` (:func:`osgha_lite.backbones.image_decode.collect_undecodable`).
    """
    from osgha_lite.backbones.image_decode import collect_undecodable

    paths = [Path(p) for p in paths]
    with collect_undecodable(backbone.image_encoder, active=skip_undecodable) as failures:
        regions = _local(backbone, paths, "image", progress) if local else None  # fills the global cache too
        vectors = backbone.encode_images(paths, INDEX_DATASET, "index", progress=progress)
    keep = [row for row, path in enumerate(paths) if os.fspath(path) not in failures]
    if not keep:
        raise SearchError(f"none of the {len(paths)} images can be decoded (e.g. {display_path(paths[0])}: "
                          f"{failures[os.fspath(paths[0])]})")
    skipped = {os.fspath(paths[row]): failures[os.fspath(paths[row])] for row in range(len(paths))
               if os.fspath(paths[row]) in failures}
    if regions is not None:
        regions = tuple(part[keep] for part in regions)
    return ImageIndex([paths[row] for row in keep], vectors[keep], backbone.identity, regions, skipped)


def index_captions(backbone, texts, local: bool = False, progress: bool = True) -> CaptionIndex:
    """Embed a caption set (through the feature cache); ``local`` also their tokens."""
    texts = [str(t) for t in texts]
    if not texts:
        raise SearchError("the caption set is empty")
    vectors = backbone.encode_texts(texts, INDEX_DATASET, "captions", progress=progress)
    return CaptionIndex(texts, vectors, backbone.identity, _local(backbone, texts, "text", progress) if local else None)


def dataset_indexes(backbone, data, local: bool = False, progress: bool = True) -> tuple[ImageIndex, CaptionIndex]:
    """A dataset split's images and captions as indexes, from the split's own cached features."""
    images, texts = backbone.embed(data, progress=progress)
    image_local = text_local = None
    if local:
        features = backbone.embed_local(data, progress=progress)
        image_local, text_local = (features.images, features.image_mask), (features.texts, features.text_mask)
    return (ImageIndex([Path(p) for p in data.image_paths], images, backbone.identity, image_local),
            CaptionIndex(list(data.captions), texts, backbone.identity, text_local))


@dataclass
class Space:
    """A retrieval space: the backbone, and a trained method on top of it (``scored``; None = frozen)."""

    name: str
    backbone: object
    scored: object | None = None
    needs_local: bool = False

    def adapt(self, vectors: np.ndarray, modality: str, local: tuple | None = None) -> np.ndarray:
        """Backbone vectors into this space (the identity for the frozen backbone)."""
        if self.scored is None:
            return np.asarray(vectors, dtype=np.float32)
        return self.scored.encode(vectors, modality, local)

    def encode_query(self, item, modality: str) -> np.ndarray:
        """One query (a text, or an image path) in this space: ``[1, d]``, encoded directly (not cached)."""
        encoder = self.backbone.image_encoder if modality == "image" else self.backbone.text_encoder
        items = [Path(item)] if modality == "image" else [str(item)]
        local = None
        if self.needs_local:
            from osgha_lite.backbones import local_options

            options = local_options(self.backbone.local)
            size = options["image_grid"] if modality == "image" else options["text_tokens"]
            raw, tokens, mask = encoder.encode_local(items, size=size, progress=False)
            local = (self.backbone.project_local(tokens, modality), mask)
        else:
            raw = encoder.encode(items, progress=False)
        return self.adapt(self.backbone.from_raw(np.asarray(raw, dtype=np.float32), modality), modality, local)


def load_space(profile: dict, method: str = "frozen-backbone", backbone=None, progress: bool = True) -> Space:
    """The frozen backbone, or the backbone with the profile's trained ``method`` (checkpoint reused).

    The method is prepared as in notebook 03: trained on the profile's adapt
    images with early stopping on dev, its checkpoint loaded when it exists.
    """
    from osgha_lite.backbones import build_backbone
    from osgha_lite.data import load_profile_split
    from osgha_lite.train.experiment import embed_with_descriptions, load_profile_augmentations, method_embeddings, score_method

    if method not in profile["methods"]:
        raise SearchError(f"unknown method {method!r} for profile {profile['name']!r}; known: "
                          f"{', '.join(profile['methods'])}")
    backbone = backbone or build_backbone(profile, progress=progress)
    spec = profile["methods"][method]
    if spec.get("adapter") == "identity":
        return Space(method, backbone)
    k = int(profile.get("augmentation", {}).get("descriptions", 0))
    augmentations = load_profile_augmentations(profile)
    splits = {"train": load_profile_split(profile, "adapt"), "dev": load_profile_split(profile, "dev")}
    embedded = {s: embed_with_descriptions(backbone, d, augmentations, k, progress=progress) for s, d in splits.items()}
    inputs = method_embeddings(spec, backbone, splits, embedded, progress=progress)
    # dev stands in for the test split, whose scores are not needed here
    scored = score_method(method, spec, profile, backbone.identity, inputs["train"], inputs["dev"], inputs["dev"],
                          progress=progress, log=lambda line: print(f"[search] {line}", flush=True))
    return Space(method, backbone, scored, needs_local=bool(spec.get("local")))


class Searcher:
    """Text -> gallery images and image -> captions in one space, over precomputed gallery vectors."""

    def __init__(self, space: Space, images: ImageIndex | None = None, captions: CaptionIndex | None = None):
        for index in (images, captions):
            if index is not None and index.identity != space.backbone.identity:
                raise SearchError(f"the index was built with backbone {index.identity}, the space uses "
                                  f"{space.backbone.identity}; index again")
        if space.needs_local and any(i is not None and i.local is None for i in (images, captions)):
            raise SearchError(f"{space.name} needs local features; build the indexes with local=True")
        self.space, self.images, self.captions = space, images, captions
        self.image_vectors = space.adapt(images.vectors, "image", images.local) if images is not None else None
        self.caption_vectors = (space.adapt(captions.vectors, "text", captions.local)
                                if captions is not None else None)

    def text_to_images(self, text: str, k: int = 5) -> pd.DataFrame:
        """The ``k`` gallery images closest to ``text``: columns ``rank``, ``score``, ``index``, ``path``."""
        if self.images is None:
            raise SearchError("no image index: index a folder first")
        if not str(text).strip():
            raise SearchError("the text query is empty")
        scores = self.image_vectors @ self.space.encode_query(text, "text")[0]
        best = top_k(scores, k)
        return pd.DataFrame({"rank": np.arange(1, len(best) + 1), "score": scores[best], "index": best,
                             "path": [str(self.images.paths[i]) for i in best]})

    def image_to_captions(self, image, k: int = 5) -> pd.DataFrame:
        """The ``k`` captions closest to ``image`` (a path, or the row of an indexed gallery image):
        columns ``rank``, ``score``, ``index``, ``caption``."""
        if self.captions is None:
            raise SearchError("no caption index: give a caption set")
        if isinstance(image, (int, np.integer)):
            if self.images is None or not 0 <= int(image) < len(self.images.paths):
                raise SearchError(f"no gallery image number {image}")
            query = self.image_vectors[int(image)]
        else:
            if not Path(image).is_file():
                raise SearchError(f"query image {image} does not exist")
            query = self.space.encode_query(image, "image")[0]
        scores = self.caption_vectors @ query
        best = top_k(scores, k)
        return pd.DataFrame({"rank": np.arange(1, len(best) + 1), "score": scores[best], "index": best,
                             "caption": [self.captions.texts[i] for i in best]})


# --------------------------------------------------------------------------- the CLI's stored index

def index_record(name: str) -> Path:
    """The record (JSON) of the CLI's index ``name``; it names the file of its vectors (:func:`save_index`)."""
    if not is_plain_name(name):
        raise SearchError(f"the index name {name!r} is not {PLAIN_NAME_RULE}")
    return cache_root() / "search" / f"{name}.json"


def save_index(index: ImageIndex, name: str, profile: str) -> Path:
    """Store ``index`` as the CLI's index ``name``, as one unit.

    The vectors go to ``<name>.<sha256 prefix>.npy``, then the record
    ``<name>.json`` (profile, backbone, the vectors' file name and SHA-256,
    the paths) replaces the previous one in one rename. Until that rename
    the previous record and its vectors stay in force, so an index that
    fails part way leaves the previous index intact (and removes the vectors
    it wrote); older vectors files of ``name`` are removed after it. Images
    left out because they cannot be decoded are listed under
    ``skipped_images`` (count, path -> problem). The record is ASCII JSON
    (``\\u`` escapes), so any file name the file system can hold,
    undecodable bytes included, is stored and read back unchanged.
    """
    record_file = index_record(name)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(index.vectors, dtype=np.float32), allow_pickle=False)
    sha256 = hashlib.sha256(buffer.getvalue()).hexdigest()
    vectors_file = record_file.with_name(f"{name}.{sha256[:16]}.npy")
    record = {"profile": profile, "backbone": index.identity, "vectors": vectors_file.name,
              "vectors_sha256": sha256, "paths": [os.fsdecode(p) for p in index.paths]}
    if index.skipped:
        record["skipped_images"] = {"count": len(index.skipped), "files": dict(index.skipped)}
    text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=True) + "\n"  # made before anything is written
    staged = not vectors_file.exists()
    atomic_write_bytes(vectors_file, buffer.getvalue())
    try:
        atomic_write_bytes(record_file, text.encode("ascii"))
    except BaseException:
        if staged:  # vectors no record names
            vectors_file.unlink(missing_ok=True)
        raise
    older = re.compile(rf"{re.escape(name)}(\.[0-9a-f]{{16}})?\.npy")  # this index's earlier vectors
    for old in record_file.parent.iterdir():
        if old != vectors_file and older.fullmatch(old.name):
            old.unlink(missing_ok=True)
    return record_file


RECORD_FIELDS = ("profile", "backbone", "vectors", "vectors_sha256", "paths")


def load_index(name: str, backbone, local: bool = False) -> ImageIndex:
    """The stored index ``name``; an error when it is missing, unreadable, built by another backbone, its
    vectors do not match the SHA-256 in its record, or indexed files are gone."""
    record_file = index_record(name)
    if not record_file.is_file():
        raise SearchError(f"no index {name!r} in {record_file.parent}; run: python -m osgha_lite search index FOLDER")
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SearchError(f"{record_file}: cannot be read ({error}); index again") from None
    missing = [f for f in RECORD_FIELDS if not isinstance(record, dict) or f not in record]
    if missing:
        raise SearchError(f"{record_file}: no field(s) {', '.join(missing)} (written by an earlier version, or "
                          f"damaged); index again")
    if record["backbone"] != backbone.identity:
        raise SearchError(f"index {name!r} was built with {record['backbone']}, not {backbone.identity}; index again")
    paths = [Path(p) for p in record["paths"]]
    gone = [p for p in paths if not p.is_file()]
    if gone:
        raise SearchError(f"index {name!r}: {len(gone)} indexed images are gone (e.g. {display_path(gone[0])}); "
                          f"index again")
    if local:  # HGAN: regions from the feature cache (keyed by the files' bytes)
        return index_images(backbone, paths, local=True, progress=False)
    vectors_file = record_file.parent / Path(record["vectors"]).name
    try:
        vectors = load_verified_npy(vectors_file, record["vectors_sha256"])
    except IntegrityError as error:
        raise SearchError(f"index {name!r}: {error}; index again") from None
    if vectors.ndim != 2 or vectors.shape[0] != len(paths):
        raise SearchError(f"index {name!r}: {vectors_file.name} holds {vectors.shape} vectors for {len(paths)} "
                          f"paths; index again")
    return ImageIndex(paths, vectors, record["backbone"])


def _caption_index(args, profile: dict, backbone, local: bool) -> CaptionIndex:
    """The caption set of ``query --image``: a file (one caption per line) or a dataset split's captions,
    the latter from the split's own cached features."""
    if args.captions_file:
        path = Path(args.captions_file)
        if not path.is_file():
            raise SearchError(f"caption file {path} does not exist")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise SearchError(f"{path}: no caption (one caption per line)")
        return index_captions(backbone, list(dict.fromkeys(texts)), local=local, progress=False)
    from osgha_lite.data import DataError, load_dataset

    dataset = args.captions or profile["dataset"]
    try:
        data = load_dataset(dataset, args.captions_split, profile=profile, **profile.get("data", {}))
    except DataError as error:
        raise SearchError(f"caption set {dataset}/{args.captions_split}: {error}") from None
    return dataset_indexes(backbone, data, local=local, progress=False)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m osgha_lite search", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  python -m osgha_lite search index photos/                      # embed every image once (cached)
  python -m osgha_lite search query "a dog runs on the beach" --k 5
  python -m osgha_lite search query --image photos/dog.jpg --k 5   # top captions of Flickr8k test""")
    parser.add_argument("--profile", default="lite", help="profile name or JSON file (default: lite)")
    parser.add_argument("--name", default="default", help="name of the stored index (default: default)")
    add_debug_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="embed every image of a folder (cached by file contents)")
    index.add_argument("folder")
    index.add_argument("--strict", action="store_true",
                       help="an image that cannot be decoded is an error (exit code 2), not a skipped image")
    query = commands.add_parser("query", help="text -> top images of the index, or --image -> top captions")
    query.add_argument("text", nargs="?", help="a caption to search the indexed images with")
    query.add_argument("--image", help="an image file to search the caption set with")
    query.add_argument("--k", type=int, default=5)
    query.add_argument("--method", default="frozen-backbone", help="a method of the profile (default: frozen-backbone)")
    query.add_argument("--captions", help="dataset whose captions --image searches (default: the profile's dataset)")
    query.add_argument("--captions-split", default="test")
    query.add_argument("--captions-file", help="a text file with one caption per line, instead of a dataset")
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: _run(args), debug=args.debug)


def _index(args, profile: dict) -> int:
    """``search index``: embed the folder's images, skipping (or, with ``--strict``, refusing) undecodable ones."""
    from osgha_lite.backbones import build_backbone

    folder = display_path(Path(args.folder).expanduser().resolve())
    paths = list_images(args.folder)
    index_record(args.name)  # a bad name is an error before any work
    backbone = build_backbone(profile, progress=False)
    started = time.perf_counter()
    built = index_images(backbone, paths, skip_undecodable=True)
    seconds = time.perf_counter() - started
    for path, problem in built.skipped.items():
        print(f"warning: skipped image {display_path(path)}: cannot decode it ({problem})", file=sys.stderr)
    if built.skipped and args.strict:
        raise SearchError(f"{len(built.skipped)} of the {len(paths)} images of {folder} cannot be decoded "
                          f"(listed above), and --strict makes that an error; the index was not written")
    save_index(built, args.name, profile["name"])
    skipped = (f"; skipped {len(built.skipped)} that cannot be decoded (named above; --strict makes them an error)"
               if built.skipped else "")
    print(f"indexed {len(built.paths)} images of {folder} in {seconds:.1f} s "
          f"({1000 * seconds / len(paths):.1f} s per 1,000 images; cached files are not encoded again) "
          f"as index {args.name!r}{skipped}")
    return 0


def _run(args) -> int:
    from osgha_lite.backbones import build_backbone
    from osgha_lite.profiles import load_profile
    from osgha_lite.runtime import seed_everything

    seed_everything(0)
    profile = load_profile(args.profile)
    if args.command == "index":
        return _index(args, profile)
    if bool(args.text) == bool(args.image):
        raise SearchError("give either a text query or --image PATH (not both)")
    if args.method not in profile["methods"]:
        raise SearchError(f"unknown method {args.method!r} for profile {profile['name']!r}; known: "
                          f"{', '.join(profile['methods'])}")
    backbone = build_backbone(profile, progress=False)
    space = load_space(profile, args.method, backbone, progress=False)
    loading = time.perf_counter()
    space.encode_query("a photo", "text")  # loads the query encoder, so the timing below is the query's own
    if args.image:
        space.encode_query(args.image, "image")
    loading = time.perf_counter() - loading
    if args.text:
        searcher = Searcher(space, images=load_index(args.name, backbone, local=space.needs_local))
        started = time.perf_counter()
        table = searcher.text_to_images(args.text, args.k)
    else:
        searcher = Searcher(space, captions=_caption_index(args, profile, backbone, space.needs_local))
        started = time.perf_counter()
        table = searcher.image_to_captions(args.image, args.k)
    seconds = time.perf_counter() - started
    if "path" in table:
        table = table.assign(path=table.path.map(display_path))
    with pd.option_context("display.max_colwidth", 120):
        print(table.drop(columns="index").round(3).to_string(index=False))
    print(f"({space.name}: query answered in {1000 * seconds:.0f} ms; loading the query encoder took {loading:.1f} s)")
    return 0


if __name__ == "__main__":
    from osgha_lite.runtime import restart_with_portable_kernels

    restart_with_portable_kernels("osgha_lite.apps.search")  # the same features (and checkpoint keys) as under make
    raise SystemExit(main())

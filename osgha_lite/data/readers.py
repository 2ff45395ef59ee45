"""Dataset readers: one function per on-disk layout, each returning a :class:`CaptionDataset`.

A reader is called as ``reader(folder, split, name=..., skip_missing=...,
skip_bad_rows=..., **options)``, where ``folder`` is the dataset's folder and
``options`` come from the dataset's declaration (see
:mod:`osgha_lite.data.declarations`); relative paths in the options are relative
to ``folder``.

==============  ===============================================================
reader          layout
==============  ===============================================================
``flickr8k``    ``captions.txt`` (CSV ``image,caption``), ``images/``,
                ``Flickr_8k.{train,dev,test}Images.txt`` split lists
``karpathy``    one Karpathy split file (option ``json_name``), ``images/``
``coco``        COCO caption annotations of any year or subset, one
                annotation file and image folder per split (option ``splits``)
``captions``    a CSV or JSON Lines file of ``image,caption[,split]`` rows
                (option ``captions``) next to an image folder (option ``images``)
==============  ===============================================================

What a skip option may skip, and what it never hides:

* ``skip_missing`` skips images with no file or no caption;
  ``skip_bad_rows`` skips caption rows with an empty or missing field, an
  annotation naming an unknown image, repeated ``(image, caption)`` rows
  and captions longer than the option ``max_caption_chars`` (default
  10,000 characters; without the skip such a caption is an error naming
  its file and line). Each skip is counted, its first examples kept, and a
  :class:`~osgha_lite.data.captionset.SkippedDataWarning` says so.
* A file that is not UTF-8, holds a NUL byte, has a quote that does not
  close, a JSON value of the wrong type, a repeated image (file name or id),
  or a path that leaves its folder is always an error.

Repeated ``(image, caption)`` rows are an error unless skipped, or kept
with the option ``"duplicate_captions": "keep"`` (the built-in benchmark
declarations keep them as published; they are counted in ``kept``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from osgha_lite.data.captionset import SPLITS, CaptionDataset, DataError, SkippedDataWarning
from osgha_lite.data.textfiles import csv_records, expect, inside, jsonl_records, lines, read_json, read_text

Reader = Callable[..., CaptionDataset]
READERS: dict[str, Reader] = {}
EXAMPLES_SHOWN = 3
DUPLICATE_POLICIES = ("error", "keep")
MAX_CAPTION_CHARS = 10_000
"""Default of every reader's option ``max_caption_chars``: a longer caption is a bad row."""


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Decorator adding a reader function to :data:`READERS`."""

    def wrap(function: Reader) -> Reader:
        READERS[name] = function
        return function

    return wrap


class Report:
    """What a reader skipped or kept on purpose: counts per reason and the first few examples."""

    def __init__(self) -> None:
        self.skipped: Counter = Counter()
        self.examples: dict[str, list[str]] = {}
        self.kept: Counter = Counter()
        self.kept_rows: Counter = Counter()  # (reason, image id) -> rows kept on purpose

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_SHOWN:
            shown.append(example)

    def warn(self, name: str, split: str) -> None:
        """One warning line per skip reason with the count and the first examples. Rows kept on purpose
        (a declaration's ``"duplicate_captions": "keep"``, which says so in its description) are counted
        in ``kept`` and ``summary(details=True)``, not warned about: there is nothing for a reader to do."""
        for reason, count in self.skipped.items():
            warnings.warn(f"{name}/{split}: skipped {count} ({reason}), e.g. " + "; ".join(self.examples[reason]),
                          SkippedDataWarning, stacklevel=4)


class CaptionTable:
    """Captions per image as read, with repeated ``(image, caption)`` rows handled by policy."""

    def __init__(self, report: Report, skip_bad_rows: bool, duplicates: str, source: str,
                 max_caption_chars: int = MAX_CAPTION_CHARS) -> None:
        if duplicates not in DUPLICATE_POLICIES:
            raise DataError(f"{source}: option 'duplicate_captions' must be one of {', '.join(DUPLICATE_POLICIES)}, "
                            f"not {duplicates!r}")
        if isinstance(max_caption_chars, bool) or not isinstance(max_caption_chars, int) or max_caption_chars < 1:
            raise DataError(f"{source}: option 'max_caption_chars' must be a positive integer, "
                            f"not {max_caption_chars!r}")
        self.captions: dict[str, list[str]] = {}
        self.first: dict[tuple[str, str], str] = {}
        self.report, self.skip_bad_rows, self.duplicates = report, skip_bad_rows, duplicates
        self.max_caption_chars = max_caption_chars

    def bad_row(self, where: str, problem: str) -> None:
        """A row that does not parse: skipped and counted with skip_bad_rows, else an error."""
        if self.skip_bad_rows:
            self.report.skip("bad_caption_row", where)
            return
        raise DataError(f"{where}: {problem}; fix the row or load with skip_bad_rows=True")

    def add(self, image_id: str, caption: str, where: str) -> None:
        caption = caption.strip()
        if len(caption) > self.max_caption_chars:
            if self.skip_bad_rows:
                self.report.skip("caption_too_long", f"{where} ({len(caption):,} characters)")
                return
            raise DataError(f"{where}: the caption is {len(caption):,} characters long, more than "
                            f"max_caption_chars={self.max_caption_chars:,}; shorten it or load with "
                            "skip_bad_rows=True (a dataset declaration may raise the option 'max_caption_chars')")
        key = (image_id, caption)
        if key in self.first:
            if self.duplicates == "keep":
                self.report.kept_rows["duplicate_caption_row", image_id] += 1
            elif self.skip_bad_rows:
                self.report.skip("duplicate_caption_row", f"{where} repeats {self.first[key]}")
                return
            else:
                raise DataError(f"{where}: image {image_id!r} with caption {caption!r} repeats {self.first[key]}; "
                                "remove the repeated row or load with skip_bad_rows=True")
        else:
            self.first[key] = where
        self.captions.setdefault(image_id, []).append(caption)


def assemble(name: str, split: str, ordered: dict[str, str], paths: dict[str, Path],
             captions: dict[str, list[str]], report: Report, skip_missing: bool) -> CaptionDataset:
    """Join images and captions in the order of ``ordered`` (image id -> where it is listed); check
    that each image file exists and has at least one caption."""
    image_ids, image_paths, texts, index = [], [], [], []
    for image_id, where in ordered.items():
        path = paths[image_id]
        problem = None
        if not path.is_file():
            problem = ("missing_image", f"{where} names image {image_id!r} but {path} does not exist")
        elif not captions.get(image_id):
            problem = ("no_caption", f"{where} names image {image_id!r} which has no caption")
        if problem:
            if skip_missing:
                report.skip(problem[0], problem[1])
                continue
            raise DataError(problem[1] + "; fix the file or load with skip_missing=True to skip such images")
        image_ids.append(image_id)
        image_paths.append(path)
        texts += captions[image_id]
        index += [len(image_ids) - 1] * len(captions[image_id])
    if not image_ids:
        raise DataError(f"{name}: split {split!r} has no usable image (skipped: {dict(report.skipped)})")
    chosen = set(image_ids)
    for (reason, image_id), count in report.kept_rows.items():
        if image_id in chosen:
            report.kept[reason] += count
    report.warn(name, split)
    return CaptionDataset(name, split, image_ids, image_paths, texts, np.asarray(index, dtype=np.int64),
                          dict(report.skipped), skip_examples={k: list(v) for k, v in report.examples.items()},
                          kept=dict(report.kept))


def _option(value, option: str, name: str, kind: type = str):
    """A reader option from a declaration, checked for its type."""
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        wanted = "a non-empty string" if kind is str else "an object"
        raise DataError(f"{name}: option {option!r} of the dataset declaration must be {wanted}, not {value!r}")
    return value


def _image_path(folder: Path, value: str, where: str) -> Path:
    return folder.joinpath(*inside(value, where).parts)


# --------------------------------------------------------------------------- flickr8k

@register_reader("flickr8k")
def read_flickr8k(folder: Path, split: str, name: str = "flickr8k", skip_missing: bool = False,
                  skip_bad_rows: bool = False, duplicate_captions: str = "error",
                  max_caption_chars: int = MAX_CAPTION_CHARS) -> CaptionDataset:
    """Kaggle layout: ``captions.txt`` (CSV, header ``image,caption``), ``images/``
    and the official ``Flickr_8k.{train,dev,test}Images.txt`` split lists."""
    captions_file = folder / "captions.txt"
    list_file = folder / f"Flickr_8k.{split}Images.txt"
    for required in (captions_file, list_file, folder / "images"):
        if not required.exists():
            raise DataError(f"{required} is missing; expected the Kaggle Flickr8k layout (see data/README.md)")
    report = Report()
    table = CaptionTable(report, skip_bad_rows, duplicate_captions, str(captions_file), max_caption_chars)
    records = csv_records(captions_file)
    number, header = next(records, (1, None))
    if header is None or [h.strip().lower() for h in header] != ["image", "caption"]:
        raise DataError(f"{captions_file}, line {number}: expected the header 'image,caption', found {header!r}")
    for number, row in records:
        where = f"{captions_file}, line {number}"
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            table.bad_row(where, f"expected 'image,caption' with both fields non-empty, found {row!r}")
            continue
        image_id = str(inside(row[0].strip(), where))
        table.add(image_id, row[1], where)
    ordered = split_list(list_file)
    paths = {image_id: _image_path(folder / "images", image_id, where) for image_id, where in ordered.items()}
    return assemble(name, split, ordered, paths, table.captions, report, skip_missing)


def split_list(list_file: Path) -> dict[str, str]:
    """Image names of a split list, one per line, in order (name -> ``"<file>, line <n>"``).
    A name listed twice, or one that leaves the image folder, is an error."""
    ordered: dict[str, str] = {}
    for number, line in lines(read_text(list_file)):
        where = f"{list_file}, line {number}"
        image_id = str(inside(line.strip(), where))
        if image_id in ordered:
            raise DataError(f"{where}: image {image_id!r} is listed again (first at {ordered[image_id]}); "
                            "remove the repeated line")
        ordered[image_id] = where
    return ordered


# --------------------------------------------------------------------------- karpathy

_KARPATHY_SPLITS = {"train": ("train", "restval"), "dev": ("val",), "test": ("test",)}
_KARPATHY_NAMES = ("train", "restval", "val", "test")


@register_reader("karpathy")
def read_karpathy(folder: Path, split: str, name: str, json_name: str, skip_missing: bool = False,
                  skip_bad_rows: bool = False, duplicate_captions: str = "error",
                  max_caption_chars: int = MAX_CAPTION_CHARS) -> CaptionDataset:
    """Karpathy split files (``dataset_flickr30k.json``, ``dataset_coco.json``):
    ``{"images": [{"filename", "filepath"?, "cocoid"?, "split", "sentences": [{"raw"}]}]}``.
    Images are read from ``images/<filepath>/<filename>``; an image's id is its ``cocoid`` if
    it has one, else its file name. ``train`` is ``train`` + ``restval``, ``dev`` is ``val``."""
    json_file = folder / _option(json_name, "json_name", name)
    if not json_file.is_file():
        raise DataError(f"{json_file} is missing; see data/README.md for the Karpathy split files")
    content = read_json(json_file)
    expect(content, dict, json_file, "the top level")
    entries = expect(content.get("images"), list, json_file, "'images'")
    report = Report()
    table = CaptionTable(report, skip_bad_rows, duplicate_captions, str(json_file), max_caption_chars)
    ordered, paths, seen_ids, seen_paths = {}, {}, {}, {}
    for position, entry in enumerate(entries):
        at = f"images[{position}]"
        where = f"{json_file}, {at}"
        expect(entry, dict, json_file, at)
        filename = expect(entry.get("filename"), str, json_file, f"{at}.filename")
        filepath = expect(entry.get("filepath", ""), str, json_file, f"{at}.filepath")
        entry_split = expect(entry.get("split"), str, json_file, f"{at}.split")
        if entry_split not in _KARPATHY_NAMES:
            raise DataError(f"{json_file}: {at}.split is {entry_split!r}; expected one of {', '.join(_KARPATHY_NAMES)}")
        relative = "/".join(part for part in (filepath, filename) if part)
        image_id = str(expect(entry["cocoid"], (int, str), json_file, f"{at}.cocoid")) if "cocoid" in entry \
            else filename
        for seen, key, what in ((seen_paths, relative, "image file"), (seen_ids, image_id, "image id")):
            if key in seen:
                raise DataError(f"{where}: repeats the {what} {key!r} of {seen[key]}; each image may appear once, "
                                "remove or merge the repeated entry")
            seen[key] = at
        image_path = _image_path(folder / "images", relative, where)
        sentences = expect(entry.get("sentences", []), list, json_file, f"{at}.sentences")
        for k, sentence in enumerate(sentences):  # every entry is checked, not only this split's
            expect(sentence, dict, json_file, f"{at}.sentences[{k}]")
            expect(sentence.get("raw"), str, json_file, f"{at}.sentences[{k}].raw")
        if entry_split not in _KARPATHY_SPLITS[split]:
            continue
        for k, sentence in enumerate(sentences):
            raw = sentence["raw"]
            if not raw.strip():
                table.bad_row(f"{where}.sentences[{k}]", "empty caption text")
                continue
            table.add(image_id, raw, f"{where}.sentences[{k}]")
        ordered[image_id] = where
        paths[image_id] = image_path
    return assemble(name, split, ordered, paths, table.captions, report, skip_missing)


# --------------------------------------------------------------------------- coco

@register_reader("coco")
def read_coco(folder: Path, split: str, name: str, splits: dict, skip_missing: bool = False,
              skip_bad_rows: bool = False, duplicate_captions: str = "error", note: str = "",
              max_caption_chars: int = MAX_CAPTION_CHARS) -> CaptionDataset:
    """COCO caption annotations of any year or subset: ``splits`` maps each split to
    ``{"annotations": <json file>, "images": <image folder>}`` (relative to ``folder``).
    An annotation file has ``images`` (``id``, ``file_name``) and ``annotations``
    (``image_id``, ``caption``); ``file_name`` is relative to the split's image folder.
    ``note`` is added to the error for a split that is not declared."""
    if split not in _option(splits, "splits", name, dict):
        raise DataError(f"{name} declares the splits {', '.join(splits)}, not {split!r}" + (f"; {note}" if note else ""))
    files = splits[split]
    if not isinstance(files, dict) or not all(isinstance(files.get(k), str) for k in ("annotations", "images")):
        raise DataError(f"{name}: option splits.{split} must be an object with the strings 'annotations' and "
                        f"'images', found {files!r}")
    json_file, image_folder = folder / files["annotations"], folder / files["images"]
    if not json_file.is_file():
        raise DataError(f"{json_file} is missing (annotation file of {name}/{split}); check "
                        f"splits.{split}.annotations in the dataset declaration or see data/README.md")
    content = read_json(json_file)
    expect(content, dict, json_file, "the top level")
    report = Report()
    table = CaptionTable(report, skip_bad_rows, duplicate_captions, str(json_file), max_caption_chars)
    ordered, paths, seen_names = {}, {}, {}
    for position, image in enumerate(expect(content.get("images"), list, json_file, "'images'")):
        at = f"images[{position}]"
        expect(image, dict, json_file, at)
        image_id = str(expect(image.get("id"), (int, str), json_file, f"{at}.id"))
        file_name = expect(image.get("file_name"), str, json_file, f"{at}.file_name")
        for seen, key, what in ((ordered, image_id, "id"), (seen_names, file_name, "file_name")):
            if key in seen:
                raise DataError(f"{json_file}, {at}: repeats the {what} {key!r} of {seen[key].rpartition(', ')[2]}; "
                                "each image may appear once, remove or merge the repeated entry")
        ordered[image_id] = seen_names[file_name] = f"{json_file}, {at}"
        paths[image_id] = _image_path(image_folder, file_name, f"{json_file}, {at}.file_name")
    for position, note_ in enumerate(expect(content.get("annotations"), list, json_file, "'annotations'")):
        at = f"annotations[{position}]"
        expect(note_, dict, json_file, at)
        image_id = str(expect(note_.get("image_id"), (int, str), json_file, f"{at}.image_id"))
        caption = expect(note_.get("caption"), str, json_file, f"{at}.caption")
        if image_id not in paths or not caption.strip():
            problem = "empty caption" if image_id in paths else f"image_id {image_id} is not listed in 'images'"
            table.bad_row(f"{json_file}, {at}", problem)
            continue
        table.add(image_id, caption, f"{json_file}, {at}")
    return assemble(name, split, ordered, paths, table.captions, report, skip_missing)


# --------------------------------------------------------------------------- captions (CSV / JSON Lines)

@register_reader("captions")
def read_captions(folder: Path, split: str, name: str, captions: str, images: str, split_of_rows: str | None = None,
                  skip_missing: bool = False, skip_bad_rows: bool = False,
                  duplicate_captions: str = "error", max_caption_chars: int = MAX_CAPTION_CHARS) -> CaptionDataset:
    """The simplest layout: a CSV (header ``image,caption[,split]``) or JSON Lines file
    (``{"image", "caption", "split"?}`` per line) of caption rows, and an image folder.

    ``image`` is a path relative to ``images`` (sub-folders allowed, never leaving it);
    an image may have any number of rows (captions). Without a ``split`` column every
    row belongs to the split named by the option ``split_of_rows``. Images keep the order
    in which they first appear; an image may not appear in two splits.
    """
    captions_file = folder / _option(captions, "captions", name)
    image_folder = folder / _option(images, "images", name)
    for required, what in ((captions_file, "captions file"), (image_folder, "image folder")):
        if not required.exists():
            raise DataError(f"{required} is missing ({what} of {name}); check the dataset declaration")
    report = Report()
    table = CaptionTable(report, skip_bad_rows, duplicate_captions, str(captions_file), max_caption_chars)
    rows = list(_caption_rows(captions_file, table))
    if split_of_rows is not None and split_of_rows not in SPLITS:
        raise DataError(f"{name}: option split_of_rows must be one of {', '.join(SPLITS)}, not {split_of_rows!r}")
    first_split: dict[str, tuple[str, str]] = {}
    ordered, paths = {}, {}
    for where, image, caption, row_split in rows:
        row_split = row_split if row_split is not None else split_of_rows
        if row_split is None:
            raise DataError(f"{where}: the row has no split; add a 'split' column (train, dev or test) or set the "
                            "declaration option 'split_of_rows'")
        if row_split not in SPLITS:
            raise DataError(f"{where}: split {row_split!r} is not one of {', '.join(SPLITS)}; fix the row")
        image_id = str(inside(image, where))
        other = first_split.setdefault(image_id, (row_split, where))
        if other[0] != row_split:
            raise DataError(f"{where}: image {image_id!r} is in split {row_split!r} here but in {other[0]!r} at "
                            f"{other[1]}; an image belongs to one split")
        if row_split != split:
            continue
        table.add(image_id, caption, where)
        if image_id not in ordered:
            ordered[image_id] = where
            paths[image_id] = image_folder.joinpath(*inside(image, where).parts)
    if not ordered:
        found = sorted({s for s, _ in first_split.values()})
        raise DataError(f"{captions_file}: no row of split {split!r} (the file has {', '.join(found) or 'no rows'})")
    return assemble(name, split, ordered, paths, table.captions, report, skip_missing)


def _caption_rows(path: Path, table: CaptionTable):
    """``(where, image, caption, split or None)`` of every usable row; bad rows go to ``table.bad_row``."""
    if path.suffix.lower() == ".csv":
        records = csv_records(path)
        number, header = next(records, (1, None))
        names = [h.strip().lower() for h in header] if header else []
        if "image" not in names or "caption" not in names or len(set(names)) != len(names):
            raise DataError(f"{path}, line {number}: expected a header with the columns 'image' and 'caption' "
                            f"(and optionally 'split'), found {header!r}")
        column = {key: names.index(key) for key in ("image", "caption", "split") if key in names}
        for number, row in records:
            where = f"{path}, line {number}"
            if len(row) != len(names):
                table.bad_row(where, f"expected {len(names)} fields ({','.join(names)}), found {len(row)}: {row!r}")
                continue
            image, caption = row[column["image"]].strip(), row[column["caption"]].strip()
            if not image or not caption:
                table.bad_row(where, f"'image' and 'caption' must be non-empty, found {row!r}")
                continue
            yield where, image, caption, row[column["split"]].strip() if "split" in column else None
    elif path.suffix.lower() == ".jsonl":
        for number, value in jsonl_records(path):
            at = f"line {number}"
            expect(value, dict, path, at)
            image = expect(value.get("image"), str, path, f"{at}: 'image'")
            caption = expect(value.get("caption"), str, path, f"{at}: 'caption'")
            row_split = expect(value["split"], str, path, f"{at}: 'split'") if "split" in value else None
            if not image.strip() or not caption.strip():
                table.bad_row(f"{path}, {at}", "'image' and 'caption' must be non-empty")
                continue
            yield f"{path}, {at}", image.strip(), caption.strip(), row_split
    else:
        raise DataError(f"{path}: a captions file ends in .csv or .jsonl, not {path.suffix!r}")


# --------------------------------------------------------------------------- image check

def verify_images(dataset: CaptionDataset, skip_missing: bool) -> CaptionDataset:
    """Decode every image; undecodable ones raise, or are skipped, counted and reported."""
    from PIL import Image

    report = Report()
    bad = set()
    for position, path in enumerate(dataset.image_paths):
        try:
            with Image.open(path) as image:
                image.convert("RGB")
        except Exception as error:  # PIL raises several types for broken files
            if not skip_missing:
                raise DataError(f"{path}: cannot decode image ({error}); remove it or load with skip_missing=True") from None
            report.skip("undecodable_image", f"{path} ({error})")
            bad.add(position)
    if not bad:
        return dataset
    report.warn(dataset.name, dataset.split)
    keep = [i for i in range(dataset.n_images) if i not in bad]
    subset = dataset.select_images(np.asarray(keep), dataset.split)
    return CaptionDataset(
        subset.name, subset.split, subset.image_ids, subset.image_paths, subset.captions, subset.text_to_image,
        dict(Counter(dataset.skipped) + report.skipped), skip_examples={**dataset.skip_examples, **report.examples},
        kept=dict(dataset.kept),
    )

"""Datasets declared in data: declaration files, a profile's "datasets", the coco and captions readers, the example."""

from __future__ import annotations

import json
import os
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

from osgha_lite.data import DATASETS, PROJECT_ROOT, DataError, load_dataset, load_profile_split

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field")


def _photos(tiny_root, folder, names=PHOTOS, sub=""):
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(tiny_root / "flickr8k" / "images" / f"{name}.jpg", folder / sub / f"{name}.jpg")


def _declare(path, reader, options, folder=".", **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"reader": reader, "folder": folder, "options": options, **extra}))
    return path


# --------------------------------------------------------------------------- built-in declarations
def test_builtin_declarations_are_json_files_with_known_readers():
    files = sorted(p.stem for p in (PROJECT_ROOT / "osgha_lite" / "data" / "datasets").glob("*.json"))
    assert files == sorted(DATASETS)
    assert {"flickr8k", "flickr30k", "mscoco", "mscoco-2014", "mscoco-2017"} <= set(DATASETS)
    assert DATASETS["mscoco-2017"].options["splits"]["dev"] == {"annotations": "annotations/captions_val2017.json",
                                                                  "images": "images/val2017"}
    assert all(spec.folder.startswith("${data_root}/") for spec in DATASETS.values())


# --------------------------------------------------------------------------- coco, 2017 names
def _coco2017(tiny_root, tmp_path):
    folder = tmp_path / "mine" / "coco2017"
    _photos(tiny_root, folder / "val2017", ("coffee", "rocket", "chelsea"))
    (folder / "annotations").mkdir()
    content = {"images": [{"id": 139, "file_name": "coffee.jpg"}, {"id": 285, "file_name": "rocket.jpg"},
                          {"id": 632, "file_name": "chelsea.jpg"}],
               "annotations": [{"id": 1, "image_id": 285, "caption": "a rocket on its pad"},
                               {"id": 2, "image_id": 139, "caption": "a cup of coffee"},
                               {"id": 3, "image_id": 285, "caption": "a launch tower"},
                               {"id": 4, "image_id": 632, "caption": "a cat"}]}
    (folder / "annotations" / "captions_val2017.json").write_text(json.dumps(content))
    options = {"splits": {"test": {"annotations": "annotations/captions_val2017.json", "images": "val2017"}}}
    return folder, options


def test_coco_2017_layout_declared_in_a_file(tiny_root, tmp_path):
    folder, options = _coco2017(tiny_root, tmp_path)
    spec = _declare(folder / "coco2017.json", "coco", options)  # folder "." = the declaration's folder
    test = load_dataset(str(spec), "test")
    assert test.name == "coco2017" and test.split == "test"
    assert test.image_ids == ["139", "285", "632"]
    assert test.captions == ["a cup of coffee", "a rocket on its pad", "a launch tower", "a cat"]
    assert test.text_to_image.tolist() == [0, 1, 1, 2]
    assert test.image_paths[1] == folder.resolve() / "val2017" / "rocket.jpg"
    with pytest.raises(DataError, match=r"coco2017 declares the splits test, not 'train'"):
        load_dataset(str(spec), "train")


def test_coco_declared_in_a_profile_with_data_root(tiny_root, tmp_path, monkeypatch):
    _coco2017(tiny_root, tmp_path)
    monkeypatch.setenv("OSGHA_DATA_ROOT", str(tmp_path / "mine"))
    declaration = {"reader": "coco", "folder": "coco2017", "options": {"splits": {
        "test": {"annotations": "${data_root}/coco2017/annotations/captions_val2017.json", "images": "val2017"}}}}
    profile = {"name": "own", "dataset": "my-coco", "datasets": {"my-coco": declaration}}
    test = load_profile_split(profile, "test")
    assert test.name == "my-coco" and test.n_images == 3 and test.n_texts == 4
    with pytest.raises(DataError, match="unknown dataset 'my-coco'"):
        load_dataset("my-coco", "test")  # only the profile declares it


def test_coco_missing_annotation_file(tiny_root, tmp_path):
    folder, options = _coco2017(tiny_root, tmp_path)
    options["splits"]["test"]["annotations"] = "annotations/captions_test2017.json"
    spec = _declare(folder / "coco2017.json", "coco", options)
    with pytest.raises(DataError, match=r"captions_test2017\.json is missing \(annotation file of coco2017/test\); "
                                        r"check splits\.test\.annotations in the dataset declaration"):
        load_dataset(str(spec), "test")


def test_coco_annotation_of_an_unknown_image_is_a_bad_row(tiny_root, tmp_path):
    folder, options = _coco2017(tiny_root, tmp_path)
    json_file = folder / "annotations" / "captions_val2017.json"
    content = json.loads(json_file.read_text())
    content["annotations"].append({"id": 5, "image_id": 999, "caption": "nothing"})
    json_file.write_text(json.dumps(content))
    spec = _declare(folder / "coco2017.json", "coco", options)
    with pytest.raises(DataError, match=r"annotations\[4\]: image_id 999 is not listed in 'images'; fix the row or "
                                        "load with skip_bad_rows=True"):
        load_dataset(str(spec), "test")
    assert load_dataset(str(spec), "test", skip_bad_rows=True).skipped == {"bad_caption_row": 1}


# --------------------------------------------------------------------------- captions reader: CSV and JSONL
ROWS = [("people/astronaut.jpg", "an astronaut with a flag", "train"),
        ("coffee.jpg", "a cup of coffee", "train"),
        ("people/astronaut.jpg", "a woman in a suit", "train"),
        ("people/astronaut.jpg", "a portrait, smiling", "train"),
        ("animals/cats/chelsea.jpg", "a cat", "test"),
        ("coffee.jpg", 'a mug with "latte" art', "train")]


def _captions_dataset(tiny_root, tmp_path, kind, rows=ROWS):
    folder = tmp_path / "own"
    _photos(tiny_root, folder / "photos", ("coffee",))
    _photos(tiny_root, folder / "photos", ("astronaut",), "people")
    _photos(tiny_root, folder / "photos", ("chelsea",), "animals/cats")
    if kind == "csv":
        import csv
        import io

        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([("image", "caption", "split"), *rows])
        (folder / "captions.csv").write_text(buffer.getvalue())
    else:
        (folder / "captions.jsonl").write_text(
            "".join(json.dumps(dict(zip(("image", "caption", "split"), row))) + "\n" for row in rows))
    return _declare(folder / "dataset.json", "captions", {"captions": f"captions.{kind}", "images": "photos"})


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_captions_layout_reads_rows_subfolders_and_splits(tiny_root, tmp_path, kind):
    spec = _captions_dataset(tiny_root, tmp_path, kind)
    train = load_dataset(str(spec), "train")
    assert train.name == "own"  # a dataset.json takes its folder's name
    assert train.image_ids == ["people/astronaut.jpg", "coffee.jpg"]  # order of first appearance
    assert train.captions == ["an astronaut with a flag", "a woman in a suit", "a portrait, smiling",
                              "a cup of coffee", 'a mug with "latte" art']
    assert train.text_to_image.tolist() == [0, 0, 0, 1, 1]
    assert train.captions_per_image().tolist() == [3, 2]
    assert all(p.is_file() for p in train.image_paths)
    test = load_dataset(str(spec), "test")
    assert test.image_ids == ["animals/cats/chelsea.jpg"] and test.captions == ["a cat"]
    with pytest.raises(DataError, match=r"no row of split 'dev' \(the file has test, train\)"):
        load_dataset(str(spec), "dev")


def test_captions_without_split_column_use_split_of_rows(tiny_root, tmp_path):
    folder = tmp_path / "plain"
    _photos(tiny_root, folder / "images", ("rocket", "coffee"))
    (folder / "captions.csv").write_text("image,caption\nrocket.jpg,a rocket\ncoffee.jpg,a cup\nrocket.jpg,a pad\n")
    spec = _declare(folder / "plain.json", "captions", {"captions": "captions.csv", "images": "images"})
    with pytest.raises(DataError, match=r"captions\.csv, line 2: the row has no split; add a 'split' column"):
        load_dataset(str(spec), "test")
    spec = _declare(folder / "plain.json", "captions", {"captions": "captions.csv", "images": "images",
                                                        "split_of_rows": "test"})
    assert load_dataset(str(spec), "test").captions_per_image().tolist() == [2, 1]


@pytest.mark.parametrize("kind, bad, message", [
    ("csv", 'coffee.jpg,"a cup" x,train', r"captions\.csv, line 3, column 19: text after the closing quote"),
    ("csv", "coffee.jpg,,train", r"captions\.csv, line 3: 'image' and 'caption' must be non-empty"),
    ("csv", "coffee.jpg,a cup", r"captions\.csv, line 3: expected 3 fields \(image,caption,split\), found 2"),
    ("jsonl", '{"image": "coffee.jpg", "caption": " ", "split": "train"}',
     r"captions\.jsonl, line 2: 'image' and 'caption' must be non-empty"),
    ("jsonl", '{"image": "coffee.jpg", "caption": ["a", "b"], "split": "train"}',
     r"captions\.jsonl: line 2: 'caption' must be a string, found an array; fix the file"),
    ("jsonl", '{"image": "coffee.jpg", "caption": "a cup",', r"captions\.jsonl, line 2, column 44: not valid JSON"),
    ("csv", "coffee.jpg,a cup,validation", r"captions\.csv, line 3: split 'validation' is not one of train, dev, test"),
])
def test_captions_bad_row(tiny_root, tmp_path, kind, bad, message):
    spec = _captions_dataset(tiny_root, tmp_path, kind, ROWS[:1])
    data_file = spec.parent / f"captions.{kind}"
    lines = data_file.read_text().splitlines()
    data_file.write_text("\n".join([*lines, bad, *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=message):
        load_dataset(str(spec), "train")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_captions_bad_row_skipped_and_counted(tiny_root, tmp_path, kind):
    rows = [*ROWS[:2], ("coffee.jpg", " ", "train")]
    spec = _captions_dataset(tiny_root, tmp_path, kind, rows)
    data = load_dataset(str(spec), "train", skip_bad_rows=True)
    assert data.skipped == {"bad_caption_row": 1} and data.n_texts == 2
    line = 4 if kind == "csv" else 3  # a JSON Lines file has no header line
    assert data.skip_examples["bad_caption_row"][0].endswith(f"captions.{kind}, line {line}")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("image", ["../secret.jpg", "/etc/hostname", "people/../../own/photos/coffee.jpg"])
def test_captions_path_escape(tiny_root, tmp_path, kind, image):
    spec = _captions_dataset(tiny_root, tmp_path, kind, [ROWS[0], (image, "a caption", "train")])
    line = 3 if kind == "csv" else 2
    with pytest.raises(DataError, match=rf"captions\.{kind}, line {line}: path '{image}' leaves the dataset folder"):
        load_dataset(str(spec), "train", skip_missing=True, skip_bad_rows=True)


def test_captions_image_not_found(tiny_root, tmp_path):
    spec = _captions_dataset(tiny_root, tmp_path, "csv", [*ROWS[:2], ("people/nobody.jpg", "no one", "train")])
    with pytest.raises(DataError, match=r"captions\.csv, line 4 names image 'people/nobody\.jpg' but .*photos/people/"
                                        r"nobody\.jpg does not exist; fix the file or load with skip_missing=True"):
        load_dataset(str(spec), "train")
    data = load_dataset(str(spec), "train", skip_missing=True)
    assert data.skipped == {"missing_image": 1} and data.image_ids == ["people/astronaut.jpg", "coffee.jpg"]


def test_captions_image_in_two_splits_and_repeated_rows(tiny_root, tmp_path):
    spec = _captions_dataset(tiny_root, tmp_path, "csv", [*ROWS[:2], ("coffee.jpg", "a cup", "test")])
    with pytest.raises(DataError, match=r"line 4: image 'coffee\.jpg' is in split 'test' here but in 'train' at "
                                        r".*line 3; an image belongs to one split"):
        load_dataset(str(spec), "train", skip_bad_rows=True)
    spec = _captions_dataset(tiny_root, tmp_path / "b", "jsonl", [*ROWS[:2], ROWS[1]])
    with pytest.raises(DataError, match=r"line 3: image 'coffee\.jpg' with caption 'a cup of coffee' repeats .*line 2"):
        load_dataset(str(spec), "train")


def test_captions_missing_files(tiny_root, tmp_path):
    spec = _captions_dataset(tiny_root, tmp_path, "csv")
    declaration = json.loads(spec.read_text())
    declaration["options"]["images"] = "pictures"
    spec.write_text(json.dumps(declaration))
    with pytest.raises(DataError, match=r"own/pictures is missing \(image folder of own\)"):
        load_dataset(str(spec), "train")


# --------------------------------------------------------------------------- declaration errors
@pytest.mark.parametrize("content, message", [
    ({"reader": "tsv"}, r"'reader' must be one of captions, coco, flickr8k, karpathy, not 'tsv'"),
    ({"reader": "captions", "options": {"captions": "c.csv"}}, r"reader 'captions' needs the option\(s\) images"),
    ({"reader": "captions", "options": {"captions": "c.csv", "images": ".", "sep": ";"}},
     r"unknown option\(s\) sep for reader 'captions'; it accepts captions, images, split_of_rows"),
    ({"reader": "captions", "folders": "."}, r"unknown key\(s\) folders; a declaration has name, reader"),
    ({"reader": "captions", "folder": "${home}/x", "options": {"captions": "c.csv", "images": "."}},
     r"unknown variable in '\$\{home\}/x'; the only one is \$\{data_root\}"),
    ([1, 2], r"a dataset declaration is a JSON object, not list"),
    ({"reader": "captions", "options": {"captions": 5, "images": "."}},
     r"bad: option 'captions' of the dataset declaration must be a non-empty string, not 5"),
    ({"reader": "coco", "options": {"splits": ["test"]}},
     r"bad: option 'splits' of the dataset declaration must be an object, not \['test'\]"),
    ({"name": "..", "reader": "coco", "options": {"splits": {}}},
     r"bad\.json: 'name' must be a plain name \(letters, digits, '-', '_' and '\.'; not '\.' or '\.\.'\), not '\.\.'"),
    ({"name": "../../pwned", "reader": "coco", "options": {"splits": {}}}, r"'name' must be a plain name"),
])
def test_declaration_errors(tmp_path, content, message):
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message):
        load_dataset(str(spec), "test")


def test_unknown_names_and_missing_declaration_file(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'nope'; built-in: flickr30k, flickr8k, mscoco.*examples: "
                                        r"flickr8k-heldout"):
        load_dataset("nope", "test")
    with pytest.raises(DataError, match=r"dataset declaration .*missing\.json does not exist"):
        load_dataset(str(tmp_path / "missing.json"), "test")
    with pytest.raises(DataError, match=r"declares 'other' but the profile names it 'mine'"):
        load_dataset("mine", "test", profile={"name": "p", "datasets": {"mine": {"name": "other", "reader": "coco",
                                                                                   "options": {"splits": {}}}}})
    with pytest.raises(DataError, match=r"profile 'p', datasets\.\.\.: its name must be a plain name"):
        load_dataset("..", "test", profile={"name": "p", "datasets": {"..": {"reader": "coco",
                                                                            "options": {"splits": {}}}}})
    with pytest.raises(DataError, match=r"my data\.json: its name must be a plain name .*, not 'my data'"):
        load_dataset(str(_declare(tmp_path / "my data.json", "coco", {"splits": {}})), "test")


# --------------------------------------------------------------------------- the shipped example
EXAMPLE = PROJECT_ROOT / "data" / "examples" / "flickr8k-heldout"


def _make_captions():
    return runpy.run_path(str(EXAMPLE / "make_captions.py"))


def test_heldout_script_on_a_tiny_flickr8k(tiny_root, tmp_path):
    flickr8k = tmp_path / "flickr8k"
    shutil.copytree(tiny_root / "flickr8k", flickr8k)
    (flickr8k / "Flickr_8k.trainImages.txt").write_text("astronaut.jpg\nchelsea.jpg\n")  # coffee, rocket: held back
    with open(flickr8k / "captions.txt", "a") as handle:
        handle.write("coffee.jpg,a cup of coffee on a saucer .\n")  # a repeated row is written once
    script = _make_captions()
    rows = script["heldout_rows"](flickr8k)
    assert [r[0] for r in rows] == ["coffee.jpg"] * 3 + ["rocket.jpg"] * 2
    assert {r[2] for r in rows} == {"test"}
    out = tmp_path / "example"
    out.mkdir()
    (out / "captions.csv").write_text(script["render"](rows))
    spec = json.loads((EXAMPLE / "dataset.json").read_text())
    (out / "dataset.json").write_text(json.dumps(spec))
    data = load_dataset(str(out / "dataset.json"), "test", root=tmp_path)
    assert data.name == "flickr8k-heldout" and data.image_ids == ["coffee.jpg", "rocket.jpg"]
    assert data.captions_per_image().tolist() == [3, 2]
    assert data.image_paths[0] == (flickr8k / "images" / "coffee.jpg").resolve()


REAL_FLICKR8K = Path(os.environ.get("OSGHA_DATA_ROOT", PROJECT_ROOT / "data")) / "flickr8k"


@pytest.mark.skipif(not (REAL_FLICKR8K / "captions.txt").is_file(), reason="needs the real Flickr8k in the data root")
def test_heldout_example_matches_the_real_flickr8k():
    script = _make_captions()
    rows = script["heldout_rows"](REAL_FLICKR8K)
    assert (EXAMPLE / "captions.csv").read_text(encoding="utf-8") == script["render"](rows)  # reproducible
    data = load_dataset("flickr8k-heldout", "test", root=REAL_FLICKR8K.parent)
    assert data.n_images == 91 and data.n_texts == 455 and data.skipped == {}
    assert np.all(data.captions_per_image() == 5)
    official = set()
    for split in ("train", "dev", "test"):
        official |= set(load_dataset("flickr8k", split, root=REAL_FLICKR8K.parent, skip_missing=True).image_ids)
    assert not official & set(data.image_ids)
    assert load_dataset(str(EXAMPLE / "dataset.json"), "test", root=REAL_FLICKR8K.parent).image_ids == data.image_ids

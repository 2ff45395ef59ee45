"""Dataset registry and readers: layouts, explicit caption index, clear errors, read-only."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from osgha_lite.data import DATASETS, READERS, DataError, data_root, load_dataset


def _snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_registry_has_the_three_readers_and_named_datasets():
    assert {"flickr8k", "karpathy", "coco"} <= set(READERS)
    assert {"flickr8k", "flickr30k", "mscoco", "mscoco-2014"} <= set(DATASETS)
    for spec in DATASETS.values():
        assert spec.reader in READERS


def test_flickr8k_reader_builds_explicit_index(data_env):
    train = load_dataset("flickr8k", "train")
    assert train.image_ids == ["astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg"]
    # coffee has 3 captions, the others 2: counts vary and the index says so
    assert train.captions_per_image().tolist() == [2, 3, 2, 2]
    assert train.text_to_image.tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert train.captions[2] == "a cup of coffee on a saucer ."
    assert all(p.is_file() for p in train.image_paths)


def test_karpathy_reader_maps_splits(data_env):
    train = load_dataset("flickr30k", "train")
    assert [i for i in train.image_ids] == ["astronaut.jpg", "coffee.jpg", "chelsea.jpg"]  # train + restval
    assert load_dataset("flickr30k", "dev").image_ids == ["rocket.jpg"]
    test = load_dataset("flickr30k", "test")
    assert test.n_images == 2 and test.n_texts == 4
    assert test.text_to_image.tolist() == [0, 0, 1, 1]


def test_coco_reader(tmp_path, tiny_root):
    coco = tmp_path / "coco"
    (coco / "images" / "val2014").mkdir(parents=True)
    shutil.copy(tiny_root / "flickr8k" / "images" / "coffee.jpg", coco / "images" / "val2014" / "c1.jpg")
    shutil.copy(tiny_root / "flickr8k" / "images" / "rocket.jpg", coco / "images" / "val2014" / "c2.jpg")
    (coco / "annotations").mkdir()
    content = {"images": [{"id": 7, "file_name": "c1.jpg"}, {"id": 9, "file_name": "c2.jpg"}],
               "annotations": [{"image_id": 9, "caption": "a rocket"}, {"image_id": 7, "caption": "a cup"},
                               {"image_id": 9, "caption": "a launch pad"}]}
    (coco / "annotations" / "captions_val2014.json").write_text(json.dumps(content))
    dev = load_dataset("mscoco-2014", "dev", root=tmp_path)
    assert dev.image_ids == ["7", "9"]
    assert dev.captions_per_image().tolist() == [1, 2]
    assert [dev.captions[j] for j in np.flatnonzero(dev.text_to_image == 1)] == ["a rocket", "a launch pad"]
    with pytest.raises(DataError, match="Karpathy"):
        load_dataset("mscoco-2014", "test", root=tmp_path)


def _copy_flickr8k(tiny_root, tmp_path):
    target = tmp_path / "root"
    shutil.copytree(tiny_root / "flickr8k", target / "flickr8k")
    return target


def test_bad_caption_row_names_file_and_line(tiny_root, tmp_path):
    root = _copy_flickr8k(tiny_root, tmp_path)
    captions = root / "flickr8k" / "captions.txt"
    lines = captions.read_text().splitlines()
    lines.insert(3, "coffee.jpg")  # no caption field: line 4 of the file
    captions.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"captions\.txt, line 4"):
        load_dataset("flickr8k", "train", root=root)
    data = load_dataset("flickr8k", "train", root=root, skip_bad_rows=True)
    assert data.skipped == {"bad_caption_row": 1}
    assert data.n_texts == 9


def test_unknown_image_in_split_list(tiny_root, tmp_path):
    root = _copy_flickr8k(tiny_root, tmp_path)
    split_list = root / "flickr8k" / "Flickr_8k.testImages.txt"
    split_list.write_text("nowhere.jpg\n" + split_list.read_text())
    with pytest.raises(DataError, match=r"testImages\.txt, line 1 names image 'nowhere\.jpg'"):
        load_dataset("flickr8k", "test", root=root)
    data = load_dataset("flickr8k", "test", root=root, skip_missing=True)
    assert data.skipped == {"missing_image": 1} and data.n_images == 1


def test_undecodable_image_is_reported_or_skipped(tiny_root, tmp_path):
    root = _copy_flickr8k(tiny_root, tmp_path)
    (root / "flickr8k" / "images" / "coffee.jpg").write_bytes(b"not a jpeg")
    assert load_dataset("flickr8k", "train", root=root).n_images == 4  # not decoded by default
    with pytest.raises(DataError, match=r"coffee\.jpg: cannot decode image"):
        load_dataset("flickr8k", "train", root=root, verify_images=True)
    data = load_dataset("flickr8k", "train", root=root, verify_images=True, skip_missing=True)
    assert data.skipped == {"undecodable_image": 1}
    assert data.image_ids == ["astronaut.jpg", "chelsea.jpg", "rocket.jpg"]
    assert data.text_to_image.tolist() == [0, 0, 1, 1, 2, 2]


def test_missing_folder_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("OSGHA_DATA_ROOT", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    with pytest.raises(DataError, match="OSGHA_DATA_ROOT"):
        load_dataset("flickr8k", "train")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("nope", "train")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("flickr8k", "val")


def test_readers_never_write_into_the_data_root(data_env):
    before = _snapshot(data_env)
    for name in ("flickr8k", "flickr30k"):
        for split in ("train", "dev", "test"):
            load_dataset(name, split, verify_images=True)
    assert _snapshot(data_env) == before


def test_subset_keeps_index_consistent(data_env):
    train = load_dataset("flickr8k", "train").subset(2)
    assert train.n_images == 2 and train.text_to_image.tolist() == [0, 0, 1, 1, 1]

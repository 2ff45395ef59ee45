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


# --------------------------------------------------------------------------- protocol splits
def _captions_of(data, image):
    return [c for c, i in zip(data.captions, data.text_to_image.tolist()) if i == image]


def test_select_images_keeps_each_images_captions_in_the_given_order(data_env):
    train = load_dataset("flickr8k", "train")  # captions per image: 2, 3, 2, 2
    chosen = train.select_images(np.array([3, 1]), "adapt")
    assert chosen.split == "adapt" and chosen.name == "flickr8k"
    assert chosen.image_ids == ["rocket.jpg", "coffee.jpg"]
    assert chosen.image_paths == [train.image_paths[3], train.image_paths[1]]
    assert chosen.captions == _captions_of(train, 3) + _captions_of(train, 1)
    assert chosen.text_to_image.tolist() == [0, 0, 1, 1, 1]
    assert chosen.captions_per_image().tolist() == [2, 3]
    for image in range(chosen.n_images):  # every caption stays with its own image
        assert _captions_of(chosen, image) == _captions_of(train, [3, 1][image])
    # the source names the parent and its rows, so features of the parent can be reused
    assert chosen.source.parent is train
    assert chosen.source.rows("image").tolist() == [3, 1]
    assert [train.captions[j] for j in chosen.source.rows("text")] == chosen.captions
    assert train.source is None


def test_select_images_rejects_repeated_or_out_of_range_indices(data_env):
    train = load_dataset("flickr8k", "train")
    for bad in ([0, 0], [4], [-1, 2]):
        with pytest.raises(ValueError, match=r"distinct and in \[0, 4\)"):
            train.select_images(np.array(bad), "adapt")
    empty = train.select_images(np.array([], dtype=np.int64), "adapt")
    assert empty.n_images == 0 and empty.n_texts == 0


def test_protocol_settings_fill_defaults_and_reject_bad_values():
    from osgha_lite.data import protocol_settings

    assert protocol_settings({"name": "p"}) == {"kind": "shared", "seed": 0}
    assert protocol_settings({"name": "p", "seed": 7, "protocol": {"kind": "disjoint", "pretrain_images": 3}}) == \
        {"kind": "disjoint", "seed": 7, "pretrain_images": 3}
    own_seed = {"seed": 7, "protocol": {"kind": "disjoint", "pretrain_images": 3, "seed": 1}}
    assert protocol_settings(own_seed)["seed"] == 1  # the protocol's seed wins over the profile's
    with pytest.raises(ValueError, match=r"profile 'p', field 'protocol': unknown kind 'split'"):
        protocol_settings({"name": "p", "protocol": {"kind": "split"}})
    for bad in (None, 0, -2, 2.5, "10", True):
        protocol = {"kind": "disjoint"} if bad is None else {"kind": "disjoint", "pretrain_images": bad}
        with pytest.raises(ValueError, match="needs 'pretrain_images', a positive integer"):
            protocol_settings({"name": "p", "protocol": protocol})


def test_split_train_images_is_a_seeded_sorted_partition():
    from osgha_lite.data import split_train_images

    pretrain, adapt = split_train_images(50, 20, seed=3)
    assert len(pretrain) == 20 and len(adapt) == 30
    assert not set(pretrain.tolist()) & set(adapt.tolist())
    assert sorted(pretrain.tolist() + adapt.tolist()) == list(range(50))
    assert pretrain.tolist() == sorted(pretrain.tolist()) and adapt.tolist() == sorted(adapt.tolist())
    again = split_train_images(50, 20, seed=3)
    assert again[0].tolist() == pretrain.tolist() and again[1].tolist() == adapt.tolist()
    order = np.random.default_rng(3).permutation(50)  # the documented draw
    assert pretrain.tolist() == sorted(order[:20].tolist())
    assert split_train_images(50, 20, seed=4)[0].tolist() != pretrain.tolist()
    for bad in (0, -1, 50, 51):
        with pytest.raises(ValueError, match=r"between 1 and 49 \(the train split has 50 images\)"):
            split_train_images(50, bad, seed=0)


def _profile(kind, **protocol):
    return {"name": "tiny", "dataset": "flickr8k", "seed": 0, "protocol": {"kind": kind, **protocol}}


def test_shared_protocol_splits_are_the_whole_train_split(data_env):
    from osgha_lite.data import load_profile_split

    train = load_dataset("flickr8k", "train")
    for split in ("pretrain", "adapt"):
        data = load_profile_split(_profile("shared"), split)
        assert data.split == "train" and data.source is None  # the train features are the cached ones
        assert data.image_ids == train.image_ids and data.captions == train.captions
        assert data.text_to_image.tolist() == train.text_to_image.tolist()
    assert load_profile_split({"name": "x", "dataset": "flickr8k"}, "adapt").image_ids == train.image_ids


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_disjoint_protocol_divides_the_train_images(data_env, seed):
    from osgha_lite.data import load_profile_split, split_train_images

    train = load_dataset("flickr8k", "train")
    profile = _profile("disjoint", pretrain_images=2, seed=seed)
    pretrain, adapt = load_profile_split(profile, "pretrain"), load_profile_split(profile, "adapt")
    assert (pretrain.split, adapt.split) == ("pretrain", "adapt")
    assert pretrain.n_images == 2 and adapt.n_images == 2
    assert not set(pretrain.image_ids) & set(adapt.image_ids)
    assert sorted(pretrain.image_ids + adapt.image_ids) == sorted(train.image_ids)
    expected = split_train_images(train.n_images, 2, seed)
    for part, indices in zip((pretrain, adapt), expected):
        assert part.image_ids == [train.image_ids[i] for i in indices]  # train order kept
        assert part.n_texts == sum(len(_captions_of(train, i)) for i in indices)
        for image, parent_image in enumerate(indices):
            assert _captions_of(part, image) == _captions_of(train, parent_image)
        assert part.captions_per_image().tolist() == train.captions_per_image()[indices].tolist()
        assert part.source.rows("image").tolist() == indices.tolist()
    assert pretrain.n_texts + adapt.n_texts == train.n_texts
    # dev and test are not divided
    assert load_profile_split(profile, "dev").image_ids == load_dataset("flickr8k", "dev").image_ids
    assert load_profile_split(profile, "train").image_ids == train.image_ids


def test_disjoint_protocol_errors_and_smoke_limit(data_env):
    from osgha_lite.data import load_profile_split

    with pytest.raises(ValueError, match=r"between 1 and 3 \(the train split has 4 images\), not 4"):
        load_profile_split(_profile("disjoint", pretrain_images=4), "adapt")
    with pytest.raises(ValueError, match="pretrain_images"):
        load_profile_split(_profile("disjoint"), "pretrain")
    with pytest.raises(ValueError, match="unknown kind"):
        load_profile_split(_profile("halves"), "adapt")
    smoke = load_profile_split({**_profile("disjoint", pretrain_images=1, seed=0), "smoke_images": 2}, "adapt")
    full = load_profile_split(_profile("disjoint", pretrain_images=1, seed=0), "adapt")
    assert smoke.n_images == 2 and smoke.image_ids == full.image_ids[:2]
    assert smoke.captions == [c for c, i in zip(full.captions, full.text_to_image.tolist()) if i < 2]

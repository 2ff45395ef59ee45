"""Tests for osgha_lite.apps.search: folder index, text -> images, image -> captions, the CLI."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from osgha_lite.backbones import build_backbone
from osgha_lite.profiles import load_profile
from bad_images import PROBLEMS, write_bad_images
from osgha_lite.data import load_dataset
from osgha_lite.backbones.image_decode import ImageDecodeError
from osgha_lite.backbones.features import cache_root
from osgha_lite.apps.search import (
    ImageIndex,
    dataset_indexes,
    SearchError,
    Searcher,
    Space,
    index_captions,
    index_images,
    list_images,
    load_index,
    load_space,
    main,
    top_k,
)


def test_top_k_is_best_first_and_keeps_gallery_order_on_ties():
    assert top_k(np.array([0.1, 0.9, 0.5, 0.9, -1.0]), 3).tolist() == [1, 3, 2]
    assert top_k(np.array([0.2, 0.1]), 10).tolist() == [0, 1]
    with pytest.raises(SearchError, match="at least 1"):
        top_k(np.array([0.2]), 0)


def test_list_images_recurses_sorts_and_refuses_what_is_not_a_gallery(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/z.JPG", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "z.JPG"]
    with pytest.raises(SearchError, match="holds no image file"):
        list_images(_empty(tmp_path))
    with pytest.raises(SearchError, match="is not a folder"):
        list_images(tmp_path / "missing")


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def gallery(tiny_lite, tiny_root):
    """The tiny backbone, its index of the six sample photos and of every flickr8k caption of the tiny root."""
    path, _, _ = tiny_lite
    profile = load_profile(str(path))
    backbone = build_backbone(profile, progress=False)
    images = index_images(backbone, list_images(tiny_root / "flickr8k" / "images"), progress=False)
    captions = [c for split in ("train", "dev", "test") for c in load_dataset("flickr8k", split).captions]
    return profile, backbone, images, index_captions(backbone, captions, progress=False)


def test_frozen_space_answers_by_cosine_similarity(gallery):
    _, backbone, images, captions = gallery
    search = Searcher(Space("frozen-backbone", backbone), images, captions)
    found = search.text_to_images("an orange cat on a floor", k=3)
    query = backbone.from_raw(backbone.text_encoder.encode(["an orange cat on a floor"], progress=False), "text")[0]
    scores = images.vectors @ query
    assert found["rank"].tolist() == [1, 2, 3]
    assert found["index"].tolist() == np.argsort(-scores, kind="stable")[:3].tolist()
    np.testing.assert_allclose(found["score"], np.sort(scores)[::-1][:3], atol=1e-5)
    assert found["path"].tolist() == [str(images.paths[i]) for i in found["index"]]
    # an image given by path is encoded directly; the same image from the index gives the same captions
    by_path = search.image_to_captions(images.paths[2], k=4)
    by_row = search.image_to_captions(2, k=4)
    assert by_path["caption"].tolist() == by_row["caption"].tolist()
    np.testing.assert_allclose(by_path["score"], by_row["score"], atol=1e-4)
    np.testing.assert_allclose(by_row["score"], np.sort(captions.vectors @ images.vectors[2])[::-1][:4], atol=1e-5)


def test_trained_method_space_adapts_gallery_and_queries(gallery):
    profile, backbone, images, captions = gallery
    space = load_space(profile, "os-hgadapter", backbone, progress=False)
    assert space.scored is not None and not space.needs_local
    search = Searcher(space, images, captions)
    np.testing.assert_allclose(search.image_vectors, space.scored.encode(images.vectors, "image"), atol=1e-6)
    assert not np.allclose(search.image_vectors[:, :images.vectors.shape[1]], images.vectors, atol=1e-3)
    found = search.text_to_images("a rocket on a launch pad", k=6)
    assert sorted(found["index"].tolist()) == list(range(6)) and found["score"].is_monotonic_decreasing
    by_path, by_row = search.image_to_captions(images.paths[0], k=3), search.image_to_captions(0, k=3)
    np.testing.assert_allclose(by_path["score"], by_row["score"], atol=1e-4)


def test_search_errors_say_what_to_do(gallery, tmp_path):
    profile, backbone, images, captions = gallery
    with pytest.raises(SearchError, match="known: frozen-backbone, clip-adapter, os-hgadapter"):
        load_space(profile, "nope", backbone)
    other = ImageIndex(images.paths, images.vectors, "another-backbone")
    with pytest.raises(SearchError, match="index again"):
        Searcher(Space("frozen-backbone", backbone), other)
    search = Searcher(Space("frozen-backbone", backbone), images=images)
    with pytest.raises(SearchError, match="no caption index"):
        search.image_to_captions(0)
    with pytest.raises(SearchError, match="empty"):
        search.text_to_images("  ")
    with pytest.raises(SearchError, match="does not exist"):
        Searcher(Space("frozen-backbone", backbone), captions=captions).image_to_captions(tmp_path / "none.jpg")


def test_cli_indexes_once_and_answers_text_and_image_queries(tiny_lite, tiny_root, tmp_path, capsys):
    path, _, _ = tiny_lite
    folder = tiny_root / "flickr30k" / "images"
    assert main(["--profile", str(path), "--name", "cli", "index", str(folder)]) == 0
    assert "indexed 6 images" in capsys.readouterr().out
    features = sorted((cache_root() / "features").glob("search-index-*"))
    assert features and (cache_root() / "search" / "cli.json").is_file()
    assert main(["--profile", str(path), "--name", "cli", "index", str(folder)]) == 0  # read from the cache
    assert sorted((cache_root() / "features").glob("search-index-*")) == features
    capsys.readouterr()
    assert main(["--profile", str(path), "--name", "cli", "query", "a motorbike", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(str(folder)) == 2 and "frozen-backbone: query answered in" in out
    assert main(["--profile", str(path), "query", "--image", str(folder / "coffee.jpg"), "--k", "3",
                 "--method", "os-hgadapter", "--captions-split", "train"]) == 0
    out = capsys.readouterr().out
    train_captions = load_dataset("flickr8k", "train").captions
    assert sum(line.strip().endswith(tuple(train_captions)) for line in out.splitlines()) == 3
    captions_file = tmp_path / "captions.txt"
    captions_file.write_text("a cup of coffee\n\na rocket\n")
    assert main(["--profile", str(path), "query", "--image", str(folder / "coffee.jpg"),
                 "--captions-file", str(captions_file)]) == 0
    assert "a cup of coffee" in capsys.readouterr().out
    assert main(["--profile", str(path), "--name", "never-built", "query", "a cat"]) == 2
    assert "no index 'never-built'" in capsys.readouterr().err
    assert main(["--profile", str(path), "query", "a cat", "--image", str(folder / "coffee.jpg")]) == 2
    assert "either a text query or --image" in capsys.readouterr().err
    assert main(["--profile", str(path), "index", str(tmp_path / "nothing")]) == 2
    assert "is not a folder of images" in capsys.readouterr().err


def _gallery_copy(tiny_root, folder, names) -> list:
    """The six sample photos copied to ``folder`` under ``names`` (bytes allowed: any name the file system holds)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted((tiny_root / "flickr30k" / "images").glob("*.jpg"))
    targets = [os.path.join(os.fsencode(folder), os.fsencode(name)) for name in names]
    for photo, target in zip(photos, targets):
        shutil.copyfile(photo, target)
    return [Path(os.fsdecode(t)) for t in targets]


def test_a_failed_reindex_leaves_the_previous_index_intact(tiny_lite, tiny_root, tmp_path, capsys, monkeypatch):
    """Index A, then index B and fail while its record is written: queries still answer from A, whole."""
    path, _, _ = tiny_lite
    first = _gallery_copy(tiny_root, tmp_path / "a", [f"a{i}.jpg" for i in range(6)])
    _gallery_copy(tiny_root, tmp_path / "b", [f"b{i}.jpg" for i in (3, 1, 5, 0, 2, 4)])
    query = ["--profile", str(path), "--name", "atomic", "query", "a motorbike", "--k", "6"]
    assert main(["--profile", str(path), "--name", "atomic", "index", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(query) == 0
    before = capsys.readouterr().out.splitlines()[:7]
    assert sum(str(p) in line for line in before for p in first) == 6
    replace = os.replace

    def failing(source, destination):
        if Path(destination).parent.name == "search" and str(destination).endswith(".json"):
            raise OSError(28, "No space left on device")
        replace(source, destination)

    monkeypatch.setattr(os, "replace", failing)
    assert main(["--profile", str(path), "--name", "atomic", "index", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: [Errno 28] No space left on device"
    monkeypatch.setattr(os, "replace", replace)
    assert main(query) == 0
    assert capsys.readouterr().out.splitlines()[:7] == before
    vectors = json.loads((cache_root() / "search" / "atomic.json").read_text())["vectors"]
    assert sorted(p.name for p in (cache_root() / "search").glob("atomic*")) == sorted(["atomic.json", vectors])


def test_damaged_index_vectors_are_an_error_not_an_answer(tiny_lite, tiny_root, tmp_path, capsys):
    path, _, _ = tiny_lite
    _gallery_copy(tiny_root, tmp_path / "a", [f"a{i}.jpg" for i in range(6)])
    assert main(["--profile", str(path), "--name", "damaged", "index", str(tmp_path / "a")]) == 0
    record = json.loads((cache_root() / "search" / "damaged.json").read_text())
    vectors = cache_root() / "search" / record["vectors"]
    vectors.write_bytes(vectors.read_bytes()[:-8] + bytes(8))
    capsys.readouterr()
    assert main(["--profile", str(path), "--name", "damaged", "query", "a motorbike"]) == 2
    assert "contents do not match the recorded SHA-256" in capsys.readouterr().err
    assert main(["--profile", str(path), "--name", "../damaged", "query", "a motorbike"]) == 2
    assert "the index name '../damaged' is not a plain name" in capsys.readouterr().err


def test_any_file_name_the_file_system_holds_is_indexed_stored_and_shown(tiny_lite, tiny_root, tmp_path, capsys):
    """A name holding the bytes ff fe (not UTF-8) is indexed, stored unchanged and printed as \\xff\\xfe."""
    path, profile, _ = tiny_lite
    names = [b"\xff\xfe.jpg", "caf\u00e9.jpg", b"plain.jpg", b"tab\tname.jpg", b"\xe9t\xe9.jpg", b"z.jpg"]
    copies = _gallery_copy(tiny_root, tmp_path / "odd", names)
    assert main(["--profile", str(path), "--name", "odd", "index", str(tmp_path / "odd")]) == 0
    assert "indexed 6 images" in capsys.readouterr().out
    stored = load_index("odd", build_backbone(profile, progress=False))
    assert sorted(os.fsencode(p) for p in stored.paths) == sorted(os.fsencode(p) for p in copies)
    assert main(["--profile", str(path), "--name", "odd", "query", "a motorbike", "--k", "6"]) == 0
    out = capsys.readouterr().out
    assert "/\\xff\\xfe.jpg" in out and "/\\xe9t\\xe9.jpg" in out and "/caf\u00e9.jpg" in out


def _count_decodes(monkeypatch) -> Counter:
    """Count the image decodes of the EfficientNet encoder, by path."""
    from osgha_lite.backbones.encoders import EfficientNetLite0Encoder

    counts, pixels = Counter(), EfficientNetLite0Encoder.pixels

    def counted(self, path):
        counts[os.fspath(path)] += 1
        return pixels(self, path)

    monkeypatch.setattr(EfficientNetLite0Encoder, "pixels", counted)
    return counts


def test_bad_images_are_skipped_counted_and_named_never_a_traceback(tiny_lite, tiny_root, tmp_path, capsys,
                                                                     monkeypatch):
    """A text file named .jpg, a truncated JPEG, a 20000 x 20000 PNG and a zero-byte file among three photos."""
    path, profile, _ = tiny_lite
    folder = tmp_path / "mixed"
    good = _gallery_copy(tiny_root, folder, ["a.jpg", "b.jpg", "c.jpg"])
    bad = write_bad_images(folder, tiny_root / "flickr30k" / "images" / "coffee.jpg")
    decodes = _count_decodes(monkeypatch)
    index = ["--profile", str(path), "--name", "mixed", "index", str(folder)]
    assert main(index) == 0
    out, err = capsys.readouterr()
    assert "indexed 3 images of" in out and "skipped 4 that cannot be decoded" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4 and "Traceback" not in err
    for file, line in zip(sorted(bad), sorted(warnings)):
        assert line.startswith(f"warning: skipped image {file}: cannot decode it (") and PROBLEMS[file.name] in line
    assert {p: decodes[os.fspath(p)] for p in good + bad} == {p: 1 for p in good + bad}  # each decoded once
    record = json.loads((cache_root() / "search" / "mixed.json").read_text())
    assert record["skipped_images"]["count"] == 4 and sorted(record["paths"]) == sorted(map(str, good))
    assert main(["--profile", str(path), "--name", "mixed", "query", "a cup", "--k", "9"]) == 0
    assert sorted(line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:4]) == sorted(map(str, good))
    decodes.clear()
    assert main(index) == 0  # again: the photos come from the cache, the bad files are named again
    assert "skipped 4" in capsys.readouterr().out and not any(decodes[os.fspath(p)] for p in good + bad)
    # outside the commands an undecodable image is an error naming every such file, even from the cache
    backbone = build_backbone(profile, progress=False)
    with pytest.raises(ImageDecodeError, match=r"4 image\(s\) cannot be decoded: .*notes\.jpg \(cannot identify"):
        index_images(backbone, list_images(folder), progress=False)
    assert main(index + ["--strict"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: 4 of the 7 images of ") and err[-1].endswith(
        "cannot be decoded (listed above), and --strict makes that an error; the index was not written")
    assert main(["--profile", str(path), "query", "--image", str(bad[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad[1]}: cannot decode image (image file is truncated") and err.count("\n") == 1


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tiny_lite, tmp_path, capsys, monkeypatch):
    from osgha_lite.apps import search

    path, _, _ = tiny_lite

    def broken(folder):
        raise RuntimeError("the disk went away\nwhile listing")

    monkeypatch.setattr(search, "list_images", broken)
    assert main(["--profile", str(path), "index", str(tmp_path)]) == 1
    assert capsys.readouterr().err == ("error: RuntimeError: the disk went away while listing (run again with "
                                       "--debug for the traceback)\n")
    with pytest.raises(RuntimeError, match="the disk went away"):
        main(["--profile", str(path), "--debug", "index", str(tmp_path)])


def test_widget_shows_each_spaces_top_images_and_a_picked_images_captions(gallery):
    from osgha_lite.apps.search_widget import search_widget

    profile, backbone, images, captions = gallery
    searchers = {"frozen": Searcher(Space("frozen-backbone", backbone), images, captions),
                 "trained": Searcher(load_space(profile, "os-hgadapter", backbone, progress=False), images, captions)}
    widget = search_widget(searchers, k=3, k_captions=2, initial_query="a cup of coffee")
    _, status, columns, picked = widget.children
    assert len(columns.children) == 2 and "query time: frozen:" in status.value
    for column, searcher in zip(columns.children, searchers.values()):
        expected = searcher.text_to_images("a cup of coffee", 3)
        assert len(column.children) == 4  # title and three images
        assert [cell.children[1].description.split()[0] for cell in column.children[1:]] == ["#1", "#2", "#3"]
        assert column.children[1].children[0].value[:2] == b"\xff\xd8"  # a JPEG thumbnail
        assert f"({expected.score.iloc[0]:.2f})" in column.children[1].children[1].description
    columns.children[1].children[1].children[1].click()
    row = searchers["trained"].text_to_images("a cup of coffee", 1)["index"].iloc[0]
    assert f"Top captions of {images.paths[row].name}" in picked.value
    for caption in searchers["frozen"].image_to_captions(int(row), 2).caption:
        assert caption in picked.value.replace("&#x27;", "'")


def test_a_dataset_split_is_indexed_from_its_own_cached_features(gallery, tiny_root):
    _, backbone, _, _ = gallery
    train = load_dataset("flickr8k", "train")
    images, captions = dataset_indexes(backbone, train, progress=False)
    expected_images, expected_texts = backbone.embed(train, progress=False)
    np.testing.assert_array_equal(images.vectors, expected_images)
    np.testing.assert_array_equal(captions.vectors, expected_texts)
    assert images.paths == list(train.image_paths) and captions.texts == train.captions
    with_local = dataset_indexes(backbone, train, local=True, progress=False)
    assert with_local[0].local[0].shape[:2] == with_local[0].local[1].shape == (4, 16)

"""Fault injection for the dataset readers: each bad file gives one clear DataError, never a silently wrong dataset.

Every test writes a tiny broken copy of a fixture dataset into ``tmp_path``
and checks the message names the file, the line (or JSON path) and the
problem; skip options never hide a structural problem.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from osgha_lite.data import DataError, load_dataset


def _flickr8k(tiny_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny_root / "flickr8k", root / "flickr8k")
    return root, root / "flickr8k"


def _insert_line(path, index, line):
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(index, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _flickr30k(tiny_root, tmp_path, change):
    """A copy of the Karpathy fixture whose JSON content is passed through ``change``."""
    root = tmp_path / "root"
    shutil.copytree(tiny_root / "flickr30k", root / "flickr30k")
    json_file = root / "flickr30k" / "dataset_flickr30k.json"
    content = change(json.loads(json_file.read_text()))
    json_file.write_text(json.dumps(content) if not isinstance(content, bytes) else content.decode("latin1"))
    return root, json_file


def _coco(tiny_root, tmp_path, images, annotations):
    root = tmp_path / "root"
    folder = root / "coco"
    (folder / "images" / "val2014").mkdir(parents=True)
    (folder / "annotations").mkdir()
    for name in ("coffee", "rocket"):
        shutil.copy(tiny_root / "flickr8k" / "images" / f"{name}.jpg", folder / "images" / "val2014" / f"{name}.jpg")
    (folder / "annotations" / "captions_val2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations}))
    return root


SKIPS = [{}, {"skip_missing": True}, {"skip_bad_rows": True}, {"skip_missing": True, "skip_bad_rows": True}]


# --------------------------------------------------------------------------- CSV quotes
@pytest.mark.parametrize("skips", SKIPS)
def test_unterminated_quote_is_an_error_naming_the_line_even_with_skips(tiny_root, tmp_path, skips):
    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 3, 'coffee.jpg,"a cup of coffee , on a table')  # line 4
    with pytest.raises(DataError, match=r"captions\.txt, line 4: the quote at column 12 does not close on this line"):
        load_dataset("flickr8k", "train", root=root, **skips)


def test_quote_inside_an_unquoted_field_is_an_error(tiny_root, tmp_path):
    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 1, 'astronaut.jpg,a sign says "stop')
    with pytest.raises(DataError, match=r"captions\.txt, line 2, column 27: a quote inside an unquoted field"):
        load_dataset("flickr8k", "train", root=root, skip_bad_rows=True)


def test_quoted_fields_with_commas_and_doubled_quotes_still_read(tiny_root, tmp_path):
    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 1, 'astronaut.jpg,"a flag , and a sign saying ""hello"" ."')
    data = load_dataset("flickr8k", "train", root=root)
    assert data.captions[0] == 'a flag , and a sign saying "hello" .'
    assert data.captions_per_image().tolist() == [3, 3, 2, 2]


# --------------------------------------------------------------------------- encodings, BOM, NUL
def test_non_utf8_captions_name_line_and_byte(tiny_root, tmp_path):
    root, folder = _flickr8k(tiny_root, tmp_path)
    captions = folder / "captions.txt"
    lines = captions.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"woman", b"caf\xe9 woman")  # latin-1 on line 3
    captions.write_bytes(b"\n".join(lines))
    offset = len(b"\n".join(lines[:2])) + 1 + lines[2].index(b"\xe9")
    for skips in SKIPS:
        with pytest.raises(DataError, match=rf"captions\.txt, line 3 \(byte offset {offset}\): not valid UTF-8 "
                                            r"\(bytes e9 .*save it as UTF-8"):
            load_dataset("flickr8k", "train", root=root, **skips)


def test_non_utf8_split_list_and_karpathy_json(tiny_root, tmp_path):
    root, folder = _flickr8k(tiny_root, tmp_path)
    (folder / "Flickr_8k.testImages.txt").write_bytes(b"hubble_deep_field.jpg\nna\xefve.jpg\n")
    with pytest.raises(DataError, match=r"testImages\.txt, line 2 \(byte offset 24\): not valid UTF-8"):
        load_dataset("flickr8k", "test", root=root, skip_missing=True)
    root30, json_file = _flickr30k(tiny_root, tmp_path / "k", lambda c: c)
    json_file.write_bytes(json_file.read_bytes().replace(b"an astronaut", b"an \xff astronaut"))
    with pytest.raises(DataError, match=r"dataset_flickr30k\.json, line 1 \(byte offset \d+\): not valid UTF-8"):
        load_dataset("flickr30k", "train", root=root30)


def test_bom_in_the_csv_header_is_accepted(tiny_root, tmp_path, data_env):
    root, folder = _flickr8k(tiny_root, tmp_path)
    captions = folder / "captions.txt"
    captions.write_bytes(b"\xef\xbb\xbf" + captions.read_bytes())
    with_bom = load_dataset("flickr8k", "train", root=root)
    plain = load_dataset("flickr8k", "train")
    assert with_bom.captions == plain.captions and with_bom.image_ids == plain.image_ids


def test_nul_byte_in_a_caption_is_an_error_naming_the_line(tiny_root, tmp_path):
    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 2, "coffee.jpg,a cup\x00 of tea")  # line 3
    with pytest.raises(DataError, match=r"captions\.txt, line 3: contains a NUL byte"):
        load_dataset("flickr8k", "train", root=root, skip_bad_rows=True)


# --------------------------------------------------------------------------- repeated rows and images
def test_repeated_caption_row_is_an_error_or_skipped_and_reported(tiny_root, tmp_path):
    from osgha_lite.data import SkippedDataWarning

    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 5, "coffee.jpg,a cup of coffee on a saucer .")  # line 6 repeats line 4
    spec = tmp_path / "repeats.json"  # the same layout declared without the built-in's "keep"
    spec.write_text(json.dumps({"reader": "flickr8k", "folder": str(folder)}))
    with pytest.raises(DataError, match=r"captions\.txt, line 6: image 'coffee\.jpg' with caption 'a cup of coffee "
                                        r"on a saucer \.' repeats .*captions\.txt, line 4; remove the repeated row"):
        load_dataset(str(spec), "train")
    with pytest.warns(SkippedDataWarning, match=r"repeats/train: skipped 1 \(duplicate_caption_row\), e\.g\. "
                                                r".*line 6 repeats .*line 4"):
        data = load_dataset(str(spec), "train", skip_bad_rows=True)
    assert data.skipped == {"duplicate_caption_row": 1} and data.n_texts == 9
    assert data.summary(details=True)["skip_examples"]["duplicate_caption_row"][0].endswith("captions.txt, line 4")


def test_builtin_flickr8k_keeps_repeated_rows_as_published_and_counts_them(tiny_root, tmp_path):
    from osgha_lite.data import SkippedDataWarning

    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 5, "coffee.jpg,a cup of coffee on a saucer .")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedDataWarning)  # kept on purpose, as declared: counted, no warning
        data = load_dataset("flickr8k", "train", root=root)
    assert data.n_texts == 10 and data.summary(details=True)["kept"] == {"duplicate_caption_row": 1}
    assert load_dataset("flickr8k", "test", root=root).kept == {}  # coffee is not a test image


def test_image_listed_twice_in_a_split_list(tiny_root, tmp_path):
    root, folder = _flickr8k(tiny_root, tmp_path)
    (folder / "Flickr_8k.devImages.txt").write_text("motorcycle_left.jpg\n\nmotorcycle_left.jpg\n")
    with pytest.raises(DataError, match=r"devImages\.txt, line 3: image 'motorcycle_left\.jpg' is listed again "
                                        r"\(first at .*devImages\.txt, line 1\)"):
        load_dataset("flickr8k", "dev", root=root, skip_missing=True, skip_bad_rows=True)


@pytest.mark.parametrize("field", ["filename", "cocoid"])
def test_karpathy_repeated_image(tiny_root, tmp_path, field):
    def repeat(content):
        images = content["images"]
        if field == "cocoid":
            for index, entry in enumerate(images):
                entry["cocoid"] = 100 + index
            images[4]["cocoid"] = 101
            return content
        images[3]["filename"] = images[1]["filename"]
        return content

    root, _ = _flickr30k(tiny_root, tmp_path, repeat)
    what = "image id '101'" if field == "cocoid" else "image file 'coffee.jpg'"
    index = 4 if field == "cocoid" else 3
    with pytest.raises(DataError, match=rf"images\[{index}\]: repeats the {what} of images\[1\]; each image may "
                                        "appear once"):
        load_dataset("flickr30k", "test", root=root, skip_missing=True, skip_bad_rows=True)


def test_coco_repeated_id_and_file_name(tiny_root, tmp_path):
    notes = [{"image_id": 7, "caption": "a cup"}]
    root = _coco(tiny_root, tmp_path / "a", [{"id": 7, "file_name": "coffee.jpg"}, {"id": 7, "file_name": "rocket.jpg"}],
                 notes)
    with pytest.raises(DataError, match=r"captions_val2014\.json, images\[1\]: repeats the id '7' of images\[0\]"):
        load_dataset("mscoco-2014", "dev", root=root, skip_missing=True, skip_bad_rows=True)
    root = _coco(tiny_root, tmp_path / "b", [{"id": 7, "file_name": "coffee.jpg"}, {"id": 8, "file_name": "coffee.jpg"}],
                 notes)
    with pytest.raises(DataError, match=r"images\[1\]: repeats the file_name 'coffee\.jpg' of images\[0\]"):
        load_dataset("mscoco-2014", "dev", root=root)


# --------------------------------------------------------------------------- JSON types
KARPATHY_TYPE_FAULTS = {
    "sentences": (lambda c: c["images"][3].update(sentences=5) or c,
                  r"images\[3\]\.sentences must be an array, found an integer \(5\)"),
    "filename": (lambda c: c["images"][0].update(filename=17) or c,
                 r"images\[0\]\.filename must be a string, found an integer \(17\)"),
    "null-entry": (lambda c: c["images"].__setitem__(2, None) or c, r"images\[2\] must be an object, found null"),
    "top-level-list": (lambda c: c["images"], r"the top level must be an object, found an array"),
    "images-null": (lambda c: {"images": None}, r"'images' must be an array, found null"),
    "raw": (lambda c: c["images"][5]["sentences"][1].update(raw=None) or c,
            r"images\[5\]\.sentences\[1\]\.raw must be a string, found null"),
    "raw-in-another-split": (lambda c: c["images"][0]["sentences"][0].update(raw=7) or c,
                             r"images\[0\]\.sentences\[0\]\.raw must be a string, found an integer \(7\)"),
    "split-name": (lambda c: c["images"][1].update(split="validation") or c,
                   r"images\[1\]\.split is 'validation'; expected one of train, restval, val, test"),
}


@pytest.mark.parametrize("fault", sorted(KARPATHY_TYPE_FAULTS))
def test_karpathy_wrong_types_name_the_json_path(tiny_root, tmp_path, fault):
    change, message = KARPATHY_TYPE_FAULTS[fault]
    root, _ = _flickr30k(tiny_root, tmp_path, change)
    with pytest.raises(DataError, match=r"dataset_flickr30k\.json: " + message):
        load_dataset("flickr30k", "test", root=root, skip_missing=True, skip_bad_rows=True)


@pytest.mark.parametrize("images, annotations, message", [
    (None, [], r"'images' must be an array, found null"),
    ([{"id": True, "file_name": "coffee.jpg"}], [], r"images\[0\]\.id must be an integer or a string, found a boolean"),
    ([{"id": 7, "file_name": ["coffee.jpg"]}], [], r"images\[0\]\.file_name must be a string, found an array"),
    ([{"id": 7, "file_name": "coffee.jpg"}], [{"image_id": 7, "caption": 3}],
     r"annotations\[0\]\.caption must be a string, found an integer \(3\)"),
    ([{"id": 7, "file_name": "coffee.jpg"}], {"image_id": 7}, r"'annotations' must be an array, found an object"),
])
def test_coco_wrong_types_name_the_json_path(tiny_root, tmp_path, images, annotations, message):
    root = _coco(tiny_root, tmp_path, images, annotations)
    with pytest.raises(DataError, match=r"captions_val2014\.json: " + message):
        load_dataset("mscoco-2014", "dev", root=root, skip_missing=True, skip_bad_rows=True)


# --------------------------------------------------------------------------- paths leaving the folder
@pytest.mark.parametrize("name", ["../flickr30k/images/coffee.jpg", "/etc/hostname", "images/../../x.jpg"])
def test_split_list_path_escape(tiny_root, tmp_path, name):
    root, folder = _flickr8k(tiny_root, tmp_path)
    (folder / "Flickr_8k.testImages.txt").write_text(f"hubble_deep_field.jpg\n{name}\n")
    with pytest.raises(DataError, match=rf"testImages\.txt, line 2: path '{name}' leaves the dataset folder"):
        load_dataset("flickr8k", "test", root=root, skip_missing=True)


def test_captions_txt_path_escape(tiny_root, tmp_path):
    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 1, "../secret.jpg,a caption")
    with pytest.raises(DataError, match=r"captions\.txt, line 2: path '\.\./secret\.jpg' leaves the dataset folder"):
        load_dataset("flickr8k", "train", root=root, skip_bad_rows=True)


@pytest.mark.parametrize("field, value", [("filename", "../../flickr8k/images/coffee.jpg"), ("filepath", "/tmp")])
def test_karpathy_path_escape(tiny_root, tmp_path, field, value):
    root, _ = _flickr30k(tiny_root, tmp_path, lambda c: c["images"][4].update({field: value}) or c)
    with pytest.raises(DataError, match=r"dataset_flickr30k\.json, images\[4\]: path .* leaves the dataset folder"):
        load_dataset("flickr30k", "test", root=root, skip_missing=True)


def test_coco_file_name_path_escape(tiny_root, tmp_path):
    root = _coco(tiny_root, tmp_path, [{"id": 7, "file_name": "../val2014/coffee.jpg"}],
                 [{"image_id": 7, "caption": "a cup"}])
    with pytest.raises(DataError, match=r"images\[0\]\.file_name: path '\.\./val2014/coffee\.jpg' leaves the dataset"):
        load_dataset("mscoco-2014", "dev", root=root, skip_missing=True)


# --------------------------------------------------------------------------- caption length
def test_an_overlong_caption_is_an_error_naming_the_line_or_a_counted_skip(tiny_root, tmp_path):
    """A 50 MB caption on one CSV line used to load silently."""
    from osgha_lite.data import SkippedDataWarning

    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 2, "coffee.jpg,a cup of coffee " + "and more coffee " * 3_125_000)  # line 3
    with pytest.raises(DataError) as raised:
        load_dataset("flickr8k", "train", root=root, skip_missing=True)
    assert str(raised.value) == (
        f"{folder / 'captions.txt'}, line 3: the caption is 50,000,015 characters long, more than "
        "max_caption_chars=10,000; shorten it or load with skip_bad_rows=True (a dataset declaration may raise "
        "the option 'max_caption_chars')")
    with pytest.warns(SkippedDataWarning, match=r"flickr8k/train: skipped 1 \(caption_too_long\), e\.g\. "
                                                r".*captions\.txt, line 3 \(50,000,015 characters\)"):
        data = load_dataset("flickr8k", "train", root=root, skip_bad_rows=True)
    assert data.skipped == {"caption_too_long": 1} and max(map(len, data.captions)) < 100


def test_the_caption_limit_holds_in_every_layout_and_a_declaration_sets_it(tiny_root, tmp_path):
    long = "a cat " * 2000  # 12,000 characters
    root30, _ = _flickr30k(tiny_root, tmp_path / "k", lambda c: c["images"][5]["sentences"][1].update(raw=long) or c)
    with pytest.raises(DataError, match=r"dataset_flickr30k\.json, images\[5\]\.sentences\[1\]: the caption is "
                                        r"11,999 characters long, more than max_caption_chars=10,000"):
        load_dataset("flickr30k", "test", root=root30)
    root = _coco(tiny_root, tmp_path / "c", [{"id": 7, "file_name": "coffee.jpg"}],
                 [{"image_id": 7, "caption": "a cup"}, {"image_id": 7, "caption": long}])
    with pytest.raises(DataError, match=r"captions_val2014\.json, annotations\[1\]: the caption is 11,999 characters"):
        load_dataset("mscoco-2014", "dev", root=root)
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    shutil.copy(tiny_root / "flickr8k" / "images" / "coffee.jpg", folder / "images" / "coffee.jpg")
    (folder / "captions.jsonl").write_text(json.dumps({"image": "coffee.jpg", "caption": "a cup"}) + "\n" +
                                           json.dumps({"image": "coffee.jpg", "caption": long}) + "\n")
    declaration = {"reader": "captions", "folder": str(folder),
                   "options": {"captions": "captions.jsonl", "images": "images", "split_of_rows": "test"}}
    spec = tmp_path / "mine.json"
    spec.write_text(json.dumps(declaration))
    with pytest.raises(DataError, match=r"captions\.jsonl, line 2: the caption is 11,999 characters long"):
        load_dataset(str(spec), "test")
    spec.write_text(json.dumps({**declaration, "options": {**declaration["options"], "max_caption_chars": 20_000}}))
    assert load_dataset(str(spec), "test").captions == ["a cup", long.strip()]
    spec.write_text(json.dumps({**declaration, "options": {**declaration["options"], "max_caption_chars": "many"}}))
    with pytest.raises(DataError, match=r"option 'max_caption_chars' must be a positive integer, not 'many'"):
        load_dataset(str(spec), "test")


# --------------------------------------------------------------------------- skips are counted and shown
def test_every_skip_is_counted_shown_and_in_the_summary(tiny_root, tmp_path):
    from osgha_lite.data import SkippedDataWarning

    root, folder = _flickr8k(tiny_root, tmp_path)
    (folder / "Flickr_8k.trainImages.txt").write_text("a.jpg\nastronaut.jpg\nb.jpg\nc.jpg\nd.jpg\ncoffee.jpg\n")
    _insert_line(folder / "captions.txt", 1, "astronaut.jpg,")
    with pytest.warns(SkippedDataWarning) as caught:
        data = load_dataset("flickr8k", "train", root=root, skip_missing=True, skip_bad_rows=True)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("flickr8k/train: skipped 4 (missing_image), e.g. ") and "line 1 names image 'a.jpg'" in m
               and "line 4 names image 'c.jpg'" in m and "d.jpg" not in m for m in messages)  # first three shown
    assert any(m.startswith("flickr8k/train: skipped 1 (bad_caption_row), e.g. ") and "captions.txt, line 2" in m
               for m in messages)
    summary = data.summary(details=True)
    assert set(data.summary()) == {"dataset", "split", "images", "captions", "captions_per_image_min",
                                   "captions_per_image_max", "skipped"}  # the split-count table keeps its columns
    assert data.image_ids == ["astronaut.jpg", "coffee.jpg"]
    assert summary["skipped"] == {"missing_image": 4, "bad_caption_row": 1}
    assert len(summary["skip_examples"]["missing_image"]) == 3
    assert summary["skip_examples"]["bad_caption_row"][0].endswith("captions.txt, line 2")


def test_lite_skip_missing_keeps_the_split_when_a_quote_breaks(tiny_root, tmp_path):
    """The reported failure: a stray quote used to swallow the file, and skip_missing hid it."""
    root, folder = _flickr8k(tiny_root, tmp_path)
    _insert_line(folder / "captions.txt", 1, 'astronaut.jpg,"a woman')
    with pytest.raises(DataError, match=r"line 2: the quote at column 15 does not close"):
        load_dataset("flickr8k", "train", root=root, skip_missing=True)

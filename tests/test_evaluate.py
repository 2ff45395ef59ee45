"""Tests for osgha_lite.apps.evaluate: the trained methods of a profile scored on another dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bad_images import PROBLEMS, write_bad_images
from osgha_lite.profiles import load_profile
from osgha_lite.data import CaptionDataset
from osgha_lite.apps.evaluate import EvaluateError, evaluate_external, external_folder, main, missing_inputs
from osgha_lite.metrics.retrieval import retrieval_metrics
from osgha_lite.metrics.results import read_result, results_root


def _write_descriptions(path: Path, captions: list[str]) -> None:
    """An augmentation cache in the format of osgha_lite.llm.augment, two descriptions per caption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"key": caption, "caption": caption, "status": "ok", "model": "m", "digest": "d",
                         "template": "t", "k": 2, "descriptions": [f"{caption} in a photo", f"a view: {caption}"]})
             for caption in captions]
    path.write_text("\n".join(lines) + "\n")


def test_command_scores_every_method_on_another_dataset(tiny_lite, capsys):
    """flickr30k test (2 images) under a profile trained on flickr8k: files, table, checkpoints, descriptions."""
    path, _, folder = tiny_lite
    covered = ["a red motorcycle parked outside"]  # one of the four flickr30k test captions has descriptions
    _write_descriptions(folder / "augmentations" / "flickr30k.jsonl", covered)
    assert main(["--profile", str(path), "--dataset", "flickr30k", "--split", "test", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    out = results_root() / "tiny-lite" / "external" / "flickr30k"
    assert sorted(p.name for p in out.iterdir()) == ["clip-adapter.test.json", "frozen-backbone.test.json",
                                                      "os-hgadapter.test.json"]
    assert not list((results_root() / "tiny-lite").glob("*.json"))  # the profile's own results are untouched
    assert "LLM descriptions: 1 of 4 captions covered by" in printed
    assert "os-hgadapter: no finished checkpoint" in printed  # nothing trained yet in this cache
    for method in ("frozen-backbone", "clip-adapter", "os-hgadapter"):
        record = read_result(out / f"{method}.test.json")
        assert record["dataset"] == "flickr30k" and record["split"] == "test" and record["method"] == method
        assert record["n_images"] == 2 and record["n_texts"] == 4
        low, high = record["intervals"]["all"]["rsum"]
        assert low <= record["metrics"]["all"]["rsum"] <= high
    hypergraph = read_result(out / "os-hgadapter.test.json")
    assert hypergraph["description_coverage"]["test"] == pytest.approx(0.25)
    assert hypergraph["protocol"]["adapt_images"] == 2  # trained on the profile's adapt images, not on flickr30k
    assert "rsum_low" in printed and "trained now" in printed

    # a second run reuses every checkpoint and gives the same numbers
    again = evaluate_external(load_profile(str(path)), "flickr30k", "test", ["os-hgadapter", "frozen-backbone"],
                              progress=False, log=lambda line: None)
    assert list(again["table"].method) == ["os-hgadapter", "frozen-backbone"]
    assert list(again["table"].checkpoint) == ["reused", "none"]
    assert again["table"].rsum.iloc[0] == pytest.approx(hypergraph["metrics"]["all"]["rsum"])
    first_image = evaluate_external(load_profile(str(path)), "flickr30k", "test", ["os-hgadapter"], limit_images=1,
                                    out=folder / "one", progress=False, log=lambda line: None)
    assert read_result(folder / "one" / "os-hgadapter.test.json")["n_images"] == 1
    assert first_image["runs"]["os-hgadapter"]["sims"].shape == (1, 2)
    frozen = again["runs"]["frozen-backbone"]
    expected = retrieval_metrics(frozen["sims"], np.array([0, 0, 1, 1]))["rsum"]
    assert frozen["metrics"]["all"]["rsum"] == pytest.approx(expected)


def test_a_profile_that_extends_another_reuses_its_checkpoints(tiny_lite, tiny_root):
    """Another name, another evaluation setting and a declared dataset: no method is trained again."""
    path, profile, folder = tiny_lite
    quiet = dict(progress=False, log=lambda line: None)
    evaluate_external(load_profile(str(path)), "flickr30k", "test", **quiet)  # the parent's checkpoints exist
    child = folder / "tiny-lite-child.json"
    child.write_text(json.dumps({"extends": str(path), "name": "tiny-lite-child",
                                 "eval": {"protocols": ["all"], "bootstrap": 7},
                                 "datasets": _own_datasets(tiny_root, folder)}))
    lines = []
    outcome = evaluate_external(load_profile(str(child)), "my-coco", "test", progress=False, log=lines.append)
    assert dict(zip(outcome["table"].method, outcome["table"].checkpoint)) == {
        "frozen-backbone": "none", "clip-adapter": "reused", "os-hgadapter": "reused"}
    assert not any("no finished checkpoint" in line for line in lines)
    assert outcome["folder"] == results_root() / "tiny-lite-child" / "external" / "my-coco"


def test_without_a_covering_cache_the_methods_run_without_descriptions(tiny_lite, tmp_path):
    path, _, _ = tiny_lite
    lines = []
    outcome = evaluate_external(load_profile(str(path)), "flickr8k", "dev", ["frozen-backbone"], out=tmp_path / "x",
                                progress=False, log=lines.append)
    assert any("no cache covers the captions of flickr8k" in line for line in lines)
    assert any("warning: flickr8k/dev holds images the profile trains on" in line for line in lines)
    assert outcome["coverage"] == 0.0 and (tmp_path / "x" / "frozen-backbone.dev.json").is_file()


def test_unknown_method_lists_the_profiles_methods(tiny_lite, capsys):
    path, _, _ = tiny_lite
    assert main(["--profile", str(path), "--dataset", "flickr30k", "--methods", "os-hgadapter", "nope"]) == 2
    error = capsys.readouterr().err
    assert "unknown method(s) ['nope']" in error and "known: frozen-backbone, clip-adapter, os-hgadapter" in error


def test_unknown_dataset_lists_the_registered_ones(tiny_lite, capsys):
    path, _, _ = tiny_lite
    assert main(["--profile", str(path), "--dataset", "flickr9k"]) == 2
    error = capsys.readouterr().err
    assert "cannot read dataset 'flickr9k'" in error and "built-in: flickr30k, flickr8k" in error


def test_unknown_split_and_profile_are_errors(tiny_lite, capsys):
    path, _, _ = tiny_lite
    assert main(["--profile", str(path), "--dataset", "flickr30k", "--split", "val"]) == 2
    assert "unknown split 'val'" in capsys.readouterr().err
    assert main(["--profile", "no-such-profile", "--dataset", "flickr30k"]) == 2
    assert "no profile 'no-such-profile'" in capsys.readouterr().err


def test_the_profiles_own_result_folder_is_refused(tiny_lite):
    _, profile, _ = tiny_lite
    with pytest.raises(EvaluateError, match="the profile's own result folder"):
        external_folder(profile, "flickr30k", results_root() / profile["name"])
    assert external_folder(profile, "flickr30k") == results_root() / "tiny-lite" / "external" / "flickr30k"


@pytest.mark.parametrize("name", ["..", ".", "../../pwned", "a/b", "my data", ""])
def test_a_dataset_name_that_is_not_a_plain_name_is_an_error_naming_the_declaration(tiny_lite, tiny_root,
                                                                                    capsys, name):
    """Declared in a file or in the profile, a name such as '..' never reaches a result path."""
    path, profile, folder = tiny_lite
    own = results_root() / "tiny-lite"
    own.mkdir(parents=True, exist_ok=True)
    committed = own / "frozen-backbone.test.json"
    committed.write_text('{"rsum": 247.74}\n')
    declaration = dict(_own_datasets(tiny_root, folder)["my-photos"], name=name)
    declaration["folder"] = str(folder / "own")
    file = folder / "odd-name.json"
    file.write_text(json.dumps(declaration))
    assert main(["--profile", str(path), "--dataset", str(file), "--methods", "frozen-backbone", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"error: cannot read dataset {str(file)!r}, split 'test': {file}: 'name' must be a plain name "
                     f"(letters, digits, '-', '_' and '.'; not '.' or '..'), not {name!r}")
    del declaration["name"]
    in_profile = folder / "odd-name-profile.json"
    in_profile.write_text(json.dumps(dict(profile, datasets={name: declaration})))
    assert main(["--profile", str(in_profile), "--dataset", name, "--methods", "frozen-backbone",
                 "--no-progress"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert committed.read_text() == '{"rsum": 247.74}\n'
    assert sorted(p.name for p in own.iterdir() if p.is_file()) == ["frozen-backbone.test.json"]


def test_the_result_folder_is_resolved_before_it_is_checked(tiny_lite):
    _, profile, _ = tiny_lite
    own = results_root() / "tiny-lite"
    (own / "external" / "linked").parent.mkdir(parents=True, exist_ok=True)
    if not (own / "external" / "linked").is_symlink():
        (own / "external" / "linked").symlink_to(own, target_is_directory=True)
    for out in (own / "external" / "x" / ".." / "..", own / "tables", own / "external", own / "external" / "linked",
                str(own) + "/./"):
        with pytest.raises(EvaluateError, match="inside the profile's own result folder"):
            external_folder(profile, "flickr30k", out)
    with pytest.raises(EvaluateError, match="the dataset name '..' is not a plain name"):
        external_folder(profile, "..")
    with pytest.raises(EvaluateError, match="the profile name '../x' is not a plain name"):
        external_folder(dict(profile, name="../x"), "flickr30k")
    assert external_folder(profile, "flickr30k", own / "external" / "a" / "b") == own / "external" / "a" / "b"
    assert external_folder(profile, "flickr30k", own.parent / "elsewhere") == own.parent / "elsewhere"


def test_a_method_whose_inputs_the_dataset_lacks_is_found(tiny_lite, tmp_path):
    """Vision-written image texts are looked up by path under the data root; images elsewhere cannot have them."""
    _, profile, _ = tiny_lite
    outside = CaptionDataset("mine", "test", ["a"], [tmp_path / "a.jpg"], ["a caption"], np.array([0]))
    vision = {"adapter": "apse-ipik", "image_texts": {"cache": "x.jsonl", "source": "vision"}}
    assert "outside it" in missing_inputs(vision, outside)
    assert missing_inputs(profile["methods"]["os-hgadapter"], outside) is None
    assert missing_inputs(vision, CaptionDataset("mine", "test", ["b"], [Path("/elsewhere/b.jpg")], ["b"],
                                                 np.array([0]))) is not None


def _own_datasets(tiny_root: Path, folder: Path) -> dict:
    """Two datasets declared only in a profile: COCO 2017 file names, and the captions CSV layout."""
    import shutil

    photos = tiny_root / "flickr8k" / "images"
    coco = folder / "own" / "coco2017"
    (coco / "val2017").mkdir(parents=True, exist_ok=True)
    (coco / "annotations").mkdir(exist_ok=True)
    for name in ("coffee", "rocket", "chelsea"):
        shutil.copy(photos / f"{name}.jpg", coco / "val2017" / f"{name}.jpg")
    (coco / "annotations" / "captions_val2017.json").write_text(json.dumps({
        "images": [{"id": 139, "file_name": "coffee.jpg"}, {"id": 285, "file_name": "rocket.jpg"},
                   {"id": 632, "file_name": "chelsea.jpg"}],
        "annotations": [{"id": 1, "image_id": 285, "caption": "a rocket on its pad"},
                        {"id": 2, "image_id": 139, "caption": "a cup of coffee"},
                        {"id": 3, "image_id": 632, "caption": "a cat looks to the side"},
                        {"id": 4, "image_id": 139, "caption": "coffee in a white cup"}]}))
    table = folder / "own" / "photos"
    (table / "space").mkdir(parents=True, exist_ok=True)
    shutil.copy(photos / "astronaut.jpg", table / "space" / "astronaut.jpg")
    shutil.copy(photos / "motorcycle_left.jpg", table / "bike.jpg")
    (table.parent / "captions.csv").write_text(
        "image,caption,split\n"
        "space/astronaut.jpg,an astronaut in a white suit,test\n"
        "bike.jpg,a red motorbike,test\n"
        "space/astronaut.jpg,\"a smiling woman, a flag behind her\",test\n")
    return {
        "my-coco": {"reader": "coco", "folder": str(coco), "options": {"splits": {
            "test": {"annotations": "annotations/captions_val2017.json", "images": "val2017"}}}},
        "my-photos": {"reader": "captions", "folder": str(table.parent),
                      "options": {"captions": "captions.csv", "images": "photos"}},
    }


@pytest.mark.parametrize("dataset, n_images, n_texts", [("my-coco", 3, 4), ("my-photos", 2, 3)])
def test_a_dataset_declared_only_in_the_profile_evaluates_end_to_end(tiny_lite, tiny_root, capsys,
                                                                      dataset, n_images, n_texts):
    """No code change: the profile's "datasets" key declares the COCO 2017 or CSV dataset, and the command runs."""
    path, profile, folder = tiny_lite
    own = dict(profile, datasets=_own_datasets(tiny_root, folder))
    own_path = folder / "tiny-lite-own.json"
    own_path.write_text(json.dumps(own))
    assert main(["--profile", str(own_path), "--dataset", dataset, "--methods", "frozen-backbone", "os-hgadapter",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "no cache covers the captions" in printed
    out = results_root() / "tiny-lite" / "external" / dataset
    for method in ("frozen-backbone", "os-hgadapter"):
        record = read_result(out / f"{method}.test.json")
        assert record["dataset"] == dataset and record["n_images"] == n_images and record["n_texts"] == n_texts
        assert 0 <= record["metrics"]["all"]["rsum"] <= 600


def test_bad_images_are_skipped_counted_and_named_in_the_result_files(tiny_lite, tiny_root, capsys, monkeypatch):
    """Two photos and four files that cannot be decoded, each with a caption: the photos are evaluated."""
    import shutil

    from osgha_lite.backbones.encoders import EfficientNetLite0Encoder

    path, profile, folder = tiny_lite
    photos = folder / "mixed" / "photos"
    bad = write_bad_images(photos, tiny_root / "flickr8k" / "images" / "coffee.jpg")
    for name in ("rocket", "chelsea"):
        shutil.copy(tiny_root / "flickr8k" / "images" / f"{name}.jpg", photos / f"{name}.jpg")
    rows = ["rocket.jpg,a rocket on its pad", "chelsea.jpg,a cat looks aside", "rocket.jpg,a launch tower"]
    rows += [f"{file.name},a caption of {file.stem}" for file in bad]
    (folder / "mixed" / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    declared = {"mixed": {"reader": "captions", "folder": str(folder / "mixed"),
                          "options": {"captions": "captions.csv", "images": "photos", "split_of_rows": "test"}}}
    own_path = folder / "tiny-lite-mixed.json"
    own_path.write_text(json.dumps(dict(profile, datasets=declared)))
    decodes, pixels = [], EfficientNetLite0Encoder.pixels
    monkeypatch.setattr(EfficientNetLite0Encoder, "pixels", lambda self, p: (decodes.append(str(p)),
                                                                            pixels(self, p))[1])
    command = ["--profile", str(own_path), "--dataset", "mixed", "--methods", "frozen-backbone", "os-hgadapter",
               "--no-progress"]
    assert main(command) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in out.splitlines() if "warning: skipped image" in line]
    assert len(warnings) == 4 and "Traceback" not in out + err
    for file in bad:
        line = next(line for line in warnings if f"skipped image {file}:" in line)
        assert f"cannot decode it (" in line and PROBLEMS[file.name] in line
    assert "mixed/test: 4 of 6 images skipped (cannot be decoded), with their captions; 2 images, 3 captions remain" \
        in out
    assert "skipped 4 images that cannot be decoded" in out
    files = sorted(str(file) for file in photos.iterdir())
    assert sorted(p for p in decodes if p in files) == files  # each image decoded once
    for method in ("frozen-backbone", "os-hgadapter"):
        record = read_result(results_root() / "tiny-lite" / "external" / "mixed" / f"{method}.test.json")
        assert record["n_images"] == 2 and record["n_texts"] == 3
        assert record["skipped_images"]["count"] == 4
        assert record["skipped_images"]["examples"][str(bad[3])] == "an empty file (0 bytes)"
    decodes.clear()
    assert main(command + ["--strict"]) == 2
    out, err = capsys.readouterr()
    assert not decodes and out.count("warning: skipped image") == 4  # read from the cache this time
    assert err == ("error: 4 of the 6 images of mixed/test cannot be decoded (listed above), and --strict makes "
                   "that an error\n")


def test_every_error_is_one_line_and_debug_shows_the_traceback(tiny_lite, capsys, monkeypatch):
    from osgha_lite.apps import evaluate

    path, _, _ = tiny_lite

    def broken(*args, **kwargs):
        raise KeyError("no such column")

    monkeypatch.setattr(evaluate, "evaluate_external", broken)
    assert main(["--profile", str(path), "--dataset", "flickr30k"]) == 1
    assert capsys.readouterr().err == ("error: KeyError: 'no such column' (run again with --debug for the "
                                       "traceback)\n")
    with pytest.raises(KeyError):
        main(["--profile", str(path), "--dataset", "flickr30k", "--debug"])


def test_a_broken_declared_dataset_is_an_error_naming_the_file(tiny_lite, tiny_root, capsys):
    path, profile, folder = tiny_lite
    datasets = _own_datasets(tiny_root, folder)
    (folder / "own" / "captions.csv").write_text("image,caption,split\nbike.jpg,\"a red motorbike,test\n")
    own_path = folder / "tiny-lite-broken.json"
    own_path.write_text(json.dumps(dict(profile, datasets=datasets)))
    assert main(["--profile", str(own_path), "--dataset", "my-photos", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "captions.csv, line 2" in error and "does not close" in error

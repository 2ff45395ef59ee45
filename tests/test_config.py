"""Profiles: ``extends`` inheritance, ``{dataset}`` placeholders and clear errors."""

from __future__ import annotations

import json

import pytest

from osgha_lite.profiles import ProfileError, available_profiles, load_profile

# Top-level fields some notebook reads from the profile it runs with.
NOTEBOOK_FIELDS = ("name", "dataset", "backbone", "eval", "augmentation", "adapter_training", "methods", "sweeps",
                   "related_sweeps")


def write(path, profile):
    path.write_text(json.dumps(profile), encoding="utf-8")
    return path


def test_every_built_in_profile_has_what_the_notebooks_read():
    for name in available_profiles():
        profile = load_profile(name)
        missing = [field for field in NOTEBOOK_FIELDS if field not in profile]
        assert not missing, f"{name}: {missing}"
        assert "extends" not in profile
        assert not any("{dataset}" in text for text in _strings(profile)), name


def test_paper_profiles_inherit_the_lite_methods_and_keep_their_own_backbone():
    lite = load_profile("lite")
    for name, dataset in (("paper-flickr30k", "flickr30k"), ("paper-coco", "mscoco")):
        paper = load_profile(name)
        assert paper["dataset"] == dataset and paper["name"] == name
        assert set(paper["methods"]) == set(lite["methods"])
        assert paper["sweeps"] == lite["sweeps"] and paper["adapter_training"] == lite["adapter_training"]
        # the whole backbone field is the paper profile's: nothing of the lite heads leaks in
        assert paper["backbone"]["kind"] == "openclip" and "train" not in paper["backbone"]
        # cache paths follow the dataset
        assert paper["augmentation"]["cache"] == f"data/augmentations/{dataset}.jsonl"
        assert paper["methods"]["entityclip"]["descriptions_cache"] == \
            f"data/augmentations/{dataset}.explanations.jsonl"
    assert lite["augmentation"]["cache"] == "data/augmentations/flickr8k.jsonl"


def test_protocols_of_the_built_in_profiles():
    from osgha_lite.data import protocol_settings

    for name in available_profiles():  # every protocol is valid
        protocol_settings(load_profile(name))
    lite = load_profile("lite")
    assert protocol_settings(lite)["kind"] == "disjoint"
    assert isinstance(lite["protocol"]["pretrain_images"], int) and lite["protocol"]["pretrain_images"] > 0
    for name in ("paper-flickr30k", "paper-coco"):  # the CLIP backbone trains nothing here: nothing to divide
        assert protocol_settings(load_profile(name))["kind"] == "shared"
    shared = load_profile("lite-shared")
    assert shared["name"] == "lite-shared" and shared["dataset"] == lite["dataset"]
    assert shared["protocol"] == {"kind": "shared"}
    # everything but the protocol (and its own name and description) is lite's
    different = {k for k in set(shared) | set(lite) if shared.get(k) != lite.get(k)}
    assert different == {"name", "description", "protocol"}
    assert shared["methods"] == lite["methods"] and shared["backbone"] == lite["backbone"]


def test_lite_has_the_frozen_csls_and_paper_settings_methods():
    methods = load_profile("lite")["methods"]
    csls = methods["frozen-csls"]
    assert csls["adapter"] == "hypergraph" and csls["train"]["epochs"] == 0  # evaluated, never trained
    assert csls["options"]["alpha"] == 0.0 and csls["options"]["hubness_weight"] > 0
    paper = methods["os-hgadapter-paper"]
    assert paper["adapter"] == "hypergraph" and "pair" not in paper["options"]["hyperedges"]
    assert paper["options"]["hubness_weight"] == 0.0
    assert paper["options"]["hyperedges"] == ["semantic", "knn"] and paper["descriptions"] > 0
    for name in ("paper-flickr30k", "paper-coco", "lite-shared"):
        assert {"frozen-csls", "os-hgadapter-paper"} <= set(load_profile(name)["methods"])


def test_extends_takes_the_unset_top_level_fields_and_relative_paths(tmp_path):
    write(tmp_path / "base.json", {"name": "base", "dataset": "flickr8k", "backbone": {"kind": "lite", "x": 1},
                                    "seed": 3, "out": "runs/{dataset}"})
    write(tmp_path / "child.json", {"name": "child", "extends": "base.json", "dataset": "flickr30k",
                                     "backbone": {"kind": "openclip"}})
    child = load_profile(str(tmp_path / "child.json"), {"seed": 4})
    assert child == {"name": "child", "dataset": "flickr30k", "backbone": {"kind": "openclip"}, "seed": 4,
                     "out": "runs/flickr30k"}


def test_profile_errors_name_the_file_and_the_problem(tmp_path):
    write(tmp_path / "a.json", {"name": "a", "extends": "b.json"})
    write(tmp_path / "b.json", {"name": "b", "extends": "a.json"})
    with pytest.raises(ProfileError, match="circle"):
        load_profile(str(tmp_path / "a.json"))
    write(tmp_path / "orphan.json", {"name": "o", "extends": "no-such-profile"})
    with pytest.raises(ProfileError, match="no-such-profile"):
        load_profile(str(tmp_path / "orphan.json"))
    write(tmp_path / "nokind.json", {"name": "n", "dataset": "flickr8k", "backbone": {}})
    with pytest.raises(ProfileError, match=r"nokind\.json: missing field 'backbone\.kind'"):
        load_profile(str(tmp_path / "nokind.json"))
    (tmp_path / "broken.json").write_text('{"name": "x",\n "dataset": }', encoding="utf-8")
    with pytest.raises(ProfileError, match=r"broken\.json, line 2"):
        load_profile(str(tmp_path / "broken.json"))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)

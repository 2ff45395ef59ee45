"""Tests for osgha_lite.train.experiment: run_method end to end on tiny synthetic embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from osgha_lite.train import experiment

from osgha_lite.train import timings
from osgha_lite.train.experiment import (
    Embedded,
    cached_neighbour_table,
    description_memory,
    load_profile_augmentations,
    prepare_method,
    run_method,
    score_method,
    sweep_methods,
)
from osgha_lite.methods.hypergraph import TEXT, HypergraphAdapter, MemoryBank
from osgha_lite.metrics.retrieval import retrieval_metrics
from osgha_lite.metrics.results import read_result

DIM = 16


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Cache, results and timing log in a temporary folder, two threads at most, an empty neighbour-table cache."""
    monkeypatch.setenv("OSGHA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OSGHA_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("OSGHA_TIMINGS_DIR", str(tmp_path / "timings"))
    monkeypatch.setattr(experiment, "_TABLE_CACHE", {})
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(previous)


def toy_split(n_images: int, seed: int, captions_per_image: int = 2, n_descriptions: int = 2) -> Embedded:
    """Captions are noisy copies of their image's vector; the first caption of each image has descriptions."""
    rng = np.random.default_rng(seed)
    unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    images = unit(rng.normal(size=(n_images, DIM)))
    text_to_image = np.repeat(np.arange(n_images), captions_per_image)
    texts = unit(images[text_to_image] + 0.8 * rng.normal(size=(len(text_to_image), DIM)))
    descriptions = unit(texts[:, None, :] + 0.5 * rng.normal(size=(len(texts), n_descriptions, DIM)))
    mask = np.zeros((len(texts), n_descriptions), dtype=bool)
    mask[::captions_per_image] = True
    descriptions[~mask] = 0.0
    return Embedded(images, texts, text_to_image, descriptions, mask)


PROFILE = {
    "name": "tiny",
    "dataset": "toy",
    "seed": 0,
    "eval": {"protocols": ["all"], "bootstrap": 20},
    "augmentation": {"cache": "does/not/exist.jsonl", "descriptions": 2},
    "adapter_training": {
        "train": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.01, "patience": 1},
        "memory": {"max_nodes": None},
    },
    "methods": {
        "frozen-backbone": {"adapter": "identity"},
        "clip-adapter": {"adapter": "bottleneck", "options": {"reduction": 4, "alpha": 0.2}},
        "os-hgadapter": {
            "adapter": "hypergraph",
            "options": {"k": 2, "reduced_dim": 8, "alpha": 0.2, "hyperedges": ["semantic", "pair"],
                        "hubness_weight": 1.0, "hubness_k": 4},
            "descriptions": 2,
            "train": {"lr": 1e-4},
        },
    },
    "sweeps": {"base": "os-hgadapter", "k": [1, 2], "alpha": [0.5], "descriptions": [0, 1]},
}


@pytest.fixture(scope="module")
def splits():
    return toy_split(10, seed=0), toy_split(5, seed=1), toy_split(6, seed=2)


def run(name, splits, method=None):
    train, dev, test = splits
    return run_method(name, method or PROFILE["methods"][name], PROFILE, "toy-backbone", train, dev, test,
                      progress=False)


def test_frozen_backbone_is_the_raw_similarity_and_writes_its_result(splits):
    _, _, test = splits
    result = run("frozen-backbone", splits)
    np.testing.assert_allclose(result["sims"], test.images @ test.texts.T, rtol=0, atol=1e-6)
    assert result["history"] is None
    expected = retrieval_metrics(test.images @ test.texts.T, test.text_to_image)
    assert result["metrics"]["all"]["rsum"] == pytest.approx(expected["rsum"])
    record = read_result(result["path"])
    assert record["method"] == "frozen-backbone" and record["split"] == "test" and record["transductive"] is False
    assert record["n_images"] == 6 and record["n_texts"] == 12
    assert record["dev_metrics"]["all"]["rsum"] == pytest.approx(result["dev_metrics"]["rsum"])
    low, high = record["intervals"]["all"]["rsum"]
    assert low <= record["metrics"]["all"]["rsum"] <= high


def test_os_hgadapter_trains_evaluates_and_reloads_its_checkpoint(splits, isolated):
    first = run("os-hgadapter", splits)
    record = read_result(first["path"])
    assert record["config"]["adapter"]["hyperedges"] == ["semantic", "pair"]
    assert record["config"]["adapter"]["out_dim"] == DIM + 2  # the hubness phase
    assert record["config"]["train"]["lr"] == 1e-4  # the method's override of the profile's settings
    assert record["transductive"] is False
    assert record["description_coverage"] == {"train": 0.5, "dev": 0.5, "test": 0.5}
    history = record["training"]
    assert 2 <= len(history["epochs"]) <= 4 and history["finished"]  # epoch 0 (before training), then 1..3
    assert history["epochs"][0]["epoch"] == 0 and history["epochs"][0]["train_loss"] is None
    assert history["initial_dev_rsum"] == history["epochs"][0]["dev_rsum"]
    assert history["improved"] == (history["best_epoch"] > 0)
    assert record["protocol"] == {"kind": "shared", "seed": 0, "adapt_images": 10, "adapt_captions": 20}
    assert first["sims"].shape == (6, 12)
    assert first["metrics"]["all"]["rsum"] == pytest.approx(
        retrieval_metrics(first["sims"], splits[2].text_to_image)["rsum"])
    assert first["dev_metrics"]["rsum"] == pytest.approx(history["best_rsum"])
    checkpoints = list((isolated / "cache" / "adapters").glob("os-hgadapter-*.safetensors"))
    assert len(checkpoints) == 1
    # No wall-clock time in the result file; they are in the timing log, under the result file's name.
    assert "seconds" not in record and "prepare_seconds" not in record and "seconds" not in history
    logged = timings.load("tiny")["os-hgadapter.test"]
    assert set(logged) == {"prepare_seconds", "train_seconds", "total_seconds"}
    assert logged["train_seconds"] == pytest.approx(first["history"].seconds)
    assert logged["total_seconds"] == pytest.approx(first["seconds"]) and first["prepare_seconds"] >= 0
    written = Path(first["path"]).read_bytes()
    # A rerun loads the finished checkpoint: same history, same similarities, the same bytes in the result file.
    again = run("os-hgadapter", splits)
    assert again["history"].as_dict() == first["history"].as_dict()
    np.testing.assert_array_equal(again["sims"], first["sims"])
    assert Path(again["path"]).read_bytes() == written


def test_checkpoints_are_found_by_what_they_were_trained_on_not_by_the_profiles_name(splits, tmp_path):
    """A profile that extends another and changes only its name, datasets or evaluation settings looks up the
    same checkpoint file; a change of any training setting looks up another one."""
    from osgha_lite.profiles import load_profile, merge
    from osgha_lite.train.experiment import method_checkpoint

    train, dev, test = splits
    parent = tmp_path / "parent.json"
    parent.write_text(json.dumps({**PROFILE, "backbone": {"kind": "lite"}}))
    child = tmp_path / "child.json"
    child.write_text(json.dumps({"extends": str(parent), "name": "tiny-heldout",
                                 "eval": {"protocols": ["all"], "bootstrap": 5},
                                 "datasets": {"mine": {"reader": "captions", "folder": "mine",
                                                       "options": {"captions": "c.csv", "images": "i"}}}}))

    def checkpoint(profile, name="os-hgadapter"):
        method = profile["methods"][name]
        prepared = prepare_method(method, profile, train, dev, test, train_links=False)
        return method_checkpoint(name, method, profile, prepared, "toy-backbone", train, dev)

    reference = checkpoint(load_profile(str(parent)))
    assert checkpoint(load_profile(str(child))) == reference
    assert "tiny" not in reference.name and reference.name.startswith("os-hgadapter-")
    assert checkpoint(load_profile(str(child)), "clip-adapter") != reference
    for change in ({"adapter_training": {"train": {"weight_decay": 0.5}}},
                   {"adapter_training": {"memory": {"max_nodes": 8}}},
                   {"seed": 1}, {"methods": {"os-hgadapter": {"options": {"k": 3}}}}):
        assert checkpoint(merge(load_profile(str(child)), change)) != reference, change


def test_a_method_with_zero_epochs_is_evaluated_untrained(splits):
    """``train.epochs = 0`` (as lite's frozen-csls): the initial adapter is evaluated and recorded as epoch 0."""
    method = {**PROFILE["methods"]["os-hgadapter"], "train": {"epochs": 0}}
    result = run("untrained-hypergraph", splits, method)
    record = read_result(result["path"])
    history = record["training"]
    assert [e["epoch"] for e in history["epochs"]] == [0] and history["finished"]
    assert history["best_epoch"] == 0 and history["improved"] is False
    assert result["dev_metrics"]["rsum"] == pytest.approx(history["initial_dev_rsum"])
    profile = {**PROFILE, "protocol": {"kind": "disjoint", "pretrain_images": 4, "seed": 2}}
    record = read_result(run_method("frozen-backbone", PROFILE["methods"]["frozen-backbone"], profile, "toy-backbone",
                                    *splits, progress=False)["path"])
    assert record["protocol"] == {"kind": "disjoint", "pretrain_images": 4, "seed": 2, "adapt_images": 10,
                                  "adapt_captions": 20}


def test_test_queries_are_adapted_inductively(splits):
    """Changing one test caption changes its own column of similarities only."""
    train, dev, test = splits
    method = PROFILE["methods"]["os-hgadapter"]
    base = run_method("os-hgadapter", method, PROFILE, "toy-backbone", train, dev, test, progress=False)
    texts = test.texts.copy()
    texts[3] = texts[7]
    changed = Embedded(test.images, texts, test.text_to_image, test.descriptions, test.description_mask)
    other = run_method("os-hgadapter", method, PROFILE, "toy-backbone", train, dev, changed, progress=False)
    untouched = [j for j in range(texts.shape[0]) if j != 3]
    np.testing.assert_allclose(other["sims"][:, untouched], base["sims"][:, untouched], rtol=0, atol=1e-6)
    np.testing.assert_allclose(other["sims"][:, 3], base["sims"][:, 7], rtol=0, atol=1e-6)


def test_baseline_and_hypergraph_share_one_neighbour_search(splits):
    train, _, _ = splits
    run("clip-adapter", splits)
    assert experiment._TABLE_CACHE == {}  # no memory, no search
    run("os-hgadapter", splits)
    n_tables = len(experiment._TABLE_CACHE)
    assert n_tables == 6  # train, dev, test x images, texts
    sweep = sweep_methods(PROFILE)["sweep-k=1"]
    run_method("sweep-k=1", sweep, PROFILE, "toy-backbone", *splits, progress=False)
    assert len(experiment._TABLE_CACHE) == n_tables  # reused, not searched again
    adapter = HypergraphAdapter(DIM, k=2, hubness_weight=1.0, hubness_k=4)
    adapter.set_memory(MemoryBank.from_train_split(torch.as_tensor(train.images), torch.as_tensor(train.texts),
                                                   torch.as_tensor(train.text_to_image)))
    texts = torch.as_tensor(train.texts)
    table = cached_neighbour_table(adapter, "train", texts, "text", torch.as_tensor(train.text_to_image))
    assert table is cached_neighbour_table(adapter, "train", texts, "text", torch.as_tensor(train.text_to_image))
    assert table.widths == experiment.TABLE_MIN_WIDTHS  # padded with -1 beyond the 20 captions / 10 images
    assert int((table.other_rows >= 0).sum(dim=1).max()) == 9  # every image but the caption's own


def test_sweep_methods_vary_one_option_at_a_time():
    methods = sweep_methods(PROFILE)
    assert sorted(methods) == ["sweep-alpha=0.5", "sweep-descriptions=0", "sweep-descriptions=1", "sweep-k=1"]
    assert methods["sweep-k=1"]["options"]["k"] == 1 and methods["sweep-k=1"]["options"]["alpha"] == 0.2
    assert methods["sweep-descriptions=0"]["descriptions"] == 0
    assert methods["sweep-alpha=0.5"]["train"] == {"lr": 1e-4}
    assert PROFILE["methods"]["os-hgadapter"]["options"]["k"] == 2  # the base is not modified


def test_load_profile_augmentations_reads_the_cache_or_returns_nothing(tmp_path):
    assert load_profile_augmentations(PROFILE) == {}
    assert load_profile_augmentations({"name": "x"}) == {}
    cache = tmp_path / "augment.jsonl"
    record = {"key": "k1", "caption": "a dog runs .", "status": "ok", "k": 2, "model": "m", "template": "t",
              "descriptions": ["A dog is running.", "The dog moves fast."]}
    failed = {**record, "key": "k2", "caption": "a cat .", "status": "failed", "descriptions": ["A cat."]}
    cache.write_text(json.dumps(record) + "\n" + json.dumps(failed) + "\n")
    profile = {**PROFILE, "augmentation": {"cache": str(cache), "descriptions": 2}}
    assert load_profile_augmentations(profile) == {"a dog runs .": ["A dog is running.", "The dog moves fast."]}
    # a cache stored compressed (X.jsonl.gz only) is read through the same .jsonl name
    from osgha_lite.llm.augment import compress_cache

    compress_cache(cache)
    assert not cache.exists()
    assert load_profile_augmentations(profile) == {"a dog runs .": ["A dog is running.", "The dog moves fast."]}


def test_description_memory_adds_each_description_to_its_captions_image_group(splits):
    train, dev, test = splits
    bank = description_memory(train, 2)
    rows, slots = np.nonzero(train.description_mask)
    assert len(bank) == len(rows) == 10 * 2  # first caption of each of 10 images, 2 descriptions each
    np.testing.assert_array_equal(bank.group_ids.numpy(), train.text_to_image[rows])
    assert bool((bank.modality == TEXT).all())
    np.testing.assert_array_equal(bank.features.numpy(), train.descriptions[rows, slots])
    assert len(description_memory(train, 1)) == 10

    method = dict(PROFILE["methods"]["os-hgadapter"], memory_descriptions=True)
    with_descriptions = prepare_method(method, PROFILE, train, dev, test)
    without = prepare_method(PROFILE["methods"]["os-hgadapter"], PROFILE, train, dev, test)
    assert len(with_descriptions.adapter.memory) == len(without.adapter.memory) + 20
    no_descriptions = prepare_method(dict(method, descriptions=0), PROFILE, train, dev, test)
    assert len(no_descriptions.adapter.memory) == len(without.adapter.memory)


def test_score_method_matches_run_method_and_adapts_extra_text_queries(splits):
    train, dev, test = splits
    method = PROFILE["methods"]["os-hgadapter"]
    scored = score_method("os-hgadapter", method, PROFILE, "toy-backbone", train, dev, test, progress=False)
    result = run("os-hgadapter", splits)
    np.testing.assert_allclose(scored.sims, result["sims"], rtol=0, atol=1e-6)
    # A test caption given as an extra query (without its descriptions) is adapted like a caption
    # whose descriptions are absent; the outputs are unit vectors in the adapter's output space.
    extra = scored.encode_texts(test.texts[:3])
    assert extra.shape == (3, scored.test_texts.shape[1])
    np.testing.assert_allclose(np.linalg.norm(extra, axis=1), 1.0, atol=1e-5)
    bare = Embedded(test.images, test.texts, test.text_to_image, test.descriptions,
                    np.zeros_like(test.description_mask))
    plain = score_method("os-hgadapter", method, PROFILE, "toy-backbone", train, dev, bare, progress=False)
    np.testing.assert_allclose(extra, plain.test_texts.numpy()[:3], rtol=0, atol=1e-5)


def _with_extras(split: Embedded, seed: int, views: int = 3) -> Embedded:
    """A toy split plus perspective texts on even images and local features (images: 4 regions, texts: 5 tokens)."""
    from dataclasses import replace

    from osgha_lite.backbones import LocalFeatures

    rng = np.random.default_rng(seed)
    n_images, n_texts = len(split.images), len(split.texts)
    image_texts = (split.images[:, None, :] + 0.3 * rng.normal(size=(n_images, views, DIM))).astype(np.float32)
    image_text_mask = np.zeros((n_images, views), bool)
    image_text_mask[::2] = True
    regions = (split.images[:, None, :] + 0.5 * rng.normal(size=(n_images, 4, DIM))).astype(np.float32)
    tokens = (split.texts[:, None, :] + 0.5 * rng.normal(size=(n_texts, 5, DIM))).astype(np.float32)
    token_mask = np.arange(5)[None] < rng.integers(2, 6, size=n_texts)[:, None]
    local = LocalFeatures(regions, np.ones((n_images, 4), bool), tokens * token_mask[..., None], token_mask)
    return replace(split, image_texts=image_texts, image_text_mask=image_text_mask, local=local)


RELATED = {
    "entityclip": {"adapter": "entityclip", "options": {"heads": 2}, "descriptions": 1},
    "apse-ipik": {"adapter": "apse-ipik", "options": {"pool_size": 6, "top_k": 2}},
    "hgan": {"adapter": "hgan", "options": {"slots": 2}, "local": True},
}


@pytest.mark.parametrize("name", sorted(RELATED))
def test_related_methods_train_and_write_results(splits, name):
    extended = tuple(_with_extras(split, seed) for seed, split in enumerate(splits))
    result = run(name, extended, RELATED[name])
    record = read_result(result["path"])
    assert record["config"]["adapter"]["name"] == name and record["transductive"] is False
    assert result["sims"].shape == (6, 12) and record["training"]["finished"]
    assert record["metrics"]["all"]["rsum"] == pytest.approx(
        retrieval_metrics(result["sims"], splits[2].text_to_image)["rsum"])
    if name == "apse-ipik":
        assert record["image_text_coverage"]["train"] == 0.5


def test_method_embeddings_adds_only_what_a_method_asks_for(tmp_path, monkeypatch, data_env):
    """Explanations replace the descriptions; perspectives reach training images only; local features load."""
    from osgha_lite.backbones import LocalFeatures
    from osgha_lite.data import load_dataset
    from osgha_lite.train.experiment import embed_with_descriptions, method_embeddings

    class Backbone:
        identity, dim = "fake", DIM

        def embed(self, data, progress=True):
            return np.ones((len(data.image_paths), DIM), np.float32), np.ones((len(data.captions), DIM), np.float32)

        def encode_texts(self, texts, dataset="adhoc", split="adhoc", progress=True):
            return np.array([[len(t)] * DIM for t in texts], np.float32)

        def embed_local(self, data, progress=True):
            return LocalFeatures(np.zeros((len(data.image_paths), 2, DIM), np.float32), np.ones((len(data.image_paths), 2), bool),
                                 np.zeros((len(data.captions), 3, DIM), np.float32), np.ones((len(data.captions), 3), bool))

    from osgha_lite.llm.augment import image_caption_groups

    data = {s: load_dataset("flickr8k", s) for s in ("train", "dev", "test")}
    explanation_cache, perspective_cache = tmp_path / "explanations.jsonl", tmp_path / "perspectives.jsonl"
    caption = data["train"].captions[0]
    explanation_cache.write_text(json.dumps({"key": "a", "caption": caption, "status": "ok", "descriptions": ["why"],
                                             "model": "m", "k": 1}) + "\n")
    group = image_caption_groups(data["train"], 2)[1]
    perspective_cache.write_text(json.dumps({"key": "b", "caption": group, "status": "ok", "descriptions": ["s1", "bg", "ent"],
                                             "model": "m", "k": 3}) + "\n")
    monkeypatch.setattr(experiment, "_EXTRA_CACHE", {})
    backbone = Backbone()
    base = {s: embed_with_descriptions(backbone, d, {}, 3, progress=False) for s, d in data.items()}
    plain = method_embeddings({"adapter": "identity"}, backbone, data, base)
    assert all(plain[s] is base[s] for s in data)
    method = {"adapter": "entityclip", "descriptions": 1, "descriptions_cache": str(explanation_cache),
              "image_texts": {"cache": str(perspective_cache), "captions_per_image": 2}, "local": True}
    extended = method_embeddings(method, backbone, data, base, progress=False)
    train = extended["train"]
    assert train.description_mask[:, 0].tolist() == [c == caption for c in data["train"].captions]
    assert train.descriptions[0, 0, 0] == len("why")
    assert train.image_text_mask.any(1).tolist() == [i == 1 for i in range(len(data["train"].image_paths))]
    assert train.image_texts[1, :, 0].tolist() == [len("s1"), len("bg"), len("ent")]
    assert not extended["test"].image_text_mask.any()  # caption-derived texts never reach test images
    assert extended["test"].local.texts.shape == (len(data["test"].captions), 3, DIM)


def test_sweeps_of_another_base_carry_its_name():
    profile = {**PROFILE, "methods": {**PROFILE["methods"], **RELATED},
               "related_sweeps": {"base": "apse-ipik", "perspective_weight": [0.0, 0.5], "top_k": [2]}}
    methods = sweep_methods(profile, "related_sweeps")
    assert sorted(methods) == ["sweep-apse-ipik-perspective_weight=0.0", "sweep-apse-ipik-perspective_weight=0.5"]
    assert methods["sweep-apse-ipik-perspective_weight=0.0"]["options"] == {"pool_size": 6, "top_k": 2,
                                                                          "perspective_weight": 0.0}

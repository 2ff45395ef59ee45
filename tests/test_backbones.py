"""Backbones on tiny real photos: unit vectors, shared dimension, cached features, the paper path offline."""

from __future__ import annotations

import numpy as np
import pytest

from osgha_lite.backbones import LiteBackbone, OpenClipBackbone, build_backbone
from osgha_lite.profiles import load_profile
from osgha_lite.data import load_dataset
from osgha_lite.backbones.features import cache_root
from osgha_lite.metrics.protocols import evaluate_similarity, similarity
from osgha_lite.metrics.results import METRIC_KEYS, load_results, read_result, write_result


def _unit_rows(x):
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# The tiny Flickr8k train split has 4 images: the lite protocol gives 2 to the heads and 2 to the methods.
TINY_PROTOCOL = {"protocol": {"pretrain_images": 2}}


def test_lite_backbone_trains_heads_on_pretrain_only_and_reloads(data_env):
    from osgha_lite.data import load_profile_split

    profile = load_profile("lite", {**TINY_PROTOCOL, "backbone": {"train": {"epochs": 2, "batch_size": 4}}})
    backbone = build_backbone(profile, progress=False)
    assert backbone.identity.startswith("lite:efficientnet-lite0:") and "heads-" in backbone.identity
    test = load_dataset("flickr8k", "test")
    images, texts = backbone.embed(test, progress=False)
    assert images.shape == (1, 256) and texts.shape == (2, 256)
    _unit_rows(images), _unit_rows(texts)
    assert len(backbone.history.epochs) == 3  # epoch 0 (before training) and 2 trained epochs
    assert backbone.history.epochs[0]["train_loss"] is None
    # the standardization comes from the pretrain images only, and the checkpoint says which split
    pretrain_images, pretrain_texts = backbone.raw_features(load_profile_split(profile, "pretrain"), progress=False)
    np.testing.assert_allclose(backbone.heads.image_mean.numpy(), pretrain_images.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backbone.heads.text_mean.numpy(), pretrain_texts.mean(0), rtol=1e-5, atol=1e-6)
    train_images, _ = backbone.raw_features(load_dataset("flickr8k", "train", skip_missing=True), progress=False)
    assert not np.allclose(backbone.heads.image_mean.numpy(), train_images.mean(0))
    (checkpoint,) = (cache_root() / "heads").glob("*.safetensors")
    assert checkpoint.name.startswith("lite-flickr8k-pretrain-")
    # the adapt split's features are rows of the train cache, projected like any split
    adapt = load_profile_split(profile, "adapt")
    adapt_images, adapt_texts = backbone.embed(adapt, progress=False)
    train_embedded = backbone.embed(load_dataset("flickr8k", "train", skip_missing=True), progress=False)
    np.testing.assert_allclose(adapt_images, train_embedded[0][adapt.source.rows("image")], atol=1e-6)
    np.testing.assert_allclose(adapt_texts, train_embedded[1][adapt.source.rows("text")], atol=1e-6)
    assert not list((cache_root() / "features").glob("flickr8k-adapt-*"))
    again = build_backbone(profile, progress=False)  # loads the finished checkpoint
    assert again.identity == backbone.identity and again.history.epochs == backbone.history.epochs
    np.testing.assert_allclose(again.embed(test, progress=False)[1], texts, atol=1e-6)


def test_lite_shared_profile_trains_the_heads_on_the_whole_train_split(data_env):
    profile = load_profile("lite-shared", {"backbone": {"train": {"epochs": 1, "batch_size": 4}}})
    backbone = build_backbone(profile, progress=False)
    assert len(backbone.history.epochs) == 2
    train_images, train_texts = backbone.raw_features(load_dataset("flickr8k", "train", skip_missing=True),
                                                      progress=False)
    np.testing.assert_allclose(backbone.heads.image_mean.numpy(), train_images.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backbone.heads.text_mean.numpy(), train_texts.mean(0), rtol=1e-5, atol=1e-6)
    (checkpoint,) = (cache_root() / "heads").glob("*.safetensors")
    assert checkpoint.name.startswith("lite-flickr8k-train-")


def test_lite_backbone_refuses_to_encode_untrained():
    backbone = LiteBackbone()
    with pytest.raises(RuntimeError, match="prepare"):
        backbone.encode_texts(["a dog"])


@pytest.mark.parametrize("model", ["ViT-B-32"])
def test_paper_profile_code_path_offline(data_env, model):
    """The paper profile with pretrained=None on tiny Karpathy-layout data, end to end to a result file."""
    profile = load_profile("paper-flickr30k", {"backbone": {"pretrained": None, "model": model}})
    backbone = build_backbone(profile, progress=False)
    assert isinstance(backbone, OpenClipBackbone) and backbone.identity == f"openclip:{model}:random-seed0"
    test = load_dataset("flickr30k", "test")
    images, texts = backbone.embed(test, progress=False)
    assert images.shape == (2, backbone.dim) and texts.shape == (4, backbone.dim)
    _unit_rows(images), _unit_rows(texts)
    metrics, intervals = evaluate_similarity(similarity(images, texts), test.text_to_image, ["all"], n_boot=20)
    path = write_result(profile["name"], "frozen-backbone", "flickr30k", "test", backbone.identity, metrics,
                        profile, intervals=intervals)
    record = read_result(path)
    assert set(METRIC_KEYS) <= set(record["metrics"]["all"])
    assert record["config"]["backbone"]["pretrained"] is None
    table = load_results(profile["name"])
    assert list(table["method"]) == ["frozen-backbone"] and "rsum_low" in table.columns
    # the profile keeps local features (HGAN), written in the same pass as the global ones
    cached = sorted(p.name for p in (cache_root() / "features").glob("flickr30k-test-*.npy"))
    global_files = [n for n in cached if not n.endswith((".local.npy", ".mask.npy"))]
    assert len(global_files) == 2 and any("-image-" in n for n in global_files)
    assert any("-text-" in n for n in global_files) and len(cached) == 6


def test_write_result_rejects_missing_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("OSGHA_RESULTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="lacks metrics"):
        write_result("p", "m", "d", "test", "b", {"all": {"rsum": 1.0}}, {})


def test_local_features_project_to_the_global_embedding(data_env):
    """Lite local features: caption tokens average to the pre-normalization sentence embedding."""
    profile = load_profile("lite", {**TINY_PROTOCOL, "backbone": {"train": {"epochs": 1, "batch_size": 4},
                                                                   "local": {"image_grid": 2, "text_tokens": 32}}})
    backbone = build_backbone(profile, progress=False)
    test = load_dataset("flickr8k", "test")
    local = backbone.embed_local(test, progress=False)
    assert local.images.shape == (1, 4, 256) and local.texts.shape == (2, 32, 256)
    assert local.image_mask.all() and local.text_mask.any(1).all()
    texts = backbone.encode_texts(test.captions, test.name, test.split, progress=False)
    mean = (local.texts * local.text_mask[..., None]).sum(1) / local.text_mask.sum(1, keepdims=True)
    np.testing.assert_allclose(mean / np.linalg.norm(mean, axis=1, keepdims=True), texts, atol=2e-3)
    with pytest.raises(ValueError, match="unknown fields"):
        LiteBackbone(local={"grid": 3})


def test_openclip_local_features_offline(data_env):
    """ViT patch tokens pooled to a grid and text token states up to end-of-text, in the shared space."""
    profile = load_profile("paper-flickr30k", {"backbone": {"pretrained": None, "model": "ViT-B-32",
                                                            "local": {"image_grid": 2, "text_tokens": 16}}})
    backbone = build_backbone(profile, progress=False)
    test = load_dataset("flickr30k", "test")
    local = backbone.embed_local(test, progress=False)
    assert local.images.shape == (2, 4, backbone.dim) and local.texts.shape == (4, 16, backbone.dim)
    lengths = local.text_mask.sum(1)
    assert (lengths >= 3).all() and not local.text_mask.all()  # start, words, end-of-text; then padding
    assert np.abs(local.texts[~local.text_mask]).max() == 0
    images, _ = backbone.embed(test, progress=False)  # the global vectors come from the same pass
    assert images.shape == (2, backbone.dim)

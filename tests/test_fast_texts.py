"""Tests for the OpenVINO text runtime (osgha_lite.backbones.openvino), the lite text encoder's default."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from osgha_lite.backbones.encoders import build_encoder
from osgha_lite.backbones.openvino import TEXT_RUNTIME_VARIABLE


@pytest.fixture(scope="module")
def captions(tiny_root):
    lines = (tiny_root / "flickr8k" / "captions.txt").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split(",", 1)[1] for line in lines if "," in line]
    assert len(texts) >= 10
    return texts[:40]


@pytest.fixture(scope="module")
def torch_text():
    return build_encoder("minilm-l6-v2", device="cpu", runtime="torch")


@pytest.fixture(scope="module")
def fast_text():
    return build_encoder("minilm-l6-v2", runtime="openvino")


def test_openvino_sentence_vectors_match_pytorch(captions, torch_text, fast_text):
    slow = torch_text.encode(captions, batch_size=16, progress=False)
    fast = fast_text.encode(captions, batch_size=16, progress=False)
    assert fast.shape == slow.shape == (len(captions), 384) and fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert np.abs(fast - slow).max() < 1e-4
    assert (fast * slow).sum(1).min() > 0.99999


def test_openvino_text_features_repeat_exactly_and_the_local_pass_agrees(captions, fast_text):
    first = fast_text.encode(captions, batch_size=16, progress=False)
    again = build_encoder("minilm-l6-v2", runtime="openvino").encode(captions, batch_size=16, progress=False)
    np.testing.assert_array_equal(first, again)
    sentences, tokens, mask = fast_text.encode_local(captions, size=24, batch_size=16, progress=False)
    np.testing.assert_array_equal(sentences, first)
    mean = (tokens.astype(np.float32) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.abs(mean - sentences)[mask.sum(1) < 24].max() < 2e-3  # tokens average to the sentence (float16)


def test_text_runtime_is_named_in_the_identity_and_chosen_by_the_environment(monkeypatch, torch_text, fast_text):
    assert "openvino" not in torch_text.identity
    assert fast_text.identity.startswith(torch_text.identity + ":openvino")
    monkeypatch.delenv(TEXT_RUNTIME_VARIABLE, raising=False)
    assert build_encoder("minilm-l6-v2").runtime == "openvino"
    monkeypatch.setenv(TEXT_RUNTIME_VARIABLE, "torch")
    assert build_encoder("minilm-l6-v2").runtime == "torch"
    monkeypatch.setenv(TEXT_RUNTIME_VARIABLE, "onnx")
    with pytest.raises(ValueError, match=r"\$OSGHA_TEXT_RUNTIME='onnx': unknown text runtime; choose one of"):
        build_encoder("minilm-l6-v2")


def test_missing_openvino_package_names_the_text_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"needs the openvino package .*pip install openvino"):
        build_encoder("minilm-l6-v2", runtime="openvino")

"""Tests for the OpenVINO image runtime (the default) (osgha_lite.backbones.openvino) on real photos."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from osgha_lite.backbones.encoders import build_encoder
from osgha_lite.backbones.openvino import RUNTIME_VARIABLE, chosen_runtime
from osgha_lite.backbones.features import cached_features

#: Agreement with the PyTorch features: measured max |diff| about 1e-5 on features of size ~1.
ATOL = 1e-4
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def photos(tiny_root):
    return sorted(str(p) for p in (tiny_root / "flickr8k" / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def torch_features(photos):
    return build_encoder("efficientnet-lite0", device="cpu", runtime="torch").encode(photos, progress=False)


@pytest.fixture(scope="module")
def fast_encoder():
    return build_encoder("efficientnet-lite0", runtime="openvino")


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_openvino_features_agree_with_pytorch_on_real_photos(photos, torch_features, fast_encoder):
    fast = fast_encoder.encode(photos, batch_size=4, progress=False)
    assert fast.shape == torch_features.shape == (len(photos), 1280) and fast.dtype == np.float32
    assert np.abs(fast - torch_features).max() < ATOL
    assert _cosines(fast, torch_features).min() > MIN_COSINE
    assert not np.array_equal(fast, torch_features)  # really another computation, not the PyTorch one


def test_openvino_features_are_bit_identical_across_runs_and_thread_counts(photos, fast_encoder):
    from osgha_lite.backbones.openvino import OpenVinoFeatureMaps

    first = fast_encoder.encode(photos, progress=False)
    again = build_encoder("efficientnet-lite0", runtime="openvino").encode(photos, progress=False)
    np.testing.assert_array_equal(first, again)
    pixels = np.stack([fast_encoder.pixels(p) for p in photos])
    model = fast_encoder.model
    maps = {threads: OpenVinoFeatureMaps(fast_encoder.identity, model, model.extract_features, 224,
                                         (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), threads=threads)(pixels)
            for threads in (1, 2)}
    np.testing.assert_array_equal(maps[1].numpy(), maps[2].numpy())
    np.testing.assert_array_equal(maps[1].mean(dim=(2, 3)).numpy(), first)


def test_openvino_kernels_are_capped_at_avx2(fast_encoder):
    from osgha_lite.runtime import PORTABLE_CPU_KERNELS

    assert os.environ["ONEDNN_MAX_CPU_ISA"] == PORTABLE_CPU_KERNELS["ONEDNN_MAX_CPU_ISA"]
    kernels = [op.get_rt_info()["primitiveType"].astype(str)
               for op in fast_encoder.fast.compiled.get_runtime_model().get_ops()]
    assert sum("conv" in kernel for kernel in kernels) >= 40  # EfficientNet-Lite0's convolutions are all there
    assert not [k for k in kernels if "avx512" in k or "amx" in k], kernels


def test_openvino_local_features_share_the_global_pass(photos, fast_encoder):
    pooled, regions, mask = fast_encoder.encode_local(photos[:2], size=2, progress=False)
    np.testing.assert_array_equal(pooled, fast_encoder.encode(photos[:2], progress=False))
    assert regions.shape == (2, 4, 1280) and mask.all()


def test_identity_differs_and_the_cache_keeps_both(photos, torch_features, fast_encoder, tmp_path):
    default = build_encoder("efficientnet-lite0", device="cpu", runtime="torch")
    assert default.runtime == "torch" and "openvino" not in default.identity
    assert build_encoder("efficientnet-lite0").identity == fast_encoder.identity  # OpenVINO is the default
    assert fast_encoder.identity.startswith(default.identity + ":openvino") and fast_encoder.identity != default.identity
    slow = cached_features(default, photos[:2], "flickr8k", "dev", cache_dir=tmp_path, progress=False)
    fast = cached_features(fast_encoder, photos[:2], "flickr8k", "dev", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(slow, torch_features[:2])
    assert not np.array_equal(slow, fast)
    assert len(list(tmp_path.rglob("*.npy"))) == 2


def test_runtime_comes_from_the_environment_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.delenv(RUNTIME_VARIABLE, raising=False)
    assert chosen_runtime() == "openvino"
    monkeypatch.setenv(RUNTIME_VARIABLE, "torch")
    assert chosen_runtime() == "torch" and chosen_runtime("openvino") == "openvino"
    monkeypatch.setenv(RUNTIME_VARIABLE, "onnx")
    with pytest.raises(ValueError, match=r"\$OSGHA_IMAGE_RUNTIME='onnx': unknown image runtime; choose one of"):
        chosen_runtime()
    with pytest.raises(ValueError, match=r"runtime='tensorrt'"):
        build_encoder("efficientnet-lite0", runtime="tensorrt")


def test_missing_openvino_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(ImportError, match=r"needs the openvino package .*pip install openvino.*runtime='torch'"):
        build_encoder("efficientnet-lite0", runtime="openvino")


def test_converted_network_is_stored_verified_and_gives_the_same_features(photos, fast_encoder, tmp_path, monkeypatch):
    from osgha_lite.backbones import openvino as fast_images
    from osgha_lite.backbones.features import CacheWarning

    monkeypatch.setenv("OSGHA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fast_images, "_CONVERTED", {})
    expected = fast_encoder.encode(photos[:3], progress=False)
    first = build_encoder("efficientnet-lite0", runtime="openvino")
    np.testing.assert_array_equal(first.encode(photos[:3], progress=False), expected)  # converted, then stored
    stored = sorted(p.suffix for p in (tmp_path / "openvino").iterdir())
    assert stored == [".bin", ".json", ".xml"]
    monkeypatch.setattr(fast_images, "_CONVERTED", {})  # a new process: read from disk
    calls = []
    convert = fast_images.import_openvino().convert_model
    monkeypatch.setattr(fast_images.import_openvino(), "convert_model", lambda *a, **k: calls.append(1) or convert(*a, **k))
    again = build_encoder("efficientnet-lite0", runtime="openvino").encode(photos[:3], progress=False)
    np.testing.assert_array_equal(again, expected)
    assert calls == []
    weights = next((tmp_path / "openvino").glob("*.bin"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(fast_images, "_CONVERTED", {})
    with pytest.warns(CacheWarning, match=r"\.bin does not match its recorded SHA-256 \(damaged\)\); converting it again"):
        repaired = build_encoder("efficientnet-lite0", runtime="openvino").encode(photos[:3], progress=False)
    np.testing.assert_array_equal(repaired, expected)
    assert calls == [1]

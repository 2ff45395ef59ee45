"""Portable dropout: PyTorch's own CPU masks, bit for bit, drawn through NumPy, on any CPU vendor."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from osgha_lite.methods import dropout as portable
from osgha_lite.backbones import LiteHeads
from osgha_lite.methods.dropout import PortableDropout, check_state_layout, keep_mask, portable_dropout


def _intel_with_mkl() -> bool:
    """PyTorch draws ``bernoulli_`` with MKL on Intel CPUs (its builds with MKL), with its own generator elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    vendor = cpuinfo.read_text() if cpuinfo.exists() else platform.processor()
    return "GenuineIntel" in vendor and torch.backends.mkl.is_available()


needs_torch_own_kernel = pytest.mark.skipif(
    _intel_with_mkl(), reason="on Intel CPUs PyTorch's dropout draws with MKL; PortableDropout deliberately does "
                              "not (the comparison with torch.rand below holds everywhere)")


def _states_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a, b)


@needs_torch_own_kernel
@pytest.mark.parametrize("p", [0.5, 0.1, 0.3, 0.9])
@pytest.mark.parametrize("shape", [(500, 1280), (7, 3), (1, 1), (4, 5, 6)])
def test_outputs_and_generator_state_equal_torch_dropout(p, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for warm_up in (0, 3, 1000):  # a fresh seed (refill on the first draw) and places inside the stream
        torch.manual_seed(7)
        torch.rand(warm_up)
        start = torch.get_rng_state()
        expected = torch.nn.functional.dropout(x, p, training=True)
        expected_state = torch.get_rng_state()
        torch.set_rng_state(start)
        got = portable_dropout(x, p, training=True)
        assert torch.equal(got, expected)  # same mask, same scaling, bit for bit
        assert _states_equal(torch.get_rng_state(), expected_state)


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_masks_follow_torch_rand_on_every_cpu(p):
    """``torch.rand`` in float64 draws u_i of the module docstring element by element on every CPU vendor."""
    torch.manual_seed(3)
    torch.rand(11)
    start = torch.get_rng_state()
    mask = keep_mask((64, 33), p)
    after = torch.rand(4)
    torch.set_rng_state(start)
    uniforms = torch.rand(64 * 33, dtype=torch.float64).numpy().reshape(64, 33)
    assert np.array_equal(mask, uniforms < 1 - p)
    assert torch.equal(torch.rand(4), after)  # the generator was left where torch.rand leaves it
    assert 0.4 < mask.mean() / (1 - p) < 1.6


def test_state_layout_check_passes_and_leaves_the_generator_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    check_state_layout()
    assert _states_equal(torch.get_rng_state(), before)


def test_a_changed_state_layout_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(portable, "_layout_checked", False)
    monkeypatch.setattr(portable, "_uniforms", lambda n: np.zeros(n))
    with pytest.raises(RuntimeError, match=r"draws through NumPy differ from torch\.rand under torch"):
        keep_mask((3,), 0.5)


def test_evaluation_zero_rate_and_full_rate():
    x = torch.randn(6, 4)
    layer = PortableDropout(0.5).eval()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    assert torch.equal(layer(x), x) and _states_equal(torch.get_rng_state(), before)
    assert torch.equal(PortableDropout(0.0).train()(x), x) and _states_equal(torch.get_rng_state(), before)
    assert torch.equal(portable_dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="between 0 and 1"):
        portable_dropout(x, 1.5)


def test_the_lite_heads_and_adapters_use_it():
    heads = LiteHeads(16, 8, 4, input_dropout=0.5)
    assert isinstance(heads.dropout, PortableDropout)
    from osgha_lite.methods import build_adapter

    for name in ("linear", "bottleneck", "hypergraph"):
        dropouts = [m for m in build_adapter(name, 16).modules() if isinstance(m, torch.nn.Dropout)]
        assert dropouts and all(isinstance(m, PortableDropout) for m in dropouts), name

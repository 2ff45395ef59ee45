r"""Dropout whose masks are the same on every CPU, drawn faster than PyTorch draws them.

Why
---
On the CPU, ``torch.nn.Dropout`` draws its mask with ``bernoulli_(1 - p)``,
and PyTorch picks the generator by the CPU's vendor: on Intel CPUs (builds
with MKL) a stream of MKL's, seeded from PyTorch's generator; on every other
CPU (AMD here) PyTorch's own Mersenne Twister, one element at a time. The two
give different masks from the same seed, so the lite heads, and with them
every table, would differ between an Intel and an AMD machine, whatever
:data:`osgha_lite.runtime.PORTABLE_CPU_KERNELS` does for the arithmetic. The
element-by-element draw is also slow: about a quarter of a lite-heads fit
(``torch.profiler``); drawn here, 7.0 s of a 33.5 s fit instead of 12.7 s of
40.9 s (``benchmarks/bench_heads.py``).

What
----
:class:`PortableDropout` draws the masks of PyTorch's own (non-MKL) path on
every CPU, exactly, with NumPy's MT19937 (the same generator, drawn in one
C loop per call). Element :math:`i` of the mask takes the next two 32-bit outputs
:math:`a_i, b_i` of the default CPU generator (the state PyTorch seeds with
``torch.manual_seed``), forms :math:`r_i = 2^{32} a_i + b_i`, and keeps the
element when

.. math::

    u_i = \frac{r_i \bmod 2^{53}}{2^{53}} < 1 - p
    \iff r_i \bmod 2^{53} < \lceil (1 - p)\, 2^{53} \rceil ,

which is PyTorch's ``bernoulli_distribution<double>`` (``random64``, then
``uniform_real``), elements taken in row-major order (PyTorch's order for a
contiguous tensor, which is what the package passes; for other layouts
PyTorch follows memory order). Kept elements are multiplied by
:math:`1 / (1 - p)`. The generator's state is read before and written back
after, so whatever draws next (another dropout, ``torch.rand``) sees the
state PyTorch's dropout would have left. ``tests/test_dropout.py`` checks
masks, outputs and the state against ``torch.nn.functional.dropout`` where
PyTorch uses its own generator (every CPU but Intel ones), and against
``torch.rand`` (the same formula, drawn element by element by PyTorch on any
CPU), which :func:`check_state_layout` also does once per process before the
first draw.

On a GPU, and in evaluation mode or with ``p = 0``, it is ``Dropout``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: Bytes of ``torch.get_rng_state()``: seed (u64), left (i32), seeded (i32), next (u64), 624 state words (u64), ...
_HEADER = np.dtype([("seed", "<u8"), ("left", "<i4"), ("seeded", "<i4"), ("next", "<u8")])
_WORDS = 624
_STATE_BYTES = _HEADER.itemsize + 8 * _WORDS
_MANTISSA = np.uint64((1 << 53) - 1)
_layout_checked = False


def _read_state() -> tuple[torch.Tensor, np.random.MT19937]:
    """The default CPU generator's state and an MT19937 in the same place of the same stream."""
    state = torch.get_rng_state()
    raw = state.numpy().tobytes()
    header = np.frombuffer(raw[:_HEADER.itemsize], dtype=_HEADER)[0]
    key = np.frombuffer(raw[_HEADER.itemsize:_STATE_BYTES], dtype="<u8").astype(np.uint32)
    left = int(header["left"])
    if not 1 <= left <= _WORDS:
        raise RuntimeError(f"PortableDropout: unexpected torch generator state (left={left}); "
                           f"torch {torch.__version__} may have changed its layout")
    generator = np.random.MT19937(0)
    # PyTorch refills when `left` reaches 0 after a decrement; NumPy when `pos` reaches 624
    generator.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": _WORDS + 1 - left}}
    return state, generator


def _write_state(state: torch.Tensor, generator: np.random.MT19937) -> None:
    """Put ``generator``'s place back into PyTorch's default CPU generator (other fields unchanged)."""
    inner = generator.state["state"]
    position = int(inner["pos"])
    raw = bytearray(state.numpy().tobytes())
    header = np.frombuffer(bytes(raw[:_HEADER.itemsize]), dtype=_HEADER).copy()
    header["left"], header["next"] = _WORDS + 1 - position, position
    raw[:_HEADER.itemsize] = header.tobytes()
    raw[_HEADER.itemsize:_STATE_BYTES] = np.asarray(inner["key"], dtype="<u8").tobytes()
    torch.set_rng_state(torch.frombuffer(raw, dtype=torch.uint8).clone())


def _draw_words(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``: the next ``n`` pairs of 32-bit outputs of PyTorch's default CPU generator, which advances."""
    state, generator = _read_state()
    # the full 32-bit range is the generator's raw output, one word per value (no rejection)
    words = np.random.Generator(generator).integers(0, 1 << 32, size=(n, 2), dtype=np.uint32)
    _write_state(state, generator)
    return words[:, 0], words[:, 1]


def _uniforms(n: int) -> np.ndarray:
    """:math:`u_i` of the module docstring for the next ``n`` elements (float64)."""
    high, low = _draw_words(n)
    r = (high.astype(np.uint64) << np.uint64(32)) | low.astype(np.uint64)
    return (r & _MANTISSA).astype(np.float64) * 2.0 ** -53


def check_state_layout() -> None:
    """Raise ``RuntimeError`` unless draws through NumPy equal ``torch.rand`` (float64) from the same state.

    ``torch.rand`` in float64 computes :math:`u_i` of the module docstring
    element by element on every CPU, so equality shows that the generator's
    state was read and written back correctly under this PyTorch.
    """
    global _layout_checked
    saved = torch.get_rng_state()
    try:
        torch.manual_seed(12345)
        torch.rand(7)  # leave the fresh-seed position
        start = torch.get_rng_state()
        ours = _uniforms(1000)
        after_ours = torch.rand(5, dtype=torch.float64)
        torch.set_rng_state(start)
        theirs = torch.rand(1000, dtype=torch.float64).numpy()
        after_theirs = torch.rand(5, dtype=torch.float64)
        if not (np.array_equal(ours, theirs) and torch.equal(after_ours, after_theirs)):
            raise RuntimeError(f"PortableDropout: draws through NumPy differ from torch.rand under torch "
                               f"{torch.__version__}; the generator state layout may have changed")
    finally:
        torch.set_rng_state(saved)
    _layout_checked = True


def keep_mask(shape: tuple[int, ...], p: float) -> np.ndarray:
    """Boolean mask of the elements dropout with rate ``p`` keeps, drawn as PyTorch's CPU kernel draws them."""
    if not _layout_checked:
        check_state_layout()
    # r mod 2^53 < T compares (a mod 2^21, b) with (T div 2^32, T mod 2^32) in order; mostly the first decides
    threshold = int(np.ceil((1.0 - p) * 2.0 ** 53))
    high, low = _draw_words(int(np.prod(shape)))
    high = high & np.uint32((1 << 21) - 1)
    keep = high < np.uint32(threshold >> 32)
    if threshold & 0xFFFFFFFF:
        keep |= (high == np.uint32(threshold >> 32)) & (low < np.uint32(threshold & 0xFFFFFFFF))
    return keep.reshape(shape)


def portable_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``torch.nn.functional.dropout(x, p, training)`` with the masks of :func:`keep_mask` on the CPU."""
    if not training or p == 0 or x.numel() == 0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p == 1:
        return x * 0.0
    noise = torch.from_numpy(keep_mask(tuple(x.shape), p)).to(x.dtype).div_(1.0 - p)
    return x * noise


class PortableDropout(nn.Dropout):
    """``nn.Dropout`` drawing its CPU masks with :func:`portable_dropout` (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return portable_dropout(x, self.p, self.training)

"""Determinism and device selection shared by every notebook and script.

``seed_everything`` fixes Python, NumPy and PyTorch seeds and the number of
CPU threads so that a rerun on the same machine gives the same tables.
``pick_device`` returns ``cuda`` when a GPU is visible, else ``cpu``.

Seeds and threads are not enough across machines: PyTorch's own kernels,
oneDNN (convolutions), MKL (matrix products, the SVD), NumPy's SIMD loops
and OpenBLAS (NumPy's matrix products) pick their code path by the CPU, and
another path sums in another order. The last bits then differ, and
training a small adapter turns that into a different epoch chosen by early
stopping. :data:`PORTABLE_CPU_KERNELS` pins every library to one path that
any x86-64 CPU with AVX2 runs the same way:

* PyTorch's vectorised kernels and oneDNN are capped at AVX2;
* MKL runs its ``COMPATIBLE`` branch. MKL's other fixed branches (``AVX2``
  and so on) exist only on Intel processors: elsewhere they fall back to
  MKL's automatic choice, so ``MKL_CBWR=AVX2`` gave different products on an
  AMD and on an Intel CPU (every trained table drifted). ``COMPATIBLE`` is
  the one branch both vendors run; its products are 2-4.5x slower
  (``benchmarks/bench_kernels.py``);
* NumPy's AVX-512 loops (sorting, transcendental functions) are disabled,
  so an AVX-512 CPU runs the AVX2 loops an AVX2-only CPU runs;
* OpenBLAS is pinned to its Haswell kernels.

The thread count is part of the result (MKL splits a product between
threads): it is fixed by ``OSGHA_THREADS`` (2). The variables are read when
each library starts, so they must be in the environment before Python
starts: the ``Makefile`` exports them (a unit test checks that its values
are these) and :func:`portable_kernel_environment` gives them to the
notebook kernels that the runner starts. ``python -m osgha_lite envcheck
--fingerprint`` (:mod:`osgha_lite.pipeline.fingerprint`) checks the result: it
digests each computing stage and names the first one that differs from the
reference machine.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

DEFAULT_SEED = 0
DEFAULT_THREADS = int(os.environ.get("OSGHA_THREADS", "2"))

#: Environment variables that select the same (AVX2) kernels on every x86-64 CPU.
PORTABLE_CPU_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",        # PyTorch's vectorised kernels (softmax, norms, reductions)
    "ONEDNN_MAX_CPU_ISA": "AVX2",         # oneDNN: convolutions (PyTorch and OpenVINO)
    "MKL_CBWR": "COMPATIBLE,STRICT",      # MKL: matrix products and LAPACK, the same on Intel and AMD
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy: its AVX2 loops on every CPU
    "OPENBLAS_CORETYPE": "Haswell",       # OpenBLAS under NumPy
}


def portable_kernel_environment() -> dict[str, str]:
    """Set :data:`PORTABLE_CPU_KERNELS` in ``os.environ`` where unset (child processes inherit
    them) and return the values in force; a value already set by the user wins."""
    for name, value in PORTABLE_CPU_KERNELS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in PORTABLE_CPU_KERNELS}


def restart_with_portable_kernels(module: str, argv: list[str] | None = None) -> None:
    """Run ``python -m module *argv`` again (``argv``: default ``sys.argv[1:]``) with
    :data:`PORTABLE_CPU_KERNELS` set where any is unset.

    For command lines whose outputs must match the committed ones (checkpoint
    keys are byte digests of features): the libraries have already chosen
    their kernels when a module runs, so the variables only take effect in a
    new process. Does nothing when every variable is set (as under ``make``).
    """
    missing = [name for name in PORTABLE_CPU_KERNELS if name not in os.environ]
    if missing:
        environment = {**os.environ, **{name: PORTABLE_CPU_KERNELS[name] for name in missing}}
        arguments = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, "-m", module, *arguments], environment)


def seed_everything(seed: int = DEFAULT_SEED, threads: int | None = DEFAULT_THREADS) -> None:
    """Seed ``random``, NumPy and PyTorch (CPU and CUDA) and fix thread counts."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if threads:
        torch.set_num_threads(threads)


def pick_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given (e.g. ``"cpu"``), else ``cuda`` when available, else ``cpu``."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generator(seed: int = DEFAULT_SEED) -> np.random.Generator:
    """A NumPy random generator for bootstrap draws and shuffles."""
    return np.random.default_rng(seed)


class _NoProgress:
    """What :func:`progress_bar` returns without tqdm: the iterable itself, and a bar that draws nothing."""

    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, *args, **kwargs) -> None:
        return None

    def close(self) -> None:
        return None


def progress_bar(iterable=None, **options):
    """``tqdm.auto.tqdm(iterable, **options)``, or, where tqdm is not installed (the core install: torch,
    NumPy and SciPy only), a stand-in that iterates and draws nothing."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoProgress(iterable)
    return tqdm(iterable, **options)

"""Determinism and device selection shared by every notebook and script.

``seed_everything`` fixes Python, NumPy and PyTorch seeds and the number of
CPU threads so that a rerun on the same machine gives the same tables.
``pick_device`` returns ``cuda`` when a GPU is visible, else ``cpu``.

Seeds and threads are not enough across machines: PyTorch's own kernels,
oneDNN (convolutions), MKL (matrix products) and OpenBLAS (NumPy) pick their
code path by the CPU's instruction set, and an AVX-512 path sums in another
order than an AVX2 one. The last bits of the features then differ, and
training a small adapter turns that into a different epoch chosen by early
stopping (up to 1.1 rSum between two machines here).
:data:`PORTABLE_CPU_KERNELS` caps every library at AVX2, which any x86-64 CPU of the last decade has, so that the committed
tables regenerate to the printed decimal on other machines. The variables
are read when each library starts, so they must be in the environment
before Python starts: the ``Makefile`` exports them (a unit test checks that
its values are these) and :func:`portable_kernel_environment` gives them to
the notebook kernels that the runner starts.
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
    "ATEN_CPU_CAPABILITY": "avx2",   # PyTorch's vectorised kernels (softmax, norms, reductions)
    "ONEDNN_MAX_CPU_ISA": "AVX2",    # oneDNN: convolutions
    "MKL_CBWR": "AVX2,STRICT",       # MKL: matrix products, reproducible on any CPU with AVX2
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS under NumPy
}


def portable_kernel_environment() -> dict[str, str]:
    """Set :data:`PORTABLE_CPU_KERNELS` in ``os.environ`` where unset (child processes inherit
    them) and return the values in force; a value already set by the user wins."""
    for name, value in PORTABLE_CPU_KERNELS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in PORTABLE_CPU_KERNELS}


def restart_with_portable_kernels(module: str) -> None:
    """Run ``python -m module`` again with :data:`PORTABLE_CPU_KERNELS` set where any is unset.

    For command lines whose outputs must match the committed ones (checkpoint
    keys are byte digests of features): the libraries have already chosen
    their kernels when a module runs, so the variables only take effect in a
    new process. Does nothing when every variable is set (as under ``make``).
    """
    missing = [name for name in PORTABLE_CPU_KERNELS if name not in os.environ]
    if missing:
        environment = {**os.environ, **{name: PORTABLE_CPU_KERNELS[name] for name in missing}}
        os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], environment)


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

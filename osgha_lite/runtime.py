"""Determinism and device selection shared by every notebook and script.

``seed_everything`` fixes Python, NumPy and PyTorch seeds and the number of
CPU threads so that a rerun on the same machine gives the same tables.
``pick_device`` returns ``cuda`` when a GPU is visible, else ``cpu``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_SEED = 0
DEFAULT_THREADS = int(os.environ.get("OSGHA_THREADS", "2"))


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

"""Every folder the package reads from or writes to, and the environment variable that moves it: defined once.

Each root is a function, read when called, so a variable set after import
(by a test, or by the runner for the notebooks it starts) takes effect.
A relative value is taken from the current directory.

=====================  ========================  =========================================
root                   variable                  default
=====================  ========================  =========================================
:func:`data_root`      ``OSGHA_DATA_ROOT``       ``<repository>/data``
:func:`cache_root`     ``OSGHA_CACHE_DIR``       ``<repository>/.cache``
:func:`results_root`   ``OSGHA_RESULTS_DIR``     ``<repository>/results``
:func:`figures_root`   ``OSGHA_FIGURES_DIR``     ``<repository>/figures``
:func:`timings_root`   ``OSGHA_TIMINGS_DIR``     ``<repository>/build/timings``
:func:`executed_root`  ``OSGHA_EXECUTED_DIR``    unset: nbval keeps no executed copies
=====================  ========================  =========================================

Fixed places in the repository: :data:`NOTEBOOKS_DIR`, the runner's
:data:`EXECUTED_NOTEBOOKS_DIR` (``build/notebooks/<profile>/``) and
:data:`STAGING_DIR`, the LLM caches :data:`AUGMENTATIONS_DIR` (in the
repository, never in the data root) and the environment lock :data:`LOCK_FILE`.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository: the folder that holds ``osgha_lite/``.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

DATA_ROOT_ENV = "OSGHA_DATA_ROOT"
CACHE_ENV = "OSGHA_CACHE_DIR"
RESULTS_ENV = "OSGHA_RESULTS_DIR"
FIGURES_ENV = "OSGHA_FIGURES_DIR"
TIMINGS_ENV = "OSGHA_TIMINGS_DIR"
EXECUTED_ENV = "OSGHA_EXECUTED_DIR"

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
EXECUTED_NOTEBOOKS_DIR = PROJECT_ROOT / "build" / "notebooks"
STAGING_DIR = PROJECT_ROOT / "build" / "staging"
AUGMENTATIONS_DIR = PROJECT_ROOT / "data" / "augmentations"
LOCK_FILE = PROJECT_ROOT / "requirements" / "lock.txt"


def _from_environment(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    """The data root: ``$OSGHA_DATA_ROOT`` if set (relative paths are taken from
    the current directory), else the repository's ``data/`` folder."""
    return _from_environment(DATA_ROOT_ENV, PROJECT_ROOT / "data")


def cache_root() -> Path:
    """``$OSGHA_CACHE_DIR`` if set, else ``<repository>/.cache``."""
    return _from_environment(CACHE_ENV, PROJECT_ROOT / ".cache")


def results_root() -> Path:
    """``$OSGHA_RESULTS_DIR`` if set, else ``<repository>/results``."""
    return _from_environment(RESULTS_ENV, PROJECT_ROOT / "results")


def figures_root() -> Path:
    """``$OSGHA_FIGURES_DIR`` if set, else ``<repository>/figures``."""
    return _from_environment(FIGURES_ENV, PROJECT_ROOT / "figures")


def timings_root() -> Path:
    """``$OSGHA_TIMINGS_DIR`` if set, else ``<repository>/build/timings``."""
    return _from_environment(TIMINGS_ENV, PROJECT_ROOT / "build" / "timings")


def executed_root() -> Path | None:
    """``$OSGHA_EXECUTED_DIR`` if set (where nbval keeps its executed notebooks), else None."""
    value = os.environ.get(EXECUTED_ENV)
    return Path(value).expanduser().resolve() if value else None


def display_path(path) -> str:
    """``path`` as text that can always be printed: bytes of the file name that are not UTF-8 (which Python
    keeps as surrogates) are shown as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")

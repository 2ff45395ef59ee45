"""Saving figures and tables reproducibly.

Figures go to ``figures/<profile>/<name>.png`` and ``.pdf``; tables to
``results/<profile>/tables/<name>.csv`` and ``.md``. Files are written
atomically with fixed metadata (no creation dates, no software version), so
that regenerating an unchanged figure gives the same bytes on the same
matplotlib version.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from osgha_lite.atomic import atomic_write_bytes, atomic_write_text
from osgha_lite.data import PROJECT_ROOT
from osgha_lite.results import results_root

FIGURES_DIR = PROJECT_ROOT / "figures"
_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def save_figure(fig, profile: str, name: str, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as PNG and PDF under ``figures/<profile>/``; return the paths."""
    paths = []
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_METADATA[fmt])
        paths.append(atomic_write_bytes(FIGURES_DIR / profile / f"{name}.{fmt}", buffer.getvalue()))
    return paths


def save_table(frame: pd.DataFrame, profile: str, name: str, digits: int = 2) -> list[Path]:
    """Write a table as CSV and Markdown under ``results/<profile>/tables/``."""
    folder = results_root() / profile / "tables"
    csv_path = atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False, float_format=f"%.{digits + 2}f"))
    md_path = atomic_write_text(folder / f"{name}.md", frame.to_markdown(index=False, floatfmt=f".{digits}f") + "\n")
    return [csv_path, md_path]

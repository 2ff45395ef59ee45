"""Saving figures and tables reproducibly, and recording them in the manifest.

Figures go to ``figures/<profile>/<name>.png`` and ``.pdf``; tables to
``results/<profile>/tables/<name>.csv``, ``.md`` and ``.tex``. Files are
written atomically with fixed metadata (no creation dates, no software
version), so regenerating an unchanged figure gives the same bytes on the
same matplotlib version. Every file saved here is recorded in the profile's
manifest (:mod:`osgha_lite.pipeline.manifest`) with the notebook that made it and the
inputs it came from.

The figures folder is ``$OSGHA_FIGURES_DIR`` or the repository's
``figures/``; the tables follow :func:`osgha_lite.metrics.results.results_root`.
``make test`` points both elsewhere to regenerate everything and compare it
with the committed files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import pandas as pd

from osgha_lite.atomic import atomic_write_bytes, atomic_write_text
from osgha_lite.pipeline.manifest import register_artifacts
from osgha_lite.paths import FIGURES_ENV, figures_root, results_root  # noqa: F401 - also reachable from here

_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}
#: The project's plotting style: seaborn's ``whitegrid`` at ``notebook`` scale, fixed font sizes.
STYLE = {"style": "whitegrid", "context": "notebook", "font_scale": 0.9,
         "rc": {"figure.dpi": 100, "savefig.dpi": 150, "axes.titlesize": 11, "axes.labelsize": 10,
                "legend.fontsize": 8, "svg.hashsalt": "osgha-lite"}}


def use_style() -> None:
    """Apply :data:`STYLE` (call once at the top of a notebook)."""
    import seaborn as sns

    sns.set_theme(style=STYLE["style"], context=STYLE["context"], font_scale=STYLE["font_scale"], rc=STYLE["rc"])


def check_caption(caption: str, name: str) -> str:
    """``caption`` when it reads as a caption: one or more sentences saying what the figure shows and what
    to look at, not a file name. Raises :class:`ValueError` naming the figure otherwise."""
    text = " ".join(str(caption).split())
    if len(text.split()) < 6 or not text.endswith(".") or not text[0].isupper() or text.startswith(name):
        raise ValueError(f"save_figure({name!r}): the caption must be a sentence of at least six words, saying "
                         f"what the figure shows and what to look at (got {caption!r})")
    return text


def save_figure(fig, profile: str, name: str, *, notebook: str, caption: str, sources: Iterable[str] = (),
                dpi: int = 150) -> list[Path]:
    """Write ``fig`` as PNG and PDF under ``figures/<profile>/`` and record them; return the paths.

    ``notebook`` names the notebook that draws it (``"05_figures"``) and
    ``sources`` the inputs, as repository-relative paths or globs
    (``"results/lite/*.test.json"``, ``"data/flickr8k"``). ``caption`` says
    what the figure shows and what to look at (:func:`check_caption`); it is
    stored with the figure in the manifest, so the notebook, the manifest and
    the website show the same words.
    """
    caption = check_caption(caption, name)
    paths = []
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_METADATA[fmt])
        paths.append(atomic_write_bytes(figures_root() / profile / f"{name}.{fmt}", buffer.getvalue()))
    register_artifacts(profile, paths, kind="figure", notebook=notebook, sources=sources, caption=caption)
    return paths


def markdown_table(frame: pd.DataFrame, digits: int) -> str:
    """A Markdown table of ``frame``: floats to ``digits`` decimals, text cells verbatim (``"0.05"`` stays)."""
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "nan" if pd.isna(v) else f"{v:.{digits}f}")
    align = ["right" if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
             else "left" for c in frame.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def latex_table(frame: pd.DataFrame, digits: int) -> str:
    """A ``booktabs`` LaTeX tabular of ``frame`` with floats rounded to ``digits``."""
    def cell(value) -> str:
        if isinstance(value, float):
            text = "--" if pd.isna(value) else f"{value:.{digits}f}"
        else:
            text = str(value)
        text = text.replace("\\", "\x00")
        for char in "&%_#${}":
            text = text.replace(char, "\\" + char)
        text = text.replace("\x00", r"\textbackslash{}")
        return text

    align = "".join("r" if pd.api.types.is_numeric_dtype(frame[c]) else "l" for c in frame.columns)
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule", " & ".join(cell(str(c)) for c in frame.columns) + r" \\",
             "\\midrule"]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def save_table(frame: pd.DataFrame, profile: str, name: str, digits: int = 2, *, notebook: str,
               sources: Iterable[str] = ()) -> list[Path]:
    """Write a table as CSV, Markdown and LaTeX under ``results/<profile>/tables/`` and record it.

    The Markdown and LaTeX show floats to ``digits`` decimals, the CSV to
    ``digits + 2``. A table holds no wall-clock times (they differ between
    reruns; a notebook shows them from :mod:`osgha_lite.train.timings` instead).
    See :func:`save_figure` for ``notebook`` and ``sources``.
    """
    folder = results_root() / profile / "tables"
    paths = [
        atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False, float_format=f"%.{digits + 2}f")),
        atomic_write_text(folder / f"{name}.md", markdown_table(frame, digits)),
        atomic_write_text(folder / f"{name}.tex", latex_table(frame, digits)),
    ]
    register_artifacts(profile, paths, kind="table", notebook=notebook, sources=sources, digits=digits)
    return paths

"""The drawing functions of the figures of notebooks 05 and 06.

Each function takes a table (from :mod:`osgha_lite.pipeline.report` or
:mod:`osgha_lite.pipeline.fair_test`) or a result file's content and returns
a Matplotlib figure; the notebook saves it with
:func:`osgha_lite.pipeline.figures.save_figure` and its caption, then closes
it. Nothing here reads result files or computes a number that is not drawn.
Call :func:`osgha_lite.pipeline.figures.use_style` first: the figures rely
on its fonts and grid.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from osgha_lite.backbones.encoders import load_rgb

#: The two directions' colours (image -> text, text -> image), as seaborn's first two.
DIRECTION_COLOURS = ["#4C72B0", "#DD8452"]
#: The sides of the entropy figure, in drawing order.
ENTROPY_SIDES = ["images", "captions", "captions+descriptions"]
#: The entropy figure's panels: (measure, panel title).
ENTROPY_PANELS = [("spectral_bits", "spectral entropy (bits)"), ("knn_bits", "kNN entropy (bits)"),
                  ("lexical_rarefied_bits", "lexical entropy, rarefied (bits)"),
                  ("retrieval_i2t_normalized", "i2t retrieval entropy (normalised)")]
CORRECT = "#2ca02c"


def direction_gains(gains: pd.DataFrame, dataset: str):
    """Horizontal bars per method and direction (``report.direction_gains``), a line at zero."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.barplot(data=gains, y="method", x="gain", hue="direction", ax=ax, palette=DIRECTION_COLOURS)
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel="recall sum minus frozen backbone (points)", ylabel="", title=f"{dataset} test: gain per direction")
    return fig


def sensitivity(sweeps: pd.DataFrame):
    """One panel per swept option (``report.sweep_table``): dev and test rSum against the option's value,
    the chosen setting circled; ``reduced_dim`` on a log-2 axis."""
    options = list(dict.fromkeys(sweeps["option"]))
    fig, axes = plt.subplots(1, len(options), figsize=(3.0 * len(options), 3.0), sharey=True)
    for ax, option in zip(np.atleast_1d(axes), options):
        part = sweeps[sweeps.option == option].assign(value=lambda frame: frame.value.astype(float))
        ax.plot(part.value, part.dev_rsum, marker="o", label="dev")
        ax.plot(part.value, part.test_rsum, marker="s", label="test")
        chosen = part[part.base]
        ax.scatter(chosen.value, chosen.dev_rsum, s=120, facecolors="none", edgecolors="black", zorder=3,
                   label="chosen")
        if option == "reduced_dim":
            ax.set_xscale("log", base=2)
        ax.set(xlabel=option, title=option)
    np.atleast_1d(axes)[0].set_ylabel("rSum")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("OS-HGAdapter: one option at a time", y=1.03)
    return fig


def training_curves(records: dict, methods: list[str], reference_dev_rsum: float):
    """Training loss (left) and dev rSum (right) per epoch for ``methods``, from the histories in their
    result records; a dashed line at the frozen backbone's dev rSum."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for method in methods:
        epochs = records[method]["training"]["epochs"]
        x = [e["epoch"] for e in epochs]
        axes[0].plot(x, [e["train_loss"] for e in epochs], marker="o", label=method)
        axes[1].plot(x, [e["dev_rsum"] for e in epochs], marker="o", label=method)
    axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="dev rSum", title="dev rSum (early stopping)")
    axes[1].axhline(reference_dev_rsum, color="grey", ls="--", lw=1, label="frozen-backbone")
    axes[1].legend(fontsize=7)
    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def entropy_per_modality(table: pd.DataFrame, dataset: str):
    """One panel per measure of :data:`ENTROPY_PANELS` (``report.entropy_table``): a bar per side with its
    95% interval; the y axis spans the intervals, not zero, so small differences show."""
    fig, axes = plt.subplots(1, len(ENTROPY_PANELS), figsize=(3.2 * len(ENTROPY_PANELS), 3.2))
    palette = dict(zip(ENTROPY_SIDES, sns.color_palette(n_colors=3)))
    for ax, (measure, title) in zip(axes, ENTROPY_PANELS):
        part = table[(table.measure == measure) & table.side.isin(ENTROPY_SIDES)].dropna(subset=["value"])
        part = part.set_index("side").reindex([s for s in ENTROPY_SIDES if s in set(part.side)])
        ax.bar(range(len(part)), part.value, color=[palette[s] for s in part.index],
               yerr=[part.value - part.low, part.high - part.value], capsize=3)
        ax.set_xticks(range(len(part)), [textwrap.fill(s, 12) for s in part.index], fontsize=7)
        span = (part.high.max() - part.low.min()) or 1.0
        ax.set_ylim(part.low.min() - 0.6 * span, part.high.max() + 0.3 * span)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{dataset} test: entropy per modality, before and after LLM descriptions", y=1.03)
    return fig


def embedding_map(emap: dict):
    """The t-SNE maps of notebook 04 (``embedding_map.test.json``) before and after the adapter: images,
    captions and descriptions, a grey line from each image to its caption, the statistics in the titles."""
    kinds = np.array(emap["kind"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    styles = {"image": dict(marker="s", s=14, color="#4C72B0"), "caption": dict(marker="o", s=14, color="#DD8452"),
              "description": dict(marker=".", s=8, color="#55A868", alpha=0.6)}
    for ax, label in zip(axes, ("before", "after")):
        xy = np.asarray(emap["maps"][label])
        for a, b in zip(xy[kinds == "image"], xy[kinds == "caption"]):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="grey", lw=0.3, alpha=0.5)
        for kind, style in styles.items():
            ax.scatter(*xy[kinds == kind].T, label=f"{kind}s", **style)
        stats = emap["stats"][label]
        ax.set_title(f"{label} the adapter: image-caption cosine {stats['image_caption_cosine']:.3f}, "
                     f"modality gap {stats['modality_gap']:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"t-SNE of {len(emap['image_ids'])} test images, one caption each and its LLM descriptions", y=1.0)
    return fig


def text_to_image_examples(queries: list[dict], images_root: Path):
    """For each caption query (``qualitative.test.json``), two rows of its top 5 images, before and after
    the adapter; correct images framed in green, the first correct rank on the left."""
    fig, axes = plt.subplots(2 * len(queries), 5, figsize=(10, 2.15 * 2 * len(queries)), squeeze=False,
                             gridspec_kw={"hspace": 0.2, "wspace": 0.04})
    for q, entry in enumerate(queries):
        for r, label in enumerate(("before", "after")):
            row = axes[2 * q + r]
            for ax, hit in zip(row, entry[label]):
                ax.imshow(load_rgb(Path(images_root) / hit["path"]))
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set(color=CORRECT if hit["correct"] else "#bbbbbb", linewidth=4 if hit["correct"] else 1)
            row[0].set_ylabel(f"{label}\n(correct: rank {entry[label + '_rank']})", fontsize=9)
        axes[2 * q, 0].set_title(textwrap.fill(f"query: {entry['caption']}", 110), loc="left", fontsize=9)
    return fig


def image_to_text_examples(queries: list[dict], images_root: Path):
    """For each image query (``qualitative.test.json``), the image and its top 5 captions before and after
    the adapter; a tick and green text mark a correct caption."""
    fig, axes = plt.subplots(len(queries), 3, figsize=(14, 3.3 * len(queries)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.6, 1.6]})
    for row, entry in zip(axes, queries):
        row[0].imshow(load_rgb(Path(images_root) / entry["image"]["path"]))
        row[0].axis("off")
        row[0].set_title(f"query image {entry['image']['image_id']}", fontsize=8)
        for ax, label in zip(row[1:], ("before", "after")):
            ax.axis("off")
            for i, hit in enumerate(entry[label]):
                ax.text(0, 1 - 0.18 * i, f"{'✓' if hit['correct'] else '✗'} {textwrap.shorten(hit['caption'], 70)}",
                        fontsize=8, va="top", transform=ax.transAxes, color=CORRECT if hit["correct"] else "black")
            ax.set_title(f"top 5 captions {label} the adapter (first correct: rank {entry[label + '_rank']})",
                         fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def llm_ladder(ladder: pd.DataFrame, method: str):
    """The LLM quality ladder (``fair_test.ladder_table``), three panels stacked so each is page-wide:
    test rSum minus ``none`` with its 95% paired interval; the recall-sum gain of each direction over
    ``none``; and the describer's top-1 fidelity in percent (0 where a source has no describer)."""
    y = np.arange(len(ladder))[::-1]
    fig, axes = plt.subplots(3, 1, figsize=(7, 9.5), gridspec_kw={"height_ratios": [1, 1.3, 1]})
    axes[0].errorbar(ladder.diff_vs_none, y, xerr=[ladder.diff_vs_none - ladder.diff_low,
                                                   ladder.diff_high - ladder.diff_vs_none], fmt="o", capsize=3)
    axes[0].axvline(0, color="black", lw=0.8)
    axes[0].set(xlabel="rSum minus none (95% paired interval)", title=f"{method}: test rSum against no descriptions")
    width = 0.38
    axes[1].barh(y + width / 2, ladder.i2t - ladder.i2t.iloc[0], height=width, label="image → text")
    axes[1].barh(y - width / 2, ladder.t2i - ladder.t2i.iloc[0], height=width, label="text → image")
    axes[1].axvline(0, color="black", lw=0.8)
    axes[1].set(xlabel="recall sum minus none (points)", title="gain per direction")
    axes[1].legend(loc="upper left")
    axes[2].barh(y, ladder.fidelity_top1.fillna(0), color="#55A868")
    axes[2].set(xlim=(0, 100), xlabel="% of descriptions whose own caption beats every other image's",
                title="describer fidelity (top-1)")
    for ax in axes:
        ax.set(yticks=y, yticklabels=ladder.source)
    fig.tight_layout()
    return fig

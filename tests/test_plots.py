"""The drawing functions of notebooks 05 and 06 (osgha_lite.pipeline.plots), on the committed lite tables and
small made-up inputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osgha_lite.paths import PROJECT_ROOT
from osgha_lite.pipeline import plots, report
from osgha_lite.pipeline.figures import use_style

TABLES = PROJECT_ROOT / "results" / "lite" / "tables"


@pytest.fixture(autouse=True)
def style():
    use_style()
    yield
    plt.close("all")


def test_the_ladder_stacks_its_three_panels_at_page_width():
    ladder = pd.read_csv(TABLES / "06_llm_ladder.csv")
    fig = plots.llm_ladder(ladder, "os-hgadapter-paper")
    width, height = fig.get_size_inches()
    assert width <= 8 and height > width  # one column of panels, not a row
    boxes = [ax.get_position() for ax in fig.axes]
    assert len(boxes) == 3
    assert all(abs(box.x0 - boxes[0].x0) < 0.05 for box in boxes)  # aligned in one column
    assert boxes[0].y0 > boxes[1].y1 and boxes[1].y0 > boxes[2].y1  # top to bottom, no overlap
    for ax in fig.axes:  # every panel names its rows, top row first
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert dict(zip(ax.get_yticks(), labels)) == dict(zip(range(len(ladder))[::-1], ladder.source))
    point = np.asarray(fig.axes[0].containers[0].lines[0].get_xdata(), dtype=float)
    np.testing.assert_allclose(point, ladder.diff_vs_none)
    assert fig.axes[2].get_xlim() == (0, 100)
    assert fig.axes[2].patches[0].get_width() == 0  # none has no describer: a bar of 0, not NaN


def test_the_sensitivity_figure_has_a_panel_per_option_and_a_log_axis_for_the_dimension():
    sweeps = pd.read_csv(TABLES / "05_sweeps.csv", dtype={"value": str})
    fig = plots.sensitivity(sweeps)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == list(dict.fromkeys(sweeps.option))
    assert fig.axes[titles.index("reduced_dim")].get_xscale() == "log"
    assert fig.axes[titles.index("k")].get_xscale() == "linear"


def test_the_entropy_figure_draws_intervals_for_the_sides_each_measure_has():
    table = pd.read_csv(TABLES / "05_entropy.csv")
    fig = plots.entropy_per_modality(table, "flickr8k")
    assert [ax.get_title() for ax in fig.axes] == [title for _, title in plots.ENTROPY_PANELS]
    bars = [len(ax.patches) for ax in fig.axes]
    assert bars == [3, 3, 2, 2]  # lexical and retrieval entropy exist for text only
    spectral = table[(table.measure == "spectral_bits") & table.side.isin(plots.ENTROPY_SIDES)]
    low, high = fig.axes[0].get_ylim()
    assert low < spectral.low.min() and high > spectral.high.max()


def test_direction_gains_and_training_curves_draw_every_method():
    gains = pd.DataFrame({"method": ["a", "a", "b", "b"], "direction": ["i2t", "t2i"] * 2, "gain": [1.0, 2.0, -1.0, 0.5]})
    fig = plots.direction_gains(gains, "toy")
    assert fig.axes[0].get_title() == "toy test: gain per direction" and len(fig.axes[0].patches) >= 4
    history = {"training": {"epochs": [{"epoch": 0, "train_loss": 1.0, "dev_rsum": 5.0},
                                       {"epoch": 1, "train_loss": 0.5, "dev_rsum": 6.0}]}}
    fig = plots.training_curves({"m": history, "n": history}, ["m", "n"], 5.5)
    loss, dev = fig.axes
    assert len(loss.lines) == 2 and len(dev.lines) == 3  # two methods and the frozen line
    np.testing.assert_array_equal(dev.lines[0].get_ydata(), [5.0, 6.0])


def test_the_embedding_map_puts_the_statistics_in_the_titles():
    kinds = ["image", "image", "caption", "caption", "description"]
    xy = [[0, 0], [1, 1], [0, 1], [1, 0], [0.5, 0.5]]
    stats = {"image_caption_cosine": 0.25, "modality_gap": 0.125}
    emap = {"kind": kinds, "image_ids": ["a", "b"], "maps": {"before": xy, "after": xy},
            "stats": {"before": stats, "after": stats}}
    fig = plots.embedding_map(emap)
    assert fig.axes[0].get_title().startswith("before the adapter: image-caption cosine 0.250, modality gap 0.125")
    assert len(fig.axes[0].lines) == 2  # an image-caption line per image


def test_qualitative_examples_mark_correct_matches(tmp_path):
    for name, colour in [("a.jpg", (200, 10, 10)), ("b.jpg", (10, 200, 10))]:
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)
    hits = [{"path": "a.jpg", "correct": True}, {"path": "b.jpg", "correct": False}]
    query = {"caption": "a red square", "before": hits, "after": hits[::-1], "before_rank": 1, "after_rank": 2}
    fig = plots.text_to_image_examples([query], tmp_path)
    first, second = fig.axes[0], fig.axes[1]
    assert first.spines["top"].get_linewidth() == 4 and second.spines["top"].get_linewidth() == 1
    assert "correct: rank 2" in fig.axes[5].get_ylabel()
    captions = [{"caption": "a red square", "correct": True}, {"caption": "a green one", "correct": False}]
    image_query = {"image": {"path": "a.jpg", "image_id": "a.jpg"}, "before": captions, "after": captions,
                   "before_rank": 1, "after_rank": 1}
    fig = plots.image_to_text_examples([image_query], tmp_path)
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts == ["✓ a red square", "✗ a green one"]

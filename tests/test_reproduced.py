"""The headline numbers that `make reproduce` / nbval write into results/ (profile lite).

nbval runs the notebooks before this file in `make test`, so these checks read
freshly produced files; they compare with the published measurements for this
backbone (see README) with tolerances that allow for CPU differences.
"""

from __future__ import annotations

import pytest

from osgha_lite.results import METRIC_KEYS, read_result, result_path


def test_frozen_lite_baseline_on_flickr8k_test():
    path = result_path("lite", "frozen-backbone", "test")
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make reproduce` (or the notebooks) first")
    record = read_result(path)
    metrics = record["metrics"]["all"]
    assert set(METRIC_KEYS) <= set(metrics)
    assert record["dataset"] == "flickr8k" and record["split"] == "test"
    assert record["n_images"] == 1000 and record["n_texts"] == 5000
    assert record["backbone"].startswith("lite:efficientnet-lite0")
    # Measured on the reference machine: rSum 261.2 (3-seed spread of this recipe about +-3).
    assert metrics["rsum"] == pytest.approx(261.2, abs=8.0)
    assert metrics["rsum"] == pytest.approx(sum(metrics[k] for k in METRIC_KEYS[:-1]), abs=1e-6)
    # image-to-text is easier than text-to-image at R@1 (five chances per image query)
    assert metrics["i2t_R@1"] > metrics["t2i_R@1"]
    low, high = record["intervals"]["all"]["rsum"]
    assert low < metrics["rsum"] < high and high - low < 40
    assert record["transductive"] is False

"""Notebook 05's tables (osgha_lite.pipeline.report): small inputs, and the committed lite tables rebuilt
byte for byte from the committed result files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from osgha_lite.paths import PROJECT_ROOT
from osgha_lite.pipeline import report
from osgha_lite.profiles import notebook_profile

LITE = PROJECT_ROOT / "results" / "lite"
TABLES = LITE / "tables"


@pytest.fixture(scope="module")
def profile():
    return notebook_profile("lite")


@pytest.fixture(scope="module")
def results(profile):
    return report.load_result_set(LITE, profile)


def as_saved(frame: pd.DataFrame, digits: int) -> str:
    """The CSV text that ``save_table(..., digits=digits)`` writes."""
    return frame.to_csv(index=False, float_format=f"%.{digits + 2}f")


def committed(name: str) -> str:
    return (TABLES / f"{name}.csv").read_text(encoding="utf-8")


def test_direction_sums_add_three_recalls_per_direction():
    metrics = {"i2t_R@1": 10.0, "i2t_R@5": 20.0, "i2t_R@10": 30.0, "t2i_R@1": 1.0, "t2i_R@5": 2.0,
               "t2i_R@10": 3.5, "rsum": 66.5}
    assert report.direction_sums(metrics) == {"i2t": 60.0, "t2i": 6.5}


def test_the_result_set_groups_methods_in_profile_order(results, profile):
    assert results.protocol == "all"
    assert results.main == [m for m in profile["methods"] if not m.startswith("ablation-")]
    assert results.ablations[0] == "ablation-no-descriptions" and all(a.startswith("ablation-") for a in results.ablations)
    assert "sweep-k=1" in results.sweeps and results.sweeps == sorted(results.sweeps)
    assert results.related_sweeps == {"apse-ipik": ["sweep-apse-ipik-perspective_weight=0.0",
                                                    "sweep-apse-ipik-perspective_weight=0.25",
                                                    "sweep-apse-ipik-perspective_weight=0.5"]}


def test_a_folder_without_the_frozen_backbone_says_which_notebooks_to_run(tmp_path, profile):
    with pytest.raises(FileNotFoundError, match="run notebooks 03 and 04 first"):
        report.load_result_set(tmp_path, profile)


@pytest.mark.parametrize("name, build, digits", [
    ("05_main_results", lambda r, p: report.main_table(r), 1),
    ("05_ablations", lambda r, p: report.ablation_table(r), 1),
    ("05_paired_differences", lambda r, p: report.difference_table(
        r, report.read_json(LITE / "evaluation" / "differences.test.json")["differences"]), 1),
    ("05_sweeps", report.sweep_table, 1),
    ("05_related_sweeps", report.related_sweep_table, 1),
    ("05_entropy", lambda r, p: report.entropy_table(report.read_json(LITE / "entropy" / "entropy.test.json")), 3),
])
def test_the_committed_tables_are_rebuilt_byte_for_byte(results, profile, name, build, digits):
    assert as_saved(build(results, profile), digits) == committed(name)


def test_the_ablation_table_measures_change_from_the_full_method(results):
    table = report.ablation_table(results).set_index("method")
    assert table.loc["os-hgadapter", "change_vs_full"] == 0.0
    np.testing.assert_allclose(table.change_vs_full, table.rsum - table.loc["os-hgadapter", "rsum"])
    np.testing.assert_allclose(table.i2t_sum + table.t2i_sum, table.rsum, atol=1e-9)


def test_direction_gains_are_against_the_frozen_backbone(results):
    gains = report.direction_gains(results)
    assert "frozen-backbone" not in set(gains.method)
    assert len(gains) == 2 * (len(results.main) + len(results.ablations) - 1)
    frozen = report.direction_sums(results.records["frozen-backbone"]["metrics"]["all"])
    hg = report.direction_sums(results.records["os-hgadapter"]["metrics"]["all"])
    row = gains[(gains.method == "os-hgadapter") & (gains.direction == "t2i")]
    assert row.gain.item() == pytest.approx(hg["t2i"] - frozen["t2i"])


def test_the_difference_table_flags_intervals_that_exclude_zero(results):
    differences = {"frozen-csls": _difference(2.0, 1.0, 3.0), "frozen-backbone": _difference(-0.5, -2.0, 1.0)}
    table = report.difference_table(results, differences)
    assert list(table["os-hgadapter minus"]) == ["frozen-backbone", "frozen-csls"]  # profile order
    assert list(table.excludes_0) == [False, True]
    frozen_rsum = results.records["frozen-backbone"]["metrics"]["all"]["rsum"]
    assert table["relative_%"].iloc[0] == pytest.approx(-50 / frozen_rsum)


def _difference(point, low, high):
    return {"rsum": {"point": point, "low": low, "high": high}, "i2t_R@1": {"point": 0.1}, "t2i_R@1": {"point": 0.2}}


def test_a_sweep_table_sorts_values_numerically_and_marks_the_base(tmp_path):
    profile = {"name": "toy", "eval": {"protocols": ["all"]}, "methods": {"m": {"options": {"k": 5}}, "frozen-backbone": {}},
               "sweeps": {"base": "m", "k": [1, 10]}}
    for method, dev, test in [("frozen-backbone", 1.0, 1.0), ("m", 5.0, 6.0), ("sweep-k=10", 3.0, 4.0),
                              ("sweep-k=1", 2.0, 2.5)]:
        _write_record(tmp_path, method, dev, test)
    table = report.sweep_table(report.load_result_set(tmp_path, profile), profile)
    assert list(table.value) == ["1", "5", "10"]  # 10 after 5: numeric, not text, order
    assert list(table.base) == [False, True, False]
    assert list(table.test_rsum) == [2.5, 6.0, 4.0]


def _write_record(folder, method, dev, test):
    record = {"method": method, "dataset": "toy", "split": "test", "backbone": "b", "config": {},
              "metrics": {"all": {"rsum": test}}, "dev_metrics": {"all": {"rsum": dev}}}
    (folder / f"{method}.test.json").write_text(json.dumps(record))


def test_entropy_rows_split_measure_and_side_and_keep_missing_values_as_nan():
    entropy = {"metrics": {"knn_bits[images]": 1.5, "lexical_bits[captions]": None},
               "intervals": {"knn_bits[images]": [1.0, 2.0]},
               "n": {"knn_bits[images]": 10, "lexical_bits[captions]": 0}}
    table = report.entropy_table(entropy)
    assert list(table.measure) == ["knn_bits", "lexical_bits"] and list(table.side) == ["images", "captions"]
    assert table.low.iloc[0] == 1.0 and table.high.iloc[0] == 2.0
    assert table[["value", "low", "high"]].iloc[1].isna().all()


def test_training_times_come_from_the_log_or_are_absent(results):
    assert report.training_times(results, {}) is None
    times = report.training_times(results, {"os-hgadapter.test": {"train_seconds": 12.5}})
    row = times.set_index("method").loc["os-hgadapter"]
    assert row.train_seconds == 12.5 and np.isnan(row.total_seconds)
    assert row.epochs == len(results.records["os-hgadapter"]["training"]["epochs"])
    assert "frozen-backbone" not in set(times.method)  # no training history


def test_trained_methods_are_those_with_a_history(results):
    trained = report.trained_methods(results)
    assert "os-hgadapter" in trained and "frozen-backbone" not in trained
    assert all(results.records[m]["training"] for m in trained)


def test_the_related_sweep_table_is_empty_without_its_base(tmp_path, profile):
    shutil.copy(LITE / "frozen-backbone.test.json", tmp_path)
    results = report.load_result_set(tmp_path, profile)
    assert report.related_sweep_table(results, profile).empty

"""Notebook 06's steps (osgha_lite.pipeline.fair_test) on small made-up splits and scores."""

from __future__ import annotations

import json
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest

from osgha_lite.metrics.bootstrap import bootstrap_difference
from osgha_lite.metrics.retrieval import retrieval_metrics
from osgha_lite.pipeline import fair_test
from osgha_lite.train.experiment import Embedded

Row = namedtuple("Row", "source diff_vs_none diff_low diff_high i2t t2i")


def embedded(n_images: int, captions_per_image: int = 2, noise: float = 0.0, seed: int = 0) -> Embedded:
    """Unit image vectors and captions near them (``noise`` moves the captions away)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    text_to_image = np.repeat(np.arange(n_images), captions_per_image)
    texts = images[text_to_image] + noise * rng.normal(size=(len(text_to_image), 16)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    empty = np.zeros((len(texts), 1, 16), np.float32)
    return Embedded(images, texts, text_to_image, empty, np.zeros((len(texts), 1), bool))


def test_frozen_rsum_scores_the_first_images_and_all_their_captions():
    split = embedded(30, noise=0.0)
    assert fair_test.frozen_rsum(split) == pytest.approx(600.0)  # captions equal to their image: every recall 100
    noisy = embedded(30, noise=2.0)
    n = 12
    rows = noisy.text_to_image < n
    expected = retrieval_metrics(noisy.images[:n] @ noisy.texts[rows].T, noisy.text_to_image[rows])["rsum"]
    assert fair_test.frozen_rsum(noisy, n_images=n) == expected
    assert fair_test.frozen_rsum(noisy, n_images=n) != fair_test.frozen_rsum(noisy)


def _run(n_adapt: int, n_dev: int, noise: float) -> fair_test.ProtocolRun:
    splits = {"train": SimpleNamespace(n_images=n_adapt), "dev": SimpleNamespace(n_images=n_dev)}
    return fair_test.ProtocolRun(None, splits, {"train": embedded(n_adapt), "dev": embedded(n_dev, noise=noise)})


def test_the_protocol_table_has_frozen_rows_then_every_trained_method():
    training = {"initial_dev_rsum": 240.0, "best_epoch": 2, "best_rsum": 245.5, "improved": True}
    records = {"frozen-backbone": {}, "os-hgadapter": {"training": training}}
    table = fair_test.protocol_table("disjoint", _run(40, 20, 3.0), _run(50, 20, 3.0), records)
    assert list(table.row) == ["frozen (adapt)", "frozen (dev)", "frozen (adapt)", "frozen (dev)", "os-hgadapter"]
    assert list(table.protocol) == ["disjoint", "disjoint", "shared", "shared", "disjoint"]
    assert list(table.images) == [40, 20, 50, 20, 40]
    assert table.rsum.iloc[0] == pytest.approx(600.0) and table.rsum.iloc[1] < 600.0
    method = table.iloc[-1]
    assert method.dev_rsum_epoch_0 == 240.0 and method.dev_rsum_best == 245.5 and bool(method.improved)
    assert len(fair_test.protocol_table("shared", _run(40, 20, 3.0), None, records)) == 3


def test_missing_method_results_are_named(tmp_path):
    (tmp_path / "a.test.json").write_text(json.dumps({
        "method": "a", "dataset": "toy", "split": "test", "backbone": "b", "metrics": {}, "config": {}}))
    assert list(fair_test.load_method_records(tmp_path, {"methods": {"a": {}}})) == ["a"]
    with pytest.raises(FileNotFoundError, match=r"\['b'\]; run notebook 03 first"):
        fair_test.load_method_records(tmp_path, {"methods": {"a": {}, "b": {}}})


def test_a_verdict_reads_the_interval_against_none():
    none = Row("none", 0.0, 0.0, 0.0, 130.0, 120.0)
    assert fair_test.verdict(none, none) == "reference"
    assert fair_test.verdict(Row("x", 7.0, 5.0, 9.1, 131.5, 125.5), none) == (
        "raises rSum (+7.0 [+5.0, +9.1]; i2t +1.5, t2i +5.5)")
    assert fair_test.verdict(Row("y", -1.5, -3.5, 0.5, 128.0, 120.5), none).startswith("does not change rSum")
    assert fair_test.verdict(Row("z", -2.0, -3.0, -0.5, 129.0, 119.0), none).startswith("lowers rSum")


class FakeSide:
    """The parts of LadderTextSide that score_ladder uses."""

    def __init__(self, text_to_image):
        self.test = SimpleNamespace(text_to_image=text_to_image)

    def entropy(self, embedded, texts):
        return {"lexical_rarefied_bits": float(len(texts))}


def _ladder_run(kind, sims, coverage, fidelity=None):
    mask = np.zeros((len(coverage), 1), bool)
    mask[:, 0] = coverage
    split = SimpleNamespace(description_coverage=float(np.mean(coverage)))
    scored = SimpleNamespace(sims=sims, dev_metrics={"rsum": 250.0},
                             history=SimpleNamespace(best_epoch=3, result_dict=lambda: {"best_epoch": 3}))
    return {"source": {"kind": kind}, "scored": scored, "embedded": {"test": split, "adapt": split},
            "texts": {"test": {"caption": ["a description"]} if kind != "none" else {}},
            "fidelity": fidelity or {"fidelity": np.nan, "top1": np.nan, "n": 0}}


def test_score_ladder_compares_every_source_with_none_on_the_same_queries():
    split = embedded(40, noise=3.0)
    none_sims = split.images @ split.texts.T
    better_sims = none_sims + 0.5 * (split.text_to_image[None, :] == np.arange(40)[:, None])
    runs = {"none": _ladder_run("none", none_sims, [False] * 80),
            "llm": _ladder_run("llm", better_sims, [True] * 60 + [False] * 20, {"fidelity": 0.9, "top1": 0.4, "n": 60})}
    scores = fair_test.score_ladder(runs, FakeSide(split.text_to_image), "all", n_boot=50, seed=0)
    ladder, entropy = fair_test.ladder_tables(scores)
    assert list(ladder.source) == ["none", "llm"] and list(entropy.source) == ["none", "llm"]
    none, llm = ladder.iloc[0], ladder.iloc[1]
    assert (none.diff_vs_none, none.diff_low, none.diff_high) == (0.0, 0.0, 0.0)
    expected = bootstrap_difference(better_sims, none_sims, split.text_to_image, n_boot=50, seed=0)["rsum"]
    assert (llm.diff_vs_none, llm.diff_low, llm.diff_high) == (expected.point, expected.low, expected.high)
    assert llm.rsum == pytest.approx(retrieval_metrics(better_sims, split.text_to_image)["rsum"])
    assert llm.i2t + llm.t2i == pytest.approx(llm.rsum)
    assert llm["test_coverage_%"] == 75.0 and llm.fidelity == 90.0 and llm.fidelity_top1 == 40.0
    assert np.isnan(none.fidelity) and entropy.lexical_rarefied_bits.tolist() == [0.0, 1.0]

    profile = {"dataset": "toy", "ladder": {"method": "m"}, "methods": {"m": {"options": {}, "descriptions": 3}}}
    result = fair_test.ladder_result(profile, "backbone-id", "llm", runs["llm"], scores["llm"], k=3)
    assert result["method"] == "ladder-llm" and result["config"]["method"]["descriptions"] == 3
    assert result["difference_vs_none"]["rsum"] == [llm.diff_vs_none, llm.diff_low, llm.diff_high]
    assert result["metrics"]["all"]["rsum"] == llm.rsum and result["text_side_entropy"]["source"] == "llm"
    none_result = fair_test.ladder_result(profile, "backbone-id", "none", runs["none"], scores["none"], k=3)
    assert none_result["config"]["method"]["descriptions"] == 0

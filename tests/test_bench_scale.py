"""The paper-scale simulation benchmark: its synthetic data, one tiny fraction end to end, its growth fit.

Timings are printed by the benchmark, never asserted here.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from osgha_lite.metrics.retrieval import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_sizes_follow_coco(bench):
    sizes = bench.split_sizes(0.10)
    assert sizes["images"] == round(0.10 * 123_287) == 12_329
    assert sizes["dev"] == sizes["test"] == 500
    assert sizes["train"] + sizes["dev"] + sizes["test"] == sizes["images"]
    assert bench.split_sizes(1.0)["test"] == 5_000
    for fraction in (0.002, 0.013, 0.05):
        assert bench.split_sizes(fraction)["test"] % 5 == 0  # five equal folds for the 1K protocol
    with pytest.raises(ValueError, match="fraction"):
        bench.split_sizes(0.0)


def test_planted_split_shapes_and_retrieval_above_chance(bench):
    split = bench.planted_split(400, np.random.default_rng(0))
    assert split.images.shape == (400, 512) and split.texts.shape == (2000, 512)
    assert split.descriptions.shape == (2000, 3, 512) and split.description_mask.all()
    np.testing.assert_array_equal(np.bincount(split.text_to_image), np.full(400, 5))
    np.testing.assert_allclose(np.linalg.norm(split.texts, axis=1), 1.0, atol=1e-5)
    metrics = retrieval_metrics(split.images @ split.texts.T, split.text_to_image)
    chance_r1 = 100 / 400
    assert metrics["t2i_R@1"] > 10 * chance_r1 and metrics["i2t_R@1"] > 10 * chance_r1
    assert metrics["t2i_R@1"] < 100  # not trivially separable


def test_simulated_inputs_match_method_embeddings_shapes(bench):
    from osgha_lite.profiles import load_profile

    profile = load_profile("paper-coco")
    rng = np.random.default_rng(1)
    embedded = {s: bench.planted_split(n, rng) for s, n in (("train", 30), ("dev", 10), ("test", 10))}
    extras = {}
    apse = bench.simulated_inputs(profile["methods"]["apse-ipik"], embedded, extras, profile, rng)
    assert apse["train"].image_texts.shape == (30, 3, 512) and apse["train"].image_text_mask.all()
    assert not apse["test"].image_text_mask.any()  # no caption-derived texts reach a test image
    entity = bench.simulated_inputs(profile["methods"]["entityclip"], embedded, extras, profile, rng)
    assert entity["train"].descriptions.shape == (150, 1, 512)
    hgan = bench.simulated_inputs(profile["methods"]["hgan"], embedded, extras, profile, rng)
    local = hgan["dev"].local
    assert local.images.shape == (10, 16, 512) and local.texts.shape == (50, 24, 512)
    assert local.text_mask.sum(1).min() >= 8


def test_notebook_methods_and_epoch_cap(bench):
    from osgha_lite.profiles import load_profile
    from osgha_lite.train.experiment import sweep_methods

    profile = load_profile("paper-coco")
    runs = bench.notebook_methods(profile)
    assert set(profile["methods"]) <= set(runs)
    assert set(sweep_methods(profile)) <= set(runs) and set(sweep_methods(profile, "related_sweeps")) <= set(runs)
    capped = bench.capped_profile(profile, 2)
    assert capped["adapter_training"]["train"]["epochs"] == 2
    assert capped["methods"]["os-hgadapter"]["train"]["epochs"] == 2
    assert capped["methods"]["frozen-csls"]["train"]["epochs"] == 0
    assert profile["methods"]["os-hgadapter"]["train"]["epochs"] == 20  # the original is untouched
    assert bench.configured_epochs(profile, profile["methods"]["os-hgadapter"]) == 20


def test_growth_fit_recovers_known_exponents(bench):
    sizes = [1_000, 5_000, 10_000]
    slope, scale = bench.growth_fit(sizes, [3.0 * n ** 1.5 for n in sizes])
    assert slope == pytest.approx(1.5) and scale == pytest.approx(3.0)
    assert bench.extrapolate(sizes, [2.0 * n for n in sizes], 123_287) == pytest.approx(246_574)
    with pytest.raises(ValueError, match="two different sizes"):
        bench.growth_fit([5, 5], [1.0, 2.0])


def test_tiny_fraction_end_to_end(bench, tmp_path, monkeypatch):
    """The methods and evaluation stages of one tiny fraction, in process, on a subset of notebook 03's runs."""
    monkeypatch.setenv("OSGHA_CACHE_DIR", str(tmp_path / "cache"))
    from osgha_lite.profiles import load_profile

    keep = {"frozen-backbone", "linear-head", "os-hgadapter"}
    skip = [name for name in bench.notebook_methods(load_profile("paper-coco")) if name not in keep]
    methods = bench.stage_methods(0.002, "paper-coco", 1, 0, skip, str(tmp_path / "work"))
    assert methods["sizes"] == bench.split_sizes(0.002)
    done = [r for r in methods["rows"] if not r["skipped"]]
    assert {r["method"] for r in done} == keep and len(methods["rows"]) == len(skip) + len(keep)
    for row in done:
        assert row["seconds"] >= 0 and row["full_training_seconds"] >= row["seconds"]
        assert 0 <= row["test_t2i_R@1"] <= 100
    for row in done:  # the frozen features and the residual adapter keep the planted pairs; chance is 10%
        if row["method"] != "linear-head":  # a linear map from random weights starts at chance
            assert row["test_t2i_R@1"] > 3 * 100 / 10, row
    trained = next(r for r in done if r["method"] == "os-hgadapter")
    assert trained["epochs_run"] == 1 and trained["configured_epochs"] == 20
    evaluation = bench.stage_evaluation(10, ["coco-5k", "coco-1k"], 20, 0)
    assert set(evaluation["rsum"]) == {"coco-5k", "coco-1k"}
    rows = bench.stage_rows(0.002, methods["sizes"], {"per_second": 10.0, "sample": 4, "peak_mib": 1.0,
                                                      "base_mib": 1.0},
                            {"per_second": 20.0, "sample": 8, "peak_mib": 1.0, "base_mib": 1.0}, methods, evaluation)
    assert [r["stage"] for r in rows] == list(bench.STAGES)
    for row in rows:
        assert {"fraction", "n_images", "n_captions", "seconds", "peak_mib", "note"} <= set(row)
        assert row["n_images"] == 247 and row["n_captions"] == 5 * 247 and math.isfinite(row["seconds"])
    assert rows[0]["seconds"] == pytest.approx(247 / 10.0)
    assert "extrapolated from 4 images" in rows[0]["note"]


def test_encoder_output_bytes_and_report(bench, capsys):
    # one image: float32 vector + 16 float16 grid tokens and their mask; one caption: + 24 tokens; one LLM text
    assert bench.encoder_output_bytes(1, 0, 0) == 4 * 512 + 16 * (2 * 512 + 1)
    assert bench.encoder_output_bytes(0, 1, 0) == 4 * 512 + 24 * (2 * 512 + 1)
    assert bench.encoder_output_bytes(0, 0, 10) == 10 * 4 * 512
    rows = [{"stage": stage, "fraction": f, "n_images": n, "n_captions": 5 * n, "n_texts": 25 * n,
             "seconds": t * n, "peak_mib": 100.0 + n, "base_mib": 50.0, "note": "", "full_training_seconds": 2 * t * n,
             "methods": [{"method": "frozen-backbone", "skipped": False, "seconds": t * n, "seconds_per_epoch": 0.0,
                          "full_training_seconds": t * n}]}
            for f, n in ((0.01, 1233), (0.05, 6164)) for stage, t in zip(bench.STAGES, (1.0, 2.0, 3.0, 0.001))]
    summary = bench.summarise(rows)
    assert summary["images"]["time_exponent"] == pytest.approx(1.0)
    assert summary["methods"]["coco_seconds"] == pytest.approx(3.0 * 123_287)
    assert summary["images"]["coco_seconds"] == pytest.approx(123_287)  # 1 image/s, by rate
    assert summary["texts"]["coco_seconds"] == pytest.approx(bench.pipeline_texts(123_287, 113_287) * 2 / 25)
    bench.report({"profile": "paper-coco", "epochs_cap": 2, "threads": 1, "skipped": [], "fractions": [0.01, 0.05],
                  "rows": rows, "growth": summary,
                  "full_size_evaluation": {"coco": {"n_test": 5000, "protocols": ["coco-5k"], "bootstrap": 1000,
                                                    "seconds": 1.0, "peak_mib": 900.0}}})
    printed = capsys.readouterr().out
    assert "GPU: not measured" in printed and "extrapolated, not measured" in printed
    assert "frozen-backbone" in printed and "COCO size" in printed

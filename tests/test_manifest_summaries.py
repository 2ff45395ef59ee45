"""The regeneration check compares the t-SNE map through its summary, and still fails on the summary."""

from __future__ import annotations

import json

from osgha_lite.pipeline.manifest import compare_results

KEY = "results/lite/evaluation/embedding_map.test.json"


def write(path, coordinates, trust):
    path.write_text(json.dumps({"maps": {"after": coordinates}, "stats": {"after": {
        "tsne_trustworthiness@10": trust, "modality_gap": 0.1}}}))
    return path


def test_map_coordinates_are_compared_through_the_summary(tmp_path):
    committed = write(tmp_path / "a.json", [[0.0, 1.0], [2.0, 3.0]], 0.95)
    moved = write(tmp_path / "b.json", [[5.0, -1.0], [0.5, 9.0]], 0.951)
    assert compare_results(KEY, committed, moved) == []
    worse = write(tmp_path / "c.json", [[0.0, 1.0], [2.0, 3.0]], 0.90)
    assert any("tsne_trustworthiness@10" in problem for problem in compare_results(KEY, committed, worse))
    fewer = write(tmp_path / "d.json", [[0.0, 1.0]], 0.95)  # the coordinates are skipped whole, not their count
    assert compare_results(KEY, committed, fewer) == []


def test_other_result_files_compare_every_coordinate(tmp_path):
    committed = write(tmp_path / "a.json", [[0.0, 1.0]], 0.95)
    moved = write(tmp_path / "b.json", [[0.0, 1.5]], 0.95)
    problems = compare_results("results/lite/os-hgadapter.test.json", committed, moved)
    assert problems and "/maps/after[0][1]" in problems[0]

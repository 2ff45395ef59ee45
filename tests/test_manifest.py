"""The artifact manifest: recording, the disk check, the regeneration check, and hand edits."""

from __future__ import annotations

import json
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from osgha_lite.pipeline import manifest
from osgha_lite.data import PROJECT_ROOT
from osgha_lite.pipeline.figures import latex_table, save_figure, save_table
from osgha_lite.pipeline.manifest import Roots, check_disk, check_regenerated, compare_tables, read_manifest


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """Empty figures/ and results/ folders that the package writes to."""
    roots = Roots.under(tmp_path / "repo")
    monkeypatch.setenv("OSGHA_FIGURES_DIR", str(roots.figures))
    monkeypatch.setenv("OSGHA_RESULTS_DIR", str(roots.results))
    return roots


def _table():
    return pd.DataFrame({"method": ["frozen", "adapter_x"], "rsum": [261.2, 284.94], "best_epoch": [0, 2]})


def _figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 3, 2], marker="o", label="a")
    ax.legend()
    return fig


def _save_both(profile="toy"):
    save_table(_table(), profile, "t", digits=1, notebook="05_figures", sources=["results/toy/*.json"])
    fig = _figure()
    save_figure(fig, profile, "f", notebook="05_figures", sources=["results/toy/*.json"], caption=CAPTION)
    plt.close(fig)


CAPTION = "A toy line rising then falling: look at the middle point."


def test_save_records_every_format_with_notebook_sources_and_hash(tree):
    _save_both()
    artifacts = read_manifest("toy", tree)
    assert sorted(artifacts) == ["figures/toy/f.pdf", "figures/toy/f.png", "results/toy/tables/t.csv",
                                 "results/toy/tables/t.md", "results/toy/tables/t.tex"]
    csv_entry = artifacts["results/toy/tables/t.csv"]
    assert csv_entry["notebook"] == "05_figures" and csv_entry["sources"] == ["results/toy/*.json"]
    assert csv_entry["digits"] == 1 and "volatile" not in csv_entry  # every column is compared
    assert csv_entry["sha256"] == manifest.sha256_file(tree.results / "toy" / "tables" / "t.csv")
    assert artifacts["figures/toy/f.png"]["kind"] == "figure"
    assert artifacts["figures/toy/f.png"]["caption"] == artifacts["figures/toy/f.pdf"]["caption"] == CAPTION
    assert check_disk("toy", tree) == []


@pytest.mark.parametrize("caption", ["figures/toy/f.png", "f", "", "a toy line rising then falling."])
def test_a_caption_that_is_a_path_or_not_a_sentence_is_refused(tree, caption):
    with pytest.raises(ValueError, match="save_figure\\('f'\\): the caption must be a sentence"):
        save_figure(_figure(), "toy", "f", notebook="n", caption=caption)


def test_a_figure_without_a_caption_or_with_another_caption_is_reported(tree, tmp_path):
    _save_both()
    path = tree.manifest_path("toy")
    record = json.loads(path.read_text())
    del record["artifacts"]["figures/toy/f.png"]["caption"]
    path.write_text(json.dumps(record))
    assert any("figures/toy/f.png: no caption" in p for p in check_disk("toy", tree))
    record["artifacts"]["figures/toy/f.png"]["caption"] = "Another caption of the toy line, by hand."
    path.write_text(json.dumps(record))
    regenerated = Roots.under(tmp_path / "regenerated")
    shutil.copytree(tree.figures, regenerated.figures)
    shutil.copytree(tree.results, regenerated.results)
    record["artifacts"]["figures/toy/f.png"]["caption"] = CAPTION
    regenerated.manifest_path("toy").write_text(json.dumps(record))
    problems, _ = check_regenerated("toy", tree, regenerated)
    assert any("figures/toy/f.png: caption differs" in p for p in problems), problems


def test_saving_the_same_figure_twice_gives_identical_bytes(tree):
    first = {p.suffix: p.read_bytes() for p in save_figure(_figure(), "toy", "f", notebook="n", caption=CAPTION)}
    second = {p.suffix: p.read_bytes() for p in save_figure(_figure(), "toy", "f", notebook="n", caption=CAPTION)}
    assert first == second
    assert b"CreationDate" not in first[".pdf"]


def test_disk_check_catches_a_hand_edit_a_missing_file_and_an_unlisted_file(tree):
    _save_both()
    csv_path = tree.results / "toy" / "tables" / "t.csv"
    csv_path.write_text(csv_path.read_text().replace("284.94", "300.00"))
    (tree.figures / "toy" / "f.pdf").unlink()
    (tree.figures / "toy" / "extra.png").write_bytes(b"not made by a notebook")
    problems = "\n".join(check_disk("toy", tree))
    assert "results/toy/tables/t.csv: its bytes differ from the manifest's sha256" in problems
    assert "figures/toy/f.pdf: listed in manifest.json but missing on disk" in problems
    assert "figures/toy/extra.png: on disk but not in manifest.json" in problems


def test_disk_check_without_a_manifest_says_what_to_run(tmp_path):
    assert "make figures" in check_disk("toy", Roots.under(tmp_path))[0]


def test_compare_tables_tolerance_is_half_a_shown_digit(tmp_path):
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text("method,rsum,best_epoch\nfrozen,261.2000,1\n")
    new.write_text("method,rsum,best_epoch\nfrozen,261.2400,1\n")
    assert compare_tables("t.csv", old, new, digits=1) == []
    new.write_text("method,rsum,best_epoch\nfrozen,261.2600,1\n")
    assert compare_tables("t.csv", old, new, digits=1) == [
        "t.csv, line 2, column 'rsum': committed 261.2000, regenerated 261.2600 (tolerance 0.05)"]
    new.write_text("method,rsum,best_epoch\nfrozen,261.2000,3\n")  # no column is skipped
    assert compare_tables("t.csv", old, new, digits=1) == [
        "t.csv, line 2, column 'best_epoch': committed 1, regenerated 3 (tolerance 0.05)"]
    new.write_text("method,rsum,best_epoch\nlinear,261.2000,1\n")
    assert "column 'method': committed 'frozen', regenerated 'linear'" in compare_tables("t.csv", old, new, 1)[0]
    new.write_text("method,rsum\nfrozen,261.2\n")
    assert "columns differ" in compare_tables("t.csv", old, new, 1)[0]


def test_regeneration_check_passes_on_a_rerun_and_fails_on_changed_numbers(tmp_path, monkeypatch):
    committed, regenerated = Roots.under(tmp_path / "a"), Roots.under(tmp_path / "b")
    for roots in (committed, regenerated):
        monkeypatch.setenv("OSGHA_FIGURES_DIR", str(roots.figures))
        monkeypatch.setenv("OSGHA_RESULTS_DIR", str(roots.results))
        _save_both()
    assert check_regenerated("toy", committed, regenerated) == ([], [])

    frame = _table()
    frame.loc[1, "rsum"] = 285.5
    save_table(frame, "toy", "t", digits=1, notebook="05_figures")
    problems, notes = check_regenerated("toy", committed, regenerated)
    assert problems == ["results/toy/tables/t.csv, line 3, column 'rsum': committed 284.940, "
                        "regenerated 285.500 (tolerance 0.05)"]
    save_table(_table(), "toy", "u", notebook="05_figures")
    problems, _ = check_regenerated("toy", committed, regenerated)
    assert any("results/toy/tables/u.csv: regenerated but not committed" in p for p in problems)


def test_latex_table_escapes_and_rounds():
    text = latex_table(pd.DataFrame({"method": ["a_b & c%"], "R@1": [25.84]}), digits=1)
    assert r"a\_b \& c\%" in text and "25.8" in text and r"\toprule" in text and "lr" in text


def test_committed_artifacts_match_their_manifest():
    """The repository's figures and tables are exactly the ones the manifest records."""
    assert check_disk("lite", Roots.under(PROJECT_ROOT)) == []


def test_a_hand_edited_committed_table_fails_the_check(tmp_path, capsys):
    """Edit one number of the committed main results table by hand: `make test`'s check must fail."""
    copy = tmp_path / "repo"
    for top in ("figures", "results"):
        shutil.copytree(PROJECT_ROOT / top / "lite", copy / top / "lite")
    assert manifest.main(["check", "--profile", "lite", "--root", str(copy)]) == 0
    edited = copy / "results" / "lite" / "tables" / "05_main_results.csv"
    lines = edited.read_text().splitlines()
    cells = lines[1].split(",")
    column = lines[0].split(",").index("rsum")
    cells[column] = f"{float(cells[column]) + 1:.4f}"
    lines[1] = ",".join(cells)
    edited.write_text("\n".join(lines) + "\n")

    assert manifest.main(["check", "--profile", "lite", "--root", str(copy)]) == 1
    assert "05_main_results.csv: its bytes differ from the manifest's sha256" in capsys.readouterr().err
    # Compared with a regeneration (here the unedited repository), the changed number itself is named.
    problems, _ = check_regenerated("lite", Roots.under(copy), Roots.under(PROJECT_ROOT))
    assert len(problems) == 1 and problems[0].startswith("results/lite/tables/05_main_results.csv, line 2, "
                                                         "column 'rsum'")


def test_readme_shows_the_generated_headline_table_and_existing_figures():
    """The README's results table is the generated one, verbatim, and every figure it links exists."""
    import re

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    table = (PROJECT_ROOT / "results" / "lite" / "tables" / "05_main_results.md").read_text(encoding="utf-8")
    assert table.strip() in readme, "README.md: paste results/lite/tables/05_main_results.md after `make reproduce`"
    linked = re.findall(r"\((figures/lite/[^)]+|results/lite/tables/[^)]+)\)", readme)
    assert linked and all((PROJECT_ROOT / path).is_file() for path in linked), linked


def test_markdown_table_rounds_floats_and_keeps_text_cells_verbatim():
    from osgha_lite.pipeline.figures import markdown_table

    text = markdown_table(pd.DataFrame({"value": ["0.05", "0.15"], "rsum": [284.73, float("nan")]}), digits=1)
    assert "| 0.05    |  284.7 |" in text and "| 0.15    |    nan |" in text


def test_a_hand_edited_committed_result_file_fails_the_check(tmp_path, capsys):
    """Results are the source of every table: editing one number of a result JSON must fail the check."""
    copy = tmp_path / "repo"
    for top in ("figures", "results"):
        shutil.copytree(PROJECT_ROOT / top / "lite", copy / top / "lite")
    edited = copy / "results" / "lite" / "os-hgadapter.test.json"
    record = json.loads(edited.read_text())
    record["metrics"]["all"]["i2t_R@1"] += 1.0
    edited.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    assert manifest.main(["check", "--profile", "lite", "--root", str(copy)]) == 1
    assert ("FAIL: results/lite/os-hgadapter.test.json: its bytes differ from the manifest's sha256 (edited by "
            "hand?); regenerate it with notebook 03_training") in capsys.readouterr().err
    problems, _ = check_regenerated("lite", Roots.under(copy), Roots.under(PROJECT_ROOT))
    assert problems == ["results/lite/os-hgadapter.test.json, field /metrics/all/i2t_R@1: committed "
                        f"{record['metrics']['all']['i2t_R@1']!r}, regenerated "
                        f"{record['metrics']['all']['i2t_R@1'] - 1.0!r} (tolerance 0.005)"]


def test_every_committed_result_file_is_in_the_manifest():
    artifacts = read_manifest("lite", Roots.under(PROJECT_ROOT))
    results = manifest.result_files("lite", Roots.under(PROJECT_ROOT))
    assert len(results) > 30
    for path in results:
        entry = artifacts[Roots.under(PROJECT_ROOT).key(path)]
        assert entry["kind"] == "result" and entry["notebook"] in {nb.stem for nb in
                                                                  (PROJECT_ROOT / "notebooks").glob("0*.ipynb")}


def test_compare_results_allows_half_a_printed_digit_and_skips_no_field(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    base = {"method": "m", "metrics": {"all": {"rsum": 264.98, "i2t_medr": 5}},
            "training": {"epochs": [{"epoch": 1, "loss": 2.5}], "finished": True}}
    old.write_text(json.dumps(base))

    def differences(**changes):
        record = json.loads(json.dumps(base))
        for path, value in changes.items():
            *parents, leaf = path.split("__")
            node = record
            for name in parents:
                node = node[name]
            node[leaf] = value
        new.write_text(json.dumps(record))
        return manifest.compare_results("r.json", old, new)

    assert differences(metrics__all__rsum=264.984) == []
    assert differences(metrics__all__rsum=264.99) == [
        "r.json, field /metrics/all/rsum: committed 264.98, regenerated 264.99 (tolerance 0.005)"]
    assert differences(metrics__all__i2t_medr=6) == ["r.json, field /metrics/all/i2t_medr: committed 5, regenerated 6"]
    assert differences(method="n") == ["r.json, field /method: committed 'm', regenerated 'n'"]
    assert differences(training__finished=False) == [
        "r.json, field /training/finished: committed True, regenerated False"]
    assert differences(training__epochs=[]) == ["r.json, field /training/epochs: 1 items committed, 0 regenerated"]
    assert differences(extra=1) == ["r.json, field /extra: only in the regenerated file"]
    # a wall-clock time is no exception (result files hold none; osgha_lite.train.timings keeps them)
    assert differences(training__seconds=10.7) == ["r.json, field /training/seconds: only in the regenerated file"]


def test_register_results_records_a_tree_and_the_regeneration_check_compares_results(tmp_path, capsys):
    committed, regenerated = Roots.under(tmp_path / "a"), Roots.under(tmp_path / "b")
    for roots, rsum in ((committed, 280.0), (regenerated, 280.001)):
        (roots.results / "toy" / "entropy").mkdir(parents=True)
        (roots.results / "toy" / "m.test.json").write_text(json.dumps({"metrics": {"rsum": rsum}}))
        (roots.results / "toy" / "entropy" / "e.test.json").write_text(json.dumps({"h": 1.5}))
        assert manifest.main(["register-results", "--profile", "toy", "--root", str(roots.figures.parent)]) == 0
        assert check_disk("toy", roots) == []
    assert "2 result files recorded in" in capsys.readouterr().out
    entries = read_manifest("toy", committed)
    assert {k: v["notebook"] for k, v in entries.items()} == {"results/toy/entropy/e.test.json": "02_entropy",
                                                               "results/toy/m.test.json": "03_training"}
    assert check_regenerated("toy", committed, regenerated) == ([], [])
    (regenerated.results / "toy" / "m.test.json").write_text(json.dumps({"metrics": {"rsum": 281.0}}))
    assert check_regenerated("toy", committed, regenerated)[0] == [
        "results/toy/m.test.json, field /metrics/rsum: committed 280.0, regenerated 281.0 (tolerance 0.005)"]
    (committed.results / "toy" / "odd").mkdir()
    (committed.results / "toy" / "odd" / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="no notebook is known to write results/toy/odd/"):
        manifest.register_results("toy", committed)


def test_the_folder_rule_names_the_notebook_of_every_committed_result_file():
    """`register-results --root build/regenerated` (run by make test) relies on the folder rule alone:
    every folder of committed result files must be in RESULT_WRITERS, with the notebook the manifest records."""
    roots = manifest.Roots.under(PROJECT_ROOT)
    entries = manifest.read_manifest("lite", roots)
    results = {key: entry for key, entry in entries.items() if entry["kind"] == "result"}
    assert results
    for key, entry in results.items():
        assert manifest.result_writer("lite", roots, roots.resolve(key)) == entry["notebook"], key

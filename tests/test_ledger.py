"""The claims ledger (``book/ledger.py``): its numbers come from the result files and match the tables."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest

from osgha_lite.paths import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("ledger", PROJECT_ROOT / "book" / "ledger.py")
ledger = importlib.util.module_from_spec(spec)
sys.modules["ledger"] = ledger  # dataclasses look their module up
spec.loader.exec_module(ledger)


def test_every_ledger_number_matches_its_table():
    assert ledger.check(PROJECT_ROOT, "lite") == []


def test_the_committed_ledger_page_is_the_one_the_result_files_give():
    assert ledger.PAGE.read_text(encoding="utf-8") == ledger.render(PROJECT_ROOT, "lite"), (
        "docs/claims.md differs from what the result files give: run `python book/ledger.py --write`")


def test_every_claim_has_a_verdict_of_the_four_and_a_source():
    page = ledger.render(PROJECT_ROOT, "lite")
    sections = page.split("\n## Claim ")[1:]
    assert len(sections) == len(ledger.CLAIMS) == 6
    for section in sections:
        assert sum(f"**Verdict: {verdict}.**" in section for verdict in ledger.VERDICTS) == 1, section
        assert "](../results/lite/tables/" in section and "[notebook 0" in section, section
        assert "**Number** [95% interval]**.** " in section and "[" in section.split("**Number**")[1], section
    summary = [line for line in page.splitlines() if line.startswith("| [")]
    assert [line.split("](#")[1].split(")")[0] for line in summary] == [f"claim-{i}" for i in range(1, 7)]


@pytest.mark.parametrize("table, old, new", [
    ("06_paper_vs_additions", "|               1.1 |  -3.6 |", "|               2.1 |  -3.6 |"),
    ("05_entropy", "|  -0.093 |  -0.119 |  -0.070 |", "|  -0.093 |  -0.129 |  -0.070 |"),
])
def test_a_hand_edited_table_is_caught(tmp_path, table, old, new):
    """A table edited by hand no longer agrees with the result file the ledger reads."""
    shutil.copytree(PROJECT_ROOT / "results" / "lite", tmp_path / "results" / "lite")
    path = tmp_path / "results" / "lite" / "tables" / f"{table}.md"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    problems = ledger.check(tmp_path, "lite")
    assert len(problems) == 1 and f"{table}.md" in problems[0], problems


def test_a_missing_result_file_is_named(tmp_path):
    shutil.copytree(PROJECT_ROOT / "results" / "lite", tmp_path / "results" / "lite")
    (tmp_path / "results" / "lite" / "entropy" / "entropy.test.json").unlink()
    problems = ledger.check(tmp_path, "lite")
    assert problems and all("entropy.test.json: missing" in p for p in problems), problems

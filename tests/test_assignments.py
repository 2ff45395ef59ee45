"""The course exercises: Otter builds the student versions, and its grader can both pass and fail.

Every source notebook under ``assignments/`` is built with ``otter assign``
(the build of ``make assignment``) into a temporary folder. The grader
(``otter run``, local, no container) then scores

* the solution notebooks: every question must get full marks, so the hidden
  tests agree with the package on their fresh random inputs;
* the generated student versions, whose answer cells are stubs: every
  question must get 0, so no test passes without an answer;
* a filled-in student copy of exercise 1 with one mistake (the optimistic
  tie rule): 3 of 4 points, the hidden tie test alone failing.

The notebooks are executed in the ``python3`` kernel; two builds, then two
gradings, run at a time (the test takes about a minute on two cores).
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds assignments/

from assignments.build import BuiltExercise, build, grade, source_notebooks  # noqa: E402

EXERCISES = [path.stem for path in source_notebooks()]


def _cell_text(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _solution_lines(source: Path) -> list[str]:
    """The non-blank lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` of every solution cell."""
    lines = []
    for cell in nbformat.read(source, as_version=4).cells:
        inside = False
        for line in _cell_text(cell).splitlines():
            if line.strip() == "# BEGIN SOLUTION":
                inside = True
            elif line.strip() == "# END SOLUTION":
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def _tests(source: Path) -> list[tuple[bool, str]]:
    """``(hidden, test function name)`` of every test cell of a source notebook."""
    tests, in_tests = [], False
    for cell in nbformat.read(source, as_version=4).cells:
        text = _cell_text(cell)
        if cell.cell_type == "raw":
            in_tests = {"# BEGIN TESTS": True, "# END TESTS": False}.get(text.strip(), in_tests)
        elif in_tests and cell.cell_type == "code":
            name = re.search(r"^def (\w+)\(", text, flags=re.MULTILINE)
            assert name, f"{source.name}: a test cell without a test function:\n{text}"
            tests.append((bool(re.search(r"^hidden:\s*true\s*$", text, flags=re.MULTILINE)), name.group(1)))
    return tests


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[str, dict]:
    """Build every exercise, then grade its solution and its student version (two builds, then two gradings,
    at a time)."""
    out = tmp_path_factory.mktemp("assignments")
    with ThreadPoolExecutor(max_workers=2) as pool:
        # The solutions are graded below, so otter assign need not execute them a second time.
        built: list[BuiltExercise] = list(pool.map(lambda source: build(source, out, run_tests=False),
                                                   source_notebooks()))
        jobs = {(b.name, kind): (getattr(b, kind), b.autograder) for b in built for kind in ("solution", "student")}
        recall = next(b for b in built if b.name == "01_recall_at_k")
        jobs[("01_recall_at_k", "optimistic")] = (_fill_in(recall, out / "filled-in", optimistic_ties=True),
                                                  recall.autograder)
        futures = {key: pool.submit(grade, notebook, autograder) for key, (notebook, autograder) in jobs.items()}
        scores = {key: future.result() for key, future in futures.items()}
    result = {
        b.name: {"built": b, "solution": scores[(b.name, "solution")], "student": scores[(b.name, "student")]}
        for b in built
    }
    result["01_recall_at_k"]["optimistic"] = scores[("01_recall_at_k", "optimistic")]
    return result


def _fill_in(built: BuiltExercise, folder: Path, optimistic_ties: bool) -> Path:
    """A student's filled-in copy of exercise 1: the generated student version with the answer cell
    written in; with ``optimistic_ties`` the answer counts only strictly higher scores (``>``)."""
    source = Path(__file__).resolve().parents[1] / "assignments" / f"{built.name}.ipynb"
    answer = "\n".join(line for line in _answer_cell(nbformat.read(source, as_version=4)).source.splitlines()
                       if "SOLUTION" not in line)
    if optimistic_ties:
        assert answer.count(">=") == 2, "the solution of exercise 1 changed: update this mistake"
        answer = answer.replace(">=", ">")
    notebook = nbformat.read(built.student, as_version=4)
    _answer_cell(notebook).source = answer
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / built.student.name
    nbformat.write(notebook, path)
    return path


def _answer_cell(notebook):
    return next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("def recall_at_k("))


def test_four_exercises_cover_the_papers_concepts():
    assert EXERCISES == ["01_recall_at_k", "02_infonce", "03_hgnn_conv", "04_retrieval_entropy"]


@pytest.mark.parametrize("name", EXERCISES)
def test_each_question_has_hidden_tests_against_the_package(name):
    source = Path(__file__).resolve().parents[1] / "assignments" / f"{name}.ipynb"
    tests = _tests(source)
    hidden = [test for is_hidden, test in tests if is_hidden]
    public = [test for is_hidden, test in tests if not is_hidden]
    assert len(hidden) >= 3 and len(public) >= 1, f"{name}: public {public}, hidden {hidden}"
    text = source.read_text()
    assert "osgha_lite" in text and ("default_rng(" in text or "manual_seed(" in text), (
        f"{name}: hidden tests must compare with the package on seeded random inputs"
    )


@pytest.mark.parametrize("name", EXERCISES)
def test_student_version_has_no_solution_and_no_hidden_test(name, graded):
    built: BuiltExercise = graded[name]["built"]
    source = Path(__file__).resolve().parents[1] / "assignments" / f"{name}.ipynb"
    student_text = built.student.read_text()
    solution = _solution_lines(source)
    assert solution, f"{name}: the source notebook marks no solution"
    leaked = [line for line in solution if line in student_text and not line.startswith(("def ", '"""'))]
    assert not leaked, f"{name}: solution lines left in the student version: {leaked}"
    assert "BEGIN SOLUTION" not in student_text and "BEGIN TESTS" not in student_text
    tests = _tests(source)
    for hidden, test_name in tests:
        if hidden:
            assert test_name not in student_text, f"{name}: hidden test {test_name} is in the student version"
    with zipfile.ZipFile(built.autograder) as archive:
        graded_tests = "".join(archive.read(n).decode() for n in archive.namelist() if n.startswith("tests/"))
    assert all(test_name in graded_tests for _, test_name in tests), f"{name}: the autograder lacks tests"
    metadata = json.loads(student_text)["metadata"]["kernelspec"]["name"]
    assert metadata == "python3"


@pytest.mark.parametrize("name", EXERCISES)
def test_solution_gets_full_marks(name, graded):
    scores = graded[name]["solution"]
    assert scores and all(maximum > 0 and score == maximum for score, maximum in scores.values()), (
        f"{name}: the solution notebook scored {scores}"
    )


@pytest.mark.parametrize("name", EXERCISES)
def test_student_stubs_get_zero(name, graded):
    scores = graded[name]["student"]
    assert scores and all(maximum > 0 and score == 0 for score, maximum in scores.values()), (
        f"{name}: the unanswered student version scored {scores}"
    )


def test_a_filled_in_copy_with_one_mistake_loses_one_test(graded):
    """Exercise 1 answered with the optimistic tie rule (``>`` for ``>=``) passes every test but the tie test."""
    assert graded["01_recall_at_k"]["optimistic"] == {"recall_at_k": (3.0, 4.0)}

"""The course exercises: Otter builds the student versions, and its grader can both pass and fail.

Every source notebook under ``assignments/`` is built with ``otter assign``
(the build of ``make assignment``) into a temporary folder. The grader
(``otter run``, local, no container) then scores

* the solution notebooks: every question must get full marks, so the hidden
  tests agree with the package on their fresh random inputs;
* the generated student versions, whose answer cells are stubs: every
  question must get 0, so no test passes without an answer;
* filled-in student copies with one plausible mistake each, which must lose
  exactly the points of the tests that catch it: exercise 1 with the
  optimistic tie rule (3 of 4 points, the hidden tie test alone failing), and
  the capstone (exercise 5) normalising by :math:`D_v^{-1}` instead of
  :math:`D_v^{-1/2}` (its public tests pass; the hidden comparisons with the
  package fail).

The capstone trains an adapter on the lite features, which it reads from the
feature cache that ``make test``'s notebook run (or ``make reproduce``) fills;
where the lite backbone's heads are not cached, its gradings are skipped
rather than training the backbone first. The notebooks are executed in the
``python3`` kernel; two builds, then two gradings, run at a time, the
capstone's first.
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
CAPSTONE = "05_capstone_adapter"

#: Filled-in copies with one mistake: (exercise, label) -> (correct text of the answers, mistaken text,
#: occurrences). Each is graded; ``test_a_filled_in_copy_with_one_mistake_loses_its_tests`` checks the scores.
MISTAKES = {
    ("01_recall_at_k", "optimistic"): (">=", ">", 2),  # the optimistic tie rule
    (CAPSTONE, "dv_inverse"): ("vertex_degree.clamp_min(1e-12) ** -0.5", "vertex_degree.clamp_min(1e-12) ** -1.0", 1),
}
MISTAKE_SCORES = {
    ("01_recall_at_k", "optimistic"): {"recall_at_k": (3.0, 4.0)},
    (CAPSTONE, "dv_inverse"): {"ego_hypergraph": (4.0, 4.0), "adapter_forward": (2.0, 4.0),
                               "train_capstone": (3.0, 4.0)},
}


def _lite_features_cached() -> bool:
    """Whether the lite backbone's projection heads are in the feature cache (``make test`` runs the notebooks,
    which train them, before ``pytest tests``); without them the capstone would train them first (many minutes)."""
    from osgha_lite.paths import cache_root

    return any((cache_root() / "heads").glob("lite-*-pretrain-*.safetensors"))


def _gradable(name: str) -> bool:
    return name != CAPSTONE or _lite_features_cached()


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
    """Build every exercise, then grade its solution, its student version and the filled-in copies with a
    mistake (two builds, then two gradings, at a time; the capstone's long gradings first)."""
    out = tmp_path_factory.mktemp("assignments")
    with ThreadPoolExecutor(max_workers=2) as pool:
        # The solutions are graded below, so otter assign need not execute them a second time.
        built: list[BuiltExercise] = list(pool.map(lambda source: build(source, out, run_tests=False),
                                                   source_notebooks()))
        by_name = {b.name: b for b in built}
        jobs = {(b.name, kind): (getattr(b, kind), b.autograder)
                for b in built if _gradable(b.name) for kind in ("solution", "student")}
        for (name, label), mistake in MISTAKES.items():
            if _gradable(name):
                jobs[(name, label)] = (_fill_in(by_name[name], out / f"filled-in-{label}", mistake),
                                       by_name[name].autograder)
        order = sorted(jobs, key=lambda key: key[0] != CAPSTONE)  # the longest gradings first
        futures = {key: pool.submit(grade, *jobs[key]) for key in order}
        scores = {key: future.result() for key, future in futures.items()}
    result = {b.name: {"built": b} for b in built}
    for (name, kind), score in scores.items():
        result[name][kind] = score
    return result


def _scores(graded: dict[str, dict], name: str, kind: str) -> dict[str, tuple[float, float]]:
    if kind not in graded[name]:
        pytest.skip(f"{name} reads the lite features, and the lite backbone's heads are not cached: run "
                    "`make test` (its notebooks run first) or `make reproduce` before this test")
    return graded[name][kind]


def _answer_cells(notebook) -> list:
    """The code cells of a source notebook between raw ``# BEGIN SOLUTION`` and ``# END SOLUTION`` cells."""
    cells, inside = [], False
    for cell in notebook.cells:
        if cell.cell_type == "raw":
            inside = {"# BEGIN SOLUTION": True, "# END SOLUTION": False}.get(_cell_text(cell).strip(), inside)
        elif inside and cell.cell_type == "code":
            cells.append(cell)
    return cells


def _fill_in(built: BuiltExercise, folder: Path, mistake: tuple[str, str, int]) -> Path:
    """A student's filled-in copy: the generated student version with every answer cell written in from the
    source's solution, then ``mistake`` = (correct text, mistaken text, occurrences) made in the answers."""
    source = Path(__file__).resolve().parents[1] / "assignments" / f"{built.name}.ipynb"
    correct, mistaken, occurrences = mistake
    answers = {}
    for cell in _answer_cells(nbformat.read(source, as_version=4)):
        answer = "\n".join(line for line in _cell_text(cell).splitlines() if "SOLUTION" not in line)
        answers[answer.splitlines()[0]] = answer  # keyed by the answer's signature, kept in the student version
    found = sum(answer.count(correct) for answer in answers.values())
    assert found == occurrences, f"the solution of {built.name} changed: update the mistake {mistake}"
    notebook = nbformat.read(built.student, as_version=4)
    for signature, answer in answers.items():
        cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(signature))
        cell.source = answer.replace(correct, mistaken)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / built.student.name
    nbformat.write(notebook, path)
    return path


def test_five_exercises_cover_the_papers_concepts():
    assert EXERCISES == ["01_recall_at_k", "02_infonce", "03_hgnn_conv", "04_retrieval_entropy", CAPSTONE]


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
    scores = _scores(graded, name, "solution")
    assert scores and all(maximum > 0 and score == maximum for score, maximum in scores.values()), (
        f"{name}: the solution notebook scored {scores}"
    )


@pytest.mark.parametrize("name", EXERCISES)
def test_student_stubs_get_zero(name, graded):
    scores = _scores(graded, name, "student")
    assert scores and all(maximum > 0 and score == 0 for score, maximum in scores.values()), (
        f"{name}: the unanswered student version scored {scores}"
    )


@pytest.mark.parametrize("name, label", list(MISTAKES))
def test_a_filled_in_copy_with_one_mistake_loses_its_tests(name, label, graded):
    """Exercise 1 answered with the optimistic tie rule (``>`` for ``>=``) passes every test but the hidden tie
    test. The capstone normalising by Dv^-1 for Dv^-1/2 builds the right hyperedges (4/4) and passes the public
    tests (their vertex degrees are 1) and the shape tests, but not the hidden comparisons of its outputs with the
    package's: the forward pass on seeded hypergraphs (2/4) and the trained adapter (3/4). Its dev rSum, 310.0
    against the reference's 310.7, is within the 1.0 tolerance: only comparing the outputs catches this mistake."""
    assert _scores(graded, name, label) == MISTAKE_SCORES[(name, label)]

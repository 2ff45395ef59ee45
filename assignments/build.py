"""Build the student versions of the course exercises and grade notebooks, with Otter-Grader.

Each source notebook ``assignments/NN_name.ipynb`` is in Otter Assign's format:
raw cells ``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` mark
the question, its solution and its tests; a test whose config says
``hidden: true`` is left out of the student version and kept for grading.

``build`` runs ``otter assign`` on every source notebook and writes, per exercise::

    OUT/NN_name/student/NN_name.ipynb          the version to hand out (solutions stripped, hidden tests removed)
    OUT/NN_name/autograder/NN_name.ipynb       the solution notebook with every test
    OUT/NN_name/autograder/NN_name-autograder_<time>.zip   what the grader needs

``grade`` runs ``otter run`` (local, no container) on filled-in notebooks and
returns the score of every question. The notebook is executed in the
``python3`` Jupyter kernel of the running environment (``make env`` installs
it), so the grading machine needs this project installed, nothing more.

Command line (``make assignment`` runs the first)::

    python -m assignments.build [--out build/assignments] [--no-run-tests] [NAME ...]
    python -m assignments.build grade --autograder ZIP SUBMISSION.ipynb [...]
    python -m assignments.build time [NAME ...]     # seconds to run each source notebook
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SOURCE_DIR.parent
DEFAULT_OUT = REPO_ROOT / "build" / "assignments"


@dataclass(frozen=True)
class BuiltExercise:
    """The files ``otter assign`` wrote for one exercise."""

    name: str
    student: Path
    solution: Path
    autograder: Path


def source_notebooks(names: list[str] | None = None) -> list[Path]:
    """The source notebooks ``assignments/NN_*.ipynb`` in order, or those named (``01_recall_at_k`` or ``01``)."""
    notebooks = sorted(SOURCE_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return notebooks
    chosen = []
    for name in names:
        matches = [nb for nb in notebooks if nb.stem == name or nb.stem.split("_", 1)[0] == name]
        if not matches:
            known = ", ".join(nb.stem for nb in notebooks)
            raise SystemExit(f"no exercise named {name!r} in {SOURCE_DIR}; known: {known}")
        chosen.extend(matches)
    return chosen


def _environment() -> dict[str, str]:
    """The environment of the grader and its kernel: this checkout's osgha_lite first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _otter(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "otter", *args],
        cwd=cwd, env=_environment(), capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"otter {' '.join(args)} failed with exit code {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def build(source: Path, out_dir: Path, run_tests: bool = True) -> BuiltExercise:
    """``otter assign`` one source notebook into ``out_dir/<name>/`` (replacing what was there).

    With ``run_tests`` Otter also executes the solution notebook and refuses to
    build when any test fails on it.
    """
    name = source.stem
    target = out_dir / name
    if target.exists():
        shutil.rmtree(target)
    _otter(["assign", *([] if run_tests else ["--no-run-tests"]), str(source), str(target)])
    zips = sorted((target / "autograder").glob(f"{name}-autograder_*.zip"))
    built = BuiltExercise(
        name=name,
        student=target / "student" / source.name,
        solution=target / "autograder" / source.name,
        autograder=zips[-1] if zips else target / "autograder" / "missing.zip",
    )
    for path in (built.student, built.solution, built.autograder):
        if not path.is_file():
            raise RuntimeError(f"otter assign did not write {path} for {source}")
    return built


def grade(submission: Path, autograder: Path) -> dict[str, tuple[float, float]]:
    """Scores of a filled-in notebook: ``{question: (score, max_score)}``, from ``otter run``.

    The notebook runs top to bottom in a temporary copy; a cell that raises
    does not stop it (the questions that depend on it score 0).
    """
    with tempfile.TemporaryDirectory(prefix="otter-grade-") as results_dir:
        _otter(["run", "--no-logo", "-a", str(Path(autograder).resolve()), "-o", results_dir,
                str(Path(submission).resolve())], cwd=Path(results_dir))
        results_path = Path(results_dir) / "results.json"
        if not results_path.is_file():
            raise RuntimeError(f"otter run wrote no results.json for {submission}")
        results = json.loads(results_path.read_text())
    scores = {}
    for test in results.get("tests", []):
        if "score" in test and "max_score" in test:  # the "Public Tests" summary entry has neither
            scores[test["name"]] = (float(test["score"]), float(test["max_score"]))
    if not scores:
        raise RuntimeError(f"otter run graded no question of {submission}: {json.dumps(results)[:2000]}")
    return scores


def timings(source: Path) -> dict[str, float]:
    """Seconds to run a source notebook top to bottom in a fresh ``python3`` kernel (solutions and all tests).

    ``total``: from kernel start to the last cell; ``cells``: the time spent in
    the cells; ``tests``: in the test cells (the hidden tests included).
    """
    from datetime import datetime

    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(source, as_version=4)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _environment()["PYTHONPATH"]  # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        NotebookClient(notebook, kernel_name="python3", record_timing=True, timeout=600).execute()
        total = time.perf_counter() - start
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous

    def seconds(cell) -> float:
        stamps = cell.metadata.get("execution", {})
        begin, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
        if not begin or not end:
            return 0.0
        return (datetime.fromisoformat(end.replace("Z", "+00:00"))
                - datetime.fromisoformat(begin.replace("Z", "+00:00"))).total_seconds()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    return {
        "total": total,
        "cells": sum(seconds(cell) for cell in code),
        "tests": sum(seconds(cell) for cell in code if "def test_" in cell.source),
    }


def _format_scores(scores: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{question} {score:g}/{maximum:g}" for question, (score, maximum) in scores.items())


def _children_cpu_seconds() -> float:
    """User plus system CPU time of every finished child process (the grader and its kernel)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grade"]:
        parser = argparse.ArgumentParser(prog="python -m assignments.build grade",
                                         description="Grade filled-in notebooks with an exercise's autograder zip.")
        parser.add_argument("--autograder", required=True, type=Path, help="the exercise's *-autograder_*.zip")
        parser.add_argument("submissions", nargs="+", type=Path, help="filled-in notebooks (.ipynb)")
        args = parser.parse_args(argv[1:])
        for submission in args.submissions:
            wall, cpu = time.perf_counter(), _children_cpu_seconds()
            scores = grade(submission, args.autograder)
            wall, cpu = time.perf_counter() - wall, _children_cpu_seconds() - cpu
            total = sum(s for s, _ in scores.values()), sum(m for _, m in scores.values())
            print(f"{submission}: {total[0]:g}/{total[1]:g} ({_format_scores(scores)}); "
                  f"graded in {wall:.1f} s wall, {cpu:.1f} s CPU")
        return 0

    if argv[:1] == ["time"]:
        for source in source_notebooks(argv[1:]):
            seconds = timings(source)
            print(f"{source.stem}: {seconds['total']:.1f} s from kernel start, {seconds['cells']:.2f} s in cells, "
                  f"{seconds['tests']:.2f} s of them in the tests")
        return 0

    parser = argparse.ArgumentParser(prog="python -m assignments.build",
                                     description="Generate the student version and autograder of every exercise.")
    parser.add_argument("names", nargs="*", help="exercises to build (default: all), e.g. 01_recall_at_k or 01")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--no-run-tests", action="store_true",
                        help="do not execute the solution notebooks against their tests while building")
    args = parser.parse_args(argv)
    for source in source_notebooks(args.names):
        built = build(source, args.out, run_tests=not args.no_run_tests)
        print(f"{built.name}: student {built.student}\n{'':{len(built.name) + 2}}autograder {built.autograder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Keeps nbval's run of the notebooks (``make test``): with ``$OSGHA_EXECUTED_DIR`` set, every
notebook nbval executed is written there, with the outputs of this run, for the website that
``make test`` builds and checks (book/build_site.py). Without the variable nothing is written.

Each written notebook records, in ``metadata.osgha``, that nbval executed it, its parameters (the
assignments of its ``parameters`` cell, which nbval runs unchanged) and whether any cell failed;
the website refuses a failed run. Widget outputs (progress bars) carry no saved widget state here,
so the website drops them, as Jupyter does for a widget without state.
"""

from __future__ import annotations

import ast
import copy
import os
from pathlib import Path

import nbformat
import pytest

EXECUTED_ENV = "OSGHA_EXECUTED_DIR"
_RUNS: dict[Path, dict] = {}


def parameters(nb) -> dict:
    """The literal assignments of the notebook's ``parameters`` cell (``PROFILE = "lite"`` ...)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            values = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
            return values
    return {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not os.environ.get(EXECUTED_ENV) or call.when != "call" or not hasattr(item, "test_outputs"):
        return
    run = _RUNS.setdefault(Path(str(item.parent.fspath)), {"nb": item.parent.nb, "outputs": {}, "failed": False})
    run["outputs"][item.cell_num] = list(item.test_outputs or [])
    run["failed"] = run["failed"] or outcome.get_result().failed


def pytest_sessionfinish(session):
    folder = os.environ.get(EXECUTED_ENV)
    if not folder:
        return
    for path, run in _RUNS.items():
        nb = copy.deepcopy(run["nb"])
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        for number, cell in enumerate(code):
            cell.outputs = [nbformat.from_dict(dict(output)) for output in run["outputs"].get(number, [])]
            cell.execution_count = number + 1 if number in run["outputs"] else None
        nb.metadata["osgha"] = {"executed_by": "nbval", "parameters": parameters(nb), "failed": run["failed"],
                                "cells_run": len(run["outputs"]), "code_cells": len(code)}
        target = Path(folder) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))

"""nbval's run of the notebooks (``make test``): outputs are never dropped, and the run is kept.

**No dropped output.** nbval waits on the shell channel while a cell runs and reads the kernel's
output (IOPub) only afterwards; ZeroMQ keeps about 1,000 unread messages on each side and drops the
rest, so a long cell with many progress-bar updates lost its final "idle" message and failed with
"Timeout of 5 seconds exceeded waiting for output". Here the wait also reads IOPub as messages
arrive and hands them to nbval afterwards in their order (``tests/test_book.py`` floods a cell to
show it).

**The run, kept.** With ``$OSGHA_EXECUTED_DIR`` set, every
notebook nbval executed is written there, with the outputs of this run, for the website that
``make test`` builds and checks (book/build_site.py). Without the variable nothing is written.

Each written notebook records, in ``metadata.osgha``, that nbval executed it, its parameters (the
assignments of its ``parameters`` cell, which nbval runs unchanged), whether any cell failed, and
the run id of this pytest session (``nbval-`` and the runner's form of id), the same for every
notebook it ran; the website refuses a failed run and notebooks of different runs. Widget outputs (progress bars) carry no saved widget state here,
so the website drops them, as Jupyter does for a widget without state.
"""

from __future__ import annotations

import ast
import copy
import os
import secrets
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty

import nbformat
import pytest
from nbval.kernel import RunningKernel

from osgha_lite.paths import EXECUTED_ENV

_RUNS: dict[Path, dict] = {}
RUN_ID = f"nbval-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
_GET_MESSAGE = RunningKernel.get_message


def _await_reply_reading_output(self, msg_id, timeout=None):
    """nbval's ``await_reply`` (wait for the cell's execute reply), reading IOPub meanwhile."""
    stash = self.__dict__.setdefault("_iopub_stash", deque())
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    while True:
        while True:
            try:
                stash.append(self.kc.get_iopub_msg(timeout=0))
            except Empty:
                break
        try:
            msg = self.kc.get_shell_msg(timeout=0.05)
        except Empty:
            if deadline is not None and time.monotonic() > deadline:
                raise
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            if msg["content"]["status"] == "aborted":
                raise RuntimeError("Kernel aborted execution request")
            return


def _get_message_stashed_first(self, stream, timeout=None):
    stash = self.__dict__.get("_iopub_stash")
    if stream == "iopub" and stash:
        return stash.popleft()
    return _GET_MESSAGE(self, stream, timeout=timeout)


RunningKernel.await_reply = _await_reply_reading_output
RunningKernel.get_message = _get_message_stashed_first


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
        nb.metadata["osgha"] = {"executed_by": "nbval", "run_id": RUN_ID, "parameters": parameters(nb),
                                "failed": run["failed"], "cells_run": len(run["outputs"]), "code_cells": len(code)}
        target = Path(folder) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))

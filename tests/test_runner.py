"""Notebooks are found by glob and each has one parameters cell with the shared parameters."""

from __future__ import annotations

import json

from osgha_lite.config import available_profiles, load_profile, notebook_profile
from osgha_lite.data import PROJECT_ROOT
from osgha_lite.runner import CHECK_MARK, REQUIRED_PARAMETERS, find_notebooks, parameters_cell
from osgha_lite.runtime import PORTABLE_CPU_KERNELS, portable_kernel_environment


def test_numbered_notebooks_have_the_shared_parameters():
    notebooks = find_notebooks()
    assert [nb.name[:2] for nb in notebooks] == sorted(nb.name[:2] for nb in notebooks)
    assert {"00", "04"} <= {nb.name[:2] for nb in notebooks}
    for notebook in notebooks:
        source = parameters_cell(notebook)
        for name in REQUIRED_PARAMETERS:
            assert f"{name} =" in source, f"{notebook.name}: parameters cell lacks {name}"


def test_source_notebooks_hold_only_checked_outputs():
    for notebook in find_notebooks():
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            if CHECK_MARK not in "".join(cell["source"]):
                assert not cell["outputs"] and cell.get("execution_count") is None, notebook.name


def test_profiles_load_and_smoke_is_renamed():
    assert {"lite", "lite-shared", "paper-flickr30k", "paper-coco"} <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name)
        assert profile["name"] == name
    smoke = notebook_profile("lite", smoke=True)
    assert smoke["name"] == "lite-smoke" and smoke["smoke_images"] > 0
    assert load_profile("lite")["backbone"]["train"]["epochs"] > smoke["backbone"]["train"]["epochs"]


def test_makefile_exports_the_portable_kernel_settings(monkeypatch):
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    for name, value in PORTABLE_CPU_KERNELS.items():
        assert f"export {name} ?= {value}\n" in makefile, name
    # the runner's kernels get them too; a value the user set wins
    for name in PORTABLE_CPU_KERNELS:  # setenv first, so that teardown restores the original state
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert portable_kernel_environment() == {**PORTABLE_CPU_KERNELS, "MKL_CBWR": "COMPATIBLE"}

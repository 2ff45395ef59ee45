"""Notebooks are found by glob and each has one parameters cell with the shared parameters."""

from __future__ import annotations

import json

from osgha_lite.profiles import available_profiles, load_profile, notebook_profile
from osgha_lite.data import PROJECT_ROOT
from osgha_lite.pipeline.runner import CHECK_MARK, REQUIRED_PARAMETERS, find_notebooks, parameters_cell
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
        assert f"export {name} := {value}\n" in makefile, name  # `:=`: a preset environment value does not win
    # the runner's kernels get them too; a value the user set wins
    for name in PORTABLE_CPU_KERNELS:  # setenv first, so that teardown restores the original state
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert portable_kernel_environment() == {**PORTABLE_CPU_KERNELS, "MKL_CBWR": "COMPATIBLE"}


# --- A run through the real papermill path, on tiny notebooks in a temporary folder -----------------

import nbformat
import pytest

from osgha_lite.pipeline import manifest

from osgha_lite.pipeline import runner
from osgha_lite.pipeline.manifest import Roots, check_disk, read_manifest

WRITE_RESULT = """from osgha_lite.atomic import atomic_write_json
from osgha_lite.profiles import notebook_profile
from osgha_lite.metrics.results import results_root
NAME = notebook_profile(PROFILE, smoke=SMOKE)["name"]
atomic_write_json(results_root() / NAME / "toy.test.json", {"metrics": {"rsum": 1.25}})"""


def _notebook(folder, name, *sources):
    cells = [nbformat.v4.new_code_cell("PROFILE = 'lite'\nSEED = 0\nSMOKE = False", metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                          "display_name": "Python 3"}})
    nbformat.write(nb, folder / name)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A committed tree with one recorded result, and a folder of notebooks."""
    real = Roots.under(tmp_path / "repo")
    monkeypatch.setenv("OSGHA_RESULTS_DIR", str(real.results))
    monkeypatch.setenv("OSGHA_FIGURES_DIR", str(real.figures))
    (real.results / "lite").mkdir(parents=True)
    (real.results / "lite" / "old.test.json").write_text('{"metrics": {"rsum": 2.5}}\n')
    manifest.register_results("lite", real)
    (tmp_path / "notebooks").mkdir()
    return real, tmp_path / "notebooks", {"output_dir": tmp_path / "build" / "notebooks",
                                          "notebooks_dir": tmp_path / "notebooks",
                                          "staging_dir": tmp_path / "build" / "staging"}


def test_a_failed_run_changes_no_committed_artifact_and_names_notebook_cell_and_copy(project, capsys, monkeypatch):
    real, notebooks, dirs = project
    _notebook(notebooks, "00_write.ipynb", WRITE_RESULT)
    _notebook(notebooks, "01_broken.ipynb", "x = 1", "# load the broken thing\nraise ValueError('broken input')")
    before = {p: p.read_bytes() for p in (real.results / "lite").rglob("*")} | {
        real.manifest_path("lite"): real.manifest_path("lite").read_bytes()}

    with pytest.raises(runner.NotebookFailed) as failure:
        runner.run_notebooks("lite", **dirs)
    message = str(failure.value)
    copy = dirs["output_dir"] / "lite" / "01_broken.ipynb"
    assert message.startswith("notebook 01_broken.ipynb failed in cell 3 of the executed copy (execution count 4; "
                              "first line: '# load the broken thing'): ValueError: broken input; the executed copy "
                              f"with the traceback is {copy}; nothing was changed in ")
    assert copy.is_file()
    # the committed manifest and results are byte for byte what they were; the new result was not swapped in
    assert {p: p.read_bytes() for p in before} == before
    assert not (real.results / "lite" / "toy.test.json").exists()
    assert check_disk("lite", real) == []

    # the command line prints the same message and exits with 1
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", notebooks)
    monkeypatch.setattr(runner, "STAGING_DIR", dirs["staging_dir"])
    assert runner.main(["--output-dir", str(dirs["output_dir"])]) == 1
    assert f"[runner] {message}\n" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before


def test_a_successful_run_swaps_in_and_records_each_result_with_its_notebook(project):
    real, notebooks, dirs = project
    _notebook(notebooks, "00_write.ipynb", WRITE_RESULT)
    runner.run_notebooks("lite", **dirs)
    artifacts = read_manifest("lite", real)
    assert artifacts["results/lite/toy.test.json"]["notebook"] == "00_write"
    assert artifacts["results/lite/toy.test.json"]["kind"] == "result"
    # a full run records only what it wrote: the result no notebook writes any more is reported
    assert check_disk("lite", real) == [
        "results/lite/old.test.json: on disk but not in manifest.json; record it with `python -m osgha_lite manifest "
        "register-results --profile lite` (the runner does after a run), or delete it"]
    assert not dirs["staging_dir"].exists()


def test_a_partial_run_keeps_the_entries_of_the_notebooks_it_did_not_run(project):
    real, notebooks, dirs = project
    _notebook(notebooks, "00_write.ipynb", WRITE_RESULT)
    _notebook(notebooks, "05_nothing.ipynb", "y = 2")
    runner.run_notebooks("lite", only=["05"], **dirs)
    assert sorted(read_manifest("lite", real)) == ["results/lite/old.test.json"]
    assert check_disk("lite", real) == []


def test_every_executed_copy_records_one_run_id_and_the_website_refuses_a_mix(project):
    """The run id goes into each executed copy's metadata, nowhere else; a later partial run is another run."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("build_site", PROJECT_ROOT / "book" / "build_site.py")
    build_site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_site)
    real, notebooks, dirs = project
    _notebook(notebooks, "00_write.ipynb", WRITE_RESULT)
    _notebook(notebooks, "05_show.ipynb", "print(6 * 7)")
    runner.run_notebooks("lite", **dirs)
    copies = sorted((dirs["output_dir"] / "lite").glob("*.ipynb"))
    executed = [nbformat.read(path, as_version=4) for path in copies]
    run_id = executed[0].metadata["osgha"]["run_id"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run_id)
    assert [nb.metadata["osgha"] for nb in executed] == [{"executed_by": "osgha_lite.runner", "run_id": run_id}] * 2
    assert executed[1].cells[2].outputs[0]["text"] == "42\n" and executed[1].metadata["papermill"]["parameters"]
    assert build_site.run_of(copies) == {"profile": "lite", "seed": 0, "smoke": False, "run_id": run_id}
    committed = [path for root in (real.results, real.figures) for path in root.rglob("*") if path.is_file()]
    assert committed and not [path for path in committed if run_id in path.read_text(encoding="utf-8")]
    runner.run_notebooks("lite", only=["05"], **dirs)
    assert nbformat.read(copies[1], as_version=4).metadata["osgha"]["run_id"] != run_id
    with pytest.raises(build_site.BookError, match=r"executed notebooks come from different runs"):
        build_site.run_of(copies)


def test_a_command_line_restarts_itself_with_the_portable_kernels(tmp_path):
    """``python -m osgha_lite evaluate`` outside make: the AVX2 variables are set in the process that does the work."""
    import os
    import subprocess
    import sys

    from osgha_lite.runtime import PORTABLE_CPU_KERNELS

    script = tmp_path / "show_env.py"
    script.write_text(
        "import os, sys\n"
        "from osgha_lite.runtime import PORTABLE_CPU_KERNELS, restart_with_portable_kernels\n"
        "restart_with_portable_kernels('show_env')\n"
        "print(';'.join(f'{k}={os.environ[k]}' for k in sorted(PORTABLE_CPU_KERNELS)))\n")
    environment = {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_KERNELS}
    environment["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    output = subprocess.run([sys.executable, "-m", "show_env"], env=environment, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert output == ";".join(f"{k}={PORTABLE_CPU_KERNELS[k]}" for k in sorted(PORTABLE_CPU_KERNELS))
    environment["MKL_CBWR"] = "AUTO"  # a value the user set wins
    output = subprocess.run([sys.executable, "-m", "show_env"], env=environment, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert "MKL_CBWR=AUTO" in output.split(";")


def test_smoke_run_of_a_real_notebook_writes_the_smoke_profile(tmp_path):
    """`make smoke` (the runner's --smoke mode) on notebook 00: the real notebook runs on tiny subsets and
    writes under the lite-smoke profile only. `make test` runs every notebook in full under nbval."""
    import os
    import subprocess
    import sys

    import pandas as pd

    env = {**os.environ, "OSGHA_RESULTS_DIR": str(tmp_path / "results"), "OSGHA_FIGURES_DIR": str(tmp_path / "figures")}
    done = subprocess.run([sys.executable, "-m", "osgha_lite", "run", "--profile", "lite", "--smoke", "--only", "00",
                           "--output-dir", str(tmp_path / "notebooks")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "notebooks" / "lite" / "00_data.ipynb").is_file()
    counts = pd.read_csv(tmp_path / "results" / "lite-smoke" / "tables" / "00_split_counts.csv")
    smoke_images = notebook_profile("lite", smoke=True)["smoke_images"]
    assert 0 < counts["images"].max() <= smoke_images
    assert not (tmp_path / "results" / "lite").exists()

"""Run the numbered notebooks with Papermill.

Notebooks are found by glob (``notebooks/[0-9][0-9]_*.ipynb``), run in order
with the parameters ``PROFILE``, ``SEED`` and ``SMOKE`` injected into their
cell tagged ``parameters``, and the executed copies are written to
``build/notebooks/<profile>/`` so that the sources stay clean. Each run
has an id (its UTC start time and 8 random hex digits), written into the
metadata of every notebook it executed (``metadata.osgha.run_id``; no cell
or output changes), so that the website (``book/build_site.py``) can refuse
executed copies of different runs.

A run never leaves the committed artifacts half-written. The notebooks
write into a staging copy of ``results/<profile>/`` and ``figures/<profile>/``
(``build/staging/<profile>/``, through ``$OSGHA_RESULTS_DIR`` and
``$OSGHA_FIGURES_DIR``); only when every selected notebook has succeeded are
the result files recorded in the manifest (each with the notebook that wrote
it) and the staged folders swapped in for the real ones. A full run starts
the staged manifest empty, so that it keeps no stale entries. A failed run
leaves the real folders as they were and names the notebook, the cell and
the executed copy.

Usage::

    python -m osgha_lite run                     # every notebook, profile lite
    python -m osgha_lite run --only 00 04        # some of them
    python -m osgha_lite run --profile paper-flickr30k
    python -m osgha_lite run --smoke             # tiny subsets, for a quick check
    python -m osgha_lite run --store-reference   # after a run: copy checked outputs into the sources

nbval re-executes the source notebooks in ``make test``. Cells marked
``# NBVAL_CHECK_OUTPUT`` must reproduce the output stored in the source;
``--store-reference`` copies those outputs (and only those) from the executed
copies of the ``lite`` profile into ``notebooks/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from osgha_lite.paths import EXECUTED_NOTEBOOKS_DIR as OUTPUT_DIR
from osgha_lite.paths import NOTEBOOKS_DIR, STAGING_DIR

REQUIRED_PARAMETERS = ("PROFILE", "SEED", "SMOKE")
EXAMPLES = """examples:
  python -m osgha_lite run                     # every notebook, profile lite
  python -m osgha_lite run --only 00 04        # some of them
  python -m osgha_lite run --smoke             # tiny subsets, for a quick check"""


def find_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Numbered notebooks in name order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def parameters_cell(path: Path) -> str:
    """Source of the notebook's cell tagged ``parameters``; error if there is not exactly one."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{path}: expected exactly one cell tagged 'parameters', found {len(tagged)}")
    source = tagged[0]["source"]
    return "".join(source) if isinstance(source, list) else source


def new_run_id() -> str:
    """An id for one run of the notebooks: its UTC start time and 8 random hex digits."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def stamp_run(path: Path, run_id: str) -> None:
    """Record ``run_id`` in the metadata of the executed notebook ``path`` (``metadata.osgha``), atomically;
    its cells and outputs are left as they are."""
    import nbformat

    from osgha_lite.atomic import atomic_write_text

    nb = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
    # "osgha_lite.runner": the identity executed copies have always carried (the module is now
    # osgha_lite.pipeline.runner); the website and earlier runs read it as it was
    nb.metadata["osgha"] = {"executed_by": "osgha_lite.runner", "run_id": run_id}
    atomic_write_text(path, nbformat.writes(nb))


class NotebookFailed(RuntimeError):
    """A notebook of the run failed; the message names the notebook, the cell and the executed copy."""


def describe_failure(notebook: Path, target: Path, error: BaseException) -> str:
    """One paragraph on where a notebook failed: notebook, cell (index, execution count, first line
    of source), the error, and the executed copy that holds the traceback."""
    cell = ""
    if hasattr(error, "cell_index"):  # papermill.exceptions.PapermillExecutionError
        first = next((line for line in str(getattr(error, "source", "")).splitlines() if line.strip()), "")
        cell = (f" in cell {error.cell_index} of the executed copy (execution count {getattr(error, 'exec_count', None)}; "
                f"first line: {first.strip()!r})")
        reason = f"{getattr(error, 'ename', type(error).__name__)}: {getattr(error, 'evalue', '')}"
    else:
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return (f"notebook {notebook.name} failed{cell}: {reason}; the executed copy with the traceback is {target}")


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*.json") if p.is_file()} \
        if folder.is_dir() else {}


@contextlib.contextmanager
def _environment(**values: str):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _swap_in(staged: Path, real: Path) -> None:
    """Replace folder ``real`` by ``staged``; the old one is removed only once the new one is in place."""
    if not staged.is_dir():
        return
    real.parent.mkdir(parents=True, exist_ok=True)
    old = real.with_name(f".{real.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    if real.exists():
        os.replace(real, old)
    try:
        shutil.move(str(staged), str(real))
    except BaseException:
        if old.exists() and not real.exists():
            os.replace(old, real)
        raise
    shutil.rmtree(old, ignore_errors=True)


def run_notebooks(profile: str = "lite", seed: int = 0, smoke: bool = False, only: list[str] | None = None,
                  output_dir: Path = OUTPUT_DIR, notebooks_dir: Path | None = None,
                  staging_dir: Path | None = None, run_id: str | None = None) -> list[Path]:
    """Execute the selected notebooks in order; stop at the first failure (:class:`NotebookFailed`).

    The notebooks write into a staged copy of the profile's results and figures, swapped in for the
    real folders only when all of them succeeded (see the module docstring). Every executed copy
    records ``run_id`` (default: :func:`new_run_id`) in its metadata."""
    import papermill

    from osgha_lite.profiles import notebook_profile
    from osgha_lite.pipeline.manifest import Roots, register_results
    from osgha_lite.runtime import portable_kernel_environment

    notebooks_dir = Path(notebooks_dir or NOTEBOOKS_DIR)
    staging_dir = Path(staging_dir or STAGING_DIR)
    portable_kernel_environment()  # the kernels papermill starts inherit it
    if Path(profile).suffix:  # a profile file: the notebooks run in notebooks/, so pass it by absolute path
        profile = str(Path(profile).resolve())
    notebooks = find_notebooks(notebooks_dir)
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(prefix) for prefix in only)]
        if not notebooks:
            raise SystemExit(f"no notebook in {notebooks_dir} starts with {only}")
    name = notebook_profile(profile, smoke=smoke)["name"]
    real = Roots.current()
    stage = Roots.under(staging_dir / name)
    shutil.rmtree(stage.figures.parent, ignore_errors=True)
    for source, copy in ((real.results / name, stage.results / name), (real.figures / name, stage.figures / name)):
        if source.is_dir():
            shutil.copytree(source, copy)
        copy.mkdir(parents=True, exist_ok=True)
    if not only:  # a full run rewrites every artifact, so the manifest starts empty and keeps no stale entries
        stage.manifest_path(name).unlink(missing_ok=True)

    run_id = run_id or new_run_id()
    written, writers = [], {}
    with _environment(OSGHA_RESULTS_DIR=str(stage.results), OSGHA_FIGURES_DIR=str(stage.figures)):
        for notebook in notebooks:
            target = output_dir / Path(profile).stem / notebook.name
            target.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            print(f"[runner] {notebook.name} (profile={profile}, seed={seed}, smoke={smoke}, run {run_id})", flush=True)
            before = _snapshot(stage.results / name)
            try:
                papermill.execute_notebook(
                    str(notebook), str(target), cwd=str(notebooks_dir), kernel_name="python3",
                    parameters={"PROFILE": profile, "SEED": seed, "SMOKE": smoke}, progress_bar=False,
                )
            except Exception as error:
                raise NotebookFailed(describe_failure(notebook, target, error) +
                                     f"; nothing was changed in {real.results / name} or {real.figures / name} "
                                     f"(the partial run is in {stage.figures.parent})") from error
            stamp_run(target, run_id)
            for path, stamp in _snapshot(stage.results / name).items():
                if before.get(path) != stamp:
                    writers[stage.key(path)] = notebook.stem
            print(f"[runner] {notebook.name} done in {time.perf_counter() - started:.0f} s -> {target}", flush=True)
            written.append(target)
        register_results(name, stage, writers, only_written=not only)
    _swap_in(stage.results / name, real.results / name)
    _swap_in(stage.figures / name, real.figures / name)
    shutil.rmtree(stage.figures.parent, ignore_errors=True)
    with contextlib.suppress(OSError):  # the staging folder itself, when no other run uses it
        staging_dir.rmdir()
    return written


CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def store_reference_outputs(profile: str = "lite", output_dir: Path = OUTPUT_DIR) -> list[Path]:
    """Copy the outputs of ``# NBVAL_CHECK_OUTPUT`` cells from executed copies into the sources;
    every other output and every execution count is cleared."""
    updated = []
    for source_path in find_notebooks():
        executed_path = output_dir / Path(profile).stem / source_path.name
        if not executed_path.exists():
            raise SystemExit(f"{executed_path} does not exist; run the notebooks first")
        source = json.loads(source_path.read_text(encoding="utf-8"))
        executed = {c.get("id"): c for c in json.loads(executed_path.read_text(encoding="utf-8"))["cells"]}
        for cell in source["cells"]:
            if cell["cell_type"] != "code":
                continue
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["execution_count"] = None
            cell["outputs"] = []
            if CHECK_MARK in text and cell.get("id") in executed:
                # nbval only compares cells that carry an execution count
                cell["execution_count"] = executed[cell["id"]].get("execution_count")
                cell["outputs"] = executed[cell["id"]].get("outputs", [])
        source_path.write_text(json.dumps(source, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        updated.append(source_path)
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osgha_lite run", description=__doc__.split("\n\n")[0],
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="lite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny subsets for a quick check")
    parser.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. 00 04")
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR)
    parser.add_argument("--store-reference", action="store_true",
                        help="copy the outputs of NBVAL_CHECK_OUTPUT cells of the last run into notebooks/")
    args = parser.parse_args(argv)
    if args.store_reference:
        for path in store_reference_outputs(args.profile, args.output_dir):
            print(f"[runner] reference outputs stored in {path.name}")
        return 0
    try:
        run_notebooks(args.profile, args.seed, args.smoke, args.only, args.output_dir)
    except NotebookFailed as error:
        print(f"[runner] {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run the numbered notebooks with Papermill.

Notebooks are found by glob (``notebooks/[0-9][0-9]_*.ipynb``), run in order
with the parameters ``PROFILE``, ``SEED`` and ``SMOKE`` injected into their
cell tagged ``parameters``, and the executed copies are written to
``build/notebooks/<profile>/`` so that the sources stay clean.

Usage::

    python -m osgha_lite.runner                     # every notebook, profile lite
    python -m osgha_lite.runner --only 00 04        # some of them
    python -m osgha_lite.runner --profile paper-flickr30k
    python -m osgha_lite.runner --smoke             # tiny subsets, for a quick check
    python -m osgha_lite.runner --store-reference   # after a run: copy checked outputs into the sources

nbval re-executes the source notebooks in ``make test``. Cells marked
``# NBVAL_CHECK_OUTPUT`` must reproduce the output stored in the source;
``--store-reference`` copies those outputs (and only those) from the executed
copies of the ``lite`` profile into ``notebooks/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from osgha_lite.data import PROJECT_ROOT

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
OUTPUT_DIR = PROJECT_ROOT / "build" / "notebooks"
REQUIRED_PARAMETERS = ("PROFILE", "SEED", "SMOKE")


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


def run_notebooks(profile: str = "lite", seed: int = 0, smoke: bool = False, only: list[str] | None = None,
                  output_dir: Path = OUTPUT_DIR) -> list[Path]:
    """Execute the selected notebooks in order; stop at the first failure."""
    import papermill

    from osgha_lite.runtime import portable_kernel_environment

    portable_kernel_environment()  # the kernels papermill starts inherit it
    if Path(profile).suffix:  # a profile file: the notebooks run in notebooks/, so pass it by absolute path
        profile = str(Path(profile).resolve())
    notebooks = find_notebooks()
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(prefix) for prefix in only)]
        if not notebooks:
            raise SystemExit(f"no notebook in {NOTEBOOKS_DIR} starts with {only}")
    else:
        # A full run rewrites every artifact, so the manifest starts empty and keeps no stale entries.
        from osgha_lite.config import notebook_profile
        from osgha_lite.manifest import Roots

        Roots.current().manifest_path(notebook_profile(profile, smoke=smoke)["name"]).unlink(missing_ok=True)
    written = []
    for notebook in notebooks:
        target = output_dir / Path(profile).stem / notebook.name
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"[runner] {notebook.name} (profile={profile}, seed={seed}, smoke={smoke})", flush=True)
        papermill.execute_notebook(
            str(notebook), str(target), cwd=str(NOTEBOOKS_DIR), kernel_name="python3",
            parameters={"PROFILE": profile, "SEED": seed, "SMOKE": smoke}, progress_bar=False,
        )
        print(f"[runner] {notebook.name} done in {time.perf_counter() - started:.0f} s -> {target}", flush=True)
        written.append(target)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    except Exception as error:  # papermill raises PapermillExecutionError with the cell's traceback
        print(f"[runner] failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the companion website from the runner's executed notebooks (``make book``).

Nothing is executed here: the pages are the notebooks that
``python -m osgha_lite run`` wrote to ``build/notebooks/<profile>/``, so
the site shows exactly the run that produced ``results/`` and ``figures/``.
The profile (``lite``, or ``lite-smoke`` after ``--smoke``), seed and smoke
flag are read from the parameters Papermill recorded in each notebook, and
the run id from ``metadata.osgha.run_id`` (written by the runner, or by
``notebooks/conftest.py`` for nbval's run in ``make test``). Every notebook
must carry the same four; a notebook without a run id, one of another run,
a failed run and any error output are refused (:func:`run_of`).

The source tree assembled in ``<out>/src`` holds

* ``intro.md``, the landing page: the headline table
  (``results/<profile>/tables/05_main_results.md``), the figure of gains per
  retrieval direction (``figures/<profile>/05_direction_gains.png``) and links
  to every notebook page and to the source files;
* one page per numbered notebook, in order. A header cell links the modules
  the notebook imports; inline code such as ``osgha_lite.metrics.entropy`` and
  mentions of ``notebook 05`` become links;
* ``source/<module path>.md``, one page per module of ``osgha_lite`` (``source/metrics/entropy.md``),
  subpackages included.

Jupyter Book (Sphinx with MyST-NB) turns it into ``<out>/_build/html``.
Every script, style sheet and font is served from that folder: MathJax 3.2
comes from the ``django-static-mathjax`` package (the MathJax distribution
as a wheel; Django is not needed) and is copied into ``_static/mathjax``,
and ipywidgets progress-bar outputs are reduced to their final one-line
text (from the widget state saved in the notebook), so no widget manager is
loaded from a CDN.

Usage::

    python book/build_site.py [--notebooks build/notebooks/lite] [--out build/book]
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BOOK_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BOOK_DIR.parent
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
HEADLINE_TABLE = "05_main_results.md"
HEADLINE_FIGURE = "05_direction_gains.png"
MODULE_SPAN = re.compile(r"(?<!\[)`(osgha_lite\.([A-Za-z_][\w.]*)(?:\(\))?)`(?!\])")
NOTEBOOK_MENTION = re.compile(r"\b([Nn]otebooks? )(0\d)\b")
IMPORT = re.compile(r"^\s*(?:from\s+osgha_lite\.([\w.]+)\s+import\s+([\w, ]+)|import\s+osgha_lite\.([\w.]+))", re.MULTILINE)


def package_modules() -> list[str]:
    """Every module of ``osgha_lite`` by its dotted name under the package (``metrics.entropy``; a subpackage by
    its ``__init__``: ``data``), the package's own ``__init__`` left out."""
    root = PROJECT_ROOT / "osgha_lite"
    names = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts and "__pycache__" not in parts:
            names.append(".".join(parts))
    return sorted(names)


def module_file(name: str) -> Path:
    """The source file of module ``name`` (dotted, under ``osgha_lite``)."""
    path = PROJECT_ROOT / "osgha_lite" / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def page_of(name: str) -> str:
    """The page of module ``name`` under ``source/``, without suffix: ``metrics/entropy``."""
    return name.replace(".", "/")


def longest_module(dotted: str, modules: set[str]) -> str | None:
    """The longest prefix of ``dotted`` (``metrics.entropy.spectral_bits``) that is one of ``modules``."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def imported_modules(code: str, modules: set[str]) -> set[str]:
    """The modules of ``osgha_lite`` that ``code`` imports (``from osgha_lite.pipeline import figures`` names
    ``pipeline.figures``)."""
    found = set()
    for package, names, plain in IMPORT.findall(code):
        if plain:
            found.add(longest_module(plain, modules))
            continue
        for name in (n.strip() for n in names.split(",")):
            found.add(longest_module(f"{package}.{name}", modules) if name else longest_module(package, modules))
    return found - {None}


class BookError(RuntimeError):
    """The site cannot be built from what is on disk; the message says what to run."""


def numbered_notebooks(folder: Path) -> list[Path]:
    """Executed numbered notebooks in name order (the runner's order)."""
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def run_of(notebooks: list[Path]) -> dict:
    """The run all executed notebooks come from: ``{"profile", "seed", "smoke", "run_id"}``.

    Parameters come from Papermill's record of the runner's copies, or from ``metadata.osgha`` of
    nbval's run (``notebooks/conftest.py``); the run id from ``metadata.osgha.run_id`` of either.
    Raises :class:`BookError` naming the notebook for a failed run, an error output, a missing run id,
    and when the notebooks do not all share profile, seed, smoke flag and run id."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from osgha_lite.profiles import notebook_profile

    runs = {}
    for path in notebooks:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise BookError(f"{path}: not a readable notebook ({error}); rerun `python -m osgha_lite run`") from None
        metadata = nb.get("metadata", {})
        papermill = metadata.get("papermill") or {}
        parameters = papermill.get("parameters")
        if papermill.get("exception"):
            raise BookError(f"{path}: its run failed (Papermill recorded an exception); fix the notebook and "
                            f"rerun `python -m osgha_lite run`")
        osgha = metadata.get("osgha") or {}  # the run id; for nbval's run in `make test` also its parameters
        if osgha.get("executed_by") == "nbval":
            if osgha.get("failed") or osgha.get("cells_run") != osgha.get("code_cells"):
                raise BookError(f"{path}: nbval's run of it failed or stopped early ({osgha.get('cells_run')} of "
                                f"{osgha.get('code_cells')} cells ran); fix the notebook and rerun `make test`")
            parameters = osgha.get("parameters")
        if not parameters or "PROFILE" not in parameters:
            raise BookError(f"{path}: no Papermill parameters in its metadata; it is not an executed copy. "
                            f"Run `python -m osgha_lite run` (or `make reproduce` / `make smoke`) first")
        error = first_error_output(nb)
        if error:
            raise BookError(f"{path}: {error}; a run with an error output is not shown. Fix the notebook and rerun "
                            f"`python -m osgha_lite run`")
        if not osgha.get("run_id"):
            raise BookError(f"{path}: no run id in its metadata (metadata.osgha.run_id), so it cannot be told apart "
                            f"from another run's copy; rerun every notebook with `python -m osgha_lite run` "
                            f"(or `make reproduce` / `make smoke`)")
        smoke = bool(parameters.get("SMOKE"))
        runs[path.name] = {"profile": notebook_profile(parameters["PROFILE"], smoke=smoke)["name"],
                           "seed": parameters.get("SEED"), "smoke": smoke, "run_id": osgha["run_id"]}
    distinct = {tuple(run.items()) for run in runs.values()}
    if len(distinct) != 1:
        listed = "; ".join(f"{name}: " + ", ".join(f"{key} {value}" for key, value in run.items())
                           for name, run in runs.items())
        raise BookError(f"executed notebooks come from different runs ({listed}); rerun every notebook in one run "
                        f"of `python -m osgha_lite run` for one profile (a run of some notebooks only, such as "
                        f"--only or `make figures`, is a run of its own)")
    return dict(next(iter(distinct)))


def run_profile(notebooks: list[Path]) -> str:
    """The profile name (``lite``, ``lite-smoke``...) of the one run the notebooks come from (:func:`run_of`)."""
    return run_of(notebooks)["profile"]


def first_error_output(nb: dict) -> str | None:
    """Where the notebook's first error output is and what it says, or ``None``: a cell that raised,
    also when the run went on (Papermill's ``exception`` is false for a cell allowed to raise)."""
    code = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        code += 1
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return (f"code cell {code} (execution count {cell.get('execution_count')}) has an error output "
                        f"({output.get('ename')}: {str(output.get('evalue', ''))[:200]})")
    return None


def _widget_text(model_id: str, state: dict) -> str | None:
    """The one-line text of a tqdm widget bar in its final state: ``desc: 100%|####| n/n [time, rate]``.

    ``state`` is the widget state nbclient saved in the notebook's metadata. A finished
    ``leave=False`` bar is hidden there (layout visibility ``hidden``) and has no text, nor has a
    widget missing from the state."""
    model = state.get(model_id)
    if not model or model.get("model_name") != "HBoxModel":
        return None
    layout = state.get(str(model.get("state", {}).get("layout", "")).removeprefix("IPY_MODEL_"), {})
    if layout.get("state", {}).get("visibility") == "hidden":  # tqdm hides a finished leave=False bar
        return None
    parts = []
    for child in model.get("state", {}).get("children", []):
        child_model = state.get(str(child).removeprefix("IPY_MODEL_"), {})
        values = child_model.get("state", {})
        if child_model.get("model_name") == "HTMLModel":
            parts.append(html.unescape(re.sub(r"<[^>]+>", "", str(values.get("value", "")))).replace("\xa0", " ").strip())
        elif child_model.get("model_name") == "FloatProgressModel" and values.get("max"):
            filled = round(10 * float(values.get("value", 0)) / float(values["max"]))
            parts.append("|" + "#" * filled + " " * (10 - filled) + "|")
    text = " ".join(p for p in parts if p)
    return text or None


def plain_outputs(cell: dict, state: dict | None = None) -> dict:
    """The cell with widget outputs (tqdm bars) replaced by their final one-line text (see
    :func:`_widget_text`); a widget that was closed, or has no saved state, is dropped, as in Jupyter."""
    cell = copy.deepcopy(cell)
    outputs = []
    for output in cell.get("outputs", []):
        data = output.get("data")
        if data and WIDGET_MIME in data:
            text = _widget_text(str(data[WIDGET_MIME].get("model_id", "")), state or {})
            if text is None:
                continue
            output["data"] = {"text/plain": text}
        outputs.append(output)
    if "outputs" in cell:
        cell["outputs"] = outputs
    return cell


def link_markdown(text: str, modules: set[str], pages: dict[str, str]) -> str:
    """Link ``osgha_lite.<module>`` code spans to the module's source page and "notebook NN" to its page."""
    def module(match: re.Match) -> str:
        name = longest_module(match.group(2), modules)
        return f"[`{match.group(1)}`](source/{page_of(name)}.md)" if name else match.group(0)

    def notebook(match: re.Match) -> str:
        number = match.group(2)
        return f"[{match.group(1)}{number}]({pages[number]})" if number in pages else match.group(0)

    return NOTEBOOK_MENTION.sub(notebook, MODULE_SPAN.sub(module, text))


def artifact_cell(key: str, profile: str, files: dict[str, Path], number: int) -> dict:
    """A Markdown cell showing one saved figure (its PNG) or table (its Markdown file)."""
    path = files[key]
    if key.startswith("figures/"):
        text = f"```{{figure}} _figures/{path.name}\n:alt: {path.stem}\n\nFigure `{key}`.\n```\n"
    else:
        text = f"Table `{key}` ([CSV]({'_tables/' + path.with_suffix('.csv').name})):\n\n" + \
            path.read_text(encoding="utf-8").strip() + "\n"
    return {"cell_type": "markdown", "id": f"artifact-{number}", "metadata": {}, "source": text}


def with_artifacts(cells: list[dict], keys: list[str], profile: str, files: dict[str, Path]) -> list[dict]:
    """Insert each figure and table after the code cell that saves it (the first one naming it), or at the
    end under a heading when no cell names it (a name built at run time)."""
    placed: dict[int, list[str]] = {}
    rest = []
    for key in keys:
        stem = Path(key).stem
        index = next((i for i, c in enumerate(cells) if c["cell_type"] == "code" and stem in
                      ("".join(c["source"]) if isinstance(c["source"], list) else c["source"])), None)
        (placed.setdefault(index, []) if index is not None else rest).append(key)
    out, number = [], 0
    for i, cell in enumerate(cells):
        out.append(cell)
        for key in placed.get(i, []):
            number += 1
            out.append(artifact_cell(key, profile, files, number))
    if rest:
        out.append({"cell_type": "markdown", "id": "artifacts-rest", "metadata": {},
                    "source": "## Figures and tables saved by this notebook"})
        for key in rest:
            number += 1
            out.append(artifact_cell(key, profile, files, number))
    return out


def page_notebook(path: Path, modules: set[str], pages: dict[str, str], profile: str,
                  artifacts: list[str] = (), files: dict[str, Path] | None = None) -> dict:
    """The executed notebook as a page: plain outputs, linked text, a header cell naming its source,
    and the figures and tables it saved (``artifacts``, keys of the manifest; ``files`` their copies)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    widgets = nb.get("metadata", {}).pop("widgets", {})
    state = widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    cells = []
    for cell in nb["cells"]:
        cell = plain_outputs(cell, state)
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = link_markdown(source, modules, pages)
        cells.append(cell)
    cells = with_artifacts(cells, list(artifacts), profile, files or {})
    code = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in cells if c["cell_type"] == "code")
    used = sorted(imported_modules(code, modules))
    header = (f"*Executed copy of `notebooks/{path.name}` (profile `{profile}`), written by "
              f"`python -m osgha_lite run`. [Back to the results](intro.md).*")
    if used:
        header += " Modules used here: " + ", ".join(f"[`osgha_lite.{m}`](source/{page_of(m)}.md)" for m in used) + "."
    first_heading = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                          and "".join(c["source"]).lstrip().startswith("# ")), None)
    at = 0 if first_heading is None else first_heading + 1
    cells.insert(at, {"cell_type": "markdown", "id": "page-header", "metadata": {}, "source": header})
    nb["cells"] = cells
    return nb


def module_page(name: str) -> str:
    docstring = ""
    text = module_file(name).read_text(encoding="utf-8")
    match = re.match(r'\s*(?:from __future__[^\n]*\n\s*)?[rR]?"""(.*?)\n', text, re.DOTALL)
    if match:
        docstring = match.group(1).strip()
    where = module_file(name).relative_to(PROJECT_ROOT).as_posix()
    return (f"# `osgha_lite.{name}`\n\n{docstring}\n\nFile `{where}`:\n\n"
            f"```{{literalinclude}} /source/_code/{name}.py\n:language: python\n:linenos:\n```\n")


def landing_page(profile: str, titles: dict[str, str], modules: list[str], figure: str, table: str,
                 run: dict | None = None) -> str:
    notebooks = "\n".join(f"{i + 1}. [{title}]({page})" for i, (page, title) in enumerate(titles.items()))
    which = f" (run `{run['run_id']}`, seed {run['seed']})" if run else ""
    return f"""# osgha-lite: the companion as a website

Results of profile `{profile}`: every number, table and figure below and on the
notebook pages comes from the executed notebooks of one run of
`python -m osgha_lite run`{which}.

## Headline results

Retrieval on the test split (R@K in %, rsum their sum), from
`results/{profile}/tables/{HEADLINE_TABLE}`:

{table.strip()}

```{{figure}} {figure}
:alt: Gain per retrieval direction
:width: 90%

Gain per retrieval direction (`figures/{profile}/{HEADLINE_FIGURE}`).
```

## Notebooks

{notebooks}

## Source files

[Every module of `osgha_lite`](source/index.md), one page each.
"""


def notebook_title(nb: dict, fallback: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def shown_artifacts(profile: str, results_root: Path, figures_root: Path,
                    src: Path) -> tuple[dict[str, list[str]], dict[str, Path]]:
    """The figures (PNG) and tables (Markdown) of the profile's manifest, per notebook, copied into ``src``."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from osgha_lite.pipeline.manifest import Roots, read_manifest

    roots = Roots(figures_root, results_root)
    manifest = read_manifest(profile, roots)
    if not manifest:
        raise BookError(f"{roots.manifest_path(profile)}: no manifest; run the notebooks with the runner first")
    per_notebook: dict[str, list[str]] = {}
    files: dict[str, Path] = {}
    for key, entry in manifest.items():
        if not (key.endswith(".png") or (entry["kind"] == "table" and key.endswith(".md"))):
            continue
        source = roots.resolve(key)
        if not source.is_file():
            raise BookError(f"{source}: listed in the manifest but missing; rerun notebook {entry['notebook']}")
        folder = src / ("_figures" if key.endswith(".png") else "_tables")
        folder.mkdir(exist_ok=True)
        shutil.copy2(source, folder / source.name)
        if key.endswith(".md") and source.with_suffix(".csv").is_file():
            shutil.copy2(source.with_suffix(".csv"), folder / source.with_suffix(".csv").name)
        files[key] = folder / source.name
        per_notebook.setdefault(entry["notebook"], []).append(key)
    return per_notebook, files


def assemble(notebooks_dir: Path, src: Path, results_root: Path, figures_root: Path) -> dict:
    """Write the book's source tree into ``src``; returns what it holds."""
    notebooks = numbered_notebooks(notebooks_dir)
    if not notebooks:
        raise BookError(f"{notebooks_dir}: no executed notebooks; run `make reproduce` or `make smoke` first")
    run = run_of(notebooks)
    profile = run["profile"]
    table_path = results_root / profile / "tables" / HEADLINE_TABLE
    figure_path = figures_root / profile / HEADLINE_FIGURE
    for needed in (table_path, figure_path):
        if not needed.is_file():
            raise BookError(f"{needed}: missing; the landing page needs it (notebook 05 writes it)")
    shutil.rmtree(src, ignore_errors=True)
    (src / "source").mkdir(parents=True)
    (src / "_figures").mkdir()
    shutil.copy2(BOOK_DIR / "_config.yml", src / "_config.yml")
    shutil.copytree(BOOK_DIR / "_ext", src / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(figure_path, src / "_figures" / HEADLINE_FIGURE)

    modules = package_modules()
    pages = {path.name[:2]: path.name for path in notebooks}
    artifacts, files = shown_artifacts(profile, results_root, figures_root, src)
    titles = {}
    for path in notebooks:
        nb = page_notebook(path, set(modules), pages, profile, artifacts.get(path.stem, []), files)
        (src / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
        titles[path.name] = notebook_title(nb, path.stem)
    (src / "source" / "_code").mkdir()
    for name in modules:
        shutil.copy2(module_file(name), src / "source" / "_code" / f"{name}.py")
        page = src / "source" / f"{page_of(name)}.md"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(module_page(name), encoding="utf-8")
    (src / "source" / "index.md").write_text(
        "# Source files\n\nThe modules of `osgha_lite`, each with its docstring and code:\n\n"
        + "".join(f"* [`osgha_lite.{m}`]({page_of(m)}.md)\n" for m in modules), encoding="utf-8")
    (src / "intro.md").write_text(landing_page(profile, titles, modules, f"_figures/{HEADLINE_FIGURE}",
                                               table_path.read_text(encoding="utf-8"), run), encoding="utf-8")
    toc = "format: jb-book\nroot: intro\nchapters:\n" + "".join(f"- file: {p.stem}\n" for p in notebooks)
    toc += "- file: source/index\n  sections:\n" + "".join(f"  - file: source/{page_of(m)}\n" for m in modules)
    (src / "_toc.yml").write_text(toc, encoding="utf-8")
    return {"profile": profile, "run_id": run["run_id"], "notebooks": [p.name for p in notebooks], "modules": modules}


def add_mathjax(site: Path) -> None:
    """Copy MathJax 3 (TeX input, CommonHTML output, menu, fonts) from the ``django-static-mathjax``
    package, which ships the MathJax distribution, into the built site's ``_static/mathjax``."""
    import mathjax

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    target = site / "_static" / "mathjax"
    shutil.rmtree(target, ignore_errors=True)
    bundles = {p.name for p in es5.glob("*.js")} - {"tex-chtml.js"}

    def skip(folder: str, names: list[str]) -> set[str]:
        if Path(folder) == es5:
            return bundles | {"node-main.js"}
        if Path(folder) == es5 / "output":
            return {name for name in names if name.startswith("svg")}
        return set()

    shutil.copytree(es5, target, ignore=skip)


def build(notebooks_dir: Path, out: Path, results_root: Path | None = None,
          figures_root: Path | None = None) -> Path:
    """Assemble and build the site; returns the folder of ``index.html``."""
    started = time.perf_counter()
    sys.path.insert(0, str(PROJECT_ROOT))
    from osgha_lite.pipeline.manifest import Roots

    current = Roots.current()  # $OSGHA_RESULTS_DIR / $OSGHA_FIGURES_DIR aware, as the runner wrote them
    info = assemble(Path(notebooks_dir), out / "src", results_root or current.results, figures_root or current.figures)
    shutil.rmtree(out / "_build", ignore_errors=True)
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(out / "src"), "--path-output", str(out),
               "--warningiserror", "--keep-going"]
    done = subprocess.run(command, capture_output=True, text=True)
    site = out / "_build" / "html"
    if done.returncode != 0:
        raise BookError(f"jupyter-book build failed ({' '.join(command)}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    add_mathjax(site)
    pages = sorted(site.rglob("*.html"))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    print(f"[book] profile {info['profile']}, run {info['run_id']}: {len(info['notebooks'])} notebook pages, "
          f"{len(pages)} HTML pages, {size / 2**20:.1f} MiB in {site} ({time.perf_counter() - started:.0f} s); "
          f"open {site / 'index.html'}")
    return site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m osgha_lite book", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  python -m osgha_lite book                                   # from build/notebooks/lite (a runner's run)
  python -m osgha_lite book --notebooks build/regenerated/notebooks --out build/book-test""")
    parser.add_argument("--notebooks", type=Path, default=PROJECT_ROOT / "build" / "notebooks" / "lite",
                        help="the runner's executed notebooks")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "book")
    args = parser.parse_args(argv)
    try:
        build(args.notebooks, args.out.resolve())
    except BookError as error:
        print(f"[book] {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

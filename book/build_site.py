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

The source tree assembled in ``<out>/src`` mirrors the repository, so a
relative link means the same on the site and in a repository view
(:func:`assemble`): ``README.md`` is the landing page, ``docs/*.md`` the
documentation (``docs/claims.md``, the claims ledger, is written afresh from
the run's results by ``book/ledger.py``), one page per executed notebook
under ``notebooks/``, one per saved table under ``results/<profile>/tables/``,
and the figures under ``figures/<profile>/``. Sphinx's autosummary writes an
API page for every module and subpackage of ``osgha_lite`` (``api/``). The
table of contents is the committed ``book/_toc.yml``.

On the pages, tables get readable headers with each interval in one column
(:func:`readable_table`), a run of progress bars and cache lines becomes one
summary line (:func:`summarised_progress`), and each figure carries the
caption stored with it in the manifest.

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
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

BOOK_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BOOK_DIR.parent
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
HEADLINE_TABLE = "05_main_results.md"
MODULE_SPAN = re.compile(r"(?<!\[)`(osgha_lite\.([a-z_]+)(?:\.[A-Za-z_][\w.]*)?(?:\(\))?)`(?!\])")
NOTEBOOK_MENTION = re.compile(r"\b([Nn]otebooks? )(0\d)\b")
IMPORT = re.compile(r"^\s*(?:from|import)\s+osgha_lite\.([\w.]+)", re.MULTILINE)


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


# --- What a page shows ------------------------------------------------------------------------------

PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\bitems \d+-\d+ of \d+\b|\btexts not encoded before\b|"
                      r"\b\d+/\d+ \[\d\d:\d\d[<,]|[^\s]+: (?:hit|miss|stored|loaded)\b.*\bcache\b")


def output_text(output: dict) -> str:
    """The plain text an output shows (a stream's text, or a display's ``text/plain``)."""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        text = (output.get("data") or {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else str(text)


def is_progress(output: dict) -> bool:
    """A progress bar or a cache log line: every non-blank line of the output matches :data:`PROGRESS`."""
    if output.get("output_type") not in ("stream", "display_data"):
        return False
    lines = [line for line in output_text(output).splitlines() if line.strip()]
    return bool(lines) and all(PROGRESS.search(line) for line in lines)


def summarised_progress(cell: dict) -> dict:
    """The cell with each run of two or more consecutive progress outputs replaced by one summary line:
    the run's last line and how many lines it stood for. The notebook keeps them; the site shows one."""
    outputs, run = [], []

    def flush():
        if len(run) == 1:
            outputs.append(run[0])
        elif run:
            last = [line for line in output_text(run[-1]).splitlines() if line.strip()][-1].strip()
            outputs.append({"output_type": "stream", "name": "stdout",
                            "text": f"{last}  [{len(run)} progress and cache lines summarised]\n"})
        run.clear()

    for output in cell.get("outputs", []):
        if is_progress(output):
            run.append(output)
        else:
            flush()
            outputs.append(output)
    flush()
    if "outputs" in cell:
        cell = {**cell, "outputs": outputs}
    return cell


READABLE = {"i2t": "i→t", "t2i": "t→i", "rsum": "rSum", "R@1": "R@1", "dev_rsum": "dev rSum"}


def readable_column(name: str) -> str:
    """``i2t_R@1`` -> ``i→t R@1``, ``rsum`` -> ``rSum``, ``relative_%`` -> ``relative %``."""
    if name in READABLE:
        return READABLE[name]
    return " ".join(READABLE.get(part, part) for part in name.split("_")).replace("  ", " ")


def parse_table(text: str) -> tuple[list[str], list[str], list[list[str]]] | None:
    """``(header, alignment row cells, rows)`` of a Markdown pipe table, or ``None``."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 2 or not all(line.startswith("|") for line in lines):
        return None
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    if not all(re.fullmatch(r":?-+:?", cell) for cell in split[1]):
        return None
    return split[0], split[1], split[2:]


def readable_table(text: str) -> str:
    """A Markdown table as the site shows it: readable headers, and each ``X_low``/``X_high`` pair (or
    ``low``/``high``) joined into one ``95% interval`` column after ``X``, so a wide table keeps the
    method and rSum in view. Anything that is not one pipe table is returned unchanged."""
    parsed = parse_table(text)
    if parsed is None:
        return text
    header, align, rows = parsed
    pairs = {i: (header.index(f"{name}_low"), header.index(f"{name}_high")) for i, name in enumerate(header)
             if f"{name}_low" in header and f"{name}_high" in header}
    if "low" in header and "high" in header:
        low, high = header.index("low"), header.index("high")
        pairs[low - 1] = (low, high)
    if "diff_low" in header and "diff_high" in header and "diff_vs_none" in header:
        pairs[header.index("diff_vs_none")] = (header.index("diff_low"), header.index("diff_high"))
    hidden = {j for pair in pairs.values() for j in pair}
    new_header, new_align, keep = [], [], []
    for i in range(len(header)):
        if i in hidden:
            continue
        new_header.append(readable_column(header[i]))
        new_align.append(align[i])
        keep.append((i, None))
        if i in pairs:
            new_header.append("95% interval")
            new_align.append(":---:")
            keep.append(pairs[i])
    body = []
    for row in rows:
        cells = []
        for item in keep:
            if item[1] is None:
                cells.append(row[item[0]])
            else:
                cells.append(f"[{row[item[0]]}, {row[item[1]]}]")
        body.append(cells)
    return "\n".join("| " + " | ".join(r) + " |" for r in [new_header, new_align] + body) + "\n"


def readable_tables(markdown: str) -> str:
    """Every pipe table inside a Markdown text made readable (:func:`readable_table`)."""
    out, block = [], []
    for line in markdown.splitlines() + [""]:
        if line.strip().startswith("|"):
            block.append(line)
            continue
        if block:
            out.append(readable_table("\n".join(block)).rstrip("\n"))
            block = []
        out.append(line)
    return "\n".join(out[:-1]) + ("\n" if markdown.endswith("\n") else "")


def link_markdown(text: str, modules: set[str], pages: dict[str, str]) -> str:
    """Link ``osgha_lite.<module>`` code spans to the module's API page and "notebook NN" to its page."""
    def module(match: re.Match) -> str:
        dotted = match.group(1).removesuffix("()")
        return f"{{py:obj}}`{dotted}`" if match.group(2) in modules else match.group(0)

    def notebook(match: re.Match) -> str:
        number = match.group(2)
        return f"[{match.group(1)}{number}]({pages[number]})" if number in pages else match.group(0)

    return NOTEBOOK_MENTION.sub(notebook, MODULE_SPAN.sub(module, text))


LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")


def site_links(text: str, page: str, profile: str, pages: set[str], files: set[str]) -> str:
    """Rewrite the relative links of a repository Markdown file (``page``, its path in the repository)
    for the site, where the same relative paths hold the pages: a link to another page, notebook,
    table page, figure or copied file stays; ``results/lite/...`` and ``figures/lite/...`` follow the
    run's profile; a link to a module's source becomes its API page; a link to any other repository
    file (the Makefile, a test) becomes the path in code, since the site does not hold it."""
    here = PurePosixPath(page).parent

    def rewrite(match: re.Match) -> str:
        bang, label, target = match.groups()
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, fragment = target.partition("#")
        resolved = PurePosixPath(posixpath.normpath((here / path).as_posix()))
        parts = list(resolved.parts)
        if parts[:1] in (["results"], ["figures"]) and len(parts) > 1 and parts[1] == "lite" and profile != "lite":
            parts[1] = profile
            resolved = PurePosixPath(*parts)
            target = posixpath.relpath(resolved.as_posix(), here.as_posix() or ".") + (f"#{fragment}" if fragment else "")
        key = resolved.as_posix()
        if key in pages or key.removesuffix("/") + "/README.md" in pages or (bang and key in files):
            return f"{bang}[{label}]({target})"
        if key in files:  # a file the site holds but does not render: a download
            return f"{{download}}`{label.replace('`', '')} <{target}>`"
        if key.startswith("osgha_lite/") and key.endswith(".py"):
            dotted = key.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            return f"{{py:mod}}`{label.strip('`')} <{dotted}>`" if label.strip("`") != key else f"{{py:mod}}`{dotted}`"
        shown = label if label.strip("`") == key else f"{label} (`{key}`)"
        return shown if not bang else f"`{key}`"

    return LINK.sub(rewrite, text)


def artifact_cell(key: str, profile: str, files: dict[str, Path], number: int, caption: str | None = None) -> dict:
    """A Markdown cell showing one saved figure (its PNG, with its caption) or table (readable headers)."""
    path = files[key]
    if key.startswith("figures/"):
        words = caption or f"`{key}` (no caption recorded: rerun the notebook that saves it)."
        text = f"```{{figure}} ../{key}\n:alt: {path.stem}\n:width: 100%\n\n{words}\n```\n"
    else:
        text = (f"Table [`{path.stem}`](../{key}) ([CSV](../{Path(key).with_suffix('.csv').as_posix()})):\n\n"
                + readable_table(path.read_text(encoding="utf-8")))
    return {"cell_type": "markdown", "id": f"artifact-{number}", "metadata": {}, "source": text}


def with_artifacts(cells: list[dict], keys: list[str], profile: str, files: dict[str, Path],
                   captions: dict[str, str] | None = None) -> list[dict]:
    """Insert each figure and table after the code cell that saves it (the first one naming it), or at the
    end under a heading when no cell names it (a name built at run time)."""
    captions = captions or {}
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
            out.append(artifact_cell(key, profile, files, number, captions.get(key)))
    if rest:
        out.append({"cell_type": "markdown", "id": "artifacts-rest", "metadata": {},
                    "source": "## Figures and tables saved by this notebook"})
        for key in rest:
            number += 1
            out.append(artifact_cell(key, profile, files, number, captions.get(key)))
    return out


def page_notebook(path: Path, modules: set[str], pages: dict[str, str], profile: str,
                  artifacts: list[str] = (), files: dict[str, Path] | None = None,
                  captions: dict[str, str] | None = None) -> dict:
    """The executed notebook as a page: plain outputs with progress runs summarised, linked text, a header
    cell naming its source, and the figures and tables it saved (``artifacts``, keys of the manifest)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    widgets = nb.get("metadata", {}).pop("widgets", {})
    state = widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    cells = []
    for cell in nb["cells"]:
        cell = summarised_progress(plain_outputs(cell, state))
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = link_markdown(source, modules, pages)
        cells.append(cell)
    cells = with_artifacts(cells, list(artifacts), profile, files or {}, captions)
    code = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in cells if c["cell_type"] == "code")
    used = sorted(set(IMPORT.findall(code)))
    header = (f"*Executed copy of `notebooks/{path.name}` (profile `{profile}`), written by the runner. "
              f"[Back to the front page](../README.md).*")
    if used:
        header += " Modules used here: " + ", ".join(f"{{py:mod}}`osgha_lite.{m}`" for m in used) + "."
    first_heading = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                          and "".join(c["source"]).lstrip().startswith("# ")), None)
    at = 0 if first_heading is None else first_heading + 1
    cells.insert(at, {"cell_type": "markdown", "id": "page-header", "metadata": {}, "source": header})
    nb["cells"] = cells
    return nb


def table_page(key: str, path: Path, notebook: str, pages: dict[str, str]) -> str:
    """The page of one saved table: what made it, its readable form, and its CSV and LaTeX files."""
    page = pages.get(notebook[:2])
    made = f"[notebook {notebook[:2]}](../../../notebooks/{page})" if page else f"notebook {notebook[:2]}"
    extra = [f"[{s.upper()[1:]}]({path.with_suffix(s).name})" for s in (".csv", ".tex") if path.with_suffix(s).is_file()]
    return (f"# Table `{path.stem}`\n\nSaved by {made} as `{key}`"
            + (f" (also {', '.join(extra)})" if extra else "") + ".\n\n"
            + readable_table(path.read_text(encoding="utf-8")))


def notebook_title(nb: dict, fallback: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def package_modules() -> list[str]:
    """Every module and subpackage of ``osgha_lite``, dotted, found by walking the package (not by globbing
    file names), so a new module or subpackage is listed without a change here."""
    import pkgutil

    sys.path.insert(0, str(PROJECT_ROOT))
    import osgha_lite

    names = ["osgha_lite"]
    for info in pkgutil.walk_packages(osgha_lite.__path__, "osgha_lite."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def shown_artifacts(profile: str, results_root: Path, figures_root: Path,
                    src: Path) -> tuple[dict[str, list[str]], dict[str, Path], dict[str, str], dict[str, str]]:
    """The figures and tables of the profile's manifest: per notebook, their copies in ``src`` (at the
    same paths as in the repository, so relative links hold), each one's notebook, and each figure's caption."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from osgha_lite.pipeline.manifest import Roots, read_manifest

    roots = Roots(figures_root, results_root)
    manifest = read_manifest(profile, roots)
    if not manifest:
        raise BookError(f"{roots.manifest_path(profile)}: no manifest; run the notebooks with the runner first")
    per_notebook: dict[str, list[str]] = {}
    files: dict[str, Path] = {}
    owner: dict[str, str] = {}
    captions: dict[str, str] = {}
    for key, entry in manifest.items():
        if entry.get("caption"):
            captions[key] = entry["caption"]
        source = roots.resolve(key)
        if not source.is_file():
            raise BookError(f"{source}: listed in the manifest but missing; rerun notebook {entry['notebook']}")
        target = src / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        owner[key] = entry["notebook"]
        if key.endswith(".png") or (entry["kind"] == "table" and key.endswith(".md")):
            files[key] = target
            per_notebook.setdefault(entry["notebook"], []).append(key)
    return per_notebook, files, owner, captions


SITE_PAGES = ("README.md", "data/README.md")


def assemble(notebooks_dir: Path, src: Path, results_root: Path, figures_root: Path) -> dict:
    """Write the book's source tree into ``src``; returns what it holds.

    The tree mirrors the repository: ``README.md`` (the landing page), ``docs/*.md`` (with
    ``docs/claims.md`` written afresh from the run's results by ``book/ledger.py``),
    ``data/README.md``, ``notebooks/NN_*.ipynb`` (the executed copies), ``results/<profile>/tables/``
    (a page per table) and ``figures/<profile>/``; ``api/`` holds the API pages Sphinx's autosummary
    generates for every module. The table of contents is the committed ``book/_toc.yml``."""
    notebooks = numbered_notebooks(notebooks_dir)
    if not notebooks:
        raise BookError(f"{notebooks_dir}: no executed notebooks; run `make reproduce` or `make smoke` first")
    run = run_of(notebooks)
    profile = run["profile"]
    table_path = results_root / profile / "tables" / HEADLINE_TABLE
    if not table_path.is_file():
        raise BookError(f"{table_path}: missing; the landing page needs it (notebook 05 writes it)")
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(BOOK_DIR / name, src / name)
    for name in ("_ext", "_templates", "_static", "api"):
        shutil.copytree(BOOK_DIR / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))

    artifacts, files, owner, captions = shown_artifacts(profile, results_root, figures_root, src)
    modules = set(name.split(".")[1] for name in package_modules() if name.count(".") >= 1)
    nb_pages = {path.name[:2]: path.name for path in notebooks}
    (src / "notebooks").mkdir()
    titles = {}
    for path in notebooks:
        nb = page_notebook(path, modules, nb_pages, profile, artifacts.get(path.stem, []), files, captions)
        (src / "notebooks" / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
        titles[path.name] = notebook_title(nb, path.stem)
    for key, target in files.items():
        if key.endswith(".md"):
            target.write_text(table_page(key, target, owner[key], nb_pages), encoding="utf-8")

    sys.path.insert(0, str(BOOK_DIR))
    import ledger

    root = results_root.parent
    if results_root.name != "results":
        root = src / "_ledger_root"  # the ledger reads <root>/results/<profile>: point it at this run's results
        (root / "results").mkdir(parents=True)
        (root / "results" / profile).symlink_to((results_root / profile).resolve())
    problems = ledger.check(root, profile)
    if problems:
        raise BookError("the claims ledger disagrees with the tables:\n" + "\n".join(problems))
    docs = sorted((PROJECT_ROOT / "docs").glob("*.md"))
    pages = {f"docs/{p.name}" for p in docs} | {"docs/claims.md"} | set(SITE_PAGES)
    pages |= {f"notebooks/{p.name}" for p in notebooks} | {k for k in files if k.endswith(".md")}
    copied = set(owner) | {name for name in ("LICENSE", "CITATION.cff") if (PROJECT_ROOT / name).is_file()}
    (src / "docs").mkdir()
    (src / "data").mkdir(exist_ok=True)
    texts = {f"docs/{p.name}": p.read_text(encoding="utf-8") for p in docs}
    texts["docs/claims.md"] = ledger.render(root, profile, notebooks=PROJECT_ROOT / "notebooks")
    for name in SITE_PAGES:
        texts[name] = (PROJECT_ROOT / name).read_text(encoding="utf-8")
    texts["README.md"] = readable_tables(texts["README.md"])
    for name in ("LICENSE", "CITATION.cff"):
        if (PROJECT_ROOT / name).is_file():
            shutil.copy2(PROJECT_ROOT / name, src / name)
    for name, text in texts.items():
        (src / name).write_text(site_links(text, name, profile, pages, copied), encoding="utf-8")
    if root.parent == src:
        shutil.rmtree(root, ignore_errors=True)
    return {"profile": profile, "run_id": run["run_id"], "notebooks": [p.name for p in notebooks],
            "modules": package_modules(), "pages": sorted(pages)}


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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env)  # autodoc imports the package
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

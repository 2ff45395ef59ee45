"""The companion website: how pages are assembled, and a headless browser over a built site.

The browser test needs a built site: ``$OSGHA_BOOK_DIR`` names its HTML
folder (``make test`` builds one from nbval's run of the notebooks and sets it;
``make book`` builds ``build/book/_build/html``). Without it that test is
skipped and says how to run it. Chromium is Debian's ``chromium`` package
(``make browser`` installs it), driven by Playwright.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

from osgha_lite.paths import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("build_site", PROJECT_ROOT / "book" / "build_site.py")
build_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_site)


def _executed(folder: Path, name: str, profile="lite", smoke=True, cells=(), seed=0, run_id="20260101T000000Z-0a1b2c3d"):
    nb = {"cells": list(cells), "metadata": {"papermill": {"parameters": {"PROFILE": profile, "SEED": seed,
                                                                         "SMOKE": smoke}}},
          "nbformat": 4, "nbformat_minor": 5}
    if run_id is not None:
        nb["metadata"]["osgha"] = {"executed_by": "osgha_lite.runner", "run_id": run_id}
    (folder / name).write_text(json.dumps(nb))
    return folder / name


def test_profile_comes_from_the_papermill_parameters_and_runs_are_not_mixed(tmp_path):
    first = _executed(tmp_path, "00_a.ipynb")
    assert build_site.run_profile([first]) == "lite-smoke"
    second = _executed(tmp_path, "01_b.ipynb", smoke=False)
    with pytest.raises(build_site.BookError, match="different runs"):
        build_site.run_profile([first, second])
    failed = _executed(tmp_path, "03_d.ipynb")
    record = json.loads(failed.read_text())
    record["metadata"]["papermill"]["exception"] = True
    failed.write_text(json.dumps(record))
    with pytest.raises(build_site.BookError, match="03_d.ipynb: its run failed"):
        build_site.run_profile([first, failed])
    (tmp_path / "02_c.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    with pytest.raises(build_site.BookError, match="02_c.ipynb: no Papermill parameters.*python -m osgha_lite run"):
        build_site.run_profile([tmp_path / "02_c.ipynb"])
    with pytest.raises(build_site.BookError, match="no executed notebooks; run `make reproduce` or `make smoke`"):
        build_site.assemble(tmp_path / "empty", tmp_path / "src", tmp_path, tmp_path)


def test_notebooks_of_another_seed_or_run_or_without_a_run_id_are_refused(tmp_path):
    first = _executed(tmp_path, "00_a.ipynb", smoke=False)
    other_seed = _executed(tmp_path, "01_b.ipynb", smoke=False, seed=1)
    with pytest.raises(build_site.BookError) as raised:
        build_site.run_profile([first, other_seed])
    assert str(raised.value) == (
        "executed notebooks come from different runs (00_a.ipynb: profile lite, seed 0, smoke False, run_id "
        "20260101T000000Z-0a1b2c3d; 01_b.ipynb: profile lite, seed 1, smoke False, run_id 20260101T000000Z-0a1b2c3d); "
        "rerun every notebook in one run of `python -m osgha_lite run` for one profile (a run of some notebooks "
        "only, such as --only or `make figures`, is a run of its own)")
    other_run = _executed(tmp_path, "02_c.ipynb", smoke=False, run_id="20260102T000000Z-ffffffff")
    with pytest.raises(build_site.BookError, match=r"different runs .*02_c\.ipynb: .*run_id 20260102T000000Z-ffffffff"):
        build_site.run_profile([first, other_run])
    unmarked = _executed(tmp_path, "03_d.ipynb", smoke=False, run_id=None)
    with pytest.raises(build_site.BookError) as raised:
        build_site.run_profile([first, unmarked])
    assert str(raised.value) == (
        f"{unmarked}: no run id in its metadata (metadata.osgha.run_id), so it cannot be told apart from another "
        "run's copy; rerun every notebook with `python -m osgha_lite run` (or `make reproduce` / `make smoke`)")
    assert build_site.run_of([first]) == {"profile": "lite", "seed": 0, "smoke": False,
                                          "run_id": "20260101T000000Z-0a1b2c3d"}


def test_an_error_output_is_refused_although_papermill_recorded_no_exception(tmp_path):
    error = {"output_type": "error", "ename": "ValueError", "evalue": "broken input", "traceback": []}
    cells = [{"cell_type": "markdown", "source": "# A", "metadata": {}},
             {"cell_type": "code", "source": "x = 1", "execution_count": 1, "outputs": [], "metadata": {}},
             {"cell_type": "code", "source": "raise ValueError('broken input')", "execution_count": 2,
              "outputs": [error], "metadata": {"tags": ["raises-exception"]}}]
    failed = _executed(tmp_path, "04_e.ipynb", cells=cells)
    record = json.loads(failed.read_text())
    record["metadata"]["papermill"]["exception"] = False
    failed.write_text(json.dumps(record))
    with pytest.raises(build_site.BookError) as raised:
        build_site.run_profile([failed])
    assert str(raised.value) == (
        f"{failed}: code cell 2 (execution count 2) has an error output (ValueError: broken input); a run with an "
        "error output is not shown. Fix the notebook and rerun `python -m osgha_lite run`")


def test_widget_progress_bars_become_their_final_line_and_closed_bars_vanish():
    def bar(model_id):
        return {"output_type": "display_data", "metadata": {},
                "data": {build_site.WIDGET_MIME: {"model_id": model_id}, "text/plain": "images:   0%| | 0/5"}}

    state = {  # as nbclient saves it: tqdm's HBox of HTML (description), FloatProgress, HTML (counts)
        "kept": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_d", "IPY_MODEL_p", "IPY_MODEL_n"]}},
        "d": {"model_name": "HTMLModel", "state": {"value": "images: 100%"}},
        "p": {"model_name": "FloatProgressModel", "state": {"value": 5, "max": 5}},
        "n": {"model_name": "HTMLModel", "state": {"value": "&nbsp;5/5 [00:01&lt;00:00, 4.2item/s]"}},
    }
    state["hidden"] = {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_d"], "layout": "IPY_MODEL_l"}}
    state["l"] = {"model_name": "LayoutModel", "state": {"visibility": "hidden"}}
    text = {"output_type": "stream", "name": "stdout", "text": "rsum 264.98\n"}
    cell = build_site.plain_outputs({"cell_type": "code", "source": "",
                                     "outputs": [bar("kept"), bar("closed"), bar("hidden"), text]}, state)
    assert cell["outputs"] == [{"output_type": "display_data", "metadata": {},
                                "data": {"text/plain": "images: 100% |##########| 5/5 [00:01<00:00, 4.2item/s]"}},
                               text]


def test_markdown_links_modules_and_notebooks():
    text = "See `osgha_lite.metrics.entropy.spectral_bits` and `osgha_lite.nope`, as in notebook 05 and notebook 09."
    assert build_site.link_markdown(text, {"metrics"}, {"05": "05_figures.ipynb"}) == (
        "See {py:obj}`osgha_lite.metrics.entropy.spectral_bits` and `osgha_lite.nope`, as in "
        "[notebook 05](05_figures.ipynb) and notebook 09.")


def test_saved_figures_and_tables_follow_the_cell_that_saves_them(tmp_path):
    png, table = tmp_path / "05_gains.png", tmp_path / "05_main.md"
    png.write_bytes(b"png")
    table.write_text("| a |\n|---|\n| 1 |\n")
    cells = [{"cell_type": "code", "source": 'save_figure(fig, NAME, "05_gains")', "outputs": []},
             {"cell_type": "code", "source": "x = 1", "outputs": []}]
    files = {"figures/lite/05_gains.png": png, "results/lite/tables/05_main.md": table}
    captions = {"figures/lite/05_gains.png": "The gain per retrieval direction: look at the text-to-image bars."}
    out = build_site.with_artifacts(cells, sorted(files), "lite", files, captions)
    assert [c["cell_type"] for c in out] == ["code", "markdown", "code", "markdown", "markdown"]
    assert out[1]["source"].startswith("```{figure} ../figures/lite/05_gains.png")
    assert captions["figures/lite/05_gains.png"] in out[1]["source"]  # the manifest's caption, not the path
    assert out[3]["source"] == "## Figures and tables saved by this notebook"
    assert "| a |" in out[4]["source"] and "(../results/lite/tables/05_main.md)" in out[4]["source"]


# --- The browser test over a built site ------------------------------------------------------------

BOOK_DIR = os.environ.get("OSGHA_BOOK_DIR")
RENDERED_MATH = "mjx-container"
VIEWPORT_WIDTH = 1280  # the pages must read well at this width
LANDING = "README.html"
MAX_PROGRESS_RUN = 5
# A progress bar or cache log line is what book/build_site.py summarises: its PROGRESS pattern, run in the page
PAGE_CHECKS_JS = """([progressSource, maxRun, landing]) => {
  const progress = new RegExp(progressSource);
  const found = [];
  let longest = 0;
  for (const cell of document.querySelectorAll('.cell_output')) {
    let run = 0;
    for (const out of cell.children) {
      const lines = out.innerText.split('\\n').filter(l => l.trim());
      run = (lines.length && lines.every(l => progress.test(l))) ? run + 1 : 0;
      longest = Math.max(longest, run);
    }
  }
  if (longest > maxRun) found.push(`${longest} consecutive output blocks of progress text`);
  for (const cap of document.querySelectorAll('figcaption')) {
    const words = cap.innerText.replace(/^\\s*Fig\\.\\s*\\d+\\s*/, '').trim();
    if (/^(Figure\\s+)?`?[\\w.\\/-]+\\.(png|pdf|svg|jpe?g)`?\\.?$/i.test(words) || !words)
      found.push(`figure caption is only a path: ${JSON.stringify(cap.innerText.trim())}`);
  }
  if (landing) {
    const th = [...document.querySelectorAll('table th')].find(h => h.innerText.trim() === 'rSum');
    if (!th) found.push('headline table: no rSum column');
    else {
      let right = window.innerWidth;
      for (let el = th.parentElement; el; el = el.parentElement) {
        const overflow = getComputedStyle(el).overflowX;
        if (overflow !== 'visible') right = Math.min(right, el.getBoundingClientRect().right);
      }
      const edge = th.getBoundingClientRect().right;
      if (edge > right + 1) found.push(`headline table: the rSum column is cut off at ${window.innerWidth} px (its right edge ${Math.round(edge)} > ${Math.round(right)})`);
    }
  }
  return found;
}"""
MATH = ".math.notranslate"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium not found: install Debian's chromium package (`make browser`, run by `make test`)")
    return path


def check_site(html: Path, screenshot: Path | None = None, math_timeout_ms: int = 30_000,
               landing: str = LANDING) -> tuple[list[str], list[str]]:
    """Open every page of the site in ``html`` with headless Chromium over a local HTTP server.

    Returns ``(problems, pages)``. A problem is a request to another host (the
    site must work offline), a console or script error, a response of 400 or
    more or a failed load, a math element MathJax did not render (or rendered
    as an error), an image not loaded (natural width 0), a link to a page that
    does not exist or to an anchor that page lacks; and what makes a page read
    badly at :data:`VIEWPORT_WIDTH`: more than :data:`MAX_PROGRESS_RUN`
    consecutive output blocks of progress text, a figure caption that is only a
    file path, and on the landing page a headline table whose rSum column is
    cut off. ``screenshot``: where to save a full-page picture of the landing
    page."""
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html") if "_static" not in p.parts)
    ids: dict[str, set[str]] = {}
    problems: list[str] = []
    links: list[tuple[str, str]] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": VIEWPORT_WIDTH, "height": 900})

            def outside(route):  # the site must not need the network: any other host is a failure
                problems.append(f"request to another host: {route.request.url}")
                route.abort()

            context.route(lambda url: not url.startswith(base), outside)
            page = context.new_page()
            current = {"page": ""}
            page.on("console", lambda m: m.type == "error" and problems.append(
                f"{current['page']}: console error: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"{current['page']}: script error: {e}"))
            page.on("response", lambda r: r.status >= 400 and problems.append(
                f"{current['page']}: {r.status} for {r.url}"))
            page.on("requestfailed", lambda r: r.url.startswith(base) and problems.append(
                f"{current['page']}: failed to load {r.url}"))
            for name in pages:
                current["page"] = name
                page.goto(base + name, wait_until="networkidle")
                if page.locator(MATH).count():
                    try:
                        page.wait_for_function(f"() => [...document.querySelectorAll('{MATH}')].every("
                                               f"e => e.querySelector('{RENDERED_MATH}'))", timeout=math_timeout_ms)
                    except Exception:
                        raw = page.eval_on_selector_all(
                            MATH, f"els => els.filter(e => !e.querySelector('{RENDERED_MATH}')).map(e => e.innerText)")
                        problems.append(f"{name}: unrendered math: {raw[:3]}")
                    errors = page.locator("mjx-merror").count()
                    if errors:
                        problems.append(f"{name}: {errors} MathJax errors")
                problems += [f"{name}: {p}" for p in page.evaluate(
                    PAGE_CHECKS_JS, [build_site.PROGRESS.pattern, MAX_PROGRESS_RUN, name == landing])]
                broken = page.eval_on_selector_all(
                    "img", "els => els.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
                problems += [f"{name}: broken image {src}" for src in broken]
                ids[name] = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
                links += [(name, h) for h in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")]
                if name == landing and screenshot:
                    page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
    finally:
        server.shutdown()

    for name, href in links:
        if not href.startswith(base):
            continue  # a link out of the site (the theme's credits) is not loaded
        target, fragment = urldefrag(href)
        path = unquote(urlparse(target).path).lstrip("/") or "index.html"
        if path.endswith("/"):
            path += "index.html"
        if not (html / path).is_file():
            problems.append(f"{name}: broken link {href[len(base):]}")
        elif fragment and path in ids and fragment not in ids[path]:
            problems.append(f"{name}: link {href[len(base):]} names no anchor #{fragment} in {path}")
    return sorted(set(problems)), pages


def test_the_browser_check_catches_each_kind_of_fault(tmp_path):
    """A small site with one fault of each kind: every one is reported."""
    progress = "".join(f'<div class="output stream"><pre>images: 100%|##########| {i}/6 [00:01<00:00]</pre></div>'
                       for i in range(6))
    wide = "".join(f"<th>column {i}</th>" for i in range(12))
    (tmp_path / "intro.html").write_text(
        '<html><body><a href="missing.html">x</a> <a href="other.html#nowhere">y</a> <img src="none.png">'
        '<span class="math notranslate">\\(x^2\\)</span><script>console.error("boom")</script>'
        '<img src="https://cdn.example.org/a.png">'
        f'<div class="cell_output">{progress}</div>'
        '<figure><img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"><figcaption>Fig. 14 Figure '
        '<code>figures/lite/06_llm_ladder.png</code>.</figcaption></figure>'
        f'<div style="width: 600px; overflow-x: auto"><table><tr>{wide}<th>rSum</th></tr></table></div>'
        '</body></html>')
    (tmp_path / "other.html").write_text('<html><body><p id="here">ok</p></body></html>')
    problems, pages = check_site(tmp_path, tmp_path / "landing.png", math_timeout_ms=1000, landing="intro.html")
    text = "\n".join(problems)
    assert pages == ["intro.html", "other.html"]
    for expected in ("intro.html: broken link missing.html", "intro.html: link other.html#nowhere names no anchor",
                     "intro.html: broken image", "intro.html: console error: boom",
                     "intro.html: unrendered math: ['\\\\(x^2\\\\)']",
                     "request to another host: https://cdn.example.org/a.png", "intro.html: 404 for",
                     "intro.html: 6 consecutive output blocks of progress text",
                     'intro.html: figure caption is only a path: "Fig. 14 Figure figures/lite/06_llm_ladder.png."',
                     "intro.html: headline table: the rSum column is cut off at 1280 px"):
        assert expected in text, (expected, problems)
    assert (tmp_path / "landing.png").stat().st_size > 1000


def test_a_page_that_reads_well_passes_the_reading_checks(tmp_path):
    """Five progress blocks, a caption that is a sentence and a table that fits: no problem."""
    progress = "".join(f'<div class="output stream"><pre>texts: 100%|##########| {i}/5 [00:01<00:00]</pre></div>'
                       for i in range(5))
    (tmp_path / "README.html").write_text(
        f'<html><body><div class="cell_output">{progress}<div class="output"><pre>rsum 264.98</pre></div></div>'
        '<figure><img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"><figcaption>Fig. 1 The gain per '
        'retrieval direction: look at the text-to-image bars.</figcaption></figure>'
        '<table><tr><th>method</th><th>rSum</th></tr></table></body></html>')
    problems, _ = check_site(tmp_path, math_timeout_ms=1000)
    assert problems == []


def missing_module_pages(html: Path, modules: list[str]) -> list[str]:
    """The modules of the package without an API page in the built site ``html``."""
    return [name for name in modules if not (html / "api" / "generated" / f"{name}.html").is_file()]


def test_a_module_without_a_page_is_reported(tmp_path):
    (tmp_path / "api" / "generated").mkdir(parents=True)
    (tmp_path / "api" / "generated" / "osgha_lite.losses.html").write_text("<html></html>")
    assert missing_module_pages(tmp_path, ["osgha_lite.losses", "osgha_lite.new_module"]) == ["osgha_lite.new_module"]


def test_every_page_of_the_built_site_loads_offline_with_working_links_images_and_math():
    if not BOOK_DIR:
        pytest.skip("no built site: set OSGHA_BOOK_DIR to its HTML folder (`make test` builds one from the "
                    "nbval run of the notebooks; `make book` builds build/book/_build/html)")
    html = Path(BOOK_DIR).resolve()
    assert (html / "index.html").is_file(), f"{html}/index.html missing; build the site with `make book`"
    assert missing_module_pages(html, build_site.package_modules()) == []
    screenshot = html.parent.parent / "landing.png"
    problems, pages = check_site(html, screenshot)
    assert not problems, "\n".join(problems)
    assert {LANDING, "docs/claims.html", "docs/method.html", "api/index.html"} <= set(pages)
    assert sum(p.startswith("notebooks/") and p[10:12].isdigit() for p in pages) >= 2
    assert screenshot.stat().st_size > 10_000
    for page, name in ((LANDING, "landing"), ("docs/claims.html", "claims"), ("docs/method.html", "method")):
        _screenshot(html, page, html.parent.parent / f"{name}-1280.png")


def _screenshot(html: Path, page: str, out: Path) -> None:
    """A picture of the first screen of ``page`` at the test's width, kept beside the site."""
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": VIEWPORT_WIDTH, "height": 900})
            tab.goto(f"http://127.0.0.1:{server.server_address[1]}/{page}", wait_until="networkidle")
            tab.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        server.shutdown()


def test_nbval_run_of_the_notebooks_is_kept_for_the_website(tmp_path):
    """notebooks/conftest.py writes what nbval executed; the website takes it and refuses a failed run."""
    import subprocess
    import sys

    import nbformat

    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(PROJECT_ROOT / "notebooks" / "conftest.py", folder / "conftest.py")
    cells = [nbformat.v4.new_code_cell("PROFILE = 'lite'\nSEED = 0\nSMOKE = False", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("print('hello', 6 * 7)")]
    kernelspec = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=kernelspec), folder / "00_ok.ipynb")
    bad = cells[:1] + [nbformat.v4.new_code_cell("raise ValueError('broken')"), nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nbformat.v4.new_notebook(cells=bad, metadata=kernelspec), folder / "01_bad.ipynb")
    flood = cells[:1] + [nbformat.v4.new_code_cell("for i in range(20000):\n    print(i, flush=True)\nprint('done')")]
    nbformat.write(nbformat.v4.new_notebook(cells=flood, metadata=kernelspec), folder / "02_flood.ipynb")
    executed = tmp_path / "executed"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", str(folder)],
                          env={**os.environ, "OSGHA_EXECUTED_DIR": str(executed)}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-2000:]  # the broken notebook fails its cell
    ok = nbformat.read(executed / "00_ok.ipynb", as_version=4)
    assert ok.cells[1].outputs[0]["text"] == "hello 42\n" and ok.cells[1].execution_count == 2
    run_id = ok.metadata["osgha"]["run_id"]
    assert run_id.startswith("nbval-") and len(run_id) == len("nbval-20260101T000000Z-0a1b2c3d")
    assert ok.metadata["osgha"] == {"executed_by": "nbval", "run_id": run_id, "failed": False, "cells_run": 2,
                                    "parameters": {"PROFILE": "lite", "SEED": 0, "SMOKE": False}, "code_cells": 2}
    flooded = executed / "02_flood.ipynb"
    assert nbformat.read(flooded, as_version=4).metadata["osgha"]["run_id"] == run_id  # one id for the whole session
    assert build_site.run_of([executed / "00_ok.ipynb", flooded]) == {"profile": "lite", "seed": 0, "smoke": False,
                                                                       "run_id": run_id}
    # 20,000 outputs while nbval waits for the cell: without reading them meanwhile, ZeroMQ drops the overflow
    # and nbval fails the cell ("Timeout of 5 seconds exceeded waiting for output")
    assert "02_flood" not in done.stdout.split("short test summary")[-1]
    text = "".join(output["text"] for output in nbformat.read(executed / "02_flood.ipynb", as_version=4).cells[1].outputs)
    assert text.splitlines() == [str(i) for i in range(20000)] + ["done"]
    with pytest.raises(build_site.BookError, match=r"01_bad.ipynb: nbval's run of it failed or stopped early"):
        build_site.run_profile([executed / "00_ok.ipynb", executed / "01_bad.ipynb"])


def test_tables_get_readable_headers_with_each_interval_in_one_column():
    table = ("| method | i2t_R@1 | rsum | rsum_low | rsum_high |\n|:--|--:|--:|--:|--:|\n"
             "| frozen-backbone | 22.8 | 247.7 | 234.8 | 260.1 |\n")
    assert build_site.readable_table(table) == (
        "| method | i→t R@1 | rSum | 95% interval |\n| :-- | --: | --: | :---: |\n"
        "| frozen-backbone | 22.8 | 247.7 | [234.8, 260.1] |\n")
    paired = "| minus | rsum_difference | low | high |\n|:--|--:|--:|--:|\n| frozen | 17.2 | 13.0 | 21.6 |\n"
    assert "| frozen | 17.2 | [13.0, 21.6] |" in build_site.readable_table(paired)
    assert build_site.readable_table("not a table") == "not a table"


def test_a_run_of_progress_lines_becomes_one_summary_line():
    def stream(text):
        return {"output_type": "stream", "name": "stdout", "text": text}

    lines = [stream(f"flickr8k-train-image-81 (local): items {i}-{i + 1023} of 6000\n") for i in range(0, 6000, 1024)]
    cell = {"cell_type": "code", "outputs": lines + [stream("rsum 264.98\n"), lines[0]]}
    out = build_site.summarised_progress(cell)["outputs"]
    assert [o["text"] for o in out] == [
        "flickr8k-train-image-81 (local): items 5120-6143 of 6000  [6 progress and cache lines summarised]\n",
        "rsum 264.98\n", lines[0]["text"]]


def test_repository_links_are_rewritten_for_the_site():
    pages = {"README.md", "docs/method.md", "notebooks/03_training.ipynb", "results/lite/tables/05_ablations.md"}
    files = {"figures/lite/05_direction_gains.png", "results/lite/tables/05_ablations.csv"}
    text = ("[method](docs/method.md#our-two-additions) [nb](notebooks/03_training.ipynb) "
            "![gains](figures/lite/05_direction_gains.png) [csv](results/lite/tables/05_ablations.csv) "
            "[adapter](osgha_lite/methods/hypergraph/adapter.py) [the Makefile](Makefile) [web](https://arxiv.org)")
    assert build_site.site_links(text, "README.md", "lite", pages, files) == (
        "[method](docs/method.md#our-two-additions) [nb](notebooks/03_training.ipynb) "
        "![gains](figures/lite/05_direction_gains.png) {download}`csv <results/lite/tables/05_ablations.csv>` "
        "{py:mod}`adapter <osgha_lite.methods.hypergraph.adapter>` the Makefile (`Makefile`) [web](https://arxiv.org)")
    smoke = build_site.site_links("[t](../results/lite/tables/05_ablations.md)", "docs/results.md", "lite-smoke",
                                  {"results/lite-smoke/tables/05_ablations.md"}, set())
    assert smoke == "[t](../results/lite-smoke/tables/05_ablations.md)"

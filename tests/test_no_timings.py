"""No committed result, table or figure file holds a wall-clock time; the times go to the timing log.

A time differs on every run, so a committed file that holds one is rewritten by
every rerun and ``git status`` is never clean after ``make reproduce``. The scan
below reads every file of ``results/`` and ``figures/`` that git would commit
(JSON, CSV, Markdown, LaTeX) and names each time it finds:

* JSON: a field named like a time (``seconds``, ``*_seconds``, ``elapsed``,
  ``duration``, ``time``/``*_time``, ``*_ms``, ``timestamp`` ...: see
  :data:`TIME_WORDS`) whose value is a number, or a list or object of
  numbers; a field that only describes (a sentence, a flag, ``null``:
  ``"test_time": "image and text experts only"``) is not a time. Any string
  that looks like a date and clock time (``2024-05-01T12:30:00``) is one,
  whatever its field;
* CSV, Markdown, LaTeX tables: a column named like a time, and any
  date-and-clock-time text.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from osgha_lite.train import timings
from osgha_lite.data import PROJECT_ROOT

#: Words that make a field or column name a time, when one of the name's words (split at ``_``, ``-``,
#: spaces and other punctuation) is one of them: ``train_seconds``, ``elapsed``, ``text_query_ms``,
#: ``index_s_per_1000_images``, ``tokens_per_second``, ``started_at`` ...
TIME_WORDS = frozenset({"second", "seconds", "sec", "secs", "s", "ms", "minute", "minutes", "hour", "hours",
                        "elapsed", "duration", "durations", "time", "times", "timing", "timings", "timestamp",
                        "timestamps", "runtime", "walltime", "wallclock", "datetime", "date", "started", "created",
                        "at"})
#: A date with a clock time (ISO 8601 and the usual log formats).
TIMESTAMP = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(:\d{2})?")
SUFFIXES = (".json", ".csv", ".md", ".tex")
FOLDERS = ("results", "figures")


def is_time_name(name: str) -> bool:
    """Whether a field or column name names a time (one of its words is in :data:`TIME_WORDS`)."""
    return any(word in TIME_WORDS for word in re.split(r"[^a-z0-9]+", str(name).lower()))


def _measured(value) -> bool:
    """A value that is a measured time: a number, or a non-empty list or object of numbers only."""
    if isinstance(value, (list, dict)):
        items = list(value.values() if isinstance(value, dict) else value)
        return bool(items) and all(_measured(item) for item in items)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_times(data, where: str = "") -> list[str]:
    """The times in parsed JSON, as ``field path = value``."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}/{key}"
            if is_time_name(key) and _measured(value):
                found.append(f"{path} = {json.dumps(value)[:60]}")
            else:
                found += json_times(value, path)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += json_times(value, f"{where}[{index}]")
    elif isinstance(data, str) and TIMESTAMP.search(data):
        found.append(f"{where or '/'} = {data[:60]!r} (a date and time)")
    return found


def _table_header(path: Path, text: str) -> list[str]:
    """The column names of a saved table (``osgha_lite.pipeline.figures.save_table``'s CSV, Markdown or LaTeX)."""
    lines = text.splitlines()
    if path.suffix == ".csv":
        import csv

        return next(csv.reader(lines), [])
    if path.suffix == ".md":
        for line, below in zip(lines, lines[1:]):
            if line.lstrip().startswith("|") and re.match(r"^\s*\|[\s:|-]+\|\s*$", below):
                return [cell.strip() for cell in line.strip().strip("|").split("|")]
        return []
    for line, below in zip(lines, lines[1:]):  # LaTeX: the row after \toprule
        if line.strip() == r"\toprule":
            return [cell.strip().replace("\\_", "_") for cell in below.replace("\\\\", "").split("&")]
    return []


def file_times(path: Path) -> list[str]:
    """The times in one file, each as ``field or column: detail``."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            return [f"field {item}" for item in json_times(json.loads(text))]
        except json.JSONDecodeError:
            return []  # not this test's concern; the manifest check and the readers fail on it
    found = [f"column {name!r}" for name in _table_header(path, text) if is_time_name(name)]
    found += [f"line {number}: {match.group(0)!r} (a date and time)" for number, line in
              enumerate(text.splitlines(), start=1) for match in [TIMESTAMP.search(line)] if match]
    return found


def committed_files(root: Path) -> list[Path]:
    """The JSON, CSV, Markdown and LaTeX files under ``root/results`` and ``root/figures`` that git would
    commit (tracked, or new and not ignored); every such file on disk when ``root`` is not a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *FOLDERS],
                                cwd=root, capture_output=True, check=True).stdout.decode("utf-8").split("\0")
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True,
                             check=True).stdout.decode("utf-8").strip()
        if Path(top).resolve() != Path(root).resolve():
            raise subprocess.CalledProcessError(1, "git")  # root is a folder inside some other checkout
        paths = [root / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for folder in FOLDERS for p in (root / folder).rglob("*")]
    return sorted(p for p in paths if p.is_file() and p.suffix in SUFFIXES)


def times_in_tree(root: Path) -> list[str]:
    """Every time in the committed files under ``root``, as ``relative/path: field or column ...``."""
    return [f"{path.relative_to(root).as_posix()}: {item}"
            for path in committed_files(root) for item in file_times(path)]


def test_no_committed_result_table_or_figure_holds_a_time():
    files = committed_files(PROJECT_ROOT)
    assert len(files) > 50, "expected the committed results/ and figures/ files"
    found = times_in_tree(PROJECT_ROOT)
    assert not found, ("wall-clock times in committed files (a rerun rewrites them; log them with "
                       "osgha_lite.train.timings.record instead):\n" + "\n".join(found))


def test_a_planted_time_is_found_and_named(tmp_path):
    results, figures = tmp_path / "results" / "lite", tmp_path / "figures" / "lite"
    (results / "tables").mkdir(parents=True)
    figures.mkdir(parents=True)
    clean = {"method": "m", "metrics": {"all": {"rsum": 250.0}}, "config": {"test_time": "image experts only"},
             "training": {"best_epoch": 2, "finished": True, "epochs": [{"epoch": 0, "train_loss": None}]}}
    (results / "clean.test.json").write_text(json.dumps(clean))
    (results / "tables" / "clean.csv").write_text("method,rsum,best_epoch\nm,250.0,2\n")
    assert times_in_tree(tmp_path) == []  # a describing "test_time" and plain metrics are no times

    (results / "m.test.json").write_text(json.dumps({**clean, "prepare_seconds": 1.2,
                                                     "training": {**clean["training"], "seconds": 10.7}}))
    (results / "evaluation").mkdir()
    (results / "evaluation" / "e.test.json").write_text(json.dumps({"runs": [{"elapsed": 3}, {"written": "x"}],
                                                                    "note": "made 2024-05-01T12:30:00Z"}))
    (results / "tables" / "05_training_times.csv").write_text("method,epochs,train_seconds\nm,3,12.5\n")
    (results / "tables" / "05_training_times.md").write_text(
        "| method   |   epochs |   train_seconds |\n|:---------|---------:|----------------:|\n| m | 3 | 12.5 |\n")
    (results / "tables" / "07_search_speed.tex").write_text(
        "\\begin{tabular}{lr}\n\\toprule\nspace & text\\_query\\_ms \\\\\n\\midrule\nfrozen & 4.4 \\\\\n"
        "\\bottomrule\n\\end{tabular}\n")
    (figures / "manifest.json").write_text(json.dumps({"artifacts": {
        "x": {"duration": 5.0, "sha256": "ab"},
        "figures/lite/05_training_times.png": {"kind": "figure", "sha256": "cd"},  # a name, not a time
        "timings": {"train": 1.0, "total": 2.0}}}))
    found = times_in_tree(tmp_path)
    assert found == [
        "figures/lite/manifest.json: field /artifacts/x/duration = 5.0",
        "figures/lite/manifest.json: field /artifacts/timings = {\"train\": 1.0, \"total\": 2.0}",
        "results/lite/evaluation/e.test.json: field /runs[0]/elapsed = 3",
        "results/lite/evaluation/e.test.json: field /note = 'made 2024-05-01T12:30:00Z' (a date and time)",
        "results/lite/m.test.json: field /training/seconds = 10.7",
        "results/lite/m.test.json: field /prepare_seconds = 1.2",
        "results/lite/tables/05_training_times.csv: column 'train_seconds'",
        "results/lite/tables/05_training_times.md: column 'train_seconds'",
        "results/lite/tables/07_search_speed.tex: column 'text_query_ms'",
    ]
    with pytest.raises(AssertionError, match="m.test.json: field /training/seconds"):
        assert not found, "\n".join(found)


@pytest.mark.parametrize("name, is_time", [
    ("seconds", True), ("train_seconds", True), ("prepare_seconds", True), ("elapsed", True), ("duration", True),
    ("time", True), ("epoch_time", True), ("text_query_ms", True), ("index_s_per_1000_images", True),
    ("tokens_per_second", True), ("started_at", True), ("timestamp", True),
    ("rsum", False), ("best_epoch", False), ("i2t_R@1", False), ("relative_%", False),
    ("captions_per_image_min", False), ("lexical_rarefied_bits[captions+descriptions]", False), ("sha256", False),
    ("finished", False), ("test_time", True),
])
def test_time_names(name, is_time):
    assert is_time_name(name) is is_time


def test_the_timing_log_records_and_loads_under_its_root(tmp_path, monkeypatch):
    monkeypatch.setenv(timings.TIMINGS_ENV, str(tmp_path / "log"))
    assert timings.timings_root() == (tmp_path / "log").resolve()
    assert timings.load("lite") == {}  # no log yet: nothing, not an error
    path = timings.record("lite", "os-hgadapter.test", train_seconds=12.5, total_seconds=20)
    assert path == (tmp_path / "log" / "lite" / "os-hgadapter.test.json").resolve()
    timings.record("lite", "ladder/none.test", train_seconds=3.0)
    timings.record("lite", "os-hgadapter.test", train_seconds=13.0)  # a rerun replaces the entry
    (tmp_path / "log" / "lite" / ".x.json.tmp").write_text("{")  # a write in progress is not read
    assert timings.load("lite") == {"ladder/none.test": {"train_seconds": 3.0},
                                    "os-hgadapter.test": {"train_seconds": 13.0}}
    assert timings.load("other") == {}


def test_the_timing_log_refuses_a_bad_name_or_value(tmp_path, monkeypatch):
    monkeypatch.setenv(timings.TIMINGS_ENV, str(tmp_path))
    for name in ("", "/abs", "../up", "a/../b"):
        with pytest.raises(ValueError, match="relative path"):
            timings.record("lite", name, seconds=1.0)
    for value in (math.nan, "1.0", True):
        with pytest.raises(ValueError, match="not a finite number of seconds"):
            timings.record("lite", "m.test", seconds=value)


def test_the_default_log_is_under_build(monkeypatch):
    monkeypatch.delenv(timings.TIMINGS_ENV, raising=False)
    assert timings.timings_root() == PROJECT_ROOT / "build" / "timings"


def test_a_result_file_is_named_by_its_path_under_the_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("OSGHA_RESULTS_DIR", str(tmp_path / "results"))
    root = tmp_path / "results" / "lite"
    assert timings.result_name("lite", root / "hgan.test.json") == "hgan.test"
    assert timings.result_name("lite", root / "sweep-alpha=0.25.test.json") == "sweep-alpha=0.25.test"
    assert (timings.result_name("lite", root / "external" / "flickr8k-heldout" / "hgan.test.json")
            == "external/flickr8k-heldout/hgan.test")
    assert timings.result_name("lite", tmp_path / "elsewhere" / "hgan.test.json") == "elsewhere/hgan.test"

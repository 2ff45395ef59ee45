"""Wall-clock timings: a run log kept out of the committed results.

Times differ from run to run and from machine to machine, so no committed
result file, table or figure holds one (``tests/test_no_timings.py`` checks
every file under ``results/`` and ``figures/``): rerunning the notebooks
leaves ``git status`` clean when the numbers are unchanged. What a run
measures goes to this log instead:

* :func:`record` writes ``<root>/<profile>/<name>.json`` (atomically, key
  sorted), a flat object of seconds, e.g. ``{"prepare_seconds": 1.2,
  "train_seconds": 40.3, "total_seconds": 45.0}``. ``name`` may hold
  folders; a method's entry is named like its result file, without
  ``.json`` (``os-hgadapter.test``, ``ladder/none.test``,
  ``external/flickr8k-heldout/hgan.test``; :func:`result_name`). A rerun
  replaces the entry.
* :func:`load` reads every entry of a profile back (``{}`` when the log is
  missing, e.g. when the results were read from the committed files without
  training on this machine).

The root is ``$OSGHA_TIMINGS_DIR`` or ``<repository>/build/timings``
(``build/`` is not committed); ``make test`` points it under
``build/regenerated/`` with the results and figures, so its run leaves the
default log alone.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath

from osgha_lite.atomic import atomic_write_json
from osgha_lite.paths import TIMINGS_ENV, results_root, timings_root  # noqa: F401 - also reachable from here


def timing_path(profile: str, name: str) -> Path:
    """The log file of one entry: ``<root>/<profile>/<name>.json``."""
    parts = PurePosixPath(name).parts
    if not name or PurePosixPath(name).is_absolute() or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"timing name {name!r} must be a relative path without '.' or '..' parts")
    return timings_root() / profile / f"{name}.json"


def record(profile: str, name: str, **seconds: float) -> Path:
    """Write the entry ``name`` of ``profile``: each keyword a duration in seconds; return its path."""
    values = {}
    for field, value in seconds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"timing {name}: {field}={value!r} is not a finite number of seconds")
        values[field] = float(value)
    return atomic_write_json(timing_path(profile, name), values)


def load(profile: str) -> dict[str, dict[str, float]]:
    """Every entry of ``profile``'s log, by name (sorted); ``{}`` when there is none."""
    folder = timings_root() / profile
    if not folder.is_dir():
        return {}
    entries = {}
    for path in sorted(folder.rglob("*.json")):
        if path.name.startswith("."):  # a write in progress (osgha_lite.atomic)
            continue
        try:
            entries[path.relative_to(folder).with_suffix("").as_posix()] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a damaged log entry is skipped: it only ever shows a time
    return entries


def result_name(profile: str, path: str | os.PathLike) -> str:
    """The entry name of a result file: its path under ``results/<profile>/`` without ``.json``
    (:func:`osgha_lite.metrics.results.results_root`), or ``<folder>/<file>`` for a file written elsewhere."""

    path = Path(path).resolve()
    try:
        relative = path.relative_to((results_root() / profile).resolve())
    except ValueError:
        relative = Path(path.parent.name) / path.name
    return relative.with_suffix("").as_posix()

"""The artifact manifest: every result, figure and table, where it came from, and its checks.

``figures/<profile>/manifest.json`` maps each artifact, named by its path
relative to the repository (``results/lite/os-hgadapter.test.json``,
``figures/lite/05_gains.png``, ``results/lite/tables/05_retrieval.csv``), to

* ``kind`` (``result``, ``figure`` or ``table``), ``notebook`` (the notebook
  that writes it) and ``sources`` (the files or globs it is built from);
* ``sha256`` of the file's bytes;
* for tables, ``digits`` (the decimals shown in the Markdown/LaTeX).

:func:`osgha_lite.pipeline.figures.save_figure` and
:func:`~osgha_lite.pipeline.figures.save_table` keep figures and tables up to date as
they are saved. Result files (``results/<profile>/**/*.json``, the source of
every table) are written by several notebooks; :func:`register_results`
records them: the runner (:mod:`osgha_lite.pipeline.runner`) after a successful run,
naming the notebook that wrote each one, and ``python -m osgha_lite manifest
register-results`` for a tree written otherwise (``make test``'s nbval run).
Two checks use the manifest (``python -m osgha_lite manifest check``):

* **disk**: every artifact listed exists with the recorded SHA-256, and
  every file in ``figures/<profile>/``, ``results/<profile>/tables/`` and
  every ``results/<profile>/**/*.json`` is listed. A file edited by hand, or
  a stale or unlisted one, fails.
* **regeneration** (``--regenerated DIR``): a second tree, written by
  rerunning the notebooks with ``OSGHA_RESULTS_DIR=DIR/results`` and
  ``OSGHA_FIGURES_DIR=DIR/figures``, lists the same artifacts, and every
  number of every CSV table agrees with the committed one within half a
  unit of the last decimal the table shows (``0.5 * 10**-digits``; 0.05
  for retrieval tables shown to one decimal). Text cells must be equal.
  So a change that would be visible in a published table fails, and one
  below its printed precision (float summation order on another CPU) passes.
  Figures whose bytes differ are listed as notes, not failures: their
  numbers are checked through the tables and results they are drawn from.
  Result JSON files are compared field by field (:func:`compare_results`): keys, strings, booleans,
  integers, nulls and list lengths exactly; floats within
  ``RESULT_TOLERANCE`` = 0.005, half a unit of the finest decimal any table
  prints (metrics are percentages shown to one or two decimals), so a change
  a table could show fails. The t-SNE map's raw coordinates are compared
  through a summary of the map (:data:`SUMMARISED_FIELDS`). No artifact holds a wall-clock time (those
  go to the uncommitted timing log, :mod:`osgha_lite.train.timings`), so every
  field and column is compared: all are deterministic under the fixed seeds
  and threads.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from osgha_lite.atomic import atomic_write_json
from osgha_lite.paths import PROJECT_ROOT, figures_root, results_root

MANIFEST_NAME = "manifest.json"
RESULT_TOLERANCE = 0.005
#: Fields compared through a stable summary, not by value: ``result file suffix -> (field path, summary)``.
#: t-SNE is chaotic by nature: on a machine whose adapted vectors differed from the committed ones in their
#: last bits, all 2,998 map coordinates of ``embedding_map`` differed (2026-12-07, Intel AVX-512), while the
#: map's faithfulness to the embedding (``stats/*/tsne_trustworthiness@10``, notebook 04) is compared like
#: any other number.
SUMMARISED_FIELDS = {"evaluation/embedding_map.test.json": ("/maps", "/stats/*/tsne_trustworthiness@10")}
#: The notebook that writes each folder of result files (first path part under ``results/<profile>/``;
#: ``""`` for the files directly in it). Used by ``register-results`` for a file the runner has not seen.
RESULT_WRITERS = {"": "03_training", "entropy": "02_entropy", "evaluation": "04_evaluation",
                  "ladder": "06_fair_test", "protocol": "06_fair_test", "external": "07_own_data"}


@dataclass(frozen=True)
class Roots:
    """Where the ``figures`` and ``results`` trees of a manifest live."""

    figures: Path
    results: Path

    @classmethod
    def current(cls) -> "Roots":
        """The folders the package writes to now (``$OSGHA_FIGURES_DIR`` / ``$OSGHA_RESULTS_DIR`` aware)."""
        return cls(figures_root(), results_root())

    @classmethod
    def under(cls, folder: str | os.PathLike) -> "Roots":
        """``folder/figures`` and ``folder/results`` (the repository itself, or a regenerated tree)."""
        folder = Path(folder)
        return cls(folder / "figures", folder / "results")

    def resolve(self, key: str) -> Path:
        """File of an artifact key (``figures/...`` or ``results/...``)."""
        top, _, rest = key.partition("/")
        if top == "figures":
            return self.figures / rest
        if top == "results":
            return self.results / rest
        raise ValueError(f"manifest key {key!r} must start with figures/ or results/")

    def key(self, path: Path) -> str:
        """Artifact key of a file under one of the roots."""
        path = Path(path).resolve()
        for top, root in (("figures", self.figures), ("results", self.results)):
            try:
                return f"{top}/{path.relative_to(root.resolve()).as_posix()}"
            except ValueError:
                continue
        raise ValueError(f"{path} is under neither {self.figures} nor {self.results}")

    def manifest_path(self, profile: str) -> Path:
        return self.figures / profile / MANIFEST_NAME


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(profile: str, roots: Roots | None = None) -> dict[str, dict]:
    """The manifest's artifacts (``{}`` when there is none yet)."""
    path = (roots or Roots.current()).manifest_path(profile)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))["artifacts"]
    except (json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{path}: not a manifest ({error}); regenerate it with `make figures`") from None


def register_artifacts(profile: str, paths: Iterable[Path], *, kind: str, notebook: str,
                       sources: Iterable[str] = (), **fields) -> Path:
    """Add or update the entries of ``paths`` (just written) in the profile's manifest."""
    roots = Roots.current()
    artifacts = read_manifest(profile, roots)
    for path in paths:
        artifacts[roots.key(path)] = {"kind": kind, "notebook": notebook, "sources": sorted(sources),
                                      "sha256": sha256_file(path), **fields}
    return atomic_write_json(roots.manifest_path(profile),
                             {"profile": profile, "artifacts": dict(sorted(artifacts.items()))})


def result_files(profile: str, roots: Roots) -> list[Path]:
    """The result JSON files of a profile: ``results/<profile>/**/*.json`` outside ``tables/``."""
    folder = roots.results / profile
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.json")
                  if p.is_file() and p.relative_to(folder).parts[0] != "tables" and not p.name.startswith("."))


def result_writer(profile: str, roots: Roots, path: Path) -> str:
    """The notebook that writes a result file, by its folder (:data:`RESULT_WRITERS`)."""
    parts = Path(path).relative_to(roots.results / profile).parts
    folder = parts[0] if len(parts) > 1 else ""
    if folder not in RESULT_WRITERS:
        raise ValueError(f"{path}: no notebook is known to write results/{profile}/{folder}/; add the folder to "
                         f"osgha_lite.pipeline.manifest.RESULT_WRITERS or register it through the runner")
    return RESULT_WRITERS[folder]


def register_results(profile: str, roots: Roots | None = None, writers: dict[str, str] | None = None,
                     only_written: bool = False) -> Path:
    """Record every result file of ``profile`` under ``roots`` in its manifest.

    ``writers`` maps artifact keys to the notebook that wrote them (the runner
    knows); otherwise an existing entry's notebook is kept, else the folder
    rule :func:`result_writer` names it. With ``only_written`` (a full run)
    only the files in ``writers`` are recorded, so that a result no notebook
    wrote any more shows up as unlisted. Entries of result files no longer on
    disk are dropped."""
    roots = roots or Roots.current()
    previous = read_manifest(profile, roots)
    artifacts = {key: entry for key, entry in previous.items() if entry["kind"] != "result"}
    writers = writers or {}
    for path in result_files(profile, roots):
        key = roots.key(path)
        if only_written and key not in writers:
            continue
        notebook = writers.get(key) or previous.get(key, {}).get("notebook") or result_writer(profile, roots, path)
        artifacts[key] = {"kind": "result", "notebook": notebook, "sources": [], "sha256": sha256_file(path)}
    return atomic_write_json(roots.manifest_path(profile),
                             {"profile": profile, "artifacts": dict(sorted(artifacts.items()))})


def artifact_files(profile: str, roots: Roots) -> list[str]:
    """Keys of the files on disk that the manifest should list."""
    keys = [roots.key(p) for p in result_files(profile, roots)]
    for folder in (roots.figures / profile, roots.results / profile / "tables"):
        if folder.is_dir():
            keys += [roots.key(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME]
    return sorted(keys)


def check_disk(profile: str, roots: Roots) -> list[str]:
    """Problems between the manifest and the files on disk (empty when they agree)."""
    manifest_path = roots.manifest_path(profile)
    if not manifest_path.is_file():
        return [f"{manifest_path}: no manifest; run `make figures` (or `make reproduce`)"]
    artifacts = read_manifest(profile, roots)
    problems = []
    for key, entry in artifacts.items():
        path = roots.resolve(key)
        if not path.is_file():
            problems.append(f"{key}: listed in {manifest_path.name} but missing on disk; rerun notebook "
                            f"{entry['notebook']} or remove the entry")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{key}: its bytes differ from the manifest's sha256 (edited by hand?); "
                            f"regenerate it with notebook {entry['notebook']}")
        if entry["kind"] == "figure" and not entry.get("caption"):
            problems.append(f"{key}: no caption in {manifest_path.name}; pass caption= to save_figure in notebook "
                            f"{entry['notebook']}")
    for key in artifact_files(profile, roots):
        if key not in artifacts:
            how = ("record it with `python -m osgha_lite manifest register-results --profile "
                   f"{profile}` (the runner does after a run)" if key.endswith(".json") and "/tables/" not in key
                   else "save it through osgha_lite.pipeline.figures")
            problems.append(f"{key}: on disk but not in {manifest_path.name}; {how}, or delete it")
    return problems


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def compare_tables(key: str, committed: Path, regenerated: Path, digits: int) -> list[str]:
    """Differences between two CSV tables beyond ``0.5 * 10**-digits``, naming row and column."""
    old, new = _read_csv(committed), _read_csv(regenerated)
    if not old or not new or old[0] != new[0]:
        return [f"{key}: columns differ: committed {old[:1]}, regenerated {new[:1]}"]
    if len(old) != len(new):
        return [f"{key}: {len(old) - 1} rows committed, {len(new) - 1} regenerated"]
    header = old[0]
    tolerance = 0.5 * 10 ** -digits
    problems = []
    for line, (row_old, row_new) in enumerate(zip(old[1:], new[1:]), start=2):
        for column, a, b in zip(header, row_old, row_new):
            if a == b:
                continue
            x, y = _number(a), _number(b)
            if x is not None and y is not None:
                if (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tolerance:
                    continue
                problems.append(f"{key}, line {line}, column {column!r}: committed {a}, regenerated {b} "
                                f"(tolerance {tolerance:g})")
            else:
                problems.append(f"{key}, line {line}, column {column!r}: committed {a!r}, regenerated {b!r}")
    return problems


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_results(key: str, committed: Path, regenerated: Path) -> list[str]:
    """Differences between two result JSON files, by field path (see the module docstring)."""
    problems: list[str] = []
    summarised = {field for suffix, (field, _) in SUMMARISED_FIELDS.items() if key.endswith(suffix)}

    def walk(a, b, where: str) -> None:
        if where in summarised:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                if name not in a or name not in b:
                    side = "committed" if name in a else "regenerated"
                    problems.append(f"{key}, field {where}/{name}: only in the {side} file")
                else:
                    walk(a[name], b[name], f"{where}/{name}")
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                problems.append(f"{key}, field {where}: {len(a)} items committed, {len(b)} regenerated")
            else:
                for index, (x, y) in enumerate(zip(a, b)):
                    walk(x, y, f"{where}[{index}]")
        elif (isinstance(a, float) or isinstance(b, float)) and _is_number(a) and _is_number(b):
            if not ((math.isnan(a) and math.isnan(b)) or abs(a - b) <= RESULT_TOLERANCE):
                problems.append(f"{key}, field {where}: committed {a!r}, regenerated {b!r} "
                                f"(tolerance {RESULT_TOLERANCE:g})")
        elif type(a) is not type(b) or a != b:
            problems.append(f"{key}, field {where}: committed {a!r}, regenerated {b!r}")

    try:
        old, new = (json.loads(Path(p).read_text(encoding="utf-8")) for p in (committed, regenerated))
    except json.JSONDecodeError as error:
        return [f"{key}: not valid JSON ({error.msg}, line {error.lineno}); rerun its notebook"]
    walk(old, new, "")
    return problems


def check_regenerated(profile: str, committed: Roots, regenerated: Roots) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` from comparing a regenerated tree with the committed one."""
    old, new = read_manifest(profile, committed), read_manifest(profile, regenerated)
    if not new:
        return [f"{regenerated.manifest_path(profile)}: no regenerated manifest; run the notebooks with "
                f"OSGHA_FIGURES_DIR/OSGHA_RESULTS_DIR pointing there"], []
    problems, notes = [], []
    for key in sorted(set(old) - set(new)):
        problems.append(f"{key}: committed but not regenerated (notebook {old[key]['notebook']} no longer makes it?)")
    for key in sorted(set(new) - set(old)):
        problems.append(f"{key}: regenerated but not committed; run `make reproduce` and commit it")
    for key in sorted(set(old) & set(new)):
        entry = old[key]
        if entry.get("caption") != new[key].get("caption"):
            problems.append(f"{key}: caption differs: committed {entry.get('caption')!r}, regenerated "
                            f"{new[key].get('caption')!r}")
        old_path, new_path = committed.resolve(key), regenerated.resolve(key)
        if not (old_path.is_file() and new_path.is_file()):
            continue  # reported by the disk checks
        if sha256_file(old_path) == sha256_file(new_path):
            continue
        if entry["kind"] == "result":
            problems += compare_results(key, old_path, new_path)
        elif entry["kind"] == "table" and key.endswith(".csv"):
            problems += compare_tables(key, old_path, new_path, entry.get("digits", 2))
        elif entry["kind"] == "figure":
            notes.append(f"{key}: regenerated bytes differ")
    return problems, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osgha_lite manifest",
                                     description="Check results, figures and tables against their manifest.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  python -m osgha_lite manifest check --profile lite
  python -m osgha_lite manifest check --profile lite --regenerated build/regenerated""")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check the committed artifacts (and optionally a regenerated tree)")
    check.add_argument("--profile", default="lite")
    check.add_argument("--root", default=str(PROJECT_ROOT), help="folder holding figures/ and results/")
    check.add_argument("--regenerated", help="folder holding a regenerated figures/ and results/")
    register = sub.add_parser("register-results",
                              help="record every result JSON file of a profile in its manifest")
    register.add_argument("--profile", default="lite")
    register.add_argument("--root", default=str(PROJECT_ROOT), help="folder holding figures/ and results/")
    args = parser.parse_args(argv)

    if args.command == "register-results":
        roots = Roots.under(args.root)
        path = register_results(args.profile, roots)
        print(f"{len(result_files(args.profile, roots))} result files recorded in {path}")
        return 0
    committed = Roots.under(args.root)
    problems = check_disk(args.profile, committed)
    notes: list[str] = []
    summary = f"{len(read_manifest(args.profile, committed))} artifacts in {committed.manifest_path(args.profile)}"
    if args.regenerated:
        regenerated = Roots.under(args.regenerated)
        problems += [f"regenerated: {p}" for p in check_disk(args.profile, regenerated)]
        more, notes = check_regenerated(args.profile, committed, regenerated)
        problems += more
        summary += f"; compared with {args.regenerated}"
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"{summary}: {'FAIL' if problems else 'OK'} ({len(problems)} problems, {len(notes)} notes)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

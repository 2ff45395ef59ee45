"""The augmentation cache on disk: an append-only JSONL log, its compressed part, the lock.

``<name>.jsonl`` is append-only; each line is one finished caption, written
with a single ``write`` + ``flush`` + ``fsync``, so killing the process at any
moment loses at most the requests in flight. A partial last line (a write cut
by a crash) is reported and ignored by readers; the next run drops it before
appending. Next to it, ``<name>.meta.json`` summarises the cache.

A finished cache may be stored compressed (:func:`compress_cache`):
``<name>.jsonl.gz`` holds the records, deterministic gzip bytes, and the
``.jsonl`` beside it, if any, holds records appended since. Readers take both
(the ``.jsonl`` wins for a key in both) and every path argument names the
``.jsonl`` form. A compressed file is complete by construction, so an
unfinished or invalid line in it is an error, not a warning.

Writers hold the cache's lock (:class:`CacheLock`): ``<name>.lock`` next to
the cache, an exclusive ``fcntl.flock`` held for the whole run, so a second
process on the same cache stops at once with a message naming the lock file
and the PID holding it, instead of generating everything twice; dropping an
unfinished last line (:meth:`AugmentationCache.repair`) and compressing are
only done under the lock. The kernel releases a ``flock`` when its process
dies, so a lock is never stale; the file is removed when the run ends.

:func:`check_writable` probes the cache folder (create, write, ``fsync``,
delete a file) and :func:`check_free_space` compares ``shutil.disk_usage``
with what the run may write, so a read-only folder or a full disk is
reported before any LLM work.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import io
import json
import os
import shutil
import threading
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osgha_lite.atomic import atomic_write_bytes, atomic_write_json


class CacheAccessError(RuntimeError):
    """The cache cannot be written (read-only folder, full disk, held by another process)."""


class CacheDamaged(ValueError):
    """The compressed part of a cache is not a complete, valid cache (the message names the file)."""


@dataclass
class CacheReport:
    """What reading a cache file found."""

    path: Path
    lines: int = 0
    records: int = 0
    partial_tail: int = 0
    """Bytes of an unfinished last line (a write cut by a crash); 0 if none."""
    bad_lines: list[int] = field(default_factory=list)
    """Line numbers (1-based) of complete lines that are not valid records."""
    duplicates: int = 0

    def problems(self) -> list[str]:
        out = []
        if self.partial_tail:
            out.append(
                f"{self.path}: the last line is unfinished ({self.partial_tail} bytes, line {self.lines + 1}); "
                "it is ignored and the next augmentation run drops it"
            )
        if self.bad_lines:
            out.append(f"{self.path}: lines {self.bad_lines[:10]} are not valid JSON records and are ignored")
        return out


def cache_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The append log (``X.jsonl``) and the compressed part (``X.jsonl.gz``) of a cache, from either name."""
    path = Path(path)
    log = path.with_name(path.name.removesuffix(".gz"))
    return log, log.with_name(log.name + ".gz")


def cache_exists(path: str | os.PathLike) -> bool:
    """Whether a cache has records on disk, plain or compressed."""
    return any(p.is_file() for p in cache_paths(path))


def _parse_lines(data: bytes, report: CacheReport, by_key: dict[str, dict[str, Any]]) -> None:
    """Parse the JSON lines of ``data`` into ``by_key`` (later keys replace earlier ones); record problems."""
    complete, _, tail = data.rpartition(b"\n")
    if not data.endswith(b"\n"):
        report.partial_tail = len(tail)
        body = complete
    else:
        body = data[:-1]
    if body:
        for number, raw in enumerate(body.split(b"\n"), start=1):
            report.lines += 1
            try:
                record = json.loads(raw)
                key = record["key"]
                record["caption"], record["status"], record["descriptions"]  # noqa: B018 - required fields
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                report.bad_lines.append(number)
                continue
            if key in by_key:
                report.duplicates += 1
            by_key[key] = record


def read_records(path: str | os.PathLike) -> tuple[list[dict[str, Any]], CacheReport]:
    """All records of a cache (later records with the same key replace earlier ones).

    Reads ``X.jsonl.gz`` first, then ``X.jsonl`` (see the module docstring);
    the report describes the ``.jsonl``. Raises :class:`CacheDamaged` (a
    ``ValueError``) naming the file when the compressed part is not a
    complete, valid cache.
    """
    log, packed = cache_paths(path)
    report = CacheReport(path=log)
    by_key: dict[str, dict[str, Any]] = {}
    if packed.is_file():
        try:
            data = gzip.decompress(packed.read_bytes())
        except (OSError, EOFError, zlib.error) as exc:
            raise CacheDamaged(f"{packed}: not a readable gzip file ({exc}); restore it from version control") from None
        packed_report = CacheReport(path=packed)
        _parse_lines(data, packed_report, by_key)
        problems = []
        if packed_report.partial_tail:
            problems.append(f"its last line is unfinished (line {packed_report.lines + 1})")
        if packed_report.bad_lines:
            problems.append(f"lines {packed_report.bad_lines[:10]} are not valid JSON records")
        if problems:
            raise CacheDamaged(f"{packed}: a compressed cache must be complete and valid, but "
                               f"{' and '.join(problems)}; restore it from version control")
    if log.is_file():
        _parse_lines(log.read_bytes(), report, by_key)
    report.records = len(by_key)
    return list(by_key.values()), report

# --------------------------------------------------------------------------- lock and preflight
def lock_path(path: str | os.PathLike) -> Path:
    """``X.lock`` next to the cache ``X.jsonl`` (or ``X.jsonl.gz``)."""
    log = cache_paths(path)[0]
    return log.with_name(log.name.removesuffix(".jsonl") + ".lock")


class CacheLock:
    """Exclusive ``fcntl.flock`` on ``X.lock`` next to a cache; one writer per cache.

    :meth:`acquire` never waits: when another process holds the lock it raises
    :class:`CacheAccessError` naming the lock file and the PID written in it.
    The file holds the owner's PID; :meth:`release` removes it while still
    holding the lock, and :meth:`acquire` checks that the file it locked is
    still the one at the path (else it retries), so removing it is race-free.
    """

    def __init__(self, cache_path: str | os.PathLike) -> None:
        self.cache = cache_paths(cache_path)[0]
        self.path = lock_path(cache_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "CacheLock":
        if self._fd is not None:
            return self
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CacheAccessError(
                    f"cannot create the lock file {self.path} of the cache {self.cache} ({exc.strerror}); "
                    "make the folder writable or pass --out PATH in a writable folder"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise CacheAccessError(
                    f"the cache {self.cache} is in use: process {holder} holds its lock {self.path}. "
                    f"Only one augment run may write a cache at a time; wait for that run to finish "
                    f"(or stop it: kill {holder}), or pass --out PATH to write another cache"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and our flock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            self._fd = fd
            return self
        raise CacheAccessError(f"could not lock {self.path}: the lock file kept being replaced")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "CacheLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


MIN_FREE_BYTES = 16 * 1024 * 1024
"""Free space a run needs at the least (besides :data:`BYTES_PER_CAPTION` per caption to write)."""
BYTES_PER_CAPTION = 4096
"""Upper bound of one record's line (the largest committed records, with rejections, are about 3 KB)."""


def check_writable(cache_path: str | os.PathLike) -> Path:
    """Make sure files can be created and written in the cache's folder (creating the folder if needed).

    Creates, writes, syncs (``fsync``) and deletes a probe file; raises :class:`CacheAccessError`
    saying what to do when any step fails. Returns the folder.
    """
    log = cache_paths(cache_path)[0]
    folder = log.parent
    probe = folder / f".{log.name}.probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
        for existing in cache_paths(log) + (log.with_name(log.name.removesuffix(".jsonl") + ".meta.json"),):
            if existing.exists() and not os.access(existing, os.W_OK):
                raise PermissionError(errno.EACCES, "the file is read-only", str(existing))
    except OSError as exc:
        where = exc.filename or folder
        raise CacheAccessError(
            f"cannot write the cache {log}: {where}: {exc.strerror or exc}. Make the folder {folder} writable "
            "(and free space on its disk), or pass --out PATH in a writable folder; no LLM request was made"
        ) from None
    return folder


def check_free_space(cache_path: str | os.PathLike, captions: int, minimum: int = MIN_FREE_BYTES) -> int:
    """Raise :class:`CacheAccessError` when the cache's disk has less free space than
    ``minimum + BYTES_PER_CAPTION * captions`` bytes; returns the free bytes."""
    folder = cache_paths(cache_path)[0].parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))  # the folder may be new
    free = shutil.disk_usage(existing).free
    needed = minimum + BYTES_PER_CAPTION * captions
    if free < needed:
        raise CacheAccessError(
            f"only {free / 2**20:.1f} MiB free on the disk of {folder}, less than the {needed / 2**20:.1f} MiB "
            f"a run over {captions} captions may need; free some space or pass --out PATH on another disk; "
            "no LLM request was made"
        )
    return free


def compress_cache(path: str | os.PathLike) -> Path:
    """Merge a cache's records into ``X.jsonl.gz`` (written atomically) and remove ``X.jsonl``.

    Records keep their order (first appearance of each key); the gzip stream
    has no file name or time stamp, so the same records give the same bytes.
    Refuses a cache whose ``.jsonl`` has an unfinished or invalid line, and
    one whose lock another process holds (:class:`CacheAccessError`).
    """
    log, packed = cache_paths(path)
    with CacheLock(log):
        return _compress_locked(log, packed)


def _compress_locked(log: Path, packed: Path) -> Path:
    records, report = read_records(log)
    if report.partial_tail or report.bad_lines:
        raise ValueError(f"{log}: repair the cache before compressing it: {'; '.join(report.problems())}")
    if not records:
        raise ValueError(f"{log}: no records to compress")
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as stream:
        stream.write(body)
    atomic_write_bytes(packed, buffer.getvalue())
    log.unlink(missing_ok=True)
    return packed


class AugmentationCache:
    """Append-only JSONL of finished captions (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, lock: CacheLock | None = None) -> None:
        """Read the cache at ``path``. Writers pass the :class:`CacheLock` they hold
        (acquired before reading, so no other process appends after the read)."""
        self.path = cache_paths(path)[0]
        self.meta_path = self.path.with_name(self.path.name.removesuffix(".jsonl") + ".meta.json")
        self.lock = lock
        self._lock = threading.Lock()
        records, self.report = read_records(self.path)
        self._size_read = self.path.stat().st_size if self.path.is_file() else 0
        self.records = {r["key"]: r for r in records}

    def repair(self) -> int:
        """Drop an unfinished last line (in place, one ``truncate``); returns the bytes dropped.

        Only under the cache's lock, and only when the file is still the size it was read
        at: a line another writer appended is never cut."""
        if not self.report.partial_tail:
            return 0
        if self.lock is None or not self.lock.held:
            raise CacheAccessError(f"{self.path}: repairing needs the cache's lock ({lock_path(self.path)})")
        size = self.path.stat().st_size
        if size != self._size_read:
            raise CacheAccessError(f"{self.path} changed while it was read ({self._size_read} -> {size} bytes); "
                                   "run again")
        with open(self.path, "r+b") as handle:
            handle.truncate(size - self.report.partial_tail)
            handle.flush()
            os.fsync(handle.fileno())
        dropped, self.report.partial_tail = self.report.partial_tail, 0
        return dropped

    def done_keys(self, include_failed: bool = True) -> set[str]:
        return {k for k, r in self.records.items() if include_failed or r["status"] == "ok"}

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line: a single ``write``, then ``flush`` and ``fsync``."""
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
                if written != len(line):  # pragma: no cover - regular files write fully
                    raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
                os.fsync(fd)
            finally:
                os.close(fd)
            self.records[record["key"]] = record

    def summary(self) -> dict[str, Any]:
        """Counts per configuration (model, digest, template, k) and failure reasons."""
        configs: dict[tuple, dict[str, Any]] = {}
        for record in self.records.values():
            ident = (record.get("model"), record.get("digest"), record.get("template"), record.get("k"))
            entry = configs.setdefault(
                ident,
                {"model": ident[0], "digest": ident[1], "template": ident[2], "k": ident[3],
                 "records": 0, "ok": 0, "failed": 0, "failure_reasons": Counter(), "rejection_reasons": Counter()},
            )
            entry["records"] += 1
            entry["ok" if record["status"] == "ok" else "failed"] += 1
            if record["status"] != "ok":
                entry["failure_reasons"][record.get("reason", "unknown")] += 1
            for rejection in record.get("rejected", []):  # "too long (44 words > 40)" -> "too long"
                entry["rejection_reasons"][rejection["reason"].split(" (")[0]] += 1
        out = []
        for entry in configs.values():
            entry["failure_reasons"] = dict(entry["failure_reasons"].most_common())
            entry["rejection_reasons"] = dict(entry["rejection_reasons"].most_common())
            out.append(entry)
        return {
            "cache": self.path.name,
            "records": len(self.records),
            "ok": sum(e["ok"] for e in out),
            "failed": sum(e["failed"] for e in out),
            "configs": out,
        }

    def write_meta(self, run: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Path:
        """Rewrite ``<name>.meta.json`` (atomically) with the summary, settings and run history."""
        runs: list[dict[str, Any]] = []
        if self.meta_path.exists():
            try:
                runs = json.loads(self.meta_path.read_text(encoding="utf-8")).get("runs", [])
            except (json.JSONDecodeError, OSError, AttributeError):
                runs = []
        if run is not None:
            runs.append(run)
        meta = self.summary()
        if settings is not None:
            meta["settings"] = settings
        elif self.meta_path.exists():
            try:
                meta["settings"] = json.loads(self.meta_path.read_text(encoding="utf-8")).get("settings")
            except (json.JSONDecodeError, OSError, AttributeError):
                pass
        meta["runs"] = runs
        return atomic_write_json(self.meta_path, meta)


def load_augmentations(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    template: str | None = None,
    k: int | None = None,
    include_failed: bool = False,
) -> dict[str, list[str]]:
    """Caption text -> its LLM descriptions, read from a cache file (no LLM needed).

    Args:
        path: the ``.jsonl`` cache (e.g. ``data/augmentations/flickr8k.jsonl``).
        model, template, k: keep only records of this model name / template version / k.
            When the file mixes configurations and no filter picks one, a
            ``ValueError`` lists them.
        include_failed: also return the valid descriptions of failed captions
            (fewer than ``k``); by default failed captions are left out.

    An unfinished last line or invalid lines are reported with a warning and ignored.
    """
    if not cache_exists(path):
        raise FileNotFoundError(f"{path}: no augmentation cache (plain or .gz); create it with "
                                f"`python -m osgha_lite augment`")
    records, report = read_records(path)
    for problem in report.problems():
        warnings.warn(problem, stacklevel=2)
    chosen = [
        r for r in records
        if (model is None or r.get("model") == model)
        and (template is None or r.get("template") == template)
        and (k is None or r.get("k") == k)
    ]
    configs = Counter((r.get("model"), r.get("digest"), r.get("template"), r.get("k")) for r in chosen)
    if len(configs) > 1:
        listed = "; ".join(f"model={m} digest={d[:19] if d else d} template={t} k={kk}: {n} records"
                           for (m, d, t, kk), n in configs.items())
        raise ValueError(f"{path} mixes configurations ({listed}); pass model=, template= or k= to pick one")
    out: dict[str, list[str]] = {}
    for record in chosen:
        if record["status"] == "ok" or (include_failed and record["descriptions"]):
            out[record["caption"]] = list(record["descriptions"])
    return out

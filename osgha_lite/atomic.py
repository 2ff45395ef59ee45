"""Atomic file writes, and reads verified against a recorded SHA-256.

Every cache, checkpoint and result in the project is written through these
helpers. The data is written to a temporary file in the destination folder,
flushed and fsync'ed, then moved over the destination with ``os.replace``
(atomic on POSIX when source and destination share a file system).

Cached arrays are ``.npy`` files without pickles: :func:`atomic_save_npy`
returns the SHA-256 of the bytes it wrote, which the caller records next to
the file (in its sidecar JSON, written after the array), and
:func:`load_verified_npy` reads the file back only when its bytes hash to
that value; a missing, truncated, garbled or unparsable file raises
:class:`IntegrityError` with the file's path in the message. Files stored
together under one key (a converted network, a GGUF's tokenizer and config)
are recorded in one JSON by :func:`record_sha256` and checked against it by
:func:`check_sha256`.

Short digests that name checkpoints and caches, :func:`config_digest` and
:func:`array_digest`, are here too: the methods (the hypergraph adapter's
derived-tensor cache), the training loop and the experiments all use them,
and the methods must not import the training loop.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (stable diffs) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)
    return atomic_write_text(path, text + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> str:
    """Save a numpy array in ``.npy`` format (no pickles) atomically; return the SHA-256 of the file."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


class IntegrityError(ValueError):
    """A file that is missing, unreadable or does not match its recorded SHA-256 (the message names it)."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """SHA-256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def record_sha256(meta: str | os.PathLike, key: str, files: dict[str, Path]) -> Path:
    """Write ``meta`` (JSON): ``key`` and, under each label of ``files``, that file's SHA-256.

    Written after the files it describes, so a reader that finds ``meta``
    finds them complete; :func:`check_sha256` verifies them against it.
    """
    return atomic_write_json(meta, {"key": key, **{label: file_sha256(path) for label, path in files.items()}})


def check_sha256(meta: str | os.PathLike, key: str, files: dict[str, Path]) -> None:
    """Raise :class:`IntegrityError` unless ``meta`` (:func:`record_sha256`) records ``key`` and every file of
    ``files`` exists with the SHA-256 recorded under its label; the message names the file at fault."""
    try:
        recorded = json.loads(Path(meta).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise IntegrityError(f"{Path(meta).name} cannot be read ({error})") from None
    if not isinstance(recorded, dict) or recorded.get("key") != key:
        found = recorded.get("key") if isinstance(recorded, dict) else None
        raise IntegrityError(f"it records the key {found!r}, not {key!r}")
    for label, path in files.items():
        path = Path(path)
        if not path.is_file():
            raise IntegrityError(f"{path.name} is missing")
        if file_sha256(path) != recorded.get(label):
            raise IntegrityError(f"{path.name} does not match its recorded SHA-256 (damaged)")


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` of an ``.npy`` file with pickles refused; an unreadable file raises :class:`IntegrityError`."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: file is missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise IntegrityError(f"{path}: cannot be read as a .npy array ({error})") from error


def load_verified_npy(path: str | os.PathLike, sha256: str, mmap_mode: str | None = None) -> np.ndarray:
    """Read an ``.npy`` file whose bytes must hash to ``sha256`` (see :func:`atomic_save_npy`).

    Raises :class:`IntegrityError` naming ``path`` when the file is missing,
    its SHA-256 differs (truncated or garbled bytes) or it does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path}: file is missing")
    found = file_sha256(path)
    if found != sha256:
        raise IntegrityError(f"{path}: contents do not match the recorded SHA-256 (recorded {sha256[:16]}..., "
                             f"found {found[:16]}...; {path.stat().st_size} bytes): the file is damaged")
    return load_npy(path, mmap_mode)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


# --------------------------------------------------------------------------- digests
def config_digest(*parts: Any) -> str:
    """Short SHA-256 of JSON-serialisable parts, used to name checkpoints."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def array_digest(*arrays) -> str:
    """Short SHA-256 of arrays or tensors (dtype, shape and bytes of each, in order; ``None`` allowed)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        if hasattr(array, "detach"):  # a torch tensor
            array = array.detach().cpu().numpy()
        array = np.ascontiguousarray(array)
        digest.update(json.dumps([str(array.dtype), list(array.shape)]).encode("utf-8"))
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]

"""Checkpoint files that cannot run code, verified by a SHA-256 written inside them.

A checkpoint is one ``.safetensors`` file: every tensor is stored under a flat
name (``model/image_proj.weight``, ``optimizer/state/0/exp_avg``, ...) and
everything else (training history, counters, optimizer hyper-parameters) is
JSON text in the file's header metadata, where each tensor appears as
``{"__tensor__": name}``. The header also holds

    sha256 = SHA-256(tensor table (names, dtypes, shapes, offsets) as sorted JSON
                     || 0x00 || state JSON || 0x00 || tensor bytes)

so truncated or garbled bytes anywhere (tensor data, table or state) fail
the check. The file is written atomically in one piece, so there is no
moment where the tensors and their record disagree. Reading parses the
header with :mod:`json` and the tensors with :mod:`safetensors`; nothing
is ever unpickled.

:func:`load_checkpoint` raises :class:`CheckpointError` (an
:class:`osgha_lite.atomic.IntegrityError`) naming the file when it is
truncated, damaged or not a checkpoint of this format, including a header
whose values have the wrong JSON type (``__metadata__`` that is not an
object of strings, a tensor entry without a string ``dtype`` and integer
``shape`` and ``data_offsets``); the message says to delete the file to
train again. A damaged checkpoint is refused rather than
retrained over, so storage faults are seen and not silently papered over.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from osgha_lite.atomic import IntegrityError, atomic_write_bytes
from osgha_lite.data.textfiles import json_type

FORMAT = "osgha-checkpoint-1"
SUFFIX = ".safetensors"


class CheckpointError(IntegrityError):
    """A checkpoint file that is truncated, damaged or of another format (the message names it)."""


def _encode(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON-able data, with its tensors moved into ``tensors`` under path-like names."""
    if isinstance(obj, torch.Tensor):
        if name in tensors:
            raise ValueError(f"checkpoint: two tensors named {name!r}")
        tensors[name] = obj.detach().cpu().contiguous().clone()  # clone: no shared storage in the file
        return {"__tensor__": name}
    if isinstance(obj, dict):
        items = [[key, _encode(value, f"{name}/{key}", tensors)] for key, value in obj.items()]
        if all(isinstance(key, str) and not key.startswith("__") for key, _ in items):
            return dict(items)
        return {"__items__": items}  # non-string keys (optimizer state is keyed by parameter number)
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{name}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{name}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {name!r}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {key: _decode(value, tensors) for key, value in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {key: _decode(value, tensors) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _split_header(raw: bytes, path: Path) -> tuple[dict, dict, bytes]:
    """(tensor table, metadata, tensor bytes) of a safetensors file's bytes."""
    if len(raw) < 8:
        raise CheckpointError(_message(path, f"truncated ({len(raw)} bytes)"))
    size = int.from_bytes(raw[:8], "little")
    if 8 + size > len(raw):
        raise CheckpointError(_message(path, f"truncated or not a safetensors file (header of {size} bytes, "
                                             f"file of {len(raw)})"))
    try:
        header = json.loads(raw[8:8 + size].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(_message(path, f"unreadable header ({error})")) from None
    metadata = header.pop("__metadata__", {})
    problem = _header_type_problem(header, metadata)
    if problem:
        raise CheckpointError(_message(path, f"unreadable header ({problem})"))
    return header, metadata, raw[8 + size:]


def _header_type_problem(table: dict, metadata: Any) -> str | None:
    """What in a safetensors header has the wrong JSON type, or ``None``: ``__metadata__`` must be an
    object of strings, each tensor an object with a string ``dtype`` and integer ``shape`` and
    ``data_offsets`` (two of them)."""
    if not isinstance(metadata, dict):
        return f"__metadata__ must be an object of strings, found {json_type(metadata)}"
    for key, value in metadata.items():
        if not isinstance(value, str):
            return f"__metadata__.{key} must be a string, found {json_type(value)}"
    for name, entry in table.items():
        if not isinstance(entry, dict):
            return f"tensor {name!r} must be an object, found {json_type(entry)}"
        offsets, shape = entry.get("data_offsets"), entry.get("shape")
        if not (isinstance(entry.get("dtype"), str) and _integers(shape) and _integers(offsets) and len(offsets) == 2):
            return f"tensor {name!r} needs a string dtype, an integer shape and two integer data_offsets"
    return None


def _integers(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def _content_sha256(table: dict, state_text: str, data: bytes) -> str:
    digest = hashlib.sha256(json.dumps(table, sort_keys=True).encode("utf-8"))
    digest.update(b"\0" + state_text.encode("utf-8") + b"\0")
    digest.update(data)
    return digest.hexdigest()


def _message(path: Path, problem: str) -> str:
    return f"{path}: {problem}; this checkpoint cannot be used. Delete the file to train this model again"


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (nested dicts/lists/tuples of tensors, numbers, strings) to ``path`` atomically."""
    from safetensors.torch import save

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    state_text = json.dumps(_encode(state, "", tensors), allow_nan=True)
    metadata = {"format": FORMAT, "state": state_text}
    table, _, data = _split_header(save(tensors, metadata=metadata), path)
    raw = save(tensors, metadata={**metadata, "sha256": _content_sha256(table, state_text, data)})
    return atomic_write_bytes(path, raw)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The state written by :func:`save_checkpoint`, verified; tensors on the CPU.

    Raises :class:`CheckpointError` naming ``path`` when the file is
    truncated, damaged or not a checkpoint of this format.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CheckpointError(_message(path, f"cannot be read ({error})")) from None
    table, metadata, data = _split_header(raw, path)
    if metadata.get("format") != FORMAT or "state" not in metadata or "sha256" not in metadata:
        raise CheckpointError(_message(path, f"not a checkpoint of format {FORMAT}"))
    ends = [entry["data_offsets"][1] for entry in table.values()]  # types checked by _split_header
    if len(data) < max(ends, default=0):
        raise CheckpointError(_message(path, f"truncated ({len(data)} bytes of tensor data, the header lists "
                                             f"{max(ends)})"))
    found = _content_sha256(table, metadata["state"], data)
    if found != metadata["sha256"]:
        raise CheckpointError(_message(path, f"damaged (contents do not match the SHA-256 recorded in it: "
                                             f"recorded {metadata['sha256'][:16]}..., found {found[:16]}...)"))
    try:
        tensors = load(raw)
        return _decode(json.loads(metadata["state"]), tensors)
    except (SafetensorError, ValueError, KeyError) as error:
        raise CheckpointError(_message(path, f"unreadable contents ({error})")) from None

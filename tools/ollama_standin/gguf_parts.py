"""The tokenizer and model config that transformers reads from a GGUF, stored once and verified on load.

transformers builds a model from a GGUF in three passes over the file: the
config, the tokenizer and the weights. Each pass parses every metadata field
(the vocabulary and the merges are hundreds of thousands of strings), and the
tokenizer pass also converts the vocabulary into a fast tokenizer. On two
cores the first two passes took about 10 of the 20 s a stand-in server
needed to load SmolLM2-135M. Both results are plain files
(``save_pretrained``: JSON and a Jinja chat template, no pickles), so they are
kept:

* in ``<cache>/llm/<digest>/``, the digest naming the GGUF's SHA-256 and the
  transformers and tokenizers versions (``<cache>`` is ``$OSGHA_CACHE_DIR``
  or the repository's ``.cache``, :func:`osgha_lite.backbones.features.cache_root`);
* with ``manifest.json``, holding that key and the SHA-256 of every file,
  checked before anything is read (:func:`osgha_lite.atomic.check_sha256`);
  a missing, damaged or foreign file is named in a
  :class:`~osgha_lite.backbones.features.CacheWarning` and the parts are read from the
  GGUF again;
* written whole into a staging folder and renamed into place, so servers
  started side by side never read a half-written folder.

The weights are still read from the GGUF by transformers: they stay packed in
its GGUF format, which transformers does not save. Loading the stored parts
gives the same tokens and the same config (``tests/test_gguf_parts.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from osgha_lite.atomic import IntegrityError, check_sha256, record_sha256
from osgha_lite.backbones.encoders import file_digest

#: Files ``save_pretrained`` writes for the tokenizer and the config (transformers 5); the chat template
#: is absent for a GGUF without one.
PART_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
REQUIRED_FILES = PART_FILES[:3]


def parts_key(gguf_path: str | os.PathLike) -> str:
    """What the stored parts depend on: the GGUF's bytes and the converting libraries' versions."""
    import tokenizers
    import transformers

    return (f"gguf-sha256:{file_digest(str(gguf_path))}|transformers{transformers.__version__}"
            f"|tokenizers{tokenizers.__version__}")


def parts_folder(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/llm/<digest of key>``."""
    from osgha_lite.backbones.features import cache_root

    root = Path(cache_dir) if cache_dir else cache_root() / "llm"
    return root / hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


def _read(folder: Path, key: str) -> tuple[Any, Any]:
    """The stored parts, after checking the manifest's key and every file it lists."""
    from transformers import AutoConfig, AutoTokenizer

    manifest = folder / "manifest.json"
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise IntegrityError(f"{manifest.name} cannot be read ({error})") from None
    names = sorted(name for name in recorded if name != "key") if isinstance(recorded, dict) else []
    for name in REQUIRED_FILES:
        if name not in names:
            raise IntegrityError(f"{manifest.name} lists no {name}")
    check_sha256(manifest, key, {name: folder / name for name in names})
    return AutoTokenizer.from_pretrained(str(folder)), AutoConfig.from_pretrained(str(folder))


def gguf_parts(gguf_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """``(tokenizer, config)`` of a GGUF as transformers reads them, from the store or from the GGUF.

    See the module docstring for where they are kept and how a stored copy
    is verified.
    """
    from transformers import AutoConfig, AutoTokenizer

    from osgha_lite.backbones.features import CacheWarning

    gguf_path = Path(gguf_path)
    key = parts_key(gguf_path)
    folder = parts_folder(key, cache_dir)
    if folder.exists():
        try:
            return _read(folder, key)
        except (IntegrityError, OSError, ValueError) as error:
            warnings.warn(f"{folder}: stored tokenizer and config not used ({error}); reading them from "
                          f"{gguf_path.name} again", CacheWarning, stacklevel=2)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    try:
        _store(folder, key, tokenizer, config)
        # what a later process reads, so a server never depends on whether it converted the parts itself
        return _read(folder, key)
    except (IntegrityError, OSError, ValueError) as error:
        warnings.warn(f"{folder}: the tokenizer and config of {gguf_path.name} could not be stored ({error}); "
                      "using them unstored", CacheWarning, stacklevel=2)
    return tokenizer, config


def _store(folder: Path, key: str, tokenizer, config) -> None:
    """Write the parts into a staging folder, record their hashes, and rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        tokenizer.save_pretrained(str(staging))
        config.save_pretrained(str(staging))
        record_sha256(staging / "manifest.json", key,
                      {name: staging / name for name in PART_FILES if (staging / name).exists()})
        if folder.exists():  # damaged or foreign: move it aside first (a rename over a folder fails)
            aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
            os.replace(folder, aside / "parts")
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(staging, folder)
        except OSError:  # another process stored the same parts first: keep theirs
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)

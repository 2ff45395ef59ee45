r"""Each distinct text encoded once per encoder: a store of text vectors shared by every list.

A text list (a split's captions, a cache of LLM descriptions, search
queries) used to be encoded as a whole, so a caption that appears in five
lists was encoded five times. An encoder whose vector of a text does not
depend on the texts batched with it (``batch_independent = True``: MiniLM
encodes batches of one token length, :func:`osgha_lite.backbones.encoders.length_groups`)
gives the same bits whichever list a text comes from, so
:func:`osgha_lite.backbones.features.cached_features` looks each text up here first and
encodes only the texts the store lacks.

Layout: ``<cache>/features/texts/<encoder digest>/`` holds shards, each an
``.npy`` of vectors ``float32 [n, d]`` and a JSON sidecar with the encoder
identity, the SHA-256 of each text (the shard's rows, in order) and the
SHA-256 of the ``.npy``. A shard is named by a digest of its texts, so two
processes that store the same texts write the same file (atomically), and
is written after its vectors are computed: an interrupted run keeps every
finished shard and resumes from there. A shard whose sidecar or bytes do not
verify gives a :class:`~osgha_lite.backbones.features.CacheWarning` naming the file and
is ignored (its texts are encoded again); nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from osgha_lite.atomic import IntegrityError, atomic_save_npy, atomic_write_json, load_verified_npy


def text_digest(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes: the key of its vector."""
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


class TextVectorStore:
    """The vectors of every text one encoder has encoded (see the module docstring).

    Args:
        folder: the store's folder (one per encoder identity; see :func:`store_for`).
        identity: the encoder's identity, recorded in every shard and checked on reading.
        dim: the vectors' width.
        warn: called with a message for each shard that does not verify.
    """

    def __init__(self, folder: str | Path, identity: str, dim: int, warn: Callable[[str], None] | None = None):
        self.folder, self.identity, self.dim = Path(folder), identity, int(dim)
        self._warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
        self._index: dict[str, tuple[str, int]] = {}  # text digest -> (shard name, row)
        self._shards: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()

    def _refresh(self) -> None:
        """Read the sidecars of shards this process has not seen (another process may have added some)."""
        if not self.folder.is_dir():
            return
        for meta_path in sorted(self.folder.glob("*.json")):
            name = meta_path.stem
            if name in self._seen:
                continue
            self._seen.add(name)
            array_path = meta_path.with_suffix(".npy")
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                digests, recorded = meta["texts_sha256"], meta["sha256"]
                if meta.get("encoder") != self.identity:
                    raise ValueError(f"made by encoder {meta.get('encoder')!r}, not {self.identity!r}")
                if not isinstance(digests, list) or not all(isinstance(d, str) and len(d) == 64 for d in digests):
                    raise ValueError("field texts_sha256 is not a list of SHA-256 digests")
                vectors = load_verified_npy(array_path, recorded)
                if vectors.shape != (len(digests), self.dim) or vectors.dtype != np.float32:
                    raise ValueError(f"shape {vectors.shape} {vectors.dtype}, expected ({len(digests)}, {self.dim}) "
                                     "float32")
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IntegrityError) as error:
                self._warn(f"{meta_path}: text-vector shard ignored, its texts are encoded again ({error})")
                continue
            self._shards[name] = vectors
            for row, digest in enumerate(digests):
                self._index.setdefault(digest, (name, row))

    def lookup(self, digests: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors [n, dim], found [n] bool)`` for texts given by :func:`text_digest`; rows not found are 0."""
        self._refresh()
        vectors = np.zeros((len(digests), self.dim), np.float32)
        found = np.zeros(len(digests), bool)
        for position, digest in enumerate(digests):
            place = self._index.get(digest)
            if place is not None:
                vectors[position] = self._shards[place[0]][place[1]]
                found[position] = True
        return vectors, found

    def add(self, digests: Sequence[str], vectors: np.ndarray) -> Path:
        """Store one shard: the vectors of the texts given by their digests (distinct, in row order)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(digests), self.dim):
            raise ValueError(f"TextVectorStore.add: {vectors.shape} vectors for {len(digests)} texts of width "
                             f"{self.dim}")
        name = hashlib.sha256("".join(digests).encode("ascii")).hexdigest()[:24]
        array_path, meta_path = self.folder / f"{name}.npy", self.folder / f"{name}.json"
        recorded = atomic_save_npy(array_path, vectors)
        atomic_write_json(meta_path, {"encoder": self.identity, "texts_sha256": list(digests), "sha256": recorded})
        self._seen.add(name)
        self._shards[name] = vectors
        for row, digest in enumerate(digests):
            self._index.setdefault(digest, (name, row))
        return meta_path


_STORES: dict[tuple[str, str], TextVectorStore] = {}


def store_for(root: str | Path, identity: str, dim: int, warn: Callable[[str], None] | None = None) -> TextVectorStore:
    """The store of encoder ``identity`` under ``root`` (``<root>/texts/<digest of the identity>``), one per
    process."""
    folder = Path(root) / "texts" / hashlib.sha256(identity.encode("utf-8")).hexdigest()[:20]
    key = (str(folder), identity)
    if key not in _STORES:
        _STORES[key] = TextVectorStore(folder, identity, dim, warn)
    return _STORES[key]


def encode_with_store(encoder, texts: Sequence[str], store: TextVectorStore, batch_size: int, shard_size: int,
                      progress: bool, log: Callable[[str], None] | None = None) -> np.ndarray:
    """Vectors of ``texts`` (``float32 [n, dim]``): those the store holds are read, each distinct other text is
    encoded once, in shards of ``shard_size`` texts stored as they finish."""
    digests = [text_digest(t) for t in texts]
    vectors, found = store.lookup(digests)
    missing: dict[str, str] = {}
    for text, digest, present in zip(texts, digests, found):
        if not present:
            missing.setdefault(digest, text)
    todo = list(missing.items())
    if todo and log is not None:
        log(f"{len(todo)} of {len(texts)} texts not encoded before ({len(texts) - int(found.sum())} rows)")
    for start in range(0, len(todo), shard_size):
        chunk = todo[start:start + shard_size]
        encoded = encoder.encode([text for _, text in chunk], batch_size=batch_size, progress=progress)
        store.add([digest for digest, _ in chunk], np.asarray(encoded, dtype=np.float32))
    if todo:
        vectors, found = store.lookup(digests)
    if not found.all():  # a shard written above did not verify when read back
        raise RuntimeError(f"{store.folder}: {int((~found).sum())} texts missing after encoding them")
    return vectors

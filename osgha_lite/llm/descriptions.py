"""Where a caption's descriptions come from, and how faithful they are: the LLM quality ladder.

OS-HGAdapter's first idea is that extra descriptions of a caption, written by
an LLM, raise the text side's entropy and help retrieval. Whether that holds
depends on how good the describer is, so the ladder compares *sources* of
descriptions of increasing quality through the same adapter and metrics
(the sources and the fidelity measure are this project's design):

``none``
    no descriptions.
``smollm2-135m``, ``qwen2.5-coder-0.5b``, ...
    an LLM through :mod:`osgha_lite.llm.augment` (same prompt, same cache
    format); a source names its cache file in the profile.
``human-train``
    a perfect describer at training time only: the description of a
    training caption is the *other* human captions of the same image (the
    first ``k`` that differ from it), for the same captions an LLM cache
    covers (the first caption of each training image). Dev and test queries
    get none. A ceiling for what descriptions can add through training.
``human-test-ceiling``
    the same, and every dev and test caption also gets the other captions
    of its image. This leaks which captions share an image, so it is a
    ceiling, never a method.

Fidelity (:func:`description_fidelity`): for each description :math:`e` of a
caption :math:`c` of image :math:`i`, in a fixed sentence-embedding space,

.. math::

    \\text{fidelity} = \\Pr\\big[\\cos(e, c) > \\cos(e, c')\\big], \\qquad
    \\text{top-1} = \\Pr\\big[\\cos(e, c) > \\max_{c'' \\notin C_i} \\cos(e, c'')\\big]

with :math:`c'` a caption of another image drawn with a fixed seed and
:math:`C_i` the captions of image :math:`i` (top-1: its own caption beats
every caption of every other image of the split).
A description that contradicts its caption ("a ball on the dog's head" for a
swimming dog) sits no closer to it than to a caption of another picture.
Human captions of the same image are the reference.
"""

from __future__ import annotations

import numpy as np

from osgha_lite.data import CaptionDataset

SOURCE_KINDS = ("none", "llm", "human-train", "human-test-ceiling")


def human_descriptions(data: CaptionDataset, k: int, captions: str = "first") -> dict[str, list[str]]:
    """Caption text -> the first ``k`` other captions of its image whose text differs from it.

    ``captions="first"`` gives descriptions to the first caption of each
    image only (the coverage of the LLM caches on training images);
    ``"all"`` to every caption.
    """
    if captions not in ("first", "all"):
        raise ValueError(f"captions must be 'first' or 'all', not {captions!r}")
    per_image: list[list[str]] = [[] for _ in range(data.n_images)]
    for caption, image in zip(data.captions, data.text_to_image.tolist()):
        per_image[image].append(caption)
    out: dict[str, list[str]] = {}
    for texts in per_image:
        chosen = texts[:1] if captions == "first" else texts
        for caption in chosen:
            others = [t for t in texts if t.strip().lower() != caption.strip().lower()]
            if others:
                out.setdefault(caption, others[:k])
    return out


def split_descriptions(source: dict, splits: dict[str, CaptionDataset], k: int,
                       llm_texts: dict[str, list[str]] | None = None) -> dict[str, dict[str, list[str]]]:
    """The descriptions each split gets under a ladder ``source`` (``{"kind": ...}``; see the module docstring).

    ``splits`` maps ``adapt``, ``dev`` and ``test`` to their data; an
    ``llm`` source passes the texts of its cache as ``llm_texts``. Returns
    split name -> caption text -> descriptions.
    """
    kind = source["kind"]
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown description source kind {kind!r}; known: {', '.join(SOURCE_KINDS)}")
    if kind == "none":
        return {name: {} for name in splits}
    if kind == "llm":
        if llm_texts is None:
            raise ValueError("an llm source needs the texts of its cache (llm_texts)")
        return {name: llm_texts for name in splits}
    out = {name: {} for name in splits}
    out["adapt"] = human_descriptions(splits["adapt"], k, "first")
    if kind == "human-test-ceiling":
        for name in ("dev", "test"):
            out[name] = human_descriptions(splits[name], k, "all")
    return out


def description_fidelity(captions: np.ndarray, descriptions: np.ndarray, mask: np.ndarray,
                         text_to_image: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Fidelity and top-1 of the descriptions of a split (see the module docstring).

    ``captions`` ``[n, d]`` and ``descriptions`` ``[n, K, d]`` are unit rows
    of one text space, ``mask`` ``[n, K]`` says which slots hold a
    description, ``text_to_image`` the image of each caption. Returns
    ``{"fidelity", "top1", "n"}`` (``n`` descriptions; NaN values when none).
    """
    captions = np.asarray(captions, dtype=np.float32)
    text_to_image = np.asarray(text_to_image)
    rows, slots = np.nonzero(mask)
    if rows.size == 0:
        return {"fidelity": float("nan"), "top1": float("nan"), "n": 0}
    if len(np.unique(text_to_image)) < 2:
        raise ValueError("description_fidelity needs captions of at least two images")
    vectors = np.asarray(descriptions, dtype=np.float32)[rows, slots]
    rng = np.random.default_rng(seed)
    other = rng.integers(0, len(captions), size=rows.size)
    clash = text_to_image[other] == text_to_image[rows]
    while clash.any():  # redraw until every partner caption is of another image
        other[clash] = rng.integers(0, len(captions), size=int(clash.sum()))
        clash = text_to_image[other] == text_to_image[rows]
    own = np.einsum("nd,nd->n", vectors, captions[rows])
    random_other = np.einsum("nd,nd->n", vectors, captions[other])
    best_other = np.empty(rows.size, dtype=np.float32)
    for start in range(0, rows.size, 2048):
        block = slice(start, start + 2048)
        sims = vectors[block] @ captions.T
        sims[text_to_image[rows[block]][:, None] == text_to_image[None, :]] = -np.inf
        best_other[block] = sims.max(axis=1)
    return {"fidelity": float(np.mean(own > random_other)), "top1": float(np.mean(own > best_other)),
            "n": int(rows.size)}

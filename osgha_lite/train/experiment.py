"""Train and evaluate one adapter method on a backbone's cached embeddings.

A *method* is a named entry of a profile's ``"methods"`` (or of a sweep)::

    {"adapter": "hypergraph", "options": {"k": 5, "reduced_dim": 128},
     "descriptions": 3, "train": {"lr": 1e-4}}

``adapter`` is a name of :data:`osgha_lite.methods.ADAPTERS`; ``options``
go to its constructor; ``descriptions`` is how many LLM descriptions per
caption the method may use (0 = none); ``memory_descriptions`` (default
false) also puts the training captions' descriptions into the memory bank
(:func:`description_memory`); ``train`` overrides the profile's
adapter training settings (``profile["adapter_training"]["train"]``, a
:class:`osgha_lite.train.fit.TrainConfig`).

* :func:`load_profile_augmentations` reads the profile's LLM descriptions
  (``{}`` when its cache file does not exist);
  :func:`embed_with_descriptions` embeds a split and those descriptions.
* :func:`prepare_method` builds the adapter, gives it the training-split
  memory bank when it uses one, and precomputes every row's memory links
  (the neighbour searches are shared between the methods of a process by
  :func:`cached_neighbour_table`).
* :func:`score_method` trains the prepared adapter with
  :func:`osgha_lite.train.fit.fit` (early stopping on dev rSum, checkpointed
  in ``.cache/adapters/``, so reruns load it) and encodes dev and test;
  :func:`run_method` adds the test metrics with bootstrap intervals and writes
  ``results/<profile>/<method>.test.json`` with the method's options, its
  dev metrics, its training history and whether the test gallery was used
  (``transductive``); its wall-clock times go to the timing log
  (:mod:`osgha_lite.train.timings`), not the result file.
* :func:`sweep_methods` lists one-at-a-time variations of a base method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from osgha_lite.train import timings
from osgha_lite.methods import AdapterContext, RetrievalAdapter, build_adapter
from osgha_lite.profiles import merge
from osgha_lite.data import protocol_settings
from osgha_lite.metrics.protocols import evaluate_similarity
from osgha_lite.paths import PROJECT_ROOT, cache_root, data_root
from osgha_lite.methods.hypergraph import TEXT, MemoryBank, NeighbourTable, neighbour_table
from osgha_lite.metrics.results import write_result
from osgha_lite.train.fit import (
    SplitFeatures,
    TrainConfig,
    array_digest,
    checkpoint_finished,
    config_digest,
    encode_split,
    evaluate,
    fit,
    to_tensor,
)


@dataclass
class Embedded:
    """Backbone embeddings of one split, plus description embeddings per caption.

    ``descriptions`` is ``[n_texts, K, d]`` (zeros where missing) and
    ``description_mask`` ``[n_texts, K]`` says which slots hold a description.
    Optional, set by :func:`method_embeddings` for the methods that need them:
    ``image_texts`` ``[n_images, V, d]`` / ``image_text_mask`` (LLM texts per
    image, such as APSE-IPIK's perspectives) and ``local``
    (:class:`osgha_lite.backbones.LocalFeatures`, for HGAN).
    """

    images: np.ndarray
    texts: np.ndarray
    text_to_image: np.ndarray
    descriptions: np.ndarray
    description_mask: np.ndarray
    image_texts: np.ndarray | None = None
    image_text_mask: np.ndarray | None = None
    local: object | None = None

    def extras_checksum(self) -> list[str]:
        """Byte digests of the optional inputs (part of a trained method's checkpoint digest; exact and
        independent of the thread count, unlike a float sum)."""
        local = (None, None) if self.local is None else (self.local.images, self.local.texts)
        return [array_digest(self.descriptions, self.description_mask),
                array_digest(self.image_texts, self.image_text_mask), array_digest(*local)]

    @property
    def description_coverage(self) -> float:
        """Fraction of captions with at least one description."""
        return float(self.description_mask.any(axis=1).mean()) if len(self.texts) else 0.0


def repository_path(relative: str) -> Path:
    path = Path(relative)
    return path if path.is_absolute() else PROJECT_ROOT / path


def load_profile_augmentations(profile: dict) -> dict[str, list[str]]:
    """The profile's LLM descriptions, caption text -> list of descriptions; {} when there are none.

    Reads ``profile["augmentation"]["cache"]`` (a path relative to the
    repository root, or absolute) with :func:`osgha_lite.llm.augment.load_augmentations`.
    When the profile names no cache or the file does not exist, returns an
    empty dict: every method then runs without descriptions (the notebooks
    report the coverage, so a missing cache is visible).
    """
    relative = profile.get("augmentation", {}).get("cache")
    return load_cache_texts(relative) if relative else {}


def load_cache_texts(relative: str) -> dict[str, list[str]]:
    """Input text -> LLM texts of an augmentation cache file (``{}`` when the file does not exist)."""
    from osgha_lite.llm.cache import cache_exists, load_augmentations  # the reader of the augmentation cache

    path = repository_path(relative)
    return load_augmentations(path) if cache_exists(path) else {}


def embed_with_descriptions(backbone, data, augmentations: dict[str, list[str]], max_descriptions: int,
                            progress: bool = True) -> Embedded:
    """Embed a split and the LLM descriptions of its captions (from the augmentation cache).

    ``augmentations`` maps caption text -> list of descriptions; captions
    missing from it get an all-False mask row.
    """
    images, texts = backbone.embed(data, progress=progress)
    k = max_descriptions
    flat, slots = [], []
    for row, caption in enumerate(data.captions):
        for slot, text in enumerate(augmentations.get(caption, [])[:k]):
            flat.append(text)
            slots.append((row, slot))
    descriptions = np.zeros((len(texts), k, texts.shape[1]), dtype=np.float32)
    mask = np.zeros((len(texts), k), dtype=bool)
    if flat:
        encoded = backbone.encode_texts(flat, f"{data.name}-descriptions", data.split, progress=progress)
        rows, cols = np.array(slots).T
        descriptions[rows, cols] = encoded
        mask[rows, cols] = True
    return Embedded(images, texts, data.text_to_image, descriptions, mask)


def _split_features(embedded: Embedded, n_descriptions: int, training: bool) -> SplitFeatures:
    """Features and adapter contexts; ``group_ids`` only for training rows (see the hypergraph docs)."""
    n_images = embedded.images.shape[0]
    text_to_image = torch.as_tensor(embedded.text_to_image)
    text_context = AdapterContext(group_ids=text_to_image if training else None)
    if n_descriptions:
        text_context.description_features = to_tensor(embedded.descriptions[:, :n_descriptions])
        text_context.description_mask = torch.as_tensor(embedded.description_mask[:, :n_descriptions])
    image_context = AdapterContext(group_ids=torch.arange(n_images) if training else None)
    if embedded.image_texts is not None:
        image_context.description_features = to_tensor(embedded.image_texts)
        image_context.description_mask = torch.as_tensor(embedded.image_text_mask)
    if embedded.local is not None:
        local = embedded.local
        image_context.local_features = torch.as_tensor(local.images)
        image_context.local_mask = torch.as_tensor(local.image_mask)
        text_context.local_features = torch.as_tensor(local.texts)
        text_context.local_mask = torch.as_tensor(local.text_mask)
    return SplitFeatures(to_tensor(embedded.images), to_tensor(embedded.texts), text_to_image,
                         text_context, image_context)


#: Smallest widths (same modality, other modality) of a cached :class:`NeighbourTable`: wide enough
#: for every k and hubness_k of the profiles, so that one search per split serves all methods.
TABLE_MIN_WIDTHS = (10, 200)
_TABLE_CACHE: dict[str, NeighbourTable] = {}


def cached_neighbour_table(adapter, split_name: str, features: torch.Tensor, modality: str,
                           group_ids: torch.Tensor | None) -> NeighbourTable:
    """The :class:`~osgha_lite.methods.hypergraph.NeighbourTable` of a split's rows against the adapter's memory.

    Kept in memory for the process, keyed by a digest of the rows, the
    groups and the memory bank, so the methods and sweeps of a notebook
    search the bank once per split and modality (the search, not the
    training, dominates their run time). Widths are at least
    :data:`TABLE_MIN_WIDTHS`.
    """
    memory = adapter.memory
    key = config_digest(split_name, modality, list(features.shape), float(features.double().sum()),
                        None if group_ids is None else float(group_ids.double().sum()),
                        len(memory), float(memory.features.double().sum()))
    same, other = (max(a, b) for a, b in zip(adapter.table_widths, TABLE_MIN_WIDTHS))
    table = _TABLE_CACHE.get(key)
    if table is None or table.widths[0] < same or table.widths[1] < other:
        table = NeighbourTable.cat([
            neighbour_table(features[rows], memory, modality, same, other,
                            None if group_ids is None else group_ids[rows])
            for rows in (slice(start, start + 4096) for start in range(0, features.shape[0], 4096))
        ])
        _TABLE_CACHE[key] = table
    return table


@dataclass
class PreparedMethod:
    """A method ready to train: its adapter (memory set), split features with contexts, settings.

    ``seconds`` is the time the preparation took (memory bank, neighbour
    searches and memory links).
    """

    adapter: RetrievalAdapter
    train: SplitFeatures
    dev: SplitFeatures
    test: SplitFeatures
    train_config: TrainConfig
    n_descriptions: int
    seconds: float


def description_memory(train: Embedded, n_descriptions: int) -> MemoryBank:
    """Text memory nodes for the training captions' LLM descriptions (the first ``n_descriptions`` of each).

    Each description joins its caption's image group, so a query that finds
    it reaches that training image through the pair hyperedges, as it would
    through the caption itself; a training query never links to its own
    group, so a caption does not see its own descriptions in the memory.
    """
    rows, slots = np.nonzero(train.description_mask[:, :n_descriptions])
    features = to_tensor(train.descriptions[rows, slots])
    return MemoryBank.from_features(features, torch.full((len(rows),), TEXT, dtype=torch.long),
                                    torch.as_tensor(train.text_to_image[rows], dtype=torch.long))


def attach_links(adapter, split_name: str, split: SplitFeatures) -> None:
    """Precompute the memory links of a split's texts and images into its contexts (memory adapters only)."""
    if not (adapter.uses_memory and hasattr(adapter, "precompute_links")):
        return
    for context, features, modality in ((split.text_context, split.texts, "text"),
                                        (split.image_context, split.images, "image")):
        table = cached_neighbour_table(adapter, split_name, features, modality, context.group_ids)
        context.links = adapter.precompute_links(features, modality, context.group_ids, table=table)


def prepare_method(method: dict, profile: dict, train: Embedded, dev: Embedded, test: Embedded,
                   train_links: bool = True) -> PreparedMethod:
    """Build the method's adapter, give it the train memory bank, and precompute every row's memory links.

    Inputs and memory are frozen, so each row's links are found once:
    training rows without their own image group, dev and test queries
    against the memory only (inductive). Neighbour searches are shared
    between methods through :func:`cached_neighbour_table`. With
    ``train_links=False`` the training rows' links are left for later
    (:func:`attach_links`): they are needed only to train.
    """
    started = time.perf_counter()
    seed = profile.get("seed", 0)
    n_descriptions = int(method.get("descriptions", 0))
    torch.manual_seed(seed)
    adapter = build_adapter(method["adapter"], train.images.shape[1], **method.get("options", {}))
    if adapter.uses_memory:
        memory_options = profile.get("adapter_training", {}).get("memory", {})
        bank = MemoryBank.from_train_split(
            to_tensor(train.images), to_tensor(train.texts), torch.as_tensor(train.text_to_image),
            max_nodes=memory_options.get("max_nodes"), seed=seed)
        if method.get("memory_descriptions") and n_descriptions:
            bank = bank.concat(description_memory(train, n_descriptions))
        adapter.set_memory(bank)
    splits = {"train": _split_features(train, n_descriptions, training=True),
              "dev": _split_features(dev, n_descriptions, training=False),
              "test": _split_features(test, n_descriptions, training=False)}
    for split_name, split in splits.items():
        if split_name != "train" or train_links:
            attach_links(adapter, split_name, split)
    train_config = TrainConfig.from_dict({"seed": seed, **merge(
        profile.get("adapter_training", {}).get("train", {}), method.get("train", {}))})
    return PreparedMethod(adapter, splits["train"], splits["dev"], splits["test"], train_config, n_descriptions,
                          time.perf_counter() - started)


@dataclass
class ScoredMethod:
    """A trained (or loaded) method and its test scores; see :func:`score_method`."""

    prepared: PreparedMethod
    history: object | None
    dev_metrics: dict[str, float]
    test_images: torch.Tensor
    test_texts: torch.Tensor
    seconds: float

    @property
    def adapter(self) -> RetrievalAdapter:
        return self.prepared.adapter

    @property
    def sims(self) -> np.ndarray:
        """Test image x caption scores."""
        return (self.test_images @ self.test_texts.T).numpy()

    def encode(self, features: np.ndarray, modality: str, local: tuple | None = None) -> np.ndarray:
        """Adapt extra rows of backbone vectors as test queries: inductive, no LLM texts.

        ``modality`` is ``"image"`` or ``"text"``; ``local`` is ``(features
        [N, L, d], mask [N, L])`` for the methods that need local features (HGAN).
        """
        adapter = self.adapter
        rows = to_tensor(features)
        context = AdapterContext()
        if local is not None:
            context.local_features, context.local_mask = torch.as_tensor(local[0]), torch.as_tensor(local[1])
        if adapter.uses_memory and hasattr(adapter, "precompute_links"):
            context.links = adapter.precompute_links(rows, modality)
        adapter.eval()
        with torch.no_grad():
            encode = adapter.encode_images if modality == "image" else adapter.encode_texts
            return encode(rows, context).float().numpy()

    def encode_texts(self, features: np.ndarray) -> np.ndarray:
        """Adapt extra text rows (such as LLM descriptions) as test queries: inductive, no descriptions."""
        return self.encode(features, "text")


def training_settings(profile: dict) -> dict:
    """The profile fields that shape a method's training beyond ``prepared.train_config``: the seed (the
    adapter's initial weights, the memory sample) and the memory options. Not the name, the datasets or the
    evaluation settings: they change no trained weight."""
    return {"seed": profile.get("seed", 0), "memory": profile.get("adapter_training", {}).get("memory", {})}


def method_checkpoint(name: str, method: dict, profile: dict, prepared, backbone_identity: str,
                      train: Embedded, dev: Embedded) -> Path:
    """``.cache/adapters/<name>-<digest>.safetensors``: the digest covers the method, the adapter, the training
    settings (:func:`training_settings` and ``prepared.train_config``), the backbone, the training features and
    pairs (``text_to_image``) and the dev split that chooses the kept epoch (its features, pairs and optional
    inputs). The profile's name is not part of it: a profile that extends another and only adds datasets or
    changes evaluation settings finds the other's checkpoints."""
    digest = config_digest(name, method, prepared.adapter.config(), prepared.train_config.__dict__,
                           training_settings(profile), backbone_identity,
                           array_digest(train.images, train.texts), *train.extras_checksum(),
                           array_digest(train.text_to_image),
                           array_digest(dev.images, dev.texts, dev.text_to_image), *dev.extras_checksum())
    return cache_root() / "adapters" / f"{name}-{digest}.safetensors"


def score_method(name: str, method: dict, profile: dict, backbone_identity: str,
                 train: Embedded, dev: Embedded, test: Embedded, progress: bool = True,
                 log=None) -> ScoredMethod:
    """Prepare a method, train it (or load its checkpoint), and encode dev and test.

    Trainable adapters are fitted with :func:`osgha_lite.train.fit.fit`,
    checkpointed in :func:`method_checkpoint` (a digest of every input that
    shapes the run); a second call with the same inputs loads the
    checkpoint instead of training. ``log`` (a callable taking a line) is
    told before a method without a finished checkpoint is trained.
    """
    started = time.perf_counter()
    prepared = prepare_method(method, profile, train, dev, test, train_links=False)
    adapter = prepared.adapter
    history = None
    if adapter.trainable and any(p.requires_grad for p in adapter.parameters()):
        checkpoint = method_checkpoint(name, method, profile, prepared, backbone_identity, train, dev)
        if not checkpoint_finished(checkpoint):
            if log is not None:
                log(f"{name}: no finished checkpoint {checkpoint}; training it on the profile's "
                    f"{len(train.images)} training images")
            attach_links(adapter, "train", prepared.train)
        history = fit(adapter, prepared.train, prepared.dev, prepared.train_config, checkpoint=checkpoint,
                      progress=progress, desc=name)
    adapter.eval()
    dev_metrics = evaluate(adapter, prepared.dev)
    images, texts = encode_split(adapter, prepared.test)
    return ScoredMethod(prepared, history, dev_metrics, images, texts, time.perf_counter() - started)


def protocol_record(profile: dict, train: Embedded) -> dict:
    """How the training images were divided (``osgha_lite.data.protocol_settings``) and how many the method used."""
    return {**protocol_settings(profile), "adapt_images": int(train.images.shape[0]),
            "adapt_captions": int(train.texts.shape[0])}


def run_method(name: str, method: dict, profile: dict, backbone_identity: str,
               train: Embedded, dev: Embedded, test: Embedded, progress: bool = True,
               dataset: str | None = None, split: str = "test", folder: str | Path | None = None,
               log=None, skipped_images: dict | None = None) -> dict:
    """Train (or load) and evaluate one method; write and return its result record.

    ``test`` is the profile's test split by default; for another dataset
    (:mod:`osgha_lite.apps.evaluate`) ``dataset`` and ``split`` name it in the
    record and ``folder`` is where the file goes
    (:func:`osgha_lite.metrics.results.write_result`). ``log`` goes to
    :func:`score_method`. ``skipped_images`` (path -> problem: test images
    left out because they cannot be decoded) is recorded, when not empty, as
    ``skipped_images``: their count and the first 20 with their problems.

    Returns ``{"path", "sims" (test image x caption scores), "metrics"
    (test, per protocol), "dev_metrics", "history" (None when nothing is
    trained), "prepare_seconds", "seconds" (total)}``. The result file also
    holds the dev metrics and the training history, but no wall-clock time:
    the times go to the timing log (:mod:`osgha_lite.train.timings`, entry
    :func:`~osgha_lite.train.timings.result_name` of the result file).
    """
    started = time.perf_counter()
    seed = profile.get("seed", 0)
    scored = score_method(name, method, profile, backbone_identity, train, dev, test, progress=progress, log=log)
    prepared, history, sims = scored.prepared, scored.history, scored.sims
    protocols = profile["eval"]["protocols"]
    metrics, intervals = evaluate_similarity(sims, test.text_to_image, protocols,
                                             n_boot=profile["eval"]["bootstrap"], seed=seed)
    record = dict(
        profile=profile["name"], method=name, dataset=dataset or profile["dataset"], split=split,
        backbone=backbone_identity, metrics=metrics, config={"profile": profile, "method": method,
                                                             "adapter": prepared.adapter.config(),
                                                             "train": prepared.train_config.__dict__},
        intervals=intervals, transductive=bool(prepared.adapter.uses_test_gallery),
        n_images=int(test.images.shape[0]), n_texts=int(test.texts.shape[0]),
        dev_metrics={"all": {k: float(v) for k, v in scored.dev_metrics.items()}},
        description_coverage={"train": train.description_coverage, "dev": dev.description_coverage,
                              "test": test.description_coverage} if prepared.n_descriptions else None,
        image_text_coverage={s: float(e.image_text_mask.any(axis=1).mean()) for s, e in
                             (("train", train), ("dev", dev), ("test", test))}
        if train.image_texts is not None else None,
        protocol=protocol_record(profile, train),
        training=history.result_dict() if history is not None else None,
    )
    if skipped_images:
        from osgha_lite.paths import display_path

        record["skipped_images"] = {"count": len(skipped_images), "examples": {
            display_path(path): problem for path, problem in list(skipped_images.items())[:20]}}
    path = write_result(record.pop("profile"), record.pop("method"), record.pop("dataset"),
                        record.pop("split"), record.pop("backbone"), record.pop("metrics"),
                        record.pop("config"), folder=folder, **record)
    seconds = time.perf_counter() - started
    times = {"prepare_seconds": prepared.seconds, "total_seconds": seconds}
    if history is not None:
        times["train_seconds"] = history.seconds
    timings.record(profile["name"], timings.result_name(profile["name"], path), **times)
    return {"path": path, "sims": sims, "metrics": metrics, "intervals": intervals, "dev_metrics": scored.dev_metrics,
            "history": history, "prepare_seconds": prepared.seconds, "seconds": seconds}


_EXTRA_CACHE: dict[tuple, object] = {}


def method_embeddings(method: dict, backbone, splits: dict, embedded: dict[str, Embedded],
                      progress: bool = True) -> dict[str, Embedded]:
    """The splits a method trains and is tested on: ``embedded`` plus the extra inputs it asks for.

    Method keys read here (all optional):

    * ``descriptions_cache``: a cache file (path relative to the repository)
      whose texts replace the profile's descriptions for this method, e.g.
      EntityCLIP's explanations; ``descriptions`` says how many per caption.
    * ``image_texts``: ``{"cache": PATH, "captions_per_image": N}``: LLM texts
      per *training* image, looked up by the image's first N captions joined
      (:func:`osgha_lite.llm.augment.image_caption_groups`), e.g. APSE-IPIK's
      caption-derived perspectives. Dev and test images get none: texts made
      from captions must not reach a test image. With ``"source": "vision"``
      the texts were written by a vision model from the pixels
      (``augment --vision``) and are looked up by the image's path relative
      to the data root.
    * ``local``: ``true`` loads the backbone's local features (HGAN).

    Extra inputs are computed once per process and shared between methods.
    """
    out = dict(embedded)
    cache = method.get("descriptions_cache")
    if cache:
        k = int(method.get("descriptions", 1))
        texts = load_cache_texts(cache)
        for split, data in splits.items():
            key = ("descriptions", cache, k, split)
            if key not in _EXTRA_CACHE:
                _EXTRA_CACHE[key] = embed_with_descriptions(backbone, data, texts, k, progress=progress)
            out[split] = _EXTRA_CACHE[key]
    image_texts = method.get("image_texts")
    if image_texts:
        from osgha_lite.llm.prompt import image_caption_groups

        for split, data in splits.items():
            key = ("image_texts", image_texts["cache"], image_texts.get("source", "captions"),
                   image_texts.get("captions_per_image"), split)
            if key not in _EXTRA_CACHE:
                texts = load_cache_texts(image_texts["cache"]) if split == "train" else {}
                if image_texts.get("source", "captions") == "vision":
                    root = data_root().resolve()
                    groups = [Path(p).resolve().relative_to(root).as_posix() for p in data.image_paths]
                else:
                    groups = image_caption_groups(data, int(image_texts["captions_per_image"]))
                _EXTRA_CACHE[key] = _embed_image_texts(backbone, data, groups, texts, progress)
            features, mask = _EXTRA_CACHE[key]
            out[split] = replace(out[split], image_texts=features, image_text_mask=mask)
    if method.get("local"):
        for split, data in splits.items():
            key = ("local", backbone.identity, split)
            if key not in _EXTRA_CACHE:
                _EXTRA_CACHE[key] = backbone.embed_local(data, progress=progress)
            out[split] = replace(out[split], local=_EXTRA_CACHE[key])
    return out


def _embed_image_texts(backbone, data, groups: list[str], texts: dict[str, list[str]],
                       progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """``[n_images, V, d]`` embeddings of each image's LLM texts (zeros and False where missing)."""
    views = max((len(v) for v in texts.values()), default=1)
    features = np.zeros((len(groups), views, backbone.dim), np.float32)
    mask = np.zeros((len(groups), views), bool)
    flat, slots = [], []
    for row, group in enumerate(groups):
        for view, text in enumerate(texts.get(group, [])[:views]):
            flat.append(text)
            slots.append((row, view))
    if flat:
        encoded = backbone.encode_texts(flat, f"{data.name}-image-texts", data.split, progress=progress)
        rows, cols = np.array(slots).T
        features[rows, cols] = encoded
        mask[rows, cols] = True
    return features, mask


def sweep_methods(profile: dict, key: str = "sweeps") -> dict[str, dict]:
    """One-at-a-time variations of the method ``profile[key]["base"]``.

    ``profile[key]`` maps an option (``k``, ``reduced_dim``, ``alpha``, any
    other adapter option, or ``descriptions`` for the number of LLM
    descriptions per caption) to the values to try. For ``key="sweeps"``
    (OS-HGAdapter's) each value gives a method named ``sweep-<option>=<value>``;
    for another key (such as ``related_sweeps``) the base's name is part of
    it: ``sweep-<base>-<option>=<value>``. Values equal to the base setting
    are skipped (the base run covers them).
    """
    sweeps = dict(profile.get(key, {}))
    if not sweeps:
        return {}
    base_name = sweeps.pop("base")
    base = profile["methods"][base_name]
    prefix = "sweep-" if key == "sweeps" else f"sweep-{base_name}-"
    methods = {}
    for option, values in sweeps.items():
        for value in values:
            if option == "descriptions":
                if value == base.get("descriptions", 0):
                    continue
                method = merge(base, {"descriptions": value})
            else:
                if base.get("options", {}).get(option) == value:
                    continue
                method = merge(base, {"options": {option: value}})
            methods[f"{prefix}{option}={value}"] = method
    return methods

"""Paper scale by simulation: time and peak memory of the paper profile's pipeline at fractions of COCO.

Run with ``python benchmarks/bench_scale.py --fractions 0.01 0.05 0.10``
(``--quick``: 0.002 0.005 0.01 with smaller encoder samples; ``--no-sweeps``:
the methods without the sweeps; ``--report build/scale/scale.json`` prints
a saved run again, with its fits recomputed and written back; options:
``--help``). It is a measurement, not a test. For each fraction :math:`f` of MS-COCO's Karpathy split
(123,287 images, 5 captions each) it builds synthetic data of that size and
runs the stages of the paper profile (``--profile paper-coco``):

1. ``images``: open_clip ViT-B-32 with ``pretrained=None`` (seeded random
   weights, nothing downloaded) through the profile's encoding path
   (``OpenClipModel.encode_local_images``: global vectors and pooled patch
   tokens in one pass, since the profile asks for local features), on
   random smooth 640 x 480 RGB images written as JPEG files, so JPEG decoding
   and preprocessing are included. On the CPU only a sample of
   ``--encode-sample`` images is encoded per fraction; the stage time is that
   sample's rate times the fraction's image count (labelled "extrapolated
   from N images").
2. ``texts``: the text tower (``encode_local_texts``) on random captions of
   8-16 words from a fixed vocabulary, same sampling rule. The texts of the
   pipeline are the captions plus their LLM texts (3 descriptions and 1
   explanation per caption, 3 perspectives per training image); the stage
   time counts all of them at the captions' rate. Writing those LLM texts is
   notebook 01's job and is not timed here. CLIP pads every text to 77
   tokens, so a text's cost does not depend on its length. The stage's peak
   memory is the sample's (batch-bound); the cached outputs grow with the
   data, and their size is printed by arithmetic from the array shapes
   (:func:`encoder_output_bytes`).
3. ``methods``: every method of notebook 03 (``profile["methods"]``, then
   ``sweep_methods(profile)`` and ``sweep_methods(profile, "related_sweeps")``)
   through :func:`osgha_lite.train.experiment.run_method` (training, test
   evaluation with the profile's protocols and bootstrap, result file), on
   random unit 512-d feature arrays with a planted image-text correspondence
   (a caption is its image's vector plus isotropic noise, so retrieval is
   above chance), plus the extra inputs the methods ask for (descriptions,
   explanations, perspectives, local features), shaped as
   :func:`osgha_lite.train.experiment.method_embeddings` shapes them. Training is
   capped at ``--epochs`` epochs; each method's seconds per epoch (its
   training time over its evaluated epochs, epoch 0 included) give the
   full-training estimate: the run's time plus its remaining configured
   epochs at that rate (an upper bound: early stopping may end sooner).
4. ``evaluation``: ``evaluate_similarity`` with the profile's protocols and
   bootstrap on one planted score matrix of the fraction's test size, and
   once at full size (COCO 5K and Flickr30K's 1K test).

Splits: ``n = round(f * 123287)`` images; test and dev have ``5 * round(f * 1000)``
images each (the 5K test scaled by :math:`f`, a multiple of 5 so that the
1K protocol keeps its shape: five folds of :math:`f \\cdot 1000` images);
the rest train. Each stage runs in a fresh process (``spawn``); its peak
memory is that process's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``
read in the child at the end), printed next to the resident set after the
imports (``base``). Then, per stage, the growth exponent :math:`b` of
:math:`y = a n^b` (least squares on log time or log memory against log
images over the fractions) and the fit's value at Flickr30K (31,783 images)
and COCO (123,287), on the CPU; the encoder stages, linear by construction,
are taken at full size as the item count over the mean measured rate. No
GPU is measured: GPU figures are pending a run on a GPU.

Threads: ``OSGHA_THREADS`` (``osgha_lite.runtime``). Seeded. Rows go to
``<out>/scale.json`` (``osgha_lite.atomic``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COCO_IMAGES, COCO_TEST = 123_287, 5_000
FLICKR30K_IMAGES, FLICKR30K_TEST = 31_783, 1_000
CAPTIONS_PER_IMAGE = 5
DIM = 512
DESCRIPTIONS, EXPLANATIONS, PERSPECTIVES = 3, 1, 3
NOISE = 6.0  # norm of a caption's noise around its image vector (unit): t2i R@1 well above chance, below 100%
VOCABULARY = ("a man woman child dog cat two people group young old red blue green white black small large "
              "standing sitting running walking playing holding riding looking wearing street park beach water "
              "grass snow field table room kitchen bed car bus train bike ball frisbee horse bird food plate "
              "pizza sandwich shirt hat on in at with near next to of the front behind under over top").split()
STAGES = ("images", "texts", "methods", "evaluation")


# ---------------------------------------------------------------------------
# Sizes and synthetic data
# ---------------------------------------------------------------------------

def split_sizes(fraction: float) -> dict[str, int]:
    """Image counts of a COCO-shaped split at ``fraction`` (see the module docstring)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_images = round(fraction * COCO_IMAGES)
    held = 5 * max(1, round(fraction * COCO_TEST / 5))
    if n_images - 2 * held < held:
        raise ValueError(f"fraction {fraction}: {n_images} images leave too few for training after "
                         f"dev and test of {held} images each; use a fraction of at least 0.001")
    return {"images": n_images, "train": n_images - 2 * held, "dev": held, "test": held}


def _unit(x: np.ndarray) -> np.ndarray:
    """Unit rows along the last axis (:func:`osgha_lite.backbones.l2_normalize` on any number of axes)."""
    from osgha_lite.backbones import l2_normalize

    return l2_normalize(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def planted_split(n_images: int, rng: np.random.Generator, dim: int = DIM, noise: float = NOISE,
                  descriptions: int = DESCRIPTIONS):
    """An :class:`osgha_lite.train.experiment.Embedded` of unit vectors: caption j of image i is
    ``normalize(v_i + noise * u)`` with ``u`` a random unit vector; descriptions likewise around their caption."""
    from osgha_lite.train.experiment import Embedded

    images = _unit(rng.standard_normal((n_images, dim), dtype=np.float32))
    text_to_image = np.repeat(np.arange(n_images), CAPTIONS_PER_IMAGE)
    texts = _unit(images[text_to_image] + noise * _unit(rng.standard_normal((len(text_to_image), dim),
                                                                          dtype=np.float32)))
    described = _unit(texts[:, None, :] + noise * _unit(rng.standard_normal((len(texts), descriptions, dim),
                                                                            dtype=np.float32)))
    return Embedded(images, texts, text_to_image, described, np.ones((len(texts), descriptions), bool))


def planted_local(embedded, rng: np.random.Generator, grid: int, tokens: int):
    """:class:`osgha_lite.backbones.LocalFeatures` around each row's vector (float16 as cached, then float32
    as ``Backbone.project_local`` returns them); captions have 8 to ``tokens`` real tokens."""
    from osgha_lite.backbones import LocalFeatures

    def around(vectors, length):
        out = np.empty((len(vectors), length, vectors.shape[1]), np.float32)
        for start in range(0, len(vectors), 4096):
            block = vectors[start:start + 4096, None, :]
            noise = rng.standard_normal((len(block), length, vectors.shape[1]), dtype=np.float32)
            out[start:start + 4096] = (block + 0.05 * noise).astype(np.float16)
        return out

    text_mask = np.arange(tokens)[None, :] < rng.integers(8, tokens + 1, len(embedded.texts))[:, None]
    return LocalFeatures(around(embedded.images, grid * grid), np.ones((len(embedded.images), grid * grid), bool),
                         around(embedded.texts, tokens), text_mask)


def simulated_inputs(method: dict, embedded: dict, extras: dict, profile: dict, rng: np.random.Generator) -> dict:
    """The splits a method runs on, with the extra inputs it asks for, shaped as
    :func:`osgha_lite.train.experiment.method_embeddings` shapes them (``extras`` caches them per process, as it does)."""
    from dataclasses import replace

    out = dict(embedded)
    if method.get("descriptions_cache"):
        k = int(method.get("descriptions", 1))
        for split, data in embedded.items():
            key = ("descriptions", k, split)
            if key not in extras:
                extras[key] = replace(data, descriptions=_unit(data.texts[:, None, :] + NOISE * _unit(
                    rng.standard_normal((len(data.texts), k, DIM), dtype=np.float32))),
                    description_mask=np.ones((len(data.texts), k), bool))
            out[split] = extras[key]
    if method.get("image_texts"):
        for split, data in embedded.items():
            key = ("image_texts", split)
            if key not in extras:
                features = np.zeros((len(data.images), PERSPECTIVES, DIM), np.float32)
                mask = np.zeros((len(data.images), PERSPECTIVES), bool)
                if split == "train":  # dev and test images get no caption-derived texts
                    features[:] = _unit(data.images[:, None, :] + NOISE * _unit(
                        rng.standard_normal((len(data.images), PERSPECTIVES, DIM), dtype=np.float32)))
                    mask[:] = True
                extras[key] = (features, mask)
            out[split] = replace(out[split], image_texts=extras[key][0], image_text_mask=extras[key][1])
    if method.get("local"):
        local = {"image_grid": 4, "text_tokens": 24, **profile["backbone"].get("local", {})}
        for split, data in embedded.items():
            key = ("local", split)
            if key not in extras:
                extras[key] = planted_local(data, rng, local["image_grid"], local["text_tokens"])
            out[split] = replace(out[split], local=extras[key])
    return out


def notebook_methods(profile: dict) -> dict[str, tuple[dict, bool]]:
    """Notebook 03's runs in its order: name -> (method, takes the method's extra inputs)."""
    from osgha_lite.train.experiment import sweep_methods

    runs = {name: (method, True) for name, method in profile["methods"].items()}
    runs.update({name: (method, False) for name, method in sweep_methods(profile).items()})
    runs.update({name: (method, True) for name, method in sweep_methods(profile, "related_sweeps").items()})
    return runs


def capped_profile(profile: dict, epochs: int | None) -> dict:
    """The profile with every method's training capped at ``epochs`` (``None``: unchanged; 0 stays 0)."""
    from osgha_lite.profiles import merge

    if epochs is None:
        return profile
    capped = merge(profile, {"adapter_training": {"train": {"epochs": min(
        epochs, profile["adapter_training"]["train"]["epochs"])}}})
    for name, method in capped["methods"].items():
        if "epochs" in method.get("train", {}):
            method["train"]["epochs"] = min(epochs, method["train"]["epochs"])
    return capped


def configured_epochs(profile: dict, method: dict) -> int:
    return int(method.get("train", {}).get("epochs", profile["adapter_training"]["train"]["epochs"]))


# ---------------------------------------------------------------------------
# Stages (each runs in its own process)
# ---------------------------------------------------------------------------

def _rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare_child(seed: int) -> float:
    """Seed and threads (``osgha_lite.runtime``); returns the resident MiB after the imports."""
    import torch  # noqa: F401  (part of the baseline)

    from osgha_lite.train import experiment  # noqa: F401
    from osgha_lite.runtime import DEFAULT_THREADS, seed_everything

    seed_everything(seed, DEFAULT_THREADS)
    return _rss_mib()


def random_images(folder: Path, n: int, rng: np.random.Generator, size=(640, 480)) -> list[Path]:
    """``n`` smooth random RGB JPEGs (a 16 x 12 random colour grid upsampled, as compressible as photos)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        path = folder / f"{i:06d}.jpg"
        small.resize(size, Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def random_captions(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(VOCABULARY, rng.integers(8, 17))) for _ in range(n)]


def stage_encode(modality: str, sample: int, profile_name: str, seed: int) -> dict:
    """Encode ``sample`` random images or captions through the paper profile's open_clip path (random weights)."""
    base = _prepare_child(seed)
    from osgha_lite.profiles import load_profile
    from osgha_lite.backbones.encoders import OpenClipEncoder, OpenClipModel

    profile = load_profile(profile_name)
    options = profile["backbone"]
    local = {"image_grid": 4, "text_tokens": 24, **options.get("local", {})}
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        items = (random_images(Path(tmp), sample, rng) if modality == "image" else random_captions(sample, rng))
        started = time.perf_counter()
        model = OpenClipModel(options.get("model", "ViT-B-32"), None, seed=seed)
        load_seconds = time.perf_counter() - started
        encoder = OpenClipEncoder(model, modality)
        size = local["image_grid"] if modality == "image" else local["text_tokens"]
        started = time.perf_counter()
        vectors, tokens, _ = encoder.encode_local(items, size, batch_size=128 if modality == "image" else 256,
                                                  progress=True)
        seconds = time.perf_counter() - started
    assert vectors.shape == (sample, model.dim), vectors.shape
    return {"sample": sample, "seconds": seconds, "per_second": sample / seconds, "load_seconds": load_seconds,
            "identity": model.identity, "base_mib": base, "peak_mib": _peak_mib(), "dim": model.dim}


def stage_methods(fraction: float, profile_name: str, epochs: int | None, seed: int, skip: list[str],
                  work: str) -> dict:
    """Every run of notebook 03 on planted features of the fraction's size (see the module docstring)."""
    base = _prepare_child(seed)
    os.environ["OSGHA_CACHE_DIR"] = str(Path(work) / "cache")  # checkpoints of this run only
    os.environ["OSGHA_TIMINGS_DIR"] = str(Path(work) / "timings")  # run_method's timing log, not the project's
    from osgha_lite.profiles import load_profile
    from osgha_lite.train.experiment import run_method

    full = load_profile(profile_name)
    profile = capped_profile(full, epochs)
    sizes = split_sizes(fraction)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    embedded = {split: planted_split(sizes[split], rng) for split in ("train", "dev", "test")}
    data_seconds = time.perf_counter() - started
    extras, rows = {}, []
    runs = notebook_methods(profile)
    for index, (name, (method, with_extras)) in enumerate(runs.items(), 1):
        if name in skip:
            rows.append({"method": name, "skipped": True})
            continue
        started = time.perf_counter()
        inputs = simulated_inputs(method, embedded, extras, profile, rng) if with_extras else embedded
        inputs_seconds = time.perf_counter() - started
        run = run_method(name, method, profile, f"openclip:ViT-B-32:random-seed{seed}", inputs["train"],
                         inputs["dev"], inputs["test"], progress=False, folder=Path(work) / "results", log=None)
        history = run["history"]
        evaluated = len(history.epochs) if history is not None else 0
        per_epoch = history.seconds / evaluated if evaluated else 0.0
        full_epochs = configured_epochs(full, full["methods"].get(name, method)) if history is not None else 0
        row = {"method": name, "skipped": False, "seconds": run["seconds"], "inputs_seconds": inputs_seconds,
               "prepare_seconds": run["prepare_seconds"], "epochs_run": max(evaluated - 1, 0),
               "seconds_per_epoch": per_epoch, "configured_epochs": full_epochs,
               "full_training_seconds": run["seconds"] + max(full_epochs - max(evaluated - 1, 0), 0) * per_epoch,
               "test_rsum": run["metrics"][profile["eval"]["protocols"][0]]["rsum"],
               "test_t2i_R@1": run["metrics"][profile["eval"]["protocols"][0]]["t2i_R@1"],
               "peak_mib_so_far": _peak_mib()}
        rows.append(row)
        print(f"  [{fraction:g}] {index}/{len(runs)} {name}: {row['seconds']:.1f} s, "
              f"{per_epoch:.2f} s/epoch, rSum {row['test_rsum']:.1f}, peak {row['peak_mib_so_far']:.0f} MiB",
              flush=True)
    done = [r for r in rows if not r["skipped"]]
    return {"sizes": sizes, "rows": rows, "data_seconds": data_seconds,
            "seconds": sum(r["seconds"] + r["inputs_seconds"] for r in done),
            "full_training_seconds": sum(r["full_training_seconds"] + r["inputs_seconds"] for r in done),
            "base_mib": base, "peak_mib": _peak_mib()}


def stage_evaluation(n_test: int, protocols: list[str], n_boot: int, seed: int) -> dict:
    """``evaluate_similarity`` on one planted ``n_test x 5 n_test`` score matrix."""
    base = _prepare_child(seed)
    from osgha_lite.metrics.protocols import evaluate_similarity, similarity

    split = planted_split(n_test, np.random.default_rng(seed), descriptions=1)
    sims = similarity(split.images, split.texts)
    started = time.perf_counter()
    metrics, intervals = evaluate_similarity(sims, split.text_to_image, protocols, n_boot=n_boot, seed=seed)
    seconds = time.perf_counter() - started
    return {"n_test": n_test, "protocols": list(protocols), "bootstrap": n_boot, "seconds": seconds,
            "rsum": {p: metrics[p]["rsum"] for p in protocols}, "base_mib": base, "peak_mib": _peak_mib()}


def isolated(function, *args, in_process: bool = False):
    """Run ``function(*args)`` in a fresh spawned process (or here with ``in_process``) and return its result."""
    if in_process:
        return function(*args)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# ---------------------------------------------------------------------------
# Growth fits
# ---------------------------------------------------------------------------

def growth_fit(sizes, values) -> tuple[float, float]:
    """``(b, a)`` of the least-squares line ``log y = log a + b log n`` (needs two or more sizes)."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(values, float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a growth fit needs at least two different sizes, got {list(sizes)}")
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(math.exp(intercept))


def extrapolate(sizes, values, target: float) -> float:
    slope, scale = growth_fit(sizes, values)
    return scale * target ** slope


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def stage_rows(fraction: float, sizes: dict, images: dict, texts: dict, methods: dict, evaluation: dict) -> list[dict]:
    """One row per stage of one fraction (the table and the JSON)."""
    n_images, n_captions = sizes["images"], sizes["images"] * CAPTIONS_PER_IMAGE
    n_texts = pipeline_texts(n_images, sizes["train"])
    common = {"fraction": fraction, "n_images": n_images, "n_captions": n_captions}
    return [
        {**common, "stage": "images", "seconds": n_images / images["per_second"], "peak_mib": images["peak_mib"],
         "base_mib": images["base_mib"], "measured_items": images["sample"],
         "note": f"extrapolated from {images['sample']} images ({images['per_second']:.2f} images/s)"},
        {**common, "stage": "texts", "seconds": n_texts / texts["per_second"], "peak_mib": texts["peak_mib"],
         "base_mib": texts["base_mib"], "measured_items": texts["sample"], "n_texts": n_texts,
         "note": f"{n_texts} texts, extrapolated from {texts['sample']} captions ({texts['per_second']:.1f} texts/s)"},
        {**common, "stage": "methods", "seconds": methods["seconds"], "peak_mib": methods["peak_mib"],
         "base_mib": methods["base_mib"], "full_training_seconds": methods["full_training_seconds"],
         "methods": methods["rows"], "sizes": sizes,
         "note": f"{sum(not r['skipped'] for r in methods['rows'])} runs measured"},
        {**common, "stage": "evaluation", "seconds": evaluation["seconds"], "peak_mib": evaluation["peak_mib"],
         "base_mib": evaluation["base_mib"], "n_test": evaluation["n_test"],
         "note": f"{evaluation['n_test']} test images, {'+'.join(evaluation['protocols'])}, "
                 f"bootstrap {evaluation['bootstrap']}"},
    ]


def print_table(rows: list[dict]) -> None:
    print(f"\n{'stage':<11}{'fraction':>9}{'images':>9}{'captions':>10}{'seconds':>11}{'peak MiB':>10}"
          f"{'base MiB':>10}  note")
    for row in rows:
        print(f"{row['stage']:<11}{row['fraction']:>9g}{row['n_images']:>9}{row['n_captions']:>10}"
              f"{row['seconds']:>11.{1 if row['seconds'] >= 10 else 3}f}{row['peak_mib']:>10.0f}"
              f"{row['base_mib']:>10.0f}  {row['note']}")


def print_methods(rows: list[dict]) -> None:
    """Per run of notebook 03: seconds at each fraction (epochs capped), s/epoch and the full-epoch
    estimate at the largest fraction, and the time exponent over the fractions."""
    stages = [r for r in rows if r["stage"] == "methods"]
    if not stages:
        return
    sizes = [r["n_images"] for r in stages]
    print(f"\n{'run (notebook 03)':<36}" + "".join(f"{'s @' + format(r['fraction'], 'g'):>10}" for r in stages)
          + f"{'s/epoch':>9}{'full-epoch s':>13}{'b time':>8}")
    for index, first in enumerate(stages[0]["methods"]):
        if first["skipped"]:
            continue
        series = [r["methods"][index] for r in stages]
        last = series[-1]
        b = (growth_fit(sizes, [max(m["seconds"], 0.05) for m in series])[0]
             if len(set(sizes)) > 1 else float("nan"))
        print(f"{first['method']:<36}" + "".join(f"{m['seconds']:>10.1f}" for m in series)
              + f"{last['seconds_per_epoch']:>9.2f}{last['full_training_seconds']:>13.1f}{b:>8.2f}")


def pipeline_texts(n_images: int, n_train: int) -> int:
    """Texts the paper profile encodes: each caption, its descriptions and explanation, and each training
    image's perspectives."""
    return CAPTIONS_PER_IMAGE * n_images * (1 + DESCRIPTIONS + EXPLANATIONS) + n_train * PERSPECTIVES


#: Full-size targets: images and training images (the rest of the 5K or 1K test and the same dev).
TARGETS = {"flickr30k": (FLICKR30K_IMAGES, FLICKR30K_IMAGES - 2 * FLICKR30K_TEST),
           "coco": (COCO_IMAGES, COCO_IMAGES - 2 * COCO_TEST)}


def summarise(rows: list[dict]) -> dict:
    """Growth exponents per stage and the values at Flickr30K and COCO size (CPU).

    The encoder stages are a sampled rate times the item count, linear by construction: their full-size
    time is the item count over the mean of the measured rates (their fitted exponent only shows how the
    rate moved between fractions). Every other value is the fit :func:`extrapolate`.
    """
    out = {}
    series = {stage: [r for r in rows if r["stage"] == stage] for stage in STAGES}
    series["methods (full epochs)"] = [{**r, "seconds": r["full_training_seconds"]} for r in series["methods"]]
    for stage, points in series.items():
        sizes = [r["n_images"] for r in points]
        if len(set(sizes)) < 2:
            continue
        time_b, _ = growth_fit(sizes, [r["seconds"] for r in points])
        memory_b, _ = growth_fit(sizes, [r["peak_mib"] for r in points])
        fit = {"time_exponent": time_b, "memory_exponent": memory_b}
        for name, (n_images, n_train) in TARGETS.items():
            if stage in ("images", "texts"):
                items = [r["n_images"] if stage == "images" else r["n_texts"] for r in points]
                rate = float(np.mean([n / r["seconds"] for n, r in zip(items, points)]))
                target = n_images if stage == "images" else pipeline_texts(n_images, n_train)
                fit[f"{name}_seconds"], fit["rate_per_second"] = target / rate, rate
            else:
                fit[f"{name}_seconds"] = extrapolate(sizes, [r["seconds"] for r in points], n_images)
            fit[f"{name}_peak_mib"] = extrapolate(sizes, [r["peak_mib"] for r in points], n_images)
        out[stage] = fit
    return out


def encoder_output_bytes(n_images: int, n_captions: int, n_llm_texts: int, profile: dict | None = None,
                         dim: int = DIM) -> int:
    """Bytes of the encoders' cached outputs (arithmetic from the array shapes, not a measurement): per image a
    float32 vector and float16 grid tokens with a mask, per caption a float32 vector and float16 token states
    with a mask, per LLM text a float32 vector."""
    local = {"image_grid": 4, "text_tokens": 24, **((profile or {}).get("backbone", {}).get("local") or {})}
    cells, tokens = local["image_grid"] ** 2, local["text_tokens"]
    return (n_images * (4 * dim + cells * (2 * dim + 1)) + n_captions * (4 * dim + tokens * (2 * dim + 1))
            + n_llm_texts * 4 * dim)


def report(data: dict) -> None:
    """Print the tables of a run (the dict written to ``scale.json``)."""
    rows = data["rows"]
    print(f"\nprofile {data['profile']}, epochs capped at {data['epochs_cap']}, {data['threads']} thread(s), "
          f"left out: {', '.join(data['skipped']) or 'nothing'}")
    print_table(rows)
    print_methods(rows)
    summary = summarise(rows) if len({r["n_images"] for r in rows}) > 1 else {}
    if not data.get("complete", True):
        print("incomplete run: the fractions so far only")
    if summary:
        print(f"\ngrowth y = a n^b over {len(data['fractions'])} fractions, and the fit at full size (CPU, "
              f"{data['threads']} thread(s); extrapolated, not measured)")
        print(f"{'stage':<22}{'b time':>8}{'b memory':>10}{'Flickr30K h':>13}{'GiB':>7}{'COCO h':>9}{'GiB':>7}")
        for stage, fit in summary.items():
            label = f"{stage} (by rate)" if "rate_per_second" in fit else stage
            print(f"{label:<22}{fit['time_exponent']:>8.2f}{fit['memory_exponent']:>10.2f}"
                  f"{fit['flickr30k_seconds'] / 3600:>13.2f}{fit['flickr30k_peak_mib'] / 1024:>7.2f}"
                  f"{fit['coco_seconds'] / 3600:>9.2f}{fit['coco_peak_mib'] / 1024:>7.2f}")
    for name, (n_images, n_train) in TARGETS.items():
        captions = CAPTIONS_PER_IMAGE * n_images
        llm = pipeline_texts(n_images, n_train) - captions
        size = encoder_output_bytes(n_images, captions, llm)
        name = {"flickr30k": "Flickr30K", "coco": "COCO"}[name]
        print(f"encoder outputs at {name} size (arithmetic from the shapes): {size / 2**30:.1f} GiB for "
              f"{n_images} images, {captions} captions and {llm} LLM texts")
    for name, result in (data.get("full_size_evaluation") or {}).items():
        print(f"measured at full size, {name}: one evaluation of {result['n_test']} test images "
              f"({'+'.join(result['protocols'])}, bootstrap {result['bootstrap']}) {result['seconds']:.2f} s, "
              f"peak {result['peak_mib']:.0f} MiB")
    print("GPU: not measured (no GPU on this machine); GPU figures are pending a run on a GPU.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.10])
    parser.add_argument("--quick", action="store_true", help="fractions 0.002 0.005 0.01, samples of 64 / 256")
    parser.add_argument("--profile", default="paper-coco")
    parser.add_argument("--epochs", type=int, default=2, help="cap on every method's training epochs")
    parser.add_argument("--encode-sample", type=int, default=256, help="images encoded per fraction")
    parser.add_argument("--text-sample", type=int, default=512, help="captions encoded per fraction")
    parser.add_argument("--skip", nargs="*", default=[], help="runs of notebook 03 to leave out (by name)")
    parser.add_argument("--no-sweeps", action="store_true",
                        help="leave out the sweeps (sweep_methods: sweeps and related_sweeps); methods only")
    parser.add_argument("--out", default="build/scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", metavar="JSON", help="print the tables of a saved scale.json and exit")
    args = parser.parse_args(argv)
    if args.report:  # the fits are recomputed from the rows and written back to the file
        from osgha_lite.atomic import atomic_write_json

        data = json.loads(Path(args.report).read_text())
        if data.get("complete", True) and len({r["n_images"] for r in data["rows"]}) > 1:
            data["growth"] = summarise(data["rows"])
            atomic_write_json(args.report, data)
        report(data)
        return 0
    if args.quick:
        args.fractions, args.encode_sample, args.text_sample = [0.002, 0.005, 0.01], 64, 256
    from osgha_lite.atomic import atomic_write_json
    from osgha_lite.profiles import load_profile

    profile = load_profile(args.profile)
    unknown = sorted(set(args.skip) - set(notebook_methods(profile)))
    if unknown:
        parser.error(f"--skip: no run named {unknown} in notebook 03 for {args.profile}")
    if args.no_sweeps:
        args.skip = sorted(set(args.skip) | (set(notebook_methods(profile)) - set(profile["methods"])))
    if args.skip:
        print(f"left out: {', '.join(args.skip)}", flush=True)
    protocols, n_boot = profile["eval"]["protocols"], profile["eval"]["bootstrap"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out))  # checkpoints and result files, removed at the end
    print(f"profile {args.profile}: {len(notebook_methods(profile)) - len(args.skip)} runs of notebook 03, "
          f"epochs capped at {args.epochs}, protocols {protocols}, bootstrap {n_boot}; "
          f"threads {os.environ.get('OSGHA_THREADS', '2')}", flush=True)
    settings = {"profile": args.profile, "fractions": sorted(args.fractions), "epochs_cap": args.epochs,
                "skipped": args.skip, "threads": int(os.environ.get("OSGHA_THREADS", "2")), "seed": args.seed}
    rows, started = [], time.perf_counter()
    try:
        for fraction in sorted(args.fractions):
            sizes = split_sizes(fraction)
            print(f"\nfraction {fraction:g}: {sizes}", flush=True)
            images = isolated(stage_encode, "image", args.encode_sample, args.profile, args.seed)
            print(f"  images: {images['per_second']:.2f} images/s over {images['sample']}", flush=True)
            texts = isolated(stage_encode, "text", args.text_sample, args.profile, args.seed)
            print(f"  texts: {texts['per_second']:.1f} texts/s over {texts['sample']}", flush=True)
            methods = isolated(stage_methods, fraction, args.profile, args.epochs, args.seed, args.skip,
                               str(work / f"f{fraction:g}"))
            evaluation = isolated(stage_evaluation, sizes["test"], protocols, n_boot, args.seed)
            rows += stage_rows(fraction, sizes, images, texts, methods, evaluation)
            print_table(rows[-4:])
            atomic_write_json(out / "scale.json", {**settings, "rows": rows, "complete": False})  # so far
        full = {name: isolated(stage_evaluation, n, p, n_boot, args.seed) for name, n, p in
                (("coco", COCO_TEST, protocols), ("flickr30k", FLICKR30K_TEST, ["all"]))}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data = {**settings, "rows": rows, "growth": summarise(rows) if len(set(args.fractions)) > 1 else {},
            "full_size_evaluation": full, "gpu": "not measured", "complete": True,
            "total_seconds": time.perf_counter() - started}
    path = atomic_write_json(out / "scale.json", data)
    report(data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

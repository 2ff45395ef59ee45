r"""Kernel fingerprint: SHA-256 digests of every computing stage on a small fixed input.

``python -m osgha_lite envcheck --fingerprint`` runs each stage below,
digests its outputs, and compares the digests with the committed
reference (:data:`REFERENCE`, made on the machine that made the committed
tables). Every stage starts from its own fixed input, so a difference names
the stage whose kernels differ, not the ones after it:

=========================  ==================================================
stage                      what is digested
=========================  ==================================================
``image_features``         EfficientNet-Lite0 vectors of 8 Flickr8k test
                           images (JPEG decoding, the OpenVINO network, the
                           pooling)
``text_features``          MiniLM vectors of 16 test captions, encoded alone
``text_features_mixed``    the same 16 captions encoded among 48 others of
                           other lengths (must equal ``text_features``: a
                           caption's vector may not depend on its batch)
``heads``                  the lite heads: one forward pass (with dropout)
                           and the gradients of one backward step
``hypergraph``             one hypergraph adapter built on a memory bank
                           (PCA basis, neighbour search, memory links) and
                           its forward pass at epoch 0, before any update
``adapter:<kind>``         the weights and training loss after one epoch of
                           each method kind (``linear``, ``bottleneck``,
                           ``hypergraph``, ``entityclip``, ``apse-ipik``,
                           ``hgan``), with the lite profile's options
``similarity_ranks``       a 200 x 1000 similarity matrix and the ranks of
                           every image and text query
``bootstrap``              one bootstrap draw of the retrieval metrics
=========================  ==================================================

The synthetic inputs come from NumPy's PCG64 generator, whose draws are the
same on every machine. A digest covers each array's name, dtype, shape and
bytes:

.. math:: d = \mathrm{SHA256}\big(\Vert_j\; \mathrm{name}_j \,\Vert\, \mathrm{dtype}_j
          \,\Vert\, \mathrm{shape}_j \,\Vert\, \mathrm{bytes}_j\big)

Equal digests mean bit-identical stages. The reference holds for the
locked environment (``requirements/lock.txt``) under
:data:`osgha_lite.runtime.PORTABLE_CPU_KERNELS` with ``OSGHA_THREADS=2``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: The committed reference digests.
REFERENCE = Path(__file__).with_name("fingerprint_reference.json")

#: Method kinds trained for one epoch, each with the options of this lite-profile method.
ADAPTER_METHODS = {
    "linear": "linear-head",
    "bottleneck": "clip-adapter",
    "hypergraph": "os-hgadapter",
    "entityclip": "entityclip",
    "apse-ipik": "apse-ipik",
    "hgan": "hgan",
}

N_IMAGES, N_CAPTIONS = 8, 16
DIM = 256


def digest(**arrays) -> str:
    """SHA-256 over ``name, dtype, shape, bytes`` of each array, in the order given (see the module docstring)."""
    hasher = hashlib.sha256()
    for name, array in arrays.items():
        if hasattr(array, "detach"):
            array = array.detach().cpu().numpy()
        array = np.ascontiguousarray(np.asarray(array))
        hasher.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()


def _unit_rows(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True).astype(np.float32)


def _flickr8k_test():
    import warnings

    from osgha_lite.data import load_dataset

    with warnings.catch_warnings():  # the images a split lists but the data root lacks are reported by envcheck
        warnings.simplefilter("ignore")
        return load_dataset("flickr8k", "test", skip_missing=True)


def stage_image_features() -> str:
    from osgha_lite.backbones.encoders import build_encoder

    paths = list(_flickr8k_test().image_paths[:N_IMAGES])
    return digest(images=build_encoder("efficientnet-lite0").encode(paths, batch_size=N_IMAGES, progress=False))


def _captions() -> tuple[list[str], list[str]]:
    """16 test captions, and 48 others of varied lengths to batch them with."""
    captions = list(_flickr8k_test().captions)
    chosen = captions[:N_CAPTIONS]
    others = sorted(captions[N_CAPTIONS:400], key=len)
    step = max(1, len(others) // 48)
    return chosen, others[::step][:48]


def stage_text_features() -> str:
    from osgha_lite.backbones.encoders import build_encoder

    chosen, _ = _captions()
    return digest(texts=build_encoder("minilm-l6-v2").encode(chosen, progress=False))


def stage_text_features_mixed() -> str:
    from osgha_lite.backbones.encoders import build_encoder

    chosen, others = _captions()
    mixed = others[:24] + chosen + others[24:]
    vectors = build_encoder("minilm-l6-v2").encode(mixed, batch_size=64, progress=False)
    return digest(texts=vectors[24:24 + N_CAPTIONS])


def stage_heads() -> str:
    import torch

    from osgha_lite.backbones import LiteHeads
    from osgha_lite.losses import CombinedLoss
    from osgha_lite.runtime import seed_everything

    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.standard_normal((64, 1280), dtype=np.float32))
    texts = torch.from_numpy(rng.standard_normal((64, 384), dtype=np.float32))
    seed_everything(0)
    heads = LiteHeads(1280, 384, DIM, input_dropout=0.5)
    heads.set_statistics(images, texts)
    heads.train()
    loss_fn = CombinedLoss({"infonce": 1.0})
    out_images, out_texts = heads.encode_images(images), heads.encode_texts(texts)
    loss = loss_fn(out_images, out_texts, torch.arange(64))
    loss.backward()
    grads = {f"grad:{name}": p.grad for name, p in heads.named_parameters()}
    return digest(images=out_images, texts=out_texts, loss=loss, **grads)


def synthetic_splits(n_train: int = 120, n_eval: int = 40, per_image: int = 2, seed: int = 2):
    """Train, dev and test :class:`~osgha_lite.train.experiment.Embedded` splits of clustered unit vectors, with
    3 descriptions per caption, 3 texts per image and local features (every input a method may read)."""
    from osgha_lite.backbones import LocalFeatures
    from osgha_lite.train.experiment import Embedded

    rng = np.random.default_rng(seed)

    def split(n_images: int) -> Embedded:
        centres = _unit_rows(rng, n_images, DIM)
        index = np.repeat(np.arange(n_images), per_image)

        def noisy(base: np.ndarray, scale: float) -> np.ndarray:
            x = base + scale * _unit_rows(rng, *base.shape)
            return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

        images = noisy(centres, 0.8)
        texts = noisy(centres[index], 0.9)
        descriptions = noisy(np.repeat(texts[:, None], 3, axis=1), 0.7)
        mask = rng.random((len(index), 3)) < 0.8
        image_texts = noisy(np.repeat(centres[:, None], 3, axis=1), 1.0)
        local = LocalFeatures(
            images=noisy(np.repeat(images[:, None], 16, axis=1), 1.5), image_mask=np.ones((n_images, 16), bool),
            texts=noisy(np.repeat(texts[:, None], 8, axis=1), 1.5),
            text_mask=np.arange(8)[None, :] < rng.integers(3, 9, size=(len(index), 1)))
        return Embedded(images, texts, index, descriptions * mask[..., None], mask, image_texts,
                        np.ones((n_images, 3), bool), local)

    return split(n_train), split(n_eval), split(n_eval)


def _profile_method(name: str) -> tuple[dict, dict]:
    from osgha_lite.profiles import load_profile

    profile = load_profile("lite")
    return profile, profile["methods"][name]


def method_splits(method: dict) -> tuple:
    """:func:`synthetic_splits` with only the extra inputs ``method`` asks for (as
    :func:`osgha_lite.train.experiment.method_embeddings` gives them)."""
    from dataclasses import replace

    splits = synthetic_splits()
    return tuple(replace(split, image_texts=split.image_texts if method.get("image_texts") else None,
                         image_text_mask=split.image_text_mask if method.get("image_texts") else None,
                         local=split.local if method.get("local") else None) for split in splits)


def stage_hypergraph() -> str:
    import torch

    from osgha_lite.train.experiment import prepare_method
    from osgha_lite.train.fit import encode_split

    profile, method = _profile_method(ADAPTER_METHODS["hypergraph"])
    train, dev, test = method_splits(method)
    prepared = prepare_method(method, profile, train, dev, test)
    adapter = prepared.adapter.eval()
    links = prepared.test.text_context.links
    with torch.no_grad():
        images, texts = encode_split(adapter, prepared.test)
    return digest(down=adapter.down.weight, neighbours=links.neighbour_rows, pairs=links.pair_rows,
                  cohesion=links.cohesion, images=images, texts=texts)


def stage_adapter(kind: str) -> Callable[[], str]:
    def run() -> str:
        from osgha_lite.train.experiment import prepare_method
        from osgha_lite.train.fit import TrainConfig, fit

        profile, method = _profile_method(ADAPTER_METHODS[kind])
        train, dev, test = method_splits(method)
        prepared = prepare_method(method, profile, train, dev, test)
        config = TrainConfig.from_dict({**prepared.train_config.__dict__, "epochs": 1, "batch_size": 60,
                                        "patience": 1})
        history = fit(prepared.adapter, prepared.train, prepared.dev, config, progress=False)
        # the state after the epoch, whichever epoch early stopping keeps
        losses = np.array([epoch["train_loss"] for epoch in history.epochs[1:]], np.float64)
        return digest(loss=losses, **{name: p for name, p in prepared.adapter.state_dict().items()})
    return run


def _similarities():
    rng = np.random.default_rng(3)
    images = _unit_rows(rng, 200, DIM)
    texts = _unit_rows(rng, 1000, DIM) + 0.6 * np.repeat(images, 5, axis=0)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    import torch

    return (torch.from_numpy(images) @ torch.from_numpy(texts.astype(np.float32)).T).numpy(), np.repeat(
        np.arange(200), 5)


def stage_similarity_ranks() -> str:
    from osgha_lite.metrics.retrieval import query_ranks

    sims, text_to_image = _similarities()
    ranks = query_ranks(sims, text_to_image)
    return digest(sims=sims, image_ranks=ranks.image_ranks, text_ranks=ranks.text_ranks)


def stage_bootstrap() -> str:
    from osgha_lite.metrics.bootstrap import bootstrap_metrics

    sims, text_to_image = _similarities()
    intervals = bootstrap_metrics(sims, text_to_image, n_boot=50, seed=0)
    return digest(**{name: np.array(value, np.float64) for name, value in sorted(intervals.items())})


#: Every stage in the order it runs.
STAGES: dict[str, Callable[[], str]] = {
    "image_features": stage_image_features,
    "text_features": stage_text_features,
    "text_features_mixed": stage_text_features_mixed,
    "heads": stage_heads,
    "hypergraph": stage_hypergraph,
    **{f"adapter:{kind}": stage_adapter(kind) for kind in ADAPTER_METHODS},
    "similarity_ranks": stage_similarity_ranks,
    "bootstrap": stage_bootstrap,
}


def compute(stages: list[str] | None = None) -> dict[str, dict]:
    """``stage -> {"digest", "seconds"}`` for ``stages`` (default: all), in :data:`STAGES` order."""
    from osgha_lite.runtime import seed_everything

    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown fingerprint stages {unknown}; known: {', '.join(STAGES)}")
    seed_everything(0)
    out = {}
    for name, stage in STAGES.items():
        if stages and name not in stages:
            continue
        started = time.perf_counter()
        out[name] = {"digest": stage(), "seconds": time.perf_counter() - started}
    return out


def load_reference(path: str | os.PathLike = REFERENCE) -> dict[str, str]:
    """The reference digests, ``stage -> digest``; a clear error when the file is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the fingerprint reference ({error})") from None
    digests = data.get("digests") if isinstance(data, dict) else None
    if not isinstance(digests, dict) or not all(isinstance(v, str) and len(v) == 64 for v in digests.values()):
        raise ValueError(f"{path}: field 'digests' must map stage names to 64-character SHA-256 digests")
    return digests


def compare(found: dict[str, dict], reference: dict[str, str]) -> list[str]:
    """Names of the stages whose digest differs from (or is missing in) ``reference``, in run order."""
    return [name for name, value in found.items() if reference.get(name) != value["digest"]]


def write_reference(found: dict[str, dict], path: str | os.PathLike = REFERENCE) -> Path:
    """Store ``found`` as the reference, with the kernel settings and machine it was made under."""
    import platform

    from osgha_lite.atomic import atomic_write_json
    from osgha_lite.runtime import PORTABLE_CPU_KERNELS

    record = {"digests": {name: value["digest"] for name, value in found.items()},
              "environment": {name: os.environ.get(name) for name in (*PORTABLE_CPU_KERNELS, "OSGHA_THREADS")},
              "machine": {"processor": _cpu_model(), "python": platform.python_version()}}
    return atomic_write_json(Path(path), record)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def report(found: dict[str, dict], reference: dict[str, str]) -> tuple[list[str], list[str]]:
    """Lines of a report and the differing stages (the text ``envcheck --fingerprint`` prints)."""
    differing = compare(found, reference)
    lines = []
    for name, value in found.items():
        status = "OK  " if name not in differing else "DIFF"
        lines.append(f"{status}  {name:<22} {value['digest'][:16]}  ({value['seconds']:.1f} s)"
                     + ("" if name not in differing else f"  reference {reference.get(name, 'missing')[:16]}"))
    mixed = found.get("text_features_mixed", {}).get("digest")
    if mixed is not None and "text_features" in found and mixed != found["text_features"]["digest"]:
        lines.append("FAIL  text_features_mixed differs from text_features: a caption's vector depends on "
                     "the captions batched with it")
        if "text_features_mixed" not in differing:
            differing.append("text_features_mixed")
    return lines, differing


def main(argv: list[str] | None = None) -> int:
    """``python -m osgha_lite.pipeline.fingerprint`` (also ``python -m osgha_lite envcheck --fingerprint``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m osgha_lite envcheck --fingerprint", description=(
        "Digest each computing stage on a small fixed input and name the first stage that differs "
        "from the committed reference"))
    parser.add_argument("--stages", nargs="+", metavar="STAGE", help=f"run only these ({', '.join(STAGES)})")
    parser.add_argument("--reference", default=str(REFERENCE), help="reference file (default: the committed one)")
    parser.add_argument("--write-reference", action="store_true",
                        help="store this machine's digests as the reference (after a deliberate change)")
    parser.add_argument("--json", metavar="FILE", help="also write the digests found to FILE")
    args = parser.parse_args(argv)
    from osgha_lite.runtime import portable_kernel_environment

    settings = portable_kernel_environment()
    print("fingerprint under " + ", ".join(f"{k}={v}" for k, v in settings.items())
          + f", OSGHA_THREADS={os.environ.get('OSGHA_THREADS', '2')}; CPU: {_cpu_model()}", flush=True)
    started = time.perf_counter()
    found = compute(args.stages)
    if args.json:
        from osgha_lite.atomic import atomic_write_json

        atomic_write_json(Path(args.json), {name: value["digest"] for name, value in found.items()})
    if args.write_reference:
        print(f"reference written: {write_reference(found, args.reference)}")
        return 0
    try:
        reference = load_reference(args.reference)
    except ValueError as error:
        print(f"FAIL  fingerprint: {error}; `--write-reference` makes one from this machine")
        return 2
    lines, differing = report(found, reference)
    print("\n".join(lines))
    total = time.perf_counter() - started
    if differing:
        print(f"FAIL  fingerprint: first differing stage: {differing[0]} ({len(differing)} of {len(found)} differ; "
              f"{total:.0f} s). The kernels of this machine or environment compute that stage differently from "
              f"the reference machine, so regenerated tables may differ from the committed ones.")
        return 1
    print(f"OK    fingerprint: all {len(found)} stages match the reference ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

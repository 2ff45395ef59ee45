"""Training time of OS-HGAdapter (or any method of the profile) on the cached lite features (Flickr8k).

Run with ``python benchmarks/bench_adapter.py`` (options: ``--help``). It is
a measurement, not a test: it loads the profile's backbone and cached
features (training nothing but the adapter; the first run of the project's
notebooks fills the caches), prepares the method (memory bank, neighbour
searches, memory links), then trains it for a fixed number of epochs
without early stopping or checkpoints and prints

* the preparation time, split into the neighbour searches and the rest;
* seconds per epoch, split into the training pass and the dev evaluation
  that follows each epoch;
* the total training time of the method as the profile runs it (its own
  epochs and patience, early stopping on dev rSum);
* for methods with extra inputs (``--method entityclip``, ``apse-ipik``,
  ``hgan``), the memory those inputs hold (HGAN's local features dominate).

Times are wall-clock on this machine with ``--threads`` torch threads;
other processes on the machine change them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osgha_lite.train import experiment  # noqa: E402
from osgha_lite.backbones import build_backbone  # noqa: E402
from osgha_lite.profiles import notebook_profile  # noqa: E402
from osgha_lite.data import load_profile_split  # noqa: E402
from osgha_lite.train.experiment import (  # noqa: E402
    embed_with_descriptions,
    load_profile_augmentations,
    method_embeddings,
    prepare_method,
)
from osgha_lite.train.fit import evaluate, fit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lite")
    parser.add_argument("--method", default="os-hgadapter", help="a name in the profile's methods")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the fixed-length timing run")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    profile = notebook_profile(args.profile)
    if args.method not in profile["methods"]:
        raise SystemExit(f"profile {args.profile!r} has no method {args.method!r}; "
                         f"methods: {', '.join(profile['methods'])}")
    method = profile["methods"][args.method]
    started = time.perf_counter()
    backbone = build_backbone(profile, progress=False)
    augmentations = load_profile_augmentations(profile)
    n_descriptions = profile["augmentation"]["descriptions"]
    splits = {s: load_profile_split(profile, s) for s in ("train", "dev", "test")}
    embedded = {s: embed_with_descriptions(backbone, data, augmentations, n_descriptions, progress=False)
                for s, data in splits.items()}
    embedded = method_embeddings(method, backbone, splits, embedded, progress=False)
    extra_bytes = sum(a.nbytes for e in embedded.values() for a in (
        [e.image_texts] if e.image_texts is not None else []) + (
        [e.local.images, e.local.texts] if e.local is not None else []))
    print(f"{args.method} on {profile['dataset']} ({args.profile}), {args.threads} threads")
    print(f"load backbone and cached features        {time.perf_counter() - started:8.1f} s")
    print(f"train: {len(embedded['train'].images)} images, {len(embedded['train'].texts)} captions "
          f"({embedded['train'].description_coverage:.0%} with descriptions)")
    if extra_bytes:
        print(f"extra inputs in memory (all splits)      {extra_bytes / 2**20:8.0f} MiB")

    experiment._TABLE_CACHE.clear()
    prepared = prepare_method(method, profile, embedded["train"], embedded["dev"], embedded["test"])
    print(f"prepare (memory, searches, links)        {prepared.seconds:8.1f} s")
    again = prepare_method(method, profile, embedded["train"], embedded["dev"], embedded["test"])
    print(f"prepare again (searches cached)          {again.seconds:8.1f} s")
    adapter = prepared.adapter
    print(f"trainable parameters                     {sum(p.numel() for p in adapter.parameters()):8d}")

    fixed = dataclasses.replace(prepared.train_config, epochs=args.epochs, patience=args.epochs + 1)
    history = fit(adapter, prepared.train, prepared.dev, fixed, checkpoint=None, progress=False)
    per_epoch = history.seconds / len(history.epochs)
    start = time.perf_counter()
    evaluate(adapter, prepared.dev)
    dev_seconds = time.perf_counter() - start
    print(f"seconds per epoch (train + dev eval)     {per_epoch:8.2f} s   over {len(history.epochs)} epochs")
    print(f"  of which the dev evaluation            {dev_seconds:8.2f} s")

    rerun = prepare_method(method, profile, embedded["train"], embedded["dev"], embedded["test"])
    history = fit(rerun.adapter, rerun.train, rerun.dev, rerun.train_config, checkpoint=None, progress=False)
    print(f"training as profiled ({rerun.train_config.epochs} epochs max, patience {rerun.train_config.patience}): "
          f"{len(history.epochs)} epochs, best {history.best_epoch}, {history.seconds:.1f} s, "
          f"dev rSum {history.best_rsum:.1f}")
    print(f"total training time incl. preparation    {prepared.seconds + history.seconds:8.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

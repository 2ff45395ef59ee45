"""Feature-extraction throughput of the lite encoders (prints figures; asserts nothing).

Usage: OSGHA_DATA_ROOT=... python benchmarks/bench_features.py [n_images] [n_captions] [rounds]

Encodes the first n_images test images of Flickr8k without the cache, side by
side in one process on the same images, with three image variants:

* ``current``: the default encoder (PyTorch, the features the tables use);
* ``channels-last``: the same PyTorch weights in channels-last memory layout;
* ``openvino``: ``build_encoder("efficientnet-lite0", runtime="openvino")``.

The variants run in turn, ``rounds`` times (default 2), and each one's best
round is reported, so that load from other processes on a shared machine
biases the ratios less. Times include JPEG decoding and preprocessing; the
decode share is the time the variant's own decoding takes (serial for the
PyTorch loops, on the decoding threads for OpenVINO) over its total time.
Agreement is measured against the current encoder's features: max absolute
difference and the smallest cosine over the images. Threads: OSGHA_THREADS
(default 2). Then n_captions test captions (default 2000) are encoded once.
"""

from __future__ import annotations

import copy
import sys
import time

import numpy as np
import torch

from osgha_lite.data import load_dataset
from osgha_lite.encoders import IMAGENET_MEAN, IMAGENET_STD, build_encoder
from osgha_lite.fast_images import OpenVinoFeatureMaps
from osgha_lite.runtime import DEFAULT_THREADS, seed_everything


def channels_last_encode(encoder, paths, batch_size: int) -> np.ndarray:
    """The current encoder's computation with the network and batches in channels-last layout."""
    model = getattr(encoder, "_channels_last", None)
    if model is None:
        model = encoder._channels_last = copy.deepcopy(encoder.model).to(memory_format=torch.channels_last)
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([encoder.preprocess(p) for p in paths[start:start + batch_size]])
            batch = ((batch - encoder.mean) / encoder.std).contiguous(memory_format=torch.channels_last)
            out.append(model.extract_features(batch).mean(dim=(2, 3)).numpy())
    return np.concatenate(out)


def agreement(features: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max |features - reference|, min over rows of the cosine between them)."""
    cosine = (features * reference).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(reference, axis=1)
    return float(np.abs(features - reference).max()), float(cosine.min())


def main() -> None:
    n_images = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    n_captions = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    batch_size = 64
    seed_everything(0)
    data = load_dataset("flickr8k", "test", skip_missing=True)
    paths = data.image_paths[:n_images]
    current = build_encoder("efficientnet-lite0", device="cpu")
    fast = build_encoder("efficientnet-lite0", runtime="openvino")
    variants = {
        "current": lambda: current.encode(paths, batch_size=batch_size, progress=False),
        "channels-last": lambda: channels_last_encode(current, paths, batch_size),
        "openvino": lambda: fast.encode(paths, batch_size=batch_size, progress=False),
    }
    decoders = {
        "current": lambda: [current.preprocess(p) for p in paths],
        "channels-last": lambda: [current.preprocess(p) for p in paths],
        "openvino": lambda: [fast.fast.decode(paths[s:s + batch_size], fast.pixels)
                             for s in range(0, len(paths), batch_size)],
    }
    started = time.perf_counter()
    fast.fast  # convert and compile once, outside the timings
    print(f"threads: {DEFAULT_THREADS}; OpenVINO conversion and compilation: {time.perf_counter() - started:.1f} s "
          f"(once per process); {n_images} Flickr8k test images, batch {batch_size}, best of {rounds} rounds")
    current.encode(paths[:8], progress=False)  # load weights, warm up
    channels_last_encode(current, paths[:8], batch_size)
    fast.encode(paths[:8], progress=False)
    seconds = {name: float("inf") for name in variants}
    decode_seconds = {name: float("inf") for name in variants}
    features = {}
    for _ in range(rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            features[name] = run()
            seconds[name] = min(seconds[name], time.perf_counter() - started)
            started = time.perf_counter()
            decoders[name]()
            decode_seconds[name] = min(decode_seconds[name], time.perf_counter() - started)
    print(f"{'variant':<14} {'images/s':>9} {'vs current':>10} {'decode share':>12} {'max |diff|':>11} {'min cosine':>11}")
    for name in variants:
        rate = n_images / seconds[name]
        diff, cosine = agreement(features[name], features["current"])
        print(f"{name:<14} {rate:9.1f} {seconds['current'] / seconds[name]:9.2f}x "
              f"{decode_seconds[name] / seconds[name]:11.1%} {diff:11.2e} {cosine:11.8f}")
    again = fast.encode(paths, batch_size=batch_size, progress=False)
    pixels = fast.fast.decode(paths[:batch_size], fast.pixels)
    maps = [OpenVinoFeatureMaps(fast.identity, fast.model, fast.model.extract_features, fast.image_size,
                                IMAGENET_MEAN, IMAGENET_STD, threads=threads)(pixels) for threads in (1, 2)]
    print(f"openvino run twice bit-identical: {np.array_equal(again, features['openvino'])}; "
          f"1 vs 2 threads bit-identical (first {len(pixels)} images): {torch.equal(maps[0], maps[1])}")

    text_encoder = build_encoder("minilm-l6-v2")
    text_encoder.encode(data.captions[:8], progress=False)
    started = time.perf_counter()
    text_encoder.encode(data.captions[:n_captions], batch_size=256, progress=False)
    text_seconds = time.perf_counter() - started
    print(f"captions: {n_captions} in {text_seconds:.1f} s = {n_captions / text_seconds:.1f} captions/s")
    for name in ("current", "openvino"):
        print(f"estimated full Flickr8k (8,091 images, 40,455 captions) with {name} images: "
              f"{8091 * seconds[name] / n_images / 60 + 40455 * text_seconds / n_captions / 60:.1f} min")


if __name__ == "__main__":
    main()

"""Feature-extraction throughput of the lite encoders (prints figures; asserts nothing).

Usage: OSGHA_DATA_ROOT=... python benchmarks/bench_features.py [n_images] [n_captions] [rounds]

Encodes the first n_images test images of Flickr8k without the cache, side by
side in one process on the same images, with three image variants:

* ``pytorch``: ``runtime="torch"``, the PyTorch loop (the default before
  OpenVINO became it; the reference of the ratios);
* ``channels-last``: the same PyTorch weights in channels-last memory layout;
* ``openvino``: the default, ``build_encoder("efficientnet-lite0")``.

The variants run in turn, ``rounds`` times (default 2), and each one's best
round is reported, so that load from other processes on a shared machine
biases the ratios less. Times include JPEG decoding and preprocessing; the
decode share is the time the variant's own decoding takes (serial for the
PyTorch loops, on the decoding threads for OpenVINO) over its total time.
Agreement is measured against the PyTorch loop's features: max absolute
difference and the smallest cosine over the images. Threads: OSGHA_THREADS
(default 2). Then the first n_captions test captions (default 2000) are
encoded side by side, best of ``rounds``, by three text variants:

* ``pytorch, given order``: sentence-transformers on batches of 256 in the
  given order (the text path before length ordering and OpenVINO);
* ``pytorch, by length``: ``runtime="torch"``, batches of similar lengths;
* ``openvino, by length``: the default ``build_encoder("minilm-l6-v2")``.
"""

from __future__ import annotations

import copy
import sys
import time

import numpy as np
import torch

from osgha_lite.data import load_dataset
from osgha_lite.backbones.encoders import IMAGENET_MEAN, IMAGENET_STD, build_encoder
from osgha_lite.backbones.openvino import OpenVinoFeatureMaps
from osgha_lite.runtime import DEFAULT_THREADS, seed_everything


def channels_last_encode(encoder, paths, batch_size: int) -> np.ndarray:
    """The PyTorch encoder's computation with the network and batches in channels-last layout."""
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


def best_of(rounds: int, variants: dict) -> tuple[dict[str, float], dict]:
    """Run every variant (a name -> callable dict) in turn, ``rounds`` times; each one's shortest
    wall time and its last output."""
    seconds = {name: float("inf") for name in variants}
    outputs = {}
    for _ in range(rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            outputs[name] = run()
            seconds[name] = min(seconds[name], time.perf_counter() - started)
    return seconds, outputs


def main() -> None:
    n_images = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    n_captions = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    batch_size = 64
    seed_everything(0)
    data = load_dataset("flickr8k", "test", skip_missing=True)
    paths = data.image_paths[:n_images]
    current = build_encoder("efficientnet-lite0", device="cpu", runtime="torch")
    fast = build_encoder("efficientnet-lite0", runtime="openvino")
    variants = {
        "pytorch": lambda: current.encode(paths, batch_size=batch_size, progress=False),
        "channels-last": lambda: channels_last_encode(current, paths, batch_size),
        "openvino": lambda: fast.encode(paths, batch_size=batch_size, progress=False),
    }
    decoders = {
        "pytorch": lambda: [current.preprocess(p) for p in paths],
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
    seconds, features = best_of(rounds, variants)
    decode_seconds, _ = best_of(rounds, decoders)
    print(f"{'variant':<14} {'images/s':>9} {'vs pytorch':>10} {'decode share':>12} {'max |diff|':>11} {'min cosine':>11}")
    for name in variants:
        rate = n_images / seconds[name]
        diff, cosine = agreement(features[name], features["pytorch"])
        print(f"{name:<14} {rate:9.1f} {seconds['pytorch'] / seconds[name]:9.2f}x "
              f"{decode_seconds[name] / seconds[name]:11.1%} {diff:11.2e} {cosine:11.8f}")
    again = fast.encode(paths, batch_size=batch_size, progress=False)
    pixels = fast.fast.decode(paths[:batch_size], fast.pixels)
    maps = [OpenVinoFeatureMaps(fast.identity, fast.model, fast.model.extract_features, fast.image_size,
                                IMAGENET_MEAN, IMAGENET_STD, threads=threads)(pixels) for threads in (1, 2)]
    print(f"openvino run twice bit-identical: {np.array_equal(again, features['openvino'])}; "
          f"1 vs 2 threads bit-identical (first {len(pixels)} images): {torch.equal(maps[0], maps[1])}")

    captions = list(data.captions[:n_captions])
    torch_text = build_encoder("minilm-l6-v2", device="cpu", runtime="torch")
    fast_text = build_encoder("minilm-l6-v2", runtime="openvino")

    def given_order():
        return np.concatenate([torch_text.model.encode(captions[s:s + 256], batch_size=256, convert_to_numpy=True,
                                                       show_progress_bar=False)
                               for s in range(0, len(captions), 256)]).astype(np.float32)

    text_variants = {
        "pytorch, given order": given_order,
        "pytorch, by length": lambda: torch_text.encode(captions, progress=False),
        "openvino, by length": lambda: fast_text.encode(captions, progress=False),
    }
    started = time.perf_counter()
    fast_text.encode(captions[:8], progress=False)  # convert and compile once, outside the timings
    torch_text.encode(captions[:8], progress=False)
    print(f"\n{n_captions} Flickr8k test captions, batch 256, best of {rounds} rounds (text OpenVINO conversion "
          f"and first batch: {time.perf_counter() - started:.1f} s)")
    text_seconds, text_features = best_of(rounds, text_variants)
    reference = "pytorch, given order"
    print(f"{'variant':<22} {'captions/s':>10} {'vs given order':>14} {'max |diff|':>11} {'min cosine':>11}")
    for name in text_variants:
        diff, cosine = agreement(text_features[name], text_features[reference])
        print(f"{name:<22} {n_captions / text_seconds[name]:10.1f} {text_seconds[reference] / text_seconds[name]:13.2f}x "
              f"{diff:11.2e} {cosine:11.8f}")
    for image_name, text_name in (("pytorch", "pytorch, given order"), ("openvino", "openvino, by length")):
        print(f"estimated full Flickr8k (8,091 images, 40,455 captions), {image_name} images + {text_name} texts: "
              f"{8091 * seconds[image_name] / n_images / 60 + 40455 * text_seconds[text_name] / n_captions / 60:.1f} min")

if __name__ == "__main__":
    main()

"""Feature-extraction throughput of the lite encoders (prints figures; asserts nothing).

Usage: OSGHA_DATA_ROOT=... python benchmarks/bench_features.py [n_images] [n_captions]

Encodes the first n_images test images and n_captions test captions of
Flickr8k without the cache and prints items per second, including JPEG
decoding and preprocessing for images.
"""

from __future__ import annotations

import sys
import time

from osgha_lite.data import load_dataset
from osgha_lite.encoders import build_encoder
from osgha_lite.runtime import seed_everything


def main() -> None:
    n_images = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    n_captions = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    seed_everything(0)
    data = load_dataset("flickr8k", "test", skip_missing=True)
    image_encoder, text_encoder = build_encoder("efficientnet-lite0"), build_encoder("minilm-l6-v2")
    image_encoder.encode(data.image_paths[:8], progress=False)  # load weights, warm up
    text_encoder.encode(data.captions[:8], progress=False)
    started = time.perf_counter()
    image_encoder.encode(data.image_paths[:n_images], batch_size=64, progress=False)
    image_seconds = time.perf_counter() - started
    started = time.perf_counter()
    text_encoder.encode(data.captions[:n_captions], batch_size=256, progress=False)
    text_seconds = time.perf_counter() - started
    print(f"images:   {n_images} in {image_seconds:.1f} s = {n_images / image_seconds:.1f} images/s")
    print(f"captions: {n_captions} in {text_seconds:.1f} s = {n_captions / text_seconds:.1f} captions/s")
    print(f"estimated full Flickr8k (8,091 images, 40,455 captions): "
          f"{8091 / (n_images / image_seconds) / 60 + 40455 / (n_captions / text_seconds) / 60:.1f} min")


if __name__ == "__main__":
    main()

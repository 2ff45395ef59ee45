"""Wall time and memory of the retrieval metrics at COCO 5K size (5,000 x 25,000).

Run with ``python benchmarks/bench_metrics.py`` (options: ``--help``). It is
a measurement, not a test: it prints, for each step, the wall time, the peak
of NumPy allocations made during the step (``tracemalloc``, measured in a
second, traced run of the same step) and the process peak RSS so far. The
score matrix itself (float32, 500 MB) is allocated before the first step, so
the traced peak is the extra memory the step needs beyond ``sims``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osgha_lite.metrics.bootstrap import bootstrap_metrics  # noqa: E402
from osgha_lite.metrics.retrieval import coco_1k_metrics, query_ranks, retrieval_metrics  # noqa: E402

MIB = 1024 * 1024


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_scores(n_images: int, captions: int, dim: int, noise: float, seed: int):
    """Structured float32 scores: each caption is a noisy copy of its image embedding."""
    rng = np.random.default_rng(seed)
    text_to_image = rng.permutation(np.repeat(np.arange(n_images), captions))
    image_emb = rng.standard_normal((n_images, dim), dtype=np.float32)
    text_emb = image_emb[text_to_image] + noise * rng.standard_normal(
        (text_to_image.size, dim), dtype=np.float32
    )
    return image_emb @ text_emb.T, text_to_image


def measure(name: str, step) -> object:
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    step()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{name:<34} {seconds:8.2f} s   extra peak {traced_peak / MIB:8.1f} MiB   "
        f"process peak RSS {peak_rss_mib():8.1f} MiB"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=5000)
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"process peak RSS at start: {peak_rss_mib():.1f} MiB")
    start = time.perf_counter()
    sims, text_to_image = make_scores(args.n_images, args.captions, 32, 1.7, args.seed)
    print(
        f"sims {sims.shape} {sims.dtype} = {sims.nbytes / MIB:.1f} MiB, built in "
        f"{time.perf_counter() - start:.2f} s; process peak RSS {peak_rss_mib():.1f} MiB"
    )
    metrics = measure("retrieval_metrics (5K)", lambda: retrieval_metrics(sims, text_to_image))
    measure("query_ranks (both directions)", lambda: query_ranks(sims, text_to_image))
    measure("coco_1k_metrics (5 folds)", lambda: coco_1k_metrics(sims, text_to_image))
    intervals = measure(
        f"bootstrap_metrics (n_boot={args.n_boot})",
        lambda: bootstrap_metrics(sims, text_to_image, n_boot=args.n_boot, seed=args.seed),
    )
    print("5K metrics:", {name: round(value, 3) for name, value in metrics.items()})
    low, high = intervals["rsum"].low, intervals["rsum"].high
    print(f"rsum 95% bootstrap interval: [{low:.2f}, {high:.2f}]")


if __name__ == "__main__":
    main()

"""Queries/s, memory and recall of top-k search and exact Recall@K over a 100,000-image, 500,000-caption gallery.

Run with ``python benchmarks/bench_gallery.py`` (options: ``--help``). It is a
measurement, not a test. The data are synthetic unit vectors in the lite
profile's joint dimension (256): images scattered around 1,000 random
centres, five noisy captions per image, captions stored in image order.

It prints, side by side, for text -> image queries (a seeded sample of
``--queries`` captions against all images) and image -> text queries
(``--image-queries`` images against all captions):

- ``dense``: the NumPy reference (``osgha_lite.metrics.gallery.dense_search``), score
  blocks of ``--block`` queries x the whole gallery, top k by argpartition;
- ``faiss flat``: FAISS ``IndexFlatIP``, exact;
- ``faiss ivf``: ``IndexIVFFlat`` at each ``--nprobe`` (and ``faiss hnsw``
  with ``--hnsw``), with its recall@k against the exact top k.

Each row gives queries/s, the speed-up over dense, the peak memory of the step
(the larger of ``tracemalloc``'s peak, which sees NumPy's allocations, and the
growth of resident memory sampled every 5 ms, which also sees FAISS's own; an
IVF row includes building the index) and R@1/R@k of the retrieved lists
against the ground truth (the query's image, or any caption of the query image). Then it times the
blockwise exact Recall@K (``blockwise_retrieval_metrics``, both directions) on
the first ``--eval-images`` images and their captions, next to
``metrics.retrieval_metrics`` on the full matrix at a size where it fits (and
checks that the two agree there); ``--full-eval`` evaluates all 100,000 x
500,000 (576 s on two shared cores).

Threads: ``OSGHA_THREADS`` (default 2) for OpenBLAS and FAISS. On a shared,
loaded machine absolute figures move from run to run; compare the ratios.
"""

from __future__ import annotations

import os

THREADS = os.environ.get("OSGHA_THREADS", "2")
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = THREADS  # read when the libraries load, so before numpy and faiss

import argparse  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osgha_lite.metrics.gallery import (  # noqa: E402
    GalleryIndex,
    blockwise_retrieval_metrics,
    dense_search,
    tiled_scores,
    topk_recall,
)
from osgha_lite.metrics.retrieval import retrieval_metrics  # noqa: E402

MIB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every 5 ms in a thread."""

    def __enter__(self):
        self.base = self.peak = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.extra_mib = (self.peak - self.base) / MIB


def timed(step):
    """``(result, seconds, peak MiB)``: the peak is the larger of the traced NumPy/Python allocations
    (``tracemalloc``) and the sampled growth of resident memory (which also sees FAISS's own)."""
    tracemalloc.start()
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    return result, seconds, max(traced, memory.extra_mib)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_gallery(n_images: int, captions: int, dim: int, seed: int, caption_noise: float = 3.0,
                 chunk: int = 50_000):
    """Clustered unit images and ``captions`` noisy unit captions per image (float32, built in chunks).

    An image is a random centre plus Gaussian noise of expected norm 1, a caption its image plus noise
    of expected norm ``caption_noise`` (3: cosine about 0.3 with its image, as for CLIP-like models).
    """
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((1000, dim), dtype=np.float32))
    images = np.empty((n_images, dim), dtype=np.float32)
    for start in range(0, n_images, chunk):
        stop = min(start + chunk, n_images)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(1.0 / np.sqrt(dim))
        images[start:stop] = unit_rows(centres[rng.integers(0, 1000, stop - start)] + noise)
    text_to_image = np.repeat(np.arange(n_images), captions)
    texts = np.empty((text_to_image.size, dim), dtype=np.float32)
    for start in range(0, text_to_image.size, chunk):
        stop = min(start + chunk, text_to_image.size)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(caption_noise / np.sqrt(dim))
        texts[start:stop] = unit_rows(images[text_to_image[start:stop]] + noise)
    return images, texts, text_to_image


def ground_truth_recall(found: np.ndarray, truth, k: int) -> tuple[float, float]:
    """R@1 and R@k (percent) of top-k lists; ``truth(q)`` is the boolean match of each returned index."""
    hits = truth(found[:, :k])
    return 100 * hits[:, 0].mean(), 100 * hits.any(axis=1).mean()


def search_table(title: str, queries, items, truth, args) -> None:
    k = args.k
    print(f"\n{title}: {queries.shape[0]:,} queries x {items.shape[0]:,} gallery items, d={items.shape[1]}, k={k}")
    print(f"{'method':<26}{'build s':>9}{'queries/s':>12}{'x dense':>9}{'peak MiB':>10}"
          f"{'recall@k':>10}{'R@1':>7}{'R@k':>7}")
    block = args.block or max(1, args.block_entries // items.shape[0])
    (_, dense), seconds, memory = timed(lambda: dense_search(queries, items, k, block_rows=block))
    dense_rate = queries.shape[0] / seconds

    def row(name, build_s, found, seconds, memory):
        rate = queries.shape[0] / seconds
        r1, rk = ground_truth_recall(found, truth, k)
        build = f"{build_s:9.1f}" if build_s is not None else f"{'-':>9}"
        print(f"{name:<26}{build}{rate:12,.0f}{rate / dense_rate:9.2f}{memory:10.0f}"
              f"{100 * topk_recall(found, dense):9.1f}%{r1:7.1f}{rk:7.1f}", flush=True)

    row(f"dense ({block} x {items.shape[0]:,})", None, dense, seconds, memory)
    flat, build_s, build_mem = timed(lambda: GalleryIndex.build(items, "flat", threads=int(THREADS)))
    (_, found), seconds, memory = timed(lambda: flat.search(queries, k))
    row("faiss flat (exact)", build_s, found, seconds, memory)
    del flat
    ivf, build_s, build_mem = timed(lambda: GalleryIndex.build(items, "ivf", nlist=args.nlist, seed=args.seed,
                                                               threads=int(THREADS)))
    for nprobe in args.nprobe:
        ivf.set_search_effort(nprobe=nprobe)
        (_, found), seconds, memory = timed(lambda: ivf.search(queries, k))
        row(f"faiss ivf{args.nlist} nprobe={nprobe}", build_s, found, seconds, max(memory, build_mem))
    del ivf
    if args.hnsw:
        hnsw, build_s, build_mem = timed(lambda: GalleryIndex.build(items, "hnsw", threads=int(THREADS)))
        for ef in (32, 128):
            hnsw.set_search_effort(ef_search=ef)
            (_, found), seconds, memory = timed(lambda: hnsw.search(queries, k))
            row(f"faiss hnsw32 ef={ef}", build_s, found, seconds, max(memory, build_mem))


def evaluation(images, texts, text_to_image, args) -> None:
    print("\nExact Recall@K, both directions (blockwise_retrieval_metrics vs metrics.retrieval_metrics)")
    n_check = args.check_images
    sub = text_to_image < n_check
    check_args = (images[:n_check], texts[sub], text_to_image[sub])

    def dense_metrics():
        return retrieval_metrics(tiled_scores(*check_args), check_args[2])

    reference, seconds, memory = timed(dense_metrics)
    print(f"{'dense matrix + retrieval_metrics':<44}{n_check:>8,} x {sub.sum():>8,}{seconds:9.2f} s"
          f"{memory:9.0f} MiB peak")
    blockwise, seconds, memory = timed(lambda: blockwise_retrieval_metrics(*check_args))
    print(f"{'blockwise_retrieval_metrics':<44}{n_check:>8,} x {sub.sum():>8,}{seconds:9.2f} s"
          f"{memory:9.0f} MiB peak   identical: {blockwise == reference}")
    n_eval = images.shape[0] if args.full_eval else min(args.eval_images, images.shape[0])
    sub = text_to_image < n_eval
    eval_texts = texts if sub.all() else texts[sub]
    metrics, seconds, memory = timed(lambda: blockwise_retrieval_metrics(images[:n_eval], eval_texts,
                                                                         text_to_image[sub]))
    pairs = n_eval * int(sub.sum())
    print(f"{'blockwise_retrieval_metrics':<44}{n_eval:>8,} x {sub.sum():>8,}{seconds:9.2f} s"
          f"{memory:9.0f} MiB peak   ({pairs / seconds / 1e6:,.0f} M scores/s; the full matrix would be "
          f"{4 * pairs / 2**30:,.1f} GiB)")
    print("   ", {name: round(value, 3) for name, value in metrics.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--dim", type=int, default=256, help="joint dimension (lite profile: 256)")
    parser.add_argument("--queries", type=int, default=20_000, help="text queries (a seeded sample of captions)")
    parser.add_argument("--image-queries", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block", type=int, help="query rows per dense score block (default: from --block-entries)")
    parser.add_argument("--block-entries", type=int, default=1 << 24, help="scores per dense block (16 M = 64 MiB)")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--hnsw", action="store_true", help="also build an HNSW index (slow to build)")
    parser.add_argument("--check-images", type=int, default=4_000, help="images of the dense-vs-blockwise check")
    parser.add_argument("--eval-images", type=int, default=20_000, help="images of the timed blockwise evaluation")
    parser.add_argument("--full-eval", action="store_true", help="evaluate all images and captions")
    parser.add_argument("--skip-search", action="store_true", help="only the Recall@K evaluation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"threads: {THREADS} (OSGHA_THREADS); figures on a shared machine vary, compare the ratios")
    warm = unit_rows(np.random.default_rng(1).standard_normal((2048, args.dim), dtype=np.float32))
    dense_search(warm, warm, 10)  # OpenBLAS sets up its thread buffers on the first product (~0.5 GB)
    GalleryIndex.build(warm, threads=int(THREADS)).search(warm, 10)
    (images, texts, text_to_image), seconds, memory = timed(
        lambda: make_gallery(args.images, args.captions, args.dim, args.seed))
    print(f"gallery: {images.shape[0]:,} images + {texts.shape[0]:,} captions, d={args.dim}, float32 "
          f"({(images.nbytes + texts.nbytes) / MIB:,.0f} MiB), built in {seconds:.1f} s; the full score matrix "
          f"would be {4 * images.shape[0] * texts.shape[0] / 2**30:,.0f} GiB")
    rng = np.random.default_rng(args.seed)
    text_queries = np.sort(rng.choice(texts.shape[0], min(args.queries, texts.shape[0]), replace=False))
    image_queries = np.sort(rng.choice(images.shape[0], min(args.image_queries, images.shape[0]), replace=False))

    query_images = text_to_image[text_queries]
    if not args.skip_search:
        search_table("text -> image", texts[text_queries], images,
                     lambda found: found == query_images[:, None], args)
        search_table("image -> text", images[image_queries], texts,
                     lambda found: (found >= 0) & (text_to_image[np.maximum(found, 0)] == image_queries[:, None]),
                     args)
    evaluation(images, texts, text_to_image, args)
    print(f"\nprocess peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()

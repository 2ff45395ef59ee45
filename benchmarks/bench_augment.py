"""Throughput of LLM caption augmentation, and what a full dataset would cost.

Run with ``python benchmarks/bench_augment.py`` (options: ``--help``). It is a
measurement, not a test. Without ``--host`` it starts the stand-in Ollama
server (real SmolLM2-135M GGUF) on a free port; with ``--host`` it measures
whatever Ollama server answers there (e.g. a real ``ollama serve``).

For each concurrency level it augments fresh Flickr8k dev captions (each level
its own captions and a temporary cache) and prints captions/s and generated
tokens/s (``eval_count`` summed over replies, retries included, per wall
second). Then it measures the cost of a fully cached rerun and of reading a
40,455-record cache with ``load_augmentations``, and extrapolates the time to
augment Flickr8k (40,455 captions), Flickr30K (155,070) and COCO (616,767) at
the best measured rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osgha_lite.augment import AugmentConfig, augment_captions, load_augmentations, select_captions  # noqa: E402
from tools.ollama_standin.launcher import REPO_ROOT, StandInProcess  # noqa: E402

FULL_SIZES = {"Flickr8k": 40_455, "Flickr30K": 155_070, "COCO": 616_767}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f} days"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=None, help="benchmark this Ollama server instead of starting the stand-in")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--levels", default="1,8,16,32", help="comma-separated concurrency levels")
    parser.add_argument("--per-level", type=float, default=2.0, help="captions per level = max(6, this x level)")
    parser.add_argument("--max-batch", type=int, default=None, help="stand-in --max-batch (default: the top level)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"), help="stand-in dtype")
    parser.add_argument("--threads", type=int, default=None, help="stand-in torch threads (default 1)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    os.environ.setdefault("OSGHA_DATA_ROOT", str(REPO_ROOT.parent / "shared" / "data"))
    captions = list(dict.fromkeys(select_captions("flickr8k", "dev")))

    server = None
    host = args.host
    if host is None:
        modelfile_dir = Path(tempfile.mkdtemp(prefix="bench-modelfile-"))
        from tools.ollama_standin.gguf_path import link_gguf

        (modelfile_dir / "Modelfile.smollm2").write_text((REPO_ROOT / "data/ollama/Modelfile.smollm2").read_text())
        link_gguf(modelfile_dir)
        server = StandInProcess({args.model: modelfile_dir / "Modelfile.smollm2"}, max_batch=args.max_batch or max(levels),
                                dtype=args.dtype, threads=args.threads)
        started = time.perf_counter()
        host = server.start()
        print(f"stand-in server on {host}: started in {time.perf_counter() - started:.1f} s "
              f"(max batch {args.max_batch or max(levels)}, dtype {args.dtype}, threads {args.threads or 1}, "
              f"log {server.log_path})")
    load_before = os.getloadavg()
    results: dict = {"host": host, "model": args.model, "levels": [], "loadavg_before": load_before}
    work = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    offset = 0
    try:
        print(f"{'concurrency':>11} {'captions':>8} {'seconds':>8} {'captions/s':>10} {'tokens/s':>9} {'failed':>6}")
        for level in levels:
            n = max(6, int(args.per_level * level))
            batch = captions[offset : offset + n]
            offset += n
            config = AugmentConfig(host=host, model=args.model, concurrency=level, timeout=900)
            summary = augment_captions(batch, work / f"level{level}.jsonl", config, progress=False)
            row = {
                "concurrency": level,
                "captions": n,
                "seconds": round(summary.seconds, 2),
                "captions_per_second": round(summary.captions_per_second, 3),
                "tokens_per_second": round(summary.eval_tokens / summary.seconds, 1),
                "failed": summary.failed,
                "attempts_per_caption": None,
            }
            records = [json.loads(line) for line in (work / f"level{level}.jsonl").read_text().splitlines()]
            row["attempts_per_caption"] = round(sum(r["attempts"] for r in records) / len(records), 2)
            results["levels"].append(row)
            print(f"{level:>11} {n:>8} {row['seconds']:>8.1f} {row['captions_per_second']:>10.2f} "
                  f"{row['tokens_per_second']:>9.1f} {summary.failed:>6}", flush=True)

        # a rerun over cached captions: connect + key per caption + skip
        last = levels[-1]
        batch = captions[offset - max(6, int(args.per_level * last)) : offset]
        config = AugmentConfig(host=host, model=args.model, concurrency=last)
        started = time.perf_counter()
        again = augment_captions(batch, work / f"level{last}.jsonl", config, progress=False)
        cached_seconds = time.perf_counter() - started
        assert again.cached == len(batch)
        # reading a Flickr8k-sized cache without any LLM
        template = json.loads((work / f"level{last}.jsonl").read_text().splitlines()[0])
        big = work / "big.jsonl"
        with open(big, "w", encoding="utf-8") as handle:
            for i in range(FULL_SIZES["Flickr8k"]):
                handle.write(json.dumps({**template, "key": f"{i:064x}", "caption": f"{template['caption']} #{i}"}) + "\n")
        started = time.perf_counter()
        loaded = load_augmentations(big)
        load_seconds = time.perf_counter() - started
        results["cache"] = {
            "rerun_captions": len(batch),
            "rerun_seconds": round(cached_seconds, 3),
            "rerun_ms_per_caption": round(1000 * cached_seconds / len(batch), 2),
            "load_records": len(loaded),
            "load_seconds": round(load_seconds, 3),
            "load_us_per_record": round(1e6 * load_seconds / len(loaded), 2),
        }
        print(f"cached rerun of {len(batch)} captions: {cached_seconds:.2f} s "
              f"({results['cache']['rerun_ms_per_caption']:.1f} ms/caption, includes connecting)")
        print(f"load_augmentations on {len(loaded):,} records: {load_seconds:.2f} s "
              f"({results['cache']['load_us_per_record']:.1f} us/record)")

        best = max(results["levels"], key=lambda r: r["captions_per_second"])
        results["estimates"] = {}
        print(f"estimated time at the best rate ({best['captions_per_second']:.2f} captions/s, "
              f"concurrency {best['concurrency']}):")
        for name, size in FULL_SIZES.items():
            seconds = size / best["captions_per_second"]
            results["estimates"][name] = {"captions": size, "hours": round(seconds / 3600, 1)}
            print(f"  {name:<10} {size:>8,} captions  {_hours(seconds)}")
        if server is not None:
            import httpx

            results["server_stats"] = httpx.get(f"http://{host}/standin/stats").json()
            print(f"server counters: {results['server_stats']}")
        results["loadavg_after"] = os.getloadavg()
        print(f"load average before {load_before[0]:.1f}, after {results['loadavg_after'][0]:.1f} (2 cores)")
    finally:
        if server is not None:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the portable MKL branch costs: matrix products and fingerprint stages under each MKL branch, side by side.

    python benchmarks/bench_kernels.py [--rounds 3] [--branches COMPATIBLE,STRICT AUTO]

MKL reads ``MKL_CBWR`` once, when it loads, so each branch runs in its own
process (the other portable settings of ``osgha_lite.runtime`` as they are,
``OSGHA_THREADS`` threads). The processes alternate ``--rounds`` times and
the best time of each is kept. Measured: float32 products of the shapes the
pipeline uses (a training batch through a 256-d head and a bottleneck, the
lite heads' 1280-d input, a dev similarity matrix) and three fingerprint
stages (``osgha_lite.pipeline.fingerprint``: the lite heads, the hypergraph adapter's
build and forward, one CLIP-Adapter epoch). Prints GFLOP/s, seconds and the
ratio of each branch to the first. It is a measurement, not a test; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # name: (m, k, n)
    "batch x head 500x256x256": (500, 256, 256),
    "batch x bottleneck 500x256x64": (500, 256, 64),
    "lite heads 500x1280x256": (500, 1280, 256),
    "dev similarities 1000x256x5000": (1000, 256, 5000),
}
STAGES = ("heads", "hypergraph", "adapter:bottleneck")


def child() -> None:
    """Run in a process with one MKL branch: print a JSON line of best seconds per measurement."""
    import torch

    from osgha_lite.pipeline import fingerprint
    from osgha_lite.runtime import seed_everything

    seed_everything(0)
    out = {}
    for name, (m, k, n) in SHAPES.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        repeats = max(3, int(2e9 / (2 * m * k * n)))
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        out[name] = (time.perf_counter() - started) / repeats
    for stage in STAGES:
        started = time.perf_counter()
        fingerprint.STAGES[stage]()
        out[f"stage {stage}"] = time.perf_counter() - started
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--branches", nargs="+", default=["COMPATIBLE,STRICT", "AUTO"])
    args = parser.parse_args()
    best: dict[str, dict[str, float]] = {branch: {} for branch in args.branches}
    for _ in range(args.rounds):
        for branch in args.branches:
            environment = {**os.environ, "MKL_CBWR": branch, "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, __file__, "--child"], env=environment, capture_output=True,
                                  text=True, cwd=ROOT, check=True)
            for name, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
                best[branch][name] = min(best[branch].get(name, float("inf")), seconds)
    first = args.branches[0]
    print(f"best of {args.rounds} rounds, {os.environ.get('OSGHA_THREADS', '2')} threads; ratio = time / time under "
          f"{first}")
    header = f"{'measurement':<36}" + "".join(f"{branch:>26}" for branch in args.branches)
    print(header)
    for name in best[first]:
        cells = []
        for branch in args.branches:
            seconds = best[branch][name]
            if name in SHAPES:
                m, k, n = SHAPES[name]
                cells.append(f"{2 * m * k * n / seconds / 1e9:8.1f} GFLOP/s x{seconds / best[first][name]:.2f}")
            else:
                cells.append(f"{seconds:8.2f} s x{seconds / best[first][name]:.2f}")
        print(f"{name:<36}" + "".join(f"{cell:>26}" for cell in cells))


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        sys.path.insert(0, str(ROOT))
        child()
    else:
        main()

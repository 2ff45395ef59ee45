"""Time every method and sweep of notebook 03, optionally against another checkout, side by side.

    python benchmarks/bench_training.py [--profile lite] [--compare-with PATH] [--rounds 1] [--json FILE]

Runs what notebook 03 trains and evaluates (every method of the profile,
the option sweeps and the related methods' sweeps, through
:func:`osgha_lite.train.experiment.run_method`: preparation, training with early
stopping and per-epoch dev evaluation, test encoding, bootstrap) with an
empty method-checkpoint folder, so everything is trained, and prints the
seconds of each run. The backbone and the features come from the feature
cache (``$OSGHA_CACHE_DIR`` or ``.cache``; the first run of notebooks 02-03
fills it). It is a measurement, not a test; it asserts nothing.

``--compare-with PATH`` also runs the same list with the ``osgha_lite``
package of another checkout (for example ``git worktree add /tmp/before
<commit>``), in a child process with ``PYTHONPATH=PATH``, alternating the
two checkouts ``--rounds`` times, and prints both columns and their ratio.
Each checkout reads its own features from the cache (encoder identities
differ between versions, so each finds or computes its own). Result files
go to a temporary folder; nothing committed is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def run_all(profile_name: str) -> dict[str, float]:
    """Seconds of every notebook-03 run, in notebook order (this process's ``osgha_lite``)."""
    from osgha_lite.backbones import build_backbone
    from osgha_lite.profiles import notebook_profile
    from osgha_lite.data import load_profile_split
    from osgha_lite.train.experiment import (embed_with_descriptions, load_profile_augmentations, method_embeddings,
                                       run_method, sweep_methods)
    from osgha_lite.runtime import seed_everything

    seed_everything(0)
    profile = notebook_profile(profile_name)
    started = time.perf_counter()
    backbone = build_backbone(profile, progress=False)
    augmentations = load_profile_augmentations(profile)
    k = profile["augmentation"]["descriptions"]
    splits = {"train": load_profile_split(profile, "adapt"),
              **{s: load_profile_split(profile, s) for s in ("dev", "test")}}
    embedded = {s: embed_with_descriptions(backbone, d, augmentations, k, progress=False) for s, d in splits.items()}
    seconds = {"(backbone and features from the cache)": time.perf_counter() - started}
    runs = [*profile["methods"].items(), *sweep_methods(profile).items(),
            *sweep_methods(profile, "related_sweeps").items()]
    for name, method in runs:
        started = time.perf_counter()
        inputs = method_embeddings(method, backbone, splits, embedded, progress=False)
        run_method(name, method, profile, backbone.identity, inputs["train"], inputs["dev"], inputs["test"],
                   progress=False)
        seconds[name] = time.perf_counter() - started
        print(f"  {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    return seconds


def child(checkout: Path, profile: str) -> dict[str, float]:
    """:func:`run_all` in a fresh process importing ``osgha_lite`` from ``checkout``, with empty method
    checkpoints and result folders."""
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        shared = Path(os.environ.get("OSGHA_CACHE_DIR", Path(checkout) / ".cache"))
        for part in ("features", "heads"):  # reused; adapters/ stays empty so every method trains
            (shared / part).mkdir(parents=True, exist_ok=True)
            (cache / part).symlink_to((shared / part).resolve())
        env = {**os.environ, "PYTHONPATH": str(checkout), "OSGHA_CACHE_DIR": str(cache),
               "OSGHA_RESULTS_DIR": str(Path(tmp) / "results"), "OSGHA_FIGURES_DIR": str(Path(tmp) / "figures"),
               "OSGHA_TIMINGS_DIR": str(Path(tmp) / "timings")}
        out = Path(tmp) / "seconds.json"
        code = (f"import json, sys; sys.path.insert(0, {str(checkout)!r}); sys.path.insert(1, {str(HERE.parent)!r}); "
                f"import bench_training as b; json.dump(b.run_all({profile!r}), open({str(out)!r}, 'w'))")
        subprocess.run([sys.executable, "-c", code], env=env, cwd=checkout, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lite")
    parser.add_argument("--compare-with", type=Path, help="another checkout whose osgha_lite is the reference")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two checkouts (best kept)")
    parser.add_argument("--json", type=Path, help="also write the seconds as JSON")
    args = parser.parse_args(argv)
    here = HERE.parents[1]
    checkouts = {"this": here} if args.compare_with is None else {"reference": args.compare_with.resolve(),
                                                                  "this": here}
    best: dict[str, dict[str, float]] = {label: {} for label in checkouts}
    for round_ in range(args.rounds):
        for label, checkout in checkouts.items():
            print(f"round {round_ + 1}: {label} ({checkout})", file=sys.stderr, flush=True)
            for name, value in child(checkout, args.profile).items():
                best[label][name] = min(value, best[label].get(name, float("inf")))
    names = list(best["this"])
    if "reference" in best:
        print(f"{'run':<42} {'reference s':>11} {'this s':>8} {'ratio':>6}")
        for name in names:
            ref, new = best["reference"].get(name, float("nan")), best["this"][name]
            print(f"{name:<42} {ref:11.1f} {new:8.1f} {ref / new:5.2f}x")
        total_ref = sum(v for n, v in best["reference"].items() if not n.startswith("("))
        total_new = sum(v for n, v in best["this"].items() if not n.startswith("("))
        print(f"{'all runs of notebook 03':<42} {total_ref:11.1f} {total_new:8.1f} {total_ref / total_new:5.2f}x")
    else:
        for name in names:
            print(f"{name:<42} {best['this'][name]:8.1f}")
        print(f"{'all runs of notebook 03':<42} {sum(v for n, v in best['this'].items() if not n.startswith('(')):8.1f}")
    if args.json:
        args.json.write_text(json.dumps(best, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

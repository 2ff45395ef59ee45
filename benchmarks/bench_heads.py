"""Lite-heads fits with PyTorch's dropout against the portable dropout, side by side, and whether they agree.

    python benchmarks/bench_heads.py [--profile lite] [--rounds 2]

Fits the profile's lite heads (its ``pretrain`` split, early stopping on
``dev``, no checkpoint) from the cached features, alternating two versions
of the same heads ``--rounds`` times: input dropout by ``torch.nn.Dropout``
(the reference) and by :class:`osgha_lite.methods.dropout.PortableDropout`. Prints
the best seconds of each, the seconds spent inside the dropout calls (timed
around each call), their ratios, and whether the two fits end
with identical weights (they do wherever PyTorch draws with its own generator,
that is on every CPU but Intel ones with MKL). Features come from the
feature cache (``$OSGHA_CACHE_DIR`` or ``.cache``; notebook 02 fills it). It
is a measurement, not a test; it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osgha_lite.backbones import LiteBackbone, LiteHeads  # noqa: E402
from osgha_lite.profiles import load_profile  # noqa: E402
from osgha_lite.data import load_profile_split  # noqa: E402
from osgha_lite.methods.dropout import PortableDropout  # noqa: E402
from osgha_lite.runtime import seed_everything  # noqa: E402
from osgha_lite.train.fit import fit  # noqa: E402


def one_fit(backbone: LiteBackbone, train, dev, portable: bool) -> tuple[float, float, dict]:
    """Seconds of one fit, seconds inside the dropout calls, and the trained weights."""
    options = backbone._options
    seed_everything(backbone.train_config.seed)  # the same initial weights for both versions
    heads = LiteHeads(backbone.image_encoder.dim, backbone.text_encoder.dim, options["embed_dim"],
                      options["input_dropout"])
    if not portable:
        heads.dropout = torch.nn.Dropout(options["input_dropout"])
    assert isinstance(heads.dropout, PortableDropout) == portable
    heads.set_statistics(train.images, train.texts)
    in_dropout = 0.0
    inner = heads.dropout.forward

    def timed(x):
        nonlocal in_dropout
        started = time.perf_counter()
        out = inner(x)
        in_dropout += time.perf_counter() - started
        return out

    heads.dropout.forward = timed
    started = time.perf_counter()
    fit(heads, train, dev, backbone.train_config, checkpoint=None, progress=False)
    return time.perf_counter() - started, in_dropout, {k: v.clone() for k, v in heads.state_dict().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lite")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two versions (best kept)")
    args = parser.parse_args(argv)
    seed_everything(0)
    profile = load_profile(args.profile)
    backbone = LiteBackbone.from_profile(profile)
    train = backbone._split(load_profile_split(profile, "pretrain"), progress=False)
    dev = backbone._split(load_profile_split(profile, "dev"), progress=False)
    best = {"torch.nn.Dropout": (float("inf"), 0.0), "PortableDropout": (float("inf"), 0.0)}
    weights = {}
    for round_ in range(args.rounds):
        for label in best:
            seconds, in_dropout, weights[label] = one_fit(backbone, train, dev, label == "PortableDropout")
            print(f"round {round_ + 1}: {label}: {seconds:.1f} s ({in_dropout:.1f} s in dropout)", file=sys.stderr)
            if seconds < best[label][0]:
                best[label] = (seconds, in_dropout)
    print(f"{'lite heads fit (' + profile['name'] + ')':<28} {'best s':>7} {'in dropout s':>13}")
    for label, (seconds, in_dropout) in best.items():
        print(f"{label:<28} {seconds:7.1f} {in_dropout:13.1f}")
    reference, ours = best["torch.nn.Dropout"], best["PortableDropout"]
    print(f"{'ratio':<28} {reference[0] / ours[0]:6.2f}x {reference[1] / max(ours[1], 1e-9):12.2f}x")
    same = all(torch.equal(weights["torch.nn.Dropout"][k], weights["PortableDropout"][k])
               for k in weights["torch.nn.Dropout"])
    print(f"identical trained weights: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluate a profile's trained methods on another dataset: one command.

::

    python -m osgha_lite evaluate --profile lite --dataset flickr8k-heldout --split test
    python -m osgha_lite evaluate --profile lite --dataset mydata --methods frozen-backbone os-hgadapter

What it does, in order:

1. builds the profile's backbone (:func:`osgha_lite.backbones.build_backbone`:
   for ``lite`` the projection heads are loaded from the checkpoint cache, or
   trained on the profile's ``pretrain`` images when there is none);
2. reads split ``--split`` of ``--dataset`` through
   :func:`osgha_lite.data.load_dataset` (a registered name, or whatever else
   ``load_dataset`` accepts, passed through unchanged) and embeds it
   (features cached like every other split), decoding each image once: an
   image that cannot be decoded (not an image, truncated, empty, too many
   pixels) is skipped with its captions, one warning line each, and counted
   in the summary and the result files (:func:`decodable_split`;
   ``--strict``: an error, exit code 2);
3. looks the dataset's captions up in the LLM description caches (the
   profile's cache and the same file name for the new dataset, e.g.
   ``data/augmentations/<dataset>.jsonl``) and says how many it covers; the
   methods that use descriptions run without them where none is found;
4. for each method (default: every method of the profile) reuses the trained
   checkpoint of notebook 03 (the methods train on the profile's own ``adapt``
   images, early-stop on its ``dev`` split; when no finished checkpoint
   exists it is trained on them first, with a message), scores the new split
   and writes one result file in the schema of :mod:`osgha_lite.metrics.results`
   with ``dataset`` set to the new dataset, into
   ``results/<profile>/external/<dataset>/<method>.<split>.json`` (or
   ``--out``; never in the profile's own result folder, :func:`external_folder`);
5. prints one table: R@K in percent, rSum and its 95% percentile-bootstrap
   interval over image queries (:func:`osgha_lite.metrics.bootstrap.bootstrap_metrics`).

A method whose inputs the new dataset cannot provide is skipped with a
message (:func:`missing_inputs`). The new split is a test set only: nothing
is trained or tuned on it. Every error ends the command with one line
(``error: ...``) and a non-zero exit code; ``--debug`` shows the traceback
(:mod:`osgha_lite.apps.cli`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from osgha_lite.apps.cli import add_debug_option, run_reporting_errors
from osgha_lite.data import DataError, data_root, load_dataset, load_profile_split
from osgha_lite.metrics.results import METRIC_KEYS
from osgha_lite.paths import display_path, results_root


class EvaluateError(ValueError):
    """A request that cannot be evaluated; the message says what was wrong and what to do."""


def resolve_methods(profile: dict, methods: list[str] | None) -> list[str]:
    """The requested method names (default: all of the profile's), checked against the profile."""
    known = list(profile["methods"])
    if not methods:
        return known
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise EvaluateError(f"unknown method(s) {unknown} for profile {profile['name']!r}; "
                            f"known: {', '.join(known)}")
    return list(dict.fromkeys(methods))


def load_external(dataset: str, split: str, profile: dict, limit_images: int | None = None):
    """Split ``split`` of ``dataset`` (name or anything :func:`load_dataset` accepts), with the profile's data options."""
    try:
        data = load_dataset(dataset, split, profile=profile, **profile.get("data", {}))
    except DataError as error:
        raise EvaluateError(f"cannot read dataset {dataset!r}, split {split!r}: {error}") from None
    if limit_images:
        data = data.subset(int(limit_images))
    if data.n_texts == 0:
        raise EvaluateError(f"{dataset!r}/{split}: no captions, so there is nothing to evaluate; "
                            f"to search a folder of images use python -m osgha_lite search")
    return data


def external_folder(profile: dict, dataset_name: str, out: str | Path | None = None) -> Path:
    """Where the result files go: ``out`` or ``results/<profile>/external/<dataset>``, resolved (``..`` and
    links followed) before it is checked.

    The dataset's and the profile's names must be plain names
    (:func:`osgha_lite.data.declarations.is_plain_name`). The folder may not be the
    profile's own result folder ``results/<profile>`` or any folder in it
    other than one below ``results/<profile>/external/``: those files belong
    to the profile's own runs.
    """
    from osgha_lite.data.declarations import PLAIN_NAME_RULE, is_plain_name

    for what, name in (("dataset", dataset_name), ("profile", profile["name"])):
        if not is_plain_name(name):
            raise EvaluateError(f"the {what} name {name!r} is not {PLAIN_NAME_RULE}; it would name a result folder")
    own = (results_root() / profile["name"]).resolve()
    external = own / "external"
    folder = (Path(out).expanduser() if out else external / dataset_name).resolve()
    if folder.is_relative_to(own) and not (folder.is_relative_to(external) and folder != external):
        raise EvaluateError(f"the result folder {folder} is inside the profile's own result folder {own}; its "
                            f"files belong to the profile's runs on {profile['dataset']}. Choose a folder "
                            f"outside it, or below {external}")
    return folder


def description_texts(profile: dict, dataset_name: str) -> tuple[dict[str, list[str]], list[str]]:
    """LLM descriptions for the new dataset's captions: the profile's cache and the new dataset's own.

    The new dataset's cache is the profile's cache file name with the
    profile's dataset replaced by ``dataset_name`` (``flickr8k.jsonl`` ->
    ``<dataset_name>.jsonl``). Returns (caption -> descriptions, the cache
    files that exist).
    """
    from osgha_lite.llm.cache import cache_exists
    from osgha_lite.train.experiment import repository_path, load_cache_texts

    relative = profile.get("augmentation", {}).get("cache")
    if not relative:
        return {}, []
    own = Path(relative)
    other = own.with_name(own.name.replace(profile["dataset"], dataset_name, 1))
    texts, found = {}, []
    for path in dict.fromkeys([str(other), str(own)]):
        if cache_exists(repository_path(path)):
            found.append(path)
            for caption, values in load_cache_texts(path).items():
                texts.setdefault(caption, values)
    return texts, found


def missing_inputs(method: dict, data) -> str | None:
    """Why ``method`` cannot run on ``data`` (None when it can).

    * ``image_texts`` with ``"source": "vision"`` looks each image's texts up
      by its path relative to the data root, so the images must lie under it.
    """
    image_texts = method.get("image_texts") or {}
    if image_texts.get("source") == "vision":
        root = data_root().resolve()
        outside = [p for p in data.image_paths if not Path(p).resolve().is_relative_to(root)]
        if outside:
            return (f"its image texts are looked up by path under the data root {root}, and {len(outside)} "
                    f"images of {data.name} are outside it (e.g. {outside[0]})")
    return None


def decodable_split(backbone, data, split: str, strict: bool = False, progress: bool = True,
                    log=None) -> tuple[object, dict[str, str]]:
    """``data`` without the images that cannot be decoded (:meth:`osgha_lite.backbones.Backbone.decodable`,
    one decoding pass whose features are cached), one ``log`` line per such image, and their problems
    (path -> problem). With ``strict`` any such image is an :class:`EvaluateError`; so is a split left with
    no image."""
    kept, problems = backbone.decodable(data, progress=progress)
    for path, problem in problems.items():
        (log or _print)(f"warning: skipped image {display_path(path)}: cannot decode it ({problem})")
    if problems and strict:
        raise EvaluateError(f"{len(problems)} of the {data.n_images} images of {data.name}/{split} cannot be "
                            f"decoded (listed above), and --strict makes that an error")
    if problems and not kept.n_images:
        raise EvaluateError(f"none of the {data.n_images} images of {data.name}/{split} can be decoded")
    if problems:
        (log or _print)(f"{data.name}/{split}: {len(problems)} of {data.n_images} images skipped (cannot be "
                        f"decoded), with their captions; {kept.n_images} images, {kept.n_texts} captions remain")
    return kept, problems


def _print(line: str) -> None:
    print(f"[evaluate] {line}", flush=True)


def results_table(runs: dict[str, dict], protocol: str) -> pd.DataFrame:
    """One row per method: R@K and rSum in percent with the rSum interval (``rsum_low``, ``rsum_high``)."""
    rows = []
    for name, run in runs.items():
        metrics, interval = run["metrics"][protocol], run["intervals"].get(protocol, {}).get("rsum", [None, None])
        rows.append({"method": name, **{k: metrics[k] for k in METRIC_KEYS},
                     "rsum_low": interval[0], "rsum_high": interval[1], "checkpoint": run["checkpoint"]})
    return pd.DataFrame(rows)


def evaluate_external(profile: dict, dataset: str, split: str = "test", methods: list[str] | None = None,
                      out: str | Path | None = None, limit_images: int | None = None, progress: bool = True,
                      log=_print, strict: bool = False) -> dict:
    """Evaluate the profile's trained methods on ``dataset``/``split`` (see the module docstring).

    Images of the split that cannot be decoded (not an image, truncated,
    empty, above :data:`osgha_lite.backbones.image_decode.MAX_IMAGE_PIXELS` pixels) are
    skipped with their captions, one warning line each, and counted in the
    result files (``skipped_images``); with ``strict`` they are an
    :class:`EvaluateError` instead.

    Returns ``{"table" (DataFrame, :func:`results_table`), "runs" (method ->
    :func:`osgha_lite.train.experiment.run_method`'s record plus ``checkpoint``),
    "skipped" (method -> reason), "skipped_images" (path -> problem),
    "folder", "dataset" (its name), "data" (the split evaluated), "backbone",
    "coverage" (share of the captions with descriptions), "description_caches"}``.
    """
    from osgha_lite.backbones import build_backbone
    from osgha_lite.train.experiment import embed_with_descriptions, load_profile_augmentations, method_embeddings, run_method
    from osgha_lite.train.fit import config_digest

    names = resolve_methods(profile, methods)
    data = load_external(dataset, split, profile, limit_images)
    folder = external_folder(profile, data.name, out)
    log(f"{data.name}/{split}: {data.n_images} images, {data.n_texts} captions; results -> {folder}")
    if data.name == profile["dataset"] and split in ("train", "dev"):
        log(f"warning: {data.name}/{split} holds images the profile trains on or stops training with "
            f"(pretrain/adapt or dev); these scores are not a test")
    started = time.perf_counter()
    log("backbone: loading (the lite heads are trained on the profile's pretrain images when not cached)")
    backbone = build_backbone(profile, progress=progress)
    data, undecodable = decodable_split(backbone, data, split, strict, progress, log)
    k = int(profile.get("augmentation", {}).get("descriptions", 0))
    augmentations = load_profile_augmentations(profile)
    log(f"embedding the profile's adapt and dev splits ({backbone.identity})")
    splits = {"train": load_profile_split(profile, "adapt"), "dev": load_profile_split(profile, "dev")}
    embedded = {s: embed_with_descriptions(backbone, d, augmentations, k, progress=progress) for s, d in splits.items()}
    texts, caches = description_texts(profile, data.name)
    log(f"embedding {data.name}/{split} ({data.n_images} images, {data.n_texts} captions)")
    # the new split's entry; method_embeddings keeps extra inputs per process under this key, so it names the rows
    key = f"{data.name}:{split}:" + config_digest([str(p) for p in data.image_paths], data.captions)
    splits[key] = data
    embedded[key] = embed_with_descriptions(backbone, data, texts, k, progress=progress)
    covered = int(embedded[key].description_mask.any(axis=1).sum())
    if covered:
        log(f"LLM descriptions: {covered} of {data.n_texts} captions covered by {', '.join(caches)}")
    else:
        log(f"LLM descriptions: no cache covers the captions of {data.name} (looked in "
            f"{', '.join(caches) or 'no existing cache'}); methods that use descriptions run without them. "
            f"Generate them with python -m osgha_lite augment --dataset {data.name} --split {split}")
    log(f"embedded in {time.perf_counter() - started:.0f} s")
    runs, skipped = {}, {}
    for position, name in enumerate(names, start=1):
        method = profile["methods"][name]
        reason = missing_inputs(method, data)
        if reason:
            skipped[name] = reason
            log(f"[{position}/{len(names)}] {name}: skipped, {reason}")
            continue
        log(f"[{position}/{len(names)}] {name}")
        method_started = time.perf_counter()
        trained = []
        inputs = method_embeddings(method, backbone, splits, embedded, progress=progress)
        run = run_method(name, method, profile, backbone.identity, inputs["train"], inputs["dev"], inputs[key],
                         progress=progress, dataset=data.name, split=split, folder=folder,
                         log=lambda line: (trained.append(line), log(line)), skipped_images=undecodable)
        run["checkpoint"] = ("none" if run["history"] is None else "trained now" if trained else "reused")
        runs[name] = run
        log(f"[{position}/{len(names)}] {name}: rSum {run['metrics'][profile['eval']['protocols'][0]]['rsum']:.1f} "
            f"({time.perf_counter() - method_started:.0f} s) -> {run['path']}")
    protocol = profile["eval"]["protocols"][0]
    return {"table": results_table(runs, protocol), "runs": runs, "skipped": skipped,
            "skipped_images": undecodable, "folder": folder,
            "dataset": data.name, "data": data, "backbone": backbone, "coverage": covered / data.n_texts,
            "description_caches": caches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m osgha_lite evaluate", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  python -m osgha_lite evaluate --profile lite --dataset flickr8k-heldout --split test
  python -m osgha_lite evaluate --dataset mydata --methods frozen-backbone os-hgadapter""")
    parser.add_argument("--profile", default="lite", help="profile name or JSON file (default: lite)")
    parser.add_argument("--dataset", required=True, help="a registered dataset name (or a path load_dataset accepts)")
    parser.add_argument("--split", default="test", help="split of the dataset to evaluate (default: test)")
    parser.add_argument("--methods", nargs="*", help="method names of the profile (default: all of them)")
    parser.add_argument("--out", help="folder for the result files (default: results/<profile>/external/<dataset>)")
    parser.add_argument("--limit-images", type=int, help="only the first N images of the split (quick checks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--strict", action="store_true",
                        help="an image that cannot be decoded is an error (exit code 2), not a skipped image")
    add_debug_option(parser)
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: _run(args), debug=args.debug)


def _run(args) -> int:
    from osgha_lite.profiles import load_profile
    from osgha_lite.runtime import seed_everything

    seed_everything(args.seed)
    profile = load_profile(args.profile)
    outcome = evaluate_external(profile, args.dataset, args.split, args.methods, args.out, args.limit_images,
                                progress=not args.no_progress, strict=args.strict)
    table = outcome["table"]
    print(f"\n{outcome['dataset']}/{args.split}, profile {profile['name']}: R@K in percent, rSum with its 95% "
          f"bootstrap interval")
    print(table.round(1).to_string(index=False) if len(table) else "(no method ran)")
    for name, reason in outcome["skipped"].items():
        print(f"skipped {name}: {reason}")
    if outcome["skipped_images"]:
        print(f"skipped {len(outcome['skipped_images'])} images that cannot be decoded (named above; "
              f"--strict makes them an error)")
    print(f"result files in {display_path(outcome['folder'])}")
    return 0


if __name__ == "__main__":
    from osgha_lite.runtime import restart_with_portable_kernels

    restart_with_portable_kernels("osgha_lite.apps.evaluate")  # the same features (and checkpoint keys) as under make
    raise SystemExit(main())

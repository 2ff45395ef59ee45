"""The steps of notebook 06, the fair test: the protocol table, the LLM quality ladder, paired differences.

Three parts, in the notebook's order:

1. **Disjoint pretraining.** :func:`protocol_run` builds a profile variant's
   backbone, splits and embeddings; :func:`split_size_table` compares
   candidate pretrain sizes on dev and :func:`protocol_table` reports the
   frozen space and every trained method under the chosen protocol.
2. **The LLM ladder.** :func:`run_ladder` trains one adapter per source of
   descriptions; :func:`score_ladder` scores each on test against ``none``,
   with :class:`LadderTextSide` measuring the text side's entropy and the
   describer's fidelity; :func:`ladder_tables` gives the two tables,
   :func:`ladder_result` the result file of one source, and :func:`verdict`
   says a row's paired difference in words.
3. **The paper's method apart from our additions.** :func:`paired_differences`
   gives system minus reference with a paired bootstrap interval.

The frozen space's quality on a split is

.. math::

    \\mathrm{rSum}_\\text{frozen} = \\mathrm{rSum}\\big(I_{1:n} T_{1:n}^\\top\\big),

the recall sum of the backbone's own image and caption vectors on the first
:math:`n` = :data:`N_FIT` images and all their captions; the ratio of adapt
to dev says whether the methods' training pairs look like unseen ones (a
ratio near 1) or were seen by the backbone (well above 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from osgha_lite.backbones import build_backbone, l2_normalize
from osgha_lite.backbones.features import cached_features, split_features
from osgha_lite.data import load_profile_split, protocol_settings
from osgha_lite.llm.descriptions import description_fidelity, split_descriptions
from osgha_lite.metrics.bootstrap import bootstrap_difference
from osgha_lite.metrics.entropy import per_image_lexical_entropy, projected_knn_entropy, spectral_entropy, tokenize
from osgha_lite.metrics.protocols import evaluate_similarity
from osgha_lite.metrics.results import read_result
from osgha_lite.metrics.retrieval import retrieval_metrics
from osgha_lite.profiles import merge
from osgha_lite.train.experiment import embed_with_descriptions, load_cache_texts, score_method

#: Images on which the frozen space is scored, adapt and dev alike.
N_FIT = 1000


def frozen_rsum(embedded, n_images: int = N_FIT) -> float:
    """rSum of the frozen space on the first ``n_images`` images of a split (all their captions)."""
    n = min(n_images, len(embedded.images))
    rows = embedded.text_to_image < n
    return retrieval_metrics(embedded.images[:n] @ embedded.texts[rows].T, embedded.text_to_image[rows])["rsum"]


@dataclass
class ProtocolRun:
    """A profile variant's backbone, its splits (``train`` is the adapt split) and their embeddings; ``scored``
    is one method scored on them (:class:`osgha_lite.train.experiment.ScoredMethod`) or None."""

    backbone: object
    splits: dict
    embedded: dict
    scored: object | None = None


def protocol_run(variant: dict, augmentations: dict, k: int, method_name: str | None = None) -> ProtocolRun:
    """Backbone, splits and embeddings (with up to ``k`` descriptions per caption from ``augmentations``)
    of a profile variant; optionally the variant's method ``method_name`` scored on them."""
    backbone = build_backbone(variant, progress=False)
    splits = {"train": load_profile_split(variant, "adapt"), "dev": load_profile_split(variant, "dev"),
              "test": load_profile_split(variant, "test")}
    embedded = {s: embed_with_descriptions(backbone, d, augmentations, k, progress=False) for s, d in splits.items()}
    scored = None
    if method_name is not None:
        scored = score_method(method_name, variant["methods"][method_name], variant, backbone.identity,
                              embedded["train"], embedded["dev"], embedded["test"], progress=False)
    return ProtocolRun(backbone, splits, embedded, scored)


def split_size_table(profile: dict, augmentations: dict, k: int) -> pd.DataFrame:
    """The candidate pretrain sizes of a disjoint protocol (``protocol.candidates``), one row each.

    Each candidate trains the lite heads on its pretrain images and
    ``protocol.selected_by`` (default OS-HGAdapter) on its adapt images. A row
    gives the heads' dev rSum, the frozen space on adapt and dev
    (:func:`frozen_rsum`) and their ratio ``adapt_over_dev``, and the
    method's dev rSum before training (epoch 0) and at its best epoch.
    ``chosen_by_dev`` marks the size with the best method dev rSum (test is
    not looked at) and ``profile`` the size the profile uses. Empty for a
    shared protocol.
    """
    protocol = protocol_settings(profile)
    candidates = protocol.get("candidates", [protocol.get("pretrain_images")]) if protocol["kind"] == "disjoint" else []
    selected_by = protocol.get("selected_by", "os-hgadapter")
    rows = []
    for n_pretrain in candidates:
        run = protocol_run(merge(profile, {"protocol": {"pretrain_images": n_pretrain}}), augmentations, k, selected_by)
        history = run.scored.history
        rows.append({
            "pretrain_images": n_pretrain, "adapt_images": run.splits["train"].n_images,
            "heads_dev_rsum": run.backbone.history.best_rsum,
            "frozen_adapt_rsum": frozen_rsum(run.embedded["train"]), "frozen_dev_rsum": frozen_rsum(run.embedded["dev"]),
            "method_dev_rsum_epoch_0": history.initial_rsum, "method_dev_rsum_best": history.best_rsum,
            "method_best_epoch": history.best_epoch,
        })
    sizes = pd.DataFrame(rows)
    if len(sizes):
        sizes["adapt_over_dev"] = sizes.frozen_adapt_rsum / sizes.frozen_dev_rsum
        best_size = int(sizes.loc[sizes.method_dev_rsum_best.idxmax(), "pretrain_images"])
        sizes["chosen_by_dev"] = sizes.pretrain_images == best_size
        sizes["profile"] = sizes.pretrain_images == protocol["pretrain_images"]
    return sizes


def load_method_records(folder, profile: dict) -> dict[str, dict]:
    """The test result record of every method of the profile, from notebook 03; raises
    :class:`FileNotFoundError` naming the missing ones."""
    records = {name: read_result(folder / f"{name}.test.json") for name in profile["methods"]
               if (folder / f"{name}.test.json").is_file()}
    missing = [name for name in profile["methods"] if name not in records]
    if missing:
        raise FileNotFoundError(f"{folder}: no result files for {missing}; run notebook 03 first")
    return records


def _frozen_rows(run: ProtocolRun, kind: str) -> list[dict]:
    return [{"row": f"frozen ({name})", "protocol": kind, "images": min(N_FIT, run.splits[split].n_images),
             "rsum": frozen_rsum(run.embedded[split])} for name, split in (("adapt", "train"), ("dev", "dev"))]


def protocol_table(kind: str, run: ProtocolRun, shared: ProtocolRun | None, records: dict) -> pd.DataFrame:
    """The frozen space on adapt and dev under protocol ``kind`` (``run``) and, unless None, under the shared
    protocol (``shared``); then every trained method's dev rSum at epoch 0, its kept epoch, its dev rSum there
    and whether training improved on the initial state (``improved``)."""
    rows = _frozen_rows(run, kind) + (_frozen_rows(shared, "shared") if shared is not None else [])
    for name, record in records.items():
        training = record.get("training")
        if training:
            rows.append({"row": name, "protocol": kind, "images": run.splits["train"].n_images,
                         "dev_rsum_epoch_0": training["initial_dev_rsum"], "best_epoch": training["best_epoch"],
                         "dev_rsum_best": training["best_rsum"], "improved": training["improved"]})
    return pd.DataFrame(rows)[["row", "protocol", "images", "rsum", "dev_rsum_epoch_0", "best_epoch",
                               "dev_rsum_best", "improved"]]


def division_record(profile: dict, run: ProtocolRun) -> dict:
    """The division of the training images (``protocol/splits.json``): the protocol and both image id lists."""
    return {"dataset": profile["dataset"], "protocol": protocol_settings(profile),
            "pretrain": load_profile_split(profile, "pretrain").image_ids, "adapt": run.splits["train"].image_ids}


class LadderTextSide:
    """The test split's text side, as the ladder measures it for each source of descriptions.

    Holds the raw sentence-encoder vectors of the test captions, one seeded
    caption per image and the token budget (the fewest caption tokens of any
    image) to which lexical entropy is rarefied.
    """

    def __init__(self, text_encoder, test, k: int, seed: int = 0):
        self.text_encoder, self.test, self.k, self.seed = text_encoder, test, k, seed
        self.caption_raw = l2_normalize(split_features(text_encoder, test, progress=False))
        rng = np.random.default_rng(seed)
        self.one_caption = np.array([rng.choice(np.flatnonzero(test.text_to_image == i))
                                     for i in range(test.n_images)])
        self.budget = int(np.bincount(test.text_to_image, weights=[len(tokenize(c)) for c in test.captions],
                                      minlength=test.n_images).min())

    def entropy(self, embedded, texts_by_caption: dict) -> dict[str, float]:
        """Entropy of the test text side as the method sees it, in bits.

        A caption :math:`t` with descriptions :math:`d_1..d_m` is fused as
        :math:`\\hat t = (t + \\sum_j d_j) / \\lVert t + \\sum_j d_j \\rVert` (the mean, normalised);
        spectral and kNN entropy are taken over one fused caption per image,
        lexical entropy over an image's captions and descriptions rarefied to
        :attr:`budget` tokens (:mod:`osgha_lite.metrics.entropy`).
        """
        test, k = self.test, self.k
        counts = 1.0 + embedded.description_mask.sum(axis=1, keepdims=True)
        fused = l2_normalize((embedded.texts + embedded.descriptions.sum(axis=1)) / counts)[self.one_caption]
        lexical = per_image_lexical_entropy(test.captions, test.text_to_image, n_images=test.n_images,
                                            descriptions=[texts_by_caption.get(c, [])[:k] for c in test.captions],
                                            rarefy_to=self.budget, seed=self.seed)
        return {"lexical_rarefied_bits": float(np.mean(lexical.rarefied_bits)),
                "spectral_bits": spectral_entropy(fused.astype(np.float64)),
                "knn_bits": projected_knn_entropy(fused.astype(np.float64), 16, 3, seed=self.seed)}

    def fidelity(self, texts_by_caption: dict) -> dict:
        """The describer's fidelity on the test captions
        (:func:`osgha_lite.llm.descriptions.description_fidelity`; NaN when it wrote none for them)."""
        test, k = self.test, self.k
        flat, slots = [], []
        for row, caption in enumerate(test.captions):
            for slot, text in enumerate(texts_by_caption.get(caption, [])[:k]):
                flat.append(text)
                slots.append((row, slot))
        vectors = np.zeros((test.n_texts, k, self.caption_raw.shape[1]), np.float32)
        mask = np.zeros((test.n_texts, k), bool)
        if flat:
            rows, cols = np.array(slots).T
            # the same name and order as embed_with_descriptions, so the sentence features come from its cache
            vectors[rows, cols] = l2_normalize(cached_features(self.text_encoder, flat, f"{test.name}-descriptions",
                                                               "test", progress=False))
            mask[rows, cols] = True
        return description_fidelity(self.caption_raw, vectors, mask, test.text_to_image, seed=self.seed)


def ladder_method(profile: dict, source: dict, k: int) -> dict:
    """The ladder's method (``profile["ladder"]["method"]``) with ``k`` descriptions, or none for ``none``."""
    return merge(profile["methods"][profile["ladder"]["method"]], {"descriptions": 0 if source["kind"] == "none" else k})


def run_ladder(profile: dict, run: ProtocolRun, side: LadderTextSide, log=print) -> dict[str, dict]:
    """Train the ladder's method once per source of descriptions (``profile["ladder"]["sources"]``).

    Everything but the descriptions is equal: the adapt, dev and test splits
    of ``run``, and no descriptions for dev queries under any source (dev
    only early-stops). Returns, per source, the source, the scored method,
    the embeddings, the descriptions per split and the describer's fidelity
    (human captions of the same image for both human sources; NaN for
    ``none``). ``log`` gets one line per source.
    """
    k = side.k
    splits = {"adapt": run.splits["train"], "dev": run.splits["dev"], "test": run.splits["test"]}
    runs = {}
    for source_name, source in profile["ladder"]["sources"].items():
        llm_texts = load_cache_texts(source["cache"]) if source["kind"] == "llm" else None
        texts = split_descriptions(source, splits, k, llm_texts)
        texts["dev"] = {}  # dev early-stops only: no descriptions under any source
        embedded = {s: embed_with_descriptions(run.backbone, splits[s], texts[s], k, progress=False) for s in splits}
        scored = score_method(f"ladder-{source_name}", ladder_method(profile, source, k), profile,
                              run.backbone.identity, embedded["adapt"], embedded["dev"], embedded["test"],
                              progress=False)
        describer = None
        if source["kind"] == "llm":
            describer = side.fidelity(llm_texts)
        elif source["kind"].startswith("human"):
            describer = side.fidelity(split_descriptions({"kind": "human-test-ceiling"}, splits, k)["test"])
        runs[source_name] = {"source": source, "scored": scored, "embedded": embedded, "texts": texts,
                             "fidelity": describer or {"fidelity": np.nan, "top1": np.nan, "n": 0}}
        log(f"{source_name}: dev rSum {scored.dev_metrics['rsum']:.1f} (best epoch {scored.history.best_epoch})")
    return runs


@dataclass
class LadderScore:
    """One source's test scores: its ``row`` of the ladder table, its ``entropy`` row
    (:meth:`LadderTextSide.entropy`, with the source's name) and the ``metrics`` and ``intervals`` of its
    result file."""

    row: dict
    entropy: dict
    metrics: dict
    intervals: dict


def score_ladder(runs: dict, side: LadderTextSide, protocol: str, n_boot: int, seed: int = 0) -> dict[str, LadderScore]:
    """Each source's test scores, keyed by source.

    A ``row`` gives the description coverage of test and adapt captions
    (%), test rSum with its 95% bootstrap interval, the paired difference
    :math:`\\mathrm{rSum}_s - \\mathrm{rSum}_\\text{none}` over the same resampled
    queries (:func:`osgha_lite.metrics.bootstrap.bootstrap_difference`) with
    its interval (0 for ``none`` itself), the recall sums ``i2t`` and
    ``t2i``, dev rSum, the kept epoch and the describer's fidelity and
    top-1 fidelity (%).
    """
    text_to_image = side.test.text_to_image
    none_sims = runs["none"]["scored"].sims
    scores = {}
    for source_name, run in runs.items():
        sims, embedded = run["scored"].sims, run["embedded"]
        metrics, intervals = evaluate_similarity(sims, text_to_image, [protocol], n_boot=n_boot, seed=seed)
        m, ci = metrics[protocol], intervals[protocol]
        diff = (bootstrap_difference(sims, none_sims, text_to_image, n_boot=n_boot, seed=seed)["rsum"]
                if source_name != "none" else None)
        row = {"source": source_name, "kind": run["source"]["kind"],
               "test_coverage_%": 100 * embedded["test"].description_coverage,
               "adapt_coverage_%": 100 * embedded["adapt"].description_coverage,
               "rsum": m["rsum"], "rsum_low": ci["rsum"][0], "rsum_high": ci["rsum"][1],
               "diff_vs_none": diff.point if diff else 0.0, "diff_low": diff.low if diff else 0.0,
               "diff_high": diff.high if diff else 0.0,
               "i2t": sum(m[f"i2t_R@{k}"] for k in (1, 5, 10)), "t2i": sum(m[f"t2i_R@{k}"] for k in (1, 5, 10)),
               "dev_rsum": run["scored"].dev_metrics["rsum"], "best_epoch": run["scored"].history.best_epoch,
               "fidelity": 100 * run["fidelity"]["fidelity"], "fidelity_top1": 100 * run["fidelity"]["top1"]}
        entropy = {"source": source_name, **side.entropy(embedded["test"], run["texts"]["test"])}
        scores[source_name] = LadderScore(row, entropy, metrics, intervals)
    return scores


def ladder_tables(scores: dict[str, LadderScore]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ladder table and the text side's entropy table, a row per source in ladder order."""
    return (pd.DataFrame([s.row for s in scores.values()]), pd.DataFrame([s.entropy for s in scores.values()]))


def ladder_result(profile: dict, backbone_identity: str, source_name: str, run: dict, score: LadderScore,
                  k: int) -> dict:
    """The result file ``ladder/<source>.test.json`` of one source: its metrics and intervals, its
    configuration, the difference against ``none``, fidelity, training history, coverage and entropy."""
    embedded, row = run["embedded"], score.row
    return {
        "method": f"ladder-{source_name}", "dataset": profile["dataset"], "split": "test",
        "backbone": backbone_identity, "metrics": score.metrics, "intervals": score.intervals,
        "config": {"profile": profile, "method": ladder_method(profile, run["source"], k), "source": run["source"]},
        "difference_vs_none": {"rsum": [row["diff_vs_none"], row["diff_low"], row["diff_high"]]},
        "fidelity": run["fidelity"], "training": run["scored"].history.result_dict(),
        "coverage": {"test": embedded["test"].description_coverage, "adapt": embedded["adapt"].description_coverage},
        "text_side_entropy": score.entropy,
    }


def verdict(row, reference) -> str:
    """The paired difference of a ladder row against ``reference`` (the ``none`` row) in words: an interval
    that excludes 0 is a real change; the directions' recall-sum gains follow."""
    if row.source == reference.source:
        return "reference"
    sign = "raises" if row.diff_low > 0 else "lowers" if row.diff_high < 0 else "does not change"
    return (f"{sign} rSum ({row.diff_vs_none:+.1f} [{row.diff_low:+.1f}, {row.diff_high:+.1f}]; "
            f"i2t {row.i2t - reference.i2t:+.1f}, t2i {row.t2i - reference.t2i:+.1f})")


def paired_differences(pairs: list[tuple[str, str]], profile: dict, run: ProtocolRun, records: dict,
                       protocol: str, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """``system`` minus ``reference`` on test for each pair, from notebook 03's checkpoints (nothing retrained).

    Each row: the rSum difference with its 95% paired bootstrap interval,
    ``relative_%`` = :math:`100\\,\\Delta\\mathrm{rSum} / \\mathrm{rSum}_\\text{reference}` (the reference's
    rSum from its result file), the R@1 differences of both directions, and
    ``excludes_0`` (the interval lies wholly on one side of zero).
    """
    embedded, text_to_image = run.embedded, run.splits["test"].text_to_image
    scores = {name: score_method(name, profile["methods"][name], profile, run.backbone.identity, embedded["train"],
                                 embedded["dev"], embedded["test"], progress=False).sims
              for name in dict.fromkeys(n for pair in pairs for n in pair)}
    rows = []
    for system, reference in pairs:
        diff = bootstrap_difference(scores[system], scores[reference], text_to_image, n_boot=n_boot, seed=seed)
        reference_rsum = records[reference]["metrics"][protocol]["rsum"]
        rows.append({"system": system, "minus": reference, "rsum_difference": diff["rsum"].point,
                     "low": diff["rsum"].low, "high": diff["rsum"].high,
                     "relative_%": 100 * diff["rsum"].point / reference_rsum,
                     "i2t_R@1_difference": diff["i2t_R@1"].point, "t2i_R@1_difference": diff["t2i_R@1"].point,
                     "excludes_0": bool(diff["rsum"].low > 0 or diff["rsum"].high < 0)})
    return pd.DataFrame(rows)

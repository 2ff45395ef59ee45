"""Evaluate embeddings under a profile's protocols and write the result file.

Protocols (:data:`PROTOCOLS`):

* ``all``: every test image against every test caption (Flickr8k/30K 1K test).
* ``coco-5k``: the same on the 5,000-image COCO test split.
* ``coco-1k``: the mean over five folds of 1,000 consecutive images.

Intervals are percentile-bootstrap 95% intervals from resampling image
queries with their captions (:func:`osgha_lite.metrics.bootstrap.bootstrap_metrics`);
they are computed for the whole-gallery protocols only.
"""

from __future__ import annotations

import numpy as np

from osgha_lite.metrics.bootstrap import bootstrap_metrics
from osgha_lite.metrics.retrieval import coco_1k_metrics, coco_5k_metrics, retrieval_metrics

PROTOCOLS = {"all": retrieval_metrics, "coco-5k": coco_5k_metrics, "coco-1k": coco_1k_metrics}
WHOLE_GALLERY = ("all", "coco-5k")


def similarity(images: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Cosine similarity ``S = I T^T`` of unit rows: ``(n_images, n_texts)`` float32."""
    return np.asarray(images, dtype=np.float32) @ np.asarray(texts, dtype=np.float32).T


def evaluate_similarity(sims: np.ndarray, text_to_image: np.ndarray, protocols=("all",),
                        n_boot: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """Metrics per protocol and bootstrap intervals per whole-gallery protocol.

    Returns ``(metrics, intervals)``: ``metrics[protocol][key]`` is a float and
    ``intervals[protocol][key]`` a ``[low, high]`` pair.
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; known: {', '.join(PROTOCOLS)}")
    metrics, intervals = {}, {}
    for protocol in protocols:
        metrics[protocol] = {k: float(v) for k, v in PROTOCOLS[protocol](sims, text_to_image).items()}
        if protocol in WHOLE_GALLERY and n_boot:
            cis = bootstrap_metrics(sims, text_to_image, n_boot=n_boot, seed=seed)
            intervals[protocol] = {k: [float(ci.low), float(ci.high)] for k, ci in cis.items()}
    return metrics, intervals

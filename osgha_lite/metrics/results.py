"""Result files: one JSON file per evaluation; tables are built from the files.

Each file ``results/<profile>/<method>.<split>.json`` holds

* ``method``, ``dataset``, ``split``, ``backbone`` (the backbone's identity),
* ``metrics``: the keys of :func:`osgha_lite.metrics.retrieval.retrieval_metrics`
  (``i2t_R@1`` ... ``rsum``, median and mean ranks), under the protocol name
  (``all``, ``coco-5k``, ``coco-1k``),
* ``intervals`` (optional): bootstrap 95% intervals per metric,
* ``config``: the full profile and the method's own options,
* anything else the producer adds (training history, coverage).

Files are written atomically with sorted keys, and hold no timestamps and
no wall-clock times (those go to the uncommitted timing log,
:mod:`osgha_lite.train.timings`), so a rerun that gives the same numbers gives
the same bytes. The folder is ``$OSGHA_RESULTS_DIR`` or the repository's
``results/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from osgha_lite.atomic import atomic_write_json
from osgha_lite.paths import RESULTS_ENV, results_root  # noqa: F401 - also reachable from here

METRIC_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum")
REQUIRED = ("method", "dataset", "split", "backbone", "metrics", "config")


def result_path(profile: str, method: str, split: str) -> Path:
    return results_root() / profile / f"{method}.{split}.json"


def write_result(profile: str, method: str, dataset: str, split: str, backbone: str,
                 metrics: dict, config: dict, folder: str | os.PathLike | None = None, **extra) -> Path:
    """Write one evaluation; ``metrics`` maps protocol name -> metric dict.

    The file is :func:`result_path`, or ``<folder>/<method>.<split>.json`` when ``folder`` is given
    (evaluations on other datasets, :mod:`osgha_lite.apps.evaluate`).
    """
    for protocol, values in metrics.items():
        missing = [key for key in METRIC_KEYS if key not in values]
        if missing:
            raise ValueError(f"write_result({method}): protocol {protocol!r} lacks metrics {missing}")
    record = {"method": method, "dataset": dataset, "split": split, "backbone": backbone,
              "metrics": metrics, "config": config, **extra}
    path = Path(folder) / f"{method}.{split}.json" if folder is not None else result_path(profile, method, split)
    return atomic_write_json(path, record)


def read_result(path: str | os.PathLike) -> dict:
    """Read one result file, checking its required fields."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}); rerun the notebook "
                         f"that writes it") from None
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise ValueError(f"{path}: missing fields {missing}")
    return record


def load_results(profile: str, pattern: str = "*.json", protocol: str | None = None) -> "pd.DataFrame":
    """All results of a profile as a table: one row per (file, protocol), metric columns
    plus ``low``/``high`` interval columns where present."""
    rows = []
    for path in sorted((results_root() / profile).glob(pattern)):
        record = read_result(path)
        for name, values in record["metrics"].items():
            if protocol and name != protocol:
                continue
            row = {"method": record["method"], "dataset": record["dataset"], "split": record["split"],
                   "protocol": name, "backbone": record["backbone"]}
            row.update({key: values.get(key) for key in values})
            for key, (low, high) in record.get("intervals", {}).get(name, {}).items():
                row[f"{key}_low"], row[f"{key}_high"] = low, high
            rows.append(row)
    import pandas as pd  # not in the core install: only tables need it

    return pd.DataFrame(rows)

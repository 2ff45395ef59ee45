"""The tables of notebook 05, built from the result files alone.

Every function here reads result records (the dictionaries of
:func:`osgha_lite.metrics.results.read_result`, keyed by method) or the JSON
files of notebooks 02 and 04, and returns a :class:`pandas.DataFrame` whose
rows are in a fixed order, so the tables the notebook saves are the same on
every rerun. Nothing is trained or evaluated here.

Notation: for a method with recalls :math:`R@K` in percent,

.. math::

    \\mathrm{i2t} = R@1 + R@5 + R@10 \\text{ (image} \\to \\text{text)}, \\qquad
    \\mathrm{t2i} \\text{ likewise}, \\qquad \\mathrm{rSum} = \\mathrm{i2t} + \\mathrm{t2i}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from osgha_lite.metrics.results import read_result

#: The columns of the main retrieval table, besides ``method`` and the interval of rSum.
RETRIEVAL_COLUMNS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum")


@dataclass(frozen=True)
class ResultSet:
    """The result files of one profile, grouped the way notebook 05 reports them.

    ``main`` are the profile's methods in profile order, ``ablations`` its
    ``ablation-*`` methods, ``sweeps`` every ``sweep-*`` record (sorted) and
    ``related_sweeps`` maps the related method named by the profile's
    ``related_sweeps.base`` to its own ``sweep-<base>-*`` records.
    """

    records: dict
    protocol: str
    main: list
    ablations: list
    sweeps: list
    related_sweeps: dict


def load_result_set(root: Path, profile: dict) -> ResultSet:
    """Read every ``<root>/*.test.json`` and group the records by the profile's method list.

    Raises :class:`FileNotFoundError` when there is no ``frozen-backbone``
    result (notebooks 03 and 04 have not run).
    """
    records = {r["method"]: r for r in map(read_result, sorted(Path(root).glob("*.test.json")))}
    if "frozen-backbone" not in records:
        raise FileNotFoundError(f"{root}: no frozen-backbone.test.json; run notebooks 03 and 04 first "
                                f"(`python -m osgha_lite run --profile {profile['name'].removesuffix('-smoke')}`)")
    related_base = profile.get("related_sweeps", {}).get("base")
    return ResultSet(
        records=records, protocol=profile["eval"]["protocols"][0],
        main=[m for m in profile["methods"] if not m.startswith("ablation-") and m in records],
        ablations=[m for m in profile["methods"] if m.startswith("ablation-") and m in records],
        sweeps=sorted(m for m in records if m.startswith("sweep-")),
        related_sweeps={related_base: sorted(m for m in records if m.startswith(f"sweep-{related_base}-"))},
    )


def direction_sums(metrics: dict) -> dict[str, float]:
    """Recall sums per direction: ``i2t`` = R@1 + R@5 + R@10 of image -> text, ``t2i`` likewise."""
    return {d: sum(metrics[f"{d}_R@{k}"] for k in (1, 5, 10)) for d in ("i2t", "t2i")}


def retrieval_row(results: ResultSet, method: str) -> dict:
    """One row of the main table: the method's recalls, rSum and rSum's bootstrap interval (NaN if none)."""
    record = results.records[method]
    metrics = record["metrics"][results.protocol]
    intervals = record.get("intervals", {}).get(results.protocol, {})
    low, high = intervals.get("rsum", [np.nan, np.nan])
    return {"method": method, **{k: metrics[k] for k in RETRIEVAL_COLUMNS}, "rsum_low": low, "rsum_high": high}


def main_table(results: ResultSet) -> pd.DataFrame:
    """Every main method on the test split: both directions' recalls and rSum with its 95% interval."""
    return pd.DataFrame([retrieval_row(results, m) for m in results.main])


def ablation_table(results: ResultSet, full: str = "os-hgadapter") -> pd.DataFrame:
    """The full method and each ablation: direction sums, rSum with its interval, and
    ``change_vs_full`` = rSum(ablation) - rSum(full)."""
    base = results.records[full]["metrics"][results.protocol]
    rows = []
    for method in [full, *results.ablations]:
        row = retrieval_row(results, method)
        sums = direction_sums(results.records[method]["metrics"][results.protocol])
        rows.append({"method": method, "i2t_sum": sums["i2t"], "t2i_sum": sums["t2i"], "rsum": row["rsum"],
                     "rsum_low": row["rsum_low"], "rsum_high": row["rsum_high"],
                     "change_vs_full": row["rsum"] - base["rsum"]})
    return pd.DataFrame(rows)


def difference_table(results: ResultSet, differences: dict) -> pd.DataFrame:
    """OS-HGAdapter minus each reference, from notebook 04's paired bootstrap (``differences.test.json``).

    ``relative_%`` is :math:`100\\,\\Delta\\mathrm{rSum} / \\mathrm{rSum}_\\text{reference}`; ``excludes_0``
    says whether the 95% paired interval of the rSum difference lies wholly on one side of zero.
    Rows follow the profile's order of methods, then ablations.
    """
    order = results.main + results.ablations
    return pd.DataFrame([
        {"os-hgadapter minus": reference, "rsum_difference": d["rsum"]["point"], "low": d["rsum"]["low"],
         "high": d["rsum"]["high"],
         "relative_%": 100 * d["rsum"]["point"] / results.records[reference]["metrics"][results.protocol]["rsum"],
         "i2t_R@1_difference": d["i2t_R@1"]["point"], "t2i_R@1_difference": d["t2i_R@1"]["point"],
         "excludes_0": bool(d["rsum"]["low"] > 0 or d["rsum"]["high"] < 0)}
        for reference, d in sorted(differences.items(), key=lambda item: order.index(item[0]))])


def direction_gains(results: ResultSet, reference: str = "frozen-backbone") -> pd.DataFrame:
    """Long table (``method``, ``direction``, ``gain``): each method's recall sum in one direction minus
    the reference's (the frozen backbone), for every main method and ablation but the reference."""
    base = direction_sums(results.records[reference]["metrics"][results.protocol])
    return pd.DataFrame([{"method": m, "direction": d, "gain": v - base[d]}
                         for m in results.main + results.ablations if m != reference
                         for d, v in direction_sums(results.records[m]["metrics"][results.protocol]).items()])


def _sorted_by_value(frame: pd.DataFrame, *keys: str) -> pd.DataFrame:
    """Rows sorted by ``keys`` (last key first) and then by the numeric value of ``value``."""
    return frame.iloc[np.lexsort((frame.value.astype(float), *[frame[k] for k in keys]))].reset_index(drop=True)


def sweep_table(results: ResultSet, profile: dict) -> pd.DataFrame:
    """One option at a time from the swept method's setting (``profile["sweeps"]``).

    For each option, the base run (``base`` True, its value read from the
    method's options) and every ``sweep-<option>=<value>`` run, with dev and
    test rSum; sorted by option, then numeric value.
    """
    base_name = profile["sweeps"]["base"]
    base_method = profile["methods"][base_name]
    rows = []
    for option in [o for o in profile["sweeps"] if o != "base"]:
        base_value = base_method.get("descriptions") if option == "descriptions" else base_method["options"].get(option)
        runs = [(base_name, base_value)] + [(m, m.split("=", 1)[1]) for m in results.sweeps
                                            if m.startswith(f"sweep-{option}=")]
        for method, value in runs:
            record = results.records[method]
            rows.append({"option": option, "value": str(value), "base": method == base_name,
                         "dev_rsum": record["dev_metrics"]["all"]["rsum"],
                         "test_rsum": record["metrics"][results.protocol]["rsum"]})
    return _sorted_by_value(pd.DataFrame(rows), "option")


def related_sweep_table(results: ResultSet, profile: dict) -> pd.DataFrame:
    """The related methods' settings (``profile["related_sweeps"]``): the base run, listed once per swept
    option, and one option changed at a time; empty when the base has no result file."""
    rows = []
    for base_name, names in results.related_sweeps.items():
        if base_name is None or base_name not in results.records:
            continue
        options = results.records[base_name]["config"]["method"].get("options", {})
        for method in [base_name, *names]:
            option, value = (method.removeprefix(f"sweep-{base_name}-").split("=", 1) if method != base_name
                             else (None, None))
            for name in ([option] if option else [o for o in profile["related_sweeps"] if o != "base"]):
                rows.append({"method": base_name, "option": name,
                             "value": str(value if option else options.get(name)), "base": method == base_name,
                             "dev_rsum": results.records[method]["dev_metrics"]["all"]["rsum"],
                             "test_rsum": results.records[method]["metrics"][results.protocol]["rsum"]})
    frame = pd.DataFrame(rows)
    return _sorted_by_value(frame, "option", "method") if len(frame) else frame


def trained_methods(results: ResultSet) -> list[str]:
    """The main methods and ablations whose result file holds a training history, in table order."""
    return [m for m in results.main + results.ablations if results.records[m].get("training")]


def training_times(results: ResultSet, logged: dict) -> pd.DataFrame | None:
    """Epochs, best epoch and wall-clock seconds of every trained result, from the timing log
    ``logged`` (:func:`osgha_lite.train.timings.load`); None when the log has none of them."""
    with_history = [m for m in sorted(results.records) if results.records[m].get("training")]
    if not any(f"{m}.test" in logged for m in with_history):
        return None
    return pd.DataFrame([{"method": m, "epochs": len(results.records[m]["training"]["epochs"]),
                          "best_epoch": results.records[m]["training"]["best_epoch"],
                          "train_seconds": logged.get(f"{m}.test", {}).get("train_seconds", np.nan),
                          "total_seconds": logged.get(f"{m}.test", {}).get("total_seconds", np.nan)}
                         for m in with_history])


def entropy_table(entropy: dict) -> pd.DataFrame:
    """Notebook 02's measurements (``entropy.test.json``) as rows (``measure``, ``side``, ``value``,
    ``low``, ``high``, ``n``): a key ``"spectral_bits[images]"`` gives measure ``spectral_bits`` and side
    ``images``; a missing value or interval end is NaN."""
    rows = []
    for key, value in entropy["metrics"].items():
        measure, side = key[:-1].split("[", 1)
        low, high = entropy["intervals"].get(key) or (np.nan, np.nan)
        rows.append({"measure": measure, "side": side, "value": np.nan if value is None else value,
                     "low": np.nan if low is None else low, "high": np.nan if high is None else high,
                     "n": entropy["n"][key]})
    return pd.DataFrame(rows)


def read_json(path: Path) -> dict:
    """A JSON file of the results tree (notebook 04's evaluations, notebook 02's entropy)."""
    return json.loads(Path(path).read_text())

"""The claims ledger: each claim of the paper's abstract, our test of it, the number, and a verdict.

The page ``docs/claims.md`` is written by this module, never by hand: every
number comes from a result file of a run (``results/<profile>/...``), read
when the site is built (``book/build_site.py``) or when the committed page is
refreshed::

    python book/ledger.py --write          # rewrite docs/claims.md from results/lite
    python book/ledger.py --check          # exit 1 when a ledger number differs from its table

A number is read from the run's JSON result where one holds it, otherwise
from the table's CSV (full precision). :func:`check` compares each number,
rounded as its table prints it, with the cell of the Markdown table the
notebook saved, so a table edited by hand (or a ledger that reads the wrong
field) is caught; ``tests/test_ledger.py`` runs it.

Verdicts follow one rule for every row that has a paired interval: the
interval above 0 is *supported*, below 0 *not supported*, across 0
*inconclusive at lite scale*. Rows whose claim needs what we cannot reach
offline (CLIP weights, Flickr30K, MS-COCO, a domain-knowledge prompt to
compare with) are *not testable here*; rows whose two measures disagree say
so. The claims are paraphrased from the abstract (the only part of the paper
we can read); the tests, the rule and the wording of the verdicts are ours.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

BOOK_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BOOK_DIR.parent
PAGE = PROJECT_ROOT / "docs" / "claims.md"
VERDICTS = ("supported", "not supported", "inconclusive at lite scale", "not testable here")


@dataclass(frozen=True)
class Number:
    """One number of the ledger: a cell of a saved table (``table``, ``row``, ``column``) with, when
    the table has them, its interval columns; ``json`` names the result file and key that hold the
    same number at full precision (``None``: the table's CSV is the result file)."""

    label: str
    table: str
    row: str
    column: str
    interval: tuple[str, str] | None = None
    json: tuple[str, tuple[str, ...], tuple[str, ...] | None] | None = None
    unit: str = ""


@dataclass(frozen=True)
class Claim:
    claim: str
    test: str
    numbers: tuple[Number, ...]
    verdict: callable = field(repr=False)


def _interval_verdict(value: dict, what: str) -> tuple[str, str]:
    low, high = value["low"], value["high"]
    if low > 0:
        return "supported", f"{what}: the paired 95% interval lies above 0"
    if high < 0:
        return "not supported", f"{what}: the paired 95% interval lies below 0, the opposite direction"
    return "inconclusive at lite scale", f"{what}: the paired 95% interval includes 0"


def _gap(values):
    before, after = values[0], values[1]
    if after["high"] < before["low"]:
        return ("not supported", "with descriptions the text side's spectral entropy falls further below the "
                f"images' ({after['value']:+.3f} against {before['value']:+.3f} bits); the gap widens")
    if after["low"] > before["high"]:
        return "supported", "with descriptions the text side's spectral entropy moves towards the images'"
    return "inconclusive at lite scale", "the two gaps' intervals overlap"


def _entropy(values):
    lexical, spectral = values
    if lexical["low"] > 0 and spectral["low"] > 0:
        return "supported", "both measures rise"
    if lexical["low"] > 0 and spectral["high"] < 0:
        return ("inconclusive at lite scale", f"the two measures disagree: word entropy rises "
                f"({lexical['value']:+.3f} bits) while the embedding's spectral entropy falls "
                f"({spectral['value']:+.3f} bits)")
    return _interval_verdict(lexical, "word entropy")


ENTROPY = "results/{profile}/entropy/entropy.test.json"
DIFFERENCES = "results/{profile}/evaluation/differences.test.json"

CLAIMS = (
    Claim("LLM descriptions fill the entropy gap between a caption and its image, which unbalances the two "
          "retrieval directions.",
          "Spectral entropy of the test embeddings (notebook 02): the text side minus the images, for captions "
          "alone and for captions joined with their SmolLM2 descriptions.",
          (Number("captions − images", "05_entropy", "spectral_bits|captions - images", "value", ("low", "high"),
                  (ENTROPY, ("metrics", "spectral_bits[captions - images]"),
                   ("intervals", "spectral_bits[captions - images]")), " bits"),
           Number("captions+descriptions − images", "05_entropy", "spectral_bits|captions+descriptions - images",
                  "value", ("low", "high"),
                  (ENTROPY, ("metrics", "spectral_bits[captions+descriptions - images]"),
                   ("intervals", "spectral_bits[captions+descriptions - images]")), " bits")),
          _gap),
    Claim("A prompt template that needs no knowledge of the task's domain gets an LLM to describe each caption.",
          "The paper-style template (`osgha_lite/llm/prompts/descriptions_v1.txt`) with two small local LLMs "
          "(notebooks 01 and 06): share of test captions with valid descriptions, and the share whose "
          "descriptions match their own caption best (top-1 fidelity).",
          (Number("test captions covered", "01_augmentation_coverage", "test", "caption coverage"),
           Number("top-1 fidelity, SmolLM2-135M", "06_llm_ladder", "smollm2-135m", "fidelity_top1", unit=" %"),
           Number("top-1 fidelity, Qwen2.5-Coder-0.5B", "06_llm_ladder", "qwen2.5-coder-0.5b", "fidelity_top1",
                  unit=" %")),
          lambda values: ("not testable here", "the template works without domain knowledge, but the claim is "
                          "that it does as well as one with it; we have no domain-knowledge prompt to compare, "
                          "and the small LLMs' descriptions often fit another image's caption better")),
    Claim("The descriptions raise the information entropy of the text modality relative to the visual one.",
          "Captions joined with their descriptions minus captions alone, on the test split (notebook 02): "
          "word entropy (Miller–Madow) and the embedding's spectral entropy.",
          (Number("word entropy, with − without", "05_entropy",
                  "lexical_miller_madow_bits|captions+descriptions - captions", "value", ("low", "high"),
                  (ENTROPY, ("metrics", "lexical_miller_madow_bits[captions+descriptions - captions]"),
                   ("intervals", "lexical_miller_madow_bits[captions+descriptions - captions]")), " bits"),
           Number("spectral entropy, with − without", "05_entropy", "spectral_bits|captions+descriptions - captions",
                  "value", ("low", "high"),
                  (ENTROPY, ("metrics", "spectral_bits[captions+descriptions - captions]"),
                   ("intervals", "spectral_bits[captions+descriptions - captions]")), " bits")),
          _entropy),
    Claim("Multilateral hyperedges between texts and images correct the positive and negative matching errors "
          "for synonymous semantics in the fixed embedding space.",
          "The paper's adapter as we read it (`os-hgadapter-paper`: semantic and similarity hyperedges, HGNN "
          "convolution in a reduced dimension) minus the frozen space, test rSum, paired bootstrap over test "
          "images (notebook 06). Paraphrased queries, the direct test of the synonym claim, are not yet run.",
          (Number("rSum, paper's adapter − frozen", "06_paper_vs_additions", "os-hgadapter-paper|frozen-backbone",
                  "rsum_difference", ("low", "high")),),
          lambda values: _interval_verdict(values[0], "the paper's adapter against the frozen space")),
    Claim("Mapping the reduced dimension back to the original one reduces the noise that open semantic entropy "
          "brings.",
          "OS-HGAdapter with the convolution in the full dimension (`ablation-no-reduction`) against the "
          "reduced one, test rSum (notebook 05's ablations; the change is the ablation minus the full method).",
          (Number("rSum change without the reduction", "05_ablations", "ablation-no-reduction", "change_vs_full",
                  json=("results/{profile}/ablation-no-reduction.test.json", ("metrics", "all", "rsum"), None)),
           Number("rSum of the full method", "05_ablations", "os-hgadapter", "rsum", ("rsum_low", "rsum_high"),
                  json=("results/{profile}/os-hgadapter.test.json", ("metrics", "all", "rsum"),
                        ("intervals", "all", "rsum")))),
          lambda values: ("inconclusive at lite scale",
                          f"removing the reduction changes rSum by {values[0]['value']:+.1f}, far inside the "
                          f"bootstrap interval of the full method's rSum (±{(values[1]['high'] - values[1]['low']) / 2:.1f}); "
                          "no paired interval is computed for this ablation")),
    Claim("Gains of 16.8% (text→image) and 40.1% (image→text) in retrieval over existing methods on Flickr30K "
          "and MS-COCO.",
          "Our nearest measurement: OS-HGAdapter minus CLIP-Adapter, the strongest trained baseline here, on "
          "the lite backbone and Flickr8k (notebook 05).",
          (Number("rSum, OS-HGAdapter − CLIP-Adapter", "05_paired_differences", "clip-adapter", "rsum_difference",
                  ("low", "high"), (DIFFERENCES, ("differences", "clip-adapter", "rsum", "point"), None)),
           Number("relative rSum gain", "05_paired_differences", "clip-adapter", "relative_%", unit=" %")),
          lambda values: ("not testable here", "CLIP weights, Flickr30K and MS-COCO cannot be reached offline; "
                          "the `paper-flickr30k` and `paper-coco` profiles run this test where they can")),
)


class LedgerError(RuntimeError):
    """A result file or table the ledger reads is missing or lacks the row or field it names."""


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of a saved CSV or Markdown table as ``{column: text}``; the first column names the row."""
    if not path.is_file():
        raise LedgerError(f"{path}: missing; run the notebook that saves it")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    lines = [line for line in text.splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip().strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip().strip("|").split("|")))) for line in lines[2:]]


def find_row(rows: list[dict[str, str]], key: str, where: Path) -> dict[str, str]:
    """The row whose first column(s), joined by ``|``, equal ``key``."""
    parts = key.split("|")
    for row in rows:
        values = list(row.values())
        if values[:len(parts)] == parts:
            return row
    raise LedgerError(f"{where}: no row {key!r}")


def _dig(record: dict, keys: tuple[str, ...], where: str):
    for key in keys:
        if not isinstance(record, dict) or key not in record:
            raise LedgerError(f"{where}: no field {'/'.join(keys)}")
        record = record[key]
    return record


def number_value(number: Number, root: Path, profile: str) -> dict:
    """``{"value", "low", "high"}`` (the interval ``None`` when the table has none) of one ledger number."""
    tables = root / "results" / profile / "tables"
    row = find_row(read_table(tables / f"{number.table}.csv"), number.row, tables / f"{number.table}.csv")
    value = {"value": float(row[number.column]), "low": None, "high": None}
    if number.interval:
        value["low"], value["high"] = (float(row[c]) for c in number.interval)
    if number.json:
        path = root / number.json[0].format(profile=profile)
        if not path.is_file():
            raise LedgerError(f"{path}: missing; run the notebook that writes it")
        record = json.loads(path.read_text(encoding="utf-8"))
        point = _dig(record, number.json[1], str(path))
        if number.column == "change_vs_full":  # the change is the ablation's rSum minus the full method's
            full = json.loads((root / "results" / profile / "os-hgadapter.test.json").read_text(encoding="utf-8"))
            point = point - _dig(full, number.json[1], "os-hgadapter.test.json")
        value["value"] = float(point)
        if number.json[2]:
            value["low"], value["high"] = (float(x) for x in _dig(record, number.json[2], str(path)))
        elif number.interval and "differences" in number.json[1]:
            entry = _dig(record, number.json[1][:-1], str(path))
            value["low"], value["high"] = float(entry["low"]), float(entry["high"])
    return value


def table_digits(cell: str) -> int:
    return len(cell.split(".")[1]) if "." in cell else 0


def check(root: Path = PROJECT_ROOT, profile: str = "lite") -> list[str]:
    """Every ledger number, rounded as its Markdown table prints it, against that table's cell.

    Returns the differences (empty: the ledger and the tables agree)."""
    problems = []
    for claim in CLAIMS:
        for number in claim.numbers:
            path = root / "results" / profile / "tables" / f"{number.table}.md"
            try:
                row = find_row(read_table(path), number.row, path)
                value = number_value(number, root, profile)
            except LedgerError as error:
                problems.append(str(error))
                continue
            columns = [(number.column, value["value"])]
            if number.interval:
                columns += list(zip(number.interval, (value["low"], value["high"])))
            for column, x in columns:
                printed = row.get(column)
                if printed is None:
                    problems.append(f"{path}: no column {column!r}")
                elif f"{x:.{table_digits(printed)}f}" != printed and not (
                        float(printed) == 0 and abs(x) < 0.5 * 10 ** -table_digits(printed)):
                    problems.append(f"{path}: row {number.row!r}, column {column!r} prints {printed}, but the "
                                    f"result file gives {x:.{table_digits(printed)}f} ({number.label})")
    return problems


def _cell(table: str, notebooks: Path) -> str:
    """``notebook NN, cell K`` of the code cell that saves ``table``."""
    for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        code = 0
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            code += 1
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if f'"{table}"' in source:
                return f"[notebook {path.name[:2]}](../notebooks/{path.name}), code cell {code}"
    return "a notebook"


def _format(number: Number, value: dict, digits: int) -> str:
    signed = "−" in number.label or "change" in number.label  # a difference carries its sign
    text = f"{value['value']:{'+' if signed else ''}.{digits}f}{number.unit}"
    if value["low"] is not None:
        text += f" [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"
    return text


def render(root: Path = PROJECT_ROOT, profile: str = "lite", notebooks: Path | None = None) -> str:
    """The ledger page, Markdown, filled from the result files under ``root/results/<profile>``."""
    notebooks = notebooks or root / "notebooks"
    rows, summary = [], []
    for i, claim in enumerate(CLAIMS, 1):
        values, shown, sources = [], [], []
        for number in claim.numbers:
            value = number_value(number, root, profile)
            md = root / "results" / profile / "tables" / f"{number.table}.md"
            printed = find_row(read_table(md), number.row, md)[number.column]
            values.append(value)
            shown.append(f"{number.label}: {_format(number, value, table_digits(printed))}")
            source = (f"[`{number.table}`](../results/{profile}/tables/{number.table}.md), "
                      f"{_cell(number.table, notebooks)}")
            if source not in sources:
                sources.append(source)
        verdict, reason = claim.verdict(values)
        if verdict not in VERDICTS:
            raise LedgerError(f"claim {i}: verdict {verdict!r} is not one of {VERDICTS}")
        short = claim.claim.split(",")[0].split(" in ")[0].rstrip(".")
        summary.append(f"| [{i}](#claim-{i}) | {short} | **{verdict}** |")
        rows.append(f"""## Claim {i}

> {claim.claim}

- **Our test.** {claim.test}
- **Number** [95% interval]**.** {'; '.join(shown)}.
- **From.** {'; '.join(sources)}.
- **Verdict: {verdict}.** {reason[0].upper() + reason[1:]}.
""")
    return f"""# The paper's claims, tested

Each claim of the paper's abstract (paraphrased; the abstract is the only part
of the paper we can read), the test we run for it, the number with its 95%
interval, where it comes from, and a verdict. The page is written by
`book/ledger.py` from the result files of profile `{profile}`; no number is
typed by hand, and a test fails when one differs from its table. Verdicts:
*supported* (paired interval above 0), *not supported* (the opposite
direction, or the measure moves against the claim), *inconclusive at lite
scale* (the interval includes 0, or two measures disagree), *not testable
here* (needs what cannot be reached offline).

| # | claim | verdict |
|---|---|---|
""" + "\n".join(summary) + "\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="folder holding results/ (default: the repository)")
    parser.add_argument("--profile", default="lite")
    parser.add_argument("--write", action="store_true", help=f"rewrite {PAGE.relative_to(PROJECT_ROOT)}")
    parser.add_argument("--check", action="store_true", help="compare every number with its table")
    args = parser.parse_args(argv)
    problems = check(args.root, args.profile)
    for problem in problems:
        print(f"[ledger] {problem}", file=sys.stderr)
    if args.write and not problems:
        PAGE.write_text(render(args.root, args.profile), encoding="utf-8")
        print(f"[ledger] wrote {PAGE}")
    if not args.write and not args.check:
        print(render(args.root, args.profile))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

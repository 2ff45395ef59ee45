"""Write captions.csv of the Flickr8k held-back slice: the images of captions.txt in no official split.

Flickr8k's captions.txt describes 8,091 images, but the official lists
Flickr_8k.{train,dev,test}Images.txt name 8,000 (one of them, in the test
list, is not in the distribution). The images in none of the three lists are
a slice no split uses; this script writes their captions, in the order of
captions.txt, as rows ``image,caption,split`` with split ``test``, reading
the files with the project's strict readers (so a damaged captions.txt stops
here too). Repeated (image, caption) rows of captions.txt are written once.

    python data/examples/flickr8k-heldout/make_captions.py            # $OSGHA_DATA_ROOT/flickr8k
    python data/examples/flickr8k-heldout/make_captions.py --flickr8k /path/to/flickr8k --out captions.csv
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from osgha_lite.data import SPLITS, DataError, data_root
from osgha_lite.data.readers import split_list
from osgha_lite.data.textfiles import csv_records


def heldout_rows(flickr8k: Path) -> list[tuple[str, str, str]]:
    """``(image, caption, "test")`` for every caption of an image that no official split lists."""
    listed = set()
    for split in SPLITS:
        listed |= set(split_list(flickr8k / f"Flickr_8k.{split}Images.txt"))
    records = csv_records(flickr8k / "captions.txt")
    number, header = next(records)
    if [h.strip().lower() for h in header] != ["image", "caption"]:
        raise DataError(f"{flickr8k / 'captions.txt'}, line {number}: expected the header 'image,caption'")
    rows, seen = [], set()
    for number, (image, caption) in records:
        row = (image.strip(), caption.strip(), "test")
        if row[0] not in listed and row not in seen:
            seen.add(row)
            rows.append(row)
    return rows


def render(rows: list[tuple[str, str, str]]) -> str:
    """The CSV text (header ``image,caption,split``, ``\\n`` line ends, quotes only where needed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("image", "caption", "split"))
    writer.writerows(rows)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flickr8k", type=Path, default=None, help="the Flickr8k folder (default: <data root>/flickr8k)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("captions.csv"))
    args = parser.parse_args()
    rows = heldout_rows(args.flickr8k or data_root() / "flickr8k")
    args.out.write_text(render(rows), encoding="utf-8")
    print(f"{args.out}: {len(rows)} captions of {len({r[0] for r in rows})} images")


if __name__ == "__main__":
    main()

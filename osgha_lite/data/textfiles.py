"""Strict reading of the text files datasets are made of: UTF-8, CSV, JSON, JSON Lines.

Every function either returns what the file says or raises
:class:`~osgha_lite.data.captionset.DataError` naming the file, the line (or the
JSON path such as ``images[3].sentences``) and what to do. Nothing is
guessed:

* Text is UTF-8. A leading UTF-8 byte-order mark is dropped; any byte that
  is not UTF-8 is an error naming its line and byte offset; a NUL byte is an
  error naming its line (it means a binary or damaged file).
* CSV is RFC 4180 with one record per line: a field is either unquoted
  (no ``"`` inside) or wrapped in ``"..."`` with ``""`` for a literal quote,
  and a quoted field closes on the line where it opens. A quote that does
  not close is an error naming the line and column where it opens (the
  standard ``csv`` module would read the rest of the file into that field).
* JSON values are checked against the expected type where they are used
  (:func:`expect`), with the JSON path in the message.
* Paths read from data files (:func:`inside`) are relative, without ``..``
  and without a leading ``/`` or drive, so they never leave their folder.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path, PurePosixPath
from typing import Iterator

from osgha_lite.data.captionset import DataError

UTF8_HELP = "save it as UTF-8 (for example `iconv -f latin1 -t utf-8 old > new`)"


def read_text(path: Path) -> str:
    """The file's text, decoded strictly as UTF-8 (a leading byte-order mark is dropped)."""
    data = Path(path).read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = skip + error.start
        line = data[:offset].count(b"\n") + 1
        bad = data[offset:offset + 4].hex(" ")
        raise DataError(f"{path}, line {line} (byte offset {offset}): not valid UTF-8 (bytes {bad}: {error.reason}); "
                        f"{UTF8_HELP}") from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataError(f"{path}, line {line}: contains a NUL byte (\\x00), so the file is binary or damaged; "
                        "remove the NUL bytes or export the file again as plain UTF-8 text")
    return text


def lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of every line that is not blank, without its line ending."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line[:-1] if line.endswith("\r") else line
        if line.strip():
            yield number, line


def parse_csv_line(line: str, path: Path, number: int) -> list[str]:
    """The fields of one CSV record (see the module docstring for the accepted form)."""
    fields, position, size = [], 0, len(line)
    while True:
        if position < size and line[position] == '"':
            opened, position, value = position, position + 1, []
            while True:
                close = line.find('"', position)
                if close < 0:
                    raise DataError(
                        f"{path}, line {number}: the quote at column {opened + 1} does not close on this line; "
                        'close it, write a literal quote as "" inside a quoted field, or remove it '
                        "(a caption may not span lines)")
                value.append(line[position:close])
                if line.startswith('""', close):
                    value.append('"')
                    position = close + 2
                    continue
                position = close + 1
                break
            fields.append("".join(value))
            if position < size and line[position] != ",":
                raise DataError(f"{path}, line {number}, column {position + 1}: text after the closing quote of a "
                                f"quoted field; put the whole field in quotes and double the quotes inside it")
        else:
            end = line.find(",", position)
            end = size if end < 0 else end
            value = line[position:end]
            if '"' in value:
                column = position + value.index('"') + 1
                raise DataError(f"{path}, line {number}, column {column}: a quote inside an unquoted field; "
                                'wrap the field in quotes and write the quote as ""')
            fields.append(value)
            position = end
        if position >= size:
            return fields
        position += 1  # the comma
        if position == size:
            fields.append("")
            return fields


def csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank line of the CSV file ``path`` (header included)."""
    for number, line in lines(read_text(path)):
        yield number, parse_csv_line(line, path, number)


def read_json(path: Path):
    """The parsed content of the JSON file ``path``."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}); fix the file") from None


def jsonl_records(path: Path) -> Iterator[tuple[int, object]]:
    """``(line number, value)`` of every non-blank line of the JSON Lines file ``path``."""
    for number, line in lines(read_text(path)):
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}, column {error.colno}: not valid JSON ({error.msg}); "
                            "each line must be one JSON object") from None


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}


def json_type(value) -> str:
    """The JSON name of ``value``'s type (``null``, ``true``, ``a number`` ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def expect(value, kinds: type | tuple[type, ...], path: Path, where: str):
    """``value`` if it is of type ``kinds`` (booleans never count as integers), else a DataError."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    wanted = " or ".join(_JSON_TYPES.get(kind, kind.__name__) for kind in kinds)
    shown = f" ({json.dumps(value)[:60]})" if isinstance(value, (str, int, float, bool)) else ""
    raise DataError(f"{path}: {where} must be {wanted}, found {json_type(value)}{shown}; fix the file")


def inside(value: str, where: str) -> PurePosixPath:
    """The relative path ``value`` read from a data file; refused if it could leave its folder."""
    relative = PurePosixPath(value.replace("\\", "/"))
    if (not value.strip() or relative.is_absolute() or ".." in relative.parts
            or (relative.parts and relative.parts[0].endswith(":"))):
        raise DataError(f"{where}: path {value!r} leaves the dataset folder; write it relative to the folder, "
                        "without '..' and without a leading '/' or drive")
    return relative

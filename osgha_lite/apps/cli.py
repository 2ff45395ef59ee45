"""What the command-line tools share: every error as one line (and, from :mod:`osgha_lite.paths`, paths that always print).

:func:`run_reporting_errors` runs a command's body; an exception reaches the
user as one line on stderr, ``error: <message>``, with exit code 2 for the
errors the project raises on purpose (bad input, missing or damaged files:
``ValueError`` and its subclasses, ``OSError``,
:class:`~osgha_lite.backbones.image_decode.ImageDecodeError`) and exit code 1, with the
exception's type, for anything else. ``--debug`` (:func:`add_debug_option`)
lets the exception through with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from osgha_lite.backbones.image_decode import ImageDecodeError
from osgha_lite.paths import display_path  # noqa: F401 - also reachable from here


def one_line(error: BaseException) -> str:
    """The exception's message on one line (line breaks joined with spaces), printable whatever it holds."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _expected(error: Exception) -> bool:
    return isinstance(error, (ValueError, OSError, ImageDecodeError))


def run_reporting_errors(body: Callable[[], int], debug: bool = False) -> int:
    """``body()``'s exit code; an exception is printed as one line (see the module docstring), or raised
    with ``debug``. Ctrl-C ends with ``error: interrupted`` and exit code 130."""
    try:
        return body()
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every error becomes one line unless --debug
        if debug:
            raise
        if _expected(error):
            print(f"error: {one_line(error)}", file=sys.stderr)
            return 2
        print(f"error: {type(error).__name__}: {one_line(error)} (run again with --debug for the traceback)",
              file=sys.stderr)
        return 1

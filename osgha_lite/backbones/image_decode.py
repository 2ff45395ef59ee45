"""Decoding image files: one error type naming the file and the problem, and skipping instead of raising.

:func:`load_rgb` opens an image as RGB or raises :class:`ImageDecodeError`
(with ``path`` and ``problem``) for a file that cannot be read, is empty
(0 bytes), is not an image, has more than :data:`MAX_IMAGE_PIXELS` pixels,
or is truncated or damaged.

Inside :func:`collect_undecodable` an image encoder
(:mod:`osgha_lite.backbones.encoders`) does not raise for such a file: it records it
(path -> problem) and returns NaN for its feature row, which is how the
feature cache (:func:`osgha_lite.backbones.features.check_decoded`) knows it later,
from the cache, without decoding it again. ``python -m osgha_lite evaluate``
and ``search index`` skip these images; everywhere else a NaN row is an
:class:`UndecodableImages` error naming every such file.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Callable, Sequence

#: Largest image, in pixels, that is decoded (PIL's own warning threshold, about 9,459 x 9,459); a larger one
#: is an undecodable image, so a bogus header cannot make a decoder allocate gigabytes.
MAX_IMAGE_PIXELS = 89_478_485


class ImageDecodeError(RuntimeError):
    """An image file could not be read; the message names the file, ``problem`` says what is wrong."""

    def __init__(self, message: str, path=None, problem: str = ""):
        super().__init__(message)
        self.path, self.problem = path, problem or message


class UndecodableImages(ImageDecodeError):
    """Images of a list that could not be decoded; ``problems`` maps each path to what is wrong with it."""

    def __init__(self, problems: dict):
        shown = "; ".join(f"{path} ({problem})" for path, problem in list(problems.items())[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} image(s) cannot be decoded: {shown}{more}. Remove or replace them "
                         f"(python -m osgha_lite evaluate and search index skip such images)",
                         problem="cannot be decoded")
        self.problems = dict(problems)


def load_rgb(path: str | os.PathLike):
    """Open an image as RGB, or raise :class:`ImageDecodeError` naming the file and the problem: unreadable,
    empty (0 bytes), not an image, above :data:`MAX_IMAGE_PIXELS`, truncated or damaged."""
    from PIL import Image

    try:
        if os.stat(path).st_size == 0:
            raise ValueError("an empty file (0 bytes)")
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{image.width * image.height:,} pixels ({image.width} x {image.height}), above "
                                 f"the limit of {MAX_IMAGE_PIXELS:,}")
            return image.convert("RGB")
    except Exception as error:  # PIL raises several error types
        problem = str(error) or type(error).__name__
        if isinstance(error, Image.DecompressionBombError):  # PIL refuses it before our check: "(N pixels)"
            found = re.search(r"\((\d+) pixels\)", problem)
            size = f"{int(found.group(1)):,} pixels" if found else problem
            problem = f"{size}, above the limit of {MAX_IMAGE_PIXELS:,}"
        raise ImageDecodeError(
            f"{path}: cannot decode image ({problem}). Remove or replace the file; python -m osgha_lite evaluate "
            f"and search index skip such images, and load_dataset(..., verify_images=True, skip_missing=True) "
            f"leaves them out.", path=path, problem=problem) from None


def decode_problem(path) -> str:
    """What is wrong with an image file (:func:`load_rgb`'s problem), decoding it again to find out."""
    try:
        load_rgb(path)
    except ImageDecodeError as error:
        return error.problem
    return "it could not be decoded when its features were computed"


@contextlib.contextmanager
def collect_undecodable(encoder, active: bool = True):
    """Within the block, images ``encoder`` cannot decode are collected instead of raised: yields a dict
    (path -> problem) that fills as they are met; their feature rows are NaN.

    Inside :mod:`osgha_lite.backbones.features` the NaN rows are what marks them, cached
    or not (:func:`osgha_lite.backbones.features.check_decoded`): they are added to the
    dict while it collects, and raise :class:`UndecodableImages` otherwise.
    With ``active=False`` nothing changes (errors are raised) and the dict
    stays empty.
    """
    found: dict[str, str] = {}
    if not active:
        yield found
        return
    previous = getattr(encoder, "undecodable", None)
    encoder.undecodable = found
    try:
        yield found
    finally:
        encoder.undecodable = previous


def tolerant(load: Callable, undecodable: dict | None, failed: list, blank: Callable):
    """``load`` that, while ``undecodable`` collects (a dict), records a failing item there and in ``failed``
    and returns ``blank()`` in its place."""
    if undecodable is None:
        return load

    def wrapped(item):
        try:
            return load(item)
        except ImageDecodeError as error:
            undecodable[os.fspath(item)] = error.problem
            failed.append(item)
            return blank()
    return wrapped


def failed_rows(chunk: Sequence, failed: list) -> list[int]:
    """Positions in ``chunk`` of the items in ``failed`` (:func:`tolerant`'s record of a chunk)."""
    return [row for row, item in enumerate(chunk) if any(item is f or item == f for f in failed)]

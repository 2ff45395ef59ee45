"""Bounds on what one request can make the server hold: body size, prompt characters, read time.

A prompt must stay under ``num_ctx`` tokens (the server refuses it otherwise), and one token of a
model's vocabulary stands for at most ``chars_per_token`` characters of text (:func:`chars_per_token`:
its longest token, times 4 when the tokenizer normalizes text, since Unicode composition joins at
most 4 characters into one). So a legal prompt has at most ``(num_ctx - 1) * chars_per_token``
characters, and

* :func:`prompt_char_limit` is that bound: a longer prompt is refused before it is tokenized
  (tokenizing a 20 MB prompt took 19 s and 1.7 GB);
* :func:`default_max_body_bytes` sizes ``--max-body-bytes`` for the largest legal prompt at the
  ``num_ctx`` of the registered models' Modelfiles: 12 bytes per character (the longest JSON form
  of one character, a pair of ``\\uXXXX`` escapes), 12 bytes per token id of ``context``, and
  64 KiB for every other field. A request with a larger ``Content-Length`` gets HTTP 413 before
  its body is read (a request that raises ``num_ctx`` may need a larger ``--max-body-bytes``);
* :func:`read_body` reads a body in pieces against a deadline (``--read-timeout``), and
  :func:`drop_body` reads and drops what a client still sends after an early answer, so that the
  client reads the answer rather than a reset connection.
"""

from __future__ import annotations

import socket
import time
from typing import Any, BinaryIO, Iterable

NORMALIZATION_FACTOR = 4
"""Most characters Unicode composition (NFC) joins into one (U+1F82 is 4 characters in NFD)."""
JSON_BYTES_PER_CHAR = 12
TOKEN_ID_BYTES = 12
OTHER_FIELDS_BYTES = 64 * 1024
DEFAULT_READ_TIMEOUT = 60.0
DROP_SECONDS = 10.0
CHUNK = 64 * 1024
DROP_CHUNK = 1024 * 1024


def chars_per_token(tokenizer: Any) -> int:
    """The most characters one token of ``tokenizer`` can stand for in the text it was made from.

    A vocabulary entry is never shorter than its text (a byte-level BPE token has one character
    per byte, a SentencePiece piece one per character, or six for a ``<0xXX>`` byte), so the
    longest entry bounds it; text that a normalizer composes counts up to 4 times that."""
    longest = max((len(token) for token in tokenizer.get_vocab()), default=1)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizes = backend is None or backend.normalizer is not None
    return longest * (NORMALIZATION_FACTOR if normalizes else 1)


def prompt_char_limit(num_ctx: int, per_token: int) -> int:
    """The most characters of a prompt that can be fewer than ``num_ctx`` tokens."""
    return max(num_ctx - 1, 0) * per_token


def default_max_body_bytes(contexts: Iterable[tuple[int, int]]) -> int:
    """``--max-body-bytes`` for models given as ``(num_ctx, chars_per_token)`` pairs (see the module docstring)."""
    largest = max((JSON_BYTES_PER_CHAR * prompt_char_limit(num_ctx, per_token) + TOKEN_ID_BYTES * num_ctx
                   for num_ctx, per_token in contexts), default=0)
    return largest + OTHER_FIELDS_BYTES


def read_body(rfile: BinaryIO, length: int, deadline: float) -> bytes:
    """``length`` bytes from ``rfile``. Raises ``TimeoutError`` once ``time.monotonic()`` passes
    ``deadline`` and ``EOFError`` when the client stops sending first (both with the bytes read)."""
    parts, read = [], 0
    while read < length:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{read:,} of {length:,} bytes")
        try:
            piece = rfile.read1(min(CHUNK, length - read))
        except TimeoutError:  # the connection's own timeout: nothing arrived for that long
            raise TimeoutError(f"{read:,} of {length:,} bytes") from None
        if not piece:
            raise EOFError(f"{read:,} of {length:,} bytes")
        parts.append(piece)
        read += len(piece)
    return b"".join(parts)


def drop_body(connection: socket.socket, rfile: BinaryIO, length: int, seconds: float = DROP_SECONDS) -> int:
    """After the answer is sent: close the sending side, then read and drop up to ``length`` bytes
    the client still sends, for at most ``seconds``; returns the bytes dropped. Nothing is kept, so
    memory does not grow; without it, closing a socket with unread data resets the connection and
    the client may lose the answer."""
    try:
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(1.0)
    except OSError:
        return 0
    deadline, dropped, buffer = time.monotonic() + seconds, 0, bytearray(DROP_CHUNK)
    while dropped < length and time.monotonic() < deadline:
        try:
            count = rfile.readinto1(buffer)
        except OSError:
            break
        if not count:
            break
        dropped += count
    return dropped

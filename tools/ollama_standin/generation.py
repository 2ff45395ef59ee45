"""What every engine of the stand-in shares: request options, the request object, token -> text.

An engine turns a :class:`Generation` (prompt token ids plus
:class:`SamplingParams`) into events on ``generation.events``; the HTTP side
(``server.py``) only talks to this interface:

==========================  ===================================================
``engine.render_chat(m)``   token ids of chat messages ``m`` (the GGUF's template)
``engine.encode(text)``     token ids of raw text
``engine.chat_template``    the GGUF's chat template (``/api/show``)
``engine.submit(gen)``      queue a request (``ValueError`` for a bad prompt)
``engine.stats``            counters: requests, decode steps, tokens, largest batch
``engine.chars_per_token``  most characters one token stands for (``limits.py``)
``engine.load_seconds``     model load time; ``engine.describe`` a short label
``engine.close()``          stop the worker
==========================  ===================================================

Two engines implement it: ``engine.Engine`` (transformers, continuous
batching) and ``llamacpp_engine.LlamaCppEngine`` (llama.cpp, one request at a
time). Both tokenize with the tokenizer transformers reads from the GGUF
(stored after the first read, ``gguf_parts.py``), so the same request gives
the same prompt token ids under either engine, and both turn output tokens
into text with :class:`Reply` (stop tokens, stop strings, ``num_predict``,
``num_ctx``, streamed pieces).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .limits import chars_per_token


@dataclass
class SamplingParams:
    """Ollama runtime options understood by the engines (Ollama's defaults)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    num_predict: int = -1
    num_ctx: int = 2048
    stop: list[str] = field(default_factory=list)

    FIELDS = (
        "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n",
        "presence_penalty", "frequency_penalty", "seed", "num_predict", "num_ctx", "stop",
    )

    @classmethod
    def from_options(cls, *layers: dict[str, Any] | None) -> tuple["SamplingParams", list[str]]:
        """Merge option dicts (later ones win); returns the params and the ignored option names."""
        params, ignored = cls(), []
        for options in layers:
            for name, value in (options or {}).items():
                if value is None:
                    continue
                if name not in cls.FIELDS:
                    ignored.append(name)
                    continue
                if name == "stop":
                    value = [value] if isinstance(value, str) else [str(v) for v in value]
                elif name in ("top_k", "repeat_last_n", "num_predict", "num_ctx", "seed"):
                    value = int(value)
                else:
                    value = float(value)
                setattr(params, name, value)
        return params, ignored


@dataclass
class Generation:
    """One request: read ``events`` until a ``("done", info)`` or ``("error", msg)`` event.

    Events are ``("delta", text)`` (only when ``stream`` is true), then
    ``("done", info)`` with ``info = {"text", "done_reason", "prompt_eval_count",
    "prompt_eval_duration", "eval_count", "eval_duration", "output_ids"}`` (durations
    in nanoseconds), or ``("error", message)``.
    """

    prompt_ids: list[int]
    params: SamplingParams
    stream: bool = False
    events: "queue.Queue[tuple[str, Any]]" = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)


@dataclass
class Reply:
    """The output side of one request: tokens so far, text, and whether it is done."""

    gen: Generation
    context: list[int]
    stop_ids: set[int]
    output_ids: list[int] = field(default_factory=list)
    sent_chars: int = 0
    first_token_at: float = 0.0
    prompt_eval_ns: int = 0
    done_reason: str | None = None
    final_text: str | None = None

    def accept(self, token: int, tokenizer: Any, special_ids: dict[str, int]) -> bool:
        """Record a sampled ``token``; sets ``done_reason`` (``"stop"`` for a stop token or
        stop string, ``"length"`` at ``num_predict`` or ``num_ctx``) and streams new text.
        Returns whether the token is part of the output (a stop token is not)."""
        params = self.gen.params
        if not self.output_ids and not self.first_token_at:
            self.first_token_at = time.perf_counter()
        if token in self.stop_ids:
            self.done_reason = "stop"
            return False
        self.output_ids.append(token)
        self.context.append(token)
        text = tokenizer.decode(self.output_ids, skip_special_tokens=True)
        for stop in params.stop:
            if stop in special_ids:
                continue
            at = text.find(stop)
            if at >= 0:
                self.final_text = text[:at]
                self.done_reason = "stop"
                break
        limit = params.num_predict if params.num_predict > 0 else params.num_ctx
        if self.done_reason is None and (len(self.output_ids) >= limit or len(self.context) >= params.num_ctx):
            self.done_reason = "length"
        if self.gen.stream:
            shown = self.final_text if self.final_text is not None else text
            if self.done_reason is None:
                hold = max((len(s) for s in params.stop if s not in special_ids), default=1) - 1
                shown = shown[: max(self.sent_chars, len(shown) - hold)]
                if shown.endswith("\ufffd"):  # an incomplete multi-byte character
                    shown = shown[: len(shown.rstrip("\ufffd"))]
            if len(shown) > self.sent_chars:
                self.gen.events.put(("delta", shown[self.sent_chars :]))
                self.sent_chars = len(shown)
        return True

    def finish(self, tokenizer: Any, now: float) -> None:
        """Send the rest of the text (streaming) and the ``("done", info)`` event."""
        text = self.final_text
        if text is None:
            text = tokenizer.decode(self.output_ids, skip_special_tokens=True)
        if self.gen.stream and len(text) > self.sent_chars:
            self.gen.events.put(("delta", text[self.sent_chars :]))
        self.gen.events.put(
            (
                "done",
                {
                    "text": text,
                    "done_reason": self.done_reason,
                    "prompt_eval_count": len(self.gen.prompt_ids),
                    "prompt_eval_duration": self.prompt_eval_ns,
                    "eval_count": len(self.output_ids),
                    "eval_duration": int((now - (self.first_token_at or now)) * 1e9),
                    "output_ids": list(self.output_ids),
                },
            )
        )


class EngineBase:
    """The tokenizer, request queue and worker thread every engine has (see the module docstring).

    A subclass loads its model, sets ``vocab_size``, ``eos_ids``, ``load_seconds``
    and ``describe``, and runs ``_run`` (its worker loop, which reads ``self._queue``
    until ``self._stopping`` is set) with :meth:`_start`.
    """

    name = "base"
    vocab_size: int
    eos_ids: set[int]
    load_seconds: float
    describe: str

    def __init__(self, gguf_path: str | Path) -> None:
        from transformers.utils import logging as hf_logging

        from .gguf_parts import gguf_parts

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.gguf_path = Path(gguf_path)
        # read from the GGUF once, then from the verified store (gguf_parts.py)
        self.tokenizer, self.model_config = gguf_parts(self.gguf_path)
        self.special_ids = {tok: i for tok, i in zip(self.tokenizer.all_special_tokens, self.tokenizer.all_special_ids)}
        self.chars_per_token = chars_per_token(self.tokenizer)  # bounds a prompt's length before tokenizing
        self._queue: "queue.Queue[Generation]" = queue.Queue()
        self._stopping = threading.Event()
        self.stats = {"steps": 0, "tokens": 0, "requests": 0, "max_rows": 0}
        self._worker: threading.Thread | None = None

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered with the GGUF's own chat template."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def reply(self, gen: Generation, cls: type[Reply] = Reply, **fields: Any) -> Reply:
        """A :class:`Reply` (or subclass ``cls``) for ``gen``: it stops at the end-of-sequence ids
        and at the stop strings that are special tokens."""
        stop_ids = set(self.eos_ids) | {self.special_ids[s] for s in gen.params.stop if s in self.special_ids}
        return cls(gen=gen, context=list(gen.prompt_ids), stop_ids=stop_ids, **fields)

    def submit(self, gen: Generation) -> Generation:
        """Queue ``gen``; raises ``ValueError`` (before it reaches the model) for an empty prompt
        or a token id that is not an integer in ``[0, vocab_size)``."""
        if not gen.prompt_ids:
            raise ValueError("empty prompt")
        for index, token in enumerate(gen.prompt_ids):
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token!r} at position {index} of the prompt (context + prompt) is not "
                                 f"in the model's vocabulary [0, {self.vocab_size})")
        self._queue.put(gen)
        return gen

    def _start(self) -> None:
        self._worker = threading.Thread(target=self._run, name=f"standin-{self.name}", daemon=True)
        self._worker.start()

    def _run(self) -> None:  # pragma: no cover - every engine has its own
        raise NotImplementedError

    def close(self) -> None:
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout=5)

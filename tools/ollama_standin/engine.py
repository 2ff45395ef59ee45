"""Continuous-batching text generation over a GGUF model de-quantized by transformers.

The stand-in's default engine (``--engine transformers``; the other,
``llamacpp_engine.py``, runs llama.cpp on the GGUF). One :class:`Engine` owns
one model and one worker thread. Callers hand it a
:class:`~generation.Generation` (prompt token ids plus sampling parameters,
see ``generation.py`` for the interface both engines share) and read events
from ``generation.events``; the worker merges every request that is
waiting into the batch it is already decoding (continuous batching), so N
concurrent HTTP requests cost roughly one forward pass per generated token
instead of N.

Batch layout
------------
All rows share one key/value cache of shape ``(B, heads, T, head_dim)`` per
layer. Column ``t`` of the cache is a slot in time, not a position: each row
keeps its own position ids (used by RoPE) and a 0/1 mask over the ``T``
columns. A row's valid columns are ordered in time but need not be
contiguous, which lets the worker

* left-pad a newly admitted group of prompts to a common length,
* put a shared prompt prefix (system prompt + few-shot example) computed once
  in front of every row of a group ("prefix cache"; only the prompt suffix
  after the longest common prefix is evaluated per row),
* merge a group into the running batch (the shorter side is padded on the
  left with masked zero columns),
* drop finished rows and then every column no row attends to.

A group whose prefill fails is admitted again one request at a time, so a
request that breaks the forward pass fails alone (an ``("error", ...)``
event) and the rows already decoding go on.

The attention mask handed to the model is an explicit 4-D boolean
``(B, 1, q, T)`` tensor, so transformers uses it as is. Padded query
positions attend to themselves only, so no softmax row is empty (no NaN can
leak into the cache).

Sampling (per row, Ollama's order)
----------------------------------
repeat / presence / frequency penalties over the last ``repeat_last_n``
tokens of the context (prompt + output) -> ``top_k`` -> temperature ->
softmax -> ``top_p`` -> ``min_p`` -> one draw from the row's own
``torch.Generator`` seeded with the request's ``seed``. ``temperature <= 0``
is greedy decoding.

Determinism: each request draws from its own generator, so its random
stream does not depend on which requests share the batch. The logits
themselves can differ in the last bits between batch shapes (BLAS blocking
and padding change the summation order), which can flip a draw that falls on
a near tie. A request repeated under the same batch composition (in
particular, alone) gives identical output; under concurrency, outputs are
reproducible up to such rare flips. Real Ollama with ``OLLAMA_NUM_PARALLEL``
> 1 has the same caveat.
"""

from __future__ import annotations

import logging
import queue
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .generation import EngineBase, Generation, Reply, SamplingParams

__all__ = ["Engine", "Generation", "SamplingParams", "sample_next_token"]

log = logging.getLogger("ollama_standin.engine")

MIN_SHARED_PREFIX = 16
"""A common prompt prefix shorter than this many tokens is not worth caching."""

SPARE_COLUMNS = 160
"""Free time slots allocated after each rebuild of the cache buffers."""


# --------------------------------------------------------------------------- #
# Key/value cache with spare time slots
# --------------------------------------------------------------------------- #
def _cache_classes():
    from transformers.cache_utils import Cache, DynamicLayer

    class SlottedLayer(DynamicLayer):
        """Keys/values in a buffer with free columns: appending a token writes in place.

        transformers' ``DynamicLayer`` concatenates on every step, copying the whole
        cache each time; here only rebuilds (row admission / removal) copy.
        """

        def __init__(self) -> None:
            super().__init__()
            self._kbuf: torch.Tensor | None = None
            self._vbuf: torch.Tensor | None = None
            self._used = 0

        def fill(self, keys: torch.Tensor, values: torch.Tensor, spare: int = SPARE_COLUMNS) -> None:
            b, h, t, d = keys.shape
            self._kbuf = keys.new_zeros((b, h, t + spare, d))
            self._vbuf = values.new_zeros((b, h, t + spare, d))
            self._kbuf[:, :, :t] = keys
            self._vbuf[:, :, :t] = values
            self._used = t
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self._expose()

        def _expose(self) -> None:
            self.keys = self._kbuf[:, :, : self._used]
            self.values = self._vbuf[:, :, : self._used]

        def update(self, key_states, value_states, *args, **kwargs):
            if self._kbuf is None:
                self.fill(key_states, value_states)
                return self.keys, self.values
            t = key_states.shape[-2]
            if self._used + t > self._kbuf.shape[2]:
                keys = torch.cat([self.keys, key_states], dim=2)
                values = torch.cat([self.values, value_states], dim=2)
                self.fill(keys, values, spare=max(SPARE_COLUMNS, keys.shape[2] // 2))
                return self.keys, self.values
            self._kbuf[:, :, self._used : self._used + t] = key_states
            self._vbuf[:, :, self._used : self._used + t] = value_states
            self._used += t
            self._expose()
            return self.keys, self.values

    class SlottedCache(Cache):
        def __init__(self, num_layers: int) -> None:
            super().__init__(layers=[SlottedLayer() for _ in range(num_layers)])

        def tensors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(layer.keys, layer.values) for layer in self.layers]

        @classmethod
        def from_tensors(cls, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> "SlottedCache":
            cache = cls(len(kv))
            for layer, (k, v) in zip(cache.layers, kv):
                layer.fill(k, v)
            return cache

    return SlottedCache


# --------------------------------------------------------------------------- #
# Per-row sampling
# --------------------------------------------------------------------------- #
def sample_next_token(
    logits: torch.Tensor, params: SamplingParams, context: list[int], rng: torch.Generator
) -> int:
    """Pick one token id from a 1-D float32 ``logits`` vector (see module docstring)."""
    logits = logits.clone()
    recent = context[-params.repeat_last_n :] if params.repeat_last_n > 0 else []
    if recent and (params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty):
        ids, counts = torch.unique(torch.tensor(recent, dtype=torch.long), return_counts=True)
        picked = logits[ids]
        if params.repeat_penalty != 1.0:
            picked = torch.where(picked > 0, picked / params.repeat_penalty, picked * params.repeat_penalty)
        picked = picked - counts.to(picked.dtype) * params.frequency_penalty - params.presence_penalty
        logits[ids] = picked
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    if 0 < params.top_k < logits.numel():
        values, index = torch.topk(logits, params.top_k)
    else:
        values, index = torch.sort(logits, descending=True)
    probs = torch.softmax(values / params.temperature, dim=-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if params.top_p < 1.0:
        keep &= (torch.cumsum(probs, dim=-1) - probs) < params.top_p
    if params.min_p > 0.0:
        keep &= probs >= params.min_p * probs[0]
    keep[0] = True
    probs = torch.where(keep, probs, torch.zeros_like(probs))
    choice = torch.multinomial(probs / probs.sum(), 1, generator=rng)
    return int(index[choice])


# --------------------------------------------------------------------------- #
# Engine
# --------------------------------------------------------------------------- #
@dataclass
class _Row(Reply):
    rng: torch.Generator | None = None


class Engine(EngineBase):
    """A GGUF chat model behind a continuous-batching worker thread.

    Parameters
    ----------
    gguf_path:
        The GGUF file; transformers de-quantizes it into a PyTorch model (needs
        the ``gguf`` and ``accelerate`` packages).
    dtype:
        ``"float32"`` (default; measured fastest on AVX-512 CPUs) or ``"bfloat16"``.
    max_batch:
        Most rows decoded together.
    batch_window_ms:
        When idle, how long the worker waits after the first request for others
        to join the first batch.
    """

    name = "transformers"

    def __init__(
        self,
        gguf_path: str | Path,
        *,
        dtype: str = "float32",
        max_batch: int = 16,
        batch_window_ms: float = 20.0,
    ) -> None:
        from transformers import AutoModelForCausalLM

        started = time.perf_counter()
        super().__init__(gguf_path)
        gguf_path = self.gguf_path
        self.model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, config=self.model_config, dtype=getattr(torch, dtype)
        ).eval()
        self.load_seconds = time.perf_counter() - started
        self.config = self.model.config
        self.dtype = dtype
        self.describe = dtype
        self.max_batch = max_batch
        self.batch_window = batch_window_ms / 1000.0
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        eos = self.config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        self._cache_cls = _cache_classes()
        self._prefix: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._start()
        log.info("loaded %s in %.1fs (%s)", gguf_path.name, self.load_seconds, dtype)

    # --------------------------------------------------------------- worker
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        rows: list[_Row] = []
        state: dict[str, Any] | None = None
        while not self._stopping.is_set():
            pending: list[Generation] = []
            try:
                pending = self._collect(idle=not rows)
                if pending:
                    rows, state = self._admit_isolated(rows, state, pending)
                    pending = []
                if rows:
                    rows, state = self._step(rows, state)
            except Exception as exc:  # report to every waiting caller, keep serving
                log.exception("generation failed")
                waiting = [row.gen for row in rows] + pending
                for gen in waiting:
                    gen.cancelled.set()  # a copy put back in the queue is dropped, not run
                    gen.events.put(("error", f"generation failed: {exc}"))
                rows, state = [], None

    def _collect(self, idle: bool) -> list[Generation]:
        pending: list[Generation] = []
        if idle:
            try:
                pending.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                return []
            deadline = time.perf_counter() + self.batch_window
            while len(pending) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    pending.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
        else:
            while True:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
        return [g for g in pending if not g.cancelled.is_set()]

    # --------------------------------------------------------------- admit
    def _shared_prefix(self, prompts: list[list[int]]) -> int:
        """Length of the cached prefix usable by every prompt (computing it if worthwhile)."""
        limit = min(len(p) for p in prompts) - 1  # each row needs >= 1 token of its own
        common = 0
        first = prompts[0]
        while common < limit and all(p[common] == first[common] for p in prompts):
            common += 1
        if self._prefix is not None:
            cached = self._prefix[0]
            m = 0
            while m < min(common, len(cached)) and cached[m] == first[m]:
                m += 1
            if m >= MIN_SHARED_PREFIX:
                return m
        if common < MIN_SHARED_PREFIX:
            return 0
        ids = torch.tensor([first[:common]])
        cache = self._cache_cls(self.config.num_hidden_layers)
        self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        self._prefix = (first[:common], [(k.clone(), v.clone()) for k, v in cache.tensors()])
        return common

    def _admit_isolated(self, rows: list[_Row], state: dict | None, gens: list[Generation]):
        """Admit ``gens`` as one group; when that fails, admit them one at a time, so a request
        that breaks the forward pass fails alone and the running rows go on untouched."""
        space = self.max_batch - len(rows)
        if space <= 0:
            for g in gens:
                self._queue.put(g)
            return rows, state
        gens, overflow = gens[:space], gens[space:]
        for g in overflow:  # back in line for the next step
            self._queue.put(g)
        try:
            return self._admit(rows, state, gens)
        except Exception as exc:  # noqa: BLE001 - reported to the request(s) it belongs to
            if len(gens) == 1:
                log.exception("a request failed when admitted; the batch goes on")
                gens[0].cancelled.set()
                gens[0].events.put(("error", f"generation failed: {exc}"))
                return rows, state
        for g in gens:
            rows, state = self._admit_isolated(rows, state, [g])
        return rows, state

    def _admit(self, rows: list[_Row], state: dict | None, gens: list[Generation]):
        """Prefill ``gens`` (at most the free rows) and merge them into the running batch;
        ``rows`` and ``state`` are only changed once every new row has its first token."""
        started = time.perf_counter()
        prompts = [g.prompt_ids for g in gens]
        n_prefix = self._shared_prefix(prompts)
        suffixes = [p[n_prefix:] for p in prompts]
        width = max(len(s) for s in suffixes)
        g_rows = len(gens)
        input_ids = torch.full((g_rows, width), self.pad_id, dtype=torch.long)
        real = torch.zeros((g_rows, width), dtype=torch.bool)
        positions = torch.zeros((g_rows, width), dtype=torch.long)
        for i, s in enumerate(suffixes):
            input_ids[i, width - len(s) :] = torch.tensor(s)
            real[i, width - len(s) :] = True
            positions[i, width - len(s) :] = torch.arange(n_prefix, n_prefix + len(s))
        # query j (column n_prefix + j) sees: the shared prefix, and real suffix keys at or before it
        causal = torch.tril(torch.ones((width, width), dtype=torch.bool))
        suffix_mask = causal[None] & real[:, None, :]
        suffix_mask |= torch.eye(width, dtype=torch.bool)[None] & ~real[:, :, None]  # pads see themselves
        prefix_mask = real[:, :, None].expand(g_rows, width, n_prefix)
        mask4d = torch.cat([prefix_mask, suffix_mask], dim=2)[:, None]
        if n_prefix:
            prefix_kv = [
                (k[:, :, :n_prefix].expand(g_rows, -1, -1, -1), v[:, :, :n_prefix].expand(g_rows, -1, -1, -1))
                for k, v in self._prefix[1]
            ]
            cache = self._cache_cls.from_tensors(prefix_kv)
        else:
            cache = self._cache_cls(self.config.num_hidden_layers)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask4d,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :].float()
        prompt_ns = int((time.perf_counter() - started) * 1e9)
        new_mask = torch.cat([torch.ones((g_rows, n_prefix), dtype=torch.bool), real], dim=1)
        new_rows: list[_Row] = []
        for i, g in enumerate(gens):
            seed = g.params.seed if g.params.seed is not None and g.params.seed >= 0 else secrets.randbits(63)
            rng = torch.Generator().manual_seed(seed)
            new_rows.append(self.reply(g, cls=_Row, rng=rng, prompt_eval_ns=prompt_ns))
        new_state = {
            "kv": cache.tensors(),
            "mask": new_mask,
            "pos": torch.tensor([len(p) for p in prompts], dtype=torch.long),
        }
        next_tokens = [self._sample(row, logits[i]) for i, row in enumerate(new_rows)]
        self.stats["requests"] += g_rows
        new_state["last"] = torch.tensor(next_tokens, dtype=torch.long)
        rows, state = self._merge(rows, state, new_rows, new_state)
        return self._retire(rows, state)

    @staticmethod
    def _merge(rows, state, new_rows, new_state):
        if not rows:
            return new_rows, new_state
        t_old, t_new = state["mask"].shape[1], new_state["mask"].shape[1]
        width = max(t_old, t_new)

        def pad_left(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
            if n == 0:
                return x
            shape = list(x.shape)
            shape[dim] = n
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        kv = []
        for (k1, v1), (k2, v2) in zip(state["kv"], new_state["kv"]):
            kv.append(
                (
                    torch.cat([pad_left(k1, width - t_old, 2), pad_left(k2, width - t_new, 2)], dim=0),
                    torch.cat([pad_left(v1, width - t_old, 2), pad_left(v2, width - t_new, 2)], dim=0),
                )
            )
        merged = {
            "kv": kv,
            "mask": torch.cat([pad_left(state["mask"], width - t_old, 1), pad_left(new_state["mask"], width - t_new, 1)]),
            "pos": torch.cat([state["pos"], new_state["pos"]]),
            "last": torch.cat([state["last"], new_state["last"]]),
        }
        return rows + new_rows, merged

    # ---------------------------------------------------------------- step
    def _step(self, rows: list[_Row], state: dict):
        cache = state.get("cache")
        if cache is None:
            cache = self._cache_cls.from_tensors(state["kv"])
            state["cache"] = cache
        b = len(rows)
        self.stats["max_rows"] = max(self.stats["max_rows"], b)
        mask = torch.cat([state["mask"], torch.ones((b, 1), dtype=torch.bool)], dim=1)
        out = self.model(
            input_ids=state["last"][:, None],
            attention_mask=mask[:, None, None, :],
            position_ids=state["pos"][:, None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :].float()
        state["mask"] = mask
        state["pos"] = state["pos"] + 1
        state["kv"] = cache.tensors()
        self.stats["steps"] += 1
        state["last"] = torch.tensor([self._sample(row, logits[i]) for i, row in enumerate(rows)], dtype=torch.long)
        return self._retire(rows, state)

    # ------------------------------------------------------- token → text
    def _sample(self, row: _Row, logits: torch.Tensor) -> int:
        """Draw the next token for ``row``, record it, and decide whether the row is done."""
        if row.done_reason is not None:
            return self.pad_id
        if row.gen.cancelled.is_set():
            row.done_reason = "cancelled"
            return self.pad_id
        token = sample_next_token(logits, row.gen.params, row.context, row.rng)
        if row.accept(token, self.tokenizer, self.special_ids):
            self.stats["tokens"] += 1
        return token

    def _retire(self, rows: list[_Row], state: dict):
        """Answer finished rows and shrink the batch (rows and unused columns)."""
        keep = [i for i, row in enumerate(rows) if row.done_reason is None]
        if len(keep) == len(rows):
            return rows, state
        now = time.perf_counter()
        for row in rows:
            if row.done_reason is not None and row.done_reason != "cancelled":
                row.finish(self.tokenizer, now)
        if not keep:
            return [], None
        index = torch.tensor(keep, dtype=torch.long)
        mask = state["mask"][index]
        columns = torch.nonzero(mask.any(dim=0)).flatten()
        kv = [(k[index][:, :, columns], v[index][:, :, columns]) for k, v in state["kv"]]
        new_state = {
            "kv": kv,
            "mask": mask[:, columns],
            "pos": state["pos"][index],
            "last": state["last"][index],
        }
        return [rows[i] for i in keep], new_state

"""Text generation through llama.cpp (``llama-cpp-python``) on the GGUF itself, one request at a time.

:class:`LlamaCppEngine` implements the engine interface of ``generation.py``
with one ``llama_cpp.Llama`` object on the GGUF (its quantized weights, no
de-quantization) and one worker thread that takes queued requests in arrival
order and decodes each to the end before the next: requests in flight are
serialised onto the one model, as a ``Llama`` object decodes one sequence at a
time. llama.cpp keeps the key/value cache of the previous request and
evaluates only the part of a new prompt after the longest common prefix (for
the augmentation prompt: everything after the system line and the worked
example).

Prompts are tokenized as under the transformers engine (the tokenizer
transformers reads from the GGUF, the GGUF's chat template), so a request has
the same prompt token ids under both engines and ``prompt_eval_count`` is the
same; output tokens become text through the same :class:`generation.Reply`
(stop tokens, stop strings, ``num_predict``, ``num_ctx``, streaming).

Options: ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``min_p``,
``repeat_penalty``, ``repeat_last_n``, ``presence_penalty``,
``frequency_penalty`` go to llama.cpp's sampler chain as llama-cpp-python
builds it: penalties over the last ``repeat_last_n`` tokens of this reply
(its sampler never sees the prompt; the transformers engine and Ollama count
the prompt too) -> top-k -> top-p -> min-p -> temperature -> one draw.
``seed`` seeds the draw (modulo 2^32; random when absent or negative). A
seeded request sent twice in a row gives the same reply; the first reply to a
prompt can differ from later ones, because a repeat finds the prompt cached
and evaluates only its last token, and llama.cpp's results differ in the last
bits between batch sizes (which can flip a near tie). ``num_ctx`` caps
prompt + output as under the transformers engine; the context is loaded with
2,048 positions and reloaded larger when a request asks for more (as Ollama
reloads a model for a larger ``num_ctx``).

llama-cpp-python is optional (``pip install -e '.[llamacpp]'``); without it
:func:`import_llama_cpp` raises ``ImportError`` naming the package and the
install command.
"""

from __future__ import annotations

import logging
import queue
import secrets
import time
from pathlib import Path

from .generation import EngineBase, Generation

log = logging.getLogger("ollama_standin.llamacpp")

INSTALL = 'CMAKE_ARGS="-DGGML_CUDA=OFF" pip install llama-cpp-python'
DEFAULT_CONTEXT = 2048
"""Positions of the loaded context (Ollama's default ``num_ctx``); reloaded larger on demand."""


def import_llama_cpp():
    """The ``llama_cpp`` module, or ``ImportError`` saying which package to install and how."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise ImportError(
            f"the llama.cpp engine needs the Python package llama-cpp-python (module llama_cpp), which is not "
            f"installed ({exc}). Install it with: {INSTALL}  (or pip install -e '.[llamacpp]'), or use "
            "--engine transformers"
        ) from None
    return llama_cpp


def llama_cpp_available() -> bool:
    try:
        import_llama_cpp()
    except ImportError:
        return False
    return True


class LlamaCppEngine(EngineBase):
    """A GGUF chat model in llama.cpp behind one worker thread (see the module docstring).

    Parameters
    ----------
    gguf_path:
        The GGUF file.
    threads:
        llama.cpp threads for decoding and for prompt evaluation.
    n_batch:
        Prompt tokens evaluated per llama.cpp batch.
    """

    name = "llama.cpp"

    def __init__(self, gguf_path: str | Path, *, threads: int = 1, n_batch: int = 512) -> None:
        self._llama_cpp = import_llama_cpp()
        started = time.perf_counter()
        super().__init__(gguf_path)
        self.threads = max(1, int(threads))
        self.n_batch = n_batch
        self._llm = None
        self.n_ctx = 0
        self._load(DEFAULT_CONTEXT)
        self.load_seconds = time.perf_counter() - started
        self.vocab_size = int(self._llm.n_vocab())
        vocab = self._llama_cpp.llama_model_get_vocab(self._llm.model)
        # every end-of-generation token of the GGUF (llama.cpp stops on these), and transformers' EOS
        self.eos_ids = {t for t in range(self.vocab_size) if self._llama_cpp.llama_vocab_is_eog(vocab, t)}
        self.eos_ids |= {self.tokenizer.eos_token_id} - {None}
        self.describe = f"llama.cpp {self._llama_cpp.__version__}"
        self.stats["max_rows"] = 0
        self._start()
        log.info("loaded %s in %.1fs (llama.cpp, %d threads)", self.gguf_path.name, self.load_seconds, self.threads)

    def _load(self, n_ctx: int) -> None:
        """(Re)load the model with a context of ``n_ctx`` positions; if that fails, the previous
        context is loaded again and the error raised (it fails the request that asked for it)."""
        previous = self.n_ctx if self._llm is not None else None
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        try:
            self._llm = self._llama_cpp.Llama(
                model_path=str(self.gguf_path), n_ctx=n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                n_batch=self.n_batch, seed=0, verbose=False,
            )
        except Exception:
            if previous is not None:
                self._load(previous)
            raise
        self.n_ctx = n_ctx

    def close(self) -> None:
        super().close()  # the worker stops after its current token
        if self._llm is not None and not (self._worker is not None and self._worker.is_alive()):
            self._llm.close()
            self._llm = None

    # --------------------------------------------------------------- worker
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                gen = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if gen.cancelled.is_set():
                continue
            try:
                self._generate(gen)
            except Exception as exc:  # report to this caller, keep serving
                log.exception("generation failed")
                gen.cancelled.set()
                gen.events.put(("error", f"generation failed: {exc}"))
                if self._llm is not None:
                    self._llm.reset()  # the cached tokens may not match the context any more

    def _generate(self, gen: Generation) -> None:
        params = gen.params
        if params.num_ctx > self.n_ctx:
            log.info("reloading with a context of %d positions (was %d)", params.num_ctx, self.n_ctx)
            self._load(params.num_ctx)
        llm = self._llm
        seed = params.seed % 2**32 if params.seed is not None and params.seed >= 0 else secrets.randbits(32)
        llm.set_seed(seed)
        llm.last_n_tokens_size = max(0, params.repeat_last_n)
        started = time.perf_counter()
        reply = self.reply(gen)
        self.stats["requests"] += 1
        self.stats["max_rows"] = 1
        tokens = llm.generate(
            gen.prompt_ids, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
            temp=max(params.temperature, 0.0), repeat_penalty=params.repeat_penalty,
            frequency_penalty=params.frequency_penalty, presence_penalty=params.presence_penalty,
        )
        try:
            for token in tokens:
                if not reply.prompt_eval_ns:
                    reply.prompt_eval_ns = int((time.perf_counter() - started) * 1e9)
                if gen.cancelled.is_set() or self._stopping.is_set():
                    return
                self.stats["steps"] += 1
                if reply.accept(int(token), self.tokenizer, self.special_ids):
                    self.stats["tokens"] += 1
                if reply.done_reason is not None:
                    break
        finally:
            tokens.close()
        reply.finish(self.tokenizer, time.perf_counter())

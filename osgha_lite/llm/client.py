"""The Ollama client of the augmentation: its configuration, the cache key, and one caption's requests.

Part of the augmentation (:mod:`osgha_lite.llm.augment` describes the whole
design). Reading order: :class:`AugmentConfig` and :class:`ModelIdentity`
(what a cache key is made of: :func:`cache_key`, :func:`generation_settings`),
:func:`connect` (one server, its model digest), then :func:`augment_caption`
(the requests, retries and validation of one caption).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from osgha_lite.llm.cache import MIN_FREE_BYTES
from osgha_lite.llm.hosts import model_fingerprint
from osgha_lite.llm.prompt import (
    DEFAULT_TEMPLATE,
    AugmentError,
    PromptTemplate,
    ValidationRules,
    check_description,
    parse_descriptions,
)
from osgha_lite.llm.reply_check import prompt_fixed_lines, screen_item

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_HOST = "127.0.0.1:11434"

START_SERVER_HELP = (
    "Start a server first, one of:\n"
    "  * a real Ollama:  ollama serve   (then `ollama pull MODEL`, or for the project's SmolLM2:\n"
    "      python -m tools.ollama_standin.gguf_path --link data/ollama\n"
    "      ollama create smollm2-135m -f data/ollama/Modelfile.smollm2)\n"
    "  * the stand-in server of this repository (no Ollama needed):\n"
    "      python -m tools.ollama_standin.gguf_path --link data/ollama\n"
    "      python -m tools.ollama_standin --model smollm2-135m=data/ollama/Modelfile.smollm2\n"
    "and point OLLAMA_HOST (or --host) at it."
)


# --------------------------------------------------------------------------- errors
class OllamaUnavailable(AugmentError):
    """No Ollama server answers at the configured host."""


class ModelNotFound(AugmentError):
    """The server answers but does not have the requested model."""


class RequestRefused(AugmentError):
    """The server refused one request (HTTP 4xx other than 404/408/429): that caption fails, the run goes on."""


# --------------------------------------------------------------------------- configuration
@dataclass
class AugmentConfig:
    """Everything that decides what the LLM is asked and what is accepted."""

    model: str = DEFAULT_MODEL
    host: str | Sequence[str] | None = None
    """One server or several (:func:`osgha_lite.llm.hosts.parse_hosts`); ``None``: ``$OLLAMA_HOST``,
    else ``127.0.0.1:11434``."""
    k: int = 3
    template: str = DEFAULT_TEMPLATE
    temperature: float = 0.4
    """0.4 kept colors and counts of the caption more often than 0.7 with SmolLM2-135M."""
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    num_predict: int | None = None
    """Token budget of one reply; ``None``: ``40 * k + 40``."""
    num_ctx: int = 2048
    seed: int = 0
    """Base seed; attempt ``a`` of a caption uses a seed derived from (key, a)."""
    max_attempts: int = 3
    rules: ValidationRules = field(default_factory=ValidationRules)
    concurrency: int = 16
    """Requests in flight per host."""
    timeout: float = 600.0
    """Seconds to wait for one reply."""
    transport_retries: int = 4
    backoff: float = 1.0
    """First retry delay in seconds; doubles each retry (capped at 30 s)."""
    max_caption_chars: int = 1000
    """A longer caption is recorded as failed without a request (Ollama would cut the prompt to
    ``num_ctx`` tokens without saying so). Not part of the cache key, like everything below ``rules``."""
    min_free_bytes: int = MIN_FREE_BYTES
    """Free disk space a run needs besides 4 KiB per caption to write."""

    @property
    def resolved_host(self) -> str:
        """The one server of this configuration (a run over several gives each host its own copy)."""
        if self.host is not None and not isinstance(self.host, str):
            if len(self.host) != 1:
                raise AugmentError(f"this configuration names {len(self.host)} hosts, not one")
            return self.host[0]
        return self.host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST

    def options(self) -> dict[str, Any]:
        """Ollama ``options`` of every request (the seed is added per attempt)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "num_predict": self.num_predict if self.num_predict is not None else 40 * self.k + 40,
            "num_ctx": self.num_ctx,
            "stop": [f"\n{self.k + 1}."],
        }


@dataclass(frozen=True)
class ModelIdentity:
    """The model as the server reports it: name and digest (sha256 of its GGUF weights)."""

    name: str
    digest: str
    host: str
    served: dict = field(default_factory=dict, compare=False)
    """Chat template and Modelfile parameters from ``/api/show`` (every host of a run must agree)."""


def generation_settings(identity: ModelIdentity, template: PromptTemplate, config: AugmentConfig) -> dict[str, Any]:
    """Everything besides the caption that determines a record (the cache key's material,
    and the ``settings`` of ``<dataset>.meta.json``)."""
    return {
        "model": identity.name,
        "digest": identity.digest,
        "template": template.version,
        "template_sha256": template.sha256,
        "k": config.k,
        "options": config.options(),
        "seed": config.seed,
        "max_attempts": config.max_attempts,
        "rules": asdict(config.rules),
    }


def cache_key(caption: str, identity: ModelIdentity, template: PromptTemplate, config: AugmentConfig) -> str:
    """sha256 of the canonical JSON of everything that determines the record of ``caption``."""
    material = {**generation_settings(identity, template, config), "caption": caption}
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def attempt_seed(key: str, attempt: int) -> int:
    """A 31-bit seed for ``attempt`` of the caption with cache key ``key``."""
    return int.from_bytes(hashlib.sha256(f"{key}:{attempt}".encode()).digest()[:4], "big") >> 1


# --------------------------------------------------------------------------- client
def _is_transport_error(exc: BaseException) -> bool:
    import httpx
    import ollama

    if isinstance(exc, (ConnectionError, httpx.TransportError)):
        return True
    return isinstance(exc, ollama.ResponseError) and (exc.status_code >= 500 or exc.status_code in (408, 429))


def make_client(config: AugmentConfig):
    import httpx
    import ollama

    return ollama.Client(host=config.resolved_host, timeout=httpx.Timeout(config.timeout, connect=10.0))


_DIGEST = re.compile(r"sha256[-:]([0-9a-f]{64})")


def connect(config: AugmentConfig) -> tuple[Any, ModelIdentity]:
    """Check the server and the model; return the client and the model's identity.

    Raises :class:`OllamaUnavailable` or :class:`ModelNotFound` with instructions.
    The digest is the ``sha256-<hex>`` blob name of the weights in ``/api/show``'s
    modelfile (Ollama's name for the GGUF), else the model's ``digest`` in ``/api/tags``.
    """
    import ollama

    host = config.resolved_host
    client = make_client(config)
    last: BaseException | None = None
    for attempt in range(2):
        try:
            shown = client.show(config.model)
            break
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise ModelNotFound(
                    f"the Ollama server at {host} has no model {config.model!r} ({exc.error}).\n"
                    f"  * real Ollama: `ollama pull {config.model}` (registry models, e.g. llama3.2:3b), or for the "
                    "project's SmolLM2:\n"
                    "      python -m tools.ollama_standin.gguf_path --link data/ollama\n"
                    "      ollama create smollm2-135m -f data/ollama/Modelfile.smollm2\n"
                    "  * stand-in server: models are registered when it starts, e.g.\n"
                    "      python -m tools.ollama_standin --model smollm2-135m=data/ollama/Modelfile.smollm2\n"
                    "  * or choose a model the server has with --model NAME (see `ollama list`)."
                ) from None
            last = exc
            if not _is_transport_error(exc):
                raise AugmentError(f"the Ollama server at {host} refused /api/show: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - classified below
            if not _is_transport_error(exc):
                raise
            last = exc
        time.sleep(config.backoff)
    else:
        raise OllamaUnavailable(f"cannot reach an Ollama server at {host} ({_describe(last)}).\n{START_SERVER_HELP}")
    found = _DIGEST.search(shown.modelfile or "")
    digest = f"sha256:{found.group(1)}" if found else None
    if digest is None:
        wanted = config.model if ":" in config.model else f"{config.model}:latest"
        for entry in client.list().models:
            if entry.model in (config.model, wanted) and entry.digest:
                digest = entry.digest if entry.digest.startswith("sha256:") else f"sha256:{entry.digest}"
    if digest is None:
        raise AugmentError(f"the Ollama server at {host} reports no digest for model {config.model!r}")
    return client, ModelIdentity(name=config.model, digest=digest, host=host, served=model_fingerprint(shown))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _chat_with_retries(client, config: AugmentConfig, messages, options) -> Any:
    delay = config.backoff
    for attempt in range(config.transport_retries + 1):
        try:
            return client.chat(model=config.model, messages=messages, options=options, stream=False)
        except Exception as exc:  # noqa: BLE001 - classified below
            import ollama

            if isinstance(exc, ollama.ResponseError) and exc.status_code == 404:
                raise ModelNotFound(f"model {config.model!r} disappeared from {config.resolved_host}: {exc.error}") from None
            if isinstance(exc, ollama.ResponseError) and not _is_transport_error(exc):
                raise RequestRefused(f"the server refused the request (HTTP {exc.status_code}: {exc.error})") from None
            if not _is_transport_error(exc):
                raise
            if attempt == config.transport_retries:
                raise OllamaUnavailable(
                    f"lost the Ollama server at {config.resolved_host} after {attempt + 1} tries "
                    f"({_describe(exc)}).\n{START_SERVER_HELP}"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def augment_caption(
    client, caption: str, key: str, config: AugmentConfig, template: PromptTemplate, identity: ModelIdentity
) -> dict[str, Any]:
    """Ask for ``config.k`` descriptions of ``caption``; return its cache record.

    Valid items accumulate over at most ``config.max_attempts`` replies. The record
    has ``status`` ``"ok"`` (exactly ``k`` descriptions) or ``"failed"`` (fewer;
    ``reason`` says why and ``rejected`` lists every rejected item). A caption
    longer than ``config.max_caption_chars``, a request the server refuses
    (:class:`RequestRefused`, e.g. a prompt longer than ``num_ctx``) and a reply
    that cannot be read are failures of this caption, recorded with their reason;
    only a lost server or model (:class:`OllamaUnavailable`, :class:`ModelNotFound`)
    is raised.
    """
    record: dict[str, Any] = {
        "key": key,
        "caption": caption,
        "model": identity.name,
        "digest": identity.digest,
        "template": template.version,
        "k": config.k,
    }
    accepted: list[str] = []
    rejected: list[dict[str, Any]] = []
    seeds: list[int] = []
    eval_tokens = 0
    attempt = 0
    error: str | None = None
    if template.vision:  # ``caption`` is the image's path relative to the data root
        from osgha_lite.data import data_root

        messages = template.messages("", config.k, image=data_root() / caption)
        anchor = ""  # nothing to compare content words with
    elif len(caption) > config.max_caption_chars:
        error = f"caption too long ({len(caption)} characters > max_caption_chars={config.max_caption_chars})"
        messages, anchor = [], caption
    else:
        messages, anchor = template.messages(caption, config.k), caption
    fixed = prompt_fixed_lines(template.sections)
    base_options = config.options()
    for attempt in range(config.max_attempts if error is None else 0):
        seed = attempt_seed(key, attempt)
        seeds.append(seed)
        try:
            reply = _chat_with_retries(client, config, messages, {**base_options, "seed": seed})
            content = reply.message.content or ""
            if not isinstance(content, str):
                raise TypeError(f"message.content is {type(content).__name__}, not text")
            eval_tokens += int(reply.eval_count or 0)
            cut = reply.done_reason == "length"
        except RequestRefused as exc:
            error = str(exc)
            break
        except (OllamaUnavailable, ModelNotFound):
            raise
        except Exception as exc:  # noqa: BLE001 - a reply this client cannot read fails this caption only
            error = f"malformed reply ({_describe(exc)})"
            break
        items = parse_descriptions(content)
        if not items:
            rejected.append({"attempt": attempt, "reason": "no items in the reply", "text": content[:300]})
        for position, item in enumerate(items):
            if len(accepted) == config.k:
                break
            reason = check_description(
                item, anchor, config.rules, accepted, cut_off=cut and position == len(items) - 1
            ) or screen_item(item, anchor, fixed)
            if reason is None:
                accepted.append(item)
            else:
                rejected.append({"attempt": attempt, "reason": reason, "text": item[:300]})
        if len(accepted) == config.k:
            break
    attempts = len(seeds)
    record.update({
        "status": "ok" if len(accepted) == config.k and error is None else "failed",
        "descriptions": accepted,
        "attempts": attempts,
        "seeds": seeds,
        "eval_tokens": eval_tokens,
        "rejected": rejected,
    })
    if error is not None:
        record["reason"] = error
    elif record["status"] == "failed":
        record["reason"] = f"{len(accepted)} of {config.k} valid descriptions after {attempts} attempts"
    return record

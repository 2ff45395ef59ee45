"""The HTTP side: the part of Ollama's REST API that the project uses.

Endpoints (request and response fields as documented in Ollama's
``docs/api.md``; anything not listed answers an Ollama-style error):

====================  ========================================================
``GET  /``            ``Ollama is running``
``GET  /api/version`` ``{"version": ...}``
``GET  /api/tags``    registered models with ``digest`` (sha256 of the GGUF),
                      size, details
``GET  /api/ps``      the same models, as loaded
``POST /api/show``    modelfile, parameters, template, details, model_info,
                      capabilities; ``modelfile`` names the weights' digest as
                      ``sha256-<hex>`` (Ollama's blob name of the GGUF) on the
                      line before ``FROM <path of the GGUF>``
``POST /api/chat``    messages -> one assistant message; ``stream`` true
                      (default, NDJSON chunks) or false; ``options``
``POST /api/generate`` prompt (+ ``system``, ``raw``, ``context``) -> response
``POST /api/pull``    succeeds for a registered model (nothing to download)
``GET /standin/stats`` not Ollama's: engine counters (requests, decode steps,
                      tokens, largest batch) per model
====================  ========================================================

``options`` understood: temperature, seed, num_predict, top_k, top_p, min_p,
repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, stop,
num_ctx; others are ignored with a log line (as Ollama does). Unsupported
request features (``format``, ``tools``, ``images``, ``think``, ``suffix``,
``template``) are refused with HTTP 400 and an explanation rather than
silently ignored. An unknown model answers HTTP 404
``{"error": "model 'x' not found"}``, so the ``ollama`` client raises
``ResponseError`` with ``status_code == 404`` exactly as with a real server.
A malformed request answers HTTP 400 and fails alone: a ``Content-Length``
that is not a number, a ``context`` that is not a list of token ids of the
model's vocabulary (checked before the request can join a decode batch).
Requests are bounded (``limits.py``): a ``Content-Length`` above
``--max-body-bytes`` (default: sized for the largest legal prompt at the
Modelfiles' ``num_ctx``) answers HTTP 413 before the body is read; a prompt
with more characters than fewer than ``num_ctx`` tokens can hold answers 400
before it is tokenized; a connection that sends nothing for
``--read-timeout`` seconds is closed, and a body that does not arrive in
that time answers 408. Each connection has its own thread, so other clients
are served meanwhile.
Binding an address other than loopback (``OLLAMA_HOST=0.0.0.0:...``) prints
a warning (:func:`exposure_warning`): the server has no authentication.
These checks are made here or in ``generation.EngineBase.submit``, which both
engines (``engine.Engine``, ``llamacpp_engine.LlamaCppEngine``; chosen by
:class:`Registry`) share, so both answer them identically.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import select
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from osgha_lite.backbones.encoders import file_digest

from .generation import EngineBase, Generation, SamplingParams
from .limits import DEFAULT_READ_TIMEOUT, default_max_body_bytes, drop_body, prompt_char_limit, read_body
from .modelfile import Modelfile

log = logging.getLogger("ollama_standin.server")

VERSION = "0.0.0-standin"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def normalize_name(name: str) -> str:
    """``smollm2-135m`` -> ``smollm2-135m:latest`` (Ollama's default tag)."""
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Scalar GGUF header fields (what ``/api/show`` reports as ``model_info``)."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    info: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or not fld.types:
            continue
        if fld.types[0] == GGUFValueType.ARRAY:
            info[key] = None  # Ollama leaves large arrays (vocabulary, merges) out too
            continue
        if key == "tokenizer.chat_template":
            continue
        try:
            info[key] = fld.contents()
        except Exception:  # pragma: no cover - exotic value types
            continue
    return info


@dataclass
class RegisteredModel:
    name: str
    modelfile: Modelfile
    engine: EngineBase
    digest: str
    size: int
    modified_at: str
    model_info: dict[str, Any]

    @property
    def details(self) -> dict[str, Any]:
        from gguf import LlamaFileType

        arch = self.model_info.get("general.architecture", "")
        file_type = self.model_info.get("general.file_type")
        try:
            quant = LlamaFileType(int(file_type)).name.replace("MOSTLY_", "") if file_type is not None else ""
        except ValueError:
            quant = str(file_type)
        return {
            "parent_model": "",
            "format": "gguf",
            "family": arch,
            "families": [arch] if arch else None,
            "parameter_size": self.model_info.get("general.size_label", ""),
            "quantization_level": quant,
        }


class Registry:
    """Model name -> loaded model. Models sharing one GGUF share one engine.

    ``engine`` is ``"transformers"`` (``engine.Engine``: ``dtype``, ``max_batch``,
    ``batch_window_ms`` apply) or ``"llama.cpp"`` (``llamacpp_engine.LlamaCppEngine``:
    ``threads`` apply).
    """

    ENGINES = ("transformers", "llama.cpp")

    def __init__(self, *, engine: str = "transformers", dtype: str = "float32", max_batch: int = 16,
                 batch_window_ms: float = 20.0, threads: int = 1) -> None:
        if engine not in self.ENGINES:
            raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(self.ENGINES)}")
        self.models: dict[str, RegisteredModel] = {}
        self._engines: dict[str, EngineBase] = {}
        self.engine = engine
        if engine == "llama.cpp":
            self._options = {"threads": threads}
        else:
            self._options = {"dtype": dtype, "max_batch": max_batch, "batch_window_ms": batch_window_ms}

    def _load(self, gguf: Path) -> EngineBase:
        if self.engine == "llama.cpp":
            from .llamacpp_engine import LlamaCppEngine

            return LlamaCppEngine(gguf, **self._options)
        from .engine import Engine

        return Engine(gguf, **self._options)

    def register(self, name: str, modelfile: Modelfile) -> RegisteredModel:
        digest = file_digest(str(modelfile.gguf))
        engine = self._engines.get(digest)
        if engine is None:
            engine = self._load(modelfile.gguf)
            self._engines[digest] = engine
        stat = modelfile.gguf.stat()
        model = RegisteredModel(
            name=normalize_name(name),
            modelfile=modelfile,
            engine=engine,
            digest=digest,
            size=stat.st_size,
            modified_at=datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z"),
            model_info=gguf_metadata(modelfile.gguf),
        )
        self.models[model.name] = model
        return model

    def get(self, name: str) -> RegisteredModel | None:
        return self.models.get(normalize_name(name)) if name else None

    def default_max_body_bytes(self) -> int:
        """``--max-body-bytes`` sized for the largest legal prompt of the registered models (``limits.py``)."""
        return default_max_body_bytes(
            (SamplingParams.from_options(m.modelfile.parameters)[0].num_ctx, m.engine.chars_per_token)
            for m in self.models.values())

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ollama-standin"
    # TCP_NODELAY: a reply's headers and body are separate writes; with Nagle's algorithm the body
    # waits for the client's delayed ACK of the headers (about 40 ms on Linux) on every request
    disable_nagle_algorithm = True
    registry: Registry  # set by make_server
    max_body_bytes: int  # set by make_server
    timeout = DEFAULT_READ_TIMEOUT  # seconds a read may wait (socketserver sets it on the connection)
    _unread_body = 0  # bytes of a refused body the client may still be sending

    # ------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        log.debug("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_text(self, status: int, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_json(self) -> dict[str, Any]:
        header = (self.headers.get("Content-Length") or "0").strip()
        if not header.isdigit():  # the body's end is unknown: answer, then close the connection
            self.close_connection = True
            raise _HTTPError(400, f"invalid Content-Length header {header!r}: expected a number of bytes")
        length = int(header)
        if length > self.max_body_bytes:  # answered before any of the body is read
            self.close_connection = True
            self._unread_body = length
            raise _HTTPError(413, f"the request body is {length:,} bytes, more than this server's limit of "
                                  f"{self.max_body_bytes:,} (--max-body-bytes; by default sized for the longest "
                                  "prompt num_ctx allows); send a shorter prompt or start the server with a larger "
                                  "--max-body-bytes")
        try:
            raw = read_body(self.rfile, length, time.monotonic() + self.timeout)
        except TimeoutError as exc:  # the socket's own timeout, or the deadline of the whole body
            self.close_connection = True
            raise _HTTPError(408, f"the request body did not arrive within {self.timeout:g} s ({exc} read); "
                                  "send it at once or start the server with a larger --read-timeout") from None
        except EOFError as exc:
            self.close_connection = True
            raise _HTTPError(400, f"the request body ended after {exc} of its Content-Length") from None
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _HTTPError(400, f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise _HTTPError(400, "the request body must be a JSON object")
        return body

    def _model(self, body: dict[str, Any]) -> RegisteredModel:
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise _HTTPError(400, "model is required")
        model = self.registry.get(name)
        if model is None:
            raise _HTTPError(404, f"model '{name}' not found")
        return model

    def _client_gone(self) -> bool:
        """True when the client closed its connection (e.g. its timeout fired)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
        return False

    def _dispatch(self, routes: dict[str, Any]) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        handler = routes.get(path)
        status = 200
        try:
            if handler is None:
                status = 404
                self._send_text(404, "404 page not found")
            else:
                handler()
        except _HTTPError as exc:
            status = exc.status
            self._send_json(exc.status, {"error": exc.message})
            if self._unread_body:  # the client may still be sending: drop that, so it reads the answer
                drop_body(self.connection, self.rfile, self._unread_body)
                self._unread_body = 0
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            status = 499
        except Exception as exc:  # keep serving; report like Ollama does
            log.exception("request failed")
            status = 500
            try:
                self._send_json(500, {"error": str(exc)})
            except OSError:
                pass
        log.info("%s %-16s %d %.3fs", self.command, path, status, time.perf_counter() - started)

    # -------------------------------------------------------------- routes
    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch({"/": lambda: self._send_text(200, "Ollama is running")})

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(
            {
                "/": lambda: self._send_text(200, "Ollama is running"),
                "/api/version": lambda: self._send_json(200, {"version": VERSION}),
                "/api/tags": self._tags,
                "/api/ps": self._ps,
                "/standin/stats": self._stats,
            }
        )

    def do_POST(self) -> None:  # noqa: N802
        unsupported = {
            p: (lambda p=p: self._unsupported(p))
            for p in ("/api/create", "/api/push", "/api/delete", "/api/copy", "/api/embed", "/api/embeddings")
        }
        self._dispatch(
            {
                "/api/show": self._show,
                "/api/chat": self._chat,
                "/api/generate": self._generate,
                "/api/pull": self._pull,
                **unsupported,
            }
        )

    def _unsupported(self, path: str) -> None:
        self._read_json()
        raise _HTTPError(
            501, f"{path} is not implemented by this stand-in server; register models with --model NAME=MODELFILE"
        )

    def _model_entry(self, m: RegisteredModel) -> dict[str, Any]:
        return {
            "name": m.name,
            "model": m.name,
            "modified_at": m.modified_at,
            "size": m.size,
            "digest": m.digest,
            "details": m.details,
        }

    def _tags(self) -> None:
        self._send_json(200, {"models": [self._model_entry(m) for m in self.registry.models.values()]})

    def _ps(self) -> None:
        models = []
        for m in self.registry.models.values():
            entry = self._model_entry(m)
            entry.update({"expires_at": "2999-01-01T00:00:00Z", "size_vram": 0, "context_length": int(m.modelfile.parameters.get("num_ctx", 2048))})
            models.append(entry)
        self._send_json(200, {"models": models})

    def _stats(self) -> None:
        """Not part of Ollama's API: the engine counters of each model (for tests and benchmarks)."""
        self._send_json(200, {m.name: dict(m.engine.stats) for m in self.registry.models.values()})

    def _show(self) -> None:
        m = self._model(self._read_json())
        mf = m.modelfile
        lines = [
            '# Modelfile generated by "ollama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {m.name}",
            "",
            # Ollama's FROM names the blob sha256-<hex of the GGUF>; this server has no blob store,
            # so it names the file and gives the blob name on the line above.
            f"# blob sha256-{m.digest}",
            f"FROM {mf.gguf}",
        ]
        template = mf.template or m.engine.chat_template or ""
        lines.append(f'TEMPLATE """{template}"""')
        if mf.system:
            lines.append(f'SYSTEM """{mf.system}"""')
        for name, value in mf.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"PARAMETER {name} {json.dumps(item) if isinstance(item, str) else item}")
        self._send_json(
            200,
            {
                "modelfile": "\n".join(lines) + "\n",
                "parameters": mf.parameters_text(),
                "template": template,
                "system": mf.system,
                "license": mf.license or m.model_info.get("general.license", ""),
                "details": m.details,
                "model_info": m.model_info,
                "capabilities": ["completion"],
                "modified_at": m.modified_at,
            },
        )

    def _pull(self) -> None:
        body = self._read_json()
        name = body.get("model") or body.get("name") or ""
        if self.registry.get(name) is None:
            raise _HTTPError(404, f"model '{name}' not found (this stand-in cannot download models)")
        if body.get("stream", True):
            self._start_stream()
            self._chunk({"status": "success"})
            self._end_stream()
        else:
            self._send_json(200, {"status": "success"})

    # ----------------------------------------------------- generation
    @staticmethod
    def _refuse_unsupported(body: dict[str, Any], model: RegisteredModel, fields: tuple[str, ...]) -> None:
        if body.get("format") not in (None, ""):
            raise _HTTPError(400, "format (JSON mode / structured outputs) is not supported by this stand-in server")
        if body.get("tools"):
            raise _HTTPError(400, f"{model.name} does not support tools")
        if body.get("think"):
            raise _HTTPError(400, f'"{model.name}" does not support thinking')
        for name in fields:
            if body.get(name):
                raise _HTTPError(400, f"{name} is not supported by this stand-in server")

    def _params(self, model: RegisteredModel, body: dict[str, Any]) -> SamplingParams:
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise _HTTPError(400, "options must be a JSON object")
        try:
            params, ignored = SamplingParams.from_options(model.modelfile.parameters, options)
        except (TypeError, ValueError) as exc:
            raise _HTTPError(400, f"invalid option value: {exc}") from None
        if ignored:
            log.info("ignoring options not used by this server: %s", ", ".join(sorted(set(ignored))))
        return params

    def _load_response(self, model: RegisteredModel, chat: bool) -> None:
        out = {"model": model.name, "created_at": _now(), "done_reason": "load", "done": True}
        out.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
        self._send_json(200, out)

    def _chat(self) -> None:
        body = self._read_json()
        model = self._model(body)
        self._refuse_unsupported(body, model, ())
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise _HTTPError(400, "messages must be a list")
        clean = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise _HTTPError(400, f"messages[{i}] needs a role")
            if msg.get("images"):
                raise _HTTPError(400, f"{model.name} does not support images")
            if not isinstance(msg.get("content") or "", str):
                raise _HTTPError(400, f"messages[{i}].content must be a string")
            clean.append({"role": msg["role"], "content": msg.get("content") or ""})
        if not clean:
            self._load_response(model, chat=True)
            return
        prefix = list(model.modelfile.messages)
        if model.modelfile.system and not any(m["role"] == "system" for m in clean):
            prefix.insert(0, {"role": "system", "content": model.modelfile.system})
        params = self._params(model, body)
        self._check_length(model, params, [m["content"] for m in prefix + clean])
        prompt_ids = model.engine.render_chat(prefix + clean)
        self._run(model, body, params, prompt_ids, chat=True)

    def _generate(self) -> None:
        body = self._read_json()
        model = self._model(body)
        self._refuse_unsupported(body, model, ("images", "suffix", "template"))
        prompt = body.get("prompt") or ""
        if not prompt:
            self._load_response(model, chat=False)
            return
        system = body.get("system") or model.modelfile.system
        if not isinstance(prompt, str) or not isinstance(system or "", str):
            raise _HTTPError(400, "prompt and system must be strings")
        context = body.get("context") or []
        if not isinstance(context, list):
            raise _HTTPError(400, "context must be a list of token ids")
        params = self._params(model, body)
        if body.get("raw"):
            self._check_length(model, params, [prompt])
            prompt_ids = model.engine.encode(prompt)
        else:
            messages = list(model.modelfile.messages)
            if system:
                messages.insert(0, {"role": "system", "content": system})
            messages.append({"role": "user", "content": prompt})
            self._check_length(model, params, [m["content"] for m in messages])
            prompt_ids = model.engine.render_chat(messages)
        prompt_ids = list(context) + prompt_ids
        self._run(model, body, params, prompt_ids, chat=False)

    @staticmethod
    def _check_length(model: RegisteredModel, params: SamplingParams, texts: list[str]) -> None:
        """Refuse, before tokenizing, a prompt with more characters than fewer than ``num_ctx`` tokens hold."""
        chars = sum(len(text) for text in texts)
        limit = prompt_char_limit(params.num_ctx, model.engine.chars_per_token)
        if chars > limit:
            raise _HTTPError(
                400, f"the prompt is {chars:,} characters, more than the {limit:,} that fewer than "
                     f"num_ctx={params.num_ctx} tokens can hold ({model.engine.chars_per_token} characters per token "
                     "at most); shorten it or raise num_ctx")

    def _run(self, model: RegisteredModel, body: dict[str, Any], params: SamplingParams, prompt_ids: list[int],
             chat: bool) -> None:
        started = time.perf_counter()
        if len(prompt_ids) >= params.num_ctx:
            raise _HTTPError(
                400, f"the prompt is {len(prompt_ids)} tokens, not less than num_ctx={params.num_ctx}; raise num_ctx"
            )
        stream = bool(body.get("stream", True))
        try:  # token ids are checked against the vocabulary here, so a bad one fails only this request
            gen = model.engine.submit(Generation(prompt_ids=prompt_ids, params=params, stream=stream))
        except ValueError as exc:
            raise _HTTPError(400, str(exc)) from None

        def piece(text: str) -> dict[str, Any]:
            out: dict[str, Any] = {"model": model.name, "created_at": _now()}
            out.update({"message": {"role": "assistant", "content": text}} if chat else {"response": text})
            return out

        def final(info: dict[str, Any], text: str) -> dict[str, Any]:
            out = piece(text)
            out.update(
                {
                    "done": True,
                    "done_reason": info["done_reason"],
                    "total_duration": int((time.perf_counter() - started) * 1e9),
                    "load_duration": 0,
                    "prompt_eval_count": info["prompt_eval_count"],
                    "prompt_eval_duration": info["prompt_eval_duration"],
                    "eval_count": info["eval_count"],
                    "eval_duration": info["eval_duration"],
                }
            )
            if not chat:
                out["context"] = prompt_ids + info["output_ids"]
            return out

        if stream:
            self._start_stream()
        try:
            while True:
                try:
                    kind, payload = gen.events.get(timeout=0.5)
                except Exception:  # queue.Empty: check whether anyone is still listening
                    if self._client_gone():
                        gen.cancelled.set()
                        raise BrokenPipeError("client went away") from None
                    continue
                if kind == "delta":
                    out = piece(payload)
                    out["done"] = False
                    self._chunk(out)
                elif kind == "error":
                    if stream:
                        self._chunk({"error": payload})
                        break
                    raise _HTTPError(500, payload)
                else:
                    if stream:
                        self._chunk(final(payload, ""))
                    else:
                        self._send_json(200, final(payload, payload["text"]))
                    break
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            gen.cancelled.set()
            raise
        if stream:
            self._end_stream()

    # ------------------------------------------------------ NDJSON stream
    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode("utf-8")
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def exposure_warning(host: str) -> str | None:
    """A warning when binding ``host`` accepts connections from other machines (any address
    that is not loopback, e.g. ``0.0.0.0``); ``None`` for ``127.0.0.1``, ``::1``, ``localhost``."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP,
                                                                flags=socket.AI_PASSIVE)}
    except socket.gaierror:
        return None  # binding fails later with its own message
    exposed = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if not exposed:
        return None
    everywhere = any(ipaddress.ip_address(a.split("%")[0]).is_unspecified for a in exposed)
    what = "every network interface" if everywhere else f"a non-loopback address ({', '.join(exposed)})"
    return (f"warning: binding {host or '(all interfaces)'} listens on {what}: any machine that can reach this one "
            "may use the server, which has no authentication. Use --host 127.0.0.1 (or OLLAMA_HOST=127.0.0.1:PORT) "
            "unless other machines must connect.")


def make_server(registry: Registry, host: str = "127.0.0.1", port: int = 11434, *, max_body_bytes: int | None = None,
                read_timeout: float = DEFAULT_READ_TIMEOUT) -> StandInServer:
    """Bind the HTTP server (``port=0`` picks a free port: read ``server.server_address``).

    ``max_body_bytes``: the largest request body (default :meth:`Registry.default_max_body_bytes`);
    ``read_timeout``: seconds a connection may send nothing, and the most a request body may take."""
    if max_body_bytes is None:
        max_body_bytes = registry.default_max_body_bytes()
    if max_body_bytes < 1 or not read_timeout > 0:
        raise ValueError(f"max_body_bytes and read_timeout must be positive (got {max_body_bytes}, {read_timeout})")
    handler = type("BoundHandler", (Handler,), {"registry": registry, "max_body_bytes": max_body_bytes,
                                                "timeout": read_timeout})
    return StandInServer((host, port), handler)

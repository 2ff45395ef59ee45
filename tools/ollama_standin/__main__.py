"""Command line: ``python -m tools.ollama_standin --model NAME=MODELFILE [...]``.

Prints ``listening on http://HOST:PORT`` on stdout once every model is loaded
(``--port 0`` picks a free port), then serves until SIGINT/SIGTERM.
``--engine`` picks the inference engine: ``transformers`` (the default,
``engine.py``), ``llama.cpp`` (``llamacpp_engine.py``, needs the optional
llama-cpp-python) or ``auto`` (llama.cpp when ``llama_cpp`` imports, else
transformers; one line on stdout says which). ``--max-body-bytes`` and
``--read-timeout`` bound each request (``limits.py``); the line before
``listening on`` gives both.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading

from .limits import DEFAULT_READ_TIMEOUT


def _default_host_port() -> tuple[str, int]:
    """Honour ``OLLAMA_HOST`` like ``ollama serve`` does; default 127.0.0.1:11434."""
    value = os.environ.get("OLLAMA_HOST", "").strip()
    value = value.split("://", 1)[-1].rstrip("/")
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    return (host or "127.0.0.1"), int(port or 11434)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU advertises native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def limit_heap_growth() -> None:
    """glibc only: allocate blocks of 128 KiB or more with ``mmap``, returned to the OS when freed.

    glibc raises this threshold dynamically after big frees, after which the
    ever-changing batch tensors fragment the heap and the process grows for
    hours; fixing it kept a long run about 250 MB smaller at the same speed.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def resolve_engine(choice: str) -> str:
    """``transformers`` or ``llama.cpp`` for ``--engine choice``; ``auto`` prints which it took and why."""
    if choice != "auto":
        return choice
    from .llamacpp_engine import llama_cpp_available

    if llama_cpp_available():
        print("engine auto: llama.cpp (llama_cpp imports)", flush=True)
        return "llama.cpp"
    print("engine auto: transformers (llama_cpp is not installed)", flush=True)
    return "transformers"


def main(argv: list[str] | None = None) -> int:
    host, port = _default_host_port()
    parser = argparse.ArgumentParser(
        prog="python -m tools.ollama_standin",
        description="Serve local GGUF models through Ollama's HTTP API (a stand-in for `ollama serve`).",
    )
    parser.add_argument(
        "--model", action="append", required=True, metavar="NAME=MODELFILE",
        help="register MODELFILE (an Ollama Modelfile whose FROM is a local GGUF) as NAME; repeatable",
    )
    parser.add_argument("--host", default=host, help=f"address to bind (default from OLLAMA_HOST, else {host})")
    parser.add_argument("--port", type=int, default=port, help=f"port (0 = any free port; default {port})")
    parser.add_argument("--max-batch", type=int, default=16, help="most requests decoded together (default 16)")
    parser.add_argument(
        "--batch-window-ms", type=float, default=20.0,
        help="when idle, wait this long after a request for others to batch with it (default 20)",
    )
    parser.add_argument(
        "--engine", choices=("transformers", "llama.cpp", "auto"), default="transformers",
        help="transformers (default: de-quantized weights, continuous batching), llama.cpp (llama-cpp-python on "
             "the GGUF, one request at a time) or auto (llama.cpp when llama_cpp imports, else transformers)",
    )
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads; transformers: torch threads (default $OSGHA_STANDIN_THREADS, else 1: on a shared "
             "2-core machine 1 thread is faster than 2); llama.cpp: llama.cpp threads (default $OSGHA_THREADS, else 1)",
    )
    parser.add_argument(
        "--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
        help="transformers engine: weights/activations dtype; auto = bfloat16 if the CPU has native bf16, "
             "else float32",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=None,
        help="largest request body; a larger Content-Length is answered 413 before the body is read (default: "
             "sized for the longest prompt the Modelfiles' num_ctx allows, printed at start)",
    )
    parser.add_argument(
        "--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT,
        help=f"seconds a connection may send nothing before it is closed, and the most a request body may take "
             f"(default {DEFAULT_READ_TIMEOUT:g})",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    from .server import Registry, exposure_warning, make_server

    warning = exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF de-quantization bar
    limit_heap_growth()

    from .modelfile import ModelfileError, parse_modelfile

    engine = resolve_engine(args.engine)
    if engine == "llama.cpp":
        from .llamacpp_engine import import_llama_cpp

        try:
            import_llama_cpp()
        except ImportError as exc:  # before any model is read: say what to install
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.threads is None:
        variable = "OSGHA_THREADS" if engine == "llama.cpp" else "OSGHA_STANDIN_THREADS"
        args.threads = int(os.environ.get(variable) or 1)
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if cpu_has_fast_bf16() else "float32")
    if engine == "transformers":
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        registry = Registry(engine=engine, dtype=dtype, max_batch=args.max_batch,
                            batch_window_ms=args.batch_window_ms, threads=args.threads)
    except ValueError as exc:
        parser.error(str(exc))
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--model {spec!r}: expected NAME=MODELFILE")
        try:
            modelfile = parse_modelfile(path)
        except ModelfileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        model = registry.register(name, modelfile)
        print(
            f"model {model.name}: {modelfile.gguf} sha256:{model.digest[:12]} "
            f"({model.engine.describe}, {args.threads} thread(s), loaded in {model.engine.load_seconds:.1f}s)",
            flush=True,
        )
    try:
        server = make_server(registry, args.host, args.port, max_body_bytes=args.max_body_bytes,
                             read_timeout=args.read_timeout)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    handler = server.RequestHandlerClass
    print(f"request bodies up to {handler.max_body_bytes:,} bytes (--max-body-bytes), "
          f"read timeout {handler.timeout:g} s (--read-timeout)", flush=True)
    bound_host, bound_port = server.server_address[:2]
    print(f"listening on http://{bound_host}:{bound_port}", flush=True)

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

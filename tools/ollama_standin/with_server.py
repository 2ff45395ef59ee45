"""Run a command with a stand-in server started for it: ``OLLAMA_HOST`` points at the server.

Usage::

    python -m tools.ollama_standin.with_server --model smollm2-135m=data/ollama/Modelfile.smollm2 \\
        [--max-batch 32] [--engine llama.cpp] [--log PATH] -- python -m osgha_lite augment --dataset flickr8k --split test

The server gets a free port, the command runs with ``OLLAMA_HOST=127.0.0.1:PORT``,
and the server is stopped when the command ends; the exit status is the command's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from .launcher import StandInProcess


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m tools.ollama_standin.with_server --model NAME=MODELFILE [...] -- COMMAND ...",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    ours, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="python -m tools.ollama_standin.with_server")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=MODELFILE")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--engine", default="transformers", choices=("transformers", "llama.cpp", "auto"))
    parser.add_argument("--log", default=None, help="server log file (default: a temporary file)")
    args = parser.parse_args(ours)
    if not command:
        parser.error("no command after --")
    models = dict(spec.split("=", 1) for spec in args.model)
    server = StandInProcess(models, max_batch=args.max_batch, threads=args.threads, dtype=args.dtype,
                            engine=args.engine, log_path=args.log)
    try:
        host = server.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"stand-in server on {host} (log {server.log_path})", file=sys.stderr, flush=True)
    try:
        return subprocess.call(command, env={**os.environ, "OLLAMA_HOST": host})
    except KeyboardInterrupt:
        return 130
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

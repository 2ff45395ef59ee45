"""Memory of the stand-in server under oversized requests, and whether other clients are served meanwhile.

Run with ``python benchmarks/bench_server_memory.py`` (options: ``--help``). It is
a measurement, not a test. For each size of ``--sizes`` (MB, default 20 and 200)
it starts a stand-in server (real SmolLM2-135M GGUF, ``num_ctx`` 2048), sends one
small chat request to warm it up, reads its idle RSS, then POSTs one ``/api/chat``
body of that size (a user message of ``a`` characters, as the ``ollama`` client
would send it) while sampling the server's RSS (``/proc/<pid>/status``) every
50 ms and asking ``GET /api/version`` on another connection every 0.25 s. It
prints the answer's status and seconds, the peak RSS over idle, and the slowest
``/api/version`` answer.

A request still unanswered after ``--limit-s`` seconds, or whose server grew by
more than ``--max-growth-gb``, is stopped by killing the server, and reported so.
``--server-repo`` starts the server of another checkout (for example an older
commit in a ``git worktree``) to compare the same measurement.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MODEL = "smollm2-135m"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def start_server(repo: Path, modelfile: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "tools.ollama_standin", "--port", "0", "--host", "127.0.0.1", "--threads", "1",
               "--model", f"{MODEL}={modelfile}"]
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    for line in process.stdout:
        if line.startswith("listening on http://"):
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, line.strip().removeprefix("listening on http://")
    raise RuntimeError(f"the server in {repo} exited with code {process.wait()}")


def body_of(size: int) -> bytes:
    head = b'{"model": "' + MODEL.encode() + b'", "stream": false, "messages": [{"role": "user", "content": "'
    tail = b'"}]}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def measure(repo: Path, modelfile: Path, size: int, limit_s: float, max_growth: int) -> dict:
    import httpx

    process, host = start_server(repo, modelfile)
    try:
        httpx.post(f"http://{host}/api/chat", timeout=120, json={
            "model": MODEL, "stream": False, "options": {"num_predict": 1},
            "messages": [{"role": "user", "content": "Hello."}]}).raise_for_status()
        time.sleep(1.0)
        idle = rss_bytes(process.pid)
        body = body_of(size)
        answer: dict = {}

        def send() -> None:
            started = time.perf_counter()
            try:
                reply = httpx.post(f"http://{host}/api/chat", content=body, timeout=limit_s + 30,
                                   headers={"Content-Type": "application/json"})
                answer["status"] = f"HTTP {reply.status_code}: {reply.text[:150]}"
            except Exception as exc:  # noqa: BLE001 - reported
                answer["status"] = f"{type(exc).__name__}: {exc}"[:150]
            answer["seconds"] = time.perf_counter() - started

        sender = threading.Thread(target=send, daemon=True)
        started, peak, slowest, stopped = time.perf_counter(), idle, 0.0, None
        next_probe = started
        sender.start()
        while sender.is_alive():
            peak = max(peak, rss_bytes(process.pid))
            elapsed = time.perf_counter() - started
            if peak - idle > max_growth or elapsed > limit_s:
                stopped = (f"stopped after {elapsed:.1f} s: RSS grew by {(peak - idle) / 2**20:,.0f} MB"
                           if peak - idle > max_growth else f"no answer within {limit_s:.0f} s")
                process.kill()
                break
            if time.perf_counter() >= next_probe:
                probe = time.perf_counter()
                try:
                    httpx.get(f"http://{host}/api/version", timeout=30).raise_for_status()
                    slowest = max(slowest, time.perf_counter() - probe)
                except Exception:  # noqa: BLE001 - a probe that fails counts as its wait
                    slowest = max(slowest, time.perf_counter() - probe)
                next_probe = time.perf_counter() + 0.25
            time.sleep(0.05)
        sender.join(timeout=30)
        if stopped is None:
            peak = max(peak, rss_bytes(process.pid))
        return {"size": size, "idle": idle, "growth": peak - idle, "slowest_version": slowest,
                "status": stopped or answer.get("status"), "seconds": None if stopped else answer.get("seconds")}
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[20, 200], help="body sizes in MB (10^6 bytes)")
    parser.add_argument("--limit-s", type=float, default=120.0, help="stop a request after this many seconds")
    parser.add_argument("--max-growth-gb", type=float, default=6.0, help="stop when the server grows by this much")
    parser.add_argument("--server-repo", type=Path, default=REPO_ROOT, help="checkout whose server is started")
    args = parser.parse_args(argv)
    from tools.ollama_standin.gguf_path import link_gguf

    folder = Path(tempfile.mkdtemp(prefix="bench-server-memory-"))
    try:
        shutil.copy(REPO_ROOT / "data" / "ollama" / "Modelfile.smollm2", folder / "Modelfile.smollm2")
        link_gguf(folder)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.server_repo, capture_output=True,
                                text=True).stdout.strip()
        print(f"server of {args.server_repo.resolve()} (commit {commit})")
        print(f"{'body':>8}  {'idle RSS':>9}  {'peak - idle':>11}  {'slowest /api/version':>20}  answer")
        for megabytes in args.sizes:
            row = measure(args.server_repo, folder / "Modelfile.smollm2", int(megabytes * 1e6), args.limit_s,
                          int(args.max_growth_gb * 2**30))
            seconds = f" after {row['seconds']:.2f} s" if row["seconds"] is not None else ""
            print(f"{megabytes:>6g} MB  {row['idle'] / 2**20:>6,.0f} MB  {row['growth'] / 2**20:>8,.0f} MB  "
                  f"{row['slowest_version']:>18.2f} s  {row['status']}{seconds}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

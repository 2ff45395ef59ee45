"""Start and stop the stand-in server as a child process (for tests, benchmarks and scripts).

>>> with StandInProcess({"smollm2-135m": "data/ollama/Modelfile.smollm2"}) as server:  # doctest: +SKIP
...     ollama.Client(host=server.host).chat(...)

The server binds a free port (``--port 0``) and the launcher waits for its
``listening on http://HOST:PORT`` line, so several servers can run side by
side. Its log (stderr) goes to ``log_path`` (default: a temporary file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class StandInProcess:
    """A ``python -m tools.ollama_standin`` child process (``engine``: its ``--engine``)."""

    def __init__(
        self,
        models: dict[str, str | os.PathLike],
        *,
        max_batch: int = 16,
        threads: int | None = None,
        dtype: str = "auto",
        engine: str = "transformers",
        log_path: str | os.PathLike | None = None,
        extra_args: tuple[str, ...] = (),
        python: str = sys.executable,
    ) -> None:
        self.command = [python, "-m", "tools.ollama_standin", "--port", "0", "--host", "127.0.0.1",
                        "--max-batch", str(max_batch), "--dtype", dtype, "--engine", engine, *extra_args]
        if threads is not None:
            self.command += ["--threads", str(threads)]
        for name, modelfile in models.items():
            self.command += ["--model", f"{name}={modelfile}"]
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="ollama-standin-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        self.host: str | None = None

    def start(self, timeout: float = 600.0) -> str:
        """Start the server; return ``host:port`` once it answers (raises on failure)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
        log.close()
        found: list[str] = []

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for raw in self.process.stdout:
                line = raw.decode("utf-8", "replace").strip()
                with open(self.log_path, "a", encoding="utf-8") as out:
                    out.write(line + "\n")
                if line.startswith("listening on http://"):
                    found.append(line.removeprefix("listening on http://"))

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the stand-in server exited with code {self.process.returncode}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the stand-in server did not start within {timeout:.0f} s; log {self.log_path}")
            time.sleep(0.2)
        self.host = found[0]
        return self.host

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "StandInProcess":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

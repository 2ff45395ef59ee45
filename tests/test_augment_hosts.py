"""Augmentation over several Ollama servers: host lists, sharing, failover, identical records.

The servers are real stand-in servers (tests/standin_server.py) running the
SmolLM2-135M GGUF, each started on its own free port; a host is taken down
by killing its process (SIGKILL) while the run is going. Replies are kept
short (``num_predict=40``, one attempt) so the runs stay fast; whether a
caption succeeds does not matter here, only who answers it and what is
written.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from standin_server import CAPTIONS, MODEL, PROJECT_MODELFILE, shared_server, standin, test_modelfile_dir  # noqa: F401

from osgha_lite.llm.augment import (
    AugmentConfig,
    AugmentError,
    OllamaUnavailable,
    augment_captions,
    connect,
    read_records,
)
from osgha_lite.llm.hosts import (
    MAX_PROBE_DELAY,
    Host,
    HostMismatch,
    HostPool,
    HostSpec,
    HostSpecError,
    check_same_model,
    parse_hosts,
    spread,
)
from tools.ollama_standin.launcher import StandInProcess

REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(hosts, **overrides) -> AugmentConfig:
    settings = {"host": hosts, "model": MODEL, "concurrency": 1, "timeout": 300, "num_predict": 40,
                "max_attempts": 1, "backoff": 0.1, **overrides}
    return AugmentConfig(**settings)


def _by_key(path: Path) -> dict[str, dict]:
    records, report = read_records(path)
    assert report.problems() == []
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "a caption was written twice"
    return {r["key"]: r for r in records}


# --------------------------------------------------------------------------- host lists
def test_host_lists_parse_every_form():
    assert parse_hosts(None, 4, environ={}) == [HostSpec("http://127.0.0.1:11434", 4)]
    assert parse_hosts(None, 2, environ={"OLLAMA_HOST": "127.0.0.1:11434,127.0.0.1:11435"}) == [
        HostSpec("http://127.0.0.1:11434", 2), HostSpec("http://127.0.0.1:11435", 2)]
    assert parse_hosts(["http://a:1", "b:2,c", "host=https://d:4,concurrency=8"], 3) == [
        HostSpec("http://a:1", 3), HostSpec("http://b:2", 3), HostSpec("http://c:11434", 3),
        HostSpec("https://d:4", 8)]
    assert parse_hosts("https://example.com/ollama/", 1) == [HostSpec("https://example.com:443/ollama", 1)]
    assert parse_hosts("[::1]:5", 1) == [HostSpec("http://[::1]:5", 1)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http//127.0.0.1:11434", "path '//127.0.0.1:11434' (a mistyped '://'?)"),
        ("127.0.0.1:port", "the port is not a number from 1 to 65535"),
        ("127.0.0.1:99999", "the port is not a number from 1 to 65535"),
        ("ftp://127.0.0.1:11434", "scheme 'ftp' is not http or https"),
        ("http://:11434", "no host name"),
        ("a:1,,b:2", "empty"),
        ("host=a:1,concurrency=zero", "concurrency must be a whole number of at least 1"),
        ("host=a:1,threads=2", "'threads=2' is not host=URL or concurrency=N"),
        ("a:1,http://a:1", "named twice"),
    ],
)
def test_bad_host_lists_are_refused_with_the_accepted_forms(value, message):
    with pytest.raises(HostSpecError, match=re.escape(message)) as info:
        parse_hosts(value, 1)
    text = str(info.value)
    assert value in text or "named twice" in message  # the message quotes what was given
    assert "expected http://HOST:PORT" in text or "concurrency" in text


def test_a_bad_host_url_stops_the_run_before_the_cache(tmp_path):
    path = tmp_path / "c.jsonl"
    with pytest.raises(AugmentError, match=r"bad Ollama host 'http:/x:1'"):
        augment_captions(CAPTIONS[:1], path, _config(["127.0.0.1:1", "http:/x:1"]), progress=False)
    assert not path.exists() and not path.with_suffix(".lock").exists()


def test_cli_bad_host_url_exits_with_the_accepted_forms(data_env, tmp_path):
    path = tmp_path / "flickr8k.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "osgha_lite", "augment", "--dataset", "flickr8k", "--split", "test", "--out", str(path),
         "--host", "127.0.0.1:11434", "--host", "127.0.0.1:11o35", "--no-progress"],
        cwd=REPO_ROOT, env=os.environ, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: bad Ollama host '127.0.0.1:11o35': the port is not a number")
    assert "host=URL,concurrency=N" in proc.stderr and "Traceback" not in proc.stderr
    assert not path.exists()


def test_hosts_serving_the_model_differently_are_refused():
    same = {"template": "{{ .Prompt }}", "parameters": "num_ctx 2048"}
    check_same_model("http://a:1", ("sha256:1", same), "http://b:2", ("sha256:1", dict(same)), "m")
    with pytest.raises(HostMismatch, match="serve different weights for 'm' .sha256:1 vs sha256:2."):
        check_same_model("http://a:1", ("sha256:1", same), "http://b:2", ("sha256:2", same), "m")
    with pytest.raises(HostMismatch, match="different parameters in its Modelfile"):
        check_same_model("http://a:1", ("sha256:1", same), "http://b:2",
                         ("sha256:1", {**same, "parameters": "num_ctx 4096"}), "m")


# --------------------------------------------------------------------------- scheduling and backoff
def test_a_lost_host_backs_off_comes_back_and_no_item_is_lost_or_repeated():
    """:func:`spread` with plain functions as the work: host b loses its first two requests, fails
    one probe, then answers again; every item is done exactly once."""
    pool = HostPool([Host(HostSpec("http://a:1", 2)), Host(HostSpec("http://b:2", 2))], backoff=0.05)
    for host in pool.hosts:
        pool.mark_up(host, client=host.url)
    lock = threading.Lock()
    lost = {"b": 2, "probe": 1}
    done: list[tuple[str, int]] = []

    class Lost(Exception):
        pass

    def work(host, item):
        time.sleep(0.01)
        with lock:
            if host.url.endswith("b:2") and lost["b"]:
                lost["b"] -= 1
                raise Lost("connection refused")
        return item

    def probe(host):
        with lock:
            if lost["probe"]:
                lost["probe"] -= 1
                raise Lost("still refused")
        return host.url

    def on_done(host, item, future):
        done.append((host.url, future.result()))
        return True

    messages: list[str] = []
    spread(range(40), pool, work=work, probe=probe, is_host_lost=lambda e: isinstance(e, Lost), on_done=on_done,
           log=messages.append)
    assert sorted(item for _, item in done) == list(range(40))
    assert sum(pool.answered().values()) == 40 and pool.answered()["http://b:2"] > 0
    assert any("host http://b:2 is down (connection refused)" in m for m in messages)
    assert "host http://b:2 answers again; sending it requests" in messages
    delays = []
    probe_host = Host(HostSpec("http://c:3", 1), up=True)
    for _ in range(12):
        pool.mark_down(probe_host, "refused", 0.0, probe=True)
        delays.append(probe_host.retry_at)
    assert delays[:3] == [0.05, 0.1, 0.2] and delays[-1] == MAX_PROBE_DELAY


def test_no_host_left_raises_after_a_last_probe_of_each():
    from osgha_lite.llm.hosts import AllHostsDown

    pool = HostPool([Host(HostSpec("http://a:1", 1)), Host(HostSpec("http://b:2", 1))], backoff=0.01)
    for host in pool.hosts:
        pool.mark_up(host, client=None)
    probes: list[str] = []

    def work(host, item):
        raise ConnectionError(f"{host.url} refused")

    def probe(host):
        probes.append(host.url)
        raise ConnectionError("refused again")

    with pytest.raises(AllHostsDown, match=r"(?s)every Ollama host of the run is down:\n  http://a:1: refused again"
                                           r"\n  http://b:2: refused again"):
        spread(range(3), pool, work=work, probe=probe, is_host_lost=lambda e: isinstance(e, ConnectionError),
               on_done=lambda *a: True, log=lambda m: None)
    assert sorted(probes) == ["http://a:1", "http://b:2"]


# --------------------------------------------------------------------------- real servers
def _start(models: dict) -> StandInProcess:
    server = StandInProcess(models, max_batch=8, threads=1, dtype="float32")
    server.start(timeout=600)
    return server


@pytest.fixture(scope="module")
def servers():
    """Three more servers, in float32 (bfloat16 sums flip near-ties between a warm and a cold server,
    see tools/ollama_standin/README.md): "second" and "victim" for one host against two, then
    "victim" and "last" to kill."""
    shared_server()
    models = {MODEL: test_modelfile_dir() / PROJECT_MODELFILE.name}
    with ThreadPoolExecutor(max_workers=3) as pool:
        started = list(pool.map(lambda _: _start(models), range(3)))
    yield dict(zip(("second", "victim", "last"), started))
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def one_and_two(servers, tmp_path_factory):
    """The same captions through one host, then through two (fresh caches)."""
    folder = tmp_path_factory.mktemp("hosts")
    first, second = servers["second"].host, servers["victim"].host
    one = augment_captions(CAPTIONS, folder / "one.jsonl", _config([first]), progress=False)
    two = augment_captions(CAPTIONS, folder / "two.jsonl", _config([first, second]), progress=False)
    return folder, one, two


def test_two_hosts_share_the_work(one_and_two, servers):
    folder, _, two = one_and_two
    assert two.ok + two.failed == len(CAPTIONS) and two.status == "completed"
    assert set(two.per_host) == {f"http://{servers['second'].host}", f"http://{servers['victim'].host}"}
    assert sum(two.per_host.values()) == len(CAPTIONS) and min(two.per_host.values()) >= 2
    assert {r["caption"] for r in _by_key(folder / "two.jsonl").values()} == set(CAPTIONS)
    meta = json.loads((folder / "two.meta.json").read_text())
    assert meta["runs"][-1]["hosts"] == two.per_host


def test_one_and_two_hosts_write_identical_records(one_and_two, servers, standin):  # noqa: F811
    folder, one, two = one_and_two
    assert one.per_host == {f"http://{servers['second'].host}": len(CAPTIONS)}
    assert min(two.per_host.values()) >= 2  # the second host answered some of the same captions
    assert _by_key(folder / "one.jsonl") == _by_key(folder / "two.jsonl")
    # what the run checks before using a host: same weights, template and Modelfile parameters
    _, first = connect(_config(standin.host))
    _, second = connect(_config(servers["second"].host))
    assert first.digest == second.digest and first.served == second.served and first.served["parameters"]


def _kill_after_two_records(process, path: Path) -> threading.Thread:
    """A started thread that kills ``process`` once the cache ``path`` holds two records (or after 300 s)."""

    def kill_when_started() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= 2:
                process.kill()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    return killer


def test_a_host_killed_mid_run_hands_its_captions_to_the_other(servers, standin, tmp_path, capsys):  # noqa: F811
    victim = servers["victim"]
    path = tmp_path / "kill.jsonl"

    killer = _kill_after_two_records(victim.process, path)
    summary = augment_captions(CAPTIONS, path, _config([victim.host, standin.host]), progress=False)
    killer.join()
    assert victim.process.poll() is not None, "the victim was not killed during the run"
    assert summary.status == "completed" and summary.ok + summary.failed == len(CAPTIONS)
    records = _by_key(path)  # each caption once
    assert {r["caption"] for r in records.values()} == set(CAPTIONS)
    assert sum(summary.per_host.values()) == len(CAPTIONS)
    assert summary.per_host[f"http://{standin.host}"] > summary.per_host[f"http://{victim.host}"]
    err = capsys.readouterr().err
    assert f"host http://{victim.host} is down (" in err and "its captions go to the other hosts" in err


def test_all_hosts_down_at_start_is_a_clear_error(tmp_path):
    path = tmp_path / "c.jsonl"
    hosts = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    with pytest.raises(OllamaUnavailable, match=rf"(?s)cannot reach any of the 2 Ollama hosts:\n  http://{hosts[0]}: "
                                                rf".*\n  http://{hosts[1]}: .*ollama serve"):
        augment_captions(CAPTIONS, path, _config(hosts), progress=False)
    assert not path.exists()


def test_every_host_lost_mid_run_stops_with_a_clear_message(servers, tmp_path, capsys):
    last = servers["last"]
    path = tmp_path / "down.jsonl"
    dead = f"127.0.0.1:{_free_port()}"

    killer = _kill_after_two_records(last.process, path)
    with pytest.raises(AugmentError, match=r"(?s)every Ollama host of the run is down:\n"
                                           rf"  http://{last.host}: .*\n  http://{dead}: .*"
                                           r"\(stopped; \d+ captions were saved to .*down.jsonl\)") as info:
        augment_captions(CAPTIONS, path, _config([last.host, dead]), progress=False)
    killer.join()
    err = capsys.readouterr().err
    assert f"warning: host http://{dead} does not answer" in err and "the run starts without it" in err
    saved = _by_key(path)
    assert 2 <= len(saved) < len(CAPTIONS) and f"{len(saved)} captions were saved" in str(info.value)
    meta = json.loads(path.with_name("down.meta.json").read_text())
    assert meta["runs"][-1]["status"] == "aborted"


def test_cli_two_hosts_report_the_captions_each_answered(data_env, one_and_two, servers, standin, tmp_path):  # noqa: F811
    path = tmp_path / "flickr8k.jsonl"
    second = servers["second"].host
    proc = subprocess.run(
        [sys.executable, "-m", "osgha_lite", "augment", "--dataset", "flickr8k", "--split", "train", "--out", str(path),
         "--host", f"{standin.host},{second}", "--concurrency", "1", "--num-predict", "40", "--max-attempts", "1",
         "--no-progress"],
        cwd=REPO_ROOT, env=os.environ, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("answered per host: "))
    counts = dict(part.rsplit(" ", 1) for part in line.removeprefix("answered per host: ").split(", "))
    assert set(counts) == {f"http://{standin.host}", f"http://{second}"}
    assert sum(int(c) for c in counts.values()) == len(_by_key(path))

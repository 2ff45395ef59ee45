"""Several Ollama servers for one augmentation run: host lists, per-host slots, failover.

A run may name several servers (``--host A --host B``, ``--host A,B`` or
``OLLAMA_HOST=A,B``). Each host gets its own number of requests in flight
(``concurrency``; the run's ``--concurrency`` unless the host is written as
``host=URL,concurrency=N``), so a run keeps ``sum_h c_h`` requests in flight
in all, and with equal servers its throughput is up to ``H`` times one
server's.

Scheduling (:func:`spread`): captions wait in one queue; whenever a host that
is up has a free slot, the next caption goes to it (the host with the fewest
requests in flight relative to its slots first), so a faster server simply
answers more captions. A caption's record does not depend on the host that
answered it: every request carries the full generation options and its own
seed (derived from the caption's cache key and attempt), and the run refuses
hosts whose model differs in weights (digest), chat template or Modelfile
parameters (:func:`check_same_model`).

Failover: when a request fails because its host is lost (the client's
transport retries are spent), the host is marked down and the caption goes
back to the front of the queue; so does every other caption in flight on that
host when it fails in turn. Nothing of a caption's partial work is kept, so a
caption is written once, by whichever host finishes it. A host that is down
is probed again (``/api/show``, same model checks) after ``b * 2**(n-1)``
seconds for its ``n``-th consecutive failure (``b`` = the run's backoff,
capped at :data:`MAX_PROBE_DELAY`), and used again when it answers. The run
stops with :class:`AllHostsDown` only when no host is up, nothing is in
flight and every host has failed a probe since it went down.

This module knows nothing of prompts or caches: the caller passes functions
that connect to a host, do one caption's work and take its result
(:mod:`osgha_lite.llm.augment` wires them).
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlsplit

DEFAULT_PORT = 11434
MAX_PROBE_DELAY = 60.0
"""Longest wait, in seconds, before a host that is down is probed again."""

HOST_FORMS = "http://HOST:PORT, https://HOST:PORT, HOST:PORT or host=URL,concurrency=N"


class HostSpecError(ValueError):
    """A host list that cannot be used (bad URL, bad concurrency, a host named twice)."""


class AllHostsDown(RuntimeError):
    """No Ollama host of the run answers any more."""


class HostMismatch(RuntimeError):
    """Two hosts serve the model differently (weights, template or parameters)."""


# --------------------------------------------------------------------------- host lists
@dataclass(frozen=True)
class HostSpec:
    """One server of a run: its URL (``http://host:port``) and its requests in flight."""

    url: str
    concurrency: int


def normalize_url(text: str) -> str:
    """``HOST:PORT`` / ``http://HOST:PORT[/path]`` -> ``scheme://host:port[/path]``.

    As in Ollama's client, the scheme defaults to ``http`` and the port to
    11434 (80 / 443 when the scheme is written). Raises :class:`HostSpecError` naming what is wrong.
    """
    raw = text.strip()
    if not raw:
        raise HostSpecError(f"bad Ollama host {text!r}: empty; expected {HOST_FORMS}")
    if re.search(r"\s", raw):
        raise HostSpecError(f"bad Ollama host {text!r}: contains white space; expected {HOST_FORMS}")
    parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    if "//" in parts.path or ":" in parts.path:
        raise HostSpecError(f"bad Ollama host {text!r}: path {parts.path!r} (a mistyped '://'?); "
                            f"expected {HOST_FORMS}")
    if parts.scheme not in ("http", "https"):
        raise HostSpecError(f"bad Ollama host {text!r}: scheme {parts.scheme!r} is not http or https; "
                            f"expected {HOST_FORMS}")
    try:
        port = parts.port
    except ValueError:
        raise HostSpecError(f"bad Ollama host {text!r}: the port is not a number from 1 to 65535; "
                            f"expected {HOST_FORMS}") from None
    if not parts.hostname:
        raise HostSpecError(f"bad Ollama host {text!r}: no host name; expected {HOST_FORMS}")
    if not re.fullmatch(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+", parts.hostname) or parts.netloc.endswith(":"):
        raise HostSpecError(f"bad Ollama host {text!r}: {parts.netloc!r} is not HOST or HOST:PORT; "
                            f"expected {HOST_FORMS}")
    if port == 0:
        raise HostSpecError(f"bad Ollama host {text!r}: port 0; expected {HOST_FORMS}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise HostSpecError(f"bad Ollama host {text!r}: query, fragment or user name in the URL; "
                            f"expected {HOST_FORMS}")
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    path = parts.path.rstrip("/")
    default_port = {"http": 80, "https": 443}[parts.scheme] if "://" in raw else DEFAULT_PORT
    return f"{parts.scheme}://{name}:{port or default_port}{path}"


def _keyed_spec(text: str, default_concurrency: int) -> HostSpec:
    fields: dict[str, str] = {}
    for piece in text.split(","):
        key, sep, value = piece.partition("=")
        key = key.strip()
        if not sep or key not in ("host", "concurrency") or key in fields:
            raise HostSpecError(f"bad Ollama host {text!r}: {piece.strip()!r} is not host=URL or concurrency=N "
                                f"(each once); expected {HOST_FORMS}")
        fields[key] = value.strip()
    concurrency = default_concurrency
    if "concurrency" in fields:
        try:
            concurrency = int(fields["concurrency"])
        except ValueError:
            concurrency = 0
        if concurrency < 1:
            raise HostSpecError(f"bad Ollama host {text!r}: concurrency must be a whole number of at least 1")
    return HostSpec(normalize_url(fields.get("host", "")), concurrency)


def parse_hosts(values: str | Sequence[str] | None, default_concurrency: int,
                environ: dict[str, str] | None = None, default: str = f"127.0.0.1:{DEFAULT_PORT}") -> list[HostSpec]:
    """The servers of a run, in the order given.

    ``values`` are ``--host`` arguments (``None``: ``$OLLAMA_HOST``, else
    ``default``). Each is either ``host=URL,concurrency=N`` (one host with its
    own slots) or a comma-separated list of URLs (each with
    ``default_concurrency`` slots). A host named twice is refused.
    """
    if default_concurrency < 1:
        raise HostSpecError(f"concurrency must be at least 1 (got {default_concurrency})")
    if values is None:
        values = (environ if environ is not None else os.environ).get("OLLAMA_HOST") or default
    if isinstance(values, str):
        values = [values]
    specs: list[HostSpec] = []
    for value in values:
        if value.strip().startswith(("host=", "concurrency=")):
            specs.append(_keyed_spec(value, default_concurrency))
        else:
            for piece in value.split(","):
                try:
                    specs.append(HostSpec(normalize_url(piece), default_concurrency))
                except HostSpecError as exc:
                    raise (HostSpecError(f"{exc} (in the list {value!r})") if piece != value else exc) from None
    if not specs:
        raise HostSpecError(f"no Ollama host given; expected {HOST_FORMS}")
    seen: set[str] = set()
    for spec in specs:
        if spec.url in seen:
            raise HostSpecError(f"Ollama host {spec.url} is named twice; name each server once "
                                f"(give it more requests in flight with host={spec.url},concurrency=N)")
        seen.add(spec.url)
    return specs


# --------------------------------------------------------------------------- model checks
def model_fingerprint(shown: Any) -> dict[str, str]:
    """What of ``/api/show`` decides a reply besides the request: chat template and Modelfile parameters."""
    return {"template": getattr(shown, "template", None) or "", "parameters": getattr(shown, "parameters", None) or ""}


def check_same_model(first_url: str, first: tuple[str, dict], url: str, other: tuple[str, dict], model: str) -> None:
    """Raise :class:`HostMismatch` unless two hosts serve ``model`` with the same digest and fingerprint."""
    (digest_a, print_a), (digest_b, print_b) = first, other
    if digest_a != digest_b:
        raise HostMismatch(f"hosts {first_url} and {url} serve different weights for {model!r} ({digest_a} vs "
                           f"{digest_b}); every host of a run must serve the same model, or records would depend "
                           "on the host. Create the model from the same file on each server")
    for what in ("template", "parameters"):
        if print_a[what] != print_b[what]:
            raise HostMismatch(f"hosts {first_url} and {url} serve {model!r} with different {what} in its "
                               f"Modelfile ({print_a[what]!r} vs {print_b[what]!r}); every host must serve the "
                               "same Modelfile, or records would depend on the host")


# --------------------------------------------------------------------------- run-time state
@dataclass
class Host:
    """A server during a run."""

    spec: HostSpec
    client: Any = None
    up: bool = False
    failures: int = 0
    """Consecutive failures (requests lost or probes refused) since the host last answered."""
    retry_at: float = 0.0
    probed: bool = False
    """A probe has failed since the host went down."""
    probing: bool = False
    retired: str | None = None
    """Why the host is out of the run for good (it came back serving another model)."""
    inflight: int = 0
    answered: int = 0
    last_error: str = ""

    @property
    def url(self) -> str:
        return self.spec.url


@dataclass
class HostPool:
    """The hosts of a run and when each may be used or probed."""

    hosts: list[Host]
    backoff: float = 1.0
    events: list[str] = field(default_factory=list)

    def free_host(self) -> Host | None:
        ready = [h for h in self.hosts if h.up and h.inflight < h.spec.concurrency]
        return min(ready, key=lambda h: (h.inflight / h.spec.concurrency, self.hosts.index(h)), default=None)

    def mark_down(self, host: Host, error: str, now: float, probe: bool = False) -> bool:
        """Record that ``host`` failed a request (or a ``probe``); True when it was up until now.

        A failure counts towards the backoff only when the host was up or a probe
        failed; the other requests in flight on a lost host fail too and are not counted.
        """
        was_up = host.up
        if was_up or probe:
            host.failures += 1
            host.retry_at = now + min(self.backoff * 2 ** (host.failures - 1), MAX_PROBE_DELAY)
        host.up, host.last_error = False, error
        host.probed = host.probed or probe
        return was_up

    def mark_up(self, host: Host, client: Any) -> None:
        host.client, host.up, host.failures, host.probed, host.last_error = client, True, 0, False, ""

    def due(self, now: float) -> list[Host]:
        return [h for h in self.hosts if not h.up and not h.probing and h.retired is None and h.retry_at <= now]

    def any_up(self) -> bool:
        return any(h.up for h in self.hosts)

    def next_due(self, now: float) -> float | None:
        waiting = [h.retry_at - now for h in self.hosts if not h.up and not h.probing and h.retired is None]
        return max(0.0, min(waiting)) if waiting else None

    def describe_down(self) -> str:
        return "\n".join(f"  {h.url}: {h.retired or h.last_error or 'down'}" for h in self.hosts)

    def answered(self) -> dict[str, int]:
        return {h.url: h.answered for h in self.hosts}


def open_pool(
    specs: Sequence[HostSpec],
    connect: Callable[[HostSpec], tuple[Any, Any]],
    is_unreachable: Callable[[BaseException], bool],
    *,
    model: str,
    backoff: float = 1.0,
    log: Callable[[str], None] = print,
) -> tuple[HostPool, Any]:
    """Connect to every host at once; return the pool and the first answering host's identity.

    ``connect(spec)`` returns ``(client, identity)``, the identity having ``digest``
    and ``served`` (:func:`model_fingerprint`). A host for which ``is_unreachable``
    holds is down from the start (a warning; probed again after the backoff); any
    other error is raised. With one host its own error is raised when it does not
    answer, with several :class:`AllHostsDown` lists them all. Raises
    :class:`HostMismatch` when two hosts serve the model differently.
    """
    pool = HostPool([Host(spec) for spec in specs], backoff=backoff)

    def attempt(spec: HostSpec) -> tuple[Any, BaseException | None]:
        try:
            return connect(spec), None
        except Exception as exc:  # noqa: BLE001 - sorted below
            return None, exc

    with ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="connect") as executor:
        outcomes = list(executor.map(attempt, specs))
    reference: tuple[str, Any] | None = None
    now = time.monotonic()
    for host, (result, error) in zip(pool.hosts, outcomes):
        if error is not None:
            if not is_unreachable(error):
                raise error
            pool.mark_down(host, _one_line(error), now, probe=True)
            continue
        client, identity = result
        if reference is None:
            reference = (host.url, identity)
        else:
            check_same_model(reference[0], (reference[1].digest, reference[1].served), host.url,
                             (identity.digest, identity.served), model)
        pool.mark_up(host, client)
    if reference is None:
        if len(specs) == 1:
            raise outcomes[0][1]
        raise AllHostsDown(f"cannot reach any of the {len(specs)} Ollama hosts:\n{pool.describe_down()}")
    for host in pool.hosts:
        if not host.up:
            log(f"warning: host {host.url} does not answer ({host.last_error}); the run starts without it and "
                f"tries it again in {host.retry_at - now:.0f} s")
    return pool, reference[1]


def spread(
    items: Iterable[Any],
    pool: HostPool,
    *,
    work: Callable[[Host, Any], Any],
    probe: Callable[[Host], Any],
    is_host_lost: Callable[[BaseException], bool],
    on_done: Callable[[Host, Any, "Future"], bool],
    log: Callable[[str], None] = print,
) -> None:
    """Run ``work(host, item)`` for every item on the pool's hosts, with failover.

    ``on_done(host, item, future)`` takes each finished item (it may call
    ``future.result()``); it returns False to stop handing out new items (the
    ones in flight still finish). ``probe(host)`` returns a connected client or
    raises; an exception for which ``is_host_lost`` is true marks the host
    down and puts the item back in front of the queue. Raises
    :class:`AllHostsDown` when no host is left to try.
    """
    queue = deque(items)
    slots = sum(h.spec.concurrency for h in pool.hosts) + len(pool.hosts)
    executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="augment")
    inflight: dict[Future, tuple[str, Host, Any]] = {}
    going = True
    try:
        while True:
            now = time.monotonic()
            for host in pool.due(now):
                host.probing = True
                inflight[executor.submit(probe, host)] = ("probe", host, None)
            while going and queue:
                host = pool.free_host()
                if host is None:
                    break
                host.inflight += 1
                item = queue.popleft()
                inflight[executor.submit(work, host, item)] = ("work", host, item)
            working = any(kind == "work" for kind, _, _ in inflight.values())
            if not working and (not going or not queue):
                return
            if not inflight and not pool.any_up():
                untried = [h for h in pool.hosts if h.retired is None and not h.probed]
                if not untried:
                    raise AllHostsDown(f"every Ollama host of the run is down:\n{pool.describe_down()}")
                for host in untried:  # no host is left: probe each once more before giving up
                    host.retry_at = now
                continue
            finished, _ = wait(list(inflight), timeout=pool.next_due(now) if pool.next_due(now) is not None
                               else None, return_when=FIRST_COMPLETED)
            for future in finished:
                kind, host, item = inflight.pop(future)
                now = time.monotonic()
                if kind == "probe":
                    host.probing = False
                    error = future.exception()
                    if error is None:
                        pool.mark_up(host, future.result())
                        log(f"host {host.url} answers again; sending it requests")
                    elif isinstance(error, HostMismatch):
                        host.retired = str(error)
                        log(f"host {host.url} is left out for the rest of the run: {error}")
                    else:
                        pool.mark_down(host, _one_line(error), now, probe=True)
                    continue
                host.inflight -= 1
                error = future.exception()
                if error is not None and is_host_lost(error):
                    queue.appendleft(item)
                    if pool.mark_down(host, _one_line(error), now):
                        log(f"host {host.url} is down ({_one_line(error)}); its captions go to the other hosts, "
                            f"and it is tried again in {host.retry_at - now:.0f} s")
                    continue
                if error is None:
                    host.answered += 1
                going = on_done(host, item, future) and going
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

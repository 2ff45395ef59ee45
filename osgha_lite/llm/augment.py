"""LLM caption augmentation through Ollama: K descriptions per caption, cached.

OS-HGAdapter widens what a caption can mean by asking an LLM for extra
descriptions of the same picture; the paper gives neither its prompt nor its
model, so everything below is our design:

* **Prompt** (``osgha_lite/llm/prompts/descriptions_v1.txt``): a system line, one
  worked example on a neutral caption ("A red car is parked next to a
  tree."), then the caption; it asks for exactly ``k`` one-sentence
  descriptions that use synonyms and other wording and may add plausible
  visual details without contradicting the caption. Nothing in it is
  specific to a dataset's domain. Its version string goes into every cache
  key and every record. The caption goes in as data
  (:func:`osgha_lite.llm.reply_check.caption_as_data`): chat control tokens and
  line breaks are removed, so it stays inside its quoted line of the user
  turn; ordinary captions are unchanged.
* **Parsing** (:func:`parse_descriptions`): numbered lists (``1.``, ``2)``,
  ``(3)``), bullets (``-``, ``*``, ``•``) or, when the reply has no list
  marker at all, one item per non-empty line. Text before the list (``Here
  are three descriptions:``) is ignored.
* **Validation** (:func:`check_description`): an item is rejected when it is
  empty, shorter than ``min_words`` or longer than ``max_words`` words, equal
  to the caption after normalisation (lower case, letters and digits only),
  a duplicate of an item already accepted, chatter (``Sure, here are``, ``As
  an AI``, ``I cannot``...), talk about the task (``caption``,
  ``description``, ``rephrase``...), shares fewer than ``min_shared_words``
  content words with the caption (crude stemming; a cheap off-topic check),
  or is the last item of a reply cut off by ``num_predict``. New replies are
  also screened (:func:`osgha_lite.llm.reply_check.screen_item`) for talk about
  instructions, echoes of the prompt or its worked example, and offensive
  words; that screen is not part of the cache key.
* **Retries**: valid items accumulate over up to ``max_attempts`` requests,
  each with a different seed. A caption still short of ``k`` valid items is
  written as a ``failed`` record holding every rejection reason; it is
  counted and reported, never passed on as a success. So is a caption that
  fails for a reason of its own: longer than ``max_caption_chars``, refused
  by the server (HTTP 400, e.g. a prompt longer than ``num_ctx``) or
  answered with a reply the client cannot read; the run goes on, and the
  failure is printed with the caption's key and counted in the summary.
* **Client**: the official ``ollama`` package against ``OLLAMA_HOST``
  (default ``127.0.0.1:11434``), or against several servers at once
  (:mod:`osgha_lite.llm.hosts`: a host list, ``concurrency`` requests in
  flight per host, failover to the others when one goes down); a
  timeout per request, retries with exponential backoff on transport errors
  and 5xx answers. An unreachable server or a missing model stops the run
  before the cache is touched, with a message saying what to run.

Cache
-----
``data/augmentations/<dataset>.jsonl`` in the repository (not in the data
root, wherever ``OSGHA_DATA_ROOT`` points) is append-only; each line is one
finished caption, written with a single ``write`` + ``flush`` + ``fsync``,
so killing the process at any moment loses at most the requests in flight
(reading, writing, locking: :mod:`osgha_lite.llm.cache`). Before any LLM
request a run checks that the cache's folder can be written and its disk
has room, and takes the cache's lock (``<dataset>.lock``), so a second run
on the same cache stops at once with the PID of the first.
The key of a caption is ``sha256`` of the canonical JSON of (model name,
model digest from ``/api/show``, template version and file hash, ``k``,
generation options, base seed, attempt limit, validation rules, caption
text): a rerun skips every
key already present, and changing any of these makes new keys instead of
mixing results. A partial last line (a write cut by a crash) is reported
and ignored by readers; the next run drops it before appending. Next to the
cache, ``<dataset>.meta.json`` summarises it (configurations, counts,
failure reasons, runs).

A finished cache may be stored compressed (:func:`compress_cache`):
``<dataset>.jsonl.gz`` holds the records, deterministic gzip bytes, and the
``.jsonl`` beside it, if any, holds records appended since. Readers take
both (the ``.jsonl`` wins for a key in both) and every path argument names
the ``.jsonl`` form. A compressed file is complete by construction, so an
unfinished or invalid line in it is an error, not a warning.

Later stages only read the cache, through :func:`load_augmentations` (no LLM
needed).

Command line::

    python -m osgha_lite augment --dataset flickr8k --split test [--limit N] [--per-image 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from osgha_lite.llm.cache import (  # noqa: F401 - the cache API is also reachable as osgha_lite.llm.augment.*
    MIN_FREE_BYTES,
    AugmentationCache,
    CacheAccessError,
    CacheDamaged,
    CacheLock,
    CacheReport,
    cache_exists,
    cache_paths,
    check_free_space,
    check_writable,
    compress_cache,
    load_augmentations,
    lock_path,
    read_records,
)
from osgha_lite.llm.hosts import (
    AllHostsDown,
    Host,
    HostMismatch,
    HostPool,
    HostSpecError,
    check_same_model,
    open_pool,
    parse_hosts,
    spread,
)

from osgha_lite.llm.client import (  # noqa: F401 - also reachable as osgha_lite.llm.augment.*
    DEFAULT_HOST,
    DEFAULT_MODEL,
    START_SERVER_HELP,
    AugmentConfig,
    ModelIdentity,
    ModelNotFound,
    OllamaUnavailable,
    RequestRefused,
    attempt_seed,
    augment_caption,
    cache_key,
    connect,
    generation_settings,
    make_client,
)
from osgha_lite.llm.prompt import (  # noqa: F401 - also reachable as osgha_lite.llm.augment.*
    DEFAULT_TEMPLATE,
    IMAGE_GROUP_SEPARATOR,
    PROMPTS_DIR,
    AugmentError,
    PromptTemplate,
    ValidationRules,
    check_description,
    content_words,
    image_caption_groups,
    join_image_captions,
    load_template,
    normalize_text,
    parse_descriptions,
    tidy_caption,
)
from osgha_lite.paths import AUGMENTATIONS_DIR as DEFAULT_CACHE_DIR


# --------------------------------------------------------------------------- runner
@dataclass
class RunSummary:
    requested: int = 0
    """Unique captions asked for."""
    cached: int = 0
    """Already in the cache (skipped)."""
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    eval_tokens: int = 0
    repaired_bytes: int = 0
    status: str = "completed"
    failure_reasons: dict[str, int] = field(default_factory=dict)
    per_host: dict[str, int] = field(default_factory=dict)
    """Captions each host answered (``http://host:port`` -> count)."""

    @property
    def captions_per_second(self) -> float:
        done = self.ok + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    def merged(self, later: "RunSummary", new_requested: int) -> "RunSummary":
        """This run followed by ``later``, which asked for ``new_requested`` captions not asked before."""
        reasons = Counter(self.failure_reasons)
        reasons.update(later.failure_reasons)
        return RunSummary(
            requested=self.requested + new_requested, cached=self.cached, ok=self.ok + later.ok,
            failed=self.failed + later.failed, seconds=self.seconds + later.seconds,
            eval_tokens=self.eval_tokens + later.eval_tokens,
            repaired_bytes=self.repaired_bytes + later.repaired_bytes, status=later.status,
            failure_reasons=dict(reasons),
            per_host={h: self.per_host.get(h, 0) + later.per_host.get(h, 0)
                      for h in dict.fromkeys([*self.per_host, *later.per_host])},
        )


PROGRESS_LINE_SECONDS = 60.0
"""Without a terminal (e.g. output to a log file), one progress line this often."""


def _progress_line(summary: RunSummary, total: int, elapsed: float) -> str:
    done = summary.ok + summary.failed
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    eta_text = f"{int(eta // 3600)}h{int(eta % 3600 // 60):02d}m" if eta == eta else "?"
    return (
        f"{datetime.now().strftime('%H:%M:%S')} augment: {done}/{total} (ok {summary.ok}, failed {summary.failed}), "
        f"{rate:.2f} captions/s, {summary.eval_tokens / elapsed if elapsed > 0 else 0:.0f} tokens/s, ETA {eta_text}"
    )


def augment_captions(
    captions: Iterable[str],
    cache_path: str | os.PathLike,
    config: AugmentConfig | None = None,
    *,
    retry_failed: bool = False,
    progress: bool = True,
    run_info: dict[str, Any] | None = None,
) -> RunSummary:
    """Augment every caption not yet in the cache at ``cache_path``; append the results.

    Unique captions only (identical texts share one record). Before any LLM work:
    raises :class:`CacheAccessError` when the cache's folder cannot be written, its
    disk is short of space or another process holds the cache's lock,
    :class:`CacheDamaged` when its compressed part is not a complete, valid cache,
    and :class:`OllamaUnavailable` / :class:`ModelNotFound` (before changing the
    cache) when the server or model is missing. A caption that fails for a reason of its
    own is a ``failed`` record (:func:`augment_caption`); :class:`AugmentError` is
    raised when the server is lost mid-run or the cache cannot be appended to
    (every finished caption is already on disk).
    """
    config = config or AugmentConfig()
    if config.max_attempts < 1 or config.k < 1:
        raise AugmentError(f"k and max_attempts must be at least 1 (got k={config.k}, max_attempts={config.max_attempts})")
    template = load_template(config.template)
    template.messages("x", config.k)  # fails early when the template cannot serve this k
    check_writable(cache_path)
    try:
        specs = parse_hosts(config.host, config.concurrency, default=DEFAULT_HOST)
    except HostSpecError as exc:
        raise AugmentError(str(exc)) from None
    with CacheLock(cache_path) as lock:  # one writer per cache, from before reading it until the end
        cache = AugmentationCache(cache_path, lock=lock)  # a damaged cache is reported before any request
        pool, identity = connect_hosts(specs, config)  # before any change to the cache
        return _augment_locked(captions, cache, pool, identity, template, config, retry_failed=retry_failed,
                               progress=progress, run_info=run_info)


def connect_hosts(specs, config: AugmentConfig) -> tuple[HostPool, ModelIdentity]:
    """Connect to every host of the run (:func:`osgha_lite.llm.hosts.open_pool`); the model's identity.

    A host that does not answer is left for later (a warning); none answering raises
    :class:`OllamaUnavailable`, a host serving the model differently :class:`AugmentError`.
    """
    try:
        return open_pool(specs, lambda spec: connect(replace(config, host=spec.url)),
                         lambda exc: isinstance(exc, OllamaUnavailable), model=config.model, backoff=config.backoff,
                         log=lambda line: print(line, file=sys.stderr, flush=True))
    except AllHostsDown as exc:
        raise OllamaUnavailable(f"{exc}\n{START_SERVER_HELP}") from None
    except HostMismatch as exc:
        raise AugmentError(str(exc)) from None


def _augment_locked(captions, cache: AugmentationCache, pool: HostPool, identity: ModelIdentity, template: PromptTemplate,
                    config: AugmentConfig, *, retry_failed: bool, progress: bool,
                    run_info: dict[str, Any] | None) -> RunSummary:
    from tqdm.auto import tqdm

    summary = RunSummary()
    for problem in cache.report.problems():
        print(f"warning: {problem}", file=sys.stderr)
    summary.repaired_bytes = cache.repair()
    unique = list(dict.fromkeys(captions))
    summary.requested = len(unique)
    skip = cache.done_keys(include_failed=not retry_failed)
    todo = []
    for caption in unique:
        key = cache_key(caption, identity, template, config)
        if key in skip:
            summary.cached += 1
        else:
            todo.append((caption, key))
    check_free_space(cache.path, len(todo), config.min_free_bytes)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    reasons: Counter = Counter()
    fatal: BaseException | None = None
    interactive = progress and sys.stderr.isatty()
    bar = tqdm(total=len(todo), desc=f"augment ({identity.name})", unit="caption", disable=not interactive)
    last_line = time.perf_counter()
    configs = {host.url: replace(config, host=host.url, concurrency=host.spec.concurrency) for host in pool.hosts}

    def work(host: Host, item: tuple[str, str]) -> dict[str, Any]:
        return augment_caption(host.client, item[0], item[1], configs[host.url], template, identity)

    def probe(host: Host):
        client, found = connect(configs[host.url])
        check_same_model(identity.host, (identity.digest, identity.served), host.url, (found.digest, found.served),
                         identity.name)
        return client

    def on_done(host: Host, item: tuple[str, str], future: Future) -> bool:
        nonlocal fatal, last_line
        try:
            record = future.result()
        except AugmentError as exc:
            fatal = fatal or exc
            return False
        try:
            cache.append(record)
        except OSError as exc:
            fatal = fatal or AugmentError(
                f"cannot append to {cache.path}: {exc.strerror or exc}; free space on its disk or make it "
                "writable, then run again (finished captions are kept and skipped)")
            return False
        summary.eval_tokens += record["eval_tokens"]
        if record["status"] == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            reasons[record["reason"]] += 1
            shown = record["caption"] if len(record["caption"]) <= 80 else record["caption"][:77] + "..."
            print(f"failed: caption {record['key'][:12]} {shown!r}: {record['reason']}", file=sys.stderr, flush=True)
        bar.update(1)
        bar.set_postfix(ok=summary.ok, failed=summary.failed, refresh=False)
        if progress and not interactive and time.perf_counter() - last_line >= PROGRESS_LINE_SECONDS:
            last_line = time.perf_counter()
            print(_progress_line(summary, len(todo), last_line - started), file=sys.stderr, flush=True)
        return fatal is None

    try:
        spread(todo, pool, work=work, probe=probe, on_done=on_done,
               is_host_lost=lambda exc: isinstance(exc, (OllamaUnavailable, ModelNotFound)),
               log=lambda line: print(line, file=sys.stderr, flush=True))
    except AllHostsDown as exc:
        fatal = fatal or AugmentError(str(exc))
    except KeyboardInterrupt:
        summary.status = "interrupted"
        raise
    except BaseException:
        summary.status = "crashed"
        raise
    finally:
        bar.close()
        summary.per_host = pool.answered()
        summary.seconds = time.perf_counter() - started
        summary.failure_reasons = dict(reasons.most_common())
        if fatal is not None:
            summary.status = "aborted"
        run = {
            **(run_info or {}),
            "started_at": started_at,
            "seconds": round(summary.seconds, 1),
            "requested": summary.requested,
            "cached": summary.cached,
            "new_ok": summary.ok,
            "new_failed": summary.failed,
            "eval_tokens": summary.eval_tokens,
            "captions_per_second": round(summary.captions_per_second, 3),
            "hosts": summary.per_host,
            "status": summary.status,
        }
        settings = generation_settings(identity, template, config)
        if todo or summary.repaired_bytes or not cache.meta_path.exists():
            try:
                cache.write_meta(run, settings)
            except OSError as exc:  # the records are on disk; the summary can be rewritten by the next run
                print(f"warning: cannot write {cache.meta_path}: {exc.strerror or exc}", file=sys.stderr)
    if fatal is not None:
        raise AugmentError(f"{fatal}\n(stopped; {summary.ok + summary.failed} captions were saved to {cache.path})")
    return summary


# --------------------------------------------------------------------------- command line
def _load_split(dataset: str, split: str, profile: str = "lite"):
    """A split of a dataset, images without file or caption skipped; ``adapt`` by ``profile``'s protocol."""
    from osgha_lite.data import PROTOCOL_SPLITS, load_dataset, load_profile_split

    if split in PROTOCOL_SPLITS:
        from osgha_lite.profiles import load_profile

        settings = load_profile(profile)
        if settings["dataset"] != dataset:
            raise AugmentError(f"--split {split}: profile {settings['name']!r} is about {settings['dataset']}, "
                               f"not {dataset}; pass --profile")
        try:
            return load_profile_split({**settings, "data": {**settings.get("data", {}), "skip_missing": True}}, split)
        except ValueError as exc:  # a protocol that does not fit the dataset
            raise AugmentError(f"--split {split} with profile {settings['name']!r}: {exc}") from None
    return load_dataset(dataset, split, skip_missing=True)


def select_captions(dataset: str, split: str, per_image: int | None = None, limit: int | None = None,
                    failed: set[str] = frozenset(), profile: str = "lite") -> list[str]:
    """Captions of a split in dataset order: the first ``per_image`` of each image
    (all when ``None``), then the first ``limit`` of those. A caption in ``failed``
    (recorded as failed) does not count towards ``per_image``: the image's next
    caption is taken as well. Images listed by the split file but absent from the
    data (no file or no caption) are skipped."""
    data = _load_split(dataset, split, profile)
    chosen: list[str] = []
    counted: Counter = Counter()
    for caption, image in zip(data.captions, data.text_to_image.tolist()):
        if per_image is not None and counted[image] >= per_image:
            continue
        counted[image] += caption not in failed
        chosen.append(caption)
    return chosen[:limit] if limit is not None else chosen


def select_image_groups(dataset: str, split: str, n: int, limit: int | None = None,
                        profile: str = "lite") -> list[str]:
    """:func:`image_caption_groups` of a split by name, the first ``limit`` of them."""
    groups = image_caption_groups(_load_split(dataset, split, profile), n)
    return groups[:limit] if limit is not None else groups


def select_image_files(dataset: str, split: str, limit: int | None = None, profile: str = "lite") -> list[str]:
    """The images of a split as paths relative to the data root (the inputs of a vision template)."""
    from osgha_lite.data import data_root

    root = data_root()
    paths = [Path(p).resolve().relative_to(root.resolve()).as_posix()
             for p in _load_split(dataset, split, profile).image_paths]
    return paths[:limit] if limit is not None else paths


def failed_captions(cache_path: str | os.PathLike, config: AugmentConfig) -> set[str]:
    """Captions the cache records as failed for ``config``'s model and k (empty without a cache)."""
    records, _ = read_records(cache_path)
    return {r["caption"] for r in records
            if r.get("status") != "ok" and r.get("model") == config.model and r.get("k") == config.k}


def default_cache_path(dataset: str) -> Path:
    """``data/augmentations/<dataset>.jsonl`` of the repository, whatever ``OSGHA_DATA_ROOT`` says."""
    return DEFAULT_CACHE_DIR / f"{dataset}.jsonl"


def check_out_path(cache_path: str | os.PathLike) -> None:
    """Refuse a cache inside a dataset's folder of the data root (``<root>/flickr8k/...``):
    the code never writes into the datasets. The repository's ``data/augmentations/`` is
    not a dataset folder, also when the data root is the repository's ``data/``."""
    from osgha_lite.data import DATASETS, data_root

    target = Path(cache_path).expanduser().resolve()
    root = data_root().resolve()
    for spec in DATASETS.values():
        folder, _ = spec.resolve(root)
        if target.is_relative_to(folder):
            raise CacheAccessError(
                f"--out {cache_path} is inside the dataset folder {folder} of the data root; the code never "
                f"writes into a dataset. Choose a path outside it (the default is data/augmentations/<dataset>.jsonl "
                f"of the repository)"
            )


def _parser() -> argparse.ArgumentParser:
    d = AugmentConfig()
    parser = argparse.ArgumentParser(
        prog="python -m osgha_lite augment", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples (an Ollama server, or the stand-in server of tools/ollama_standin/, must be running):
  python -m osgha_lite augment --dataset flickr8k --split test --limit 20
  python -m osgha_lite augment --dataset flickr8k --split train --per-image 1 --concurrency 32""",
        description="Ask an Ollama model for K descriptions of every caption of a dataset split; "
        "results go to an append-only cache (data/augmentations/<dataset>.jsonl).",
    )
    add = parser.add_argument
    add("--dataset", help="registered dataset name (osgha_lite.data), e.g. flickr8k")
    add("--split", choices=("train", "dev", "test", "adapt"),
        help="split to augment; adapt = the training images the methods train on under --profile's protocol")
    add("--profile", default="lite", help="profile whose protocol defines --split adapt (default: lite)")
    add("--compress", action="store_true",
        help="merge the cache (--out, or the dataset's default) into <cache>.jsonl.gz and exit; no LLM needed")
    add("--per-image", type=int, default=None,
        help="only the first N captions of each image; when one fails, the image's next caption is "
             "tried too (default: all)")
    add("--limit", type=int, default=None, help="only the first N selected captions (default: all)")
    add("--join-per-image", type=int, default=None, metavar="N",
        help="one request per image whose input is its first N captions joined with ' | ' "
             "(for per-image templates such as perspectives_v1); excludes --per-image")
    add("--vision", action="store_true",
        help="one request per image with the image attached (Ollama's `images` field) for a vision model; "
             "needs a vision template such as perspectives_vlm_v1 and a vision model (e.g. llava)")
    add("--model", default=d.model, help=f"Ollama model name (default: {d.model})")
    add("--host", action="append", default=None, metavar="URL",
        help=f"Ollama server; repeat it, or give a comma-separated list, to spread the work over several "
             f"(host=URL,concurrency=N gives one its own requests in flight). Default: $OLLAMA_HOST (same forms), "
             f"else {DEFAULT_HOST}")
    add("--k", type=int, default=d.k, help=f"descriptions per caption (default: {d.k})")
    add("--template", default=d.template, help=f"prompt template name or path (default: {d.template})")
    add("--out", default=None, help="cache file (default: data/augmentations/<dataset>.jsonl)")
    add("--concurrency", type=int, default=d.concurrency,
        help=f"requests in flight per host (default: {d.concurrency})")
    add("--timeout", type=float, default=d.timeout, help=f"seconds to wait for one reply (default: {d.timeout:.0f})")
    add("--max-attempts", type=int, default=d.max_attempts, help=f"replies per caption at most (default: {d.max_attempts})")
    add("--temperature", type=float, default=d.temperature, help=f"(default: {d.temperature})")
    add("--num-predict", type=int, default=None, help="token budget of one reply (default: 40*k+40)")
    add("--seed", type=int, default=d.seed, help=f"base seed (default: {d.seed})")
    add("--min-words", type=int, default=d.rules.min_words, help=f"(default: {d.rules.min_words})")
    add("--max-words", type=int, default=d.rules.max_words, help=f"(default: {d.rules.max_words})")
    add("--min-shared-words", type=int, default=d.rules.min_shared_words,
        help=f"content words a description must share with its caption, 0 = no check (default: {d.rules.min_shared_words})")
    add("--max-caption-chars", type=int, default=d.max_caption_chars,
        help=f"a longer caption is recorded as failed without a request (default: {d.max_caption_chars})")
    add("--retry-failed", action="store_true", help="ask again for captions recorded as failed")
    add("--no-progress", action="store_true", help="no progress bar or progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = AugmentConfig(
        model=args.model,
        host=args.host,
        k=args.k,
        template=args.template,
        temperature=args.temperature,
        num_predict=args.num_predict,
        seed=args.seed,
        max_attempts=args.max_attempts,
        rules=ValidationRules(args.min_words, args.max_words, args.min_shared_words),
        concurrency=args.concurrency,
        timeout=args.timeout,
        max_caption_chars=args.max_caption_chars,
    )
    if args.dataset is None and not (args.compress and args.out):
        print("error: --dataset is required (unless --compress --out CACHE)", file=sys.stderr)
        return 1
    cache_path = Path(args.out) if args.out else default_cache_path(args.dataset)
    try:
        check_out_path(cache_path)
    except CacheAccessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    if args.compress:
        try:
            packed = compress_cache(cache_path)
        except CacheDamaged as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (ValueError, CacheAccessError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{packed} ({packed.stat().st_size:,} bytes)")
        return 0
    if args.split is None:
        print("error: --split is required (unless --compress)", file=sys.stderr)
        return 1
    try:
        hosts = parse_hosts(config.host, config.concurrency, default=DEFAULT_HOST)
    except HostSpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        from osgha_lite.data import DataError

        run_info = {"dataset": args.dataset, "split": args.split, "per_image": args.per_image, "limit": args.limit}
        if args.vision and not load_template(args.template).vision:
            print(f"error: --vision needs a template that asks about an image ({{image}}), such as "
                  f"perspectives_vlm_v1; {args.template} does not", file=sys.stderr)
            return 1
        if args.join_per_image is not None:
            if args.per_image is not None:
                print("error: --join-per-image and --per-image exclude each other", file=sys.stderr)
                return 1
            run_info["join_per_image"] = args.join_per_image
        tried: set[str] = set()
        summary: RunSummary | None = None
        while True:  # with --per-image, captions that failed are replaced by the image's next ones
            failed = failed_captions(cache_path, config) if args.per_image and not args.retry_failed else set()
            try:
                if args.vision:
                    captions = select_image_files(args.dataset, args.split, args.limit, args.profile)
                elif args.join_per_image is not None:
                    captions = select_image_groups(args.dataset, args.split, args.join_per_image, args.limit,
                                                   args.profile)
                else:
                    captions = select_captions(args.dataset, args.split, args.per_image, args.limit, failed,
                                               args.profile)
            except DataError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            if tried and set(captions) <= tried:
                break
            pass_summary = augment_captions(
                captions, cache_path, config, retry_failed=args.retry_failed,
                progress=not args.no_progress, run_info=run_info,
            )
            summary = pass_summary if summary is None else summary.merged(pass_summary, len(set(captions) - tried))
            tried |= set(captions)
            if not args.per_image or args.retry_failed:
                break
    except (OllamaUnavailable, ModelNotFound) as exc:
        print(f"error: {exc}\nThe cache {cache_path} was not changed.", file=sys.stderr)
        return 2
    except CacheDamaged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CacheAccessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except AugmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished captions are saved in {cache_path}", file=sys.stderr)
        return 130
    done = summary.ok + summary.failed
    print(
        f"{args.dataset}/{args.split}: {summary.requested} unique captions, {summary.cached} already cached, "
        f"{summary.ok} augmented, {summary.failed} failed "
        f"({summary.seconds:.0f} s, {summary.captions_per_second:.2f} captions/s, "
        f"{summary.eval_tokens / summary.seconds if summary.seconds and done else 0:.0f} tokens/s) -> {cache_path}"
    )
    if len(hosts) > 1:
        print("answered per host: " + ", ".join(f"{url} {count}" for url, count in summary.per_host.items()))
    if summary.repaired_bytes:
        print(f"repaired: dropped an unfinished last line ({summary.repaired_bytes} bytes) before appending")
    for reason, count in summary.failure_reasons.items():
        print(f"  failed: {count} x {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

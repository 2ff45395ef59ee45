"""Throughput of LLM caption augmentation, and what a full dataset would cost.

Run with ``python benchmarks/bench_augment.py`` (options: ``--help``). It is a
measurement, not a test. Without ``--host`` it starts the stand-in Ollama
server (real SmolLM2-135M GGUF) on a free port; with ``--host`` it measures
whatever Ollama server answers there (e.g. a real ``ollama serve``).

For each concurrency level it augments fresh Flickr8k dev captions (each level
its own captions and a temporary cache) and prints captions/s and generated
tokens/s (``eval_count`` summed over replies, retries included, per wall
second). Then it measures the cost of a fully cached rerun and of reading a
40,455-record cache with ``load_augmentations``, and extrapolates the time to
augment Flickr8k (40,455 captions), Flickr30K (155,070) and COCO (616,767) at
the best measured rate.

``--compare-hosts`` measures scale-out instead: two stand-in servers, each
pinned to its own core (``taskset -c``, one torch thread each), augment the
same Flickr8k dev captions first through one host, then through both
(``--concurrency`` requests in flight per host, a fresh cache for each run),
and the captions/s and tokens/s of the two runs are printed side by side with
their ratio, the captions each host answered, and how many records the two
runs wrote identically.

``--startup`` measures how long a stand-in server takes to start (launch to
its ``listening`` line) with ``--model``'s tokenizer and config read from the
GGUF, as every start did before they were stored (an empty store, which the
start then fills), against a start that finds them stored
(``tools/ollama_standin/gguf_parts.py``), alternating the two ``--rounds``
times; each start is its own process with its own temporary
``$OSGHA_CACHE_DIR``.

``--compare-engines`` measures the stand-in's two engines against llama.cpp
itself on the same GGUF, for SmolLM2-135M and Qwen2.5-Coder-0.5B, in one run:
the stand-in server with the transformers engine, the stand-in server with the
llama.cpp engine (``--engine llama.cpp``; requests through HTTP and the
``ollama`` client, the way ``osgha_lite.llm.augment`` sends them), and direct
llama.cpp (``llama_cpp.Llama.create_completion`` in this process, no server).
llama-cpp-python is optional (``pip install -e '.[llamacpp]'``); without it
the two llama.cpp rows are skipped with a message. All get the augmentation
prompt of the same ``--captions`` Flickr8k dev captions (rendered once with the
GGUF's chat template, so every engine gets the same token ids), the augment
config's sampling options, seeds and token budget, and ``--threads`` threads
(default ``$OSGHA_THREADS``, else 2). The servers run with 1 and 8 requests in
flight; direct llama.cpp decodes one sequence at a time, so its sequential run
is the reference for both levels. Per run: generated tokens/s (output tokens
over wall seconds) and prompt tokens/s (prompt tokens over the seconds spent
evaluating prompts; every engine reuses a cached common prompt prefix, and
requests the transformers engine admitted together share one prefill, counted
once), the ratios to direct llama.cpp, and how many replies of the llama.cpp
engine are identical to direct llama.cpp's. As the load of a shared machine
drifts, direct llama.cpp and the llama.cpp engine's server take turns:
``--rounds`` (default 2) rounds of [direct, server at 1, server at 8], then
one more direct run; each row pools its runs (tokens summed over seconds
summed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osgha_lite.llm.augment import AugmentConfig, augment_captions, load_augmentations, select_captions  # noqa: E402
from tools.ollama_standin.launcher import REPO_ROOT, StandInProcess  # noqa: E402

FULL_SIZES = {"Flickr8k": 40_455, "Flickr30K": 155_070, "COCO": 616_767}


def _smollm2_modelfile() -> Path:
    """The project's SmolLM2 Modelfile copied into a temporary folder beside a link to the packaged GGUF."""
    from tools.ollama_standin.gguf_path import link_gguf

    folder = Path(tempfile.mkdtemp(prefix="bench-modelfile-"))
    (folder / "Modelfile.smollm2").write_text((REPO_ROOT / "data/ollama/Modelfile.smollm2").read_text())
    link_gguf(folder)
    return folder / "Modelfile.smollm2"


def _pinned_server(model: str, modelfile: Path, core: int, max_batch: int, dtype: str) -> StandInProcess:
    """A stand-in server on one core (``taskset -c core``) with one torch thread."""
    server = StandInProcess({model: modelfile}, max_batch=max_batch, dtype=dtype, threads=1)
    server.command = ["taskset", "-c", str(core), *server.command]
    return server


def compare_hosts(args, captions: list[str], modelfile: Path) -> dict:
    """One host, then two, on the same captions; returns the figures."""
    import httpx

    batch = captions[: args.captions]
    cores = [int(c) for c in args.cores.split(",")]
    if len(cores) != 2:
        raise SystemExit("--cores takes two core numbers, e.g. 0,1")
    servers = [_pinned_server(args.model, modelfile, core, args.concurrency, args.dtype) for core in cores]
    results: dict = {"mode": "compare-hosts", "captions": len(batch), "concurrency_per_host": args.concurrency,
                     "cores": cores, "dtype": args.dtype, "runs": [], "loadavg_before": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="bench-hosts-"))
    try:
        hosts = [server.start() for server in servers]
        for core, host, server in zip(cores, hosts, servers):
            print(f"stand-in server on {host}, core {core}, 1 thread (log {server.log_path})")
        for host in hosts:  # warm up each server outside the timed runs
            augment_captions(captions[-1:], work / f"warmup-{host.rsplit(':', 1)[1]}.jsonl",
                             AugmentConfig(host=host, model=args.model, concurrency=1, timeout=900), progress=False)
        for n_hosts in (1, 2):
            config = AugmentConfig(host=hosts[:n_hosts], model=args.model, concurrency=args.concurrency, timeout=900)
            path = work / f"hosts{n_hosts}.jsonl"
            summary = augment_captions(batch, path, config, progress=False)
            results["runs"].append({
                "hosts": n_hosts,
                "seconds": round(summary.seconds, 2),
                "captions_per_second": round(summary.captions_per_second, 3),
                "tokens_per_second": round(summary.eval_tokens / summary.seconds, 1),
                "eval_tokens": summary.eval_tokens,
                "failed": summary.failed,
                "per_host": summary.per_host,
            })
        one, two = results["runs"]
        records = [{r["key"]: r for r in map(json.loads, (work / f"hosts{n}.jsonl").read_text().splitlines())}
                   for n in (1, 2)]
        results["identical_records"] = sum(records[0][key] == records[1].get(key) for key in records[0])
        results["captions_ratio"] = round(two["captions_per_second"] / one["captions_per_second"], 2)
        results["tokens_ratio"] = round(two["tokens_per_second"] / one["tokens_per_second"], 2)
        results["server_stats"] = [httpx.get(f"http://{host}/standin/stats").json() for host in hosts]
    finally:
        for server in servers:
            server.stop()
    results["loadavg_after"] = os.getloadavg()
    print(f"{len(batch)} Flickr8k dev captions, {args.concurrency} requests in flight per host, dtype {args.dtype} "
          "(auto: bfloat16 where the CPU has native bf16; the server logs name it)")
    print(f"{'':>14} {'1 host':>10} {'2 hosts':>10} {'ratio':>6}")
    print(f"{'seconds':>14} {one['seconds']:>10.1f} {two['seconds']:>10.1f}")
    print(f"{'captions/s':>14} {one['captions_per_second']:>10.3f} {two['captions_per_second']:>10.3f} "
          f"{results['captions_ratio']:>6.2f}")
    print(f"{'tokens/s':>14} {one['tokens_per_second']:>10.1f} {two['tokens_per_second']:>10.1f} "
          f"{results['tokens_ratio']:>6.2f}")
    print(f"{'failed':>14} {one['failed']:>10} {two['failed']:>10}")
    print("captions per host, 2 hosts: " + ", ".join(f"{h} {n}" for h, n in two["per_host"].items()))
    print(f"records identical between the two runs: {results['identical_records']} of {len(batch)} "
          "(batched decoding can flip a near tie)")
    per_server = one["captions_per_second"]
    results["estimates"] = {}
    print(f"arithmetic from the measured one-server rate ({per_server:.3f} captions/s per server):")
    for name, size in {"Flickr30K": 158_915, "COCO": 616_767}.items():
        results["estimates"][name] = {}
        cells = []
        for n in (1, 4, 16):
            seconds = size / (per_server * n)
            results["estimates"][name][n] = round(seconds / 3600, 1)
            cells.append(f"{n} server{'s' if n > 1 else ''}: {_hours(seconds)}")
        print(f"  {name:<10} {size:>8,} captions  " + ", ".join(cells))
    print(f"load average before {results['loadavg_before'][0]:.1f}, after {results['loadavg_after'][0]:.1f} "
          f"({os.cpu_count()} cores, shared)")
    return results


ENGINE_MODELS = {"smollm2-135m": "Modelfile.smollm2", "qwen2.5-coder-0.5b": "Modelfile.qwen2.5-coder-0.5b"}


def _model_dir(model: str) -> Path | None:
    """A folder holding the Modelfile of ``model`` next to its GGUF, or ``None`` (with a message) if the GGUF is missing."""
    from tools.ollama_standin.gguf_path import link_gguf
    from tools.ollama_standin.modelfile import parse_modelfile

    source = REPO_ROOT / "data/ollama" / ENGINE_MODELS[model]
    if model == "smollm2-135m":
        folder = Path(tempfile.mkdtemp(prefix="bench-modelfile-"))
        (folder / source.name).write_text(source.read_text())
        link_gguf(folder)
    else:
        folder = source.parent
    gguf = parse_modelfile(folder / source.name).gguf
    if not gguf.is_file():
        print(f"skipping {model}: {gguf} is missing (python -m tools.ollama_standin.qwen_gguf --install "
              "--out data/ollama)")
        return None
    return folder


def _standin_run(host: str, model: str, messages: list, options: list[dict], in_flight: int) -> dict:
    """All requests through the server's /api/chat with ``in_flight`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    import ollama

    client = ollama.Client(host=host, timeout=1800)

    def one(i: int):
        return client.chat(model=model, messages=messages[i], options=options[i], stream=False)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        replies = list(pool.map(one, range(len(messages))))
    seconds = time.perf_counter() - started
    prefills = {r.prompt_eval_duration for r in replies}  # rows admitted together report one prefill
    return {"seconds": seconds, "generated": sum(r.eval_count for r in replies),
            "prompt": sum(r.prompt_eval_count for r in replies), "prompt_seconds": sum(prefills) / 1e9,
            "prompt_counts": [r.prompt_eval_count for r in replies], "texts": [r.message.content for r in replies]}


class _DirectLlama:
    """The same prompts through llama.cpp in this process, one after another (``run`` may be called again)."""

    def __init__(self, gguf: Path, prompts: list[list[int]], options: list[dict], threads: int) -> None:
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.prompts, self.options = prompts, options
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                                   n_batch=512, seed=0, verbose=False)
        self._complete(prompts[-1], options[-1])  # warm-up outside the timed runs

    def _complete(self, ids: list[int], opts: dict) -> dict:
        return self.llm.create_completion(
            prompt=ids, max_tokens=opts["num_predict"], temperature=opts["temperature"], top_p=opts["top_p"],
            top_k=opts["top_k"], min_p=0.0, repeat_penalty=opts["repeat_penalty"], seed=opts["seed"],
            stop=opts["stop"])

    def run(self) -> dict:
        """One timed pass; it starts, as the servers' runs do, with the warm-up prompt in the cache."""
        ctx = self.llm._ctx.ctx
        self._complete(self.prompts[-1], self.options[-1])
        self.llama_cpp.llama_perf_context_reset(ctx)
        started = time.perf_counter()
        replies = [self._complete(ids, opts) for ids, opts in zip(self.prompts, self.options)]
        seconds = time.perf_counter() - started
        perf = self.llama_cpp.llama_perf_context(ctx)
        return {"seconds": seconds, "generated": sum(r["usage"]["completion_tokens"] for r in replies),
                "prompt": sum(len(ids) for ids in self.prompts), "prompt_seconds": perf.t_p_eval_ms / 1000.0,
                "prompt_evaluated": int(perf.n_p_eval), "texts": [r["choices"][0]["text"] for r in replies]}

    def close(self) -> None:
        self.llm.close()


def _rates(run: dict) -> dict:
    return {**{k: v for k, v in run.items() if k not in ("prompt_counts", "texts")},
            "seconds": round(run["seconds"], 2), "prompt_seconds": round(run["prompt_seconds"], 3),
            "generated_per_second": round(run["generated"] / run["seconds"], 1),
            "prompt_per_second": round(run["prompt"] / max(run["prompt_seconds"], 1e-9), 1)}


STANDIN_ENGINES = ("transformers", "llama.cpp")


def _record(runs: dict, texts: dict, key: str, run: dict, model: str, label: str) -> None:
    runs.setdefault(key, []).append(run)
    texts.setdefault(key, []).append(run["texts"])
    print(f"{model} {label}: {_rates(run)}", flush=True)


def _pool(items: list[dict]) -> dict:
    """Rates over several runs of the same work: summed tokens over summed seconds."""
    pooled = {key: sum(run[key] for run in items) for key in ("seconds", "generated", "prompt", "prompt_seconds")}
    return {**_rates(pooled), "runs": len(items)}


def compare_engines(args, captions: list[str]) -> dict:
    """Both stand-in engines (1 and 8 in flight) and direct llama.cpp (sequential) per model; returns the figures."""
    from transformers import AutoTokenizer

    from osgha_lite.llm.augment import attempt_seed, load_template
    from tools.ollama_standin.llamacpp_engine import INSTALL, llama_cpp_available
    from tools.ollama_standin.modelfile import parse_modelfile

    threads = args.threads or int(os.environ.get("OSGHA_THREADS", "2"))
    batch = captions[: args.captions]
    config = AugmentConfig()
    template = load_template(config.template)
    messages = [template.messages(c, config.k) for c in batch]
    options = [{**config.options(), "seed": attempt_seed(f"{i:064x}", 0)} for i in range(len(batch))]
    engines = STANDIN_ENGINES
    if not llama_cpp_available():
        engines = ("transformers",)
        print(f"llama-cpp-python is not installed: the llama.cpp engine and direct llama.cpp are skipped "
              f"(optional: {INSTALL})")
    results: dict = {"mode": "compare-engines", "captions": len(batch), "threads": threads, "dtype": args.dtype,
                     "options": config.options(), "models": {}, "loadavg_before": os.getloadavg()}
    for model in [m.strip() for m in args.engine_models.split(",")]:
        folder = _model_dir(model)
        if folder is None:
            continue
        gguf = parse_modelfile(folder / ENGINE_MODELS[model]).gguf
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        prompts = [tokenizer(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False),
                             add_special_tokens=False)["input_ids"] for m in messages]
        row: dict = {}
        texts: dict = {}
        runs: dict = {}  # key -> list of raw runs, pooled by _pool
        direct = _DirectLlama(gguf, prompts, options, threads) if "llama.cpp" in engines else None
        for engine in engines:
            rounds = args.rounds if engine == "llama.cpp" else 1
            server = StandInProcess({model: folder / ENGINE_MODELS[model]}, max_batch=max(ENGINE_LEVELS),
                                    dtype=args.dtype, threads=threads, engine=engine)
            try:
                host = server.start()
                _standin_run(host, model, messages[-1:], options[-1:], 1)  # warm-up
                for round_ in range(rounds):
                    if engine == "llama.cpp":  # direct llama.cpp before every round of the server's runs
                        _record(runs, texts, "direct", direct.run(), model, "llama.cpp direct, sequential")
                    for level in ENGINE_LEVELS:
                        run = _standin_run(host, model, messages, options, level)
                        if run["prompt_counts"] != [len(p) for p in prompts]:
                            raise SystemExit(f"{model}: the server tokenized the prompts differently from the GGUF "
                                             f"tokenizer ({run['prompt_counts']} vs {[len(p) for p in prompts]})")
                        _record(runs, texts, f"{engine}_{level}", run, model,
                                f"stand-in ({engine} engine), {level} in flight")
            finally:
                server.stop()
        if direct is not None:  # ... and once after the last round
            _record(runs, texts, "direct", direct.run(), model, "llama.cpp direct, sequential")
            direct.close()
        for key, items in runs.items():
            row[key] = _pool(items)
        if direct is not None:
            reference = texts["direct"][0]
            row["direct"]["same_text_across_runs"] = all(t == reference for t in texts["direct"])
            for level in ENGINE_LEVELS:
                row[f"llama.cpp_{level}"]["identical_to_direct"] = min(
                    sum(a == b for a, b in zip(t, reference)) for t in texts[f"llama.cpp_{level}"])
        results["models"][model] = row
    results["loadavg_after"] = os.getloadavg()
    print(f"\n{len(batch)} Flickr8k dev captions, augmentation prompt, temperature {config.temperature}, "
          f"num_predict {config.options()['num_predict']}, {threads} threads each, transformers dtype {args.dtype}")
    print(f"{'model':<20} {'engine':<22} {'in flight':>9} {'gen tok/s':>9} {'prompt tok/s':>12} "
          f"{'gen ratio':>9} {'prompt ratio':>12} {'same text':>9}")
    for model, row in results["models"].items():
        ref = row.get("direct")
        for engine in engines:
            for level in ENGINE_LEVELS:
                mine = row[f"{engine}_{level}"]
                cells = f"{'-':>9} {'-':>12}"
                if ref:
                    ratio = {"generated": round(mine["generated_per_second"] / ref["generated_per_second"], 2),
                             "prompt": round(mine["prompt_per_second"] / ref["prompt_per_second"], 2)}
                    row[f"ratio_{engine}_{level}"] = ratio
                    cells = f"{ratio['generated']:>9.2f} {ratio['prompt']:>12.2f}"
                same = f"{mine['identical_to_direct']}/{len(batch)}" if "identical_to_direct" in mine else "-"
                print(f"{model:<20} {'stand-in, ' + engine:<22} {level:>9} {mine['generated_per_second']:>9.1f} "
                      f"{mine['prompt_per_second']:>12.1f} {cells} {same:>9}")
        if ref:
            print(f"{model:<20} {'llama.cpp direct':<22} {'1 (seq.)':>9} {ref['generated_per_second']:>9.1f} "
                  f"{ref['prompt_per_second']:>12.1f} {1.0:>9.2f} {1.0:>12.2f}")
    print(f"ratio = stand-in / direct llama.cpp (its sequential runs are the reference at both levels); llama.cpp "
          f"rows pool {args.rounds} round(s) of the server's runs and {args.rounds + 1} direct runs, alternated; "
          "same text = replies of the llama.cpp engine identical to direct llama.cpp's (fewest over the rounds)")
    print(f"load average before {results['loadavg_before'][0]:.1f}, after {results['loadavg_after'][0]:.1f} "
          f"({os.cpu_count()} cores, shared: run it twice and compare ratios)")
    return results


ENGINE_LEVELS = (1, 8)


def compare_startup(args, modelfile: Path) -> dict:
    """Seconds to start a stand-in server without and with stored GGUF parts, alternating ``--rounds`` times."""
    times: dict[str, list[float]] = {"parts read from the GGUF": [], "parts from the store": []}
    previous = os.environ.get("OSGHA_CACHE_DIR")
    try:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="bench-startup-") as cache:
                os.environ["OSGHA_CACHE_DIR"] = cache  # the server inherits it
                for label in times:  # the first start fills the empty store, the second reads it
                    server = StandInProcess({args.model: modelfile}, max_batch=8, dtype=args.dtype,
                                            threads=args.threads or 1)
                    started = time.perf_counter()
                    server.start()
                    times[label].append(time.perf_counter() - started)
                    server.stop()
    finally:
        if previous is None:
            os.environ.pop("OSGHA_CACHE_DIR", None)
        else:
            os.environ["OSGHA_CACHE_DIR"] = previous
    best = {label: min(values) for label, values in times.items()}
    print(f"{'stand-in start (' + args.model + ')':<40} {'best s':>7}  all runs")
    for label, values in times.items():
        print(f"{label:<40} {best[label]:7.1f}  {', '.join(f'{v:.1f}' for v in values)}")
    ratio = best["parts read from the GGUF"] / best["parts from the store"]
    print(f"{'ratio':<40} {ratio:6.2f}x")
    return {"seconds": times, "best": best, "ratio": ratio, "loadavg": os.getloadavg()}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f} days"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=None, help="benchmark this Ollama server instead of starting the stand-in")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--levels", default="1,8,16,32", help="comma-separated concurrency levels")
    parser.add_argument("--per-level", type=float, default=2.0, help="captions per level = max(6, this x level)")
    parser.add_argument("--max-batch", type=int, default=None, help="stand-in --max-batch (default: the top level)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"), help="stand-in dtype")
    parser.add_argument("--threads", type=int, default=None, help="stand-in torch threads (default 1)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--compare-hosts", action="store_true",
                        help="one host against two, each server pinned to its own core (see the module docstring)")
    parser.add_argument("--captions", type=int, default=32, help="--compare-hosts / --compare-engines: captions per run (default 32)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="--compare-hosts: requests in flight per host (default 8)")
    parser.add_argument("--cores", default="0,1", help="--compare-hosts: the two cores to pin the servers to")
    parser.add_argument("--compare-engines", action="store_true",
                        help="the stand-in's transformers and llama.cpp engines against direct llama.cpp "
                             "(llama-cpp-python) on the same GGUFs (see the module docstring); --captions (default "
                             "32) prompts, --threads (default $OSGHA_THREADS or 2)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="--compare-engines: rounds of the llama.cpp engine's runs, each after a direct "
                             "llama.cpp run; --startup: alternations of the two kinds of start (default 2)")
    parser.add_argument("--startup", action="store_true",
                        help="server start time with the GGUF's tokenizer and config read from the GGUF against "
                             "read from the store (see the module docstring)")
    parser.add_argument("--engine-models", default=",".join(ENGINE_MODELS),
                        help="--compare-engines: comma-separated models (default: both)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    os.environ.setdefault("OSGHA_DATA_ROOT", str(REPO_ROOT.parent / "shared" / "data"))
    captions = list(dict.fromkeys(select_captions("flickr8k", "dev")))
    if args.compare_engines:
        if args.host is not None or args.compare_hosts:
            parser.error("--compare-engines starts its own servers; drop --host and --compare-hosts")
        results = compare_engines(args, captions)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    if args.startup:
        results = compare_startup(args, _smollm2_modelfile())
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    if args.compare_hosts:
        if args.host is not None:
            parser.error("--compare-hosts starts its own two servers; drop --host")
        results = compare_hosts(args, captions, _smollm2_modelfile())
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0

    server = None
    host = args.host
    if host is None:
        server = StandInProcess({args.model: _smollm2_modelfile()}, max_batch=args.max_batch or max(levels),
                                dtype=args.dtype, threads=args.threads)
        started = time.perf_counter()
        host = server.start()
        print(f"stand-in server on {host}: started in {time.perf_counter() - started:.1f} s "
              f"(max batch {args.max_batch or max(levels)}, dtype {args.dtype}, threads {args.threads or 1}, "
              f"log {server.log_path})")
    load_before = os.getloadavg()
    results: dict = {"host": host, "model": args.model, "levels": [], "loadavg_before": load_before}
    work = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    offset = 0
    try:
        print(f"{'concurrency':>11} {'captions':>8} {'seconds':>8} {'captions/s':>10} {'tokens/s':>9} {'failed':>6}")
        for level in levels:
            n = max(6, int(args.per_level * level))
            batch = captions[offset : offset + n]
            offset += n
            config = AugmentConfig(host=host, model=args.model, concurrency=level, timeout=900)
            summary = augment_captions(batch, work / f"level{level}.jsonl", config, progress=False)
            row = {
                "concurrency": level,
                "captions": n,
                "seconds": round(summary.seconds, 2),
                "captions_per_second": round(summary.captions_per_second, 3),
                "tokens_per_second": round(summary.eval_tokens / summary.seconds, 1),
                "failed": summary.failed,
                "attempts_per_caption": None,
            }
            records = [json.loads(line) for line in (work / f"level{level}.jsonl").read_text().splitlines()]
            row["attempts_per_caption"] = round(sum(r["attempts"] for r in records) / len(records), 2)
            results["levels"].append(row)
            print(f"{level:>11} {n:>8} {row['seconds']:>8.1f} {row['captions_per_second']:>10.2f} "
                  f"{row['tokens_per_second']:>9.1f} {summary.failed:>6}", flush=True)

        # a rerun over cached captions: connect + key per caption + skip
        last = levels[-1]
        batch = captions[offset - max(6, int(args.per_level * last)) : offset]
        config = AugmentConfig(host=host, model=args.model, concurrency=last)
        started = time.perf_counter()
        again = augment_captions(batch, work / f"level{last}.jsonl", config, progress=False)
        cached_seconds = time.perf_counter() - started
        assert again.cached == len(batch)
        # reading a Flickr8k-sized cache without any LLM
        template = json.loads((work / f"level{last}.jsonl").read_text().splitlines()[0])
        big = work / "big.jsonl"
        with open(big, "w", encoding="utf-8") as handle:
            for i in range(FULL_SIZES["Flickr8k"]):
                handle.write(json.dumps({**template, "key": f"{i:064x}", "caption": f"{template['caption']} #{i}"}) + "\n")
        started = time.perf_counter()
        loaded = load_augmentations(big)
        load_seconds = time.perf_counter() - started
        results["cache"] = {
            "rerun_captions": len(batch),
            "rerun_seconds": round(cached_seconds, 3),
            "rerun_ms_per_caption": round(1000 * cached_seconds / len(batch), 2),
            "load_records": len(loaded),
            "load_seconds": round(load_seconds, 3),
            "load_us_per_record": round(1e6 * load_seconds / len(loaded), 2),
        }
        print(f"cached rerun of {len(batch)} captions: {cached_seconds:.2f} s "
              f"({results['cache']['rerun_ms_per_caption']:.1f} ms/caption, includes connecting)")
        print(f"load_augmentations on {len(loaded):,} records: {load_seconds:.2f} s "
              f"({results['cache']['load_us_per_record']:.1f} us/record)")

        best = max(results["levels"], key=lambda r: r["captions_per_second"])
        results["estimates"] = {}
        print(f"estimated time at the best rate ({best['captions_per_second']:.2f} captions/s, "
              f"concurrency {best['concurrency']}):")
        for name, size in FULL_SIZES.items():
            seconds = size / best["captions_per_second"]
            results["estimates"][name] = {"captions": size, "hours": round(seconds / 3600, 1)}
            print(f"  {name:<10} {size:>8,} captions  {_hours(seconds)}")
        if server is not None:
            import httpx

            results["server_stats"] = httpx.get(f"http://{host}/standin/stats").json()
            print(f"server counters: {results['server_stats']}")
        results["loadavg_after"] = os.getloadavg()
        print(f"load average before {load_before[0]:.1f}, after {results['loadavg_after'][0]:.1f} (2 cores)")
    finally:
        if server is not None:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

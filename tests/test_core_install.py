"""The core install: ``pip install .`` gives the methods, the losses and the metrics on torch, NumPy and SciPy only.

A fresh virtual environment (no system site-packages, no pip) sees exactly
the distributions that ``pip install torch numpy scipy`` would install: the
three and the closure of their declared runtime requirements, linked from
this environment's site-packages through one ``.pth`` file (no 5 GB
download). The project is installed into it from a wheel built here, with
``--no-deps``; the console script ``osgha`` comes with it. In that
environment the adapter of the paper is built, trained for one step on
random tensors, and Recall@K is computed; no other third-party module may be
imported along the way, and none is importable at all.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("torch", "numpy", "scipy")

SCRIPT = r"""
import importlib.util, json, sys
import torch

from osgha_lite.losses import infonce_loss
from osgha_lite.methods import AdapterContext, build_adapter
from osgha_lite.methods.hypergraph import MemoryBank
from osgha_lite.metrics.retrieval import retrieval_metrics

torch.manual_seed(0)
unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape), dim=-1)
images, texts, descriptions = unit(8, 16), unit(16, 16), unit(16, 2, 16)
text_to_image = torch.arange(16) % 8
adapter = build_adapter("hypergraph", 16, reduced_dim=8, k=2)
adapter.set_memory(MemoryBank.from_train_split(images, texts, text_to_image))
optimizer = torch.optim.AdamW([p for p in adapter.parameters() if p.requires_grad], lr=1e-3)
adapter.train()
context = AdapterContext(description_features=descriptions[:8], group_ids=text_to_image[:8])
loss = infonce_loss(adapter.encode_images(images[text_to_image[:8]], AdapterContext(group_ids=text_to_image[:8])),
                    adapter.encode_texts(texts[:8], context), 10.0, image_ids=text_to_image[:8])
loss.backward()
optimizer.step()
adapter.eval()
with torch.no_grad():
    sims = adapter.encode_images(images) @ adapter.encode_texts(texts, AdapterContext(description_features=descriptions)).T
metrics = retrieval_metrics(sims.numpy(), text_to_image.numpy())
import os, sysconfig
own = [os.path.dirname(os.path.dirname(__import__("osgha_lite").__file__)),
       sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]]
loaded = sorted({getattr(module, "__file__", None) or "" for module in list(sys.modules.values())} - {""})
loaded = [path for path in loaded if os.path.isabs(path) and not any(path.startswith(prefix + os.sep) for prefix in own)]
visible = {name: importlib.util.find_spec(name) is not None for name in ("tqdm", "pandas", "PIL", "safetensors")}
print(json.dumps({"loss": float(loss), "metrics": metrics, "loaded": loaded, "visible": visible}))
"""


def _requirements_closure(names) -> list[metadata.Distribution]:
    """The distributions ``names`` and, recursively, their runtime requirements whose markers hold here."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement not installed here: pip would not need it either
        seen[name] = dist
        for line in dist.requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def _link_distributions(dists, folder: Path) -> set[str]:
    """Symlink every top-level file or folder of ``dists`` (and their ``.dist-info``) into ``folder``."""
    folder.mkdir(parents=True)
    tops: set[str] = set()
    for dist in dists:
        for file in dist.files or ():
            first = Path(file).parts[0]
            if first == ".." or first.endswith(".dist-info") and not str(file).endswith("METADATA"):
                if first.endswith(".dist-info"):
                    tops.add(first)
                continue
            tops.add(first)
    site = Path(sysconfig.get_paths()["purelib"])
    for top in sorted(tops):
        if (site / top).exists() and not (folder / top).exists():
            (folder / top).symlink_to(site / top)
    return tops


@pytest.fixture(scope="module")
def core_env(tmp_path_factory):
    pytest.importorskip("packaging")
    if sys.platform == "win32":
        pytest.skip("symlinks")
    work = tmp_path_factory.mktemp("core")
    # the project, built as a wheel from a copy of its sources (the build leaves nothing in the repository)
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "osgha_lite", source / "osgha_lite", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(work / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((work / "dist").glob("osgha_lite-*.whl"))
    # a fresh environment: its own site-packages, plus a .pth naming the linked core distributions
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    core = _requirements_closure(CORE)
    _link_distributions(core, work / "core-site")
    (purelib / "core.pth").write_text(str(work / "core-site") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    return venv, sorted(dist.metadata["Name"] for dist in core)


def test_the_wheel_declares_only_the_core_dependencies():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert sorted(re.split(r"[=<>!~ ]", line)[0] for line in project["dependencies"]) == sorted(CORE)
    assert project["scripts"]["osgha"] == "osgha_lite.__main__:main"


def test_core_install_trains_the_adapter_one_step_and_computes_recall(core_env):
    venv, core = core_env
    assert {"torch", "numpy", "scipy"} <= {name.lower() for name in core}
    assert not {"tqdm", "pandas", "pillow", "safetensors"} & {name.lower() for name in core}
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", SCRIPT], capture_output=True, text=True,
                          cwd=venv, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["loss"] > 0
    assert set(outcome["metrics"]) >= {"i2t_R@1", "t2i_R@5", "rsum"}
    assert not any(outcome["visible"].values()), outcome["visible"]
    # every module imported from outside the standard library and the project came from torch, NumPy, SciPy
    # or their own requirements (the linked folder); torch is among them
    linked = str(venv.parent / "core-site") + os.sep
    assert outcome["loaded"] and all(path.startswith(linked) for path in outcome["loaded"]), [
        path for path in outcome["loaded"] if not path.startswith(linked)]
    assert any(path.startswith(linked + "torch" + os.sep) for path in outcome["loaded"])


def test_core_install_has_the_console_script(core_env):
    venv, _ = core_env
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run([str(venv / "bin" / "osgha"), "--help"], capture_output=True, text=True, cwd=venv,
                          env=environment, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("run", "augment", "evaluate", "search", "manifest", "envcheck", "book"):
        assert f"\n  {command} " in done.stdout

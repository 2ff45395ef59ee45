"""Shared fixtures: tiny real-photo datasets in every supported layout.

The photos are scikit-image's sample images (real photographs shipped in
the package), saved as JPEG into a temporary data root, so readers,
encoders and caches are exercised on real pixels without the full dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field")
CAPTIONS = {
    "astronaut": ["an astronaut in a white suit poses with a flag", "a woman in a space suit smiles"],
    "coffee": ["a cup of coffee on a saucer", "a white mug of coffee seen from above", "coffee in a cup"],
    "chelsea": ["an orange cat looks to the side", "a tabby cat on a floor"],
    "rocket": ["a rocket stands on a launch pad", "a space shuttle ready for launch"],
    "motorcycle_left": ["a red motorcycle parked outside", "a motorbike seen from the side"],
    "hubble_deep_field": ["many galaxies in a dark sky", "a telescope image of distant galaxies"],
}


def _save_samples(folder: Path) -> dict[str, Path]:
    import skimage
    from PIL import Image

    source = Path(skimage.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SAMPLES:
        original = next(source.glob(f"{name}.*"))
        path = folder / f"{name}.jpg"
        Image.open(original).convert("RGB").save(path, quality=90)
        paths[name] = path
    return paths


@pytest.fixture(scope="session", autouse=True)
def timing_log(tmp_path_factory) -> Path:
    """Every test's timing log (``osgha_lite.train.timings``) in a temporary folder, never the project's
    ``build/timings/``; subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("timings")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OSGHA_TIMINGS_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A data root holding ``flickr8k/`` (Kaggle layout) and ``flickr30k/`` (Karpathy layout)."""
    root = tmp_path_factory.mktemp("data")
    flickr8k = root / "flickr8k"
    _save_samples(flickr8k / "images")
    rows = ["image,caption"]
    for name in SAMPLES:
        rows += [f'{name}.jpg,"{caption} ."' for caption in CAPTIONS[name]]
    (flickr8k / "captions.txt").write_text("\n".join(rows) + "\n")
    splits = {"train": SAMPLES[:4], "dev": SAMPLES[4:5], "test": SAMPLES[5:]}
    for split, names in splits.items():
        (flickr8k / f"Flickr_8k.{split}Images.txt").write_text("".join(f"{n}.jpg\n" for n in names))
    flickr30k = root / "flickr30k"
    _save_samples(flickr30k / "images")
    entries = []
    for index, name in enumerate(SAMPLES):
        split = {0: "train", 1: "restval", 2: "train", 3: "val", 4: "test", 5: "test"}[index]
        entries.append({"filename": f"{name}.jpg", "split": split, "imgid": index,
                        "sentences": [{"raw": c, "tokens": c.split()} for c in CAPTIONS[name]]})
    (flickr30k / "dataset_flickr30k.json").write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    return root


@pytest.fixture()
def data_env(tiny_root, monkeypatch, tmp_path):
    """Point the data root at the tiny datasets and the cache/results at a temporary folder."""
    monkeypatch.setenv("OSGHA_DATA_ROOT", str(tiny_root))
    monkeypatch.setenv("OSGHA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OSGHA_RESULTS_DIR", str(tmp_path / "results"))
    return tiny_root


@pytest.fixture()
def single_thread():
    """One torch thread for tests on tiny tensors: avoids OpenMP spin-waits on a busy shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_lite(tiny_root, tmp_path_factory):
    """The lite profile shrunk to the tiny data root (2 pretrain and 2 adapt images, one-epoch training,
    three methods), written as a JSON file; data, cache and results roots point at module-wide temporary folders.

    Yields ``(profile_path, profile, folder)``; the cache persists across the module's tests, so the
    backbone heads and the methods are trained once.
    """
    from osgha_lite.train import experiment
    from osgha_lite.profiles import load_profile

    folder = tmp_path_factory.mktemp("tiny_lite")
    profile = load_profile("lite")
    profile.update(name="tiny-lite", protocol={"kind": "disjoint", "pretrain_images": 2, "seed": 0},
                   eval={"protocols": ["all"], "bootstrap": 20},
                   augmentation={"cache": str(folder / "augmentations" / "flickr8k.jsonl"), "descriptions": 2})
    profile["backbone"]["train"].update(epochs=1, batch_size=4)
    profile["adapter_training"]["train"].update(epochs=1, batch_size=4, patience=1)
    hypergraph = dict(profile["methods"]["os-hgadapter"])
    hypergraph["options"] = {**hypergraph["options"], "k": 1, "reduced_dim": 8, "hubness_k": 2}
    hypergraph["descriptions"] = 2
    hypergraph["train"] = {"epochs": 1}
    profile["methods"] = {"frozen-backbone": profile["methods"]["frozen-backbone"],
                          "clip-adapter": profile["methods"]["clip-adapter"], "os-hgadapter": hypergraph}
    path = folder / "tiny-lite.json"
    path.write_text(json.dumps(profile))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OSGHA_DATA_ROOT", str(tiny_root))
        patch.setenv("OSGHA_CACHE_DIR", str(folder / "cache"))
        patch.setenv("OSGHA_RESULTS_DIR", str(folder / "results"))
        patch.setattr(experiment, "_TABLE_CACHE", {})
        patch.setattr(experiment, "_EXTRA_CACHE", {})
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        yield path, profile, folder
        torch.set_num_threads(previous)

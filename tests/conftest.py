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

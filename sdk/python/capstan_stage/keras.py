"""Keras 3 glue: epochs and checkpoints reported as Capstan expects, and resuming on a retry.

    from capstan_stage.keras import CapstanCallback, resume_from

    initial_epoch, model_path = resume_from(ctx)
    model = keras.models.load_model(model_path) if model_path else build_model()
    model.fit(x, y, epochs=ctx.params["epochs"], initial_epoch=initial_epoch,
              validation_data=(xv, yv), callbacks=[CapstanCallback(ctx)])

Keras is imported when ``CapstanCallback`` is first used, not when this module is.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from .protocol import number

MODEL_FILE = "model.keras"
KERAS_METRIC_NAMES = {"loss": "trainLoss", "accuracy": "trainAccuracy", "val_loss": "valLoss", "val_accuracy": "valAccuracy"}
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")

__all__ = ["CapstanCallback", "resume_from", "save_checkpoint", "prune_checkpoints", "epoch_metrics", "MODEL_FILE"]


def epoch_metrics(logs: dict | None) -> dict:
    """Keras's epoch logs under Capstan's names (loss → trainLoss, val_accuracy → valAccuracy, …); other numbers as they are."""
    out = {}
    for name, value in (logs or {}).items():
        if name in ("epoch", "epochs"):
            continue
        try:
            number(value)  # NaN passes: ctx.epoch leaves it out with a warning
        except (TypeError, ValueError):
            continue  # not a number: not a metric
        out[KERAS_METRIC_NAMES.get(name, name)] = value
    return out


def resume_from(ctx: Any) -> tuple[int, Path | None]:
    """``(initial_epoch, model_path)`` from the previous attempt's checkpoint, or ``(0, None)`` to start afresh."""
    last = ctx.last_checkpoint
    if last is None:
        return 0, None
    epoch = last.details.get("epoch")
    model = last.path / MODEL_FILE if last.path.is_dir() else last.path
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1 or not model.is_file():
        ctx.log.warn("last checkpoint is not usable; training from epoch 0", path=str(last.path), details=last.details)
        return 0, None
    ctx.log.info("resuming from checkpoint", epoch=epoch, path=str(model))
    return epoch, model


def save_checkpoint(model: Any, root: str | os.PathLike, epoch: int, keep: int = 2) -> Path:
    """Saves ``root/epoch-NNNN/model.keras`` (written aside, then renamed into place) and prunes older checkpoints."""
    root = Path(root)
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / MODEL_FILE)
    if final.exists():
        shutil.rmtree(final)  # left by an attempt that died before reporting it
    tmp.rename(final)
    prune_checkpoints(root, epoch, keep)
    return final


def prune_checkpoints(root: str | os.PathLike, epoch: int, keep: int = 2) -> None:
    """Keeps the ``keep`` newest ``epoch-NNNN`` folders up to ``epoch``; removes the rest (also later ones of a lost attempt)."""
    found = []
    for p in Path(root).iterdir():
        m = _EPOCH_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    kept = sorted((n for n, _ in found if n <= epoch), reverse=True)[:max(keep, 1)]
    for n, p in found:
        if n not in kept:
            shutil.rmtree(p, ignore_errors=True)


def _callback_class():
    try:
        import keras
    except ImportError:
        raise ImportError("capstan_stage.keras needs Keras 3: pip install tensorflow (npm run setup:python installs it)") from None

    class CapstanCallback(keras.callbacks.Callback):
        """Reports each epoch (``ctx.epoch``), saves a checkpoint every ``checkpoint_every`` epochs and at the
        last one (``ctx.checkpoint``, keeping the newest ``keep``), and heartbeats every ``heartbeat_every`` batches."""

        def __init__(self, ctx: Any, checkpoint_every: int = 1, keep: int = 2, heartbeat_every: int | None = None):
            super().__init__()
            if checkpoint_every < 1:
                raise ValueError("checkpoint_every must be >= 1")
            self.ctx = ctx
            self.checkpoint_every = checkpoint_every
            self.keep = keep
            self.heartbeat_every = heartbeat_every
            self._epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.heartbeat_every and (batch + 1) % self.heartbeat_every == 0:
                self.ctx.heartbeat(epoch=self._epoch, batch=batch + 1)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            n = epoch + 1  # Keras counts from 0, Capstan from 1
            total = (self.params or {}).get("epochs")
            self.ctx.epoch(n, epochs=total, **epoch_metrics(logs))
            if n % self.checkpoint_every == 0 or n == total:
                folder = save_checkpoint(self.model, self.ctx.checkpoint_dir, n, keep=self.keep)
                self.ctx.checkpoint(folder, epoch=n)

    return CapstanCallback


def __getattr__(name: str) -> Any:
    if name == "CapstanCallback":
        cls = _callback_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

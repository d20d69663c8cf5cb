"""A checkpoint after every epoch, so a killed training resumes instead of restarting.

Each checkpoint is a folder `epoch-NNNN/` written atomically: the training
model's weights with the optimizer state and the augmentation's random state
(`state.weights.h5`), and `state.json` with the epoch count, the history so far,
the MLflow run id and the fingerprint of what is being trained. A checkpoint
whose fingerprint differs (other params, other data) is never resumed. Only the
newest KEEP folders stay; a finished training removes them all.

The order of batches needs no saving: it depends only on (seed, epoch).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import keras

from resnet_mlops import atomic

KEEP = 2
_NAME = re.compile(r"^epoch-(\d{4,})$")


def fingerprint(*parts) -> str:
    """A short hash of everything that must match for a checkpoint to be resumed."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpoints:
    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint

    def _complete(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if _NAME.match(p.name) and (p / "state.json").is_file()]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))

    def latest(self) -> dict | None:
        """The newest checkpoint of this fingerprint (its state, plus `path`); forget any other."""
        for leftover in self.folder.glob(".*.tmp") if self.folder.is_dir() else ():
            shutil.rmtree(leftover, ignore_errors=True)  # a save killed half-way
        for path in reversed(self._complete()):
            state = json.loads((path / "state.json").read_text())
            if state.get("fingerprint") == self.fingerprint:
                return {**state, "path": str(path)}
        self.clear()
        return None

    def save(self, model: keras.Model, state: dict) -> Path:
        path = self.folder / f"epoch-{state['epoch']:04d}"
        with atomic.atomic_directory(path) as tmp:
            model.save_weights(tmp / "state.weights.h5")
            (tmp / "state.json").write_text(json.dumps({**state, "fingerprint": self.fingerprint}))
        for old in self._complete()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    @staticmethod
    def restore(model: keras.Model, checkpoint: dict) -> None:
        """Load weights, optimizer and random state into a compiled `model`."""
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(Path(checkpoint["path"]) / "state.weights.h5")

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint at each epoch's end, carrying the whole history so far."""

    def __init__(self, checkpoints: Checkpoints, history: dict[str, list[float]], extra: dict):
        super().__init__()
        self.checkpoints, self.history, self.extra = checkpoints, history, extra

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.checkpoints.save(self.model, {"epoch": epoch + 1, "history": self.history, **self.extra})

"""A checkpoint after every epoch, so a killed training resumes instead of restarting.

Each checkpoint is a folder `epoch-NNNN/` written atomically: every variable
of the training model (weights, batch-norm statistics, the augmentation's random
state) and of its optimizer, in order, in `state.npz`, and `state.json` with the
epoch count, the history so far, the MLflow run id, the recipe's phase (a
fine-tune's head or whole-network phase, each with its own optimizer: the trainer
compiles the model for that phase before restoring) and the fingerprint of what
is being trained. A checkpoint whose fingerprint differs (other params, other
data) is never resumed. Only the newest KEEP folders stay; a finished training
removes them all.

Saving copies the variables to host memory at the epoch's end, which is quick,
and writes the folder on a background thread while the next epoch trains: on a
GPU an epoch can take well under a second, and a synchronous Keras
`save_weights` would cost a sizeable share of it (figures: bench/RESULTS.md,
per-epoch cost of checkpoints). At most one write is in flight; the next save,
`wait` and `clear` finish it first.

The order of batches needs no saving: it depends only on (seed, epoch).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from pathlib import Path

import keras
import numpy as np

from resnet_mlops import atomic
from resnet_mlops.errors import UserError

KEEP = 2
_NAME = re.compile(r"^epoch-(\d{4,})$")


def fingerprint(*parts) -> str:
    """A short hash of everything that must match for a checkpoint to be resumed."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _state_variables(model: keras.Model) -> list:
    """Everything a resumed fit needs, in a fixed order: the model's variables, then the optimizer's."""
    return [*model.variables, *model.optimizer.variables]


def host_copy(variable) -> np.ndarray:
    """A copy of the variable's value in host memory, owning its buffer.

    TensorFlow's own `.numpy()`: NumPy 2 warns on its tensors' `__array__` (TF 2.21),
    and on CPU the array can share the variable's buffer, hence the copy.
    """
    if keras.backend.backend() == "tensorflow":
        return np.array(variable.value.numpy())
    return np.array(keras.ops.convert_to_numpy(variable.value))


class Checkpoints:
    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint
        self._writing: threading.Thread | None = None
        self._error: BaseException | None = None

    def _complete(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir()
                 if _NAME.match(p.name) and (p / "state.json").is_file() and (p / "state.npz").is_file()]
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
        """Copy the model's state now; write `epoch-NNNN/` on a background thread."""
        self.wait()
        arrays = [host_copy(variable) for variable in _state_variables(model)]
        path = self.folder / f"epoch-{state['epoch']:04d}"
        state_json = json.dumps({**state, "fingerprint": self.fingerprint})
        self._writing = threading.Thread(target=self._write, args=(path, arrays, state_json),
                                         name=f"checkpoint {path.name}", daemon=True)
        self._writing.start()
        return path

    def _write(self, path: Path, arrays: list[np.ndarray], state_json: str) -> None:
        try:
            with atomic.atomic_directory(path) as tmp:
                np.savez(tmp / "state.npz", **{f"v{index}": array for index, array in enumerate(arrays)})
                (tmp / "state.json").write_text(state_json)
            for old in self._complete()[:-KEEP]:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as error:  # re-raised on the training thread by `wait`
            self._error = error

    def wait(self) -> None:
        """Finish the write in flight; raise what it raised."""
        if self._writing is not None:
            self._writing.join()
            self._writing = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    @staticmethod
    def restore(model: keras.Model, checkpoint: dict) -> None:
        """Load weights, optimizer and random state into a compiled `model`."""
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables = _state_variables(model)
        with np.load(Path(checkpoint["path"]) / "state.npz") as stored:
            arrays = [stored[f"v{index}"] for index in range(len(stored.files))]
        shapes = [tuple(variable.shape) for variable in variables]
        if [array.shape for array in arrays] != shapes:
            raise UserError(f"checkpoint {checkpoint['path']} does not fit this model ({len(arrays)} arrays "
                            f"for {len(variables)} variables); delete it to start afresh")
        for variable, array in zip(variables, arrays):
            variable.assign(array)

    def clear(self) -> None:
        self.wait()
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

    def on_train_end(self, logs=None):
        self.checkpoints.wait()

"""What the sides share: the device they ran on, figures from per-epoch times, the prepared arrays."""

from __future__ import annotations

import statistics
from pathlib import Path


def device_info() -> dict:
    import jax
    import keras

    device = jax.devices()[0]
    return {"device_kind": device.device_kind, "platform": device.platform, "device_count": jax.device_count(),
            "jax": jax.__version__, "keras": keras.__version__, "backend": keras.backend.backend()}


def steady(epoch_seconds: list[float], images: int) -> dict:
    """Compile time and steady-state speed from per-epoch times (steady: median of epochs 2..N)."""
    steady_seconds = statistics.median(epoch_seconds[1:]) if len(epoch_seconds) > 1 else None
    return {"epoch_seconds": [round(s, 4) for s in epoch_seconds], "first_epoch_seconds": round(epoch_seconds[0], 3),
            "steady_epoch_seconds": steady_seconds and round(steady_seconds, 4),
            "compile_seconds": steady_seconds and round(epoch_seconds[0] - steady_seconds, 3),
            "steady_images_per_second": steady_seconds and round(images / steady_seconds, 1)}


def load_split(prepared: Path, name: str):
    """(images, labels) of a prepared split, as the arrays the prepare stage wrote."""
    import numpy as np

    return (np.load(prepared / f"{name}_images.npy", allow_pickle=False),
            np.load(prepared / f"{name}_labels.npy", allow_pickle=False))


class Tee:
    """stdout that also keeps what was written (the trainer prints its device line)."""

    def __init__(self, stream):
        self.stream, self.lines = stream, []

    def write(self, text):
        self.lines.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self.stream, name)

"""The one prediction code: class probabilities of a pixel batch from a saved Keras model.

The evaluate stage scores the challenger with it, the register stage re-scores the champion
through its registered pyfunc (which holds one), and the scoring server serves through it, so
the three can never disagree by code path. It is kept apart from the pyfunc's request parsing
(`serving/inputs.py`): a fix there changes what is served, not a single evaluated figure.

Inference goes through `predict_on_batch` (one compiled call) rather than `model.predict`, whose
per-call set-up costs more than the network itself takes on one image (figures:
bench/RESULTS.md, Serving). Concurrent callers share model calls (`serving/microbatch.py`).
"""

from __future__ import annotations

import numpy as np

from resnet_mlops.models.saving import load_model
from resnet_mlops.serving.microbatch import MicroBatcher

CHUNK = 256  # images per model call at most


class Scorer:
    """The model of `keras_file`, loaded and traced, answering pixel batches with class probabilities."""

    def __init__(self, keras_file):
        self.model = load_model(keras_file)
        self.image_shape = tuple(int(n) for n in self.model.input_shape[1:])
        self.num_classes = int(self.model.output_shape[-1])
        self._batcher = MicroBatcher(lambda pixels: np.asarray(self.model.predict_on_batch(pixels)), CHUNK)
        # Trace the compiled call for a batch of 1 and of any size now, not on the first requests.
        for size in (1, 2):
            self.probabilities(np.zeros((size, *self.image_shape), np.uint8))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) of a pixel batch (uint8, or floats 0..255)."""
        pixels = np.asarray(images, dtype=np.float32)
        parts = [self._batcher(pixels[start:start + CHUNK]) for start in range(0, len(pixels), CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_classes), np.float32)

"""The servability check: a registered version loads where it will be served, and answers right.

Before any alias moves, the version is loaded in a fresh Python process through
`mlflow.pyfunc.load_model("models:/<name>/<version>")`, as `mlflow models serve` loads it, and
scores a few test images twice: as raw pixels and as PNG files. Both answers must equal the
in-process ones (the evaluate stage's, through the same scorer). That catches what an in-process
check cannot: a class that only the registering process can import, an artifact missing from
the store, serving code that answers differently from what was evaluated.

The fresh process runs isolated (`python -I`: no PYTHONPATH, no script directory, from an empty
working directory) and imports nothing of this package before MLflow loads the model, so the
model's own copy of the code (`code_paths`) is what runs, as in the scoring server.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLE = 8          # test images the check scores
TOLERANCE = 1e-4    # on each class probability: the same code on the same machine, other batch sizes

# What the fresh process runs: argv = model URI, input .npz (pixels), output .npz (probabilities per form).
_PROBE = """
import io, sys
import mlflow, numpy as np, pandas as pd
from PIL import Image

uri, source, target = sys.argv[1:4]
pixels = np.load(source)["pixels"]
model = mlflow.pyfunc.load_model(uri)
classes = len(model.unwrap_python_model().class_names)

def png(image):
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()

answers = {}
for form, batch in (("pixels", pixels), ("files", pd.DataFrame({"image": [png(i) for i in pixels]}))):
    frame = model.predict(batch, params={"top_k": classes})
    probabilities = np.zeros((len(frame), classes))
    for row, top in enumerate(frame["top_k"]):
        for entry in top:
            probabilities[row, entry["class_index"]] = entry["probability"]
    answers[form] = probabilities
np.savez(target, **answers)
"""


class ServabilityCheck:
    """The check of `model_uri` on `images` (uint8), started now in its own process; `result()` waits.

    `expected` is the in-process class probabilities of those images.
    """

    def __init__(self, model_uri: str, images: np.ndarray, expected: np.ndarray, timeout_s: float = 600):
        self.model_uri, self.expected, self.timeout_s = model_uri, np.asarray(expected), timeout_s
        self._folder = tempfile.TemporaryDirectory(prefix="resnet-mlops-servability-")
        folder = Path(self._folder.name)
        np.savez(folder / "input.npz", pixels=np.asarray(images, np.uint8))
        self._output = folder / "output.npz"
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", _PROBE, model_uri, str(folder / "input.npz"), str(self._output)],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def result(self) -> tuple[bool, str]:
        """(passed, the finding in one sentence)."""
        try:
            _, stderr = self._process.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            return False, f"{self.model_uri} did not answer in a fresh process within {self.timeout_s:g} s"
        try:
            if self._process.returncode != 0:
                last = [line for line in stderr.splitlines() if line.strip()][-1:] or ["no message"]
                return False, (f"{self.model_uri} fails in a fresh process (exit {self._process.returncode}): "
                               f"{last[0].strip()}")
            return self._compare(np.load(self._output))
        finally:
            self._folder.cleanup()

    def _compare(self, answers) -> tuple[bool, str]:
        count = len(self.expected)
        for form, what in (("pixels", "raw pixels"), ("files", "PNG files")):
            gap = float(np.max(np.abs(answers[form] - self.expected))) if count else 0.0
            if gap > TOLERANCE:
                return False, (f"{self.model_uri} in a fresh process answers {count} test images given as {what} "
                               f"differently from in-process (largest probability gap {gap:.2g})")
        return True, (f"{self.model_uri} loads in a fresh process and answers {count} test images, as raw "
                      f"pixels and as PNG files, as in-process")

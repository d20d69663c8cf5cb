"""The champion, loaded and re-scored on the current test set through the challenger's own scorer.

Its stored test accuracy is never trusted: the test set may have changed since it was scored.
A champion of another image shape or class set cannot be scored on this test set at all, so no
version of this data may be ranked against it under the same name: the rule is to refuse, before
anything is registered, and to name the way out (another `register.model_name`, or moving
`@champion`).
"""

from __future__ import annotations

import numpy as np

from resnet_mlops.errors import UserError
from resnet_mlops.registry.descriptions import describe
from resnet_mlops.registry.gate import Comparison, compare
from resnet_mlops.registry.store import first_line


def load_comparable(champion, data: dict):
    """The champion version's served model (its `ResNetClassifier`), loaded, when it takes this data's
    images and classes; otherwise a one-line UserError saying that nothing was registered."""
    import mlflow

    which = f"champion v{champion.version} of '{champion.name}'"
    try:
        served = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}").unwrap_python_model()
        shape, classes = list(served.image_shape), list(served.class_names)
    except Exception as error:  # noqa: BLE001 - whatever a broken model raises, say it in one line
        raise UserError(f"{which} no longer loads ({first_line(error)}), so this model cannot be compared "
                        f"with it; nothing was registered (fix or move @champion, or set another "
                        f"register.model_name)") from None
    if (shape, classes) != (list(data["image_shape"]), list(data["class_names"])):
        raise UserError(f"{which} takes {describe(shape, classes)}, this data has "
                        f"{describe(data['image_shape'], data['class_names'])}: they cannot be compared on "
                        f"one test set; nothing was registered (set another register.model_name for this data)")
    return served


def rescore(served, images: np.ndarray, labels: np.ndarray, challenger_predictions: np.ndarray,
            class_names: list[str]) -> Comparison:
    """The challenger's predicted classes against the champion's (`served`, re-scored now), image by image."""
    champion_predictions = served.probabilities(images).argmax(axis=1)
    return compare(labels, challenger_predictions, champion_predictions, class_names)

"""The `evaluate` stage: score models/model.keras on the prepared test split.

MLflow is imported inside `run`: `make run` reads `summary` after every run, and
that should cost milliseconds, not MLflow's second of start-up.
"""

from __future__ import annotations

import json

from resnet_mlops import atomic
from resnet_mlops.config import Params
from resnet_mlops.dataset.prepared import read_split, read_summary
from resnet_mlops.evaluation.metrics import classification_metrics, confusion_matrix
from resnet_mlops.evaluation.plots import write_confusion_csv, write_confusion_png
from resnet_mlops.models.saving import load_model
from resnet_mlops.project import Layout


def run(params: Params, layout: Layout) -> dict:
    """Write reports/metrics.json and the confusion matrix, log both to the execution's run;
    return `summary(layout)`. (It reads no params: the model and the test split say it all.)"""
    import mlflow

    from resnet_mlops import tracking

    class_names = read_summary(layout.prepared)["class_names"]
    test = read_split(layout.prepared, "test")
    model = load_model(layout.model_file)
    probabilities = model.predict(test.images, batch_size=256, verbose=0)
    metrics = classification_metrics(probabilities, test.labels)
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(test.labels, predictions, len(class_names))

    with atomic.replace_together(layout.metrics, layout.confusion_csv, layout.confusion_png) as staged:
        atomic.write_json(staged[layout.metrics], metrics)
        write_confusion_csv(staged[layout.confusion_csv], test.labels, predictions, class_names)
        write_confusion_png(staged[layout.confusion_png], matrix, class_names,
                            f"test accuracy {metrics['test_accuracy']:.3f}")
        with tracking.reopen_run(layout.run_file):
            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(staged[layout.confusion_png]), artifact_path="reports")
            mlflow.log_dict(metrics, "reports/metrics.json")
    return summary(layout)


def summary(layout: Layout) -> dict:
    """The test metrics, from reports/metrics.json."""
    return json.loads(layout.metrics.read_text())

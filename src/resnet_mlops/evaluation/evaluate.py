"""The `evaluate` stage: score models/model.keras on the prepared test split.

MLflow is imported inside `run`: `make run` reads `summary` after every run, and
that should cost milliseconds, not MLflow's second of start-up.
"""

from __future__ import annotations

import json

from resnet_mlops import atomic
from resnet_mlops.config import Params
from resnet_mlops.dataset.prepared import read_split, read_summary
from resnet_mlops.evaluation.metrics import (classification_metrics, confusion_matrix, per_class,
                                             reliability_table, row_normalised)
from resnet_mlops.evaluation.plots import (write_confusion_csv, write_confusion_png, write_mistakes_png,
                                           write_reliability_csv, write_reliability_png)
from resnet_mlops.evaluation.tables import test_hashes, write_per_class_csv, write_predictions
from resnet_mlops.project import Layout


def run(params: Params, layout: Layout) -> dict:
    """Write reports/metrics.json, the per-class table, each image's prediction, the confusion
    matrix (counts and row-normalised), the reliability diagram and the most confident mistakes,
    and log them to the execution's run; return `summary(layout)`."""
    import mlflow

    from resnet_mlops import tracking
    from resnet_mlops.serving.scorer import Scorer

    class_names = read_summary(layout.prepared)["class_names"]
    test = read_split(layout.prepared, "test")
    probabilities = Scorer(layout.model_file).probabilities(test.images)  # the served model's code
    settings = params.evaluate
    metrics = classification_metrics(probabilities, test.labels, settings.top_k, settings.calibration_bins)
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(test.labels, predictions, len(class_names))
    reliability = reliability_table(probabilities, test.labels, settings.calibration_bins)

    logged = (layout.per_class, layout.predictions, layout.confusion_png, layout.confusion_normalised_png,
              layout.reliability_csv, layout.reliability_png, layout.mistakes_png)
    outputs = (layout.metrics, layout.confusion_csv, *logged)
    with atomic.replace_together(*outputs) as staged:
        atomic.write_json(staged[layout.metrics], metrics)
        write_per_class_csv(staged[layout.per_class], per_class(test.labels, predictions, len(class_names)),
                            class_names)
        write_predictions(staged[layout.predictions], test_hashes(layout.prepared), test.labels, probabilities,
                          class_names)
        write_confusion_csv(staged[layout.confusion_csv], test.labels, predictions, class_names)
        write_confusion_png(staged[layout.confusion_png], matrix, class_names,
                            f"test accuracy {metrics['test_accuracy']:.3f}")
        write_confusion_png(staged[layout.confusion_normalised_png], row_normalised(matrix), class_names,
                            "share of each actual class (recall on the diagonal)", cell_format="{:.2f}")
        write_reliability_csv(staged[layout.reliability_csv], reliability)
        write_reliability_png(staged[layout.reliability_png], reliability, metrics["test_ece"])
        write_mistakes_png(staged[layout.mistakes_png], test.images, test.labels, probabilities, class_names)
        with tracking.reopen_run(layout.run_file):
            mlflow.log_metrics(metrics)
            for output in logged:
                mlflow.log_artifact(str(staged[output]), artifact_path="reports")
            mlflow.log_dict(metrics, "reports/metrics.json")
    return summary(layout)


def summary(layout: Layout) -> dict:
    """The test metrics, from reports/metrics.json."""
    return json.loads(layout.metrics.read_text())

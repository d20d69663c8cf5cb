"""The promotion gate's cost on CIFAR-10's 10,000 test images, against the evaluate stage alone.

Run:  .venv/bin/python bench/gate_bench.py [--archive PATH] [--repeats 3]

In a scratch project: the real prepare stage on the shared CIFAR-10 JPEG archive (its own
10,000-image test set), then two ResNet-20s trained one epoch each (train.epochs: 1, two
learning rates), the first registered as champion. Then, side by side, `--repeats` times:
  - `resnet-mlops evaluate` of the challenger (scores the 10,000 test images);
  - `resnet-mlops register` of the challenger: log and register the pyfunc, re-score the
    champion on the 10,000 images through the same scorer, the servability check in a fresh
    process, McNemar's test and the class recalls, the verdict, the model card.
register.min_delta is set to 1 so that no repeat is promoted: every one pays the whole gate
against the same champion. Both are timed as the command line runs them (own process, imports
included). Also timed in this process: each part of the gate alone.
Prints medians and the ratio register / evaluate (target: under 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from support.scratch import CIFAR_ARCHIVE, ROOT, scratch_project, shipped_params, stage, write_params


def parts_of_the_gate(project: Path) -> dict[str, float]:
    """Seconds of each part of the gate alone, in this process, against the project's champion."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from resnet_mlops import console, tracking
    from resnet_mlops.dataset.prepared import read_split, read_summary
    from resnet_mlops.evaluation.tables import read_probabilities, test_hashes
    from resnet_mlops.project import Layout
    from resnet_mlops.registry.gate import compare
    from resnet_mlops.registry.rescore import load_comparable
    from resnet_mlops.registry.servability import SAMPLE, ServabilityCheck
    from resnet_mlops.registry.store import current_champion

    layout = Layout(project)
    console.import_quietly("keras")  # without TensorFlow's start-up notices, as the stage commands do
    with contextlib.chdir(project):
        tracking.configure()
        data, test = read_summary(layout.prepared), read_split(layout.prepared, "test")
        probabilities = read_probabilities(layout.predictions, test_hashes(layout.prepared))
        champion = current_champion(MlflowClient(), "cifar10-gate")
        times = {}
        started = time.perf_counter()
        served = load_comparable(champion, data)
        times["load the champion"] = time.perf_counter() - started
        started = time.perf_counter()
        champion_predictions = served.probabilities(test.images).argmax(axis=1)
        times["re-score it on the test set"] = time.perf_counter() - started
        started = time.perf_counter()
        comparison = compare(test.labels, probabilities.argmax(axis=1), champion_predictions, data["class_names"])
        times["McNemar and class recalls"] = time.perf_counter() - started
        started = time.perf_counter()
        passed, finding = ServabilityCheck(f"models:/cifar10-gate/{champion.version}", test.images[:SAMPLE],
                                           served.probabilities(test.images[:SAMPLE])).result()
        times["servability check (fresh process)"] = time.perf_counter() - started
        assert passed, finding
        mlflow.set_tracking_uri(None)
    print(f"  gate vs champion v{champion.version}: b={comparison.b} c={comparison.c} p={comparison.p_value:.3g}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=CIFAR_ARCHIVE)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gate-bench-") as scratch:
        params = shipped_params()
        params["data"].update({"source": "folder", "path": str(args.archive.resolve()), "image_size": 32,
                               "channels": 3})
        params["model"] = {"name": "resnet20"}
        params["train"] = {"epochs": 1, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.05,
                           "schedule": "cosine"}
        params["register"] = {"model_name": "cifar10-gate", "min_delta": 1.0}
        project = scratch_project(Path(scratch) / "project", params)
        print(f"prepare: {stage('prepare', project, quiet=True):.1f} s")
        for learning_rate in (0.05, 0.1):  # the champion, then the challenger
            params["train"]["learning_rate"] = learning_rate
            write_params(project, params)
            print(f"train (lr {learning_rate}): {stage('train', project, quiet=True):.1f} s")
            print(f"evaluate: {stage('evaluate', project, quiet=True):.1f} s, "
                  f"register: {stage('register', project, quiet=True):.1f} s")
        test_count = json.loads((project / "reports/metrics.json").read_text())["test_examples"]

        evaluate_s, register_s = [], []
        for repeat in range(args.repeats):
            evaluate_s.append(stage("evaluate", project, quiet=True))
            register_s.append(stage("register", project, quiet=True))
            verdict = json.loads((project / "reports/promotion.json").read_text())
            print(f"repeat {repeat + 1}: evaluate {evaluate_s[-1]:.1f} s, register {register_s[-1]:.1f} s "
                  f"({verdict['decision']} against v{verdict['champion_version']}, p={verdict['p_value']:.3g})")
        parts = parts_of_the_gate(project)

    evaluate_median, register_median = statistics.median(evaluate_s), statistics.median(register_s)
    result = {"test_images": test_count, "repeats": args.repeats,
              "evaluate_s": [round(s, 2) for s in evaluate_s], "register_s": [round(s, 2) for s in register_s],
              "evaluate_median_s": round(evaluate_median, 2), "register_median_s": round(register_median, 2),
              "ratio_register_over_evaluate": round(register_median / evaluate_median, 3),
              "parts_s": {name: round(s, 2) for name, s in parts.items()}}
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "gate_bench.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"register / evaluate = {result['ratio_register_over_evaluate']:.2f} (target < 2); written to {out}")
    sys.exit(0)


if __name__ == "__main__":
    main()

"""Serving: the pyfunc the registry holds (`pyfunc`), what a request may carry (`inputs`),
micro-batching of concurrent requests (`microbatch`), the `serve` command (`server`) and
batch prediction of files (`predict`).

`ResNetClassifier` stays importable from here, where it lived before this package
existed: registered versions pickle the class by that path, and a process that has
this package imported (`register` re-scoring a champion, `predict`) unpickles them
with it. Resolved on first use, so importing `resnet_mlops.serving.server` stays free
of MLflow.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "ResNetClassifier":
        from resnet_mlops.serving.pyfunc import ResNetClassifier

        return ResNetClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

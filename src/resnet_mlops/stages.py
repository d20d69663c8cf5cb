"""The pipeline's four stages, in order, each named by the module that runs it.

Every stage module has the same two functions: `run(params, layout)` does the
stage's work and returns `summary(layout)`, a few typed figures read back from
the outputs it wrote. `resnet-mlops <stage>` (what dvc.yaml runs) and the Prefect
flow both go through them. The modules load on first use.
"""

from __future__ import annotations

from types import ModuleType

from resnet_mlops import console

STAGES = {
    "prepare": "resnet_mlops.data.prepare",
    "train": "resnet_mlops.training.trainer",
    "evaluate": "resnet_mlops.evaluation.evaluate",
    "register": "resnet_mlops.registry.register",
}


def stage(name: str) -> ModuleType:
    """The module of stage `name` (its `run` and `summary`), imported without TensorFlow's notices."""
    return console.import_quietly(STAGES[name])

"""What hardware training runs on, and how: strategy, precision, XLA, determinism.

`plan()` looks once at what the backend can see and decides:
- TensorFlow: MultiWorkerMirroredStrategy when TF_CONFIG names more than one
  worker, MirroredStrategy over all local GPUs when there are several, else the
  default strategy (one GPU, or the CPU).
- JAX: data parallelism over all local devices when there are several, and a
  persistent compilation cache (see `_keep_compiled_code`).
- mixed precision `auto`: bfloat16 on GPUs of compute capability 8.0 and newer,
  float16 on 7.x, full float32 on CPUs; `true` forces a mixed policy.
- XLA `auto`: on for GPUs and for JAX (which always compiles), off for TensorFlow
  on CPU, where XLA's kernels are slower than oneDNN's.
It must run before anything else touches TensorFlow: a multi-worker strategy
can only be created on a fresh runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import keras

from resnet_mlops import project
from resnet_mlops.config import TrainSettings


@dataclass
class DevicePlan:
    description: str                  # one line for the log and the MLflow `device` tag
    jit_compile: bool
    is_chief: bool = True             # the worker that logs to MLflow (always, outside multi-worker)
    workers: int = 1                  # processes in the TF_CONFIG cluster
    strategy: Any = field(default=None, repr=False)

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    def scope(self):
        """Build and compile the model inside this (the strategy's scope under TensorFlow)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def _multi_worker_task() -> tuple[int, int, bool] | None:
    """(worker count, this worker's index, is chief) from TF_CONFIG, or None outside a cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    config = json.loads(raw)
    cluster, task = config.get("cluster", {}), config.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if workers < 2:
        return None
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return workers, index, chief


def _tensorflow_devices() -> tuple[list[str], tuple[int, int] | None, Any, tuple | None]:
    import tensorflow as tf

    cluster = _multi_worker_task()
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if cluster else None
    gpus = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
    names = [d.get("device_name", "GPU") for d in details]
    capability = min((d.get("compute_capability") for d in details if d.get("compute_capability")),
                     default=None)
    if strategy is None and len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    return names, capability, strategy, cluster


def _keep_compiled_code(jax) -> None:
    """Keep XLA's compiled programs on disk, so a retrain of the same model skips compiling.

    Compiling the train step is a large share of a short GPU run (bench/RESULTS.md).
    The cache is `JAX_COMPILATION_CACHE_DIR` when set, else resnet-mlops' user cache.
    """
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(project.user_cache() / "jax-compilation"))


def _jax_devices() -> tuple[list[str], tuple[int, int] | None, str]:
    import jax

    _keep_compiled_code(jax)
    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        return [], None, "cpu"
    if len(devices) > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    capability = getattr(devices[0], "compute_capability", None)
    major_minor = tuple(int(p) for p in capability.split(".")[:2]) if capability else None
    return [d.device_kind for d in devices], major_minor, devices[0].platform


def _precision(setting: str | bool, accelerator: str, capability: tuple | None) -> str:
    if setting is False or (setting == "auto" and accelerator == "cpu"):
        return "float32"
    if accelerator == "gpu" and capability is not None and capability < (8, 0):
        return "mixed_float16"
    return "mixed_bfloat16"


def plan(settings: TrainSettings, seed: int) -> DevicePlan:
    """Decide the device set-up for `settings` and apply it (dtype policy, seeds, determinism)."""
    backend = keras.backend.backend()
    strategy, cluster = None, None
    if backend == "tensorflow":
        names, capability, strategy, cluster = _tensorflow_devices()
        accelerator = "gpu" if names else "cpu"
    elif backend == "jax":
        names, capability, accelerator = _jax_devices()
    else:
        names, capability, accelerator = [], None, "cpu"
    replicas = strategy.num_replicas_in_sync if strategy is not None else max(len(names), 1)
    precision = _precision(settings.mixed_precision, accelerator, capability)
    jit = settings.jit_compile if isinstance(settings.jit_compile, bool) else (
        backend == "jax" or accelerator != "cpu")

    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_dtype_policy(precision)
    if settings.deterministic and backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    if names:
        found = f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    else:
        found = f"CPU only ({os.cpu_count()} cores; no GPU found)"
    if cluster:
        how = f"MultiWorkerMirroredStrategy, worker {cluster[1]} of {cluster[0]}"
    else:
        how = "MirroredStrategy" if strategy is not None else "single device"
    description = (f"{backend}: {found}; {how}; {replicas} replica(s); {precision}; "
                   f"XLA {'on' if jit else 'off'}{'; deterministic' if settings.deterministic else ''}")
    return DevicePlan(description, jit,
                      is_chief=cluster[2] if cluster else True, workers=cluster[0] if cluster else 1,
                      strategy=strategy)

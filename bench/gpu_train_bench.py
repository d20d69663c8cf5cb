"""ResNet-20 on CIFAR-10 on one GPU: bare Keras-on-JAX `model.fit` against our `train` stage (issue 5).

What: the issue's GPU target is that `resnet-mlops train` (MLflow tracking, a checkpoint every
epoch, validation, model logging) keeps at least 0.9x the throughput of a bare Keras-on-JAX
script training the same ResNet-20 with the same recipe (the issue's reference figures on one
H200: gpu/report.py, H200_REFERENCE). This bench measures both on the same prepared data, in
one command, and writes every figure to $OUT/gpu_bench.json.

Why this shape: a GPU is lent for minutes, without TensorFlow or internet, so the bench runs
under KERAS_BACKEND=jax from wheels carried beside the tree (bench/gpu/run.sh installs them),
and each side runs in its own Python process (fresh JAX/XLA state, no shared compile cache,
no GPU memory held over) with a timeout, inside one overall deadline, so one hang cannot eat
the lease; gpu_bench.json is rewritten after every side, so a kill still leaves the figures.

Sides, in order (the parts: bench/gpu/__init__.py):
  prepare  the project's `prepare` stage on the CIFAR-10 JPEG archive into a scratch project;
           images/s (gpu/stage.py).
  bare     the reference (gpu/reference.py): a plain ResNet-20 written with keras.layers, pad-4
           crop and flip on the device inside the model, `model.fit(x_uint8, y_onehot,
           batch_size=512, epochs=30)`, no callbacks but a timer; the stage's recipe (gpu/plan.py:
           mixed bfloat16 on GPU, Nesterov SGD, linear warm-up then linear decay from a peak of
           0.1 x 512/128, label smoothing, weight decay).
  stage    resnet_mlops.training.trainer.run() with params.yaml `train: {preset: fast,
           epochs: 30, batch_size: 512, warmup_fraction: 0.2}` and 2% of train held out for
           validation, MLflow into a SQLite store, checkpoints on: exactly what `resnet-mlops
           train` does (gpu/stage.py). The trainer keeps XLA's compiled programs on disk
           (training/devices.py); each bench run gives it a new, empty cache, so it compiles
           cold like the bare side.
  stage_warm (only with --warm-stage): the stage again on the programs the stage left on
           disk, as a retrain on the same machine.
  probe, stretch (only with --stretch-seconds S > 0): our trainer on the CIFAR ResNet-18
           (`resnet18` with `stem: cifar`; resnet56 where that option is unknown), as many
           epochs as a short throughput probe says fit in S seconds (or --stretch-epochs).

Run (on the GPU machine, through the kit):   bash bench/gpu/run.sh [--stretch-seconds 200]
Try it at toy size on a CPU:                 PYTHON=.venv/bin/python bash bench/gpu/run.sh --tiny
Directly:  KERAS_BACKEND=jax PYTHONPATH=src python3 bench/gpu_train_bench.py \\
               --archive ../shared/datasets/cifar10-jpeg.tar.gz --out /tmp/gpu-out [--tiny]
--mixed forces mixed_bfloat16 on a CPU too; there, under some jax versions, XLA's CPU inference
goes NaN for both ResNet-20s (bench/RESULTS.md), so --tiny --mixed checks only that the path runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gpu.plan import RECIPE, TINY
from support.scratch import CIFAR_ARCHIVE


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=CIFAR_ARCHIVE)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/gpu-out"))
    parser.add_argument("--tiny", action="store_true",
                        help=f"a {TINY['train_per_class']}+{TINY['test_per_class']}-per-class subset, "
                             f"{TINY['epochs']} epochs of batch {TINY['batch_size']}: proves the kit on a CPU")
    parser.add_argument("--epochs", type=int, help=f"ResNet-20 epochs (default {RECIPE['epochs']})")
    parser.add_argument("--batch-size", type=int, help=f"default {RECIPE['batch_size']}")
    parser.add_argument("--stretch-seconds", type=float, default=0.0, help="0: no stretch side")
    parser.add_argument("--stretch-epochs", type=int, help="skip the probe and train this many epochs")
    parser.add_argument("--deadline", type=float, default=float(os.environ.get("GPU_BENCH_DEADLINE", 500)),
                        help="seconds for the whole bench; each side's timeout is cut to what is left")
    parser.add_argument("--sides", default="prepare,bare,stage",
                        help="comma-separated subset of prepare,bare,stage (stretch: --stretch-seconds)")
    parser.add_argument("--warm-stage", action="store_true",
                        help="after the stage, train it again on the compiled programs it left on disk")
    parser.add_argument("--mixed", action="store_true",
                        help="mixed_bfloat16 on every side even without a GPU (checks the GPU's dtype path on a CPU)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one, removed)")
    parser.add_argument("--side", help=argparse.SUPPRESS)      # internal: run one side in this process
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.side:
        from gpu.sides import run_side

        return run_side(args.side, Path(args.workdir))
    from gpu.orchestrate import orchestrate  # no JAX, no Keras in this process

    orchestrate(args)


if __name__ == "__main__":
    main()

"""Does the streamed input pipeline keep up with training? (issue 15)

Run:  .venv/bin/python bench/input_pipeline_bench.py [--repeats 3] [--batches 150]

Prepares the shared CIFAR-10 JPEG archive with `data.stream: true` (TFRecord shards, the real
prepare) and then, side by side in each repeat, measures in images/s:

  pipeline  the trainer's tf.data pipeline over the train shards (`training.inputs`: interleaved
            reads, parallel parsing, the seeded shuffle buffer, one-hot labels, prefetch),
            drained alone, `--batches` batches of 128 after 10 untimed ones
  step      the trainer's own training model (ResNet-20, the shipped recipe, bench/support/models)
            fitted on one batch already in memory: the train step with no input pipeline at all
  fit       the same model fitted from the pipeline, as `resnet-mlops train` does with shards

and prints the medians, pipeline / step (how far ahead the pipeline is on this CPU), fit / step
(what the pipeline costs the trainer when both share the cores) and pipeline / 116,000 images/s,
the rate ResNet-20 trains at on one H200 (bench/RESULTS.md): the share of that GPU's need these
cores feed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from support.scratch import CIFAR_ARCHIVE, shipped_params

GPU_NEED = 116_000  # images/s: ResNet-20 training on one H200 (bench/RESULTS.md)
BATCH = 128
WARMUP = 10


def prepare_shards(work: Path) -> Path:
    from resnet_mlops.config import load_params
    from resnet_mlops.data.prepare import prepare

    params = shipped_params()
    params["data"] = {**params["data"], "source": "folder", "path": str(CIFAR_ARCHIVE), "image_size": 32,
                      "channels": 3, "val_fraction": 0.1, "test_fraction": 0.2, "stream": True}
    params["train"] = {**params["train"], "batch_size": BATCH}
    (work / "params.yaml").write_text(json.dumps(params))
    prepare(load_params(work / "params.yaml").data, 0, work / "prepared", work / "report.json", work / "cache")
    return work / "prepared"


def pipeline(prepared: Path, seed: int):
    from resnet_mlops.training import inputs

    stream = inputs.streaming_dataset(prepared, "train", BATCH, seed).repeat()
    return inputs.streamed(stream, 10, 0.0, seed)


def drain(prepared: Path, batches: int, seed: int) -> float:
    iterator = iter(pipeline(prepared, seed))
    for _ in range(WARMUP):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - start)


class Timer:
    """A Keras callback: images/s over the batches after the first (the first includes tracing)."""

    def __init__(self):
        import keras

        outer = self

        class _Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 0:
                    outer.start, outer.count = time.perf_counter(), 0
                else:
                    outer.count += 1

            def on_train_end(self, logs=None):
                outer.seconds = time.perf_counter() - outer.start

        self.callback = _Callback()

    def rate(self) -> float:
        return self.count * BATCH / self.seconds


def fit_rate(model, data, steps: int) -> float:
    timer = Timer()
    model.fit(data, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer.callback])
    return timer.rate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=150, help="timed pipeline batches per repeat")
    parser.add_argument("--steps", type=int, default=15, help="timed train steps per repeat and side")
    args = parser.parse_args()
    if not CIFAR_ARCHIVE.exists():
        print(f"skipped: {CIFAR_ARCHIVE} is absent; this benchmark needs the shared CIFAR-10 JPEG archive")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import tensorflow as tf

    from resnet_mlops.dataset.tfrecords import SHARD_EXAMPLES
    from support.models import trainer_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared = prepare_shards(work)
        count = json.loads((prepared / "summary.json").read_text())["splits"]["train"]["count"]
        model, _, _ = trainer_model(work, (32, 32, 3), 10, -(-count // BATCH))
        images, labels = next(iter(pipeline(prepared, 0)))
        one_batch = tf.data.Dataset.from_tensors((images, labels)).repeat()
        fit_rate(model, one_batch, 2)  # warm-up: trace the train step once
        rows = []
        for repeat in range(args.repeats):
            row = {"pipeline": drain(prepared, args.batches, repeat),
                   "step": fit_rate(model, one_batch, args.steps),
                   "fit": fit_rate(model, pipeline(prepared, repeat), args.steps)}
            rows.append(row)
            print(f"repeat {repeat + 1}: pipeline {row['pipeline']:,.0f} img/s, train step {row['step']:,.0f} "
                  f"img/s, fit from the pipeline {row['fit']:,.0f} img/s", flush=True)
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    print(f"\nmedians of {args.repeats} repeats ({os.cpu_count()} cores, TensorFlow {tf.__version__}, "
          f"batch {BATCH}, {count:,} train images in {-(-count // SHARD_EXAMPLES)} shards):")
    print(f"  pipeline alone             {med['pipeline']:>9,.0f} img/s")
    print(f"  train step (batch in RAM)  {med['step']:>9,.0f} img/s")
    print(f"  fit from the pipeline      {med['fit']:>9,.0f} img/s")
    print(f"  pipeline / train step      {med['pipeline'] / med['step']:.1f}x")
    print(f"  fit / train step           {med['fit'] / med['step']:.2f}x")
    print(f"  pipeline / GPU need        {med['pipeline'] / GPU_NEED:.2f}x  ({GPU_NEED:,} img/s: ResNet-20 on one H200)")


if __name__ == "__main__":
    main()

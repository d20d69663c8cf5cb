"""Where a Keras training step's time goes on TensorFlow: kernel time per op type, per step.

Trains ResNet-20 (option A, batch 128, 32x32x3, 10 classes) as
``cpu_throughput_bench.py`` does (our network, compiled by hand with plain SGD, as the
PyTorch reference there is), records a few steps with TensorFlow's profiler
and sums the kernel times of each op type (gradient ops prefixed ``grad:``).
With the default two inter-op threads ops can overlap, so the sum may exceed
the step time.

    .venv/bin/python bench/profile_train_step.py [--without fused-bn,slice-shortcut] [--steps 8]
"""

from __future__ import annotations

import argparse
import collections
import glob
import tempfile
import time

import numpy as np


def op_times(logdir, steps):
    """{op type: ms per step} from the profiler's XSpace in ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1], "rb") as file:
        space.ParseFromString(file.read())
    totals = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_"):  # the executor's threads, where the kernels run
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" in name and "::" not in name:  # "<node name>:<op type>", not the executor's own spans
                    kind = name.rsplit(":", 1)[1]
                    totals[("grad:" if "gradient_tape" in name else "") + kind] += event.duration_ps / 1e9 / steps
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--without", default="", help="fused-bn, slice-shortcut: profile the code before issue 5")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from support.models import resnet20

    model = resnet20((32, 32, 3), 10, without={name for name in args.without.split(",") if name})
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (128 * args.steps, 32, 32, 3), dtype=np.uint8)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 128 * args.steps)]
    model.fit(images, labels, batch_size=128, epochs=1, verbose=0)  # trace and warm up

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        model.fit(images, labels, batch_size=128, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        tf.profiler.experimental.stop()
        totals = op_times(logdir, args.steps)
    print(f"{seconds / args.steps * 1000:.0f} ms a step ({128 * args.steps / seconds:.0f} images/s, profiler on); "
          f"kernel time {sum(totals.values()):.0f} ms a step, by op type:")
    for kind, ms in totals.most_common(20):
        print(f"{ms:8.2f} ms  {kind}")


if __name__ == "__main__":
    main()

"""Training throughput on CPU: our Keras ResNet-20 on TensorFlow against the same network in plain PyTorch.

Both sides train ResNet-20 (CIFAR, shortcut option A, 269,722 trainable
parameters) on the same random uint8 32x32x3 batches with 10 classes, SGD with
momentum 0.9 and cross-entropy, each in its own worker process (see
``Worker``), interleaved: each repeat times Keras, then PyTorch (the order
alternates between repeats) while the other side waits idle, so that the load
of a shared machine hits both alike. Figures are medians over the repeats,
after warm-up steps that are not timed.

The Keras side is our network on the trainer's code path: ``build_model``, then
``fit`` on a Python generator of numpy batches (as ``training.inputs`` feeds it), XLA off as
``training.devices`` leaves it for TensorFlow on a CPU. It is compiled here by hand, not by
``training_model``, on purpose: with the reference's optimizer and loss (plain SGD, cross-entropy)
and without the augmentation layer the PyTorch side does not have, so that both sides do the
same work. Within a repeat only the steady state counts: the clock runs from the end of the
first step to the end of the last, on both sides.

Options to measure what each change buys or bought (bench/support/models.py takes them out
of a copy of the built model; the shipped layers carry no switch):
``--without fused-bn`` (Keras' own BatchNormalization code),
``--without slice-shortcut`` (option A subsampling by a strided slice),
``--jit-compile`` (XLA), ``--threads INTER,INTRA`` (TensorFlow's thread pools),
``--backend jax|torch`` (Keras on another backend against the same PyTorch).

Run it with the bench environment (see bench/requirements-bench.txt):

    .venv-bench/bin/python bench/cpu_throughput_bench.py
    .venv-bench/bin/python bench/cpu_throughput_bench.py --without fused-bn,slice-shortcut
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time

import numpy as np

SPEEDUPS = ("fused-bn", "slice-shortcut")  # as support.models.SPEEDUPS, without importing Keras here


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="steps per repeat and side (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side before the repeats")
    parser.add_argument("--without", default="", help=f"comma-separated speedups to switch off: {', '.join(SPEEDUPS)}")
    parser.add_argument("--jit-compile", action="store_true", help="compile the Keras train step with XLA")
    parser.add_argument("--threads", help="TensorFlow inter-op,intra-op thread counts, e.g. 1,2 (default: its own)")
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.without = {name for name in args.without.split(",") if name}
    if args.without - set(SPEEDUPS):
        parser.error(f"unknown --without {sorted(args.without - set(SPEEDUPS))}; choose from {', '.join(SPEEDUPS)}")
    return args


def make_batches(batch_size, count, seed, num_classes=10):
    """``count`` distinct batches of uint8 pixels and labels (class indices)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
             rng.integers(0, num_classes, batch_size)) for _ in range(count)]


class KerasSide:
    """The trainer's path: build_model, compile, fit on a generator of numpy batches."""

    def __init__(self, batches, args):
        os.environ["KERAS_BACKEND"] = args.backend
        if args.threads:
            import tensorflow as tf

            inter, intra = (int(n) for n in args.threads.split(","))
            tf.config.threading.set_inter_op_parallelism_threads(inter)
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        import keras

        from support.models import resnet20

        self.keras, self.args = keras, args
        self.jit_compile = args.jit_compile or args.backend == "jax"  # training.devices' choice on a CPU
        self.name = f"Keras 3 / {args.backend}"
        self.model = resnet20((32, 32, 3), 10, without=args.without)
        self.model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                           loss=keras.losses.CategoricalCrossentropy(),
                           metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                           jit_compile=self.jit_compile)
        eye = np.eye(10, dtype=np.float32)
        self.batches = [(images, eye[labels]) for images, labels in batches]
        self.params = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)

    def _generator(self):
        while True:
            yield from self.batches

    def run(self, steps):
        """Train ``steps`` steps; return the seconds from the end of the first to the end of the last."""
        ends = []
        stamp = self.keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs=None: ends.append(time.perf_counter()))
        self.model.fit(self._generator(), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
                       callbacks=[stamp])
        return ends[-1] - ends[0]

    def describe(self):
        text = f"Keras {self.keras.__version__} on {self.args.backend}, XLA {'on' if self.jit_compile else 'off'}"
        if self.args.backend == "tensorflow":
            import tensorflow as tf

            threads = tf.config.threading
            text += (f", TensorFlow {tf.__version__}, threads inter-op "
                     f"{threads.get_inter_op_parallelism_threads() or 'default'}, intra-op "
                     f"{threads.get_intra_op_parallelism_threads() or 'default'}")
        return text + f"; without: {', '.join(sorted(self.args.without)) or 'nothing'}"


class TorchSide:
    """Plain PyTorch eager: the textbook training loop, default threads."""

    name = "PyTorch eager"

    def __init__(self, batches, args):
        import torch

        from support.torch_resnet20 import ResNet20, trainable_params

        torch.manual_seed(args.seed)
        self.torch = torch
        self.model = ResNet20().train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.batches = [(torch.from_numpy(images), torch.from_numpy(labels)) for images, labels in batches]
        self.params = trainable_params(self.model)
        self.index = 0

    def step(self):
        images, labels = self.batches[self.index % len(self.batches)]
        self.index += 1
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(images)
        loss = self.torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        self.optimizer.step()
        (logits.argmax(1) == labels).float().mean()  # the accuracy Keras' fit computes too

    def run(self, steps):
        self.step()
        start = time.perf_counter()
        for _ in range(steps - 1):
            self.step()
        return time.perf_counter() - start

    def describe(self):
        return f"PyTorch {self.torch.__version__}, {self.torch.get_num_threads()} threads"


def serve(kind, args, connection):
    """Worker process: build one side, warm it up, then time ``run`` requests until sent None."""
    batches = make_batches(args.batch_size, 8, args.seed)
    side = KerasSide(batches, args) if kind == "keras" else TorchSide(batches, args)
    side.run(args.warmup + 1)
    connection.send((side.name, side.params, side.describe()))
    while (steps := connection.recv()) is not None:
        connection.send(side.run(steps))


class Worker:
    """One side in its own process, so that neither runtime's threads get in the other's way.

    In one process they slow each other down (likely: both runtimes' worker
    threads spin-wait after each op and take the other's cores); bench/RESULTS.md
    has the figures.
    """

    def __init__(self, kind, args):
        context = multiprocessing.get_context("spawn")
        self.kind = kind
        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve, args=(kind, args, child), daemon=True)
        self.process.start()
        self.name, self.params, self.description = self._receive()

    def run(self, steps):
        self.connection.send(steps)
        return self._receive()

    def _receive(self):
        while not self.connection.poll(1.0):
            if not self.process.is_alive():
                raise SystemExit(f"the {self.kind} worker stopped (exit code {self.process.exitcode}); see above")
        return self.connection.recv()

    def close(self):
        self.connection.send(None)
        self.process.join()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv=None):
    args = parse_args(argv)
    keras_side = Worker("keras", args)  # started one after the other: each warms up alone
    torch_side = Worker("torch", args)
    if keras_side.params != torch_side.params:
        raise SystemExit(f"parameter counts differ: Keras {keras_side.params:,}, PyTorch {torch_side.params:,}")

    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {os.getloadavg()[0]:.2f}")
    print(f"keras: {keras_side.description}")
    print(f"torch: {torch_side.description}")
    print(f"ResNet-20 option A, {keras_side.params:,} trainable params, batch {args.batch_size}, 32x32x3, "
          f"10 classes; {args.steps - 1} timed steps x {args.repeats} repeats", flush=True)

    images = (args.steps - 1) * args.batch_size
    rates = {keras_side.name: [], torch_side.name: []}
    ratios = []
    for repeat in range(args.repeats):
        for side in (keras_side, torch_side) if repeat % 2 == 0 else (torch_side, keras_side):
            rates[side.name].append(images / side.run(args.steps))
        ratios.append(rates[keras_side.name][-1] / rates[torch_side.name][-1])
        print(f"repeat {repeat + 1}: " + ", ".join(f"{name} {r[-1]:.0f} images/s" for name, r in rates.items())
              + f", ratio {ratios[-1]:.2f}", flush=True)
    for side in (keras_side, torch_side):
        side.close()

    keras_rate, torch_rate = (statistics.median(rates[side.name]) for side in (keras_side, torch_side))
    print(f"\nmedian images/s: {keras_side.name} {keras_rate:.0f}, {torch_side.name} {torch_rate:.0f}")
    print(f"ratio Keras / PyTorch: {keras_rate / torch_rate:.2f} (of medians), "
          f"{statistics.median(ratios):.2f} (median of per-repeat ratios); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

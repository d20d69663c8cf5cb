"""The bare side: the REFERENCE the train stage is measured against. Nothing of resnet_mlops here.

This is deliberately not `resnet_mlops.training.model.training_model`: it is the issue's "bare
Keras-on-JAX script", a plain ResNet-20 written here with keras.layers (He et al. 2016, option A
shortcuts, 16/32/64 channels), pad-4 crop and flip on the device inside the model, trained by
`model.fit(x_uint8, y_onehot)` with no callbacks but a timer, on the recipe of gpu/plan.py:
mixed bfloat16 on a GPU, Nesterov SGD, linear warm-up then linear decay, label smoothing,
weight decay. Epoch times: epoch 1 from its begin, then from one epoch's end to the next, an
end being when the epoch's logs were read back from the device (JAX dispatches ahead).
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the side's clock starts before JAX and Keras are imported, as the stage's does

import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from gpu.measure import device_info, load_split, steady  # noqa: E402

_IMPORTED = time.perf_counter() - _STARTED


class PadCropFlip(layers.Layer):
    """Pad by `pad`, crop back at a random offset per image, flip half: on the device, training only."""

    def __init__(self, pad, seed, **kwargs):
        super().__init__(**kwargs)
        self.pad, self.generator = pad, keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        x = ops.cast(images, self.compute_dtype)
        if not training:
            return x
        n, h, w, c = ops.shape(x)
        padded = ops.pad(x, [[0, 0], [self.pad, self.pad], [self.pad, self.pad], [0, 0]])
        offsets = keras.random.randint((2, n), 0, 2 * self.pad + 1, seed=self.generator)
        rows = (offsets[0][:, None] + ops.arange(h))[:, :, None, None]
        x = ops.take_along_axis(padded, ops.broadcast_to(rows, (n, h, w + 2 * self.pad, c)), axis=1)
        cols = ops.broadcast_to((offsets[1][:, None] + ops.arange(w))[:, None, :, None], (n, h, w, c))
        x = ops.take_along_axis(x, cols, axis=2)
        flip = keras.random.randint((n, 1, 1, 1), 0, 2, seed=self.generator)
        return ops.where(flip == 1, ops.flip(x, axis=2), x)


class ShortcutA(layers.Layer):
    """He et al.'s option A: subsample by 2, zero-pad the new channels."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def call(self, x):
        x = x[:, ::2, ::2, :]
        extra = self.filters - x.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])


class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup` steps, then linear decay to 0 at step `total`."""

    def __init__(self, peak: float, warmup: int, total: int):
        super().__init__()
        self.peak, self.warmup, self.total = peak, warmup, total

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decay = self.peak * (1.0 - ops.clip((step - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0))
        return ops.where(step < self.warmup, self.peak * (step + 1.0) / max(self.warmup, 1), decay)


class EpochTimer(keras.callbacks.Callback):
    """When each epoch began and ended, and its logs; reading the logs back waits for the device."""

    def __init__(self):
        super().__init__()
        self.begins, self.ends, self.logs = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.begins.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append({k: float(v) for k, v in (logs or {}).items()})  # reads back: waits for the device
        self.ends.append(time.perf_counter())

    def epoch_seconds(self) -> list[float]:
        """Epoch 1 from its begin, then end to end (JAX dispatches ahead: only a read-back marks the end)."""
        return [self.ends[0] - self.begins[0]] + [b - a for a, b in zip(self.ends, self.ends[1:])]


def _conv_bn(x, filters, strides=1, relu=True):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return layers.ReLU()(x) if relu else x


def bare_resnet20(input_shape, crop: int, seed: int) -> keras.Model:
    """ResNet-20 (option A) on uint8 pixels, with the augmentation inside, in plain keras.layers."""
    inputs = keras.Input(input_shape, dtype="uint8")
    x = PadCropFlip(crop, seed)(inputs)
    x = layers.Rescaling(1 / 255.0)(x)
    x = _conv_bn(x, 16)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage and not block else 1
            y = _conv_bn(_conv_bn(x, filters, strides), filters, relu=False)
            shortcut = ShortcutA(filters)(x) if strides != 1 else x
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10)(x)
    outputs = layers.Activation("softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="bare_resnet20")


def compile_reference(model: keras.Model, plan: dict, steps: int) -> float:
    """Compile with the plan's recipe for `steps` steps an epoch; the peak learning rate."""
    epochs, batch = plan["epochs"], plan["batch_size"]
    total, warmup = epochs * steps, round(plan["warmup_fraction"] * epochs * steps)
    peak = plan["learning_rate"] * batch / plan["lr_batch_reference"]
    # Keras decays weights decoupled (w -= lr * wd * w); the L2 coefficient 5e-4 of SGD with
    # momentum m corresponds to wd / (1 - m), which is what the stage's optimizer applies too.
    model.compile(keras.optimizers.SGD(WarmupLinear(peak, warmup, total), momentum=plan["momentum"],
                                       nesterov=plan["nesterov"],
                                       weight_decay=plan["weight_decay"] / (1 - plan["momentum"])),
                  keras.losses.CategoricalCrossentropy(label_smoothing=plan["label_smoothing"]),
                  metrics=["accuracy"])
    return peak


def _write_history(path: Path, timer: EpochTimer, times: list[float]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        keys = sorted(timer.logs[0])
        writer.writerow(["epoch", *keys, "epoch_seconds"])
        for index, (logs, seconds) in enumerate(zip(timer.logs, times)):
            writer.writerow([index + 1, *(f"{logs[k]:.6f}" for k in keys), f"{seconds:.4f}"])


def side_bare(work: Path, plan: dict) -> dict:
    """Train and test the reference on the stage side's prepared arrays; its figures."""
    info = device_info()
    precision = "mixed_bfloat16" if jax.default_backend() == "gpu" or plan["mixed"] else "float32"
    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(plan["seed"])
    prepared = work / "stage" / "data" / "prepared"
    x_train, y_train = load_split(prepared, "train")
    x_test, y_test = load_split(prepared, "test")
    eye = np.eye(10, dtype="float32")
    batch, epochs = plan["batch_size"], plan["epochs"]
    model = bare_resnet20(x_train.shape[1:], plan["crop"], plan["seed"])
    peak = compile_reference(model, plan, math.ceil(len(x_train) / batch))

    timer = EpochTimer()
    before_fit = time.perf_counter()
    model.fit(x_train, eye[y_train], batch_size=batch, epochs=epochs, callbacks=[timer], verbose=2)
    fit_wall = timer.ends[-1] - before_fit
    times = timer.epoch_seconds()
    eval_started = time.perf_counter()
    loss, accuracy = model.evaluate(x_test, eye[y_test], batch_size=batch, verbose=0)
    eval_seconds = time.perf_counter() - eval_started
    _write_history(work / "bare_history.csv", timer, times)
    result = {**info, "model": "resnet20 (inline)", "precision": precision, "epochs": epochs,
              "train_count": len(x_train), "test_count": len(x_test), "batch_size": batch, "peak_learning_rate": peak,
              "import_seconds": round(_IMPORTED, 2), "fit_wall_seconds": round(fit_wall, 3),
              "pre_epoch_seconds": round(timer.begins[0] - before_fit, 3),
              "epochs_wall_seconds": round(timer.ends[-1] - timer.begins[0], 3), **steady(times, len(x_train)),
              "final_train_accuracy": round(timer.logs[-1].get("accuracy", 0), 4),
              "test_accuracy": round(float(accuracy), 4), "test_loss": round(float(loss), 4),
              "eval_seconds": round(eval_seconds, 2), "params": model.count_params(),
              "side_seconds": round(time.perf_counter() - _STARTED, 2)}
    print(f"bare: {json.dumps(result)}", flush=True)
    return result

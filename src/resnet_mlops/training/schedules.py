"""Learning-rate schedules, per optimizer step, in backend-neutral keras.ops.

Every schedule starts with an optional linear warm-up to the peak rate, then:
constant; step (x factor at set fractions of training, He et al. 2016); cosine
to zero (Loshchilov & Hutter 2017); onecycle, a linear decay to zero, which with
the warm-up makes the triangular one-cycle policy (Smith 2018).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from resnet_mlops.config import SCHEDULES, TrainSettings


@keras.saving.register_keras_serializable(package="resnet_mlops")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, kind: str, peak: float, total_steps: int, warmup_steps: int = 0,
                 step_at: tuple[float, ...] = (0.5, 0.75), step_factor: float = 0.1):
        if kind not in SCHEDULES:
            raise ValueError(f"Unknown schedule {kind!r}; expected one of {', '.join(SCHEDULES)}")
        self.kind, self.peak, self.total_steps = kind, float(peak), max(int(total_steps), 1)
        self.warmup_steps = min(int(warmup_steps), self.total_steps - 1)
        self.step_at, self.step_factor = tuple(step_at), float(step_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total, warmup = float(self.total_steps), float(self.warmup_steps)
        progress = ops.clip((step - warmup) / max(total - warmup, 1.0), 0.0, 1.0)
        if self.kind == "constant":
            rate = ops.ones_like(step) * self.peak
        elif self.kind == "step":
            drops = sum(ops.cast(step >= round(at * total), "float32") for at in self.step_at)
            rate = self.peak * ops.power(self.step_factor, drops)
        elif self.kind == "cosine":
            rate = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        else:
            rate = self.peak * (1.0 - progress)
        if self.warmup_steps:
            rate = ops.where(step < warmup, self.peak * (step + 1.0) / warmup, rate)
        return rate

    def get_config(self) -> dict:
        return {"kind": self.kind, "peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "step_at": list(self.step_at),
                "step_factor": self.step_factor}


def for_recipe(settings: TrainSettings, steps_per_epoch: int) -> RecipeSchedule:
    return RecipeSchedule(settings.schedule, settings.peak_learning_rate, settings.epochs * steps_per_epoch,
                          round(settings.warmup_fraction * settings.epochs * steps_per_epoch), settings.step_at,
                          settings.step_factor)


def make_optimizer(settings: TrainSettings, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer on its schedule.

    Keras applies weight decay decoupled (w -= lr * wd * w each step). For SGD with
    momentum m, the L2 coefficient papers quote acts like a decoupled decay of
    wd / (1 - m) in steady state, so that is what SGD gets; Adam becomes AdamW.
    """
    rate = for_recipe(settings, steps_per_epoch)
    decay = settings.weight_decay or None
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=settings.momentum, nesterov=settings.nesterov,
                                    weight_decay=decay and decay / (1.0 - settings.momentum))
    if settings.optimizer == "adamw" or decay:
        return keras.optimizers.AdamW(rate, weight_decay=decay or 0.0)
    return keras.optimizers.Adam(rate)

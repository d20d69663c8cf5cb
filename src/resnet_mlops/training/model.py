"""The model the trainer fits: the augmentation layers, then the classifier, compiled with
the recipe's optimizer, loss and metric. Built here only, for the trainer, the benches
and the tests alike.

A fine-tuning recipe (`train.head_epochs` > 0) trains in two phases, each compiled afresh:
the new classifier alone with every other layer frozen, then the whole network at
`learning_rate x finetune_lr_factor`, each phase with the recipe's schedule over its own
epochs and a fresh optimizer. A frozen batch normalization runs in inference mode (Keras 3
does so for a layer with `trainable = False`), so the head phase changes no moving statistic.
"""

from __future__ import annotations

import dataclasses

import keras

from resnet_mlops.config import Params, TrainSettings
from resnet_mlops.models import build_model
from resnet_mlops.models.transfer import CLASSIFIER
from resnet_mlops.training.augment import augment_layer
from resnet_mlops.training.pretrained import StartingWeights, pretrained_classifier
from resnet_mlops.training.schedules import make_optimizer

HEAD, WHOLE = "head", "whole"


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str          # HEAD: the classifier alone; WHOLE: every layer
    first_epoch: int   # epochs [first_epoch, end_epoch) of the whole training
    end_epoch: int
    rate_factor: float  # of train.learning_rate

    def recipe(self, settings: TrainSettings) -> TrainSettings:
        """The recipe of this phase alone: its epochs, its rate."""
        return dataclasses.replace(settings, epochs=self.end_epoch - self.first_epoch,
                                   learning_rate=settings.learning_rate * self.rate_factor)


def phases(settings: TrainSettings) -> list[Phase]:
    """The head phase, when there is one, then the whole network (unless the head has every epoch)."""
    if not settings.head_epochs:
        return [Phase(WHOLE, 0, settings.epochs, 1.0)]
    head = Phase(HEAD, 0, settings.head_epochs, 1.0)
    whole = Phase(WHOLE, settings.head_epochs, settings.epochs, settings.finetune_lr_factor)
    return [head, whole] if settings.head_epochs < settings.epochs else [head]


def training_model(params: Params, image_shape: tuple[int, ...], num_classes: int, steps_per_epoch: int,
                   jit_compile: bool | str = "auto",
                   start: StartingWeights | None = None) -> tuple[keras.Model, keras.Model]:
    """(the training model, compiled for the recipe's first phase and built; the classifier inside it:
    what is saved and served). With `start`, the classifier begins with those weights."""
    settings = params.train
    if start is None:
        classifier = build_model(params.model.name, image_shape, num_classes, **params.model.options)
    else:
        classifier = pretrained_classifier(params.model, start, image_shape, num_classes)
    model = keras.Sequential([augment_layer(settings.augment, params.seed), classifier], name="training")
    compile_phase(model, classifier, settings, phases(settings)[0], steps_per_epoch, jit_compile)
    model.build((None, *image_shape))
    return model, classifier


def compile_phase(model: keras.Model, classifier: keras.Model, settings: TrainSettings, phase: Phase,
                  steps_per_epoch: int, jit_compile: bool | str = "auto") -> None:
    """Freeze all but the classifier's top for the head phase (unfreeze for the other), compile afresh."""
    set_trainable(classifier, head_only=phase.name == HEAD)
    model.compile(optimizer=make_optimizer(phase.recipe(settings), steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile)


def set_trainable(classifier: keras.Model, head_only: bool) -> None:
    """Only the classifier's top trainable (the rest frozen), or every layer."""
    for layer in classifier.layers:
        layer.trainable = not head_only or layer.name == CLASSIFIER

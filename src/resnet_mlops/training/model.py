"""The model the trainer fits: the augmentation layers, then the classifier, compiled with
the recipe's optimizer, loss and metric. Built here only, for the trainer, the benches
and the tests alike."""

from __future__ import annotations

import keras

from resnet_mlops.config import Params
from resnet_mlops.models import build_model
from resnet_mlops.training.augment import augment_layer
from resnet_mlops.training.schedules import make_optimizer


def training_model(params: Params, image_shape: tuple[int, ...], num_classes: int, steps_per_epoch: int,
                   jit_compile: bool | str = "auto") -> tuple[keras.Model, keras.Model]:
    """(the compiled, built training model, the classifier inside it: what is saved and served)."""
    settings = params.train
    classifier = build_model(params.model.name, image_shape, num_classes, **params.model.options)
    model = keras.Sequential([augment_layer(settings.augment, params.seed), classifier], name="training")
    model.compile(optimizer=make_optimizer(settings, steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile)
    model.build((None, *image_shape))
    return model, classifier

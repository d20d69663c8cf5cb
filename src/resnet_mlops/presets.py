"""Training recipes: the defaults of every `train.*` key, and the named presets.

`train.preset: paper` (or `fast`, `finetune`) starts from that recipe; any key also written in
params.yaml's `train` section overrides it, key by key (inside `augment` too).
Pure Python: config.py reads this without importing Keras.
"""

from __future__ import annotations

# Every train key and its value when neither params.yaml nor the preset sets it: the one place
# they are written. config.TrainSettings has one field per key and restates no value; README's
# Training table states the same (tests/test_params_docs.py holds them together).
DEFAULTS = {
    "epochs": 12,
    "batch_size": 64,
    "optimizer": "adam",           # adam | adamw | sgd
    "learning_rate": 0.002,        # peak rate, for a batch of lr_batch_reference examples
    "lr_batch_reference": None,    # null: no scaling; N: rate x batch_size / N (Goyal et al. 2017)
    "momentum": 0.9,               # sgd only
    "nesterov": False,             # sgd only
    "weight_decay": 0.0,           # L2 coefficient as papers state it (see README: Training)
    "label_smoothing": 0.0,
    "schedule": "cosine",          # constant | step | cosine | onecycle; cosine: the last epochs take the
                                   # smallest steps, so training ends where it settled, not on a spike
    "warmup_fraction": 0.0,        # share of training spent warming up linearly to the peak rate
    "head_epochs": 0,              # fine-tuning: the first epochs train the new classifier alone, the
                                   # rest of the network frozen (needs model.pretrained); 0: no such phase
    "finetune_lr_factor": 0.5,     # ... then the whole network trains at learning_rate x this
    "step_at": [0.5, 0.75],        # step schedule: fractions of training where the rate is multiplied...
    "step_factor": 0.1,            # ... by this factor
    "augment": {
        "crop": 0,                 # pad by this many pixels, then crop back at a random offset (paper: 4)
        "flip": False,             # random horizontal flip
        "cutout": 0,               # side of a random square set to zero (DeVries & Taylor 2017); 0: off
        "mixup": 0.0,              # Beta(alpha, alpha) mixing of image and label pairs (Zhang et al. 2018); 0: off
    },
    "early_stopping": 0,           # patience in epochs on val_loss; 0: off
    "deterministic": False,        # same seed, same weights (CPU; slower kernels)
    "mixed_precision": "auto",     # auto (bf16/fp16 on capable GPUs, off on CPU) | true | false
    "jit_compile": "auto",         # auto (XLA on GPU and under JAX, off on TensorFlow CPU) | true | false
}

PRESETS = {
    # He et al. 2016, section 4.2: SGD momentum 0.9, weight decay 1e-4, batch 128, rate 0.1
    # divided by 10 at 32k and 48k iterations, stopping at 64k (182 epochs of a 45k split);
    # 4-pixel padding with random 32x32 crops and horizontal flips.
    "paper": {
        "epochs": 182, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.1,
        "lr_batch_reference": 128, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
        "label_smoothing": 0.0, "schedule": "step", "warmup_fraction": 0.0, "step_at": [0.5, 0.75],
        "step_factor": 0.1, "augment": {"crop": 4, "flip": True, "cutout": 0, "mixup": 0.0},
    },
    # A short one-cycle recipe for a CPU hour or a GPU minute: Nesterov SGD, linear warm-up to
    # a high peak and linear decay to zero, label smoothing, the paper's augmentation.
    "fast": {
        "epochs": 15, "batch_size": 256, "optimizer": "sgd", "learning_rate": 0.1,
        "lr_batch_reference": 128, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
        "label_smoothing": 0.1, "schedule": "onecycle", "warmup_fraction": 0.2,
        "augment": {"crop": 4, "flip": True, "cutout": 0, "mixup": 0.0},
    },
    # Fine-tuning starting weights (model.pretrained) on a small dataset, as the Keras transfer
    # learning guide does it: the new classifier alone first, the pretrained network frozen with its
    # batch normalization in inference mode, so the random head's large early gradients cannot wreck
    # the features; then the whole network at half that rate (the default recipe's peak). A tenth
    # (1e-4), as the guide has it for ImageNet features, left features pretrained on another task
    # too far from the new one: bench/RESULTS.md, fine-tuning.
    "finetune": {
        "epochs": 10, "optimizer": "adam", "learning_rate": 0.004, "schedule": "cosine", "warmup_fraction": 0.0,
        "head_epochs": 1, "finetune_lr_factor": 0.5, "augment": {"crop": 4, "flip": True},
    },
}


def resolve(given: dict) -> dict:
    """DEFAULTS, then the preset `given` names, then `given` itself (augment merged key by key)."""
    preset = PRESETS.get(given.get("preset"), {})
    merged = {**DEFAULTS, **preset, **{k: v for k, v in given.items() if k != "preset"}}
    augment = given.get("augment")
    merged["augment"] = {**DEFAULTS["augment"], **preset.get("augment", {}),
                         **(augment if isinstance(augment, dict) else {})}
    if augment is not None and not isinstance(augment, dict):
        merged["augment"] = augment  # left for the validator to reject with the key's name
    return merged

"""The train stage: the trainer (`trainer.py`), the model it fits (`model.py`), its input pipeline
(`inputs.py`), and what a recipe is made of: schedules, augmentation, callbacks, checkpoints,
devices."""

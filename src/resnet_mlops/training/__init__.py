"""Training: the trainer and its callbacks."""

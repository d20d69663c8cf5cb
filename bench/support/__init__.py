"""What the benches share, so that no bench imports another bench or the tests.

- `scratch`: a throw-away copy of this project with given params, and its stages run as
  `resnet-mlops` runs them (the one place a bench builds a project);
- `models`: the trainer's training model on the trainer's device plan, and ResNet-20 as the
  code was before the CPU speedups of issue 5 (for the benches that time what they bought);
- `serving`: a registered CIFAR-shaped classifier, the CIFAR-10 test JPEGs and a real
  `resnet-mlops serve` process, for the serving bench;
- `torch_resnet20`: the same ResNet-20 in plain PyTorch, the CPU bench's reference.

Run a bench as `python bench/<name>.py`: Python then puts bench/ on the path, so `import support` finds
this package. Importing `support` or `support.scratch` imports neither Keras nor TensorFlow.
"""

"""resnet-mlops: train, evaluate, register and serve ResNet image classifiers (see README.md)."""

"""Evaluation: test-set metrics, the confusion matrix, plots."""

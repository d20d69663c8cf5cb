"""The evaluate stage (`evaluate.py`): test-set metrics, the confusion matrix and its plot."""

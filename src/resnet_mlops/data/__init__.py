"""The prepare stage: the sources, validation and the split (`prepare.py`). What it writes is
the prepared-dataset contract, in `resnet_mlops.dataset`."""

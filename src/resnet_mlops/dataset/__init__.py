"""The prepared-dataset contract: the files `prepare` writes and every later stage, the served
model and `predict` read (`prepared`, `tfrecords`), the image policy that makes pixels of image
files (`images`), and reading images out of archives in place (`archive`, `tarscan`)."""

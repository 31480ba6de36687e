"""Shared pytest set-up: quiet TensorFlow, two logical CPU devices for MirroredStrategy tests."""
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests build their datasets in temporary folders; a dataset the user built in tfds' default
# folder must not leak into a test (e.g. into the pixel spacing a trainer records).
os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="ctmri-tests-tfds-")

"""Shared pytest set-up: quiet TensorFlow, two logical CPU devices for MirroredStrategy tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

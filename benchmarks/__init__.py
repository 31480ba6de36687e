"""Speed and quality benchmarks (see benchmarks/README.md).

Imports ctmri_tf first, so that ``python -m benchmarks.<module>`` silences TensorFlow's
start-up noise before TensorFlow loads (``ctmri_tf.console``).
"""
import ctmri_tf  # noqa: F401

"""tensorflow-datasets builders (``datasets.ctmri``; ``python -m datasets.ctmri build``).

Imports ctmri_tf first, so that ``python -m datasets.<module>`` silences TensorFlow's
start-up noise before TensorFlow loads (``ctmri_tf.console``).
"""
import ctmri_tf  # noqa: F401

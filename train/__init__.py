"""The trainers: ``python -m train.stargan|cyclegan|segmentation|classifier``.

Imports ctmri_tf first, so that ``python -m train.<module>`` silences TensorFlow's
start-up noise before TensorFlow loads (``ctmri_tf.console``).
"""
import ctmri_tf  # noqa: F401

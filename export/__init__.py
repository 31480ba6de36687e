"""Export trained models for TF Serving, from the checkout: ``python -m export.saved_model``.
The code is ``ctmri_tf.export`` (``ctmri export`` anywhere).

Imports ctmri_tf first, so that ``python -m export.saved_model`` silences TensorFlow's
start-up noise before TensorFlow loads (``ctmri_tf.console``).
"""
import ctmri_tf  # noqa: F401

"""Export trained ctmri-tf models for TF Serving.

    saved_model  ``python -m export.saved_model``; ``export_stargan``, ``export_cyclegan``,
                 ``export_segmentation``, ``export_classifier``; versions and ``models.config``
    signatures   the ``tf.Module`` wrappers whose methods become the serving signatures
                 (physical units in and out, normalisation inside the graph)
"""
import ctmri_tf  # noqa: F401  (first: lets ``python -m export.saved_model`` silence TensorFlow's noise)

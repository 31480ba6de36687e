"""Export trained ctmri-tf models for TF Serving (``ctmri export``; from the checkout also
``python -m export.saved_model``).

    saved_model  ``export_run`` (a training run folder in); ``export_stargan``,
                 ``export_cyclegan``, ``export_segmentation``, ``export_classifier``; versions
                 and ``models.config``
    signatures   the ``tf.Module`` wrappers whose methods become the serving signatures
                 (physical units in and out, normalisation inside the graph)
"""

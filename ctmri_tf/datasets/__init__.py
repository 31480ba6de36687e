"""tensorflow-datasets builders of ctmri-tf, one folder per dataset (``ctmri_tf.datasets.ctmri``).

Installed as part of ``ctmri_tf``; the checkout's top-level ``datasets/ctmri/`` imports from
here (``python -m datasets.ctmri build`` from a clone, ``ctmri dataset build`` anywhere).
"""

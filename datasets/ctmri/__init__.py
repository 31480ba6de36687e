"""The ``ctmri`` tfds builder, from the checkout: ``python -m datasets.ctmri build``,
``tfds build ctmri --imports datasets.ctmri``. The code is ``ctmri_tf.datasets.ctmri`` (what
``pip install`` installs; ``ctmri dataset build`` and ``--imports ctmri_tf.datasets.ctmri``
work anywhere)."""
from ctmri_tf.datasets.ctmri import *  # noqa: F401,F403
from ctmri_tf.datasets.ctmri import Builder, CtmriConfig, synthetic_config  # noqa: F401

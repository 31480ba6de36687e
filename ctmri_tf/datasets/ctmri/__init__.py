"""The tfds ``ctmri`` dataset (CT and MRI slices, body masks, registered counterparts).

Importing this package registers the builder, so ``tfds.builder("ctmri/synthetic_small")`` and
``tfds.load("ctmri", ...)`` work. Build it with ``python -m datasets.ctmri build``.
"""
# Relative import: `tfds build datasets/ctmri` imports this folder as the package `ctmri`.
from .ctmri_dataset_builder import Builder, CtmriConfig, synthetic_config

__all__ = ["Builder", "CtmriConfig", "synthetic_config"]

"""A tiny synthetic ``ctmri`` dataset built once per test session.

    from dataset_fixtures import tiny_dataset  # noqa: F401  (pytest fixture)

``tiny_dataset`` is ``(config_name, data_dir)`` for the synthetic config
``synthetic_4x6x32``: 4 phantom subjects x 6 slices x 32 px. Phantom splits: subjects 0-1 train
(12 CT + 12 MRI slices), 2 validation, 3 test.
"""
from __future__ import annotations

import pytest

from ctmri_tf.datasets.ctmri import synthetic_config
from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build

TINY = dict(num_subjects=4, num_slices=6, image_size=32)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    config = synthetic_config(**TINY)
    data_dir = tmp_path_factory.mktemp("tfds")
    build(config, data_dir=data_dir)
    return config.name, data_dir

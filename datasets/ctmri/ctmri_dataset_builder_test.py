"""tfds' own builder checks (registration, generation, specs, split sizes, reload) for ctmri.

The ``folder`` configs read ``dummy_data/`` (written by ``make_dummy_data.py``): four subjects,
3 slices each, s01 and s02 paired -> train 12 slices, s03 CT only -> validation 3, s04 MRI only
-> test 3.

``tfds.testing`` imports ``dill`` (tensorflow-datasets' test extra); without it these checks are
skipped with that reason (tests/test_folder_dataset.py and tests/test_data.py build the same
configs without it).
"""
import pytest

pytest.importorskip("dill", reason="tfds.testing.DatasetBuilderTestCase needs dill "
                                   "(pip install dill)")

import tensorflow_datasets as tfds  # noqa: E402

from datasets.ctmri import ctmri_dataset_builder  # noqa: E402


class CtmriFolderTest(tfds.testing.DatasetBuilderTestCase):
    """``folder`` and ``folder_unpaired`` over dummy_data/ (PNG slices, Labelme, masks/)."""

    DATASET_CLASS = ctmri_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["folder", "folder_unpaired"]
    SPLITS = {"train": 12, "validation": 3, "test": 3}


class CtmriSyntheticSmallTest(tfds.testing.DatasetBuilderTestCase):
    """``synthetic_small``: 6 phantoms x 8 slices x 2 modalities; subjects 0-3 train,
    4 validation, 5 test."""

    DATASET_CLASS = ctmri_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["synthetic_small"]
    SPLITS = {"train": 4 * 8 * 2, "validation": 8 * 2, "test": 8 * 2}


if __name__ == "__main__":
    tfds.testing.test_main()

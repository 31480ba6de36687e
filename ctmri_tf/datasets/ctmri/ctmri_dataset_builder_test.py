"""tfds' own builder checks (registration, generation, specs, split sizes, reload) for ctmri.

The ``folder`` configs read ``dummy_data/`` (written by ``make_dummy_data.py``): four subjects,
3 slices each, s01 and s02 paired -> train 12 slices, s03 CT only -> validation 3, s04 MRI only
-> test 3.

``tfds.testing`` imports ``dill`` (tensorflow-datasets' test extra); without it these checks are
skipped with that reason (tests/test_folder_dataset.py and tests/test_data.py build the same
configs without it).
"""
from pathlib import Path

import pytest

pytest.importorskip("dill", reason="tfds.testing.DatasetBuilderTestCase needs dill "
                                   "(pip install dill)")

import tensorflow_datasets as tfds  # noqa: E402

from ctmri_tf.datasets.ctmri import ctmri_dataset_builder  # noqa: E402


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


def _files(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
            if f.is_file()}


def test_failed_overwrite_keeps_the_dataset_that_was_built(tmp_path, monkeypatch):
    config = ctmri_dataset_builder.synthetic_config(num_subjects=4, num_slices=2, image_size=32)
    first = ctmri_dataset_builder.build(config, data_dir=tmp_path)
    before = _files(tmp_path)
    examples = _count_examples(config, tmp_path)
    assert first.built and examples == first.num_examples

    real = ctmri_dataset_builder.Builder._iterate_subjects

    def fail_midway(self, desc, items, generate):
        yield from real(self, desc, items[:1], generate)  # some examples written, then:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ctmri_dataset_builder.Builder, "_iterate_subjects", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        ctmri_dataset_builder.build(config, data_dir=tmp_path, overwrite=True)
    # the first dataset is whole, byte for byte, loadable, and no temporary folder is left
    assert _files(tmp_path) == before
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if "rebuild" in p.name or "incomplete" in p.name or ".old-" in p.name) == []
    assert _count_examples(config, tmp_path) == examples
    again = ctmri_dataset_builder.build(config, data_dir=tmp_path)
    assert not again.built and again.num_examples == first.num_examples

    monkeypatch.undo()                                  # a rebuild that works replaces it
    rebuilt = ctmri_dataset_builder.build(config, data_dir=tmp_path, overwrite=True)
    assert rebuilt.built and rebuilt.data_path == first.data_path
    assert rebuilt.num_examples == first.num_examples
    assert _count_examples(config, tmp_path) == examples
    version = tmp_path / "ctmri" / config.name
    assert [p.name for p in version.iterdir()] == [Path(first.data_path).name]


def _count_examples(config, data_dir):
    builder = ctmri_dataset_builder.Builder(config=config, data_dir=data_dir)
    return {split: sum(1 for _ in builder.as_dataset(split=split))
            for split in builder.info.splits}


if __name__ == "__main__":
    tfds.testing.test_main()

"""Building the tfds ``ctmri`` dataset on Apache Beam (the ``beam`` extra) gives the same examples
as the plain in-process build.

The Beam builds need apache-beam (``pip install -e '.[beam]'``) and are skipped without it; the
plain build never needs it, and asking for Beam without it is a clear error (checked here when
apache-beam is absent).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ctmri_tf.errors import CtmriInputError
from ctmri_tf.datasets.ctmri import Builder
from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build, synthetic_config

HAS_BEAM = importlib.util.find_spec("apache_beam") is not None
needs_beam = pytest.mark.skipif(not HAS_BEAM, reason="apache-beam is not installed "
                                                     "(pip install -e '.[beam]')")
DUMMY_DATA = Path(__file__).resolve().parents[1] / "datasets" / "ctmri" / "dummy_data"
# 3 subjects -> train 0, validation 1, test 2; 2 slices x 2 modalities each; 32 px.
TINY = synthetic_config(3, 2, 32)


def read_splits(config, data_dir) -> dict[str, list[dict]]:
    builder = Builder(config=config, data_dir=str(data_dir))
    return {split: list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
            for split in builder.info.splits}


def assert_same_examples(plain: dict[str, list[dict]], beam: dict[str, list[dict]]):
    assert plain.keys() == beam.keys()
    for split in plain:
        assert len(beam[split]) == len(plain[split]), split
        # Both builds order examples by the hash of the same keys: same order, same values.
        for a, b in zip(plain[split], beam[split]):
            assert a.keys() == b.keys()
            for feature in a:
                np.testing.assert_array_equal(a[feature], b[feature],
                                              err_msg=f"{split}: {feature}")


@pytest.fixture
def transform_types(monkeypatch) -> list[type]:
    """The type of every ``_generate_examples`` result during the test."""
    seen: list[type] = []
    original = Builder._generate_examples

    def spy(self, split, items):
        result = original(self, split, items)
        seen.append(type(result))
        return result

    monkeypatch.setattr(Builder, "_generate_examples", spy)
    return seen


@needs_beam
def test_synthetic_beam_build_equals_plain_build(tmp_path, transform_types):
    import apache_beam as beam

    plain = build(TINY, data_dir=tmp_path / "plain")
    assert transform_types and not any(issubclass(t, beam.PTransform) for t in transform_types)
    transform_types.clear()
    on_beam = build(TINY, data_dir=tmp_path / "beam", beam=True)
    # Beam really generated it: one Create | FlatMap transform per split.
    assert len(transform_types) == 3
    assert all(issubclass(t, beam.PTransform) for t in transform_types)

    assert on_beam.num_examples == plain.num_examples == {"train": 4, "validation": 4,
                                                          "test": 4}
    assert_same_examples(read_splits(TINY, tmp_path / "plain"),
                         read_splits(TINY, tmp_path / "beam"))


@needs_beam
def test_folder_beam_build_equals_plain_build(tmp_path, transform_types):
    import apache_beam as beam

    plain = build("folder", data_dir=tmp_path / "plain", manual_dir=DUMMY_DATA)
    on_beam = build("folder", data_dir=tmp_path / "beam", manual_dir=DUMMY_DATA, beam=True,
                    beam_options="direct_num_workers=1")
    assert sum(issubclass(t, beam.PTransform) for t in transform_types) == 3
    assert on_beam.num_examples == plain.num_examples == {"train": 12, "validation": 3,
                                                          "test": 3}
    config = Builder.get_builder_config("folder")
    assert_same_examples(read_splits(config, tmp_path / "plain"),
                         read_splits(config, tmp_path / "beam"))


@pytest.mark.skipif(HAS_BEAM, reason="checks the message shown when apache-beam is missing")
def test_beam_without_apache_beam_says_how_to_install(tmp_path):
    with pytest.raises(CtmriInputError, match=r"pip install -e '\.\[beam\]'"):
        build(TINY, data_dir=tmp_path, beam=True)
    assert not (tmp_path / "ctmri").exists()

"""tf.data pipelines over a tiny synthetic ctmri dataset (4 phantoms x 6 slices x 32 px):
values against the phantom, masking, resizing/cropping, independent shuffles, pairing,
joint augmentation, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from dataset_fixtures import TINY, tiny_dataset  # noqa: F401  (session fixture)

from ctmri_tf import data, intensity, phantom
from ctmri_tf.errors import CtmriInputError

TRAIN_SUBJECTS = (0, 1)     # phantom.subject_split for 4 subjects
SLICES = TINY["num_slices"]
SIZE = TINY["image_size"]


@pytest.fixture(scope="module")
def truth():
    """Expected model-space slices of the train subjects, masked and unmasked, keyed by
    (subject_id, slice)."""
    ct, mri, ct_raw, mri_raw, masks, subjects = {}, {}, {}, {}, {}, {}
    for index in TRAIN_SUBJECTS:
        subject = phantom.make_subject(index, image_size=SIZE, num_slices=SLICES)
        scale = intensity.fit_mri_scale(subject.mri, mask=subject.mask)
        subjects[subject.subject_id] = (subject, scale)
        ct_unit = intensity.ct_to_unit(subject.ct)
        mri_unit = intensity.mri_to_unit(subject.mri, scale)
        for k in range(SLICES):
            key = (subject.subject_id, k)
            ct_raw[key], mri_raw[key], masks[key] = ct_unit[k], mri_unit[k], subject.mask[k]
            ct[key] = np.where(subject.mask[k] > 0, ct_unit[k], -1.0)
            mri[key] = np.where(subject.mask[k] > 0, mri_unit[k], -1.0)
    return {"ct": ct, "mri": mri, "ct_raw": ct_raw, "mri_raw": mri_raw, "mask": masks,
            "subjects": subjects}


def identify(image: np.ndarray, candidates: dict) -> tuple:
    """The key of the candidate equal (to float32 rounding) to ``image`` (H, W, 1)."""
    found = [key for key, c in candidates.items() if np.allclose(image[..., 0], c, atol=1e-5)]
    assert len(found) == 1, f"matched {found}"
    return found[0]


def batches(ds):
    return list(tfds.as_numpy(ds))


def kwargs(tiny):
    config, data_dir = tiny
    return {"config": config, "data_dir": data_dir}


def test_load_raw_examples_and_not_built_error(tiny_dataset, tmp_path):
    examples = batches(data.load("train", **kwargs(tiny_dataset)))
    assert len(examples) == len(TRAIN_SUBJECTS) * SLICES * 2
    first = examples[0]
    assert first["image"].dtype == np.float32 and first["image"].shape == (SIZE, SIZE)
    assert first["mask"].dtype == np.uint8
    with pytest.raises(CtmriInputError, match="python -m datasets.ctmri build --config "
                                              "synthetic_small") as info:
        data.load("train", config="synthetic_small", data_dir=tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unpaired_values_masking_and_independent_shuffles(tiny_dataset, truth):
    ds = data.unpaired_batches("train", 4, SIZE, seed=3, **kwargs(tiny_dataset))
    out = batches(ds)
    assert len(out) == 3                                       # 12 slices per side, batch 4
    assert out[0]["ct"].shape == (4, SIZE, SIZE, 1) and out[0]["ct"].dtype == np.float32
    ct_order = [identify(x, truth["ct"]) for b in out for x in b["ct"]]
    mri_order = [identify(x, truth["mri"]) for b in out for x in b["mri"]]
    assert sorted(ct_order) == sorted(truth["ct"]) == sorted(mri_order)  # each slice once
    assert ct_order != mri_order                  # the sides are shuffled independently
    assert ct_order != sorted(ct_order)           # and shuffled at all
    for b in out:                                  # background is exactly -1
        assert b["ct"].min() >= -1.0 and b["ct"].max() <= 1.0
    same = batches(data.unpaired_batches("train", 4, SIZE, seed=3, **kwargs(tiny_dataset)))
    other = batches(data.unpaired_batches("train", 4, SIZE, seed=4, **kwargs(tiny_dataset)))
    assert all(np.array_equal(a["ct"], b["ct"]) and np.array_equal(a["mri"], b["mri"])
               for a, b in zip(out, same))
    assert [identify(x, truth["ct"]) for b in other for x in b["ct"]] != ct_order


def test_unpaired_without_masking_keeps_the_background(tiny_dataset, truth):
    out = batches(data.unpaired_batches("train", 12, SIZE, mask_inputs=False, shuffle=False,
                                        **kwargs(tiny_dataset)))
    keys = [identify(x, truth["ct_raw"]) for x in out[0]["ct"]]
    assert len(set(keys)) == 12
    air = (-1000.0 + 1024.0) / 4024.0 * 2.0 - 1.0                    # -0.988: air, not -1
    background = out[0]["ct"][..., 0][np.stack([truth["mask"][k] for k in keys]) == 0]
    assert abs(np.median(background) - air) < 0.01


def test_resize_and_crop_to_the_model_size(tiny_dataset, truth):
    small = batches(data.paired_batches("train", 12, 16, shuffle=False, **kwargs(tiny_dataset)))
    assert small[0]["source"].shape == (12, 16, 16, 1)
    assert set(np.unique(small[0]["mask"])) <= {0.0, 1.0}                  # nearest for masks
    assert small[0]["source"].min() >= -1.0 and small[0]["source"].max() <= 1.0

    crop = batches(data.paired_batches("train", 12, 20, fit="crop", shuffle=False,
                                       **kwargs(tiny_dataset)))[0]
    full = batches(data.paired_batches("train", 12, SIZE, shuffle=False,
                                       **kwargs(tiny_dataset)))[0]
    np.testing.assert_array_equal(crop["source"], full["source"][:, 6:26, 6:26])
    np.testing.assert_array_equal(crop["mask"], full["mask"][:, 6:26, 6:26])

    pad = batches(data.paired_batches("train", 12, 40, fit="crop", shuffle=False,
                                      mask_inputs=False, **kwargs(tiny_dataset)))[0]
    assert (pad["source"][:, :4] == -1.0).all() and (pad["target"][:, :, -4:] == -1.0).all()
    assert (pad["mask"][:, :4] == 0.0).all()
    np.testing.assert_array_equal(pad["mask"][:, 4:36, 4:36], full["mask"])


def test_paired_target_is_the_registered_counterpart(tiny_dataset, truth):
    out = batches(data.paired_batches("train", 5, SIZE, source="mri", seed=1,
                                      **kwargs(tiny_dataset)))
    assert [len(b["source"]) for b in out] == [5, 5, 2]
    seen = set()
    for b in out:
        # back to physical units with the batch's own ranges
        hu = intensity.from_unit(b["target"], "ct", b["target_range"])
        for i in range(len(b["source"])):
            key = (b["subject_id"][i].decode(), int(b["slice_index"][i]))
            seen.add(key)
            subject, scale = truth["subjects"][key[0]]
            np.testing.assert_allclose(b["source"][i, ..., 0], truth["mri"][key], atol=1e-5)
            np.testing.assert_allclose(b["target"][i, ..., 0], truth["ct"][key], atol=1e-5)
            np.testing.assert_array_equal(b["mask"][i, ..., 0], subject.mask[key[1]])
            np.testing.assert_allclose(b["source_range"][i], [scale.low, scale.high], rtol=1e-6)
            np.testing.assert_array_equal(b["target_range"][i], intensity.CT_WINDOW_HU)
            body = subject.mask[key[1]] > 0
            expected_hu = np.clip(subject.ct[key[1]], *intensity.CT_WINDOW_HU)
            np.testing.assert_allclose(hu[i, ..., 0][body], expected_hu[body], atol=0.05)
    assert seen == set(truth["ct"])


def test_paired_ct_to_mri_and_drop_remainder(tiny_dataset, truth):
    out = batches(data.paired_batches("train", 5, SIZE, source="ct", drop_remainder=True,
                                      **kwargs(tiny_dataset)))
    assert [b["source"].shape[0] for b in out] == [5, 5]
    b = out[0]
    key = (b["subject_id"][0].decode(), int(b["slice_index"][0]))
    np.testing.assert_allclose(b["source"][0, ..., 0], truth["ct"][key], atol=1e-5)
    np.testing.assert_allclose(b["target"][0, ..., 0], truth["mri"][key], atol=1e-5)
    with pytest.raises(CtmriInputError, match="modality must be one of"):
        data.paired_batches("train", 5, SIZE, source="pet", **kwargs(tiny_dataset))


def body_agreement(images: np.ndarray, masks: np.ndarray, threshold: float) -> float:
    """Fraction of pixels where ``image > threshold`` agrees with the mask."""
    return float(np.mean((images > threshold) == (masks > 0.5)))


def test_segmentation_augmentation_keeps_image_and_mask_aligned(tiny_dataset):
    plain = batches(data.segmentation_batches("train", 12, SIZE, modality="ct", seed=2,
                                              **kwargs(tiny_dataset)))[0]
    augmented = batches(data.segmentation_batches("train", 12, SIZE, modality="ct", seed=2,
                                                  augment=True, **kwargs(tiny_dataset)))[0]
    images, masks = augmented
    assert images.shape == masks.shape == (12, SIZE, SIZE, 1)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert not np.array_equal(images, plain[0])                     # augmentation happened
    threshold = intensity.ct_to_unit(-500.0)                        # CT body threshold in HU
    assert body_agreement(*plain, threshold) > 0.99
    assert body_agreement(images, masks, threshold) > 0.98          # transformed together
    assert body_agreement(images, plain[1], threshold) < body_agreement(images, masks, threshold)
    again = batches(data.segmentation_batches("train", 12, SIZE, modality="ct", seed=2,
                                              augment=True, **kwargs(tiny_dataset)))[0]
    np.testing.assert_array_equal(again[0], images)                 # deterministic with a seed


def test_paired_augmentation_moves_source_target_and_mask_together(tiny_dataset):
    out = batches(data.paired_batches("train", 12, SIZE, source="mri", augment=True, seed=5,
                                      **kwargs(tiny_dataset)))[0]
    inside = out["mask"] > 0.5
    # masked inputs: outside the (augmented) mask both images are exactly background
    assert (out["source"][~inside] == -1.0).all() and (out["target"][~inside] == -1.0).all()
    assert body_agreement(out["target"], out["mask"], intensity.ct_to_unit(-500.0)) > 0.97


def test_modality_batches_labels_and_normalisation(tiny_dataset, truth):
    raw = batches(data.load("train", **kwargs(tiny_dataset)))
    out = batches(data.modality_batches("train", 24, SIZE, shuffle=False,
                                        **kwargs(tiny_dataset)))[0]
    images, labels = out
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [e["modality"] for e in raw])
    for x, e in zip(images, raw):
        key = (e["subject_id"].decode(), int(e["slice_index"]))
        physical = truth["subjects"][key[0]][0].ct if e["modality"] == 0 else (
            truth["subjects"][key[0]][0].mri)
        np.testing.assert_array_equal(e["image"], physical[key[1]])
        # each slice by its own percentiles (NumPy path), whatever its modality: as the
        # exported classify signature normalises a served image
        np.testing.assert_allclose(x[..., 0], intensity.percentile_to_unit(e["image"]),
                                   atol=1e-5)


def test_modality_cannot_be_read_off_the_classifier_inputs_value_range(tiny_dataset):
    """With the CT window, CT slices would top out near 0.4 (bone) while every MRI reaches +1:
    the range alone would give the label away. Normalised by their own percentiles, CT and MRI
    slices alike span exactly [-1, 1], with the background and masked inputs at -1."""
    for mask_inputs in (False, True):
        (images, labels), = batches(data.modality_batches(
            "train", 24, SIZE, shuffle=False, mask_inputs=mask_inputs, **kwargs(tiny_dataset)))
        assert sorted(labels.tolist()) == [0] * 12 + [1] * 12
        lows = images.reshape(len(images), -1).min(axis=1)
        highs = images.reshape(len(images), -1).max(axis=1)
        np.testing.assert_allclose(lows, -1.0, atol=1e-5)
        np.testing.assert_allclose(highs, 1.0, atol=1e-5)
    raw = batches(data.load("train", **kwargs(tiny_dataset)))
    window_highs = [intensity.ct_to_unit(e["image"]).max() for e in raw if e["modality"] == 0]
    assert max(window_highs) < 0.6       # what the CT window would have shown the classifier


def test_repeat_goes_past_one_epoch(tiny_dataset):
    ds = data.unpaired_batches("train", 4, SIZE, repeat=True, augment=True,
                               **kwargs(tiny_dataset))
    out = batches(ds.take(5))                                       # one epoch is 3 batches
    assert len(out) == 5 and all(b["ct"].shape == (4, SIZE, SIZE, 1) for b in out)
    with pytest.raises(CtmriInputError, match="fit must be one of"):
        data.unpaired_batches("train", 4, SIZE, fit="stretch", **kwargs(tiny_dataset))


def test_the_pixel_spacing_a_model_sees_is_recorded_and_resolved(tiny_dataset, tmp_path):
    """The phantom's pixels are 240 mm / 32 px = 7.5 mm; resized to 16 px the model sees 15 mm
    pixels, cropped it sees 7.5 mm. A trainer's config gets the resized value, and a dataset
    built without the metadata is measured instead."""
    import shutil

    import tensorflow_datasets as tfds_module

    from ctmri_tf import configs
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import Builder

    config, data_dir = tiny_dataset
    metadata = Builder(config=config, data_dir=data_dir).info.metadata
    assert metadata["pixel_spacing_mm"] == {"median": [7.5, 7.5], "min": [7.5, 7.5],
                                            "max": [7.5, 7.5]}
    assert metadata["field_of_view_mm"]["median"] == [240.0, 240.0]
    assert data.model_pixel_spacing(16, **kwargs(tiny_dataset)) == (15.0, 15.0)
    assert data.model_pixel_spacing((32, 64), **kwargs(tiny_dataset)) == (7.5, 3.75)
    assert data.model_pixel_spacing(16, fit="crop", **kwargs(tiny_dataset)) == (7.5, 7.5)

    stargan = configs.override(configs.get_config("stargan", "smoke"),
                               {"data.dataset_config": config, "data.data_dir": str(data_dir),
                                "data.image_size": 16})
    resolved = data.resolve_pixel_spacing(stargan)
    assert resolved.data.pixel_spacing_mm == (15.0, 15.0)
    assert configs.from_json(configs.to_json(resolved)) == resolved
    assert data.resolve_pixel_spacing(resolved) is resolved                 # set: kept
    missing = configs.override(stargan, {"data.data_dir": str(tmp_path / "none")})
    assert data.resolve_pixel_spacing(missing).data.pixel_spacing_mm == ()  # not built: unknown
    with pytest.raises(CtmriInputError, match="pixel_spacing_mm"):
        configs.override(stargan, {"data.pixel_spacing_mm": "1,-2"})

    old = tmp_path / "old"                           # built before metadata.json existed
    shutil.copytree(data_dir, old)
    for path in old.rglob("metadata.json"):
        path.unlink()
    assert Builder(config=config, data_dir=old).info.metadata.keys() == set()
    assert data.model_pixel_spacing(16, config=config, data_dir=old) == (15.0, 15.0)
    assert tfds_module.builder(f"ctmri/{config}", data_dir=old).is_prepared()


def test_a_new_or_resumed_run_records_the_pixel_spacing_in_config_json(tiny_dataset, tmp_path):
    import json

    from ctmri_tf.training import cli as common

    config, data_dir = tiny_dataset
    parser = common.build_parser("stargan", "test")
    flags = ["--data-dir", str(data_dir), "--dataset-config", config, "--image-size", "16"]
    prepared = common.prepare(parser.parse_args(["--preset", "smoke", "--run-dir",
                                                 str(tmp_path / "run"), *flags]), "stargan")
    written = json.loads(prepared.run.config_path.read_text())
    assert written["data"]["pixel_spacing_mm"] == [15.0, 15.0]
    assert prepared.config.data.pixel_spacing_mm == (15.0, 15.0)

    del written["data"]["pixel_spacing_mm"]              # a run started before it was recorded
    prepared.run.config_path.write_text(json.dumps(written))
    resumed = common.prepare(parser.parse_args(["--resume", "--run-dir", str(tmp_path / "run")]),
                             "stargan")
    assert resumed.config.data.pixel_spacing_mm == (15.0, 15.0)
    # written by the training loop once the checkpoint is restored (a failed resume leaves
    # config.json as it was)
    assert resumed.config_changed
    assert "pixel_spacing_mm" not in json.loads(resumed.run.config_path.read_text())["data"]

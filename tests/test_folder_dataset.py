"""The ``folder`` configs of the tfds ``ctmri`` builder over a manual_dir written with pydicom,
nibabel and OpenCV: HU preserved, masks from files / Labelme / automatic, pairing, modality
labels, splits by subject, and every layout error naming the file or folder."""
from __future__ import annotations

import json
from pathlib import Path

import medical_fixtures as fx
import numpy as np
import pytest
import tensorflow_datasets as tfds
from medical_fixtures import raises_naming

from ctmri_tf import data
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io import read_dicom
from ctmri_tf.datasets.ctmri import Builder, folder_layout
from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build

SIZE = 32
CT_SPACING = (2.0, 0.6, 0.5)                     # mm (slice, row, col)
NIFTI_AFFINE = np.diag([0.5, 0.6, 2.0, 1.0])     # (col, row, slice) -> mm: same voxel sizes
CT_WINDOW = (-1024.0, 3000.0)
LABELME_BOX = ((4, 5), (20, 27))                 # Labelme rectangle corners (x = col, y = row)


def ct_head(slices: int = 4) -> np.ndarray:
    """Integer HU: a rectangular head (bone rim 1000 HU, brain 40 HU, a lesion that changes
    with the slice) in air."""
    hu = np.full((slices, SIZE, SIZE), -1000.0)
    hu[:, 6:26, 8:24] = 1000.0
    hu[:, 8:24, 10:22] = 40.0
    for k in range(slices):
        hu[k, 12:14, 14:16] = 60.0 + 10.0 * k
    return hu


def mri_head(slices: int = 4) -> np.ndarray:
    """MR signal registered with :func:`ct_head`: dark bone, bright brain with a ramp."""
    signal = np.zeros((slices, SIZE, SIZE))
    signal[:, 6:26, 8:24] = 30.0
    ramp = np.arange(16 * 12, dtype=float).reshape(16, 12)
    for k in range(slices):
        signal[k, 8:24, 10:22] = 500.0 + ramp + 7.0 * k
    return signal


def mri_file_mask(slices: int = 4) -> np.ndarray:
    mask = np.zeros((slices, SIZE, SIZE), np.uint8)
    mask[:, 5:27, 7:25] = 1                       # not the automatic mask: proves it was read
    return mask


def write_labelme(json_path: Path, image_name: str, box=LABELME_BOX) -> Path:
    json_path.write_text(json.dumps({
        "version": "5.5.0", "flags": {}, "imagePath": image_name, "imageData": None,
        "imageHeight": SIZE, "imageWidth": SIZE,
        "shapes": [{"label": "body", "points": [list(box[0]), list(box[1])], "group_id": None,
                    "shape_type": "rectangle", "flags": {}}]}))
    return json_path


def write_manual_dir(root: Path) -> Path:
    """p01: CT DICOM + MRI NIfTI with mask.nii.gz (a registered pair); p02: CT PNG slices with
    Labelme JSON; p03: MRI PNG slices (automatic mask)."""
    fx.write_dicom_series(root / "ct" / "p01", ct_head(), modality="CT", spacing=CT_SPACING)
    fx.write_nifti(root / "mri" / "p01" / "t1.nii.gz", mri_head(), NIFTI_AFFINE)
    fx.write_nifti(root / "mri" / "p01" / "mask.nii.gz", mri_file_mask(), NIFTI_AFFINE,
                   dtype=np.uint8)
    for path in fx.write_png_slices(root / "ct" / "p02", ct_head(3), offset=1024):
        write_labelme(path.with_suffix(".json"), path.name)
    fx.write_png_slices(root / "mri" / "p03", mri_head(2), offset=0)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_dataset")
    manual_dir = write_manual_dir(root / "manual")
    data_dir = root / "tfds"
    report = build("folder", data_dir=data_dir, manual_dir=manual_dir)
    examples = {split: list(tfds.as_numpy(data.load(split, config="folder", data_dir=data_dir)))
                for split in report.num_examples}
    return report, examples, data_dir


def by_key(examples):
    return {(e["subject_id"].decode(), int(e["modality"]), int(e["slice_index"])): e
            for e in examples}


def test_splits_are_by_sorted_subject(built):
    report, examples, _ = built
    assert report.num_examples == {"train": 8, "validation": 3, "test": 2}
    subjects = {split: {e["subject_id"].decode() for e in ex} for split, ex in examples.items()}
    assert subjects == {"train": {"p01"}, "validation": {"p02"}, "test": {"p03"}}


def test_the_metadata_records_the_train_slices_geometry(built):
    """p01's CT and MRI (the train split) have 0.6 x 0.5 mm pixels, 32 x 32 of them."""
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import Builder

    _, _, data_dir = built
    metadata = Builder(config="folder", data_dir=data_dir).info.metadata
    np.testing.assert_allclose(metadata["pixel_spacing_mm"]["median"], CT_SPACING[1:])
    np.testing.assert_allclose(metadata["field_of_view_mm"]["max"],
                               np.array(CT_SPACING[1:]) * SIZE)
    np.testing.assert_allclose(data.model_pixel_spacing(16, config="folder", data_dir=data_dir),
                               np.array(CT_SPACING[1:]) * SIZE / 16, rtol=1e-6)


def test_ct_dicom_keeps_hounsfield_units_and_pairs_with_the_mri(built):
    _, examples, _ = built
    train = by_key(examples["train"])
    hu, signal, file_mask = ct_head(), mri_head(), mri_file_mask()
    mri_range = np.percentile(signal[file_mask > 0], [0.5, 99.5])
    for k in range(4):
        ct = train[("p01", 0, k)]
        np.testing.assert_array_equal(ct["image"], hu[k])          # exact HU, DICOM slice order
        np.testing.assert_array_equal(ct["mask"], hu[k] > -500)    # automatic CT body mask
        np.testing.assert_allclose(ct["pixel_spacing"], CT_SPACING[1:])
        np.testing.assert_array_equal(ct["intensity_range"], CT_WINDOW)
        assert ct["has_counterpart"]
        np.testing.assert_allclose(ct["counterpart"], signal[k], rtol=1e-6)
        np.testing.assert_allclose(ct["counterpart_range"], mri_range, rtol=1e-5)

        mri = train[("p01", 1, k)]
        np.testing.assert_allclose(mri["image"], signal[k], rtol=1e-6)
        np.testing.assert_array_equal(mri["mask"], file_mask[k])   # mask.nii.gz beside the NIfTI
        np.testing.assert_allclose(mri["pixel_spacing"], CT_SPACING[1:])
        np.testing.assert_allclose(mri["intensity_range"], mri_range, rtol=1e-5)
        assert mri["has_counterpart"]
        np.testing.assert_array_equal(mri["counterpart"], hu[k])
        np.testing.assert_array_equal(mri["counterpart_range"], CT_WINDOW)


def test_png_slices_with_labelme_masks_and_automatic_mri_masks(built):
    _, examples, _ = built
    (x1, y1), (x2, y2) = LABELME_BOX
    labelme_mask = np.zeros((SIZE, SIZE), np.uint8)
    labelme_mask[y1:y2 + 1, x1:x2 + 1] = 1          # rectangle, both corners included
    hu = ct_head(3)
    for e in examples["validation"]:
        k = int(e["slice_index"])
        assert e["modality"] == 0 and e["subject_id"] == b"p02"
        np.testing.assert_array_equal(e["image"], hu[k])   # 16-bit PNG = HU + 1024
        np.testing.assert_array_equal(e["mask"], labelme_mask)
        assert not e["has_counterpart"]
        np.testing.assert_array_equal(e["counterpart"], np.zeros((1, 1)))
        np.testing.assert_array_equal(e["counterpart_range"], [0.0, 0.0])
    signal = mri_head(2)
    for e in examples["test"]:
        k = int(e["slice_index"])
        assert e["modality"] == 1 and e["subject_id"] == b"p03"
        np.testing.assert_array_equal(e["image"], signal[k])
        np.testing.assert_array_equal(e["mask"], signal[k] > 0)  # Otsu + fill: the whole head


def test_keys_are_modality_subject_slice():
    volume = folder_layout.ModalityVolume(
        subject_id="p9", modality="ct", image=np.zeros((2, 3, 3), np.float32),
        mask=np.ones((2, 3, 3), np.uint8), pixel_spacing=(1.0, 1.0),
        intensity_range=CT_WINDOW, source=Path("x"), mask_source="test")
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import subject_examples
    assert [key for key, _ in subject_examples({"ct": volume}, pair=True)] == [
        "ct/p9/0000", "ct/p9/0001"]


# ------------------------------------------------------------------------------------ errors

def test_missing_or_empty_manual_dir_is_named(tmp_path):
    with raises_naming(tmp_path / "absent", "does not exist"):
        build("folder", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with raises_naming(tmp_path / "empty", "is empty"):
        build("folder", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "empty")
    (tmp_path / "readme_only").mkdir()
    (tmp_path / "readme_only" / "README.txt").write_text("scans")
    with raises_naming(tmp_path / "readme_only", "no 'ct' or 'mri' folder"):
        folder_layout.scan_manual_dir(tmp_path / "readme_only")


@pytest.mark.parametrize("name, hint", [("CT", "rename it to 'ct'"), ("mr", "rename it to 'mri'"),
                                        ("pet", "only folders allowed")])
def test_unknown_top_level_folder(tmp_path, name, hint):
    fx.write_png_slices(tmp_path / name / "p01", ct_head(1), offset=1024)
    with raises_naming(tmp_path / name, hint):
        folder_layout.scan_manual_dir(tmp_path)


def test_empty_subject_folder_and_file_instead_of_subject(tmp_path):
    (tmp_path / "ct" / "p01").mkdir(parents=True)
    with raises_naming(tmp_path / "ct" / "p01", "subject folder is empty"):
        folder_layout.scan_manual_dir(tmp_path)
    (tmp_path / "ct" / "p01").rmdir()
    fx.write_nifti(tmp_path / "ct" / "scan.nii.gz", ct_head(1))
    with raises_naming(tmp_path / "ct" / "scan.nii.gz", "its own folder"):
        folder_layout.scan_manual_dir(tmp_path)


def load_only_subject(manual_dir: Path, modality: str, subject: str = "p01"):
    return folder_layout.load_subject_folder(
        folder_layout.scan_manual_dir(manual_dir)[subject][modality])


def test_nifti_mask_of_another_size_names_both_files(tmp_path):
    fx.write_nifti(tmp_path / "mri" / "p01" / "t1.nii", mri_head(), NIFTI_AFFINE)
    fx.write_nifti(tmp_path / "mri" / "p01" / "mask.nii.gz", mri_file_mask(3), NIFTI_AFFINE)
    with raises_naming(tmp_path / "mri" / "p01" / "mask.nii.gz", "t1.nii") as info:
        load_only_subject(tmp_path, "mri")
    assert "(3, 32, 32)" in str(info.value) and "(4, 32, 32)" in str(info.value)


def test_slice_mask_of_another_size_names_both_files(tmp_path):
    folder = tmp_path / "ct" / "p01"
    fx.write_png_slices(folder, ct_head(2), offset=1024)
    (folder / "masks").mkdir()
    fx.write_png_slices(folder / "masks", np.ones((1, SIZE, SIZE)), bits=8, offset=0)
    fx.write_png_slices(folder / "masks", np.ones((1, 16, SIZE)), bits=8, offset=0,
                        prefix="slice_2")
    (folder / "masks" / "slice_21.png").rename(folder / "masks" / "slice_2.png")
    with raises_naming(folder / "masks" / "slice_2.png", str(folder / "slice_2.png")):
        load_only_subject(tmp_path, "ct")


def test_slice_masks_folder_is_read(tmp_path):
    folder = tmp_path / "ct" / "p01"
    fx.write_png_slices(folder, ct_head(2), offset=1024)
    masks = np.zeros((2, SIZE, SIZE))
    masks[0, 1:4, 2:9] = 255
    masks[1, 10:30, 0:5] = 255
    fx.write_png_slices(folder / "masks", masks, bits=8, offset=0)
    np.testing.assert_array_equal(load_only_subject(tmp_path, "ct").mask, masks > 0)


def test_dicom_mask_on_the_image_grid_and_off_it(tmp_path):
    folder = tmp_path / "ct" / "p01"
    fx.write_dicom_series(folder, ct_head(), modality="CT", spacing=CT_SPACING)
    mask = mri_file_mask()
    fx.write_nifti(folder / "mask.nii.gz", mask, read_dicom(folder).affine, dtype=np.uint8)
    np.testing.assert_array_equal(load_only_subject(tmp_path, "ct").mask, mask)
    fx.write_nifti(folder / "mask.nii.gz", mask, np.eye(4), dtype=np.uint8)
    with raises_naming(folder / "mask.nii.gz", "another position or orientation"):
        load_only_subject(tmp_path, "ct")


def test_dicom_subject_folder_with_a_localizer_reads_the_axial_series(tmp_path):
    from ctmri_tf.errors import CtmriInputWarning

    folder = tmp_path / "ct" / "p01"
    uids = dict(study_uid="1.2.826.0.1.9", frame_uid="1.2.826.0.1.9.0")
    fx.write_dicom_series(folder, ct_head(1)[:, :20], modality="CT", name_prefix="SCOUT",
                          series_uid="1.2.826.0.1.9.1", orientation=(0, 1, 0, 0, 0, -1),
                          ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], **uids)
    fx.write_dicom_series(folder, ct_head(), modality="CT", spacing=CT_SPACING,
                          series_uid="1.2.826.0.1.9.2", **uids)
    with pytest.warns(CtmriInputWarning, match="1.2.826.0.1.9.1.*localizer"):
        subject = load_only_subject(tmp_path, "ct")
    np.testing.assert_array_equal(subject.image, ct_head())
    assert subject.pixel_spacing == pytest.approx(CT_SPACING[1:])


def test_ct_dicom_under_mri_names_the_file(tmp_path):
    paths = fx.write_dicom_series(tmp_path / "mri" / "p01", ct_head(2), modality="CT")
    with pytest.raises(CtmriInputError, match="DICOM Modality is 'CT'.*move the series to "
                                              "ct/p01/") as info:
        load_only_subject(tmp_path, "mri")
    assert info.value.path in {str(p) for p in paths}


def test_labelme_for_some_slices_only_names_the_unannotated_slice(tmp_path):
    paths = fx.write_png_slices(tmp_path / "ct" / "p01", ct_head(2), offset=1024)
    write_labelme(paths[0].with_suffix(".json"), paths[0].name)
    with raises_naming(paths[1], "no Labelme annotation"):
        folder_layout.scan_manual_dir(tmp_path)


def test_unregistered_pair_fails_without_leaving_a_dataset_and_builds_unpaired(tmp_path):
    manual_dir = tmp_path / "manual"
    fx.write_dicom_series(manual_dir / "ct" / "p01", ct_head(4), modality="CT")
    fx.write_nifti(manual_dir / "mri" / "p01" / "t1.nii.gz", mri_head(3))
    fx.write_png_slices(manual_dir / "mri" / "p02", mri_head(2), offset=0)
    data_dir = tmp_path / "tfds"
    with raises_naming(manual_dir / "ct" / "p01", "folder_unpaired") as info:
        build("folder", data_dir=data_dir, manual_dir=manual_dir)
    assert str(manual_dir / "mri" / "p01") in str(info.value)
    assert not Builder(config="folder", data_dir=data_dir).is_prepared()
    config_dir = data_dir / "ctmri" / "folder"
    assert not config_dir.exists() or list(config_dir.iterdir()) == []  # no version, no leftovers

    # Two subjects: train and test; tfds cannot write an empty split, so there is no validation.
    report = build("folder_unpaired", data_dir=data_dir, manual_dir=manual_dir)
    assert report.num_examples == {"train": 4 + 3, "test": 2}
    train = list(tfds.as_numpy(data.load("train", config="folder_unpaired", data_dir=data_dir)))
    assert not any(e["has_counterpart"] for e in train)
    assert sorted(int(e["modality"]) for e in train) == [0] * 4 + [1] * 3

"""DICOM reading (HU, slice order, geometry, bad input) and writing (round trips, atomicity)."""
from __future__ import annotations

import warnings

import medical_fixtures as fx
from medical_fixtures import raises_naming
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (BasicTextSRStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit,
                         generate_uid)

from ctmri_tf import translate
from ctmri_tf.body_mask import body_mask
from ctmri_tf.errors import CtmriInputWarning
from ctmri_tf.io import Volume, read_dicom, read_volume, write_dicom_series
from ctmri_tf.io.volume import modality_from_dicom


def ct_volume(slices=4, rows=5, cols=6):
    """Integer HU, different in every voxel: 100 * slice + 10 * row + col - 1000."""
    k, r, c = np.meshgrid(np.arange(slices), np.arange(rows), np.arange(cols), indexing="ij")
    return (100 * k + 10 * r + c - 1000).astype(np.float64)


# ----------------------------------------------------------------------------------- reading

def test_ct_series_hu_order_spacing_affine(tmp_path):
    hu = ct_volume()
    paths = fx.write_dicom_series(tmp_path / "ct", hu, spacing=(2.0, 0.6, 0.5),
                                  origin=(-8.0, -8.0, 30.0))
    names_in_slice_order = [p.name for p in paths]
    assert names_in_slice_order != sorted(names_in_slice_order)  # file names do not give the order

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ordinary series reads without any warning
        volume = read_dicom(tmp_path / "ct")

    assert volume.data.dtype == np.float32 and volume.data.shape == (4, 5, 6)
    np.testing.assert_array_equal(volume.data, hu)  # stored uint16 * 1 - 1024, exact
    assert volume.modality == "ct"
    assert volume.spacing == pytest.approx((2.0, 0.6, 0.5))
    # LPS columns (0.5, 0, 0), rows (0, 0.6, 0), slices (0, 0, 2), origin (-8, -8, 30) -> RAS.
    expected = np.array([[-0.5, 0.0, 0.0, 8.0],
                         [0.0, -0.6, 0.0, 8.0],
                         [0.0, 0.0, 2.0, 30.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-9)
    # voxel (col 2, row 3, slice 1) -> LPS (-7, -6.2, 32) -> RAS (7, 6.2, 32)
    np.testing.assert_allclose(volume.affine @ [2, 3, 1, 1], [7.0, 6.2, 32.0, 1.0])
    assert volume.meta["files"] == [str(p) for p in paths]
    assert volume.meta["ordering"] == "position"
    assert volume.meta["rescale"] == [(1.0, -1024.0)] * 4
    np.testing.assert_array_equal(volume.meta["slice_positions"],
                                  [[-8.0, -8.0, 30.0 + 2.0 * k] for k in range(4)])
    assert volume.meta["uniform_spacing"] is True and volume.meta["gantry_tilt_deg"] == 0.0
    assert volume.meta["padding"] is None and volume.meta["skipped"] == []
    assert "PixelData" not in volume.meta["header"]
    assert volume.meta["header"].PatientID == "PHANTOM001"
    assert volume.source == str(tmp_path / "ct")


def test_position_wins_over_instance_number(tmp_path):
    hu = ct_volume()
    fx.write_dicom_series(tmp_path / "ct", hu, instance_numbers=[4, 3, 2, 1])
    volume = read_dicom(tmp_path / "ct")
    np.testing.assert_array_equal(volume.data, hu)


def test_sagittal_slices_sorted_along_normal(tmp_path):
    # Rows run posterior (+y LPS), columns run inferior (-z): normal = (0,1,0) x (0,0,-1) = (-1,0,0)
    # so slice k sits at x = 10 - 2k. All z equal: sorting by z (or by +x) would fail.
    hu = ct_volume(slices=3)
    fx.write_dicom_series(tmp_path / "sag", hu, spacing=(2.0, 0.6, 0.5),
                          orientation=(0, 1, 0, 0, 0, -1), origin=(10.0, -8.0, 30.0))
    volume = read_dicom(tmp_path / "sag")
    np.testing.assert_array_equal(volume.data, hu)
    expected = np.array([[0.0, 0.0, 2.0, -10.0],
                         [-0.5, 0.0, 0.0, 8.0],
                         [0.0, -0.6, 0.0, 30.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-9)


def test_instance_number_fallback_without_positions(tmp_path):
    hu = ct_volume()
    fx.write_dicom_series(tmp_path / "ct", hu, spacing=(3.0, 0.5, 0.5),
                          ImagePositionPatient=None)
    volume = read_dicom(tmp_path / "ct")
    assert volume.meta["ordering"] == "instance_number"
    np.testing.assert_array_equal(volume.data, hu)
    assert volume.spacing == pytest.approx((3.0, 0.5, 0.5))  # from SliceThickness
    np.testing.assert_allclose(volume.affine[:3, 2], [0.0, 0.0, 3.0])


def test_no_positions_and_repeated_instance_numbers_is_an_error(tmp_path):
    fx.write_dicom_series(tmp_path / "ct", ct_volume(), instance_numbers=[1, 1, 2, 3],
                          ImagePositionPatient=None)
    with raises_naming(tmp_path / "ct", match="InstanceNumber"):
        read_dicom(tmp_path / "ct")


def test_mr_without_rescale_tags_is_raw_signal(tmp_path):
    signal = ct_volume() + 1000  # 0..417, MR signal
    fx.write_dicom_series(tmp_path / "mr", signal, modality="MR")
    assert "RescaleSlope" not in fx.read_dicom_header(next((tmp_path / "mr").iterdir()))
    volume = read_dicom(tmp_path / "mr")
    assert volume.modality == "mri"
    np.testing.assert_array_equal(volume.data, signal)


def test_mr_rescale_applied(tmp_path):
    stored = ct_volume() + 1000
    signal = stored * 0.5 + 10.0
    fx.write_dicom_series(tmp_path / "mr", signal, modality="MR", rescale=(0.5, 10.0))
    np.testing.assert_array_equal(read_dicom(tmp_path / "mr").data, signal)


def test_modality_mapping():
    assert modality_from_dicom("CT") == "ct"
    assert modality_from_dicom("MR") == "mri"
    assert modality_from_dicom("PT") is None
    assert modality_from_dicom(None) is None


def test_single_file_and_read_volume_dispatch(tmp_path):
    hu = ct_volume()
    paths = fx.write_dicom_series(tmp_path / "ct", hu, spacing=(2.5, 0.5, 0.5))
    one = read_volume(paths[2])  # no extension: recognised by its DICM marker
    assert one.meta["ordering"] == "single"
    np.testing.assert_array_equal(one.data, hu[2:3])
    assert one.spacing == pytest.approx((2.5, 0.5, 0.5))  # SliceThickness
    np.testing.assert_allclose(one.affine[:3, 3], [8.0, 8.0, 30.0 + 2 * 2.5])
    (tmp_path / "ct" / "README.txt").write_text("exported from PACS")
    np.testing.assert_array_equal(read_volume(tmp_path / "ct").data, hu)
    with raises_naming(tmp_path / "ct", match="'ct' but modality='mri'"):
        read_volume(tmp_path / "ct", modality="mri")


def test_hidden_files_dicomdir_and_non_dicom_are_skipped(tmp_path):
    hu = ct_volume()
    folder = tmp_path / "ct"
    fx.write_dicom_series(folder, hu)
    other = fx.write_dicom_series(tmp_path / "other", ct_volume(slices=1))  # another series
    (folder / ".IM_hidden").write_bytes(other[0].read_bytes())
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    (folder / "notes.txt").write_text("not an image")
    np.testing.assert_array_equal(read_dicom(folder).data, hu)


# ------------------------------------------------------------------------------- bad input

def test_missing_rescale_intercept_on_ct(tmp_path):
    paths = fx.write_dicom_series(tmp_path / "ct", ct_volume(), RescaleIntercept=None)
    with raises_naming(paths[0], match="RescaleIntercept"):
        read_dicom(tmp_path / "ct")


def test_not_dicom_file(tmp_path):
    path = tmp_path / "scan.dcm"
    path.write_text("this is not DICOM")
    with raises_naming(path, match="not a DICOM file"):
        read_dicom(path)


def test_truncated_pixel_data_names_the_file(tmp_path):
    paths = fx.write_dicom_series(tmp_path / "ct", ct_volume())
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-30])
    with raises_naming(paths[1], match="cannot be decoded"):
        read_dicom(tmp_path / "ct")


def test_truncated_header_names_the_file(tmp_path):
    paths = fx.write_dicom_series(tmp_path / "ct", ct_volume())
    paths[3].write_bytes(paths[3].read_bytes()[:300])
    with raises_naming(paths[3], match="without pixel data"):
        read_dicom(tmp_path / "ct")


def test_structured_report_has_no_pixel_data(tmp_path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    path = tmp_path / "report.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    with raises_naming(path, match="without pixel data.*Basic Text SR"):
        read_dicom(path)


def test_undecodable_compressed_pixel_data(tmp_path):
    paths = fx.write_dicom_series(tmp_path / "ct", ct_volume())
    ds = pydicom.dcmread(paths[0])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not really a jpeg"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(paths[0], enforce_file_format=True)
    with raises_naming(paths[0], match="cannot be decoded.*JPEG Baseline"):
        read_dicom(tmp_path / "ct")


def test_mixed_study_uids_names_both(tmp_path):
    folder = tmp_path / "mixed"
    fx.write_dicom_series(folder, ct_volume(slices=2), study_uid="1.2.3.4.1")
    other = fx.write_dicom_series(folder, ct_volume(slices=3), study_uid="1.2.3.4.2",
                                  name_prefix="B")
    with raises_naming(folder, match="StudyInstanceUID.*--series") as info:
        read_dicom(folder)
    assert "1.2.3.4.1" in str(info.value) and "1.2.3.4.2" in str(info.value)
    chosen = str(fx.read_dicom_header(other[0]).SeriesInstanceUID)  # choosing a series is enough
    assert read_dicom(folder, series_uid=chosen).meta["study_instance_uid"] == "1.2.3.4.2"


def test_two_equally_large_series_name_both_and_ask_for_one(tmp_path):
    folder = tmp_path / "mixed"
    fx.write_dicom_series(folder, ct_volume(slices=2), study_uid="1.2.3", series_uid="1.2.3.7")
    fx.write_dicom_series(folder, ct_volume(slices=2), study_uid="1.2.3", series_uid="1.2.3.8",
                          name_prefix="B")
    with raises_naming(folder, match="SeriesInstanceUIDs of 2 slices.*--series UID") as info:
        read_dicom(folder)
    assert "1.2.3.7" in str(info.value) and "1.2.3.8" in str(info.value)
    assert read_dicom(folder, series_uid="1.2.3.8").meta["series_instance_uid"] == "1.2.3.8"


def test_different_rows_columns_names_the_odd_file(tmp_path):
    folder = tmp_path / "ct"
    uids = dict(study_uid="1.2.3", series_uid="1.2.3.1", frame_uid="1.2.3.2")
    fx.write_dicom_series(folder, ct_volume(slices=3), **uids)
    odd = fx.write_dicom_series(folder, ct_volume(slices=1, cols=7), origin=(-8, -8, 40.0),
                                name_prefix="X", **uids)
    with raises_naming(odd[0], match="Rows x Columns 5 x 7"):
        read_dicom(folder)


def test_tilted_orientation_in_one_file_is_named(tmp_path):
    folder = tmp_path / "ct"
    uids = dict(study_uid="1.2.3", series_uid="1.2.3.1", frame_uid="1.2.3.2")
    fx.write_dicom_series(folder, ct_volume(slices=3), **uids)
    odd = fx.write_dicom_series(folder, ct_volume(slices=1), origin=(-8, -8, 36.0),
                                orientation=(1, 0, 0, 0, 0.6, 0.8), name_prefix="X", **uids)
    with raises_naming(odd[0], match="ImageOrientationPatient"):
        read_dicom(folder)


def test_duplicate_positions_name_both_files(tmp_path):
    folder = tmp_path / "ct"
    uids = dict(study_uid="1.2.3", series_uid="1.2.3.1", frame_uid="1.2.3.2")
    paths = fx.write_dicom_series(folder, ct_volume(slices=3), **uids)
    duplicate = fx.write_dicom_series(folder, ct_volume(slices=1), origin=(-8, -8, 32.0),
                                      name_prefix="DUP", **uids)
    with raises_naming(folder, match="same position") as info:
        read_dicom(folder)
    assert paths[1].name in str(info.value) and duplicate[0].name in str(info.value)


def test_missing_slice_is_read_at_the_true_positions_with_a_warning(tmp_path):
    hu = ct_volume(slices=5)
    paths = fx.write_dicom_series(tmp_path / "ct", hu)
    paths[2].unlink()
    with pytest.warns(CtmriInputWarning, match="not uniform.*missing slice") as record:
        volume = read_dicom(tmp_path / "ct")
    message = str(record[0].message)
    assert message.startswith(str(tmp_path / "ct"))
    assert paths[1].name in message and paths[3].name in message
    np.testing.assert_array_equal(volume.data, hu[[0, 1, 3, 4]])
    np.testing.assert_array_equal(volume.meta["slice_positions"],
                                  [fx.read_dicom_header(p).ImagePositionPatient
                                   for p in np.array(paths)[[0, 1, 3, 4]]])
    assert volume.meta["uniform_spacing"] is False
    assert volume.spacing[0] == pytest.approx(2.0)  # the median gap


def test_nan_after_rescale_counts_voxels(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that 'NaN' is not a valid DS
        paths = fx.write_dicom_series(tmp_path / "ct", ct_volume(), RescaleSlope="NaN")
        with raises_naming(paths[0], match="30 NaN and 0 infinite"):
            read_dicom(tmp_path / "ct")


def test_multi_frame_is_refused(tmp_path):
    paths = fx.write_dicom_series(tmp_path / "ct", ct_volume(slices=1), NumberOfFrames=3)
    with raises_naming(paths[0], match="multi-frame.*without per-frame geometry"):
        read_dicom(paths[0])


def test_empty_folder_and_folder_without_dicom(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with raises_naming(empty, match="no DICOM"):
        read_dicom(empty)
    (empty / "README.txt").write_text("hello")
    (empty / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with raises_naming(empty, match="no DICOM"):
        read_dicom(empty)
    with raises_naming(tmp_path / "nope", match="does not exist"):
        read_dicom(tmp_path / "nope")


# ----------------------------------------------------------------------------------- writing

def test_ct_round_trip_keeps_hu_order_affine_and_patient(tmp_path):
    hu = ct_volume()
    paths = fx.write_dicom_series(tmp_path / "ct", hu, spacing=(2.0, 0.6, 0.5))
    before = fx.file_states([tmp_path / "ct"])
    original = read_dicom(tmp_path / "ct")

    out = write_dicom_series(original, tmp_path / "synth", modality="ct", reference=original)

    assert out == tmp_path / "synth"
    assert fx.file_states([tmp_path / "ct"]) == before  # inputs untouched
    back = read_dicom(out)
    np.testing.assert_array_equal(back.data, hu)
    np.testing.assert_allclose(back.affine, original.affine, atol=1e-9)
    assert back.spacing == pytest.approx(original.spacing)
    assert back.modality == "ct"
    headers = [fx.read_dicom_header(f) for f in back.meta["files"]]
    assert [h.InstanceNumber for h in headers] == [1, 2, 3, 4]
    src = fx.read_dicom_header(paths[0])
    first = headers[0]
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert first.Modality == "CT" and first.SOPClassUID == src.SOPClassUID
    assert "ctmri-tf" in first.SeriesDescription
    assert (first.PatientName, first.PatientID, first.PatientBirthDate) == (
        "Phantom^Head", "PHANTOM001", "19700101")
    assert first.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert first.StudyInstanceUID != src.StudyInstanceUID
    assert first.SeriesInstanceUID != src.SeriesInstanceUID
    assert len({h.SOPInstanceUID for h in headers} | {src.SOPInstanceUID}) == 5
    assert all(h.StudyInstanceUID == first.StudyInstanceUID for h in headers)
    assert (first.BitsAllocated, first.PixelRepresentation) == (16, 1)  # int16
    assert pydicom.dcmread(back.meta["files"][0]).pixel_array.dtype == np.int16


def test_fractional_ct_is_rounded_to_whole_hu(tmp_path):
    hu = ct_volume() + 0.3
    volume = Volume(hu.astype(np.float32), "ct", (2.0, 1.0, 1.0), np.diag([1.0, 1.0, 2.0, 1.0]))
    back = read_dicom(write_dicom_series(volume, tmp_path / "out", modality="ct"))
    np.testing.assert_array_equal(back.data, np.rint(hu))


def test_mr_float_oblique_round_trip_within_quantisation(tmp_path):
    rng = np.random.default_rng(1)
    signal = rng.uniform(0.0, 1234.5, size=(3, 5, 6)).astype(np.float32)
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0],
                         [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 0.7, 3.0])
    affine[:3, 3] = [12.5, -40.25, 7.0]
    volume = Volume(signal, "mri", (3.0, 0.7, 0.9), affine)

    back = read_dicom(write_dicom_series(volume, tmp_path / "mr", modality="mri"))

    slope, intercept = back.meta["rescale"][0]
    assert intercept == 0.0 and slope <= 1234.5 / 32767 * 1.000001
    assert np.abs(back.data - signal).max() <= slope / 2 + 1e-4
    assert back.modality == "mri" and back.meta["header"].Modality == "MR"
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert back.spacing == pytest.approx((3.0, 0.7, 0.9))


def test_slices_against_the_normal_read_back_reversed_same_geometry(tmp_path):
    hu = ct_volume()
    affine = np.diag([0.5, 0.5, -2.0, 1.0])  # slice axis points inferior, normal superior
    volume = Volume(hu.astype(np.float32), "ct", (2.0, 0.5, 0.5), affine)
    back = read_dicom(write_dicom_series(volume, tmp_path / "out", modality="ct"))
    np.testing.assert_array_equal(back.data, hu[::-1])
    for k in range(4):
        np.testing.assert_allclose(back.affine @ [1, 2, 3 - k, 1], affine @ [1, 2, k, 1])


def test_existing_output_refused_and_failed_write_leaves_nothing(tmp_path, monkeypatch):
    fx.write_dicom_series(tmp_path / "ct", ct_volume())
    volume = read_dicom(tmp_path / "ct")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with raises_naming(out, match="already exists"):
        write_dicom_series(volume, out, modality="ct")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with raises_naming(tmp_path / "ct", match="input"):
        write_dicom_series(volume, tmp_path / "ct", modality="ct", overwrite=True)

    calls = []

    def failing_write(path, ds, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(path, ds, **kwargs)

    real_write = pydicom.dcmwrite
    monkeypatch.setattr(pydicom, "dcmwrite", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(volume, tmp_path / "new", modality="ct")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "out"]  # no partial output

    nan = Volume(np.full((2, 3, 3), np.nan, np.float32), "ct", (1.0, 1.0, 1.0), np.eye(4))
    with raises_naming(tmp_path / "nan", match="18 NaN"):
        write_dicom_series(nan, tmp_path / "nan", modality="ct")
    assert not (tmp_path / "nan").exists()

    write_dicom_series(volume, out, modality="ct", overwrite=True)
    np.testing.assert_array_equal(read_dicom(out).data, volume.data)


# ------------------------------------------------------------------ real-world series quirks

def _positions_in_files(folder):
    """ImagePositionPatient of every file in ``folder`` as float, sorted along z."""
    positions = [[float(v) for v in fx.read_dicom_header(f).ImagePositionPatient]
                 for f in sorted(folder.iterdir())]
    return np.array(sorted(positions, key=lambda p: p[2]))


def _ge_tilted_two_stacks(folder, *, slices_4mm=5, slices_7mm=3, tilt_deg=15.0):
    """A GE-like head CT: gantry tilted by ``tilt_deg``, a 4.0 mm stack then a 7.0 mm stack
    (gaps along the slice normal). Returns (HU volume, LPS positions, orientation)."""
    gaps = (4.0,) * (slices_4mm - 1) + (7.0,) * slices_7mm
    orientation, positions = fx.tilted_two_stack_geometry(gaps, tilt_deg)
    hu = ct_volume(slices=len(positions))
    fx.write_dicom_series(folder, hu, spacing=(4.0, 0.6, 0.5), orientation=orientation,
                          positions=positions, GantryDetectorTilt=tilt_deg,
                          thicknesses=[4.0] * slices_4mm + [7.0] * slices_7mm)
    return hu, positions, orientation


def test_ge_tilted_two_stack_ct_reads_every_slice_at_its_own_position(tmp_path):
    folder = tmp_path / "ge_head"
    hu, positions, orientation = _ge_tilted_two_stacks(folder)

    with pytest.warns(CtmriInputWarning) as record:
        volume = read_dicom(folder)

    np.testing.assert_array_equal(volume.data, hu)
    np.testing.assert_array_equal(volume.meta["slice_positions"], positions)  # exactly the files'
    assert volume.meta["slice_thickness"] == [4.0] * 5 + [7.0] * 3
    assert volume.meta["uniform_spacing"] is False
    assert volume.meta["gantry_tilt_deg"] == pytest.approx(15.0, abs=1e-6)
    assert volume.spacing == pytest.approx((4.0, 0.6, 0.5))  # median gap along the normal, true
    messages = [str(w.message) for w in record]
    tilt = [m for m in messages if "gantry tilt" in m]
    assert len(tilt) == 1 and tilt[0].startswith(str(folder)) and "15.00 degrees" in tilt[0]
    assert any("not uniform" in m and "4, 7 mm" in m for m in messages)
    # Affine: slice 0 exact; the slice axis follows the table (LPS z), i.e. the shear is kept,
    # scaled so that one voxel step is the median 4 mm along the normal.
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    np.testing.assert_allclose(lps[:3, 3], positions[0], atol=1e-9)
    np.testing.assert_allclose(lps[:3, 2], [0.0, 0.0, 4.0 / np.cos(np.deg2rad(15.0))],
                               atol=1e-9)
    np.testing.assert_allclose(lps[:3, 1], 0.6 * np.array(orientation[3:]), atol=1e-12)


def test_evenly_spaced_tilted_series_keeps_the_exact_affine_and_warns_once(tmp_path):
    orientation, positions = fx.tilted_two_stack_geometry((3.0,) * 3, tilt_deg=20.0)
    fx.write_dicom_series(tmp_path / "ct", ct_volume(), spacing=(3.0, 0.5, 0.5),
                          orientation=orientation, positions=positions)
    with pytest.warns(CtmriInputWarning, match=r"gantry tilt of 20\.00 degrees") as record:
        volume = read_dicom(tmp_path / "ct")
    assert len(record) == 1
    assert volume.meta["uniform_spacing"] is True
    assert volume.spacing[0] == pytest.approx(3.0)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    np.testing.assert_allclose(lps[:3, 2], (positions[-1] - positions[0]) / 3, atol=1e-12)


def test_uneven_series_round_trip_keeps_every_position_exactly(tmp_path):
    hu, positions, _ = _ge_tilted_two_stacks(tmp_path / "ge_head")
    with pytest.warns(CtmriInputWarning):
        original = read_dicom(tmp_path / "ge_head")
        # As `ctmri translate` writes: a new volume on the input's grid, the input as reference.
        translated = Volume(original.data + 5.0, "ct", original.spacing, original.affine.copy(),
                            meta={"body_mask": np.ones(original.shape, np.uint8)})
        translate._write("dicom", translated, original, tmp_path / "out", False)
        back = read_dicom(tmp_path / "out")
    np.testing.assert_array_equal(_positions_in_files(tmp_path / "out"), positions)
    np.testing.assert_array_equal(back.meta["slice_positions"], positions)
    np.testing.assert_array_equal(back.data, hu + 5.0)
    assert back.meta["slice_thickness"] == [4.0] * 5 + [7.0] * 3
    np.testing.assert_allclose(back.affine, original.affine, atol=1e-9)


@pytest.mark.parametrize("padding, limit", [(-1500, None), (-3024, None), (-2000, None),
                                            (-2000, -1500), (-1500, -2000)])
def test_pixel_padding_becomes_air_never_tissue(tmp_path, padding, limit):
    hu = np.full((3, 16, 16), -1000.0)
    hu[:, 4:12, 4:12] = 40.0                          # the head
    hu[:, 5:7, 5:11] = 1000.0                         # bone
    pad = np.zeros(hu.shape, bool)
    pad[:, :3, :3] = pad[:, -3:, -3:] = True          # outside the reconstructed circle
    hu[pad] = padding - 1024.0                        # stored == PixelPaddingValue
    if limit is not None:
        hu[:, 0, 15] = -1750.0 - 1024.0               # stored inside the range: padding too
        pad[:, 0, 15] = True
        hu[:, 15, 0] = -1499.0 - 1024.0               # just outside the range: a real value
    tags = {"PixelPaddingValue": padding}
    if limit is not None:
        tags["PixelPaddingRangeLimit"] = limit
    fx.write_dicom_series(tmp_path / "ct", hu, rescale=(1.0, -1024.0), **tags)

    with pytest.warns(CtmriInputWarning, match="padded voxel.*PixelPaddingValue"):
        volume = read_dicom(tmp_path / "ct")

    assert np.all(volume.data[pad] == -1000.0)
    np.testing.assert_array_equal(volume.data[~pad], hu[~pad])
    assert volume.meta["padding"]["voxels"] == int(pad.sum())
    assert volume.meta["padding"]["value"] == padding
    assert not body_mask(volume.data, "ct")[pad].any()
    assert body_mask(volume.data, "ct")[:, 8, 8].all()


def test_padding_value_as_the_signed_bit_pattern_of_unsigned_pixels(tmp_path):
    # uint16 pixels (PixelRepresentation 0) padded with 63536, PixelPaddingValue stored as SS
    # -2000: the same 16 bits. Read naively the padding is 62512 HU -- "metal".
    hu = np.full((2, 8, 8), 30.0)
    hu[:, :2, :] = 63536 - 1024.0
    paths = fx.write_dicom_series(tmp_path / "ct", hu, rescale=(1.0, -1024.0))
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.PixelRepresentation == 0
        ds.add_new(0x00280120, "SS", -2000)
        ds.save_as(path, enforce_file_format=True)
    with pytest.warns(CtmriInputWarning, match="padded"):
        volume = read_dicom(tmp_path / "ct")
    assert np.all(volume.data[:, :2] == -1000.0) and np.all(volume.data[:, 2:] == 30.0)


def test_mr_padding_becomes_background(tmp_path):
    signal = np.full((2, 8, 8), 300.0)
    signal[:, :, :2] = 4095.0
    fx.write_dicom_series(tmp_path / "mr", signal, modality="MR", PixelPaddingValue=4095)
    with pytest.warns(CtmriInputWarning, match="background"):
        volume = read_dicom(tmp_path / "mr")
    assert np.all(volume.data[:, :, :2] == 0.0) and np.all(volume.data[:, :, 2:] == 300.0)


def _scan_folder(folder):
    """A localizer series, a 5-slice axial series (plus a localizer image inside it) and a
    3-slice axial series with another pixel spacing and field of view, one study; and an SR."""
    study = "1.2.826.0.1.7"
    fx.write_dicom_series(folder, ct_volume(slices=1, rows=8, cols=10), study_uid=study,
                          series_uid=study + ".1", orientation=(0, 1, 0, 0, 0, -1),
                          name_prefix="SCOUT", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                          SeriesDescription="Topogram 0.6 T20s")
    big = ct_volume(slices=5)
    fx.write_dicom_series(folder, big, study_uid=study, series_uid=study + ".2",
                          spacing=(2.0, 0.6, 0.5), name_prefix="AX", SeriesDescription="Head 5mm")
    fx.write_dicom_series(folder, ct_volume(slices=1, rows=7, cols=7), study_uid=study,
                          series_uid=study + ".2", name_prefix="AXLOC",
                          ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    small = ct_volume(slices=3, rows=4, cols=9) + 7
    fx.write_dicom_series(folder, small, study_uid=study, series_uid=study + ".3",
                          spacing=(3.0, 0.9, 0.8), name_prefix="BONE",
                          SeriesDescription="Head bone")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = Dataset()
    report.file_meta = meta
    report.SOPClassUID = BasicTextSRStorage
    report.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    report.StudyInstanceUID = study
    report.SeriesInstanceUID = study + ".9"
    report.Modality = "SR"
    pydicom.dcmwrite(folder / "DOSE_REPORT", report, enforce_file_format=True)
    return study, big, small


def test_localizers_and_several_series_read_the_largest_axial_one(tmp_path):
    folder = tmp_path / "exam"
    study, big, _ = _scan_folder(folder)
    with pytest.warns(CtmriInputWarning) as record:
        volume = read_dicom(folder)
    assert volume.meta["series_instance_uid"] == study + ".2"
    np.testing.assert_array_equal(volume.data, big)
    assert volume.spacing == pytest.approx((2.0, 0.6, 0.5))
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(str(folder)) and "--series" in message
    for expected in (f"series {study}.1 ('Topogram 0.6 T20s', 1 image(s): localizer)",
                     f"series {study}.2 ('Head 5mm', 1 image(s): localizer)",
                     f"series {study}.3 ('Head bone', 3 image(s): fewer slices (3))",
                     f"series {study}.9 ('no description', 1 image(s): no pixel data)"):
        assert expected in message
    assert {d["series_instance_uid"] for d in volume.meta["skipped"]} == {
        study + ".1", study + ".2", study + ".3", study + ".9"}


def test_series_uid_chooses_a_series_and_an_unknown_uid_lists_them(tmp_path):
    folder = tmp_path / "exam"
    study, _, small = _scan_folder(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice is not second-guessed
        volume = read_volume(folder, series_uid=study + ".3")
    assert volume.meta["series_instance_uid"] == study + ".3"
    np.testing.assert_array_equal(volume.data, small)
    assert volume.spacing == pytest.approx((3.0, 0.9, 0.8))  # that series' own pixel spacing
    np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, :3], axis=0), [0.8, 0.9, 3.0])

    with raises_naming(folder, match="has no series 1.2.3.999; available") as info:
        read_dicom(folder, series_uid="1.2.3.999")
    for expected in (f"{study}.2 ('Head 5mm', CT, 5 slices, 1 localizer image(s))",
                     f"{study}.3 ('Head bone', CT, 3 slices)",
                     f"{study}.1 ('Topogram 0.6 T20s', CT, 1 localizer image(s))"):
        assert expected in str(info.value)
    nifti = fx.write_nifti(tmp_path / "t1.nii.gz", np.zeros((2, 3, 4)))
    with raises_naming(nifti, match="is not DICOM.*--series"):
        read_volume(nifti, series_uid=study + ".3")


def test_localizer_only_folder_is_named(tmp_path):
    fx.write_dicom_series(tmp_path / "scout", ct_volume(slices=1), ImageType=["LOCALIZER"])
    with raises_naming(tmp_path / "scout", match="only localizer"):
        read_dicom(tmp_path / "scout")


def test_non_square_pixels_and_field_of_view_report_the_true_spacing(tmp_path):
    fx.write_dicom_series(tmp_path / "ct", ct_volume(slices=2, rows=5, cols=9),
                          spacing=(1.25, 0.7, 0.45))
    volume = read_dicom(tmp_path / "ct")
    assert volume.shape == (2, 5, 9)
    assert volume.spacing == pytest.approx((1.25, 0.7, 0.45))      # PixelSpacing = [row, col]
    np.testing.assert_allclose(volume.affine @ [8, 4, 0, 1],       # last col, last row
                               [8.0 - 8 * 0.45, 8.0 - 4 * 0.7, 30.0, 1.0])


def test_enhanced_multiframe_ct_is_a_volume(tmp_path):
    hu = ct_volume(slices=4, rows=5, cols=7)
    path = fx.write_enhanced_multiframe(tmp_path / "enhanced.dcm", hu, spacing=(2.5, 0.7, 0.6),
                                        origin=(-8.0, -8.0, 30.0))
    volume = read_dicom(path)
    np.testing.assert_array_equal(volume.data, hu)                 # frames stored reversed
    assert volume.meta["frames"] == [3, 2, 1, 0]
    assert volume.meta["files"] == [str(path)] * 4
    assert volume.modality == "ct" and volume.meta["ordering"] == "position"
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.6))
    np.testing.assert_allclose(volume.affine, [[-0.6, 0, 0, 8.0], [0, -0.7, 0, 8.0],
                                               [0, 0, 2.5, 30.0], [0, 0, 0, 1]], atol=1e-9)
    np.testing.assert_allclose(volume.meta["slice_positions"][:, 2], [30.0, 32.5, 35.0, 37.5])
    assert "PerFrameFunctionalGroupsSequence" not in volume.meta["header"]
    # In a folder beside a localizer it is the series read; it can be written as a series.
    fx.write_dicom_series(tmp_path, ct_volume(slices=1), ImageType=["LOCALIZER"],
                          name_prefix="SCOUT")
    with pytest.warns(CtmriInputWarning, match="localizer"):
        np.testing.assert_array_equal(read_dicom(tmp_path).data, hu)
    back = read_dicom(write_dicom_series(volume, tmp_path / "out", modality="ct",
                                         reference=volume))
    np.testing.assert_array_equal(back.data, hu)
    np.testing.assert_array_equal(back.meta["slice_positions"], volume.meta["slice_positions"])


def test_enhanced_multiframe_mr_applies_per_frame_rescale(tmp_path):
    stored = ct_volume(slices=3, rows=4, cols=5) + 1000.0          # 0..234
    rescale = [(0.5, 10.0), (2.0, 0.0), (1.0, 3.0)]
    signal = np.stack([stored[k] * slope + intercept
                       for k, (slope, intercept) in enumerate(rescale)])
    path = fx.write_enhanced_multiframe(tmp_path / "mr.dcm", signal, modality="MR",
                                        spacing=(5.0, 0.9, 0.9), rescale=rescale,
                                        frame_order=[1, 2, 0])
    volume = read_dicom(path)
    assert volume.modality == "mri"
    np.testing.assert_array_equal(volume.data, signal)
    assert volume.meta["rescale"] == rescale
    assert volume.spacing == pytest.approx((5.0, 0.9, 0.9))

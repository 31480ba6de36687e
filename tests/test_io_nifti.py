"""NIfTI reading (axis mapping, scaling, shapes, bad files) and writing (round trips, headers)."""
from __future__ import annotations

import gzip

import medical_fixtures as fx
import nibabel as nib
import numpy as np
import pytest
from medical_fixtures import raises_naming

from ctmri_tf.io import Volume, read_dicom, read_nifti, read_volume, write_nifti

AFFINE = np.array([[-0.9, 0.0, 0.0, 10.0],
                   [0.0, 1.1, 0.0, -20.0],
                   [0.0, 0.0, 2.5, 5.0],
                   [0.0, 0.0, 0.0, 1.0]])


def ijk_array(shape=(4, 3, 2)):
    """nibabel-order array with A[i, j, k] = 100 i + 10 j + k."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (100 * i + 10 * j + k).astype(np.float32)


def save(path, array, affine=AFFINE, **header):
    image = nib.Nifti1Image(array, affine)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)
    return path


def test_axis_mapping_affine_spacing(tmp_path):
    array = ijk_array()
    path = save(tmp_path / "ct.nii.gz", array)
    volume = read_nifti(path)
    assert volume.data.shape == (2, 3, 4) and volume.data.dtype == np.float32
    assert volume.data[1, 2, 3] == 321.0  # data[k, j, i] == A[i, j, k]
    np.testing.assert_array_equal(volume.data, array.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert volume.spacing == pytest.approx((2.5, 1.1, 0.9))
    assert volume.modality is None
    assert isinstance(volume.meta["header"], nib.Nifti1Header)
    assert volume.source == str(path)
    assert read_nifti(path, modality="mri").modality == "mri"
    assert read_volume(path, modality="ct").modality == "ct"


def test_scl_slope_and_inter_applied(tmp_path):
    stored = ijk_array().astype(np.int16)
    path = save(tmp_path / "scaled.nii", stored, scl_slope=2.0, scl_inter=-5.0)
    volume = read_nifti(path)
    np.testing.assert_array_equal(volume.data, stored.transpose(2, 1, 0) * 2.0 - 5.0)


def test_4d_with_single_volume_is_squeezed_true_4d_refused(tmp_path):
    single = save(tmp_path / "one.nii.gz", ijk_array()[..., None])
    np.testing.assert_array_equal(read_nifti(single).data, ijk_array().transpose(2, 1, 0))
    series = save(tmp_path / "fmri.nii.gz", np.zeros((4, 3, 2, 5), np.float32))
    with raises_naming(series, match=r"shape \(4, 3, 2, 5\)"):
        read_nifti(series)


def test_2d_refused(tmp_path):
    path = save(tmp_path / "flat.nii", np.zeros((4, 3), np.float32))
    with raises_naming(path, match="2-D"):
        read_nifti(path)


def _damaged(tmp_path, kind):
    good = save(tmp_path / "good.nii", ijk_array((8, 8, 4)))
    good_gz = save(tmp_path / "good.nii.gz", ijk_array((8, 8, 4)))
    raw, packed = good.read_bytes(), good_gz.read_bytes()
    if kind == "text":
        content, name = b"hello, this is not an image\n", "text.nii"
    elif kind == "empty":
        content, name = b"", "empty.nii"
    elif kind == "truncated":
        content, name = raw[:-100], "truncated.nii"
    elif kind == "truncated_gz":
        content, name = packed[: len(packed) // 2], "truncated.nii.gz"
    elif kind == "corrupt_gz":
        content, name = packed[:20] + b"x" * (len(packed) - 20), "corrupt.nii.gz"
    else:  # an uncompressed NIfTI named .nii.gz: not a gzip stream
        content, name = raw, "plain.nii.gz"
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "truncated_gz", "corrupt_gz",
                                  "not_gzip"])
def test_damaged_files_are_named(tmp_path, kind):
    path = _damaged(tmp_path, kind)
    with raises_naming(path):
        read_nifti(path)


def test_wrong_suffix_and_missing_file(tmp_path):
    path = save(tmp_path / "ok.nii", ijk_array())
    renamed = path.rename(tmp_path / "ok.img")
    with raises_naming(renamed, match=r"\.nii"):
        read_nifti(renamed)
    with raises_naming(tmp_path / "missing.nii", match="does not exist"):
        read_nifti(tmp_path / "missing.nii")


def test_nan_and_inf_counted(tmp_path):
    array = ijk_array()
    array[0, 0, 0] = array[1, 0, 0] = np.nan
    array[2, 1, 1] = np.inf
    path = save(tmp_path / "bad.nii.gz", array)
    with raises_naming(path, match="2 NaN and 1 infinite"):
        read_nifti(path)


def test_write_without_reference_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 50.0, size=(3, 5, 6)).astype(np.float32)
    affine = np.array([[0.0, 0.0, 2.0, -10.0],
                       [-0.5, 0.0, 0.0, 8.0],
                       [0.0, -0.6, 0.0, 30.0],
                       [0.0, 0.0, 0.0, 1.0]])
    volume = Volume(data, "mri", (2.0, 0.6, 0.5), affine)
    path = write_nifti(volume, tmp_path / "out" / "mri.nii.gz")
    assert path == tmp_path / "out" / "mri.nii.gz"
    with gzip.open(path) as stream:
        assert len(stream.read()) > 0  # really gzip-compressed
    image = nib.load(path)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), data.transpose(2, 1, 0))
    assert image.get_data_dtype() == np.float32
    assert (int(image.header["sform_code"]), int(image.header["qform_code"])) == (1, 1)
    back = read_nifti(path)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    assert back.spacing == pytest.approx((2.0, 0.6, 0.5))


def test_write_with_reference_reuses_affine_and_header(tmp_path):
    stored = ijk_array().astype(np.int16)
    image = nib.Nifti1Image(stored, AFFINE)
    image.header.set_slope_inter(2.0, -5.0)
    image.header["descrip"] = b"T1w subject 7"
    image.set_sform(AFFINE, code=4)
    image.set_qform(AFFINE, code=1)
    nib.save(image, tmp_path / "t1.nii")
    reference = read_nifti(tmp_path / "t1.nii")

    result = Volume(reference.data * 0.25 + 0.125, "ct", reference.spacing, np.eye(4))
    path = write_nifti(result, tmp_path / "sct.nii", reference=reference)

    written = nib.load(path)
    assert written.header["descrip"].tobytes().rstrip(b"\0") == b"T1w subject 7"
    assert int(written.header["sform_code"]) == 4
    assert written.get_data_dtype() == np.float32
    slope, inter = written.header.get_slope_inter()
    assert slope is None and inter is None  # scaling reset: values stored as they are
    np.testing.assert_allclose(written.affine, reference.affine)
    np.testing.assert_array_equal(read_nifti(path).data, result.data)

    small = Volume(np.zeros((1, 2, 2), np.float32), "ct", (1.0, 1.0, 1.0), np.eye(4))
    with raises_naming(tmp_path / "small.nii", match="differs from reference shape"):
        write_nifti(small, tmp_path / "small.nii", reference=reference)
    assert not (tmp_path / "small.nii").exists()


def test_dicom_to_nifti_geometry_matches_dicom_positions(tmp_path):
    hu = np.arange(3 * 4 * 5, dtype=np.float64).reshape(3, 4, 5) - 500
    fx.write_dicom_series(tmp_path / "ct", hu, spacing=(2.0, 0.6, 0.5), origin=(-8, -8, 30))
    dicom = read_dicom(tmp_path / "ct")
    with raises_naming(tmp_path / "ct", match="no NIfTI header"):
        write_nifti(dicom, tmp_path / "x.nii", reference=dicom)
    image = nib.load(write_nifti(dicom, tmp_path / "ct.nii.gz"))
    array = np.asanyarray(image.dataobj)
    # voxel (col 4, row 2, slice 1): LPS = (-8 + 4 * 0.5, -8 + 2 * 0.6, 30 + 2) -> RAS flips x, y
    assert array[4, 2, 1] == hu[1, 2, 4]
    np.testing.assert_allclose(image.affine @ [4, 2, 1, 1], [6.0, 6.8, 32.0, 1.0], atol=1e-5)


def test_write_refuses_existing_and_inputs_leaves_nothing_on_failure(tmp_path, monkeypatch):
    path = save(tmp_path / "in.nii.gz", ijk_array())
    before = fx.file_states([path])
    volume = read_nifti(path)
    with raises_naming(path, match="input"):
        write_nifti(volume, path, overwrite=True)
    existing = tmp_path / "out.nii.gz"
    existing.write_bytes(b"keep me")
    with raises_naming(existing, match="already exists"):
        write_nifti(volume, existing)
    assert existing.read_bytes() == b"keep me"
    with raises_naming(tmp_path / "out.nrrd", match=r"\.nii"):
        write_nifti(volume, tmp_path / "out.nrrd")

    def failing_save(image, filename):
        with open(filename, "wb") as stream:
            stream.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(volume, tmp_path / "new.nii.gz")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "out.nii.gz"]
    assert fx.file_states([path]) == before

    write_nifti(volume, existing, overwrite=True)
    np.testing.assert_array_equal(read_nifti(existing).data, volume.data)


def test_fixture_writer_uses_the_documented_mapping(tmp_path):
    volume = ijk_array().transpose(2, 1, 0)  # (slices, rows, cols)
    path = fx.write_nifti(tmp_path / "fixture.nii.gz", volume, AFFINE)
    np.testing.assert_array_equal(np.asanyarray(nib.load(path).dataobj), ijk_array())
    np.testing.assert_array_equal(read_nifti(path).data, volume)


def test_uneven_tilted_dicom_is_resampled_to_even_slices_with_a_warning(tmp_path):
    from ctmri_tf.errors import CtmriInputWarning

    gaps = (4.0, 4.0, 4.0, 4.0, 7.0, 7.0)             # two stacks, along the slice normal
    orientation, positions = fx.tilted_two_stack_geometry(gaps, tilt_deg=15.0)
    along = np.concatenate([[0.0], np.cumsum(gaps)])  # 0 .. 30 mm
    hu = np.broadcast_to(10.0 * along[:, None, None], (7, 3, 4)) + np.arange(4)  # linear in mm
    fx.write_dicom_series(tmp_path / "ct", hu, spacing=(4.0, 0.6, 0.5), orientation=orientation,
                          positions=positions)
    with pytest.warns(CtmriInputWarning):
        volume = read_dicom(tmp_path / "ct")
    out = tmp_path / "ct.nii.gz"

    with pytest.warns(CtmriInputWarning, match=r"gaps from 4 to 7 mm.*resampled linearly along "
                                               r"the slice normal onto 9 slices 3\.75 mm apart"
                      ) as record:
        write_nifti(volume, out)
    assert str(record[0].message).startswith(str(out))

    back = read_nifti(out)
    assert back.shape == (9, 3, 4)                     # 30 mm / 4 mm -> 8 gaps of 3.75 mm
    expected = 10.0 * np.arange(9)[:, None, None] * 3.75 + np.arange(4)   # linear in mm: exact
    np.testing.assert_allclose(back.data, np.broadcast_to(expected, (9, 3, 4)), atol=1e-3)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ back.affine
    np.testing.assert_allclose(lps[:3, 3], positions[0], atol=1e-4)          # first slice kept
    np.testing.assert_allclose(lps[:3, 3] + 8 * lps[:3, 2], positions[-1], atol=1e-4)  # last
    np.testing.assert_allclose(lps[:3, 1], 0.6 * np.array(orientation[3:]), atol=1e-5)  # sheared


def test_anisotropic_non_square_nifti_reports_the_true_spacing(tmp_path):
    path = fx.write_nifti(tmp_path / "t2.nii.gz", np.zeros((3, 5, 9)),
                          np.diag([0.45, 0.7, 3.3, 1.0]))
    volume = read_nifti(path)
    assert volume.shape == (3, 5, 9)
    assert volume.spacing == pytest.approx((3.3, 0.7, 0.45))

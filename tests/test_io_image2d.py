"""2-D images: CT/MRI value conventions, gray-looking colour, bad files, series, PNG writing,
and read_volume's format dispatch."""
from __future__ import annotations

import cv2
import medical_fixtures as fx
import numpy as np
import pytest
from medical_fixtures import raises_naming

from ctmri_tf.io import read_image, read_mask_image, read_png_series, read_volume, write_png


def gray(rows=5, cols=6, start=0):
    return (np.arange(rows * cols).reshape(rows, cols) + start).astype(np.float64)


def imwrite(path, array):
    assert cv2.imwrite(str(path), array)
    return path


def test_ct_16bit_stores_hu_plus_1024(tmp_path):
    hu = gray() * 100 - 1024  # -1024 .. 1876 HU
    [path] = fx.write_png_slices(tmp_path, hu[None], bits=16, offset=1024)
    ct = read_image(path, modality="ct")
    assert ct.dtype == np.float32 and ct.shape == (5, 6)
    np.testing.assert_array_equal(ct, hu)
    np.testing.assert_array_equal(read_image(path, modality="mri"), hu + 1024)
    np.testing.assert_array_equal(read_image(path), hu + 1024)


def test_ct_8bit_maps_onto_the_ct_window(tmp_path):
    path = imwrite(tmp_path / "ct8.png", np.array([[0, 51, 255]], np.uint8))
    np.testing.assert_allclose(read_image(path, modality="ct"), [[-1024.0, -219.2, 3000.0]],
                               atol=1e-3)
    np.testing.assert_array_equal(read_image(path, modality="mri"), [[0.0, 51.0, 255.0]])


def test_gray_looking_colour_accepted_alpha_dropped(tmp_path):
    values = gray().astype(np.uint8)
    bgr = imwrite(tmp_path / "bgr.png", np.dstack([values] * 3))
    bgra = imwrite(tmp_path / "bgra.png", np.dstack([values] * 3 + [np.full_like(values, 7)]))
    for path in (bgr, bgra):
        np.testing.assert_array_equal(read_image(path), values)
        np.testing.assert_array_equal(read_mask_image(path), (values != 0).astype(np.uint8))


def test_true_colour_refused(tmp_path):
    values = gray().astype(np.uint8)
    colour = np.dstack([values, values, values])
    colour[2, 3, 1] += 1
    path = imwrite(tmp_path / "photo.png", colour)
    with raises_naming(path, match="colour"):
        read_image(path)
    with raises_naming(path, match="colour"):
        read_mask_image(path)


@pytest.mark.parametrize("kind", ["text", "truncated", "missing"])
def test_unreadable_files_are_named(tmp_path, kind):
    path = tmp_path / "slice.png"
    if kind == "text":
        path.write_text("not an image")
    elif kind == "truncated":
        good = imwrite(tmp_path / "good.png", gray(64, 64).astype(np.uint16))
        path.write_bytes(good.read_bytes()[:60])
    with raises_naming(path):
        read_image(path, modality="ct")


def test_float_tiff_as_is_and_nan_refused(tmp_path):
    values = (gray() * 0.5 - 3.25).astype(np.float32)
    path = imwrite(tmp_path / "hu.tif", values)
    np.testing.assert_array_equal(read_image(path, modality="ct"), values)
    values[1, 1] = np.nan
    bad = imwrite(tmp_path / "nan.tiff", values)
    with raises_naming(bad, match="1 NaN and 0 infinite"):
        read_image(bad)


def test_multi_page_tiff_refused(tmp_path):
    path = tmp_path / "stack.tif"
    assert cv2.imwritemulti(str(path), [gray().astype(np.uint16)] * 3)
    with raises_naming(path, match="3 pages"):
        read_image(path)


def test_mask_image_is_binary(tmp_path):
    path = imwrite(tmp_path / "mask.png", np.array([[0, 255, 7], [0, 0, 1]], np.uint8))
    mask = read_mask_image(path)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[0, 1, 1], [0, 0, 1]])
    path16 = imwrite(tmp_path / "mask16.png", np.array([[0, 65535]], np.uint16))
    np.testing.assert_array_equal(read_mask_image(path16), [[0, 1]])


def test_png_series_natural_order_spacing_and_inputs_untouched(tmp_path):
    hu = np.stack([gray(start=100 * k - 1000) for k in range(11)])
    folder = tmp_path / "ct"
    fx.write_png_slices(folder, hu, bits=16, offset=1024)
    (folder / ".thumbs.png").write_bytes(b"junk")
    (folder / "slice_3.json").write_text("{}")  # a Labelme file next to its image
    before = fx.file_states([folder])

    volume = read_png_series(folder, modality="ct")

    np.testing.assert_array_equal(volume.data, hu)  # slice_2 before slice_10
    assert volume.modality == "ct" and volume.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    assert [p.rsplit("/", 1)[-1] for p in volume.meta["files"]][:3] == [
        "slice_1.png", "slice_2.png", "slice_3.png"]
    spaced = read_png_series(folder, modality="mri", spacing=(2.0, 0.5, 0.25))
    np.testing.assert_array_equal(spaced.affine, np.diag([0.25, 0.5, 2.0, 1.0]))
    np.testing.assert_array_equal(spaced.data, hu + 1024)
    assert fx.file_states([folder]) == before


def test_png_series_shape_mismatch_and_empty_folder(tmp_path):
    folder = tmp_path / "ct"
    fx.write_png_slices(folder, np.stack([gray(), gray()]), bits=16, offset=0)
    odd = imwrite(folder / "slice_3.png", gray(5, 7).astype(np.uint16))
    with raises_naming(odd, match="5 x 7"):
        read_png_series(folder, modality="ct")
    empty = tmp_path / "empty"
    empty.mkdir()
    with raises_naming(empty, match="no images"):
        read_png_series(empty, modality=None)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_png_round_trip_exact(tmp_path, dtype):
    values = (gray(7, 9) * 997 % np.iinfo(dtype).max).astype(dtype)
    path = write_png(tmp_path / "sub" / "x.png", values)
    assert path == tmp_path / "sub" / "x.png"
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == dtype
    np.testing.assert_array_equal(stored, values)
    np.testing.assert_array_equal(read_image(path), values.astype(np.float32))


def test_write_png_refusals_leave_nothing(tmp_path, monkeypatch):
    values = gray().astype(np.uint16)
    existing = write_png(tmp_path / "x.png", values)
    with raises_naming(existing, match="already exists"):
        write_png(existing, values + 1)
    np.testing.assert_array_equal(read_image(existing), values)
    write_png(existing, values + 1, overwrite=True)
    np.testing.assert_array_equal(read_image(existing), values + 1)
    with raises_naming(tmp_path / "f.png", match="float32"):
        write_png(tmp_path / "f.png", values.astype(np.float32))
    with raises_naming(tmp_path / "x.jpg", match=r"\.png"):
        write_png(tmp_path / "x.jpg", values)

    def failing_imwrite(filename, image):
        with open(filename, "wb") as stream:
            stream.write(b"\x89PNG half")
        return False

    monkeypatch.setattr(cv2, "imwrite", failing_imwrite)
    with raises_naming(tmp_path / "new.png", match="could not encode"):
        write_png(tmp_path / "new.png", values)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_read_volume_dispatch(tmp_path):
    hu = np.stack([gray(start=-500), gray(start=-400)])
    paths = fx.write_png_slices(tmp_path / "pngs", hu, bits=16, offset=1024)
    series = read_volume(tmp_path / "pngs", modality="ct")
    np.testing.assert_array_equal(series.data, hu)
    one = read_volume(paths[1], modality="ct")
    assert one.data.shape == (1, 5, 6) and one.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(one.data[0], hu[1])
    jpeg = imwrite(tmp_path / "flat.jpg", np.full((16, 16), 100, np.uint8))
    assert np.abs(read_volume(jpeg).data - 100).max() <= 1

    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with raises_naming(notes, match="unknown format"):
        read_volume(notes)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("x")
    with raises_naming(other, match="unknown format"):
        read_volume(other)
    fx.write_nifti(other / "a.nii.gz", hu)
    with raises_naming(other, match="NIfTI"):
        read_volume(other)
    with raises_naming(tmp_path / "missing", match="does not exist"):
        read_volume(tmp_path / "missing")

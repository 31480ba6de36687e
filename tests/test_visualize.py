"""PNG grids and contact sheets: exact gray levels, layout, titles, atomic writing."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import visualize
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.visualize import (MINMAX, SEPARATOR_GRAY, SEPARATOR_PX, TITLE_HEIGHT_PX,
                                contact_sheet, image_grid, save_grid_png, to_uint8)


def test_to_uint8_maps_model_space_linearly_and_clips():
    x = np.array([[-1.0, 0.0, 1.0, 2.0, -3.0, 0.5]], np.float32)
    # (x + 1) * 127.5, rounded half to even, clipped: 0, 127.5 -> 128, 255, 255, 0, 191.25 -> 191
    np.testing.assert_array_equal(to_uint8(x), [[0, 128, 255, 255, 0, 191]])
    assert to_uint8(x).dtype == np.uint8


def test_to_uint8_hu_window_channel_axis_and_tf_tensor():
    hu = tf.constant([[[-1000.0], [-200.0], [400.0], [1000.0], [3000.0]]])  # (1, 5, 1)
    out = to_uint8(hu, (-200.0, 1000.0))
    # (hu + 200) / 1200 * 255: -> 0 (clipped), 0, 127.5 -> 128, 255, 255 (clipped)
    np.testing.assert_array_equal(out, [[0, 0, 128, 255, 255]])


def test_to_uint8_minmax_stretches_each_image():
    signal = np.array([[100.0, 150.0, 300.0]])
    np.testing.assert_array_equal(to_uint8(signal, MINMAX), [[0, 64, 255]])  # 50/200*255=63.75
    np.testing.assert_array_equal(to_uint8(np.full((2, 2), 7.0), MINMAX), np.zeros((2, 2)))


def test_to_uint8_rejects_a_volume():
    with pytest.raises(CtmriInputError, match="2-D image"):
        to_uint8(np.zeros((2, 3, 4)))


def test_image_grid_layout_separators_and_per_column_ranges():
    a = np.full((4, 5), -1.0)
    b = np.full((4, 5), 1.0)
    hu = np.full((4, 5), 400.0)
    grid = image_grid([[a, b, hu], [b, a, hu]],
                      value_ranges=[(-1, 1), (-1, 1), (-200.0, 1000.0)])
    sep = SEPARATOR_PX
    assert grid.shape == (2 * 4 + sep, 3 * 5 + 2 * sep)
    assert grid.dtype == np.uint8
    # cells
    assert (grid[0:4, 0:5] == 0).all() and (grid[0:4, 5 + sep:10 + sep] == 255).all()
    assert (grid[0:4, 10 + 2 * sep:] == 128).all()
    assert (grid[4 + sep:, 0:5] == 255).all() and (grid[4 + sep:, 5 + sep:10 + sep] == 0).all()
    # separators: one horizontal band, two vertical ones
    assert (grid[4:4 + sep, :] == SEPARATOR_GRAY).all()
    assert (grid[:, 5:5 + sep] == SEPARATOR_GRAY).all()
    assert (grid[:, 10 + sep:10 + 2 * sep] == SEPARATOR_GRAY).all()


def test_image_grid_titles_drawn_above_each_column():
    image = np.full((32, 48), -1.0)
    grid = image_grid([[image, image]], titles=["CT", "MRI"])
    top = TITLE_HEIGHT_PX + SEPARATOR_PX
    assert grid.shape == (top + 32, 2 * 48 + SEPARATOR_PX)
    band = grid[:TITLE_HEIGHT_PX]
    assert band[:, :48].max() > 200 and band[:, 48 + SEPARATOR_PX:].max() > 200  # text in both
    assert (grid[top:, :48] == 0).all()                                         # images untouched
    untitled = image_grid([[image, image]], titles=["CT", ""])
    assert untitled[:TITLE_HEIGHT_PX, 48 + SEPARATOR_PX:].max() == 0


def test_image_grid_centres_smaller_images_and_leaves_missing_cells_black():
    big = np.ones((6, 6))
    small = np.ones((2, 2))
    grid = image_grid([[big, small], [big]])
    cell = grid[0:6, 6 + SEPARATOR_PX:]
    expected = np.zeros((6, 6), np.uint8)
    expected[2:4, 2:4] = 255
    np.testing.assert_array_equal(cell, expected)
    assert (grid[6 + SEPARATOR_PX:, 6 + SEPARATOR_PX:] == 0).all()


def test_image_grid_checks_titles_and_ranges_against_columns():
    with pytest.raises(CtmriInputError, match="titles has 1 entries for 2 columns"):
        image_grid([[np.zeros((2, 2)), np.zeros((2, 2))]], titles=["x"])
    with pytest.raises(CtmriInputError, match="value_ranges has 3 entries"):
        image_grid([[np.zeros((2, 2)), np.zeros((2, 2))]], value_ranges=[MINMAX] * 3)


def test_image_grid_row_labels_in_a_band_left_of_the_cells():
    rows = [[np.zeros((24, 10)), np.zeros((24, 10))], [np.zeros((24, 10)), None]]
    plain = image_grid(rows)
    labelled = image_grid(rows, row_labels=["MRI->CT\nCT 0..80 HU", "CT->MRI"])
    band = labelled.shape[1] - plain.shape[1]
    assert labelled.shape[0] == plain.shape[0] and band > 30
    np.testing.assert_array_equal(labelled[:, band:], plain)     # cells unchanged, shifted
    assert labelled[:24, :band - SEPARATOR_PX].max() > 128         # text drawn in row 1 ...
    assert labelled[26:, :band - SEPARATOR_PX].max() > 128         # ... and in row 2
    with pytest.raises(CtmriInputError, match="row_labels has 1 entries for 2 rows"):
        image_grid(rows, row_labels=["one"])


def test_save_grid_png_round_trip_and_refuses_to_overwrite(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[rng.uniform(-1, 1, (8, 8)) for _ in range(3)] for _ in range(2)]
    path = save_grid_png(tmp_path / "grid.png", rows, titles=["a", "b", "c"])
    written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, image_grid(rows, titles=["a", "b", "c"]))
    with pytest.raises(CtmriInputError, match="grid.png: output already exists"):
        save_grid_png(path, rows)
    save_grid_png(path, rows[:1], overwrite=True)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (8, 3 * 8 + 2 * SEPARATOR_PX)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary left over


def _example(modality, subject, index, image, counterpart=None, mask=None):
    return {"modality": modality, "subject_id": subject.encode(), "slice_index": np.int32(index),
            "image": image.astype(np.float32), "mask": mask,
            "has_counterpart": counterpart is not None,
            "counterpart": np.zeros((1, 1), np.float32) if counterpart is None else counterpart}


def test_contact_sheet_triplets_dedupes_pairs_and_windows_ct(tmp_path):
    size = 16
    ct = np.full((size, size), 400.0)         # HU -> 128 in the [-200, 1000] window
    ct[0, 0] = -1000.0                        # air, clipped to black
    mri = np.linspace(10.0, 500.0, size * size).reshape(size, size)   # min-max -> 0..255
    mask = np.zeros((size, size), np.uint8)
    mask[4:12, 4:12] = 1
    examples = [
        _example(0, "s1", 3, ct, mri, mask),     # CT example of the pair (label ints, as tfds)
        _example(1, "s1", 3, mri, ct, mask),     # the MRI example of the same slice: no new row
        _example("mri", "s2", 0, mri, None, mask),   # unpaired MRI: CT cell stays black
    ]
    path = contact_sheet(examples, tmp_path / "sheet.png", n=6)
    sheet = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    top = TITLE_HEIGHT_PX + SEPARATOR_PX
    step = size + SEPARATOR_PX
    assert sheet.shape == (top + 2 * size + SEPARATOR_PX, 3 * size + 2 * SEPARATOR_PX)
    row1 = sheet[top:top + size]
    assert row1[0, 0] == 0 and (row1[1:, :size] == 128).all()
    np.testing.assert_array_equal(row1[:, step:step + size], to_uint8(mri, MINMAX))
    np.testing.assert_array_equal(row1[:, 2 * step:], mask * 255)
    row2 = sheet[top + step:]
    assert (row2[:, :size] == 0).all()
    np.testing.assert_array_equal(row2[:, step:step + size], to_uint8(mri, MINMAX))
    assert sheet[:TITLE_HEIGHT_PX].max() > 200


def test_contact_sheet_limits_rows_and_rejects_nothing(tmp_path):
    image = np.zeros((8, 8))
    examples = [_example("ct", f"s{i}", 0, image, image, np.ones((8, 8), np.uint8))
                for i in range(5)]
    sheet = cv2.imread(str(contact_sheet(examples, tmp_path / "two.png", n=2)),
                       cv2.IMREAD_UNCHANGED)
    assert sheet.shape[0] == TITLE_HEIGHT_PX + SEPARATOR_PX + 2 * 8 + SEPARATOR_PX
    with pytest.raises(CtmriInputError, match="empty.png: no examples"):
        contact_sheet([], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
    assert visualize.CONTACT_SHEET_CT_WINDOW_HU == (-200.0, 1000.0)

"""`make demo` steps on a tiny synthetic config: dataset built, contact sheet written with the
expected layout and the phantom's CT in the display window."""
import cv2
import numpy as np

from ctmri_tf import demo, phantom
from ctmri_tf.visualize import (CONTACT_SHEET_CT_WINDOW_HU, SEPARATOR_PX, TITLE_HEIGHT_PX,
                                to_uint8)

SUBJECTS, SLICES, SIZE = 3, 4, 32   # subject 0 train, 1 validation, 2 test


def test_demo_builds_the_dataset_and_writes_the_contact_sheet(tmp_path, capsys):
    argv = ["--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "demo"),
            "--num-subjects", str(SUBJECTS), "--num-slices", str(SLICES),
            "--image-size", str(SIZE)]
    assert demo.main(argv) == 0
    printed = capsys.readouterr().out
    assert "slices/s" in printed and "contact_sheet.png" in printed
    assert (tmp_path / "tfds" / "ctmri" / f"synthetic_{SUBJECTS}x{SLICES}x{SIZE}" /
            "1.0.0" / "dataset_info.json").is_file()

    sheet = cv2.imread(str(tmp_path / "demo" / "contact_sheet.png"), cv2.IMREAD_UNCHANGED)
    top = TITLE_HEIGHT_PX + SEPARATOR_PX
    assert sheet.dtype == np.uint8
    assert sheet.shape == (top + SLICES * SIZE + (SLICES - 1) * SEPARATOR_PX,
                           3 * SIZE + 2 * SEPARATOR_PX)
    test_subject = phantom.make_subject(2, image_size=SIZE, num_slices=SLICES)
    for k in range(SLICES):  # rows: every slice of the test subject, in order
        y = top + k * (SIZE + SEPARATOR_PX)
        np.testing.assert_array_equal(sheet[y:y + SIZE, :SIZE],
                                      to_uint8(test_subject.ct[k], CONTACT_SHEET_CT_WINDOW_HU))
        np.testing.assert_array_equal(sheet[y:y + SIZE, -SIZE:], test_subject.mask[k] * 255)

    assert demo.main(argv) == 0                     # a rerun reuses the data, replaces the PNG
    assert "already built" in capsys.readouterr().out


def test_spread_slices_picks_evenly_over_one_subject():
    examples = [{"modality": m, "has_counterpart": True, "subject_id": s, "slice_index": k}
                for s in (b"a", b"b") for k in range(20) for m in (0, 1)]
    picked = demo.spread_slices(examples, 6)
    assert [e["slice_index"] for e in picked] == [0, 4, 8, 11, 15, 19]
    assert {e["subject_id"] for e in picked} == {b"a"} and all(e["modality"] == 0 for e in picked)

"""Labelme JSON -> body masks, class maps and VOC datasets (ctmri_tf.io.annotations)."""
from __future__ import annotations

import base64
import json
import math

import cv2
import labelme.utils
import numpy as np
import PIL.Image
import pytest

from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io.annotations import (
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    convert_labelme_to_masks,
    convert_labelme_to_voc,
    labelme_to_label_map,
    labelme_to_mask,
)


def shape(label, shape_type, points, **extra):
    return {"label": label, "points": [list(map(float, p)) for p in points], "group_id": None,
            "description": "", "shape_type": shape_type, "flags": {}, **extra}


def write_labelme(json_path, shapes, *, height, width, image=None, embed=False,
                  image_name=None):
    """Write a labelme 6 JSON file; ``image`` goes beside it as a PNG, or into imageData."""
    image_name = image_name or json_path.with_suffix(".png").name
    image_data = None
    if image is not None and embed:
        image_data = base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode()
    elif image is not None:
        assert cv2.imwrite(str(json_path.parent / image_name), image)
    json_path.write_text(json.dumps({
        "version": "6.3.1", "flags": {}, "shapes": shapes, "imagePath": image_name,
        "imageData": image_data, "imageHeight": height, "imageWidth": width}))
    return json_path


def rect_mask(height, width, rows, cols):
    expected = np.zeros((height, width), np.uint8)
    expected[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = 1
    return expected


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------------------------------
# labelme_to_mask
# ------------------------------------------------------------------------------------------

def test_rectangle_covers_both_corners_inclusive(tmp_path):
    # Corners given bottom-right first, as labelme stores a rectangle dragged upwards.
    path = write_labelme(tmp_path / "a.json", [shape("body", "rectangle", [(9, 7), (2, 3)])],
                         height=12, width=16)
    mask = labelme_to_mask(path)
    assert mask.dtype == np.uint8 and mask.shape == (12, 16)
    # columns 2..9 (x) and rows 3..7 (y): 8 x 5 pixels
    np.testing.assert_array_equal(mask, rect_mask(12, 16, rows=(3, 7), cols=(2, 9)))
    assert mask.sum() == 40 and mask[3, 2] == 1 and mask[7, 9] == 1
    assert mask[2, 2] == 0 and mask[3, 10] == 0 and mask[8, 9] == 0


def test_polygon_is_filled_including_its_edges(tmp_path):
    path = write_labelme(tmp_path / "tri.json",
                         [shape("body", "polygon", [(0, 0), (10, 0), (0, 10)])],
                         height=16, width=16)
    rows, cols = np.indices((16, 16))
    expected = (rows + cols <= 10).astype(np.uint8)  # 1 + 2 + ... + 11 = 66 pixels
    mask = labelme_to_mask(path)
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == 66


def test_circle_is_a_filled_disc_of_the_drawn_radius(tmp_path):
    # Centre (32, 32), a point on the rim 12 pixels to the right.
    path = write_labelme(tmp_path / "c.json", [shape("head", "circle", [(32, 32), (44, 32)])],
                         height=64, width=64)
    mask = labelme_to_mask(path)
    # Pixels whose centres are within the rim, inclusive: area of a radius 12.5 disc.
    assert abs(mask.sum() / (math.pi * 12.5 ** 2) - 1) < 0.03
    disc = mask[20:45, 20:45]
    assert disc.sum() == mask.sum()  # nothing beyond 12 pixels from the centre
    np.testing.assert_array_equal(disc, disc[::-1])
    np.testing.assert_array_equal(disc, disc[:, ::-1])
    np.testing.assert_array_equal(disc, disc.T)
    assert mask[32, 20] == mask[32, 44] == mask[20, 32] == mask[44, 32] == 1
    assert mask[21, 21] == 0  # the corner of the bounding square is outside the disc


def test_mask_is_the_union_and_labels_select_shapes(tmp_path):
    path = write_labelme(tmp_path / "u.json", [
        shape("body", "rectangle", [(0, 0), (9, 9)]),      # 100 pixels
        shape("table", "rectangle", [(5, 5), (14, 14)]),   # 100 pixels, 25 shared
    ], height=20, width=20)
    union = labelme_to_mask(path)
    assert union.sum() == 175
    np.testing.assert_array_equal(
        union, rect_mask(20, 20, (0, 9), (0, 9)) | rect_mask(20, 20, (5, 14), (5, 14)))
    np.testing.assert_array_equal(labelme_to_mask(path, labels=["body"]),
                                  rect_mask(20, 20, (0, 9), (0, 9)))
    np.testing.assert_array_equal(labelme_to_mask(path, labels="table"),
                                  rect_mask(20, 20, (5, 14), (5, 14)))
    assert labelme_to_mask(path, labels=["lesion"]).sum() == 0


def test_labelme_mask_shape_is_placed_in_its_box(tmp_path):
    small = np.zeros((3, 4), bool)
    small[0, 0] = small[1, 1] = small[2, 3] = True
    path = write_labelme(tmp_path / "m.json", [
        shape("body", "mask", [(2, 1), (5, 3)], mask=labelme.utils.img_arr_to_b64(small))],
        height=8, width=8)
    expected = np.zeros((8, 8), np.uint8)
    expected[1:4, 2:6] = small
    np.testing.assert_array_equal(labelme_to_mask(path), expected)


def test_lines_and_points_are_skipped_with_a_warning(tmp_path):
    path = write_labelme(tmp_path / "l.json", [
        shape("body", "rectangle", [(1, 1), (4, 4)]),
        shape("ruler", "line", [(0, 10), (19, 10)]),
        shape("landmark", "point", [(15, 15)]),
    ], height=20, width=20)
    with pytest.warns(UserWarning, match=r"l\.json.*1 \(line\), 2 \(point\)"):
        mask = labelme_to_mask(path)
    np.testing.assert_array_equal(mask, rect_mask(20, 20, (1, 4), (1, 4)))


def test_unknown_shape_type_names_the_file_the_index_and_the_type(tmp_path):
    path = write_labelme(tmp_path / "s.json", [
        shape("body", "rectangle", [(1, 1), (4, 4)]),
        shape("body", "spline", [(0, 0), (3, 3), (5, 1)]),
    ], height=8, width=8)
    with pytest.raises(CtmriInputError) as info:
        labelme_to_mask(path)
    assert info.value.path == str(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "shape 1" in message and "'spline'" in message


def test_polygon_with_two_points_is_an_error(tmp_path):
    path = write_labelme(tmp_path / "p.json", [shape("body", "polygon", [(0, 0), (5, 5)])],
                         height=8, width=8)
    with pytest.raises(CtmriInputError, match=r"shape 0 .*polygon with 2 points"):
        labelme_to_mask(path)


def test_size_disagreeing_with_the_image_beside_names_both(tmp_path):
    image = np.zeros((32, 48), np.uint8)  # 48 wide, 32 high
    path = write_labelme(tmp_path / "scan.json", [shape("body", "rectangle", [(1, 1), (4, 4)])],
                         height=32, width=32, image=image)
    with pytest.raises(CtmriInputError) as info:
        labelme_to_mask(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert str(tmp_path / "scan.png") in message
    assert "32 rows x 32 columns" in message and "32 rows x 48 columns" in message


def test_size_agreeing_with_the_image_beside_is_fine(tmp_path):
    image = np.zeros((24, 40), np.uint16)
    path = write_labelme(tmp_path / "ok.json", [shape("body", "rectangle", [(1, 1), (4, 4)])],
                         height=24, width=40, image=image)
    assert labelme_to_mask(path).shape == (24, 40)


def test_image_shape_argument_is_checked(tmp_path):
    path = write_labelme(tmp_path / "a.json", [shape("body", "rectangle", [(1, 1), (4, 4)])],
                         height=16, width=20)
    assert labelme_to_mask(path, image_shape=(16, 20, 3)).shape == (16, 20)
    with pytest.raises(CtmriInputError, match=r"16 rows x 20 columns .*image_shape \(20, 16\) has 20 rows x 16"):
        labelme_to_mask(path, image_shape=(20, 16))


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not an object"),
    ('{"shapes": [], "imagePath": "a.png"}', "missing key(s) imageHeight, imageWidth"),
    ('{"shapes": {}, "imagePath": "a.png", "imageHeight": 4, "imageWidth": 4}', "'shapes'"),
    ('{"shapes": [], "imagePath": "a.png", "imageHeight": 0, "imageWidth": 4}', "imageHeight"),
])
def test_unreadable_json_names_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CtmriInputError) as info:
        labelme_to_mask(path)
    assert str(info.value).startswith(str(path)) and problem in str(info.value)


@pytest.mark.parametrize("height, width", [(60000, 60000), (MAX_IMAGE_SIDE + 1, 8),
                                           (8192, MAX_IMAGE_PIXELS // 8192 + 1)])
def test_absurd_declared_size_is_refused_before_allocating(tmp_path, monkeypatch, height, width):
    def rasterise(*args, **kwargs):   # without the size check: 60000 x 60000 would be 13 GiB
        raise AssertionError("rasterised an image of the declared size")

    monkeypatch.setattr(labelme.utils, "shapes_to_label", rasterise)
    path = write_labelme(tmp_path / "huge.json", [shape("body", "rectangle", [(0, 0), (9, 9)])],
                         height=height, width=width)
    for convert in (labelme_to_mask, lambda p: labelme_to_label_map(p, ["body"])):
        with pytest.raises(CtmriInputError) as info:
            convert(path)
        assert info.value.path == str(path)
        assert f"{width} x {height}" in info.value.problem
        assert str(MAX_IMAGE_SIDE) in info.value.problem
    with pytest.raises(CtmriInputError, match="huge.json"):
        convert_labelme_to_masks(tmp_path, tmp_path / "masks")
    assert not (tmp_path / "masks").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.json"]


def test_largest_allowed_side_is_accepted(tmp_path):
    path = write_labelme(tmp_path / "tall.json", [shape("body", "rectangle", [(0, 0), (1, 1)])],
                         height=MAX_IMAGE_SIDE, width=2)
    assert labelme_to_mask(path).shape == (MAX_IMAGE_SIDE, 2)


def test_missing_json_file_is_an_input_error(tmp_path):
    with pytest.raises(CtmriInputError, match="does not exist"):
        labelme_to_mask(tmp_path / "nope.json")


# ------------------------------------------------------------------------------------------
# labelme_to_label_map
# ------------------------------------------------------------------------------------------

def test_label_map_ids_follow_class_names_and_drawing_order(tmp_path):
    path = write_labelme(tmp_path / "a.json", [
        shape("body", "rectangle", [(0, 0), (9, 9)]),
        shape("lesion", "rectangle", [(2, 2), (4, 4)]),      # drawn over the body
        shape("__ignore__", "rectangle", [(12, 0), (13, 1)]),
    ], height=12, width=16)
    class_map = labelme_to_label_map(path, ["_background_", "body", "lesion"])
    expected = np.zeros((12, 16), np.int32)
    expected[0:10, 0:10] = 1
    expected[2:5, 2:5] = 2
    expected[0:2, 12:14] = -1
    assert class_map.dtype == np.int32
    np.testing.assert_array_equal(class_map, expected)


def test_label_map_unknown_label_names_label_and_file(tmp_path):
    path = write_labelme(tmp_path / "a.json", [shape("tumour", "rectangle", [(0, 0), (3, 3)])],
                         height=8, width=8)
    with pytest.raises(CtmriInputError) as info:
        labelme_to_label_map(path, ["_background_", "body"])
    assert str(info.value).startswith(str(path)) and "'tumour'" in str(info.value)


# ------------------------------------------------------------------------------------------
# convert_labelme_to_masks
# ------------------------------------------------------------------------------------------

def make_mask_folder(folder):
    folder.mkdir()
    write_labelme(folder / "slice_02.json", [shape("body", "rectangle", [(2, 3), (9, 7)])],
                  height=12, width=16, image=np.full((12, 16), 40000, np.uint16))
    write_labelme(folder / "slice_01.json",
                  [shape("body", "polygon", [(0, 0), (10, 0), (0, 10)])], height=16, width=16)
    (folder / "notes.txt").write_text("not an annotation")
    (folder / "._slice_01.json").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    return folder


def test_convert_masks_writes_0_255_pngs(tmp_path):
    in_dir = make_mask_folder(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in in_dir.iterdir()}
    out_dir = tmp_path / "masks"
    written = convert_labelme_to_masks(in_dir, out_dir)
    assert written == [out_dir / "slice_01.png", out_dir / "slice_02.png"]
    assert tree(out_dir) == ["slice_01.png", "slice_02.png"]
    for png in written:
        stored = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint8 and set(np.unique(stored)) == {0, 255}
        np.testing.assert_array_equal(stored, labelme_to_mask(in_dir / f"{png.stem}.json") * 255)
    assert (cv2.imread(str(out_dir / "slice_02.png"), cv2.IMREAD_UNCHANGED) > 0).sum() == 40
    assert {p.name: p.read_bytes() for p in in_dir.iterdir()} == before  # inputs untouched


def test_convert_masks_failure_leaves_no_output(tmp_path):
    in_dir = make_mask_folder(tmp_path / "in")
    (in_dir / "slice_03.json").write_text('{"shapes": [], "imagePath": "x.png"}')
    with pytest.raises(CtmriInputError) as info:
        convert_labelme_to_masks(in_dir, tmp_path / "masks")
    assert str(info.value).startswith(str(in_dir / "slice_03.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no folder, no temporary


def test_convert_masks_refuses_to_overwrite_unless_asked(tmp_path):
    in_dir = make_mask_folder(tmp_path / "in")
    out_dir = tmp_path / "masks"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("earlier results")
    with pytest.raises(CtmriInputError, match="already exists"):
        convert_labelme_to_masks(in_dir, out_dir)
    assert tree(out_dir) == ["keep.txt"]
    convert_labelme_to_masks(in_dir, out_dir, overwrite=True)
    assert tree(out_dir) == ["slice_01.png", "slice_02.png"]


def test_convert_masks_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "scan.png").write_bytes(b"")
    with pytest.raises(CtmriInputError) as info:
        convert_labelme_to_masks(tmp_path / "empty", tmp_path / "masks")
    assert info.value.path == str(tmp_path / "empty") and "no labelme .json" in str(info.value)
    assert not (tmp_path / "masks").exists()


def test_convert_masks_never_replaces_its_input_folder(tmp_path):
    in_dir = make_mask_folder(tmp_path / "in")
    with pytest.raises(CtmriInputError, match="would contain the input"):
        convert_labelme_to_masks(in_dir, in_dir, overwrite=True)
    with pytest.raises(CtmriInputError, match="would contain the input"):
        convert_labelme_to_masks(in_dir, tmp_path, overwrite=True)
    assert (in_dir / "slice_01.json").is_file()


# ------------------------------------------------------------------------------------------
# convert_labelme_to_voc
# ------------------------------------------------------------------------------------------

LABELS = "__ignore__\n_background_\nbody\nlesion\n"


def make_voc_folder(folder):
    """Five annotated slices: 16-bit CT PNGs, one 8-bit PNG, one embedded image."""
    folder.mkdir()
    ramp = np.add.outer(np.arange(24), np.arange(32)) * 40 + 1000  # 1000 .. 3200 (HU + 1024)
    for i in range(3):
        write_labelme(folder / f"ct_{i}.json", [
            shape("body", "rectangle", [(2, 2), (20, 15)]),
            shape("lesion", "circle", [(10, 8), (13, 8)]),
            shape("__ignore__", "rectangle", [(28, 0), (31, 3)]),
        ], height=24, width=32, image=(ramp + i).astype(np.uint16))
    write_labelme(folder / "mr_8bit.json", [shape("body", "polygon", [(0, 0), (10, 0), (0, 10)])],
                  height=24, width=32, image=np.full((24, 32), 77, np.uint8))
    embedded = np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1))
    write_labelme(folder / "embedded.json", [shape("body", "rectangle", [(0, 0), (5, 5)])],
                  height=24, width=32, image=embedded, embed=True, image_name="gone.png")
    labels = folder.parent / "labels.txt"
    labels.write_text(LABELS)
    return folder, labels, ramp, embedded


def read_lines(path):
    return path.read_text().splitlines()


def test_voc_layout_class_ids_and_images(tmp_path):
    in_dir, labels, ramp, embedded = make_voc_folder(tmp_path / "in")
    out = convert_labelme_to_voc(in_dir, tmp_path / "voc", labels)
    assert out == tmp_path / "voc"
    stems = ["ct_0", "ct_1", "ct_2", "embedded", "mr_8bit"]
    assert tree(out) == sorted(
        ["ImageSets", "ImageSets/Segmentation", "JPEGImages", "SegmentationClass",
         "SegmentationClassVisualization", "class_names.txt"]
        + [f"ImageSets/Segmentation/{s}.txt" for s in ("train", "val", "trainval")]
        + [f"JPEGImages/{s}.jpg" for s in stems] + [f"SegmentationClass/{s}.png" for s in stems]
        + [f"SegmentationClassVisualization/{s}.jpg" for s in stems])
    assert read_lines(out / "class_names.txt") == ["_background_", "body", "lesion"]

    with PIL.Image.open(out / "SegmentationClass" / "ct_0.png") as png:
        assert png.mode == "P"
        stored = np.asarray(png)
    class_map = labelme_to_label_map(in_dir / "ct_0.json", ["_background_", "body", "lesion"])
    np.testing.assert_array_equal(stored, np.where(class_map == -1, 255, class_map))
    assert stored[2, 2] == 1 and stored[8, 10] == 2 and stored[0, 30] == 255 and stored[23, 0] == 0

    # 16-bit HU + 1024 -> min-max per image: the darkest pixel is ~0, the brightest ~255.
    jpeg = cv2.imread(str(out / "JPEGImages" / "ct_0.jpg"), cv2.IMREAD_UNCHANGED)
    assert jpeg.dtype == np.uint8 and jpeg.shape == (24, 32)
    expected = (ramp - ramp.min()) / (ramp.max() - ramp.min()) * 255
    assert np.abs(jpeg.astype(float) - expected).max() <= 4
    # 8-bit images keep their values; the embedded image is used when the file is gone.
    mr = cv2.imread(str(out / "JPEGImages" / "mr_8bit.jpg"), cv2.IMREAD_UNCHANGED)
    assert np.abs(mr.astype(int) - 77).max() <= 1
    emb = cv2.imread(str(out / "JPEGImages" / "embedded.jpg"), cv2.IMREAD_UNCHANGED)
    assert np.abs(emb.astype(int) - embedded).mean() < 2
    viz = cv2.imread(str(out / "SegmentationClassVisualization" / "ct_0.jpg"))
    assert viz.shape == (24, 32, 3)

    sets = out / "ImageSets" / "Segmentation"
    train, val = read_lines(sets / "train.txt"), read_lines(sets / "val.txt")
    assert len(val) == 1 and not set(train) & set(val) and sorted(train + val) == stems
    assert read_lines(sets / "trainval.txt") == stems


def test_voc_split_is_deterministic_per_seed(tmp_path):
    in_dir, labels, _, _ = make_voc_folder(tmp_path / "in")
    splits = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = convert_labelme_to_voc(in_dir, tmp_path / name, labels, val_fraction=0.4, seed=seed)
        sets = out / "ImageSets" / "Segmentation"
        splits.append((read_lines(sets / "train.txt"), read_lines(sets / "val.txt")))
        assert len(splits[-1][1]) == 2 and len(splits[-1][0]) == 3
    assert splits[0] == splits[1]
    assert splits[0] != splits[2]  # seeds 7 and 8 pick different validation images


def test_voc_rejects_a_bad_labels_file(tmp_path):
    in_dir, labels, _, _ = make_voc_folder(tmp_path / "in")
    labels.write_text("_background_\nbody\n")
    with pytest.raises(CtmriInputError) as info:
        convert_labelme_to_voc(in_dir, tmp_path / "voc", labels)
    assert str(info.value).startswith(str(labels)) and "__ignore__" in str(info.value)
    labels.write_text("__ignore__\n_background_\nbody\nbody\n")
    with pytest.raises(CtmriInputError, match="'body' appears twice"):
        convert_labelme_to_voc(in_dir, tmp_path / "voc", labels)
    assert not (tmp_path / "voc").exists()


def test_voc_label_missing_from_labels_file_leaves_no_output(tmp_path):
    in_dir, labels, _, _ = make_voc_folder(tmp_path / "in")
    labels.write_text("__ignore__\n_background_\nbody\n")  # no "lesion"
    with pytest.raises(CtmriInputError) as info:
        convert_labelme_to_voc(in_dir, tmp_path / "voc", labels)
    assert str(info.value).startswith(str(in_dir / "ct_0.json")) and "'lesion'" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "labels.txt"]


def test_voc_without_any_image_is_an_error(tmp_path):
    in_dir, labels, _, _ = make_voc_folder(tmp_path / "in")
    (in_dir / "ct_1.png").unlink()
    with pytest.raises(CtmriInputError) as info:
        convert_labelme_to_voc(in_dir, tmp_path / "voc", labels)
    message = str(info.value)
    assert message.startswith(str(in_dir / "ct_1.json")) and str(in_dir / "ct_1.png") in message
    assert not (tmp_path / "voc").exists()


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_voc_val_fraction_must_be_below_one(tmp_path, fraction):
    in_dir, labels, _, _ = make_voc_folder(tmp_path / "in")
    with pytest.raises(CtmriInputError, match="val_fraction"):
        convert_labelme_to_voc(in_dir, tmp_path / "voc", labels, val_fraction=fraction)

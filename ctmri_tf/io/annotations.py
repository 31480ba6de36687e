"""Labelme annotations: body masks, VOC class maps and whole-folder conversions.

Labelme (https://github.com/wkentaro/labelme) saves one JSON file per image with the shapes a
person drew, in pixel coordinates ``[x, y]`` = ``[col, row]`` of the image named by ``imagePath``
(or embedded in ``imageData``). The shapes are rasterised with labelme's own code
(``labelme.utils.shapes_to_label``, which calls ``shape_to_mask``), so a mask here is pixel for
pixel what labelme itself would produce.

Which shapes count: only shapes that enclose an area describe a body or a structure, so
``polygon``, ``rectangle``, ``circle``, ``oriented_rectangle`` and ``mask`` (labelme's AI masks) are
drawn. ``line``, ``linestrip`` and ``point`` are measurements or landmarks; labelme would paint them
with an arbitrary 10-pixel pen, so they are skipped with a ``UserWarning``. Any other
``shape_type`` is an error.

Outputs:
    * body masks are uint8 ``(rows, cols)`` in {0, 1}; as PNG files they are stored as 0/255 so
      that a person can look at them (readers treat nonzero as body);
    * class maps are int32 ``(rows, cols)`` class ids, ``-1`` for labelme's ``__ignore__`` label
      (stored as 255 in VOC palette PNGs, the VOC "void" value).
"""
from __future__ import annotations

import binascii
import json
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import cv2
import numpy as np
from tqdm import tqdm

from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError

__all__ = [
    "AREA_SHAPE_TYPES",
    "SKIPPED_SHAPE_TYPES",
    "MAX_IMAGE_SIDE",
    "MAX_IMAGE_PIXELS",
    "labelme_to_mask",
    "labelme_to_label_map",
    "convert_labelme_to_masks",
    "convert_labelme_to_voc",
]

def _labelme_utils():
    """``labelme.utils``, imported on first use: importing labelme loads Qt helpers and, through
    its AI tools, onnxruntime (and writes into ``~/.cache``), which a dataset build or a
    translation that reads no Labelme file should not pay for."""
    import labelme.utils

    return labelme.utils


# shape_type -> number of points labelme stores for it (None: at least 3).
AREA_SHAPE_TYPES: dict[str, int | None] = {
    "polygon": None,
    "rectangle": 2,
    "circle": 2,
    "oriented_rectangle": 4,
    "mask": 2,  # the bounding box (x1, y1), (x2, y2) of a base64 PNG mask, inclusive
}
SKIPPED_SHAPE_TYPES: tuple[str, ...] = ("line", "linestrip", "point")

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
IGNORE_ID = -1
VOC_VOID_VALUE = 255  # how IGNORE_ID is stored in a VOC palette PNG
JPEG_QUALITY = 95
# The largest image a labelme JSON may declare. Rasterising allocates several full-size
# arrays (bool per shape, int32 class ids), so a garbled or hostile imageHeight/imageWidth
# (60000 x 60000 needs ~13 GiB) is refused before anything is allocated. CT and MRI slices
# are 512-1024 px a side and the largest 2-D radiographs about 4k x 5k (20 Mpx).
MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 2 ** 26   # 64 Mpx: an int32 class map of 256 MiB


@dataclass(frozen=True)
class _Annotation:
    """One labelme JSON file, validated."""

    path: Path
    height: int
    width: int
    shapes: list[dict]          # area shapes only, in drawing order, ready for shapes_to_label
    image_path: Path            # imagePath resolved against the JSON's folder (may not exist)
    image_data: str | None      # the embedded base64 image, or None


# --------------------------------------------------------------------------------------------
# Reading and validating a labelme JSON file
# --------------------------------------------------------------------------------------------

def _is_number(value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def _image_size(raw: dict, key: str, path: Path) -> int:
    value = raw.get(key)
    if not (_is_number(value) and value == int(value) and value > 0):
        raise CtmriInputError(path, f"{key} must be a positive integer number of pixels, "
                                    f"got {value!r}")
    return int(value)


def _load_shape(index: int, shape, path: Path, height: int, width: int) -> dict | None:
    """Validate one shape; return the dict shapes_to_label needs, or None to skip it."""
    if not isinstance(shape, dict):
        raise CtmriInputError(path, f"shape {index} is not a JSON object")
    label = shape.get("label")
    if not isinstance(label, str):
        raise CtmriInputError(path, f"shape {index} has no text 'label' (got {label!r})")
    shape_type = shape.get("shape_type") or "polygon"  # labelme treats a missing type as polygon
    if shape_type in SKIPPED_SHAPE_TYPES:
        return None
    if shape_type not in AREA_SHAPE_TYPES:
        known = ", ".join(list(AREA_SHAPE_TYPES) + list(SKIPPED_SHAPE_TYPES))
        raise CtmriInputError(path, f"shape {index} (label {label!r}) has unknown shape_type "
                                    f"{shape_type!r}; labelme's shape types are {known}")
    points = shape.get("points")
    if not (isinstance(points, list)
            and all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p)
                    for p in points)):
        raise CtmriInputError(path, f"shape {index} (label {label!r}) must have 'points' as a "
                                    f"list of [x, y] numbers")
    needed = AREA_SHAPE_TYPES[shape_type]
    if (needed is None and len(points) < 3) or (needed is not None and len(points) != needed):
        expected = "at least 3" if needed is None else str(needed)
        raise CtmriInputError(path, f"shape {index} (label {label!r}) is a {shape_type} with "
                                    f"{len(points)} points; it needs {expected}")
    group_id = shape.get("group_id")
    loaded = {"label": label, "points": points, "shape_type": shape_type,
              "group_id": group_id if isinstance(group_id, int) else None, "mask": None}
    if shape_type == "mask":
        loaded["mask"] = _load_shape_mask(index, shape, path, height, width)
    return loaded


def _load_shape_mask(index: int, shape: dict, path: Path, height: int, width: int) -> np.ndarray:
    """Decode a labelme ``mask`` shape and check that it fits its box inside the image."""
    (x1, y1), (x2, y2) = np.asarray(shape["points"]).astype(int)
    if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
        raise CtmriInputError(path, f"shape {index} (mask) box ({x1}, {y1})-({x2}, {y2}) is not "
                                    f"inside the {width}x{height} image")
    encoded = shape.get("mask")
    try:
        mask = _labelme_utils().img_b64_to_arr(encoded).astype(bool)
    except (TypeError, ValueError, OSError, binascii.Error) as exc:
        raise CtmriInputError(path, f"shape {index} (mask) has no readable base64 PNG "
                                    f"'mask': {exc}") from exc
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if mask.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise CtmriInputError(path, f"shape {index} (mask) PNG is {mask.shape[1]}x{mask.shape[0]} "
                                    f"pixels but its box is {x2 - x1 + 1}x{y2 - y1 + 1}")
    return mask


def _read_annotation(json_path: str | os.PathLike) -> _Annotation:
    path = Path(json_path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError as exc:
        raise CtmriInputError(path, "labelme JSON file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CtmriInputError(path, f"cannot read labelme JSON file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CtmriInputError(path, f"not valid JSON ({exc}); is it a labelme file?") from exc
    if not isinstance(raw, dict):
        raise CtmriInputError(path, "not a labelme file: the JSON is not an object")
    missing = [k for k in ("shapes", "imagePath", "imageHeight", "imageWidth") if k not in raw]
    if missing:
        raise CtmriInputError(path, f"not a labelme file: missing key(s) {', '.join(missing)}")
    height = _image_size(raw, "imageHeight", path)
    width = _image_size(raw, "imageWidth", path)
    if max(height, width) > MAX_IMAGE_SIDE or height * width > MAX_IMAGE_PIXELS:
        raise CtmriInputError(path, f"declares a {width} x {height} image (imageWidth x "
                                    f"imageHeight); refusing sizes beyond {MAX_IMAGE_SIDE} "
                                    f"pixels a side or {MAX_IMAGE_PIXELS} pixels in all (is "
                                    f"the JSON damaged?)")
    if not isinstance(raw["shapes"], list):
        raise CtmriInputError(path, "'shapes' must be a list")
    if not isinstance(raw["imagePath"], str):
        raise CtmriInputError(path, "'imagePath' must be text")
    image_data = raw.get("imageData")
    if image_data is not None and not isinstance(image_data, str):
        raise CtmriInputError(path, "'imageData' must be base64 text or null")

    shapes, skipped = [], []
    for index, shape in enumerate(raw["shapes"]):
        loaded = _load_shape(index, shape, path, height, width)
        if loaded is None:
            skipped.append(f"{index} ({shape.get('shape_type')})")
        else:
            shapes.append(loaded)
    if skipped:
        warnings.warn(f"{path}: ignoring shape(s) {', '.join(skipped)}: lines and points "
                      f"enclose no area", UserWarning, stacklevel=3)
    # Same resolution as labelme: Windows separators allowed, relative to the JSON's folder.
    image_path = path.parent / PureWindowsPath(raw["imagePath"]).as_posix()
    return _Annotation(path=path, height=height, width=width, shapes=shapes,
                       image_path=image_path, image_data=image_data or None)


# --------------------------------------------------------------------------------------------
# The annotated image
# --------------------------------------------------------------------------------------------

def _decode_embedded_image(annotation: _Annotation) -> np.ndarray:
    """The ``imageData`` image as labelme decodes it (PIL: RGB(A) order, 16-bit kept)."""
    try:
        return _labelme_utils().img_b64_to_arr(annotation.image_data)
    except (ValueError, OSError, binascii.Error) as exc:
        raise CtmriInputError(annotation.path, f"embedded imageData is not a readable image: "
                                               f"{exc}") from exc


def _read_image_file(path: Path) -> np.ndarray:
    """An image file with its bit depth (8/16-bit, float TIFF), gray or RGB order.

    EXIF orientation is applied, as labelme applies it before anyone draws on the image.
    """
    image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise CtmriInputError(path, "cannot read this image (not a PNG/JPEG/TIFF/BMP file, or "
                                    "damaged)")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def _check_size(annotation: _Annotation, shape: Sequence[int], source: str) -> None:
    rows, cols = int(shape[0]), int(shape[1])
    if (rows, cols) != (annotation.height, annotation.width):
        raise CtmriInputError(
            annotation.path,
            f"annotation is for an image of {annotation.height} rows x {annotation.width} "
            f"columns (imageHeight, imageWidth) but {source} has {rows} rows x {cols} columns")


def _check_against_images(annotation: _Annotation, image_shape: Sequence[int] | None) -> None:
    """Compare the annotated size with every image we know of: argument, embedded, file."""
    if image_shape is not None:
        if len(image_shape) < 2:
            raise CtmriInputError(annotation.path, f"image_shape must be (rows, cols), got "
                                                   f"{tuple(image_shape)!r}")
        _check_size(annotation, image_shape, f"image_shape {tuple(image_shape)!r}")
    if annotation.image_data is not None:
        _check_size(annotation, _decode_embedded_image(annotation).shape, "its embedded imageData")
    if annotation.image_path.is_file():
        _check_size(annotation, _read_image_file(annotation.image_path).shape,
                    f"the image file {annotation.image_path}")


def _load_image(annotation: _Annotation) -> np.ndarray:
    """The annotated image: embedded ``imageData`` if present (what labelme shows), else the
    file named by ``imagePath``."""
    if annotation.image_data is not None:
        image, source = _decode_embedded_image(annotation), "its embedded imageData"
    elif annotation.image_path.is_file():
        image = _read_image_file(annotation.image_path)
        source = f"the image file {annotation.image_path}"
    else:
        raise CtmriInputError(annotation.path, f"no image: imageData is empty and the image file "
                                               f"{annotation.image_path} does not exist")
    _check_size(annotation, image.shape, source)
    return image


def _to_uint8_for_jpeg(image: np.ndarray) -> np.ndarray:
    """8-bit gray ``(rows, cols)`` or RGB ``(rows, cols, 3)`` for JPEG.

    8-bit images are kept as they are. Deeper images (16-bit CT/MR PNGs, float TIFFs) are
    stretched min-max per image onto 0..255, because their stored values (HU + 1024, raw MR
    signal) would otherwise be clipped or all black; a constant image becomes 0. Alpha is
    dropped and RGB whose three channels are equal becomes gray.
    """
    if image.ndim == 3:
        image = image[:, :, :3]
        if image.shape[2] == 1 or (np.array_equal(image[:, :, 0], image[:, :, 1])
                                   and np.array_equal(image[:, :, 0], image[:, :, 2])):
            image = image[:, :, 0]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(image.shape, dtype=np.uint8)
    low, high = values[finite].min(), values[finite].max()
    if high <= low:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = np.where(finite, (values - low) / (high - low) * 255.0, 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _imwrite(path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image, list(params)):
        raise OSError(f"OpenCV could not write {path}")


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------

def labelme_to_mask(json_path: str | os.PathLike, *, image_shape: Sequence[int] | None = None,
                    labels: Iterable[str] | None = None) -> np.ndarray:
    """The union of the area shapes of a labelme JSON file as a body mask.

    Args:
        json_path: the labelme ``.json`` file.
        image_shape: ``(rows, cols[, channels])`` of the image the mask is for; checked against
            ``imageHeight``/``imageWidth``.
        labels: draw only shapes with one of these labels (``None``: every shape).

    Returns:
        uint8 ``(imageHeight, imageWidth)`` in {0, 1}: 1 inside any drawn shape.

    Raises:
        CtmriInputError: the file is not readable labelme JSON, a shape is malformed or of an
            unknown ``shape_type`` (the message gives its index), or the annotated size
            disagrees with ``image_shape``, the embedded ``imageData`` or the image file named by
            ``imagePath`` beside the JSON (when it exists).

    Lines, line strips and points enclose no area and are skipped with a ``UserWarning``.
    """
    if isinstance(labels, str):
        labels = [labels]
    annotation = _read_annotation(json_path)
    _check_against_images(annotation, image_shape)
    wanted = None if labels is None else set(labels)
    shapes = [s for s in annotation.shapes if wanted is None or s["label"] in wanted]
    every_label_is_one = {s["label"]: 1 for s in shapes}
    class_map, _ = _labelme_utils().shapes_to_label((annotation.height, annotation.width),
                                                    shapes, every_label_is_one)
    return (class_map > 0).astype(np.uint8)


def _class_ids(class_names: Sequence[str]) -> dict[str, int]:
    if isinstance(class_names, str) or not class_names:
        raise CtmriInputError(None, "class_names must be a non-empty list of names, index = "
                                    "class id (index 0 is the background)")
    ids: dict[str, int] = {}
    for class_id, name in enumerate(class_names):
        if not isinstance(name, str) or not name or name == IGNORE_LABEL or name in ids:
            raise CtmriInputError(None, f"class_names entry {class_id} ({name!r}) must be a "
                                        f"unique, non-empty name other than {IGNORE_LABEL!r}")
        ids[name] = class_id
    ids[IGNORE_LABEL] = IGNORE_ID
    return ids


def _label_map(annotation: _Annotation, class_ids: dict[str, int]) -> np.ndarray:
    for index, shape in enumerate(annotation.shapes):
        if shape["label"] not in class_ids:
            known = ", ".join(repr(n) for n in class_ids)
            raise CtmriInputError(annotation.path, f"label {shape['label']!r} is not one of the "
                                                   f"class names ({known})")
    class_map, _ = _labelme_utils().shapes_to_label((annotation.height, annotation.width),
                                                    annotation.shapes, class_ids)
    return class_map.astype(np.int32)


def labelme_to_label_map(json_path: str | os.PathLike, class_names: Sequence[str]) -> np.ndarray:
    """The class id of every pixel of a labelme JSON file (VOC semantic segmentation).

    Args:
        json_path: the labelme ``.json`` file.
        class_names: class names, the index is the class id; index 0 is the background
            (conventionally ``"_background_"``), which is also every pixel outside all shapes.

    Returns:
        int32 ``(imageHeight, imageWidth)`` class ids; pixels of shapes labelled ``__ignore__``
        are ``-1``. Shapes are drawn in file order, so a later shape covers an earlier one.

    Raises:
        CtmriInputError: as for :func:`labelme_to_mask`, and when a shape's label is not in
            ``class_names`` (the message names the label and the file).
    """
    class_ids = _class_ids(class_names)
    annotation = _read_annotation(json_path)
    _check_against_images(annotation, None)
    return _label_map(annotation, class_ids)


# --------------------------------------------------------------------------------------------
# Whole folders
# --------------------------------------------------------------------------------------------

def _json_files(in_dir: Path) -> list[Path]:
    """The labelme files of a folder, sorted; hidden files (e.g. macOS ``._x.json``) skipped."""
    if not in_dir.is_dir():
        raise CtmriInputError(in_dir, "input folder does not exist or is not a folder")
    files = sorted(p for p in in_dir.iterdir()
                   if p.suffix.lower() == ".json" and p.is_file() and not p.name.startswith("."))
    if not files:
        raise CtmriInputError(in_dir, "no labelme .json files in this folder")
    stems = [p.stem for p in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise CtmriInputError(in_dir, f"several .json files would write the same output name: "
                                      f"{', '.join(clashes)}")
    return files


def _check_not_inside(output: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output folder that is, or holds, one of the inputs (overwrite would delete it)."""
    out = output.resolve()
    for item in inputs:
        resolved = item.resolve()
        if resolved == out or out in resolved.parents:
            raise CtmriInputError(output, f"output folder would contain the input {item}; "
                                          f"choose another output folder")


def convert_labelme_to_masks(in_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                             overwrite: bool = False) -> list[Path]:
    """Write the body mask of every labelme JSON file of ``in_dir`` as ``out_dir/<stem>.png``.

    Each PNG is uint8 ``(imageHeight, imageWidth)`` with 0 (outside) and 255 (inside a shape),
    the union of all area shapes as in :func:`labelme_to_mask`; readers treat nonzero as body.
    ``out_dir`` appears only when every file has been converted (nothing is left behind on an
    error) and an existing ``out_dir`` is replaced only with ``overwrite=True``.

    Returns:
        the written PNG paths, in sorted JSON file order.

    Raises:
        CtmriInputError: ``in_dir`` has no ``.json`` file, any file is unusable (see
            :func:`labelme_to_mask`), or ``out_dir`` exists and ``overwrite`` is false.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    json_files = _json_files(in_dir)
    _check_not_inside(out_dir, [in_dir])
    written = []
    with atomic_output(out_dir, directory=True, overwrite=overwrite) as tmp:
        for json_path in tqdm(json_files, desc="labelme -> masks", unit="file"):
            mask = labelme_to_mask(json_path)
            _imwrite(tmp / f"{json_path.stem}.png", mask * np.uint8(255))
            written.append(out_dir / f"{json_path.stem}.png")
    return written


def _read_labels_file(labels_file: Path) -> list[str]:
    """Class names (from ``_background_`` on) of a labelme ``labels.txt``.

    The format of labelme's semantic segmentation example: one name per line, the first line
    ``__ignore__`` (id -1), the second ``_background_`` (id 0), then the classes (ids 1, 2, ...).
    """
    try:
        lines = labels_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise CtmriInputError(labels_file, "labels file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CtmriInputError(labels_file, f"cannot read labels file: {exc}") from exc
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    expected = (f"expected one name per line: {IGNORE_LABEL}, then {BACKGROUND_LABEL}, then at "
                f"least one class")
    if len(names) < 3 or names[0] != IGNORE_LABEL or names[1] != BACKGROUND_LABEL:
        raise CtmriInputError(labels_file, f"not a labelme labels file: {expected} "
                                           f"(first lines are {names[:2]!r})")
    for line_number, name in enumerate(names, start=1):
        if not name:
            raise CtmriInputError(labels_file, f"line {line_number} is empty; {expected}")
        if names.index(name) != line_number - 1:
            raise CtmriInputError(labels_file, f"line {line_number}: {name!r} appears twice")
    class_names = names[1:]
    if len(class_names) > VOC_VOID_VALUE:
        raise CtmriInputError(labels_file, f"{len(class_names)} classes do not fit a VOC PNG "
                                           f"(at most {VOC_VOID_VALUE}, with the background)")
    return class_names


def _split(stems: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/val split: ``round(n * val_fraction)`` validation images, at least one
    when ``val_fraction > 0`` and at least one training image is left."""
    n = len(stems)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n > 1:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(stems[i] for i in order[:n_val])
    train = sorted(stems[i] for i in order[n_val:])
    return train, val


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def convert_labelme_to_voc(in_dir: str | os.PathLike, out_dir: str | os.PathLike,
                           labels_file: str | os.PathLike, *, val_fraction: float = 0.2,
                           seed: int = 0, overwrite: bool = False) -> Path:
    """Convert a folder of labelme JSON files into a PASCAL VOC semantic segmentation dataset.

    Follows labelme's ``examples/semantic_segmentation/labelme2voc.py``. ``labels_file`` lists
    one name per line: ``__ignore__``, ``_background_``, then the classes; class ids are
    0 (background), 1, 2, ... in that order and ``__ignore__`` shapes become 255 (VOC void).

    Writes ``out_dir/``:
        * ``JPEGImages/<stem>.jpg``: the annotated image (embedded ``imageData`` if present,
          else the file named by ``imagePath``). 8-bit images are kept; 16-bit medical PNGs
          (e.g. CT stored as HU + 1024, or raw MR signal) and float TIFFs are stretched
          **min-max per image** onto 0..255, so intensities are not comparable between JPEGs;
          keep the originals for anything quantitative.
        * ``SegmentationClass/<stem>.png``: palette PNG of class ids (``imgviz.io.lblsave``).
        * ``SegmentationClassVisualization/<stem>.jpg``: class colours over the gray image.
        * ``ImageSets/Segmentation/{train,val,trainval}.txt``: stems, one per line. The split
          is deterministic for a given ``seed`` and puts every image in exactly one of train
          and val (``round(n * val_fraction)`` in val). It is per image: when several images
          come from one patient, split by patient yourself to avoid leaking a patient into both.
        * ``class_names.txt``: ``_background_`` and the classes, one per line (line = id).

    The folder appears only when complete; an existing ``out_dir`` is replaced only with
    ``overwrite=True``. Lines and points are skipped (see :func:`labelme_to_mask`).

    Returns:
        ``out_dir``.

    Raises:
        CtmriInputError: bad labels file, ``val_fraction`` outside [0, 1), no JSON files, a JSON
            file that is unusable, a label missing from the labels file, an image that cannot be
            found or whose size disagrees with the annotation, or ``out_dir`` exists.
    """
    in_dir, out_dir, labels_file = Path(in_dir), Path(out_dir), Path(labels_file)
    class_names = _read_labels_file(labels_file)
    class_ids = _class_ids(class_names)
    if not (_is_number(val_fraction) and 0 <= val_fraction < 1):
        raise CtmriInputError(None, f"val_fraction must be in [0, 1), got {val_fraction!r}")
    json_files = _json_files(in_dir)
    _check_not_inside(out_dir, [in_dir, labels_file])
    import imgviz  # comes with labelme; only the VOC export draws with it

    stems = [p.stem for p in json_files]
    train, val = _split(stems, val_fraction, seed)

    with atomic_output(out_dir, directory=True, overwrite=overwrite) as tmp:
        folders = {name: tmp / name for name in
                   ("JPEGImages", "SegmentationClass", "SegmentationClassVisualization",
                    "ImageSets/Segmentation")}
        for folder in folders.values():
            folder.mkdir(parents=True)
        _write_lines(tmp / "class_names.txt", class_names)
        for json_path in tqdm(json_files, desc="labelme -> VOC", unit="file"):
            annotation = _read_annotation(json_path)
            class_map = _label_map(annotation, class_ids)
            image = _to_uint8_for_jpeg(_load_image(annotation))
            stem = json_path.stem
            _imwrite(folders["JPEGImages"] / f"{stem}.jpg", image,
                     (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
            stored = np.where(class_map == IGNORE_ID, VOC_VOID_VALUE, class_map).astype(np.uint8)
            imgviz.io.lblsave(folders["SegmentationClass"] / f"{stem}.png", stored)
            gray = image if image.ndim == 2 else imgviz.rgb2gray(image)
            overlay = imgviz.label2rgb(label=class_map, image=gray, font_size=15,
                                       label_names=class_names, loc="rb")
            _imwrite(folders["SegmentationClassVisualization"] / f"{stem}.jpg", overlay,
                     (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
        sets = folders["ImageSets/Segmentation"]
        _write_lines(sets / "train.txt", train)
        _write_lines(sets / "val.txt", val)
        _write_lines(sets / "trainval.txt", sorted(stems))
    return out_dir

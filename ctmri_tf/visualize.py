"""PNG grids and contact sheets for looking at CT, MRI, masks and model outputs.

Everything here returns or writes 8-bit grayscale images. A grid is a list of rows, each a list
of 2-D images (``(rows, cols)`` or ``(rows, cols, 1)``, NumPy arrays or tf tensors); every column
has its own intensity range:

* a ``(low, high)`` tuple in the units of that column's images (``(-1, 1)`` for model space,
  HU for CT, MR signal for MRI, ``(0, 1)`` for masks) is mapped linearly onto 0..255 and
  clipped, so the same tissue has the same gray in every row;
* :data:`MINMAX` stretches each image between its own minimum and maximum (MR signal has no
  absolute scale, so this is how MRI is shown).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError

MINMAX = "minmax"
"""Column range meaning: stretch each image between its own minimum and maximum."""

CONTACT_SHEET_CT_WINDOW_HU = (-200.0, 1000.0)
"""CT display window of :func:`contact_sheet` in HU: soft tissue, CSF and bone all readable."""

SEPARATOR_PX = 2
SEPARATOR_GRAY = 96
TITLE_HEIGHT_PX = 18
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MAX_FONT_SCALE = 0.45
_MIN_FONT_SCALE = 0.25
ROW_LABEL_FONT_SCALE = 0.3
"""Font scale of the row labels of :func:`image_grid` (small: cells may be 32 px high)."""


def _as_2d(image) -> np.ndarray:
    """A NumPy float64 ``(rows, cols)`` view of a 2-D image, ``(rows, cols, 1)`` accepted."""
    array = np.asarray(image.numpy() if hasattr(image, "numpy") else image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise CtmriInputError(None, f"expected a 2-D image (rows, cols) or (rows, cols, 1), "
                                    f"got shape {array.shape}")
    return array.astype(np.float64)


def to_uint8(x, value_range: tuple[float, float] | str = (-1, 1)) -> np.ndarray:
    """Map an image onto 0..255 for display.

    Args:
        x: a 2-D image ``(rows, cols)`` or ``(rows, cols, 1)``, NumPy or tf, in any units.
        value_range: ``(low, high)`` in the units of ``x`` (default: model space [-1, 1]); ``low``
            becomes 0 and ``high`` 255, values outside are clipped. :data:`MINMAX` uses the
            image's own minimum and maximum (a constant image becomes 0).

    Returns:
        ``np.uint8`` array ``(rows, cols)``.
    """
    image = _as_2d(x)
    if isinstance(value_range, str):
        if value_range != MINMAX:
            raise CtmriInputError(None, f"unknown value_range {value_range!r}; use a (low, high) "
                                        f"tuple or {MINMAX!r}")
        finite = image[np.isfinite(image)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    else:
        low, high = (float(v) for v in value_range)
    if high < low:
        raise CtmriInputError(None, f"value_range {value_range!r} has high < low")
    if high == low:
        scaled = np.where(image > high, 255.0, 0.0)
    else:
        scaled = (image - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _fit_title(text: str, width: int) -> tuple[str, float]:
    """The largest font scale that fits ``width`` (and the text, shortened if even the smallest
    scale is too wide)."""
    scale = _MAX_FONT_SCALE
    while scale > _MIN_FONT_SCALE and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > width - 2:
        scale -= 0.05
    scale = max(scale, _MIN_FONT_SCALE)
    while text and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > width - 2:
        text = text[:-1]
    return text, scale


def _label_width(labels: Sequence[str]) -> int:
    """Width of the row-label band: the longest label at :data:`ROW_LABEL_FONT_SCALE`."""
    widest = max(cv2.getTextSize(line, _FONT, ROW_LABEL_FONT_SCALE, 1)[0][0]
                 for label in labels for line in str(label).split("\n"))
    return widest + 6


def _draw_label(grid: np.ndarray, label: str, y0: int, cell_h: int) -> None:
    """``label``'s lines (split at newlines) left-aligned, centred on the row's height."""
    lines = str(label).split("\n")
    line_h = cv2.getTextSize("Ag", _FONT, ROW_LABEL_FONT_SCALE, 1)[0][1] + 4
    y = y0 + (cell_h - len(lines) * line_h) // 2 + line_h - 2
    for line in lines:
        cv2.putText(grid, line, (3, y), _FONT, ROW_LABEL_FONT_SCALE, 255, 1, cv2.LINE_AA)
        y += line_h


def image_grid(rows: Sequence[Sequence], *, titles: Sequence[str] | None = None,
               value_ranges: Sequence[tuple[float, float] | str] | tuple[float, float] | str
               | None = None, row_labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile 2-D images into one grayscale picture with thin separators.

    Args:
        rows: a list of rows, each a list of 2-D images (``(rows, cols)`` or ``(rows, cols, 1)``).
            Rows may be shorter than the longest one; missing cells and ``None`` cells stay black.
            Images of different sizes are centred in cells as large as the largest image.
        titles: optional column titles, drawn with ``cv2.putText`` in a band above the first row
            (shrunk, then shortened, to fit the column).
        value_ranges: the display range of each column (a list, one per column), or one range for
            all columns; each is a ``(low, high)`` tuple in the column's units or :data:`MINMAX`.
            Default: model space ``(-1, 1)`` for every column.
        row_labels: optional text for each row (e.g. the translation direction), drawn with
            ``cv2.putText`` in a black band left of the cells, as wide as the longest label
            (a ``"\\n"`` starts a second line).

    Returns:
        ``np.uint8`` array ``(H, W)``: cells separated by :data:`SEPARATOR_PX`-pixel gray lines.
    """
    rows = [list(row) for row in rows]
    num_cols = max((len(row) for row in rows), default=0)
    if not rows or num_cols == 0:
        raise CtmriInputError(None, "image_grid needs at least one image")
    if value_ranges is None:
        ranges = [(-1.0, 1.0)] * num_cols
    elif isinstance(value_ranges, str) or (
            len(value_ranges) == 2 and all(isinstance(v, (int, float, np.number))
                                           for v in value_ranges)):
        ranges = [value_ranges] * num_cols
    else:
        ranges = list(value_ranges)
        if len(ranges) != num_cols:
            raise CtmriInputError(None, f"value_ranges has {len(ranges)} entries for "
                                        f"{num_cols} columns")
    if titles is not None and len(titles) != num_cols:
        raise CtmriInputError(None, f"titles has {len(titles)} entries for {num_cols} columns")
    if row_labels is not None and len(row_labels) != len(rows):
        raise CtmriInputError(None, f"row_labels has {len(row_labels)} entries for {len(rows)} "
                                    f"rows")

    cells = [[None if image is None else to_uint8(image, ranges[c]) for c, image in enumerate(row)]
             for row in rows]
    shapes = [cell.shape for row in cells for cell in row if cell is not None]
    if not shapes:
        raise CtmriInputError(None, "image_grid needs at least one image")
    cell_h = max(h for h, _ in shapes)
    cell_w = max(w for _, w in shapes)
    sep = SEPARATOR_PX
    top = TITLE_HEIGHT_PX + sep if titles is not None else 0
    left = _label_width(row_labels) + sep if row_labels is not None else 0
    height = top + len(rows) * cell_h + (len(rows) - 1) * sep
    width = left + num_cols * cell_w + (num_cols - 1) * sep
    grid = np.full((height, width), SEPARATOR_GRAY, np.uint8)
    if titles is not None:
        grid[:TITLE_HEIGHT_PX] = 0
    if row_labels is not None:
        grid[:, :left - sep] = 0
    for r, row in enumerate(cells):
        y0 = top + r * (cell_h + sep)
        if row_labels is not None:
            _draw_label(grid, row_labels[r], y0, cell_h)
        for c in range(num_cols):
            x0 = left + c * (cell_w + sep)
            grid[y0:y0 + cell_h, x0:x0 + cell_w] = 0
            cell = row[c] if c < len(row) else None
            if cell is None:
                continue
            dy, dx = (cell_h - cell.shape[0]) // 2, (cell_w - cell.shape[1]) // 2
            grid[y0 + dy:y0 + dy + cell.shape[0], x0 + dx:x0 + dx + cell.shape[1]] = cell
    if titles is not None:
        for c, title in enumerate(titles):
            text, scale = _fit_title(str(title), cell_w)
            (text_w, text_h), _ = cv2.getTextSize(text, _FONT, scale, 1)
            x = left + c * (cell_w + sep) + max(0, (cell_w - text_w) // 2)
            y = (TITLE_HEIGHT_PX + text_h) // 2
            cv2.putText(grid, text, (x, y), _FONT, scale, 255, 1, cv2.LINE_AA)
    return grid


def save_grid_png(path: str | os.PathLike, rows: Sequence[Sequence], *, overwrite: bool = False,
                  **kwargs) -> Path:
    """Write :func:`image_grid` ``(rows, **kwargs)`` as an 8-bit grayscale PNG, atomically.

    Args:
        path: the ``.png`` file to write.
        rows: see :func:`image_grid`.
        overwrite: replace an existing file (otherwise an existing ``path`` is an error).
        **kwargs: ``titles``, ``value_ranges`` and ``row_labels`` of :func:`image_grid`.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CtmriInputError(path, "a grid is written as PNG; use a .png file name")
    grid = image_grid(rows, **kwargs)
    ok, encoded = cv2.imencode(".png", grid)
    if not ok:
        raise CtmriInputError(path, "OpenCV could not encode the grid as PNG")
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def _modality_name(value) -> str:
    value = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    if value.dtype.kind in "iu":
        return ("ct", "mri")[int(value)]
    name = value.item()
    return name.decode() if isinstance(name, bytes) else str(name)


def contact_sheet(examples: Iterable[Mapping], path: str | os.PathLike, n: int = 6, *,
                  overwrite: bool = False) -> Path:
    """Write a PNG of ``n`` CT | MRI | body-mask triplets, one row per slice.

    Args:
        examples: raw examples of the tfds ``ctmri`` dataset (dicts as produced by
            ``tfds.as_numpy(ctmri_tf.data.load(...))``, tf tensors also accepted) with ``image``
            (HU or MR signal), ``mask`` ({0, 1}), ``modality`` (0/1 or "ct"/"mri"),
            ``has_counterpart``, ``counterpart``, ``subject_id`` and ``slice_index``.
            A paired example fills its row with the image and its registered counterpart (the
            CT and MRI examples of one slice give one row, not two); an unpaired one leaves the
            other modality's cell black.
        path: the ``.png`` file to write.
        n: number of rows (fewer if ``examples`` runs out).
        overwrite: replace an existing file.

    CT is shown in the window :data:`CONTACT_SHEET_CT_WINDOW_HU` (HU), MRI stretched between
    each image's minimum and maximum, the mask as 0 = black, 1 = white.

    Returns:
        The path written.
    """
    rows, seen = [], set()
    for example in examples:
        if len(rows) >= n:
            break
        modality = _modality_name(example["modality"])
        subject = np.asarray(example["subject_id"]).item()
        subject = subject.decode() if isinstance(subject, bytes) else str(subject)
        key = (subject, int(np.asarray(example["slice_index"])))
        paired = bool(np.asarray(example["has_counterpart"]))
        if paired and key in seen:
            continue
        seen.add(key)
        image = _as_2d(example["image"])
        other = _as_2d(example["counterpart"]) if paired else None
        ct, mri = (image, other) if modality == "ct" else (other, image)
        rows.append([ct, mri, _as_2d(example["mask"])])
    if not rows:
        raise CtmriInputError(path, "no examples to put on the contact sheet")
    low, high = CONTACT_SHEET_CT_WINDOW_HU
    return save_grid_png(path, rows, overwrite=overwrite,
                         titles=[f"CT {low:g}..{high:g} HU", "MRI", "body mask"],
                         value_ranges=[CONTACT_SHEET_CT_WINDOW_HU, MINMAX, (0.0, 1.0)])

"""Run a fixed-size 2-D model on slices of any pixel spacing and size, in physical units.

A translation model learns anatomy at the pixel spacing it was trained at (mm per pixel), so a
slice is brought to that spacing rather than squeezed to the model's matrix:

1. :func:`resample` the slices ``(rows, cols)`` at ``spacing`` mm onto a grid of
   ``model_spacing`` mm covering the same field of view (both grids centred on the same point;
   bilinear, antialiased with a widened triangle kernel when down-sampling);
2. :func:`predict_tiled`: a grid smaller than the model's tile is padded (centred) with the
   ``background`` value (-1 in model space); a larger one is cut into tiles of the model's size
   that overlap by at least ``min_overlap`` of a tile (:data:`DEFAULT_MIN_OVERLAP` 0.5, as
   nnU-Net), each tile is predicted, and the outputs are blended with an importance window so no
   seam shows: by default nnU-Net's Gaussian (:func:`gaussian_window`: centred on the tile, sigma
   1/8 of the tile per axis, max 1, never below :data:`GAUSSIAN_MIN_WEIGHT`), which trusts a
   tile's centre, where the model saw the most context, over its borders; or ``blend="linear"``,
   a separable linear ramp (:func:`blend_window`); then cropped back to the grid;
3. :func:`resample` the output back onto the input grid (same shape as the input).

Test-time augmentation (``tta``, :data:`TTA_MODES`): every tile is also predicted mirrored
left-right (``"lr"``: the column axis) and, with ``"lr+ud"``, up-down (the row axis) and both;
each output is mirrored back, every pass is stitched on its own, and the result is the mean of
the passes, all in the model's own units (model space), before any mapping to physical units.
``return_std=True`` also gives the per-pixel standard deviation over the passes (population,
``ddof=0``: for two passes ``|a - b| / 2``), a cheap uncertainty map; it is 0 without TTA and
for a model that commutes with the mirrors.

:func:`predict_physical` does the three steps. Everything here is NumPy (float64 internally): the
model is any ``predict(batch (N, tile_rows, tile_cols, C_in)) -> (N, tile_rows, tile_cols,
C_out)`` callable. Sizes are pixels ``(rows, cols)``, spacings mm ``(row, col)``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]
"""``batch (N, tile_rows, tile_cols, C_in) float32 -> (N, tile_rows, tile_cols, C_out)``."""

DEFAULT_MIN_OVERLAP = 0.5
"""Neighbouring tiles share at least this fraction of a tile (more when they spread evenly):
nnU-Net's half-tile step. A slice that fits in one tile is padded, so this costs nothing then;
for larger slices it predicts about ``(1 / (1 - overlap))^2`` times the non-overlapping tiles."""

BLENDS = ("gaussian", "linear")
"""Blending windows of :func:`predict_tiled`: :func:`gaussian_window`, :func:`blend_window`."""
DEFAULT_BLEND = "gaussian"
GAUSSIAN_SIGMA_FRACTION = 1.0 / 8.0
"""Sigma of the Gaussian window as a fraction of the tile size, per axis (nnU-Net's 1/8)."""
GAUSSIAN_MIN_WEIGHT = 1e-3
"""Smallest Gaussian weight (the maximum being 1): a tile's corners still count, so every
pixel has a positive total weight, and a pixel covered by tile corners only is still exact."""

TTA_MODES = {None: ((False, False),),
             "lr": ((False, False), (False, True)),
             "lr+ud": ((False, False), (False, True), (True, False), (True, True))}
"""``tta`` -> the passes as ``(flip rows (up-down), flip cols (left-right))``; the first pass is
always the slice as it is. ``"none"`` is accepted for ``None``."""


def _pair(value, what: str) -> tuple[float, float]:
    values = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{what} must be one positive number or (rows, cols), got {value!r}")
    return float(values[0]), float(values[1])


def resampled_size(size: Sequence[int], spacing, new_spacing) -> tuple[int, int]:
    """Pixels ``(rows, cols)`` of the grid at ``new_spacing`` mm that covers the field of view of
    ``size`` pixels at ``spacing`` mm (rounded, at least 1)."""
    spacing, new_spacing = _pair(spacing, "spacing"), _pair(new_spacing, "new spacing")
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size, spacing, new_spacing))


def resampling_matrix(n_in: int, spacing_in: float, n_out: int, spacing_out: float
                      ) -> np.ndarray:
    """``(n_out, n_in)`` float64 weights taking a line of ``n_in`` samples ``spacing_in`` mm
    apart to ``n_out`` samples ``spacing_out`` mm apart, both lines centred on the same point.

    Linear interpolation between pixel centres (half-pixel convention, edge values extended), with
    the triangle kernel widened to ``spacing_out / spacing_in`` input pixels when that is above 1
    (down-sampling: antialiasing, an average over the output pixel's footprint). Each row sums to
    1. Equal sizes and spacings give the identity exactly.
    """
    if n_in == n_out and math.isclose(spacing_in, spacing_out, rel_tol=1e-9):
        return np.eye(n_in)
    scale = spacing_out / spacing_in                    # input pixels per output pixel
    centres = (np.arange(n_out) + 0.5 - n_out / 2.0) * scale + n_in / 2.0 - 0.5
    centres = np.clip(centres, 0.0, n_in - 1.0)
    support = max(1.0, scale)
    weights = np.maximum(0.0, 1.0 - np.abs(centres[:, None] - np.arange(n_in)[None, :]) / support)
    return weights / weights.sum(axis=1, keepdims=True)


def resample(images: np.ndarray, spacing, new_spacing, size: Sequence[int] | None = None
             ) -> np.ndarray:
    """Slices ``(B, rows, cols, C)`` at ``spacing`` mm -> ``(B, *size, C)`` at ``new_spacing``
    mm, centred on the same point (:func:`resampling_matrix` along rows, then columns).

    ``size`` defaults to :func:`resampled_size`; passing the input's size to the inverse call puts
    a result back exactly onto the input grid. Returns float64.
    """
    images = np.asarray(images, np.float64)
    spacing, new_spacing = _pair(spacing, "spacing"), _pair(new_spacing, "new spacing")
    rows, cols = images.shape[1:3]
    size = resampled_size((rows, cols), spacing, new_spacing) if size is None else size
    along_rows = resampling_matrix(rows, spacing[0], int(size[0]), new_spacing[0])
    along_cols = resampling_matrix(cols, spacing[1], int(size[1]), new_spacing[1])
    out = np.moveaxis(images, 3, 1)                     # (B, C, rows, cols)
    out = along_rows @ out @ along_cols.T
    return np.moveaxis(out, 1, 3)


def tile_starts(length: int, tile: int, min_overlap: float = DEFAULT_MIN_OVERLAP) -> list[int]:
    """First pixel of each tile along an axis of ``length >= tile`` pixels: the fewest tiles of
    ``tile`` pixels that cover it with neighbours sharing at least ``min_overlap * tile`` pixels,
    spread evenly from 0 to ``length - tile``."""
    if length < tile:
        raise ValueError(f"axis of {length} px is shorter than the {tile} px tile; pad it first")
    if length == tile:
        return [0]
    overlap = min(tile - 1, int(math.ceil(min_overlap * tile)))
    count = int(math.ceil((length - tile) / (tile - overlap))) + 1
    return [int(round(k * (length - tile) / (count - 1))) for k in range(count)]


def blend_window(tile: int, ramp: int) -> np.ndarray:
    """``(tile,)`` float64 blending weights: 1 in the middle, falling linearly over ``ramp``
    pixels towards each edge to ``1 / (ramp + 1)`` (never 0, so every pixel has a weight)."""
    distance = np.minimum(np.arange(tile), np.arange(tile)[::-1]) + 1.0
    return np.minimum(1.0, distance / (max(1, ramp) + 1.0))


def gaussian_window(tile: Sequence[int], sigma_fraction: float = GAUSSIAN_SIGMA_FRACTION,
                    min_weight: float = GAUSSIAN_MIN_WEIGHT) -> np.ndarray:
    """``(rows, cols)`` float64 importance map of a tile of ``tile`` pixels, as nnU-Net's: a
    Gaussian centred on the tile (at ``(n - 1) / 2`` per axis, so it is symmetric) with sigma
    ``sigma_fraction * n`` pixels per axis, divided by its maximum (1 at the centre pixel(s)) and
    clipped below at ``min_weight`` so that no pixel has weight 0."""
    rows, cols = (int(n) for n in tile)
    axes = []
    for n in (rows, cols):
        offset = np.arange(n) - (n - 1) / 2.0
        sigma = max(sigma_fraction * n, 1e-6)
        axes.append(np.exp(-0.5 * (offset / sigma) ** 2))
    window = np.outer(axes[0], axes[1])
    return np.maximum(window / window.max(), float(min_weight))


def tta_passes(tta: str | None) -> tuple[tuple[bool, bool], ...]:
    """The mirrored passes of a ``tta`` mode (:data:`TTA_MODES`): ``(flip rows, flip cols)``.

    Raises:
        ValueError: an unknown mode.
    """
    key = None if tta in (None, "none") else tta
    if key not in TTA_MODES:
        raise ValueError(f"tta must be one of none, lr, lr+ud; got {tta!r}")
    return TTA_MODES[key]


def _flip(image: np.ndarray, flip_rows: bool, flip_cols: bool) -> np.ndarray:
    """Mirror ``(rows, cols, C)`` (its own inverse)."""
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return image


def _window(tile: tuple[int, int], blend: str, min_overlap: float) -> np.ndarray:
    if blend == "gaussian":
        return gaussian_window(tile)
    if blend == "linear":
        return np.outer(blend_window(tile[0], int(math.ceil(min_overlap * tile[0]))),
                        blend_window(tile[1], int(math.ceil(min_overlap * tile[1]))))
    raise ValueError(f"blend must be one of {', '.join(BLENDS)}; got {blend!r}")


def mean_and_std(passes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation (``ddof=0``; two passes: ``|a - b| / 2``) over
    the first axis (the passes of :func:`predict_passes`), in the passes' units."""
    passes = np.asarray(passes, np.float64)
    return passes.mean(axis=0), passes.std(axis=0)


def _pad_amounts(size: int, tile: int) -> tuple[int, int]:
    extra = max(0, tile - size)
    return extra // 2, extra - extra // 2


def predict_passes(images: np.ndarray, tile: Sequence[int], predict: Predict, *,
                   background: float = -1.0, min_overlap: float = DEFAULT_MIN_OVERLAP,
                   batch_size: int = 8, blend: str = DEFAULT_BLEND,
                   tta: str | None = None) -> np.ndarray:
    """Every test-time-augmentation pass of :func:`predict_tiled`, stitched on its own:
    ``(passes, B, rows, cols, C_out)`` float64 in the model's units, pass ``k`` being
    ``tta_passes(tta)[k]`` (pass 0: the slices as they are).

    Each tile of each pass is one item of a ``predict`` call (at most ``batch_size`` items per
    call, the mirrored copies of a tile next to it); mirrored tiles are mirrored back before
    blending.

    Raises:
        ValueError: ``predict`` returned another batch size or tile shape; an unknown ``blend``
            or ``tta``.
    """
    images = np.asarray(images, np.float64)
    count, rows, cols = images.shape[:3]
    tile = tuple(int(t) for t in tile)
    flips = tta_passes(tta)
    window = _window(tile, blend, min_overlap)[..., None]
    pad_rows, pad_cols = _pad_amounts(rows, tile[0]), _pad_amounts(cols, tile[1])
    canvas = np.pad(images, ((0, 0), pad_rows, pad_cols, (0, 0)), constant_values=background)
    height, width = canvas.shape[1:3]
    row_starts = tile_starts(height, tile[0], min_overlap)
    col_starts = tile_starts(width, tile[1], min_overlap)
    items = [(b, r, c, k) for b in range(count) for r in row_starts for c in col_starts
             for k in range(len(flips))]
    weight = np.zeros((height, width, 1))             # the same for every slice and pass
    for r in row_starts:
        for c in col_starts:
            weight[r:r + tile[0], c:c + tile[1]] += window
    total = None
    step = max(1, int(batch_size))
    for first in range(0, len(items), step):
        chunk = items[first:first + step]
        batch = np.stack([_flip(canvas[b, r:r + tile[0], c:c + tile[1]], *flips[k])
                          for b, r, c, k in chunk])
        out = np.asarray(predict(batch.astype(np.float32)), np.float64)
        if out.ndim != 4 or out.shape[:3] != (len(chunk), *tile):
            raise ValueError(f"predict returned shape {out.shape} for tiles {batch.shape}; "
                             f"expected ({len(chunk)}, {tile[0]}, {tile[1]}, channels)")
        if total is None:
            total = np.zeros((len(flips), count, height, width, out.shape[3]))
        for (b, r, c, k), tile_out in zip(chunk, out):
            total[k, b, r:r + tile[0], c:c + tile[1]] += _flip(tile_out, *flips[k]) * window
    stitched = total / weight
    return stitched[:, :, pad_rows[0]:pad_rows[0] + rows, pad_cols[0]:pad_cols[0] + cols]


def predict_tiled(images: np.ndarray, tile: Sequence[int], predict: Predict, *,
                  background: float = -1.0, min_overlap: float = DEFAULT_MIN_OVERLAP,
                  batch_size: int = 8, blend: str = DEFAULT_BLEND, tta: str | None = None,
                  return_std: bool = False):
    """``predict`` over slices ``(B, rows, cols, C_in)`` of any size with a model that takes
    ``tile`` pixels ``(rows, cols)``: padded with ``background`` (centred) to at least the tile,
    cut into overlapping tiles (:func:`tile_starts`), predicted ``batch_size`` tiles per call,
    blended with the ``blend`` window (``"gaussian"``: :func:`gaussian_window`, ``"linear"``:
    :func:`blend_window` ramps over the overlap) and cropped back; with ``tta`` (``"lr"``,
    ``"lr+ud"``) the mean of the mirrored passes (:func:`predict_passes`). Returns ``(B, rows,
    cols, C_out)`` float64 in the model's units, and with ``return_std`` also the per-pixel
    standard deviation over the passes (``ddof=0``; zeros without TTA): ``(mean, std)``. A
    pixel-wise ``predict`` gives exactly its untiled result, with either window and any TTA.

    Raises:
        ValueError: ``predict`` returned another batch size or tile shape; an unknown ``blend``
            or ``tta``.
    """
    passes = predict_passes(images, tile, predict, background=background,
                            min_overlap=min_overlap, batch_size=batch_size, blend=blend, tta=tta)
    mean, std = mean_and_std(passes)
    return (mean, std) if return_std else mean


def predict_physical(images: np.ndarray, spacing, model_spacing, tile: Sequence[int],
                     predict: Predict, *, background: float = -1.0,
                     min_overlap: float = DEFAULT_MIN_OVERLAP, batch_size: int = 8,
                     blend: str = DEFAULT_BLEND, tta: str | None = None,
                     return_std: bool = False):
    """``predict`` over slices ``(B, rows, cols, C_in)`` at ``spacing`` mm ``(row, col)`` with a
    model trained at ``model_spacing`` mm on tiles of ``tile`` pixels: :func:`resample` to
    ``model_spacing``, :func:`predict_tiled` (each ``tta`` pass), :func:`resample` back (each
    pass). Returns ``(B, rows, cols, C_out)`` float64 on the input grid in the model's units:
    the mean over the passes, and with ``return_std`` ``(mean, std)``, the standard deviation
    over the passes as they come out on the input grid (``ddof=0``)."""
    images = np.asarray(images, np.float64)
    at_model = resample(images, spacing, model_spacing)
    passes = predict_passes(at_model, tile, predict, background=background,
                            min_overlap=min_overlap, batch_size=batch_size, blend=blend, tta=tta)
    back = np.stack([resample(p, model_spacing, spacing, size=images.shape[1:3])
                     for p in passes])
    mean, std = mean_and_std(back)
    return (mean, std) if return_std else mean

"""Run a fixed-size 2-D model on slices of any pixel spacing and size, in physical units.

A translation model learns anatomy at the pixel spacing it was trained at (mm per pixel), so a
slice is brought to that spacing rather than squeezed to the model's matrix:

1. :func:`resample` the slices ``(rows, cols)`` at ``spacing`` mm onto a grid of
   ``model_spacing`` mm covering the same field of view (both grids centred on the same point;
   bilinear, antialiased with a widened triangle kernel when down-sampling);
2. :func:`predict_tiled`: a grid smaller than the model's tile is padded (centred) with the
   ``background`` value (-1 in model space); a larger one is cut into tiles of the model's size
   that overlap by at least ``min_overlap`` of a tile, each tile is predicted, and the outputs are
   blended with a separable linear-ramp window (weight 1 in the middle, falling towards each tile
   edge over the overlap), so no seam shows; then cropped back to the grid;
3. :func:`resample` the output back onto the input grid (same shape as the input).

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

DEFAULT_MIN_OVERLAP = 0.25
"""Neighbouring tiles share at least this fraction of a tile (more when they spread evenly)."""


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


def _pad_amounts(size: int, tile: int) -> tuple[int, int]:
    extra = max(0, tile - size)
    return extra // 2, extra - extra // 2


def predict_tiled(images: np.ndarray, tile: Sequence[int], predict: Predict, *,
                  background: float = -1.0, min_overlap: float = DEFAULT_MIN_OVERLAP,
                  batch_size: int = 8) -> np.ndarray:
    """``predict`` over slices ``(B, rows, cols, C_in)`` of any size with a model that takes
    ``tile`` pixels ``(rows, cols)``: padded with ``background`` (centred) to at least the tile,
    cut into overlapping tiles (:func:`tile_starts`), predicted ``batch_size`` tiles per call,
    blended with :func:`blend_window` and cropped back. Returns ``(B, rows, cols, C_out)``
    float64; a pixel-wise ``predict`` gives exactly its untiled result.

    Raises:
        ValueError: ``predict`` returned another batch size or tile shape.
    """
    images = np.asarray(images, np.float64)
    count, rows, cols = images.shape[:3]
    tile = tuple(int(t) for t in tile)
    pad_rows, pad_cols = _pad_amounts(rows, tile[0]), _pad_amounts(cols, tile[1])
    canvas = np.pad(images, ((0, 0), pad_rows, pad_cols, (0, 0)), constant_values=background)
    height, width = canvas.shape[1:3]
    row_starts = tile_starts(height, tile[0], min_overlap)
    col_starts = tile_starts(width, tile[1], min_overlap)
    window = np.outer(blend_window(tile[0], int(math.ceil(min_overlap * tile[0]))),
                      blend_window(tile[1], int(math.ceil(min_overlap * tile[1]))))[..., None]
    places = [(b, r, c) for b in range(count) for r in row_starts for c in col_starts]
    total = weight = None
    for first in range(0, len(places), max(1, int(batch_size))):
        chunk = places[first:first + max(1, int(batch_size))]
        batch = np.stack([canvas[b, r:r + tile[0], c:c + tile[1]] for b, r, c in chunk])
        out = np.asarray(predict(batch.astype(np.float32)), np.float64)
        if out.ndim != 4 or out.shape[:3] != (len(chunk), *tile):
            raise ValueError(f"predict returned shape {out.shape} for tiles {batch.shape}; "
                             f"expected ({len(chunk)}, {tile[0]}, {tile[1]}, channels)")
        if total is None:
            total = np.zeros((count, height, width, out.shape[3]))
            weight = np.zeros((count, height, width, 1))
        for (b, r, c), tile_out in zip(chunk, out):
            total[b, r:r + tile[0], c:c + tile[1]] += tile_out * window
            weight[b, r:r + tile[0], c:c + tile[1]] += window
    stitched = total / weight
    return stitched[:, pad_rows[0]:pad_rows[0] + rows, pad_cols[0]:pad_cols[0] + cols]


def predict_physical(images: np.ndarray, spacing, model_spacing, tile: Sequence[int],
                     predict: Predict, *, background: float = -1.0,
                     min_overlap: float = DEFAULT_MIN_OVERLAP, batch_size: int = 8) -> np.ndarray:
    """``predict`` over slices ``(B, rows, cols, C_in)`` at ``spacing`` mm ``(row, col)`` with a
    model trained at ``model_spacing`` mm on tiles of ``tile`` pixels: :func:`resample` to
    ``model_spacing``, :func:`predict_tiled`, :func:`resample` back. Returns ``(B, rows, cols,
    C_out)`` float64 on the input grid."""
    images = np.asarray(images, np.float64)
    at_model = resample(images, spacing, model_spacing)
    out = predict_tiled(at_model, tile, predict, background=background,
                        min_overlap=min_overlap, batch_size=batch_size)
    return resample(out, model_spacing, spacing, size=images.shape[1:3])

"""Image-similarity metrics of translated CT and MRI, and segmentation overlap.

Protocol (SynthRAD 2023 challenge evaluation, adapted to 2-D slices)
--------------------------------------------------------------------
Every metric compares a *prediction* with a *reference* (the registered ground truth) of one
subject's whole volume ``(slices, rows, cols)``; a single 2-D slice counts as a volume of one
slice. A ``value_range`` ``(low, high)`` fixes the units and the data range ``R = high - low``:

* MRI -> CT: Hounsfield units, ``value_range = (-1024, 3000)`` HU, ``R = 4024`` HU
  (:data:`CT_RANGE_HU`, the SynthRAD range).
* CT -> MRI: the MRI mapped to [0, 1] by its volume's percentile scale
  (:func:`mri_to_unit_interval`: ``(signal - low) / (high - low)``), ``value_range = (0, 1)``.

Regions: ``"image"`` (every voxel) and ``"body"`` (the voxels where the body mask is nonzero).

MAE
    Both images clipped to ``value_range``; ``mean |prediction - reference|`` over all voxels of
    the region in the whole volume, in the units above (HU, or the [0, 1] MRI scale). SynthRAD's
    ``mae`` does not clip, but its CTs are already clipped to [-1024, 3000] HU; clipping here
    makes noise below -1024 HU (or MRI above its 99.5th percentile), which no model output in
    [-1, 1] can represent, count as it does for PSNR and SSIM.
PSNR (dB)
    Both images clipped to ``value_range``; ``MSE`` = mean squared difference over all voxels of
    the region in the whole volume (SynthRAD: ``peak_signal_noise_ratio(gt[mask], pred[mask])``);
    ``PSNR = 10 log10(R^2 / MSE)``, computed by ``tf.image.psnr`` with ``max_val = R`` on the
    images shifted to ``[0, R]``. Identical images (``MSE = 0``) give ``PSNR = +inf``: it is
    reported as ``inf``, never capped (see :mod:`ctmri_tf.evaluate` for how files show it).
SSIM
    Both images clipped to ``value_range`` and shifted to ``[0, R]``. For the body region every
    voxel outside the mask is first set to 0 (the range minimum) in *both* images, as SynthRAD
    does. Then the SSIM map of every slice is computed by ``tf.image.ssim(...,
    return_index_map=True)``: Gaussian window 11 x 11, sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
    ``max_val = R``, 'VALID' filtering, so the map of an ``H x W`` slice is
    ``(H - 10) x (W - 10)`` and its entry ``(i, j)`` belongs to the window centred on voxel
    ``(i + 5, j + 5)``. Whole image: the mean of the maps of all slices (= the mean over slices
    of ``tf.image.ssim``). Body: the mean of the map entries whose window centre lies in the
    body mask, pooled over all slices (SynthRAD's ``crop(ssim_map, pad)[crop(mask, pad)]
    .mean()``, with the crop of the 11-voxel window). Slices must be at least 11 x 11 voxels.
    ``tf.image.ssim`` computes in float32: the local variances ``E[x^2] - E[x]^2`` lose a few
    units to rounding, so SSIM values carry errors up to about 1e-4 (largest in flat regions).

Through-plane MAE (:func:`through_plane_mae`, not a SynthRAD metric)
    A 2-D model translates each slice on its own, so its output can flicker from slice to
    slice even where each slice alone scores well. Both images clipped to ``value_range``; for
    each pair of *consecutive* slices ``k, k + 1`` (slice indices that differ by exactly 1: a
    split may hold only some slices of a volume), the slice-to-slice differences
    ``d(x) = x[k + 1] - x[k]``; the mean of ``|d(prediction) - d(reference)|`` over the voxel
    pairs ``(i, j)`` inside the region in *both* slices, all pairs of the volume pooled. Units:
    the images' units per slice (HU per slice for CT, the [0, 1] MRI scale per slice). 0 for a
    perfect prediction and for one off by the same constant on every slice; a prediction off
    by an independent constant ``c_k`` on each slice scores the pooled mean of
    ``|c_{k+1} - c_k|``. NaN when no two consecutive slices (with a common region voxel) exist.

Segmentation (:func:`segmentation_metrics`): label maps with classes ``0 .. num_classes - 1``
(0 = background, 1 = body); the confusion matrix is pooled over all given masks; IoU per class
``TP / (TP + FP + FN)``, mean IoU over the classes present in the prediction or the truth; Dice of
the body class ``2 TP / (2 TP + FP + FN)``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from ctmri_tf.errors import CtmriInputError

CT_RANGE_HU = (-1024.0, 3000.0)
"""SynthRAD's fixed CT range in HU: PSNR/SSIM clip to it and use its width (4024 HU)."""

MRI_UNIT_RANGE = (0.0, 1.0)
"""Range of the [0, 1]-scaled MRI (the volume's percentile scale mapped to [0, 1])."""

SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_BORDER = (SSIM_FILTER_SIZE - 1) // 2
"""Voxels lost on each side of a slice by the 'VALID' SSIM window."""

REGIONS = ("image", "body")
METRICS = ("mae", "psnr", "ssim")
"""What :func:`image_metrics` returns per region (:func:`through_plane_mae` is separate: it
needs the slice indices)."""


# ----------------------------------------------------------------------------- input checks

def _as_volume(x: Any, what: str) -> np.ndarray:
    """A float64 ``(slices, rows, cols)`` array from a volume, a slice or a ``(..., 1)`` batch."""
    array = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise CtmriInputError(None, f"{what} must be a slice (rows, cols), a volume (slices, "
                                    f"rows, cols) or a batch (B, H, W, 1); got shape {array.shape}")
    return array.astype(np.float64)


def _prepare(prediction: Any, reference: Any, mask: Any = None):
    pred = _as_volume(prediction, "prediction")
    ref = _as_volume(reference, "reference")
    if pred.shape != ref.shape:
        raise CtmriInputError(None, f"prediction shape {pred.shape} does not match the reference "
                                    f"shape {ref.shape}")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(ref))):
        raise CtmriInputError(None, "prediction or reference holds NaN/Inf voxels")
    if mask is None:
        return pred, ref, None
    body = _as_volume(mask, "mask") != 0
    if body.shape != ref.shape:
        raise CtmriInputError(None, f"body mask shape {body.shape} does not match the image "
                                    f"shape {ref.shape}")
    if not body.any():
        raise CtmriInputError(None, "the body mask is empty, so no body-region metric exists")
    return pred, ref, body


def _range(value_range) -> tuple[float, float]:
    low, high = (float(v) for v in value_range)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise CtmriInputError(None, f"value_range must be finite with low < high, got "
                                    f"{value_range!r}")
    return low, high


def _shifted(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to [low, high] and shift to [0, high - low]."""
    return np.clip(x, low, high) - low


# ----------------------------------------------------------------------------- metrics

def mae(prediction: Any, reference: Any, mask: Any = None, value_range=None) -> float:
    """Mean absolute error over the volume (inside ``mask`` when given), in the images' units.

    Args:
        prediction, reference: same-shaped slices or volumes in physical units (HU for CT, the
            [0, 1] MRI scale for MRI).
        mask: optional body mask of the same shape (nonzero = body).
        value_range: optional ``(low, high)``: both images are clipped to it first.

    Returns:
        ``mean |prediction - reference|`` over all (masked) voxels, as a Python float.
    """
    pred, ref, body = _prepare(prediction, reference, mask)
    if value_range is not None:
        low, high = _range(value_range)
        pred, ref = np.clip(pred, low, high), np.clip(ref, low, high)
    error = np.abs(pred - ref)
    return float(error[body].mean() if body is not None else error.mean())


def psnr(prediction: Any, reference: Any, value_range, mask: Any = None) -> float:
    """Peak signal-to-noise ratio in dB over the volume (inside ``mask`` when given).

    Both images are clipped to ``value_range = (low, high)`` and shifted to ``[0, high - low]``;
    ``tf.image.psnr`` with ``max_val = high - low`` is applied to the voxels of the region, all
    slices together, so ``PSNR = 10 log10((high - low)^2 / MSE)`` with the volume's MSE.

    Returns:
        PSNR in dB (Python float); ``math.inf`` when the clipped images are identical.
    """
    pred, ref, body = _prepare(prediction, reference, mask)
    low, high = _range(value_range)
    pred, ref = _shifted(pred, low, high), _shifted(ref, low, high)
    if body is not None:
        pred, ref = pred[body], ref[body]
    if np.array_equal(pred, ref):
        return math.inf
    # One "image" holding every voxel of the region: tf.image.psnr averages over the last 3 axes.
    as_image = lambda v: tf.constant(v.reshape(1, -1, 1, 1), tf.float32)  # noqa: E731
    value = tf.image.psnr(as_image(pred), as_image(ref), max_val=high - low)
    return float(value.numpy()[0])


def ssim_map(prediction: Any, reference: Any, data_range: float) -> np.ndarray:
    """The SSIM map of every slice, by ``tf.image.ssim(..., return_index_map=True)``.

    Args:
        prediction, reference: same-shaped slices or volumes already in ``[0, data_range]``.
        data_range: ``max_val`` of the SSIM constants ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``.

    Returns:
        float32 ``(slices, rows - 10, cols - 10)``: the SSIM of the 11 x 11 Gaussian window
        (sigma 1.5) centred on voxel ``(i + 5, j + 5)`` of each slice.
    """
    pred, ref, _ = _prepare(prediction, reference)
    if min(pred.shape[1:]) < SSIM_FILTER_SIZE:
        raise CtmriInputError(None, f"SSIM needs slices of at least {SSIM_FILTER_SIZE} x "
                                    f"{SSIM_FILTER_SIZE} voxels; got {pred.shape[1:]}")
    as_batch = lambda v: tf.constant(v[..., np.newaxis], tf.float32)  # noqa: E731
    index_map = tf.image.ssim(as_batch(pred), as_batch(ref), max_val=float(data_range),
                              filter_size=SSIM_FILTER_SIZE, filter_sigma=SSIM_FILTER_SIGMA,
                              k1=SSIM_K1, k2=SSIM_K2, return_index_map=True)
    return index_map.numpy()


def _window_centres(body: np.ndarray) -> np.ndarray:
    """The body mask cropped to the positions of the SSIM map (window centres)."""
    b = SSIM_BORDER
    return body[:, b:body.shape[1] - b, b:body.shape[2] - b]


def ssim(prediction: Any, reference: Any, value_range, mask: Any = None) -> float:
    """Structural similarity over the volume (inside ``mask`` when given), SynthRAD-style.

    Both images are clipped to ``value_range = (low, high)`` and shifted to ``[0, high - low]``.
    With a mask, voxels outside it are set to 0 (the range minimum) in both images, the SSIM map
    of each slice is computed (:func:`ssim_map`) and its entries whose window centre is in the
    mask are averaged, all slices pooled. Without a mask it is the mean of all map entries, i.e.
    the mean over slices of ``tf.image.ssim``.

    Returns:
        SSIM in (-1, 1] (Python float); 1 for identical images.

    Raises:
        CtmriInputError: the mask has no voxel at least 5 voxels away from the slice edges (the
            SSIM window cannot be centred in the body).
    """
    pred, ref, body = _prepare(prediction, reference, mask)
    low, high = _range(value_range)
    pred, ref = _shifted(pred, low, high), _shifted(ref, low, high)
    if body is None:
        return float(ssim_map(pred, ref, high - low).mean(dtype=np.float64))
    pred, ref = np.where(body, pred, 0.0), np.where(body, ref, 0.0)
    values = ssim_map(pred, ref, high - low)
    centres = _window_centres(body)
    if not centres.any():
        raise CtmriInputError(None, f"the body mask has no voxel at least {SSIM_BORDER} voxels "
                                    f"from the slice edges, so no SSIM window is centred in it")
    return float(values[centres].mean(dtype=np.float64))


def image_metrics(prediction: Any, reference: Any, mask: Any, value_range) -> dict:
    """MAE, PSNR and SSIM of one subject's volume, on the whole image and inside the body.

    Args:
        prediction, reference: ``(slices, rows, cols)`` (or one slice) in the units of
            ``value_range``: HU with :data:`CT_RANGE_HU`, the [0, 1] MRI scale with
            :data:`MRI_UNIT_RANGE`.
        mask: body mask of the same shape (nonzero = body).
        value_range: ``(low, high)``: PSNR/SSIM clip to it and use ``high - low`` as data range.

    Returns:
        ``{"image": {"mae", "psnr", "ssim"}, "body": {"mae", "psnr", "ssim"}}`` (Python floats;
        MAE in the images' units, PSNR in dB, possibly ``inf``; SSIM unitless).
    """
    results = {}
    for region, region_mask in (("image", None), ("body", mask)):
        results[region] = {
            "mae": mae(prediction, reference, region_mask, value_range),
            "psnr": psnr(prediction, reference, value_range, region_mask),
            "ssim": ssim(prediction, reference, value_range, region_mask),
        }
    return results


def through_plane_mae(prediction: Any, reference: Any, mask: Any = None, value_range=None,
                      slice_indices=None) -> float:
    """Mean absolute error of the slice-to-slice difference (module docstring): through-plane
    consistency of a slice-by-slice prediction.

    Args:
        prediction, reference: same-shaped volumes ``(slices, rows, cols)`` in physical units
            (HU for CT, the [0, 1] MRI scale for MRI), slices in increasing index order.
        mask: optional body mask of the same shape (nonzero = body): a voxel pair counts only
            when both of its voxels are in the body.
        value_range: optional ``(low, high)``: both images are clipped to it first (as
            :func:`mae`).
        slice_indices: the volume's slice index of each slice (increasing integers); only
            slices whose indices differ by 1 are compared. Default ``0 .. slices - 1``.

    Returns:
        ``mean |(p[k+1] - p[k]) - (r[k+1] - r[k])|`` over the counted voxel pairs, in the
        images' units per slice (Python float); NaN when there is no such pair.

    Raises:
        CtmriInputError: shapes differ, non-finite voxels, ``slice_indices`` not one increasing
            integer per slice.
    """
    pred, ref = _as_volume(prediction, "prediction"), _as_volume(reference, "reference")
    if pred.shape != ref.shape:
        raise CtmriInputError(None, f"prediction shape {pred.shape} does not match the reference "
                                    f"shape {ref.shape}")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(ref))):
        raise CtmriInputError(None, "prediction or reference holds NaN/Inf voxels")
    body = np.ones(ref.shape, bool) if mask is None else _as_volume(mask, "mask") != 0
    if body.shape != ref.shape:
        raise CtmriInputError(None, f"body mask shape {body.shape} does not match the image "
                                    f"shape {ref.shape}")
    count = ref.shape[0]
    indices = np.arange(count) if slice_indices is None else np.asarray(slice_indices)
    if (indices.shape != (count,) or not np.issubdtype(indices.dtype, np.integer)
            or np.any(np.diff(indices) <= 0)):
        raise CtmriInputError(None, f"slice_indices must be {count} increasing integers (one "
                                    f"per slice), got {list(np.ravel(slice_indices))}")
    if value_range is not None:
        low, high = _range(value_range)
        pred, ref = np.clip(pred, low, high), np.clip(ref, low, high)
    consecutive = np.flatnonzero(np.diff(indices) == 1)       # pairs (k, k + 1)
    if consecutive.size == 0:
        return math.nan
    error = np.abs((pred[consecutive + 1] - pred[consecutive])
                   - (ref[consecutive + 1] - ref[consecutive]))
    both = body[consecutive + 1] & body[consecutive]
    return float(error[both].mean()) if both.any() else math.nan


def mri_to_unit_interval(signal: Any, scale) -> np.ndarray:
    """MR signal -> the [0, 1] MRI scale: ``(signal - low) / (high - low)``, not clipped.

    Args:
        signal: MR signal in scanner units (any shape).
        scale: the volume's ``(low, high)`` percentile signal (an ``intensity.MriScale`` or a
            pair), which maps to 0 and 1.

    Returns:
        float64 array of the same shape (values outside the scale fall outside [0, 1]; the
        metrics clip them).
    """
    low, high = (float(v) for v in (scale.as_tuple() if hasattr(scale, "as_tuple") else scale))
    if not high > low:
        raise CtmriInputError(None, f"MRI scale is empty: low ({low}) must be below high ({high})")
    values = np.asarray(signal.numpy() if hasattr(signal, "numpy") else signal, np.float64)
    return (values - low) / (high - low)


# ----------------------------------------------------------------------------- aggregation

def summarize(values) -> dict:
    """Mean and sample standard deviation (ddof = 1) over subjects.

    Args:
        values: one number per subject (``inf`` allowed, e.g. a perfect PSNR).

    Returns:
        ``{"mean", "std", "n"}``: ``std`` is NaN for fewer than two subjects and when a value
        is infinite (the mean is then ``inf``); ``mean`` is NaN for no subject.
    """
    array = np.asarray(list(values), np.float64)
    n = int(array.size)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    if not np.all(np.isfinite(array)):
        return {"mean": float(array.mean()), "std": math.nan, "n": n}
    std = float(array.std(ddof=1)) if n > 1 else math.nan
    return {"mean": float(array.mean()), "std": std, "n": n}


# ----------------------------------------------------------------------------- segmentation

def segmentation_metrics(pred_masks: Any, true_masks: Any, num_classes: int = 2) -> dict:
    """Mean IoU over classes and Dice of the body class, pooled over all given masks.

    Args:
        pred_masks, true_masks: same-shaped integer label maps (any shape: one slice, a volume or a
            batch ``(B, H, W)`` / ``(B, H, W, 1)``) with classes ``0 .. num_classes - 1``;
            0 = background, 1 = body. Boolean / {0, 1} float masks are accepted.
        num_classes: number of classes.

    Returns:
        ``{"mean_iou", "dice", "iou_per_class"}``: IoU of class c = TP / (TP + FP + FN) from the
        pooled confusion matrix; ``mean_iou`` averages the classes that occur in the prediction
        or the truth; ``dice`` = 2 TP / (2 TP + FP + FN) of class 1 (1.0 when neither has any
        body voxel); ``iou_per_class`` is a list (NaN for a class absent from both).
    """
    pred = np.asarray(pred_masks.numpy() if hasattr(pred_masks, "numpy") else pred_masks)
    true = np.asarray(true_masks.numpy() if hasattr(true_masks, "numpy") else true_masks)
    if pred.shape != true.shape:
        raise CtmriInputError(None, f"predicted masks {pred.shape} and true masks {true.shape} "
                                    f"differ in shape")
    if pred.size == 0:
        raise CtmriInputError(None, "no mask voxel to compare")
    labels = []
    for name, array in (("predicted", pred), ("true", true)):
        if array.dtype.kind == "f" and not np.all(array == np.round(array)):
            raise CtmriInputError(None, f"{name} masks hold non-integer values; pass class ids")
        ids = array.astype(np.int64).ravel()
        if ids.min() < 0 or ids.max() >= num_classes:
            raise CtmriInputError(None, f"{name} masks hold class ids outside 0..{num_classes - 1}")
        labels.append(ids)
    confusion = tf.math.confusion_matrix(labels[1], labels[0], num_classes=num_classes,
                                         dtype=tf.float64).numpy()  # rows = truth
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    body = 1
    denominator = confusion[:, body].sum() + confusion[body, :].sum()
    dice = 1.0 if denominator == 0 else float(2.0 * tp[body] / denominator)
    return {"mean_iou": float(np.nanmean(iou)), "dice": dice,
            "iou_per_class": [float(v) for v in iou]}

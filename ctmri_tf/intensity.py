"""Map physical intensities (CT in HU, MRI in scanner signal units) to and from model space [-1, 1].

CT has an absolute scale, so one fixed window maps Hounsfield units onto [-1, 1]:
``x = 2 * (clip(hu, low, high) - low) / (high - low) - 1``. MRI has no absolute scale, so every
volume gets its own :class:`MriScale`: the MR signal at two robust percentiles (default 0.5 % and
99.5 %, optionally of the voxels inside a body mask), which map to -1 and +1. Keep the scale next
to the volume so that a translated image can be written back in the scanner's units.

Where the modality is what a model must find (the CT/MRI classifier), the normalisation cannot
depend on it: :func:`percentile_to_unit` maps every image, CT or MRI, by its own percentiles.

Every function takes NumPy arrays (or Python numbers) and TensorFlow tensors, eager or inside
``tf.function``, and returns the same kind, as float32. When the image or the range is a tensor the
computation is done in TensorFlow (so an ``intensity_range`` tensor taken from a ``tf.data`` example
works in graph mode); otherwise in NumPy. TensorFlow is never imported by this module: if it is not
already imported by the caller, nothing can be a tensor.

Ranges (``window``, ``scale``, ``intensity_range``) are a ``(low, high)`` pair in physical units, an
:class:`MriScale`, or an array/tensor of shape ``(2,)``; an array of shape ``(batch, 2)`` gives one
range per image of a batch (``image`` of shape ``(batch, ...)``).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np

from ctmri_tf.errors import CtmriInputError

CT_WINDOW_HU = (-1024.0, 3000.0)
"""Default CT window in HU: air (-1024, the usual lowest stored value) to dense cortical bone."""

MRI_PERCENTILES = (0.5, 99.5)
"""Default percentiles (in %) of the MR signal that map to -1 and +1."""

_MODALITIES = ("ct", "mri")   # = ctmri_tf.io.volume.MODALITIES, not imported: no I/O stack here


@dataclasses.dataclass(frozen=True)
class MriScale:
    """The MR signal (scanner units) that maps to -1 (``low``) and +1 (``high``) for one volume.

    ``low`` and ``high`` are Python floats when fitted on a NumPy volume, scalar float32 tensors
    when fitted on a tensor.
    """

    low: float
    high: float

    def as_tuple(self) -> tuple[float, float]:
        return (self.low, self.high)


# ----------------------------------------------------------------------------- helpers

def _tf():
    """The already-imported tensorflow module, or None (then nothing can be a tensor)."""
    return sys.modules.get("tensorflow")


def _is_tensor(value: Any) -> bool:
    tf = _tf()
    return tf is not None and hasattr(tf, "is_tensor") and tf.is_tensor(value)


def _range_parts(value: Any, what: str) -> tuple[Any, Any]:
    """Split a range argument into (low, high) without forcing it out of TensorFlow."""
    if isinstance(value, MriScale):
        return value.low, value.high
    if value is None:
        raise CtmriInputError(None, f"{what} is missing: give (low, high) in physical units")
    if _is_tensor(value):
        return value[..., 0], value[..., 1]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    array = np.asarray(value)
    if array.ndim >= 1 and array.shape[-1] == 2:
        return array[..., 0], array[..., 1]
    raise CtmriInputError(None, f"{what} must be a (low, high) pair, got {value!r}")


def _uses_tf(*values: Any) -> bool:
    return any(_is_tensor(v) for v in values)


def _np_bounds(low: Any, high: Any, ndim: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Float32 NumPy bounds shaped to broadcast against an image of ``ndim`` dimensions."""
    low = np.asarray(low, dtype=np.float32)
    high = np.asarray(high, dtype=np.float32)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise CtmriInputError(None, f"{what} must be finite, got low={low}, high={high}")
    if np.any(high <= low):
        raise CtmriInputError(None, f"{what} is empty: low ({low}) must be below high ({high})")
    if low.ndim == 1:  # one range per image of a batch
        shape = (-1,) + (1,) * max(ndim - 1, 0)
        low, high = low.reshape(shape), high.reshape(shape)
    return low, high


def _tf_bounds(tf, low: Any, high: Any, ndim, what: str):
    """Float32 tensor bounds, broadcastable to the image, with a graph-mode low < high check."""
    if not (_is_tensor(low) or _is_tensor(high)):
        _np_bounds(low, high, 0, what)  # plain numbers: a CtmriInputError now, not a graph error
    low = tf.cast(tf.convert_to_tensor(low), tf.float32)
    high = tf.cast(tf.convert_to_tensor(high), tf.float32)
    check = tf.debugging.assert_less(low, high, message=f"{what} is empty: low must be below high")
    with tf.control_dependencies([check]):
        low = tf.identity(low)
        high = tf.identity(high)
    if low.shape.rank == 1:  # one range per image of a batch
        shape = tf.concat([[-1], tf.ones([ndim - 1], tf.int32)], axis=0)
        low, high = tf.reshape(low, shape), tf.reshape(high, shape)
    return low, high


def _to_unit(image: Any, low: Any, high: Any, what: str):
    """Linear map [low, high] -> [-1, 1] after clipping to [low, high]."""
    if _uses_tf(image, low, high):
        tf = _tf()
        image = tf.cast(tf.convert_to_tensor(image), tf.float32)
        low, high = _tf_bounds(tf, low, high, image.shape.rank, what)
        clipped = tf.minimum(tf.maximum(image, low), high)
        return (clipped - low) / (high - low) * 2.0 - 1.0
    image = np.asarray(image, dtype=np.float32)
    low, high = _np_bounds(low, high, image.ndim, what)
    clipped = np.minimum(np.maximum(image, low), high)
    return ((clipped - low) / (high - low) * np.float32(2.0) - np.float32(1.0)).astype(np.float32)


def _from_unit(x: Any, low: Any, high: Any, what: str):
    """Linear map [-1, 1] -> [low, high]; ``x`` is clipped to [-1, 1] first."""
    if _uses_tf(x, low, high):
        tf = _tf()
        x = tf.cast(tf.convert_to_tensor(x), tf.float32)
        low, high = _tf_bounds(tf, low, high, x.shape.rank, what)
        x = tf.clip_by_value(x, -1.0, 1.0)
        return (x + 1.0) * 0.5 * (high - low) + low
    x = np.asarray(x, dtype=np.float32)
    low, high = _np_bounds(low, high, x.ndim, what)
    x = np.clip(x, np.float32(-1.0), np.float32(1.0))
    return ((x + np.float32(1.0)) * np.float32(0.5) * (high - low) + low).astype(np.float32)


# ----------------------------------------------------------------------------- CT

def ct_to_unit(hu: Any, window: Any = CT_WINDOW_HU):
    """CT in Hounsfield units -> model space [-1, 1].

    Args:
        hu: CT values in HU (array or tensor, any shape).
        window: ``(low, high)`` in HU mapped to -1 and +1; values outside are clipped to it.

    Returns:
        float32 values in [-1, 1], the same kind (NumPy / tensor) as ``hu``.
    """
    low, high = _range_parts(window, "CT window")
    return _to_unit(hu, low, high, "CT window")


def unit_to_ct(x: Any, window: Any = CT_WINDOW_HU):
    """Model space [-1, 1] -> CT in Hounsfield units; the exact inverse of :func:`ct_to_unit`
    inside the window (up to float32 rounding). ``x`` outside [-1, 1] is clipped first, so the
    result always lies in the window.
    """
    low, high = _range_parts(window, "CT window")
    return _from_unit(x, low, high, "CT window")


# ----------------------------------------------------------------------------- MRI

def _np_percentiles(values: np.ndarray, percentiles) -> tuple[float, float]:
    low, high = np.percentile(values, percentiles)
    if high <= low:
        # More than (100 - p_high + p_low) % of the voxels share one value (e.g. a mostly-zero
        # background): fall back to the full signal range.
        low, high = float(values.min()), float(values.max())
    return float(low), float(high)


def fit_mri_scale(volume: Any, mask: Any = None, percentiles=MRI_PERCENTILES) -> MriScale:
    """Robust per-volume MRI scale: the MR signal at ``percentiles`` (in %).

    Args:
        volume: MR signal in scanner units (array or tensor, any shape; typically one whole volume
            so that all of its slices share one scale). Non-finite voxels are ignored.
        mask: optional body mask of the same shape (nonzero = body): only those voxels count.
        percentiles: ``(p_low, p_high)`` in percent, 0 <= p_low < p_high <= 100.

    Returns:
        :class:`MriScale` of the signal at the two percentiles (linear interpolation, as
        ``numpy.percentile``). When the two percentiles coincide (more than the tails are one
        value, e.g. a mostly empty volume) the scale falls back to the signal's (min, max).

    Raises:
        CtmriInputError (path ``None``; the caller knows the file): the volume (inside the mask)
        has no finite voxel or is constant, so no scale exists. With a tensor input in graph mode
        the same condition raises ``tf.errors.InvalidArgumentError`` instead.
    """
    p_low, p_high = (float(p) for p in percentiles)
    if not 0.0 <= p_low < p_high <= 100.0:
        raise CtmriInputError(None, f"MRI percentiles must satisfy 0 <= low < high <= 100, "
                                    f"got {percentiles!r}")
    if _uses_tf(volume, mask):
        return _fit_mri_scale_tf(volume, mask, (p_low, p_high))
    values = np.asarray(volume, dtype=np.float32)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != values.shape:
            raise CtmriInputError(None, f"body mask shape {mask.shape} does not match the MRI "
                                        f"volume shape {values.shape}")
        values = values[mask != 0]
        if values.size == 0:
            raise CtmriInputError(None, "the body mask is empty, so no MRI scale can be fitted")
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise CtmriInputError(None, "the MRI volume has no finite voxel, so no intensity scale "
                                    "can be fitted")
    low, high = _np_percentiles(values, (p_low, p_high))
    if high <= low:
        raise CtmriInputError(None, f"the MRI volume is constant (every voxel is {low:g}), so no "
                                    f"intensity scale can be fitted")
    return MriScale(low, high)


def _fit_mri_scale_tf(volume, mask, percentiles) -> MriScale:
    tf = _tf()
    values = tf.reshape(tf.cast(volume, tf.float32), [-1])
    if mask is not None:
        values = tf.boolean_mask(values, tf.reshape(tf.not_equal(mask, 0), [-1]))
    values = tf.boolean_mask(values, tf.math.is_finite(values))
    n = tf.size(values)
    check = tf.debugging.assert_positive(n, message="the MRI volume (inside the mask) has no "
                                                    "finite voxel, so no scale can be fitted")
    with tf.control_dependencies([check]):
        ordered = tf.sort(values)

    def at(p):  # numpy.percentile's default "linear" interpolation
        pos = (p / 100.0) * tf.cast(n - 1, tf.float64)
        below = tf.cast(tf.floor(pos), tf.int32)
        above = tf.minimum(below + 1, n - 1)
        frac = tf.cast(pos - tf.floor(pos), tf.float32)
        lo_v, hi_v = tf.gather(ordered, below), tf.gather(ordered, above)
        return lo_v + (hi_v - lo_v) * frac

    low, high = at(percentiles[0]), at(percentiles[1])
    collapsed = high <= low
    low = tf.where(collapsed, ordered[0], low)
    high = tf.where(collapsed, ordered[-1], high)
    check = tf.debugging.assert_less(low, high, message="the MRI volume is constant, so no "
                                                        "intensity scale can be fitted")
    with tf.control_dependencies([check]):
        return MriScale(tf.identity(low), tf.identity(high))


def image_percentile_range(image: Any, percentiles=MRI_PERCENTILES):
    """The ``(low, high)`` of one image's own intensity percentiles, for an image whose modality
    must not decide its normalisation (the CT/MRI classifier) or whose volume is not at hand (a
    served MRI slice).

    Like :func:`fit_mri_scale` over the image's finite pixels (linear interpolation as
    ``numpy.percentile``; percentiles that coincide fall back to the (min, max)), but it never
    fails, so that it is safe inside a served graph: a constant image (a blank slice) gets
    ``(value, value + max(1, |value|))``, which maps it to -1; an image with no finite pixel gets
    ``(0, 1)``.

    Args:
        image: one image in any physical units (HU, MR signal, ...), any shape (array or
            tensor; in graph mode too).
        percentiles: ``(p_low, p_high)`` in percent, 0 <= p_low < p_high <= 100.

    Returns:
        float32 ``(2,)``: the image's values at the two percentiles, in its own units; NumPy
        array or tensor like ``image``.
    """
    p_low, p_high = (float(p) for p in percentiles)
    if not 0.0 <= p_low < p_high <= 100.0:
        raise CtmriInputError(None, f"percentiles must satisfy 0 <= low < high <= 100, "
                                    f"got {percentiles!r}")
    if _is_tensor(image):
        tf = _tf()
        image = tf.cast(image, tf.float32)
        values = tf.reshape(image, [-1])
        finite = tf.boolean_mask(values, tf.math.is_finite(values))
        any_finite = tf.size(finite) > 0
        low = tf.where(any_finite, tf.reduce_min(finite), 0.0)
        high = tf.where(any_finite, tf.reduce_max(finite), 0.0)

        def fit():
            scale = _fit_mri_scale_tf(finite, None, (p_low, p_high))
            return tf.stack([scale.low, scale.high])

        return tf.cond(high > low, fit,
                       lambda: tf.stack([low, low + tf.maximum(1.0, tf.abs(low))]))
    values = np.asarray(image, dtype=np.float32).reshape(-1)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.array([0.0, 1.0], np.float32)
    low, high = _np_percentiles(finite, (p_low, p_high))
    if high <= low:
        high = low + max(1.0, abs(low))
    return np.array([low, high], np.float32)


def percentile_to_unit(images: Any, percentiles=MRI_PERCENTILES):
    """Map each image to model space [-1, 1] by its own intensity percentiles, whatever its
    modality: the normalisation of the CT/MRI classifier, in training
    (``ctmri_tf.data.modality_batches``) and in the exported ``classify`` signature alike.

    Each image's values at ``percentiles`` (:func:`image_percentile_range`) map to -1 and +1,
    values outside are clipped, so every non-constant image spans exactly [-1, 1], CT and MRI
    alike: the result does not depend on the modality (nothing to tell it by, as the
    classifier must find it) nor on a positive linear rescaling of the intensities. A constant
    (blank) image maps to -1.

    Args:
        images: physical units (HU for CT, MR signal for MRI, or anything else): one image
            ``(rows, cols)``, or a batch ``(batch, rows, cols)`` / ``(batch, rows, cols, 1)``
            normalised image by image (array or tensor, static rank, graph mode included).
        percentiles: ``(p_low, p_high)`` in percent.

    Returns:
        float32 in [-1, 1] of the shape of ``images``; NumPy array or tensor like ``images``.
    """
    if _is_tensor(images):
        tf = _tf()
        images = tf.cast(images, tf.float32)
        rank = images.shape.rank
        if rank is None or rank < 2:
            raise ValueError(f"percentile_to_unit needs images of known rank >= 2, got shape "
                             f"{images.shape}")
        if rank == 2:
            ranges = image_percentile_range(images, percentiles)
        else:
            ranges = tf.map_fn(lambda image: image_percentile_range(image, percentiles), images,
                               fn_output_signature=tf.TensorSpec((2,), tf.float32))
        return _to_unit(images, ranges[..., 0], ranges[..., 1], "percentile range")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 2:
        raise CtmriInputError(None, f"percentile_to_unit needs images (rows, cols) or (batch, "
                                    f"rows, cols[, 1]), got shape {images.shape}")
    if images.ndim == 2:
        low, high = image_percentile_range(images, percentiles)
    else:
        ranges = np.array([image_percentile_range(image, percentiles) for image in images],
                          np.float32).reshape(-1, 2)
        low, high = ranges[:, 0], ranges[:, 1]
    return _to_unit(images, low, high, "percentile range")


def mri_to_unit(signal: Any, scale: Any):
    """MR signal (scanner units) -> model space [-1, 1] with a volume's scale, clipped.

    Args:
        signal: MR signal (array or tensor, any shape).
        scale: :class:`MriScale` or ``(low, high)`` signal mapped to -1 and +1.
    """
    low, high = _range_parts(scale, "MRI scale")
    return _to_unit(signal, low, high, "MRI scale")


def unit_to_mri(x: Any, scale: Any):
    """Model space [-1, 1] -> MR signal in the scanner units of ``scale`` (inverse of
    :func:`mri_to_unit` inside the scale; ``x`` is clipped to [-1, 1] first)."""
    low, high = _range_parts(scale, "MRI scale")
    return _from_unit(x, low, high, "MRI scale")


# ----------------------------------------------------------------------------- dispatch

def _check_modality(modality: Any) -> str:
    if isinstance(modality, bytes):
        modality = modality.decode()
    if modality not in _MODALITIES:
        raise CtmriInputError(None, f"unknown modality {modality!r}: expected one of {_MODALITIES}")
    return modality


def to_unit(image: Any, modality: str, intensity_range: Any = None):
    """Physical units -> [-1, 1] for ``modality`` ``"ct"`` (HU) or ``"mri"`` (MR signal).

    ``intensity_range`` is the ``(low, high)`` in physical units that maps to -1 and +1: the CT
    window in HU (default :data:`CT_WINDOW_HU` when ``None``) or the volume's :class:`MriScale`
    (required for MRI). It may be a tensor, e.g. a ``tf.data`` example's ``intensity_range``.
    """
    if _check_modality(modality) == "ct":
        return ct_to_unit(image, CT_WINDOW_HU if intensity_range is None else intensity_range)
    return mri_to_unit(image, intensity_range)


def from_unit(x: Any, modality: str, intensity_range: Any = None):
    """[-1, 1] -> physical units (HU for ``"ct"``, MR signal for ``"mri"``); inverse of
    :func:`to_unit` with the same ``intensity_range``."""
    if _check_modality(modality) == "ct":
        return unit_to_ct(x, CT_WINDOW_HU if intensity_range is None else intensity_range)
    return unit_to_mri(x, intensity_range)

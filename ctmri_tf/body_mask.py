"""Automatic body (head) masks for CT and MRI slices and volumes.

The mask is everything that belongs to the patient, including air and dark tissue enclosed by the
body: sinus air, cortical bone (dark in MRI) and CSF. The steps are

1. threshold: CT ``HU > -500`` (:data:`CT_BODY_THRESHOLD_HU`); MRI: Otsu's threshold (OpenCV) on
   ``log1p(1000 * signal / p99)``, computed over the whole volume, where ``p99`` is the 99th
   percentile of the positive signal (so the result does not depend on the scanner's units);
2. per-slice hole filling (scipy.ndimage.binary_fill_holes), so that a thin bright scalp that
   encloses a dark skull survives step 3;
3. morphological opening with a 3 x 3 in-plane square to drop noise speckles and thin bridges;
4. the largest 3-D connected component (scipy.ndimage.label, face connectivity), which drops
   separate blobs such as the patient table, tubes or noise;
5. per-slice hole filling again.

An input without any body (all air, an all-zero MRI) raises :class:`CtmriInputError`: a mask of
nothing would silently turn every later step (MRI scaling inside the mask, training on masked
images) into nonsense. The error's path is ``None``; callers that read a file re-raise it with
their path.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from ctmri_tf.errors import CtmriInputError

CT_BODY_THRESHOLD_HU = -500.0
"""CT voxels above this (in HU) are body candidates: all soft tissue and bone, not air or lung."""

_OPENING = np.ones((1, 3, 3), dtype=bool)  # in-plane only: slices may be several mm thick


def _mri_foreground(signal: np.ndarray) -> np.ndarray:
    """Otsu's threshold on the log signal over the whole volume -> bool foreground."""
    signal = np.where(np.isfinite(signal), np.maximum(signal, 0.0), 0.0).astype(np.float32)
    positive = signal[signal > 0]
    if positive.size == 0:
        raise CtmriInputError(None, "no body found: the MRI signal is zero everywhere")
    reference = float(np.percentile(positive, 99.0))
    log_signal = np.log1p(signal * np.float32(1000.0 / reference))
    top = float(log_signal.max())
    if top <= 0.0:
        raise CtmriInputError(None, "no body found: the MRI signal is zero everywhere")
    levels = np.round(log_signal * np.float32(255.0 / top)).astype(np.uint8)
    threshold, _ = cv2.threshold(levels.reshape(-1, 1), 0, 255,
                                 cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return levels > threshold


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.binary_fill_holes(s) for s in mask]) if len(mask) else mask


def body_mask(image: Any, modality: str) -> np.ndarray:
    """Body mask of a CT or MRI slice ``(rows, cols)`` or volume ``(slices, rows, cols)``.

    Args:
        image: CT in HU or MRI in scanner signal units (NumPy array or eager tensor).
        modality: ``"ct"`` or ``"mri"``.

    Returns:
        uint8 array of the input's shape, 1 inside the body (one connected piece, holes filled per
        slice) and 0 outside.

    Raises:
        CtmriInputError (path ``None``): not 2-D or 3-D, unknown modality, or no body at all.
    """
    values = np.asarray(image, dtype=np.float32)
    if values.ndim not in (2, 3) or values.size == 0:
        raise CtmriInputError(None, f"a body mask needs a 2-D slice or a 3-D volume "
                                    f"(slices, rows, cols), got shape {values.shape}")
    if modality == "ct":
        foreground = values > CT_BODY_THRESHOLD_HU  # NaN compares False
    elif modality == "mri":
        foreground = _mri_foreground(values)
    else:
        raise CtmriInputError(None, f"unknown modality {modality!r}: expected 'ct' or 'mri'")

    volume = foreground if values.ndim == 3 else foreground[np.newaxis]
    volume = _fill_holes_per_slice(volume)
    volume = ndimage.binary_opening(volume, structure=_OPENING)
    components, count = ndimage.label(volume)
    if count == 0:
        what = (f"no voxel above {CT_BODY_THRESHOLD_HU:g} HU" if modality == "ct"
                else "nothing brighter than the background noise")
        raise CtmriInputError(None, f"no body found in the {modality.upper()} image ({what})")
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    volume = components == int(np.argmax(sizes))
    volume = _fill_holes_per_slice(volume)
    mask = volume.astype(np.uint8)
    return mask if values.ndim == 3 else mask[0]

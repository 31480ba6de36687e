"""The in-memory volume that every reader returns and every writer takes.

Geometry convention, stated once for the whole package:

* ``Volume.data`` is float32 ``(slices, rows, cols)``.
* ``Volume.affine`` maps a voxel index ``(col, row, slice, 1)`` -- note the reversed order with
  respect to the array axes, as in NIfTI's ``(i, j, k)`` -- to world coordinates in mm in the
  NIfTI/nibabel RAS+ convention: +x towards the patient's Right, +y towards Anterior, +z towards
  Superior. DICOM patient coordinates are LPS+ (+x Left, +y Posterior, +z Superior), so going from
  DICOM to a ``Volume`` negates x and y.
* ``Volume.spacing`` is ``(slice, row, col)`` in mm, in array-axis order: the distance between
  neighbouring slices, between neighbouring rows and between neighbouring columns.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ctmri_tf.errors import CtmriInputError

MODALITIES = ("ct", "mri")

_DICOM_MODALITY = {"CT": "ct", "MR": "mri"}


@dataclasses.dataclass
class Volume:
    """A 3-D medical image in physical units with its geometry.

    Attributes:
        data: float32 ``(slices, rows, cols)``; HU for CT, MR signal (arbitrary scale) for MRI,
            the stored values when the modality is unknown.
        modality: ``"ct"``, ``"mri"`` or ``None`` when the file does not say (PNG, NIfTI).
        spacing: mm, ``(slice, row, col)``.
        affine: 4x4 float64; voxel index ``(col, row, slice, 1)`` -> world mm, NIfTI RAS+.
        source: the file or folder it was read from (``""`` for a volume made in memory).
        meta: format-specific information, enough for the matching writer to write results back
            (DICOM: ``header``, ``files``, ``ordering``; NIfTI: ``header``; images: ``files``).
    """

    data: np.ndarray
    modality: str | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    source: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, cols)``."""
        return tuple(self.data.shape)


def modality_from_dicom(tag_value: str | None) -> str | None:
    """Map a DICOM Modality (0008,0060) value to ``"ct"``/``"mri"``; anything else -> ``None``."""
    if tag_value is None:
        return None
    return _DICOM_MODALITY.get(str(tag_value).strip().upper())


def check_modality(modality: str | None) -> str | None:
    """Return ``modality`` if it is ``None`` or one of :data:`MODALITIES`, else raise.

    Raises:
        CtmriInputError: (with no path) for any other value.
    """
    if modality is not None and modality not in MODALITIES:
        raise CtmriInputError(None, f"modality must be one of {MODALITIES} or None, "
                                    f"got {modality!r}")
    return modality


def check_finite(array: np.ndarray, path: str | os.PathLike | None, *,
                 what: str = "the image") -> None:
    """Raise if ``array`` holds NaN or infinite values.

    Args:
        array: any numeric array (physical units or raw; only finiteness is checked).
        path: the file the values came from (or are going to); named in the error.
        what: how to call the array in the message.

    Raises:
        CtmriInputError: naming ``path`` and how many voxels are NaN and how many are +/-Inf.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
        return
    n_nan = int(np.isnan(array).sum())
    n_inf = int(np.isinf(array).sum())
    raise CtmriInputError(path, f"{what} has {n_nan} NaN and {n_inf} infinite voxel values "
                                f"(of {array.size}); fix or mask them before using it")

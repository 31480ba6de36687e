"""The in-memory volume that every reader returns and every writer takes.

Geometry convention, stated once for the whole package:

* ``Volume.data`` is float32 ``(slices, rows, cols)``.
* ``Volume.affine`` maps a voxel index ``(col, row, slice, 1)`` -- note the reversed order with
  respect to the array axes, as in NIfTI's ``(i, j, k)`` -- to world coordinates in mm in the
  NIfTI/nibabel RAS+ convention: +x towards the patient's Right, +y towards Anterior, +z towards
  Superior. DICOM patient coordinates are LPS+ (+x Left, +y Posterior, +z Superior), so going from
  DICOM to a ``Volume`` negates x and y.
* ``Volume.spacing`` is ``(slice, row, col)`` in mm, in array-axis order: the distance between
  neighbouring slices, between neighbouring rows and between neighbouring columns. The slice
  spacing is measured along the slice normal (row direction x column direction).
* Slices need not be evenly spaced. When a reader knows where each slice lies (DICOM's
  ImagePositionPatient), ``meta["slice_positions"]`` is a float64 ``(slices, 3)`` array of each
  slice's first voxel (row 0, col 0) in DICOM **LPS+** mm; the affine is then the best uniform
  approximation (first slice + median spacing along the normal; exact for an evenly spaced
  series). :func:`slice_positions_lps` gives the positions of any volume,
  :func:`resample_uniform_slices` puts an uneven volume on an even grid (for NIfTI).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ctmri_tf.errors import CtmriInputError

MODALITIES = ("ct", "mri")

# DICOM LPS+ <-> NIfTI RAS+: negate x and y (the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Slice positions closer than max(this fraction of the slice spacing, _GRID_ATOL_MM) to the
# affine's grid count as on it (the DICOM reader's tolerance for "uniform" spacing).
_GRID_RTOL = 0.05
_GRID_ATOL_MM = 0.02

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
            (DICOM: ``header``, ``files``, ``ordering``, ``slice_positions``; NIfTI: ``header``;
            images: ``files``). ``slice_positions`` (LPS mm, ``(slices, 3)``), when present,
            says where each slice really is (see the module docstring); writers honour it.
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


def affine_slice_positions_lps(affine: np.ndarray, num_slices: int) -> np.ndarray:
    """``(num_slices, 3)`` LPS mm of voxel ``(col 0, row 0, slice k)`` under a RAS+ ``affine``."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    return lps[:3, 3][None, :] + np.arange(num_slices)[:, None] * lps[:3, 2][None, :]


def slice_positions_lps(volume: Volume) -> np.ndarray:
    """Each slice's first voxel in LPS+ mm, ``(slices, 3)`` float64: ``meta["slice_positions"]``
    when the reader recorded them (shape checked), else the affine's evenly spaced grid.

    Raises:
        CtmriInputError: naming the volume's source when ``meta["slice_positions"]`` is not a
            finite ``(slices, 3)`` array.
    """
    num_slices = int(np.shape(volume.data)[0])
    positions = volume.meta.get("slice_positions") if volume.meta else None
    if positions is None:
        return affine_slice_positions_lps(volume.affine, num_slices)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (num_slices, 3) or not np.isfinite(positions).all():
        raise CtmriInputError(volume.source or None, f"meta['slice_positions'] must be a finite "
                                                     f"({num_slices}, 3) array (LPS mm), got "
                                                     f"shape {positions.shape}")
    return positions


def slices_off_grid_mm(volume: Volume) -> float:
    """Largest distance (mm) between a slice's recorded position (``meta["slice_positions"]``)
    and where the affine puts it; 0 without recorded positions."""
    positions = slice_positions_lps(volume)
    grid = affine_slice_positions_lps(volume.affine, len(positions))
    return float(np.max(np.linalg.norm(positions - grid, axis=1))) if len(positions) else 0.0


def has_uniform_slices(volume: Volume) -> bool:
    """True when every slice lies on the affine's grid, within ``max(5 % of the slice spacing,
    0.02 mm)`` (always True without ``meta["slice_positions"]``)."""
    tolerance = max(_GRID_RTOL * abs(float(volume.spacing[0])), _GRID_ATOL_MM)
    return slices_off_grid_mm(volume) <= tolerance


def resample_uniform_slices(volume: Volume) -> tuple[Volume, str | None]:
    """Put a volume whose slices are unevenly spaced onto an even grid along the slice normal.

    The new spacing (mm, along the slice normal) is the smallest gap between neighbouring
    slices, but not below a quarter of the median gap (a near-duplicate slice must not blow the
    volume up), adjusted so that the first and last slices stay where they are. Each voxel
    column ``data[:, row, col]`` is interpolated linearly in the slices' distance along the
    normal, so a gantry-tilt shear is kept: the new affine steps from the first to the last
    slice position (LPS -> RAS as everywhere).

    Args:
        volume: any volume; only one with ``meta["slice_positions"]`` off the affine's grid (see
            :func:`has_uniform_slices`) is resampled.

    Returns:
        ``(volume, None)`` unchanged when it is already uniform, else ``(new volume, message)``:
        the new volume's ``data`` float32 in the same units, ``spacing`` with the new slice
        spacing, ``affine`` exact for the new grid, ``meta`` a shallow copy with the new
        ``slice_positions`` and ``resampled_from`` (the old positions, LPS mm); ``message`` says
        the old gaps and the new spacing (for a warning).

    Raises:
        CtmriInputError: naming the volume's source when the recorded positions are not strictly
            monotonic along the slice normal.
    """
    if has_uniform_slices(volume):
        return volume, None
    positions = slice_positions_lps(volume)
    lps = LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    normal /= np.linalg.norm(normal)
    along = (positions - positions[0]) @ normal
    if along[-1] < 0:
        along = -along
    gaps = np.diff(along)
    if len(gaps) == 0 or np.any(gaps <= 1e-6):
        raise CtmriInputError(volume.source or None, "cannot resample to an even slice grid: the "
                                                     "slice positions are not strictly ordered "
                                                     "along the slice normal")
    median = float(np.median(gaps))
    target = max(float(gaps.min()), median / 4.0)
    total = float(along[-1])
    count = max(int(round(total / target)), 1) + 1
    spacing = total / (count - 1)
    new_along = np.linspace(0.0, total, count)
    index = np.clip(np.searchsorted(along, new_along, side="right") - 1, 0, len(along) - 2)
    weight = ((new_along - along[index]) / gaps[index]).astype(np.float64)
    data = np.asarray(volume.data, dtype=np.float64)
    resampled = (data[index] * (1.0 - weight)[:, None, None]
                 + data[index + 1] * weight[:, None, None]).astype(np.float32)
    step_lps = (positions[-1] - positions[0]) / total * spacing
    new_lps = lps.copy()
    new_lps[:3, 2] = step_lps
    new_lps[:3, 3] = positions[0]
    affine = LPS_TO_RAS @ new_lps
    meta = dict(volume.meta)
    meta["resampled_from"] = positions
    meta["slice_positions"] = positions[0][None, :] + np.arange(count)[:, None] * step_lps
    message = (f"slice spacing is not uniform ({len(positions)} slices, gaps from "
               f"{gaps.min():.4g} to {gaps.max():.4g} mm along the slice normal, median "
               f"{median:.4g} mm); resampled linearly along the slice normal onto {count} "
               f"slices {spacing:.4g} mm apart")
    return dataclasses.replace(volume, data=resampled, affine=affine, meta=meta,
                               spacing=(spacing, float(volume.spacing[1]),
                                        float(volume.spacing[2]))), message

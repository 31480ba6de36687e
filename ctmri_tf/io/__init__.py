"""Medical image input/output: DICOM series, NIfTI, 2-D PNG/JPEG/TIFF, all as :class:`Volume`.

``read_volume`` picks the reader from the path:

* a ``.nii`` / ``.nii.gz`` file -> :func:`read_nifti`;
* a DICOM file (any name; recognised by its ``DICM`` marker), or a folder holding at least one
  DICOM file -> :func:`read_dicom` (other files in that folder are skipped; of several series
  the largest axial CT/MR one, localizers skipped, or the one ``series_uid`` names);
* a ``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff`` file (one slice) or a folder of them ->
  :func:`read_png_series` conventions;
* anything else -> ``CtmriInputError("... unknown format ...")``.

Conventions (arrays ``(slices, rows, cols)``, HU for CT, MR signal for MRI, affine voxel
``(col, row, slice)`` -> RAS+ mm) are described in :mod:`ctmri_tf.io.volume`. Readers only read;
writers go through :func:`ctmri_tf.atomic.atomic_output`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io.dicom import is_dicom_file, read_dicom, visible_files, write_dicom_series
from ctmri_tf.io.image2d import (image_files, image_volume, is_image_path, read_image,
                                 read_mask_image, read_png_series, write_png)
from ctmri_tf.io.nifti import is_nifti_path, read_nifti, write_nifti
from ctmri_tf.io.volume import MODALITIES, Volume, check_modality, modality_from_dicom

__all__ = [
    "MODALITIES", "Volume", "modality_from_dicom", "read_volume",
    "read_dicom", "write_dicom_series", "read_nifti", "write_nifti",
    "read_image", "read_mask_image", "read_png_series", "write_png",
]


def read_volume(path: str | os.PathLike, *, modality: str | None = None,
                series_uid: str | None = None) -> Volume:
    """Read a volume from a NIfTI file, a DICOM file or series folder, or 2-D image(s).

    Args:
        path: file or folder (see the module docstring for how the format is chosen).
        modality: ``"ct"``, ``"mri"`` or ``None``. For NIfTI and images it is recorded (and
            decides the image conversion to HU); for DICOM the Modality tag decides, and a
            different ``modality`` is an error (a DICOM of another modality, e.g. ``OT``, takes
            the given one).
        series_uid: the DICOM SeriesInstanceUID to read from a folder of several series (see
            :func:`read_dicom`); ``None`` picks the largest axial CT/MR series. Only for DICOM.

    Returns:
        A :class:`Volume` in physical units (HU for CT, MR signal for MRI). A single 2-D image
        becomes a one-slice volume with spacing ``(1, 1, 1)`` and an identity affine.

    Raises:
        CtmriInputError: naming the path when it does not exist, its format is unknown, the
            DICOM modality contradicts ``modality``, ``series_uid`` is given for a non-DICOM
            input, or the chosen reader rejects it.
    """
    path = Path(path)
    modality = check_modality(modality)
    if not path.exists():
        raise CtmriInputError(path, "does not exist")
    if series_uid is not None and not (
            is_dicom_file(path) or (path.is_dir() and any(is_dicom_file(f)
                                                          for f in visible_files(path)))):
        raise CtmriInputError(path, f"is not DICOM; a series UID ({series_uid}, --series) only "
                                    "chooses a series of a DICOM folder")
    if path.is_dir():
        files = visible_files(path)
        if any(is_dicom_file(f) for f in files):
            return _with_dicom_modality(read_dicom(path, series_uid=series_uid), modality)
        if image_files(path):
            return read_png_series(path, modality=modality)
        if any(is_nifti_path(f) for f in files):
            raise CtmriInputError(path, "unknown format: a folder of NIfTI files is not one "
                                        "volume; pass a single .nii/.nii.gz file")
        raise CtmriInputError(path, "unknown format: the folder holds no DICOM files and no "
                                    "PNG/JPEG/TIFF images")
    if is_nifti_path(path):
        return read_nifti(path, modality=modality)
    if is_image_path(path):
        return image_volume([path], path, modality=modality)
    if is_dicom_file(path):
        return _with_dicom_modality(read_dicom(path, series_uid=series_uid), modality)
    raise CtmriInputError(path, "unknown format: expected a .nii/.nii.gz file, a DICOM file or "
                                "series folder, or PNG/JPEG/TIFF image(s)")


def _with_dicom_modality(volume: Volume, modality: str | None) -> Volume:
    if modality is None:
        return volume
    if volume.modality is None:
        volume.modality = modality
    elif volume.modality != modality:
        raise CtmriInputError(volume.source, f"DICOM Modality says {volume.modality!r} but "
                                             f"modality={modality!r} was requested")
    return volume

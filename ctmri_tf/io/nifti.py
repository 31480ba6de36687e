"""NIfTI-1/NIfTI-2 volumes (``.nii``, ``.nii.gz``) via nibabel.

Axis mapping, exact in both directions: nibabel's array ``A`` of shape ``(I, J, K)`` is indexed
``A[i, j, k]`` with ``i`` = column, ``j`` = row, ``k`` = slice, and ``Volume.data`` is
``A.transpose(2, 1, 0)``, i.e. ``data[k, j, i] == A[i, j, k]``. The NIfTI affine (sform, or qform
when there is no sform, as nibabel chooses) already maps ``(i, j, k)`` = ``(col, row, slice)`` to
RAS+ mm, so it is ``Volume.affine`` unchanged. :func:`write_nifti` stores
``data.transpose(2, 1, 0)`` with that affine, the exact inverse.

NIfTI does not record the modality; ``Volume.modality`` is ``None`` unless the caller gives it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError, CtmriInputWarning
from ctmri_tf.io.volume import Volume, check_finite, check_modality, resample_uniform_slices

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz`` (any case)."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | os.PathLike, *, modality: str | None = None) -> Volume:
    """Read a 3-D NIfTI volume.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file. The file is only read.
        modality: ``"ct"``, ``"mri"`` or ``None``: recorded in the volume; NIfTI does not say.

    Returns:
        A :class:`Volume` with ``data`` float32 ``(slices, rows, cols)`` = nibabel's scaled array
        (``scl_slope``/``scl_inter`` applied) transposed as described in the module docstring, in
        the file's physical units (HU for a CT, MR signal for an MRI); ``affine`` the NIfTI affine
        (RAS+ mm); ``spacing`` mm ``(slice, row, col)`` = the lengths of the affine's columns
        ``(k, j, i)``; ``meta["header"]`` a copy of the NIfTI header. A 4-D file whose fourth (and
        any later) axis has length 1 is squeezed to 3-D.

    Raises:
        CtmriInputError: naming the file when it is missing, not NIfTI, truncated or a corrupt
            gzip stream; not 3-D (2-D, or a true 4-D series -- the shape is named); has a
            non-scalar (RGB, complex) data type; or holds NaN/Inf.
    """
    path = Path(path)
    modality = check_modality(modality)
    if not path.is_file():
        raise CtmriInputError(path, "does not exist" if not path.exists() else "is not a file")
    if not is_nifti_path(path):
        raise CtmriInputError(path, "is not a NIfTI file name (expected .nii or .nii.gz)")
    try:
        image = nib.load(path, mmap=False)
    except Exception as error:  # nibabel: ImageFileError, HeaderDataError, OSError, gzip errors
        raise CtmriInputError(path, f"is not a readable NIfTI file ({type(error).__name__}: "
                                    f"{error})") from error
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CtmriInputError(path, f"is not a single-file NIfTI image (nibabel reads it as "
                                    f"{type(image).__name__})")
    dtype = image.get_data_dtype()
    if dtype.fields is not None or np.issubdtype(dtype, np.complexfloating):
        raise CtmriInputError(path, f"has non-scalar voxels ({dtype}); expected one gray value "
                                    "per voxel")
    shape = tuple(int(n) for n in image.shape)
    if len(shape) < 3:
        raise CtmriInputError(path, f"is a {len(shape)}-D image of shape {shape}; a volume "
                                    "needs 3 dimensions")
    if len(shape) > 3 and any(n != 1 for n in shape[3:]):
        raise CtmriInputError(path, f"is a {len(shape)}-D image of shape {shape} (e.g. a time "
                                    "series); only 3-D volumes are supported -- split it first")
    try:
        array = image.get_fdata(dtype=np.float32, caching="unchanged")
    except Exception as error:  # truncated data, corrupt gzip stream
        raise CtmriInputError(path, f"image data cannot be read; the file is truncated or "
                                    f"corrupt ({type(error).__name__}: {error})") from error
    array = array.reshape(shape[:3])
    check_finite(array, path)
    affine = np.asarray(image.affine, dtype=np.float64)
    col_spacing, row_spacing, slice_spacing = np.linalg.norm(affine[:3, :3], axis=0)
    data = np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32)
    return Volume(data=data, modality=modality,
                  spacing=(float(slice_spacing), float(row_spacing), float(col_spacing)),
                  affine=affine, source=str(path), meta={"header": image.header.copy()})


def write_nifti(volume: Volume, path: str | os.PathLike, *, reference: Volume | None = None,
                overwrite: bool = False) -> Path:
    """Write ``volume`` as a float32 NIfTI-1 file (``.nii`` or ``.nii.gz``), atomically.

    Args:
        volume: ``data`` ``(slices, rows, cols)`` in physical units; stored as
            ``data.transpose(2, 1, 0)`` so that :func:`read_nifti` returns it exactly. NIfTI has
            one affine, so a volume whose ``meta["slice_positions"]`` are unevenly spaced (a
            DICOM series of several stacks, a missing slice) is first resampled linearly along
            the slice normal onto an even grid
            (:func:`ctmri_tf.io.volume.resample_uniform_slices`: the smallest gap, first and
            last slice kept, gantry-tilt shear kept), with a
            :class:`~ctmri_tf.errors.CtmriInputWarning` giving the old gaps and new spacing.
        path: output file ending in ``.nii`` or ``.nii.gz`` (gzip-compressed).
        reference: a volume read with :func:`read_nifti`: its affine and header (qform/sform
            codes, units, description, intent...) are reused, with the data type set to float32
            and ``scl_slope``/``scl_inter`` reset so the values are stored unscaled. Its shape must
            match ``volume``. Without a reference the volume's own affine is written as both
            qform and sform (code 1, scanner coordinates) with mm units.
        overwrite: replace an existing ``path``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        CtmriInputError: ``path`` exists and not ``overwrite``; ``path`` is an input (the
            volume's or reference's source); wrong suffix; data not 3-D or not finite; a
            reference without a NIfTI header or of another shape.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise CtmriInputError(path, "NIfTI output must end in .nii or .nii.gz")
    for source in (volume.source, reference.source if reference is not None else ""):
        if source and path.resolve() == Path(source).resolve():
            raise CtmriInputError(path, "is an input of this write; refusing to replace it")
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise CtmriInputError(path, f"cannot write: volume data must be (slices, rows, cols), "
                                    f"got shape {data.shape}")
    check_finite(data, path, what="the volume to write")
    volume, message = resample_uniform_slices(volume)
    if message is not None:
        warnings.warn(f"{path}: {message} (NIfTI needs even slice spacing)", CtmriInputWarning,
                      stacklevel=2)
        data = np.asarray(volume.data)
    array = np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32)
    if reference is not None:
        header = reference.meta.get("header")
        if not isinstance(header, (nib.Nifti1Header, nib.Nifti2Header)):
            raise CtmriInputError(reference.source or None, "reference volume has no NIfTI header "
                                                            "(it was not read from NIfTI)")
        if tuple(reference.data.shape) != tuple(data.shape):
            raise CtmriInputError(path, f"cannot reuse the reference's affine: volume shape "
                                        f"{data.shape} differs from reference shape "
                                        f"{tuple(reference.data.shape)}")
        header = nib.Nifti1Header.from_header(header)
        image = nib.Nifti1Image(array, np.asarray(reference.affine, dtype=np.float64),
                                header=header)
    else:
        affine = np.asarray(volume.affine, dtype=np.float64)
        image = nib.Nifti1Image(array, affine)
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)
        image.header.set_xyzt_units("mm")
    image.set_data_dtype(np.float32)
    image.header.set_slope_inter(None, None)
    with atomic_output(path, overwrite=overwrite) as tmp:
        nib.save(image, tmp)
    return path

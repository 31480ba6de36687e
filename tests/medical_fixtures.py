"""Small synthetic DICOM, NIfTI and PNG test inputs, written with the format libraries directly.

These helpers deliberately do not use ``ctmri_tf.io``: tests that read their output check the
readers against files written independently (pydicom, nibabel, OpenCV), not against our writers.

Conventions match ``ctmri_tf.io``: volumes are ``(slices, rows, cols)``; CT values are HU.

    from medical_fixtures import write_dicom_series, write_nifti, write_png_slices
    from medical_fixtures import tilted_two_stack_geometry, write_enhanced_multiframe

(pytest puts tests/ on sys.path, so test modules import it by its bare name.)
"""
from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Sequence

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (PYDICOM_IMPLEMENTATION_UID, CTImageStorage, EnhancedCTImageStorage,
                         EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage,
                         generate_uid)
from pydicom.valuerep import format_number_as_ds

from ctmri_tf.errors import CtmriInputError

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


def _ds(value: float) -> str:
    """A float as a DICOM decimal string of at most 16 characters."""
    text = format_number_as_ds(float(value))
    return format_number_as_ds(float(text)) if len(text) > 16 else text


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """DICOM slice normal (LPS): ImageOrientationPatient row cosines x column cosines."""
    orientation = np.asarray(orientation, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def make_dicom_slice(pixels: np.ndarray, *, modality: str = "CT", study_uid: str,
                     series_uid: str, frame_uid: str, position: Sequence[float] | None,
                     orientation: Sequence[float] | None, pixel_spacing: Sequence[float],
                     slice_thickness: float, instance_number: int | None,
                     rescale: tuple[float, float] | None) -> FileDataset:
    """One single-frame CT or MR image dataset in explicit VR little endian.

    Args:
        pixels: int ``(rows, cols)`` stored values, uint16 or int16.
        rescale: ``(RescaleSlope, RescaleIntercept)`` or ``None`` to leave both tags out.
        position / orientation / instance_number: ``None`` leaves the tag out.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = modality
    ds.PatientName = "Phantom^Head"
    ds.PatientID = "PHANTOM001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.PatientPosition = "HFS"
    ds.StudyDate = datetime.date.today().strftime("%Y%m%d")
    ds.SeriesNumber = 3
    ds.SeriesDescription = "test phantom"
    if instance_number is not None:
        ds.InstanceNumber = int(instance_number)
    if position is not None:
        ds.ImagePositionPatient = [_ds(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.SliceThickness = _ds(slice_thickness)
    if rescale is not None:
        ds.RescaleSlope = rescale[0]
        ds.RescaleIntercept = rescale[1]
        ds.RescaleType = "HU" if modality == "CT" else "US"
    ds.set_pixel_data(np.ascontiguousarray(pixels), "MONOCHROME2", 16,
                      generate_instance_uid=False)
    return ds


def write_dicom_series(folder: str | os.PathLike, volume_hu: np.ndarray, *, modality: str = "CT",
                       spacing: Sequence[float] = (2.0, 0.5, 0.5), study_uid: str | None = None,
                       series_uid: str | None = None, frame_uid: str | None = None,
                       origin: Sequence[float] = (-8.0, -8.0, 30.0),
                       orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                       rescale: tuple[float, float] | None | str = "default",
                       instance_numbers: Sequence[int] | None = None,
                       shuffle_names: bool = True, name_prefix: str = "IM",
                       positions: Sequence[Sequence[float]] | None = None,
                       thicknesses: Sequence[float] | None = None,
                       **tag_overrides) -> list[Path]:
    """Write ``volume_hu`` as a single-frame DICOM series, one file per slice.

    Args:
        folder: created if needed.
        volume_hu: ``(slices, rows, cols)`` in physical units (HU for CT, MR signal for MR).
            Values are rounded to the stored integers, so pass integer-valued data for exact checks.
        modality: ``"CT"`` or ``"MR"`` (the DICOM tag value).
        spacing: mm ``(slice, row, col)``; PixelSpacing is ``[row, col]``.
        study_uid / series_uid / frame_uid: default to fresh UIDs.
        origin: LPS ImagePositionPatient of slice 0 in mm; slice ``k`` lies at
            ``origin + k * spacing[0] * normal`` with normal = row cosines x column cosines.
        orientation: ImageOrientationPatient (row cosines, column cosines), LPS.
        rescale: ``(slope, intercept)``; ``"default"`` means ``(1, -1024)`` stored as uint16 for CT
            and no rescale tags (stored = value) for MR; ``None`` leaves the tags out.
        instance_numbers: InstanceNumber per slice (default ``1..n`` in position order).
        positions: LPS ImagePositionPatient of every slice (mm), overriding ``origin`` and
            ``spacing[0]`` (uneven stacks, gantry tilt).
        thicknesses: SliceThickness of every slice (mm); default ``spacing[0]``.
        shuffle_names: give files names whose sorted order differs from the slice order.
        name_prefix: file names are ``{name_prefix}0000`` ... (no extension, as many scanners
            write them); use another prefix to put a second series in the same folder.
        **tag_overrides: DICOM keyword -> value set on every slice after the defaults; a value of
            ``None`` deletes the tag (e.g. ``RescaleIntercept=None``).

    Returns:
        The written files in slice (position) order: ``paths[k]`` holds ``volume_hu[k]``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    volume_hu = np.asarray(volume_hu, dtype=np.float64)
    n = volume_hu.shape[0]
    if rescale == "default":
        rescale = (1.0, -1024.0) if modality == "CT" else None
    slope, intercept = rescale if rescale is not None else (1.0, 0.0)
    stored = np.rint((volume_hu - intercept) / slope)
    dtype = np.uint16 if stored.min() >= 0 else np.int16
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError(f"values do not fit {dtype.__name__} with rescale {rescale}")
    stored = stored.astype(dtype)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    normal = slice_normal(orientation)
    if instance_numbers is None:
        instance_numbers = range(1, n + 1)
    order = np.arange(n)
    if shuffle_names and n > 1:
        order = np.random.default_rng(0).permutation(n)
        if np.array_equal(order, np.arange(n)):
            order = order[::-1].copy()
    paths = []
    for k in range(n):
        position = (np.asarray(origin, dtype=float) + k * spacing[0] * normal
                    if positions is None else np.asarray(positions[k], dtype=float))
        thickness = spacing[0] if thicknesses is None else thicknesses[k]
        ds = make_dicom_slice(stored[k], modality=modality, study_uid=study_uid,
                              series_uid=series_uid, frame_uid=frame_uid, position=position,
                              orientation=orientation, pixel_spacing=spacing[1:],
                              slice_thickness=thickness, instance_number=instance_numbers[k],
                              rescale=rescale)
        for keyword, value in tag_overrides.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        path = folder / f"{name_prefix}{int(order[k]):04d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def tilted_two_stack_geometry(gaps: Sequence[float] = (4.0,) * 3 + (7.0,) * 3,
                              tilt_deg: float = 15.0,
                              origin: Sequence[float] = (-8.0, -8.0, 30.0)):
    """A GE-like head CT acquired with the gantry tilted, as two stacks of different spacing.

    The gantry tilt rotates the image plane about the patient's left-right axis
    (ImageOrientationPatient ``(1, 0, 0, 0, cos t, sin t)``) while the table moves along z, so
    the slices step along z, ``tilt_deg`` off the slice normal (a sheared volume). ``gaps`` are
    the distances between neighbouring slices *along the slice normal* (mm): the default is a
    4.0 mm stack then a 7.0 mm stack.

    Returns:
        ``(orientation, positions)``: ImageOrientationPatient and the LPS ImagePositionPatient
        (``(len(gaps) + 1, 3)`` mm) of every slice, in slice order.
    """
    t = np.deg2rad(tilt_deg)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(np.sin(t)))
    along = np.concatenate([[0.0], np.cumsum(gaps)])
    positions = np.asarray(origin, float)[None, :] + np.outer(along / np.cos(t), [0.0, 0.0, 1.0])
    # Positions as the file stores them (decimal strings), so that tests compare like with like.
    positions = np.array([[float(_ds(v)) for v in p] for p in positions])
    return orientation, positions


def write_enhanced_multiframe(path: str | os.PathLike, volume: np.ndarray, *,
                              modality: str = "CT", spacing: Sequence[float] = (2.0, 0.5, 0.5),
                              origin: Sequence[float] = (-8.0, -8.0, 30.0),
                              orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                              rescale: Sequence[tuple[float, float]] | None = None,
                              frame_order: Sequence[int] | None = None,
                              study_uid: str | None = None,
                              series_uid: str | None = None) -> Path:
    """Write ``volume`` as one Enhanced CT / Enhanced MR Image Storage file (many frames).

    Geometry lives in the functional groups as scanners write it: PixelMeasuresSequence and
    PlaneOrientationSequence in the Shared Functional Groups, PlanePositionSequence,
    FrameContentSequence and PixelValueTransformationSequence (rescale per frame) in the
    Per-Frame Functional Groups. No top-level ImagePositionPatient, PixelSpacing or rescale.

    Args:
        volume: ``(slices, rows, cols)`` physical values (HU for CT), integer-valued.
        spacing: mm ``(slice, row, col)``; slice ``k`` lies at ``origin + k * spacing[0] *
            normal`` (LPS).
        rescale: ``(slope, intercept)`` of every slice; default ``(1, -1024)`` for CT and
            ``(1, 0)`` for MR.
        frame_order: slice index stored in each frame (default: reversed, so that frame order
            is not slice order).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    volume = np.asarray(volume, dtype=np.float64)
    n = volume.shape[0]
    if rescale is None:
        rescale = [(1.0, -1024.0) if modality == "CT" else (1.0, 0.0)] * n
    if frame_order is None:
        frame_order = list(range(n))[::-1]
    sop_class = EnhancedCTImageStorage if modality == "CT" else EnhancedMRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = modality
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.PatientName = "Phantom^Head"
    ds.PatientID = "PHANTOM001"
    ds.SeriesDescription = f"enhanced {modality}"
    ds.InstanceNumber = 1
    stored = np.empty(volume.shape, dtype=np.int16)
    per_frame = []
    normal = slice_normal(orientation)
    for frame, k in enumerate(frame_order):
        slope, intercept = rescale[k]
        stored[frame] = np.rint((volume[k] - intercept) / slope).astype(np.int16)
        group = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [_ds(v) for v in
                                      np.asarray(origin, float) + k * spacing[0] * normal]
        group.PlanePositionSequence = [plane]
        content = Dataset()
        content.InStackPositionNumber = k + 1
        content.StackID = "1"
        group.FrameContentSequence = [content]
        transform = Dataset()
        transform.RescaleSlope = _ds(slope)
        transform.RescaleIntercept = _ds(intercept)
        transform.RescaleType = "HU" if modality == "CT" else "US"
        group.PixelValueTransformationSequence = [transform]
        per_frame.append(group)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [_ds(v) for v in spacing[1:]]
    measures.SliceThickness = _ds(spacing[0])
    shared.PixelMeasuresSequence = [measures]
    plane_orientation = Dataset()
    plane_orientation.ImageOrientationPatient = [_ds(v) for v in orientation]
    shared.PlaneOrientationSequence = [plane_orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.set_pixel_data(np.ascontiguousarray(stored), "MONOCHROME2", 16,
                      generate_instance_uid=False)
    ds.NumberOfFrames = n
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: str | os.PathLike, volume: np.ndarray, affine: np.ndarray | None = None,
                *, dtype=np.float32) -> Path:
    """Write a ``(slices, rows, cols)`` volume as NIfTI-1 with nibabel.

    The nibabel array is ``volume.transpose(2, 1, 0)``, i.e. NIfTI ``(i, j, k) = (col, row,
    slice)``; ``affine`` (default identity) maps ``(i, j, k)`` to RAS+ mm.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    array = np.asarray(volume).transpose(2, 1, 0).astype(dtype)
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def write_png_slices(folder: str | os.PathLike, volume: np.ndarray, bits: int = 16,
                     offset: float = 1024, *, prefix: str = "slice_") -> list[Path]:
    """Write each slice as a grayscale PNG storing ``round(value + offset)``.

    ``bits=16`` writes uint16 (the CT convention is ``offset=1024``: stored = HU + 1024);
    ``bits=8`` writes uint8 (use ``offset=0`` and values in 0..255). Out-of-range values raise
    instead of being clipped. Names are ``{prefix}1.png ... {prefix}N.png`` without zero padding,
    so natural and plain sort orders differ from 10 slices on.

    Returns:
        The files in slice order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = {8: np.uint8, 16: np.uint16}[bits]
    stored = np.rint(np.asarray(volume, dtype=np.float64) + offset)
    if stored.min() < 0 or stored.max() > np.iinfo(dtype).max:
        raise ValueError(f"values + {offset} do not fit {bits}-bit PNG")
    paths = []
    for k, image in enumerate(stored.astype(dtype)):
        path = folder / f"{prefix}{k + 1}.png"
        if not cv2.imwrite(str(path), image):
            raise OSError(f"OpenCV could not write {path}")
        paths.append(path)
    return paths


def file_states(paths) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime (ns) of every file under ``paths`` (files or folders), to prove inputs are
    left untouched by a reader."""
    states = {}
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            states[str(f)] = (f.read_bytes(), f.stat().st_mtime_ns)
    return states


def read_dicom_header(path: str | os.PathLike) -> pydicom.Dataset:
    """The dataset of one written file without its pixel data (for checking written tags)."""
    return pydicom.dcmread(path, stop_before_pixels=True)


@contextlib.contextmanager
def raises_naming(path: str | os.PathLike, match: str | None = None):
    """``pytest.raises(CtmriInputError, match=match)`` that also checks the message names ``path``.
    """
    with pytest.raises(CtmriInputError, match=match) as info:
        yield info
    assert str(path) in str(info.value), str(info.value)

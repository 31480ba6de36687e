"""DICOM CT/MR series: read into a :class:`Volume` in HU / MR signal, write synthesised series.

Reading (pydicom):

* ``path`` is one file or a folder holding one series (not searched recursively). In a folder,
  every visible file in the DICOM File Format (128-byte preamble + ``DICM``) is read; files that
  are not DICOM (a README, a thumbnail) are skipped, as are hidden files and ``DICOMDIR``.
* Stored pixel values become physical units with ``value = stored * RescaleSlope +
  RescaleIntercept`` per slice: Hounsfield units for CT, the scanner's signal units for MR. A CT
  slice without RescaleSlope or RescaleIntercept is an error (its HU would be guesswork); for MR
  and other modalities missing rescale tags mean slope 1, intercept 0.
* Slices are ordered by ImagePositionPatient projected onto the slice normal (row cosines x column
  cosines of ImageOrientationPatient), ascending, never by file name. Only when some slice lacks
  ImagePositionPatient or ImageOrientationPatient are slices ordered by InstanceNumber; the slice
  spacing then comes from SpacingBetweenSlices or SliceThickness (1 mm when neither is present)
  and ``meta["ordering"]`` says ``"instance_number"``.
* The affine maps voxel ``(col, row, slice)`` to RAS+ mm (see :mod:`ctmri_tf.io.volume`):
  DICOM's LPS+ ``x`` and ``y`` are negated. Its slice column is the mean step between successive
  ImagePositionPatient values, so a gantry tilt shows up as shear.
* Multi-frame (enhanced) objects and colour images are not supported and raise.

Writing: :func:`write_dicom_series` writes one explicit-VR-little-endian CT or MR Image Storage
file per slice with new Study/Series/SOP Instance UIDs.
"""
from __future__ import annotations

import copy
import datetime
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian,
                         MRImageStorage, generate_uid)
from pydicom.valuerep import format_number_as_ds

import ctmri_tf
from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io.volume import MODALITIES, Volume, check_finite, modality_from_dicom

# DICOM LPS+ <-> NIfTI RAS+: negate x and y (the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Positions closer than this along the normal are "the same slice" (mm).
_SAME_POSITION_MM = 1e-3
# Orientation cosines that differ by more than this belong to different stacks.
_ORIENTATION_TOL = 1e-4

# Tags copied from a reference series: patient identity and the patient coordinate system.
_REFERENCE_TAGS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "PatientPosition",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a regular file in the DICOM File Format (preamble + ``DICM``)."""
    path = Path(path)
    try:
        return path.is_file() and pydicom.misc.is_dicom(path)
    except OSError:
        return False


def visible_files(folder: Path) -> list[Path]:
    """Regular files directly in ``folder`` whose names do not start with a dot, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


# --------------------------------------------------------------------------------------- reading

def read_dicom(path: str | os.PathLike) -> Volume:
    """Read one DICOM image file or a folder holding one single-frame DICOM series.

    Args:
        path: a DICOM file, or a folder of DICOM files of one series (not searched recursively;
            hidden files and ``DICOMDIR`` are ignored, non-DICOM files are skipped).

    Returns:
        A :class:`Volume`: ``data`` float32 ``(slices, rows, cols)`` in HU (CT) or MR signal
        (MR), slices in ascending order along the slice normal; ``spacing`` mm ``(slice, row,
        col)`` with the slice spacing measured from ImagePositionPatient and the in-plane spacing
        from PixelSpacing (1 mm when absent); RAS+ ``affine``; ``modality`` from the Modality tag
        (``"ct"``, ``"mri"`` or ``None``). ``meta`` holds ``header`` (the first slice's dataset
        without pixel data, a template for writing), ``files`` (paths in slice order),
        ``ordering`` (``"position"``, ``"instance_number"`` or ``"single"``), ``rescale`` (per-slice
        ``(slope, intercept)``) and the study/series/frame-of-reference UIDs.

    Raises:
        CtmriInputError: naming the file for: a missing path; a file that is not DICOM or is
            truncated; pixel data that cannot be decoded; a DICOM object without pixel data (e.g.
            a structured report); a multi-frame or colour image; a CT slice without rescale tags;
            NaN/Inf after rescaling. Naming the folder (and the files involved) for: no DICOM
            files; two StudyInstanceUIDs or SeriesInstanceUIDs (both UIDs are named); different
            Rows/Columns, orientation or pixel spacing within the series; two slices at the same
            position; non-uniform slice spacing (e.g. a missing slice); slices that can be
            ordered neither by position nor by InstanceNumber.
    """
    path = Path(path)
    if not path.exists():
        raise CtmriInputError(path, "does not exist")
    if path.is_dir():
        datasets = _read_folder(path)
    else:
        datasets = [(path, _read_file(path))]
    for file, ds in datasets:
        _check_image(file, ds)
    if path.is_dir():
        _check_one_series(path, datasets)
    ordered, ordering, geometry = _order_slices(path, datasets)
    modality_tag = ordered[0][1].get("Modality")
    slices, rescale = [], []
    for file, ds in ordered:
        values, slope_intercept = _physical_values(file, ds)
        slices.append(values)
        rescale.append(slope_intercept)
    data = np.stack(slices).astype(np.float32, copy=False)
    first = ordered[0][1]
    header = copy.deepcopy(first)
    for keyword in _PIXEL_KEYWORDS:
        if keyword in header:
            delattr(header, keyword)
    meta = {
        "header": header,
        "files": [str(f) for f, _ in ordered],
        "ordering": ordering,
        "rescale": rescale,
        "study_instance_uid": str(first.get("StudyInstanceUID", "")),
        "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
    }
    return Volume(data=data, modality=modality_from_dicom(modality_tag),
                  spacing=geometry["spacing"], affine=geometry["affine"], source=str(path),
                  meta=meta)


def _read_file(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as error:
        raise CtmriInputError(path, f"is not a DICOM file ({error})") from error
    except Exception as error:  # pydicom raises many types for a damaged file
        raise CtmriInputError(path, f"is a damaged or truncated DICOM file "
                                    f"({type(error).__name__}: {error})") from error


def _read_folder(folder: Path) -> list[tuple[Path, Dataset]]:
    datasets = []
    for file in visible_files(folder):
        if file.name.upper() == "DICOMDIR" or not is_dicom_file(file):
            continue
        ds = _read_file(file)
        sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        if sop_class == _DICOMDIR_SOP_CLASS:
            continue
        datasets.append((file, ds))
    if not datasets:
        raise CtmriInputError(folder, "holds no DICOM files (files need the DICOM preamble and "
                                      "'DICM' marker; subfolders are not searched)")
    return datasets


def _check_image(file: Path, ds: Dataset) -> None:
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        sop = ds.get("SOPClassUID")
        kind = f"SOP class {sop.name}" if sop is not None else "no SOP class"
        raise CtmriInputError(file, f"is a DICOM file without pixel data ({kind}); it is not an "
                                    "image (e.g. a structured report) or it is truncated")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise CtmriInputError(file, f"is a multi-frame DICOM image ({frames} frames); only "
                                    "single-frame series are supported (convert it to NIfTI, "
                                    "e.g. with dcm2niix)")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise CtmriInputError(file, f"is a colour DICOM image ({samples} samples per pixel, "
                                    f"{ds.get('PhotometricInterpretation')}); CT and MR images "
                                    "are grayscale")
    for keyword in ("Rows", "Columns"):
        if keyword not in ds:
            raise CtmriInputError(file, f"has pixel data but no {keyword} tag")


def _check_one_series(folder: Path, datasets: list[tuple[Path, Dataset]]) -> None:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        first_file = {}
        for file, ds in datasets:
            first_file.setdefault(str(ds.get(keyword, "<missing>")), file)
        if len(first_file) > 1:
            listed = "; ".join(f"{uid} (e.g. {file.name})" for uid, file in first_file.items())
            raise CtmriInputError(folder, f"mixes {len(first_file)} {keyword}s: {listed}; put "
                                          "each series in its own folder")
    file0, ds0 = datasets[0]
    shape0 = (int(ds0.Rows), int(ds0.Columns))
    spacing0 = _pixel_spacing(ds0)
    for file, ds in datasets[1:]:
        shape = (int(ds.Rows), int(ds.Columns))
        if shape != shape0:
            raise CtmriInputError(file, f"has Rows x Columns {shape[0]} x {shape[1]} but "
                                        f"{file0.name} has {shape0[0]} x {shape0[1]}; all slices "
                                        "of a series must have the same size")
        if not np.allclose(_pixel_spacing(ds), spacing0, rtol=0, atol=1e-4):
            raise CtmriInputError(file, f"has PixelSpacing {list(_pixel_spacing(ds))} but "
                                        f"{file0.name} has {list(spacing0)}")


def _pixel_spacing(ds: Dataset) -> tuple[float, float]:
    """(row, col) spacing in mm; 1 mm when PixelSpacing is absent."""
    value = ds.get("PixelSpacing")
    if value is None or len(value) != 2:
        return (1.0, 1.0)
    return (float(value[0]), float(value[1]))


def _orientation(ds: Dataset) -> np.ndarray | None:
    value = ds.get("ImageOrientationPatient")
    if value is None or len(value) != 6:
        return None
    return np.array([float(v) for v in value])


def _position(ds: Dataset) -> np.ndarray | None:
    value = ds.get("ImagePositionPatient")
    if value is None or len(value) != 3:
        return None
    return np.array([float(v) for v in value])


def _unit_normal(path: Path, orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise CtmriInputError(path, f"has a degenerate ImageOrientationPatient "
                                    f"{orientation.tolist()} (row and column directions are "
                                    "parallel)")
    return normal / norm


def _fallback_slice_spacing(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _order_slices(path: Path, datasets: list[tuple[Path, Dataset]]):
    """Sort slices and compute (spacing, affine). Returns (ordered, ordering, geometry)."""
    orientations = [_orientation(ds) for _, ds in datasets]
    positions = [_position(ds) for _, ds in datasets]
    have_geometry = all(o is not None for o in orientations) and all(
        p is not None for p in positions)
    if have_geometry:
        file0 = datasets[0][0]
        for (file, _), orientation in zip(datasets[1:], orientations[1:]):
            if not np.allclose(orientation, orientations[0], rtol=0, atol=_ORIENTATION_TOL):
                raise CtmriInputError(file, f"has ImageOrientationPatient "
                                            f"{orientation.tolist()} but {file0.name} has "
                                            f"{orientations[0].tolist()}; a series must be one "
                                            "stack of parallel slices")
        normal = _unit_normal(file0, orientations[0])
        along = np.array([p @ normal for p in positions])
        order = np.argsort(along, kind="stable")
        ordering = "position" if len(datasets) > 1 else "single"
    elif len(datasets) == 1:
        order, ordering = np.array([0]), "single"
    else:
        numbers = [ds.get("InstanceNumber") for _, ds in datasets]
        if any(n in (None, "") for n in numbers) or len({int(n) for n in numbers}) < len(numbers):
            raise CtmriInputError(path, "some slices lack ImagePositionPatient/"
                                        "ImageOrientationPatient and InstanceNumbers are missing "
                                        "or repeated, so the slice order is unknown")
        order = np.argsort([int(n) for n in numbers], kind="stable")
        ordering = "instance_number"
    ordered = [datasets[i] for i in order]
    first = ordered[0][1]
    row_spacing, col_spacing = _pixel_spacing(first)
    orientation = _orientation(first)
    if orientation is None:
        orientation = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    normal = _unit_normal(ordered[0][0], orientation)
    origin = _position(first)
    if origin is None:
        origin = np.zeros(3)

    if ordering == "position":
        sorted_positions = np.array([positions[i] for i in order])
        sorted_along = along[order]
        steps = np.diff(sorted_along)
        for k, step in enumerate(steps):
            if step < _SAME_POSITION_MM:
                raise CtmriInputError(
                    path, f"{ordered[k][0].name} and {ordered[k + 1][0].name} lie at the same "
                          f"position along the slice normal ({sorted_along[k]:.3f} mm); the "
                          "folder may hold two acquisitions (echoes, phases) of one series")
        median = float(np.median(steps))
        tolerance = max(0.05 * median, 0.02)
        for k, step in enumerate(steps):
            if abs(step - median) > tolerance:
                raise CtmriInputError(
                    path, f"slice spacing is not uniform: {median:.4g} mm between most slices but "
                          f"{step:.4g} mm between {ordered[k][0].name} and "
                          f"{ordered[k + 1][0].name} (a missing slice?)")
        slice_spacing = float((sorted_along[-1] - sorted_along[0]) / (len(ordered) - 1))
        slice_step = (sorted_positions[-1] - sorted_positions[0]) / (len(ordered) - 1)
    else:
        slice_spacing = _fallback_slice_spacing(first)
        slice_step = normal * slice_spacing

    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] / np.linalg.norm(orientation[:3]) * col_spacing
    lps[:3, 1] = orientation[3:] / np.linalg.norm(orientation[3:]) * row_spacing
    lps[:3, 2] = slice_step
    lps[:3, 3] = origin
    geometry = {"spacing": (slice_spacing, row_spacing, col_spacing), "affine": LPS_TO_RAS @ lps}
    return ordered, ordering, geometry


def _physical_values(file: Path, ds: Dataset) -> tuple[np.ndarray, tuple[float, float]]:
    try:
        stored = ds.pixel_array
    except Exception as error:  # decoder missing, compressed data damaged, data truncated
        syntax = ds.file_meta.get("TransferSyntaxUID")
        syntax_name = syntax.name if syntax is not None else "unknown transfer syntax"
        raise CtmriInputError(file, f"pixel data cannot be decoded ({syntax_name}; "
                                    f"{type(error).__name__}: {error})") from error
    expected = (int(ds.Rows), int(ds.Columns))
    if stored.shape != expected:
        raise CtmriInputError(file, f"decoded pixel data has shape {stored.shape}, expected "
                                    f"Rows x Columns {expected}")
    slope_value, intercept_value = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    missing = [name for name, value in (("RescaleSlope", slope_value),
                                        ("RescaleIntercept", intercept_value))
               if value in (None, "")]
    if missing and modality_from_dicom(ds.get("Modality")) == "ct":
        raise CtmriInputError(file, f"is a CT image without {' and '.join(missing)}; its "
                                    "Hounsfield units cannot be computed")
    slope = 1.0 if slope_value in (None, "") else float(slope_value)
    intercept = 0.0 if intercept_value in (None, "") else float(intercept_value)
    values = stored.astype(np.float64) * slope + intercept
    check_finite(values, file, what="the rescaled image")
    return values.astype(np.float32), (slope, intercept)


# --------------------------------------------------------------------------------------- writing

def _ds(value: float) -> str:
    """A float as a valid DICOM decimal string (at most 16 characters)."""
    text = format_number_as_ds(float(value))
    if len(text) > 16:  # pydicom rounds 9.999999999999998 to "10.00000000000000" (17 chars)
        text = format_number_as_ds(float(text))
    return text


def _choose_rescale(data: np.ndarray, modality: str) -> tuple[float, float]:
    """(slope, intercept) so that int16 stored values reproduce ``data`` to within slope / 2.

    CT: slope 1, intercept 0 (HU rounded to whole numbers) whenever the HU fit int16. MR: slope 1
    for integer-valued signal that fits int16 (exact), else intercept 0 and the smallest slope that
    fits the maximum (non-negative signal keeps 0 at 0). Otherwise the full int16 range is used.
    Slope and intercept are the values as written in the 16-character decimal strings.
    """
    low, high = float(data.min()), float(data.max())
    fits_int16 = -32768.0 <= np.rint(low) and np.rint(high) <= 32767.0
    if fits_int16 and (modality == "ct" or np.array_equal(data, np.rint(data))):
        return 1.0, 0.0
    if modality == "mri" and low >= 0.0:
        slope, intercept = max(high, 1e-30) / 32767.0, 0.0
    else:
        slope, intercept = max(high - low, 1e-30) / 65534.0, (low + high) / 2.0
    slope = float(_ds(slope))
    intercept = float(_ds(intercept))
    # The decimal string may have rounded the slope down: grow it until the range fits.
    while (high - intercept) / slope > 32767.0 or (low - intercept) / slope < -32768.0:
        slope = float(_ds(slope * (1.0 + 1e-9)))
    return slope, intercept


def _geometry_for_writing(volume: Volume, out_dir: Path):
    affine = np.asarray(volume.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise CtmriInputError(out_dir, f"cannot write: the volume's affine is not a finite 4x4 "
                                       f"matrix ({affine.shape})")
    lps = LPS_TO_RAS @ affine
    col_vec, row_vec, slice_vec, origin = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
    col_spacing, row_spacing = np.linalg.norm(col_vec), np.linalg.norm(row_vec)
    if col_spacing < 1e-9 or row_spacing < 1e-9:
        raise CtmriInputError(out_dir, "cannot write: the volume's affine has a zero row or "
                                       "column step")
    row_cosines, col_cosines = col_vec / col_spacing, row_vec / row_spacing
    if abs(row_cosines @ col_cosines) > 1e-4:
        raise CtmriInputError(out_dir, "cannot write: the volume's rows and columns are not "
                                       "perpendicular in its affine, which DICOM cannot express")
    return {"orientation": np.concatenate([row_cosines, col_cosines]),
            "normal": np.cross(row_cosines, col_cosines), "origin": origin,
            "slice_step": slice_vec, "pixel_spacing": (row_spacing, col_spacing)}


def write_dicom_series(volume: Volume, out_dir: str | os.PathLike, *, modality: str,
                       reference: Volume | None = None, overwrite: bool = False) -> Path:
    """Write ``volume`` as a new single-frame DICOM series (one file per slice) in ``out_dir``.

    Args:
        volume: ``data`` in HU for ``modality="ct"`` or MR signal for ``"mri"``; geometry from
            its ``affine`` (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) and
            ``spacing[0]`` (SliceThickness).
        out_dir: the folder to create; files are ``CT0001.dcm``... or ``MR0001.dcm``... in slice
            order.
        modality: ``"ct"`` (CT Image Storage, Modality CT) or ``"mri"`` (MR Image Storage,
            Modality MR).
        reference: a volume read with :func:`read_dicom` (typically the series the result was
            computed from): patient tags (name, ID, birth date, sex, ...), PatientPosition,
            SpecificCharacterSet and FrameOfReferenceUID (same patient coordinate system) are
            copied from its ``meta["header"]``.
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Every call makes a new StudyInstanceUID, SeriesInstanceUID and SOPInstanceUIDs. Pixels are
    int16 (explicit VR little endian) with RescaleSlope/RescaleIntercept chosen by
    :func:`_choose_rescale`: CT is stored in whole HU (slope 1); MR to within half a slope. Reading
    the series back gives the same values within that step, the same affine and, when the
    volume's slice axis points along the slice normal (as for every volume read from DICOM), the
    same slice order; otherwise the slices read back reversed with identical world geometry.
    SeriesDescription says the series was synthesised by ctmri-tf.

    Raises:
        CtmriInputError: ``out_dir`` exists and not ``overwrite``; ``out_dir`` is the volume's or
            reference's source; an unknown modality; data not 3-D or not finite; an affine DICOM
            cannot express; a reference without a DICOM header.
    """
    out_dir = Path(out_dir)
    if modality not in MODALITIES:
        raise CtmriInputError(None, f"modality must be one of {MODALITIES}, got {modality!r}")
    for source in (volume.source, reference.source if reference is not None else ""):
        if source and out_dir.resolve() == Path(source).resolve():
            raise CtmriInputError(out_dir, "is an input of this write; refusing to replace it")
    data = np.asarray(volume.data)
    if data.ndim != 3 or min(data.shape) < 1:
        raise CtmriInputError(out_dir, f"cannot write: volume data must be (slices, rows, cols), "
                                       f"got shape {data.shape}")
    check_finite(data, out_dir, what="the volume to write")
    header = None
    if reference is not None:
        header = reference.meta.get("header")
        if not isinstance(header, Dataset):
            raise CtmriInputError(reference.source or None, "reference volume has no DICOM header "
                                                            "(it was not read from DICOM)")
    geometry = _geometry_for_writing(volume, out_dir)
    data = data.astype(np.float64)
    slope, intercept = _choose_rescale(data, modality)
    stored = np.clip(np.rint((data - intercept) / slope), -32768, 32767).astype(np.int16)

    dicom_modality = "CT" if modality == "ct" else "MR"
    sop_class = CTImageStorage if modality == "ct" else MRImageStorage
    study_uid, series_uid = generate_uid(), generate_uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    window_low, window_high = (-160.0, 240.0) if modality == "ct" else (
        float(np.percentile(data, 0.5)), float(np.percentile(data, 99.5)))
    width = max(4, len(str(len(stored))))

    with atomic_output(out_dir, directory=True, overwrite=overwrite) as tmp:
        for k, pixels in enumerate(stored):
            ds = _slice_dataset(header, sop_class=sop_class, modality=dicom_modality,
                                study_uid=study_uid, series_uid=series_uid, date=date, time=time)
            position = geometry["origin"] + k * geometry["slice_step"]
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
            ds.SliceLocation = _ds(position @ geometry["normal"])
            ds.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing"]]
            ds.SliceThickness = _ds(abs(float(volume.spacing[0])))
            ds.RescaleSlope = _ds(slope)
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleType = "HU" if modality == "ct" else "US"
            ds.WindowCenter = _ds((window_low + window_high) / 2)
            ds.WindowWidth = _ds(max(window_high - window_low, 1.0))
            ds.set_pixel_data(np.ascontiguousarray(pixels), "MONOCHROME2", 16,
                              generate_instance_uid=False)
            pydicom.dcmwrite(tmp / f"{dicom_modality}{k + 1:0{width}d}.dcm", ds,
                             enforce_file_format=True)
    return out_dir


def _slice_dataset(header: Dataset | None, *, sop_class, modality: str, study_uid: str,
                   series_uid: str, date: str, time: str) -> Dataset:
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    # Type 2 patient/study tags exist even when empty; a reference fills them in below.
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    if header is not None:
        for keyword in _REFERENCE_TAGS:
            if keyword in header:
                setattr(ds, keyword, copy.deepcopy(header[keyword].value))
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = generate_uid()
        ds.PositionReferenceIndicator = ""
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"synthetic {modality} synthesised by ctmri-tf {ctmri_tf.__version__}"
    ds.ImageComments = "Synthesised by ctmri-tf from another image; not for diagnostic use."
    if header is not None and header.get("SeriesInstanceUID"):
        ds.DerivationDescription = (f"synthesised by ctmri-tf from series "
                                    f"{header.SeriesInstanceUID}")
    ds.Manufacturer = "ctmri-tf"
    ds.SoftwareVersions = ctmri_tf.__version__
    ds.BurnedInAnnotation = "NO"
    if modality == "CT":
        ds.KVP = ""
        ds.AcquisitionNumber = ""
    else:
        ds.ScanningSequence = "RM"  # research mode: no real acquisition
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = ""
        ds.EchoTime = ""
        ds.EchoTrainLength = ""
    return ds

"""DICOM CT/MR series: read into a :class:`Volume` in HU / MR signal, write synthesised series.

Reading (pydicom):

* ``path`` is one file or a folder (not searched recursively). In a folder, every visible file in
  the DICOM File Format (128-byte preamble + ``DICM``) is read; files that are not DICOM (a
  README, a thumbnail) are skipped, as are hidden files and ``DICOMDIR``.
* Series selection in a folder: files are grouped by SeriesInstanceUID. Localizer/scout images
  (ImageType containing ``LOCALIZER``) are dropped; so are series without CT/MR images when a
  CT or MR series is there (RT structure sets, dose grids, reports), and non-axial series when an
  axial one is there (slice normal within 45 degrees of the patient's z axis). Of the rest the
  series with the most slices is read, and one :class:`~ctmri_tf.errors.CtmriInputWarning`
  names everything skipped (series UID, description, image count, why). ``series_uid`` chooses
  a series explicitly (``ctmri translate --series UID``); an unknown UID is an error listing the
  available ones. Two equally large candidate series, or candidates from two studies, are an
  error listing them: choose one with ``series_uid``.
* Enhanced (and legacy converted) multi-frame CT/MR -- one file, many frames -- is read as a
  volume: every frame is a slice, its position, orientation, pixel spacing and rescale taken from
  the Per-Frame Functional Groups, else the Shared Functional Groups, else the top-level tags.
* Stored pixel values become physical units with ``value = stored * RescaleSlope +
  RescaleIntercept`` per slice: Hounsfield units for CT, the scanner's signal units for MR. A CT
  slice without RescaleSlope or RescaleIntercept is an error (its HU would be guesswork); for MR
  and other modalities missing rescale tags mean slope 1, intercept 0.
* Padding: stored values equal to PixelPaddingValue, or between PixelPaddingValue and
  PixelPaddingRangeLimit (inclusive, either order), compared on the *stored* values before
  rescaling as the standard says (a padding value outside the stored type's range is taken as
  the same bit pattern, e.g. 63536 for -2000 in uint16), become air: -1000 HU for CT, for other
  modalities the smaller of 0 and the smallest unpadded value. ``meta["padding"]`` says how many.
* Slices are ordered by ImagePositionPatient projected onto the slice normal (row cosines x column
  cosines of ImageOrientationPatient), ascending, never by file name. Only when some slice lacks
  ImagePositionPatient or ImageOrientationPatient are slices ordered by InstanceNumber (frames:
  by frame number); the slice spacing then comes from SpacingBetweenSlices or SliceThickness (1 mm
  when neither is present) and ``meta["ordering"]`` says ``"instance_number"``.
* Every slice keeps its own position: ``meta["slice_positions"]`` is ``(slices, 3)`` LPS+ mm, the
  ImagePositionPatient values exactly. Uneven spacing (e.g. a head CT acquired as a 4 mm and a
  7 mm stack, or a missing slice) is read, with a warning: a slice-wise translator does not need
  even spacing, :func:`write_dicom_series` writes the exact positions back, and
  :func:`ctmri_tf.io.write_nifti` resamples to even spacing (with a warning).
* The affine maps voxel ``(col, row, slice)`` to RAS+ mm (see :mod:`ctmri_tf.io.volume`):
  DICOM's LPS+ ``x`` and ``y`` are negated. Its slice column is the mean step between successive
  ImagePositionPatient values for an evenly spaced series (exactly as before uneven series were
  supported); for an uneven one it points from the first to the last slice and is scaled to the
  median gap along the normal. ``spacing[0]`` is the (mean, resp. median) gap along the normal.
* Gantry tilt (slices stepping along a direction that is not the slice normal, as on a tilted CT
  gantry) is kept as shear in the affine's slice column, with one warning naming the file and the
  tilt in degrees (``meta["gantry_tilt_deg"]``).
* Colour images and multi-frame images without functional groups are not supported and raise.

Writing: :func:`write_dicom_series` writes one explicit-VR-little-endian CT or MR Image Storage
file per slice with new Study/Series/SOP Instance UIDs, at each slice's recorded position.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import warnings
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
from ctmri_tf.errors import CtmriInputError, CtmriInputWarning
from ctmri_tf.io.volume import (LPS_TO_RAS, MODALITIES, Volume, affine_slice_positions_lps,
                                check_finite, modality_from_dicom)

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Positions closer than this along the normal are "the same slice" (mm).
_SAME_POSITION_MM = 1e-3
# Orientation cosines that differ by more than this belong to different stacks.
_ORIENTATION_TOL = 1e-4
# Slices stepping this far (degrees) off the slice normal are a gantry tilt.
_TILT_MIN_DEG = 0.05
# A series is axial when its slice normal is within 45 degrees of the patient's z axis.
_AXIAL_MIN_COSINE = float(np.cos(np.deg2rad(45.0)))
# Padded pixels of a CT become this (HU).
PADDING_AIR_HU = -1000.0
_LOCALIZER_TYPES = ("LOCALIZER",)

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

@dataclasses.dataclass
class _Slice:
    """One 2-D image: a single-frame file, or one frame of a multi-frame file."""

    file: Path
    ds: Dataset
    frame: int | None                 # 0-based frame index, None for a single-frame file
    position: np.ndarray | None       # ImagePositionPatient, LPS mm
    orientation: np.ndarray | None    # ImageOrientationPatient (row cosines, column cosines)
    pixel_spacing: tuple[float, float]  # mm (row, col); 1 mm when absent
    slope: object                     # RescaleSlope as stored (None when absent)
    intercept: object                 # RescaleIntercept as stored (None when absent)
    thickness: float | None           # SliceThickness, mm
    fallback_spacing: float           # SpacingBetweenSlices, else SliceThickness, else 1 mm
    order_key: tuple | None           # InstanceNumber (, frame): order without positions

    @property
    def label(self) -> str:
        return self.file.name if self.frame is None else f"{self.file.name} frame {self.frame + 1}"


def read_dicom(path: str | os.PathLike, *, series_uid: str | None = None) -> Volume:
    """Read one DICOM image file (single- or multi-frame) or one series of a folder.

    Args:
        path: a DICOM file, or a folder of DICOM files (not searched recursively; hidden files
            and ``DICOMDIR`` are ignored, non-DICOM files are skipped). A folder may hold
            localizers and several series: see the module docstring for which one is read.
        series_uid: the SeriesInstanceUID to read from a folder (for a file: the file's must
            match). ``None`` picks the largest axial CT/MR series.

    Returns:
        A :class:`Volume`: ``data`` float32 ``(slices, rows, cols)`` in HU (CT) or MR signal
        (MR), slices in ascending order along the slice normal; ``spacing`` mm ``(slice, row,
        col)`` with the slice spacing measured from ImagePositionPatient along the normal (the
        median gap when uneven) and the in-plane spacing from PixelSpacing (row, col; 1 mm when
        absent) of the series actually read; RAS+ ``affine``; ``modality`` from the Modality tag
        (``"ct"``, ``"mri"`` or ``None``). ``meta`` holds ``header`` (the first slice's dataset
        without pixel data or per-frame groups, a template for writing), ``files`` (path of every
        slice, in slice order; a multi-frame file repeats), ``frames`` (0-based frame index of
        every slice, ``None`` for single-frame files), ``ordering`` (``"position"``,
        ``"instance_number"`` or ``"single"``), ``rescale`` (per-slice ``(slope, intercept)``),
        ``slice_positions`` (``(slices, 3)`` float64 LPS mm; absent when ordered by
        InstanceNumber), ``slice_thickness`` (per-slice SliceThickness mm or ``None``),
        ``uniform_spacing`` (bool), ``gantry_tilt_deg`` (float, 0 without tilt), ``padding``
        (``{"value", "range_limit", "voxels", "fill"}`` or ``None``), ``skipped`` (what series
        selection left out: dicts with ``series_instance_uid``, ``description``, ``images``,
        ``reason``) and the study/series/frame-of-reference UIDs.

    Warns:
        CtmriInputWarning: once each for skipped localizers/series, uneven slice spacing, gantry
            tilt, and padded pixels set to air -- each naming the file or folder.

    Raises:
        CtmriInputError: naming the file for: a missing path; a file that is not DICOM or is
            truncated; pixel data that cannot be decoded; a DICOM object without pixel data (e.g.
            a structured report) where an image is expected; a colour image or a multi-frame
            image without functional groups; a CT slice without rescale tags; NaN/Inf after
            rescaling. Naming the folder (and the files involved) for: no DICOM images; an
            unknown ``series_uid`` (listing the available series); candidate series from two
            StudyInstanceUIDs or two equally large candidate series (both named: choose one with
            ``series_uid``); different Rows/Columns, orientation or pixel spacing within the
            series; two slices at the same position; slices that can be ordered neither by
            position nor by InstanceNumber.
    """
    path = Path(path)
    if not path.exists():
        raise CtmriInputError(path, "does not exist")
    skipped: list[dict] = []
    if path.is_dir():
        datasets, skipped = _select_series(path, _read_folder(path), series_uid)
    else:
        ds = _read_file(path)
        if series_uid is not None and str(ds.get("SeriesInstanceUID", "")) != series_uid:
            raise CtmriInputError(path, f"belongs to series {ds.get('SeriesInstanceUID')}, not "
                                        f"the requested {series_uid}")
        datasets = [(path, ds)]
    for file, ds in datasets:
        _check_image(file, ds)
    slices = [s for file, ds in datasets for s in _slices_of(file, ds)]
    _check_one_grid(slices)
    ordered, ordering, geometry = _order_slices(path, slices)

    frames_of: dict[Path, np.ndarray] = {}  # multi-frame files, decoded once each
    values, rescale, padded = [], [], []
    for item in ordered:
        if item.frame is None:
            image = _stored_pixels(item.file, item.ds)
        else:
            if item.file not in frames_of:
                frames_of[item.file] = _stored_pixels(item.file, item.ds)
            image = frames_of[item.file][item.frame]
        physical, slope_intercept, pad_mask = _physical_values(item, image)
        values.append(physical)
        rescale.append(slope_intercept)
        padded.append(pad_mask)
    del frames_of
    data = np.stack(values).astype(np.float32, copy=False)
    first = ordered[0].ds
    modality = modality_from_dicom(first.get("Modality"))
    padding = _apply_padding(path, first, data, padded, modality)

    header = copy.deepcopy(first) if ordered[0].frame is None else _frame_header(first)
    for keyword in _PIXEL_KEYWORDS:
        if keyword in header:
            delattr(header, keyword)
    meta = {
        "header": header,
        "files": [str(item.file) for item in ordered],
        "frames": [item.frame for item in ordered],
        "ordering": ordering,
        "rescale": rescale,
        "slice_thickness": [item.thickness for item in ordered],
        "uniform_spacing": geometry["uniform"],
        "gantry_tilt_deg": geometry["tilt_deg"],
        "padding": padding,
        "skipped": skipped,
        "study_instance_uid": str(first.get("StudyInstanceUID", "")),
        "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
    }
    if geometry["positions"] is not None:
        meta["slice_positions"] = geometry["positions"]
    return Volume(data=data, modality=modality, spacing=geometry["spacing"],
                  affine=geometry["affine"], source=str(path), meta=meta)


def _frame_header(ds: Dataset) -> Dataset:
    """A multi-frame dataset without its per-frame groups (big, and per frame) as a template."""
    header = Dataset()
    for element in ds:
        if element.keyword not in _PIXEL_KEYWORDS + ("PerFrameFunctionalGroupsSequence",):
            header.add(copy.deepcopy(element))
    header.file_meta = copy.deepcopy(ds.file_meta) if hasattr(ds, "file_meta") else None
    return header


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


# ------------------------------------------------------------------------------ series selection

def _has_pixels(ds: Dataset) -> bool:
    return any(keyword in ds for keyword in _PIXEL_KEYWORDS)


def _is_localizer(ds: Dataset) -> bool:
    image_type = ds.get("ImageType")
    if image_type is None:
        return False
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return any(str(v).strip().upper() in _LOCALIZER_TYPES for v in values)


def _frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _series_normal(ds: Dataset) -> np.ndarray | None:
    orientation = _orientation(ds)
    if orientation is None:
        item = _functional_item(ds, None, "PlaneOrientationSequence")
        orientation = _orientation(item) if item is not None else None
    if orientation is None:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 1e-6 else None


@dataclasses.dataclass
class _Series:
    uid: str
    items: list            # (file, ds) with pixel data, localizers excluded
    localizers: list       # (file, ds) localizer images of this series
    others: list           # (file, ds) without pixel data

    @property
    def first(self) -> Dataset:
        return (self.items or self.localizers or self.others)[0][1]

    @property
    def description(self) -> str:
        return str(self.first.get("SeriesDescription", "") or "no description")

    @property
    def slices(self) -> int:
        return sum(_frame_count(ds) for _, ds in self.items)

    @property
    def modality(self) -> str | None:
        return modality_from_dicom(self.first.get("Modality"))

    @property
    def study(self) -> str:
        return str(self.first.get("StudyInstanceUID", "<missing>"))

    @property
    def axial(self) -> bool:
        normal = _series_normal(self.items[0][1]) if self.items else None
        return normal is None or abs(normal[2]) >= _AXIAL_MIN_COSINE

    def describe(self) -> str:
        modality = self.first.get("Modality", "?")
        parts = [f"{self.slices} slices" if self.items else None,
                 f"{len(self.localizers)} localizer image(s)" if self.localizers else None,
                 f"{len(self.others)} object(s) without pixel data" if self.others else None]
        return (f"{self.uid} ('{self.description}', {modality}, "
                f"{', '.join(p for p in parts if p)})")


def _group_series(datasets: list[tuple[Path, Dataset]]) -> dict[str, _Series]:
    groups: dict[str, _Series] = {}
    for file, ds in datasets:
        uid = str(ds.get("SeriesInstanceUID", "") or "<missing>")
        series = groups.setdefault(uid, _Series(uid, [], [], []))
        if not _has_pixels(ds):
            series.others.append((file, ds))
        elif _is_localizer(ds):
            series.localizers.append((file, ds))
        else:
            series.items.append((file, ds))
    return groups


def _skip(series: _Series, reason: str, images: int | None = None) -> dict:
    return {"series_instance_uid": series.uid, "description": series.description,
            "images": len(series.items) + len(series.localizers) + len(series.others)
            if images is None else images, "reason": reason}


def _select_series(folder: Path, datasets: list[tuple[Path, Dataset]],
                   series_uid: str | None) -> tuple[list[tuple[Path, Dataset]], list[dict]]:
    """The files of the series to read and what was skipped (also warned)."""
    groups = _group_series(datasets)
    if series_uid is not None:
        if series_uid not in groups:
            listed = "; ".join(s.describe() for s in groups.values())
            raise CtmriInputError(folder, f"has no series {series_uid}; available: {listed}")
        chosen = groups[series_uid]
        candidates = [chosen]
    else:
        candidates = [s for s in groups.values() if s.items]
        if not candidates:
            only_localizers = [s for s in groups.values() if s.localizers]
            if only_localizers:
                listed = "; ".join(s.describe() for s in only_localizers)
                raise CtmriInputError(folder, f"holds only localizer (scout) images: {listed}; "
                                              f"pass one file to read a localizer as one slice")
            _check_image(*datasets[0])  # raises: no pixel data
        for keep, reason in ((lambda s: s.modality is not None, "not CT or MR"),
                             (lambda s: s.axial, "not axial")):
            if any(keep(s) for s in candidates):
                candidates = [s for s in candidates if keep(s)]
        studies = {}
        for s in candidates:
            studies.setdefault(s.study, s)
        if len(studies) > 1:
            listed = "; ".join(f"{uid} (e.g. series {s.describe()})" for uid, s in studies.items())
            raise CtmriInputError(folder, f"mixes {len(studies)} StudyInstanceUIDs: {listed}; put "
                                          "each study in its own folder or choose a series with "
                                          "--series UID (series_uid=)")
        largest = max(s.slices for s in candidates)
        best = [s for s in candidates if s.slices == largest]
        if len(best) > 1:
            listed = "; ".join(s.describe() for s in best)
            raise CtmriInputError(folder, f"mixes {len(best)} SeriesInstanceUIDs of "
                                          f"{largest} slices each: {listed}; choose one with "
                                          "--series UID (series_uid=), or put each series in "
                                          "its own folder")
        chosen = best[0]
    files = chosen.items or chosen.localizers  # an explicitly chosen localizer series is read
    if not files:
        raise CtmriInputError(folder, f"series {chosen.describe()} has no images")
    for file, ds in chosen.others:  # a damaged slice of the chosen series: say so
        _check_image(file, ds)
    missing_uid = groups.get("<missing>")
    if missing_uid is not None and missing_uid is not chosen and missing_uid.others:
        _check_image(*missing_uid.others[0])  # e.g. a truncated file: cannot tell its series

    skipped = []
    if chosen.items and chosen.localizers:
        skipped.append(_skip(chosen, "localizer", len(chosen.localizers)))
    for s in groups.values():
        if s is chosen:
            continue
        if s.items:
            reason = ("not CT or MR" if chosen.modality is not None and s.modality is None else
                      "not axial" if chosen.axial and not s.axial else
                      f"fewer slices ({s.slices})" if series_uid is None else "not chosen")
        elif s.localizers:
            reason = "localizer"
        else:
            reason = "no pixel data"
        skipped.append(_skip(s, reason))
    if skipped and series_uid is None:  # an explicit choice needs no explanation
        listed = "; ".join(f"series {d['series_instance_uid']} ('{d['description']}', "
                           f"{d['images']} image(s): {d['reason']})" for d in skipped)
        warnings.warn(f"{folder}: read series {chosen.uid} ('{chosen.description}', "
                      f"{len(files)} file(s)); skipped {listed}; choose another with --series "
                      f"UID (series_uid=)", CtmriInputWarning, stacklevel=3)
    return files, skipped


# ------------------------------------------------------------------------------ slices and grid

def _check_image(file: Path, ds: Dataset) -> None:
    if not _has_pixels(ds):
        sop = ds.get("SOPClassUID")
        kind = f"SOP class {sop.name}" if sop is not None else "no SOP class"
        raise CtmriInputError(file, f"is a DICOM file without pixel data ({kind}); it is not an "
                                    "image (e.g. a structured report) or it is truncated")
    frames = _frame_count(ds)
    if frames > 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        raise CtmriInputError(file, f"is a multi-frame DICOM image ({frames} frames) without "
                                    "per-frame geometry (PerFrameFunctionalGroupsSequence); only "
                                    "single-frame series and enhanced multi-frame CT/MR are "
                                    "supported (convert it, e.g. with dcm2niix)")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise CtmriInputError(file, f"is a colour DICOM image ({samples} samples per pixel, "
                                    f"{ds.get('PhotometricInterpretation')}); CT and MR images "
                                    "are grayscale")
    for keyword in ("Rows", "Columns"):
        if keyword not in ds:
            raise CtmriInputError(file, f"has pixel data but no {keyword} tag")


def _functional_item(ds: Dataset, frame: int | None, keyword: str) -> Dataset | None:
    """The first item of functional group ``keyword`` for ``frame``: Per-Frame, else Shared."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if frame is not None and per_frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        sequence = group.get(keyword)
        if sequence:
            return sequence[0]
    return None


def _slices_of(file: Path, ds: Dataset) -> list[_Slice]:
    instance = ds.get("InstanceNumber")
    instance = None if instance in (None, "") else int(instance)
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return [_Slice(file, ds, None, _position(ds), _orientation(ds), _pixel_spacing(ds),
                       ds.get("RescaleSlope"), ds.get("RescaleIntercept"), _thickness(ds),
                       _fallback_slice_spacing(ds),
                       None if instance is None else (instance,))]
    frames = _frame_count(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != frames:
        raise CtmriInputError(file, f"has NumberOfFrames {frames} but {len(per_frame)} "
                                    "PerFrameFunctionalGroupsSequence items")
    slices = []
    for frame in range(frames):
        plane = _functional_item(ds, frame, "PlanePositionSequence")
        orientation = _functional_item(ds, frame, "PlaneOrientationSequence")
        measures = _functional_item(ds, frame, "PixelMeasuresSequence")
        transform = _functional_item(ds, frame, "PixelValueTransformationSequence")
        measures_or_top = measures if measures is not None and "PixelSpacing" in measures else ds
        rescale_source = transform if transform is not None else ds
        spacing_source = measures if measures is not None else ds
        slices.append(_Slice(
            file, ds, frame,
            _position(plane) if plane is not None else _position(ds),
            _orientation(orientation) if orientation is not None else _orientation(ds),
            _pixel_spacing(measures_or_top), rescale_source.get("RescaleSlope"),
            rescale_source.get("RescaleIntercept"), _thickness(spacing_source),
            _fallback_slice_spacing(spacing_source), (instance or 0, frame)))
    return slices


def _check_one_grid(slices: list[_Slice]) -> None:
    """All slices of the series: same Rows x Columns and PixelSpacing (they stack on one grid)."""
    first = slices[0]
    shape0 = (int(first.ds.Rows), int(first.ds.Columns))
    for item in slices[1:]:
        shape = (int(item.ds.Rows), int(item.ds.Columns))
        if shape != shape0:
            raise CtmriInputError(item.file, f"has Rows x Columns {shape[0]} x {shape[1]} but "
                                             f"{first.label} has {shape0[0]} x {shape0[1]}; all "
                                             "slices of a series must have the same size")
        if not np.allclose(item.pixel_spacing, first.pixel_spacing, rtol=0, atol=1e-4):
            raise CtmriInputError(item.file, f"{item.label} has PixelSpacing "
                                             f"{list(item.pixel_spacing)} but {first.label} has "
                                             f"{list(first.pixel_spacing)}; the slices of a "
                                             "series must share one pixel grid")


def _pixel_spacing(ds: Dataset) -> tuple[float, float]:
    """(row, col) spacing in mm; 1 mm when PixelSpacing is absent."""
    value = ds.get("PixelSpacing")
    if value is None or len(value) != 2:
        return (1.0, 1.0)
    return (float(value[0]), float(value[1]))


def _thickness(ds: Dataset) -> float | None:
    value = ds.get("SliceThickness")
    return None if value in (None, "") else float(value)


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


def _order_slices(path: Path, slices: list[_Slice]):
    """Sort slices and compute the geometry. Returns ``(ordered, ordering, geometry)`` with
    geometry ``{"spacing", "affine", "positions" (LPS (S, 3) or None), "uniform", "tilt_deg"}``.
    """
    have_geometry = all(s.orientation is not None and s.position is not None for s in slices)
    along = None
    if have_geometry:
        first = slices[0]
        for item in slices[1:]:
            if not np.allclose(item.orientation, first.orientation, rtol=0,
                               atol=_ORIENTATION_TOL):
                raise CtmriInputError(item.file, f"{item.label} has ImageOrientationPatient "
                                                 f"{item.orientation.tolist()} but {first.label} "
                                                 f"has {first.orientation.tolist()}; a series "
                                                 "must be one stack of parallel slices")
        normal = _unit_normal(first.file, first.orientation)
        along = np.array([s.position @ normal for s in slices])
        order = np.argsort(along, kind="stable")
        ordering = "position" if len(slices) > 1 else "single"
    elif len(slices) == 1:
        order, ordering = np.array([0]), "single"
    else:
        keys = [s.order_key for s in slices]
        if any(k is None for k in keys) or len(set(keys)) < len(keys):
            raise CtmriInputError(path, "some slices lack ImagePositionPatient/"
                                        "ImageOrientationPatient and InstanceNumbers are missing "
                                        "or repeated, so the slice order is unknown")
        order = sorted(range(len(slices)), key=lambda i: keys[i])
        ordering = "instance_number"
    ordered = [slices[i] for i in order]
    first = ordered[0]
    row_spacing, col_spacing = first.pixel_spacing
    orientation = first.orientation
    if orientation is None:
        orientation = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    normal = _unit_normal(first.file, orientation)
    origin = first.position
    if origin is None:
        origin = np.zeros(3)

    positions, uniform, tilt_deg = None, True, 0.0
    if ordering == "position":
        positions = np.array([s.position for s in ordered])
        sorted_along = along[np.asarray(order)]
        steps = np.diff(sorted_along)
        for k, step in enumerate(steps):
            if step < _SAME_POSITION_MM:
                raise CtmriInputError(
                    path, f"{ordered[k].label} and {ordered[k + 1].label} lie at the same "
                          f"position along the slice normal ({sorted_along[k]:.3f} mm); the "
                          "folder may hold two acquisitions (echoes, phases) of one series")
        median = float(np.median(steps))
        tolerance = max(0.05 * median, 0.02)
        odd = [k for k, step in enumerate(steps) if abs(step - median) > tolerance]
        uniform = not odd
        extent = float(sorted_along[-1] - sorted_along[0])
        stepping = positions[-1] - positions[0]
        if uniform:  # exactly as for every evenly spaced series
            slice_spacing = extent / (len(ordered) - 1)
            slice_step = stepping / (len(ordered) - 1)
        else:
            slice_spacing = median
            slice_step = stepping / extent * median
            worst = max(odd, key=lambda k: abs(steps[k] - median))
            gaps = sorted({float(f"{g:.3g}") for g in steps})
            shown = ", ".join(f"{g:g}" for g in gaps[:8]) + (", ..." if len(gaps) > 8 else "")
            warnings.warn(
                f"{path}: slice spacing is not uniform: gaps of {shown} mm along the slice "
                f"normal (median {median:.4g} mm; e.g. {steps[worst]:.4g} mm between "
                f"{ordered[worst].label} and {ordered[worst + 1].label}: several stacks or a "
                f"missing slice?). Each slice keeps its own ImagePositionPatient "
                f"(meta['slice_positions']); the affine uses the median gap; NIfTI output is "
                f"resampled to even spacing", CtmriInputWarning, stacklevel=3)
        cosine = abs(stepping @ normal) / max(float(np.linalg.norm(stepping)), 1e-12)
        tilt_deg = float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
        if tilt_deg > _TILT_MIN_DEG:
            tag = first.ds.get("GantryDetectorTilt")
            said = f" (GantryDetectorTilt {float(tag):g} degrees)" if tag not in (None, "") else ""
            warnings.warn(
                f"{path}: gantry tilt of {tilt_deg:.2f} degrees{said}: the slices step "
                f"{tilt_deg:.2f} degrees off the slice normal; the shear is kept in the affine "
                f"(its slice axis follows the slice positions), not resampled away",
                CtmriInputWarning, stacklevel=3)
        else:
            tilt_deg = 0.0
    else:
        slice_spacing = first.fallback_spacing
        slice_step = normal * slice_spacing
        if ordering == "single" and first.position is not None:
            positions = first.position[None, :].copy()

    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] / np.linalg.norm(orientation[:3]) * col_spacing
    lps[:3, 1] = orientation[3:] / np.linalg.norm(orientation[3:]) * row_spacing
    lps[:3, 2] = slice_step
    lps[:3, 3] = origin
    geometry = {"spacing": (slice_spacing, row_spacing, col_spacing), "affine": LPS_TO_RAS @ lps,
                "positions": positions, "uniform": uniform, "tilt_deg": tilt_deg}
    return ordered, ordering, geometry


# ------------------------------------------------------------------------------ pixel values

def _stored_pixels(file: Path, ds: Dataset) -> np.ndarray:
    """Stored values: ``(rows, cols)`` for a single-frame file, ``(frames, rows, cols)`` else."""
    try:
        stored = ds.pixel_array
    except Exception as error:  # decoder missing, compressed data damaged, data truncated
        syntax = ds.file_meta.get("TransferSyntaxUID")
        syntax_name = syntax.name if syntax is not None else "unknown transfer syntax"
        raise CtmriInputError(file, f"pixel data cannot be decoded ({syntax_name}; "
                                    f"{type(error).__name__}: {error})") from error
    frames = _frame_count(ds)
    multi = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    expected = (int(ds.Rows), int(ds.Columns))
    if multi:
        expected = (frames,) + expected
        stored = stored.reshape(expected) if stored.size == np.prod(expected) else stored
    if stored.shape != expected:
        raise CtmriInputError(file, f"decoded pixel data has shape {stored.shape}, expected "
                                    f"{'NumberOfFrames x ' if multi else ''}Rows x Columns "
                                    f"{expected}")
    return stored


def _padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Stored pixels that are padding (PixelPaddingValue [.. PixelPaddingRangeLimit])."""
    value = ds.get("PixelPaddingValue")
    if value in (None, "") or not np.issubdtype(stored.dtype, np.integer):
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    bits = int(ds.get("BitsAllocated", stored.dtype.itemsize * 8) or 16)
    info = np.iinfo(stored.dtype)

    def as_stored(v) -> int:  # the same bit pattern in the stored type
        v = int(v)
        if v < info.min:
            v += 1 << bits
        elif v > info.max:
            v -= 1 << bits
        return v

    low = as_stored(value)
    high = low if limit in (None, "") else as_stored(limit)
    low, high = min(low, high), max(low, high)
    return (stored >= low) & (stored <= high)


def _physical_values(item: _Slice, stored: np.ndarray):
    """``(values float32, (slope, intercept), padding mask or None)`` of one slice."""
    file, ds = item.file, item.ds
    slope_value, intercept_value = item.slope, item.intercept
    missing = [name for name, value in (("RescaleSlope", slope_value),
                                        ("RescaleIntercept", intercept_value))
               if value in (None, "")]
    if missing and modality_from_dicom(ds.get("Modality")) == "ct":
        where = "" if item.frame is None else f" ({item.label})"
        raise CtmriInputError(file, f"is a CT image without {' and '.join(missing)}{where}; its "
                                    "Hounsfield units cannot be computed")
    slope = 1.0 if slope_value in (None, "") else float(slope_value)
    intercept = 0.0 if intercept_value in (None, "") else float(intercept_value)
    values = stored.astype(np.float64) * slope + intercept
    padded = _padding_mask(ds, stored)
    if padded is not None and padded.any():
        values[padded] = 0.0  # replaced by air once the whole volume is known
    check_finite(values, file, what="the rescaled image")
    return values.astype(np.float32), (slope, intercept), padded


def _apply_padding(path: Path, ds: Dataset, data: np.ndarray, padded: list, modality: str | None):
    """Set padded voxels (in place) to air; return ``meta["padding"]``."""
    if all(p is None for p in padded):
        return None
    mask = np.stack([np.zeros(data.shape[1:], bool) if p is None else p for p in padded])
    count = int(mask.sum())
    if modality == "ct":
        fill = PADDING_AIR_HU
    else:
        rest = data[~mask]
        fill = float(min(0.0, rest.min())) if rest.size else 0.0
    data[mask] = fill
    info = {"value": ds.get("PixelPaddingValue"), "range_limit": ds.get("PixelPaddingRangeLimit"),
            "voxels": count, "fill": fill}
    info = {k: (int(v) if k in ("value", "range_limit") and v not in (None, "") else v)
            for k, v in info.items()}
    if count:
        limit = "" if info["range_limit"] is None else f"..{info['range_limit']}"
        warnings.warn(f"{path}: {count} padded voxel(s) (PixelPaddingValue {info['value']}"
                      f"{limit}, outside the scanned field of view) set to "
                      f"{fill:g}{' HU (air)' if modality == 'ct' else ' (background)'}",
                      CtmriInputWarning, stacklevel=3)
    return info


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
    return {"affine": affine, "orientation": np.concatenate([row_cosines, col_cosines]),
            "normal": np.cross(row_cosines, col_cosines), "origin": origin,
            "slice_step": slice_vec, "pixel_spacing": (row_spacing, col_spacing)}


def _positions_for_writing(volume: Volume, reference: Volume | None, geometry: dict,
                           out_dir: Path) -> tuple[np.ndarray, list[float]]:
    """ImagePositionPatient (LPS mm, ``(S, 3)``) and SliceThickness (mm) of every slice.

    The volume's own ``meta["slice_positions"]`` when it has them; else the reference's when the
    reference has as many slices and the same affine (the volume was computed on the
    reference's grid, as ``ctmri translate`` does); else the affine's even grid.
    """
    num_slices = int(np.shape(volume.data)[0])
    default_thickness = abs(float(volume.spacing[0]))
    candidates = [volume]
    if reference is not None and np.shape(reference.data)[0] == num_slices and np.allclose(
            np.asarray(reference.affine, np.float64), np.asarray(volume.affine, np.float64),
            rtol=0, atol=1e-6):
        candidates.append(reference)
    for source in candidates:
        positions = (source.meta or {}).get("slice_positions")
        if positions is None:
            continue
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (num_slices, 3) or not np.isfinite(positions).all():
            raise CtmriInputError(out_dir, f"cannot write: meta['slice_positions'] must be a "
                                           f"finite ({num_slices}, 3) array (LPS mm), got shape "
                                           f"{positions.shape}")
        thickness = list(source.meta.get("slice_thickness") or [])
        if len(thickness) != num_slices:
            thickness = [None] * num_slices
        return positions, [default_thickness if t is None else abs(float(t)) for t in thickness]
    return (affine_slice_positions_lps(geometry["affine"], num_slices),
            [default_thickness] * num_slices)


def write_dicom_series(volume: Volume, out_dir: str | os.PathLike, *, modality: str,
                       reference: Volume | None = None, overwrite: bool = False) -> Path:
    """Write ``volume`` as a new single-frame DICOM series (one file per slice) in ``out_dir``.

    Args:
        volume: ``data`` in HU for ``modality="ct"`` or MR signal for ``"mri"``; geometry from
            its ``affine`` (ImageOrientationPatient, PixelSpacing, and ImagePositionPatient on
            the affine's even grid) and ``spacing[0]`` (SliceThickness). When the volume (or,
            with the same slice count and affine, the reference) has
            ``meta["slice_positions"]`` (LPS mm), each slice is written at exactly that
            ImagePositionPatient (uneven spacing, gantry tilt) and with its recorded
            ``meta["slice_thickness"]``.
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
    positions, thickness = _positions_for_writing(volume, reference, geometry, out_dir)
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
            position = positions[k]
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
            ds.SliceLocation = _ds(position @ geometry["normal"])
            ds.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing"]]
            ds.SliceThickness = _ds(thickness[k])
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

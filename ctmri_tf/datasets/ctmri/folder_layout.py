"""Reading a user's ``manual_dir`` for the ``folder`` configs of the tfds ``ctmri`` builder.

Layout (names are case-sensitive)::

    manual_dir/
      ct/<subject>/    one CT volume per subject folder
      mri/<subject>/   one MRI volume per subject folder

A subject folder holds exactly one of

* a DICOM series (one file per slice, any file names; the Modality tag must be CT under ``ct/``
  and MR under ``mri/``),
* one NIfTI file (``*.nii`` or ``*.nii.gz``; CT in HU, MRI in scanner signal),
* PNG/JPEG/TIFF slices, one per file, in natural file-name order (CT as 16-bit HU + 1024, or 8-bit
  spanning the CT window [-1024, 3000] HU; MRI as raw values).

Optional body masks ({0, 1}, nonzero = body):

* ``mask.nii.gz`` (or ``mask.nii``) beside a NIfTI file or a DICOM series, on the image's voxel
  grid (same shape);
* for slices: a ``masks/`` subfolder with one image per slice with the same stem
  (``masks/slice_7.png`` for ``slice_7.png``), or a Labelme ``.json`` beside every slice with the
  same stem (``slice_7.json``; drawn shapes are the body).

Without one, :func:`ctmri_tf.body_mask.body_mask` computes the mask.

A subject present in both ``ct/`` and ``mri/`` (same folder name) is a registered pair: both
volumes must have the same shape. Subjects are split into train/validation/test by sorted subject
id (see :func:`split_subject_ids`), never by slice.

Every problem raises :class:`ctmri_tf.errors.CtmriInputError` naming the file or folder.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pydicom

from ctmri_tf import body_mask, intensity, phantom
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io.annotations import labelme_to_mask
from ctmri_tf.io.dicom import is_dicom_file, read_dicom
from ctmri_tf.io.image2d import (IMAGE_SUFFIXES, image_files, is_image_path, read_mask_image,
                                 read_png_series)
from ctmri_tf.io.nifti import is_nifti_path, read_nifti
from ctmri_tf.io.volume import Volume, modality_from_dicom

MODALITY_FOLDERS = {"ct": "ct", "mri": "mri"}
"""Top-level folder name -> modality."""
MASK_NIFTI_NAMES = ("mask.nii.gz", "mask.nii")
MASKS_FOLDER = "masks"
LABELME_SUFFIX = ".json"
AFFINE_TOLERANCE_MM = 0.01
"""How far (mm) a mask NIfTI's voxel-to-world affine may be from its image's."""

KIND_DICOM, KIND_NIFTI, KIND_SLICES = "dicom", "nifti", "slices"
MASK_NIFTI, MASK_FOLDER, MASK_LABELME, MASK_AUTO = "nifti", "masks_folder", "labelme", "auto"

LAYOUT_HELP = ("expected manual_dir/ct/<subject>/ and/or manual_dir/mri/<subject>/ (lower case), "
               "each subject folder holding a DICOM series, one NIfTI file or PNG/TIFF slices")


@dataclasses.dataclass(frozen=True)
class SubjectFolder:
    """One subject's volume of one modality, as found on disk (nothing read yet).

    Attributes:
        subject_id: the subject folder's name.
        modality: ``"ct"`` or ``"mri"`` (from the top-level folder).
        folder: the subject folder.
        kind: :data:`KIND_DICOM`, :data:`KIND_NIFTI` or :data:`KIND_SLICES`.
        image_path: the NIfTI file (NIfTI) or the folder (DICOM series, slices).
        mask_kind: :data:`MASK_NIFTI`, :data:`MASK_FOLDER`, :data:`MASK_LABELME` or
            :data:`MASK_AUTO`.
        mask_path: the mask NIfTI, the ``masks/`` folder, the subject folder (Labelme JSON
            beside the slices) or ``None`` (automatic mask).
    """

    subject_id: str
    modality: str
    folder: Path
    kind: str
    image_path: Path
    mask_kind: str
    mask_path: Path | None


@dataclasses.dataclass
class ModalityVolume:
    """One subject's volume of one modality, read and ready to become examples.

    Attributes:
        subject_id: the subject folder's name.
        modality: ``"ct"`` or ``"mri"``.
        image: float32 ``(slices, rows, cols)`` in physical units: HU for CT, MR signal for MRI.
        mask: uint8 ``(slices, rows, cols)`` body mask in {0, 1}.
        pixel_spacing: mm ``(row, col)``.
        intensity_range: physical ``(low, high)`` mapping to [-1, 1]: the CT window in HU
            (:data:`ctmri_tf.intensity.CT_WINDOW_HU`) or the volume's MRI percentiles
            (:func:`ctmri_tf.intensity.fit_mri_scale` inside the body mask).
        source: the subject folder.
        mask_source: where the mask came from (a file or folder, or ``"automatic"``).
    """

    subject_id: str
    modality: str
    image: np.ndarray
    mask: np.ndarray
    pixel_spacing: tuple[float, float]
    intensity_range: tuple[float, float]
    source: Path
    mask_source: str


def _visible(entries) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _stem(path: Path) -> str:
    """File name without its (image / JSON) suffix: ``slice_7.png`` -> ``slice_7``."""
    return path.stem


def check_manual_dir(manual_dir: str | os.PathLike) -> list[Path]:
    """Check the top level of ``manual_dir`` and return its modality folders.

    Raises:
        CtmriInputError: ``manual_dir`` is missing, not a folder or empty, has neither ``ct/``
            nor ``mri/``, or has another top-level folder (``CT/``, ``mr/``...: the expected
            names are ``ct`` and ``mri``). Files at the top level (a README) are ignored.
    """
    manual_dir = Path(manual_dir)
    if not manual_dir.exists():
        raise CtmriInputError(manual_dir, f"manual_dir does not exist; {LAYOUT_HELP}")
    if not manual_dir.is_dir():
        raise CtmriInputError(manual_dir, f"manual_dir is not a folder; {LAYOUT_HELP}")
    entries = _visible(manual_dir.iterdir())
    if not entries:
        raise CtmriInputError(manual_dir, f"manual_dir is empty; {LAYOUT_HELP}")
    folders = [p for p in entries if p.is_dir()]
    for folder in folders:
        if folder.name not in MODALITY_FOLDERS:
            lowered = folder.name.lower()
            hint = (" (rename it to 'ct')" if lowered == "ct" else
                    " (rename it to 'mri')" if lowered in ("mri", "mr") else "")
            raise CtmriInputError(folder, f"unknown top-level folder{hint}; the only folders "
                                          f"allowed in manual_dir are 'ct' and 'mri'")
    if not folders:
        raise CtmriInputError(manual_dir, f"manual_dir has no 'ct' or 'mri' folder; {LAYOUT_HELP}")
    return folders


def _classify(folder: Path, subject_id: str, modality: str) -> SubjectFolder:
    """Find what a subject folder holds (format and mask source) without reading pixels.

    Files that are none of DICOM, NIfTI, image or Labelme JSON (a README, notes) are ignored, as
    the readers ignore them; mixing two image formats is an error.
    """
    entries = _visible(folder.iterdir())
    subfolders = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file()]
    masks_folder = folder / MASKS_FOLDER
    for sub in subfolders:
        if sub != masks_folder:
            raise CtmriInputError(sub, f"unexpected folder inside a subject folder; only a "
                                       f"'{MASKS_FOLDER}/' folder of slice masks may be there")
    mask_niftis = [p for p in files if p.name in MASK_NIFTI_NAMES]
    if len(mask_niftis) > 1:
        raise CtmriInputError(folder, "both mask.nii.gz and mask.nii; keep one")
    niftis = [p for p in files if is_nifti_path(p) and p.name not in MASK_NIFTI_NAMES]
    slices = [p for p in files if is_image_path(p)]
    jsons = [p for p in files if p.name.lower().endswith(LABELME_SUFFIX)]
    dicoms = [p for p in files if p not in niftis + slices + jsons + mask_niftis
              and is_dicom_file(p)]
    formats = [(name, found) for name, found in (("NIfTI", niftis), ("image", slices),
                                                 ("DICOM", dicoms)) if found]
    if not formats:
        what = "only a mask" if mask_niftis else "Labelme JSON but no image slices" if jsons \
            else "no DICOM series, NIfTI file or PNG/TIFF slices"
        raise CtmriInputError(folder, f"subject folder is empty: it holds {what}")
    if len(formats) > 1:
        (name_a, files_a), (name_b, files_b) = formats[:2]
        raise CtmriInputError(folder, f"mixes {name_a} ({files_a[0].name}) and {name_b} "
                                      f"({files_b[0].name}) files; a subject folder holds one "
                                      f"volume in one format")
    if niftis:
        if len(niftis) > 1:
            raise CtmriInputError(folder, f"{len(niftis)} NIfTI files "
                                          f"({', '.join(p.name for p in niftis)}); a subject "
                                          f"folder holds one volume (a body mask is 'mask.nii.gz')")
        kind, image_path = KIND_NIFTI, niftis[0]
    elif slices:
        if mask_niftis:
            raise CtmriInputError(mask_niftis[0], "a NIfTI mask goes with a NIfTI or DICOM "
                                                  "volume; for slices use a 'masks/' folder or "
                                                  "Labelme JSON")
        kind, image_path = KIND_SLICES, folder
    else:
        kind, image_path = KIND_DICOM, folder
    if jsons and kind != KIND_SLICES:
        raise CtmriInputError(jsons[0], "Labelme JSON only goes beside PNG/TIFF slices")
    if subfolders and kind != KIND_SLICES:
        raise CtmriInputError(masks_folder, "a 'masks/' folder only goes with PNG/TIFF slices; "
                                            "for a volume use mask.nii.gz")

    if mask_niftis:
        mask_kind, mask_path = MASK_NIFTI, mask_niftis[0]
    elif kind == KIND_SLICES and subfolders:
        if jsons:
            raise CtmriInputError(folder, f"both a '{MASKS_FOLDER}/' folder and Labelme JSON; "
                                          f"keep one source of body masks")
        mask_kind, mask_path = MASK_FOLDER, masks_folder
    elif kind == KIND_SLICES and jsons:
        image_stems = {_stem(p) for p in slices}
        json_stems = {_stem(p) for p in jsons}
        for path in image_files(folder):
            if _stem(path) not in json_stems:
                raise CtmriInputError(path, f"has no Labelme annotation {_stem(path)}.json while "
                                            f"other slices of this subject have one; annotate "
                                            f"every slice or none")
        for path in jsons:
            if _stem(path) not in image_stems:
                raise CtmriInputError(path, "Labelme annotation with no slice of the same name")
        mask_kind, mask_path = MASK_LABELME, folder
    else:
        mask_kind, mask_path = MASK_AUTO, None
    return SubjectFolder(subject_id, modality, folder, kind, image_path, mask_kind, mask_path)


def scan_manual_dir(manual_dir: str | os.PathLike) -> dict[str, dict[str, SubjectFolder]]:
    """Check the layout of ``manual_dir`` and list its subjects (no pixel data is read).

    Returns:
        ``{subject_id: {modality: SubjectFolder}}`` sorted by subject id; a subject has one or
        both of ``"ct"`` and ``"mri"``.

    Raises:
        CtmriInputError: the layout problems of :func:`check_manual_dir`, a file directly in
            ``ct/``/``mri/`` (subjects are folders), a modality folder with no subjects, an empty
            subject folder, more than one volume in a subject folder, a stray subfolder, or
            masks that do not fit the format (Labelme JSON for some slices only...).
    """
    subjects: dict[str, dict[str, SubjectFolder]] = {}
    for modality_folder in check_manual_dir(manual_dir):
        modality = MODALITY_FOLDERS[modality_folder.name]
        entries = _visible(modality_folder.iterdir())
        if not entries:
            raise CtmriInputError(modality_folder, "no subject folders; put each subject's "
                                                   "volume in its own folder")
        for entry in entries:
            if not entry.is_dir():
                raise CtmriInputError(entry, f"a file directly in {modality_folder.name}/; each "
                                             f"subject's volume goes in its own folder "
                                             f"({modality_folder.name}/<subject>/...)")
            subjects.setdefault(entry.name, {})[modality] = _classify(entry, entry.name, modality)
    return dict(sorted(subjects.items()))


def split_subject_ids(subject_ids) -> dict[str, list[str]]:
    """Split subjects about 80/10/10 into train/validation/test, deterministically.

    Ids are sorted and split by position exactly like the phantom subjects
    (:func:`ctmri_tf.phantom.subject_split`): the last ~10 % are test, the ~10 % before them
    validation (rounded half up, at least one each from 3 subjects on: 3 subjects -> 1/1/1,
    10 -> 8/1/1, 25 -> 19/3/3), the rest train; 2 subjects -> train and test; 1 -> train.
    Empty splits are left out (tfds cannot write a split without examples).

    Returns:
        ``{split: [subject ids]}`` with only non-empty splits, in train/validation/test order.
    """
    ids = sorted(subject_ids)
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for position, subject_id in enumerate(ids):
        splits[phantom.subject_split(position, len(ids))].append(subject_id)
    return {name: members for name, members in splits.items() if members}


def _check_dicom_modality(volume: Volume, entry: SubjectFolder) -> None:
    """The DICOM Modality tag must agree with the folder; name the first file that does not.

    A series of another modality (e.g. ``OT``, secondary capture) takes the folder's, as in
    :func:`ctmri_tf.io.read_volume`.
    """
    if volume.modality is None or volume.modality == entry.modality:
        return
    files = [Path(p) for p in volume.meta.get("files", ())] or [entry.folder]
    for path in files:
        tag = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get(
            "Modality") if path.is_file() else None
        found = modality_from_dicom(tag)
        if found is not None and found != entry.modality:
            raise CtmriInputError(path, f"DICOM Modality is {tag!r} ({found.upper()}) but the "
                                        f"file is under {entry.modality}/; move the series to "
                                        f"{found}/{entry.subject_id}/")
    raise CtmriInputError(entry.folder, f"DICOM series has modality {volume.modality!r} but is "
                                        f"under {entry.modality}/")


def _named(path: Path, function, *args, **kwargs):
    """Call ``function``; give a path-less CtmriInputError (body mask, MRI scale) ``path``."""
    try:
        return function(*args, **kwargs)
    except CtmriInputError as error:
        if error.path is not None:
            raise
        raise CtmriInputError(path, error.problem) from error


def _read_image(entry: SubjectFolder) -> Volume:
    if entry.kind == KIND_NIFTI:
        return read_nifti(entry.image_path, modality=entry.modality)
    if entry.kind == KIND_SLICES:
        return read_png_series(entry.folder, modality=entry.modality)
    volume = read_dicom(entry.folder)
    _check_dicom_modality(volume, entry)
    return volume


def _slice_files(volume: Volume, entry: SubjectFolder) -> list[Path]:
    files = [Path(p) for p in volume.meta.get("files", ())]
    if len(files) != volume.shape[0]:
        raise CtmriInputError(entry.folder, "internal: the slice reader did not report one file "
                                            "per slice")
    return files


def _read_mask(entry: SubjectFolder, volume: Volume) -> tuple[np.ndarray, str]:
    """The body mask of ``volume`` (uint8 {0, 1}, same shape) and where it came from."""
    shape = volume.shape
    if entry.mask_kind == MASK_AUTO:
        mask = _named(entry.folder, body_mask.body_mask, volume.data, entry.modality)
        return mask.astype(np.uint8), "automatic"
    if entry.mask_kind == MASK_NIFTI:
        mask_volume = read_nifti(entry.mask_path, modality=None)
        if mask_volume.shape != shape:
            raise CtmriInputError(entry.mask_path, f"mask is {mask_volume.shape} (slices, rows, "
                                                   f"cols) but its image {entry.image_path} is "
                                                   f"{shape}; the mask must be on the image's grid")
        if not np.allclose(mask_volume.affine, volume.affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
            raise CtmriInputError(entry.mask_path, f"mask has the shape of its image "
                                                   f"{entry.image_path} but another position or "
                                                   f"orientation (voxel-to-mm affines differ by "
                                                   f"more than {AFFINE_TOLERANCE_MM} mm); save the "
                                                   f"mask on the image's grid")
        return (mask_volume.data > 0).astype(np.uint8), str(entry.mask_path)
    masks = np.zeros(shape, np.uint8)
    for k, image_file in enumerate(_slice_files(volume, entry)):
        if entry.mask_kind == MASK_FOLDER:
            candidates = [entry.mask_path / f"{_stem(image_file)}{suffix}"
                          for suffix in IMAGE_SUFFIXES]
            mask_file = next((p for p in candidates if p.is_file()), None)
            if mask_file is None:
                raise CtmriInputError(image_file, f"has no mask in {entry.mask_path} (expected "
                                                  f"{candidates[0].name}); give every slice a "
                                                  f"mask or remove the folder")
            mask = read_mask_image(mask_file)
        else:
            mask_file = image_file.with_name(_stem(image_file) + LABELME_SUFFIX)
            mask = labelme_to_mask(mask_file, image_shape=shape[1:])
        if mask.shape != shape[1:]:
            raise CtmriInputError(mask_file, f"mask is {mask.shape[1]}x{mask.shape[0]} pixels but "
                                             f"its slice {image_file} is {shape[2]}x{shape[1]}")
        masks[k] = mask
    return masks, str(entry.mask_path)


def load_subject_folder(entry: SubjectFolder) -> ModalityVolume:
    """Read one subject folder: image in physical units, body mask, spacing, intensity range.

    Raises:
        CtmriInputError: anything the readers reject, a DICOM series whose Modality disagrees with
            its folder (naming the first such file), a mask of another size than its image (naming
            both files).
    """
    volume = _read_image(entry)
    image = np.asarray(volume.data, dtype=np.float32)
    mask, mask_source = _read_mask(entry, volume)
    if entry.modality == "ct":
        value_range = tuple(float(v) for v in intensity.CT_WINDOW_HU)
    else:
        scale = _named(entry.folder, intensity.fit_mri_scale, image,
                       mask=mask if mask.any() else None)
        value_range = (float(scale.low), float(scale.high))
    return ModalityVolume(
        subject_id=entry.subject_id, modality=entry.modality, image=image, mask=mask,
        pixel_spacing=(float(volume.spacing[1]), float(volume.spacing[2])),
        intensity_range=value_range, source=entry.folder, mask_source=mask_source)


def check_registered(ct: ModalityVolume, mri: ModalityVolume) -> None:
    """A CT and an MRI of one subject used as a pair must be on the same grid (same shape).

    Raises:
        CtmriInputError: naming both subject folders and suggesting the ``folder_unpaired``
            config when the shapes differ.
    """
    if ct.image.shape != mri.image.shape:
        raise CtmriInputError(ct.source, f"CT is {ct.image.shape} (slices, rows, cols) but the "
                                         f"MRI of the same subject, {mri.source}, is "
                                         f"{mri.image.shape}; a pair must be registered (resampled "
                                         f"onto one grid). Register them, or build the "
                                         f"'folder_unpaired' config to use them as unpaired data")


"""2-D grayscale images (PNG, JPEG, TIFF) via OpenCV, and folders of them as a volume.

Stored values -> physical units (:func:`read_image`):

* CT, 16-bit (uint16): the file stores ``HU + 1024``, so HU = stored - 1024 (-1024 HU is 0).
* CT, 8-bit (uint8): 0..255 maps linearly onto the CT window [-1024, 3000] HU
  (HU = -1024 + stored * 4024 / 255); 8 bits cannot hold HU exactly.
* MRI or unknown modality: the stored values, as float32 (MR signal, arbitrary scale).
* Float (32/64-bit) and signed-integer TIFFs: the stored values, whatever the modality (a CT
  stored this way is taken to hold HU already).

Colour files are accepted when they are gray in disguise: 3- or 4-channel images whose colour
channels are identical (any alpha channel is dropped). Anything else in colour is an error.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import natsort
import numpy as np

from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io.volume import Volume, check_finite, check_modality

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# 8-bit CT images: 0 -> -1024 HU, 255 -> 3000 HU.
CT_8BIT_WINDOW_HU = (-1024.0, 3000.0)
# 16-bit CT images store HU + this offset.
CT_16BIT_OFFSET_HU = 1024.0


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name ends in .png, .jpg, .jpeg, .tif or .tiff (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _read_gray(path: Path) -> np.ndarray:
    """The stored gray values of one image file, ``(rows, cols)``, in the file's dtype."""
    if not path.is_file():
        raise CtmriInputError(path, "does not exist" if not path.exists() else "is not a file")
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            pages = cv2.imcount(str(path))
        except cv2.error:
            pages = 1  # imread below reports an unreadable file
        if pages > 1:
            raise CtmriInputError(path, f"is a multi-page TIFF ({pages} pages); save one image "
                                        "per file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CtmriInputError(path, "cannot be read as an image (not a PNG/JPEG/TIFF OpenCV can "
                                    "decode, or truncated)")
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels in (3, 4):
            colour = image[:, :, :3]
            if not (np.array_equal(colour[:, :, 0], colour[:, :, 1])
                    and np.array_equal(colour[:, :, 0], colour[:, :, 2])):
                raise CtmriInputError(path, "is a colour image (its colour channels differ); "
                                            "medical images must be grayscale")
            image = colour[:, :, 0]
        else:
            raise CtmriInputError(path, f"has {channels} channels; expected a grayscale image")
    if image.ndim != 2:
        raise CtmriInputError(path, f"is not a 2-D image (shape {image.shape})")
    if np.issubdtype(image.dtype, np.floating):
        check_finite(image, path)
    return np.ascontiguousarray(image)


def read_image(path: str | os.PathLike, *, modality: str | None = None) -> np.ndarray:
    """Read one 8/16-bit (or float TIFF) grayscale image in physical units.

    Args:
        path: a PNG, JPEG or TIFF file (decoded by OpenCV, ``IMREAD_UNCHANGED``). Only read.
        modality: ``"ct"``, ``"mri"`` or ``None``; decides the conversion (module docstring).

    Returns:
        float32 ``(rows, cols)``: HU for CT (16-bit: stored - 1024; 8-bit: -1024 + stored *
        4024 / 255), the stored values for MRI/unknown and for float or signed TIFFs.

    Raises:
        CtmriInputError: naming the file when it is missing, unreadable or not an image, true
            colour, multi-page, or holds NaN/Inf.
    """
    path = Path(path)
    modality = check_modality(modality)
    stored = _read_gray(path)
    values = stored.astype(np.float32)
    if modality == "ct":
        if stored.dtype == np.uint16:
            values = (stored.astype(np.float64) - CT_16BIT_OFFSET_HU).astype(np.float32)
        elif stored.dtype == np.uint8:
            low, high = CT_8BIT_WINDOW_HU
            values = (low + stored.astype(np.float64) * ((high - low) / 255.0)).astype(np.float32)
    return values


def read_mask_image(path: str | os.PathLike) -> np.ndarray:
    """Read a mask image: uint8 ``(rows, cols)`` in {0, 1}, 1 wherever the stored value is nonzero.

    Raises:
        CtmriInputError: as :func:`read_image` (a colour label image is an error).
    """
    return (_read_gray(Path(path)) != 0).astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a 2-D uint8 or uint16 array as a grayscale PNG, atomically, values unchanged.

    Args:
        path: output file ending in ``.png``.
        image: uint8 or uint16 ``(rows, cols)`` stored values (for CT the 16-bit convention is
            ``HU + 1024``, which :func:`read_image` undoes).
        overwrite: replace an existing ``path``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        CtmriInputError: ``path`` exists and not ``overwrite``; not a ``.png`` name; ``image`` not
            2-D uint8/uint16; OpenCV failed to encode it.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CtmriInputError(path, "PNG output must end in .png")
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise CtmriInputError(path, f"cannot write a {image.dtype} array of shape {image.shape} "
                                    "as PNG; expected a 2-D uint8 or uint16 array")
    with atomic_output(path, overwrite=overwrite) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(image)):
            raise CtmriInputError(path, "OpenCV could not encode the PNG")
    return path


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Visible PNG/JPEG/TIFF files directly in ``folder``, in natural name order
    (``slice_2`` before ``slice_10``)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and is_image_path(p)]
    return natsort.natsorted(files, key=lambda p: p.name)


def image_volume(files: list[Path], source: str | os.PathLike, *, modality: str | None,
                 spacing: tuple[float, float, float] | None = None) -> Volume:
    """Stack 2-D images (in the given order) into a :class:`Volume` (see :func:`read_png_series`).
    """
    modality = check_modality(modality)
    slices = []
    for file in files:
        image = read_image(file, modality=modality)
        if slices and image.shape != slices[0].shape:
            raise CtmriInputError(file, f"is {image.shape[0]} x {image.shape[1]} but "
                                        f"{files[0].name} is {slices[0].shape[0]} x "
                                        f"{slices[0].shape[1]}; all slices must have one size")
        slices.append(image)
    spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise CtmriInputError(None, f"spacing must be three positive mm values (slice, row, col), "
                                    f"got {spacing}")
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    return Volume(data=np.stack(slices).astype(np.float32, copy=False), modality=modality,
                  spacing=spacing, affine=affine, source=str(source),
                  meta={"files": [str(f) for f in files]})


def read_png_series(folder: str | os.PathLike, *, modality: str | None,
                    spacing: tuple[float, float, float] | None = None) -> Volume:
    """Read every PNG/JPEG/TIFF in ``folder`` (natural name order) as the slices of one volume.

    Args:
        folder: images directly in it (hidden files and other files are ignored). Only read.
        modality: ``"ct"``, ``"mri"`` or ``None``; each slice is converted as by
            :func:`read_image`.
        spacing: mm ``(slice, row, col)``; images do not record it, so it defaults to
            ``(1, 1, 1)``.

    Returns:
        A :class:`Volume` ``(slices, rows, cols)`` float32 in physical units with affine
        ``diag(col, row, slice spacing, 1)`` (identity by default) and ``meta["files"]``.

    Raises:
        CtmriInputError: the folder is missing or holds no images (naming the folder); a slice of
            another shape (naming that file); any error of :func:`read_image`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CtmriInputError(folder, "is not a folder" if folder.exists() else "does not exist")
    files = image_files(folder)
    if not files:
        raise CtmriInputError(folder, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return image_volume(files, folder, modality=modality, spacing=spacing)

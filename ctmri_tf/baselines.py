"""Baseline translators: the figures a trained model has to beat to mean anything.

Both follow the translator protocol of :mod:`ctmri_tf.evaluate`: they take source images in model
space [-1, 1] and return target images in [-1, 1], which the evaluation maps into the target's
physical units with the target volume's ``intensity_range`` (CT window in HU, MRI percentile
scale).

* :func:`identity_translator`: the output is the input. An MRI's [-1, 1] image is read as a CT
  [-1, 1] image (so MRI signal at its 0.5th percentile becomes -1024 HU and at its 99.5th
  percentile 3000 HU) and a CT's as an MRI's. It measures how much the metrics reward merely
  reproducing the anatomy.
* :class:`HistogramMatchingTranslator`: ``skimage.exposure.match_histograms`` of the body voxels
  of each source volume onto the distribution of the *target* modality's body voxels in the
  *training* split; the background (outside the body) becomes the median of the target's
  training background (air: about -1000 HU in CT, the noise floor in MRI). It measures what a
  global monotonic intensity mapping achieves; it never sees a test subject's own target image.
  (The background is not histogram-matched: a masked input's background is one constant value,
  which ``match_histograms`` would send to the top of the reference distribution.)

The training-split distribution is accumulated by :class:`HistogramAccumulator` as histograms
in model space (:data:`NUM_BINS` bins over [-1, 1]: 0.98 HU per bin for the default CT window)
of every training volume mapped with its own ``intensity_range``; it is handed to
``match_histograms`` as :data:`NUM_QUANTILES` equally spaced quantiles of that histogram.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Mapping

import numpy as np
from skimage.exposure import match_histograms

from ctmri_tf import intensity
from ctmri_tf.errors import CtmriInputError

MODALITIES = ("ct", "mri")
NUM_BINS = 4096
"""Histogram bins over model space [-1, 1] (bin width 2 / 4096)."""
NUM_QUANTILES = 4096
"""Quantiles of a reference histogram given to ``match_histograms`` as its reference sample."""
REGIONS = ("body", "background")


def _check_modality(name: Any) -> str:
    if isinstance(name, bytes):
        name = name.decode()
    if isinstance(name, (int, np.integer)) and 0 <= int(name) < len(MODALITIES):
        return MODALITIES[int(name)]
    if name not in MODALITIES:
        raise CtmriInputError(None, f"unknown modality {name!r}: expected one of {MODALITIES}")
    return name


def _as_numpy(x: Any) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def _body(mask: Any, shape: tuple) -> np.ndarray:
    """Boolean body mask shaped like the image (a trailing channel axis of 1 may differ)."""
    body = _as_numpy(mask) != 0
    if body.shape != shape:
        without_channel = lambda s: s[:-1] if s and s[-1] == 1 else s  # noqa: E731
        if without_channel(tuple(body.shape)) != without_channel(tuple(shape)):
            raise CtmriInputError(None, f"body mask shape {body.shape} does not match the image "
                                        f"shape {shape}")
        body = body.reshape(shape)
    return body


# ----------------------------------------------------------------------------- identity

def identity_translator(images_unit: Any, source: str, target: str) -> np.ndarray:
    """The identity baseline: return the source images unchanged.

    Args:
        images_unit: ``(B, H, W, 1)`` source images in [-1, 1].
        source, target: ``"ct"`` / ``"mri"`` (checked, otherwise unused).

    Returns:
        float32 ``(B, H, W, 1)`` equal to the input: read as a target image in [-1, 1].
    """
    _check_modality(source), _check_modality(target)
    return np.asarray(_as_numpy(images_unit), np.float32).copy()


identity_translator.cycle_is_trivial = True  # translate-and-back returns the input itself


# ----------------------------------------------------------------------------- references

@dataclasses.dataclass(frozen=True)
class ReferenceHistograms:
    """Voxel histograms of each modality in model space [-1, 1], inside and outside the body.

    Attributes:
        counts: ``{(modality, region): int64 (NUM_BINS,)}`` for region ``"body"`` /
            ``"background"``; a missing key means no voxel was seen.
        source: where the voxels came from (e.g. ``"ctmri/synthetic train split"``), for reports.
    """

    counts: Mapping[tuple[str, str], np.ndarray]
    source: str = ""

    @staticmethod
    def bin_edges() -> np.ndarray:
        return np.linspace(-1.0, 1.0, NUM_BINS + 1)

    def voxels(self, modality: str, region: str) -> int:
        counts = self.counts.get((_check_modality(modality), region))
        return 0 if counts is None else int(counts.sum())

    def median(self, modality: str, region: str) -> float:
        """The median voxel value in [-1, 1] (linear within its bin)."""
        return float(self.quantiles(modality, region, num=2)[0])

    def quantiles(self, modality: str, region: str, num: int = NUM_QUANTILES) -> np.ndarray:
        """Values in [-1, 1] at the cumulative fractions ``1/num, 2/num, ..., 1`` of the
        histogram (linear within a bin), i.e. an equally weighted sample of the distribution in
        the form ``match_histograms`` expects (its template CDF at value ``k`` is ``(k+1)/num``).

        Raises:
            CtmriInputError: no voxel of that modality and region was accumulated.
        """
        modality = _check_modality(modality)
        counts = self.counts.get((modality, region))
        if counts is None or counts.sum() == 0:
            raise CtmriInputError(None, f"the reference has no {modality} voxel in the "
                                        f"{region}; accumulate training {modality} volumes first")
        cdf = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)]) / counts.sum()
        edges = self.bin_edges()
        q = np.arange(1, num + 1, dtype=np.float64) / num
        # bin i holds the fractions (cdf[i], cdf[i + 1]]: never an empty bin
        i = np.clip(np.searchsorted(cdf, q, side="left") - 1, 0, NUM_BINS - 1)
        within = (q - cdf[i]) / np.maximum(cdf[i + 1] - cdf[i], 1e-300)
        return (edges[i] + np.clip(within, 0.0, 1.0) * (edges[i + 1] - edges[i])).astype(
            np.float32)


class HistogramAccumulator:
    """Accumulate :class:`ReferenceHistograms` from training volumes or slices, one at a time
    (a whole training split never needs to be in memory)."""

    def __init__(self, source: str = ""):
        self._counts: dict[tuple[str, str], np.ndarray] = {}
        self._source = source

    def add(self, image_unit: Any, mask: Any, modality: str) -> None:
        """Add the voxels of one image or volume.

        Args:
            image_unit: any shape, in model space [-1, 1] (values outside are clipped).
            mask: body mask of the same shape (nonzero = body).
            modality: ``"ct"`` / ``"mri"`` (or 0 / 1).
        """
        modality = _check_modality(modality)
        image = np.clip(_as_numpy(image_unit).astype(np.float64), -1.0, 1.0)
        body = _body(mask, image.shape)
        edges = ReferenceHistograms.bin_edges()
        for region, selected in (("body", image[body]), ("background", image[~body])):
            counts, _ = np.histogram(selected, bins=edges)
            key = (modality, region)
            self._counts[key] = self._counts.get(key, 0) + counts.astype(np.int64)

    def add_example(self, example: Mapping) -> None:
        """Add one raw example of the tfds ``ctmri`` dataset (``ctmri_tf.data.load``, as NumPy):
        its ``image`` (physical units) mapped to [-1, 1] with its own ``intensity_range``."""
        modality = _check_modality(int(_as_numpy(example["modality"])))
        value_range = _as_numpy(example["intensity_range"]).astype(np.float64)
        image = intensity.to_unit(_as_numpy(example["image"]).astype(np.float32), modality,
                                  tuple(value_range))
        self.add(image, example["mask"], modality)

    def result(self) -> ReferenceHistograms:
        return ReferenceHistograms({k: v.copy() for k, v in self._counts.items()}, self._source)


def reference_histograms(volumes: Iterable[tuple[str, Any, Any]], *,
                         source: str = "") -> ReferenceHistograms:
    """Reference histograms from ``(modality, image_unit, mask)`` items of the training split.

    Args:
        volumes: iterable of ``(modality, image in [-1, 1], body mask)``.
        source: a description of where they came from, kept for reports.
    """
    accumulator = HistogramAccumulator(source)
    for modality, image, mask in volumes:
        accumulator.add(image, mask, modality)
    return accumulator.result()


# ----------------------------------------------------------------------------- matching

class HistogramMatchingTranslator:
    """Histogram-matching baseline: map each source volume's intensities onto the training
    distribution of the target modality, inside the body and outside separately.

    It needs the whole subject volume and its body mask at once (the source histogram is the
    volume's), so it declares ``whole_volume = True``: the evaluation then calls it once per
    subject and direction as ``translator(volume_unit, source, target, mask=mask)``.

    Args:
        reference: histograms of the *training* split (never of the test subjects' targets).
    """

    whole_volume = True
    cycle_is_trivial = False

    def __init__(self, reference: ReferenceHistograms):
        self.reference = reference
        self._quantiles: dict[tuple[str, str], np.ndarray] = {}

    def _template(self, modality: str, region: str) -> np.ndarray:
        key = (modality, region)
        if key not in self._quantiles:
            self._quantiles[key] = self.reference.quantiles(modality, region)
        return self._quantiles[key]

    def __call__(self, images_unit: Any, source: str, target: str, *,
                 mask: Any = None) -> np.ndarray:
        """Translate one subject's source volume.

        Args:
            images_unit: ``(S, H, W, 1)`` (or ``(S, H, W)``) source volume in [-1, 1].
            source, target: ``"ct"`` / ``"mri"``.
            mask: the volume's body mask, same shape (nonzero = body); required.

        Returns:
            float32 array shaped like ``images_unit``, in [-1, 1]: body voxels carry the
            target's training body distribution, background voxels the median of its training
            background (-1 when the training data had no background voxel).
        """
        _check_modality(source)
        target = _check_modality(target)
        if mask is None:
            raise CtmriInputError(None, "histogram matching needs the body mask of the volume")
        image = np.asarray(_as_numpy(images_unit), np.float32)
        body = _body(mask, image.shape)
        out = np.full(image.shape, self._background(target), np.float32)
        if body.any():
            out[body] = match_histograms(image[body], self._template(target, "body"))
        return out

    def _background(self, modality: str) -> float:
        """Median of the training background of ``modality`` in [-1, 1] (-1 without one)."""
        if not self.reference.voxels(modality, "background"):
            return -1.0
        return float(self.reference.median(modality, "background"))


# ----------------------------------------------------------------------------- from a dataset

def reference_from_split(split: str = "train", *, config: str = "synthetic",
                         data_dir: str | os.PathLike | None = None) -> ReferenceHistograms:
    """Reference histograms of every slice of a built ``ctmri`` dataset split (both modalities,
    each slice mapped to [-1, 1] with its own ``intensity_range``), one slice at a time.

    Use the *training* split: the histogram-matching baseline must not see the evaluated
    subjects' targets.
    """
    import tensorflow_datasets as tfds

    from ctmri_tf import data

    accumulator = HistogramAccumulator(f"ctmri/{config} {split} split")
    for example in tfds.as_numpy(data.load(split, config=config, data_dir=data_dir,
                                           decode_counterpart=False)):
        accumulator.add_example(example)
    return accumulator.result()


def baseline_translators(reference: ReferenceHistograms | None) -> dict:
    """``{"identity": ..., "histogram matching": ...}`` (the latter only with a reference), in the
    order the comparison table lists them."""
    translators = {"identity": identity_translator}
    if reference is not None:
        translators["histogram matching"] = HistogramMatchingTranslator(reference)
    return translators

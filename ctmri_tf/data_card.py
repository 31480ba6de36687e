"""Data cards: what a model was trained on, carried by every export, checked against each input.

A :class:`DataCard` holds the training data's description (tfds ``ctmri`` config, anatomy,
modalities, MRI contrasts, model image size, a plain note on what the data is and is not) and
statistics over a sample of the ``train`` split (:func:`build_data_card`):

* in-plane pixel spacing, mm: ``(min, max)`` over the sample;
* body extent, mm: per slice, the rows x cols of the body mask's bounding box times the pixel
  spacing; the card keeps, per axis, the 5th percentile and the maximum over the sampled slices;
* intensity inside the body mask, per modality: the 25th / 50th / 75th percentiles of the pooled
  body voxels, in HU for CT and, for MRI, in the *scaled* signal ``(x - low) / (high - low)`` of
  each slice's volume scale (the example's ``intensity_range``: the 0.5 / 99.5 % percentiles
  inside the body, so 0..1 covers the body), which is what ``ctmri translate`` fits on an input.

``export.saved_model.export_run`` writes the card of the run's config into the export info
(``<version>/assets.extra/ctmri_export.json``, key ``"data_card"``; :func:`card_dict`).
``ctmri translate`` prints it (:func:`describe`, a few lines) and warns, one line each, when an
input is far from it (:func:`compare`): pixel spacing outside the trained range by more than a
factor :data:`SPACING_FACTOR`; the largest slice's body extent outside
``[p5 / (1 + m), max * (1 + m)]`` with ``m`` = :data:`EXTENT_MARGIN`; a body intensity percentile
more than :data:`INTENSITY_TOLERANCE` away from the trained one; a classifier confidence below
:data:`LOW_CONFIDENCE`.

The synthetic configs are head phantoms (:mod:`ctmri_tf.phantom`), and the card says so:
:data:`SYNTHETIC_NOTE`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ctmri_tf.errors import CtmriInputError

SAMPLE_SLICES = 128
"""Training slices (both modalities) the statistics are computed on, spread over the split."""
_CHUNK = 4
"""Consecutive slices read at each of the sample's positions."""
SPACING_FACTOR = 1.5
EXTENT_MARGIN = 0.25
INTENSITY_PERCENTILES = (25, 50, 75)
INTENSITY_TOLERANCE = {"ct": 150.0, "mri": 0.15}
"""HU for CT, scaled signal (the body's 0.5-99.5 % range = 0..1) for MRI."""
INTENSITY_UNITS = {"ct": "HU", "mri": "scaled signal [0, 1]"}
LOW_CONFIDENCE = 0.97
SYNTHETIC_NOTE = ("trained on synthetic head phantoms only (ctmri_tf.phantom); not validated on "
                  "patient data: do not use the results for diagnosis or treatment planning")
SYNTHETIC_ANATOMY = "head (synthetic phantom: scalp, skull, brain, CSF, sinuses, lesions)"
SYNTHETIC_V2_NOTE = ("trained on domain-randomised synthetic head phantoms only "
                     "(ctmri_tf.phantom_v2); not validated on patient data: do not use the "
                     "results for diagnosis or treatment planning")
SYNTHETIC_V2_ANATOMY = ("head and upper neck (synthetic phantom v2: scalp, skull with diploe, "
                        "folded cortex, ventricles, cerebellum, orbits, sinuses, nasal cavity, "
                        "mastoids, spine, lesions)")
FOLDER_NOTE = ("trained on the user's own data (ctmri/folder); its anatomy and MRI contrasts "
               "are not recorded by the dataset")


class OutOfDistributionWarning(UserWarning):
    """An input is far from what the model was trained on (:func:`compare`)."""


@dataclasses.dataclass(frozen=True)
class DataCard:
    """What a model was trained on (units in the field names).

    Attributes:
        dataset: ``"ctmri/<config name>"``.
        anatomy: e.g. :data:`SYNTHETIC_ANATOMY`, or ``"unknown (user data)"``.
        modalities: ``("ct", "mri")``.
        mri_contrasts: e.g. ``("T1-weighted spin echo (TR 500 ms, TE 15 ms), simulated",)``.
        image_size: the model's input size in pixels (slices are resized to it).
        pixel_spacing_mm: in-plane ``(min, max)`` over the sample, or None (no statistics).
        body_extent_mm: ``{"rows": (p5, max), "cols": (p5, max)}`` per-slice mask bounding
            box extents, or None.
        intensity: ``{modality: {"25": v, "50": v, "75": v}}`` body percentiles (HU / scaled
            signal, :data:`INTENSITY_UNITS`), or None.
        slices_sampled: training slices behind the statistics (0: none).
        note: one plain sentence on what the data is and is not (:data:`SYNTHETIC_NOTE`).
        statistics: ``""``, or why there are no statistics.
    """

    dataset: str
    anatomy: str
    modalities: tuple[str, ...]
    mri_contrasts: tuple[str, ...]
    image_size: int
    pixel_spacing_mm: tuple[float, float] | None = None
    body_extent_mm: dict | None = None
    intensity: dict | None = None
    slices_sampled: int = 0
    note: str = ""
    statistics: str = ""


# ----------------------------------------------------------------------------- building

def _describe_config(name: str) -> tuple[str, tuple[str, ...], str]:
    """``(anatomy, mri_contrasts, note)`` of a ctmri config name."""
    from ctmri_tf import phantom, phantom_v2
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import (SOURCE_SYNTHETIC,
                                                               SOURCE_SYNTHETIC_V2, known_config)

    try:
        source = known_config(name).source
    except CtmriInputError:
        return "unknown", ("unknown",), f"unknown dataset config {name!r}"
    if source == SOURCE_SYNTHETIC:
        sequence = phantom.MRI_SEQUENCE
        contrast = (f"T1-weighted spin echo (TR {sequence.tr_ms:g} ms, TE {sequence.te_ms:g} "
                    f"ms), simulated")
        return SYNTHETIC_ANATOMY, (contrast,), SYNTHETIC_NOTE
    if source == SOURCE_SYNTHETIC_V2:     # what the train split holds: the training domain
        d = phantom_v2.TRAINING_DOMAIN
        contrasts = {
            "spin_echo": f"T1-weighted spin echo (TR {d.spin_echo_tr_ms[0]:g}-"
                         f"{d.spin_echo_tr_ms[1]:g} ms, TE {d.spin_echo_te_ms[0]:g}-"
                         f"{d.spin_echo_te_ms[1]:g} ms), simulated",
            "spoiled_gre": f"T1-weighted spoiled gradient echo (TR {d.gre_tr_ms[0]:g}-"
                           f"{d.gre_tr_ms[1]:g} ms), simulated",
            "mprage": f"MPRAGE (TI {d.mprage_ti_ms[0]:g}-{d.mprage_ti_ms[1]:g} ms), simulated"}
        return (SYNTHETIC_V2_ANATOMY, tuple(contrasts[name] for name in d.sequences),
                SYNTHETIC_V2_NOTE)
    return "unknown (user data)", ("unknown",), FOLDER_NOTE


def _sample_split(builder, max_slices: int) -> str:
    """A tfds split expression of about ``max_slices`` train slices spread over the split."""
    total = builder.info.splits["train"].num_examples
    if total <= max_slices:
        return "train"
    chunks = max(1, max_slices // _CHUNK)
    starts = sorted({int(i * (total - _CHUNK) / max(1, chunks - 1)) for i in range(chunks)})
    return "+".join(f"train[{s}:{s + _CHUNK}]" for s in starts)


def slice_extents_mm(mask: np.ndarray, spacing_rc) -> np.ndarray:
    """``(n, 2)`` rows/cols bounding-box extents in mm of each non-empty slice of ``mask``
    ``(S, H, W)`` or ``(H, W)`` (pixel counts times the ``(row, col)`` spacing in mm)."""
    mask = np.asarray(mask) > 0
    if mask.ndim == 2:
        mask = mask[None]
    out = []
    for plane in mask:
        rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        if rows.size:
            out.append(((rows[-1] - rows[0] + 1) * float(spacing_rc[0]),
                        (cols[-1] - cols[0] + 1) * float(spacing_rc[1])))
    return np.asarray(out, np.float64).reshape(-1, 2)


def _scaled_mri(values: np.ndarray, value_range) -> np.ndarray:
    low, high = (float(v) for v in value_range)
    return (values - low) / max(high - low, 1e-12)


def _body_percentiles(values: np.ndarray) -> dict:
    return {str(q): float(v) for q, v in zip(INTENSITY_PERCENTILES,
                                             np.percentile(values, INTENSITY_PERCENTILES))}


def build_data_card(config, *, max_slices: int = SAMPLE_SLICES) -> DataCard:
    """The card of an experiment config's training data (``config.data``: dataset_config,
    data_dir, image_size), with statistics over about ``max_slices`` slices of its built
    ``train`` split; without statistics (``statistics`` says why) when the dataset is not built
    where the config says, so exporting never needs the data."""
    from ctmri_tf import data
    from ctmri_tf.io.volume import MODALITIES

    name = str(config.data.dataset_config)
    anatomy, contrasts, note = _describe_config(name)
    card = DataCard(dataset=f"ctmri/{name}", anatomy=anatomy, modalities=tuple(MODALITIES),
                    mri_contrasts=contrasts, image_size=int(config.data.image_size), note=note)
    try:
        builder = data._builder(name, config.data.data_dir)
    except Exception as err:  # not built here, or tfds cannot read it: a card without numbers
        problem = err.problem if isinstance(err, CtmriInputError) else f"{type(err).__name__}"
        return dataclasses.replace(card, statistics=f"unavailable: {problem}")
    spacings, extents, body = [], [], {m: [] for m in MODALITIES}
    examples = data.load(_sample_split(builder, max_slices), config=name,
                         data_dir=config.data.data_dir, decode_counterpart=False)
    for example in examples.take(max_slices).as_numpy_iterator():
        spacing = np.asarray(example["pixel_spacing"], np.float64)
        mask = np.asarray(example["mask"]) > 0
        spacings.append(spacing)
        extents.append(slice_extents_mm(mask, spacing))
        modality = MODALITIES[int(example["modality"])]
        values = np.asarray(example["image"], np.float64)[mask]
        if modality == "mri":
            values = _scaled_mri(values, example["intensity_range"])
        body[modality].append(values)
    if not spacings:
        return dataclasses.replace(card, statistics="unavailable: the train split is empty")
    spacings = np.asarray(spacings)
    extents = np.concatenate(extents)
    extent = None
    if len(extents):
        extent = {axis: (float(np.percentile(extents[:, i], 5)), float(extents[:, i].max()))
                  for i, axis in enumerate(("rows", "cols"))}
    intensity = {m: _body_percentiles(np.concatenate(v)) for m, v in body.items()
                 if v and sum(len(a) for a in v)}
    return dataclasses.replace(
        card, pixel_spacing_mm=(float(spacings.min()), float(spacings.max())),
        body_extent_mm=extent, intensity=intensity or None, slices_sampled=len(spacings))


# ----------------------------------------------------------------------------- (de)serialising

def card_dict(card: DataCard | dict) -> dict:
    """A JSON-ready dict of ``card`` (a dict is checked by a round trip and returned)."""
    if isinstance(card, dict):
        card = card_from_dict(card)
    values = dataclasses.asdict(card)
    for key in ("modalities", "mri_contrasts", "pixel_spacing_mm"):
        if values[key] is not None:
            values[key] = list(values[key])
    if values["body_extent_mm"] is not None:
        values["body_extent_mm"] = {k: list(v) for k, v in values["body_extent_mm"].items()}
    return values


def card_from_dict(values: dict, source: str | os.PathLike | None = None) -> DataCard:
    """Inverse of :func:`card_dict`.

    Raises:
        CtmriInputError: naming ``source``: not a data card (missing or unknown fields).
    """
    fields = {f.name for f in dataclasses.fields(DataCard)}
    if not isinstance(values, dict) or not {"dataset", "anatomy", "modalities",
                                            "mri_contrasts", "image_size"} <= set(values):
        raise CtmriInputError(source, "holds no valid data card")
    unknown = sorted(set(values) - fields)
    if unknown:
        raise CtmriInputError(source, f"data card has unknown field(s) {', '.join(unknown)}")
    values = dict(values)
    for key in ("modalities", "mri_contrasts"):
        values[key] = tuple(values[key])
    if values.get("pixel_spacing_mm") is not None:
        values["pixel_spacing_mm"] = tuple(float(v) for v in values["pixel_spacing_mm"])
    if values.get("body_extent_mm") is not None:
        values["body_extent_mm"] = {k: tuple(float(x) for x in v)
                                    for k, v in values["body_extent_mm"].items()}
    return DataCard(**values)


# ----------------------------------------------------------------------------- using

def describe(card: DataCard) -> list[str]:
    """A few lines for the user: data, anatomy and contrasts, statistics, the note."""
    lines = [f"data card: trained on {card.dataset} at {card.image_size} px: {card.anatomy}; "
             f"{' + '.join(m.upper() for m in card.modalities)}; MRI: "
             f"{', '.join(card.mri_contrasts)}"]
    if card.statistics:
        lines.append(f"data card: statistics {card.statistics}")
    else:
        parts = []
        if card.pixel_spacing_mm is not None:
            low, high = card.pixel_spacing_mm
            parts.append(f"pixel spacing {low:.2f}" + (f"-{high:.2f}" if high > low else "")
                         + " mm")
        if card.body_extent_mm is not None:
            rows, cols = card.body_extent_mm["rows"], card.body_extent_mm["cols"]
            parts.append(f"body extent {rows[0]:.0f}-{rows[1]:.0f} x {cols[0]:.0f}-{cols[1]:.0f}"
                         f" mm")
        for modality, values in (card.intensity or {}).items():
            parts.append(f"{modality.upper()} body p25/p50/p75 "
                         + "/".join(f"{values[str(q)]:.{0 if modality == 'ct' else 2}f}"
                                    for q in INTENSITY_PERCENTILES)
                         + f" {INTENSITY_UNITS[modality]}")
        lines.append(f"data card: {', '.join(parts)} ({card.slices_sampled} training slices)")
    if card.note:
        lines.append(f"data card: {card.note}")
    return lines


def input_intensity(data: np.ndarray, mask: np.ndarray, modality: str) -> dict | None:
    """The :data:`INTENSITY_PERCENTILES` of a volume's body voxels in the card's units (HU; MRI
    scaled by its percentile scale fitted inside the body, as translate does), or None."""
    from ctmri_tf import intensity

    values = np.asarray(data, np.float64)[np.asarray(mask) > 0]
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    if modality == "mri":
        try:
            scale = intensity.fit_mri_scale(data, mask=mask).as_tuple()
        except CtmriInputError:
            return None
        values = _scaled_mri(values, scale)
    return _body_percentiles(values)


def compare(card: DataCard, data: np.ndarray, mask: np.ndarray, modality: str, *,
            pixel_spacing_mm: Any = None, confidence: float | None = None) -> list[str]:
    """One warning line per way an input is far from ``card`` (module docstring); [] when it
    is close or the card has no statistics for that check.

    Args:
        data: the input volume ``(S, H, W)`` in physical units (HU / MR signal).
        mask: its body mask ``(S, H, W)`` {0, 1}.
        modality: the input's modality.
        pixel_spacing_mm: ``(row, col)`` mm, or None when unknown (image files): no spacing
            and extent checks then.
        confidence: the classifier's confidence when it decided the modality, else None.
    """
    warnings = []
    if pixel_spacing_mm is not None and card.pixel_spacing_mm is not None:
        low, high = card.pixel_spacing_mm
        spacing = [float(s) for s in pixel_spacing_mm]
        if any(s < low / SPACING_FACTOR or s > high * SPACING_FACTOR for s in spacing):
            warnings.append(f"pixel spacing {spacing[0]:.2f} x {spacing[1]:.2f} mm is outside the "
                            f"trained {low:.2f}-{high:.2f} mm (by more than x{SPACING_FACTOR:g})")
    if pixel_spacing_mm is not None and card.body_extent_mm is not None:
        extents = slice_extents_mm(mask, pixel_spacing_mm)
        if len(extents):
            largest = extents.max(axis=0)
            bounds = [card.body_extent_mm["rows"], card.body_extent_mm["cols"]]
            if any(not lo / (1 + EXTENT_MARGIN) <= e <= hi * (1 + EXTENT_MARGIN)
                   for e, (lo, hi) in zip(largest, bounds)):
                warnings.append(
                    f"body extent {largest[0]:.0f} x {largest[1]:.0f} mm (largest slice) is "
                    f"outside the trained {bounds[0][0]:.0f}-{bounds[0][1]:.0f} x "
                    f"{bounds[1][0]:.0f}-{bounds[1][1]:.0f} mm (margin "
                    f"{100 * EXTENT_MARGIN:.0f} %): another anatomy, field of view or spacing?")
    trained = (card.intensity or {}).get(modality)
    if trained is not None:
        found = input_intensity(data, mask, modality)
        tolerance = INTENSITY_TOLERANCE[modality]
        if found is not None and any(abs(found[k] - trained[k]) > tolerance for k in trained):
            digits = 0 if modality == "ct" else 2

            def fmt(values: dict) -> str:
                return "/".join(f"{values[str(q)]:.{digits}f}" for q in INTENSITY_PERCENTILES)
            warnings.append(f"{modality.upper()} intensities inside the body (p25/p50/p75 "
                            f"{fmt(found)} {INTENSITY_UNITS[modality]}) are far from the "
                            f"trained {fmt(trained)} (tolerance {tolerance:g})"
                            + (": a CT without its rescale intercept, or another anatomy?"
                               if modality == "ct" else ": another MRI contrast or anatomy?"))
    if confidence is not None and confidence < LOW_CONFIDENCE:
        warnings.append(f"the classifier's confidence {confidence:.3f} is below "
                        f"{LOW_CONFIDENCE:g}: check the modality, or pass --from ct|mri")
    return warnings

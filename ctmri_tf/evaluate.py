"""Evaluate CT <-> MRI translators honestly: against registered ground truth when it exists,
next to baselines, per subject, with the protocol written down.

A *translator* is any callable ``translate(images_unit, source, target)`` taking ``(B, H, W, 1)``
float32 source images in model space [-1, 1] and returning ``(B, H, W, 1)`` target images in
[-1, 1] (a NumPy array or a tensor); ``source`` and ``target`` are ``"ct"`` / ``"mri"``. Adapters:
:func:`stargan_translator` (one generator, one-hot target domain, CT = 0, MRI = 1),
:func:`cyclegan_translator` (one generator per direction), :func:`stargan_run_translator` and
:func:`cyclegan_run_translator` (a training run folder's newest checkpoint at its training size);
the baselines of :mod:`ctmri_tf.baselines`. Optional attributes a translator may carry:

* ``whole_volume = True``: called once per subject and direction with the whole volume and its
  body mask, ``translate(volume_unit, source, target, mask=mask)`` (histogram matching needs the
  volume's histogram); otherwise it is called on chunks of ``batch_size`` slices.
* ``directions``: the ``(source, target)`` pairs it supports (default: both); the others are
  skipped and shown as "-".
* ``cycle_is_trivial = True``: translate-and-back returns the input itself (the identity), so no
  cycle-reconstruction error is reported for it (it would compare an image with itself).
* ``context_slices = k`` (3 or 5; default 1): a 2.5-D translator. It takes ``(B, H, W, k)``
  stacks, each slice with its neighbours of the same volume as channels
  (:func:`ctmri_tf.context.stack_neighbours`: replicate padding at the volume's ends, the rule
  of training and of ``ctmri translate``), and returns the centre slices ``(B, H, W, 1)``; the
  evaluation builds the stacks from each volume. :func:`stargan_translator` and
  :func:`cyclegan_translator` read it from the generator's input channels.

Paired data (every subject has registered CT and MRI)
-----------------------------------------------------
For every model, direction and subject, the source volume is mapped to [-1, 1] with its own
``intensity_range`` (background outside the source's body mask set to -1 when ``mask_inputs``, as
in training), translated, and mapped into the target's physical units with the *target volume's*
``intensity_range`` (``ctmri_tf.intensity.from_unit``). Then (:mod:`ctmri_tf.metrics`, SynthRAD
2023 protocol):

* MRI -> CT: MAE, PSNR, SSIM in HU clipped to [-1024, 3000] (data range 4024 HU);
* CT -> MRI: MAE, PSNR, SSIM on the [0, 1]-scaled MRI (the target volume's percentile scale
  mapped to [0, 1], clipped; data range 1);

each on the whole image (region ``"image"``) and inside the body (region ``"body"``: the
*source's* body mask, the region a user has at inference time). Next to MAE, the through-plane
MAE (``through_plane_mae``, :func:`ctmri_tf.metrics.through_plane_mae`; not a SynthRAD metric):
the MAE of the slice-to-slice difference, over pairs of consecutive slice indices that are both
in the split (:attr:`EvaluationSubject.slice_indices`) and voxel pairs inside the region in both
slices, in HU per slice (MRI -> CT) or the [0, 1] MRI scale per slice (CT -> MRI): how much a
slice-by-slice translator flickers along the volume; NaN (``-`` in the table) for a subject
without two consecutive slices. Per subject, all slices of the
volume count together (MAE over all voxels of the region, PSNR from the volume's MSE, SSIM the
mean of the slices' SSIM maps); the summary is mean and sample standard deviation over subjects.

A perfect translation has ``MSE = 0`` and ``PSNR = +inf``. It is never capped: the returned
dict holds ``math.inf``, ``metrics.csv`` and ``comparison.md`` write ``inf``, ``metrics.json``
(strict JSON has no infinity) writes the string ``"inf"``; a mean over subjects that includes
an ``inf`` is ``inf`` with no standard deviation. NaN (an undefined value) is ``null`` in JSON and
empty in the CSV.

Unpaired data (some subject lacks a registered counterpart)
-----------------------------------------------------------
No reference exists, so nothing is compared with a ground truth. Reported instead, per model,
direction and subject: the cycle-reconstruction error (translate, translate back, MAE and PSNR of
the reconstruction against the translator's input, in the source's units, image and body), and,
when a ``classifier`` (``images (B, H, W, 1) in [-1, 1] -> (B, 2) logits``, 0 = CT, 1 = MRI) is
given, the fraction of translated slices it assigns to the target modality (each translated
slice normalised as the classifier was trained, by its own percentiles:
``ctmri_tf.intensity.percentile_to_unit``).

Outputs of :func:`evaluate` in ``out_dir`` (written to a temporary sibling, then renamed):
``metrics.csv`` (one row per model x direction x subject x region), ``metrics.json`` (the rows,
the summary and the protocol), ``comparison.md`` (models as rows, baselines included, mean +- std
over subjects), ``grids/<model>_<source>-to-<target>.png`` (input | translated | ground truth |
|error| per subject; unpaired: input | translated | reconstructed).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from ctmri_tf import intensity
from ctmri_tf.atomic import atomic_output
from ctmri_tf.context import stack_neighbours
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.metrics import (CT_RANGE_HU, MRI_UNIT_RANGE, image_metrics, mae,
                              mri_to_unit_interval, psnr, summarize, through_plane_mae)

MODALITIES = ("ct", "mri")
DOMAIN_INDEX = {"ct": 0, "mri": 1}
"""StarGAN / classifier domain ids."""
DIRECTIONS = (("mri", "ct"), ("ct", "mri"))
REGIONS = ("body", "image")
PAIRED_METRICS = ("mae", "through_plane_mae", "psnr", "ssim")
UNPAIRED_METRICS = ("cycle_mae", "cycle_psnr", "target_fraction")

DISPLAY_CT_WINDOW_HU = (-200.0, 1000.0)
"""CT display window of the grids, in HU (soft tissue, CSF and bone readable)."""
ERROR_DISPLAY_HU = 500.0
"""|error| maps of CT show 0 .. 500 HU as black .. white."""
ERROR_DISPLAY_MRI = ERROR_DISPLAY_HU / (CT_RANGE_HU[1] - CT_RANGE_HU[0])
"""|error| maps of MRI ([0, 1] scale) show the same fraction of the data range (0 .. 0.124)."""
NO_REFERENCE_MESSAGE = (
    "No reference exists: these CT and MRI volumes are not registered pairs, so no translated "
    "image can be compared with a ground truth and no MAE/PSNR/SSIM against a reference is "
    "reported. Reported instead: the cycle-reconstruction error (translate and back, against the "
    "translator's own input) and, when a classifier is given, the fraction of translated slices "
    "it assigns to the target modality.")


class Translator(Protocol):
    """``(B, H, W, 1)`` float32 in [-1, 1] of modality ``source`` -> same shape in [-1, 1] of
    modality ``target``."""

    def __call__(self, images_unit: Any, source: str, target: str) -> Any: ...


def direction_name(source: str, target: str) -> str:
    """``"mri->ct"`` / ``"ct->mri"``."""
    return f"{source}->{target}"


def _units(modality: str) -> str:
    return "HU" if modality == "ct" else "MRI [0,1]"


# ----------------------------------------------------------------------------- adapters

def _input_channels(model, index: int | None = None) -> int:
    """The image channels a Keras generator takes (its ``context_slices``); 1 when the callable
    does not say (not a Keras model, or an unknown channel count)."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return 1
    channels = (inputs[index] if index is not None else inputs[0]).shape[-1]
    return 1 if channels is None else int(channels)


def stargan_translator(generator: Callable) -> Callable:
    """Adapt a StarGAN generator ``[image (B,H,W,k), one-hot target (B,2)] -> image (B,H,W,1)``
    (Keras model, CT = 0, MRI = 1; ``k`` its input channels, 1 or a 2.5-D model's 3 / 5) to the
    translator protocol (inference mode); the translator's ``context_slices`` is ``k``."""
    import tensorflow as tf

    def translate(images_unit, source: str, target: str) -> np.ndarray:
        _modality(source), _modality(target)
        x = tf.convert_to_tensor(images_unit, tf.float32)
        labels = tf.one_hot(tf.fill([tf.shape(x)[0]], DOMAIN_INDEX[target]), len(DOMAIN_INDEX))
        return np.asarray(generator([x, labels], training=False))

    translate.context_slices = _input_channels(generator, 0)
    return translate


def cyclegan_translator(generators: Mapping[str, Callable]) -> Callable:
    """Adapt CycleGAN generators ``{"mri->ct": g_ct, "ct->mri": g_mri}`` (each ``image ->
    image`` in [-1, 1]; one direction may be missing) to the translator protocol."""
    known = {direction_name(s, t) for s, t in DIRECTIONS}
    unknown = set(generators) - known
    if unknown or not generators:
        raise CtmriInputError(None, f"CycleGAN generators must be keyed by {sorted(known)}, got "
                                    f"{sorted(generators)}")
    generators = dict(generators)

    def translate(images_unit, source: str, target: str) -> np.ndarray:
        import tensorflow as tf
        name = direction_name(_modality(source), _modality(target))
        if name not in generators:
            raise CtmriInputError(None, f"this CycleGAN has no {name} generator")
        x = tf.convert_to_tensor(images_unit, tf.float32)
        return np.asarray(generators[name](x, training=False))

    translate.directions = tuple(tuple(name.split("->")) for name in generators)
    contexts = {_input_channels(g) for g in generators.values()}
    if len(contexts) > 1:
        raise CtmriInputError(None, f"the CycleGAN generators take different numbers of slices "
                                    f"({sorted(contexts)}); both must have the same "
                                    f"context_slices")
    translate.context_slices = contexts.pop()
    return translate


def _keep_attributes(translator: Callable, wrapper: Callable) -> Callable:
    """``wrapper`` with the translator protocol's attributes of ``translator`` (its directions,
    ``cycle_is_trivial``, ``context_slices``)."""
    for attribute in ("directions", "cycle_is_trivial", "context_slices"):
        if hasattr(translator, attribute):
            setattr(wrapper, attribute, getattr(translator, attribute))
    return wrapper


def resized_translator(translator: Callable, image_size) -> Callable:
    """Run ``translator`` at the size it was trained at, keeping the data's resolution.

    Input slices are resized to ``image_size`` (``int`` or ``(height, width)`` pixels; bilinear
    with antialiasing, as ``ctmri_tf.data``'s ``fit="resize"``), translated, and the output is
    resized back to the input's size (bilinear), so metrics are computed against the ground truth
    at its stored resolution. Inputs already at ``image_size`` pass straight through.
    """
    import tensorflow as tf

    if getattr(translator, "whole_volume", False):
        raise CtmriInputError(None, "a whole-volume translator (a baseline) works at any size; "
                                    "do not resize it")
    size = (int(image_size), int(image_size)) if np.ndim(image_size) == 0 else tuple(
        int(v) for v in image_size)

    def translate(images_unit, source: str, target: str):
        x = tf.convert_to_tensor(images_unit, tf.float32)
        if tuple(x.shape[1:3]) == size:
            return translator(x, source, target)
        small = tf.image.resize(x, size, method="bilinear", antialias=True)
        out = tf.convert_to_tensor(translator(small, source, target), tf.float32)
        return tf.image.resize(out, tf.shape(x)[1:3], method="bilinear").numpy()

    return _keep_attributes(translator, translate)


def mirrored_translator(translator: Callable, tta: str = "lr") -> Callable:
    """``translator`` with flip test-time augmentation, as ``ctmri translate --tta`` runs a
    model: the mean, in model space ([-1, 1]), of the outputs of every pass of
    ``ctmri_tf.tiling.tta_passes(tta)`` (``"lr"``: the slices as they are and mirrored left to
    right; ``"lr+ud"``: also upside down), each mirrored back.

    Raises:
        ValueError: an unknown ``tta``.
    """
    from ctmri_tf.tiling import tta_passes

    passes = tta_passes(tta)
    if getattr(translator, "whole_volume", False):
        raise CtmriInputError(None, "a whole-volume translator (a baseline) has no test-time "
                                    "augmentation")

    def translate(images_unit, source: str, target: str) -> np.ndarray:
        x = np.asarray(images_unit, np.float32)
        total = None
        for flip_rows, flip_cols in passes:
            axes = [axis for axis, flip in ((1, flip_rows), (2, flip_cols)) if flip]
            out = np.asarray(translator(np.flip(x, axes) if axes else x, source, target),
                             np.float64)
            out = np.flip(out, axes) if axes else out
            total = out if total is None else total + out
        return (total / len(passes)).astype(np.float32)

    return _keep_attributes(translator, translate)


def stargan_run_translator(run_dir: str | os.PathLike) -> Callable:
    """The translator of a StarGAN training run folder: its newest checkpoint
    (``ctmri_tf.training.stargan.load_stargan_generator``) run at the run's training image size
    (:func:`resized_translator`), both directions.

    Raises:
        CtmriInputError: not a StarGAN run folder, or no restorable checkpoint (naming the file).
    """
    from ctmri_tf.training.run_dir import read_run
    from ctmri_tf.training.stargan import load_stargan_generator

    _, config = read_run(run_dir, "stargan")
    return resized_translator(stargan_translator(load_stargan_generator(run_dir)),
                              config.data.image_size)


def cyclegan_run_translator(run_dir: str | os.PathLike) -> Callable:
    """The translator of a CycleGAN training run folder: both of its generators (MRI -> CT and
    CT -> MRI, ``ctmri_tf.training.cyclegan.load_cyclegan_generators``, newest checkpoint) run
    at the run's training image size (:func:`resized_translator`).

    Raises:
        CtmriInputError: not a CycleGAN run folder, or no restorable checkpoint (naming the file).
    """
    from ctmri_tf.training.cyclegan import load_cyclegan_generators
    from ctmri_tf.training.run_dir import read_run

    _, config = read_run(run_dir, "cyclegan")
    return resized_translator(cyclegan_translator(load_cyclegan_generators(run_dir)),
                              config.data.image_size)


# ----------------------------------------------------------------------------- run folders

@dataclasses.dataclass(frozen=True)
class RunEvaluation:
    """An experiment's evaluation of one training run (the registry's ``evaluate``; what the
    pipeline's Evaluator blesses on).

    Attributes:
        model: the trained model's row in ``values`` (the experiment's title, ``StarGAN``).
        values: ``{row: {metric key: value}}``; rows are the model and, for translation, the
            baselines it was compared with; keys :func:`metric_key` (translation:
            ``"mri->ct body mae"``, HU / dB / SSIM as in the table; segmentation ``"dice"``,
            ``"mean_iou"``; classifier ``"accuracy"``: fractions in [0, 1]). NaN: not measured.
        folder: the report folder the evaluation wrote.
    """

    model: str
    values: dict
    folder: Path


def metric_key(metric: str, direction: str | None = None, region: str | None = None) -> str:
    """The :attr:`RunEvaluation.values` key of a metric: ``"mri->ct body mae"`` for a
    translation metric (``direction``, ``region`` given), else the metric name itself."""
    return " ".join(p for p in (direction, region, metric) if p)


def table_values(results: Mapping) -> dict:
    """``{model: {metric key: mean over subjects}}`` of :func:`evaluate`'s results."""
    values = {}
    for name in results["models"]:
        row = values.setdefault(name, {})
        for direction, regions in results["summary"].get(name, {}).items():
            for region, metrics in regions.items():
                for metric, stats in metrics.items():
                    row[metric_key(metric, direction, region)] = (
                        float(stats["mean"]) if stats and stats.get("n") else math.nan)
    return values


def scalar_metrics(metrics: Mapping) -> dict:
    """The number-valued entries of a metrics dict, as floats (counts and matrices left out
    of a :attr:`RunEvaluation.values` row)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def write_split_metrics(out_dir: str | os.PathLike, split: str, results: Mapping) -> Path:
    """A report folder holding ``metrics.json`` (``{"split": split, split: metrics}``, NaN as
    null), written atomically; returns the folder.

    Raises:
        CtmriInputError: ``out_dir`` already exists.
    """
    out_dir = Path(out_dir)
    with atomic_output(out_dir, directory=True) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(
            _json_safe({"split": split, **dict(results)}), indent=2, sort_keys=True,
            allow_nan=False) + "\n")
    return out_dir


def evaluate_translation_run(experiment, run_dir: str | os.PathLike, out_dir: str | os.PathLike,
                             *, split: str, dataset_config: str, data_dir=None,
                             reference_split: str = "train", batch_size: int = 16,
                             grid_subjects: int = 4, progress: bool = False) -> RunEvaluation:
    """The registry's evaluation of a translation run (``experiment``: its entry): the run's
    translator (``experiment.translator(run_dir)``) next to the identity and histogram matching
    (reference: ``reference_split``) on the registered pairs of ``split`` (SynthRAD protocol),
    report folder ``out_dir`` (:func:`evaluate`).

    Raises:
        CtmriInputError: ``reference_split`` is ``split``, or the split is not paired.
    """
    from ctmri_tf import baselines

    if reference_split == split:
        raise CtmriInputError(None, f"the reference split {reference_split} is the evaluated "
                                    f"split: histogram matching would see the test targets")
    translators = dict(baselines.baseline_translators(baselines.reference_from_split(
        reference_split, config=dataset_config, data_dir=data_dir)))
    translators[experiment.title] = experiment.translator(run_dir)
    subjects = load_subjects(split, config=dataset_config, data_dir=data_dir)
    results = evaluate(translators, subjects, out_dir, batch_size=batch_size,
                       grid_subjects=grid_subjects, progress=progress)
    if not results["reference"]:
        raise CtmriInputError(out_dir, f"the {split} split is unpaired: a translation model is "
                                       f"evaluated against registered CT and MRI")
    return RunEvaluation(experiment.title, table_values(results), Path(out_dir))


# ----------------------------------------------------------------------------- data

@dataclasses.dataclass(frozen=True)
class EvaluationSubject:
    """One subject's volumes in physical units.

    Attributes:
        subject_id: the subject's name (rows of the results).
        images: ``{modality: float32 (slices, rows, cols)}``: CT in HU, MRI in MR signal.
        masks: ``{modality: uint8 (slices, rows, cols)}`` body masks {0, 1}.
        ranges: ``{modality: (low, high)}`` physical values that map to [-1, 1]: the CT window
            in HU, the volume's MRI percentile scale.
        paired: the CT and MRI are registered slice by slice (ground truth of each other).
        slice_indices: ``{modality: increasing ints}``, the index in its scan of each slice of
            the volume (a split may hold only some slices); a modality missing here (or
            ``None``) has slices ``0 .. slices - 1``. Only consecutive indices are compared by
            the through-plane MAE.
    """

    subject_id: str
    images: Mapping[str, np.ndarray]
    masks: Mapping[str, np.ndarray]
    ranges: Mapping[str, tuple[float, float]]
    paired: bool = True
    slice_indices: Mapping[str, tuple[int, ...]] | None = None

    def indices(self, modality: str) -> tuple[int, ...]:
        """The slice indices of the ``modality`` volume (default ``0 .. slices - 1``)."""
        given = (self.slice_indices or {}).get(modality)
        return tuple(range(np.shape(self.images[modality])[0])) if given is None else given

    def __post_init__(self):
        where = f"subject {self.subject_id}"
        if not self.images:
            raise CtmriInputError(None, f"{where}: has no image")
        for modality, image in self.images.items():
            _modality(modality)
            if modality not in self.masks or modality not in self.ranges:
                raise CtmriInputError(None, f"{where}: the {modality} image has no body mask or "
                                            f"no intensity range")
            if np.ndim(image) != 3 or np.shape(self.masks[modality]) != np.shape(image):
                raise CtmriInputError(None, f"{where}: the {modality} image must be (slices, rows, "
                                            f"cols) with a mask of the same shape; got "
                                            f"{np.shape(image)} and "
                                            f"{np.shape(self.masks[modality])}")
        for modality, given in (self.slice_indices or {}).items():
            if modality not in self.images:
                raise CtmriInputError(None, f"{where}: slice indices given for {modality}, "
                                            f"which it has no image of")
            given = np.asarray(given)
            if (given.shape != (np.shape(self.images[modality])[0],)
                    or not np.issubdtype(given.dtype, np.integer)
                    or np.any(np.diff(given) <= 0)):
                raise CtmriInputError(None, f"{where}: the {modality} slice indices must be one "
                                            f"increasing integer per slice, got "
                                            f"{list(given.ravel())}")
        if self.paired and (set(self.images) != set(MODALITIES)
                            or np.shape(self.images["ct"]) != np.shape(self.images["mri"])):
            raise CtmriInputError(None, f"{where}: a paired subject needs a CT and an MRI volume "
                                        f"of the same shape")


def paired_subject(subject_id: str, *, ct: Any, mri: Any, mask: Any,
                   ct_range=intensity.CT_WINDOW_HU, mri_range=None,
                   slice_indices=None) -> EvaluationSubject:
    """A paired subject from registered volumes sharing one body mask.

    Args:
        ct: (slices, rows, cols) HU.  mri: same shape, MR signal.  mask: same shape, {0, 1}.
        ct_range: CT window in HU (default ``intensity.CT_WINDOW_HU``).
        mri_range: MRI scale ``(low, high)``; default: ``intensity.fit_mri_scale(mri, mask)``.
        slice_indices: the scan's index of each slice (both modalities); default
            ``0 .. slices - 1``.
    """
    ct = np.asarray(ct, np.float32)
    mri = np.asarray(mri, np.float32)
    mask = (np.asarray(mask) != 0).astype(np.uint8)
    if mri_range is None:
        mri_range = intensity.fit_mri_scale(mri, mask).as_tuple()
    indices = None if slice_indices is None else tuple(int(i) for i in slice_indices)
    return EvaluationSubject(subject_id, {"ct": ct, "mri": mri}, {"ct": mask, "mri": mask},
                             {"ct": _pair(ct_range), "mri": _pair(mri_range)}, paired=True,
                             slice_indices=None if indices is None else {"ct": indices,
                                                                         "mri": indices})


def _pair(value_range) -> tuple[float, float]:
    if hasattr(value_range, "as_tuple"):
        value_range = value_range.as_tuple()
    low, high = (float(v) for v in np.asarray(value_range, np.float64).reshape(2))
    return low, high


def _text(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _modality(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < len(MODALITIES):
            return MODALITIES[int(value)]
    value = value.decode() if isinstance(value, bytes) else value
    if value not in MODALITIES:
        raise CtmriInputError(None, f"unknown modality {value!r}: expected one of {MODALITIES}")
    return value


def _stack(slices: dict[int, tuple], subject_id: str, modality: str):
    """{slice_index: (image, mask, range)} -> (volume, mask volume, range)."""
    order = sorted(slices)
    ranges = {slices[i][2] for i in order}
    if len(ranges) != 1:
        raise CtmriInputError(None, f"subject {subject_id}: its {modality} slices carry "
                                    f"different intensity ranges {sorted(ranges)}; a volume "
                                    f"has one range")
    shapes = {np.shape(slices[i][0]) for i in order}
    if len(shapes) != 1:
        raise CtmriInputError(None, f"subject {subject_id}: its {modality} slices differ in "
                                    f"shape {sorted(shapes)}")
    volume = np.stack([np.asarray(slices[i][0], np.float32) for i in order])
    mask = np.stack([(np.asarray(slices[i][1]) != 0).astype(np.uint8) for i in order])
    return volume, mask, ranges.pop(), tuple(order)


def subjects_from_examples(examples: Iterable[Mapping]) -> list[EvaluationSubject]:
    """Group raw examples of the tfds ``ctmri`` dataset into subjects.

    Args:
        examples: NumPy dicts as ``tfds.as_numpy(ctmri_tf.data.load(split))`` yields them
            (``image``, ``mask``, ``modality``, ``subject_id``, ``slice_index``,
            ``intensity_range``, ``has_counterpart``, ``counterpart``, ``counterpart_range``).

    Returns:
        One :class:`EvaluationSubject` per subject id, in order of first appearance; a subject is
        paired when every one of its slices has a registered counterpart and both modalities
        cover the same slices. A modality that only appears as counterparts is built from them
        (with the mask of the slice they belong to).
    """
    own: dict[str, dict[str, dict[int, tuple]]] = defaultdict(lambda: defaultdict(dict))
    counterparts: dict[str, dict[str, dict[int, tuple]]] = defaultdict(lambda: defaultdict(dict))
    all_paired: dict[str, bool] = {}
    for example in examples:
        sid = _text(example["subject_id"])
        modality = _modality(example["modality"])
        index = int(np.asarray(example["slice_index"]))
        mask = np.asarray(example["mask"])
        own[sid][modality][index] = (np.asarray(example["image"]), mask,
                                     _pair(example["intensity_range"]))
        has = bool(np.asarray(example.get("has_counterpart", False)))
        all_paired[sid] = all_paired.get(sid, True) and has
        if has:
            other = MODALITIES[1 - MODALITIES.index(modality)]
            counterparts[sid][other][index] = (np.asarray(example["counterpart"]), mask,
                                               _pair(example["counterpart_range"]))
    subjects = []
    for sid in own:
        images, masks, ranges, covered = {}, {}, {}, {}
        for modality in MODALITIES:
            slices = own[sid].get(modality) or counterparts[sid].get(modality)
            if not slices:
                continue
            images[modality], masks[modality], ranges[modality], covered[modality] = _stack(
                slices, sid, modality)
        paired = (all_paired[sid] and len(images) == 2 and covered["ct"] == covered["mri"]
                  and images["ct"].shape == images["mri"].shape)
        subjects.append(EvaluationSubject(sid, images, masks, ranges, paired=paired,
                                          slice_indices=covered))
    return subjects


def subjects_from_paired_batches(batches: Iterable[Mapping], source: str = "mri"
                                 ) -> list[EvaluationSubject]:
    """Group ``ctmri_tf.data.paired_batches(split, ..., source=source)`` batches into subjects.

    The [-1, 1] ``source`` / ``target`` images are mapped back to physical units with each
    example's ``source_range`` / ``target_range``; the batch's ``mask`` (the source's body mask)
    serves both modalities. Use ``shuffle=False`` or not: slices are sorted by ``slice_index``.
    """
    source = _modality(source)
    target = MODALITIES[1 - MODALITIES.index(source)]
    slices: dict[str, dict[str, dict[int, tuple]]] = defaultdict(lambda: defaultdict(dict))
    for batch in batches:
        batch = {k: np.asarray(v) for k, v in batch.items()}
        for b in range(batch["source"].shape[0]):
            sid = _text(batch["subject_id"][b])
            index = int(batch["slice_index"][b])
            mask = batch["mask"][b, ..., 0]
            for modality, key in ((source, "source"), (target, "target")):
                value_range = _pair(batch[f"{key}_range"][b])
                physical = intensity.from_unit(batch[key][b, ..., 0], modality, value_range)
                slices[sid][modality][index] = (physical, mask, value_range)
    subjects = []
    for sid, by_modality in slices.items():
        images, masks, ranges, covered = {}, {}, {}, {}
        for modality in MODALITIES:
            images[modality], masks[modality], ranges[modality], covered[modality] = _stack(
                by_modality[modality], sid, modality)
        subjects.append(EvaluationSubject(sid, images, masks, ranges, paired=True,
                                          slice_indices=covered))
    return subjects


def load_subjects(split: str = "test", *, config: str = "synthetic",
                  data_dir: str | os.PathLike | None = None) -> list[EvaluationSubject]:
    """The subjects of a built ``ctmri`` dataset split, at the stored resolution and in physical
    units (``ctmri_tf.data.load`` grouped by :func:`subjects_from_examples`)."""
    import tensorflow_datasets as tfds

    from ctmri_tf import data

    return subjects_from_examples(tfds.as_numpy(data.load(split, config=config,
                                                          data_dir=data_dir)))


def _as_subjects(data: Any, source: str) -> list[EvaluationSubject]:
    if hasattr(data, "as_numpy_iterator"):  # a tf.data.Dataset
        data = data.as_numpy_iterator()
    items = list(data)
    if not items:
        raise CtmriInputError(None, "no subject to evaluate: the data is empty")
    if all(isinstance(item, EvaluationSubject) for item in items):
        ids = [s.subject_id for s in items]
        if len(set(ids)) != len(ids):
            raise CtmriInputError(None, f"subject ids are not unique: {ids}")
        return items
    if all(isinstance(item, Mapping) for item in items):
        if all("source" in item and "target" in item for item in items):
            return subjects_from_paired_batches(items, source)
        if all("image" in item for item in items):
            return subjects_from_examples(items)
    raise CtmriInputError(None, "cannot evaluate this data: give EvaluationSubject objects, "
                                "ctmri_tf.data.paired_batches batches or raw ctmri examples")


# ----------------------------------------------------------------------------- running

def _supports(translator, source: str, target: str) -> bool:
    directions = getattr(translator, "directions", None)
    return directions is None or (source, target) in {tuple(d) for d in directions}


def _translate(name: str, translator, volume_unit: np.ndarray, mask: np.ndarray, source: str,
               target: str, batch_size: int) -> np.ndarray:
    """(S, H, W) [-1, 1] -> (S, H, W) [-1, 1] through ``translator`` (a 2.5-D translator gets
    each slice's ``context_slices`` stack, :func:`ctmri_tf.context.stack_neighbours`)."""
    x = volume_unit[..., np.newaxis].astype(np.float32)
    if getattr(translator, "whole_volume", False):
        out = np.asarray(translator(x, source, target, mask=mask[..., np.newaxis]))
    else:
        k = getattr(translator, "context_slices", 1)
        stacks = x if k == 1 else stack_neighbours(volume_unit.astype(np.float32), k)
        parts = [np.asarray(translator(stacks[i:i + batch_size], source, target))
                 for i in range(0, x.shape[0], batch_size)]
        out = np.concatenate(parts, axis=0)
    if out.shape != x.shape:
        raise CtmriInputError(None, f"translator {name!r} returned shape {out.shape} for "
                                    f"{direction_name(source, target)} input {x.shape}")
    if not np.all(np.isfinite(out)):
        raise CtmriInputError(None, f"translator {name!r} returned NaN/Inf for "
                                    f"{direction_name(source, target)}")
    return out[..., 0].astype(np.float32)


def _metric_space(x_physical: np.ndarray, modality: str, value_range):
    """Physical units -> the units the metrics use: HU, or the [0, 1] MRI scale."""
    if modality == "ct":
        return x_physical.astype(np.float64), CT_RANGE_HU
    return mri_to_unit_interval(x_physical, value_range), MRI_UNIT_RANGE


def _source_unit(subject: EvaluationSubject, source: str, mask_inputs: bool) -> np.ndarray:
    unit = intensity.to_unit(subject.images[source], source, subject.ranges[source])
    if mask_inputs:
        unit = np.where(subject.masks[source] != 0, unit, np.float32(-1.0))
    return unit.astype(np.float32)


def _grid_slice(mask: np.ndarray) -> int:
    """The slice with the most body voxels."""
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))


def _display_range(modality: str) -> tuple[float, float]:
    """Grid range of a translated / true image in the metrics' units."""
    return DISPLAY_CT_WINDOW_HU if modality == "ct" else MRI_UNIT_RANGE


def _paired_subject(subject, translators, mask_inputs, batch_size, rows, samples, want_grid):
    for source, target in DIRECTIONS:
        mask = subject.masks[source]
        src_unit = _source_unit(subject, source, mask_inputs)
        truth, value_range = _metric_space(subject.images[target], target,
                                           subject.ranges[target])
        for name, translator in translators.items():
            if not _supports(translator, source, target):
                continue
            out_unit = _translate(name, translator, src_unit, mask, source, target, batch_size)
            physical = intensity.from_unit(out_unit, target, subject.ranges[target])
            prediction, _ = _metric_space(physical, target, subject.ranges[target])
            values = image_metrics(prediction, truth, mask, value_range)
            for region, region_mask in (("body", mask), ("image", None)):
                values[region]["through_plane_mae"] = through_plane_mae(
                    prediction, truth, region_mask, value_range,
                    slice_indices=subject.indices(target))
            for region in REGIONS:
                rows.append({"model": name, "direction": direction_name(source, target),
                             "subject_id": subject.subject_id, "region": region,
                             "units": _units(target),
                             **{metric: values[region][metric] for metric in PAIRED_METRICS}})
            if want_grid:
                k = _grid_slice(mask)
                shown, true = (np.clip(v[k], *value_range) for v in (prediction, truth))
                samples[(name, source, target)].append(
                    [src_unit[k], shown, true, np.abs(shown - true)])  # as the metrics see them


def _unpaired_subject(subject, translators, classifier, mask_inputs, batch_size, rows, samples,
                      want_grid):
    import tensorflow as tf
    for source in MODALITIES:
        if source not in subject.images:
            continue
        target = MODALITIES[1 - MODALITIES.index(source)]
        mask = subject.masks[source]
        src_unit = _source_unit(subject, source, mask_inputs)
        given, value_range = _metric_space(
            intensity.from_unit(src_unit, source, subject.ranges[source]), source,
            subject.ranges[source])
        for name, translator in translators.items():
            if not _supports(translator, source, target):
                continue
            out_unit = _translate(name, translator, src_unit, mask, source, target, batch_size)
            fraction = math.nan
            if classifier is not None:   # fed as it was trained: each slice's percentiles
                logits = np.concatenate([
                    np.asarray(classifier(intensity.percentile_to_unit(
                        tf.constant(out_unit[i:i + batch_size, ..., None])), training=False))
                    for i in range(0, out_unit.shape[0], batch_size)])
                fraction = float(np.mean(np.argmax(logits, axis=-1) == DOMAIN_INDEX[target]))
            cycle = back = None
            if not getattr(translator, "cycle_is_trivial", False) and _supports(
                    translator, target, source):
                back = _translate(name, translator, out_unit, mask, target, source, batch_size)
                reconstructed, _ = _metric_space(
                    intensity.from_unit(back, source, subject.ranges[source]), source,
                    subject.ranges[source])
                cycle = {region: (mae(reconstructed, given, region_mask, value_range),
                                  psnr(reconstructed, given, value_range, region_mask))
                         for region, region_mask in (("body", mask), ("image", None))}
            for region in REGIONS:
                cycle_mae, cycle_psnr = cycle[region] if cycle else (math.nan, math.nan)
                rows.append({"model": name, "direction": direction_name(source, target),
                             "subject_id": subject.subject_id, "region": region,
                             "units": _units(source), "cycle_mae": cycle_mae,
                             "cycle_psnr": cycle_psnr,
                             "target_fraction": fraction if region == "image" else math.nan})
            if want_grid:
                k = _grid_slice(mask)
                samples[(name, source, target)].append(
                    [src_unit[k], out_unit[k], None if back is None else back[k]])


def _summary(rows: list[dict], metric_names) -> dict:
    grouped: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for row in rows:
        for metric in metric_names:
            value = row.get(metric, math.nan)
            if not (isinstance(value, float) and math.isnan(value)):
                grouped[row["model"]][row["direction"]][row["region"]][metric].append(value)
    return {model: {direction: {region: {metric: summarize(values)
                                         for metric, values in metrics_.items()}
                                for region, metrics_ in regions.items()}
                    for direction, regions in directions.items()}
            for model, directions in grouped.items()}


def _run(translators: Mapping[str, Translator], data: Any, *, source: str = "mri",
         classifier: Callable | None = None, mask_inputs: bool = True, batch_size: int = 16,
         grid_subjects: int = 4, progress: bool = True):
    from tqdm.auto import tqdm

    if not translators:
        raise CtmriInputError(None, "no translator to evaluate: give at least one model or "
                                    "baseline")
    if int(batch_size) < 1:
        raise CtmriInputError(None, f"batch_size must be >= 1, got {batch_size}")
    translators = dict(translators)
    subjects = _as_subjects(data, source)
    paired = all(subject.paired for subject in subjects)
    rows: list[dict] = []
    samples: dict = defaultdict(list)
    with tqdm(total=len(subjects), desc="evaluate", unit="subject", disable=not progress,
              file=sys.stderr) as bar:
        for i, subject in enumerate(subjects):
            want_grid = i < grid_subjects
            if paired:
                _paired_subject(subject, translators, mask_inputs, batch_size, rows, samples,
                                want_grid)
            else:
                _unpaired_subject(subject, translators, classifier, mask_inputs, batch_size,
                                  rows, samples, want_grid)
            bar.update(1)
    metric_names = PAIRED_METRICS if paired else UNPAIRED_METRICS
    results = {
        "evaluation": "paired" if paired else "unpaired",
        "reference": paired,
        "message": "" if paired else NO_REFERENCE_MESSAGE,
        "protocol": _protocol(paired, mask_inputs),
        "models": list(translators),
        "trivial_cycle_models": [name for name, t in translators.items()
                                 if getattr(t, "cycle_is_trivial", False)],
        "subjects": [s.subject_id for s in subjects],
        "columns": ["model", "direction", "subject_id", "region", "units", *metric_names],
        "rows": rows,
        "summary": _summary(rows, metric_names),
    }
    return results, samples


def _protocol(paired: bool, mask_inputs: bool) -> dict:
    common = {
        "inputs": "source volume mapped to [-1, 1] with its intensity_range"
                  + ("; background outside the source body mask set to -1" if mask_inputs
                     else ""),
        "outputs": "mapped to physical units with the target volume's intensity_range",
        "body_region": "the source's body mask",
        "aggregation": "per subject over all slices (MAE over the region's voxels, PSNR from the "
                       "volume MSE, SSIM mean of the slices' SSIM maps); mean and sample std "
                       "(ddof=1) over subjects",
        "infinite_psnr": "identical images give PSNR inf (JSON: \"inf\"), never capped",
    }
    if paired:
        common.update({
            "mri->ct": "HU clipped to [-1024, 3000], data range 4024 HU",
            "ct->mri": "MRI [0, 1] scale (target volume's percentile scale), clipped, data "
                       "range 1",
            "through_plane_mae": "mean |(pred[k+1] - pred[k]) - (true[k+1] - true[k])| over "
                                 "consecutive slice indices k, k+1 both in the split and "
                                 "voxel pairs in the region in both slices, after clipping; "
                                 "HU per slice (mri->ct), [0, 1] MRI scale per slice "
                                 "(ct->mri); NaN without two consecutive slices",
            "ssim": "tf.image.ssim maps, Gaussian 11x11 sigma 1.5, K1 0.01, K2 0.03; body: "
                    "outside set to the range minimum in both images, map averaged over window "
                    "centres in the body (SynthRAD 2023)",
        })
    else:
        common.update({
            "cycle": "translate and back; MAE and PSNR of the reconstruction against the "
                     "translator's input, in the source's units (HU clipped to [-1024, 3000] / "
                     "MRI [0, 1] scale)",
            "target_fraction": "fraction of translated slices the classifier assigns to the "
                               "target modality (argmax of its logits)",
        })
    return common


def compute_results(translators: Mapping[str, Translator], data: Any, *, source: str = "mri",
                    classifier: Callable | None = None, mask_inputs: bool = True,
                    batch_size: int = 16, progress: bool = False) -> dict:
    """Evaluate without writing files; return the results dict (see :func:`evaluate`).

    Args: as :func:`evaluate`, without ``out_dir`` / ``overwrite`` / ``grid_subjects``.
    """
    results, _ = _run(translators, data, source=source, classifier=classifier,
                      mask_inputs=mask_inputs, batch_size=batch_size, grid_subjects=0,
                      progress=progress)
    return results


def evaluate(translators: Mapping[str, Translator], paired_dataset_or_examples: Any,
             out_dir: str | os.PathLike, *, source: str = "mri",
             classifier: Callable | None = None, mask_inputs: bool = True, batch_size: int = 16,
             grid_subjects: int = 4, overwrite: bool = False, progress: bool = True) -> dict:
    """Evaluate translators (models and baselines) and write the report folder.

    Args:
        translators: ``{name: translator}`` in table order, e.g. ``{"identity":
            baselines.identity_translator, "StarGAN": stargan_translator(generator)}``.
        paired_dataset_or_examples: :class:`EvaluationSubject` objects, or a ``tf.data.Dataset`` /
            iterable of ``ctmri_tf.data.paired_batches`` batches, or of raw ``ctmri`` examples
            (``ctmri_tf.data.load``). Paired evaluation when every subject is paired, otherwise
            unpaired (no reference metrics).
        out_dir: the folder to create, e.g. ``results/<run>``.
        source: the ``source`` modality the ``paired_batches`` were made with.
        classifier: optional CT/MRI classifier called as ``classifier(images, training=False)``
            (a Keras model, e.g. ``ctmri_tf.training.classifier.load_classifier``): ``(B, H, W,
            1)`` in [-1, 1] (``intensity.percentile_to_unit`` of the translated slices) ->
            ``(B, 2)`` logits, 0 = CT, 1 = MRI; used on unpaired data.
        mask_inputs: set the source's background to -1 before translating (as in training).
        batch_size: slices per translator call.
        grid_subjects: subjects shown in each PNG grid (their slice with most body).
        overwrite: replace an existing ``out_dir``.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The results dict: ``evaluation`` ("paired" / "unpaired"), ``reference`` (bool),
        ``message`` (why no reference metrics, when unpaired), ``protocol``, ``models``,
        ``subjects``, ``columns``, ``rows`` (one dict per model x direction x subject x region;
        paired: ``mae``, ``psnr``, ``ssim``; unpaired: ``cycle_mae``, ``cycle_psnr``,
        ``target_fraction``) and ``summary[model][direction][region][metric] = {"mean", "std",
        "n"}``; PSNR may be ``math.inf``.

    Raises:
        CtmriInputError: ``out_dir`` exists (without ``overwrite``), no translator, no subject,
            a translator returning a wrong shape or NaN.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise CtmriInputError(out_dir, "output already exists; refusing to overwrite it "
                                       "(choose another folder or pass overwrite)")
    results, samples = _run(translators, paired_dataset_or_examples, source=source,
                            classifier=classifier, mask_inputs=mask_inputs,
                            batch_size=batch_size, grid_subjects=grid_subjects, progress=progress)
    with atomic_output(out_dir, directory=True, overwrite=overwrite) as tmp:
        (tmp / "metrics.csv").write_text(metrics_csv(results))
        (tmp / "metrics.json").write_text(metrics_json(results))
        (tmp / "comparison.md").write_text(comparison_markdown(results))
        _write_grids(tmp / "grids", results, samples)
    return results


# ----------------------------------------------------------------------------- writers

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def _write_grids(folder: Path, results: dict, samples: dict) -> None:
    from ctmri_tf.visualize import save_grid_png

    folder.mkdir()
    paired = results["reference"]
    slugs: dict[str, str] = {}
    for name in results["models"]:
        slug = _slug(name)
        while slug in slugs.values():
            slug += "_"
        slugs[name] = slug
    for (name, source, target), rows in samples.items():
        slug = slugs[name]
        if paired:
            error_max = ERROR_DISPLAY_HU if target == "ct" else ERROR_DISPLAY_MRI
            error_text = f"0-{error_max:g} HU" if target == "ct" else f"0-{error_max:.3f}"
            titles = [f"input {source.upper()}", f"translated {target.upper()}",
                      f"true {target.upper()}", f"|error| {error_text}"]
            ranges = [(-1.0, 1.0), _display_range(target),
                      _display_range(target), (0.0, error_max)]
        else:
            titles = [f"input {source.upper()}", f"translated {target.upper()}",
                      f"reconstructed {source.upper()}"]
            ranges = [(-1.0, 1.0)] * 3
        save_grid_png(folder / f"{slug}_{source}-to-{target}.png", rows, titles=titles,
                      value_ranges=ranges)


def _csv_value(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def metrics_csv(results: dict) -> str:
    """The rows as CSV text (``inf`` for infinite PSNR, empty for NaN)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(results["columns"])
    for row in results["rows"]:
        writer.writerow([_csv_value(row.get(column, math.nan)) for column in results["columns"]])
    return out.getvalue()


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    return value


def metrics_json(results: dict) -> str:
    """The results as strict JSON (``"inf"`` for infinite PSNR, ``null`` for NaN)."""
    return json.dumps(_json_safe(results), indent=2, allow_nan=False) + "\n"


def _format(stats: dict | None, digits: int) -> str:
    if not stats or stats["n"] == 0:
        return "-"
    mean, std = stats["mean"], stats["std"]
    if math.isinf(mean):
        return "inf" if mean > 0 else "-inf"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


_PAIRED_COLUMNS = [
    ("mri->ct", "mae", "MRI→CT MAE (HU)", 1),
    ("mri->ct", "through_plane_mae", "MRI→CT through-plane MAE (HU/slice)", 1),
    ("mri->ct", "psnr", "MRI→CT PSNR (dB)", 2), ("mri->ct", "ssim", "MRI→CT SSIM", 4),
    ("ct->mri", "mae", "CT→MRI MAE ([0,1])", 4),
    ("ct->mri", "through_plane_mae", "CT→MRI through-plane MAE ([0,1]/slice)", 4),
    ("ct->mri", "psnr", "CT→MRI PSNR (dB)", 2), ("ct->mri", "ssim", "CT→MRI SSIM", 4),
]
_UNPAIRED_COLUMNS = [
    ("mri->ct", "cycle_mae", "MRI→CT→MRI cycle MAE ([0,1])", 4),
    ("mri->ct", "cycle_psnr", "MRI→CT→MRI cycle PSNR (dB)", 2),
    ("ct->mri", "cycle_mae", "CT→MRI→CT cycle MAE (HU)", 1),
    ("ct->mri", "cycle_psnr", "CT→MRI→CT cycle PSNR (dB)", 2),
]
_CLASSIFIER_COLUMNS = [
    ("mri->ct", "target_fraction", "MRI→CT slices classified CT", 3),
    ("ct->mri", "target_fraction", "CT→MRI slices classified MRI", 3),
]


def _table(results: dict, region: str, columns) -> list[str]:
    lines = ["| model | " + " | ".join(title for _, _, title, _ in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for model in results["models"]:
        by_direction = results["summary"].get(model, {})
        cells = []
        for direction, metric, _, digits in columns:
            stats = by_direction.get(direction, {}).get(region, {}).get(metric)
            if (metric.startswith("cycle") and model in results["trivial_cycle_models"]):
                cells.append("n/a")
            else:
                cells.append(_format(stats, digits))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def comparison_markdown(results: dict) -> str:
    """The comparison table(s) as Markdown: one row per model, mean ± std over subjects."""
    n = len(results["subjects"])
    lines = []
    if results["reference"]:
        lines += [f"# CT ↔ MRI translation: {n} test subject(s), mean ± std over subjects", "",
                  "MRI→CT in HU clipped to [-1024, 3000] (PSNR/SSIM data range 4024 HU); CT→MRI "
                  "on the [0, 1]-scaled MRI (the volume's percentile scale). Per subject all "
                  "slices together; SSIM with the SynthRAD 2023 body masking. PSNR `inf` = "
                  "identical images. Through-plane MAE: the MAE of the slice-to-slice "
                  "difference (consecutive slices only), i.e. how much the output flickers "
                  "along the volume.", "", "## Inside the body", ""]
        lines += _table(results, "body", _PAIRED_COLUMNS)
        lines += ["", "## Whole image", ""]
        lines += _table(results, "image", _PAIRED_COLUMNS)
    else:
        lines += [f"# CT ↔ MRI translation, unpaired: {n} subject(s), mean ± std over subjects",
                  "", f"**{results['message']}**", "",
                  "`n/a`: the model's cycle returns its input itself (identity), so a "
                  "cycle error would compare an image with itself.", "", "## Inside the body", ""]
        lines += _table(results, "body", _UNPAIRED_COLUMNS)
        lines += ["", "## Whole image", ""]
        columns = list(_UNPAIRED_COLUMNS)
        if any(not math.isnan(row["target_fraction"]) for row in results["rows"]):
            columns += _CLASSIFIER_COLUMNS
        lines += _table(results, "image", columns)
    return "\n".join(lines) + "\n"


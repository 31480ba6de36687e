"""tf.data input pipelines over the tfds ``ctmri`` dataset.

Raw examples (:func:`load`) hold slices in physical units (HU for CT, MR signal for MRI) with the
``intensity_range`` that maps each to model space. The batch functions turn them into model
tensors, entirely inside the TensorFlow graph:

1. physical units -> [-1, 1] with :func:`ctmri_tf.intensity.to_unit` and the example's own range
   (the classifier's :func:`modality_batches`: each slice's own percentiles, whatever the modality);
2. to the model size: ``fit="resize"`` (bilinear with antialiasing for images, nearest for masks)
   or ``fit="crop"`` (center crop, or pad with background: -1 for images, 0 for masks);
3. optionally the background (body mask 0) set to -1, as the GAN inputs of the original project;
4. shuffle (``shuffle_buffer`` examples, seeded), optional ``repeat``, batch;
5. optional keras-cv augmentation of each batch (random horizontal flip, rotation up to
   :data:`ROTATION_DEGREES`, zoom up to :data:`ZOOM_FRACTION`), images and masks transformed
   together where both exist; the area moved in from outside is background (-1 / mask 0);
6. prefetch.

Step 2 changes the pixel spacing: a slice of ``n`` pixels at ``s`` mm resized to ``image_size``
pixels is seen at ``s * n / image_size`` mm. :func:`model_pixel_spacing` tells that spacing for a
dataset (the median over its train slices) and :func:`resolve_pixel_spacing` records it in a
config's ``data.pixel_spacing_mm``, so that ``ctmri translate`` can bring scans to it.

Every batch tensor is ``(B, H, W, 1)`` float32 channels-last; masks are float32 in {0, 1}.

2.5-D (``context_slices`` k = 3 or 5 in :func:`unpaired_batches` and :func:`paired_batches`):
the image of a slice becomes ``(B, H, W, k)``, the slice and its neighbours of the same subject
and modality in slice order (:mod:`ctmri_tf.context`: replicate padding at the volume's ends).
The dataset stores one slice per example in hashed, not slice, order, so the pipeline first
fits every slice to the model size, then groups them into volumes (``group_by_window`` on the
modality and subject, sorted by ``slice_index``), builds each volume's stacks and unbatches
them; the volumes and then the slices are shuffled, so batches still mix subjects. Grouping
holds one pass over the split at model size in memory (a volume is complete only once the
whole split has been read). Augmentation transforms all k channels (and the target) of an
example with the same random flip / rotation / zoom.
With the same ``seed`` a pipeline yields the same batches in the same order (per-example maps
run in parallel with ``deterministic=True``; the augmentation step runs sequentially because
keras-cv's layers draw from one stateful generator).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ctmri_tf import context, intensity
from ctmri_tf.errors import CtmriInputError, DatasetNotBuiltError
from ctmri_tf.datasets.ctmri import CtmriConfig
from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import (FIELD_OF_VIEW_METADATA, GEOMETRY_SPLIT,
                                                  PIXEL_SPACING_METADATA)

AUTOTUNE = tf.data.AUTOTUNE
MODALITIES = ("ct", "mri")          # ClassLabel order of the dataset: 0 = ct, 1 = mri
SHUFFLE_BUFFER = 512
ROTATION_DEGREES = 10.0
ZOOM_FRACTION = 0.1
FITS = ("resize", "crop")
VOLUME_SHUFFLE_BUFFER = 64
"""2.5-D pipelines: volumes held in the shuffle buffer of whole volumes (before their slices
are shuffled with ``shuffle_buffer``)."""
_WHOLE_VOLUME = 2 ** 31 - 1     # group_by_window: a volume's window ends with the input
CLASSIFIER_FIELD_OF_VIEW = (0.6, 1.6)
"""Classifier augmentation: each side of the view, relative to the slice's (< 1 crops, > 1 pads
with the slice's minimum, the background), drawn independently for rows and columns: the
anatomy appears at varied sizes, aspect ratios, spacings and fields of view."""
CLASSIFIER_RESOLUTION = (1.0, 2.5)
"""Classifier augmentation: the view is resized to ``image_size / r`` (r drawn here) in physical
units, normalised there by its own percentiles, then resized to ``image_size``: a coarser scan
(larger pixels, partial volume) as ``ctmri translate`` feeds it, resized to the training size."""
CLASSIFIER_MRI_GAMMA = (0.5, 2.0)
"""Classifier augmentation, MRI only: contrast gamma on the [0, 1] percentile scale (log-uniform),
a stand-in for other weightings than the phantom's spin-echo T1."""
CLASSIFIER_MRI_BIAS = 0.4
"""Classifier augmentation, MRI only: a smooth multiplicative bias field ``exp(a * ramp)``, the
ramp in [-1, 1] along a random direction, ``|a| <= CLASSIFIER_MRI_BIAS``."""
CLASSIFIER_SKULL_STRIP = (0.3, (0.04, 0.12))
"""Classifier augmentation, MRI only: ``(probability, (low, high))``: with that probability the
view is skull-stripped the way research pipelines deliver MRI, everything outside the body mask
eroded by a depth drawn in ``low..high`` x the view's rows (scalp and skull, 8-25 mm of a head
at 200 mm) set to 0. Without it the classifier called a skull-stripped MRI (brain on a zero
background) CT, the one with the dark surround."""
CLASSIFIER_NOISE = 0.1
"""Classifier augmentation: Gaussian noise, sigma uniform in [0, this] in [-1, 1] model space,
added at the coarse resolution of :data:`CLASSIFIER_RESOLUTION` (the grain of a low-resolution
scan resized up, not only white noise at the training resolution)."""


# --------------------------------------------------------------------------------------- loading

def _builder(config: str | CtmriConfig, data_dir: str | os.PathLike | None):
    if isinstance(config, CtmriConfig):
        builder = tfds.builder("ctmri", config=config, data_dir=data_dir)
        name = config.name
    else:
        name = str(config)
        builder = tfds.builder(f"ctmri/{name}", data_dir=data_dir)
    if not builder.is_prepared():
        raise DatasetNotBuiltError(builder.data_path, name, data_dir)
    return builder


def subject_ids(split: str, *, config: str | CtmriConfig = "synthetic",
                data_dir: str | os.PathLike | None = None) -> set[str]:
    """The ``subject_id`` of every example of a built ``ctmri`` dataset split (the planes are not
    decoded, so this is quick on large splits)."""
    skipped = {name: tfds.decode.SkipDecoding() for name in ("image", "mask", "counterpart")}
    ds = _builder(config, data_dir).as_dataset(split=split, decoders=skipped)
    return {value.decode() for value in ds.map(lambda x: x["subject_id"]).as_numpy_iterator()}


def load(split: str, *, config: str | CtmriConfig = "synthetic",
         data_dir: str | os.PathLike | None = None, shuffle_files: bool = False, seed: int = 0,
         decode_counterpart: bool = True) -> tf.data.Dataset:
    """The raw examples of a built ``ctmri`` dataset.

    Args:
        split: ``"train"``, ``"validation"``, ``"test"`` or any tfds split expression
            (``"train[:10%]"``, ``"train+validation"``).
        config: a config name (``"synthetic"``, ``"synthetic_small"``, ``"folder"``,
            ``"synthetic_<subjects>x<slices>x<px>"``...) or a :class:`CtmriConfig`.
        data_dir: the tfds data folder it was built in (default: tfds' own,
            ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        shuffle_files: read the files in a seeded random order.
        seed: file shuffling seed.
        decode_counterpart: ``False`` leaves ``counterpart`` undecoded (saves time when it is not
            used; the field then holds the encoded bytes).

    Returns:
        Dataset of dicts: ``image`` (rows, cols) float32 HU / MR signal, ``mask`` uint8 {0, 1},
        ``modality`` int64 (0 = ct, 1 = mri), ``subject_id`` string, ``slice_index`` int32,
        ``pixel_spacing`` (2,) mm, ``intensity_range`` (2,) physical, ``has_counterpart`` bool,
        ``counterpart`` (rows, cols) physical (1x1 zeros when none), ``counterpart_range`` (2,).

    Raises:
        CtmriInputError: the dataset has not been built (the message gives the build command).
    """
    builder = _builder(config, data_dir)
    decoders = None if decode_counterpart else {"counterpart": tfds.decode.SkipDecoding()}
    return builder.as_dataset(split=split, shuffle_files=shuffle_files, decoders=decoders,
                              read_config=tfds.ReadConfig(shuffle_seed=seed))


def _measured_geometry(builder, split: str) -> dict:
    """Median spacing and field of view (mm, ``[row, col]``) of ``split``'s slices, read from
    the examples (a dataset built before its metadata recorded them)."""
    spacings, fields = [], []
    decoders = {"counterpart": tfds.decode.SkipDecoding()}
    for example in tfds.as_numpy(builder.as_dataset(split=split, decoders=decoders)):
        spacing = np.asarray(example["pixel_spacing"], np.float64)
        spacings.append(spacing)
        fields.append(spacing * np.asarray(example["image"].shape, np.float64))
    if not spacings:
        raise CtmriInputError(builder.data_path, f"the {split} split has no slices")
    return {PIXEL_SPACING_METADATA: {"median": np.median(spacings, axis=0).tolist()},
            FIELD_OF_VIEW_METADATA: {"median": np.median(fields, axis=0).tolist()}}


def model_pixel_spacing(image_size, *, config: str | CtmriConfig = "synthetic",
                        data_dir: str | os.PathLike | None = None, fit: str = "resize"
                        ) -> tuple[float, float]:
    """The in-plane pixel spacing, mm ``(row, col)``, of the images a model of ``image_size``
    pixels sees from a built dataset's train slices through this module's pipelines.

    ``fit="resize"`` (what the trainers use): the median field of view (spacing x pixels) over
    ``image_size``; ``fit="crop"``: the median spacing. Both from the dataset's metadata
    (``info.metadata``, see :mod:`datasets.ctmri.ctmri_dataset_builder`), or measured from the
    train split's examples when a dataset was built without it.

    Raises:
        CtmriInputError: the dataset is not built, or its train split is empty.
    """
    size = _size(image_size)
    if fit not in FITS:
        raise CtmriInputError(None, f"fit must be one of {FITS}, got {fit!r}")
    builder = _builder(config, data_dir)
    metadata = builder.info.metadata
    geometry = ({key: metadata[key] for key in (PIXEL_SPACING_METADATA, FIELD_OF_VIEW_METADATA)}
                if metadata is not None and FIELD_OF_VIEW_METADATA in metadata.keys()
                else _measured_geometry(builder, GEOMETRY_SPLIT))
    if fit == "crop":
        return tuple(float(v) for v in geometry[PIXEL_SPACING_METADATA]["median"])
    return tuple(float(fov) / n for fov, n in zip(geometry[FIELD_OF_VIEW_METADATA]["median"],
                                                 size))


def resolve_pixel_spacing(config):
    """``config`` (an ``ExperimentConfig``) with ``data.pixel_spacing_mm`` filled in by
    :func:`model_pixel_spacing` of its dataset at ``data.image_size`` (rounded to 1e-6 mm) when
    it is empty; unchanged when it is set, or (with a warning on stderr) when the dataset is not
    built here, e.g. a trainer fed in-memory data."""
    d = config.data
    if d.pixel_spacing_mm:
        return config
    try:
        spacing = model_pixel_spacing(d.image_size, config=d.dataset_config, data_dir=d.data_dir)
    except ValueError as err:     # CtmriInputError: not built; tfds: no such config
        print(f"warning: the pixel spacing the model sees is unknown ({err}); data."
              f"pixel_spacing_mm stays empty and ctmri translate will resize scans by matrix "
              f"size", file=sys.stderr)
        return config
    spacing = tuple(round(v, 6) for v in spacing)
    return dataclasses.replace(config, data=dataclasses.replace(d, pixel_spacing_mm=spacing))


# ------------------------------------------------------------------------------ graph helpers

def _size(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


def _check(batch_size: int, image_size, fit: str) -> tuple[int, int]:
    if int(batch_size) < 1:
        raise CtmriInputError(None, f"batch_size must be >= 1, got {batch_size}")
    if fit not in FITS:
        raise CtmriInputError(None, f"fit must be one of {FITS}, got {fit!r}")
    size = _size(image_size)
    if min(size) < 1:
        raise CtmriInputError(None, f"image_size must be positive, got {image_size!r}")
    return size


def _fit_image(x: tf.Tensor, size: tuple[int, int], fit: str) -> tf.Tensor:
    """(rows, cols) in [-1, 1] -> (H, W, 1) in [-1, 1]."""
    x = x[..., tf.newaxis]
    if fit == "resize":
        return tf.image.resize(x, size, method="bilinear", antialias=True)
    # crop or pad, padding with background (-1): shift background to 0 for the zero padding
    return tf.image.resize_with_crop_or_pad(x + 1.0, size[0], size[1]) - 1.0


def _fit_mask(mask: tf.Tensor, size: tuple[int, int], fit: str) -> tf.Tensor:
    """(rows, cols) {0, 1} -> (H, W, 1) float32 {0, 1}."""
    mask = tf.cast(mask[..., tf.newaxis] > 0, tf.float32)
    if fit == "resize":
        return tf.image.resize(mask, size, method="nearest")
    return tf.image.resize_with_crop_or_pad(mask, size[0], size[1])


def _unit(image: tf.Tensor, modality: str, value_range: tf.Tensor) -> tf.Tensor:
    return intensity.to_unit(tf.cast(image, tf.float32), modality, value_range)


def _background_to_minus_one(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    return tf.where(mask > 0, x, -1.0)


def _augmenter(seed: int, with_masks: bool) -> Callable:
    """A keras-cv flip/rotate/zoom pipeline applied to a batch (images shifted so that the
    constant fill 0 is background -1), masks transformed with the images when given."""
    import keras_cv  # only pipelines that augment pay for importing keras-cv

    base = 1 + 3 * abs(int(seed))  # keras-cv treats seed 0 as "unseeded"
    layers = [
        keras_cv.layers.RandomFlip("horizontal", seed=base),
        keras_cv.layers.RandomRotation(ROTATION_DEGREES / 360.0, fill_mode="constant",
                                       fill_value=0.0, seed=base + 1,
                                       segmentation_classes=2 if with_masks else None),
        keras_cv.layers.RandomZoom((-ZOOM_FRACTION, ZOOM_FRACTION), fill_mode="constant",
                                   fill_value=0.0, seed=base + 2),
    ]

    def augment(images: tf.Tensor, masks: tf.Tensor | None = None):
        data = {"images": images + 1.0}
        if masks is not None:
            data["segmentation_masks"] = masks
        for layer in layers:
            data = layer(data)
        images = tf.clip_by_value(data["images"] - 1.0, -1.0, 1.0)
        if masks is None:
            return images
        return images, tf.cast(data["segmentation_masks"] > 0.5, tf.float32)

    return augment


def _batched(ds: tf.data.Dataset, batch_size: int, *, shuffle: bool, shuffle_buffer: int,
             seed: int, repeat: bool, drop_remainder: bool) -> tf.data.Dataset:
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder,
                    num_parallel_calls=AUTOTUNE, deterministic=True)


def _context_slices(ds: tf.data.Dataset, k: int, stacked: tuple[str, ...], *, shuffle: bool,
                    seed: int) -> tf.data.Dataset:
    """Per-slice dicts (fitted to the model size; each with ``"subject_id"``, ``"modality"``
    and ``"slice_index"``) -> the same dicts with the ``stacked`` images ``(H, W, 1)`` replaced
    by their k-slice stacks ``(H, W, k)`` (:func:`ctmri_tf.context.tf_stack_neighbours`)
    among the slices of the same modality and subject, in ``slice_index`` order. With
    ``shuffle`` the volumes come in a seeded random order (the caller shuffles the slices)."""
    def key(example):
        name = tf.strings.join([tf.strings.as_string(example["modality"]),
                                example["subject_id"]], "/")
        return tf.strings.to_hash_bucket_strong(name, 2 ** 62, [0x63746d72, 0x32703564])

    def stacks(volume):
        subjects = volume["subject_id"]
        same = tf.debugging.assert_equal(  # a hash collision must not mix two volumes
            tf.reduce_all(tf.logical_and(tf.equal(subjects, subjects[0]),
                                         tf.equal(volume["modality"], volume["modality"][0]))),
            True, message="2.5-D grouping mixed two volumes")
        with tf.control_dependencies([same]):
            order = tf.argsort(volume["slice_index"], stable=True)
        volume = {name: tf.gather(values, order) for name, values in volume.items()}
        for name in stacked:
            volume[name] = context.tf_stack_neighbours(volume[name], k)
        return tf.data.Dataset.from_tensor_slices(volume)

    volumes = ds.group_by_window(key, lambda _, window: window.batch(_WHOLE_VOLUME),
                                 window_size=_WHOLE_VOLUME)
    if shuffle:
        volumes = volumes.shuffle(VOLUME_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    return volumes.flat_map(stacks)


def _modality_id(modality: str) -> int:
    if modality not in MODALITIES:
        raise CtmriInputError(None, f"modality must be one of {MODALITIES}, got {modality!r}")
    return MODALITIES.index(modality)


# ------------------------------------------------------------------------------------ pipelines

def unpaired_batches(split: str, batch_size: int, image_size, *, mask_inputs: bool = True,
                     augment: bool = False, seed: int = 0, shuffle: bool = True,
                     repeat: bool = False, fit: str = "resize",
                     shuffle_buffer: int = SHUFFLE_BUFFER,
                     drop_remainder: bool = False, config: str | CtmriConfig = "synthetic",
                     data_dir: str | os.PathLike | None = None,
                     context_slices: int = 1) -> tf.data.Dataset:
    """CT and MRI batches for unpaired translation (CycleGAN, StarGAN).

    The CT slices and the MRI slices of ``split`` are two streams, each shuffled with its own
    seed (``seed`` and ``seed + 1``) and augmented with its own random transforms, then zipped:
    position ``i`` of ``"ct"`` and of ``"mri"`` are unrelated slices.

    Args:
        split: tfds split (expression).
        batch_size: examples per batch (per side).
        image_size: model size, ``int`` or ``(height, width)`` in pixels.
        mask_inputs: set the background (body mask 0) to -1.
        augment: random flip / rotation / zoom, per side.
        seed: shuffling and augmentation seed.
        shuffle: shuffle the examples (off: file order).
        repeat: repeat each side forever (otherwise one pass; the zip ends with the shorter side).
        fit: ``"resize"`` or ``"crop"`` to ``image_size``.
        shuffle_buffer: examples held in each shuffle buffer.
        drop_remainder: drop a last, smaller batch.
        config, data_dir: which built dataset (see :func:`load`).
        context_slices: 1 (2-D) or 3 / 5: each image is the slice and its neighbours as
            channels (see the module docstring).

    Returns:
        Dataset of ``{"ct": (B, H, W, k), "mri": (B, H, W, k)}`` float32 in [-1, 1] with
        ``k = context_slices`` (each slice masked with its own body mask).
    """
    size = _check(batch_size, image_size, fit)
    k = context.check_context_slices(context_slices, "context_slices")

    def side(modality: str, side_seed: int) -> tf.data.Dataset:
        label = _modality_id(modality)

        def to_model(example):
            x = _fit_image(_unit(example["image"], modality, example["intensity_range"]),
                           size, fit)
            if mask_inputs:
                x = _background_to_minus_one(x, _fit_mask(example["mask"], size, fit))
            if k == 1:
                return x
            return {"image": x, "subject_id": example["subject_id"],
                    "modality": example["modality"], "slice_index": example["slice_index"]}

        ds = load(split, config=config, data_dir=data_dir, shuffle_files=shuffle, seed=side_seed,
                  decode_counterpart=False)
        ds = ds.filter(lambda example: tf.equal(example["modality"], label))
        ds = ds.map(to_model, num_parallel_calls=AUTOTUNE, deterministic=True)
        if k > 1:
            ds = _context_slices(ds, k, ("image",), shuffle=shuffle, seed=side_seed)
            ds = ds.map(lambda example: example["image"])
        ds = _batched(ds, batch_size, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
                      seed=side_seed, repeat=repeat, drop_remainder=drop_remainder)
        if augment:
            ds = ds.map(_augmenter(side_seed, with_masks=False))
        return ds

    ds = tf.data.Dataset.zip({"ct": side("ct", seed), "mri": side("mri", seed + 1)})
    return ds.prefetch(AUTOTUNE)


def paired_batches(split: str, batch_size: int, image_size, source: str = "mri", *,
                   mask_inputs: bool = True, augment: bool = False, seed: int = 0,
                   shuffle: bool = True, repeat: bool = False, fit: str = "resize",
                   shuffle_buffer: int = SHUFFLE_BUFFER, drop_remainder: bool = False,
                   config: str | CtmriConfig = "synthetic",
                   data_dir: str | os.PathLike | None = None, context_slices: int = 1,
                   stack_target: bool = False) -> tf.data.Dataset:
    """Registered source/target pairs (supervised translation, evaluation against the truth).

    Only examples of modality ``source`` with a counterpart are used; the target is that
    counterpart (the other modality, same subject and slice).

    Args:
        source: ``"mri"`` (MRI -> CT) or ``"ct"`` (CT -> MRI).
        mask_inputs: set the background (the source's body mask 0) to -1 in source and target
            (after augmentation too, with the transformed mask).
        augment: one random flip / rotation / zoom per pair, applied to source, target and mask.
        context_slices: 1 (2-D) or 3 / 5: ``source`` is the slice and its neighbours of the
            source volume as channels (see the module docstring); ``target`` and ``mask`` stay
            the centre slice's.
        stack_target: with ``context_slices`` > 1, ``target`` is a stack too (the registered
            counterparts of the source's slices, in the same order): StarGAN's paired training
            feeds both halves to the generator.
        Other arguments as in :func:`unpaired_batches`.

    Returns:
        Dataset of dicts: ``source`` (B, H, W, k) and ``target`` (B, H, W, 1), or (B, H, W, k)
        with ``stack_target``, float32 [-1, 1] (``k = context_slices``; channel ``k // 2`` the
        centre slice); ``mask`` (B, H, W, 1) float32 {0, 1} (the centre source slice's body
        mask); ``source_range``, ``target_range`` (B, 2) float32, the physical (low, high) of
        each side's centre slice, so that ``intensity.from_unit(x, modality, range)`` gives HU /
        MR signal back; ``subject_id`` (B,) string; ``slice_index`` (B,) int32 (the centre).
    """
    size = _check(batch_size, image_size, fit)
    label = _modality_id(source)
    target = MODALITIES[1 - label]
    k = context.check_context_slices(context_slices, "context_slices")

    def to_model(example):
        mask = _fit_mask(example["mask"], size, fit)
        src = _fit_image(_unit(example["image"], source, example["intensity_range"]), size, fit)
        tgt = _fit_image(_unit(example["counterpart"], target, example["counterpart_range"]),
                         size, fit)
        if mask_inputs:
            src, tgt = _background_to_minus_one(src, mask), _background_to_minus_one(tgt, mask)
        return {"source": src, "target": tgt, "mask": mask,
                "source_range": tf.cast(example["intensity_range"], tf.float32),
                "target_range": tf.cast(example["counterpart_range"], tf.float32),
                "subject_id": example["subject_id"], "slice_index": example["slice_index"],
                **({"modality": example["modality"]} if k > 1 else {})}

    ds = load(split, config=config, data_dir=data_dir, shuffle_files=shuffle, seed=seed)
    ds = ds.filter(lambda e: tf.logical_and(tf.equal(e["modality"], label), e["has_counterpart"]))
    ds = ds.map(to_model, num_parallel_calls=AUTOTUNE, deterministic=True)
    if k > 1:
        stacked = ("source", "target") if stack_target else ("source",)
        ds = _context_slices(ds, k, stacked, shuffle=shuffle, seed=seed)
        ds = ds.map(lambda e: {name: value for name, value in e.items() if name != "modality"})
    source_channels = k
    ds = _batched(ds, batch_size, shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed,
                  repeat=repeat, drop_remainder=drop_remainder)
    if augment:
        joint = _augmenter(seed, with_masks=True)

        def augment_pair(batch):
            both, mask = joint(tf.concat([batch["source"], batch["target"]], axis=-1),
                               batch["mask"])
            if mask_inputs:  # interpolation blurs the edge: mask again with the moved mask
                if k == 1:
                    both = _background_to_minus_one(both, mask)
                else:  # the centre slices only: the neighbours' bodies differ from the centre's
                    centre = [context.centre_channel(k), source_channels
                              + (context.centre_channel(k) if stack_target else 0)]
                    channels = [_background_to_minus_one(both[..., c:c + 1], mask)
                                if c in centre else both[..., c:c + 1]
                                for c in range(both.shape[-1])]
                    both = tf.concat(channels, axis=-1)
            return {**batch, "source": both[..., :source_channels],
                    "target": both[..., source_channels:], "mask": mask}

        ds = ds.map(augment_pair)
    return ds.prefetch(AUTOTUNE)


def segmentation_batches(split: str, batch_size: int, image_size, *, augment: bool = False,
                         modality: str | None = None, seed: int = 0, shuffle: bool = True,
                         repeat: bool = False, fit: str = "resize",
                         shuffle_buffer: int = SHUFFLE_BUFFER, drop_remainder: bool = False,
                         config: str | CtmriConfig = "synthetic",
                         data_dir: str | os.PathLike | None = None) -> tf.data.Dataset:
    """Image and body mask pairs for the segmentation model.

    Args:
        augment: random flip / rotation / zoom applied jointly to image and mask (keras-cv's
            ``{"images", "segmentation_masks"}`` inputs), so they stay aligned.
        modality: ``"ct"``, ``"mri"`` or ``None`` (both).
        Other arguments as in :func:`unpaired_batches`.

    Returns:
        Dataset of ``(image, mask)``: image (B, H, W, 1) float32 [-1, 1] (background not
        masked), mask (B, H, W, 1) float32 {0, 1}.
    """
    size = _check(batch_size, image_size, fit)
    ds = load(split, config=config, data_dir=data_dir, shuffle_files=shuffle, seed=seed,
              decode_counterpart=False)
    if modality is not None:
        label = _modality_id(modality)
        ds = ds.filter(lambda e: tf.equal(e["modality"], label))
    ds = ds.map(lambda e: (_fit_image(_unit_any(e), size, fit), _fit_mask(e["mask"], size, fit)),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = _batched(ds, batch_size, shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed,
                  repeat=repeat, drop_remainder=drop_remainder)
    if augment:
        ds = ds.map(_augmenter(seed, with_masks=True))
    return ds.prefetch(AUTOTUNE)


def _unit_any(example) -> tf.Tensor:
    """[-1, 1] image of an example of either modality (chosen in the graph)."""
    image, value_range = example["image"], example["intensity_range"]
    return tf.where(tf.equal(example["modality"], 0), _unit(image, "ct", value_range),
                    _unit(image, "mri", value_range))


def _grow(outside: tf.Tensor, square: tf.Tensor) -> tf.Tensor:
    """One dilation step of an (H, W, 1) {0, 1} image: 3x3 square or 4-neighbour cross."""
    box = tf.nn.max_pool2d(outside[tf.newaxis], 3, 1, "SAME")[0]
    p = tf.pad(outside, [[1, 1], [1, 1], [0, 0]])
    cross = tf.reduce_max(tf.stack([outside, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2],
                                    p[1:-1, 2:]]), axis=0)
    return tf.where(square, box, cross)


def _classifier_augment(image: tf.Tensor, mask: tf.Tensor, is_mri: tf.Tensor,
                        size: tuple[int, int], seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One random view of a slice for the classifier (``modality_batches(augment=True)``).

    Args:
        image: (rows, cols) physical units (HU / MR signal).
        mask: (rows, cols) body mask {0, 1}.
        is_mri: scalar bool: MRI-only transforms (bias field, gamma) apply.
        size: the model size.
        seed: (2,) int64 stateless seed.

    Returns:
        ``(x (H, W, 1) [-1, 1], mask (H, W, 1) float32 {0, 1})``: flips (rows, cols), a random
        field of view (:data:`CLASSIFIER_FIELD_OF_VIEW`), MRI skull stripping
        (:data:`CLASSIFIER_SKULL_STRIP`, the mask then the stripped one), MRI bias field, coarser resolution
        (:data:`CLASSIFIER_RESOLUTION`), per-image percentile normalisation (as in serving), MRI
        gamma, Gaussian noise (:data:`CLASSIFIER_NOISE`), back to ``size``.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 13)
    u = lambda k, shape=(), low=0.0, high=1.0: tf.random.stateless_uniform(
        shape, seeds[k], low, high)
    image = tf.cast(image, tf.float32)
    background = tf.reduce_min(tf.where(tf.math.is_finite(image), image, 0.0))
    both = tf.stack([image - background, tf.cast(mask > 0, tf.float32)], axis=-1)  # pad = bg
    both = tf.where(u(0) < 0.5, tf.reverse(both, [1]), both)
    both = tf.where(u(1) < 0.5, tf.reverse(both, [0]), both)
    shape = tf.shape(both)[:2]
    scale = tf.exp(u(2, (2,), *[math.log(v) for v in CLASSIFIER_FIELD_OF_VIEW]))
    view = tf.maximum(tf.cast(tf.round(tf.cast(shape, tf.float32) * scale), tf.int32), 4)
    padded = tf.maximum(shape, view)
    before = tf.cast(u(3, (2,)) * tf.cast(padded - shape + 1, tf.float32), tf.int32)
    before = tf.minimum(before, padded - shape)
    paddings = tf.concat([tf.stack([before, padded - shape - before], axis=1), [[0, 0]]], 0)
    both = tf.pad(both, paddings)
    start = tf.cast(u(4, (2,)) * tf.cast(padded - view + 1, tf.float32), tf.int32)
    start = tf.minimum(start, padded - view)
    both = tf.slice(both, tf.concat([start, [0]], 0), tf.concat([view, [2]], 0))
    x, moved_mask = both[..., 0] + background, both[..., 1:]
    # MRI skull stripping: 0 outside the body mask eroded by `depth` pixels (the outside grown
    # by alternating 3x3 square and 4-neighbour steps: an octagon, close to a disk)
    probability, (low, high) = CLASSIFIER_SKULL_STRIP
    depth = tf.cast(tf.round(u(12, (), low, high) * tf.cast(view[0], tf.float32)), tf.int32)
    depth = tf.where(is_mri & (u(11) < probability), depth, 0)
    outside = tf.while_loop(
        lambda i, o: i < depth,
        lambda i, o: (i + 1, _grow(o, square=tf.equal(i % 2, 1))),
        (tf.constant(0), 1.0 - moved_mask))[1]
    stripped = 1.0 - outside
    x = tf.where(depth > 0, x * stripped[..., 0], x)
    moved_mask = tf.where(depth > 0, stripped, moved_mask)
    # MRI bias field: exp(a * ramp), the ramp along a random direction, in [-1, 1]
    angle = u(5, (), 0.0, 6.283185)
    rows = tf.linspace(-1.0, 1.0, view[0])[:, None]
    cols = tf.linspace(-1.0, 1.0, view[1])[None, :]
    ramp = (tf.cos(angle) * rows + tf.sin(angle) * cols) / 1.4142135
    field = tf.exp(u(6, (), -CLASSIFIER_MRI_BIAS, CLASSIFIER_MRI_BIAS) * ramp)
    x = tf.where(is_mri, x * field, x)
    # a coarser scan (resolution / r), normalised by its own percentiles as a served image is
    coarse = tf.cast(tf.round(tf.constant(size, tf.float32) / u(8, (), *CLASSIFIER_RESOLUTION)),
                     tf.int32)
    x = tf.image.resize(x[..., tf.newaxis], tf.maximum(coarse, 2), method="bilinear",
                        antialias=True)[..., 0]
    unit = intensity.percentile_to_unit(x)
    gamma = tf.exp(u(7, (), *[math.log(v) for v in CLASSIFIER_MRI_GAMMA]))
    unit = tf.where(is_mri, 2.0 * tf.pow((unit + 1.0) / 2.0, gamma) - 1.0, unit)
    # noise at the coarse resolution: white at r = 1, grainy like a low-resolution scan above
    unit = unit + tf.random.stateless_normal(tf.shape(unit), seeds[9]) * u(10) * CLASSIFIER_NOISE
    unit = tf.image.resize(unit[..., tf.newaxis], size, method="bilinear")
    unit = tf.clip_by_value(unit, -1.0, 1.0)
    moved_mask = tf.cast(tf.image.resize(moved_mask, size, method="nearest") > 0.5, tf.float32)
    return unit, moved_mask


def modality_batches(split: str, batch_size: int, image_size, *, mask_inputs: bool = False,
                     augment: bool = False, seed: int = 0, shuffle: bool = True,
                     repeat: bool = False, fit: str = "resize",
                     shuffle_buffer: int = SHUFFLE_BUFFER, drop_remainder: bool = False,
                     config: str | CtmriConfig = "synthetic",
                     data_dir: str | os.PathLike | None = None) -> tf.data.Dataset:
    """Images labelled with their modality, for the CT/MRI classifier.

    Each slice is mapped to [-1, 1] by its own 0.5 % / 99.5 % percentiles,
    :func:`ctmri_tf.intensity.percentile_to_unit`, whatever its modality (then resized or
    cropped): the CT window and the MRI volume scale would tell the classifier the label through
    the value range, and a served image comes without its modality. The exported ``classify``
    signature normalises the same way.

    Args:
        mask_inputs: set the background to -1 (off by default: the classifier sees what a user
            would give it).
        augment: a new random view of every slice each time it is drawn
            (:func:`_classifier_augment`: flips, field of view / size / spacing, resolution,
            noise; MRI bias field and contrast gamma), seeded by ``seed`` and the example's
            position in the (shuffled, repeated) stream, so the pipeline stays deterministic
            and two epochs differ. Not the keras-cv flip / rotation / zoom of the other
            pipelines.
        Other arguments as in :func:`unpaired_batches`.

    Returns:
        Dataset of ``(image, label)``: image (B, H, W, 1) float32 [-1, 1] (each slice's own
        percentiles), label (B,) int32, 0 = CT, 1 = MRI.
    """
    size = _check(batch_size, image_size, fit)

    def to_model(example):
        x = _fit_image(intensity.percentile_to_unit(tf.cast(example["image"], tf.float32)),
                       size, fit)
        if mask_inputs:
            x = _background_to_minus_one(x, _fit_mask(example["mask"], size, fit))
        return x, tf.cast(example["modality"], tf.int32)

    def augmented(index, example):
        x, mask = _classifier_augment(example["image"], example["mask"],
                                      tf.equal(example["modality"], 1), size,
                                      tf.stack([tf.constant(seed, tf.int64), index]))
        if mask_inputs:
            x = _background_to_minus_one(x, mask)
        return x, tf.cast(example["modality"], tf.int32)

    ds = load(split, config=config, data_dir=data_dir, shuffle_files=shuffle, seed=seed,
              decode_counterpart=False)
    if not augment:
        ds = ds.map(to_model, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = _batched(ds, batch_size, shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed,
                      repeat=repeat, drop_remainder=drop_remainder)
        return ds.prefetch(AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.enumerate().map(augmented, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE,
                  deterministic=True)
    return ds.prefetch(AUTOTUNE)

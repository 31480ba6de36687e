"""One call from a raw CT or MRI scan to the translated scan: ``ctmri translate`` as library code.

    models = ModelSet("exports/")                       # or a training run folder
    translate_file("mri.nii.gz", "synthetic_ct.nii.gz", models=models)    # --to inferred: ct

Pipeline (:func:`translate_file`; :func:`translate_volume` is steps 3-6 on an in-memory volume):

1. read INPUT with :func:`ctmri_tf.io.read_volume`: a DICOM series folder or file, a NIfTI
   volume, or PNG/JPEG/TIFF image(s) (one slice, or a folder of slices in natural name order).
   A DICOM folder of several series gives its largest axial CT/MR series (localizers skipped,
   everything skipped named in a warning) or the one ``series`` (``--series UID``) names;
2. decide the source modality: ``source`` (``--from``) when given, else the DICOM Modality tag
   (a tag other than CT/MR is refused, :func:`ctmri_tf.modality_rules.check_dicom_modality`),
   else the physics rules of :mod:`ctmri_tf.modality_rules` (air below -200 -> CT; no negative
   value weighs towards MRI), else the exported classifier's majority vote over the slices
   (:func:`classify_modality`, calibrated probabilities); a vote whose confidence is below
   ``min_confidence`` (:data:`MIN_CONFIDENCE`) is refused, as is having no classifier, with an
   error asking for ``--from``. The rule that decided is logged once. The target is the other
   modality unless ``to`` is given;
3. body mask of the source: the exported ``segmentation`` model (``segment_with_range``; slices
   resampled to the pixel spacing it was trained at and tiled at the size it was exported for
   when its export records the spacing (as in step 5), else resized to that size; probabilities
   back on the input grid bilinearly, argmax) when the models hold one (and ``use_segmenter``),
   else :func:`ctmri_tf.body_mask.body_mask`
   (thresholds, largest component). For the segmentation model an MRI is scaled by its
   whole-volume percentiles (the body is not known yet);
4. map to model space [-1, 1] as in training (``ctmri_tf.data``): CT through the CT window
   :data:`ctmri_tf.intensity.CT_WINDOW_HU`, MRI through its percentile scale fitted *inside the
   body mask* (``fit_mri_scale(volume, mask)``, as the tfds builder does); the background
   (outside the mask) is set to -1 (``mask_inputs``, as the training presets do);
5. translate slice by slice in batches of ``batch_size`` (tqdm progress bar) at the model's
   *physical* scale: each slice is resampled from its own pixel spacing (``Volume.spacing``) to
   the spacing the generator was trained at (:meth:`ModelSet.pixel_spacing`; bilinear,
   antialiased when down-sampling), padded with background (-1) to the model's field of view
   :meth:`ModelSet.image_size` when smaller, cut into tiles of that size overlapping by at least
   ``tile_overlap`` (:data:`TILE_OVERLAP`, 0.5 as nnU-Net) and blended with nnU-Net's Gaussian
   importance window when larger, translated, and resampled back exactly onto the input grid
   (:func:`ctmri_tf.tiling.predict_physical`). When the models do not record their training
   spacing (exports and run folders from before it was recorded) each batch is instead resized
   (bilinear, antialiased) to the image size and back, whatever its pixel spacing, with a
   warning (once per :class:`ModelSet`). A 2.5-D generator (:meth:`ModelSet.context_slices`
   k = 3 or 5: a run's ``model.context_slices``, an export's ``context_slices`` in
   ``assets.extra/ctmri_export.json``; 1 when neither records it) is fed each slice with its
   neighbours as k channels (:func:`ctmri_tf.context.stack_neighbours`, replicate padding at
   the volume's ends, as in training), resampled and tiled together, and gives the centre
   slice. Test-time augmentation (``tta``, default
   :data:`DEFAULT_TTA` ``"lr"``): every tile is also translated mirrored left-right (``"lr+ud"``:
   and up-down, and both), mirrored back, and the passes averaged in model space; their
   per-voxel standard deviation is the *uncertainty* (:func:`ctmri_tf.tiling.predict_tiled`);
6. back to physical units: CT output in HU (``unit_to_ct``, [-1024, 3000]); MRI output as the
   *scaled MR signal* [0, 1] (:data:`TRANSLATED_MRI_RANGE`: MRI has no absolute scale; -1 -> 0,
   +1 -> 1, the same convention as the SavedModels' ``translate`` signature). Outside the body
   the output is air: :data:`AIR_HU` (-1000 HU) for CT, 0 for MRI. The uncertainty is the
   model-space standard deviation times the slope of that map (2012 HU per model unit for CT,
   0.5 for the [0, 1] MRI scale), 0 outside the body;
7. write OUTPUT in the kind of INPUT, atomically (never over the input, never over an existing
   path unless ``overwrite``): NIfTI with the input's affine and header
   (``write_nifti(reference=input)``); a DICOM series folder with new Study/Series/SOP UIDs, the
   target Modality, the input's patient tags and FrameOfReferenceUID and every input slice's
   exact ImagePositionPatient (``write_dicom_series(reference=input)``; CT in whole HU; uneven
   spacing and gantry tilt kept as read); 16-bit PNG (a file for a one-image
   input, a folder of ``<input stem>.png`` for a folder of slices): CT as ``HU + 1024`` (what
   :func:`ctmri_tf.io.read_image` reads back as HU), MRI as the scaled signal [0, 1] (the
   translated image's own percentile range) stretched over 0..65535. With ``uncertainty``
   (``--uncertainty``) the uncertainty map is written beside it as ``<output stem>_uncertainty``
   (:func:`uncertainty_path`): a NIfTI file like a NIfTI output, a PNG file / folder of PNGs
   like a PNG output (the same 16-bit encoding, so :func:`ctmri_tf.io.read_image` reads a CT's
   back in HU), and for a DICOM output a NIfTI file ``<output folder>_uncertainty.nii.gz`` on
   the input's grid (a DICOM series would store it in whole HU, and could be mistaken for an
   image of the patient). It is written atomically with the output: both appear, or neither.

Model lookup (:class:`ModelSet`), ``models`` being:

* a training run folder (it holds ``config.json``): a StarGAN run or a CycleGAN run (both
  generators), its newest checkpoint loaded through the experiment registry
  (``ctmri_tf.experiments.get(...).load``), run at the run's
  ``data.image_size``; no segmentation model or classifier then;
* an export base folder (``python -m export.saved_model``, TF Serving's layout
  ``<base>/<name>/<version>/``, the highest version is used): the translator is ``stargan``
  (signature ``translate_with_ranges``) when that folder exists, else ``cyclegan_mri2ct`` /
  ``cyclegan_ct2mri`` for the direction asked. ``segmentation`` (``segment_with_range``) and
  ``classifier`` (``classify``) are used when present. The translation export records the size
  and pixel spacing its generator was trained at (``assets.extra/ctmri_export.json``:
  ``training_image_size``, ``training_pixel_spacing_mm``); for an older export without them the
  translator runs at ``image_size`` when given, else at the segmentation export's size (both are
  trained on the same data), else at the input's own size (rounded to a multiple of 4, the
  generators' down-sampling factor).

Units: CT in HU, MRI in the scanner's signal units (input) or the [0, 1] scaled signal (output),
model space [-1, 1], image sizes in pixels ``(rows, cols)``, pixel spacings in mm ``(row, col)``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
import pydicom
from tqdm.auto import tqdm

from ctmri_tf import intensity, tiling
from ctmri_tf.context import check_context_slices, stack_neighbours
from ctmri_tf.atomic import atomic_output, check_output_path
from ctmri_tf.body_mask import body_mask
from ctmri_tf.data_card import DataCard, OutOfDistributionWarning, compare, describe
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io import (MODALITIES, Volume, read_volume, write_dicom_series, write_nifti,
                         write_png)
from ctmri_tf.io.image2d import CT_16BIT_OFFSET_HU
from ctmri_tf.io.nifti import is_nifti_path
from ctmri_tf.io.volume import check_finite
from ctmri_tf.modality_rules import (NO_EVIDENCE, PhysicsEvidence, check_dicom_modality, combine,
                                     physics_evidence)

AIR_HU = -1000.0
"""CT output outside the body, in HU."""
MRI_BACKGROUND = 0.0
"""MRI output outside the body (scaled MR signal)."""
TRANSLATED_MRI_RANGE = (0.0, 1.0)
"""Scaled MR signal that model space -1 and +1 map to in a translated MRI (the SavedModels'
``export.signatures.MRI_OUTPUT_RANGE``)."""
PNG_MAX = 65535
"""16-bit PNG output: CT stores ``HU + 1024`` (clipped to 0..65535), MRI ``[0, 1] * 65535``."""
GENERATOR_MULTIPLE = 4
"""Generator input sizes must be multiples of this (two stride-2 down-samplings)."""
TILE_OVERLAP = tiling.DEFAULT_MIN_OVERLAP
"""Neighbouring tiles of a slice larger than the model's field of view share at least this
fraction of a tile (:func:`ctmri_tf.tiling.predict_tiled`; 0.5, nnU-Net's half-tile step;
``ctmri translate --tile-overlap``). A slice that fits in one tile is padded: no extra cost."""
TTA_CHOICES = ("none", "lr", "lr+ud")
"""``ctmri translate --tta``: no mirroring, left-right, left-right and up-down."""
DEFAULT_TTA = "lr"
"""Test-time augmentation of translation: the slice and its left-right mirror, as nnU-Net and
the SynthRAD 2023 leaders mirror along the axes they trained with mirroring. The generators are
trained with random *horizontal* flips only (``ctmri_tf.data``), so a left-right mirrored slice
is in their training distribution and an up-down one (anatomy upside down) is not; ``"lr+ud"``
is available (4 passes) but off by default. Costs 2 model calls per tile."""
UNCERTAINTY_SUFFIX = "_uncertainty"
"""``<output stem>_uncertainty.<same kind>``: where ``--uncertainty`` writes its map."""
MIN_CONFIDENCE = 0.9
"""The classifier's (calibrated, physics-weighted) confidence below which ``translate_file``
abstains and asks for ``--from`` (``ctmri translate --min-confidence``)."""
RUN_CONFIG = "config.json"
STARGAN_EXPORT = "stargan"
SEGMENTATION_EXPORT = "segmentation"
CLASSIFIER_EXPORT = "classifier"
TRANSLATE_SIGNATURE = "translate_with_ranges"
SEGMENT_SIGNATURE = "segment_with_range"
CLASSIFY_SIGNATURE = "classify"
_UNIT_RANGE = (-1.0, 1.0)
"""A ``(low, high)`` that maps [-1, 1] onto itself: passed as the ``*_range`` of the exported
translators, whose inputs and ``translated_unit`` outputs are then model space directly (so the
SavedModel and the checkpoint paths share one normalisation, done here)."""


def cyclegan_export_name(source: str, target: str) -> str:
    """``cyclegan_mri2ct`` / ``cyclegan_ct2mri``: the default served name of that direction."""
    return f"cyclegan_{source}2{target}"


def _other(modality: str) -> str:
    return MODALITIES[1 - MODALITIES.index(modality)]


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if np.ndim(size) == 0 else tuple(int(v) for v in size)


def _spacing(value, path, what: str) -> tuple[float, float]:
    """``(row, col)`` mm from one number or a pair, all positive and finite."""
    values = (value, value) if np.ndim(value) == 0 else tuple(value)
    try:
        pair = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
        raise CtmriInputError(path, f"{what} must be two positive mm values (row, col), "
                                    f"got {value!r}")
    return pair


def _resize(images: np.ndarray, size: tuple[int, int], *, antialias: bool) -> np.ndarray:
    """``(B, H, W, C)`` float32 -> ``(B, *size, C)``, bilinear (unchanged when already there)."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    import tensorflow as tf
    return tf.image.resize(images, size, method="bilinear", antialias=antialias).numpy()


# ----------------------------------------------------------------------------- models

def _latest_version(model_dir: Path) -> Path:
    from ctmri_tf.export.saved_model import model_versions

    versions = [v for v in model_versions(model_dir)
                if (model_dir / str(v) / "saved_model.pb").is_file()]
    if not versions:
        raise CtmriInputError(model_dir, "holds no exported version (<version>/saved_model.pb); "
                                         "export one with python -m export.saved_model")
    return model_dir / str(versions[-1])


def _load_saved_model(model_dir: Path, signature: str):
    """``(version folder, loaded SavedModel, signature function)`` of the newest version under
    ``model_dir`` (keep the loaded object with the function: it owns the variables)."""
    import tensorflow as tf

    version_dir = _latest_version(model_dir)
    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as error:  # corrupt or foreign files: OSError, DecodeError, NotFoundError
        raise CtmriInputError(version_dir, f"cannot be loaded as a SavedModel "
                                           f"({type(error).__name__}: {error})") from error
    if signature not in loaded.signatures:
        raise CtmriInputError(version_dir, f"has no {signature!r} signature (it has: "
                                           f"{', '.join(sorted(loaded.signatures)) or 'none'}); "
                                           f"export it with python -m export.saved_model")
    return version_dir, loaded, loaded.signatures[signature]


def _fixed_image_size(function, version_dir: Path) -> tuple[int, int]:
    """The ``(height, width)`` a fixed-size segmentation export accepts (exports that record no
    ``training_image_size``). ``export.signatures.Segmenter`` pins it with
    ``tf.ensure_shape((None, height, width, 1))`` in the graph of its signatures, which is where
    it is read from (a SavedModel keeps no Python attributes)."""
    graph_def = function.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    for node in nodes:
        if node.op == "EnsureShape":
            dims = [d.size for d in node.attr["shape"].shape.dim]
            if len(dims) == 4 and dims[1] > 0 and dims[2] > 0:
                return int(dims[1]), int(dims[2])
    raise CtmriInputError(version_dir, "cannot tell which image size this segmentation export "
                                       "takes (no fixed-size input in its graph); re-export it "
                                       "with export.saved_model.export_segmentation")


class ModelSet:
    """The translation, segmentation and classification models of one folder, each loaded once,
    on first use (see the module docstring for the lookup).

    Args:
        folder: an export base folder (``<folder>/stargan/<version>/``...) or a StarGAN/CycleGAN
            training run folder (``config.json``, ``checkpoints/``).
        image_size: pixels ``int`` or ``(rows, cols)`` the generator runs at (multiples of 4;
            with a known :meth:`pixel_spacing` the size of its tiles, its field of view);
            default: a run's ``data.image_size``, else the training size recorded with the
            translation export (``export.saved_model.read_export_info``), else the segmentation
            export's size, else each input's own size rounded to a multiple of 4.
        use_segmenter: use the exported segmentation model for the body mask when there is one
            (``False``: always the thresholds of :func:`ctmri_tf.body_mask.body_mask`).
        pixel_spacing: mm (one number or ``(row, col)``) the generator was trained at; default
            a run's ``data.pixel_spacing_mm``, else the ``training_pixel_spacing_mm`` recorded
            with the translation export, else unknown (inputs resized by matrix size).

    Raises:
        CtmriInputError: the folder is missing, is neither kind, or a run of another experiment;
            a bad ``image_size`` or ``pixel_spacing``. Loading a model later raises it naming
            the model folder and, for a missing signature, the signature.
    """

    def __init__(self, folder: str | os.PathLike, *, image_size=None,
                 use_segmenter: bool = True, pixel_spacing=None):
        self.folder = Path(folder)
        self.use_segmenter = bool(use_segmenter)
        self._explicit_spacing = (None if pixel_spacing is None
                                  else _spacing(pixel_spacing, None, "the model pixel spacing"))
        if not self.folder.is_dir():
            raise CtmriInputError(self.folder, "models folder does not exist" if not
                                  self.folder.exists() else "is not a folder; --models takes an "
                                  "export base folder or a training run folder")
        self._explicit_size = None
        if image_size is not None:
            size = _pair(image_size)
            if len(size) != 2 or any(s < 2 * GENERATOR_MULTIPLE or s % GENERATOR_MULTIPLE
                                     for s in size):
                raise CtmriInputError(None, f"image size {image_size} must be multiples of "
                                            f"{GENERATOR_MULTIPLE}, at least "
                                            f"{2 * GENERATOR_MULTIPLE} pixels")
            self._explicit_size = size
        self.run_config = None
        self._cache: dict[str, Any] = {}
        config_path = self.folder / RUN_CONFIG
        if config_path.is_file():
            from ctmri_tf import configs

            self.run_config = configs.from_json(config_path.read_text(), source=str(config_path))
            if self.run_config.experiment not in ("stargan", "cyclegan"):
                raise CtmriInputError(config_path, f"is a {self.run_config.experiment!r} run; "
                                                   f"translation needs a stargan or cyclegan run "
                                                   f"folder or an export base folder")
        elif not any((self.folder / name).is_dir() for name in (
                STARGAN_EXPORT, cyclegan_export_name("mri", "ct"),
                cyclegan_export_name("ct", "mri"))):
            raise CtmriInputError(self.folder, f"holds no translation model: expected an export "
                                               f"base folder with {STARGAN_EXPORT}/<version>/ or "
                                               f"cyclegan_mri2ct/<version>/ (python -m "
                                               f"export.saved_model) or a training run folder "
                                               f"with {RUN_CONFIG}")

    # ------------------------------------------------------------------ what is there
    @property
    def is_run(self) -> bool:
        """True for a training run folder, False for an export base folder."""
        return self.run_config is not None

    @property
    def _segmentation_exported(self) -> bool:
        return not self.is_run and (self.folder / SEGMENTATION_EXPORT).is_dir()

    @property
    def has_segmenter(self) -> bool:
        """The body mask comes from the segmentation export (else from thresholds)."""
        return self.use_segmenter and self._segmentation_exported

    @property
    def has_classifier(self) -> bool:
        return not self.is_run and (self.folder / CLASSIFIER_EXPORT).is_dir()

    def image_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """``(rows, cols)`` the generator runs at for slices of ``input_size`` pixels (at the
        training spacing, when known: the tile size)."""
        if self._explicit_size is not None:
            return self._explicit_size
        if self.is_run:
            return _pair(self.run_config.data.image_size)
        trained = self._exported_training_size()
        if trained is not None:
            return trained
        if self._segmentation_exported:
            return self._segmenter[1]
        return tuple(max(2 * GENERATOR_MULTIPLE,
                         int(round(s / GENERATOR_MULTIPLE)) * GENERATOR_MULTIPLE)
                     for s in input_size)

    def pixel_spacing(self) -> tuple[float, float] | None:
        """mm ``(row, col)`` of the images the generator was trained on (the spacing inputs are
        resampled to), or None when the models do not say (see the class docstring)."""
        if self._explicit_spacing is not None:
            return self._explicit_spacing
        if self.is_run:
            recorded = self.run_config.data.pixel_spacing_mm
            return tuple(float(v) for v in recorded) if recorded else None
        recorded = self._exported_training_value("training_pixel_spacing_mm")
        return None if recorded is None else _spacing(recorded, self.folder,
                                                      "training_pixel_spacing_mm")

    def context_slices(self) -> int:
        """Slices the translation generator takes as channels: a run's
        ``model.context_slices``, an export's ``context_slices`` (the first translation export
        that records it, as :meth:`pixel_spacing`), else 1 (2-D; exports from before 2.5-D
        models).

        Raises:
            CtmriInputError: an export records a value other than 1, 3 or 5.
        """
        if self.is_run:
            return int(self.run_config.model.context_slices)
        recorded = self._exported_training_value("context_slices")
        if recorded is None:
            return 1
        try:
            return check_context_slices(recorded, "context_slices")
        except CtmriInputError as error:
            raise CtmriInputError(self.folder, f"translation export: {error.problem}") from None

    def _exported_training_size(self) -> tuple[int, int] | None:
        """The ``training_image_size`` recorded with the newest translation export (StarGAN,
        else CycleGAN MRI->CT, else CT->MRI), or None (older exports do not record it)."""
        size = self._exported_training_value("training_image_size")
        return None if size is None else _pair(size)

    def _exported_training_value(self, key: str):
        """``key`` of the export info of the first translation export (StarGAN, else CycleGAN
        MRI->CT, else CT->MRI) that records it, or None."""
        from ctmri_tf.export.saved_model import read_export_info

        cache_key = f"export info:{key}"
        if cache_key not in self._cache:                # read once per folder
            found = None
            for name in (STARGAN_EXPORT, cyclegan_export_name("mri", "ct"),
                         cyclegan_export_name("ct", "mri")):
                if (self.folder / name).is_dir():
                    found = read_export_info(_latest_version(self.folder / name)).get(key)
                    if found is not None:
                        break
            self._cache[cache_key] = found
        return self._cache[cache_key]

    def warn_matrix_resize(self, size: tuple[int, int]) -> None:
        """Warn (once per model set) that the translator's training spacing is unknown, so
        slices are resized to ``size`` pixels whatever their pixel spacing."""
        if self._cache.get("warned: matrix resize"):
            return
        self._cache["warned: matrix resize"] = True
        warnings.warn(f"{self.folder}: the translation model does not record the pixel spacing "
                      f"it was trained at (an export or run folder from before ctmri-tf "
                      f"recorded it), so slices are resized by matrix size to {size[0]} x "
                      f"{size[1]} px whatever their pixel spacing; export the model again from "
                      f"a run that records data.pixel_spacing_mm (a run folder: add it to its "
                      f"config.json), or pass ModelSet(pixel_spacing=...)", UserWarning,
                      stacklevel=4)

    def _export_dir(self, source: str, target: str) -> Path:
        if (self.folder / STARGAN_EXPORT).is_dir():
            return self.folder / STARGAN_EXPORT
        name = cyclegan_export_name(source, target)
        if not (self.folder / name).is_dir():
            raise CtmriInputError(self.folder, f"has no {source}->{target} translation model: "
                                               f"expected {STARGAN_EXPORT}/<version>/ or "
                                               f"{name}/<version>/")
        return self.folder / name

    def describe_translator(self, source: str, target: str) -> str:
        """Which model translates ``source`` -> ``target`` (a folder, for the user)."""
        if self.is_run:
            return f"{self.run_config.experiment} run {self.folder} (newest checkpoint)"
        return str(_latest_version(self._export_dir(source, target)))

    def data_card(self, source: str, target: str) -> DataCard | None:
        """What the ``source`` -> ``target`` translator was trained on: the ``"data_card"`` of
        its export info, or for a run folder the card of the run's config
        (``ctmri_tf.data_card.build_data_card``); None for an export made before data cards."""
        key = f"card:{source}->{target}"
        if key not in self._cache:
            from ctmri_tf.data_card import build_data_card, card_from_dict
            from ctmri_tf.export.saved_model import EXPORT_INFO, read_export_info

            if self.is_run:
                card = build_data_card(self.run_config)
            else:
                version_dir = _latest_version(self._export_dir(source, target))
                values = read_export_info(version_dir).get("data_card")
                card = (None if values is None
                        else card_from_dict(values, version_dir / EXPORT_INFO))
            self._cache[key] = card
        return self._cache[key]

    def describe_body_mask(self) -> str:
        if self.has_segmenter:
            return f"segmentation model {self._segmenter[0]}"
        return "thresholds (ctmri_tf.body_mask)"

    # ------------------------------------------------------------------ loading (once)
    def _translator(self, source: str, target: str) -> Callable[[np.ndarray], np.ndarray]:
        """``unit (B, H, W, 1) -> unit (B, H, W, 1)`` for ``source`` -> ``target``."""
        key = f"translator:{source}->{target}"
        if key not in self._cache:
            self._cache[key] = (self._run_translator(source, target) if self.is_run
                                else self._export_translator(source, target))
        return self._cache[key]

    def _run_translator(self, source: str, target: str):
        import tensorflow as tf

        from ctmri_tf import experiments

        experiment = self.run_config.experiment
        if experiment not in self._cache:             # the trained model(s), loaded once
            self._cache[experiment] = experiments.get(experiment).load(self.folder)
        if experiment == "stargan":
            generator = self._cache["stargan"]
            domain = MODALITIES.index(target)       # StarGAN's one-hot order: 0 = ct, 1 = mri

            def translate(unit):
                labels = tf.one_hot(tf.fill([unit.shape[0]], domain), len(MODALITIES))
                return np.asarray(generator([tf.constant(unit), labels], training=False))
            return translate
        generator = self._cache["cyclegan"][f"{source}->{target}"]
        return lambda unit: np.asarray(generator(tf.constant(unit), training=False))

    def _export_translator(self, source: str, target: str):
        import tensorflow as tf

        model_dir = self._export_dir(source, target)
        cache_key = f"export:{model_dir.name}"
        if cache_key not in self._cache:
            self._cache[cache_key] = _load_saved_model(model_dir, TRANSLATE_SIGNATURE)
        _, _, function = self._cache[cache_key]
        is_stargan = model_dir.name == STARGAN_EXPORT

        def translate(unit):
            n = unit.shape[0]
            ranges = tf.constant([_UNIT_RANGE] * n, tf.float32)
            inputs = {"image": tf.constant(unit), "source_range": ranges, "target_range": ranges}
            if is_stargan:
                inputs["target_domain"] = tf.constant([target] * n)
            return function(**inputs)["translated_unit"].numpy()
        return translate

    @cached_property
    def _segmenter(self):
        """``(version folder, (rows, cols), signature function, loaded SavedModel)``."""
        from ctmri_tf.export.saved_model import read_export_info

        version_dir, loaded, function = _load_saved_model(self.folder / SEGMENTATION_EXPORT,
                                                          SEGMENT_SIGNATURE)
        trained = read_export_info(version_dir).get("training_image_size")
        size = _pair(trained) if trained is not None else _fixed_image_size(function, version_dir)
        return version_dir, size, function, loaded

    @cached_property
    def segmentation_pixel_spacing(self) -> tuple[float, float] | None:
        """mm ``(row, col)`` the segmentation export was trained at (its export info), or
        None (an older export: slices are resized to its size instead)."""
        from ctmri_tf.export.saved_model import read_export_info

        version_dir = self._segmenter[0]
        recorded = read_export_info(version_dir).get("training_pixel_spacing_mm")
        return None if recorded is None else _spacing(recorded, version_dir,
                                                      "training_pixel_spacing_mm")

    @cached_property
    def _classifier(self):
        """``(version folder, loaded SavedModel, signature function)``."""
        return _load_saved_model(self.folder / CLASSIFIER_EXPORT, CLASSIFY_SIGNATURE)

    @property
    def classifier_dir(self) -> Path:
        return self._classifier[0]

    # ------------------------------------------------------------------ running
    def translate_unit(self, images_unit: np.ndarray, source: str, target: str) -> np.ndarray:
        """Translate a batch ``(B, H, W, k)`` in [-1, 1] (H, W multiples of 4; ``k`` =
        :meth:`context_slices`, each slice with its neighbours) -> ``(B, H, W, 1)``."""
        out = self._translator(source, target)(np.asarray(images_unit, np.float32))
        return np.asarray(out, np.float32)

    def segment(self, images: np.ndarray, modality: str, value_range,
                spacing=None) -> np.ndarray:
        """Body masks uint8 ``(B, H, W)`` {0, 1} of ``images`` ``(B, H, W)`` in physical units,
        mapped to [-1, 1] with ``value_range`` (HU window or MR signal scale) by the export.

        With the images' pixel ``spacing`` (mm) and a segmentation export that records its
        training spacing, the images are resampled to that spacing and tiled at the export's
        size (padding: ``value_range[0]``, i.e. -1); otherwise resized to its size."""
        import tensorflow as tf

        _, size, function, _ = self._segmenter
        images = np.asarray(images, np.float32)[..., None]

        def probabilities_of(batch):
            n = batch.shape[0]
            out = function(image=tf.constant(batch, tf.float32),
                           modality=tf.constant([modality] * n),
                           intensity_range=tf.constant([value_range] * n, tf.float32))
            return out["probabilities"].numpy()

        trained = self.segmentation_pixel_spacing
        if spacing is not None and trained is not None:
            probabilities = tiling.predict_physical(
                images, spacing, trained, size, probabilities_of,
                background=float(value_range[0]), min_overlap=TILE_OVERLAP,
                batch_size=len(images))
        else:
            probabilities = _resize(probabilities_of(_resize(images, size, antialias=True)),
                                    images.shape[1:3], antialias=False)
        return (np.argmax(probabilities, axis=-1) != 0).astype(np.uint8)

    @cached_property
    def _classifier_size(self) -> tuple[int, int] | None:
        """The ``training_image_size`` recorded with the classifier export (None: older
        exports; the slices are then classified at their own size)."""
        from ctmri_tf.export.saved_model import read_export_info

        size = read_export_info(self.classifier_dir).get("training_image_size")
        return None if size is None else _pair(size)

    def classify(self, images: np.ndarray) -> np.ndarray:
        """``(B, 2)`` probabilities (0 = ct, 1 = mri; calibrated when the export holds a
        temperature) of ``images`` ``(B, H, W)`` (any units: the export scales each image by its
        own percentiles), resized (bilinear, antialiased) to the classifier's training size when
        the export records it."""
        import tensorflow as tf

        _, _, function = self._classifier
        images = np.asarray(images, np.float32)[..., None]
        if self._classifier_size is not None:
            images = _resize(images, self._classifier_size, antialias=True)
        out = function(image=tf.constant(images))
        return out["probabilities"].numpy()


# ----------------------------------------------------------------------------- modality

@dataclasses.dataclass(frozen=True)
class ModalityVote:
    """The classifier's decision over a volume's slices.

    Attributes:
        modality: ``"ct"`` or ``"mri"``: the majority of the slices' labels (ties: the larger
            mean probability); with physics evidence, the larger combined probability.
        votes: slices labelled ``{"ct": n, "mri": m}``.
        confidence: probability of ``modality``, in [0, 1]: the mean over all slices, combined
            with the physics evidence when there is some (``modality_rules.combine``).
        classifier: the export that voted.
        classifier_confidence: the classifier's own mean probability of ``modality``.
        physics: the physics rule that weighed in (``""``: none).
    """

    modality: str
    votes: dict
    confidence: float
    classifier: Path
    classifier_confidence: float | None = None
    physics: str = ""

    def describe(self) -> str:
        n = sum(self.votes.values())
        text = f"classifier {self.classifier}: {self.votes[self.modality]} of {n} slices, "
        if not self.physics:
            return text + f"mean probability {self.confidence:.3f}"
        own = self.confidence if self.classifier_confidence is None else \
            self.classifier_confidence
        return text + (f"probability {self.confidence:.3f} with the physics evidence "
                       f"(classifier alone {own:.3f}; {self.physics})")


def classify_modality(volume: Volume, models: ModelSet, *, batch_size: int = 8,
                      evidence: PhysicsEvidence = NO_EVIDENCE) -> ModalityVote:
    """Decide ``volume``'s modality with the exported classifier (majority vote over slices).

    Args:
        evidence: what the voxel values say (``modality_rules.physics_evidence``); its
            likelihood ratio is combined with the classifier's mean MRI probability.

    Raises:
        CtmriInputError: naming the volume's file when ``models`` has no classifier.
    """
    if not models.has_classifier:
        raise CtmriInputError(volume.source or None,
                              f"cannot decide its modality: no DICOM Modality tag and no "
                              f"classifier in {models.folder}; pass --from ct|mri")
    probabilities = np.concatenate([models.classify(volume.data[i:i + batch_size])
                                    for i in range(0, volume.shape[0], batch_size)])
    labels = np.argmax(probabilities, axis=1)
    votes = {m: int(np.sum(labels == i)) for i, m in enumerate(MODALITIES)}
    means = probabilities.mean(axis=0)
    if evidence.mri_likelihood_ratio == 1.0:
        winner = max(range(len(MODALITIES)), key=lambda i: (votes[MODALITIES[i]], means[i]))
        return ModalityVote(MODALITIES[winner], votes, float(means[winner]),
                            models.classifier_dir, float(means[winner]))
    # with physics evidence the combined probability decides (the votes are still reported)
    p_mri = combine(float(means[1]), evidence.mri_likelihood_ratio)
    winner = 1 if p_mri > 0.5 else 0
    return ModalityVote(MODALITIES[winner], votes, p_mri if winner else 1.0 - p_mri,
                        models.classifier_dir, float(means[winner]), evidence.rule)


# ----------------------------------------------------------------------------- translation

def _check_target(source: str | None, to: str | None, path) -> str:
    if source not in MODALITIES:
        raise CtmriInputError(path or None, f"the source modality is unknown ({source!r}); "
                                            f"pass --from ct|mri")
    if to is None:
        return _other(source)
    if to not in MODALITIES:
        raise CtmriInputError(None, f"--to must be one of {', '.join(MODALITIES)}, got {to!r}")
    if to == source:
        raise CtmriInputError(path or None, f"is already {source.upper()}; --to {to} would "
                                            f"translate it to itself")
    return to


def _in_plane_spacing(volume: Volume) -> tuple[float, float]:
    """The volume's pixel spacing mm ``(row, col)``, checked."""
    return _spacing(tuple(volume.spacing)[1:3], volume.source or None, "the pixel spacing")


def _translate_slices(unit: np.ndarray, volume: Volume, models: ModelSet, source: str,
                      target: str, batch_size: int, *, tta: str | None = DEFAULT_TTA,
                      tile_overlap: float = TILE_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """Step 5 on a batch ``(B, H, W, k)`` in [-1, 1] of ``volume``'s slices (k-slice stacks,
    ``k = models.context_slices()``) -> ``(mean, std)`` of the ``tta`` passes, each
    ``(B, H, W, 1)`` float32 in model space: at the generator's training spacing with tiles of
    its size, else (unknown spacing) resized to its size and back (each pass), with
    :meth:`ModelSet.warn_matrix_resize`."""
    trained = models.pixel_spacing()

    def predict(batch):
        return models.translate_unit(batch, source, target)

    if trained is None:
        size = models.image_size(unit.shape[1:3])
        models.warn_matrix_resize(size)
        passes = tiling.predict_passes(_resize(unit, size, antialias=True), size, predict,
                                       batch_size=batch_size, tta=tta)
        back = _resize(passes.reshape(-1, *passes.shape[2:]).astype(np.float32),
                       unit.shape[1:3], antialias=False)
        mean, std = tiling.mean_and_std(back.reshape(len(passes), *unit.shape[:3], -1))
    else:
        spacing = _in_plane_spacing(volume)
        tile = models.image_size(tiling.resampled_size(unit.shape[1:3], spacing, trained))
        mean, std = tiling.predict_physical(unit, spacing, trained, tile, predict,
                                            background=-1.0, min_overlap=tile_overlap,
                                            batch_size=batch_size, tta=tta, return_std=True)
    return mean.astype(np.float32), std.astype(np.float32)


def _check_tta(tta: str | None, tile_overlap: float) -> str | None:
    """``tta`` as :mod:`ctmri_tf.tiling` takes it (``"none"`` -> None), ``tile_overlap``
    checked."""
    if tta not in (None, *TTA_CHOICES):
        raise CtmriInputError(None, f"--tta must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    if not (isinstance(tile_overlap, (int, float)) and 0.0 <= tile_overlap < 1.0):
        raise CtmriInputError(None, f"--tile-overlap must be a fraction of a tile in [0, 1), "
                                    f"got {tile_overlap!r}")
    return None if tta == "none" else tta


def _body_mask(volume: Volume, models: ModelSet, batch_size: int) -> np.ndarray:
    source = volume.modality
    try:
        if not models.has_segmenter:
            return body_mask(volume.data, source)
        value_range = (intensity.CT_WINDOW_HU if source == "ct"
                       else intensity.fit_mri_scale(volume.data).as_tuple())
        spacing = (None if models.segmentation_pixel_spacing is None
                   else _in_plane_spacing(volume))
        mask = np.concatenate([models.segment(volume.data[i:i + batch_size], source, value_range,
                                              spacing)
                               for i in range(0, volume.shape[0], batch_size)])
    except CtmriInputError as error:
        if error.path is not None:
            raise
        raise CtmriInputError(volume.source or None, error.problem) from None
    if not mask.any():
        raise CtmriInputError(volume.source or None, f"no body found: the "
                                                     f"{models.describe_body_mask()} marks "
                                                     f"every voxel as background")
    return mask


def translate_volume(volume: Volume, *, to: str | None = None, models: ModelSet,
                     batch_size: int = 8, progress: bool = False, tta: str | None = DEFAULT_TTA,
                     tile_overlap: float = TILE_OVERLAP) -> Volume:
    """Translate a CT (HU) or MRI (MR signal) volume to the other modality (steps 3-6 of the
    module docstring).

    Args:
        volume: its ``modality`` must be set (``"ct"`` or ``"mri"``).
        to: the target modality; default the other one.
        models: the :class:`ModelSet` to use.
        batch_size: slices per model call (tiles, when slices are tiled; each mirrored copy
            of a tile counts as one).
        progress: tqdm progress bar over the slices (stderr).
        tta: test-time augmentation: ``"lr"`` (default, :data:`DEFAULT_TTA`), ``"lr+ud"``,
            ``"none"`` / ``None``.
        tile_overlap: fraction of a tile neighbouring tiles share at least, in [0, 1).

    Returns:
        A new :class:`Volume` of the same shape, spacing and affine: HU for a CT target, the
        [0, 1] scaled MR signal for an MRI target, air (-1000 HU / 0) outside the body;
        ``modality`` the target, ``source`` ``""``, ``meta`` ``{"body_mask": uint8 (S, H, W),
        "source_modality", "source_range": (low, high) physical units mapped to [-1, 1],
        "uncertainty": float32 (S, H, W) or None, "tta": the mode}``. ``uncertainty`` is the
        per-voxel standard deviation over the TTA passes (``ddof=0``) in the output's units (HU
        / scaled MR signal), 0 outside the body; None without TTA (one pass).

    Raises:
        CtmriInputError: naming the volume's file: unknown source modality, ``to`` equal to
            it, non-finite voxels, no body, a constant MRI; model loading errors; an unknown
            ``tta`` or a ``tile_overlap`` outside [0, 1).
    """
    source = volume.modality
    target = _check_target(source, to, volume.source)
    if batch_size < 1:
        raise CtmriInputError(None, f"batch size must be at least 1, got {batch_size}")
    tta = _check_tta(tta, tile_overlap)
    data = np.asarray(volume.data, np.float32)
    if data.ndim != 3 or min(data.shape) < 1:
        raise CtmriInputError(volume.source or None, f"expected a (slices, rows, cols) volume, "
                                                     f"got shape {data.shape}")
    check_finite(data, volume.source or None)
    mask = _body_mask(volume, models, batch_size)
    if source == "ct":
        source_range = intensity.CT_WINDOW_HU
    else:
        try:
            source_range = intensity.fit_mri_scale(data, mask=mask).as_tuple()
        except CtmriInputError as error:
            raise CtmriInputError(volume.source or None, error.problem) from None
    unit = intensity.to_unit(data, source, source_range).astype(np.float32)
    unit[mask == 0] = -1.0
    stacks = stack_neighbours(unit, models.context_slices())    # (S, H, W, k); k = 1: 2-D
    target_range = None if target == "ct" else TRANSLATED_MRI_RANGE
    low, high = intensity.CT_WINDOW_HU if target == "ct" else TRANSLATED_MRI_RANGE
    out = np.empty_like(data)
    spread = np.empty_like(data)
    with tqdm(total=data.shape[0], unit="slice", desc=f"{source}->{target}",
              disable=not progress) as bar:
        for start in range(0, data.shape[0], batch_size):
            batch = stacks[start:start + batch_size]
            translated, std = _translate_slices(batch, volume, models, source, target,
                                                batch_size, tta=tta, tile_overlap=tile_overlap)
            out[start:start + len(batch)] = intensity.from_unit(translated[..., 0], target,
                                                                target_range)
            spread[start:start + len(batch)] = std[..., 0] * ((high - low) / 2.0)
            bar.update(len(batch))
    out[mask == 0] = AIR_HU if target == "ct" else MRI_BACKGROUND
    spread[mask == 0] = 0.0
    return Volume(data=out, modality=target, spacing=tuple(volume.spacing),
                  affine=np.array(volume.affine, dtype=np.float64), source="",
                  meta={"body_mask": mask, "source_modality": source,
                        "source_range": tuple(float(v) for v in source_range),
                        "uncertainty": spread if len(tiling.tta_passes(tta)) > 1 else None,
                        "tta": "none" if tta is None else tta})


# ----------------------------------------------------------------------------- files

def _input_kind(volume: Volume) -> str:
    """``"dicom"``, ``"nifti"``, ``"image"`` (one image file) or ``"images"`` (a folder)."""
    header = volume.meta.get("header")
    if isinstance(header, pydicom.Dataset):
        return "dicom"
    if isinstance(header, (nib.Nifti1Header, nib.Nifti2Header)):
        return "nifti"
    return "images" if Path(volume.source).is_dir() else "image"


def _check_paths(input_path: Path, output: Path, overwrite: bool) -> None:
    """Refuse an output that is, contains or lies inside the input (even with overwrite), and
    an existing output without overwrite."""
    inp, out = input_path.resolve(), output.resolve()
    if out == inp or inp.is_relative_to(out):
        raise CtmriInputError(output, f"is the input {input_path} or contains it; refusing to "
                                      f"write there, even with --overwrite")
    if inp.is_dir() and out.is_relative_to(inp):
        raise CtmriInputError(output, f"lies inside the input folder {input_path}; write the "
                                      f"result elsewhere")
    if output.exists() and not overwrite:
        raise CtmriInputError(output, "output already exists; refusing to overwrite it (choose "
                                      "another path, or use --overwrite / overwrite=True)")


def _check_output_kind(kind: str, input_path: Path, output: Path) -> None:
    if kind == "nifti" and not is_nifti_path(output):
        raise CtmriInputError(output, f"the input {input_path} is NIfTI, so the output must be a "
                                      f".nii or .nii.gz file")
    if kind == "image" and output.suffix.lower() != ".png":
        raise CtmriInputError(output, f"the input {input_path} is one image, so the output must "
                                      f"be a .png file (16-bit)")
    if kind in ("dicom", "images") and (is_nifti_path(output) or output.suffix.lower() in (
            ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")):
        what = "a DICOM series" if kind == "dicom" else "a folder of images"
        raise CtmriInputError(output, f"the input {input_path} is {what}, so the output is a "
                                      f"folder; give a folder name, not a file name")
    # an existing path of the other kind is never replaced, even with --overwrite: say so
    # before translating (atomic_output would refuse it too, later)
    check_output_path(output, directory=kind in ("dicom", "images"), overwrite=True)


def png_values(image: np.ndarray, modality: str) -> np.ndarray:
    """A translated slice as 16-bit PNG values: CT ``HU + 1024``, MRI ``[0, 1] * 65535``
    (rounded, clipped to 0..65535)."""
    image = np.asarray(image, np.float64)
    stored = image + CT_16BIT_OFFSET_HU if modality == "ct" else image * PNG_MAX
    return np.clip(np.rint(stored), 0, PNG_MAX).astype(np.uint16)


def _write(kind: str, translated: Volume, volume: Volume, output: Path, overwrite: bool) -> None:
    target = translated.modality
    if kind == "nifti":
        write_nifti(translated, output, reference=volume, overwrite=overwrite)
    elif kind == "dicom":
        write_dicom_series(translated, output, modality=target, reference=volume,
                           overwrite=overwrite)
    elif kind == "image":
        write_png(output, png_values(translated.data[0], target), overwrite=overwrite)
    else:
        names = _png_names(volume)
        with atomic_output(output, directory=True, overwrite=overwrite) as tmp:
            for name, image in zip(names, translated.data):
                write_png(tmp / name, png_values(image, target))


def _png_names(volume: Volume) -> list[str]:
    """``<input stem>.png`` of each slice of a folder of images."""
    names = [Path(f).stem + ".png" for f in volume.meta["files"]]
    if len(set(names)) != len(names):
        raise CtmriInputError(volume.source, "two input images share a file stem (e.g. a.png "
                                             "and a.tif); their PNG outputs would collide")
    return names


def uncertainty_path(output: str | os.PathLike, kind: str) -> Path:
    """Where ``--uncertainty`` writes the map of an ``output`` of input ``kind``
    (:func:`_input_kind`): ``ct.nii.gz`` -> ``ct_uncertainty.nii.gz``, ``ct.png`` ->
    ``ct_uncertainty.png``, a folder of PNGs ``mri/`` -> ``mri_uncertainty/``, a DICOM series
    folder ``ct/`` -> the NIfTI file ``ct_uncertainty.nii.gz``."""
    output = Path(output)
    name = output.name
    if kind == "nifti":
        extension = ".nii.gz" if name.lower().endswith(".nii.gz") else output.suffix
        return output.with_name(name[:len(name) - len(extension)] + UNCERTAINTY_SUFFIX
                                + extension)
    if kind == "image":
        return output.with_name(output.stem + UNCERTAINTY_SUFFIX + output.suffix)
    if kind == "images":
        return output.with_name(name + UNCERTAINTY_SUFFIX)
    return output.with_name(name + UNCERTAINTY_SUFFIX + ".nii.gz")


def _uncertainty_volume(translated: Volume, volume: Volume) -> Volume:
    """The uncertainty map as a volume on the input's grid (DICOM: its slice positions, which
    the NIfTI writer resamples onto an even grid when they are uneven)."""
    meta = {k: volume.meta[k] for k in ("slice_positions",) if k in volume.meta}
    return Volume(data=np.asarray(translated.meta["uncertainty"], np.float32), modality=None,
                  spacing=tuple(volume.spacing), affine=np.array(volume.affine, np.float64),
                  meta=meta)


def _write_uncertainty(kind: str, translated: Volume, volume: Volume, path: Path) -> None:
    """Write the uncertainty map to ``path`` (a temporary sibling of its final place; PNG
    folders: an empty folder)."""
    target = translated.modality
    unc = _uncertainty_volume(translated, volume)
    if kind == "nifti":
        write_nifti(unc, path, reference=volume, overwrite=True)
    elif kind == "dicom":
        write_nifti(unc, path, overwrite=True)
    elif kind == "image":
        write_png(path, png_values(unc.data[0], target), overwrite=True)
    else:
        for name, image in zip(_png_names(volume), unc.data):
            write_png(path / name, png_values(image, target))


def _physics(volume: Volume, kind: str) -> PhysicsEvidence:
    """The physics evidence of a volume in physical units (not of image files, whose values
    become HU only once the modality is known)."""
    if kind in ("image", "images"):
        return dataclasses.replace(NO_EVIDENCE, rule="physics: not applicable (image files "
                                                     "store no physical units)")
    return physics_evidence(volume.data)


def _decide_modality(volume: Volume, kind: str, models: ModelSet, *, batch_size: int,
                     min_confidence: float) -> tuple[str, str, ModalityVote | None]:
    """``(modality, how it was decided, the vote or None)`` of a volume without a modality:
    physics rules, then the classifier, abstaining below ``min_confidence``."""
    evidence = _physics(volume, kind)
    if evidence.modality is not None:
        return evidence.modality, evidence.rule, None
    vote = classify_modality(volume, models, batch_size=batch_size, evidence=evidence)
    if vote.confidence < min_confidence:
        raise CtmriInputError(volume.source or None,
                              f"cannot decide its modality with confidence: {vote.describe()}, "
                              f"confidence {vote.confidence:.3f} < {min_confidence:g}; the "
                              f"classifier may never have seen scans like this one; pass "
                              f"--from ct|mri")
    return vote.modality, vote.describe(), vote


def translate_file(input: str | os.PathLike, output: str | os.PathLike, *, to: str | None = None,
                   source: str | None = None, models: ModelSet | str | os.PathLike,
                   overwrite: bool = False, batch_size: int = 8, progress: bool = True,
                   log: Callable[[str], None] | None = None, series: str | None = None,
                   min_confidence: float = MIN_CONFIDENCE, tta: str | None = DEFAULT_TTA,
                   tile_overlap: float = TILE_OVERLAP, uncertainty: bool = False) -> Path:
    """Translate the scan ``input`` and write it to ``output`` in the same format (module
    docstring).

    Args:
        input: DICOM series folder or file, ``.nii``/``.nii.gz`` file, PNG/JPEG/TIFF file or
            folder of them. Only read.
        output: NIfTI file for a NIfTI input; folder for a DICOM input or a folder of images;
            ``.png`` file for one image.
        to: target modality; default the other one.
        source: the input's modality, overriding the classifier (``--from``); a DICOM whose
            Modality tag says otherwise is an error.
        models: a :class:`ModelSet` or its folder.
        overwrite: replace an existing ``output`` (never the input, nor a folder holding it).
        batch_size: slices per model call.
        progress: tqdm progress bar over the slices.
        log: called with one line per decision (modality and how it was decided, models, the
            output), e.g. ``print``; ``None`` is silent.
        series: the SeriesInstanceUID to translate from a DICOM folder holding several series
            (``--series``); ``None`` reads the largest axial CT/MR series, skipping localizers
            (:func:`ctmri_tf.io.read_dicom`, which warns naming what it skipped). A DICOM output
            keeps every input slice's ImagePositionPatient exactly (uneven spacing, gantry tilt).
        min_confidence: the classifier's confidence (in [0, 1]) below which its vote is refused.
        tta: test-time augmentation (``--tta``): ``"lr"`` (default), ``"lr+ud"``, ``"none"``.
        tile_overlap: least fraction of a tile neighbouring tiles share (``--tile-overlap``).
        uncertainty: also write the per-voxel standard deviation over the TTA passes, in the
            output's units, to :func:`uncertainty_path` (``--uncertainty``; needs TTA); it is
            refused like the output when it exists without ``overwrite``, and written only
            together with the output.

    The translator's data card (:mod:`ctmri_tf.data_card`) is logged before translating; each
    way the input is far from it (pixel spacing, body extent in mm, body intensities, a low
    classifier confidence, ``--from`` contradicting the physics rules) is one ``warning: ...``
    line of ``log`` (without ``log``: an :class:`~ctmri_tf.data_card.OutOfDistributionWarning`).

    Returns:
        ``output`` as a :class:`~pathlib.Path`.

    Raises:
        CtmriInputError: naming the file: unknown format, undecidable modality (a DICOM
            Modality other than CT/MR, no classifier, a classifier below ``min_confidence``),
            ``to`` equal to the source, an existing output (or uncertainty map), an output that
            is the input, a wrong output name for the input's kind, a missing model folder or
            signature, ``uncertainty`` without TTA. Nothing is written then.

    With TTA, one line of ``log`` gives the median uncertainty inside the body.
    """
    say = log or (lambda line: None)
    tta = _check_tta(tta, tile_overlap)
    if uncertainty and len(tiling.tta_passes(tta)) < 2:
        raise CtmriInputError(None, "--uncertainty needs test-time augmentation passes to "
                                    "take the spread of; with --tta none there is one pass "
                                    "(use --tta lr or lr+ud)")
    input_path, output = Path(input), Path(output)
    if source is not None and source not in MODALITIES:
        raise CtmriInputError(None, f"--from must be one of {', '.join(MODALITIES)}, got "
                                    f"{source!r}")
    if to is not None and to not in MODALITIES:
        raise CtmriInputError(None, f"--to must be one of {', '.join(MODALITIES)}, got {to!r}")
    if not input_path.exists():
        raise CtmriInputError(input_path, "does not exist")
    _check_paths(input_path, output, overwrite)
    if not isinstance(models, ModelSet):
        models = ModelSet(models)
    volume = read_volume(input_path, modality=source, series_uid=series)
    kind = _input_kind(volume)
    _check_output_kind(kind, input_path, output)
    if kind == "dicom":
        check_dicom_modality(volume.meta["header"].get("Modality"), input_path, source=source)
    spread_path = uncertainty_path(output, kind) if uncertainty else None
    if spread_path is not None:
        _check_paths(input_path, spread_path, overwrite)
        check_output_path(spread_path, directory=kind == "images", overwrite=overwrite)

    def warn(line: str) -> None:
        if log is None:
            warnings.warn(f"{input_path}: {line}", OutOfDistributionWarning, stacklevel=3)
        else:
            say(f"warning: {line}")

    vote = None
    if source is not None or volume.modality is not None:
        how = "--from" if source is not None else "DICOM Modality tag"
        evidence = _physics(volume, kind)
        if evidence.modality not in (None, volume.modality):
            warn(f"{how} says {volume.modality.upper()} but {evidence.rule}")
    else:
        modality, how, vote = _decide_modality(volume, kind, models, batch_size=batch_size,
                                               min_confidence=min_confidence)
        if kind in ("image", "images"):   # the stored values -> HU depend on the modality
            volume = read_volume(input_path, modality=modality, series_uid=series)
        else:
            volume.modality = modality
    target = _check_target(volume.modality, to, input_path)
    series_read = volume.meta.get("series_instance_uid")
    say(f"{input_path}: {volume.modality.upper()} ({how}), {volume.shape[0]} slice(s) of "
        f"{volume.shape[1]} x {volume.shape[2]} px" + (f", series {series_read}"
                                                       if kind == "dicom" and series_read else ""))
    say(f"translating {volume.modality} -> {target} with "
        f"{models.describe_translator(volume.modality, target)} at "
        "{} x {} px; body mask: {}".format(*models.image_size(volume.shape[1:]),
                                           models.describe_body_mask()))
    card = models.data_card(volume.modality, target)
    for line in (describe(card) if card is not None else
                 ["data card: none (an export made before data cards): what the model was "
                  "trained on is unknown"]):
        say(line)
    translated = translate_volume(volume, to=target, models=models, batch_size=batch_size,
                                  progress=progress, tta=tta, tile_overlap=tile_overlap)
    spread = translated.meta["uncertainty"]
    if spread is not None:
        body = translated.meta["body_mask"] != 0
        say(f"uncertainty (std over the {len(tiling.tta_passes(tta))} --tta {tta} passes): "
            f"median {float(np.median(spread[body])):.4g} "
            f"{'HU' if target == 'ct' else 'MRI scaled [0, 1]'} inside the body")
    if card is not None:
        spacing = None if kind in ("image", "images") else volume.spacing[1:]
        for line in compare(card, volume.data, translated.meta["body_mask"], volume.modality,
                            pixel_spacing_mm=spacing,
                            confidence=None if vote is None else vote.confidence):
            warn(line)
    if spread_path is None:
        _write(kind, translated, volume, output, overwrite)
    else:   # both or neither: the map is moved into place only once the output is
        with atomic_output(spread_path, directory=kind == "images", overwrite=overwrite) as tmp:
            _write_uncertainty(kind, translated, volume, tmp)
            _write(kind, translated, volume, output, overwrite)
    units = 'HU' if target == 'ct' else 'MRI scaled [0, 1]'
    say(f"wrote {output} ({target.upper()}, {units})")
    if spread_path is not None:
        note = (" (NIfTI on the input's grid: a DICOM series would round it to whole HU)"
                if kind == "dicom" else "")
        say(f"wrote {spread_path} (uncertainty: std over the TTA passes, {units}){note}")
    return output

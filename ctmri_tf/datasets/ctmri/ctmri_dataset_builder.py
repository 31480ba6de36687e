"""The tfds ``ctmri`` dataset: 2-D CT and MRI slices with body masks and registered counterparts.

Configs:

* ``synthetic`` (default): 40 head phantoms x 32 slices x 256 px from :mod:`ctmri_tf.phantom`,
  each a registered CT (true HU) / MRI (signal) pair with its ground-truth body mask;
* ``synthetic_small``: 6 x 8 x 64, for smoke runs and tests; any other size is available by name,
  ``synthetic_<subjects>x<slices>x<pixels>[_seed<k>]`` (see :func:`synthetic_config`);
* ``synthetic_v2``: 48 domain-randomised head phantoms x 32 slices x 256 px from
  :mod:`ctmri_tf.phantom_v2` (per-subject MRI sequence, resolution, slice thickness, field of
  view, skull stripping, CT kernel), with a fourth split, ``test_heldout_domain``, whose MRI
  contrasts and geometry never occur in the other splits; any size by name,
  ``synthetic_v2_<subjects>x<slices>x<pixels>[_seed<k>]`` (:func:`synthetic_v2_config`);
* ``folder``: the user's data in ``manual_dir`` (layout in :mod:`datasets.ctmri.folder_layout`),
  a subject present under both ``ct/`` and ``mri/`` being a registered pair;
* ``folder_unpaired``: the same folder, every volume on its own (no counterparts), for CT and
  MRI of a subject that are not registered.

One example per (modality, subject, slice); the features and their units are in
:func:`features` and ``docs/DESIGN.md``. Splits are by subject, never by slice.

``builder.info.metadata`` (``metadata.json``) records the geometry of the ``train`` split's
slices, :data:`PIXEL_SPACING_METADATA` and :data:`FIELD_OF_VIEW_METADATA`: ``{"median": [row,
col], "min": [row, col], "max": [row, col]}`` in mm (the field of view is ``spacing x pixels``),
from which ``ctmri_tf.data.model_pixel_spacing`` tells the spacing a model of a given size sees.
A ``folder`` config built with Beam has none (the slices are read on the workers).

Generation runs in this process by default (no apache-beam needed). Given a Beam runner or
pipeline options (``DownloadConfig(beam_runner=...)`` / ``beam_options=...``, ``tfds build
--beam_pipeline_options=...``, ``python -m datasets.ctmri build --beam``), each split is instead
``beam.Create(subjects) | beam.FlatMap(one subject's examples)``, so subjects are generated in
parallel on the Beam workers; the examples are the same either way.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils
from tensorflow_datasets.core.utils.lazy_imports_utils import apache_beam as beam

from ctmri_tf import intensity, phantom, phantom_v2
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io.volume import MODALITIES
# Relative: `tfds build datasets/ctmri` imports this folder as the package `ctmri` while it hides
# the name `datasets` (tfds mocks HuggingFace's `datasets` module during the import).
from . import folder_layout
from .folder_layout import ModalityVolume

SOURCE_SYNTHETIC = "synthetic"
SOURCE_SYNTHETIC_V2 = "synthetic_v2"
SOURCE_FOLDER = "folder"
SOURCES = (SOURCE_SYNTHETIC, SOURCE_SYNTHETIC_V2, SOURCE_FOLDER)
SYNTHETIC_SOURCES = (SOURCE_SYNTHETIC, SOURCE_SYNTHETIC_V2)
SPLITS = ("train", "validation", "test")
"""The splits of the v1 ``synthetic`` and the ``folder`` configs (``synthetic_v2`` adds
:data:`ctmri_tf.phantom_v2.SPLIT_HELDOUT`)."""
GEOMETRY_SPLIT = "train"
"""The split whose slice geometry the metadata records (what a model is trained on)."""
PIXEL_SPACING_METADATA = "pixel_spacing_mm"
"""``info.metadata`` key: in-plane pixel spacing of the train slices, mm (row, col) stats."""
FIELD_OF_VIEW_METADATA = "field_of_view_mm"
"""``info.metadata`` key: in-plane field of view (spacing x pixels) of the train slices, mm."""
PHANTOM_SETTINGS_METADATA = "phantom_v2_settings"
"""``info.metadata`` key of a ``synthetic_v2`` build: ``{subject_id: settings}`` of every subject
(:meth:`ctmri_tf.phantom_v2.SubjectSettings.as_dict`: sequence, TR/TE/TI, spacing, thickness,
field of view, skull stripping, CT kernel, noise levels, pose)."""
PHANTOM_DOMAINS_METADATA = "phantom_v2_domains"
"""``info.metadata`` key of a ``synthetic_v2`` build: ``{"splits": {split: domain}, "ranges":
{domain: its ranges}}``."""
_SYNTHETIC_NAME = re.compile(r"synthetic_(\d+)x(\d+)x(\d+)(?:_seed(\d+))?")
_SYNTHETIC_V2_NAME = re.compile(r"synthetic_v2_(\d+)x(\d+)x(\d+)(?:_seed(\d+))?")


@dataclasses.dataclass(eq=False)
class CtmriConfig(tfds.core.BuilderConfig):
    """What to build.

    Attributes:
        source: ``"synthetic"`` (v1 head phantoms), ``"synthetic_v2"`` (domain-randomised
            phantoms, :mod:`ctmri_tf.phantom_v2`) or ``"folder"`` (the user's ``manual_dir``).
        num_subjects: synthetic: number of phantom subjects.
        num_slices: synthetic: slices per subject.
        image_size: synthetic: rows = cols, in pixels.
        seed: synthetic: phantom seed (subject ``i`` is the same for every config with this seed
            and size).
        pair: a subject with both modalities yields each slice with its registered counterpart
            (``has_counterpart``); off, every example stands alone.
    """

    source: str = SOURCE_SYNTHETIC
    num_subjects: int = 40
    num_slices: int = 32
    image_size: int = 256
    seed: int = 0
    pair: bool = True

    def __post_init__(self):
        if self.source not in SOURCES:
            raise CtmriInputError(None, f"CtmriConfig.source must be one of {SOURCES}, "
                                        f"got {self.source!r}")
        for field in ("num_subjects", "num_slices", "image_size"):
            if int(getattr(self, field)) < 1:
                raise CtmriInputError(None, f"CtmriConfig.{field} must be >= 1, "
                                            f"got {getattr(self, field)}")


def synthetic_config(num_subjects: int, num_slices: int, image_size: int,
                     seed: int = 0) -> CtmriConfig:
    """The synthetic config of a given size, named ``synthetic_<subjects>x<slices>x<px>``.

    ``_seed<k>`` is appended for ``seed != 0``. The same values always return the same object,
    and ``tfds.builder("ctmri/<that name>")`` finds it, so a custom size can be built and loaded
    by name like the predefined configs (``ctmri_tf.data.load(split, config=name)``).
    """
    return _sized_config(SOURCE_SYNTHETIC, int(num_subjects), int(num_slices), int(image_size),
                         int(seed))


_SIZED = {SOURCE_SYNTHETIC: ("synthetic", "synthetic head phantoms", "."),
          SOURCE_SYNTHETIC_V2: ("synthetic_v2", "domain-randomised head phantoms (v2)",
                                ", with a held-out domain split.")}
"""Per phantom source: the config name prefix, what the subjects are, the description's end."""


@functools.lru_cache(maxsize=None)
def _sized_config(source: str, num_subjects: int, num_slices: int, image_size: int,
                  seed: int) -> CtmriConfig:
    prefix, what, end = _SIZED[source]
    name = f"{prefix}_{num_subjects}x{num_slices}x{image_size}"
    if seed:
        name += f"_seed{seed}"
    return CtmriConfig(
        name=name, source=source, num_subjects=num_subjects, num_slices=num_slices,
        image_size=image_size, seed=seed,
        description=f"{num_subjects} {what} x {num_slices} slices x {image_size} px, paired CT "
                    f"(HU) / MRI, seed {seed}{end}")


def synthetic_v2_config(num_subjects: int, num_slices: int, image_size: int,
                        seed: int = 0) -> CtmriConfig:
    """The ``synthetic_v2`` config of a given size, named
    ``synthetic_v2_<subjects>x<slices>x<px>[_seed<k>]`` (found by ``tfds.builder`` like
    :func:`synthetic_config`'s)."""
    return _sized_config(SOURCE_SYNTHETIC_V2, int(num_subjects), int(num_slices),
                         int(image_size), int(seed))


def known_config(name: str) -> CtmriConfig:
    """The config called ``name`` (predefined or ``synthetic_<n>x<slices>x<px>[_seed<k>]``).

    Raises:
        CtmriInputError: no such config (the message lists the predefined ones).
    """
    config = Builder.get_builder_config(name)
    if config is None:
        names = ", ".join(c.name for c in Builder.BUILDER_CONFIGS)
        raise CtmriInputError(None, f"unknown ctmri config {name!r}; use one of {names}, "
                                    f"synthetic_<subjects>x<slices>x<pixels>[_seed<k>] or "
                                    f"synthetic_v2_<subjects>x<slices>x<pixels>[_seed<k>]")
    return config


def resolve_config(name: str = "synthetic", *, num_subjects: int | None = None,
                   num_slices: int | None = None, image_size: int | None = None,
                   seed: int | None = None) -> str | CtmriConfig:
    """``name`` itself, or with size overrides the matching :func:`synthetic_config`.

    Overrides start from the named synthetic config (``synthetic_small`` with
    ``num_subjects=10`` is ``synthetic_10x8x64``).

    Raises:
        CtmriInputError: overrides given for a config that is not synthetic, or an unknown name.
    """
    overrides = {key: value for key, value in (("num_subjects", num_subjects),
                                               ("num_slices", num_slices),
                                               ("image_size", image_size), ("seed", seed))
                 if value is not None}
    if not overrides:
        return name
    base = known_config(name)
    if base.source not in SYNTHETIC_SOURCES:
        raise CtmriInputError(None, f"{', '.join(overrides)} can only change a synthetic "
                                    f"config, not {name!r}")
    values = {"num_subjects": base.num_subjects, "num_slices": base.num_slices,
              "image_size": base.image_size, "seed": base.seed, **overrides}
    make = synthetic_v2_config if base.source == SOURCE_SYNTHETIC_V2 else synthetic_config
    return make(**values)


def features() -> tfds.features.FeaturesDict:
    """The features of every config (``docs/DESIGN.md``), with their units."""

    def plane(dtype, doc):
        return tfds.features.Tensor(shape=(None, None), dtype=dtype,
                                    encoding=tfds.features.Encoding.ZLIB, doc=doc)

    def pair_of_floats(doc):
        return tfds.features.Tensor(shape=(2,), dtype=np.float32, doc=doc)

    return tfds.features.FeaturesDict({
        "image": plane(np.float32, "(rows, cols) slice in physical units: HU for CT, "
                                   "scanner signal for MRI"),
        "mask": plane(np.uint8, "(rows, cols) body mask, 1 = body, 0 = background"),
        "modality": tfds.features.ClassLabel(names=list(MODALITIES)),
        "subject_id": tfds.features.Text(doc="subject folder name / phantom id"),
        "slice_index": tfds.features.Scalar(dtype=np.int32, doc="slice position in its volume"),
        "pixel_spacing": pair_of_floats("mm between rows, between columns"),
        "intensity_range": pair_of_floats("physical (low, high) mapped to [-1, 1]: the CT "
                                          "window in HU or the MRI volume's percentiles"),
        "has_counterpart": tfds.features.Scalar(dtype=np.bool_, doc="a registered slice of the "
                                                                    "other modality exists"),
        "counterpart": plane(np.float32, "registered slice of the other modality, physical "
                                         "units; 1x1 zeros when there is none"),
        "counterpart_range": pair_of_floats("intensity_range of the counterpart; zeros when "
                                            "there is none"),
    })


def subject_examples(volumes: dict[str, ModalityVolume], *, pair: bool
                     ) -> Iterator[tuple[str, dict]]:
    """The ``(key, example)`` of every slice of one subject's volumes.

    Args:
        volumes: ``{"ct": ..., "mri": ...}`` (one or both) of one subject.
        pair: with both modalities present, give each slice its counterpart (the volumes must
            then have the same shape, :func:`folder_layout.check_registered`).

    Keys are ``"<modality>/<subject>/<slice:04d>"``: unique and stable across builds.
    """
    paired = pair and all(m in volumes for m in MODALITIES)
    if paired:
        folder_layout.check_registered(volumes["ct"], volumes["mri"])
    no_counterpart = np.zeros((1, 1), np.float32)
    for modality, volume in volumes.items():
        other = volumes[MODALITIES[1 - MODALITIES.index(modality)]] if paired else None
        spacing = np.asarray(volume.pixel_spacing, np.float32)
        value_range = np.asarray(volume.intensity_range, np.float32)
        other_range = (np.asarray(other.intensity_range, np.float32) if paired
                       else np.zeros(2, np.float32))
        for k in range(volume.image.shape[0]):
            yield f"{modality}/{volume.subject_id}/{k:04d}", {
                "image": np.ascontiguousarray(volume.image[k], np.float32),
                "mask": np.ascontiguousarray(volume.mask[k], np.uint8),
                "modality": modality,
                "subject_id": volume.subject_id,
                "slice_index": np.int32(k),
                "pixel_spacing": spacing,
                "intensity_range": value_range,
                "has_counterpart": paired,
                "counterpart": (np.ascontiguousarray(other.image[k], np.float32) if paired
                                else no_counterpart),
                "counterpart_range": other_range,
            }


def phantom_volumes(subject: phantom.PhantomSubject) -> dict[str, ModalityVolume]:
    """A phantom subject as the CT and MRI volumes the builder writes (ground-truth mask)."""
    spacing = (float(subject.spacing[1]), float(subject.spacing[2]))
    mask = np.asarray(subject.mask, np.uint8)
    mri_scale = intensity.fit_mri_scale(subject.mri, mask=mask)
    common = dict(subject_id=subject.subject_id, mask=mask, pixel_spacing=spacing,
                  source=f"phantom {subject.subject_id}", mask_source="phantom")
    return {
        "ct": ModalityVolume(modality="ct", image=np.asarray(subject.ct, np.float32),
                             intensity_range=tuple(float(v) for v in intensity.CT_WINDOW_HU),
                             **common),
        "mri": ModalityVolume(modality="mri", image=np.asarray(subject.mri, np.float32),
                              intensity_range=(float(mri_scale.low), float(mri_scale.high)),
                              **common),
    }


def geometry_metadata(spacings, sizes) -> dict:
    """The metadata entries of slices with ``spacings`` mm ``(N, 2)`` (row, col) and ``sizes``
    pixels ``(N, 2)``: ``{PIXEL_SPACING_METADATA: stats, FIELD_OF_VIEW_METADATA: stats}``, stats
    ``{"median", "min", "max"}`` each ``[row, col]`` in mm (``{}`` for no slices)."""
    spacings = np.asarray(spacings, np.float64).reshape(-1, 2)
    fields = spacings * np.asarray(sizes, np.float64).reshape(-1, 2)
    if not len(spacings):
        return {}

    def stats(values):
        return {name: [float(v) for v in reduce(values, axis=0)]
                for name, reduce in (("median", np.median), ("min", np.min), ("max", np.max))}
    return {PIXEL_SPACING_METADATA: stats(spacings), FIELD_OF_VIEW_METADATA: stats(fields)}


def _synthetic_geometry(config: CtmriConfig) -> dict:
    """Every phantom slice has the same grid: ``FIELD_OF_VIEW_MM / image_size`` mm pixels."""
    spacing = phantom.FIELD_OF_VIEW_MM / config.image_size
    return geometry_metadata([[spacing, spacing]], [[config.image_size, config.image_size]])


def synthetic_v2_members(config: CtmriConfig) -> dict[str, list[tuple[int, str]]]:
    """``{split: [(subject index, domain name), ...]}`` of a ``synthetic_v2`` config (empty
    splits left out)."""
    members: dict[str, list[tuple[int, str]]] = {split: [] for split in phantom_v2.SPLITS}
    for index in range(config.num_subjects):
        split = phantom_v2.subject_split(index, config.num_subjects)
        members[split].append((index, phantom_v2.split_domain(split).name))
    return {split: items for split, items in members.items() if items}


def _synthetic_v2_metadata(config: CtmriConfig) -> dict:
    """Geometry of the train slices (each subject's ``field_of_view_mm / image_size`` pixels),
    every subject's settings and the domains, computed from the settings alone (no rendering)."""
    settings, spacings, domains = {}, [], {}
    for split, items in synthetic_v2_members(config).items():
        domains[split] = items[0][1]
        for index, domain in items:
            s = phantom_v2.subject_settings(index, seed=config.seed, domain=domain)
            subject_id = phantom_v2.subject_id(index, config.seed, domain)
            settings[subject_id] = dict(s.as_dict(), split=split)
            if split == GEOMETRY_SPLIT:
                pixel = s.field_of_view_mm / config.image_size
                spacings += [[pixel, pixel]] * config.num_slices
    geometry = geometry_metadata(spacings, [[config.image_size] * 2] * len(spacings))
    ranges = {d.name: dataclasses.asdict(d) for d in phantom_v2.DOMAINS.values()}
    return {**geometry, PHANTOM_SETTINGS_METADATA: settings,
            PHANTOM_DOMAINS_METADATA: {"splits": domains, "ranges": ranges}}


@dataclasses.dataclass(frozen=True)
class SubjectExamples:
    """One split item -> the ``(key, example)`` of every slice of that subject.

    Items are phantom indices (synthetic), ``(index, domain name)`` (synthetic_v2) or
    ``{modality: SubjectFolder}`` (folder). Plain,
    picklable values only, so a Beam ``FlatMap`` can ship it to its workers.
    """

    source: str
    image_size: int
    num_slices: int
    seed: int
    pair: bool

    @classmethod
    def of(cls, config: CtmriConfig) -> "SubjectExamples":
        return cls(source=config.source, image_size=int(config.image_size),
                   num_slices=int(config.num_slices), seed=int(config.seed),
                   pair=bool(config.pair))

    def __call__(self, item) -> Iterator[tuple[str, dict]]:
        if self.source == SOURCE_SYNTHETIC_V2:
            index, domain = item
            volumes = phantom_volumes(phantom_v2.make_subject(
                int(index), image_size=self.image_size, num_slices=self.num_slices,
                seed=self.seed, domain=domain))
        elif self.source == SOURCE_SYNTHETIC:
            volumes = phantom_volumes(phantom.make_subject(
                item, image_size=self.image_size, num_slices=self.num_slices, seed=self.seed))
        else:
            volumes = {modality: folder_layout.load_subject_folder(entry)
                       for modality, entry in item.items()}
        yield from subject_examples(volumes, pair=self.pair)


class Builder(tfds.core.GeneratorBasedBuilder):
    """CT and MRI slices in physical units with body masks and registered counterparts."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: synthetic phantoms and user folders.",
                     "1.1.0": "synthetic_v2 CT clipped to the stored scanner range -1024..3071 "
                              "HU (sharp-kernel undershoot at air edges reached -2400 HU)."}
    BUILDER_CONFIGS = [
        CtmriConfig(name="synthetic", source=SOURCE_SYNTHETIC, num_subjects=40, num_slices=32,
                    image_size=256, description="40 synthetic head phantoms x 32 slices x "
                                                "256 px, paired CT (HU) / MRI."),
        CtmriConfig(name="synthetic_small", source=SOURCE_SYNTHETIC, num_subjects=6,
                    num_slices=8, image_size=64, description="6 synthetic head phantoms x 8 "
                                                             "slices x 64 px, for smoke runs."),
        CtmriConfig(name="synthetic_v2", source=SOURCE_SYNTHETIC_V2, num_subjects=48,
                    num_slices=32, image_size=256,
                    description="48 domain-randomised head phantoms (v2) x 32 slices x 256 px, "
                                "paired CT (HU) / MRI of random contrast and geometry; split "
                                "test_heldout_domain holds contrasts and geometry never "
                                "trained on."),
        CtmriConfig(name="folder", source=SOURCE_FOLDER, pair=True,
                    description="Your CT/MRI volumes from manual_dir; a subject in both ct/ and "
                                "mri/ is a registered pair (same shape)."),
        CtmriConfig(name="folder_unpaired", source=SOURCE_FOLDER, pair=False,
                    description="Your CT/MRI volumes from manual_dir, every volume on its own "
                                "(CT and MRI of a subject need not be registered)."),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "synthetic"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Only the `folder` and `folder_unpaired` configs read manual_dir (pass --manual_dir DIR).
    Lay it out as (names lower case):

        DIR/ct/<subject>/    one CT volume per subject
        DIR/mri/<subject>/   one MRI volume per subject

    Each subject folder holds ONE of: a DICOM series (Modality CT under ct/, MR under mri/);
    one NIfTI file (*.nii / *.nii.gz; CT in HU); PNG/TIFF slices in natural name order
    (CT: 16-bit = HU + 1024, or 8-bit spanning [-1024, 3000] HU; MRI: raw signal).
    Optional body masks (nonzero = body): mask.nii.gz beside a NIfTI file or DICOM series;
    for slices, a masks/ subfolder with one image per slice of the same name, or a Labelme
    .json beside every slice (same stem). Without one, a mask is computed automatically.
    A subject folder name found in both ct/ and mri/ is a registered pair (same shape required
    for `folder`; use `folder_unpaired` otherwise). Subjects are split 80/10/10 by sorted name.
    """

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> CtmriConfig | None:
        """A predefined config, or the synthetic one named
        ``synthetic_<n>x<slices>x<px>[_seed<k>]`` or ``synthetic_v2_<n>x<slices>x<px>[_seed<k>]``;
        ``None`` for any other name."""
        config = super().get_builder_config(name, version)
        if config is None and (match := _SYNTHETIC_NAME.fullmatch(name)):
            n, slices, size, seed = match.groups()
            config = synthetic_config(int(n), int(slices), int(size), int(seed or 0))
        if config is None and (match := _SYNTHETIC_V2_NAME.fullmatch(name)):
            n, slices, size, seed = match.groups()
            config = synthetic_v2_config(int(n), int(slices), int(size), int(seed or 0))
        return config

    def _info(self) -> tfds.core.DatasetInfo:
        # Description and citation come from README.md and CITATIONS.bib beside this file (the
        # phantom's tissue-parameter sources). The project has no public URL yet, so no homepage.
        return self.dataset_info_from_configs(features=features(), supervised_keys=None,
                                              metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        if config.source == SOURCE_SYNTHETIC:
            members: dict[str, list[int]] = {split: [] for split in SPLITS}
            for index in range(config.num_subjects):
                members[phantom.subject_split(index, config.num_subjects)].append(index)
        elif config.source == SOURCE_SYNTHETIC_V2:
            members = synthetic_v2_members(config)
        else:
            subjects = folder_layout.scan_manual_dir(self._manual_dir(dl_manager))
            members = {split: [subjects[s] for s in ids]
                       for split, ids in folder_layout.split_subject_ids(subjects).items()}
        if getattr(self, "_one_progress_bar", False):
            from tqdm.auto import tqdm
            self._progress = tqdm(total=sum(len(items) for items in members.values()),
                                  desc=f"ctmri/{config.name}", unit=" subjects",
                                  mininterval=0.5)
        # tfds cannot write a split without examples: leave empty splits out.
        return {split: self._generate_examples(split, items)
                for split, items in members.items() if items}

    @staticmethod
    def _manual_dir(dl_manager):
        try:
            return dl_manager.manual_dir
        except AssertionError:  # tfds: "does not exist or is empty"; name the folder ourselves
            # tfds keeps the path private; check_manual_dir raises the error that names it.
            folder_layout.check_manual_dir(dl_manager._manual_dir)  # noqa: SLF001
            raise

    def _download_and_prepare(self, dl_manager, download_config):
        # tfds writes a split with Beam only when `_generate_examples` returns a Beam transform:
        # return one exactly when the caller asked for Beam (a runner or pipeline options).
        self._use_beam = (download_config.beam_runner is not None
                          or download_config.beam_options is not None)
        self._geometry = {"spacings": [], "sizes": []}      # of the train slices, without Beam
        try:
            result = super()._download_and_prepare(dl_manager, download_config)
            source = self.builder_config.source
            geometry = (_synthetic_geometry(self.builder_config) if source == SOURCE_SYNTHETIC
                        else _synthetic_v2_metadata(self.builder_config)
                        if source == SOURCE_SYNTHETIC_V2
                        else geometry_metadata(**self._geometry))
            self.info.metadata.update(geometry)   # written with the DatasetInfo, after this
            return result
        finally:
            self._use_beam = False
            if getattr(self, "_progress", None) is not None:
                self._progress.close()
                self._progress = None

    # :func:`build` prints its own report (where, splits, size, speed) under one progress bar;
    # tfds' banners stay for other callers.
    def _log_download_bytes(self) -> None:
        if not getattr(self, "_one_progress_bar", False):
            super()._log_download_bytes()

    def _log_download_done(self) -> None:
        if not getattr(self, "_one_progress_bar", False):
            super()._log_download_done()

    def _generate_examples(self, split: str, items: list):
        """Every slice of the split's subjects.

        ``items`` are phantom indices (synthetic), ``(index, domain)`` (synthetic_v2) or
        ``{modality: SubjectFolder}`` (folder).
        Asked for Beam, a ``beam.Create(items) | beam.FlatMap(...)`` transform: one subject per
        element, generated on the workers. Otherwise a generator, one subject at a time, with a
        progress bar counting subjects: under :func:`build`, one bar for the whole build (tfds'
        own bars are off); otherwise one per split beside tfds' example counters.
        """
        config = self.builder_config
        generate = SubjectExamples.of(config)
        if getattr(self, "_use_beam", False):
            return (f"Subjects of {split}" >> beam.Create(items)
                    | f"Examples of {split}" >> beam.FlatMap(generate))
        examples = self._iterate_subjects(f"ctmri/{config.name} {split} subjects", items, generate)
        return self._recording_geometry(examples) if split == GEOMETRY_SPLIT else examples

    def _recording_geometry(self, examples: Iterator[tuple[str, dict]]
                            ) -> Iterator[tuple[str, dict]]:
        """``examples`` unchanged, noting each slice's spacing and size for the metadata."""
        geometry = getattr(self, "_geometry", None)
        for key, example in examples:
            if geometry is not None:
                geometry["spacings"].append(example["pixel_spacing"])
                geometry["sizes"].append(example["image"].shape)
            yield key, example

    def _iterate_subjects(self, desc: str, items: list, generate: SubjectExamples
                          ) -> Iterator[tuple[str, dict]]:
        shared = getattr(self, "_progress", None)
        progress = items if shared is not None else tqdm_utils.tqdm(
            items, desc=desc, unit=" subjects", leave=False, mininterval=1.0)
        for item in progress:
            yield from generate(item)
            if shared is not None:
                shared.update(1)


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """What :func:`build` did.

    Attributes:
        data_path: the dataset's folder (``<data_dir>/ctmri/<config>/<version>``).
        built: ``False`` when the dataset already existed and was reused (nothing generated).
        num_examples: examples (slices) per split.
        seconds: wall time of the generation (0 when reused).
        size_bytes: size of the written files on disk.
    """

    data_path: str
    built: bool
    num_examples: dict[str, int]
    seconds: float
    size_bytes: int

    @property
    def total_examples(self) -> int:
        return sum(self.num_examples.values())

    @property
    def slices_per_second(self) -> float:
        """Examples (2-D slices, either modality) generated per second; 0 when reused."""
        return self.total_examples / self.seconds if self.built and self.seconds > 0 else 0.0

    def summary(self) -> str:
        """Where the dataset is, its splits and size, and the generation throughput."""
        size, unit = float(self.size_bytes), "B"
        for unit in ("B", "KiB", "MiB", "GiB"):
            if size < 1024 or unit == "GiB":
                break
            size /= 1024
        splits = ", ".join(f"{name} {n}" for name, n in self.num_examples.items())
        lines = [f"dataset: {self.data_path}",
                 f"slices: {self.total_examples} ({splits}); {size:.1f} {unit} on disk"]
        if self.built:
            lines.append(f"generated in {self.seconds:.1f} s: {self.slices_per_second:.1f} "
                         f"slices/s")
        else:
            lines.append("already built: reused (rebuild with --overwrite)")
        return "\n".join(lines)


def beam_download_settings(beam_options: str | None = None) -> tuple[object, object]:
    """The ``(beam_runner, beam_options)`` of a :class:`tfds.download.DownloadConfig` for Beam.

    Args:
        beam_options: comma-separated Beam pipeline flags without ``--`` (as
            ``tfds build --beam_pipeline_options``), e.g. ``"direct_num_workers=2"``.

    Without a ``runner=`` among the options, the runner is Beam's in-process ``FnApiRunner``:
    what ``DirectRunner`` runs a batch pipeline on, without ``DirectRunner``'s first attempt
    (Beam 2.77) to download and start its Prism runner binary, so no network is needed.

    Raises:
        CtmriInputError: apache-beam is not installed.
    """
    try:
        import apache_beam as beam_module  # noqa: PLC0415 (optional dependency)
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: PLC0415
    except ImportError as error:
        raise CtmriInputError(None, "building with Beam needs apache-beam: "
                                    "pip install -e '.[beam]'") from error
    flags = [f"--{flag.strip()}" for flag in (beam_options or "").split(",") if flag.strip()]
    options = beam_module.options.pipeline_options.PipelineOptions(flags=flags)
    named = options.view_as(beam_module.options.pipeline_options.StandardOptions).runner
    return (None if named else FnApiRunner()), options


def _rebuild_beside(builder: "Builder", download_config) -> None:
    """Generate ``builder``'s dataset again without touching the existing one until the new one
    is complete: into a temporary tfds data folder beside it, then swapped in (two renames).

    tfds' own ``FORCE_REDOWNLOAD`` deletes the old dataset before it generates the new one, so a
    failed or interrupted rebuild would lose both. Downloads and the default manual folder stay
    those of the real data folder.
    """
    final = Path(os.fspath(builder.data_path))       # <data_dir>/ctmri/<config>/<version>
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.rebuild-", dir=final.parent))
    try:
        fresh = Builder(config=builder.builder_config, data_dir=staging)
        fresh._one_progress_bar = getattr(builder, "_one_progress_bar", False)
        generate = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS   # nothing there yet
        fresh.download_and_prepare(
            download_dir=os.fspath(builder.data_dir_root / "downloads"),
            download_config=dataclasses.replace(download_config, download_mode=generate))
        new = Path(os.fspath(fresh.data_path))
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old)       # onto the empty folder: atomic, the old one intact
        try:
            os.replace(new, final)
        except BaseException:
            os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build(config: str | CtmriConfig = "synthetic", *, data_dir: str | os.PathLike | None = None,
          manual_dir: str | os.PathLike | None = None, overwrite: bool = False,
          beam: bool = False, beam_options: str | None = None) -> BuildReport:
    """Generate the ``ctmri`` dataset of ``config`` (no apache-beam needed unless ``beam``).

    Args:
        config: a config name (including ``synthetic_<n>x<slices>x<px>``) or a
            :class:`CtmriConfig`.
        data_dir: tfds data folder (default: tfds' own, ``$TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``).
        manual_dir: the user's folder for the ``folder`` configs.
        overwrite: rebuild an existing dataset (otherwise it is reused).
        beam: generate with Apache Beam, one subject per element (needs the ``beam`` extra);
            the examples are the same as without.
        beam_options: with ``beam``, pipeline flags for :func:`beam_download_settings`
            (default: in-process runner).

    tfds writes into a temporary ``*.incomplete*`` folder and renames it when every split is
    written, so a failed build leaves no dataset behind. With ``overwrite``, an existing
    dataset stays in place until the new one is complete: the new one is generated in a
    temporary data folder beside it (``<data_dir>/ctmri/<config>/.<version>.rebuild-*``) and
    swapped in only when it is whole; if anything fails, the old dataset is as it was and the
    temporary folder is removed.

    Raises:
        CtmriInputError: bad ``manual_dir`` contents (naming the file or folder), or ``beam``
            without apache-beam installed.
    """
    beam_runner, pipeline_options = (beam_download_settings(beam_options) if beam
                                     else (None, None))
    if not isinstance(config, CtmriConfig):
        config = known_config(str(config))
    builder = Builder(config=config, data_dir=data_dir)
    builder._one_progress_bar = True       # one bar for the whole build, no tfds banners
    existed = builder.is_prepared()
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    download_config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        download_mode=mode, try_download_gcs=False, beam_runner=beam_runner,
        beam_options=pipeline_options)
    start = time.perf_counter()
    tfds.disable_progress_bar()
    try:
        if overwrite and Path(os.fspath(builder.data_path)).exists():
            _rebuild_beside(builder, download_config)
        else:
            builder.download_and_prepare(download_config=download_config)
    finally:
        tfds.enable_progress_bar()
    seconds = time.perf_counter() - start
    built = overwrite or not existed
    if existed or overwrite:  # reread what is on disk
        builder = Builder(config=builder.builder_config, data_dir=data_dir)
    splits = builder.info.splits
    size = sum(f.stat().st_size for f in Path(os.fspath(builder.data_path)).iterdir()
               if f.is_file())
    return BuildReport(data_path=os.fspath(builder.data_path), built=built,
                       num_examples={name: int(splits[name].num_examples) for name in splits},
                       seconds=seconds if built else 0.0, size_bytes=int(size))

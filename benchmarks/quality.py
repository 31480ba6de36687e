"""Translation quality at a fixed training budget: StarGAN and CycleGAN vs baselines.

    python -m benchmarks.quality [--models stargan,cyclegan] [--preset demo] [--minutes 30]
        [--steps N] [--data-dir artifacts/tensorflow_datasets] [--dataset-config NAME]
        [--train-dataset-config NAME]
        [--compare-context] [--tta none|lr|lr+ud] [--precision float32] [--seed 0]
        [--set FIELD=VALUE ...]
        [--keep DIR] [--out benchmarks/results/quality.json] [--overwrite] [--quick]

1. The tfds ``ctmri`` dataset (default: the preset's dataset, ``synthetic_v2_40x32x128`` for
   ``demo`` (``make demo``'s), the ``synthetic`` phantoms of ``paper`` rendered at the model's
   input size; paired CT/MRI with true HU; the v1 targets: ``--dataset-config
   synthetic_40x32x128``) is
   built in ``--data-dir`` unless it is there already. With a dataset of another size the
   models' outputs are resized to it, and a "ground truth via N px" row gives the best score
   possible through that resize. On phantoms a "noise-free ground truth" row gives the best score
   of any model: the test subjects rendered without noise, scored against the noisy truth.
   ``--train-dataset-config`` trains on the ``train`` split of another dataset (e.g. more phantom
   subjects of another seed, ``synthetic_400x32x128_seed1``) and evaluates on the test splits of
   ``--dataset-config`` as before; the two must share no subject (checked by subject id).
2. Each model is trained from scratch on the ``train`` split, with the preset's config
   (``ctmri_tf.configs``), its trainer (``ctmri_tf.training``) and the training loop
   (``ctmri_tf.training.loop.train``), for a fixed budget of ``--minutes`` of training each: the
   seconds per iteration are first measured with ``benchmarks.train_speed`` on the same config
   and input (not counted in the budget), and the run gets ``schedule.steps = budget /
   (s/iteration)`` (StarGAN: whole n_critic cycles), its learning rate decaying linearly over
   the preset's share of them. ``--steps`` gives the step count directly instead.
3. The trained generators, the identity and the histogram-matching baselines
   (``ctmri_tf.baselines``, reference histograms of the ``train`` split) are evaluated on the
   held-out ``test`` subjects with ``ctmri_tf.evaluate.evaluate`` (SynthRAD 2023 protocol, per
   subject volume; generators run at their training size, outputs resized back to the data's).

   A dataset with a ``test_heldout_domain`` split (phantom v2: ``synthetic_v2``,
   ``synthetic_v2_<n>x<slices>x<px>``) is evaluated on ``test`` (in-domain) and on
   ``test_heldout_domain`` (MRI contrasts and geometry never trained on); every row names its
   split, and the held-out rows carry the ratio held-out / in-domain MRI->CT MAE.
4. On phantom data, anatomy checks from the phantom's label maps (each test subject rendered
   again from its index, the dataset's seed and grid, and checked against the stored volumes;
   :func:`brain_hu_checks`): the share of brain voxels where the synthetic CT is bone (> 300 HU)
   and the true CT is not, and the median synthetic HU in white and grey matter against the true medians.
5. ``--compare-context``: every model is trained twice, 2-D (``model.context_slices = 1``, the
   preset) and 2.5-D (3 slices, ``<preset>_2p5d``), each with the same budget (equal training
   time with ``--minutes``), and their through-plane MAE is compared.
6. ``--tta lr`` (or ``lr+ud``): every trained model is also evaluated with flip test-time
   augmentation (``ctmri_tf.evaluate.mirrored_translator``, as ``ctmri translate --tta`` runs
   it), in rows ``<model> + lr TTA`` with their own target lines.

Printed and written: the comparison table (mean ± std over test subjects, inside the body and on
the whole image) and, beside every trained model's figures, the issue-14 targets
(:func:`target_checks`, at the ``demo`` preset, 30 minutes): phantom v1 ``test``: MRI->CT MAE
<= 60 HU inside the body and CT->MRI SSIM >= 0.85 inside the body; phantom v2
``test_heldout_domain``: MRI->CT MAE <= 100 HU and <= 1.5 x the in-domain MAE, bone predicted in
<= 2 % of the brain voxels, white- and grey-matter median HU within 20 HU of the true medians;
``--compare-context``: 2.5-D beats 2-D on MRI->CT through-plane MAE. Targets are checked on the
means over subjects, as every other figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402
from ctmri_tf.atomic import atomic_output  # noqa: E402
from ctmri_tf.errors import CtmriInputError  # noqa: E402
from ctmri_tf.flags import FlagParser  # noqa: E402

NAME = "quality"
MODELS = {"stargan": "stargan", "cyclegan": "cyclegan"}
MODEL_LABELS = {"stargan": "StarGAN", "cyclegan": "CycleGAN"}
TARGET_MRI_TO_CT_MAE_HU = 60.0
"""Phantom v1 ``test``: MRI->CT MAE inside the body, at most (HU; issue 14)."""
TARGET_CT_TO_MRI_SSIM = 0.85
"""Phantom v1 ``test``: CT->MRI SSIM inside the body, at least."""
TARGET_HELDOUT_MAE_HU = 100.0
"""Phantom v2 ``test_heldout_domain``: MRI->CT MAE inside the body, at most (HU)."""
TARGET_HELDOUT_RATIO = 1.5
"""Phantom v2: held-out / in-domain MRI->CT MAE, at most."""
TARGET_BONE_IN_BRAIN_FRACTION = 0.02
"""Phantom v2 held-out: share of brain voxels with synthetic CT > :data:`BONE_HU`, at most."""
TARGET_TISSUE_MEDIAN_HU = 20.0
"""Phantom v2 held-out: |median synthetic - median true HU| in white and in grey matter, at most."""
BONE_HU = 300.0
"""Synthetic CT above this (HU) inside the brain counts as bone predicted where there is none."""
TARGET_PRESET = "demo"
SPLIT_TEST = "test"
MRI_ONLY_FLOOR = "MRI-only floor (median HU)"
"""The row of :func:`mri_only_floor`: the best MRI -> CT score of any model that sees only the
MRI (phantoms)."""
FLOOR_KERNELS = 9
"""Phantom v2's MRI-only floor: CT reconstruction kernels whose per-voxel median it predicts
(:func:`median_subject_v2`)."""
SPLIT_HELDOUT = "test_heldout_domain"
"""The phantom v2 split of MRI contrasts and geometry never trained on
(``ctmri_tf.phantom_v2.SPLIT_HELDOUT``)."""
BRAIN_TISSUES = ("grey_matter", "white_matter", "csf", "lesion", "ventricle", "deep_grey",
                 "cerebellum_grey")
"""The brain of the anatomy checks (``ctmri_tf.phantom_v2.BRAIN_TISSUES``): grey matter (v1:
cortex and deep nuclei; v2: cortex, ``deep_grey`` nuclei, ``cerebellum_grey``), white matter,
CSF inside the skull (v1 ``csf``: around the brain, sulci, ventricles; v2 ``csf`` and
``ventricle``) and lesions. Label ids are ``ctmri_tf.phantom_v2.TISSUES`` (v1's ids 0-9 are the
same; v1 maps simply have no v2-only label)."""
WHITE_MATTER_TISSUES = ("white_matter",)
GREY_MATTER_TISSUES = ("grey_matter", "deep_grey", "cerebellum_grey")
"""Grey matter of the median-HU check: cortex, deep grey nuclei, cerebellar cortex (v1: its one
``grey_matter`` label)."""
DEFAULT_DATA_DIR = common.REPO_ROOT / "artifacts" / "tensorflow_datasets"
"""``make demo``'s tfds data folder (the Makefile's ``DATA_DIR``)."""
QUICK_STEPS = 2
QUICK_PRESET = "smoke"
CALIBRATION_WARMUP = 10
CALIBRATION_ITERATIONS = 20
"""Calibration: untimed, then timed iterations. With 2 and 10 the demo StarGAN in bf16 was
calibrated at 0.61 s/iteration and trained at 0.54 s: 27 of the 30 minutes."""
HEADLINE = {  # row field -> (direction, region, metric)
    "mri_to_ct_mae_body_hu": ("mri->ct", "body", "mae"),
    "mri_to_ct_psnr_body_db": ("mri->ct", "body", "psnr"),
    "mri_to_ct_ssim_body": ("mri->ct", "body", "ssim"),
    "ct_to_mri_mae_body": ("ct->mri", "body", "mae"),
    "ct_to_mri_psnr_body_db": ("ct->mri", "body", "psnr"),
    "ct_to_mri_ssim_body": ("ct->mri", "body", "ssim"),
    "mri_to_ct_through_plane_mae_body_hu": ("mri->ct", "body", "through_plane_mae"),
    "ct_to_mri_through_plane_mae_body": ("ct->mri", "body", "through_plane_mae"),
}
KEY_FIELDS = ("model", "preset", "dataset", "train_dataset", "budget", "split")
SYNTHETIC_SUBJECTS, SYNTHETIC_SLICES, SYNTHETIC_IMAGE_SIZE = 40, 32, 256
"""The default ``synthetic`` config: subjects, slices per subject, pixels."""


def training_config(model: str, preset: str, *, data_dir, dataset_config: str | None,
                    precision: str, seed: int, overrides: dict | None = None):
    """The preset's config with the data source, precision, seed and ``overrides``
    (``{"loss.lambda_rec": "5", ...}``, as ``--set``) applied; ``dataset_config`` None: the
    phantoms at the model's size (:func:`native_dataset`)."""
    from ctmri_tf import configs

    values = {"data.data_dir": str(data_dir), "precision": precision, "seed": seed,
              **(overrides or {})}
    config = configs.override(configs.get_config(model, preset), values)
    return configs.override(config, {"data.dataset_config": dataset_config
                                     or native_dataset(config)})


def native_dataset(config) -> str:
    """The dataset the benchmark evaluates ``config`` on when ``--dataset-config`` is not given.

    A preset's ``synthetic`` phantoms (40 subjects x 32 slices x 256 px) are rendered at the
    model's input size instead (``synthetic_40x32x128`` for a 128 px model); other datasets
    (``demo``: ``synthetic_v2_40x32x128``, ``make demo``'s) are used as they are,
    so the model is scored against ground truth at its own resolution: resizing its output back
    to 256 px would blur every edge and cost more than the targets allow (see
    :func:`resolution_floor`).
    """
    d = config.data
    if d.dataset_config != "synthetic" or d.image_size == SYNTHETIC_IMAGE_SIZE:
        return d.dataset_config
    from ctmri_tf.datasets.ctmri import synthetic_config
    return synthetic_config(num_subjects=SYNTHETIC_SUBJECTS, num_slices=SYNTHETIC_SLICES,
                            image_size=d.image_size).name


def check_disjoint(train_dataset: str, eval_dataset: str, splits, *, data_dir) -> None:
    """Raise :class:`CtmriInputError` when a subject of ``train_dataset``'s ``train`` split is
    also in one of ``eval_dataset``'s ``splits`` (the same seed and index of a phantom, or the
    same folder name): the benchmark would score a model on subjects it was trained on."""
    from ctmri_tf import data

    trained = data.subject_ids("train", config=train_dataset, data_dir=data_dir)
    for split in splits:
        shared = trained & data.subject_ids(split, config=eval_dataset, data_dir=data_dir)
        if shared:
            names = ", ".join(sorted(shared)[:5]) + (" ..." if len(shared) > 5 else "")
            raise CtmriInputError(None, f"--train-dataset-config {train_dataset}: its train "
                                        f"split holds {len(shared)} subject(s) of the {split} "
                                        f"split of {eval_dataset} ({names}); train on a "
                                        f"dataset of another seed (..._seed1)")


_BODY_FIELDS = {(direction, metric): field
                for field, (direction, region, metric) in HEADLINE.items() if region == "body"}
"""(direction, metric) -> the :data:`HEADLINE` field of its body-region figure."""


def _mean_body_scores(subjects, prediction) -> dict:
    """The :data:`HEADLINE` body fields, means over ``subjects``, of ``prediction(subject,
    target)`` (a volume in physical units: CT in HU, MRI signal) scored against each subject's
    ``target`` volume inside the body, as ``ctmri_tf.evaluate`` scores a model (HU for CT MAE,
    [0, 1] MRI scale; through-plane MAE per slice)."""
    from ctmri_tf import metrics

    values: dict[str, list[float]] = {field: [] for field in _BODY_FIELDS.values()}
    for subject in subjects:
        for target, direction in (("ct", "mri->ct"), ("mri", "ct->mri")):
            truth, low_high = subject.images[target], subject.ranges[target]
            pred = prediction(subject, target)
            if target == "ct":
                value_range = metrics.CT_RANGE_HU
            else:
                pred, truth = (metrics.mri_to_unit_interval(x, low_high) for x in (pred, truth))
                value_range = metrics.MRI_UNIT_RANGE
            body = metrics.image_metrics(pred, truth, subject.masks[target], value_range)["body"]
            body["through_plane_mae"] = metrics.through_plane_mae(
                pred, truth, subject.masks[target], value_range,
                slice_indices=subject.indices(target))
            for metric, value in body.items():
                if (direction, metric) in _BODY_FIELDS:
                    values[_BODY_FIELDS[direction, metric]].append(value)
    return {field: _mean(v) for field, v in values.items()}


def _mean(values) -> float:
    """Mean of the values that are not NaN (NaN when none is)."""
    import numpy as np

    kept = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(kept)) if kept else math.nan


def resolution_floor(subjects, image_size: int) -> dict | None:
    """The score of a perfect model that runs at ``image_size``: each subject's ground truth
    resized to ``image_size`` and back (bilinear, as ``evaluate.resized_translator``), scored
    against itself inside the body. None when the subjects already have that size.

    Returns:
        The :data:`HEADLINE` fields, means over subjects (HU for CT MAE, [0, 1] MRI scale).
    """
    import tensorflow as tf

    from ctmri_tf import intensity

    if all(s.images["ct"].shape[1:] == (image_size, image_size) for s in subjects):
        return None

    def round_trip(subject, target):
        truth, low_high = subject.images[target], subject.ranges[target]
        unit = intensity.to_unit(truth, target, low_high)[..., None]
        small = tf.image.resize(unit, (image_size, image_size), method="bilinear", antialias=True)
        back = tf.image.resize(small, truth.shape[1:], method="bilinear").numpy()[..., 0]
        return intensity.from_unit(back, target, low_high)

    return _mean_body_scores(subjects, round_trip)


def phantom_version(dataset_config: str) -> int | None:
    """1 for the v1 phantom configs (``synthetic*``), 2 for phantom v2 (``synthetic_v2*``),
    None for anything else (user folders, unknown names)."""
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import (SOURCE_SYNTHETIC,
                                                               SOURCE_SYNTHETIC_V2, known_config)
    try:
        config = known_config(dataset_config)
    except CtmriInputError:
        return None
    return {SOURCE_SYNTHETIC: 1, SOURCE_SYNTHETIC_V2: 2}.get(config.source)


def regenerate_phantoms(subjects, dataset_config: str) -> dict | None:
    """Each phantom subject of a synthetic dataset rendered again from its index (in its
    ``subject_id``: ``phantom-<seed>-<index>``, v2 ``phantom2-<seed>-<index>[-heldout]``), the
    dataset's seed and grid: ``{subject_id: (noisy, noise_free, median_hu)}``
    (``phantom.PhantomSubject`` / ``phantom_v2.PhantomSubjectV2``, with their label maps);
    ``median_hu`` is the noise-free subject with every CT value that the MRI does not show at
    the middle of its per-subject range (v2: also the median over CT kernels,
    :func:`median_subject_v2`; :func:`mri_only_floor`). The noisy rendering must
    match the stored volumes, so the labels are those of the stored subject.

    Returns:
        The renderings, or None for non-synthetic data, a subject id of another seed or
        version, or a re-rendered subject that does not match the stored one.
    """
    import dataclasses

    import numpy as np

    from ctmri_tf import phantom, phantom_v2
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import known_config

    version = phantom_version(dataset_config)
    if version is None:
        return None
    config = known_config(dataset_config)
    prefix = f"phantom-{config.seed}-" if version == 1 else f"phantom2-{config.seed}-"
    grid = dict(image_size=config.image_size, num_slices=config.num_slices, seed=config.seed)
    rendered = {}
    for subject in subjects:
        sid = subject.subject_id
        if not sid.startswith(prefix):
            return None
        rest = sid[len(prefix):]
        heldout = version == 2 and rest.endswith("-heldout")
        rest = rest[:-len("-heldout")] if heldout else rest
        if not rest.isdigit():
            return None
        index = int(rest)
        if version == 1:
            def make(noise, median=False, index=index):
                bone = (float(np.mean(phantom.CT_HU["cortical_bone"])) if median else None)
                return phantom.make_subject(index, noise=noise, bone_hu=bone, **grid)
        else:
            domain = phantom_v2.HELDOUT_DOMAIN if heldout else phantom_v2.TRAINING_DOMAIN

            def make(noise, median=False, index=index, domain=domain):
                if not median:
                    return phantom_v2.make_subject(index, noise=noise, domain=domain, **grid)
                return median_subject_v2(index, domain, **grid)
        noisy = make(True)
        if not (noisy.ct.shape == np.shape(subject.images["ct"])
                and np.allclose(noisy.ct, subject.images["ct"], atol=1e-3)
                and np.allclose(noisy.mri, subject.images["mri"], rtol=1e-5, atol=1e-3)):
            return None
        rendered[sid] = (noisy, make(False), make(False, median=True))
    return rendered


def median_subject_v2(index: int, domain, *, image_size: int, num_slices: int, seed: int):
    """Phantom v2 subject ``index`` of ``domain`` as an MRI-only model can at best predict its
    CT: noise-free, every tissue at its median HU (:func:`median_ct_hu_v2`), and the per-voxel
    median of the CT rendered with each of :data:`FLOOR_KERNELS` reconstruction kernels that
    sample the kernel distribution evenly (``phantom_v2.ct_kernel_quantiles``): the MRI shows
    neither the HU nor the kernel (a sharp kernel's edge overshoot and undershoot alone move a
    128 px subject's body MAE by up to ~150 HU). MRI, labels and masks are the subject's own;
    ``settings["ct_kernel"]`` is ``"median"``."""
    import numpy as np

    from ctmri_tf import phantom_v2

    drawn = phantom_v2.subject_settings(index, seed=seed, domain=domain)
    drawn = dataclasses.replace(drawn, ct_hu=median_ct_hu_v2())
    renders = [phantom_v2.make_subject(
        index, noise=False, domain=domain, image_size=image_size, num_slices=num_slices,
        seed=seed, settings=dataclasses.replace(drawn, ct_kernel=kernel,
                                                ct_kernel_strength=strength))
        for kernel, strength in phantom_v2.ct_kernel_quantiles(FLOOR_KERNELS)]
    ct = np.median(np.stack([r.ct for r in renders]), axis=0).astype(renders[0].ct.dtype)
    return dataclasses.replace(renders[0], ct=ct, settings={
        **renders[0].settings, "ct_kernel": "median", "ct_kernel_strength": None})


def median_ct_hu_v2() -> dict[str, float]:
    """Phantom v2's CT value per tissue at the middle of its per-subject range
    (``phantom_v2.CT_HU_RANGES``, drawn uniformly: the median), ventricles as CSF."""
    from ctmri_tf import phantom_v2

    hu = {name: (low + high) / 2.0 for name, (low, high) in phantom_v2.CT_HU_RANGES.items()}
    hu["ventricle"] = hu["csf"]
    return hu


def mri_only_floor(subjects, phantoms: dict) -> dict:
    """What a model that sees only the MRI can at best score MRI -> CT, on phantoms: each
    subject's noise-free CT rendered with every CT value that the MRI does not show at the
    middle of its per-subject range (v1: the cortical bone, 700-1800 HU, dark in MRI whatever
    its HU; v2: every tissue's HU, drawn per subject independently of the MRI, and the CT
    reconstruction kernel, smooth or sharp, as the per-voxel median over
    :data:`FLOOR_KERNELS` kernels: :func:`median_subject_v2`), scored against the stored noisy
    CT. Knowing the anatomy exactly, the best L1 guess of a value drawn uniformly is the middle
    of its range; no model can do better on average, short of luck. (v2 floors before
    2026-12-04 rendered each subject with its own kernel, which no MRI shows: 55.0 / 49.9 HU on
    the test / held-out subjects of ``synthetic_v2_48x32x128``, against 91.0 / 83.6 now.)

    Returns:
        The MRI -> CT :data:`HEADLINE` body fields (HU), means over subjects (the CT -> MRI
        fields are left out: that direction's floor is the noise-free MRI row's).
    """
    scores = _mean_body_scores(
        subjects, lambda subject, target: getattr(phantoms[subject.subject_id][2], target))
    return {field: value for field, value in scores.items() if field.startswith("mri_to_ct")}


def noise_floor(subjects, dataset_config: str, phantoms: dict | None = None) -> dict | None:
    """The score of a perfect model on synthetic phantoms: each test subject rendered again
    without noise (``phantom.make_subject(..., noise=False)``, v2 likewise), scored against the
    stored, noisy ground truth inside the body. No model can predict the noise, so none can beat
    it. None for non-synthetic data, or when a re-rendered noisy subject does not match the
    stored one (:func:`regenerate_phantoms`; ``phantoms``: its result, if already at hand).

    Returns:
        The :data:`HEADLINE` fields, means over subjects (HU for CT MAE, [0, 1] MRI scale).
    """
    phantoms = phantoms if phantoms is not None else regenerate_phantoms(subjects, dataset_config)
    if phantoms is None:
        return None
    return _mean_body_scores(subjects,
                             lambda subject, target: getattr(phantoms[subject.subject_id][1],
                                                             target))


def _label_ids(names) -> list[int]:
    from ctmri_tf import phantom_v2
    return [phantom_v2.TISSUES[name] for name in names]


def brain_hu_checks(synthetic_ct, true_ct, labels, *, bone_hu: float = BONE_HU) -> dict:
    """Anatomy checks of one synthetic CT volume against the true CT and the label map.

    Both volumes are clipped to the metrics' CT range (``metrics.CT_RANGE_HU``) first. Brain:
    the :data:`BRAIN_TISSUES` labels; white matter :data:`WHITE_MATTER_TISSUES`; grey matter
    :data:`GREY_MATTER_TISSUES` (ids of ``ctmri_tf.phantom_v2.TISSUES``, = v1's for v1 maps).

    Args:
        synthetic_ct, true_ct: ``(slices, rows, cols)`` HU.  labels: same shape, tissue ids.
        bone_hu: a brain voxel above this is "bone predicted in the brain".

    Bone predicted in the brain counts the brain voxels where the synthetic CT is above
    ``bone_hu`` and the true CT is not: the true CT itself exceeds 300 HU in 2-3 % of the
    labelled brain voxels of the 128 px phantoms (partial volume with the skull in-plane and
    across thick slices), which no model should be blamed for.

    Returns:
        ``brain_voxels``; ``bone_fraction``: share of brain voxels with synthetic CT > bone_hu
        where the true CT is <= bone_hu (bone predicted where there is none);
        ``any_bone_fraction``: share with synthetic CT > bone_hu; ``true_bone_fraction``: share
        with true CT > bone_hu; for ``wm`` and ``gm``: ``<t>_voxels``, ``<t>_median_hu`` (synthetic),
        ``<t>_true_median_hu`` and ``<t>_median_error_hu`` = ``|synthetic - true|`` of the
        medians. NaN for a region without voxels.
    """
    import numpy as np

    from ctmri_tf import metrics

    pred = np.clip(np.asarray(synthetic_ct, np.float64), *metrics.CT_RANGE_HU)
    truth = np.clip(np.asarray(true_ct, np.float64), *metrics.CT_RANGE_HU)
    labels = np.asarray(labels)
    if not pred.shape == truth.shape == labels.shape:
        raise CtmriInputError(None, f"synthetic CT {pred.shape}, true CT {truth.shape} and "
                                    f"labels {labels.shape} must have one shape")
    brain = np.isin(labels, _label_ids(BRAIN_TISSUES))
    n = int(brain.sum())
    bone, true_bone = pred[brain] > bone_hu, truth[brain] > bone_hu
    out = {"brain_voxels": n,
           "bone_fraction": float(np.mean(bone & ~true_bone)) if n else math.nan,
           "any_bone_fraction": float(np.mean(bone)) if n else math.nan,
           "true_bone_fraction": float(np.mean(true_bone)) if n else math.nan}
    for key, tissues in (("wm", WHITE_MATTER_TISSUES), ("gm", GREY_MATTER_TISSUES)):
        region = np.isin(labels, _label_ids(tissues))
        count = int(region.sum())
        predicted = float(np.median(pred[region])) if count else math.nan
        true = float(np.median(truth[region])) if count else math.nan
        out.update({f"{key}_voxels": count, f"{key}_median_hu": predicted,
                    f"{key}_true_median_hu": true,
                    f"{key}_median_error_hu": abs(predicted - true)})
    return out


TISSUE_GROUPS = ("bone", "brain", "air")
"""The MRI -> CT error breakdown of :func:`tissue_errors` (labels of
``ctmri_tf.phantom_v2.TISSUES``): ``bone``, the skull's cortical bone and diploe (``marrow``);
``brain``, ``phantom_v2.BRAIN_TISSUES``; ``air``, ``phantom_v2.AIR_TISSUES`` inside the body
outline (sinuses, airway, mastoid cells, and background air the body mask takes in); then
``soft_tissue``, every other label (scalp fat and muscle, skin, eyes, neck)."""


def tissue_errors(synthetic_ct, true_ct, labels, body, visible=None) -> dict:
    """Where one synthetic CT volume's error is: MRI -> CT absolute error inside the body
    (``body``: the CT body mask, as the MAE of ``ctmri_tf.evaluate``) by :data:`TISSUE_GROUPS`
    and ``soft_tissue``, both volumes clipped to ``metrics.CT_RANGE_HU`` first.

    ``visible``: the part of the body the MRI shows, where it is less than the body (a
    skull-stripped MRI: its brain; None: the whole body). A skull-stripped MRI holds nothing of
    the scalp and skull that the body MAE also scores, so a model can only invent them there,
    and the MRI-only floor, which knows the anatomy, is a bound only inside ``visible``.

    Returns:
        ``body_mae_hu`` (mean |synthetic - true| over the body, HU), ``visible_mae_hu`` (over
        ``body & visible``; NaN without voxels) and ``visible_voxel_share`` (its part of the
        body voxels); for each group ``g``: ``<g>_mae_hu`` (over the group's body voxels, HU;
        NaN without voxels), ``<g>_error_share`` (the group's part of the summed body error,
        0-1) and ``<g>_voxel_share`` (its part of the body voxels).
    """
    import numpy as np

    from ctmri_tf import metrics, phantom_v2

    tissues_of = {"bone": ("cortical_bone", "marrow"), "brain": phantom_v2.BRAIN_TISSUES,
                  "air": phantom_v2.AIR_TISSUES}
    pred = np.clip(np.asarray(synthetic_ct, np.float64), *metrics.CT_RANGE_HU)
    truth = np.clip(np.asarray(true_ct, np.float64), *metrics.CT_RANGE_HU)
    labels, body = np.asarray(labels), np.asarray(body, bool)
    seen = body if visible is None else body & np.asarray(visible, bool)
    if not pred.shape == truth.shape == labels.shape == body.shape == seen.shape:
        raise CtmriInputError(None, f"synthetic CT {pred.shape}, true CT {truth.shape}, labels "
                                    f"{labels.shape}, body mask {body.shape} and visible "
                                    f"region {seen.shape} must have one shape")
    error = np.abs(pred - truth)
    total_error, total_voxels = float(error[body].sum()), int(body.sum())
    out = {"body_mae_hu": total_error / total_voxels if total_voxels else math.nan,
           "visible_mae_hu": float(error[seen].mean()) if seen.any() else math.nan,
           "visible_voxel_share": int(seen.sum()) / total_voxels if total_voxels else math.nan}
    grouped = np.zeros(labels.shape, bool)
    regions = {}
    for group in TISSUE_GROUPS:
        regions[group] = np.isin(labels, _label_ids(tissues_of[group])) & body
        grouped |= regions[group]
    regions["soft_tissue"] = body & ~grouped
    for group, region in regions.items():
        count = int(region.sum())
        out[f"{group}_mae_hu"] = float(error[region].mean()) if count else math.nan
        out[f"{group}_error_share"] = (float(error[region].sum()) / total_error
                                       if total_error > 0 else math.nan)
        out[f"{group}_voxel_share"] = count / total_voxels if total_voxels else math.nan
    return out


TISSUE_ERROR_FIELDS = tuple(f"{group}_{field}" for group in (*TISSUE_GROUPS, "soft_tissue")
                            for field in ("mae_hu", "error_share", "voxel_share"))
"""The group keys of :func:`tissue_errors`, averaged over subjects into a row's fields (its
``body_mae_hu`` and ``visible_voxel_share`` stay per subject: the row has the body MAE already)."""

ANATOMY_FIELDS = {  # row field -> brain_hu_checks key, averaged over subjects
    "brain_bone_fraction": "bone_fraction",
    "brain_any_bone_fraction": "any_bone_fraction",
    "true_brain_bone_fraction": "true_bone_fraction",
    "wm_median_error_hu": "wm_median_error_hu",
    "gm_median_error_hu": "gm_median_error_hu",
    "wm_median_hu": "wm_median_hu",
    "wm_true_median_hu": "wm_true_median_hu",
    "gm_median_hu": "gm_median_hu",
    "gm_true_median_hu": "gm_true_median_hu",
    **{field: field for field in TISSUE_ERROR_FIELDS},
    "mri_to_ct_mae_visible_hu": "visible_mae_hu",
}


def anatomy_summary(per_subject: dict) -> dict:
    """``{subject_id: brain_hu_checks(...) (+ tissue_errors(...))}`` -> the
    :data:`ANATOMY_FIELDS` (means over subjects, NaN and missing keys ignored),
    ``<field>_max`` (worst subject) of the fraction and the two errors, and ``anatomy``: the
    per-subject figures."""
    out = {field: _mean([c.get(key, math.nan) for c in per_subject.values()])
           for field, key in ANATOMY_FIELDS.items()}
    for field in ("brain_bone_fraction", "wm_median_error_hu", "gm_median_error_hu"):
        values = [c[ANATOMY_FIELDS[field]] for c in per_subject.values()
                  if not math.isnan(c.get(ANATOMY_FIELDS[field], math.nan))]
        out[f"{field}_max"] = max(values) if values else math.nan
    out["anatomy"] = {sid: dict(c) for sid, c in per_subject.items()}
    return out


def synthetic_ct(translator, subject, batch_size: int):
    """The MRI->CT translation of ``subject`` in HU, exactly as ``ctmri_tf.evaluate`` makes it
    (source in [-1, 1] with its range, background masked, translated in chunks of
    ``batch_size`` slices or as a whole volume, mapped with the CT volume's range)."""
    from ctmri_tf import evaluate, intensity

    source = evaluate._source_unit(subject, "mri", mask_inputs=True)  # noqa: SLF001
    out = evaluate._translate("model", translator, source, subject.masks["mri"],  # noqa: SLF001
                              "mri", "ct", batch_size)
    return intensity.from_unit(out, "ct", subject.ranges["ct"])


def mri_visible_region(rendered):
    """The part of a phantom subject's body its MRI shows, for :func:`tissue_errors`: a
    skull-stripped v2 subject's brain (``PhantomSubjectV2.brain``: its MRI is 0 elsewhere),
    None (the whole body) for every other subject."""
    settings = getattr(rendered, "settings", None) or {}
    return rendered.brain if settings.get("skull_stripped") else None


def anatomy_checks(translators, subjects, phantoms: dict, batch_size: int) -> dict:
    """``{model: anatomy_summary}`` of every translator that does MRI->CT, plus ``None`` (key)
    for the noise-free ground truth and :data:`MRI_ONLY_FLOOR` for :func:`mri_only_floor`'s
    CT, on ``subjects`` with the labels of ``phantoms`` (:func:`regenerate_phantoms`)."""
    from ctmri_tf import evaluate

    def checks(prediction, subject):
        rendered = phantoms[subject.subject_id][0]
        labels = rendered.labels
        return {**brain_hu_checks(prediction, subject.images["ct"], labels),
                **tissue_errors(prediction, subject.images["ct"], labels, subject.masks["ct"],
                                visible=mri_visible_region(rendered))}

    results = {}
    for name, translator in translators.items():
        if not evaluate._supports(translator, "mri", "ct"):  # noqa: SLF001
            continue
        results[name] = anatomy_summary({
            s.subject_id: checks(synthetic_ct(translator, s, batch_size), s) for s in subjects})
    results[None] = anatomy_summary({
        s.subject_id: checks(phantoms[s.subject_id][1].ct, s) for s in subjects})
    results[MRI_ONLY_FLOOR] = anatomy_summary({
        s.subject_id: checks(phantoms[s.subject_id][2].ct, s) for s in subjects})
    return results


def calibrate(config, overrides=None) -> float:
    """Seconds per training iteration of ``config`` (the preset with ``overrides``, the
    ``--set`` fields) on its tfds input (``benchmarks.train_speed.measure``, in this process)."""
    from benchmarks import train_speed

    spec = train_speed.Spec(config.experiment, config.preset, config.precision,
                            config.data.batch_size, iterations=CALIBRATION_ITERATIONS,
                            warmup=CALIBRATION_WARMUP, data_dir=config.data.data_dir,
                            dataset_config=config.data.dataset_config, seed=config.seed,
                            overrides=tuple(sorted((overrides or {}).items())))
    return train_speed.measure(spec)["seconds_per_iteration"]


def budget_steps(seconds: float, seconds_per_iteration: float, cycle: int) -> int:
    """Whole ``cycle``s of iterations that fit in ``seconds`` (at least one cycle)."""
    cycles = max(1, int(seconds // (seconds_per_iteration * cycle)))
    return cycles * cycle


def warm_start_budget_steps(seconds: float, regression_seconds: float,
                            adversarial_seconds: float, share: float, cycle: int) -> int:
    """Training steps that fit in ``seconds`` for a StarGAN whose regression warm-up is
    ``share`` (0-1) of the run (``loss.adversarial_start_step / schedule.steps``, kept by
    :func:`scheduled`): that share at ``regression_seconds`` per step, the rest at
    ``adversarial_seconds`` per (critic + generator) iteration; whole ``cycle``s."""
    per_step = share * regression_seconds + (1.0 - share) * adversarial_seconds
    return max(1, int(seconds // (per_step * cycle))) * cycle


def scheduled(config, steps: int):
    """``config`` with ``steps`` training steps: the learning-rate decay (and a StarGAN
    regression warm-up) keep the config's share of the run (``configs.run_share_overrides``),
    image grids four times, one checkpoint at the end."""
    from ctmri_tf import configs

    every = max(1, steps // 10)
    return configs.override(config, {
        "schedule.steps": steps, **configs.run_share_overrides(config, steps),
        "schedule.log_every": every, "schedule.summary_every": every,
        "schedule.validation_every": steps, "schedule.sample_every": max(1, steps // 4),
        "schedule.checkpoint_every": steps, "schedule.keep_checkpoints": 1})


def train_model(config, run_root: Path, progress: bool):
    """Train ``config`` from scratch with ``loop.train``; return ``(task, TrainingResult,
    seconds)``."""
    import tensorflow as tf

    from ctmri_tf.training import loop
    from ctmri_tf.training.run_dir import create_run_dir
    from ctmri_tf.training.runtime import configure_keras

    strategy = tf.distribute.get_strategy()
    configure_keras(config.seed, config.precision)   # tf.data shuffles use the global seed
    from ctmri_tf import experiments

    entry = experiments.get(config.experiment)       # the trainers' own inputs and task
    train_data = entry.inputs(config).train
    task = entry.task(config, strategy)
    run = create_run_dir(run_root, config)
    start = time.perf_counter()
    result = loop.train(task, strategy=strategy, train_dataset=train_data,
                        schedule=config.schedule, run_dir=run, seed=config.seed,
                        progress=progress)
    return task, result, time.perf_counter() - start


def translator_of(task, config):
    """The evaluation translator of a trained task, run at its training size."""
    from ctmri_tf import evaluate

    if config.experiment == "stargan":
        translator = evaluate.stargan_translator(task.generator)
    else:
        translator = evaluate.cyclegan_translator(task.generators())
    return evaluate.resized_translator(translator, config.data.image_size)


def headline(summary: dict) -> dict:
    """The body-region means of one model's summary (``evaluate``'s ``summary[model]``)."""
    values = {}
    for field, (direction, region, metric) in HEADLINE.items():
        stats = summary.get(direction, {}).get(region, {}).get(metric)
        values[field] = stats["mean"] if stats and stats["n"] else math.nan
    return values


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _preset_note(row: dict) -> str:
    preset = row.get("preset")
    if preset in (TARGET_PRESET, f"{TARGET_PRESET}_2p5d"):
        return ""
    return f" (targets are for the {TARGET_PRESET} preset; this is {preset})"


def _check(checks: list, target: str, row: dict, value: float, limit: float, passed: bool,
           line: str) -> None:
    checks.append({"target": target, "model": row["model"], "split": row.get("split"),
                   "preset": row.get("preset"), "value": value, "limit": limit,
                   "passed": bool(passed), "line": line + _preset_note(row)})


def _visible_note(row: dict, body_mae: float) -> str:
    """Where some subjects' MRI shows less than the body (skull-stripped): the MAE over what
    it shows, said beside the body figure (the target's region, unchanged)."""
    visible = row.get("mri_to_ct_mae_visible_hu", math.nan)
    if math.isnan(visible) or abs(visible - body_mae) < 0.05:
        return ""
    return (f"; over the anatomy the MRI shows (a skull-stripped subject: its brain, not the "
            f"scalp and skull it has no image of): {visible:.1f} HU")


def target_checks(rows: list[dict], version: int | None) -> list[dict]:
    """The issue-14 targets of every trained model's rows: ``{"target", "model", "split",
    "preset", "value", "limit", "passed", "line"}`` (the printed line, PASS / FAIL).

    Phantom v2 data (``version`` 2): the held-out split's MAE, held-out / in-domain ratio, bone
    in the brain and white / grey matter median HU. Other data: the v1 targets on ``test``
    (MRI->CT MAE and CT->MRI SSIM inside the body). With a 2-D and a 2.5-D row of one model on
    a split: 2.5-D beats 2-D on MRI->CT through-plane MAE (:func:`context_checks`).
    """
    checks: list[dict] = []
    for row in rows:
        if row.get("kind") != "trained":
            continue
        name, split = row["model"], row.get("split", SPLIT_TEST)
        mae, ssim = row["mri_to_ct_mae_body_hu"], row["ct_to_mri_ssim_body"]
        if version != 2 and split == SPLIT_TEST:
            _check(checks, "mri_to_ct_mae_body_hu_max", row, mae, TARGET_MRI_TO_CT_MAE_HU,
                   mae <= TARGET_MRI_TO_CT_MAE_HU,
                   f"{name} MRI->CT MAE in body: {mae:.1f} HU (target <= "
                   f"{TARGET_MRI_TO_CT_MAE_HU:.0f} HU: {_verdict(mae <= TARGET_MRI_TO_CT_MAE_HU)})")
            _check(checks, "ct_to_mri_ssim_body_min", row, ssim, TARGET_CT_TO_MRI_SSIM,
                   ssim >= TARGET_CT_TO_MRI_SSIM,
                   f"{name} CT->MRI SSIM in body: {ssim:.3f} (target >= "
                   f"{TARGET_CT_TO_MRI_SSIM:.2f}: {_verdict(ssim >= TARGET_CT_TO_MRI_SSIM)})")
        if version != 2 or split != SPLIT_HELDOUT:
            continue
        where = f"({SPLIT_HELDOUT})"
        _check(checks, "heldout_mri_to_ct_mae_body_hu_max", row, mae, TARGET_HELDOUT_MAE_HU,
               mae <= TARGET_HELDOUT_MAE_HU,
               f"{name} MRI->CT MAE in body {where}: {mae:.1f} HU (target <= "
               f"{TARGET_HELDOUT_MAE_HU:.0f} HU: {_verdict(mae <= TARGET_HELDOUT_MAE_HU)})"
               + _visible_note(row, mae))
        ratio = row.get("heldout_to_in_domain_mae_ratio", math.nan)
        ok = ratio <= TARGET_HELDOUT_RATIO
        _check(checks, "heldout_to_in_domain_mae_ratio_max", row, ratio, TARGET_HELDOUT_RATIO,
               ok, f"{name} held-out / in-domain MRI->CT MAE: {mae:.1f} / "
                   f"{row.get('in_domain_mri_to_ct_mae_body_hu', math.nan):.1f} HU = "
                   f"{ratio:.2f}x (target <= {TARGET_HELDOUT_RATIO:g}x: {_verdict(ok)})")
        bone = row.get("brain_bone_fraction", math.nan)
        ok = bone <= TARGET_BONE_IN_BRAIN_FRACTION
        _check(checks, "brain_bone_fraction_max", row, bone, TARGET_BONE_IN_BRAIN_FRACTION, ok,
               f"{name} bone (> {BONE_HU:.0f} HU) predicted in the brain where the true CT "
               f"has none {where}: {100 * bone:.2f} % of brain voxels (target <= "
               f"{100 * TARGET_BONE_IN_BRAIN_FRACTION:g} %: {_verdict(ok)}; > {BONE_HU:.0f} HU "
               f"anywhere in the brain: synthetic "
               f"{100 * row.get('brain_any_bone_fraction', math.nan):.2f} %, true "
               f"{100 * row.get('true_brain_bone_fraction', math.nan):.2f} %)")
        for key, tissue in (("wm", "white matter"), ("gm", "grey matter")):
            error = row.get(f"{key}_median_error_hu", math.nan)
            ok = error <= TARGET_TISSUE_MEDIAN_HU
            _check(checks, f"{key}_median_error_hu_max", row, error, TARGET_TISSUE_MEDIAN_HU, ok,
                   f"{name} {tissue} median HU {where}: off by {error:.1f} HU (synthetic "
                   f"{row.get(f'{key}_median_hu', math.nan):.1f}, true "
                   f"{row.get(f'{key}_true_median_hu', math.nan):.1f}; target <= "
                   f"{TARGET_TISSUE_MEDIAN_HU:.0f} HU: {_verdict(ok)})")
    checks.extend(context_checks(rows))
    return checks


def tta_label(label: str, tta: str) -> str:
    """The row name of model ``label`` evaluated with test-time augmentation ``tta``."""
    return f"{label} + {tta} TTA"


def context_checks(rows: list[dict]) -> list[dict]:
    """2.5-D beats 2-D: for every trained model with a 2-D and a 2.5-D row on a split, the
    through-plane MRI->CT MAE inside the body of both (and their MAE and training time)."""
    checks: list[dict] = []
    trained = [r for r in rows if r.get("kind") == "trained"]
    for row in trained:
        if row.get("context_slices", 1) <= 1:
            continue
        flat = [r for r in trained if r.get("context_slices", 1) == 1
                and r.get("experiment") == row.get("experiment")
                and r.get("split") == row.get("split") and r.get("tta") == row.get("tta")]
        if not flat:
            continue
        base = flat[0]
        tp, tp_2d = (r["mri_to_ct_through_plane_mae_body_hu"] for r in (row, base))
        ok = tp < tp_2d
        time_note = (f"trained {row.get('train_minutes', math.nan):.1f} vs "
                     f"{base.get('train_minutes', math.nan):.1f} min")
        if row.get("budget", "").endswith("steps"):
            time_note += " (equal steps, not equal time: use --minutes)"
        line = (f"{row['model']} vs {base['model']} ({row.get('split')}): MRI->CT through-plane "
                f"MAE in body {tp:.2f} vs {tp_2d:.2f} HU/slice, MAE "
                f"{row['mri_to_ct_mae_body_hu']:.1f} vs {base['mri_to_ct_mae_body_hu']:.1f} HU, "
                f"{time_note} (target: 2.5-D beats 2-D on through-plane error: {_verdict(ok)})")
        checks.append({"target": "context_beats_2d_through_plane", "model": row["model"],
                       "baseline_model": base["model"], "split": row.get("split"),
                       "preset": row.get("preset"), "value": tp, "limit": tp_2d,
                       "mae": row["mri_to_ct_mae_body_hu"],
                       "mae_2d": base["mri_to_ct_mae_body_hu"], "passed": bool(ok),
                       "line": line + _preset_note(row)})
    return checks


def target_lines(rows: list[dict], version: int | None = None) -> list[str]:
    """The printed lines of :func:`target_checks`."""
    return [check["line"] for check in target_checks(rows, version)]


def model_label(model: str, config) -> str:
    """``StarGAN``, ``CycleGAN``; ``StarGAN 2.5-D`` for ``model.context_slices`` > 1."""
    k = config.model.context_slices
    return MODEL_LABELS[model] + (" 2.5-D" if k > 1 else "")


def context_presets(preset: str) -> tuple[str, str]:
    """``(2-D preset, 2.5-D preset)`` of ``--compare-context`` from either of them.

    Raises:
        CtmriInputError: a preset without a 2.5-D variant.
    """
    from ctmri_tf import configs

    if preset in configs.CONTEXT_PRESETS:
        return configs.CONTEXT_PRESETS[preset], preset
    for context, base in configs.CONTEXT_PRESETS.items():
        if base == preset:
            return base, context
    raise CtmriInputError(None, f"--compare-context: preset {preset!r} has no 2.5-D variant; "
                                f"use one of {', '.join(sorted(configs.CONTEXT_PRESETS.values()))}")


COLUMNS = [
    common.Column("model", "model"),
    common.Column("split", "split"),
    common.Column("steps", "steps"),
    common.Column("train_minutes", "train min", "{:.1f}"),
    common.Column("mri_to_ct_mae_body_hu", "MRI→CT MAE body (HU)", "{:.1f}"),
    common.Column("mri_to_ct_mae_visible_hu", "MRI→CT MAE MRI-visible (HU)", "{:.1f}"),
    common.Column("mri_to_ct_through_plane_mae_body_hu", "MRI→CT through-plane (HU/slice)",
                  "{:.2f}"),
    common.Column("mri_to_ct_psnr_body_db", "MRI→CT PSNR body (dB)", "{:.2f}"),
    common.Column("mri_to_ct_ssim_body", "MRI→CT SSIM body", "{:.4f}"),
    common.Column("ct_to_mri_mae_body", "CT→MRI MAE body ([0,1])", "{:.4f}"),
    common.Column("ct_to_mri_ssim_body", "CT→MRI SSIM body", "{:.4f}"),
    common.Column("brain_bone_fraction", "bone in brain", common.percent),
    common.Column("wm_median_error_hu", "WM |Δmedian| (HU)", "{:.1f}"),
    common.Column("gm_median_error_hu", "GM |Δmedian| (HU)", "{:.1f}"),
    common.Column("bone_mae_hu", "bone MAE (HU)", "{:.0f}"),
    common.Column("bone_error_share", "bone share of error", common.percent),
]


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(prog="python -m benchmarks.quality",
                        description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="stargan,cyclegan",
                        help="comma-separated: stargan, cyclegan (default: both)")
    parser.add_argument("--preset", default=TARGET_PRESET,
                        help="smoke, demo, paper, smoke_2p5d or demo_2p5d (default: demo)")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training budget per model, minutes (default: 30)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train exactly this many steps instead of a time budget")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="tfds data folder; the dataset is built there if missing "
                             "(default: artifacts/tensorflow_datasets, as make demo; --quick: a "
                             "temporary folder)")
    parser.add_argument("--dataset-config", default=None,
                        help="tfds ctmri config (default: the preset's phantoms rendered at the "
                             "model's image size; synthetic_v2_40x32x128 for demo; the v1 "
                             "targets: synthetic_40x32x128)")
    parser.add_argument("--train-dataset-config", default=None,
                        help="train on the train split of this tfds ctmri config instead "
                             "(e.g. more phantoms of another seed: synthetic_400x32x128_seed1) "
                             "and evaluate on --dataset-config's test splits; no subject may "
                             "be in both (default: --dataset-config's train split)")
    parser.add_argument("--compare-context", action="store_true",
                        help="train every model 2-D (the preset) and 2.5-D (<preset>_2p5d, "
                             "model.context_slices=3) with the same budget and compare their "
                             "through-plane MAE (presets smoke, demo or their _2p5d)")
    parser.add_argument("--precision", default="float32", help="float32 or mixed_bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="override a config field of every trained model, e.g. --set "
                             "loss.n_critic=1 (repeatable; see python -m train.stargan --help)")
    parser.add_argument("--tta", default="none", choices=("none", "lr", "lr+ud"),
                        help="also evaluate every trained model with flip test-time "
                             "augmentation, as ctmri translate --tta runs it (rows '<model> + "
                             "<tta> TTA'; default: none)")
    parser.add_argument("--eval-batch-size", type=int, default=16,
                        help="slices per translator call during evaluation")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the run folders and the evaluation report (metrics.csv, "
                             "comparison.md, grids) in this new folder (default: deleted)")
    common.add_output_arguments(parser, NAME)
    return parser


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    models = common.parse_choices(args.models, MODELS, "model")
    if args.quick:
        args.preset, args.steps = QUICK_PRESET, QUICK_STEPS
    if args.steps is not None and args.steps < 1:
        raise CtmriInputError(None, f"--steps must be >= 1, got {args.steps}")
    if args.steps is None and not args.minutes > 0:
        raise CtmriInputError(None, f"--minutes must be positive, got {args.minutes}")
    if args.keep is not None and args.keep.exists():
        raise CtmriInputError(args.keep, "already exists; --keep takes a new folder")
    presets = context_presets(args.preset) if args.compare_context else (args.preset,)
    common.check_out(args.out, args.overwrite)
    previous = common.previous_results(args)
    for row in (previous or {}).get("rows", []):   # files from before the split column: test
        if isinstance(row, dict):
            row.setdefault("split", SPLIT_TEST)
    machine = common.machine_info()

    from ctmri_tf import configs as config_module
    from ctmri_tf.training.cli import parse_set
    overrides = parse_set(args.overrides)
    work = Path(tempfile.mkdtemp(prefix="ctmri-quality-"))
    try:
        data_dir = args.data_dir or (work / "tfds" if args.quick else DEFAULT_DATA_DIR)
        runs = []                                   # (label, model, config), table order
        for model in models:
            for preset in presets:
                config = training_config(model, preset, data_dir=data_dir,
                                         dataset_config=args.dataset_config,
                                         precision=args.precision, seed=args.seed,
                                         overrides=overrides)
                runs.append((model_label(model, config), model, config))
        datasets = {config.data.dataset_config for _, _, config in runs}
        if len(datasets) != 1:
            raise CtmriInputError(None, f"the runs would use different datasets "
                                        f"{sorted(datasets)}; pass --dataset-config")
        dataset = datasets.pop()
        train_dataset = args.train_dataset_config or dataset
        version = phantom_version(dataset)
        from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build
        print(f"[{NAME}] dataset ctmri/{dataset} in {data_dir} ...", file=sys.stderr, flush=True)
        report = build(dataset, data_dir=data_dir)
        print(report.summary(), file=sys.stderr)
        splits = [SPLIT_TEST] + ([SPLIT_HELDOUT] if report.num_examples.get(SPLIT_HELDOUT)
                                 else [])
        train_report = None
        if train_dataset != dataset:
            print(f"[{NAME}] training dataset ctmri/{train_dataset} in {data_dir} ...",
                  file=sys.stderr, flush=True)
            train_report = build(train_dataset, data_dir=data_dir)
            print(train_report.summary(), file=sys.stderr)
            check_disjoint(train_dataset, dataset, splits, data_dir=data_dir)
            runs = [(label, model, config_module.override(
                config, {"data.dataset_config": train_dataset}))
                for label, model, config in runs]

        from ctmri_tf import baselines, evaluate
        translators = dict(baselines.baseline_translators(
            baselines.reference_from_split("train", config=train_dataset, data_dir=data_dir)))
        trained: dict[str, dict] = {}
        for label, model, config in runs:
            seconds_per_iteration = None
            if args.steps is None:
                print(f"[{NAME}] {label}: measuring s/iteration ...", file=sys.stderr, flush=True)
                from benchmarks.train_speed import cycle_length
                warm_up = (config.loss.adversarial_start_step / config.schedule.steps
                           if config.experiment == "stargan" else 0.0)
                seconds_per_iteration = calibrate(config, overrides)   # from step 0
                steps = budget_steps(args.minutes * 60, seconds_per_iteration,
                                     cycle_length(config))
                if 0 < warm_up < 1:
                    # a warm-up shorter than the run: its regression steps (timed above)
                    # and the critic + generator iterations after it (timed now)
                    adversarial = calibrate(config, {**overrides,
                                                     "loss.adversarial_start_step": "0"})
                    steps = warm_start_budget_steps(args.minutes * 60, seconds_per_iteration,
                                                    adversarial, warm_up, cycle_length(config))
            else:
                steps = args.steps
            config = scheduled(config, steps)
            print(f"[{NAME}] {label}: training {steps} steps ({config.preset}, "
                  f"{config.data.image_size} px, batch {config.data.batch_size}, "
                  f"{config.model.context_slices} slice(s) in) ...", file=sys.stderr, flush=True)
            run_name = model if config.model.context_slices == 1 else f"{model}_{config.preset}"
            task, result, seconds = train_model(config, work / "runs" / run_name,
                                                progress=not args.quick)
            translators[label] = translator_of(task, config)
            trained[label] = {"experiment": model, "preset": config.preset,
                              "context_slices": config.model.context_slices,
                              "steps": result.step, "train_minutes": seconds / 60,
                              "seconds_per_iteration_calibrated": seconds_per_iteration,
                              "seconds_per_step_training": result.seconds_per_step,
                              "config": config}
            if args.tta != "none":        # the same model as ctmri translate --tta runs it
                translators[tta_label(label, args.tta)] = evaluate.mirrored_translator(
                    translators[label], args.tta)
                trained[tta_label(label, args.tta)] = {**trained[label], "tta": args.tta}
        sizes = {config.data.image_size for _, _, config in runs}
        evaluated = {}       # split -> (results, floors, phantom_floors, anatomy)
        for split in splits:
            print(f"[{NAME}] evaluating on the {split} subjects ...", file=sys.stderr,
                  flush=True)
            subjects = evaluate.load_subjects(split, config=dataset, data_dir=data_dir)
            floors = {size: floor for size in sorted(sizes)
                      if (floor := resolution_floor(subjects, size)) is not None}
            phantoms = regenerate_phantoms(subjects, dataset)
            phantom_floors = None if phantoms is None else {
                "noise": noise_floor(subjects, dataset, phantoms),
                "mri_only": mri_only_floor(subjects, phantoms)}
            folder = "evaluation" if split == SPLIT_TEST else f"evaluation_{split}"
            results = evaluate.evaluate(translators, subjects, work / folder,
                                        batch_size=args.eval_batch_size, progress=not args.quick)
            anatomy = (anatomy_checks(translators, subjects, phantoms, args.eval_batch_size)
                       if phantoms is not None else {})
            evaluated[split] = (results, floors, phantom_floors, anatomy)
        if args.keep is not None:
            with atomic_output(args.keep, directory=True) as kept:
                for split in splits:
                    folder = "evaluation" if split == SPLIT_TEST else f"evaluation_{split}"
                    shutil.copytree(work / folder, kept / folder)
                shutil.copytree(work / "runs", kept / "runs")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    budget = f"{args.steps} steps" if args.steps is not None else f"{args.minutes:g} min"
    rows = []
    for split, (results, floors, phantom_floors, anatomy) in evaluated.items():
        common_fields = {"dataset": dataset, "budget": budget, "split": split,
                         # only when it differs, so rows still match earlier runs' rows
                         **({"train_dataset": train_dataset} if train_dataset != dataset
                            else {}),
                         "test_subjects": len(results["subjects"])}
        for name in results["models"]:
            info = trained.get(name, {})
            row = {"model": name, "kind": "trained" if name in trained else "baseline",
                   "preset": info.get("preset", args.preset), **common_fields,
                   **{k: v for k, v in info.items() if k != "config"},
                   **headline(results["summary"].get(name, {})),
                   **anatomy.get(name, {}),
                   "summary": results["summary"].get(name, {})}
            if "config" in info:
                row["config"] = config_module.to_dict(info["config"])
            rows.append(row)
        for size, floor in floors.items():
            rows.append({"model": f"ground truth via {size} px", "kind": "resolution floor",
                         "preset": args.preset, **common_fields, **floor})
        if phantom_floors is not None:
            rows.append({"model": "noise-free ground truth", "kind": "noise floor",
                         "preset": args.preset, **common_fields, **phantom_floors["noise"],
                         **anatomy.get(None, {})})
            rows.append({"model": MRI_ONLY_FLOOR, "kind": "information floor",
                         "preset": args.preset, **common_fields,
                         **phantom_floors["mri_only"], **anatomy.get(MRI_ONLY_FLOOR, {})})
    in_domain = {row["model"]: row["mri_to_ct_mae_body_hu"] for row in rows
                 if row["split"] == SPLIT_TEST}
    ratios = {}
    for row in rows:
        if row["split"] == SPLIT_HELDOUT and row["model"] in in_domain:
            base = in_domain[row["model"]]
            row["in_domain_mri_to_ct_mae_body_hu"] = base
            row["heldout_to_in_domain_mae_ratio"] = ratio = (
                row["mri_to_ct_mae_body_hu"] / base if base > 0 else math.nan)
            ratios[row["model"]] = ratio
    for split, (results, floors, _, _) in evaluated.items():
        if len(evaluated) > 1:
            print(f"\n### split {split}\n")
        print(evaluate.comparison_markdown(results))
        for size in floors:
            print(f"[{NAME}] the models run at {size} px and are scored at the data's size: "
                  f"the 'ground truth via {size} px' row is the best any model at that size "
                  f"can score", file=sys.stderr)
    if any(row["kind"] == "information floor" for row in rows):
        print(f"[{NAME}] the '{MRI_ONLY_FLOOR}' row is the best MRI->CT score of any model "
              f"that sees only the MRI: the anatomy exactly, every CT value the MRI does not "
              f"show (v1: the subject's bone HU; v2: every tissue's) at the middle of its range"
              f"{'' if version == 1 else ', and the median over CT reconstruction kernels'}",
              file=sys.stderr)
    checks = target_checks(rows, version)
    from ctmri_tf import phantom_v2

    notes = {"protocol": evaluated[SPLIT_TEST][0]["protocol"],
             "subjects": {split: r[0]["subjects"] for split, r in evaluated.items()},
             "splits": splits, "phantom_version": version,
             "presets": list(presets), "compare_context": bool(args.compare_context),
             "heldout_to_in_domain_mae_ratio": ratios,
             "mri_only_floor_ct_kernels": (
                 [list(k) for k in phantom_v2.ct_kernel_quantiles(FLOOR_KERNELS)]
                 if version == 2 else None),
             "anatomy": {"brain_tissues": list(BRAIN_TISSUES),
                         "white_matter_tissues": list(WHITE_MATTER_TISSUES),
                         "grey_matter_tissues": list(GREY_MATTER_TISSUES),
                         "bone_hu": BONE_HU,
                         "labels": "regenerated from each subject's index, the dataset's seed "
                                   "and grid, checked against the stored volumes"},
             "targets": {"preset": TARGET_PRESET,
                         "v1_mri_to_ct_mae_body_hu_max": TARGET_MRI_TO_CT_MAE_HU,
                         "v1_ct_to_mri_ssim_body_min": TARGET_CT_TO_MRI_SSIM,
                         "heldout_mri_to_ct_mae_body_hu_max": TARGET_HELDOUT_MAE_HU,
                         "heldout_to_in_domain_mae_ratio_max": TARGET_HELDOUT_RATIO,
                         "brain_bone_fraction_max": TARGET_BONE_IN_BRAIN_FRACTION,
                         "tissue_median_error_hu_max": TARGET_TISSUE_MEDIAN_HU,
                         "context_beats_2d_through_plane": True},
             "target_checks": checks,
             "comparison_markdown": evaluate.comparison_markdown(evaluated[SPLIT_TEST][0]),
             "comparison_markdown_by_split": {split: evaluate.comparison_markdown(r[0])
                                              for split, r in evaluated.items()},
             "train_dataset": train_dataset,
             "dataset_build": dataclasses.asdict(report),
             "train_dataset_build": (dataclasses.asdict(train_report)
                                     if train_report is not None else None)}
    common.finish(args, benchmark=NAME, rows=rows, columns=COLUMNS, notes=notes, machine=machine,
                  previous=previous, key_fields=KEY_FIELDS, metric="mri_to_ct_mae_body_hu",
                  higher_is_better=False, summary=[check["line"] for check in checks])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments or input (message on stderr)."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

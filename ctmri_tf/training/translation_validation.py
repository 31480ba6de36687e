"""What the translation trainers (StarGAN, CycleGAN) report while training: PSNR/SSIM of both
directions on paired validation batches, and the rows of the sample image grids.

``translate(images, target)`` is the trainer's inference call: images ``(B, H, W, 1)`` in [-1, 1]
translated to ``target`` (``"ct"`` or ``"mri"``), returned in [-1, 1]. For a 2.5-D trainer
(``model.context_slices`` k > 1) the batches hold k-slice stacks ``(B, H, W, k)``
(``ctmri_tf.data.paired_batches(..., stack_target=True)``): ``translate`` gets the stacks (or, for
a reconstruction, a single translated slice), returns the centre slice ``(B, H, W, 1)``, and the
metrics and grids compare and show centre slices (channel ``k // 2``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from ctmri_tf import intensity

Translate = Callable[[tf.Tensor, str], tf.Tensor]

_CT_LOW, _CT_HIGH = intensity.CT_WINDOW_HU
_CT_SCALE = (f"both clipped to the CT window {_CT_LOW:g}..{_CT_HIGH:g} HU and scaled to [0, 1] "
             f"(peak {_CT_HIGH - _CT_LOW:g} HU, as `ctmri evaluate` in HU)")
_MRI_SCALE = ("both on the volume's MRI scale, its 0.5..99.5 % signal percentiles mapped to "
              "[0, 1] and clipped (as `ctmri evaluate`)")
_WHAT = {"mri_to_ct": ("the translated CT", "registered CT", _CT_SCALE, "hu_range"),
         "ct_to_mri": ("the translated MRI", "registered MRI", _MRI_SCALE, "unit_range")}


def _summary_tags() -> dict[str, tuple[str, str]]:
    tags = {}
    for direction, (fake, real, scale, suffix) in _WHAT.items():
        for prefix, what in (("", fake), ("identity_", "the input itself (no translation)")):
            tags[f"{prefix}psnr_{direction}"] = (
                f"{direction}/{prefix}psnr_db_{suffix}",
                f"PSNR in dB of {what} against the {real}, {scale}; mean over the slices.")
            tags[f"{prefix}ssim_{direction}"] = (
                f"{direction}/{prefix}ssim_{suffix}",
                f"SSIM (11x11 Gaussian window) of {what} against the {real}, {scale}; mean over "
                f"the slices.")
    tags["mae_hu_mri_to_ct"] = (
        "mri_to_ct/mae_hu", f"Mean absolute error in HU of the translated CT against the "
                            f"registered CT, both clipped to {_CT_LOW:g}..{_CT_HIGH:g} HU; whole "
                            f"slice, mean over the slices.")
    return tags


SUMMARY_TAGS = _summary_tags()
"""``{metric of paired_psnr_ssim: (TensorBoard tag under validation/, description)}``: the tag
names the direction and the scale (``hu_range``: CT window in HU; ``unit_range``: the MRI scale
[0, 1]), the description says it in words."""

HPARAM_METRICS = (("mri_to_ct/psnr_db_hu_range", "MRI->CT PSNR (dB, CT -1024..3000 HU)"),
                  ("mri_to_ct/ssim_hu_range", "MRI->CT SSIM"),
                  ("mri_to_ct/mae_hu", "MRI->CT MAE (HU)"),
                  ("ct_to_mri/psnr_db_unit_range", "CT->MRI PSNR (dB, MRI [0,1])"),
                  ("ct_to_mri/ssim_unit_range", "CT->MRI SSIM"))
"""The validation tags (under ``validation/``) the HParams dashboard compares runs by, with
their display names; their last values are the run's final metrics."""

ROW_CT_WINDOWS_HU = {"brain": (0.0, 80.0), "bone": (-450.0, 1050.0)}
"""CT display windows of the sample grids, in HU: each direction's row shows CT in the brain
window, a second row the same CT cells in the bone window."""


def _centre(x) -> tf.Tensor:
    """The centre slice ``(B, H, W, 1)`` of a stack ``(B, H, W, k)`` (itself for k = 1)."""
    x = tf.convert_to_tensor(x)
    c = x.shape[-1] // 2
    return x[..., c:c + 1]


def _to_unit_interval(x: tf.Tensor) -> tf.Tensor:
    """Model space [-1, 1] -> [0, 1] (clipped), the range tf.image.psnr/ssim are told."""
    return (tf.clip_by_value(tf.cast(x, tf.float32), -1.0, 1.0) + 1.0) / 2.0


def paired_psnr_ssim(translate: Translate, batch) -> dict:
    """PSNR (dB) and SSIM of MRI->CT and CT->MRI on a paired batch, per example ``(B,)``.

    ``batch`` comes from ``ctmri_tf.data.paired_batches(..., source="mri")``: ``source`` is the
    MRI and ``target`` the registered CT, both in [-1, 1]; images are mapped to [0, 1]
    (``max_val=1``) before ``tf.image.psnr`` / ``tf.image.ssim``.

    The identity baseline (the input itself taken as the translation) is reported beside the
    model, so the curves in TensorBoard say whether the model beats doing nothing.

    Returns:
        ``{"psnr_mri_to_ct", "ssim_mri_to_ct", "psnr_ct_to_mri", "ssim_ct_to_mri"}``, the
        same four prefixed with ``identity_``, and ``mae_hu_mri_to_ct`` (MAE in HU, with the
        batch's ``target_range`` when it has one, else ``intensity.CT_WINDOW_HU``). Their
        TensorBoard tags and descriptions: :data:`SUMMARY_TAGS`.
    """
    mri_input, ct_input = batch["source"], batch["target"]
    mri, ct = _centre(mri_input), _centre(ct_input)
    if "target_range" in batch:
        ct_range = tf.cast(batch["target_range"], tf.float32)
        hu_per_unit = (ct_range[:, 1] - ct_range[:, 0]) / 2.0
    else:
        hu_per_unit = tf.constant((_CT_HIGH - _CT_LOW) / 2.0)
    fake_ct = translate(mri_input, "ct")
    difference = tf.abs(tf.clip_by_value(tf.cast(fake_ct, tf.float32), -1.0, 1.0)
                        - tf.clip_by_value(tf.cast(ct, tf.float32), -1.0, 1.0))
    metrics = {"mae_hu_mri_to_ct": tf.reduce_mean(difference, axis=[1, 2, 3]) * hu_per_unit}
    for name, source, source_input, target, real in (("mri_to_ct", mri, mri_input, "ct", ct),
                                                     ("ct_to_mri", ct, ct_input, "mri", mri)):
        real = _to_unit_interval(real)
        translated = fake_ct if target == "ct" else translate(source_input, target)
        for prefix, fake in (("", translated), ("identity_", source)):
            fake = _to_unit_interval(fake)
            metrics[f"{prefix}psnr_{name}"] = tf.image.psnr(fake, real, max_val=1.0)
            metrics[f"{prefix}ssim_{name}"] = tf.image.ssim(fake, real, max_val=1.0)
    return metrics


def _window(x: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """A CT image in model space re-scaled so that ``window_hu`` spans [-1, 1] (clipped)."""
    low, high = (float(intensity.ct_to_unit(v)) for v in window_hu)
    return np.clip((np.asarray(x, np.float32) - low) / (high - low) * 2.0 - 1.0, -1.0, 1.0)


def sample_rows(translate: Translate, batch, max_examples: int = 2, *,
                reconstruct: bool = True):
    """Labelled image-grid rows in [-1, 1]: input | translated | reconstructed (| ground truth).

    A paired validation batch (``source`` MRI, ``target`` CT) gives, per example, an MRI -> CT
    and a CT -> MRI row with the registered other modality as ground truth; a training batch
    (``ct``, ``mri``) gives rows without ground truth. Each of these rows shows MRI on its
    percentile scale and CT in the brain window (:data:`ROW_CT_WINDOWS_HU`), and is followed by
    a row with the same CT cells in the bone window (MRI cells left empty).

    Args:
        reconstruct: show the cycle reconstruction column (off when the trainer has no cycle
            term, e.g. StarGAN with ``loss.lambda_rec == 0``).

    Returns:
        ``(rows, titles, row_labels)`` for ``ctmri_tf.visualize.image_grid`` (``row_labels``
        e.g. ``"MRI->CT\\nCT 0..80 HU"``: direction, then the CT window in HU).
    """
    if "source" in batch:
        mri, ct = batch["source"][:max_examples], batch["target"][:max_examples]
        truth_column = True
    else:
        ct, mri = batch["ct"][:max_examples], batch["mri"][:max_examples]
        truth_column = False
    titles = ["input", "translated"] + (["reconstructed"] if reconstruct else []) \
        + (["ground truth"] if truth_column else [])
    brain_hu, bone_hu = ROW_CT_WINDOWS_HU["brain"], ROW_CT_WINDOWS_HU["bone"]
    rows, labels = [], []
    for stack, modality, other, truth in ((mri, "mri", "ct", ct), (ct, "ct", "mri", mri)):
        translated = translate(stack, other)
        image, truth = _centre(stack).numpy(), _centre(truth).numpy()
        reconstructed = translate(translated, modality) if reconstruct else None
        # the modality of each column: input, translated, reconstructed, ground truth
        kinds = [modality, other] + ([modality] if reconstruct else []) \
            + ([other] if truth_column else [])
        for i in range(image.shape[0]):
            cells = [np.asarray(image[i]), np.asarray(translated[i])]
            if reconstruct:
                cells.append(np.asarray(reconstructed[i]))
            if truth_column:
                cells.append(np.asarray(truth[i]))
            direction = f"{modality.upper()}->{other.upper()}"
            rows.append([_window(c, brain_hu) if k == "ct" else c for c, k in zip(cells, kinds)])
            labels.append(f"{direction}\nCT {brain_hu[0]:g}..{brain_hu[1]:g} HU")
            rows.append([_window(c, bone_hu) if k == "ct" else None for c, k in zip(cells, kinds)])
            labels.append(f"{direction}\nCT {bone_hu[0]:g}..{bone_hu[1]:g} HU")
    return rows, titles, labels


def after_training(task, prepared, result) -> list[str]:
    """The translation trainers' final lines (the registry's ``after_training``): the last
    validation's PSNR of each direction ([0, 1] scale) next to the identity's (the input taken
    as the translation) on the same validation slices; none without validation."""
    if not result.validation:
        return []
    step, metrics = result.validation[-1]
    return [f"validation PSNR at step {step}, {title} ([0, 1] scale): "
            f"{metrics[f'psnr_{direction}']:.2f} dB; identity (no translation) "
            f"{metrics[f'identity_psnr_{direction}']:.2f} dB"
            for direction, title in (("mri_to_ct", "MRI->CT"), ("ct_to_mri", "CT->MRI"))
            if f"psnr_{direction}" in metrics]

"""What the translation trainers (StarGAN, CycleGAN) report while training: PSNR/SSIM of both
directions on paired validation batches, and the rows of the sample image grids.

``translate(images, target)`` is the trainer's inference call: images ``(B, H, W, 1)`` in [-1, 1]
translated to ``target`` (``"ct"`` or ``"mri"``), returned in [-1, 1].
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

Translate = Callable[[tf.Tensor, str], tf.Tensor]


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
        ``{"psnr_mri_to_ct", "ssim_mri_to_ct", "psnr_ct_to_mri", "ssim_ct_to_mri"}`` and the
        same four prefixed with ``identity_``.
    """
    mri, ct = batch["source"], batch["target"]
    metrics = {}
    for name, source, target, real in (("mri_to_ct", mri, "ct", ct),
                                       ("ct_to_mri", ct, "mri", mri)):
        real = _to_unit_interval(real)
        for prefix, fake in (("", translate(source, target)), ("identity_", source)):
            fake = _to_unit_interval(fake)
            metrics[f"{prefix}psnr_{name}"] = tf.image.psnr(fake, real, max_val=1.0)
            metrics[f"{prefix}ssim_{name}"] = tf.image.ssim(fake, real, max_val=1.0)
    return metrics


def sample_rows(translate: Translate, batch, max_examples: int = 2):
    """Image-grid rows in [-1, 1]: input | translated | reconstructed (| ground truth).

    A paired validation batch (``source`` MRI, ``target`` CT) gives, per example, an MRI row
    and a CT row with the registered other modality as ground truth; a training batch (``ct``,
    ``mri``) gives rows without ground truth.

    Returns:
        ``(rows, titles)`` for ``ctmri_tf.visualize.image_grid``.
    """
    if "source" in batch:
        mri, ct = batch["source"][:max_examples], batch["target"][:max_examples]
        titles = ["input", "translated", "reconstructed", "ground truth"]
    else:
        ct, mri = batch["ct"][:max_examples], batch["mri"][:max_examples]
        titles = ["input", "translated", "reconstructed"]
    rows = []
    for image, modality, other, truth in ((mri, "mri", "ct", ct), (ct, "ct", "mri", mri)):
        translated = translate(image, other)
        reconstructed = translate(translated, modality)
        for i in range(image.shape[0]):
            row = [np.asarray(image[i]), np.asarray(translated[i]), np.asarray(reconstructed[i])]
            if len(titles) == 4:
                row.append(np.asarray(truth[i]))
            rows.append(row)
    return rows, titles

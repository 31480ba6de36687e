"""Physics rules that decide, or weigh, a scan's modality before the classifier does.

``ctmri translate`` (:func:`ctmri_tf.translate.translate_file`) applies them in this order when
``--from`` is not given; the rule that decided is printed once, so the decision is explainable:

1. **DICOM Modality tag** (:func:`check_dicom_modality`): ``CT`` and ``MR`` decide. Another
   imaging modality (:data:`OTHER_IMAGING_MODALITIES`: ultrasound ``US``, PET ``PT``,
   radiography ``CR``/``DX``, ...) is refused, even with ``--from``: the models know only CT and
   MRI. A code that does not say what the scanner was (``OT`` "other", ``SC`` secondary capture,
   anything else) is refused unless ``--from`` says it.
2. **Air** (:func:`physics_evidence`): at least :data:`AIR_FRACTION` of the finite voxels below
   :data:`AIR_THRESHOLD` (-200). MR signal is a magnitude (>= 0 up to noise and offsets), so
   such values can only be HU: CT, decided without the classifier (a head CT is about 70 %
   air at -1000 HU).
3. **No negative value at all**: a CT in HU has air at about -1000 HU and fat near -100 HU, so
   a volume whose minimum is >= 0 is very unlikely to be a CT *in HU*. It is not decisive (a CT
   stored without its rescale intercept, 0..4095, has no negatives either), so it only weighs
   in: the classifier's MRI odds are multiplied by :data:`NO_NEGATIVE_MRI_LIKELIHOOD_RATIO`
   (:func:`combine`), which cannot rescue a classifier that is unsure on its own.
4. Otherwise the classifier alone.

The value rules need physical units: DICOM (rescaled) and NIfTI volumes. PNG/JPEG/TIFF values
mean nothing until the modality is known (a 16-bit CT PNG stores ``HU + 1024``), so for them only
the classifier speaks.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io.volume import modality_from_dicom

AIR_THRESHOLD = -200.0
"""Values below this (HU) cannot be MR signal."""
AIR_FRACTION = 0.01
"""Fraction of finite voxels below :data:`AIR_THRESHOLD` that makes a volume a CT (1 %: far
above what noise or a few bad pixels give, far below the air of any CT with the patient in it)."""
NO_NEGATIVE_MRI_LIKELIHOOD_RATIO = 4.0
"""How much more likely "no voxel below 0" is for an MRI than for a CT in HU (a judgement, not
a fit): it moves a classifier's 0.5 to 0.8 MRI (still below ``translate.MIN_CONFIDENCE``, so
an unsure classifier still abstains), its 0.7 to 0.9, and its 0.99 CT to 0.96 CT."""
OTHER_IMAGING_MODALITIES = frozenset({
    "US", "PT", "NM", "CR", "DX", "MG", "XA", "RF", "IO", "PX", "OP", "OCT", "ES", "XC", "GM",
    "SM", "BMD", "IVUS", "TG", "DG", "RG", "OPT", "OPM", "LS", "BI", "HC", "EPS", "ECG"})
"""DICOM Modality codes of scanners that are neither CT nor MR: always refused."""


@dataclasses.dataclass(frozen=True)
class PhysicsEvidence:
    """What the voxel values say about the modality.

    Attributes:
        modality: ``"ct"`` when a rule decides (air), else ``None``.
        mri_likelihood_ratio: factor on the classifier's MRI odds (1 = no evidence).
        rule: one line for the user: which rule applied and the numbers behind it.
        fraction_below_air: fraction of finite voxels below :data:`AIR_THRESHOLD`.
        minimum: the smallest finite value (physical units).
    """

    modality: str | None
    mri_likelihood_ratio: float
    rule: str
    fraction_below_air: float
    minimum: float


NO_EVIDENCE = PhysicsEvidence(None, 1.0, "", 0.0, float("nan"))


def physics_evidence(data: np.ndarray) -> PhysicsEvidence:
    """Apply rules 2-3 of the module docstring to a volume in physical units (HU or MR signal).

    Args:
        data: any shape, float; non-finite values are ignored.

    Returns:
        A :class:`PhysicsEvidence`; :data:`NO_EVIDENCE` (with a ``rule`` saying so) when the
        volume has no finite voxel.
    """
    values = np.asarray(data, np.float32)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return dataclasses.replace(NO_EVIDENCE, rule="physics: no finite voxel")
    below = float(np.mean(values < AIR_THRESHOLD))
    minimum = float(values.min())
    if below >= AIR_FRACTION:
        return PhysicsEvidence("ct", 1.0, f"physics: {100 * below:.1f} % of the voxels are below "
                                          f"{AIR_THRESHOLD:.0f}, which MR signal cannot be: CT "
                                          f"(air is -1000 HU)", below, minimum)
    if minimum >= 0.0:
        return PhysicsEvidence(None, NO_NEGATIVE_MRI_LIKELIHOOD_RATIO,
                               f"physics: no value below 0 (a CT in HU has air at -1000 HU): "
                               f"MRI odds x {NO_NEGATIVE_MRI_LIKELIHOOD_RATIO:g}", below, minimum)
    return PhysicsEvidence(None, 1.0, f"physics: undecided (minimum {minimum:.1f}, "
                                      f"{100 * below:.2f} % below {AIR_THRESHOLD:.0f})",
                           below, minimum)


def combine(p_mri: float, likelihood_ratio: float) -> float:
    """Posterior probability of MRI from the classifier's ``p_mri`` and a likelihood ratio
    (Bayes on odds: ``odds' = odds * likelihood_ratio``); 0 and 1 stay 0 and 1."""
    p = float(np.clip(p_mri, 0.0, 1.0))
    if p in (0.0, 1.0) or likelihood_ratio == 1.0:
        return p
    odds = p / (1.0 - p) * float(likelihood_ratio)
    return odds / (1.0 + odds)


def check_dicom_modality(tag_value: str | None, path: str | os.PathLike | None, *,
                         source: str | None) -> None:
    """Refuse a DICOM whose Modality tag is not CT or MR (rule 1 of the module docstring).

    Args:
        tag_value: the Modality (0008,0060) value, or None when the tag is missing (then the
            other rules and the classifier decide).
        path: the DICOM file or folder, named in the error.
        source: the ``--from`` modality, or None.

    Raises:
        CtmriInputError: another imaging modality (always), or a code that does not say what the
            scanner was and no ``source``.
    """
    if tag_value is None or modality_from_dicom(tag_value) is not None:
        return
    code = str(tag_value).strip().upper()
    if not code:
        return
    if code in OTHER_IMAGING_MODALITIES:
        raise CtmriInputError(path, f"its DICOM Modality is {code!r}, neither CT nor MR; the "
                                    f"models were trained on CT and MRI only and cannot "
                                    f"translate it (not even with --from)")
    if source is None:
        raise CtmriInputError(path, f"its DICOM Modality is {code!r}, which does not say whether "
                                    f"it is a CT or an MRI; pass --from ct|mri if you know")

"""Phantom v2: domain-randomised paired CT / T1-weighted MRI head phantoms (SynthSeg/SynthSR style).

Version 1 (:mod:`ctmri_tf.phantom`) renders every subject with one MRI sequence on one grid. Here
every subject also draws its *acquisition*: the MRI sequence family and timing, the in-plane
resolution, slice thickness, fields of view, skull stripping, CT reconstruction kernel and noise
levels, so that a model trained on the phantoms has seen many contrasts and geometries (the
domain-randomisation idea of SynthSeg, Billot et al. 2023, and SynthSR, Iglesias et al. 2023).

Anatomy (all sizes in mm, drawn per subject): the v1 head (its random draw,
:func:`ctmri_tf.phantom._draw_anatomy`, and its analytic geometry, ``phantom._HeadGeometry``: the
egg-shaped outline, skin/fat/muscle layers, the skull, the brain floor with its fossae, the
folded cortex, ventricles, deep grey nuclei, paranasal sinuses, lesions) with wider ranges
(skull thickness 3.5-9.5 mm, always with a diploe of cancellous bone between two cortical
tables; ventricles 0.55-1.2 x v1's size; a denser cortical folding) and, new in v2: a nose with a
nasal cavity (septum, turbinates), orbits (bony walls, orbital fat, the eye globe with sclera and vitreous, the optic nerve, four
rectus muscles), mastoid air cells, the neck below the skull (no skull shell behind and below the
occiput; mandible, cervical spine with the spinal cord in its canal, pharyngeal airway), a
cerebellum with fine folia under a tentorium, and a low-frequency elastic deformation of the
whole head (a few mm). The head's size (0.85-1.15, per axis +-5 %) and pose (yaw +-20 deg,
pitch +-12 deg, roll +-6 deg, shift) vary per subject.

Rendering: the label map is evaluated analytically at sub-slice positions across each slice's
thickness (boxcar slice profile, a sub-slice every <= 1.5 mm) and the CT / MRI values of the
sub-slices are averaged, so thick slices have through-plane partial volume; in-plane the signal
is blurred by a point-spread function of the acquisition resolution (coarser of the acquisition
spacing and the stored grid: partial volume in-plane). CT: HU per tissue drawn per subject in
:data:`CT_HU_RANGES`, a smooth (extra Gaussian blur) or sharp (edge-enhancing unsharp mask)
reconstruction kernel, and Gaussian noise filtered by the same kernel, then clipped to
:data:`CT_STORED_RANGE_HU` as a scanner stores it (a sharp kernel's undershoot at air / bone
edges would otherwise reach -2400 HU, values no real CT holds). MRI: spin-echo T1,
spoiled gradient echo (FLASH) or MPRAGE (inversion-prepared gradient-echo train, steady state
solved exactly) from per-tissue PD/T1/T2/T2* (:data:`MRI_TISSUE_PARAMETERS`, jittered per
subject), a smooth bias field, receiver gain, Rician noise at the acquisition resolution and,
optionally, skull stripping.

Storage geometry: every subject is stored on the requested ``(num_slices, image_size,
image_size)`` matrix over its own square in-plane field of view, so its pixel spacing
(:attr:`PhantomSubjectV2.spacing`) is ``field_of_view_mm / image_size`` and differs between
subjects; the acquisition in-plane spacing and the slice thickness are recorded in the settings
(the stored image has the resolution of the coarser of acquisition and storage grid).

Skull stripping: the body mask stays the whole head (it is shared by the registered CT and MRI);
in a skull-stripped subject the MRI is exactly 0 outside the brain (:attr:`PhantomSubjectV2.brain`:
grey and white matter, deep grey nuclei, intracranial CSF, ventricles, lesion), CT stays whole.

Domains: a subject's settings come from a :class:`Domain`, a set of ranges. :data:`TRAINING_DOMAIN`
(train, validation and test subjects) and :data:`HELDOUT_DOMAIN` (the ``test_heldout_domain``
split) have disjoint MRI contrasts and geometry: training sees spin-echo T1 and MPRAGE with TI
750-1000 ms at in-plane spacing 0.4-1.2 mm and slices 1-5 mm thick; the held-out domain is
spoiled gradient echo (a sequence family never trained on) or MPRAGE with TI 1100-1400 ms, at
1.2-1.5 mm in-plane spacing and 5-7 mm slices (a clinical thick-slice protocol).

A subject is a pure function of ``(seed, index, domain)`` and the matrix size; anatomy and pose
depend on ``(seed, index)`` only, so the same index in the other domain is the same head scanned
differently.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
from scipy import ndimage

from ctmri_tf import phantom
from ctmri_tf.errors import CtmriInputError

TISSUES: dict[str, int] = {
    **phantom.TISSUES,    # ids 0-9 as v1 (grey_matter: the cortex; csf: outside the ventricles)
    "ventricle": 10,      # CSF in the lateral and third ventricles
    "deep_grey": 11,      # thalamus, lentiform nucleus
    "vitreous": 12,       # the eye globe's vitreous body
    "optic_nerve": 13,
    "nasal_air": 14,      # nasal cavity and pharyngeal airway
    "mastoid_air": 15,    # mastoid air cells in the temporal bone
    "skin": 16,
    "mucosa": 17,         # nasal turbinates
    "spinal_cord": 18,
    "cerebellum_grey": 19,   # cerebellar cortex (folia)
    "sclera": 20,            # eye wall
}
"""Tissue name -> label id of :attr:`PhantomSubjectV2.labels` (v1 ids kept, new ones from 10)."""

BRAIN_TISSUES = ("grey_matter", "white_matter", "csf", "lesion", "ventricle", "deep_grey",
                 "cerebellum_grey")
"""Labels of the brain as skull stripping keeps it (intracranial CSF included)."""
AIR_TISSUES = ("background", "sinus_air", "nasal_air", "mastoid_air")

CT_STORED_RANGE_HU = (-1024.0, 3071.0)
"""What a CT scanner stores (12-bit images with rescale intercept -1024): v2 CT is clipped to it."""

CT_HU_RANGES: dict[str, tuple[float, float]] = {
    "background": (-1000.0, -1000.0),
    "fat": (-120.0, -80.0),
    "muscle": (35.0, 55.0),
    "cortical_bone": phantom.CT_HU["cortical_bone"],
    "marrow": (200.0, 600.0),          # diploe: cancellous bone with marrow
    "grey_matter": (34.0, 44.0),
    "white_matter": (22.0, 32.0),
    "csf": (0.0, 15.0),
    "sinus_air": (-1000.0, -1000.0),
    "lesion": (45.0, 70.0),
    "ventricle": (0.0, 15.0),          # drawn = this subject's csf value
    "deep_grey": (32.0, 45.0),
    "vitreous": (0.0, 20.0),
    "optic_nerve": (25.0, 40.0),
    "nasal_air": (-1000.0, -1000.0),
    "mastoid_air": (-1000.0, -1000.0),
    "skin": (20.0, 60.0),
    "mucosa": (30.0, 60.0),
    "spinal_cord": (25.0, 40.0),
    "cerebellum_grey": (34.0, 44.0),
    "sclera": (40.0, 70.0),
}
"""Tissue name -> (low, high) physical range of its noise-free CT value in HU; each subject draws
one value per tissue uniformly in it (recorded in ``settings["ct_hu"]``)."""

# Tissue name -> (proton density relative to CSF, T1 ms, T2 ms, T2* ms) at 1.5 T. PD/T1/T2 of the
# v1 tissues are v1's (phantom.MRI_TISSUE_PARAMETERS and its sources); the T2* values and the new
# tissues are typical rounded values, illustrative (T2* < T2; bone and trabecular marrow short
# from susceptibility; air has no protons, its T1/T2 are placeholders).
_T2STAR_MS = {"background": 1.0, "fat": 35.0, "muscle": 30.0, "cortical_bone": 0.4,
              "marrow": 10.0, "grey_matter": 70.0, "white_matter": 60.0, "csf": 1000.0,
              "sinus_air": 1.0, "lesion": 75.0}
MRI_TISSUE_PARAMETERS: dict[str, tuple[float, float, float, float]] = {
    **{name: (*values, _T2STAR_MS[name]) for name, values in phantom.MRI_TISSUE_PARAMETERS.items()},
    "ventricle": (*phantom.MRI_TISSUE_PARAMETERS["csf"], _T2STAR_MS["csf"]),
    "deep_grey": (0.80, 900.0, 85.0, 50.0),
    "vitreous": (0.98, 3500.0, 1000.0, 600.0),
    "optic_nerve": (0.70, 650.0, 75.0, 55.0),
    "nasal_air": (0.0, 1.0, 1.0, 1.0),
    "mastoid_air": (0.0, 1.0, 1.0, 1.0),
    "skin": (0.75, 800.0, 40.0, 25.0),
    "mucosa": (0.85, 1000.0, 90.0, 50.0),
    "spinal_cord": (0.72, 700.0, 80.0, 60.0),
    "cerebellum_grey": (0.80, 1000.0, 100.0, 70.0),
    "sclera": (0.60, 900.0, 40.0, 25.0),
}
"""Tissue name -> (proton density, T1 ms, T2 ms, T2* ms) at 1.5 T, before per-subject jitter."""

SEQUENCES = ("spin_echo", "spoiled_gre", "mprage")
"""MRI sequence families: spin-echo T1, spoiled gradient echo (FLASH) T1, MPRAGE."""
SPLIT_HELDOUT = "test_heldout_domain"
"""The split of :data:`HELDOUT_DOMAIN` subjects."""
SPLITS = ("train", "validation", "test", SPLIT_HELDOUT)

_N = len(TISSUES)
_NAMES = tuple(TISSUES)


# ----------------------------------------------------------------------------- signal equations

def spoiled_gre_signal(pd, t1_ms, t2star_ms, *, tr_ms: float, te_ms: float, flip_deg: float):
    """Steady-state spoiled gradient echo (FLASH):
    ``S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE / T2*)``, ``E1 = exp(-TR / T1)``
    (e.g. Bernstein, King, Zhou, Handbook of MRI Pulse Sequences, 2004).

    Args: pd relative proton density; t1_ms, t2star_ms in ms (broadcastable); TR, TE in ms; flip
    angle in degrees.
    """
    pd, t1, t2s = (np.asarray(v, np.float64) for v in (pd, t1_ms, t2star_ms))
    a = math.radians(flip_deg)
    e1 = np.exp(-tr_ms / t1)
    return pd * math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1) * np.exp(-te_ms / t2s)


def mprage_signal(pd, t1_ms, t2star_ms, *, tr_ms: float, ti_ms: float, te_ms: float,
                  flip_deg: float, echo_spacing_ms: float, num_readouts: int):
    """MPRAGE magnitude signal of the centre of k-space (linear phase order), steady state.

    One repetition (``tr_ms``, inversion to inversion): an ideal 180 deg inversion; free recovery
    until ``ti_ms - num_readouts / 2 * echo_spacing_ms``; ``num_readouts`` pulses of ``flip_deg``
    every ``echo_spacing_ms`` (each followed by recovery); free recovery to the next inversion.
    Every step maps ``Mz -> a Mz + b`` (recovery ``Mz -> PD + (Mz - PD) exp(-t / T1)``, a pulse
    ``Mz -> cos(flip) Mz``), so the steady state is the fixed point of their composition, as in
    Deichmann et al. 2000 and Wang et al. 2014. ``S = |Mz| sin(flip) exp(-TE / T2*)`` at the
    readout ``num_readouts // 2``. Times in ms; ``ti_ms`` is inversion to that readout.

    Raises:
        CtmriInputError: timing that does not fit (TI shorter than half the readout train, or TR
            shorter than TI plus the other half).
    """
    half = num_readouts // 2
    first = ti_ms - half * echo_spacing_ms
    rest = tr_ms - ti_ms - (num_readouts - half) * echo_spacing_ms
    if first < 0 or rest < 0 or num_readouts < 1:
        raise CtmriInputError(None, f"MPRAGE timing does not fit: TI {ti_ms} ms, TR {tr_ms} ms, "
                                    f"{num_readouts} readouts every {echo_spacing_ms} ms")
    pd, t1, t2s = (np.asarray(v, np.float64) for v in (pd, t1_ms, t2star_ms))
    cos_a = math.cos(math.radians(flip_deg))
    a, b = -np.ones_like(t1), np.zeros_like(t1)          # inversion of Mz

    def relax(a, b, t):
        e = np.exp(-t / t1)
        return a * e, b * e + pd * (1 - e)
    a, b = relax(a, b, first)
    centre = None
    for k in range(num_readouts):
        if k == half:
            centre = (a, b)                               # Mz just before the centre readout
        a, b = relax(a * cos_a, b * cos_a, echo_spacing_ms)
    a, b = relax(a, b, rest)
    steady = b / (1 - a)                                  # Mz before each inversion
    ca, cb = centre
    mz = ca * steady + cb
    return np.abs(mz) * math.sin(math.radians(flip_deg)) * np.exp(-te_ms / t2s)


# ----------------------------------------------------------------------------- domains, settings

@dataclasses.dataclass(frozen=True)
class Domain:
    """Ranges (low, high) that subjects' acquisition settings are drawn from, uniformly.

    Attributes:
        name: ``"training"`` or ``"heldout"`` (recorded in the settings).
        sequences: MRI sequence families drawn with equal probability (:data:`SEQUENCES`).
        spin_echo_tr_ms, spin_echo_te_ms: spin-echo TR, TE (ms).
        gre_tr_ms, gre_te_ms, gre_flip_deg: spoiled gradient echo TR, TE (ms), flip angle (deg).
        mprage_tr_ms, mprage_ti_ms, mprage_te_ms, mprage_flip_deg, mprage_echo_spacing_ms,
            mprage_readouts: MPRAGE inversion repetition time, inversion time, echo time (ms),
            flip angle (deg), time between readout pulses (ms), readout pulses per repetition.
        pixel_spacing_mm: acquisition in-plane spacing (mm).
        slice_thickness_mm: slice thickness (mm).
        field_of_view_mm: square in-plane field of view (mm); under ~200 mm crops the head.
        whole_head_probability: probability that the slices cover the whole head (else a slab).
        skull_strip_probability: probability that the MRI is skull-stripped.
    """

    name: str
    sequences: tuple[str, ...]
    spin_echo_tr_ms: tuple[float, float] = (400.0, 700.0)
    spin_echo_te_ms: tuple[float, float] = (8.0, 20.0)
    gre_tr_ms: tuple[float, float] = (15.0, 35.0)
    gre_te_ms: tuple[float, float] = (3.0, 7.0)
    gre_flip_deg: tuple[float, float] = (20.0, 40.0)
    mprage_tr_ms: tuple[float, float] = (1900.0, 2500.0)
    mprage_ti_ms: tuple[float, float] = (750.0, 1000.0)
    mprage_te_ms: tuple[float, float] = (2.5, 4.5)
    mprage_flip_deg: tuple[float, float] = (7.0, 12.0)
    mprage_echo_spacing_ms: tuple[float, float] = (6.0, 9.0)
    mprage_readouts: tuple[int, int] = (96, 176)
    pixel_spacing_mm: tuple[float, float] = (0.4, 1.2)
    slice_thickness_mm: tuple[float, float] = (1.0, 5.0)
    field_of_view_mm: tuple[float, float] = (150.0, 260.0)
    whole_head_probability: float = 0.6
    skull_strip_probability: float = 0.2

    def __post_init__(self):
        unknown = set(self.sequences) - set(SEQUENCES)
        if not self.sequences or unknown:
            raise CtmriInputError(None, f"Domain.sequences must be a non-empty subset of "
                                        f"{SEQUENCES}, got {self.sequences!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith(("_ms", "_mm", "_deg", "_readouts")) and not (
                    len(value) == 2 and 0 < value[0] <= value[1]):
                raise CtmriInputError(None, f"Domain.{field.name} must be (low, high) with "
                                            f"0 < low <= high, got {value!r}")
        for field in ("whole_head_probability", "skull_strip_probability"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise CtmriInputError(None, f"Domain.{field} must be in [0, 1]")


TRAINING_DOMAIN = Domain(name="training", sequences=("spin_echo", "mprage"))
"""Settings of the train, validation and test subjects."""
HELDOUT_DOMAIN = Domain(name="heldout", sequences=("spoiled_gre", "mprage"),
                        mprage_ti_ms=(1100.0, 1400.0), mprage_tr_ms=(2300.0, 2900.0),
                        pixel_spacing_mm=(1.2, 1.5), slice_thickness_mm=(5.0, 7.0))
"""Settings of the ``test_heldout_domain`` subjects: contrast and geometry never trained on."""
DOMAINS = {d.name: d for d in (TRAINING_DOMAIN, HELDOUT_DOMAIN)}


@dataclasses.dataclass(frozen=True)
class SubjectSettings:
    """Everything one subject's acquisition and pose draw (units in the names).

    ``ti_ms``, ``flip_deg``, ``echo_spacing_ms``, ``num_readouts`` are ``None`` where the sequence
    has none. ``z_bottom_mm`` is the lower edge of slice 0 relative to the head centre before the
    pose; slices are ``coverage_mm / num_slices`` apart and ``slice_thickness_mm`` thick (they
    overlap or leave gaps). ``ct_hu``: noise-free HU per tissue. ``deformation_mm``: peak of the
    elastic displacement.
    """

    domain: str
    sequence: str
    tr_ms: float
    te_ms: float
    ti_ms: float | None
    flip_deg: float | None
    echo_spacing_ms: float | None
    num_readouts: int | None
    pixel_spacing_mm: float
    slice_thickness_mm: float
    field_of_view_mm: float
    whole_head: bool
    z_bottom_mm: float
    coverage_mm: float
    skull_stripped: bool
    ct_kernel: str               # "smooth" or "sharp"
    ct_kernel_strength: float    # smooth: extra Gaussian sigma (mm); sharp: unsharp amount
    ct_noise_hu: float
    mri_noise_fraction: float    # Rician sigma / white-matter signal
    bias_amplitude: float        # peak |log| of the multiplicative bias field
    mri_gain: float
    head_scale: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]   # yaw (in-plane), pitch (nod), roll
    shift_mm: tuple[float, float, float]
    deformation_mm: float
    ct_hu: dict

    def as_dict(self) -> dict:
        """JSON-ready dict (tuples as lists, floats rounded to 1e-4)."""
        def clean(v):
            if isinstance(v, (bool, np.bool_)):
                return bool(v)
            if isinstance(v, (float, np.floating)):
                return float(round(float(v), 4))
            if isinstance(v, np.integer):
                return int(v)
            if isinstance(v, (tuple, list)):
                return [clean(u) for u in v]
            if isinstance(v, dict):
                return {k: clean(u) for k, u in v.items()}
            return v
        return {f.name: clean(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def _u(rng, low_high) -> float:
    return float(rng.uniform(*low_high))


SHARP_KERNEL_PROBABILITY = 0.4
"""Share of subjects whose CT has a sharp (edge-enhancing) reconstruction kernel; the others
have a smooth one. The kernel is drawn alike in every domain."""
SMOOTH_KERNEL_SIGMA_MM = (0.4, 1.2)
"""Smooth kernels: the extra Gaussian blur's sigma (mm), drawn uniformly."""
SHARP_KERNEL_AMOUNT = (0.5, 1.5)
"""Sharp kernels: the unsharp mask's amount, drawn uniformly."""


def ct_kernel(family_draw: float, strength_draw: float) -> tuple[str, float]:
    """The CT reconstruction kernel ``(ct_kernel, ct_kernel_strength)`` of two uniform [0, 1)
    draws: sharp below :data:`SHARP_KERNEL_PROBABILITY`, else smooth; the strength at
    ``strength_draw`` of its range."""
    if family_draw < SHARP_KERNEL_PROBABILITY:
        low, high = SHARP_KERNEL_AMOUNT
        return "sharp", float(low + (high - low) * strength_draw)
    low, high = SMOOTH_KERNEL_SIGMA_MM
    return "smooth", float(low + (high - low) * strength_draw)


def ct_kernel_quantiles(n: int) -> list[tuple[str, float]]:
    """``n`` kernels that sample the kernel distribution evenly: at the midpoints ``(k + 0.5) /
    n`` of its quantile function, sharp kernels from weakest to strongest (the first
    ``SHARP_KERNEL_PROBABILITY`` of the mass), then smooth ones likewise. Their per-voxel median
    is the best L1 guess of a CT whose kernel is unknown (``benchmarks.quality``'s MRI-only
    floor: the MRI does not show the CT's kernel)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    kernels = []
    for k in range(n):
        q = (k + 0.5) / n
        if q < SHARP_KERNEL_PROBABILITY:
            kernels.append(ct_kernel(q, q / SHARP_KERNEL_PROBABILITY))
        else:
            kernels.append(ct_kernel(q, (q - SHARP_KERNEL_PROBABILITY)
                                     / (1.0 - SHARP_KERNEL_PROBABILITY)))
    return kernels


def draw_settings(domain: Domain, rng: np.random.Generator) -> SubjectSettings:
    """One subject's settings from ``domain`` (the same draws in the same order for every domain,
    so a subject keeps its pose, kernel and noise levels across domains)."""
    family_draw, anatomy_pose = rng.random(), rng.random(12)
    seq = rng.random(10)
    geo = rng.random(8)
    ct = rng.random(4)
    hu_draws = rng.random(_N)

    def pick(low_high, q):
        low, high = low_high
        return float(low + (high - low) * q)

    sequence = domain.sequences[min(int(family_draw * len(domain.sequences)),
                                    len(domain.sequences) - 1)]
    ti = flip = spacing_ms = readouts = None
    if sequence == "spin_echo":
        tr, te = pick(domain.spin_echo_tr_ms, seq[0]), pick(domain.spin_echo_te_ms, seq[1])
    elif sequence == "spoiled_gre":
        tr, te = pick(domain.gre_tr_ms, seq[0]), pick(domain.gre_te_ms, seq[1])
        flip = pick(domain.gre_flip_deg, seq[2])
    else:
        ti = pick(domain.mprage_ti_ms, seq[3])
        te, flip = pick(domain.mprage_te_ms, seq[1]), pick(domain.mprage_flip_deg, seq[2])
        spacing_ms = pick(domain.mprage_echo_spacing_ms, seq[4])
        readouts = int(round(pick(domain.mprage_readouts, seq[5])))
        readouts = max(1, min(readouts, int(2 * (ti - 50.0) / spacing_ms)))   # fits before TI
        tr = max(pick(domain.mprage_tr_ms, seq[0]), ti + readouts * spacing_ms / 2 + 300.0)
    thickness = pick(domain.slice_thickness_mm, geo[1])
    whole = bool(geo[3] < domain.whole_head_probability)
    if whole:         # skull base or upper neck to the vertex
        bottom, top = -100.0 + 40.0 * geo[4], 78.0 + 12.0 * geo[5]
    else:             # a slab somewhere between the orbits and the vertex
        length = 50.0 + 60.0 * geo[4]
        bottom = -50.0 + (125.0 - length) * geo[5]
        top = bottom + length
    kernel, kernel_strength = ct_kernel(ct[0], ct[1])
    yaw, pitch, roll = (40 * anatomy_pose[0] - 20, 24 * anatomy_pose[1] - 12,
                        12 * anatomy_pose[2] - 6)
    size = 0.85 + 0.3 * anatomy_pose[3]
    hu = {name: pick(CT_HU_RANGES[name], q) for name, q in zip(_NAMES, hu_draws)}
    hu["ventricle"] = hu["csf"]
    return SubjectSettings(
        domain=domain.name, sequence=sequence, tr_ms=tr, te_ms=te, ti_ms=ti, flip_deg=flip,
        echo_spacing_ms=spacing_ms, num_readouts=readouts,
        pixel_spacing_mm=pick(domain.pixel_spacing_mm, geo[0]), slice_thickness_mm=thickness,
        field_of_view_mm=pick(domain.field_of_view_mm, geo[2]), whole_head=whole,
        z_bottom_mm=bottom, coverage_mm=top - bottom,
        skull_stripped=bool(geo[6] < domain.skull_strip_probability),
        ct_kernel=kernel, ct_kernel_strength=kernel_strength,
        ct_noise_hu=(4.0 + 16.0 * ct[2]) * (1.8 if kernel == "sharp" else 1.0),
        mri_noise_fraction=0.01 + 0.05 * seq[6], bias_amplitude=0.05 + 0.35 * seq[7],
        mri_gain=500.0 + 1500.0 * seq[8],
        head_scale=tuple(size * (0.95 + 0.1 * q) for q in anatomy_pose[4:7]),
        rotation_deg=(yaw, pitch, roll),
        shift_mm=(20 * anatomy_pose[7] - 10, 20 * anatomy_pose[8] - 10, 16 * anatomy_pose[9] - 8),
        deformation_mm=1.0 + 4.0 * anatomy_pose[10], ct_hu=hu)


def subject_settings(index: int, *, seed: int = 0, domain: Domain | str = TRAINING_DOMAIN
                     ) -> SubjectSettings:
    """The settings of subject ``index`` in ``domain`` (no images rendered: cheap)."""
    index, seed = phantom._check_int("index", index, 0), phantom._check_int("seed", seed, 0)
    return draw_settings(_domain(domain), np.random.default_rng([seed, index, 2]))


def _domain(domain: Domain | str) -> Domain:
    if isinstance(domain, Domain):
        return domain
    if domain not in DOMAINS:
        raise CtmriInputError(None, f"unknown phantom domain {domain!r}; use one of "
                                    f"{sorted(DOMAINS)}")
    return DOMAINS[domain]


# ----------------------------------------------------------------------------- anatomy

@dataclasses.dataclass(frozen=True)
class _Extras:
    """v2 structures beyond v1's anatomy (head frame, mm)."""

    nose: phantom._Ellipsoid
    nasal: phantom._Ellipsoid                   # nasal cavity
    turbinate_phase: float
    eyes: tuple[tuple, ...]                      # (globe centre, radius, apex, rim radius)
    mastoids: tuple[phantom._Ellipsoid, ...]
    cell_phases: np.ndarray                      # (3,) mastoid air-cell pattern
    spine_y: float                               # vertebral body centre y
    spine_radius: float
    airway: tuple[float, float, float]           # centre y, half-width x, half-depth y
    z_palate: float
    z_jaw: float                                 # lowest z of the mandible
    tentorium: float                             # height of the tentorium above the floor
    folia_waves: np.ndarray
    deformation: np.ndarray                      # (modes, 10): wave vector, phase, amplitude


def _draw_extras(a: phantom._Anatomy, rng: np.random.Generator, deformation_mm: float) -> _Extras:
    ax, ay, az_up, az_down = a.semi_axes
    z_front = float(phantom._floor(a.floor, np.float64(0.0), np.float64(ay)))
    rim = _u(rng, (16.0, 18.5))
    z_eye = z_front - rim - _u(rng, (2.5, 4.5))
    eyes = []
    x_eye = _u(rng, (30.0, 34.0))
    radius = _u(rng, (11.0, 12.5))
    for side in (-1.0, 1.0):
        rho = (x_eye / ax) ** 2 + (z_eye / az_down) ** 2
        y_surface = ay * math.sqrt(max(0.05, 1.0 - rho))
        centre = (side * x_eye, y_surface - radius - _u(rng, (0.5, 2.5)), z_eye)
        apex = (side * _u(rng, (10.0, 14.0)), centre[1] - _u(rng, (38.0, 46.0)), z_eye + 4.0)
        eyes.append((centre, radius, apex, rim))
    nose_z = z_eye - _u(rng, (14.0, 20.0))
    nose = phantom._Ellipsoid((0.0, ay * _u(rng, (0.86, 0.92)), nose_z),
                              (_u(rng, (11.0, 15.0)), _u(rng, (24.0, 30.0)), _u(rng, (20.0, 26.0))))
    nasal = phantom._Ellipsoid((0.0, ay * 0.62, nose_z - 2.0),
                               (_u(rng, (10.0, 13.0)), ay * _u(rng, (0.36, 0.42)),
                                _u(rng, (13.0, 17.0))))
    mastoids = []
    for side in (-1.0, 1.0):
        z_m = a.floor["middle"] - _u(rng, (6.0, 12.0))
        half_width = ax * math.sqrt(max(0.1, 1 - (z_m / az_down) ** 2))
        mastoids.append(phantom._Ellipsoid(
            (side * (half_width - a.skin - a.fat - _u(rng, (11.0, 14.0))),
             -ay * _u(rng, (0.12, 0.25)), z_m),
            (_u(rng, (8.0, 11.0)), _u(rng, (10.0, 14.0)), _u(rng, (10.0, 14.0)))))
    spine_y = -_u(rng, (12.0, 20.0))
    waves = rng.normal(size=(9, 3))
    waves /= np.linalg.norm(waves, axis=1, keepdims=True)
    folia = np.concatenate([waves, rng.uniform(0.55, 0.8, (9, 1)),
                            rng.uniform(0, 2 * np.pi, (9, 1))], axis=1)
    modes = 5
    directions = rng.normal(size=(modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavenumbers = 2 * np.pi / rng.uniform(70.0, 160.0, (modes, 1))
    amplitudes = rng.normal(size=(modes, 3))
    amplitudes *= deformation_mm / max(np.abs(amplitudes).sum(axis=0).max(), 1e-6)
    deformation = np.concatenate([directions * wavenumbers, rng.uniform(0, 2 * np.pi, (modes, 1)),
                                  amplitudes], axis=1)
    return _Extras(nose=nose, nasal=nasal, turbinate_phase=_u(rng, (0, 2 * np.pi)),
                   eyes=tuple(eyes), mastoids=tuple(mastoids), cell_phases=rng.uniform(0, 6.3, 3),
                   spine_y=spine_y, spine_radius=_u(rng, (8.0, 10.0)),
                   airway=(spine_y + _u(rng, (20.0, 25.0)), _u(rng, (9.0, 15.0)),
                           _u(rng, (4.0, 7.0))),
                   z_palate=nose_z - _u(rng, (12.0, 16.0)), z_jaw=nose_z - _u(rng, (45.0, 60.0)),
                   tentorium=_u(rng, (16.0, 24.0)), folia_waves=folia, deformation=deformation)


def _widen(a: phantom._Anatomy, rng: np.random.Generator) -> phantom._Anatomy:
    """v1's anatomy with v2's wider ranges: skull thickness and its variation, a diploe always,
    ventricle size, and a denser random folding pattern of the cortex (11 waves, gyri ~10-15 mm
    apart, instead of v1's 7)."""
    factor = _u(rng, (0.55, 1.2))
    ventricles = tuple(dict(v, axes=(v["axes"][0] * 0.85 * factor, v["axes"][1] * factor,
                                     v["axes"][2] * factor), x0=v["x0"] * factor ** 0.3)
                       for v in a.ventricles)
    half, y_low, y_high, depth = a.third_ventricle
    waves = rng.normal(size=(11, 3))
    waves /= np.linalg.norm(waves, axis=1, keepdims=True)
    return dataclasses.replace(
        a, fold_waves=waves, fold_wavenumbers=rng.uniform(13.0, 19.0, 11),
        fold_phases=rng.uniform(0, 2 * np.pi, 11), bone=_u(rng, (3.5, 9.5)),
        bone_variation=(_u(rng, (0.0, 0.35)), _u(rng, (0, 6.28))),
        diploe_fraction=_u(rng, (0.3, 0.6)), ventricles=ventricles,
        third_ventricle=(half * factor, y_low, y_high, depth))


# ----------------------------------------------------------------------------- label map

def _labels(a: phantom._Anatomy, e: _Extras, x, y, z) -> np.ndarray:
    """Tissue labels (uint8, :data:`TISSUES`) at head-frame points x, y, z (1-D float32, mm)."""
    t = TISSUES
    geo = phantom._HeadGeometry(a)
    f32 = np.float32
    labels = np.zeros(x.shape, np.uint8)
    depth = geo.outer_depth(x, y, z)
    nose_rho2 = e.nose.rho2(x, y, z)
    body = (depth >= 0) | ((nose_rho2 < 1.0) & (z > e.z_palate))
    idx = np.flatnonzero(body)
    x, y, z, depth, nose_rho2 = x[idx], y[idx], z[idx], depth[idx], nose_rho2[idx]
    lab = np.full(idx.shape, t["muscle"], np.uint8)
    skin_end, fat_end, muscle_end, bone_end = geo.layers(x, y, z)
    floor = geo.floor(x, y)
    ax, ay = a.semi_axes[0], a.semi_axes[1]

    lab[depth < skin_end] = t["skin"]
    lab[(depth >= skin_end) & (depth < fat_end)] = t["fat"]
    # the skull shell: the vault and skull base, the face above the palate, the mandible below
    vault = z > floor - a.skull_base - 3.0
    face = (y > 0.35 * ay) & (z > e.z_palate)
    mandible = (y > 0.25 * ay) & (z > e.z_jaw) & (z <= e.z_palate)
    shell = vault | face | mandible
    skull = shell & (depth >= muscle_end) & (depth < bone_end)
    lab[skull] = t["cortical_bone"]
    middle = (muscle_end + bone_end) / 2.0
    half = a.diploe_fraction * (bone_end - muscle_end) / 2.0
    lab[skull & vault & (np.abs(depth - middle) < half)] = t["marrow"]
    interior = shell & (depth >= bone_end)
    above_floor = z > floor
    lab[interior & ~above_floor & (z > floor - a.skull_base)] = t["cortical_bone"]
    intracranial = interior & above_floor

    # brain: CSF rim, folded cortex (sulci at the zero set of the fold field), fissure
    brain_depth = np.minimum(depth - bone_end, z - floor)
    csf = intracranial & (brain_depth < a.csf)
    r = np.sqrt(x * x + y * y + z * z) + f32(1.0)
    amp, phase = a.sulcus_meander
    fold = geo.fold_field(x, y, z) + amp * np.sin(brain_depth * f32(2 * np.pi / 14.0) + f32(phase))
    per_mm = f32(np.mean(a.fold_wavenumbers)) / r           # |grad fold| ~ k / r per mm
    in_folds = intracranial & ~csf & (brain_depth < a.csf + a.sulcus_depth)
    csf |= in_folds & (np.abs(fold) < a.sulcus_halfwidth)
    ventricle_top = a.ventricles[0]["z0"] + max(v["axes"][2] for v in a.ventricles)
    callosum = (np.abs(y) < 0.45 * ay) & (z < ventricle_top + 6.0)
    fissure = intracranial & (np.abs(x) < a.fissure_halfwidth) & ~callosum
    csf |= fissure
    parenchyma = intracranial & ~csf
    grey = parenchyma & (
        (brain_depth < a.csf + a.grey_matter)
        | ((brain_depth < a.csf + a.sulcus_depth + a.grey_matter)
           & (np.abs(fold) < a.sulcus_halfwidth + a.grey_matter * per_mm))
        | ((np.abs(x) < a.fissure_halfwidth + a.grey_matter) & ~callosum))
    lab[parenchyma] = t["white_matter"]
    lab[grey] = t["grey_matter"]
    # cerebellum: below the tentorium behind the petrous ridges, fine folia, a white core
    petrous = a.floor["petrous_ridge"] - 0.3 * np.abs(x)
    tentorium = a.floor["middle"] + e.tentorium + 0.25 * (y - petrous)
    posterior = parenchyma & (y < petrous - 4.0) & (z < tentorium)
    lab[intracranial & (y < petrous - 4.0) & (np.abs(z - tentorium) < 1.0)] = t["csf"]
    folia = 0.0
    for w in e.folia_waves:
        folia = folia + np.sin(f32(w[3]) * (f32(w[0]) * x + f32(w[1]) * y + f32(w[2]) * z)
                               + f32(w[4]))
    core = (brain_depth > a.csf + 9.0) & (np.abs(x) < 0.3 * ax)
    cerebellum = posterior & (np.abs(z - tentorium) >= 1.0)
    lab[cerebellum & ~(core & (folia > -0.8))] = t["cerebellum_grey"]
    lab[cerebellum & core & (folia > -0.8)] = t["white_matter"]
    lab[cerebellum & (np.abs(folia) < 0.25) & ~core] = t["csf"]
    lab[csf] = t["csf"]
    for nucleus in a.deep_grey:
        lab[parenchyma & (nucleus.rho2(x, y, z) < 1.0)] = t["deep_grey"]
    lab[parenchyma & geo.ventricle(x, y, z)] = t["ventricle"]

    # sinuses (v1), nasal cavity with septum and turbinates, nose soft tissue
    inner = depth >= fat_end + 1.0
    for sinus in a.sinuses:
        wall = (1.0 + a.sinus_wall / min(sinus.axes)) ** 2
        lab[inner & (sinus.rho2(x, y, z) < wall)] = t["cortical_bone"]
    for sinus in a.sinuses:
        lab[inner & (sinus.rho2(x, y, z) < 1.0)] = t["sinus_air"]
    nose_only = depth < 0
    lab[nose_only] = np.where(nose_rho2[nose_only] < 0.75, t["muscle"], t["skin"])
    nasal_rho2 = e.nasal.rho2(x, y, z)
    cavity = (nasal_rho2 < 1.0) & ~intracranial & (z > e.z_palate) & (nose_rho2 < 0.8) | (
        (nasal_rho2 < 1.0) & ~intracranial & (depth > 3.0) & (z > e.z_palate))
    lab[(nasal_rho2 < 1.15) & ~intracranial & (z > e.z_palate - 3.0) & ~cavity
        & (lab != t["sinus_air"]) & (depth > 1.0)] = t["cortical_bone"]
    lab[cavity] = t["nasal_air"]
    half_x = e.nasal.axes[0]
    conchae = cavity & (np.abs(x) > 0.45 * half_x) & (
        np.sin(z * f32(2 * np.pi / 11.0) + f32(e.turbinate_phase)) > 0.1)
    lab[conchae] = t["mucosa"]
    lab[cavity & (np.abs(x) < 1.0)] = t["cortical_bone"]          # septum

    # orbits: bony cone walls, fat, rectus muscles, globe (sclera, vitreous), optic nerve
    for centre, radius, apex, rim in e.eyes:
        cx, cy, cz = centre
        px, py, pz = apex
        tpos = (y - py) / f32(cy - py)
        ox = px + tpos * f32(cx - px)
        oz = pz + tpos * f32(cz - pz)
        dist = np.sqrt((x - ox) ** 2 + (z - oz) ** 2)
        cone_r = 2.5 + (rim - 2.5) * np.clip(tpos, 0.0, 1.15)
        along = (tpos > 0.0) & (tpos < 1.15) & ~intracranial
        lab[along & (dist < cone_r + 1.6) & (z < floor - 0.5)] = t["cortical_bone"]
        orbit = along & (dist < cone_r)
        lab[orbit] = t["fat"]
        angle = np.arctan2(z - oz, np.abs(x - ox))
        rectus = orbit & (dist > cone_r - 3.5) & (tpos < 0.95) & (
            np.abs(np.sin(2.0 * angle)) < 0.22)
        lab[rectus] = t["muscle"]
        nerve = orbit & (np.sqrt((x - ox) ** 2 + (z - oz) ** 2) < 2.3) & (tpos < 0.9)
        lab[nerve] = t["optic_nerve"]
        g2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
        lab[g2 < radius ** 2] = t["sclera"]
        lab[g2 < (radius - 1.0) ** 2] = t["vitreous"]

    # mastoid air cells in bone, behind the ears
    cells = 0.0      # irregular air cells: a random field of 9 waves of ~5 mm wavelength
    for w, phase in zip(e.folia_waves, np.resize(e.cell_phases, len(e.folia_waves))):
        cells = cells + np.sin(f32(2.0 * w[3]) * (f32(w[0]) * x + f32(w[1]) * y + f32(w[2]) * z)
                               + f32(phase + w[4]))
    for mastoid in e.mastoids:
        rho2 = mastoid.rho2(x, y, z)
        region = (rho2 < 1.0) & ~intracranial & (depth > muscle_end)
        lab[region] = t["cortical_bone"]
        lab[region & (rho2 < 0.8) & (cells > 0.8)] = t["mastoid_air"]

    # neck: cervical spine (vertebral body, canal with the cord), pharyngeal airway
    below = ~shell | (z < floor - a.skull_base - 3.0)
    below &= depth > fat_end
    spine_top = floor - a.skull_base
    body_d = np.sqrt(x * x + (y - e.spine_y) ** 2)
    canal_y = e.spine_y - e.spine_radius - 8.0
    canal_d = np.sqrt(x * x + (y - canal_y) ** 2)
    neck = below & (z < spine_top)
    lab[neck & (body_d < e.spine_radius)] = t["marrow"]
    lab[neck & (body_d < e.spine_radius) & (body_d > e.spine_radius - 1.5)] = t["cortical_bone"]
    lab[neck & (canal_d < 9.5)] = t["cortical_bone"]
    lab[neck & (canal_d < 7.5)] = t["csf"]
    lab[neck & (canal_d < 4.5)] = t["spinal_cord"]
    ay_c, hx, hy = e.airway
    airway = below & (z < e.z_palate + 6.0) & (
        (x / hx) ** 2 + ((y - ay_c) / hy) ** 2 < 1.0)
    lab[airway] = t["nasal_air"]

    # lesion (v1 draw)
    if a.lesion is not None:
        lab[intracranial & phantom._lesion(a.lesion, x, y, z)] = t["lesion"]
    labels[idx] = lab
    return labels


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Head -> world rotation: roll about y, then pitch about x, then yaw about z."""
    cy, sy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    cr, sr = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    yaw = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    roll = np.array([[cr, 0, sr], [0, 1, 0], [-sr, 0, cr]])
    return yaw @ pitch @ roll


def _to_head(s: SubjectSettings, e: _Extras, columns, rows, slices):
    """World points (mm) -> head-frame points (float32, broadcast to (slices, rows, cols)):
    inverse pose, plus the elastic displacement (a sum of low-frequency sine modes of the posed
    point).

    Args: ``columns`` world x of each column, ``rows`` world y of each row, ``slices`` world z of
    each (sub-)slice, 1-D. The pose is affine and each mode ``sin(k . p + phase)`` separates into
    a column and a (slice, row) factor, so only products and sums run on the full grid.
    """
    f32 = np.float32
    xw = (np.asarray(columns, np.float64) - s.shift_mm[0])[None, None, :]
    yw = (np.asarray(rows, np.float64) - s.shift_mm[1])[None, :, None]
    zw = (np.asarray(slices, np.float64) - s.shift_mm[2])[:, None, None]
    inverse = _rotation(*s.rotation_deg).T / np.asarray(s.head_scale)[:, None]
    posed = [(f32(m[0]) * xw.astype(f32), (m[1] * yw + m[2] * zw).astype(f32)) for m in inverse]
    out = [col + plane for col, plane in posed]
    for mode in e.deformation:
        k, phase, amp = mode[:3], mode[3], mode[4:]
        col = sum(k[i] * inverse[i, 0] for i in range(3)) * xw
        plane = sum(k[i] * (inverse[i, 1] * yw + inverse[i, 2] * zw) for i in range(3)) + phase
        wave = (np.sin(col).astype(f32) * np.cos(plane).astype(f32)
                + np.cos(col).astype(f32) * np.sin(plane).astype(f32))
        out = [o + f32(a) * wave for o, a in zip(out, amp)]
    return tuple(o.astype(f32, copy=False) for o in out)


# ----------------------------------------------------------------------------- rendering

@dataclasses.dataclass
class PhantomSubjectV2(phantom.PhantomSubject):
    """A v2 subject: :class:`ctmri_tf.phantom.PhantomSubject` (labels of :data:`TISSUES`, CT in
    HU, MRI in arbitrary units, head mask, spacing ``(slice, row, col)`` mm with row = col =
    ``field_of_view_mm / image_size``, ``bone_hu``) plus

    Attributes:
        brain: uint8 {0, 1} brain mask (:data:`BRAIN_TISSUES`); a skull-stripped MRI is 0 outside.
        settings: :meth:`SubjectSettings.as_dict` of the subject's draw.
    """

    brain: np.ndarray = None
    settings: dict = None


def _mri_lut(s: SubjectSettings, rng: np.random.Generator) -> np.ndarray:
    params = np.array([MRI_TISSUE_PARAMETERS[name] for name in TISSUES], np.float64)
    jitter = np.concatenate([rng.uniform(0.92, 1.08, (_N, 1)), rng.uniform(0.88, 1.12, (_N, 3))],
                            axis=1)
    pd, t1, t2, t2s = (params * jitter).T
    t2s = np.minimum(t2s, t2)
    if s.sequence == "spin_echo":
        signal = phantom.spin_echo_signal(pd, t1, t2, phantom.SpinEcho(s.tr_ms, s.te_ms))
    elif s.sequence == "spoiled_gre":
        signal = spoiled_gre_signal(pd, t1, t2s, tr_ms=s.tr_ms, te_ms=s.te_ms,
                                    flip_deg=s.flip_deg)
    else:
        signal = mprage_signal(pd, t1, t2s, tr_ms=s.tr_ms, ti_ms=s.ti_ms, te_ms=s.te_ms,
                               flip_deg=s.flip_deg, echo_spacing_ms=s.echo_spacing_ms,
                               num_readouts=s.num_readouts)
    return signal.astype(np.float32)


def _gauss(volume: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return volume
    return ndimage.gaussian_filter(volume, sigma=(0.0, sigma_px, sigma_px), mode="nearest",
                                   truncate=3.0)


def _ct_filter(volume: np.ndarray, s: SubjectSettings, psf_px: float) -> np.ndarray:
    """Acquisition PSF and the reconstruction kernel (smooth: extra blur; sharp: unsharp mask)."""
    pixel = s.field_of_view_mm / volume.shape[-1]
    if s.ct_kernel == "smooth":
        return _gauss(volume, math.hypot(psf_px, s.ct_kernel_strength / pixel))
    blurred = _gauss(volume, psf_px)
    return blurred + np.float32(s.ct_kernel_strength) * (blurred - _gauss(blurred, 1.5))


def _unit_noise(shape, rng, filter_) -> np.ndarray:
    """White Gaussian noise through ``filter_``, rescaled to unit standard deviation."""
    noise = filter_(rng.standard_normal(shape, dtype=np.float32))
    return noise / np.float32(max(float(noise.std()), 1e-6))


def make_subject(index: int, *, image_size: int = 256, num_slices: int = 32, seed: int = 0,
                 noise: bool = True, domain: Domain | str = TRAINING_DOMAIN,
                 settings: SubjectSettings | None = None) -> PhantomSubjectV2:
    """Generate v2 subject ``index`` of ``domain``: a pure function of ``(seed, index, domain)``
    and the matrix.

    Args:
        index: subject number (>= 0).
        image_size: rows = cols (>= 16); pixel spacing ``field_of_view_mm / image_size`` mm.
        num_slices: slices over the subject's coverage (>= 1).
        seed: dataset seed.
        noise: False renders without CT and MRI noise (everything else identical).
        domain: :data:`TRAINING_DOMAIN`, :data:`HELDOUT_DOMAIN` (or their names) or a custom one.
        settings: render with these settings instead of the drawn ones (same anatomy), e.g.
            ``dataclasses.replace(subject_settings(i), slice_thickness_mm=7.0)``.

    Returns:
        :class:`PhantomSubjectV2`; ``subject_id`` is ``"phantom2-<seed>-<index:04d>"`` with
        ``"-heldout"`` appended in the held-out domain.

    Raises:
        CtmriInputError: a negative index or seed, a grid that is too small, an unknown domain or
            inconsistent settings.
    """
    index, seed = phantom._check_int("index", index, 0), phantom._check_int("seed", seed, 0)
    image_size = phantom._check_int("image_size", image_size, 16)
    num_slices = phantom._check_int("num_slices", num_slices, 1)
    domain = _domain(domain)
    s = settings if settings is not None else subject_settings(index, seed=seed, domain=domain)
    _check_settings(s)
    base_rng = np.random.default_rng([seed, index, 0])
    anatomy = _widen(phantom._draw_anatomy(base_rng), np.random.default_rng([seed, index, 3]))
    extras = _draw_extras(anatomy, np.random.default_rng([seed, index, 4]), s.deformation_mm)
    render_rng = np.random.default_rng([seed, index, 5])
    mri_lut = _mri_lut(s, render_rng)
    ct_lut = np.array([s.ct_hu[name] for name in TISSUES], np.float32)

    n = image_size
    pixel = s.field_of_view_mm / n
    dz = s.coverage_mm / num_slices
    # world x of the columns (right -> left) and y of the rows (row 0 anterior), mm
    centres = (np.arange(n, dtype=np.float64) + 0.5 - n / 2.0) * pixel
    sub = max(1, int(math.ceil(s.slice_thickness_mm / 1.5)))
    sub += 1 - sub % 2                               # odd: the middle sub-slice is the centre
    offsets = ((np.arange(sub) + 0.5) / sub - 0.5) * s.slice_thickness_mm
    shape = (num_slices, n, n)
    labels = np.empty(shape, np.uint8)
    ct = np.empty(shape, np.float32)
    mri = np.empty(shape, np.float32)
    for k in range(num_slices):
        zc = s.z_bottom_mm + (k + 0.5) * dz
        x, y, z = _to_head(s, extras, centres, -centres, zc + offsets)
        sub_labels = _labels(anatomy, extras, x.ravel(), y.ravel(), z.ravel()).reshape(sub, n, n)
        labels[k] = sub_labels[sub // 2]
        ct[k] = ct_lut[sub_labels].mean(axis=0)
        mri[k] = mri_lut[sub_labels].mean(axis=0)

    mask = (labels != TISSUES["background"]).astype(np.uint8)
    brain = np.isin(labels, [TISSUES[name] for name in BRAIN_TISSUES]).astype(np.uint8)
    # in-plane point-spread function of the acquisition (and anti-aliasing on the stored grid)
    psf_px = 0.45 * max(s.pixel_spacing_mm, pixel) / pixel
    coarse_px = math.sqrt(max(0.0, s.pixel_spacing_mm ** 2 - pixel ** 2)) * 0.45 / pixel

    ct = _ct_filter(ct, s, psf_px)
    if noise and s.ct_noise_hu > 0:
        ct += np.float32(s.ct_noise_hu) * _unit_noise(shape, render_rng,
                                                      lambda v: _ct_filter(v, s, coarse_px))
    ct = np.clip(ct, *CT_STORED_RANGE_HU)

    x, y, z = _to_head(s, extras, centres, -centres,
                       s.z_bottom_mm + (np.arange(num_slices) + 0.5) * dz)
    field = phantom._bias_field(dataclasses.replace(anatomy, bias_amplitude=s.bias_amplitude),
                                x, y, z)
    gain = np.float32(s.mri_gain)
    mri = _gauss(mri, psf_px) * field * gain
    if noise and s.mri_noise_fraction > 0:
        white = float(mri_lut[TISSUES["white_matter"]])
        sigma = np.float32(s.mri_noise_fraction * white * s.mri_gain)
        real = mri + sigma * _unit_noise(shape, render_rng, lambda v: _gauss(v, coarse_px))
        imag = sigma * _unit_noise(shape, render_rng, lambda v: _gauss(v, coarse_px))
        mri = np.hypot(real, imag)
    mri = np.maximum(mri, 0.0).astype(np.float32)
    if s.skull_stripped:
        mri *= brain
    return PhantomSubjectV2(
        subject_id=subject_id(index, seed, s.domain), labels=labels,
        ct=ct.astype(np.float32), mri=mri, mask=mask, spacing=(float(dz), pixel, pixel),
        bone_hu=float(s.ct_hu["cortical_bone"]), brain=brain, settings=s.as_dict())


def subject_id(index: int, seed: int, domain: Domain | str) -> str:
    """``"phantom2-<seed>-<index:04d>"``, with ``"-heldout"`` appended in the held-out domain."""
    name = domain.name if isinstance(domain, Domain) else domain
    suffix = "-heldout" if name == HELDOUT_DOMAIN.name else ""
    return f"phantom2-{seed}-{int(index):04d}{suffix}"


def _check_settings(s: SubjectSettings) -> None:
    if not isinstance(s, SubjectSettings):
        raise CtmriInputError(None, f"settings must be SubjectSettings, got {type(s).__name__}")
    if s.sequence not in SEQUENCES:
        raise CtmriInputError(None, f"settings.sequence must be one of {SEQUENCES}, "
                                    f"got {s.sequence!r}")
    for name in ("pixel_spacing_mm", "slice_thickness_mm", "field_of_view_mm", "coverage_mm"):
        if not getattr(s, name) > 0:
            raise CtmriInputError(None, f"settings.{name} must be > 0, got {getattr(s, name)!r}")
    if s.ct_kernel not in ("smooth", "sharp"):
        raise CtmriInputError(None, f"settings.ct_kernel must be 'smooth' or 'sharp', "
                                    f"got {s.ct_kernel!r}")
    missing = set(TISSUES) - set(s.ct_hu)
    if missing:
        raise CtmriInputError(None, f"settings.ct_hu lacks {sorted(missing)}")


# ----------------------------------------------------------------------------- splits

def subject_split(index: int, num_subjects: int) -> str:
    """The split of v2 subject ``index`` of ``num_subjects``: the last ~10 % (rounded, at least
    one from 4 subjects on) are :data:`SPLIT_HELDOUT` (rendered in :data:`HELDOUT_DOMAIN`); the
    others split as v1 (:func:`ctmri_tf.phantom.subject_split`) into train, validation, test."""
    n = phantom._check_int("num_subjects", num_subjects, 1)
    if phantom._check_int("index", index, 0) >= n:
        raise CtmriInputError(None, f"subject index {index!r} is outside 0..{n - 1}")
    n_heldout = max(1, (n + 5) // 10) if n >= 4 else 0
    if index >= n - n_heldout:
        return SPLIT_HELDOUT
    return phantom.subject_split(index, n - n_heldout)


def split_domain(split: str) -> Domain:
    """The domain of a split's subjects."""
    if split not in SPLITS:
        raise CtmriInputError(None, f"unknown phantom v2 split {split!r}; use one of {SPLITS}")
    return HELDOUT_DOMAIN if split == SPLIT_HELDOUT else TRAINING_DOMAIN

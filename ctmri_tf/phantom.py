"""Paired, registered CT / T1-weighted MRI head phantoms: the project's default dataset.

Every subject is a 3-D tissue label map on a (slice, row, col) grid, rendered twice on the same
grid: as CT in true Hounsfield units and as a spin-echo T1-weighted MRI from per-tissue proton
density, T1 and T2. The label map is the ground truth of every metric (HU error per tissue, body
mask Dice, ...). A subject is a pure function of ``(index, seed)``; its anatomy (drawn in mm) does
not depend on ``image_size`` or ``num_slices``, only the sampling grid and the noise do.

Anatomy (all sizes drawn per subject): an egg-shaped head (ellipsoid, longer below its centre)
whose outline has a smooth random radial perturbation (Fourier harmonics of the azimuth); from the
outside in: skin (labelled muscle), subcutaneous fat, muscle (thick temporal muscles at the sides),
the skull (cortical bone of random thickness, often with a fatty diploe/marrow layer), CSF around
the brain, the grey-matter cortex ribbon lining the brain surface, the sulci and the
interhemispheric fissure, white matter, deep grey nuclei, two bean-shaped lateral ventricles and a
third ventricle (size varies with an "age" factor, as does the width of the CSF spaces). Below the
brain floor (higher at the front, deeper in the temporal and posterior fossae) lie the skull base
and the face's soft tissue with air-filled paranasal sinuses (maxillary, ethmoid/nasal, sphenoid,
usually frontal) in bony walls. About 40 % of subjects carry a lesion (a solid, roughly spherical
mass). The head is rotated in-plane (+-15 deg), scaled (+-10 %) and shifted. Slice 0 is the
lowest (inferior) slice; the slices span the head from the maxillary sinuses to near the vertex.

Images are (rows, cols) with row 0 anterior. CT: HU per tissue (:data:`CT_HU`), Gaussian
point-spread blur in-plane, Gaussian noise. MRI: spin-echo signal per tissue (:data:`MRI_SEQUENCE`,
:data:`MRI_TISSUE_PARAMETERS`, per-subject jitter), the same kind of blur, a smooth multiplicative
bias field, a receiver gain (arbitrary scanner units) and Rician noise. Cortical bone and air are
both dark in MRI, as in real scans.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import cv2
import numpy as np
from scipy import ndimage

from ctmri_tf.errors import CtmriInputError

TISSUES: dict[str, int] = {
    "background": 0,      # air around the head
    "fat": 1,             # subcutaneous (scalp) fat
    "muscle": 2,          # skin, scalp and temporal muscle, facial soft tissue
    "cortical_bone": 3,   # skull tables, skull base, sinus walls
    "marrow": 4,          # fatty diploe between the skull tables
    "grey_matter": 5,     # cortex ribbon and deep grey nuclei
    "white_matter": 6,
    "csf": 7,             # around the brain, sulci, fissure, ventricles
    "sinus_air": 8,       # air in the paranasal sinuses: inside the body
    "lesion": 9,          # solid tumour-like mass
}
"""Tissue name -> label id in :attr:`PhantomSubject.labels`."""

CT_HU: dict[str, float | tuple[float, float]] = {
    "background": -1000.0,
    "fat": -100.0,
    "muscle": 45.0,
    "cortical_bone": (700.0, 1800.0),  # per subject, uniform in this range: PhantomSubject.bone_hu
    "marrow": 350.0,                   # diploe: trabecular bone with fatty marrow
    "grey_matter": 40.0,
    "white_matter": 25.0,
    "csf": 15.0,
    "sinus_air": -1000.0,
    "lesion": 60.0,                    # hyperdense solid mass (meningioma-like, non-contrast CT)
}
"""Tissue name -> the noise-free CT value in HU (cortical bone: the (low, high) range of the
per-subject value). Typical non-contrast head CT values."""


class SpinEcho(NamedTuple):
    """Spin-echo sequence timing in ms."""

    tr_ms: float
    te_ms: float


MRI_SEQUENCE = SpinEcho(tr_ms=500.0, te_ms=15.0)
"""The T1-weighted spin-echo sequence of the phantom MRI (TR, TE in ms)."""

# Tissue name -> (proton density relative to CSF, T1 ms, T2 ms) at 1.5 T: typical values, rounded,
# within the ranges reported by
#   Bottomley PA, Foster TH, Argersinger RE, Pfeifer LM. A review of normal tissue hydrogen NMR
#     relaxation times and relaxation mechanisms from 1-100 MHz. Med Phys 1984;11:425-448
#     (T1 of grey/white matter, muscle, fat against field strength);
#   Wansapura JP, Holland SK, Dunn RS, Ball WS. NMR relaxation times in the human brain at 3.0
#     tesla. J Magn Reson Imaging 1999;9:531-538 (brain T1/T2 and their 1.5 T counterparts);
#   Gold GE, Han E, Stainsby J, Wright G, Brittain J, Beaulieu C. Musculoskeletal MRI at 3.0 T:
#     relaxation times and image contrast. AJR 2004;183:343-351 (muscle, fat, marrow at 1.5 T);
#   Kwan RK-S, Evans AC, Pike GB. MRI simulation-based evaluation of image-processing and
#     classification methods. IEEE Trans Med Imaging 1999;18:1085-1097 (BrainWeb proton densities);
#   Reichert ILH et al. Magnetic resonance imaging of cortical bone with ultrashort TE pulse
#     sequences. Magn Reson Imaging 2005;23:611-618 (cortical bone T2* ~ 0.4-0.5 ms: no signal
#     at TE = 15 ms).
# Air has no protons (PD 0; its T1/T2 are placeholders). The lesion is an illustrative solid
# tumour: slightly darker than grey matter in T1w.
MRI_TISSUE_PARAMETERS: dict[str, tuple[float, float, float]] = {
    "background": (0.0, 1.0, 1.0),
    "fat": (0.95, 260.0, 85.0),
    "muscle": (0.70, 870.0, 47.0),
    "cortical_bone": (0.05, 250.0, 0.5),
    "marrow": (0.90, 290.0, 50.0),
    "grey_matter": (0.80, 1000.0, 100.0),
    "white_matter": (0.70, 600.0, 80.0),
    "csf": (1.00, 4000.0, 2000.0),
    "sinus_air": (0.0, 1.0, 1.0),
    "lesion": (0.85, 1200.0, 110.0),
}
"""Tissue name -> (proton density, T1 in ms, T2 in ms) at 1.5 T (before per-subject jitter)."""

FIELD_OF_VIEW_MM = 240.0
"""In-plane field of view: pixel spacing is ``FIELD_OF_VIEW_MM / image_size`` mm."""

HEAD_COVERAGE_MM = 144.0
"""Length covered by the slices: slice spacing is ``HEAD_COVERAGE_MM / num_slices`` mm (4.5 mm at
32 slices), from the maxillary sinuses to near the vertex."""

_Z_BOTTOM_MM = -60.0          # lower edge of slice 0 relative to the head centre (before the pose)
_MRI_JITTER = 0.03            # per-subject relative jitter of PD, T1 and T2 (uniform +-3 %)
_NUM_ID = len(TISSUES)


def spin_echo_signal(pd, t1_ms, t2_ms, sequence: SpinEcho = MRI_SEQUENCE):
    """Spin-echo signal ``S = PD * (1 - exp(-TR / T1)) * exp(-TE / T2)`` (relative units).

    Args:
        pd: proton density (relative to CSF = 1); t1_ms, t2_ms: relaxation times in ms
            (NumPy-broadcastable).
        sequence: TR and TE in ms.
    """
    pd, t1_ms, t2_ms = (np.asarray(v, dtype=np.float64) for v in (pd, t1_ms, t2_ms))
    return pd * (1.0 - np.exp(-sequence.tr_ms / t1_ms)) * np.exp(-sequence.te_ms / t2_ms)


@dataclasses.dataclass
class PhantomSubject:
    """One paired, registered CT/MRI head phantom; all arrays are (slices, rows, cols).

    Attributes:
        subject_id: unique per (index, seed), e.g. ``"phantom-0-0007"``.
        labels: uint8 tissue label map (:data:`TISSUES`).
        ct: float32 CT in HU.
        mri: float32 T1-weighted MR signal (arbitrary scanner units, >= 0).
        mask: uint8 {0, 1} body mask: every label but ``background`` (sinus air is body).
        spacing: (slice, row, col) in mm.
        bone_hu: this subject's noise-free cortical bone HU (within ``CT_HU["cortical_bone"]``).
    """

    subject_id: str
    labels: np.ndarray
    ct: np.ndarray
    mri: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    bone_hu: float


# ----------------------------------------------------------------------------- parameters

@dataclasses.dataclass(frozen=True)
class _Ellipsoid:
    """Centre (x, y, z) and semi-axes (mm) in the head frame."""

    center: tuple[float, float, float]
    axes: tuple[float, float, float]

    def rho2(self, x, y, z):
        """Squared normalised radius (< 1 inside)."""
        (cx, cy, cz), (ax, ay, az) = self.center, self.axes
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2


@dataclasses.dataclass(frozen=True)
class _Anatomy:
    """Every random draw of one subject (mm, head frame: x left-right, y posterior->anterior,
    z inferior->superior, origin at the head centre)."""

    # outline
    semi_axes: tuple[float, float, float, float]   # x, y, z above the centre, z below the centre
    outline_harmonics: np.ndarray                  # (k, amplitude, phase) rows
    # layers from the outside in (mm)
    skin: float
    fat: float
    fat_variation: tuple[float, float]             # amplitude, phase of a 2nd harmonic
    muscle: float
    temporal_muscle: float
    bone: float
    bone_variation: tuple[float, float]
    diploe_fraction: float                         # 0: no marrow layer
    csf: float
    grey_matter: float
    # brain floor: three fossae (anterior high, middle, posterior low), see _HeadGeometry.floor
    floor: dict
    skull_base: float
    # cortex folding: unit wave vectors (n, 3), wavenumbers, phases; sulcus half-width and depth
    fold_waves: np.ndarray
    fold_wavenumbers: np.ndarray
    fold_phases: np.ndarray
    sulcus_halfwidth: float
    sulcus_meander: tuple[float, float]            # amplitude, phase: sulci bend with depth
    sulcus_depth: float
    fissure_halfwidth: float
    # deep structures
    ventricles: tuple[dict, dict]
    third_ventricle: tuple[float, float, float, float]   # half-width, y_low, y_high, z range
    deep_grey: tuple[_Ellipsoid, ...]
    sinuses: tuple[_Ellipsoid, ...]
    sinus_wall: float
    lesion: tuple[_Ellipsoid, np.ndarray] | None         # shape, (2, 2) harmonic amp/phase
    # pose
    rotation_rad: float
    scale: float
    shift: tuple[float, float, float]
    # contrast
    bone_hu: float
    ct_noise_hu: float
    psf_sigma_px: float
    mri_jitter: np.ndarray      # (num tissues, 3) relative factors for PD, T1, T2
    mri_gain: float
    mri_noise_fraction: float   # Rician sigma / white-matter signal
    bias_coefficients: np.ndarray   # (9,): [0] unused, then x, y, z, x^2, y^2, z^2, xy, xz (log)
    bias_amplitude: float


def _u(rng, low, high):
    return float(rng.uniform(low, high))


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    ax, ay = _u(rng, 68, 77), _u(rng, 86, 95)
    az_up, az_down = _u(rng, 94, 104), _u(rng, 120, 140)
    ks = np.arange(2, 6, dtype=np.float64)
    harmonics = np.stack([ks, rng.uniform(0.0, 0.035, 4) * 2.0 / ks,
                          rng.uniform(0, 2 * np.pi, 4)], axis=1)

    age = _u(rng, 0.0, 1.0)   # atrophy: wider CSF spaces and larger ventricles
    floor = dict(middle=_u(rng, -36, -30), slope=_u(rng, 2, 6), ay=ay,
                 anterior_step=_u(rng, 14, 20), sphenoid_ridge=_u(rng, 0.2, 0.3) * ay,
                 posterior_step=_u(rng, 10, 16), petrous_ridge=_u(rng, -6, 0),
                 sella=_u(rng, 6, 12))

    v_scale = 0.75 + 0.75 * age
    x0, y0, z0 = _u(rng, 5, 8), _u(rng, -6, 4), _u(rng, 10, 18)
    base_axes = np.array([_u(rng, 4, 6.5), _u(rng, 22, 28), _u(rng, 6, 9)])
    bend, sag = _u(rng, 2, 6), _u(rng, 4, 9)
    ventricles = tuple(
        dict(side=side, x0=x0 * (0.8 + 0.2 * v_scale), y0=y0, z0=z0, bend=bend, sag=sag,
             axes=tuple(base_axes * v_scale * _u(rng, 0.88, 1.12)))
        for side in (-1.0, 1.0))
    third = (_u(rng, 1.0, 1.8) * v_scale, y0 - _u(rng, 14, 20), y0 + _u(rng, 3, 8),
             _u(rng, 18, 26))
    deep_grey = tuple(
        _Ellipsoid((side * dx, y0 + dy, z0 + dz), axes)
        for side in (-1.0, 1.0)
        for dx, dy, dz, axes in (
            (_u(rng, 8, 10) + third[0], _u(rng, -12, -8), _u(rng, -13, -9),
             (_u(rng, 6, 8), _u(rng, 10, 13), _u(rng, 7, 9))),                  # thalamus
            (_u(rng, 22, 26), _u(rng, 4, 10), _u(rng, -12, -6),
             (_u(rng, 4, 6), _u(rng, 12, 16), _u(rng, 8, 10)))))                # lentiform

    def floor_at(y):
        return float(_floor(floor, np.float64(0.0), np.float64(y)))

    y_max, y_eth, y_sph = _u(rng, 0.48, 0.6) * ay, _u(rng, 0.58, 0.68) * ay, _u(rng, 0.15, 0.3) * ay
    z_front = floor_at(ay)
    size = _u(rng, 0.75, 1.25)
    sinuses = [
        _Ellipsoid((side * _u(rng, 20, 27), y_max, z_front - _u(rng, 24, 31)),
                   tuple(size * _u(rng, 0.85, 1.15) * a for a in (11.0, 13.0, 14.0)))
        for side in (-1.0, 1.0)]                                                   # maxillary
    sinuses.append(_Ellipsoid((0.0, y_eth, z_front - _u(rng, 7, 11)),
                              (_u(rng, 5, 7.5), size * _u(rng, 11, 15), size * _u(rng, 8, 11))))
    if rng.random() < 0.9:                                                         # sphenoid
        sinuses.append(_Ellipsoid((0.0, y_sph, floor_at(y_sph) - _u(rng, 9, 13)),
                                  tuple(size * _u(rng, 7, 11) for _ in range(3))))
    frontal = rng.random() < 0.85
    frontal_axes = (_u(rng, 8, 15), _u(rng, 4, 6), _u(rng, 6, 10))
    frontal_z = z_front + _u(rng, 6, 14)
    skin, fat, muscle, bone = _u(rng, 1.5, 2.5), _u(rng, 2.5, 6), _u(rng, 1, 2.5), _u(rng, 5, 8)
    frontal_x = _u(rng, -4, 4)
    if frontal:
        y_inner = ay * math.sqrt(max(0.0, 1 - (frontal_z / az_up) ** 2)) - (skin + fat + muscle)
        sinuses.append(_Ellipsoid((frontal_x, y_inner - 0.4 * frontal_axes[1], frontal_z),
                                  frontal_axes))

    has_lesion = rng.random() < 0.4
    radius = _u(rng, 5, 14)
    lesion_axes = tuple(radius * _u(rng, 0.8, 1.2) for _ in range(3))
    candidates = np.stack([rng.uniform(-0.55, 0.55, 64) * ax, rng.uniform(-0.65, 0.65, 64) * ay,
                           rng.uniform(-20, 60, 64)], axis=1)
    lesion_shape = np.stack([rng.uniform(0, 0.15, 2), rng.uniform(0, 2 * np.pi, 2)])

    fold_waves = rng.normal(size=(7, 3))
    fold_waves /= np.linalg.norm(fold_waves, axis=1, keepdims=True)

    anatomy = _Anatomy(
        semi_axes=(ax, ay, az_up, az_down), outline_harmonics=harmonics,
        skin=skin, fat=fat, fat_variation=(_u(rng, 0, 0.3), _u(rng, 0, 2 * np.pi)),
        muscle=muscle, temporal_muscle=_u(rng, 4, 9),
        bone=bone, bone_variation=(_u(rng, 0, 0.2), _u(rng, 0, 2 * np.pi)),
        diploe_fraction=_u(rng, 0.25, 0.45) if rng.random() < 0.8 else 0.0,
        csf=1.0 + 2.0 * age, grey_matter=_u(rng, 2.5, 3.5),
        floor=floor, skull_base=_u(rng, 4, 7),
        fold_waves=fold_waves, fold_wavenumbers=rng.uniform(9, 13, 7),
        fold_phases=rng.uniform(0, 2 * np.pi, 7),
        sulcus_halfwidth=0.08 + 0.07 * age, sulcus_depth=_u(rng, 10, 18),
        sulcus_meander=(_u(rng, 0.3, 0.7), _u(rng, 0, 2 * np.pi)),
        fissure_halfwidth=0.6 + 0.8 * age,
        ventricles=ventricles, third_ventricle=third, deep_grey=deep_grey,
        sinuses=tuple(sinuses), sinus_wall=_u(rng, 1.2, 2.0), lesion=None,
        rotation_rad=math.radians(_u(rng, -15, 15)), scale=_u(rng, 0.9, 1.1),
        shift=(_u(rng, -6, 6), _u(rng, -6, 6), _u(rng, -5, 5)),
        bone_hu=_u(rng, *CT_HU["cortical_bone"]), ct_noise_hu=_u(rng, 10, 20),
        psf_sigma_px=_u(rng, 0.5, 0.9),
        mri_jitter=rng.uniform(1 - _MRI_JITTER, 1 + _MRI_JITTER, (_NUM_ID, 3)),
        mri_gain=_u(rng, 800, 1250), mri_noise_fraction=_u(rng, 0.015, 0.03),
        bias_coefficients=rng.normal(size=9), bias_amplitude=_u(rng, 0.12, 0.18))

    if has_lesion:
        geometry = _HeadGeometry(anatomy)
        x, y, z = candidates.T
        margin = max(lesion_axes) + 3.0
        deep = (geometry.brain_depth(x, y, z) > margin) & (z - geometry.floor(x, y) > margin)
        if deep.any():
            centre = tuple(float(c) for c in candidates[np.argmax(deep)])
            anatomy = dataclasses.replace(anatomy, lesion=(_Ellipsoid(centre, lesion_axes),
                                                           lesion_shape))
    return anatomy


# ----------------------------------------------------------------------------- geometry

def _floor(p: dict, x, y):
    """z (mm) of the brain floor at head-frame (x, y): the middle cranial fossa level, a step up
    in front of the sphenoid ridge (anterior fossa over the orbits), a step down behind the
    petrous ridges (posterior fossa), which run obliquely, and the sella/sphenoid body raised at
    the midline between the temporal fossae."""
    def step(t):  # smooth 0 -> 1 over a few mm
        return 0.5 + 0.5 * np.tanh(t / 3.0)

    petrous = p["petrous_ridge"] - 0.3 * np.abs(x)
    sella = np.exp(-(x / 14.0) ** 2 - ((y - 0.5 * p["sphenoid_ridge"]) / 14.0) ** 2)
    return (p["middle"] + p["slope"] * y / p["ay"]
            + p["anterior_step"] * step(y - p["sphenoid_ridge"])
            - p["posterior_step"] * step(petrous - y) + p["sella"] * sella)


class _HeadGeometry:
    """Analytic head geometry; every method takes NumPy-broadcastable head-frame x, y, z (mm)."""

    def __init__(self, anatomy: _Anatomy):
        self.a = anatomy

    def _outline(self, phi, z):
        """Relative radial perturbation of the outer surface (Fourier harmonics of azimuth)."""
        eps = 0.0
        for k, amp, phase in self.a.outline_harmonics:
            eps = eps + np.float32(amp) * np.cos(np.float32(k) * phi + np.float32(phase))
        # rounder towards the vertex, where the cross-section is small
        return eps * (1.0 - 0.7 * (np.maximum(z, 0.0) / np.float32(self.a.semi_axes[2])) ** 2)

    def outer_depth(self, x, y, z):
        """Depth (mm) below the skin along the ray from the head centre (< 0 outside)."""
        ax, ay, az_up, az_down = self.a.semi_axes
        az = np.where(z >= 0, np.float32(az_up), np.float32(az_down))
        rho = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2)
        r = np.sqrt(x * x + y * y + z * z)
        phi = np.arctan2(y, x)
        surface = np.where(rho > 1e-6, r / np.maximum(rho, 1e-6), min(ax, ay))
        return surface * (1.0 + self._outline(phi, z)) - r

    def layers(self, x, y, z):
        """Cumulative depths (mm) of the inner edges of skin, fat, muscle, bone."""
        a = self.a
        phi = np.arctan2(y, x)
        fat = a.fat * (1.0 + a.fat_variation[0] * np.cos(2 * phi + a.fat_variation[1]))
        lateral = np.abs(np.cos(phi)) ** 6 * np.exp(-((z + 5.0) / 28.0) ** 2)
        muscle = a.muscle + a.temporal_muscle * lateral
        bone = a.bone * (1.0 + a.bone_variation[0] * np.cos(phi + a.bone_variation[1]))
        skin_end = np.float32(a.skin)
        fat_end = skin_end + fat
        muscle_end = fat_end + muscle
        return skin_end, fat_end, muscle_end, muscle_end + bone

    def floor(self, x, y):
        """z (mm) of the brain floor: anterior fossa high, temporal and posterior fossae deep."""
        return _floor(self.a.floor, x, y)

    def brain_depth(self, x, y, z):
        """Depth (mm) below the inner skull surface along the centre ray (< 0 outside it)."""
        return self.outer_depth(x, y, z) - self.layers(x, y, z)[3]

    def fold_field(self, x, y, z):
        """Smooth random field of the ray direction in [-1, 1]-ish: sulci at its zero set."""
        r = np.sqrt(x * x + y * y + z * z) + np.float32(1e-6)
        ux, uy, uz = x / r, y / r, z / r
        g = 0.0
        for w, k, p in zip(self.a.fold_waves, self.a.fold_wavenumbers, self.a.fold_phases):
            g = g + np.sin(np.float32(k) * (np.float32(w[0]) * ux + np.float32(w[1]) * uy
                                            + np.float32(w[2]) * uz) + np.float32(p))
        return g * np.float32(math.sqrt(2.0 / len(self.a.fold_phases)))

    def ventricle(self, x, y, z):
        """Lateral and third ventricles (bool)."""
        inside = False
        for v in self.a.ventricles:
            axx, ayy, azz = v["axes"]
            t = (y - v["y0"]) / ayy
            xc = v["side"] * (v["x0"] + v["bend"] * t * t)
            zc = v["z0"] - v["sag"] * t * t
            inside = inside | (((x - xc) / axx) ** 2 + t * t + ((z - zc) / azz) ** 2 < 1.0)
        half, y_low, y_high, depth = self.a.third_ventricle
        z_top = self.a.ventricles[0]["z0"]
        third = ((np.abs(x) < half) & (y > y_low) & (y < y_high) & (z < z_top)
                 & (z > z_top - depth))
        return inside | third


def _grid(anatomy: _Anatomy, image_size: int, num_slices: int):
    """Head-frame coordinates (mm, float32) of the voxel centres: x, y (1, N, N), z (S, 1, 1)."""
    px = FIELD_OF_VIEW_MM / image_size
    dz = HEAD_COVERAGE_MM / num_slices
    centres = (np.arange(image_size, dtype=np.float64) + 0.5 - image_size / 2.0) * px
    xw = centres[np.newaxis, :]            # columns: patient right -> left
    yw = -centres[:, np.newaxis]           # rows: anterior (row 0) -> posterior
    zw = _Z_BOTTOM_MM + (np.arange(num_slices) + 0.5) * dz
    tx, ty, tz = anatomy.shift
    c, s = math.cos(anatomy.rotation_rad), math.sin(anatomy.rotation_rad)
    # world = scale * R(theta) @ head + shift  =>  head = R(-theta) @ (world - shift) / scale
    x = (c * (xw - tx) + s * (yw - ty)) / anatomy.scale
    y = (-s * (xw - tx) + c * (yw - ty)) / anatomy.scale
    z = (zw - tz) / anatomy.scale
    f32 = np.float32
    return (x.astype(f32)[np.newaxis], y.astype(f32)[np.newaxis],
            z.astype(f32)[:, np.newaxis, np.newaxis], px)


# ----------------------------------------------------------------------------- label map

def _lesion(lesion, x, y, z) -> np.ndarray:
    """Where the lesion ``(ellipsoid, (amplitudes, phases))`` is: its ellipsoid with a boundary
    bumped by two angular harmonics (mm grid ``x, y, z``)."""
    shape_, (amps, phases) = lesion
    cx, cy, _ = shape_.center
    psi = np.arctan2(y - cy, x - cx)
    bumps = 1.0 + amps[0] * np.cos(2 * psi + phases[0]) + amps[1] * np.cos(3 * psi + phases[1])
    return shape_.rho2(x, y, z) < bumps ** 2


def _label_map(anatomy: _Anatomy, image_size: int, num_slices: int) -> np.ndarray:
    t = TISSUES
    geo = _HeadGeometry(anatomy)
    x, y, z, px = _grid(anatomy, image_size, num_slices)
    shape = (num_slices, image_size, image_size)
    scale = np.float32(anatomy.scale)

    depth = geo.outer_depth(x, y, z)
    skin_end, fat_end, muscle_end, bone_end = geo.layers(x, y, z)
    labels = np.full(shape, t["background"], np.uint8)
    body = depth >= 0
    labels[body] = t["muscle"]
    labels[body & (depth >= skin_end) & (depth < fat_end)] = t["fat"]
    skull = body & (depth >= muscle_end) & (depth < bone_end)
    labels[skull] = t["cortical_bone"]
    if anatomy.diploe_fraction > 0:
        middle = (muscle_end + bone_end) / 2.0
        half = anatomy.diploe_fraction * (bone_end - muscle_end) / 2.0
        labels[skull & (np.abs(depth - middle) < half)] = t["marrow"]

    floor = geo.floor(x, y)
    interior = depth >= bone_end
    above_floor = z > floor
    labels[interior & ~above_floor & (z > floor - anatomy.skull_base)] = t["cortical_bone"]
    intracranial = interior & above_floor

    brain_depth = np.minimum(depth - bone_end, z - floor)
    csf = intracranial & (brain_depth < anatomy.csf)
    candidates = intracranial & ~csf & (brain_depth < anatomy.csf + anatomy.sulcus_depth)
    idx = np.nonzero(candidates)
    xb = np.broadcast_to(x, shape)[idx]
    yb = np.broadcast_to(y, shape)[idx]
    zb = np.broadcast_to(z, shape)[idx]
    amp, phase = anatomy.sulcus_meander
    meander = amp * np.sin(brain_depth[idx] * np.float32(2 * np.pi / 14.0) + np.float32(phase))
    csf[idx] = np.abs(geo.fold_field(xb, yb, zb) + meander) < anatomy.sulcus_halfwidth
    ventricle_top = anatomy.ventricles[0]["z0"] + max(v["axes"][2] for v in anatomy.ventricles)
    callosum = (np.abs(y) < 0.45 * anatomy.semi_axes[1]) & (z < ventricle_top + 6.0)
    csf |= intracranial & (np.abs(x) < anatomy.fissure_halfwidth) & ~callosum
    parenchyma = intracranial & ~csf

    # Cortex: parenchyma within the grey-matter thickness of the brain surface (in-plane distance
    # to the CSF, so that grey matter lines the sulci) or of the skull along the centre ray (the
    # in-plane distance misses the cortex cut obliquely at the top and bottom of the brain).
    grey = parenchyma & (brain_depth < anatomy.csf + anatomy.grey_matter)
    for k in range(num_slices):
        if parenchyma[k].any():
            dist = cv2.distanceTransform(parenchyma[k].astype(np.uint8), cv2.DIST_L2,
                                         cv2.DIST_MASK_PRECISE)
            grey[k] |= parenchyma[k] & ((dist - 0.5) * (px / scale) < anatomy.grey_matter)
    for nucleus in anatomy.deep_grey:
        grey |= parenchyma & (nucleus.rho2(x, y, z) < 1.0)
    labels[parenchyma] = t["white_matter"]
    labels[grey] = t["grey_matter"]
    labels[csf] = t["csf"]
    labels[parenchyma & geo.ventricle(x, y, z)] = t["csf"]

    if anatomy.lesion is not None:
        labels[intracranial & _lesion(anatomy.lesion, x, y, z)] = t["lesion"]

    inner = body & (depth >= fat_end + 1.0)
    for sinus in anatomy.sinuses:
        rho2 = sinus.rho2(x, y, z)
        wall = (1.0 + anatomy.sinus_wall / min(sinus.axes)) ** 2
        labels[inner & (rho2 < wall)] = t["cortical_bone"]
    for sinus in anatomy.sinuses:
        labels[inner & (sinus.rho2(x, y, z) < 1.0)] = t["sinus_air"]
    return labels


# ----------------------------------------------------------------------------- rendering

def _blur(volume: np.ndarray, sigma_px: float) -> np.ndarray:
    """In-plane Gaussian point-spread function (sigma in pixels)."""
    return ndimage.gaussian_filter(volume, sigma=(0.0, sigma_px, sigma_px), mode="nearest",
                                   truncate=3.0)


def _render_ct(labels, anatomy: _Anatomy, rng: np.random.Generator) -> np.ndarray:
    lut = np.zeros(_NUM_ID, np.float32)
    for name, label in TISSUES.items():
        value = CT_HU[name]
        lut[label] = anatomy.bone_hu if isinstance(value, tuple) else value
    ct = _blur(lut[labels], anatomy.psf_sigma_px)
    ct += rng.standard_normal(ct.shape, dtype=np.float32) * np.float32(anatomy.ct_noise_hu)
    return ct


def _bias_field(anatomy: _Anatomy, x, y, z) -> np.ndarray:
    """Smooth multiplicative field exp(quadratic polynomial), +-bias_amplitude over the head."""
    xn, yn, zn = x / 100.0, y / 100.0, z / 100.0
    c = [float(v) for v in anatomy.bias_coefficients]   # Python floats keep float32 arrays float32
    log_field = (c[1] * xn + c[2] * yn + c[3] * zn + 0.5 * (c[4] * xn * xn + c[5] * yn * yn
                 + c[6] * zn * zn + c[7] * xn * yn + c[8] * xn * zn))
    peak = float(np.abs(log_field).max())
    return np.exp(log_field * np.float32(anatomy.bias_amplitude / max(peak, 1e-6)))


def _render_mri(labels, anatomy: _Anatomy, rng: np.random.Generator, x, y, z) -> np.ndarray:
    params = np.array([MRI_TISSUE_PARAMETERS[name] for name in TISSUES], np.float64)
    params = params * anatomy.mri_jitter
    lut = spin_echo_signal(params[:, 0], params[:, 1], params[:, 2]).astype(np.float32)
    white = float(lut[TISSUES["white_matter"]])
    signal = _blur(lut[labels], anatomy.psf_sigma_px)
    signal *= _bias_field(anatomy, x, y, z)
    signal *= np.float32(anatomy.mri_gain)
    sigma = np.float32(anatomy.mri_noise_fraction * white * anatomy.mri_gain)
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    imag = rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    return np.hypot(real, imag)


# ----------------------------------------------------------------------------- public API

def _check_int(name: str, value, least: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
        raise CtmriInputError(None, f"phantom {name} must be an integer >= {least}, got {value!r}")
    return int(value)


def make_subject(index: int, *, image_size: int = 256, num_slices: int = 32,
                 seed: int = 0, noise: bool = True,
                 bone_hu: float | None = None) -> PhantomSubject:
    """Generate phantom subject ``index``: a pure function of ``(index, seed)`` and the grid.

    Args:
        index: subject number (>= 0).
        image_size: rows = cols of every slice (>= 16); pixel spacing is
            ``FIELD_OF_VIEW_MM / image_size`` mm.
        num_slices: slices from the maxillary sinuses to near the vertex (>= 1); slice spacing is
            ``HEAD_COVERAGE_MM / num_slices`` mm.
        seed: dataset seed; subjects of different seeds are independent.
        noise: False renders the same subject without CT and MRI noise (everything else
            identical): the best a translation model can predict, since noise is not predictable.
        bone_hu: render the cortical bone at this HU instead of the subject's drawn value
            (same anatomy, noise and MRI; e.g. the middle of ``CT_HU["cortical_bone"]``, the
            best guess of a model that sees only the MRI, where bone is dark whatever its HU).

    Returns:
        :class:`PhantomSubject` with CT in HU, MRI in arbitrary scanner units, labels and mask.

    Raises:
        CtmriInputError: a negative index or seed, or a grid that is too small.
    """
    index, seed = _check_int("index", index, 0), _check_int("seed", seed, 0)
    image_size = _check_int("image_size", image_size, 16)
    num_slices = _check_int("num_slices", num_slices, 1)
    anatomy = _draw_anatomy(np.random.default_rng([seed, index, 0]))
    if bone_hu is not None:
        anatomy = dataclasses.replace(anatomy, bone_hu=float(bone_hu))
    if not noise:
        anatomy = dataclasses.replace(anatomy, ct_noise_hu=0.0, mri_noise_fraction=0.0)
    noise_rng = np.random.default_rng([seed, index, 1])
    labels = _label_map(anatomy, image_size, num_slices)
    x, y, z, px = _grid(anatomy, image_size, num_slices)
    ct = _render_ct(labels, anatomy, noise_rng)
    mri = _render_mri(labels, anatomy, noise_rng, x, y, z)
    mask = (labels != TISSUES["background"]).astype(np.uint8)
    return PhantomSubject(
        subject_id=f"phantom-{seed}-{index:04d}", labels=labels, ct=ct, mri=mri, mask=mask,
        spacing=(HEAD_COVERAGE_MM / num_slices, px, px), bone_hu=anatomy.bone_hu)


def subject_split(index: int, num_subjects: int) -> str:
    """The split of subject ``index`` out of ``num_subjects``: ``"train"``, ``"validation"`` or
    ``"test"`` (by subject, so no subject has slices in two splits).

    The last ~10 % of the indices are test and the ~10 % before them validation (rounded, at
    least one each when ``num_subjects >= 3``), the rest train. With 2 subjects: train and test;
    with 1: train.
    """
    n = _check_int("num_subjects", num_subjects, 1)
    if _check_int("index", index, 0) >= n:
        raise CtmriInputError(None, f"subject index {index!r} is outside 0..{n - 1}")
    n_test = max(1, (n + 5) // 10) if n >= 2 else 0
    n_val = max(1, (n + 5) // 10) if n >= 3 else 0
    if index >= n - n_test:
        return "test"
    if index >= n - n_test - n_val:
        return "validation"
    return "train"

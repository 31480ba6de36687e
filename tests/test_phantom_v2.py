"""Phantom v2 (domain-randomised): settings per subject, contrast, geometry, held-out domain, build.

Tiny grids (48-96 px, <= 24 slices) keep the whole file to a few seconds.
"""
import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage

from ctmri_tf import phantom, phantom_v2
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.phantom_v2 import (CT_HU_RANGES, HELDOUT_DOMAIN, SPLIT_HELDOUT, TISSUES,
                                 TRAINING_DOMAIN, make_subject, subject_settings)

GRID = dict(image_size=48, num_slices=6)
T = TISSUES


def settings_of(domain, n=200, seed=0):
    return [subject_settings(i, seed=seed, domain=domain) for i in range(n)]


def first_index(predicate, domain=TRAINING_DOMAIN):
    return next(i for i in range(200) if predicate(subject_settings(i, domain=domain)))


def brain_view(index, image_size=64, num_slices=4, **changes):
    """Subject ``index`` noise-free on a 64 px x 4 slice grid through the ventricles, 1 mm
    slices, 180 mm field of view, unless ``changes`` say otherwise."""
    settings = dataclasses.replace(subject_settings(index), **{
        "z_bottom_mm": 0.0, "coverage_mm": 32.0, "slice_thickness_mm": 1.0,
        "field_of_view_mm": 180.0, "pixel_spacing_mm": 0.5, "skull_stripped": False,
        "rotation_deg": (0.0, 0.0, 0.0), **changes})
    return make_subject(index, image_size=image_size, num_slices=num_slices, noise=False,
                        settings=settings)


def core_medians(subject, image, size=3, min_voxels=20):
    """Tissue name -> median of ``image`` over the tissue eroded in-plane (``size`` x ``size``),
    for tissues with at least ``min_voxels`` such voxels."""
    structure = np.zeros((1, size, size), bool)
    structure[0] = True
    out = {}
    for name, label in T.items():
        core = ndimage.binary_erosion(subject.labels == label, structure)
        if core.sum() >= min_voxels:
            out[name] = float(np.median(image[core]))
    return out


# ----------------------------------------------------------------------------- determinism

def test_same_seed_and_index_reproduce_bit_identically():
    a = make_subject(3, seed=2, **GRID)
    b = make_subject(3, seed=2, **GRID)
    assert a.subject_id == b.subject_id == "phantom2-2-0003" and a.settings == b.settings
    for field in ("labels", "ct", "mri", "mask", "brain"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    other = make_subject(3, seed=3, **GRID)
    assert other.settings != a.settings and not np.array_equal(other.labels, a.labels)
    held = make_subject(3, seed=2, domain="heldout", **GRID)
    assert held.subject_id == "phantom2-2-0003-heldout"
    assert held.settings["rotation_deg"] == a.settings["rotation_deg"]   # same head, pose


def test_settings_are_recorded_and_set_the_grid():
    s = make_subject(1, **GRID)
    assert s.settings == subject_settings(1).as_dict()
    fov = s.settings["field_of_view_mm"]
    assert s.spacing[1] == s.spacing[2] == pytest.approx(fov / 48, rel=1e-6)
    assert s.spacing[0] == pytest.approx(s.settings["coverage_mm"] / 6, rel=1e-3)
    for field, dtype in (("labels", np.uint8), ("ct", np.float32), ("mri", np.float32),
                         ("mask", np.uint8), ("brain", np.uint8)):
        assert getattr(s, field).shape == (6, 48, 48) and getattr(s, field).dtype == dtype
    np.testing.assert_array_equal(s.mask, s.labels != T["background"])
    assert np.isfinite(s.ct).all() and s.mri.min() >= 0


# ----------------------------------------------------------------------------- randomisation

def test_subjects_differ_in_every_named_setting():
    draws = settings_of(TRAINING_DOMAIN, 60)
    assert {s.sequence for s in draws} == {"spin_echo", "mprage"}
    assert {s.ct_kernel for s in draws} == {"smooth", "sharp"}
    assert {s.skull_stripped for s in draws} == {True, False}
    assert {s.whole_head for s in draws} == {True, False}
    for field in ("tr_ms", "te_ms", "pixel_spacing_mm", "slice_thickness_mm", "field_of_view_mm",
                  "coverage_mm", "ct_noise_hu", "mri_noise_fraction", "bias_amplitude",
                  "deformation_mm"):
        values = np.array([getattr(s, field) for s in draws])
        assert values.std() > 0.15 * (values.max() - values.min()) > 0, field
    tis = [s.ti_ms for s in draws if s.sequence == "mprage"]
    assert len(set(tis)) == len(tis) and all(s.ti_ms is None for s in draws
                                             if s.sequence == "spin_echo")
    assert len({s.head_scale for s in draws}) == len({s.rotation_deg for s in draws}) == 60
    assert min(s.pixel_spacing_mm for s in draws) >= 0.4
    assert max(s.slice_thickness_mm for s in draws) <= 5.0
    # in the images: other heads (size, pose, anatomy) and other fields of view
    a, b = make_subject(0, **GRID), make_subject(1, **GRID)
    assert (a.labels != b.labels).mean() > 0.05 and a.spacing != b.spacing


def test_head_size_and_pose_move_the_head():
    base = brain_view(4)
    bigger = brain_view(4, head_scale=tuple(1.12 * v for v in base.settings["head_scale"]))
    assert bigger.mask.sum() > 1.15 * base.mask.sum()
    sx, sy, sz = base.settings["shift_mm"]
    shifted = brain_view(4, shift_mm=(sx + 15.0, sy, sz))
    cols = lambda s: np.nonzero(s.mask)[2].mean()
    assert cols(shifted) - cols(base) == pytest.approx(15.0 / (180 / 64), abs=1.5)
    turned = brain_view(4, rotation_deg=(25.0, 0.0, 0.0))
    assert (turned.labels != base.labels).mean() > 0.05


# ----------------------------------------------------------------------------- MRI contrast

@pytest.mark.parametrize("sequence", ["spin_echo", "mprage"])
def test_t1_contrast_white_above_grey_above_dark_csf(sequence):
    s = brain_view(first_index(lambda s: s.sequence == sequence), image_size=128)
    assert s.settings["sequence"] == sequence
    median = core_medians(s, s.mri, min_voxels=10)
    assert median["white_matter"] > median["grey_matter"] > median["ventricle"]
    assert median["ventricle"] < 0.6 * median["white_matter"]


def test_heldout_sequences_are_t1_weighted_too():
    index = first_index(lambda s: s.sequence == "spoiled_gre", HELDOUT_DOMAIN)
    settings = dataclasses.replace(subject_settings(index, domain=HELDOUT_DOMAIN),
                                   z_bottom_mm=0.0, coverage_mm=32.0, field_of_view_mm=180.0,
                                   rotation_deg=(0.0, 0.0, 0.0), skull_stripped=False)
    s = make_subject(index, image_size=128, num_slices=4, noise=False, settings=settings)
    median = core_medians(s, s.mri, min_voxels=10)
    assert median["white_matter"] > median["grey_matter"] > median["ventricle"]


def test_signal_equations_by_hand():
    # spoiled GRE: PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*)
    e1 = math.exp(-20 / 600)
    expected = 0.7 * math.sin(math.radians(30)) * (1 - e1) / (1 - math.cos(math.radians(30)) * e1)
    got = phantom_v2.spoiled_gre_signal(0.7, 600, 60, tr_ms=20, te_ms=4, flip_deg=30)
    assert float(got) == pytest.approx(expected * math.exp(-4 / 60), rel=1e-9)
    # MPRAGE with one 90-degree readout is inversion recovery: |1 - 2 exp(-TI/T1) + exp(-TR/T1)|
    got = phantom_v2.mprage_signal(1.0, 900.0, 1e9, tr_ms=2000, ti_ms=300, te_ms=0, flip_deg=90,
                                   echo_spacing_ms=1e-9, num_readouts=1)
    assert float(got) == pytest.approx(abs(1 - 2 * math.exp(-300 / 900) + math.exp(-2000 / 900)),
                                       rel=1e-6)
    with pytest.raises(CtmriInputError, match="MPRAGE timing"):
        phantom_v2.mprage_signal(1.0, 900.0, 50.0, tr_ms=2000, ti_ms=300, te_ms=3, flip_deg=9,
                                 echo_spacing_ms=8, num_readouts=160)


def test_mri_noise_is_rician_and_bias_smooth():
    index = first_index(lambda s: not s.skull_stripped)
    settings = dataclasses.replace(subject_settings(index), mri_noise_fraction=0.05)
    noisy = make_subject(index, image_size=64, num_slices=4, settings=settings)
    air = ndimage.binary_erosion(noisy.labels == T["background"], np.ones((1, 5, 5), bool))
    values = noisy.mri[air]
    assert values.min() >= 0 and values.mean() / values.std() == pytest.approx(
        math.sqrt(math.pi / (4 - math.pi)), rel=0.1)      # Rayleigh in air


def test_skull_stripped_mri_is_zero_outside_the_brain():
    index = first_index(lambda s: s.skull_stripped)
    s = make_subject(index, image_size=64, num_slices=6)
    assert s.settings["skull_stripped"] and s.brain.any()
    assert np.all(s.mri[s.brain == 0] == 0)
    assert (s.mri[s.brain == 1] > 0).mean() > 0.99
    # the body mask stays the head; CT stays whole (skull and scalp present)
    assert s.mask.sum() > 1.3 * s.brain.sum() and np.all(s.mask[s.brain == 1] == 1)
    assert s.ct[(s.labels == T["cortical_bone"])].mean() > 300
    np.testing.assert_array_equal(s.brain, np.isin(s.labels, [T[n] for n in
                                                                phantom_v2.BRAIN_TISSUES]))


# ----------------------------------------------------------------------------- geometry

def test_thicker_slices_are_smoother_through_plane():
    def curvature(thickness):
        """Mean |second difference| through-plane (slices 1.5 mm apart) of CT and MRI."""
        s = brain_view(2, num_slices=8, slice_thickness_mm=thickness, coverage_mm=12.0,
                       z_bottom_mm=20.0)
        body = s.mask.all(axis=0).astype(bool)
        return [float(np.abs(np.diff(v, 2, axis=0)).mean(axis=0)[body].mean())
                for v in (s.ct, s.mri)]
    thin, thick = curvature(1.0), curvature(7.0)
    assert thick[0] < 0.5 * thin[0] and thick[1] < 0.5 * thin[1], (thin, thick)


def test_coarser_in_plane_spacing_and_smooth_kernel_blur():
    def edge_energy(image):
        """Mean squared difference of neighbouring columns (blur lowers it)."""
        return float(np.square(np.diff(image, axis=-1)).mean())
    fine = brain_view(2, field_of_view_mm=40.0, pixel_spacing_mm=0.4, ct_kernel="smooth",
                      ct_kernel_strength=0.1)
    coarse = brain_view(2, field_of_view_mm=40.0, pixel_spacing_mm=1.5, ct_kernel="smooth",
                        ct_kernel_strength=0.1)
    assert edge_energy(coarse.mri) < 0.7 * edge_energy(fine.mri)
    assert edge_energy(coarse.ct) < 0.7 * edge_energy(fine.ct)
    sharp = brain_view(2, ct_kernel="sharp", ct_kernel_strength=1.0)
    smooth = brain_view(2, ct_kernel="smooth", ct_kernel_strength=1.0)
    assert edge_energy(sharp.ct) > 1.2 * edge_energy(smooth.ct)
    # edge enhancement overshoots: darker than air next to the skull, brighter than the bone
    assert sharp.ct.max() > smooth.ct.max()


def test_ct_noise_level_follows_the_settings():
    index = first_index(lambda s: s.ct_kernel == "smooth")
    for noise_hu in (5.0, 25.0):
        settings = dataclasses.replace(subject_settings(index), ct_noise_hu=noise_hu)
        noisy = make_subject(index, image_size=48, num_slices=4, settings=settings)
        clean = make_subject(index, image_size=48, num_slices=4, settings=settings, noise=False)
        np.testing.assert_array_equal(noisy.labels, clean.labels)
        assert (noisy.ct - clean.ct).std() == pytest.approx(noise_hu, rel=0.05)


# ----------------------------------------------------------------------------- CT and anatomy

def test_ct_hu_of_every_tissue_is_within_its_physical_range():
    for s in settings_of(TRAINING_DOMAIN, 30) + settings_of(HELDOUT_DOMAIN, 10):
        for name, (low, high) in CT_HU_RANGES.items():
            assert low <= s.ct_hu[name] <= high, name
        assert s.ct_hu["grey_matter"] > s.ct_hu["white_matter"]
        assert s.ct_hu["ventricle"] == s.ct_hu["csf"]
    s = brain_view(5, image_size=128)
    medians = core_medians(s, s.ct, size=5)
    bulk = {"white_matter", "ventricle", "deep_grey", "background", "cortical_bone"}
    assert {"white_matter", "ventricle", "background"} <= set(medians)   # scalp: no clean core
    for name, value in medians.items():
        if name not in bulk:
            continue
        low, high = CT_HU_RANGES[name]
        assert low - 5 <= value <= high + 5, (name, value)
        assert value == pytest.approx(s.settings["ct_hu"][name], abs=5), name


@pytest.fixture(scope="module")
def whole_head():
    """Subject 0 from the upper neck to the vertex, 96 px over 240 mm, 24 slices of 2 mm."""
    settings = dataclasses.replace(subject_settings(0), z_bottom_mm=-100.0, coverage_mm=190.0,
                                   field_of_view_mm=240.0, slice_thickness_mm=2.0,
                                   rotation_deg=(0.0, 0.0, 0.0))
    return make_subject(0, image_size=96, num_slices=24, noise=False, settings=settings)


def test_the_head_has_its_tissues(whole_head):
    s = whole_head
    present = {name for name, label in T.items() if (s.labels == label).any()}
    assert set(T) - {"lesion"} <= present, set(T) - present
    # diploe between two cortical tables: marrow touches cortical bone, never the brain or scalp
    marrow = s.labels == T["marrow"]
    ring = ndimage.binary_dilation(marrow, np.ones((1, 3, 3), bool)) & ~marrow
    around = np.bincount(s.labels[ring], minlength=len(T))
    assert around[T["cortical_bone"]] > 0.6 * around.sum()
    # eyes in front (row 0 anterior) of the ventricles; sinuses and airway below the brain
    rows = {name: np.nonzero(s.labels == T[name])[1].mean() for name in ("vitreous", "ventricle")}
    assert rows["vitreous"] < rows["ventricle"]
    slices = {name: np.nonzero(s.labels == T[name])[0] for name in
              ("spinal_cord", "mastoid_air", "ventricle", "grey_matter")}
    assert slices["spinal_cord"].max() < slices["ventricle"].min()
    assert slices["mastoid_air"].mean() < slices["ventricle"].mean()
    assert slices["grey_matter"].max() > slices["ventricle"].max()   # cortex up to the vertex


def test_cortex_is_folded(whole_head):
    s = whole_head
    k = int(np.argmax((s.labels == T["ventricle"]).sum(axis=(1, 2)))) + 3
    grey = s.labels[k] == T["grey_matter"]
    white = s.labels[k] == T["white_matter"]
    # sulci: grey matter (and CSF) reach deep into the brain, not only a smooth outer ribbon
    brain = np.isin(s.labels[k], [T[n] for n in ("grey_matter", "white_matter", "csf",
                                                 "ventricle", "deep_grey")])
    depth_mm = ndimage.distance_transform_edt(brain) * s.spacing[1]
    assert grey.sum() > 0.3 * white.sum()
    assert (grey & (depth_mm > 9.0)).sum() > 0.05 * grey.sum()
    assert ((s.labels[k] == T["csf"]) & (depth_mm > 6.0)).sum() > 0


# ----------------------------------------------------------------------------- domains, splits

def test_heldout_domain_settings_never_occur_in_training():
    train = settings_of(TRAINING_DOMAIN, 400)
    held = settings_of(HELDOUT_DOMAIN, 400)

    def contrast(s):
        return "mprage-long-ti" if s.sequence == "mprage" and s.ti_ms >= 1100 else s.sequence

    train_contrasts, held_contrasts = {contrast(s) for s in train}, {contrast(s) for s in held}
    assert train_contrasts == {"spin_echo", "mprage"}
    assert held_contrasts == {"spoiled_gre", "mprage-long-ti"}
    assert max(s.ti_ms for s in train if s.ti_ms) < min(s.ti_ms for s in held if s.ti_ms)
    for field in ("pixel_spacing_mm", "slice_thickness_mm"):
        assert max(getattr(s, field) for s in train) <= min(getattr(s, field) for s in held)
    assert all(s.domain == "training" for s in train) and all(s.domain == "heldout" for s in held)


@pytest.mark.parametrize("n", [1, 3, 4, 6, 10, 60])
def test_split_is_by_subject_with_the_heldout_domain_last(n):
    splits = [phantom_v2.subject_split(i, n) for i in range(n)]
    order = list(phantom_v2.SPLITS)
    assert splits == sorted(splits, key=order.index)
    if n >= 4:
        assert set(splits) == set(order) and splits.count(SPLIT_HELDOUT) == max(1, (n + 5) // 10)
    assert SPLIT_HELDOUT not in splits[:n - max(1, (n + 5) // 10)]
    assert phantom_v2.split_domain(SPLIT_HELDOUT) is HELDOUT_DOMAIN
    assert phantom_v2.split_domain("validation") is TRAINING_DOMAIN


def test_bad_arguments_raise():
    with pytest.raises(CtmriInputError, match="index"):
        make_subject(-1)
    with pytest.raises(CtmriInputError, match="image_size"):
        make_subject(0, image_size=8)
    with pytest.raises(CtmriInputError, match="domain"):
        make_subject(0, domain="scanner-x")
    with pytest.raises(CtmriInputError, match="slice_thickness_mm"):
        make_subject(0, settings=dataclasses.replace(subject_settings(0), slice_thickness_mm=0))
    with pytest.raises(CtmriInputError, match="sequences"):
        phantom_v2.Domain(name="x", sequences=("flair",))
    with pytest.raises(CtmriInputError, match="pixel_spacing_mm"):
        phantom_v2.Domain(name="x", sequences=("mprage",), pixel_spacing_mm=(2.0, 1.0))
    with pytest.raises(CtmriInputError, match="split"):
        phantom_v2.split_domain("train2")
    with pytest.raises(CtmriInputError, match="index"):
        phantom_v2.subject_split(4, 4)


def test_v1_is_untouched_by_v2():
    before = phantom.make_subject(2, image_size=32, num_slices=4)
    make_subject(2, **GRID)
    after = phantom.make_subject(2, image_size=32, num_slices=4)
    np.testing.assert_array_equal(before.mri, after.mri)
    assert phantom.TISSUES == {name: T[name] for name in phantom.TISSUES}


# ----------------------------------------------------------------------------- dataset

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``ctmri dataset build --config synthetic_v2_6x4x48`` (the CLI), in a temporary folder."""
    from ctmri_tf.datasets.ctmri import ctmri_dataset_builder
    from ctmri_tf.datasets.ctmri.__main__ import main

    data_dir = tmp_path_factory.mktemp("tfds")
    assert main(["build", "--config", "synthetic_v2_6x4x48", "--data-dir", str(data_dir)]) == 0
    config = ctmri_dataset_builder.known_config("synthetic_v2_6x4x48")
    return ctmri_dataset_builder.Builder(config=config, data_dir=data_dir)


def test_tiny_v2_config_builds_with_the_heldout_split(built):
    import tensorflow_datasets as tfds

    splits = {name: int(info.num_examples) for name, info in built.info.splits.items()}
    assert splits == {"train": 3 * 4 * 2, "validation": 4 * 2, "test": 4 * 2,
                      SPLIT_HELDOUT: 4 * 2}
    metadata = built.info.metadata
    table = metadata["phantom_v2_settings"]
    subjects = {}
    spacings = []
    for split in splits:
        for example in tfds.as_numpy(built.as_dataset(split=split)):
            subject = example["subject_id"].decode()
            subjects.setdefault(subject, set()).add(split)
            assert example["image"].shape == example["counterpart"].shape == (48, 48)
            fov = table[subject]["field_of_view_mm"]
            np.testing.assert_allclose(example["pixel_spacing"], [fov / 48] * 2, rtol=1e-4)
            if split == "train":
                spacings.append(example["pixel_spacing"])
    assert all(len(s) == 1 for s in subjects.values()) and len(subjects) == 6   # by subject
    assert {table[s]["domain"] for s, (split,) in subjects.items()
            if split == SPLIT_HELDOUT} == {"heldout"}
    assert {table[s]["domain"] for s, (split,) in subjects.items()
            if split != SPLIT_HELDOUT} == {"training"}
    assert metadata["pixel_spacing_mm"]["median"] == pytest.approx(
        np.median(spacings, axis=0).tolist(), rel=1e-5)
    assert metadata["phantom_v2_domains"]["splits"][SPLIT_HELDOUT] == "heldout"


def test_v2_config_names_and_overrides():
    from ctmri_tf.datasets.ctmri import ctmri_dataset_builder as builder

    default = builder.known_config("synthetic_v2")
    assert default.source == builder.SOURCE_SYNTHETIC_V2 and default.num_subjects >= 40
    named = builder.known_config("synthetic_v2_8x4x48_seed3")
    assert (named.num_subjects, named.num_slices, named.image_size, named.seed) == (8, 4, 48, 3)
    assert builder.resolve_config("synthetic_v2", num_subjects=6, num_slices=4,
                                  image_size=48).name == "synthetic_v2_6x4x48"
    assert builder.known_config("synthetic_6x4x32").source == builder.SOURCE_SYNTHETIC
    assert [c.name for c in builder.Builder.BUILDER_CONFIGS][:2] == ["synthetic",
                                                                     "synthetic_small"]

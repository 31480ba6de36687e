"""Paired CT/MRI head phantoms: determinism, HU per tissue, spin-echo contrast, anatomy, split."""
import math

import numpy as np
import pytest
from scipy import ndimage

from ctmri_tf import phantom
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.phantom import (CT_HU, MRI_SEQUENCE, MRI_TISSUE_PARAMETERS, TISSUES, make_subject,
                              spin_echo_signal, subject_split)

LESION_SUBJECT = 6   # seed 0, subject 6 carries a lesion and a diploe (checked below)


@pytest.fixture(scope="module")
def full_subject():
    """One subject at the default 256 px x 32 slices, shared by the HU and MRI tests."""
    return make_subject(LESION_SUBJECT)


def tissue_cores(labels, min_voxels=200):
    """name -> bool mask of the tissue eroded by 2 px in-plane (away from blurred edges)."""
    structure = np.zeros((1, 5, 5), bool)
    structure[0] = True
    cores = {}
    for name, label in TISSUES.items():
        core = ndimage.binary_erosion(labels == label, structure)
        if core.sum() >= min_voxels:
            cores[name] = core
    return cores


def test_same_index_and_seed_give_identical_subjects():
    a = make_subject(3, image_size=64, num_slices=8, seed=1)
    b = make_subject(3, image_size=64, num_slices=8, seed=1)
    assert a.subject_id == b.subject_id and a.bone_hu == b.bone_hu and a.spacing == b.spacing
    for field in ("labels", "ct", "mri", "mask"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_noise_free_subject_differs_only_by_the_noise():
    noisy = make_subject(3, image_size=64, num_slices=8, seed=1)
    clean = make_subject(3, image_size=64, num_slices=8, seed=1, noise=False)
    np.testing.assert_array_equal(clean.labels, noisy.labels)
    np.testing.assert_array_equal(clean.mask, noisy.mask)
    # the CT noise is Gaussian with the subject's 10-20 HU sigma, zero mean
    residual = noisy.ct - clean.ct
    assert 10.0 <= residual.std() <= 20.0 and abs(residual.mean()) < 0.5
    # noise-free CT: every voxel deep inside a tissue has its HU exactly
    core = ndimage.binary_erosion(clean.labels == TISSUES["muscle"], np.ones((1, 7, 7), bool))
    np.testing.assert_allclose(clean.ct[core], CT_HU["muscle"], atol=1e-3)
    assert np.all(clean.mri >= 0) and not np.array_equal(clean.mri, noisy.mri)


def test_bone_hu_override_changes_only_the_ct_at_the_bone():
    drawn = make_subject(3, image_size=64, num_slices=8, noise=False)
    guessed = make_subject(3, image_size=64, num_slices=8, noise=False, bone_hu=1250.0)
    assert guessed.bone_hu == 1250.0 and drawn.bone_hu != 1250.0
    np.testing.assert_array_equal(guessed.labels, drawn.labels)
    np.testing.assert_array_equal(guessed.mri, drawn.mri)         # bone HU is invisible in MRI
    bone = guessed.labels == TISSUES["cortical_bone"]
    core = ndimage.binary_erosion(bone, np.ones((1, 7, 7), bool))
    assert core.sum() > 50                                        # thick bone at the skull base
    np.testing.assert_allclose(guessed.ct[core], 1250.0, atol=1e-2)
    far = ~ndimage.binary_dilation(bone, np.ones((1, 9, 9), bool))
    np.testing.assert_allclose(guessed.ct[far], drawn.ct[far], atol=1e-2)


def test_different_index_or_seed_gives_different_anatomy():
    base = make_subject(3, image_size=64, num_slices=8)
    other_index = make_subject(4, image_size=64, num_slices=8)
    other_seed = make_subject(3, image_size=64, num_slices=8, seed=1)
    for other in (other_index, other_seed):
        assert other.subject_id != base.subject_id
        assert (other.labels != base.labels).mean() > 0.02
        assert other.bone_hu != base.bone_hu


def test_shapes_dtypes_and_spacing():
    s = make_subject(0, image_size=64, num_slices=8)
    assert s.subject_id == "phantom-0-0000"
    for field, dtype in (("labels", np.uint8), ("ct", np.float32), ("mri", np.float32),
                         ("mask", np.uint8)):
        array = getattr(s, field)
        assert array.shape == (8, 64, 64) and array.dtype == dtype, field
    assert s.spacing == pytest.approx((144.0 / 8, 240.0 / 64, 240.0 / 64))
    assert set(np.unique(s.labels)) <= set(TISSUES.values())
    assert np.isfinite(s.ct).all() and np.isfinite(s.mri).all() and s.mri.min() >= 0.0
    low, high = CT_HU["cortical_bone"]
    assert low <= s.bone_hu <= high


def test_default_grid_spacing_covers_a_head():
    # 256 px over 240 mm, 32 slices of 4.5 mm: the documented defaults of the dataset.
    assert phantom.FIELD_OF_VIEW_MM / 256 == pytest.approx(0.9375)
    assert phantom.HEAD_COVERAGE_MM / 32 == pytest.approx(4.5)
    s = make_subject(2, image_size=128, num_slices=16)
    middle = s.mask[8].astype(bool)
    width = middle.any(axis=0).sum() * s.spacing[2]
    length = middle.any(axis=1).sum() * s.spacing[1]
    assert 120 < width < 200 and 150 < length < 225, (width, length)  # mm, a head (rotated)
    assert s.mask[0].any() and s.mask[-1].sum() < s.mask[8].sum()     # smaller towards the top


def test_anatomy_does_not_depend_on_the_grid():
    coarse = make_subject(5, image_size=64, num_slices=16)
    fine = make_subject(5, image_size=128, num_slices=16)
    assert coarse.bone_hu == fine.bone_hu
    coarse_ml = coarse.mask.sum() * np.prod(coarse.spacing) / 1000
    fine_ml = fine.mask.sum() * np.prod(fine.spacing) / 1000
    assert coarse_ml == pytest.approx(fine_ml, rel=0.03)
    # The same labels up to resampling: 2x2-downsampled fine labels agree with most coarse ones.
    agree = (fine.labels[:, ::2, ::2] == coarse.labels).mean()
    assert agree > 0.9


def test_mask_is_every_label_but_background_air():
    s = make_subject(1, image_size=96, num_slices=12)
    np.testing.assert_array_equal(s.mask, (s.labels != TISSUES["background"]).astype(np.uint8))
    assert (s.labels == TISSUES["sinus_air"]).any()
    assert s.mask[s.labels == TISSUES["sinus_air"]].all()   # sinus air is body


def test_ct_has_the_claimed_hu_per_tissue(full_subject):
    s = full_subject
    cores = tissue_cores(s.labels)
    required = {"background", "muscle", "cortical_bone", "marrow", "grey_matter",
                "white_matter", "csf", "sinus_air", "lesion"}
    assert required <= set(cores), f"missing tissue cores: {required - set(cores)}"
    for name, core in cores.items():
        claim = s.bone_hu if name == "cortical_bone" else CT_HU[name]
        assert np.median(s.ct[core]) == pytest.approx(claim, abs=3.0), name
    # Gaussian noise of 10-20 HU: the spread of the uniform air around the head.
    air = s.ct[cores["background"]]
    assert 10.0 <= air.std() <= 20.5
    assert s.spacing == pytest.approx((4.5, 0.9375, 0.9375))


def test_spin_echo_signal_by_hand():
    # WM: 0.7 * (1 - exp(-500/600)) * exp(-15/80); CSF: 1.0 * (1 - exp(-500/4000)) * exp(-15/2000)
    assert MRI_SEQUENCE.tr_ms == 500.0 and MRI_SEQUENCE.te_ms == 15.0
    assert float(spin_echo_signal(*MRI_TISSUE_PARAMETERS["white_matter"])) == pytest.approx(
        0.3281142, rel=1e-6)
    assert float(spin_echo_signal(*MRI_TISSUE_PARAMETERS["csf"])) == pytest.approx(
        0.1166251, rel=1e-6)
    assert float(spin_echo_signal(0.0, 1000.0, 100.0)) == 0.0
    long_tr = phantom.SpinEcho(tr_ms=1e9, te_ms=0.0)   # proton-density weighting: S = PD
    assert float(spin_echo_signal(0.8, 1000.0, 100.0, long_tr)) == pytest.approx(0.8)


def test_mri_follows_the_signal_equation(full_subject):
    s = full_subject
    cores = tissue_cores(s.labels)
    median = {name: float(np.median(s.mri[core])) for name, core in cores.items()}
    wm = median["white_matter"]
    # T1-weighted ordering: fat and fatty marrow > white > grey > CSF; bone and air dark.
    assert median["fat"] > wm > median["grey_matter"] > median["csf"]
    assert median["marrow"] > wm
    for dark in ("cortical_bone", "sinus_air", "background"):
        assert median[dark] < 0.1 * wm, dark
    # Ratios to white matter match S = PD (1 - exp(-TR/T1)) exp(-TE/T2) within the per-subject
    # parameter jitter and the bias field.
    expected_wm = float(spin_echo_signal(*MRI_TISSUE_PARAMETERS["white_matter"]))
    for name in ("fat", "muscle", "marrow", "grey_matter", "csf", "lesion"):
        expected = float(spin_echo_signal(*MRI_TISSUE_PARAMETERS[name])) / expected_wm
        assert median[name] / wm == pytest.approx(expected, rel=0.15), name


def test_mri_has_rician_noise_and_a_smooth_bias_field(full_subject):
    s = full_subject
    cores = tissue_cores(s.labels)
    air = s.mri[cores["background"]]
    # Magnitude of complex Gaussian noise in air: Rayleigh, mean / std = sqrt(pi / (4 - pi)).
    assert air.min() >= 0.0
    assert air.mean() / air.std() == pytest.approx(math.sqrt(math.pi / (4 - math.pi)), rel=0.05)
    # The bias field makes the same tissue brighter on one side of the head than the other,
    # by a few to ~20 %, smoothly (no jump between neighbouring slices).
    wm = cores["white_matter"]
    per_slice = [np.median(s.mri[k][wm[k]]) for k in range(len(wm)) if wm[k].sum() > 500]
    spread = max(per_slice) / min(per_slice)
    assert 1.02 < spread < 1.5
    assert max(abs(a / b - 1) for a, b in zip(per_slice, per_slice[1:])) < 0.06


def test_sinus_air_is_low_and_anterior_and_absent_at_the_top():
    for index in range(4):
        s = make_subject(index, image_size=128, num_slices=16)
        air = s.labels == TISSUES["sinus_air"]
        slices = np.nonzero(air.any(axis=(1, 2)))[0]
        assert slices.size and slices.min() <= 3, index      # in the lowest slices
        assert slices.max() < 11, index                       # absent in the top third
        rows = np.nonzero(air)[1]
        body_rows = np.nonzero(s.mask)[1]
        assert rows.mean() < body_rows.mean() - 10, index     # anterior (row 0 is anterior)


def test_ventricles_fill_the_centre_of_the_middle_slices():
    for index in range(4):
        s = make_subject(index, image_size=128, num_slices=16)
        # CSF wider than 3 px (5.6 mm): not the thin sulci, fissure or CSF around the brain.
        wide_csf = ndimage.binary_opening(s.labels == TISSUES["csf"], np.ones((1, 3, 3), bool))
        rows, cols = np.nonzero(s.mask[8])
        yy, xx = np.mgrid[:128, :128]
        central = np.hypot(yy - rows.mean(), xx - cols.mean()) * s.spacing[1] < 25.0  # mm
        per_slice = (wide_csf & central).sum(axis=(1, 2))
        assert per_slice[6:11].max() > 40, (index, per_slice)   # lateral ventricles mid-head


def test_lesion_in_some_but_not_all_subjects():
    has_lesion = []
    for index in range(10):
        s = make_subject(index, image_size=96, num_slices=32)
        lesion = s.labels == TISSUES["lesion"]
        has_lesion.append(bool(lesion.any()))
        if lesion.any():   # inside the brain: surrounded by brain tissue, never by air or skin
            ring = ndimage.binary_dilation(lesion) & ~lesion
            around = set(np.unique(s.labels[ring]))
            assert around <= {TISSUES[n] for n in ("grey_matter", "white_matter", "csf")}, index
    assert 1 <= sum(has_lesion) <= 9, has_lesion
    assert has_lesion[LESION_SUBJECT]


@pytest.mark.parametrize("num_subjects", [3, 4, 10, 11, 40, 100])
def test_split_is_by_subject_and_covers_every_index_once(num_subjects):
    splits = [subject_split(i, num_subjects) for i in range(num_subjects)]
    assert set(splits) == {"train", "validation", "test"}
    # contiguous blocks: train first, then validation, then the last subjects for test
    assert splits == sorted(splits, key=["train", "validation", "test"].index)
    assert splits.count("test") == splits.count("validation") == max(1, (num_subjects + 5) // 10)


def test_split_counts_for_the_default_dataset_and_tiny_ones():
    assert [subject_split(i, 40) for i in range(40)].count("train") == 32
    assert [subject_split(i, 40) for i in (35, 36, 39)] == ["validation", "test", "test"]
    assert [subject_split(i, 2) for i in range(2)] == ["train", "test"]
    assert subject_split(0, 1) == "train"


def test_bad_arguments_raise():
    with pytest.raises(CtmriInputError, match="index"):
        subject_split(5, 5)
    with pytest.raises(CtmriInputError, match="num_subjects"):
        subject_split(0, 0)
    with pytest.raises(CtmriInputError, match="index must be an integer >= 0"):
        make_subject(-1)
    with pytest.raises(CtmriInputError, match="image_size"):
        make_subject(0, image_size=8)
    with pytest.raises(CtmriInputError, match="num_slices"):
        make_subject(0, num_slices=0)

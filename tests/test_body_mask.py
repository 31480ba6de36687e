"""Automatic body masks on synthetic heads with dark skull/sinus inside, a noise blob and noise."""
import numpy as np
import pytest

from ctmri_tf.body_mask import body_mask
from ctmri_tf.errors import CtmriInputError

SIZE = 64
BLOB = (slice(1, 3), slice(3, 9), slice(52, 58))  # slices 1-2, a 6 x 6 blob in the corner


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def synthetic_head(modality, slices=4, seed=0):
    """Ellipse heads (shrinking towards the top slice) with a dark ring (skull in MRI) and a dark
    hole (sinus air), a separate bright blob and background noise. Returns image and regions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    head, ring, hole = (np.zeros((slices, SIZE, SIZE), bool) for _ in range(3))
    for k in range(slices):
        f = 1.0 - 0.06 * k
        rho = np.sqrt(((yy - 33) / (24 * f)) ** 2 + ((xx - 29) / (19 * f)) ** 2)
        head[k] = rho <= 1.0
        ring[k] = (rho > 0.78) & (rho <= 0.86)
        hole[k] = ((yy - 22) / 4.0) ** 2 + ((xx - 29) / 5.0) ** 2 <= 1.0
    blob = np.zeros_like(head)
    blob[BLOB] = True
    if modality == "ct":
        image = np.full(head.shape, -1000.0, np.float32)
        image[head] = 40.0
        image[head & (np.sqrt(((yy - 33) / 24) ** 2 + ((xx - 29) / 19) ** 2) > 0.9)] = -100.0
        image[ring] = -900.0   # below the -500 HU threshold, enclosed by soft tissue
        image[hole] = -1000.0  # sinus air
        image[blob] = 300.0
        image += rng.normal(0.0, 20.0, image.shape).astype(np.float32)
    else:
        image = np.zeros(head.shape, np.float32)
        image[head] = 300.0     # brain
        rho0 = np.sqrt(((yy - 33) / 24) ** 2 + ((xx - 29) / 19) ** 2)
        image[head & (rho0 > 0.88)] = 650.0  # bright scalp fat
        image[ring] = 8.0       # cortical bone: no signal
        image[hole] = 0.0       # sinus air
        image[blob] = 500.0
        sigma = 10.0            # Rician noise: magnitude of complex Gaussian noise
        image = np.hypot(image + rng.normal(0, sigma, image.shape),
                         rng.normal(0, sigma, image.shape)).astype(np.float32)
    return image, head, ring, hole, blob


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_body_mask_is_the_head_with_holes_filled_and_blob_removed(modality):
    image, head, ring, hole, blob = synthetic_head(modality)
    original = image.copy()
    mask = body_mask(image, modality)
    assert mask.dtype == np.uint8 and mask.shape == image.shape
    assert set(np.unique(mask)) == {0, 1}
    assert dice(mask, head) > 0.98
    assert mask[ring].all(), "dark skull ring must stay inside the body"
    assert mask[hole].all(), "sinus air must stay inside the body"
    assert not mask[blob].any(), "the separate blob must be removed"
    assert mask[~head].sum() < 0.01 * head.sum(), "almost nothing outside the head"
    np.testing.assert_array_equal(image, original)  # input untouched


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_single_slice_gives_a_2d_mask(modality):
    image, head, ring, hole, blob = synthetic_head(modality, seed=3)
    mask = body_mask(image[1], modality)
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
    assert dice(mask, head[1]) > 0.98
    assert mask[hole[1]].all() and mask[ring[1]].all() and not mask[blob[1]].any()


def test_mri_mask_does_not_depend_on_scanner_units():
    image = synthetic_head("mri", seed=5)[0]
    np.testing.assert_array_equal(body_mask(image, "mri"), body_mask(image * 37.5, "mri"))
    np.testing.assert_array_equal(body_mask(image, "mri"), body_mask(image / 1000.0, "mri"))


def test_ct_threshold_is_minus_500_hu():
    image = np.full((32, 32), -1000.0, np.float32)
    image[8:24, 8:24] = -490.0   # just above the threshold: body
    assert body_mask(image, "ct")[8:24, 8:24].all()
    image[8:24, 8:24] = -510.0   # lung-like: not body
    with pytest.raises(CtmriInputError):
        body_mask(image, "ct")


def test_all_air_raises_a_clear_error():
    rng = np.random.default_rng(0)
    air = (-1000.0 + rng.normal(0, 20, (3, 32, 32))).astype(np.float32)
    with pytest.raises(CtmriInputError,
                       match=r"no body found in the CT image \(no voxel above -500"):
        body_mask(air, "ct")
    with pytest.raises(CtmriInputError, match="no body found: the MRI signal is zero"):
        body_mask(np.zeros((3, 32, 32), np.float32), "mri")


def test_bad_shape_and_modality_raise():
    with pytest.raises(CtmriInputError, match="2-D slice or a 3-D volume"):
        body_mask(np.zeros(10), "ct")
    with pytest.raises(CtmriInputError, match="unknown modality 'pet'"):
        body_mask(np.zeros((8, 8)), "pet")


def test_body_mask_matches_the_phantom_ground_truth():
    from ctmri_tf.phantom import TISSUES, make_subject
    s = make_subject(0, image_size=96, num_slices=12)
    inside = np.isin(s.labels, [TISSUES["sinus_air"], TISSUES["cortical_bone"], TISSUES["csf"]])
    ct_mask = body_mask(s.ct, "ct")
    mri_mask = body_mask(s.mri, "mri")
    assert dice(ct_mask, s.mask) > 0.995
    # MRI: blurred bright scalp fat lifts the first air pixel above the (low) Otsu threshold.
    assert dice(mri_mask, s.mask) > 0.96
    for mask in (ct_mask, mri_mask):
        assert mask[inside].all(), "sinus air, skull and CSF are inside the body"

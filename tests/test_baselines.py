"""Baselines: the identity is exact, histogram matching moves a volume onto the training
distribution of the target modality (inside the body) and never needs the test target."""
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from ctmri_tf import intensity, phantom
from ctmri_tf.baselines import (NUM_BINS, HistogramAccumulator, HistogramMatchingTranslator,
                                baseline_translators, identity_translator, reference_histograms)
from ctmri_tf.errors import CtmriInputError

BIN = 2.0 / NUM_BINS


@pytest.fixture(scope="module")
def phantoms():
    """Two training subjects and one test subject, 32 px x 4 slices, in [-1, 1]."""
    out = []
    for index in range(3):
        s = phantom.make_subject(index, image_size=32, num_slices=4)
        scale = intensity.fit_mri_scale(s.mri, s.mask)
        out.append({"ct": intensity.ct_to_unit(s.ct), "mri": intensity.mri_to_unit(s.mri, scale),
                    "mask": s.mask})
    return out


def test_identity_returns_the_input_exactly_as_a_new_array():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)
    out = identity_translator(x, "mri", "ct")
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, x)
    out[0] = 0.0  # the caller's input is never aliased
    assert not np.array_equal(out, x)
    # read in the target's units: an MRI unit image becomes HU through the CT window
    np.testing.assert_allclose(intensity.unit_to_ct(identity_translator(
        np.array([[-1.0, 0.0, 1.0]], np.float32), "mri", "ct")), [[-1024.0, 988.0, 3000.0]])
    with pytest.raises(CtmriInputError, match="unknown modality"):
        identity_translator(x, "pet", "ct")


def test_reference_quantiles_follow_the_accumulated_distribution():
    rng = np.random.default_rng(1)
    values = rng.normal(-0.2, 0.15, 20000).clip(-1, 1)
    acc = HistogramAccumulator("unit test")
    acc.add(values[:12000], np.ones(12000), "ct")   # accumulated in two parts
    acc.add(values[12000:], np.ones(8000), "ct")
    reference = acc.result()
    assert reference.voxels("ct", "body") == 20000 and reference.voxels("ct", "background") == 0
    q = reference.quantiles("ct", "body", num=4)     # at 1/4, 2/4, 3/4, 1
    np.testing.assert_allclose(q[:3], np.quantile(values, [0.25, 0.5, 0.75]), atol=2 * BIN)
    assert q[3] == pytest.approx(values.max(), abs=BIN)
    assert reference.median("ct", "body") == pytest.approx(np.median(values), abs=2 * BIN)


def test_histogram_matching_by_hand_two_level_reference():
    # reference body: half the voxels at -0.5, half at +0.5; background all at -0.9
    image = np.array([-0.5] * 50 + [0.5] * 50 + [-0.9] * 20)
    mask = np.array([1] * 100 + [0] * 20)
    translator = HistogramMatchingTranslator(reference_histograms([("ct", image, mask)]))
    source = np.array([0.1, 0.2, 0.3, 0.4, -0.3, -0.3], np.float32).reshape(1, 2, 3, 1)
    source_mask = np.array([1, 1, 1, 1, 0, 0]).reshape(1, 2, 3, 1)
    out = translator(source, "mri", "ct", mask=source_mask)
    assert out.shape == source.shape and out.dtype == np.float32
    # the lower half of the body maps onto -0.5, the upper half onto +0.5 (within a bin)
    np.testing.assert_allclose(out.ravel()[:4], [-0.5, -0.5, 0.5, 0.5], atol=BIN)
    # background: the median of the reference background
    np.testing.assert_allclose(out.ravel()[4:], [-0.9, -0.9], atol=BIN)


def test_histogram_matching_moves_the_source_towards_the_training_reference(phantoms):
    train, test = phantoms[:2], phantoms[2]
    reference = reference_histograms([("ct", s["ct"], s["mask"]) for s in train]
                                     + [("mri", s["mri"], s["mask"]) for s in train])
    translator = HistogramMatchingTranslator(reference)
    body = test["mask"] > 0
    source = np.where(body, test["mri"], -1.0)[..., None]
    out = translator(source, "mri", "ct", mask=test["mask"][..., None])[..., 0]
    reference_ct = np.concatenate([s["ct"][s["mask"] > 0] for s in train])
    before = wasserstein_distance(test["mri"][body], reference_ct)
    after = wasserstein_distance(out[body], reference_ct)
    assert after < 0.05 * before
    # a monotonic mapping: brighter MRI voxels never get lower values
    order = np.argsort(test["mri"][body], kind="stable")
    assert np.all(np.diff(out[body][order]) >= -1e-6)
    # the background is CT air from the training data, not the test subject's own CT
    air = np.median(np.concatenate([s["ct"][s["mask"] == 0] for s in train]))
    np.testing.assert_allclose(out[~body], air, atol=2 * BIN)


def test_histogram_matching_never_reads_the_test_target(phantoms):
    """The output depends on the source volume and the training histograms only."""
    train, test = phantoms[:2], phantoms[2]
    reference = reference_histograms([("ct", s["ct"], s["mask"]) for s in train])
    translator = HistogramMatchingTranslator(reference)
    x = test["mri"][..., None]
    first = translator(x, "mri", "ct", mask=test["mask"][..., None])
    test["ct"][...] = 0.0  # whatever the test CT is, the translation does not change
    np.testing.assert_array_equal(first, translator(x, "mri", "ct",
                                                    mask=test["mask"][..., None]))


def test_add_example_maps_physical_units_with_the_slice_range():
    acc = HistogramAccumulator()
    acc.add_example({"image": np.array([[100.0, 300.0], [500.0, 0.0]], np.float32),
                     "mask": np.array([[1, 1], [1, 0]], np.uint8), "modality": np.int64(1),
                     "intensity_range": np.array([100.0, 500.0], np.float32)})
    reference = acc.result()
    # 100 -> -1, 300 -> 0, 500 -> +1 in the body; 0 (clipped to -1) in the background
    np.testing.assert_allclose(reference.quantiles("mri", "body", num=3), [-1.0, 0.0, 1.0],
                               atol=BIN)
    assert reference.median("mri", "background") == pytest.approx(-1.0, abs=BIN)


def test_errors_name_the_problem(phantoms):
    reference = reference_histograms([("ct", phantoms[0]["ct"], phantoms[0]["mask"])])
    translator = HistogramMatchingTranslator(reference)
    x = phantoms[1]["ct"][..., None]
    with pytest.raises(CtmriInputError, match="needs the body mask"):
        translator(x, "ct", "mri")
    with pytest.raises(CtmriInputError, match="no mri voxel in the body"):
        translator(x, "ct", "mri", mask=phantoms[1]["mask"])
    with pytest.raises(CtmriInputError, match="does not match"):
        translator(x, "mri", "ct", mask=np.ones((2, 2)))


def test_baseline_translators_order_and_flags(phantoms):
    reference = reference_histograms([("ct", phantoms[0]["ct"], phantoms[0]["mask"])])
    translators = baseline_translators(reference)
    assert list(translators) == ["identity", "histogram matching"]
    assert translators["identity"].cycle_is_trivial
    assert translators["histogram matching"].whole_volume
    assert list(baseline_translators(None)) == ["identity"]

"""CT windowing and MRI percentile scaling: values, exact round trips, NumPy and TensorFlow."""
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import intensity
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.intensity import (CT_WINDOW_HU, MriScale, ct_to_unit, fit_mri_scale, from_unit,
                                mri_to_unit, to_unit, unit_to_ct, unit_to_mri)

HU = np.array([-1024.0, -1000.0, -100.0, 0.0, 40.0, 988.0, 1500.0, 3000.0], np.float32)
# 2 * (hu + 1024) / 4024 - 1, by hand
HU_UNIT = np.array([-1.0, -0.98807157, -0.54075547, -0.49105368, -0.47117296, 0.0,
                    0.25447316, 1.0], np.float32)


def test_ct_to_unit_values_by_hand():
    out = ct_to_unit(HU)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, HU_UNIT, atol=1e-6)


def test_ct_outside_window_clips_to_edges():
    out = ct_to_unit(np.array([-3000.0, -1025.0, 3001.0, 30000.0]))
    np.testing.assert_array_equal(out, [-1.0, -1.0, 1.0, 1.0])
    back = unit_to_ct(out)
    np.testing.assert_array_equal(back, [-1024.0, -1024.0, 3000.0, 3000.0])
    # A generator output slightly past tanh's range still lands inside the window.
    np.testing.assert_array_equal(unit_to_ct(np.array([-1.5, 1.2])), [-1024.0, 3000.0])


def test_ct_round_trip_is_exact_to_float32_inside_window():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1024.0, 3000.0, size=(4, 16, 16)).astype(np.float32)
    back = unit_to_ct(ct_to_unit(hu))
    # float32 has 24 bits: relative error of a few ulp of the window width (4024 HU).
    np.testing.assert_allclose(back, hu, rtol=0, atol=4024 * 2.0 ** -22)
    # and the other way round
    x = rng.uniform(-1, 1, size=100).astype(np.float32)
    np.testing.assert_allclose(ct_to_unit(unit_to_ct(x)), x, rtol=0, atol=2.0 ** -21)


def test_ct_custom_window():
    out = ct_to_unit(np.array([-200.0, 400.0, 1000.0]), window=(-200.0, 1000.0))
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(unit_to_ct(np.float32(0.5), window=(-200, 1000)), 700.0, atol=1e-4)


def test_integer_input_is_converted_to_float32():
    out = ct_to_unit(np.array([[-1024, 988]], dtype=np.int16))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-1.0, 0.0]], atol=1e-7)


def test_ct_tensor_in_tensor_out():
    out = ct_to_unit(tf.constant(HU))
    assert tf.is_tensor(out) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), HU_UNIT, atol=1e-6)
    back = unit_to_ct(out)
    assert tf.is_tensor(back)
    np.testing.assert_allclose(back.numpy(), HU, atol=4024 * 2.0 ** -22)


def test_to_unit_inside_tf_function_with_tensor_range():
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([2], tf.float32)])
    def both(image, intensity_range):
        x = to_unit(image, "mri", intensity_range)
        return x, from_unit(x, "mri", intensity_range)

    signal = np.array([[0.0, 50.0, 100.0], [250.0, 450.0, 900.0]], np.float32)
    x, back = both(tf.constant(signal), tf.constant([50.0, 450.0]))
    # 2 * (clip(s, 50, 450) - 50) / 400 - 1
    np.testing.assert_allclose(x.numpy(), [[-1.0, -1.0, -0.75], [0.0, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(back.numpy(), [[50.0, 50.0, 100.0], [250.0, 450.0, 450.0]],
                               atol=1e-4)


def test_ct_inside_tf_function_default_window():
    fn = tf.function(lambda t: from_unit(to_unit(t, "ct", None), "ct", None))
    np.testing.assert_allclose(fn(tf.constant(HU)).numpy(), HU, atol=4024 * 2.0 ** -22)


def test_tensor_range_with_numpy_image_uses_tensorflow():
    out = ct_to_unit(np.array([0.0, 1000.0], np.float32), window=tf.constant([0.0, 1000.0]))
    assert tf.is_tensor(out)
    np.testing.assert_allclose(out.numpy(), [-1.0, 1.0])


def test_one_range_per_image_of_a_batch():
    images = np.stack([np.full((2, 2, 1), 100.0), np.full((2, 2, 1), 100.0)]).astype(np.float32)
    ranges = np.array([[0.0, 200.0], [100.0, 300.0]], np.float32)
    out = to_unit(images, "mri", ranges)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-7)
    np.testing.assert_allclose(out[1], -1.0, atol=1e-7)
    out_tf = to_unit(tf.constant(images), "mri", tf.constant(ranges))
    np.testing.assert_allclose(out_tf.numpy(), out, atol=1e-7)
    np.testing.assert_allclose(from_unit(out, "mri", ranges), images, atol=1e-4)


def test_fit_mri_scale_matches_numpy_percentiles_and_round_trips():
    rng = np.random.default_rng(1)
    volume = rng.gamma(2.0, 100.0, size=(3, 20, 20)).astype(np.float32)
    scale = fit_mri_scale(volume)
    low, high = np.percentile(volume, intensity.MRI_PERCENTILES)
    assert isinstance(scale, MriScale)
    assert scale.low == pytest.approx(low, rel=1e-6) and scale.high == pytest.approx(high, rel=1e-6)
    x = mri_to_unit(volume, scale)
    assert x.min() == -1.0 and x.max() == 1.0
    inside = (volume >= scale.low) & (volume <= scale.high)
    assert inside.mean() > 0.98
    back = unit_to_mri(x, scale)
    np.testing.assert_allclose(back[inside], volume[inside], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(back[volume > scale.high], scale.high, rtol=1e-6)
    # (low, high) tuple works like the MriScale
    np.testing.assert_array_equal(mri_to_unit(volume, scale.as_tuple()), x)


def test_fit_mri_scale_by_hand_and_inside_mask():
    volume = np.arange(101, dtype=np.float32)  # percentile p of 0..100 is p
    scale = fit_mri_scale(volume, percentiles=(10, 90))
    assert (scale.low, scale.high) == pytest.approx((10.0, 90.0))
    mask = volume >= 50  # only 50..100 count: percentile p is 50 + p / 2
    scale = fit_mri_scale(volume, mask=mask, percentiles=(10, 90))
    assert (scale.low, scale.high) == pytest.approx((55.0, 95.0))


def test_fit_mri_scale_tensor_matches_numpy_also_in_graph_mode():
    rng = np.random.default_rng(2)
    volume = rng.gamma(2.0, 50.0, size=(2, 16, 16)).astype(np.float32)
    mask = (rng.random(volume.shape) > 0.3).astype(np.uint8)
    expected = fit_mri_scale(volume, mask)
    eager = fit_mri_scale(tf.constant(volume), tf.constant(mask))
    assert tf.is_tensor(eager.low)
    assert float(eager.low) == pytest.approx(expected.low, rel=1e-5)
    assert float(eager.high) == pytest.approx(expected.high, rel=1e-5)

    @tf.function
    def normalise(v, m):
        return mri_to_unit(v, fit_mri_scale(v, m))

    np.testing.assert_allclose(normalise(tf.constant(volume), tf.constant(mask)).numpy(),
                               mri_to_unit(volume, expected), atol=1e-5)


def test_mostly_zero_volume_falls_back_to_min_max():
    volume = np.zeros((10, 100), np.float32)
    volume[0, :3] = [10.0, 20.0, 30.0]  # 0.3 % nonzero: the 99.5 % percentile is still 0
    scale = fit_mri_scale(volume)
    assert (scale.low, scale.high) == (0.0, 30.0)
    tf_scale = fit_mri_scale(tf.constant(volume))
    assert (float(tf_scale.low), float(tf_scale.high)) == (0.0, 30.0)


@pytest.mark.parametrize("volume", [np.zeros((2, 8, 8)), np.full((2, 8, 8), 7.5),
                                    np.full((4, 4), np.nan)])
def test_degenerate_mri_volume_raises(volume):
    with pytest.raises(CtmriInputError, match="constant|no finite"):
        fit_mri_scale(volume.astype(np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError):
        fit_mri_scale(tf.constant(volume, tf.float32))


def test_empty_or_mismatched_mask_raises():
    volume = np.ones((4, 4), np.float32)
    with pytest.raises(CtmriInputError, match="mask is empty"):
        fit_mri_scale(volume, mask=np.zeros((4, 4)))
    with pytest.raises(CtmriInputError, match="does not match"):
        fit_mri_scale(volume, mask=np.ones((4, 5)))


def test_bad_ranges_and_modalities_raise():
    with pytest.raises(CtmriInputError, match="unknown modality 'pet'"):
        to_unit(np.zeros(3), "pet", (0, 1))
    with pytest.raises(CtmriInputError, match="unknown modality"):
        from_unit(np.zeros(3), "MR", (0, 1))
    with pytest.raises(CtmriInputError, match="low .* must be below high"):
        mri_to_unit(np.zeros(3), MriScale(5.0, 5.0))
    with pytest.raises(CtmriInputError, match="low .* must be below high"):
        ct_to_unit(tf.zeros(3), window=(100.0, -100.0))
    with pytest.raises(CtmriInputError, match="MRI scale is missing"):
        to_unit(np.zeros(3), "mri", None)
    with pytest.raises(tf.errors.InvalidArgumentError):
        to_unit(tf.zeros(3), "mri", tf.constant([3.0, 3.0]))


def test_percentile_to_unit_by_hand_and_per_image():
    ramp = np.arange(101, dtype=np.float32).reshape(1, 101)   # percentile p of 0..100 is p
    unit = intensity.percentile_to_unit(ramp, percentiles=(10, 90))
    # 10 -> -1, 50 -> 0, 90 -> +1, clipped outside; (x - 10) / 80 * 2 - 1 in between
    np.testing.assert_allclose(unit[0, [0, 10, 30, 50, 90, 100]],
                               [-1.0, -1.0, -0.5, 0.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(intensity.image_percentile_range(ramp, (10, 90)), [10.0, 90.0])
    # a batch: each image by its own percentiles, so HU and a rescaled MR signal of the same
    # anatomy come out alike, and both span exactly [-1, 1] (no modality in the value range)
    rng = np.random.default_rng(5)
    ct = rng.uniform(-1000.0, 1800.0, (16, 16)).astype(np.float32)
    mri = (ct + 1000.0) * 0.37 + 12.0                           # positive linear rescaling
    batch = np.stack([ct, mri])[..., None]                       # (2, 16, 16, 1)
    out = intensity.percentile_to_unit(batch)
    assert out.shape == batch.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    assert out.min() == -1.0 and out.max() == 1.0
    low, high = np.percentile(ct, intensity.MRI_PERCENTILES)
    np.testing.assert_allclose(out[0, ..., 0], mri_to_unit(ct, (low, high)), atol=1e-6)


def test_percentile_to_unit_tensor_matches_numpy_also_in_graph_mode():
    rng = np.random.default_rng(6)
    batch = rng.gamma(2.0, 300.0, size=(3, 12, 20, 1)).astype(np.float32)
    batch[1] = 250.0                                             # a blank slice
    batch[2, 0, :5] = np.nan                                     # non-finite pixels are ignored
    expected = intensity.percentile_to_unit(batch)
    graph = tf.function(intensity.percentile_to_unit,
                        input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)])
    for result in (intensity.percentile_to_unit(tf.constant(batch)), graph(batch)):
        assert tf.is_tensor(result)
        np.testing.assert_allclose(result.numpy()[np.isfinite(batch)],
                                   expected[np.isfinite(batch)], atol=1e-5)
    np.testing.assert_array_equal(expected[1], -1.0)              # blank maps to -1, no error
    one = intensity.percentile_to_unit(tf.constant(batch[0, ..., 0]))   # a single (H, W) image
    np.testing.assert_allclose(one.numpy(), expected[0, ..., 0], atol=1e-5)


@pytest.mark.parametrize("image, expected", [
    (np.full((4, 4), 7.5), [7.5, 15.0]),               # constant: maps to -1
    (np.full((4, 4), 0.0), [0.0, 1.0]),                # a blank slice
    (np.full((4, 4), -3e9), [-3e9, 0.0]),              # -3e9 + 1 would round to -3e9
    (np.full((4, 4), np.nan), [0.0, 1.0]),             # nothing finite
])
def test_image_percentile_range_never_fails(image, expected):
    image = image.astype(np.float32)
    np.testing.assert_allclose(intensity.image_percentile_range(image), expected)
    np.testing.assert_allclose(intensity.image_percentile_range(tf.constant(image)).numpy(),
                               expected)


def test_ct_dispatch_equals_ct_functions():
    np.testing.assert_array_equal(to_unit(HU, "ct", CT_WINDOW_HU), ct_to_unit(HU))
    np.testing.assert_array_equal(to_unit(HU, b"ct"), ct_to_unit(HU))
    np.testing.assert_array_equal(from_unit(HU_UNIT, "ct"), unit_to_ct(HU_UNIT))


def test_numpy_use_does_not_import_tensorflow():
    import subprocess
    import sys
    code = ("import sys, numpy as np; from ctmri_tf.intensity import ct_to_unit; "
            "ct_to_unit(np.zeros(2)); assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

"""Metrics against values computed by hand in NumPy (MAE, PSNR, SSIM, masks, segmentation)."""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy.signal import correlate2d

from ctmri_tf.errors import CtmriInputError
from ctmri_tf.metrics import (CT_RANGE_HU, image_metrics, mae, mri_to_unit_interval, psnr,
                              segmentation_metrics, ssim, ssim_map, summarize, through_plane_mae)


def _gaussian_window(size=11, sigma=1.5):
    coords = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _numpy_ssim_map(x, y, data_range):
    """Wang et al. 2004 SSIM map of one slice in float64: 11x11 Gaussian, 'valid' filtering."""
    w = _gaussian_window()
    f = lambda a: correlate2d(a, w, mode="valid")  # noqa: E731
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))


def _ct_pair(seed=0, shape=(2, 24, 28)):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(-1024, 2000, shape)
    ref[:, 8:16, 8:20] = 40.0  # a flat soft-tissue block
    pred = ref + rng.normal(0, 60, shape)
    return pred.astype(np.float32), ref.astype(np.float32)


# ----------------------------------------------------------------------------- MAE and PSNR

def test_mae_by_hand_whole_and_masked():
    ref = np.array([[0.0, 100.0], [-1000.0, 50.0]])
    pred = np.array([[10.0, 70.0], [-1024.0, 50.0]])
    assert mae(pred, ref) == pytest.approx((10 + 30 + 24 + 0) / 4)
    mask = np.array([[1, 1], [0, 0]])
    assert mae(pred, ref, mask) == pytest.approx((10 + 30) / 2)


def test_values_outside_the_range_are_clipped_when_a_range_is_given():
    ref = np.zeros((12, 12))
    pred = np.full((12, 12), 5000.0)  # above the 3000 HU top of the range
    assert mae(pred, ref) == pytest.approx(5000.0)
    assert mae(pred, ref, value_range=CT_RANGE_HU) == pytest.approx(3000.0)
    # noise below -1024 HU that no model output can represent does not count
    assert mae(np.full((3, 3), -1024.0), np.full((3, 3), -1047.0), value_range=CT_RANGE_HU) == 0
    # clipped to 3000: MSE = 3000^2
    assert psnr(pred, ref, CT_RANGE_HU) == pytest.approx(10 * math.log10(4024.0 ** 2 / 3000.0 ** 2),
                                                         abs=1e-4)


def test_psnr_from_the_mse_formula():
    pred, ref = _ct_pair()
    clip = lambda v: np.clip(v.astype(np.float64), -1024, 3000)  # noqa: E731
    mse = np.mean((clip(pred) - clip(ref)) ** 2)
    assert psnr(pred, ref, CT_RANGE_HU) == pytest.approx(10 * np.log10(4024.0 ** 2 / mse), abs=1e-3)


def test_masked_psnr_uses_the_mse_inside_the_mask():
    pred, ref = _ct_pair(1)
    mask = np.zeros(ref.shape, np.uint8)
    mask[:, 4:20, 6:22] = 1
    pred[mask == 0] += 900.0  # errors outside the body must not count
    body = mask.astype(bool)
    mse = np.mean((np.clip(pred[body], -1024, 3000).astype(np.float64)
                   - np.clip(ref[body], -1024, 3000)) ** 2)
    assert psnr(pred, ref, CT_RANGE_HU, mask) == pytest.approx(
        10 * np.log10(4024.0 ** 2 / mse), abs=1e-3)
    assert psnr(pred, ref, CT_RANGE_HU) < psnr(pred, ref, CT_RANGE_HU, mask) - 3.0


def test_psnr_of_identical_images_is_inf():
    _, ref = _ct_pair()
    assert psnr(ref, ref, CT_RANGE_HU) == math.inf
    # identical after clipping to the range counts as identical
    assert psnr(np.full((4, 4), 3500.0), np.full((4, 4), 3000.0), CT_RANGE_HU) == math.inf


def test_mri_unit_psnr_by_hand():
    ref = np.full((12, 12), 0.5)
    pred = ref + 0.1
    assert psnr(pred, ref, (0.0, 1.0)) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)


def test_mri_to_unit_interval():
    out = mri_to_unit_interval(np.array([10.0, 60.0, 110.0, 210.0]), (10.0, 210.0))
    np.testing.assert_allclose(out, [0.0, 0.25, 0.5, 1.0])
    assert mri_to_unit_interval(np.array([260.0]), (10.0, 210.0))[0] == pytest.approx(1.25)


# ----------------------------------------------------------------------------- SSIM

def test_ssim_map_mean_equals_tf_image_ssim():
    pred, ref = _ct_pair(2, shape=(3, 32, 32))
    shifted = lambda v: np.clip(v, -1024, 3000) + 1024.0  # noqa: E731
    index_map = ssim_map(shifted(pred), shifted(ref), 4024.0)
    assert index_map.shape == (3, 22, 22)
    per_slice = tf.image.ssim(tf.constant(shifted(pred)[..., None]),
                              tf.constant(shifted(ref)[..., None]), max_val=4024.0).numpy()
    np.testing.assert_allclose(index_map.mean(axis=(1, 2)), per_slice, atol=1e-5)
    assert ssim(pred, ref, CT_RANGE_HU) == pytest.approx(per_slice.mean(), abs=1e-5)


def test_ssim_map_matches_the_numpy_definition():
    pred, ref = _ct_pair(3, shape=(1, 30, 26))
    x, y = np.clip(pred[0], -1024, 3000) + 1024.0, np.clip(ref[0], -1024, 3000) + 1024.0
    expected = _numpy_ssim_map(x.astype(np.float64), y.astype(np.float64), 4024.0)
    np.testing.assert_allclose(ssim_map(x, y, 4024.0)[0], expected, atol=2e-4)


def test_ssim_of_identical_images_is_one():
    _, ref = _ct_pair(4)
    assert ssim(ref, ref, CT_RANGE_HU) == pytest.approx(1.0, abs=1e-6)
    mask = np.zeros(ref.shape, np.uint8)
    mask[:, 6:18, 6:22] = 1
    assert ssim(ref, ref, CT_RANGE_HU, mask) == pytest.approx(1.0, abs=1e-6)


def test_ssim_of_a_constant_shift_is_the_luminance_term():
    # constant images a and a + d: variances and covariance vanish, so SSIM = luminance term
    a, d, r = 500.0, 300.0, 4024.0
    ref = np.full((16, 16), a - 1024.0)   # in HU; shifted by +1024 inside the metric
    pred = ref + d
    c1 = (0.01 * r) ** 2
    expected = (2 * a * (a + d) + c1) / (a ** 2 + (a + d) ** 2 + c1)
    # tf.image.ssim works in float32: E[x^2] - E[x]^2 of flat 800-ish values cancels to a few
    # units against C2 = (0.03 * 4024)^2, hence ~3e-5 of rounding.
    assert ssim(pred, ref, CT_RANGE_HU) == pytest.approx(expected, abs=1e-4)


def test_ssim_of_a_shifted_textured_image_follows_the_local_means():
    # y = x + d: covariances are equal, so the map is the luminance term of the local means
    rng = np.random.default_rng(5)
    x = rng.uniform(0.2, 0.6, (20, 20))
    d = 0.15
    mu = correlate2d(x, _gaussian_window(), mode="valid")
    c1 = 0.01 ** 2
    expected = ((2 * mu * (mu + d) + c1) / (mu ** 2 + (mu + d) ** 2 + c1)).mean()
    assert ssim(x + d, x, (0.0, 1.0)) == pytest.approx(expected, abs=1e-4)


def test_masked_ssim_sets_outside_to_minimum_and_averages_centres_in_mask():
    pred, ref = _ct_pair(6, shape=(2, 30, 30))
    mask = np.zeros(ref.shape, np.uint8)
    mask[0, 3:25, 8:28] = 1
    mask[1, 10:20, 10:20] = 1
    x = np.where(mask > 0, np.clip(pred, -1024, 3000) + 1024.0, 0.0)
    y = np.where(mask > 0, np.clip(ref, -1024, 3000) + 1024.0, 0.0)
    maps = [_numpy_ssim_map(x[s], y[s], 4024.0) for s in range(2)]
    centres = mask[:, 5:-5, 5:-5].astype(bool)
    expected = np.concatenate([maps[s][centres[s]] for s in range(2)]).mean()
    assert ssim(pred, ref, CT_RANGE_HU, mask) == pytest.approx(expected, abs=2e-4)


def test_masked_ssim_ignores_differences_outside_the_mask():
    _, ref = _ct_pair(7)
    mask = np.zeros(ref.shape, np.uint8)
    mask[:, 6:18, 6:22] = 1
    other = np.random.default_rng(70).uniform(-1024, 2000, ref.shape)
    pred = np.where(mask > 0, ref, other)  # unrelated texture outside the body
    assert ssim(pred, ref, CT_RANGE_HU, mask) == pytest.approx(1.0, abs=1e-6)
    assert ssim(pred, ref, CT_RANGE_HU) < 0.8
    # an all-body mask gives the whole-image value
    ones = np.ones(ref.shape, np.uint8)
    pred2, _ = _ct_pair(8)
    assert ssim(pred2, ref, CT_RANGE_HU, ones) == pytest.approx(ssim(pred2, ref, CT_RANGE_HU),
                                                                abs=1e-6)


def test_image_metrics_regions_and_units():
    pred, ref = _ct_pair(9)
    mask = np.zeros(ref.shape, np.uint8)
    mask[:, 6:18, 6:22] = 1
    out = image_metrics(pred, ref, mask, CT_RANGE_HU)
    assert set(out) == {"image", "body"}
    error = np.abs(np.clip(pred, -1024, 3000) - np.clip(ref, -1024, 3000))
    assert out["body"]["mae"] == pytest.approx(error[mask > 0].mean(), rel=1e-6)
    assert out["image"]["mae"] == pytest.approx(error.mean(), rel=1e-6)
    assert out["image"]["ssim"] == pytest.approx(ssim(pred, ref, CT_RANGE_HU), abs=1e-9)


def test_bad_inputs_are_reported():
    with pytest.raises(CtmriInputError, match="does not match"):
        mae(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(CtmriInputError, match="empty"):
        mae(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(CtmriInputError, match="at least 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), CT_RANGE_HU)
    mask = np.zeros((16, 16))
    mask[0:3, :] = 1  # only near the edge: no SSIM window centre inside
    with pytest.raises(CtmriInputError, match="slice edges"):
        ssim(np.zeros((16, 16)), np.zeros((16, 16)), CT_RANGE_HU, mask)
    with pytest.raises(CtmriInputError, match="NaN"):
        psnr(np.full((4, 4), np.nan), np.zeros((4, 4)), CT_RANGE_HU)


# ----------------------------------------------------------------------------- aggregation

def test_summarize_mean_and_sample_std():
    out = summarize([1.0, 2.0, 4.0])
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(7 / 3)
    assert out["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                  + (4 - 7 / 3) ** 2) / 2))
    assert math.isnan(summarize([3.0])["std"])
    inf = summarize([30.0, math.inf])
    assert inf["mean"] == math.inf and math.isnan(inf["std"])


# ----------------------------------------------------------------------------- segmentation

def test_segmentation_metrics_by_hand():
    true = np.array([[0, 0, 1, 1],
                     [0, 1, 1, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 0]])
    # body: TP = 3, FP = 1, FN = 2 -> IoU 3/6, Dice 6/9
    # background: TP = 2, FP = 2, FN = 1 -> IoU 2/5
    out = segmentation_metrics(pred, true)
    assert out["iou_per_class"] == pytest.approx([2 / 5, 3 / 6])
    assert out["mean_iou"] == pytest.approx((2 / 5 + 3 / 6) / 2)
    assert out["dice"] == pytest.approx(6 / 9)


def test_segmentation_metrics_perfect_and_batched_float_masks():
    true = np.zeros((2, 8, 8, 1), np.float32)
    true[:, 2:6, 2:6] = 1.0
    out = segmentation_metrics(true.copy(), true)
    assert out["mean_iou"] == 1.0 and out["dice"] == 1.0
    with pytest.raises(CtmriInputError, match="outside"):
        segmentation_metrics(true * 2, true)
    with pytest.raises(CtmriInputError, match="shape"):
        segmentation_metrics(true[0], true)


def test_segmentation_all_background_has_no_body_class_in_mean():
    zeros = np.zeros((6, 6), np.uint8)
    out = segmentation_metrics(zeros, zeros)
    assert out["mean_iou"] == 1.0 and out["dice"] == 1.0
    assert math.isnan(out["iou_per_class"][1])



# ----------------------------------------------------------------------------- through-plane

def test_through_plane_mae_by_hand_on_three_slices():
    """Reference slices 0, 100, 300 HU (2 x 2 px); a prediction off by independent per-slice
    offsets 10, -20, 5 HU: the differences are off by -30 and +25 HU, so the through-plane MAE
    is (30 + 25) / 2 = 27.5 HU/slice, while a constant offset on every slice scores 0."""
    ref = np.stack([np.full((2, 2), v) for v in (0.0, 100.0, 300.0)])
    ref[1, 0, 0] = 150.0                                  # not flat: pairs differ per voxel
    offsets = np.array([10.0, -20.0, 5.0])[:, None, None]
    pred = ref + offsets
    assert through_plane_mae(ref.copy(), ref) == 0.0                      # perfect
    assert through_plane_mae(ref + 40.0, ref) == 0.0                      # no flicker
    assert through_plane_mae(pred, ref) == pytest.approx((30 + 25) / 2)
    assert mae(pred, ref) == pytest.approx((10 + 20 + 5) / 3)             # what MAE sees

    # a body mask: a voxel pair counts only when both voxels are in the body
    mask = np.ones(ref.shape, np.uint8)
    mask[2, :, 1] = 0            # pair (1, 2) keeps 2 of its 4 voxels, pair (0, 1) all 4
    assert through_plane_mae(pred, ref, mask) == pytest.approx((4 * 30 + 2 * 25) / 6)
    # per-voxel errors, by hand: flicker only at voxel (0, 0) of slice 1
    flicker = ref.copy()
    flicker[1, 0, 0] += 8.0      # d01 off by +8 there, d12 off by -8: 16 HU over 8 pairs
    assert through_plane_mae(flicker, ref) == pytest.approx(16 / 8)


def test_through_plane_mae_compares_only_consecutive_slice_indices():
    ref = np.zeros((3, 2, 2))
    pred = ref + np.array([10.0, -20.0, 5.0])[:, None, None]
    # slices 0, 1 and 3 of a volume: only the pair (0, 1) is consecutive
    assert through_plane_mae(pred, ref, slice_indices=[0, 1, 3]) == pytest.approx(30.0)
    assert through_plane_mae(pred, ref, slice_indices=[4, 6, 7]) == pytest.approx(25.0)
    assert math.isnan(through_plane_mae(pred, ref, slice_indices=[0, 2, 4]))
    assert math.isnan(through_plane_mae(pred[:1], ref[:1]))               # one slice
    no_common_body = np.zeros(ref.shape, np.uint8)
    no_common_body[0] = no_common_body[2] = 1
    assert math.isnan(through_plane_mae(pred, ref, no_common_body))
    # clipped to the range first, as MAE: -1100 and -1030 HU are both -1024
    low = np.full((2, 1, 1), -1024.0)
    assert through_plane_mae(np.array([-1100.0, -1030.0])[:, None, None], low,
                             value_range=CT_RANGE_HU) == 0.0
    with pytest.raises(CtmriInputError, match="slice_indices must be 3 increasing integers"):
        through_plane_mae(pred, ref, slice_indices=[0, 2, 1])
    with pytest.raises(CtmriInputError, match="slice_indices must be 3"):
        through_plane_mae(pred, ref, slice_indices=[0, 1])

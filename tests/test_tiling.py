"""``ctmri_tf.tiling``: resampling to the model's pixel spacing, padding / overlapping tiles,
blending and the way back onto the input grid (NumPy only, fake models)."""
import numpy as np
import pytest

from ctmri_tf import tiling

TILE = (16, 12)


def recording(function):
    """``function`` as a predict callable that records the shape of every batch it is given."""
    shapes = []

    def predict(batch):
        shapes.append(batch.shape)
        return function(batch)
    predict.shapes = shapes
    return predict


def blob(shape, spacing, sigma_mm=20.0):
    """A smooth image: a Gaussian blob in [-1, 1] of ``sigma_mm`` around the centre, plus a
    gentle ramp (so that a shifted grid would show)."""
    rows, cols = shape
    y = (np.arange(rows) + 0.5 - rows / 2) * spacing[0]
    x = (np.arange(cols) + 0.5 - cols / 2) * spacing[1]
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return np.exp(-(yy ** 2 + (xx - 5.0) ** 2) / (2 * sigma_mm ** 2)) * 1.5 - 0.8 + 0.002 * yy


@pytest.mark.parametrize("size", [(5, 7), (16, 12), (17, 13), (16, 40), (47, 31), (100, 12)])
def test_tiled_identity_and_constant_models_equal_the_untiled_result(size):
    rng = np.random.default_rng(sum(size))
    images = rng.uniform(-1, 1, (3, *size, 1))
    identity = recording(lambda batch: batch)
    out = tiling.predict_tiled(images, TILE, identity, batch_size=4)
    assert out.shape == images.shape
    np.testing.assert_allclose(out, images, atol=1e-6, rtol=0)
    assert {shape[1:] for shape in identity.shapes} == {(*TILE, 1)}     # the model's size only
    assert max(shape[0] for shape in identity.shapes) <= 4

    constant = tiling.predict_tiled(images, TILE, lambda b: np.full((*b.shape[:3], 2), 0.3))
    assert constant.shape == (3, *size, 2)
    np.testing.assert_allclose(constant, 0.3, atol=1e-6, rtol=0)

    def pixelwise(batch):
        return np.tanh(2.0 * batch) * 0.5 + 0.1
    np.testing.assert_allclose(tiling.predict_tiled(images, TILE, pixelwise), pixelwise(images),
                               atol=1e-6, rtol=0)


def test_tiles_overlap_by_at_least_the_minimum_and_cover_the_axis():
    for length, tile in [(16, 16), (17, 16), (40, 16), (251, 128), (1000, 128)]:
        starts = tiling.tile_starts(length, tile, 0.25)
        assert starts[0] == 0 and starts[-1] == length - tile
        assert all(b - a <= tile - 0.25 * tile for a, b in zip(starts, starts[1:]))
    assert tiling.tile_starts(251, 128, 0.25) == [0, 62, 123]
    with pytest.raises(ValueError, match="pad it first"):
        tiling.tile_starts(10, 16)
    window = tiling.blend_window(16, 4)
    assert window.min() > 0 and window.max() == 1 and np.allclose(window, window[::-1])


def test_blending_hides_the_seams_of_a_model_that_differs_per_tile():
    """A model whose output is off by a different constant on each tile still gives a smooth
    result: the weights cross-fade between neighbours instead of switching at a seam."""
    calls = iter(range(1000))

    def biased(batch):
        return batch + np.array([0.05 * ((next(calls) % 2) * 2 - 1) for _ in batch]
                                )[:, None, None, None]
    images = np.zeros((1, 16, 60, 1))
    out = tiling.predict_tiled(images, (16, 16), biased, batch_size=1)[0, 8, :, 0]
    assert np.abs(np.diff(out)).max() < 0.1 / 4     # a hard seam would jump by 0.1


def test_resampling_keeps_the_field_of_view_and_goes_back_exactly_at_equal_spacing():
    assert tiling.resampled_size((512, 400), (0.49, 0.49), (1.0, 1.0)) == (251, 196)
    assert tiling.resampled_size((64, 64), (3.75, 3.75), (0.9375, 0.9375)) == (256, 256)
    matrix = tiling.resampling_matrix(10, 0.5, 5, 1.0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    np.testing.assert_array_equal(tiling.resampling_matrix(7, 0.8, 7, 0.8), np.eye(7))
    image = np.random.default_rng(0).normal(size=(2, 9, 11, 1))
    np.testing.assert_array_equal(tiling.resample(image, 0.7, 0.7), image)

    # a linear ramp stays a linear ramp on the new grid (same physical positions)
    ramp = np.arange(40, dtype=float)[None, :, None, None] * np.ones((1, 40, 3, 1))
    half = tiling.resample(ramp, (0.5, 1.0), (1.0, 1.0))        # mm = (i + 0.5) * 0.5
    assert half.shape == (1, 20, 3, 1)
    # output pixel j is centred at (j + 0.5) * 1.0 mm = input index 2 j + 0.5
    np.testing.assert_allclose(half[0, 1:-1, 0, 0], 2 * np.arange(1, 19) + 0.5, atol=1e-9)


def test_a_pixelwise_model_at_twice_the_input_spacing_translates_onto_the_input_grid():
    """A 0.5 mm input of 300 x 260 px (150 x 130 mm) through a model trained at 1.0 mm on
    64 x 48 px tiles: the model sees 1.0 mm tiles only, and the output is on the input grid with
    the model's function applied to the input values (the image is smooth, so the down- and
    up-sampling loses almost nothing)."""
    spacing, model_spacing = (0.5, 0.5), (1.0, 1.0)
    images = blob((300, 260), spacing)[None, ..., None]
    images = np.concatenate([images, -images * 0.5], axis=0)

    def function(x):
        return 0.6 * x - 0.2

    predict = recording(function)
    out = tiling.predict_physical(images, spacing, model_spacing, (64, 48), predict)
    assert out.shape == images.shape
    assert {shape[1:] for shape in predict.shapes} == {(64, 48, 1)}
    np.testing.assert_allclose(out, function(images), atol=2e-3, rtol=0)

    # the same structure at 1.0 mm (what the model was trained on) goes through untouched
    coarse = blob((150, 130), model_spacing)[None, ..., None]
    direct = tiling.predict_physical(coarse, model_spacing, model_spacing, (64, 48), function)
    np.testing.assert_allclose(direct, function(coarse), atol=1e-6, rtol=0)   # float32 model


def test_a_small_input_is_padded_with_the_background_not_stretched():
    """A 2 mm, 20 x 20 px slice (40 mm) and a model of 1 mm x 64 px (64 mm): the model sees
    the slice up-sampled to 40 x 40 px in the middle of a 64 px tile of background."""
    seen = []

    def predict(batch):
        seen.append(batch.copy())
        return batch
    image = blob((20, 20), (2.0, 2.0), sigma_mm=12.0)[None, ..., None]
    out = tiling.predict_physical(image, 2.0, 1.0, (64, 64), predict)
    assert out.shape == image.shape and len(seen) == 1 and seen[0].shape == (1, 64, 64, 1)
    tile = seen[0][0, ..., 0]
    assert np.all(tile[:12] == -1) and np.all(tile[52:] == -1)          # 12 px of padding
    assert np.all(tile[:, :12] == -1) and np.all(tile[:, 52:] == -1)
    assert np.all(tile[12:52, 12:52] > -1)
    np.testing.assert_allclose(out, image, atol=0.05, rtol=0)      # up and down: a slight blur


def test_predict_must_keep_the_tile_shape():
    with pytest.raises(ValueError, match="expected \\(1, 16, 12, channels\\)"):
        tiling.predict_tiled(np.zeros((1, 16, 12, 1)), TILE, lambda b: b[:, :8])

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


@pytest.mark.parametrize("blend", tiling.BLENDS)
@pytest.mark.parametrize("size", [(5, 7), (16, 12), (17, 13), (16, 40), (47, 31), (100, 12)])
def test_tiled_identity_and_constant_models_equal_the_untiled_result(size, blend):
    rng = np.random.default_rng(sum(size))
    images = rng.uniform(-1, 1, (3, *size, 1))
    for overlap in (0.1, 0.25, 0.5, 0.75):
        identity = recording(lambda batch: batch)
        out = tiling.predict_tiled(images, TILE, identity, batch_size=4, blend=blend,
                                   min_overlap=overlap)
        assert out.shape == images.shape
        np.testing.assert_allclose(out, images, atol=1e-6, rtol=0)
        assert {shape[1:] for shape in identity.shapes} == {(*TILE, 1)}   # the model's size only
        assert max(shape[0] for shape in identity.shapes) <= 4

    constant = tiling.predict_tiled(images, TILE, lambda b: np.full((*b.shape[:3], 2), 0.3),
                                    blend=blend)
    assert constant.shape == (3, *size, 2)
    np.testing.assert_allclose(constant, 0.3, atol=1e-6, rtol=0)

    def pixelwise(batch):
        return np.tanh(2.0 * batch) * 0.5 + 0.1
    np.testing.assert_allclose(tiling.predict_tiled(images, TILE, pixelwise, blend=blend),
                               pixelwise(images), atol=1e-6, rtol=0)


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
    assert tiling.DEFAULT_MIN_OVERLAP == 0.5 and tiling.DEFAULT_BLEND == "gaussian"
    assert tiling.tile_starts(64, 16) == [0, 8, 16, 24, 32, 40, 48]       # half-tile steps


@pytest.mark.parametrize("tile", [(16, 12), (17, 9), (1, 5), (64, 64)])
def test_the_gaussian_window_is_nnunets_importance_map(tile):
    """Centred Gaussian, sigma 1/8 of the tile per axis, max 1, symmetric, never 0."""
    window = tiling.gaussian_window(tile)
    assert window.shape == tile
    assert window.max() == 1.0 and window.min() >= tiling.GAUSSIAN_MIN_WEIGHT > 0
    np.testing.assert_array_equal(window, window[::-1, :])
    np.testing.assert_array_equal(window, window[:, ::-1])
    rows, cols = tile
    y, x = np.arange(rows) - (rows - 1) / 2, np.arange(cols) - (cols - 1) / 2
    by_hand = np.exp(-y[:, None] ** 2 / (2 * (rows / 8) ** 2)
                     - x[None] ** 2 / (2 * (cols / 8) ** 2))
    by_hand = np.maximum(by_hand / by_hand.max(), 1e-3)
    np.testing.assert_allclose(window, by_hand, rtol=1e-12, atol=0)
    # it falls from the centre to the border along each axis
    assert np.all(np.diff(window[rows // 2, (cols - 1) // 2 + 1:]) <= 0)
    with pytest.raises(ValueError, match="blend must be one of gaussian, linear"):
        tiling.predict_tiled(np.zeros((1, *tile, 1)), tile, lambda b: b, blend="cosine")


@pytest.mark.parametrize("blend, tile, width", [("linear", 16, 60), ("gaussian", 64, 240)])
def test_blending_hides_the_seams_of_a_model_that_differs_per_tile(blend, tile, width):
    """A model whose output is off by a different constant on each tile still gives a smooth
    result: the weights cross-fade between neighbours instead of switching at a seam. (The
    Gaussian's cross-fade at half-tile steps is about tile / 32 px wide, so it needs real tile
    sizes to be smooth; the ramp's is the overlap.)"""
    calls = iter(range(1000))

    def biased(batch):
        return batch + np.array([0.05 * ((next(calls) % 2) * 2 - 1) for _ in batch]
                                )[:, None, None, None]
    images = np.zeros((1, tile, width, 1))
    out = tiling.predict_tiled(images, (tile, tile), biased, batch_size=1, blend=blend,
                               min_overlap=0.25 if blend == "linear" else 0.5)[0, tile // 2, :, 0]
    assert np.ptp(out) > 0.05                        # the tiles do differ
    assert np.abs(np.diff(out)).max() < 0.1 / 4     # a hard seam would jump by 0.1


# ----------------------------------------------------------------------------- TTA

def lr_gradient(a=0.01, b=0.0):
    """A model that is not mirror-equivariant: it adds ``a`` per column and ``b`` per row of
    its (tile) input to the image."""
    def predict(batch):
        rows, cols = batch.shape[1:3]
        return (batch + a * np.arange(cols)[None, None, :, None]
                + b * np.arange(rows)[None, :, None, None])
    return predict


@pytest.mark.parametrize("tta", ["lr", "lr+ud"])
def test_tta_of_a_mirror_equivariant_model_is_the_plain_prediction_with_zero_std(tta):
    images = np.random.default_rng(1).uniform(-1, 1, (2, 21, 30, 1))

    def pixelwise(batch):
        return np.tanh(2.0 * batch)
    model = recording(pixelwise)
    mean, std = tiling.predict_tiled(images, TILE, model, tta=tta, return_std=True,
                                     batch_size=5)
    np.testing.assert_allclose(mean, pixelwise(images), atol=1e-6, rtol=0)
    np.testing.assert_allclose(std, 0.0, atol=1e-6)
    plain = recording(pixelwise)
    tiling.predict_tiled(images, TILE, plain, batch_size=5)
    passes = len(tiling.tta_passes(tta))
    assert sum(s[0] for s in model.shapes) == passes * sum(s[0] for s in plain.shapes)
    assert max(s[0] for s in model.shapes) <= 5
    without, zero = tiling.predict_tiled(images, TILE, pixelwise, tta=None, return_std=True)
    assert np.all(zero == 0)
    with pytest.raises(ValueError, match="tta must be one of none, lr, lr\\+ud"):
        tiling.predict_tiled(images, TILE, pixelwise, tta="rot90")


def test_tta_of_a_left_right_gradient_by_hand():
    """One 16 x 12 tile (no padding): the plain pass adds ``a j``, the mirrored pass, once
    mirrored back, ``a (11 - j)``: mean ``x + 5.5 a``, std ``a |j - 5.5|``; with up-down too
    and ``b i`` per row, the four passes are a full factorial: std
    ``sqrt(a^2 (j - 5.5)^2 + b^2 (i - 7.5)^2)``."""
    a, b = 0.01, 0.03
    images = np.random.default_rng(2).uniform(-1, 1, (2, *TILE, 1))
    j = np.arange(TILE[1])[None, None, :, None]
    i = np.arange(TILE[0])[None, :, None, None]
    mean, std = tiling.predict_tiled(images, TILE, lr_gradient(a), tta="lr", return_std=True)
    np.testing.assert_allclose(mean, images + 5.5 * a, atol=1e-6, rtol=0)
    np.testing.assert_allclose(std, np.broadcast_to(a * np.abs(j - 5.5), std.shape), atol=1e-6)
    passes = tiling.predict_passes(images, TILE, lr_gradient(a), tta="lr")
    np.testing.assert_allclose(passes[0], images + a * j, atol=1e-6)
    np.testing.assert_allclose(passes[1], images + a * (11 - j), atol=1e-6)

    mean, std = tiling.predict_tiled(images, TILE, lr_gradient(a, b), tta="lr+ud",
                                     return_std=True)
    np.testing.assert_allclose(mean, images + 5.5 * a + 7.5 * b, atol=1e-6, rtol=0)
    np.testing.assert_allclose(std, np.broadcast_to(np.sqrt(a ** 2 * (j - 5.5) ** 2
                                                            + b ** 2 * (i - 7.5) ** 2),
                                                    std.shape), atol=1e-6)
    # a slice smaller than the tile is padded (centred, 2 px each side): the same by hand, in
    # the tile's columns
    small = images[:, :, 2:10]
    mean, std = tiling.predict_tiled(small, TILE, lr_gradient(a), tta="lr", return_std=True)
    np.testing.assert_allclose(mean, small + 5.5 * a, atol=1e-6, rtol=0)
    np.testing.assert_allclose(std[0, 0, :, 0], a * np.abs(np.arange(2, 10) - 5.5), atol=1e-6)


@pytest.mark.parametrize("blend", tiling.BLENDS)
def test_tta_mean_of_a_gradient_model_is_exact_across_tiles(blend):
    """Over many tiles the mirrored mean of a tile-relative gradient is the same constant in
    every tile, so the stitched mean is exactly ``x + 5.5 a`` wherever the tiles fall; the
    std is positive where the model disagrees with its mirror."""
    a = 0.02
    images = np.random.default_rng(3).uniform(-1, 1, (2, 45, 50, 1))
    mean, std = tiling.predict_tiled(images, TILE, lr_gradient(a), tta="lr", blend=blend,
                                     return_std=True)
    np.testing.assert_allclose(mean, images + 5.5 * a, atol=1e-6, rtol=0)
    assert std.shape == images.shape and std.min() >= 0 and std.max() <= 5.5 * a + 1e-9
    assert std.max() > a


def test_predict_physical_returns_the_std_of_the_passes_on_the_input_grid():
    images = blob((40, 30), (1.0, 1.0))[None, ..., None]
    a = 0.01
    mean, std = tiling.predict_physical(images, 1.0, 1.0, (40, 30), lr_gradient(a), tta="lr",
                                        return_std=True)
    np.testing.assert_allclose(mean, images + 14.5 * a, atol=1e-6, rtol=0)
    np.testing.assert_allclose(std[0, 3, :, 0], a * np.abs(np.arange(30) - 14.5), atol=1e-6)
    # at 0.5 mm (80 x 60 px) for a 1 mm model (one 40 x 30 tile): each pass is resampled back
    # (rows of the resampling sum to 1, so the constant shift stays), then the std is taken:
    # |the plain pass - the mean| = |a (j - 14.5)| on the model grid, resampled back
    fine = blob((80, 60), (0.5, 0.5))[None, ..., None]
    mean, std = tiling.predict_physical(fine, 0.5, 1.0, (40, 30), lr_gradient(a), tta="lr",
                                        return_std=True)
    there_and_back = tiling.resample(tiling.resample(fine, 0.5, 1.0), 1.0, 0.5, size=(80, 60))
    np.testing.assert_allclose(mean, there_and_back + 14.5 * a, atol=1e-6, rtol=0)
    ramp = np.broadcast_to(a * (np.arange(30) - 14.5)[None, None, :, None], (1, 40, 30, 1))
    np.testing.assert_allclose(std, np.abs(tiling.resample(ramp, 1.0, 0.5, size=(80, 60))),
                               atol=1e-6, rtol=0)


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
    with pytest.raises(ValueError, match="expected \\(2, 16, 12, channels\\)"):
        tiling.predict_tiled(np.zeros((1, 16, 12, 1)), TILE, lambda b: b[:1], tta="lr")

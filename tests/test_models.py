"""The Keras models: PyTorch-exact padding, reference parameter counts, shapes, mixed precision,
argument checks, save/load, and a DeepLabV3+ training step."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from ctmri_tf import losses
from ctmri_tf.models import (deeplab_v3_plus, modality_classifier, patchgan_discriminator,
                             resnet_generator, stargan_discriminator, stargan_generator)
from ctmri_tf.models.layers import (InstanceNormalization, ReflectionPadding2D, conv2d,
                                    conv2d_transpose, instance_norm, spatial_size)
from ctmri_tf.models.stargan import TileDomainLabel

RNG = np.random.default_rng(0)
SMALL = dict(filters=8)


# --------------------------------------------------------------------------- NumPy references
def torch_conv2d(x, w, b, stride, pad, mode="constant"):
    """torch.nn.Conv2d on NHWC input with a Keras (k, k, in, out) kernel."""
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j, :] = np.einsum("bxyc,xyco->bo", patch, w)
    return out + b


def torch_conv_transpose2d(x, w, b, stride, pad, output_padding=0):
    """torch.nn.ConvTranspose2d on NHWC input with a Keras (k, k, out, in) kernel."""
    k = w.shape[0]
    h, wd = x.shape[1:3]
    full = np.zeros((x.shape[0], (h - 1) * stride + k, (wd - 1) * stride + k, w.shape[2]))
    for i in range(h):
        for j in range(wd):
            full[:, i * stride:i * stride + k, j * stride:j * stride + k, :] += np.einsum(
                "bc,xyoc->bxyo", x[:, i, j, :], w)
    ho = (h - 1) * stride - 2 * pad + k + output_padding
    wo = (wd - 1) * stride - 2 * pad + k + output_padding
    return full[:, pad:pad + ho, pad:pad + wo, :] + b


def _layer_model(shape, build):
    inp = keras.Input(shape)
    return keras.Model(inp, build(inp))


def _randomize(model):
    for v in model.weights:
        v.assign(RNG.normal(size=v.shape).astype(np.float32))


@pytest.mark.parametrize("size", [(8, 8), (7, 10)])
@pytest.mark.parametrize("kernel,stride,pad,mode", [
    (4, 2, 1, "zeros"),     # StarGAN down-sampling / PatchGAN ("same" on even sizes)
    (3, 2, 1, "zeros"),     # CycleGAN down-sampling (Keras "same" would shift it by a pixel)
    (3, 1, 1, "zeros"),     # StarGAN residual block ("same")
    (7, 1, 3, "zeros"),     # StarGAN stem ("same")
    (4, 1, 1, "zeros"),     # PatchGAN last layers (even kernel, stride 1: explicit pad)
    (7, 1, 3, "reflect"),   # CycleGAN c7s1
    (3, 1, 1, "reflect"),   # CycleGAN residual block
])
def test_conv2d_matches_pytorch_conv2d(size, kernel, stride, pad, mode):
    model = _layer_model((*size, 2), lambda t: conv2d(t, 3, kernel, strides=stride, padding=pad,
                                                     padding_mode=mode, name="c"))
    _randomize(model)
    x = RNG.normal(size=(2, *size, 2)).astype(np.float32)
    w, b = (v.numpy() for v in model.get_layer("c").weights)
    expected = torch_conv2d(x, w, b, stride, pad, "reflect" if mode == "reflect" else "constant")
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-4)


def test_conv2d_of_unknown_size_matches_pytorch_conv2d():
    """A model built for any size (image_size=None) takes the "same" path for 4x4 / stride 2
    and must still equal PyTorch on the even sizes such models accept."""
    model = _layer_model((None, None, 2), lambda t: conv2d(t, 3, 4, strides=2, padding=1,
                                                           name="c"))
    assert not any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in model.layers)
    _randomize(model)
    x = RNG.normal(size=(2, 8, 12, 2)).astype(np.float32)
    w, b = (v.numpy() for v in model.get_layer("c").weights)
    np.testing.assert_allclose(model(x), torch_conv2d(x, w, b, 2, 1, "constant"),
                               rtol=1e-4, atol=1e-4)


def test_stargan_generator_pads_inside_its_convolutions():
    """StarGAN's zero paddings all equal Keras "same": no copy into a padded buffer."""
    model = stargan_generator(filters=8, num_residual=1, image_size=32)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not kinds & {"ZeroPadding2D", "Cropping2D"}, kinds


@pytest.mark.parametrize("kernel,stride,pad,output_padding", [
    (4, 2, 1, 0),   # StarGAN up-sampling ("same")
    (3, 2, 1, 1),   # CycleGAN up-sampling (valid + crop)
])
def test_conv2d_transpose_matches_pytorch_conv_transpose2d(kernel, stride, pad, output_padding):
    model = _layer_model((5, 6, 2), lambda t: conv2d_transpose(
        t, 3, kernel, strides=stride, padding=pad, output_padding=output_padding, name="ct"))
    _randomize(model)
    x = RNG.normal(size=(2, 5, 6, 2)).astype(np.float32)
    w, b = (v.numpy() for v in model.get_layer("ct").weights)
    out = model(x)
    assert out.shape == (2, 10, 12, 3)
    np.testing.assert_allclose(out, torch_conv_transpose2d(x, w, b, stride, pad, output_padding),
                               rtol=1e-4, atol=1e-4)


def test_reflection_padding_is_numpy_reflect():
    x = np.arange(2 * 4 * 5 * 1, dtype=np.float32).reshape(2, 4, 5, 1)
    out = ReflectionPadding2D(3)(x)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect"))
    # Row 0 of the padded image is input row 3: the edge row is not repeated.
    np.testing.assert_array_equal(np.asarray(out)[0, 0, 3:8, 0], x[0, 3, :, 0])


@pytest.mark.parametrize("affine,params", [(True, 2 * 3), (False, 0)])
def test_instance_norm_normalizes_each_image_and_channel(affine, params):
    x = RNG.normal(3.0, 5.0, size=(2, 6, 7, 3)).astype(np.float32)
    layer = instance_norm(affine=affine, name="in")
    out = np.asarray(layer(x))
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    assert layer.count_params() == params


@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_equals_group_norm_forward_and_gradients(affine):
    # The fused form must give GroupNormalization(groups=-1)'s numbers and gradients (it
    # replaced it for speed): values, input gradient and gamma / beta gradients.
    x = tf.constant(RNG.normal(3.0, 5.0, size=(3, 9, 7, 4)).astype(np.float32))
    weights = tf.constant(RNG.normal(size=(3, 9, 7, 4)).astype(np.float32))
    fused = instance_norm(affine=affine, name="fused")
    group = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, center=affine,
                                            scale=affine)
    fused.build(x.shape)
    group.build(x.shape)
    if affine:
        gamma, beta = RNG.normal(size=(2, 4)).astype(np.float32)
        for layer in (fused, group):
            layer.gamma.assign(gamma)
            layer.beta.assign(beta)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_fused, y_group = fused(x), group(x)
        loss_fused = tf.reduce_sum(y_fused * weights)
        loss_group = tf.reduce_sum(y_group * weights)
    np.testing.assert_allclose(y_fused, y_group, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss_fused, x), tape.gradient(loss_group, x),
                               atol=1e-5)
    for a, b in zip(tape.gradient(loss_fused, fused.trainable_variables),
                    tape.gradient(loss_group, group.trainable_variables), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_instance_norm_keeps_bfloat16_and_round_trips_through_keras_save(tmp_path):
    inputs = keras.Input((8, 8, 3))
    layer = instance_norm(name="in")
    model = keras.Model(inputs, layer(inputs))
    layer.gamma.assign([1.0, 2.0, 3.0])
    x = RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x), model(x))
    out = InstanceNormalization(dtype="mixed_bfloat16", name="in_bf16")(x)
    assert out.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(out, tf.float32), instance_norm(name="in32")(x),
                               atol=0.05)


def test_tile_domain_label_repeats_the_label_over_every_pixel():
    image = RNG.normal(size=(2, 3, 4, 1)).astype(np.float32)
    label = np.array([[1, 0], [0, 1]], np.float32)
    out = np.asarray(TileDomainLabel()([image, label]))
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(out[..., :1], image)
    tiled = np.broadcast_to(label[:, None, None, :], (2, 3, 4, 2))
    np.testing.assert_array_equal(out[..., 1:], tiled)


# --------------------------------------------------------------------------- reference counts
def _conv(cin, cout, k, bias):
    return k * k * cin * cout + (cout if bias else 0)


def official_stargan_g_params(in_ch, out_ch, c_dim, conv_dim=64, repeat_num=6):
    """yunjey/stargan model.py Generator: bias-free convs, InstanceNorm2d(affine=True) = 2C."""
    n = _conv(in_ch + c_dim, conv_dim, 7, False) + 2 * conv_dim
    cur = conv_dim
    for _ in range(2):
        n += _conv(cur, cur * 2, 4, False) + 2 * cur * 2
        cur *= 2
    n += repeat_num * 2 * (_conv(cur, cur, 3, False) + 2 * cur)
    for _ in range(2):
        n += _conv(cur, cur // 2, 4, False) + 2 * (cur // 2)
        cur //= 2
    return n + _conv(cur, out_ch, 7, False)


def official_stargan_d_params(in_ch, c_dim, image_size=128, conv_dim=64, repeat_num=6):
    """yunjey/stargan model.py Discriminator: main convs with bias, conv1/conv2 without."""
    n = _conv(in_ch, conv_dim, 4, True)
    cur = conv_dim
    for _ in range(1, repeat_num):
        n += _conv(cur, cur * 2, 4, True)
        cur *= 2
    k = image_size // 2 ** repeat_num
    return n + _conv(cur, 1, 3, False) + _conv(cur, c_dim, k, False)


def reference_resnet_g_params(in_nc, out_nc, ngf=64, n_blocks=9):
    """junyanz ResnetGenerator, norm=instance (affine=False) -> every conv has a bias."""
    n = _conv(in_nc, ngf, 7, True) + _conv(ngf, 2 * ngf, 3, True) + _conv(2 * ngf, 4 * ngf, 3, True)
    n += n_blocks * 2 * _conv(4 * ngf, 4 * ngf, 3, True)
    n += _conv(4 * ngf, 2 * ngf, 3, True) + _conv(2 * ngf, ngf, 3, True)   # ConvTranspose2d
    return n + _conv(ngf, out_nc, 7, True)


def reference_patchgan_params(in_nc, ndf=64, n_layers=3):
    """junyanz NLayerDiscriminator, norm=instance (affine=False)."""
    n = _conv(in_nc, ndf, 4, True)
    mult = 1
    for k in range(1, n_layers + 1):
        prev, mult = mult, min(2 ** k, 8)
        n += _conv(ndf * prev, ndf * mult, 4, True)
    return n + _conv(ndf * mult, 1, 4, True)


def test_reference_formulas_reproduce_the_published_counts():
    # The official StarGAN README prints these for CelebA (RGB, c_dim=5, 128 px) ...
    assert official_stargan_g_params(3, 3, 5) == 8430528
    assert official_stargan_d_params(3, 5) == 44762048
    # ... and pytorch-CycleGAN-and-pix2pix prints 11.378 M (resnet_9blocks) and 2.765 M (basic D).
    assert reference_resnet_g_params(3, 3) == 11378179
    assert reference_patchgan_params(3) == 2764737


@pytest.fixture(scope="module")
def full_models():
    """Paper-size models, built (not run) once: 1 channel, 2 domains, 128 px."""
    return {"stargan_g": stargan_generator(num_domains=2, filters=64, num_residual=6),
            "stargan_d": stargan_discriminator(128, num_domains=2, filters=64, num_layers=6),
            "cyclegan_g": resnet_generator(filters=64, num_residual=9),
            "patchgan": patchgan_discriminator(filters=64, num_layers=3)}


def test_parameter_counts_equal_the_reference_models(full_models):
    assert full_models["stargan_g"].count_params() == official_stargan_g_params(1, 1, 2) == 8408576
    assert full_models["stargan_d"].count_params() == official_stargan_d_params(1, 2) == 44735424
    assert full_models["cyclegan_g"].count_params() == reference_resnet_g_params(1, 1) == 11365633
    assert full_models["patchgan"].count_params() == reference_patchgan_params(1) == 2762689


def test_parameter_counts_at_other_settings():
    assert (stargan_generator(num_domains=3, filters=16, num_residual=2).count_params()
            == official_stargan_g_params(1, 1, 3, conv_dim=16, repeat_num=2))
    assert (stargan_discriminator(64, num_domains=3, filters=16, num_layers=4).count_params()
            == official_stargan_d_params(1, 3, image_size=64, conv_dim=16, repeat_num=4))
    assert (resnet_generator(filters=16, num_residual=6).count_params()
            == reference_resnet_g_params(1, 1, ngf=16, n_blocks=6))
    assert (patchgan_discriminator(filters=16, num_layers=5).count_params()
            == reference_patchgan_params(1, ndf=16, n_layers=5))


def test_initialisation_follows_the_references(full_models):
    # CycleGAN: N(0, 0.02) kernels, zero biases (init_type="normal", gain 0.02).
    kernel, bias = full_models["cyclegan_g"].get_layer("r256_1_a_conv").weights
    assert abs(float(np.std(kernel)) - 0.02) < 0.0005
    assert not np.any(bias.numpy())
    # StarGAN: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std = bound / sqrt(3).
    (kernel,) = full_models["stargan_g"].get_layer("res1_a_conv").weights
    bound = 1 / np.sqrt(3 * 3 * 256)
    assert np.abs(kernel).max() <= np.float32(bound)          # drawn in float32
    assert abs(float(np.std(kernel)) - bound / np.sqrt(3)) < 0.02 * bound


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size,num_layers", [(32, 5), (64, 6), (128, 6)])
def test_stargan_shapes(size, num_layers):
    g = stargan_generator(num_residual=2, image_size=size, **SMALL)
    d = stargan_discriminator(size, num_layers=num_layers, **SMALL)
    x = RNG.uniform(-1, 1, size=(2, size, size, 1)).astype(np.float32)
    label = np.array([[1, 0], [0, 1]], np.float32)
    fake = g([x, label])
    assert fake.shape == (2, size, size, 1) and fake.dtype == tf.float32
    assert np.all(np.abs(fake) <= 1.0)
    src, cls = d(fake)
    cells = size // 2 ** num_layers
    assert src.shape == (2, cells, cells, 1)
    assert cls.shape == (2, 2)


def test_stargan_generator_output_depends_on_the_target_domain():
    g = stargan_generator(num_residual=1, **SMALL)
    x = np.repeat(RNG.uniform(-1, 1, size=(1, 32, 32, 1)).astype(np.float32), 2, axis=0)
    out = np.asarray(g([x, np.array([[1, 0], [0, 1]], np.float32)]))
    assert np.abs(out[0] - out[1]).max() > 1e-3


def test_stargan_generator_accepts_any_multiple_of_4_and_rectangles():
    g = stargan_generator(num_residual=1, **SMALL)   # image_size=None
    out = g([np.zeros((1, 36, 48, 1), np.float32), np.array([[0, 1]], np.float32)])
    assert out.shape == (1, 36, 48, 1)
    d = stargan_discriminator((32, 64), num_layers=4, **SMALL)
    src, cls = d(np.zeros((1, 32, 64, 1), np.float32))
    assert src.shape == (1, 2, 4, 1) and cls.shape == (1, 2)


@pytest.mark.parametrize("size", [32, (40, 64)])
def test_cyclegan_shapes(size):
    g = resnet_generator(num_residual=2, image_size=size, **SMALL)
    d = patchgan_discriminator(image_size=size, **SMALL)
    h, w = (size, size) if isinstance(size, int) else size
    x = RNG.uniform(-1, 1, size=(2, h, w, 1)).astype(np.float32)
    fake = g(x)
    assert fake.shape == (2, h, w, 1) and np.all(np.abs(fake) <= 1.0)
    assert d(fake).shape == (2, h // 8 - 2, w // 8 - 2, 1)


def test_patchgan_gives_30x30_logits_at_256px():
    assert patchgan_discriminator(image_size=256, **SMALL).output.shape == (None, 30, 30, 1)


@pytest.mark.parametrize("size", [(17, 23), (32, 32), (40, 64)])
def test_classifier_takes_any_size(size):
    model = modality_classifier(filters=4)
    assert model(np.zeros((3, *size, 1), np.float32)).shape == (3, 2)


# --------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("build,message", [
    (lambda: stargan_discriminator(96, num_layers=6), r"96 is not divisible by 64"),
    (lambda: stargan_discriminator(128, num_layers=8), r"128 is not divisible by 256"),
    (lambda: stargan_discriminator(None), r"image_size is required"),
    (lambda: stargan_generator(image_size=30), r"30 is not divisible by 4"),
    (lambda: resnet_generator(image_size=(64, 66)), r"66 is not divisible by 4"),
    (lambda: resnet_generator(image_size=4), r"too small"),
    (lambda: patchgan_discriminator(image_size=100), r"100 is not divisible by 8"),
    (lambda: patchgan_discriminator(image_size=16), r"16 is too small"),
    (lambda: deeplab_v3_plus(48), r"48 is not divisible by 32"),
    (lambda: deeplab_v3_plus(64, blocks=(1, 2, 2, 2)), r"blocks must be 4 integers >= 2"),
    (lambda: stargan_generator(filters=0), r"filters must be a positive integer"),
    (lambda: modality_classifier(image_size=(32, 32, 1)), r"image_size must be"),
    (lambda: modality_classifier(dropout=1.0), r"dropout"),
])
def test_bad_arguments_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_spatial_size_accepts_numpy_integers():
    assert spatial_size(np.int64(64), divisible_by=32, model="m") == (64, 64)


# --------------------------------------------------------------------------- mixed precision
@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_every_model_runs_under_mixed_bfloat16_with_float32_outputs(mixed_bfloat16):
    x32 = RNG.uniform(-1, 1, size=(2, 32, 32, 1)).astype(np.float32)
    label = np.array([[1, 0], [0, 1]], np.float32)
    deeplab = deeplab_v3_plus(32, width=4)
    cases = [
        (stargan_generator(num_residual=1, **SMALL), [x32, label], "res1_a_conv"),
        (stargan_discriminator(32, num_layers=5, **SMALL), x32, "down1"),
        (resnet_generator(num_residual=1, **SMALL), x32, "r32_1_a_conv"),
        (patchgan_discriminator(**SMALL), x32, "c2_conv"),
        (modality_classifier(filters=4), x32, "stage1_down_conv"),
        (deeplab, x32, deeplab.backbone.get_layer("conv1_conv")),
    ]
    for model, inputs, inner in cases:
        inner = model.get_layer(inner) if isinstance(inner, str) else inner
        assert inner.compute_dtype == "bfloat16", model.name   # the body computes in bf16 ...
        outputs = model(inputs)
        for out in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            assert out.dtype == tf.float32, model.name   # ... and the outputs are float32
            assert np.all(np.isfinite(out)), model.name


# --------------------------------------------------------------------------- save / load
def test_gan_models_round_trip_through_keras_files(tmp_path):
    x = RNG.uniform(-1, 1, size=(2, 32, 32, 1)).astype(np.float32)
    label = np.array([[0, 1], [1, 0]], np.float32)
    for model, inputs in [(stargan_generator(num_residual=1, **SMALL), [x, label]),
                          (resnet_generator(num_residual=1, **SMALL), x)]:
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_array_equal(loaded(inputs), model(inputs))


# --------------------------------------------------------------------------- DeepLabV3+
def _disc_masks(size):
    yy, xx = np.mgrid[:size, :size]
    centres = [(0.5, 0.5, 0.3), (0.45, 0.55, 0.25), (0.55, 0.45, 0.38), (0.5, 0.45, 0.2)]
    return np.stack([(yy - cy * size) ** 2 + (xx - cx * size) ** 2 < (r * size) ** 2
                     for cy, cx, r in centres]).astype(np.int32)


@pytest.mark.parametrize("size", [64, 128])
def test_deeplab_builds_offline_and_returns_float32_logits(size):
    model = deeplab_v3_plus(size, width=8)
    logits = model(np.where(_disc_masks(size)[:2], 0.5, -0.9)[..., None].astype(np.float32))
    assert logits.shape == (2, size, size, 2) and logits.dtype == tf.float32
    # Logits, not softmax probabilities: unbounded and not summing to 1 over the classes.
    assert float(tf.reduce_min(logits)) < 0.0
    assert not np.allclose(np.sum(logits, axis=-1), 1.0)


def test_deeplab_batch_norm_statistics_follow_a_short_training():
    # keras-cv's 0.99 left a 200-step make demo with inference statistics far from the data's
    from ctmri_tf.models import deeplab

    model = deeplab_v3_plus(64, width=4)
    norms = [layer for layer in deeplab._all_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 10 and {n.momentum for n in norms} == {deeplab.BATCH_NORM_MOMENTUM}
    first = model.backbone.get_layer("v2_stack_0_block1_use_preactivation_bn")  # the first norm
    before = first.moving_mean.numpy().copy()
    x = RNG.uniform(-1, 1, size=(2, 64, 64, 1)).astype(np.float32)
    model(x, training=True)
    moved = first.moving_mean.numpy() - before
    assert np.abs(moved).max() > 0
    stem = keras.Model(model.backbone.input, first.input)(x).numpy()
    np.testing.assert_allclose(moved, (1 - deeplab.BATCH_NORM_MOMENTUM)
                               * (stem.mean(axis=(0, 1, 2)) - before),
                               rtol=1e-3, atol=1e-6)


def test_deeplab_round_trips_through_a_keras_file(tmp_path):
    model = deeplab_v3_plus(64, width=4)
    x = RNG.uniform(-1, 1, size=(1, 64, 64, 1)).astype(np.float32)
    model.save(tmp_path / "deeplab.keras")
    loaded = keras.models.load_model(tmp_path / "deeplab.keras")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)


def test_deeplab_with_no_image_size_takes_multiples_of_32():
    model = deeplab_v3_plus(None, width=4)
    assert model(np.zeros((1, 64, 96, 1), np.float32)).shape == (1, 64, 96, 2)


def test_deeplab_learns_a_trivial_mask():
    keras.utils.set_random_seed(0)
    model = deeplab_v3_plus(64, width=8)
    masks = _disc_masks(64)
    images = np.where(masks, 0.6, -0.9)[..., None].astype(np.float32)
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    history = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = loss_fn(masks, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in grads)   # every trainable variable is on the path
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        history.append(float(loss))
    assert history[-1] < 0.6 * history[0], history


def test_classifier_logits_feed_the_domain_loss():
    model = modality_classifier(filters=4)
    logits = model(np.zeros((2, 32, 32, 1), np.float32))
    assert losses.domain_classification_loss(np.eye(2, dtype=np.float32), logits).shape == (2,)


def test_stargan_critic_gradient_penalty_trains_the_discriminator():
    d = stargan_discriminator(32, num_layers=5, **SMALL)
    real = RNG.uniform(-1, 1, size=(2, 32, 32, 1)).astype(np.float32)
    fake = RNG.uniform(-1, 1, size=(2, 32, 32, 1)).astype(np.float32)
    with tf.GradientTape() as tape:
        gp = losses.gradient_penalty(lambda x: d(x, training=True)[0], real, fake,
                                     tf.fill((2, 1, 1, 1), 0.5))
        total = tf.reduce_sum(gp)
    grads = tape.gradient(total, d.trainable_variables)
    assert gp.shape == (2,)
    # Every kernel on the src path gets a second-order gradient; cls_conv is not on the path.
    # The critic is piecewise linear in its input, so its input gradient does not depend on the
    # biases (away from the kinks): their GP gradient is identically zero, which TensorFlow
    # reports as no gradient for max(x, 0.01 x).
    missing = {v.path for v, g in zip(d.trainable_variables, grads) if g is None}
    assert missing == {f"down{i}/bias" for i in range(1, 6)} | {"cls_conv/kernel"}, missing
    for v, g in zip(d.trainable_variables, grads):
        if v.path.endswith("kernel") and g is not None:
            assert float(tf.reduce_max(tf.abs(g))) > 0, v.path


def test_cyclegan_layers_of_equal_shape_start_with_different_kernels():
    """Keras 3 unseeded initialisers draw their seed once: sharing one instance between layers
    would give every same-shape layer the same kernel (it did, before each layer got its own)."""
    generator = resnet_generator(filters=8, num_residual=2, image_size=32)
    kernels = [w.numpy() for w in generator.weights if w.path.startswith("r") and w.path.endswith("kernel")]
    assert len(kernels) >= 4
    for i in range(len(kernels)):
        for j in range(i + 1, len(kernels)):
            assert not np.allclose(kernels[i], kernels[j])


def test_classifier_prediction_does_not_depend_on_the_rest_of_the_batch():
    """Batch statistics made the trained classifier call every slice CT at inference; each
    slice's logits must be the same alone, in a batch, in training and in inference mode."""
    model = modality_classifier(image_size=32, filters=8, dropout=0.0)
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.uniform(-1, 1, (3, 32, 32, 1)),
                             rng.uniform(-1, -0.5, (3, 32, 32, 1))]).astype(np.float32)
    batch_train = model(images, training=True).numpy()
    batch_infer = model(images, training=False).numpy()
    alone = np.concatenate([model(images[i:i + 1], training=True).numpy() for i in range(6)])
    np.testing.assert_allclose(batch_train, alone, atol=1e-5)
    np.testing.assert_allclose(batch_train, batch_infer, atol=1e-5)


def test_max_leaky_relu_equals_keras_leaky_relu_to_the_second_derivative():
    from ctmri_tf.models.layers import MaxLeakyReLU

    x = tf.constant(RNG.normal(size=(3, 4, 5, 2)).astype(np.float32))
    ours, theirs = MaxLeakyReLU(0.01), keras.layers.LeakyReLU(negative_slope=0.01)
    np.testing.assert_array_equal(ours(x), theirs(x))
    for layer in (ours, theirs):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(layer(x) ** 3)
            g = inner.gradient(y, x)
            gg = tf.reduce_sum(g * g)
        layer.grads = (g.numpy(), outer.gradient(gg, x).numpy())
    for a, b in zip(ours.grads, theirs.grads):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="negative_slope"):
        MaxLeakyReLU(1.5)


def test_intensity_windows_add_the_image_seen_through_each_window():
    from ctmri_tf import intensity
    from ctmri_tf.models.layers import IntensityWindows

    hu = np.float32([-1000, -20, 0, 20, 40, 60, 80, 100, 1500]).reshape(1, 3, 3, 1)
    x = intensity.ct_to_unit(hu)
    brain = (float(intensity.ct_to_unit(0.0)), float(intensity.ct_to_unit(80.0)))
    wide = (-1.0, 1.0)
    out = IntensityWindows([brain, wide])(x).numpy()
    assert out.shape == (1, 3, 3, 3)
    np.testing.assert_array_equal(out[..., :1], x)             # the image itself comes first
    # brain window 0-80 HU: 0 HU -> -1, 40 HU -> 0, 80 HU -> +1, clipped outside (by hand)
    expected = np.float32([-1, -1, -1, -0.5, 0, 0.5, 1, 1, 1]).reshape(1, 3, 3)
    np.testing.assert_allclose(out[..., 1], expected, atol=2e-5)
    np.testing.assert_allclose(out[..., 2], x[..., 0], atol=1e-6)   # (-1, 1) is the identity
    with pytest.raises(ValueError, match="low < high"):
        IntensityWindows([(0.5, 0.5)])


def test_stargan_generator_with_windows_saves_and_computes_them_in_float32(tmp_path):
    x = RNG.uniform(-1, 1, size=(2, 32, 32, 1)).astype(np.float32)
    label = np.array([[0, 1], [1, 0]], np.float32)
    model = stargan_generator(num_residual=1, input_windows=[(-0.49, -0.45)], **SMALL)
    assert model.get_layer("stem_conv").kernel.shape[2] == 2 + 2     # image, window, 2 labels
    path = tmp_path / "g.keras"
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path)([x, label]), model([x, label]))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = stargan_generator(num_residual=1, input_windows=[(-0.49, -0.45)], **SMALL)
        assert mixed.get_layer("intensity_windows").compute_dtype == "float32"
        assert mixed.get_layer("stem_conv").compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")

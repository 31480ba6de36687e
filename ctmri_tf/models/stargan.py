"""StarGAN generator and discriminator (Choi et al., CVPR 2018), the official architecture.

Layer for layer the networks of github.com/yunjey/stargan ``model.py``, for 1-channel medical
images in [-1, 1] (channels-last) instead of RGB:

* Generator: the image concatenated with the target-domain label repeated over every pixel ->
  Conv7x7(64) -> 2 x [Conv4x4 stride 2, channels x2] -> ``num_residual`` residual blocks ->
  2 x [ConvTranspose4x4 stride 2, channels / 2] -> Conv7x7(1) -> tanh. Every convolution but
  the last is followed by instance norm (with affine parameters) and ReLU; no convolution has a
  bias.
* Discriminator: ``num_layers`` x [Conv4x4 stride 2 (with bias), LeakyReLU(0.01)] (as
  ``max(x, 0.01 x)``, :class:`ctmri_tf.models.layers.MaxLeakyReLU`), channels
  doubling from ``filters``; then ``src`` = Conv3x3 -> 1 channel (the PatchGAN critic logits of
  the WGAN-GP loss) and ``cls`` = a convolution as large as the last feature map -> one logit per
  domain. No normalisation (WGAN-GP forbids batch statistics in the critic).

Padding and initialisation follow PyTorch (see :mod:`ctmri_tf.models.layers`), so the parameter
counts equal the official model's.
"""
from __future__ import annotations

import keras
from keras import ops

from ctmri_tf.models.layers import (IntensityWindows, MaxLeakyReLU, check_positive_ints, conv2d,
                                    conv_norm_act, image_input, residual_block, spatial_size,
                                    torch_default_initializers)

GENERATOR_DOWNSAMPLING = 4   # two stride-2 convolutions


@keras.saving.register_keras_serializable(package="ctmri_tf")
class TileDomainLabel(keras.layers.Layer):
    """Concatenate a per-image label, repeated over every pixel, to the image's channels.

    ``[image (B, H, W, C), label (B, D)] -> (B, H, W, C + D)``: StarGAN's way of telling the
    generator which domain to translate to (``c.view(B, D, 1, 1).repeat(1, 1, H, W)``).
    """

    def call(self, inputs):
        image, label = inputs
        shape = ops.shape(image)
        label = ops.cast(label, image.dtype)
        tiled = ops.broadcast_to(label[:, None, None, :],
                                 (shape[0], shape[1], shape[2], ops.shape(label)[-1]))
        return ops.concatenate([image, tiled], axis=-1)

    def compute_output_shape(self, input_shape):
        image_shape, label_shape = input_shape
        return (*image_shape[:3], image_shape[3] + label_shape[-1])


def stargan_generator(num_domains: int = 2, filters: int = 64, num_residual: int = 6,
                      image_size=None, input_windows=(), context_slices: int = 1) -> keras.Model:
    """The StarGAN generator: translate an image to the domain given by a one-hot label.

    Args:
        num_domains: length of the label (2: ``[1, 0]`` = CT, ``[0, 1]`` = MRI).
        filters: channels of the first convolution (64 in the paper); the bottleneck has 4x.
        num_residual: residual blocks in the bottleneck (6 in the paper).
        image_size: int, ``(height, width)`` or None for any size; sizes must be multiples of 4
            (checked here when given; with None the caller must feed multiples of 4, otherwise
            the output is smaller than the input).
        input_windows: ``(low, high)`` pairs in model space ([-1, 1]); each adds a windowed copy
            of the image as an input channel before the label (:class:`IntensityWindows`; not in
            the paper, which has none). The model's inputs and outputs stay the same.
        context_slices: image channels: 1 (the paper's 2-D slice) or, for a 2.5-D generator,
            3 or 5 neighbouring slices in slice order (:mod:`ctmri_tf.context`); the output is
            always the centre slice's translation, 1 channel. With windows, each slice gets
            its windowed copies.

    Returns:
        ``keras.Model`` named ``stargan_generator``: inputs ``[image (B, H, W, context_slices)
        in [-1, 1], target_domain (B, num_domains) one-hot float32]`` -> translated image
        ``(B, H, W, 1)`` in [-1, 1] (tanh), float32 under any mixed-precision policy.
    """
    check_positive_ints(num_domains=num_domains, filters=filters, context_slices=context_slices)
    if num_residual < 0:
        raise ValueError(f"num_residual must be >= 0, got {num_residual}")
    image = image_input(image_size, divisible_by=GENERATOR_DOWNSAMPLING,
                        model="stargan_generator", channels=context_slices, name="image")
    label = keras.Input(shape=(num_domains,), name="target_domain")

    x = image
    if input_windows:
        x = IntensityWindows(input_windows, dtype="float32", name="intensity_windows")(x)
    x = TileDomainLabel(name="tile_domain_label")([x, label])
    x = conv_norm_act(x, filters, 7, padding=3, name="stem")
    channels = filters
    for i in range(2):
        channels *= 2
        x = conv_norm_act(x, channels, 4, strides=2, padding=1, name=f"down{i + 1}")
    for i in range(num_residual):
        x = residual_block(x, name=f"res{i + 1}")
    for i in range(2):
        channels //= 2
        x = conv_norm_act(x, channels, 4, strides=2, padding=1, transpose=True,
                          name=f"up{i + 1}")
    x = conv2d(x, 1, 7, padding=3, use_bias=False, dtype="float32", name="to_image")
    out = keras.layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model([image, label], out, name="stargan_generator")


def stargan_discriminator(image_size, num_domains: int = 2, filters: int = 64,
                          num_layers: int = 6) -> keras.Model:
    """The StarGAN discriminator: a PatchGAN critic plus an auxiliary domain classifier.

    Args:
        image_size: int or ``(height, width)``; required because the classifier's kernel
            covers the whole last feature map. Must be a multiple of ``2**num_layers``
            (64 for the paper's 6 layers).
        num_domains: number of domain logits (2: CT, MRI).
        filters: channels of the first convolution (64 in the paper), doubling per layer.
        num_layers: stride-2 convolutions (6 in the paper).

    Returns:
        ``keras.Model`` named ``stargan_discriminator``: image ``(B, H, W, 1)`` in [-1, 1] ->
        ``[src (B, H/2^L, W/2^L, 1) critic logits, cls (B, num_domains) logits]``, both float32
        under any mixed-precision policy.
    """
    check_positive_ints(num_domains=num_domains, filters=filters, num_layers=num_layers)
    if image_size is None:
        raise ValueError("stargan_discriminator: image_size is required (the domain classifier's "
                         "kernel spans the whole last feature map)")
    factor = 2 ** num_layers
    height, width = spatial_size(image_size, divisible_by=factor,
                                 model=f"stargan_discriminator (num_layers={num_layers})")
    image = keras.Input(shape=(height, width, 1), name="image")

    x = image
    channels = filters
    for i in range(num_layers):
        x = conv2d(x, channels, 4, strides=2, padding=1, use_bias=True, name=f"down{i + 1}")
        x = MaxLeakyReLU(negative_slope=0.01, name=f"down{i + 1}_leaky_relu")(x)
        channels *= 2
    src = conv2d(x, 1, 3, padding=1, use_bias=False, dtype="float32", name="src")
    kernel = (height // factor, width // factor)
    kernel_init, _ = torch_default_initializers(kernel[0] * kernel[1] * x.shape[-1])
    cls = keras.layers.Conv2D(num_domains, kernel, padding="valid", use_bias=False,
                              kernel_initializer=kernel_init, dtype="float32",
                              name="cls_conv")(x)
    cls = keras.layers.Reshape((num_domains,), dtype="float32", name="cls")(cls)
    return keras.Model(image, [src, cls], name="stargan_discriminator")

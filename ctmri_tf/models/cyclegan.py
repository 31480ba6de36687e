"""CycleGAN ResNet generator and 70x70 PatchGAN discriminator (Zhu et al., ICCV 2017).

Layer for layer ``ResnetGenerator`` and ``NLayerDiscriminator`` of
github.com/junyanz/pytorch-CycleGAN-and-pix2pix (``--norm instance``, the CycleGAN default), for
1-channel medical images in [-1, 1], channels-last:

* Generator ``c7s1-64, d128, d256, R256 x num_residual, u128, u64, c7s1-1, tanh``: reflection
  padding around the 7x7 convolutions and inside the residual blocks, zero padding in the
  stride-2 convolutions, transposed 3x3 convolutions (``padding=1, output_padding=1``) to
  up-sample. Use 9 residual blocks at 256 px and 6 at 128 px.
* Discriminator ``C64-C128-C256-C512-C1``: 4x4 convolutions, stride 2 except the last two,
  LeakyReLU(0.2), no normalisation on the first layer; with ``num_layers=3`` each output logit
  sees a 70x70 patch.

As in the reference, instance norm has no learned scale/offset (``InstanceNorm2d(affine=False)``)
so every convolution has a bias, and weights start from N(0, 0.02). Parameter counts equal the
reference's (11,378,179 and 2,764,737 for its 3-channel 9-block G and default D).
"""
from __future__ import annotations

import keras

from ctmri_tf.models.layers import (check_positive_ints, conv2d, conv_norm_act,
                                    gan_normal_initializers, image_input, residual_block)

GENERATOR_DOWNSAMPLING = 4   # two stride-2 convolutions


def resnet_generator(filters: int = 64, num_residual: int = 9, image_size=None,
                     context_slices: int = 1) -> keras.Model:
    """The CycleGAN ResNet generator (one per translation direction).

    Args:
        filters: channels of the first convolution (64 in the paper); the bottleneck has 4x.
        num_residual: residual blocks (9 for 256 px images, 6 for 128 px).
        image_size: int, ``(height, width)`` or None for any size; sizes must be multiples of 4
            and at least 8 (checked here when given; with None the caller must feed such sizes).
        context_slices: input channels: 1 (the paper's 2-D slice) or, 2.5-D, 3 or 5
            neighbouring slices in slice order (:mod:`ctmri_tf.context`); the output is the
            centre slice's translation, 1 channel.

    Returns:
        ``keras.Model`` named ``resnet_generator``: image ``(B, H, W, context_slices)`` in
        [-1, 1] -> translated image ``(B, H, W, 1)`` in [-1, 1] (tanh), float32 under any
        mixed-precision policy.
    """
    check_positive_ints(filters=filters, context_slices=context_slices)
    if num_residual < 0:
        raise ValueError(f"num_residual must be >= 0, got {num_residual}")
    init = gan_normal_initializers  # called once per layer: every kernel gets its own seed
    common = dict(affine=False, use_bias=True, initializers=init)
    image = image_input(image_size, divisible_by=GENERATOR_DOWNSAMPLING, min_size=8,
                        model="resnet_generator", channels=context_slices, name="image")

    x = conv_norm_act(image, filters, 7, padding=3, padding_mode="reflect", name="c7s1", **common)
    channels = filters
    for i in range(2):
        channels *= 2
        x = conv_norm_act(x, channels, 3, strides=2, padding=1, name=f"d{channels}", **common)
    for i in range(num_residual):
        x = residual_block(x, padding_mode="reflect", name=f"r{channels}_{i + 1}", **common)
    for i in range(2):
        channels //= 2
        x = conv_norm_act(x, channels, 3, strides=2, padding=1, output_padding=1, transpose=True,
                          name=f"u{channels}", **common)
    x = conv2d(x, 1, 7, padding=3, padding_mode="reflect", use_bias=True, initializers=init,
               dtype="float32", name="to_image")
    out = keras.layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model(image, out, name="resnet_generator")


def patchgan_discriminator(filters: int = 64, num_layers: int = 3, image_size=None) -> keras.Model:
    """The PatchGAN discriminator (70x70 receptive field with ``num_layers=3``).

    Args:
        filters: channels of the first convolution (64 in the paper); doubling per layer up to
            8x.
        num_layers: stride-2 convolutions (3 in the paper).
        image_size: int, ``(height, width)`` or None; sizes must be multiples of
            ``2**num_layers`` and at least ``3 * 2**num_layers`` (24 px for 3 layers).

    Returns:
        ``keras.Model`` named ``patchgan_discriminator``: image ``(B, H, W, 1)`` in [-1, 1] ->
        real/fake logits ``(B, H/2^L - 2, W/2^L - 2, 1)`` (30x30 at 256 px), float32 under any
        mixed-precision policy. Logits, not probabilities: the LSGAN loss uses them as they are.
    """
    check_positive_ints(filters=filters, num_layers=num_layers)
    init = gan_normal_initializers  # called once per layer: every kernel gets its own seed
    factor = 2 ** num_layers
    image = image_input(image_size, divisible_by=factor, min_size=3 * factor,
                        model=f"patchgan_discriminator (num_layers={num_layers})", name="image")

    x = conv2d(image, filters, 4, strides=2, padding=1, initializers=init, name="c1_conv")
    x = keras.layers.LeakyReLU(negative_slope=0.2, name="c1_leaky_relu")(x)
    for n in range(1, num_layers + 1):
        channels = filters * min(2 ** n, 8)
        strides = 2 if n < num_layers else 1
        x = conv_norm_act(x, channels, 4, strides=strides, padding=1, affine=False,
                          activation=None, use_bias=True, initializers=init, name=f"c{n + 1}")
        x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"c{n + 1}_leaky_relu")(x)
    logits = conv2d(x, 1, 4, padding=1, initializers=init, dtype="float32", name="logits")
    return keras.Model(image, logits, name="patchgan_discriminator")

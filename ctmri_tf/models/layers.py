"""Building blocks shared by the ctmri-tf models, with PyTorch padding semantics.

The reference implementations of StarGAN (yunjey/stargan) and CycleGAN
(junyanz/pytorch-CycleGAN-and-pix2pix) are PyTorch code. Keras' ``padding="same"`` puts the odd
pixel of padding after the image, PyTorch pads both sides by ``padding``; for a stride-2 3x3
convolution, or for a 3x3 transposed convolution with ``output_padding=1``, the two sample
different pixels. Such convolutions are an explicit pad followed by a ``"valid"`` convolution
(and such transposed convolutions a ``"valid"`` one followed by a crop), which reproduces
``torch.nn.Conv2d`` / ``ConvTranspose2d`` output sizes and pixel alignment exactly. Where
``"same"`` provably pads exactly as PyTorch does (:func:`same_is_torch_padding`,
:func:`same_is_torch_transpose_crop`: 3x3 and 7x7 stride-1 convolutions, the 4x4 stride-2
convolutions and transposed convolutions of StarGAN), the layer uses ``"same"``: the same
numbers, without copying every input into a padded buffer (9 % faster for a 3x3 256-channel
convolution's forward and backward on this project's CPU, 20 % for a transposed one).

Tensors are channels-last ``(batch, height, width, channels)``; the values are whatever the
caller feeds (model space [-1, 1] at the input of every ctmri-tf model).
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import keras
import tensorflow as tf
from keras import ops

PADDING_MODES = ("zeros", "reflect")
NORMS = ("instance", "batch", None)


# --------------------------------------------------------------------------- argument checks
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_ints(**values: int) -> None:
    """Raise ``ValueError`` unless every keyword value is an int >= 1 (bools refused)."""
    for name, value in values.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def spatial_size(image_size: int | Sequence[int] | None, *, divisible_by: int, model: str,
                 min_size: int = 1) -> tuple[int | None, int | None]:
    """Validate ``image_size`` and return it as ``(height, width)`` (``(None, None)`` if None).

    Args:
        image_size: pixels; an int for square images, ``(height, width)``, or None for a model
            that accepts any size (the caller must then feed sizes that satisfy the rule below).
        divisible_by: the model's down-sampling factor; height and width must be multiples.
        model: the model's name, used in the error message.
        min_size: the smallest height/width the model can process.

    Raises:
        ValueError: naming the size, the model and the factor it must be divisible by.
    """
    if image_size is None:
        return None, None
    if _is_int(image_size):
        size = (int(image_size), int(image_size))
    else:
        try:
            size = tuple(int(side) if _is_int(side) else side for side in image_size)
        except TypeError:
            raise ValueError(f"{model}: image_size must be an int, (height, width) or None, "
                             f"got {image_size!r}") from None
        if len(size) != 2:
            raise ValueError(f"{model}: image_size must be an int, (height, width) or None, "
                             f"got {image_size!r}")
    for side in size:
        if not _is_int(side) or side < 1:
            raise ValueError(f"{model}: image size {image_size!r} must be positive integers")
        if side % divisible_by:
            lower = max(divisible_by, side // divisible_by * divisible_by)
            raise ValueError(f"{model}: image size {side} is not divisible by {divisible_by}, "
                             f"the model's down-sampling factor; use a multiple of "
                             f"{divisible_by} (e.g. {lower} or {lower + divisible_by})")
        if side < min_size:
            raise ValueError(f"{model}: image size {side} is too small; it needs at least "
                             f"{min_size} pixels")
    return size  # type: ignore[return-value]


def image_input(image_size, *, divisible_by: int, model: str, min_size: int = 1,
                channels: int = 1, name: str = "image") -> keras.KerasTensor:
    """A ``keras.Input`` of shape ``(H, W, channels)`` after validating ``image_size``.

    See :func:`spatial_size` for the rules; the default is a 1-channel image in [-1, 1].
    """
    height, width = spatial_size(image_size, divisible_by=divisible_by, model=model,
                                 min_size=min_size)
    return keras.Input(shape=(height, width, channels), name=name)


# --------------------------------------------------------------------------- initialisers
def torch_default_initializers(fan_in: int):
    """Kernel and bias initialisers equal to PyTorch's defaults for ``Conv2d``/``ConvTranspose2d``.

    PyTorch draws the kernel from ``kaiming_uniform(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) (``VarianceScaling(1/3, "fan_in", "uniform")`` computes the same fan-in
    for Keras' kernel layouts), and the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    bound = 1.0 / math.sqrt(fan_in)
    return (keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform"),
            keras.initializers.RandomUniform(-bound, bound))


def gan_normal_initializers():
    """N(0, 0.02) kernels and zero biases: ``init_weights(init_type="normal", gain=0.02)``
    of pytorch-CycleGAN-and-pix2pix (and of DCGAN).

    Pass the function itself (``initializers=gan_normal_initializers``) to the layer builders
    below, which call it once per layer: a Keras 3 initializer instance without a seed draws its
    seed once, so one instance shared by several layers gives them identical kernels.
    """
    return keras.initializers.RandomNormal(0.0, 0.02), keras.initializers.Zeros()


def _initializers_for_layer(initializers, fan_in: int):
    """A fresh ``(kernel, bias)`` initialiser pair for one layer (see gan_normal_initializers)."""
    if initializers is None:
        return torch_default_initializers(fan_in)
    if callable(initializers):
        return initializers()
    raise TypeError("initializers must be None or a function returning a fresh "
                    "(kernel_initializer, bias_initializer) pair per layer")


# --------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="ctmri_tf")
class ReflectionPadding2D(keras.layers.Layer):
    """Mirror padding of height and width, as ``torch.nn.ReflectionPad2d(padding)``.

    The edge pixel is not repeated (NumPy's ``mode="reflect"``), so ``padding`` must be smaller
    than the height and the width. Input ``(B, H, W, C)`` -> ``(B, H + 2p, W + 2p, C)``.
    """

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        check_positive_ints(padding=padding)
        self.padding = padding

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        grow = 2 * self.padding
        return (batch, None if height is None else height + grow,
                None if width is None else width + grow, channels)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="ctmri_tf")
class MaxLeakyReLU(keras.layers.Layer):
    """Leaky ReLU written as ``max(x, negative_slope * x)`` (``0 <= negative_slope < 1``): the
    same function as ``keras.layers.LeakyReLU``, built from ops TensorFlow's graph optimiser
    leaves alone.

    Under a second derivative (the WGAN-GP gradient penalty differentiates the critic twice)
    grappler's remapper fails on the fused ``Conv2D + BiasAdd + LeakyRelu`` pattern ("remapper
    failed: ... LeakyReluGrad exist for missing node .../BiasAdd") and then skips its fusions for
    the whole training step: the official-size StarGAN iteration took 4.13 s with
    ``LeakyReLU`` and 3.68 s with this layer on this project's 2-core CPU.
    """

    def __init__(self, negative_slope: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def call(self, inputs):
        return ops.maximum(inputs, ops.cast(self.negative_slope, inputs.dtype) * inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


@keras.saving.register_keras_serializable(package="ctmri_tf")
class IntensityWindows(keras.layers.Layer):
    """Append windowed copies of a 1-channel image as extra channels, like a radiologist's
    display windows.

    ``(B, H, W, 1) -> (B, H, W, 1 + len(windows))``: for each ``(low, high)`` window, given in the
    image's own units (model space, [-1, 1]), the extra channel is
    ``clip(2 (x - low) / (high - low) - 1, -1, 1)``, i.e. ``low`` -> -1 and ``high`` -> +1.

    Why: CT enters the models through one wide window (:data:`ctmri_tf.intensity.CT_WINDOW_HU`,
    4024 HU onto [-1, 1]), where grey matter, white matter and CSF differ by 10-25 HU, about
    0.01 in model space and below the CT noise. A brain window (e.g. 0-80 HU) stretches those
    differences 50-fold before the first convolution, so the network does not have to learn that
    gain. The window is computed in float32 under any mixed-precision policy (bfloat16 would
    round the input to about 4 HU first). It has no weights: the model's inputs and outputs,
    exports and signatures are unchanged.
    """

    def __init__(self, windows=(), **kwargs):
        super().__init__(**kwargs)
        parsed = []
        for window in windows:
            low, high = (float(v) for v in window)
            if not low < high:
                raise ValueError(f"IntensityWindows: window {window!r} needs low < high")
            parsed.append((low, high))
        self.windows = tuple(parsed)

    def call(self, inputs):
        parts = [inputs]
        for low, high in self.windows:
            gain = ops.cast(2.0 / (high - low), inputs.dtype)
            parts.append(ops.clip((inputs - ops.cast(low, inputs.dtype)) * gain - 1.0, -1.0, 1.0))
        return ops.concatenate(parts, axis=-1) if len(parts) > 1 else inputs

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        if channels is not None:
            channels *= 1 + len(self.windows)
        return (*input_shape[:-1], channels)

    def get_config(self):
        return {**super().get_config(), "windows": [list(w) for w in self.windows]}


@keras.saving.register_keras_serializable(package="ctmri_tf")
class InstanceNormalization(keras.layers.Layer):
    """Instance normalisation, ``torch.nn.InstanceNorm2d(eps=1e-5, affine=...)``.

    Every channel of every image is normalised over its own height and width with the biased
    variance, then (with ``affine``) scaled and offset per channel (``gamma``, ``beta``: 2*C
    parameters). The same numbers as ``keras.layers.GroupNormalization(groups=-1)`` (within
    float32 rounding; tested), computed as one fused batch normalisation (TensorFlow's
    ``FusedBatchNormV3`` kernel, ``tf.compat.v1.nn.fused_batch_norm``) of a ``(1, H, W, B*C)`` view of the batch, whose channels are
    the ``(image, channel)`` pairs, with ``gamma`` / ``beta`` tiled over the images as its scale
    and offset. ``GroupNormalization`` runs its float32 statistics, normalisation and their
    gradients as a chain of elementwise ops; on the project's 2-core CPU this form made a bf16
    StarGAN ``demo`` training iteration 19 % shorter and a CycleGAN one 12 %
    (``python -m benchmarks.train_speed --models stargan,cyclegan --presets demo``, README).
    tensorflow-addons' ``InstanceNormalization`` is end-of-life and does not import under
    Keras 3.

    Input ``(B, H, W, C)`` channels-last, any float dtype (statistics in float32); output the
    same shape and dtype. No running statistics: training and inference compute the same.
    """

    def __init__(self, *, affine: bool = True, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.affine = bool(affine)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension must be known, got "
                             f"{input_shape}")
        if self.affine:
            self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        shape = tf.shape(x)
        batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
        # (B, H, W, C) -> (1, H, W, B*C): batch statistics of this view are per-image ones.
        view = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, height, width, batch * channels])
        if self.affine:
            scale = tf.tile(tf.cast(self.gamma, tf.float32), [batch])
            offset = tf.tile(tf.cast(self.beta, tf.float32), [batch])
        else:
            scale = tf.ones([batch * channels], tf.float32)
            offset = tf.zeros([batch * channels], tf.float32)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(view, scale, offset, epsilon=self.epsilon,
                                                   is_training=True)
        return tf.transpose(tf.reshape(y, [height, width, batch, channels]), [2, 0, 1, 3])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "affine": self.affine, "epsilon": self.epsilon}


def instance_norm(*, affine: bool = True, name: str) -> InstanceNormalization:
    """Instance normalisation (:class:`InstanceNormalization`, ``epsilon=1e-5``): every channel
    of every image normalised over its own height and width, which is
    ``torch.nn.InstanceNorm2d`` (``eps=1e-5``). With ``affine`` it learns a per-channel scale
    and offset (2*C parameters, ``InstanceNorm2d(affine=True)``); without, it has none
    (``affine=False``, the CycleGAN reference)."""
    return InstanceNormalization(affine=affine, epsilon=1e-5, name=name)


def same_is_torch_padding(kernel_size: int, strides: int, padding: int, spatial=()) -> bool:
    """Whether Keras ``padding="same"`` equals PyTorch's zero ``padding`` on both sides.

    Keras pads ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` pixels, ``total // 2`` before.
    Stride 1: ``total = k - 1``, equal when ``k == 2 * padding + 1``. Stride 2 on an even size
    ``n``: ``total = k - 2``, equal when ``k == 2 * padding + 2`` (StarGAN's 4x4 / stride 2 /
    padding 1). ``spatial`` holds the input's static height and width (None: unknown; models with
    stride-2 layers require even sizes there, e.g. multiples of 4 for the StarGAN generator).
    """
    if strides == 1:
        return kernel_size == 2 * padding + 1
    if strides == 2:
        return (kernel_size == 2 * padding + 2
                and all(side is None or side % 2 == 0 for side in spatial))
    return False


def same_is_torch_transpose_crop(kernel_size: int, strides: int, padding: int,
                                 output_padding: int) -> bool:
    """Whether a Keras ``padding="same"`` transposed convolution (output ``n * strides``, the
    ``"valid"`` output cropped by ``(k - s) // 2`` before and the rest after) equals PyTorch's
    crop of ``padding`` before and ``padding - output_padding`` after."""
    extra = kernel_size - strides
    return extra >= 0 and extra // 2 == padding and extra - extra // 2 == padding - output_padding


def conv2d(x, filters: int, kernel_size: int, *, strides: int = 1, padding: int = 0,
           padding_mode: str = "zeros", use_bias: bool = True, initializers=None,
           dtype=None, name: str):
    """``torch.nn.Conv2d(kernel_size, stride, padding, padding_mode, bias)`` on ``x``.

    Explicit zero or reflection padding of ``padding`` pixels on every side, then a ``"valid"``
    convolution: output size ``floor((H + 2*padding - kernel_size) / strides) + 1``.

    Args:
        initializers: a function returning a fresh ``(kernel_initializer, bias_initializer)``
            pair, called once for this layer; default: PyTorch's defaults.
        dtype: layer dtype policy, e.g. ``"float32"`` for a model's final layer under mixed
            precision.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    keras_padding = "valid"
    if padding:
        if padding_mode == "reflect":
            x = ReflectionPadding2D(padding, name=f"{name}_reflect_pad")(x)
        elif same_is_torch_padding(kernel_size, strides, padding, x.shape[1:3]):
            keras_padding = "same"
        else:
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    kernel_init, bias_init = _initializers_for_layer(initializers,
                                                     kernel_size * kernel_size * x.shape[-1])
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=keras_padding,
                               use_bias=use_bias, kernel_initializer=kernel_init,
                               bias_initializer=bias_init, dtype=dtype, name=name)(x)


def conv2d_transpose(x, filters: int, kernel_size: int, *, strides: int, padding: int,
                     output_padding: int = 0, use_bias: bool = True, initializers=None,
                     name: str):
    """``torch.nn.ConvTranspose2d(kernel_size, stride, padding, output_padding, bias)`` on ``x``.

    A ``"valid"`` transposed convolution (size ``(H - 1)*strides + kernel_size``) cropped by
    ``padding`` pixels at the start and ``padding - output_padding`` at the end, as PyTorch does:
    output size ``(H - 1)*strides - 2*padding + kernel_size + output_padding``.
    """
    if not 0 <= output_padding <= padding:
        raise ValueError(f"output_padding ({output_padding}) must be between 0 and padding "
                         f"({padding})")
    # PyTorch's fan-in of a ConvTranspose2d weight (in, out, k, k) is out * k * k.
    kernel_init, bias_init = _initializers_for_layer(initializers, kernel_size * kernel_size * filters)
    same = same_is_torch_transpose_crop(kernel_size, strides, padding, output_padding)
    x = keras.layers.Conv2DTranspose(filters, kernel_size, strides=strides,
                                     padding="same" if same else "valid",
                                     use_bias=use_bias, kernel_initializer=kernel_init,
                                     bias_initializer=bias_init, name=name)(x)
    if same:
        return x
    crop = (padding, padding - output_padding)
    if any(crop):
        x = keras.layers.Cropping2D((crop, crop), name=f"{name}_crop")(x)
    return x


def conv_norm_act(x, filters: int, kernel_size: int, *, strides: int = 1, padding: int = 0,
                  padding_mode: str = "zeros", norm: str | None = "instance",
                  affine: bool = True, activation: str | None = "relu",
                  use_bias: bool = False, initializers=None, transpose: bool = False,
                  output_padding: int = 0, name: str):
    """Convolution (or transposed convolution) -> normalisation -> activation.

    Args:
        norm: ``"instance"`` (see :func:`instance_norm`), ``"batch"`` or None.
        affine: instance norm with a learned scale and offset.
        activation: a Keras activation name (``"relu"``) or None.
        transpose: use :func:`conv2d_transpose` (``strides``, ``padding``, ``output_padding``
            with PyTorch's meaning) instead of :func:`conv2d`.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if transpose:
        x = conv2d_transpose(x, filters, kernel_size, strides=strides, padding=padding,
                             output_padding=output_padding, use_bias=use_bias,
                             initializers=initializers, name=f"{name}_conv")
    else:
        x = conv2d(x, filters, kernel_size, strides=strides, padding=padding,
                   padding_mode=padding_mode, use_bias=use_bias, initializers=initializers,
                   name=f"{name}_conv")
    if norm == "instance":
        x = instance_norm(affine=affine, name=f"{name}_norm")(x)
    elif norm == "batch":
        x = keras.layers.BatchNormalization(name=f"{name}_norm")(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def residual_block(x, *, padding_mode: str = "zeros", affine: bool = True,
                   use_bias: bool = False, initializers=None, name: str):
    """``x + IN(conv3x3(ReLU(IN(conv3x3(x)))))``, the residual block of StarGAN and CycleGAN.

    Both 3x3 convolutions keep the channel count and pad 1 pixel (zeros for StarGAN, reflection
    for CycleGAN); there is no activation after the addition.
    """
    channels = x.shape[-1]
    y = conv_norm_act(x, channels, 3, padding=1, padding_mode=padding_mode, affine=affine,
                      use_bias=use_bias, initializers=initializers, name=f"{name}_a")
    y = conv_norm_act(y, channels, 3, padding=1, padding_mode=padding_mode, affine=affine,
                      activation=None, use_bias=use_bias, initializers=initializers,
                      name=f"{name}_b")
    return keras.layers.Add(name=f"{name}_add")([x, y])

"""DeepLabV3+ body segmentation (Chen et al., ECCV 2018) from keras-cv, trained from scratch.

``keras_cv.models.DeepLabV3Plus`` on a randomly initialised ``keras_cv.models.ResNetV2Backbone``
built for 1-channel images. No preset is used: presets download weights from a model hub (which
fails offline) and ImageNet RGB weights do not fit CT/MRI slices anyway.

keras-cv's default segmentation head ends in a softmax; this module gives DeepLabV3Plus the same
head (1x1 conv 256 -> BN -> ReLU -> 4x bilinear up-sampling -> 1x1 conv) without the softmax, so
the model returns logits, in float32 even under a mixed-precision policy. Use
``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` and ``argmax`` over the last axis
(or ``softmax``) to get the body mask.

Any image size: built with ``image_size=None`` the model runs, and traces in a ``tf.function``
(a SavedModel signature), at any height and width that are multiples of 32. keras-cv's
``UpSampling2D(interpolation="bilinear")`` layers cannot be traced with a size unknown until run
time (``keras.ops.image.resize`` compares the new size with 0 in Python), so both of them (the
encoder's x8 and the head's x4) are :class:`BilinearUpSampling`: the same layer, weightless,
resizing with ``tf.image.resize`` on the dynamic shape (the kernel Keras's TensorFlow backend
calls, so outputs are bit-identical and checkpoints unchanged).
"""
from __future__ import annotations

import keras
import keras_cv
import tensorflow as tf

from ctmri_tf.models.layers import check_positive_ints, spatial_size

# conv1 (stride 2), max-pool (stride 2) and three stride-2 stacks.
DOWNSAMPLING = 32


@keras.saving.register_keras_serializable(package="ctmri_tf")
class BilinearUpSampling(keras.layers.UpSampling2D):
    """``keras.layers.UpSampling2D(size, interpolation="bilinear")`` that traces with an unknown
    height and width (see the module docstring); channels-last, TensorFlow backend."""

    def __init__(self, size=(2, 2), **kwargs):
        kwargs.pop("interpolation", None)
        super().__init__(size=size, interpolation="bilinear", **kwargs)

    def call(self, inputs):
        new_size = tf.shape(inputs)[1:3] * tf.constant(self.size, tf.int32)
        return tf.cast(tf.image.resize(inputs, new_size, method="bilinear"), inputs.dtype)


def _dynamic_upsampling(model: keras.Model) -> keras.Model:
    """Make every bilinear ``UpSampling2D`` of ``model`` a :class:`BilinearUpSampling` in place.

    keras-cv builds the encoder's up-sampling inside ``DeepLabV3Plus.__init__`` with no way to
    pass another layer; the layers hold no weights, so changing their class keeps the model's
    graph, weights and checkpoints as they are.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is keras.layers.UpSampling2D and layer.interpolation == "bilinear":
            layer.__class__ = BilinearUpSampling
    return model


def _logits_head(num_classes: int) -> keras.Sequential:
    """keras-cv's DeepLabV3+ segmentation head, minus the final softmax."""
    return keras.Sequential([
        keras.layers.Conv2D(256, 1, padding="same", use_bias=False, name="segmentation_head_conv"),
        keras.layers.BatchNormalization(name="segmentation_head_norm"),
        keras.layers.ReLU(name="segmentation_head_relu"),
        BilinearUpSampling(size=(4, 4), name="segmentation_head_upsampling"),
        keras.layers.Conv2D(num_classes, 1, padding="same", use_bias=False, dtype="float32",
                            name="segmentation_logits"),
    ], name="segmentation_head")


BATCH_NORM_MOMENTUM = 0.9
"""Moving-statistics momentum of every BatchNormalization (keras-cv's ResNetV2 uses 0.99): with
0.99 the inference statistics of a 200-step ``make demo`` run still hold 13 % of their initial
values and the first steps' activations, and its test Dice fell to 0.64 on one machine."""


def deeplab_v3_plus(image_size, num_classes: int = 2, width: int = 64,
                    blocks=(2, 2, 2, 2)) -> keras.Model:
    """DeepLabV3+ with a from-scratch ResNetV2 backbone for 1-channel images.

    Args:
        image_size: int, ``(height, width)`` or None (any size at run time); sizes must be
            multiples of 32, the backbone's output stride.
        num_classes: output classes (2: background, body).
        width: filters of the first ResNetV2 stack; the stacks have ``[w, 2w, 4w, 8w]`` (64 is
            ResNet50V2's width; its bottleneck blocks output 4x that many channels).
        blocks: bottleneck blocks per stack, 4 ints each >= 2 (keras-cv builds a stack's first
            and last block separately); ``(3, 4, 6, 3)`` is ResNet50V2.

    Returns:
        ``keras_cv.models.DeepLabV3Plus`` (a ``keras.Model``) named ``deeplab_v3_plus``: image
        ``(B, H, W, 1)`` in [-1, 1] -> logits ``(B, H, W, num_classes)`` float32 (no softmax).
    """
    check_positive_ints(num_classes=num_classes, width=width)
    blocks = tuple(blocks)
    if len(blocks) != 4 or any(isinstance(b, bool) or not isinstance(b, int) or b < 2
                               for b in blocks):
        raise ValueError(f"blocks must be 4 integers >= 2 (keras-cv's ResNetV2 stacks build "
                         f"their first and last block separately), got {blocks!r}")
    rows, cols = spatial_size(image_size, divisible_by=DOWNSAMPLING, model="deeplab_v3_plus")
    backbone = keras_cv.models.ResNetV2Backbone(
        stackwise_filters=[width, 2 * width, 4 * width, 8 * width],
        stackwise_blocks=list(blocks),
        stackwise_strides=[1, 2, 2, 2],
        include_rescaling=False,       # inputs are already in [-1, 1]
        input_shape=(rows, cols, 1),
        name="resnet_v2_backbone",
    )
    # DeepLabV3+ reads the stacks' outputs (P2, P5); the backbone's final BatchNormalization is
    # not on any path to the logits, so freeze it rather than hand the optimiser
    # gradient-less variables.
    backbone.get_layer("post_bn").trainable = False
    model = _dynamic_upsampling(keras_cv.models.DeepLabV3Plus(
        backbone=backbone, num_classes=num_classes, segmentation_head=_logits_head(num_classes),
        name="deeplab_v3_plus"))
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCH_NORM_MOMENTUM
    return model


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)

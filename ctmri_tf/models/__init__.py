"""Keras 3 models of ctmri-tf: small functions returning functional ``keras.Model``s.

All take 1-channel images ``(B, H, W, 1)`` in model space [-1, 1], channels-last, and return
float32 outputs even under ``keras.mixed_precision.set_global_policy("mixed_bfloat16")``.

    stargan     stargan_generator, stargan_discriminator (Choi et al. 2018, official layout)
    cyclegan    resnet_generator, patchgan_discriminator (Zhu et al. 2017, reference layout)
    deeplab     deeplab_v3_plus (keras-cv DeepLabV3+ on a from-scratch ResNetV2, logits)
    classifier  modality_classifier (CT = 0, MRI = 1 logits)
    layers      shared blocks: instance norm, PyTorch-padded convolutions, residual block

``deeplab_v3_plus`` is imported on first use so that the GAN models do not pay for importing
keras-cv.
"""
from ctmri_tf.models.classifier import modality_classifier
from ctmri_tf.models.cyclegan import patchgan_discriminator, resnet_generator
from ctmri_tf.models.stargan import stargan_discriminator, stargan_generator

__all__ = ["stargan_generator", "stargan_discriminator", "resnet_generator",
           "patchgan_discriminator", "deeplab_v3_plus", "modality_classifier"]


def __getattr__(name):
    if name == "deeplab_v3_plus":
        from ctmri_tf.models.deeplab import deeplab_v3_plus
        return deeplab_v3_plus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""GAN and classification losses, one value per example.

Every function returns a float32 vector of shape ``(B,)``: the loss of each example, averaged over
its pixels/patches. Trainers reduce it with
``tf.nn.compute_average_loss(per_example, global_batch_size=...)`` so that a MirroredStrategy
replica and a single device compute the same gradients. Inputs of any float dtype (bfloat16
under mixed precision) are cast to float32 first.

Logits are the raw outputs of the discriminators/classifiers (no sigmoid/softmax); images are in
model space [-1, 1].
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from ctmri_tf import metrics


def _f32(x) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def _mean_per_example(x: tf.Tensor) -> tf.Tensor:
    """Mean over every axis but the first: ``(B, ...) -> (B,)``; ``(B,)`` is returned as is."""
    x = _f32(x)
    if x.shape.rank == 1:
        return x
    return tf.reduce_mean(tf.reshape(x, (tf.shape(x)[0], -1)), axis=1)


def _same_shape(a: tf.Tensor, b: tf.Tensor, what: str) -> None:
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"{what}: shapes {a.shape} and {b.shape} differ")


def wgan_critic_loss(real_logits, fake_logits) -> tf.Tensor:
    """Wasserstein critic loss ``mean(D(fake)) - mean(D(real))`` per example, ``(B,)``.

    Args:
        real_logits, fake_logits: critic outputs ``(B, ...)`` (StarGAN: ``(B, h, w, 1)`` patches)
            for real images and for generated ones.
    """
    return _mean_per_example(fake_logits) - _mean_per_example(real_logits)


def wgan_generator_loss(fake_logits) -> tf.Tensor:
    """Wasserstein generator loss ``-mean(D(fake))`` per example, ``(B,)``."""
    return -_mean_per_example(fake_logits)


def gradient_penalty(critic_fn: Callable[[tf.Tensor], tf.Tensor], real, fake, alpha) -> tf.Tensor:
    """WGAN-GP penalty ``(||grad_x critic(x_hat)||_2 - 1)^2`` per example, ``(B,)``.

    ``x_hat = alpha * real + (1 - alpha) * fake`` (Gulrajani et al. 2017). The gradient is that of
    the sum of the critic's outputs (for a patch critic, of every patch logit, as in StarGAN's
    ``torch.autograd.grad(..., grad_outputs=ones)``); its norm is taken over all non-batch axes.
    The computation is differentiable with respect to the critic's weights: call it inside the
    trainer's ``tf.GradientTape``.

    Args:
        critic_fn: image batch -> critic logits tensor ``(B, ...)``. For the StarGAN
            discriminator, which also returns class logits, pass
            ``lambda x: disc(x, training=True)[0]``.
        real, fake: images ``(B, H, W, C)`` in [-1, 1] (``fake`` usually
            ``tf.stop_gradient``-ed generator output).
        alpha: interpolation weights in [0, 1], shape ``(B, 1, 1, 1)`` (e.g.
            ``tf.random.uniform((B, 1, 1, 1))``).
    """
    real, fake, alpha = _f32(real), _f32(fake), _f32(alpha)
    _same_shape(real, fake, "gradient_penalty")
    x_hat = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        critic = _f32(critic_fn(x_hat))
        total = tf.reduce_sum(critic)
    grad = tape.gradient(total, x_hat)
    if grad is None:
        raise ValueError("gradient_penalty: critic_fn's output does not depend on its input")
    grad = tf.reshape(grad, (tf.shape(grad)[0], -1))
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=1))
    return tf.square(norm - 1.0)


def domain_classification_loss(labels_onehot, logits) -> tf.Tensor:
    """Softmax cross-entropy ``-sum(labels * log_softmax(logits))`` per example, ``(B,)``.

    Args:
        labels_onehot: ``(B, D)`` one-hot (or soft) domain labels, e.g. ``[1, 0]`` = CT.
        logits: ``(B, D)`` class logits (StarGAN's ``cls`` output, the modality classifier).
    """
    labels, logits = _f32(labels_onehot), _f32(logits)
    _same_shape(labels, logits, "domain_classification_loss")
    return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def l1_loss(a, b) -> tf.Tensor:
    """Mean absolute difference ``mean(|a - b|)`` per example, ``(B,)``, in the units of the
    inputs (model space [-1, 1] for the cycle-consistency / reconstruction losses)."""
    a, b = _f32(a), _f32(b)
    _same_shape(a, b, "l1_loss")
    return _mean_per_example(tf.abs(a - b))


def ssim_loss(a, b) -> tf.Tensor:
    """``1 - SSIM(a, b)`` per example, ``(B,)``, for images in model space [-1, 1].

    ``tf.image.ssim`` with the window and constants of the benchmarks' metric
    (``ctmri_tf.metrics``: 11 x 11 Gaussian, sigma 1.5, K1 0.01, K2 0.03) and ``max_val`` 2,
    the width of [-1, 1], so that the constants are those of the metric on [0, 1] MRI. Each
    example's SSIM is the mean of its map over every channel and window position (the whole
    image, background included). 0 for identical images, up to 2.

    Args:
        a, b: ``(B, H, W, C)`` with ``H, W >= 11``.
    """
    a, b = _f32(a), _f32(b)
    _same_shape(a, b, "ssim_loss")
    return 1.0 - tf.image.ssim(a, b, max_val=2.0, filter_size=metrics.SSIM_FILTER_SIZE,
                               filter_sigma=metrics.SSIM_FILTER_SIGMA, k1=metrics.SSIM_K1,
                               k2=metrics.SSIM_K2)


def lsgan_discriminator_loss(real_logits, fake_logits) -> tf.Tensor:
    """Least-squares GAN discriminator loss ``0.5 * [mean((D(x) - 1)^2) + mean(D(G(z))^2)]``
    per example, ``(B,)`` (CycleGAN; Mao et al. 2017)."""
    return 0.5 * (_mean_per_example(tf.square(_f32(real_logits) - 1.0))
                  + _mean_per_example(tf.square(_f32(fake_logits))))


def lsgan_generator_loss(fake_logits) -> tf.Tensor:
    """Least-squares GAN generator loss ``mean((D(G(z)) - 1)^2)`` per example, ``(B,)``."""
    return _mean_per_example(tf.square(_f32(fake_logits) - 1.0))

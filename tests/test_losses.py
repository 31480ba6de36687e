"""Per-example losses against values computed by hand with NumPy."""
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import losses

RNG = np.random.default_rng(0)


def _np(x):
    return np.asarray(x, dtype=np.float64)


def test_wgan_losses_are_per_example_patch_means():
    real = RNG.normal(size=(3, 2, 2, 1)).astype(np.float32)
    fake = RNG.normal(size=(3, 2, 2, 1)).astype(np.float32)
    critic = losses.wgan_critic_loss(real, fake)
    gen = losses.wgan_generator_loss(fake)
    assert critic.shape == (3,) and gen.shape == (3,)
    assert critic.dtype == tf.float32
    mean_fake, mean_real = _np(fake).mean(axis=(1, 2, 3)), _np(real).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(critic, mean_fake - mean_real, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gen, -_np(fake).mean(axis=(1, 2, 3)), rtol=1e-6, atol=1e-6)
    # By hand: the fake patches average 1.0, the real ones 0.5 -> critic loss 0.5.
    r = np.array([0.0, 1.0], np.float32).reshape(1, 2, 1, 1)
    f = np.array([0.5, 1.5], np.float32).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(losses.wgan_critic_loss(r, f), [0.5])
    np.testing.assert_allclose(losses.wgan_generator_loss(f), [-1.0])


def test_wgan_losses_accept_rank1_logits_and_bfloat16():
    real = tf.constant([1.0, -2.0], tf.bfloat16)
    fake = tf.constant([0.5, 3.0], tf.bfloat16)
    out = losses.wgan_critic_loss(real, fake)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out, [-0.5, 5.0])


def test_gradient_penalty_of_linear_critic_is_from_its_weights():
    # critic(x) = sum(w * x): grad_x = w for every example -> (||w|| - 1)^2.
    w = RNG.normal(size=(1, 4, 4, 1)).astype(np.float32)
    real = RNG.uniform(-1, 1, size=(2, 4, 4, 1)).astype(np.float32)
    fake = RNG.uniform(-1, 1, size=(2, 4, 4, 1)).astype(np.float32)
    alpha = np.array([0.3, 0.9], np.float32).reshape(2, 1, 1, 1)

    def critic(x):
        return tf.reduce_sum(w * x, axis=[1, 2, 3])

    gp = losses.gradient_penalty(critic, real, fake, alpha)
    expected = (np.linalg.norm(_np(w)) - 1.0) ** 2
    assert gp.shape == (2,) and gp.dtype == tf.float32
    np.testing.assert_allclose(gp, [expected, expected], rtol=1e-5)


def test_gradient_penalty_interpolates_and_sums_patch_outputs():
    # critic(x) = 0.5 * w * x^2 per pixel (a "patch" output per pixel): the gradient of the sum
    # of the patches is w * x_hat with x_hat = alpha * real + (1 - alpha) * fake.
    w = RNG.uniform(0.5, 2.0, size=(1, 3, 3, 1)).astype(np.float32)
    real = RNG.uniform(-1, 1, size=(3, 3, 3, 1)).astype(np.float32)
    fake = RNG.uniform(-1, 1, size=(3, 3, 3, 1)).astype(np.float32)
    alpha = np.array([0.0, 0.5, 1.0], np.float32).reshape(3, 1, 1, 1)

    gp = losses.gradient_penalty(lambda x: 0.5 * w * x ** 2, real, fake, alpha)

    x_hat = _np(alpha) * _np(real) + (1 - _np(alpha)) * _np(fake)
    grad = _np(w) * x_hat
    expected = (np.sqrt((grad ** 2).sum(axis=(1, 2, 3))) - 1.0) ** 2
    np.testing.assert_allclose(gp, expected, rtol=1e-5)


def test_gradient_penalty_is_differentiable_in_critic_weights():
    # GP = (||w|| - 1)^2 for a linear critic, so d(sum GP)/dw = B * 2 (||w|| - 1) w / ||w||.
    w_np = np.array([0.6, -1.2, 0.8, 2.0], np.float32).reshape(1, 2, 2, 1)
    w = tf.Variable(w_np)
    real = tf.ones((2, 2, 2, 1))
    fake = -tf.ones((2, 2, 2, 1))
    alpha = tf.fill((2, 1, 1, 1), 0.25)
    def critic(x):
        return tf.reduce_sum(w * x, axis=[1, 2, 3])

    with tf.GradientTape() as tape:
        total = tf.reduce_sum(losses.gradient_penalty(critic, real, fake, alpha))
    dw = tape.gradient(total, w)
    norm = np.linalg.norm(_np(w_np))
    np.testing.assert_allclose(dw, 2 * 2 * (norm - 1) * _np(w_np) / norm, rtol=1e-5)


def test_gradient_penalty_rejects_a_critic_that_ignores_its_input():
    x = tf.zeros((2, 2, 2, 1))
    with pytest.raises(ValueError, match="does not depend"):
        losses.gradient_penalty(lambda _: tf.constant([1.0, 2.0]), x, x, tf.zeros((2, 1, 1, 1)))


def test_domain_classification_loss_is_softmax_cross_entropy():
    logits = np.array([[2.0, -1.0], [0.0, 0.0], [-3.0, 1.5]], np.float32)
    labels = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    out = losses.domain_classification_loss(labels, logits)
    lg = _np(logits)
    log_softmax = lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))
    expected = -(labels * log_softmax).sum(axis=1)
    assert out.shape == (3,) and out.dtype == tf.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # By hand: equal logits -> log(2); example 0 -> log(1 + e^-3).
    np.testing.assert_allclose(out[1], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(out[0], np.log1p(np.exp(-3.0)), rtol=1e-5)


def test_domain_classification_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="domain_classification_loss"):
        losses.domain_classification_loss(np.zeros((2, 3), np.float32),
                                          np.zeros((2, 2), np.float32))


def test_l1_loss_per_example():
    a = np.zeros((2, 2, 2, 1), np.float32)
    b = np.array([[1, -1, 2, -2], [0.5, 0.5, 0.5, -0.5]], np.float32).reshape(2, 2, 2, 1)
    out = losses.l1_loss(a, b)
    np.testing.assert_allclose(out, [1.5, 0.5])
    assert out.shape == (2,) and out.dtype == tf.float32
    with pytest.raises(ValueError, match="l1_loss"):
        losses.l1_loss(np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 4, 4), np.float32))


def test_ssim_loss_of_flat_images_is_the_luminance_term_by_hand():
    """Flat images a and b: every window has zero variance, so SSIM = (2ab + C1) / (a^2 + b^2
    + C1) with C1 = (0.01 x 2)^2 ([-1, 1] is 2 wide); identical images lose 0."""
    a = np.full((2, 16, 16, 1), -0.5, np.float32)
    b = np.stack([np.full((16, 16, 1), -0.5, np.float32), np.full((16, 16, 1), 0.3, np.float32)])
    c1 = (0.01 * 2.0) ** 2
    expected = [0.0, 1.0 - (2 * -0.5 * 0.3 + c1) / (0.25 + 0.09 + c1)]
    got = losses.ssim_loss(a, tf.constant(b, tf.bfloat16))
    assert got.shape == (2,) and got.dtype == tf.float32
    np.testing.assert_allclose(got, expected, atol=2e-3)      # b's 0.3 in bfloat16: 0.30078
    with pytest.raises(ValueError, match="ssim_loss"):
        losses.ssim_loss(a, a[:, :15])


def test_ssim_loss_is_differentiable_and_falls_towards_the_target():
    target = tf.constant(RNG.uniform(-1, 1, (1, 16, 16, 1)), tf.float32)
    x = tf.Variable(tf.zeros_like(target))
    before = float(losses.ssim_loss(target, x)[0])
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = losses.ssim_loss(target, x)[0]
        x.assign_sub(0.5 * tape.gradient(loss, x))
    assert float(losses.ssim_loss(target, x)[0]) < 0.5 * before


def test_lsgan_losses():
    real = np.array([[1.0, 0.0], [2.0, 1.0]], np.float32).reshape(2, 2, 1, 1)
    fake = np.array([[0.0, 1.0], [-1.0, 3.0]], np.float32).reshape(2, 2, 1, 1)
    d = losses.lsgan_discriminator_loss(real, fake)
    g = losses.lsgan_generator_loss(fake)
    # Example 0: real (0 + 1)/2 = 0.5, fake (0 + 1)/2 = 0.5 -> 0.5 * 1.0 = 0.5.
    # Example 1: real (1 + 0)/2 = 0.5, fake (1 + 9)/2 = 5   -> 0.5 * 5.5 = 2.75.
    np.testing.assert_allclose(d, [0.5, 2.75])
    # Generator: example 0 (1 + 0)/2 = 0.5; example 1 (4 + 4)/2 = 4.
    np.testing.assert_allclose(g, [0.5, 4.0])
    assert d.shape == (2,) and g.shape == (2,)


def test_losses_work_in_a_tf_function_with_unknown_batch():
    spec = tf.TensorSpec((None, 2, 2, 1), tf.float32)

    @tf.function(input_signature=[spec, spec])
    def both(a, b):
        return losses.l1_loss(a, b), losses.lsgan_discriminator_loss(a, b)

    l1, lsgan = both(tf.ones((3, 2, 2, 1)), tf.zeros((3, 2, 2, 1)))
    np.testing.assert_allclose(l1, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(lsgan, [0.0, 0.0, 0.0])

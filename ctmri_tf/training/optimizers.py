"""Adam as one fused TensorFlow kernel per variable.

Keras 3's ``Adam.update_step`` is written with backend-neutral ops: about a dozen element-wise
passes over every weight tensor (``m``, ``v``, the square, the square root, the division, three
assignments), each writing a new temporary. For StarGAN's official critic at 128 px (44.7 M
weights, updated every step) that took 0.31 s per update on one core of this project's CPU,
against 0.09-0.10 s for TensorFlow's ``ResourceApplyAdam`` kernel, which makes one pass
(``/tmp`` micro-benchmark of the two on the critic's weight shapes, see README Benchmarks).
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ctmri_tf")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose dense float updates run TensorFlow's fused
    ``ResourceApplyAdam`` kernel; the same update rule, to float32 rounding:

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + epsilon)``, ``t`` = update number
    (1-based), as Keras's ``Adam`` (and ``tf.raw_ops.ApplyAdam``) define it.

    Sparse gradients (``tf.IndexedSlices``), ``amsgrad`` and other backends take Keras's own
    path. Works under ``tf.distribute`` strategies: Keras calls ``update_step`` inside
    ``strategy.extended.update`` with each device's copy of the variable, where the optimizer's
    mirrored slot variables resolve to the same device's copies.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or keras.backend.backend() != "tensorflow"
                or isinstance(gradient, tf.IndexedSlices)):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(m), v=_handle(v),
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), local_step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), local_step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype), use_locking=False)


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (in an update context, of the
    current device's copy of a distributed one)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle

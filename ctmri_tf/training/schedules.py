"""Learning-rate schedules keyed to the global training step."""
from __future__ import annotations

import keras
import tensorflow as tf

from ctmri_tf.configs import OptimizerConfig, ScheduleConfig
from ctmri_tf.training.optimizers import FusedAdam


class LinearDecayToZero(keras.optimizers.schedules.LearningRateSchedule):
    """Constant, then linear decay to 0 over the last ``decay_steps`` training steps.

    As in the official StarGAN/CycleGAN code (which decays in chunks; this decays every step).
    An optimizer that is updated only every ``steps_per_update`` training steps (StarGAN's
    generator, every ``n_critic`` steps) passes that factor: its update ``k`` (0-based,
    ``optimizer.iterations``) happens at training step ``(k + 1) * steps_per_update - 1``.
    ``dense_updates`` of them come first, one every step (StarGAN's generator during its
    regression warm-up, ``loss.adversarial_start_step``): update ``k < dense_updates`` happens
    at step ``k``, later ones at ``dense_updates + (k - dense_updates + 1) * steps_per_update - 1``.
    An optimizer whose updates begin only at training step ``first_step`` (StarGAN's critic after
    that warm-up) has every update's step shifted by it.

    The rate used at training step ``t`` (0-based) of ``total_steps`` is
    ``initial * min(1, (total_steps - t) / decay_steps)``: ``initial`` up to step
    ``total_steps - decay_steps``, ``initial / decay_steps`` at the last step.
    """

    def __init__(self, initial_learning_rate: float, total_steps: int, decay_steps: int,
                 steps_per_update: int = 1, dense_updates: int = 0, first_step: int = 0):
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = int(total_steps)
        self.decay_steps = int(decay_steps)
        self.steps_per_update = int(steps_per_update)
        self.dense_updates = int(dense_updates)
        self.first_step = int(first_step)

    def training_step(self, iteration):
        """The 0-based training step at which optimizer update ``iteration`` happens."""
        k = tf.cast(iteration, tf.float32)
        dense = float(self.dense_updates)
        sparse = dense + (k - dense + 1.0) * self.steps_per_update - 1.0
        return float(self.first_step) + tf.where(k < dense, k, sparse)

    def __call__(self, iteration):
        if self.decay_steps <= 0:
            return tf.constant(self.initial_learning_rate, tf.float32)
        remaining = self.total_steps - self.training_step(iteration)
        fraction = tf.clip_by_value(remaining / self.decay_steps, 0.0, 1.0)
        return self.initial_learning_rate * fraction

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "total_steps": self.total_steps, "decay_steps": self.decay_steps,
                "steps_per_update": self.steps_per_update, "dense_updates": self.dense_updates,
                "first_step": self.first_step}


def linear_decay_adam(optimizer: OptimizerConfig, schedule: ScheduleConfig, name: str,
                      steps_per_update: int = 1, dense_updates: int = 0,
                      first_step: int = 0) -> FusedAdam:
    """Adam (:class:`ctmri_tf.training.optimizers.FusedAdam`, Keras's rule in one fused kernel)
    with ``optimizer``'s settings whose learning rate is ``optimizer.learning_rate``
    decaying linearly to 0 over the last ``schedule.decay_steps`` of ``schedule.steps``
    (:class:`LinearDecayToZero`; ``steps_per_update``, ``dense_updates``, ``first_step`` as
    there): every trainer's optimizer."""
    return FusedAdam(
        learning_rate=LinearDecayToZero(optimizer.learning_rate, schedule.steps,
                                        schedule.decay_steps, steps_per_update=steps_per_update,
                                        dense_updates=dense_updates,
                                        first_step=first_step),
        beta_1=optimizer.beta_1, beta_2=optimizer.beta_2, epsilon=optimizer.epsilon, name=name)

"""Process-wide Keras settings that must be fixed before any model is built."""
from __future__ import annotations

import keras

from ctmri_tf.configs import PRECISIONS
from ctmri_tf.errors import CtmriInputError


def configure_keras(seed: int, precision: str = "float32") -> None:
    """Seed Python, NumPy, TensorFlow and Keras and set the Keras global dtype policy.

    Call it before building models: the weights' initial values then depend only on ``seed``.
    ``precision="mixed_bfloat16"`` computes layers in bfloat16 with float32 variables; the
    models' loss-feeding outputs stay float32 and trainers compute losses in float32.

    Raises:
        CtmriInputError: unknown precision.
    """
    if precision not in PRECISIONS:
        raise CtmriInputError(None, f"precision={precision!r} is not supported; valid values: "
                                    f"{', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(int(seed))


def prepare_task(config, strategy, *, groups: int = 1, reason: str = "") -> None:
    """What every trainer does before building its models under ``strategy``: validate
    ``config``, check that the global batch ``data.batch_size`` splits evenly over the replicas
    (into ``groups`` equal parts on each, e.g. StarGAN's CT and MRI halves), then
    :func:`configure_keras` with the config's seed and precision.

    Args:
        config: an experiment config of ``ctmri_tf.configs``.
        strategy: the ``tf.distribute.Strategy`` that will run the steps.
        groups: equal parts each replica's share of the batch is split into.
        reason: appended to the error message, saying why.

    Raises:
        CtmriInputError: the config is invalid, or the batch does not split evenly.
    """
    config.validate()
    replicas = strategy.num_replicas_in_sync
    if config.data.batch_size % (groups * replicas):
        over = f"{groups} x {replicas}" if groups > 1 else f"the {replicas}"
        raise CtmriInputError(None, f"data.batch_size={config.data.batch_size} must be "
                                    f"divisible by {over} replicas{reason}")
    configure_keras(config.seed, config.precision)

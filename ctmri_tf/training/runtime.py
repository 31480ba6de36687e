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

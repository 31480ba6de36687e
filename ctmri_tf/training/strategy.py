"""Choose where training runs: ``tf.distribute`` strategies by name.

A TPU strategy is deliberately not offered: it cannot be tested here and the models use ops
(instance norm as a fused batch norm of a reshaped view, nested gradient tapes) that we have
not validated on TPU.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Sequence

from ctmri_tf.errors import CtmriInputError

if TYPE_CHECKING:
    import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored")
"""The strategy names (importing this module does not import TensorFlow: command lines list
them in ``--help`` before TensorFlow loads)."""


def make_strategy(name: str, *, devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """Build a ``tf.distribute.Strategy``.

    Args:
        name: ``default`` (no distribution), ``one_device`` (the first GPU, else the CPU),
            ``mirrored`` (synchronous data parallelism over ``devices``; by default all GPUs,
            or all logical CPU devices when there is no GPU), ``multi_worker_mirrored``
            (synchronous over several machines described by the ``TF_CONFIG`` environment
            variable; must be created before any other TensorFlow op runs).
        devices: explicit devices for ``mirrored`` / ``one_device`` (e.g. ``["/cpu:0", "/cpu:1"]``).

    Raises:
        CtmriInputError: unknown name (lists the valid ones) or malformed ``TF_CONFIG``.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        if devices:
            device = devices[0]
        else:
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker_mirrored":
        raw = os.environ.get("TF_CONFIG")
        if raw:
            try:
                cluster = json.loads(raw)
                cluster["cluster"], cluster["task"]["type"], cluster["task"]["index"]
            except (ValueError, KeyError, TypeError) as err:
                raise CtmriInputError(
                    None, "TF_CONFIG must be JSON like {\"cluster\": {\"worker\": [\"host:port\", "
                          f"...]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}} ({err!r})"
                ) from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise CtmriInputError(None, f"unknown strategy {name!r}; valid strategies: "
                                f"{', '.join(STRATEGIES)}")

"""TensorBoard output of a training run: scalars, image grids and hyperparameters.

Tags written by the training loop:
    ``loss/<name>``            every loss a trainer returns (float32, already batch-averaged)
    ``learning_rate/<name>``   each optimizer's current learning rate
    ``validation/<metric>``    ``psnr_mri_to_ct`` (dB), ``ssim_mri_to_ct``, ``psnr_ct_to_mri``...
    ``perf/steps_per_second``  training throughput since the previous summary
    ``samples``                image grid (input | translated | reconstructed | ground truth)
    hparams plugin             the flattened experiment config (``model.generator_filters`` ...)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp


class SummaryWriter:
    """A TensorBoard writer for one run's ``logs/`` folder.

    Args:
        logdir: the event-file folder.
        enabled: ``False`` on non-chief workers (nothing is written).
    """

    def __init__(self, logdir: str | os.PathLike, *, enabled: bool = True):
        self.enabled = enabled
        self._writer = (tf.summary.create_file_writer(str(logdir)) if enabled
                        else tf.summary.create_noop_writer())

    def hparams(self, values: Mapping[str, Any], *, trial_id: str | None = None) -> None:
        """Record hyperparameters (bool/int/float/str values) with the hparams plugin."""
        with self._writer.as_default():
            hp.hparams(dict(values), trial_id=trial_id)

    def scalars(self, step: int, values: Mapping[str, float], *, prefix: str = "") -> None:
        """One scalar per entry, tagged ``<prefix><name>``."""
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(prefix + name, float(value))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """An image summary from a uint8 ``(H, W)`` gray or ``(H, W, C)`` image."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        with self._writer.as_default(step=step):
            tf.summary.image(tag, image[None], max_outputs=1)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def flatten_hparams(config) -> dict[str, bool | int | float | str]:
    """A config dataclass as ``{"data.image_size": 128, ...}`` with hparams-plugin value types
    (``None`` and tuples become strings)."""
    flat: dict[str, bool | int | float | str] = {}

    def visit(obj, prefix):
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if dataclasses.is_dataclass(value):
                visit(value, f"{prefix}{field.name}.")
            elif isinstance(value, (bool, int, float, str)):
                flat[prefix + field.name] = value
            else:
                flat[prefix + field.name] = str(value)

    visit(config, "")
    experiment = getattr(config, "experiment", None)
    if experiment:
        flat["experiment"] = experiment
    return flat

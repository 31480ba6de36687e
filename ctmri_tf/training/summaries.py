"""TensorBoard output of a training run: scalars, image grids and hyperparameters.

Tags written by the training loop:
    ``loss/<name>``            every loss a trainer returns (float32, already batch-averaged)
    ``learning_rate/<name>``   each optimizer's current learning rate
    ``validation/<metric>``    the translation trainers: ``<direction>/<metric>_<scale>``, e.g.
                               ``validation/mri_to_ct/psnr_db_hu_range`` (CT window -1024..3000
                               HU scaled to [0, 1]), ``validation/ct_to_mri/ssim_unit_range``
                               (MRI scale [0, 1]), ``validation/mri_to_ct/mae_hu``; each with a
                               description saying the scale
                               (``translation_validation.SUMMARY_TAGS``); segmentation and
                               classifier: ``validation/<metric>`` (``mean_iou``, ``accuracy``...)
    ``perf/steps_per_second``  training throughput since the previous summary
    ``samples``                image grid (input | translated | reconstructed | ground truth),
                               rows labelled with the direction and the CT window
    hparams plugin             the flattened experiment config (``model.generator_filters`` ...)
                               and the metrics the dashboard compares runs by

The events are written in the run folder itself, so ``tensorboard --logdir runs/`` names each
run by its folder (``stargan-demo``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp


class SummaryWriter:
    """A TensorBoard writer for one run's event files (``RunDir.logs``).

    Args:
        logdir: the event-file folder.
        enabled: ``False`` on non-chief workers (nothing is written).
    """

    def __init__(self, logdir: str | os.PathLike, *, enabled: bool = True):
        self.enabled = enabled
        self._writer = (tf.summary.create_file_writer(str(logdir)) if enabled
                        else tf.summary.create_noop_writer())

    def hparams(self, values: Mapping[str, Any], *, trial_id: str | None = None,
                metrics: Sequence[tuple[str, str]] = ()) -> None:
        """Record hyperparameters (bool/int/float/str values) with the hparams plugin.

        Args:
            values: ``{name: value}``.
            trial_id: the session's name in the dashboard.
            metrics: ``(tag, display name)`` of the scalars the HParams dashboard shows for
                each run (its last value: the final metric); declared with
                ``hp.hparams_config`` in this run's event file.
        """
        with self._writer.as_default():
            if metrics:
                hp.hparams_config(hparams=[hp.HParam(name) for name in values],
                                  metrics=[hp.Metric(tag, display_name=display)
                                           for tag, display in metrics])
            hp.hparams(dict(values), trial_id=trial_id)

    def scalars(self, step: int, values: Mapping[str, float], *, prefix: str = "",
                tags: Mapping[str, tuple[str, str]] | None = None) -> None:
        """One scalar per entry, tagged ``<prefix><name>``.

        Args:
            tags: ``{name: (tag, description)}``: entries named there are tagged
                ``<prefix><tag>`` and carry the description (shown by TensorBoard).
        """
        tags = tags or {}
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tag, description = tags.get(name, (name, None))
                tf.summary.scalar(prefix + tag, float(value), description=description)

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

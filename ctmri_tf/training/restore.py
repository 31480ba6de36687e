"""Trained models out of a run folder, the way every trainer's ``load_*`` function gets them.

A run folder is an input here: nothing in it is created or changed.

* :func:`restore_models` (inference, the experiment registry's ``load``): only the inference
  models are built, in float32 and for any image size, from the run's ``config.json``, and the
  newest intact checkpoint is read into them by name (``tf.train.Checkpoint(generator=...)``,
  the rest of the checkpoint - critics, optimizers, image pools - expected to stay unread). The
  global Keras dtype policy is left as it was (training may have run in mixed precision: the
  checkpointed variables are float32 either way).

Resuming a training run restores the whole training state instead (``ctmri_tf.training.loop``).
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Mapping

import keras
import tensorflow as tf

from ctmri_tf.configs import ExperimentConfig
from ctmri_tf.training.checkpointing import TrainingCheckpoint
from ctmri_tf.training.run_dir import RunDir, read_run


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Build Keras layers in float32 inside the block; the global dtype policy is restored
    afterwards (whatever it was: a mixed-precision training in the same process keeps its
    own)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def restore_models(run_dir: str | os.PathLike, experiment: str,
                   build: Callable[[ExperimentConfig], Mapping[str, object]]
                   ) -> tuple[RunDir, ExperimentConfig, dict]:
    """Read a run's newest intact checkpoint into inference models only.

    Args:
        run_dir: the run folder (read only).
        experiment: the experiment the run must be.
        build: ``build(config) -> {checkpoint name: trackable}``: the models under the names the
            trainer's ``checkpoint_objects()`` gives them (e.g. ``{"generator": G}``), built
            for inference (any image size); called under :func:`float32_policy`.

    Returns:
        ``(run, config, objects)``: ``objects`` as ``build`` returned them, holding the
        checkpointed weights (every variable of theirs matched; the checkpoint's other objects
        are not built and stay unread).

    Raises:
        CtmriInputError: not a run folder of ``experiment``, or no checkpoint whose values fit
            the models (corrupt, incomplete or from another model config; naming the folder).
    """
    run, config = read_run(run_dir, experiment)
    with float32_policy():
        objects = dict(build(config))
    TrainingCheckpoint(run.checkpoints, step=tf.Variable(0, dtype=tf.int64, trainable=False),
                       rng=tf.random.Generator.from_seed(config.seed), partial=True,
                       **objects).restore_latest()
    return run, config, objects

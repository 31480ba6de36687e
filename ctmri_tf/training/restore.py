"""Trained models out of a run folder, the way every trainer's ``load_*`` function gets them.

A run folder is an input here: nothing in it is created or changed. The trainer's own task is
rebuilt from the run's ``config.json`` (so the checkpoint's object graph matches by
construction), its newest checkpoint is restored, and the weights are copied into a float32
inference model (training may have run in mixed precision, or at one fixed image size).
"""
from __future__ import annotations

import os
from typing import Callable

import keras
import tensorflow as tf

from ctmri_tf.configs import ExperimentConfig
from ctmri_tf.training.checkpointing import TrainingCheckpoint
from ctmri_tf.training.run_dir import RunDir, read_run


def restore_task(run_dir: str | os.PathLike, experiment: str,
                 task_class: Callable) -> tuple[RunDir, ExperimentConfig, object]:
    """Rebuild a run's training task and restore its newest checkpoint into it.

    Args:
        run_dir: the run folder (read only).
        experiment: the experiment the run must be (``stargan``, ``cyclegan``, ``segmentation``,
            ``classifier``).
        task_class: the trainer's task class, called as ``task_class(config, strategy)``
            (the default strategy) and restored through its ``checkpoint_objects()``.

    Returns:
        ``(run, config, task)``; the task's models hold the checkpointed weights.

    Raises:
        CtmriInputError: not a run folder of ``experiment``, or no restorable checkpoint (naming
            the file or folder).
    """
    run, config = read_run(run_dir, experiment)
    task = task_class(config, tf.distribute.get_strategy())
    TrainingCheckpoint(run.checkpoints, step=tf.Variable(0, dtype=tf.int64, trainable=False),
                       rng=tf.random.Generator.from_seed(config.seed),
                       **task.checkpoint_objects()).restore_latest()
    return run, config, task


def float32_copy(build: Callable[[], keras.Model], trained: keras.Model) -> keras.Model:
    """``build()`` under the float32 dtype policy, holding ``trained``'s weights.

    ``build`` makes the inference model (typically the same architecture for any image size:
    ``image_size=None``); its weights must have the shapes and order of ``trained``'s. The
    global Keras policy is left at float32.
    """
    keras.mixed_precision.set_global_policy("float32")
    model = build()
    model.set_weights(trained.get_weights())
    return model

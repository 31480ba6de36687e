"""Training checkpoints: everything needed to continue a run exactly where it stopped.

One ``tf.train.Checkpoint`` holds the models, the optimizers (their slots, iteration counters
and hence their learning-rate schedules), the global step counter, the ``tf.random.Generator``
that draws each step's randomness, and any extra trackables a trainer adds (e.g. CycleGAN's
image pool). ``tf.train.CheckpointManager`` numbers checkpoints by step and keeps the last few.

Data position: distributed ``tf.data`` iterators cannot be checkpointed, so the training loop
makes the data order a pure function of the step instead (the input dataset must be
deterministic for a given seed; on resume the loop skips the batches already consumed).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tensorflow as tf

from ctmri_tf.errors import CtmriInputError


class TrainingCheckpoint:
    """Save and restore a training state.

    Args:
        directory: the run's ``checkpoints/`` folder.
        step: the global step counter (int64 ``tf.Variable``: completed training steps).
        rng: the generator of per-step random seeds.
        max_to_keep: checkpoints kept (older ones are deleted).
        write: ``False`` on non-chief workers of a multi-worker run: they still take part in
            the (collective) save but write to a private temporary folder.
        **trackables: models, optimizers and other ``tf.train.Checkpoint``-able objects.
    """

    def __init__(self, directory: str | os.PathLike, *, step: tf.Variable,
                 rng: tf.random.Generator, max_to_keep: int = 3, write: bool = True,
                 **trackables):
        self.directory = Path(directory)
        self.step = step
        self.checkpoint = tf.train.Checkpoint(step=step, rng=rng, **trackables)
        write_dir = self.directory if write else Path(tempfile.mkdtemp(prefix="ctmri-ckpt-"))
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(write_dir),
                                                  max_to_keep=max_to_keep)

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint, or ``None``."""
        return tf.train.latest_checkpoint(str(self.directory))

    def save(self) -> str:
        """Save now, numbered by the current step; return the checkpoint prefix."""
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    def restore_latest(self) -> int:
        """Restore the newest checkpoint in ``directory``; return the restored step.

        Raises:
            CtmriInputError: naming the folder, when it has no checkpoint or the newest one is
                corrupt, incomplete or from a different model/config.
        """
        if not self.directory.is_dir():
            raise CtmriInputError(self.directory, "checkpoint folder does not exist; nothing to "
                                                  "resume (start without --resume)")
        try:
            latest = self.latest
        except (tf.errors.OpError, ValueError) as err:
            raise CtmriInputError(self.directory, "the checkpoint index file 'checkpoint' is "
                                                  f"unreadable ({_first_line(err)})") from None
        if latest is None:
            raise CtmriInputError(self.directory, "holds no checkpoint to resume from (no valid "
                                                  "'checkpoint' index); start without --resume")
        status = None
        try:
            status = self.checkpoint.restore(latest)
            status.assert_existing_objects_matched()
        except Exception as err:  # noqa: BLE001 - truncated files raise IndexError, others OpError
            if status is not None:
                status.expect_partial()   # no second warning about unrestored values
            raise CtmriInputError(
                self.directory, f"checkpoint {Path(latest).name} cannot be restored: it is "
                                f"corrupt, incomplete, or was written with a different model "
                                f"config ({type(err).__name__}: {_first_line(err)})") from None
        return int(self.step.numpy())


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__

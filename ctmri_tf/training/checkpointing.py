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

import glob
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import tensorflow as tf

from ctmri_tf.errors import CtmriInputError


INDEX_FILE = "checkpoint"
"""``tf.train.CheckpointManager``'s index of the checkpoints in a folder (a text proto)."""
PREFIX = "ckpt"
_NUMBERED = re.compile(rf"{PREFIX}-(\d+)\.index")
_DATA_SHARD = re.compile(r"\.data-(\d+)-of-(\d+)")


class TrainingCheckpoint:
    """Save and restore a training state.

    Args:
        directory: the run's ``checkpoints/`` folder.
        step: the global step counter (int64 ``tf.Variable``: completed training steps).
        rng: the generator of per-step random seeds.
        max_to_keep: checkpoints kept (older ones are deleted).
        write: ``False`` on non-chief workers of a multi-worker run: they still take part in
            the (collective) save but write to a private temporary folder, deleted by
            :meth:`close` (nothing of theirs lands in the run folder).
        partial: the trackables are part of what the checkpoints hold (an inference load: the
            models without their critic or optimizers): a restore must match every object
            given here, and the checkpoint's other values are expected to stay unread.
        **trackables: models, optimizers and other ``tf.train.Checkpoint``-able objects.

    Restoring reads only ``directory``; the ``tf.train.CheckpointManager`` that saves (and reads
    the ``checkpoint`` index) is made at the first :meth:`save`.
    """

    def __init__(self, directory: str | os.PathLike, *, step: tf.Variable,
                 rng: tf.random.Generator, max_to_keep: int = 3, write: bool = True,
                 partial: bool = False, **trackables):
        self.directory = Path(directory)
        self.step = step
        self.checkpoint = tf.train.Checkpoint(step=step, rng=rng, **trackables)
        self.restored: str | None = None
        self.write = write
        self.partial = partial
        self._write_dir: Path | None = self.directory if write else None   # made at first save
        self._max_to_keep = max_to_keep
        self._manager: tf.train.CheckpointManager | None = None

    @property
    def manager(self) -> tf.train.CheckpointManager:
        if self._manager is None:
            if self._write_dir is None:
                self._write_dir = Path(tempfile.mkdtemp(prefix="ctmri-ckpt-"))
            self._manager = tf.train.CheckpointManager(self.checkpoint, str(self._write_dir),
                                                       max_to_keep=self._max_to_keep,
                                                       checkpoint_name=PREFIX)
        return self._manager

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint the index names, or ``None`` (also when the
        index is unreadable)."""
        try:
            return tf.train.latest_checkpoint(str(self.directory))
        except (tf.errors.OpError, ValueError):
            return None

    def save(self) -> str:
        """Save now, numbered by the current step; return the checkpoint prefix."""
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    def close(self) -> None:
        """Delete the private folder of a non-chief worker (``write=False``); no-op otherwise."""
        if not self.write and self._write_dir is not None:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            self._write_dir, self._manager = None, None

    def restore_latest(self, *, repair_index: bool = False) -> int:
        """Restore the newest intact checkpoint in ``directory``; return the restored step.

        The ``checkpoint`` index names the newest checkpoint. When the index is empty, garbled
        or names missing files, the newest ``ckpt-<N>`` in the folder that restores is used;
        when the checkpoint it names cannot be restored (a corrupt or incomplete ``.index`` or
        ``.data`` file), the newest older one that restores. Either way with a ``UserWarning``
        naming the index or the broken checkpoint.

        Args:
            repair_index: after such a fall-back, rewrite the index to name the restored
                checkpoint (and the intact older ones), so that the run's next saves and
                ``max_to_keep`` work from it. Off for a read-only load.

        Raises:
            CtmriInputError: naming the folder (or the index file), when it has no checkpoint
                or none can be restored: every one is corrupt, incomplete or from a different
                model/config (the message gives the newest one's error).
        """
        if not self.directory.is_dir():
            raise CtmriInputError(self.directory, "checkpoint folder does not exist; nothing to "
                                                  "resume (start without --resume)")
        index = self.directory / INDEX_FILE
        named, index_problem = self._read_index()
        on_disk = _numbered_checkpoints(self.directory)
        if named is None and not on_disk:
            if index_problem:
                raise CtmriInputError(index, f"{index_problem}, and the folder holds no "
                                             f"{PREFIX}-<N> checkpoint files; start without "
                                             f"--resume")
            raise CtmriInputError(self.directory, "holds no checkpoint to resume from (no valid "
                                                  "'checkpoint' index); start without --resume")
        if index_problem:
            warnings.warn(f"{index}: {index_problem}; falling back to the newest intact "
                          f"{PREFIX}-<N> in {self.directory}", UserWarning, stacklevel=2)
        # a valid index: what it names, then older ones; else the newest on disk first
        candidates = ([named] + [c for c in on_disk if _number(c) < _number(named)]
                      if named else on_disk)
        failures: list[tuple[str, str]] = []
        for prefix in candidates:
            problem = _missing_files(prefix) or self._try_restore(prefix)
            if problem is None:
                break
            failures.append((prefix, problem))
        else:
            newest, problem = failures[0]
            older = f"; nor could {', '.join(Path(p).name for p, _ in failures[1:])}" \
                if len(failures) > 1 else ""
            raise CtmriInputError(
                self.directory, f"checkpoint {Path(newest).name} cannot be restored: it is "
                                f"corrupt, incomplete, or was written with a different model "
                                f"config ({problem}){older}")
        for broken, problem in failures:
            warnings.warn(f"{self.directory}: checkpoint {Path(broken).name} cannot be restored "
                          f"({problem}); using the older {Path(prefix).name}", UserWarning,
                          stacklevel=2)
        self.restored = prefix
        if repair_index and (index_problem or failures):
            keep = [c for c in reversed(on_disk) if _number(c) <= _number(prefix)
                    and c not in (p for p, _ in failures)]
            tf.compat.v1.train.update_checkpoint_state(
                str(self.directory), Path(prefix).name,
                all_model_checkpoint_paths=[Path(c).name for c in keep])
        return int(self.step.numpy())

    def _read_index(self) -> tuple[str | None, str | None]:
        """``(prefix the index names, None)``, or ``(None, what is wrong with the index)``
        (``(None, None)`` when there is no index at all)."""
        index = self.directory / INDEX_FILE
        if not index.exists():
            return None, None
        try:
            state = tf.train.get_checkpoint_state(str(self.directory))
        except (tf.errors.OpError, ValueError) as err:
            return None, f"the checkpoint index is unreadable ({_first_line(err)})"
        if state is None or not state.model_checkpoint_path:
            return None, "the checkpoint index is empty or garbled"
        # The checkpoints live in this folder: take the name the index gives, whether TF returns
        # it joined with the folder (a relative folder gives a relative path), absolute, or as
        # recorded before the run folder was moved.
        named = str(self.directory / Path(state.model_checkpoint_path).name)
        if _missing_files(named):
            return None, (f"the checkpoint index names {Path(named).name}, whose files are "
                          f"missing")
        return named, None

    def _try_restore(self, prefix: str) -> str | None:
        """Restore ``prefix``; ``None`` on success, else the error in one line."""
        status = None
        try:
            status = self.checkpoint.restore(prefix)
            status.assert_existing_objects_matched()
            if self.partial:
                status.expect_partial()
        except Exception as err:  # noqa: BLE001 - truncated files raise IndexError, others OpError
            if status is not None:
                status.expect_partial()   # no second warning about unrestored values
            return f"{type(err).__name__}: {_first_line(err)}"
        return None


def _number(prefix: str) -> int:
    return int(Path(prefix).name.rpartition("-")[2])


def _numbered_checkpoints(directory: Path) -> list[str]:
    """The ``ckpt-<N>`` prefixes that have an ``.index`` file, newest (highest N) first."""
    found = [(int(m.group(1)), str(directory / f"{PREFIX}-{m.group(1)}"))
             for f in directory.iterdir() if (m := _NUMBERED.fullmatch(f.name))]
    return [prefix for _, prefix in sorted(found, reverse=True)]


def _missing_files(prefix: str) -> str | None:
    """What is missing of checkpoint ``prefix`` (its ``.index`` or a ``.data`` shard), or None."""
    path = Path(prefix)
    if not path.with_name(path.name + ".index").is_file():
        return f"{path.name}.index is missing"
    shards = [m for f in path.parent.glob(f"{glob.escape(path.name)}.data-*")
              if (m := _DATA_SHARD.fullmatch(f.name[len(path.name):]))]
    if not shards:
        return f"{path.name} has no .data file"
    total = int(shards[0].group(2))
    have = {int(m.group(1)) for m in shards if int(m.group(2)) == total}
    if have != set(range(total)):
        return f"{path.name} lacks data shard(s) of {total}"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__

"""The generic distributed training loop, shared by every trainer.

An algorithm (StarGAN, CycleGAN, a segmenter) implements :class:`TrainingTask`: it owns its
models and optimizers and defines one replica's train step. :func:`train` does the rest:

* distributes the input with ``strategy.experimental_distribute_dataset`` (auto-shard policy
  ``DATA``: each worker of a multi-worker run takes its replicas' slices of every global batch of
  the same deterministic stream) and runs each step
  as ``strategy.run`` inside a ``tf.function``, summing the replicas' losses with
  ``strategy.reduce`` (each replica's loss is already divided by the *global* batch size);
* draws each step's random seed from a checkpointed ``tf.random.Generator`` in cross-replica
  context, so every replica gets the same seed and can take its slice of the global batch's
  random numbers (identical results on 1 or N replicas);
* keeps the data order a pure function of the step: ``train_dataset`` must be infinite and
  deterministic for its seed; on resume the already-consumed batches are skipped (the input
  pipeline replays them, the models do not). This is how resumed losses equal an uninterrupted
  run's without checkpointing distributed iterators (which TensorFlow does not support);
* every ``log_every`` steps fetches the losses to the host (the only host round trip of the hot
  path) for the tqdm progress bar (with ETA); periodically writes TensorBoard scalars,
  validation metrics, image grids (also as ``samples/step_<step>.png``) and checkpoints, and
  always a checkpoint at the end.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ctmri_tf import visualize
from ctmri_tf.configs import ScheduleConfig
from ctmri_tf.training.checkpointing import TrainingCheckpoint
from ctmri_tf.training.run_dir import RunDir, lock_run
from ctmri_tf.training.summaries import SummaryWriter


class TrainingTask(Protocol):
    """What :func:`train` needs from an algorithm. Models and optimizers must have been built
    under the strategy's scope (optimizers with ``optimizer.build(model.trainable_variables)``).

    Optional: ``validation_tags()`` -> ``{metric: (tag, description)}`` (how the validation
    metrics are tagged under ``validation/``, see ``SummaryWriter.scalars``) and
    ``hparam_metrics()`` -> ``[(tag under validation/, display name)]`` (declared to the
    HParams dashboard)."""

    def checkpoint_objects(self) -> dict[str, Any]:
        """Models, optimizers and other trackables to checkpoint, by name."""

    def step_kind(self, step: int) -> str:
        """Which variant of the step runs at 0-based ``step`` (a Python string, e.g. StarGAN's
        ``"d"`` or ``"d+g"``); each kind is traced once."""

    def replica_step(self, batch: Any, seed: tf.Tensor, kind: str) -> dict[str, tf.Tensor]:
        """One replica's train step on its slice of the global batch. ``seed`` (int64 ``(2,)``,
        the same on every replica) seeds stateless RNG ops. Returns scalar losses reduced with
        ``tf.nn.compute_average_loss(..., global_batch_size=...)`` so that their sum over
        replicas is the global mean."""

    def learning_rates(self) -> dict[str, Any]:
        """Current learning rate of each optimizer (scalars), by name."""

    def validation_metrics(self, batch: Any) -> dict[str, tf.Tensor]:
        """Per-example metric vectors ``(B,)`` on one validation batch (cross-replica context)."""

    def sample_rows(self, batch: Any) -> tuple[list[list[np.ndarray]], list[str]]:
        """Rows of 2-D images in [-1, 1] and the column titles for an image grid (optionally a
        third item: a label for each row)."""


@dataclasses.dataclass
class TrainingResult:
    """What a call to :func:`train` did.

    Attributes:
        start_step: completed steps before this call (> 0 when resumed).
        step: completed steps at the end.
        history: ``(step, losses)`` every ``log_every`` steps (and at the last step); ``losses``
            holds the values of that step's losses only (float).
        validation: ``(step, metrics)`` each time validation ran (means over the validation set).
        checkpoint: prefix of the last checkpoint written (``None`` on a non-chief worker of a
            multi-worker run: the chief writes the run's checkpoints).
        seconds_per_step: mean time of the training step call alone, excluding each step
            kind's first (tracing) call; ``nan`` if too few steps ran (benchmarks).
        wall_seconds_per_step: wall time of the whole loop (steps, validation, summaries,
            samples, checkpoints; what the progress bar shows) divided by the steps it ran;
            ``nan`` if none ran.
    """
    start_step: int
    step: int
    history: list[tuple[int, dict[str, float]]]
    validation: list[tuple[int, dict[str, float]]]
    checkpoint: str | None
    seconds_per_step: float
    wall_seconds_per_step: float = float("nan")


def _due(done: int, every: int, total: int) -> bool:
    return done % every == 0 or done == total


def _to_floats(values: Mapping[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in values.items()}


def evaluate(task: TrainingTask, dataset: tf.data.Dataset) -> dict[str, float]:
    """Mean of each of ``task.validation_metrics`` over every example of ``dataset``."""
    return _evaluate(tf.function(task.validation_metrics), dataset)


def _evaluate(metrics_fn, dataset: tf.data.Dataset) -> dict[str, float]:
    sums: dict[str, float] = {}
    count = 0
    for batch in dataset:
        values = {k: np.asarray(v, np.float64) for k, v in metrics_fn(batch).items()}
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + float(value.sum())
        count += len(next(iter(values.values()))) if values else 0
    return {name: total / count for name, total in sums.items()} if count else {}


def train(task: TrainingTask, *, strategy: tf.distribute.Strategy,
          train_dataset: tf.data.Dataset, schedule: ScheduleConfig, run_dir: RunDir,
          seed: int = 0, resume: bool = False,
          validation_dataset: tf.data.Dataset | None = None,
          hparams: Mapping[str, Any] | None = None, progress: bool = True,
          stop_at: int | None = None,
          on_restored: Callable[[int], None] | None = None) -> TrainingResult:
    """Train ``task`` until ``schedule.steps`` steps are complete.

    Args:
        task: the algorithm (see :class:`TrainingTask`), built under ``strategy.scope()``.
        strategy: from :func:`ctmri_tf.training.strategy.make_strategy`.
        train_dataset: infinite, deterministic dataset of *global* batches (the strategy splits
            each batch across replicas).
        schedule: steps and hook periods.
        run_dir: the run folder (``checkpoints/``, ``logs/``, ``samples/``).
        seed: seeds the per-step random generator (checkpointed).
        resume: restore the newest checkpoint in ``run_dir.checkpoints`` and continue from its
            step (an error if there is none or it is corrupt).
        validation_dataset: finite dataset of paired validation batches, evaluated every
            ``schedule.validation_every`` steps and used for the image grids; without it the
            grids show the first training batch.
        hparams: hyperparameters to record with the TensorBoard hparams plugin.
        progress: show a tqdm progress bar (with ETA) on stderr.
        stop_at: end this session after this many completed steps (with a checkpoint), e.g. to
            fit a time-limited job; the schedule (learning-rate decay) still runs to
            ``schedule.steps`` and ``resume=True`` continues it.
        on_restored: with ``resume``, called with the restored step once the checkpoint is
            restored, before the first step (e.g. to write the resumed run's updated
            ``config.json`` only when the restore worked).

    The chief holds the run folder's lock (:func:`ctmri_tf.training.run_dir.lock_run`) for the
    whole call: a second training on the same folder is refused while this one runs.

    Returns:
        A :class:`TrainingResult`.

    Raises:
        CtmriInputError: ``resume`` without a usable checkpoint (names the folder); another
            live training holds the run folder's lock (names ``run.lock``).
    """
    chief = strategy.extended.should_checkpoint
    with lock_run(run_dir, enabled=chief):
        return _train(task, strategy=strategy, train_dataset=train_dataset, schedule=schedule,
                      run_dir=run_dir, seed=seed, resume=resume,
                      validation_dataset=validation_dataset, hparams=hparams,
                      progress=progress, stop_at=stop_at, on_restored=on_restored)


def _train(task: TrainingTask, *, strategy: tf.distribute.Strategy,
           train_dataset: tf.data.Dataset, schedule: ScheduleConfig, run_dir: RunDir,
           seed: int, resume: bool, validation_dataset: tf.data.Dataset | None,
           hparams: Mapping[str, Any] | None, progress: bool, stop_at: int | None,
           on_restored: Callable[[int], None] | None) -> TrainingResult:
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    rng = tf.random.Generator.from_seed(seed)
    chief = strategy.extended.should_checkpoint
    checkpoint = TrainingCheckpoint(run_dir.checkpoints, step=step, rng=rng,
                                    max_to_keep=schedule.keep_checkpoints, write=chief,
                                    **task.checkpoint_objects())
    start = checkpoint.restore_latest(repair_index=chief) if resume else 0
    if resume and on_restored is not None:
        on_restored(start)
    total = schedule.steps
    until = total if stop_at is None else max(start, min(int(stop_at), total))
    writer = SummaryWriter(run_dir.logs, enabled=strategy.extended.should_save_summary)
    if hparams:
        writer.hparams(hparams, trial_id=run_dir.root.name,
                       metrics=[(f"validation/{tag}", name) for tag, name
                                in getattr(task, "hparam_metrics", lambda: ())()])
    tags = getattr(task, "validation_tags", dict)()

    sample_batch = None
    if validation_dataset is not None:
        sample_batch = next(iter(validation_dataset.take(1)), None)
    if sample_batch is None:
        sample_batch = next(iter(train_dataset.take(1)))
    dataset = train_dataset.skip(start) if start else train_dataset
    iterator = iter(strategy.experimental_distribute_dataset(_shard_by_data(dataset)))

    # ``kind`` is a Python string: one trace per kind (StarGAN: critic only / critic + generator).
    @tf.function
    def distributed_step(iterator, kind):
        batch = next(iterator)
        step_seed = rng.make_seeds(1)[:, 0]
        per_replica = strategy.run(lambda b, s: task.replica_step(b, s, kind),
                                   args=(batch, step_seed))
        step.assign_add(1)
        return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for name, value in per_replica.items()}

    metrics_fn = tf.function(task.validation_metrics)
    history: list[tuple[int, dict[str, float]]] = []
    validation: list[tuple[int, dict[str, float]]] = []
    latest: dict[str, tf.Tensor] = {}
    durations: list[float] = []
    kinds_seen: set[str] = set()
    last_checkpoint = checkpoint.restored if resume else None
    bar = tqdm(total=total, initial=start, unit="step", disable=not progress, dynamic_ncols=True,
               desc=run_dir.root.name)
    summary_time, summary_step = time.perf_counter(), start
    loop_started = summary_time
    try:
        for index in range(start, until):
            kind = task.step_kind(index)
            began = time.perf_counter()
            losses = distributed_step(iterator, kind)
            if kind in kinds_seen:
                durations.append(time.perf_counter() - began)
            kinds_seen.add(kind)
            latest.update(losses)
            done = index + 1

            if _due(done, schedule.log_every, total) or _due(done, schedule.summary_every, total):
                values = _to_floats(latest)
                if _due(done, schedule.log_every, total):
                    history.append((done, {name: values[name] for name in losses}))
                    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
                if _due(done, schedule.summary_every, total):
                    now = time.perf_counter()
                    writer.scalars(done, values, prefix="loss/")
                    writer.scalars(done, _to_floats(task.learning_rates()),
                                   prefix="learning_rate/")
                    writer.scalars(done, {"steps_per_second":
                                          (done - summary_step) / max(now - summary_time, 1e-9)},
                                   prefix="perf/")
                    summary_time, summary_step = now, done
            if validation_dataset is not None and _due(done, schedule.validation_every, total):
                metrics = _evaluate(metrics_fn, validation_dataset)
                validation.append((done, metrics))
                writer.scalars(done, metrics, prefix="validation/", tags=tags)
            if _due(done, schedule.sample_every, total):
                _write_samples(task, sample_batch, writer, run_dir, done)
            if _due(done, schedule.checkpoint_every, total) or done == until:
                last_checkpoint = checkpoint.save()
            bar.update(1)
    finally:
        bar.close()
        writer.close()
        checkpoint.close()
    wall = (time.perf_counter() - loop_started) / max(until - start, 1)
    if not chief:          # its checkpoints were scratch copies, deleted by close()
        last_checkpoint = None
    return TrainingResult(start_step=start, step=int(step.numpy()), history=history,
                          validation=validation, checkpoint=last_checkpoint,
                          seconds_per_step=float(np.mean(durations)) if durations else float("nan"),
                          wall_seconds_per_step=wall if until > start else float("nan"))


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with the ``DATA`` auto-shard policy: with several workers each one runs the
    whole (deterministic) pipeline and keeps its replicas' slices of every global batch, so the
    all-reduced update equals one process's on the same global batch (``AUTO`` would shard the
    tfds files between the workers: other batches, and an error with fewer files than workers)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _write_samples(task: TrainingTask, batch, writer: SummaryWriter, run_dir: RunDir,
                   step: int) -> None:
    rows, titles, *labels = task.sample_rows(batch)
    kwargs = dict(titles=titles, row_labels=labels[0] if labels else None)
    grid = visualize.image_grid(rows, **kwargs)
    writer.image(step, "samples", grid)
    if writer.enabled:
        visualize.save_grid_png(run_dir.samples / f"step_{step:07d}.png", rows, overwrite=True,
                                **kwargs)

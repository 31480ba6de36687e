"""Body segmentation with DeepLabV3+ (Chen et al., ECCV 2018), trained on CT and MRI slices.

The model is ``ctmri_tf.models.deeplab_v3_plus`` (keras-cv DeepLabV3+ on a from-scratch ResNetV2
backbone, logits out). Each training step takes a global batch ``(image, mask)`` from
``ctmri_tf.data.segmentation_batches`` (images of both modalities in [-1, 1], body masks
float32 {0, 1}) and minimises the sparse softmax cross-entropy of the logits (mean over pixels per
example, reduced with ``tf.nn.compute_average_loss(..., global_batch_size=B)``) with Adam, the
learning rate decaying linearly to 0 over the last ``schedule.decay_steps`` steps. Under
MirroredStrategy the BatchNormalization statistics of a training step are those of each
replica's share of the batch (Keras' default, unsynchronised batch norm).

Metrics:
    during training, every ``schedule.validation_every`` steps (``validation/`` in TensorBoard):
        ``cross_entropy`` (nats per pixel) and ``pixel_accuracy`` of the validation batches;
    at the end (:func:`evaluate_segmentation`, :func:`write_final_metrics`): mean IoU and Dice of
        the whole validation and test splits as the original project's IoU evaluation script
        computes them, from one confusion matrix pooled over every pixel of the split
        (``ctmri_tf.metrics.segmentation_metrics``), logged as ``validation/mean_iou``,
        ``validation/dice``, ``test/mean_iou``, ``test/dice`` and written to
        ``<run_dir>/metrics.json``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from ctmri_tf import configs
from ctmri_tf.atomic import atomic_output
from ctmri_tf.configs import OptimizerConfig, SegmentationConfig
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.metrics import segmentation_metrics
from ctmri_tf.training.checkpointing import TrainingCheckpoint
from ctmri_tf.training.run_dir import RunDir
from ctmri_tf.training.runtime import configure_keras
from ctmri_tf.training.schedules import LinearDecayToZero
from ctmri_tf.training.summaries import SummaryWriter

METRICS_FILE = "metrics.json"


def _adam(config: OptimizerConfig, schedule: LinearDecayToZero, name: str):
    return keras.optimizers.Adam(learning_rate=schedule, beta_1=config.beta_1,
                                 beta_2=config.beta_2, epsilon=config.epsilon, name=name)


def _labels(masks) -> tf.Tensor:
    """Masks ``(B, H, W, 1)`` float {0, 1} (or class ids) -> int32 class ids ``(B, H, W)``."""
    masks = tf.convert_to_tensor(masks)
    if masks.shape.rank == 4:
        masks = masks[..., 0]
    return tf.cast(tf.round(tf.cast(masks, tf.float32)), tf.int32)


def pixel_cross_entropy(labels, logits) -> tf.Tensor:
    """Sparse softmax cross-entropy (nats) averaged over the pixels of each example, ``(B,)``.

    Args:
        labels: int class ids ``(B, H, W)``.
        logits: ``(B, H, W, C)`` (any float dtype; computed in float32).
    """
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(logits, tf.float32))
    return tf.reduce_mean(tf.reshape(per_pixel, [tf.shape(per_pixel)[0], -1]), axis=1)


class Segmentation:
    """The body-segmentation training task (implements ``ctmri_tf.training.loop.TrainingTask``).

    Builds the DeepLabV3+ model and its optimizer under ``strategy.scope()`` after seeding and
    setting the precision policy from ``config``.

    Args:
        config: a validated :class:`ctmri_tf.configs.SegmentationConfig`.
        strategy: the ``tf.distribute.Strategy`` that will run the steps.

    Raises:
        CtmriInputError: the config is invalid, or ``data.batch_size`` is not divisible by the
            number of replicas.
    """

    def __init__(self, config: SegmentationConfig, strategy: tf.distribute.Strategy):
        config.validate()
        replicas = strategy.num_replicas_in_sync
        if config.data.batch_size % replicas:
            raise CtmriInputError(None, f"data.batch_size={config.data.batch_size} must be "
                                        f"divisible by the {replicas} replicas")
        configure_keras(config.seed, config.precision)
        from ctmri_tf.models import deeplab_v3_plus   # keras-cv is imported on first use

        self.config = config
        self.strategy = strategy
        self.global_batch_size = config.data.batch_size
        self.num_classes = config.model.num_classes
        with strategy.scope():
            self.model = deeplab_v3_plus(config.data.image_size,
                                         num_classes=config.model.num_classes,
                                         width=config.model.width, blocks=config.model.blocks)
            self.optimizer = _adam(config.optimizer,
                                   LinearDecayToZero(config.optimizer.learning_rate,
                                                     config.schedule.steps,
                                                     config.schedule.decay_steps),
                                   "adam")
            self.optimizer.build(self.model.trainable_variables)

    # ------------------------------------------------------------------ TrainingTask protocol
    def checkpoint_objects(self) -> dict:
        """The model, its optimizer and, explicitly, every model weight in order.

        keras-cv's ``SpatialPyramidPooling`` keeps its five ASPP branches in a plain Python list
        that TensorFlow's object graph does not follow, so ``tf.train.Checkpoint(model=...)``
        alone misses their 25 weights: the trainable ones are reached through the optimizer, but
        the BatchNormalization moving means and variances would be lost (a restored model then
        predicts differently). ``model_weights`` lists all of them.
        """
        return {"model": self.model, "optimizer": self.optimizer,
                "model_weights": list(self.model.weights)}

    def step_kind(self, step: int) -> str:
        return "train"

    def learning_rates(self) -> dict:
        return {"optimizer": self.optimizer.learning_rate}

    def replica_step(self, batch, seed, kind: str) -> dict:
        """One replica's step on ``(image (b, H, W, 1) [-1, 1], mask (b, H, W, 1) {0, 1})``."""
        images, masks = batch
        labels = _labels(masks)
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = tf.nn.compute_average_loss(pixel_cross_entropy(labels, logits),
                                              global_batch_size=self.global_batch_size)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"cross_entropy": loss}

    def validation_metrics(self, batch) -> dict:
        """Per example ``(B,)``: ``cross_entropy`` (nats per pixel) and ``pixel_accuracy``
        (fraction of pixels whose predicted class is the true one)."""
        images, masks = batch
        labels = _labels(masks)
        logits = self.model(images, training=False)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
                          tf.float32)
        return {"cross_entropy": pixel_cross_entropy(labels, logits),
                "pixel_accuracy": tf.reduce_mean(tf.reshape(correct, [tf.shape(correct)[0], -1]),
                                                 axis=1)}

    def sample_rows(self, batch, max_examples: int = 4):
        """Image-grid rows in [-1, 1]: image | predicted mask | true mask (masks: -1 background,
        +1 body)."""
        images, masks = batch
        images = images[:max_examples]
        predicted = self.predict_masks(images)
        truth = _labels(masks[:max_examples])
        rows = [[np.asarray(images[i]),
                 np.asarray(predicted[i], np.float32) * 2.0 - 1.0,
                 np.asarray(truth[i], np.float32) * 2.0 - 1.0] for i in range(images.shape[0])]
        return rows, ["image", "predicted mask", "true mask"]

    # ------------------------------------------------------------------ helpers
    def predict_masks(self, images) -> tf.Tensor:
        """Class ids ``(B, H, W)`` int32 (0 background, 1 body) of images (B, H, W, 1) in
        [-1, 1]."""
        return predict_masks(self.model, images)


def predict_masks(model: keras.Model, images) -> tf.Tensor:
    """``argmax`` of a segmentation model's logits: int32 class ids ``(B, H, W)``."""
    logits = model(tf.convert_to_tensor(images, tf.float32), training=False)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def evaluate_segmentation(model: keras.Model, datasets: Mapping[str, tf.data.Dataset],
                          num_classes: int = 2) -> dict[str, dict]:
    """Mean IoU and Dice of ``model`` over every pixel of each dataset (one confusion matrix
    pooled over the whole dataset, ``ctmri_tf.metrics.segmentation_metrics``).

    Args:
        model: image (B, H, W, 1) [-1, 1] -> logits (B, H, W, C).
        datasets: ``{split: dataset}`` of finite ``(image, mask)`` batches
            (``ctmri_tf.data.segmentation_batches``), e.g. the validation and test splits.
        num_classes: classes of the model.

    Returns:
        ``{split: {"mean_iou", "dice", "iou_per_class", "pixel_accuracy", "slices"}}``: IoU,
        Dice and accuracy as fractions in [0, 1]; ``iou_per_class`` NaN for a class absent from
        prediction and truth.

    Raises:
        CtmriInputError: a dataset is empty (naming the split).
    """
    # one trace for every split and batch size
    predict = tf.function(lambda images: predict_masks(model, images),
                          input_signature=[tf.TensorSpec(model.input_shape, tf.float32)])
    results = {}
    for split, dataset in datasets.items():
        predicted, truth = [], []
        for images, masks in dataset:
            predicted.append(predict(tf.cast(images, tf.float32)).numpy().astype(np.uint8))
            truth.append(_labels(masks).numpy().astype(np.uint8))
        if not predicted:
            raise CtmriInputError(None, f"the {split} dataset holds no image to evaluate")
        predicted, truth = np.concatenate(predicted), np.concatenate(truth)
        result = segmentation_metrics(predicted, truth, num_classes=num_classes)
        result["pixel_accuracy"] = float(np.mean(predicted == truth))
        result["slices"] = int(len(truth))
        results[split] = result
    return results


def _json_ready(value):
    """NaN -> None (JSON ``null``), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_final_metrics(run: RunDir, step: int, results: Mapping[str, Mapping],
                        *, enabled: bool = True) -> Path:
    """Log the final metrics of each split to TensorBoard and write ``<run_dir>/metrics.json``.

    Args:
        run: the run folder.
        step: the training step the model was evaluated at (the TensorBoard step).
        results: ``{split: metrics}``, e.g. ``{"validation": {...}, "test": {...}}`` from
            :func:`evaluate_segmentation`; scalar metrics are logged as ``<split>/<metric>``.
        enabled: ``False`` on non-chief workers (nothing is written).

    Returns:
        The path of ``metrics.json`` (``{"step": step, split: metrics, ...}``, NaN as ``null``);
        it replaces the file of an earlier session of the same run.
    """
    path = run.root / METRICS_FILE
    if not enabled:
        return path
    writer = SummaryWriter(run.logs)
    for split, metrics in results.items():
        writer.scalars(step, {name: value for name, value in metrics.items()
                              if isinstance(value, float)}, prefix=f"{split}/")
    writer.close()
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(_json_ready({"step": int(step), **results}), indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------- run folders
def load_segmentation_model(run_dir: str | os.PathLike, image_size=None) -> keras.Model:
    """The trained DeepLabV3+ of a segmentation run folder (float32).

    Restores the run's newest checkpoint with the trainer's own objects (:class:`Segmentation`
    and ``TrainingCheckpoint.restore_latest``), then copies the weights into a float32
    ``deeplab_v3_plus`` built for ``image_size``.

    Args:
        run_dir: the run folder.
        image_size: int or ``(height, width)``, multiples of 32; default the training size.

    Returns:
        ``keras.Model``: image (B, H, W, 1) in [-1, 1] -> logits (B, H, W, num_classes); the body
        mask is ``argmax`` over the last axis.

    Raises:
        CtmriInputError: not a segmentation run folder, or no restorable checkpoint (naming the
            file or folder).
    """
    from ctmri_tf.models import deeplab_v3_plus

    run, config = _read_run(run_dir)
    task = Segmentation(config, tf.distribute.get_strategy())
    TrainingCheckpoint(run.checkpoints, step=tf.Variable(0, dtype=tf.int64, trainable=False),
                       rng=tf.random.Generator.from_seed(config.seed),
                       **task.checkpoint_objects()).restore_latest()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = deeplab_v3_plus(image_size or config.data.image_size,
                                num_classes=config.model.num_classes, width=config.model.width,
                                blocks=config.model.blocks)
    except ValueError as err:
        raise CtmriInputError(None, str(err)) from None
    model.set_weights(task.model.get_weights())
    return model


def _read_run(run_dir: str | os.PathLike) -> tuple[RunDir, SegmentationConfig]:
    """The run folder and its config, read only (the run is an input here)."""
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise CtmriInputError(run.root, "run folder does not exist")
    if not run.config_path.is_file():
        raise CtmriInputError(run.config_path, "missing; this folder is not a ctmri-tf run folder")
    config = configs.from_json(run.config_path.read_text(), source=str(run.config_path))
    if not isinstance(config, SegmentationConfig):
        raise CtmriInputError(run.config_path, f"is a {config.experiment!r} run, not a "
                                               f"segmentation run")
    return run, config

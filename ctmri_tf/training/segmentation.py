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
    at the end (:func:`evaluate_segmentation`, then ``run_dir.write_final_metrics``): mean IoU
        and Dice of the whole validation and test splits as the original project's IoU script
        computes them, from one confusion matrix pooled over every pixel of the split
        (``ctmri_tf.metrics.segmentation_metrics``), logged as ``validation/mean_iou``,
        ``validation/dice``, ``test/mean_iou``, ``test/dice`` and written to
        ``<run_dir>/metrics.json``.
"""
from __future__ import annotations

import os
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from ctmri_tf.configs import SegmentationConfig
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.metrics import segmentation_metrics
from ctmri_tf.training.restore import restore_models
from ctmri_tf.training.runtime import prepare_task
from ctmri_tf.training.schedules import linear_decay_adam


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
        prepare_task(config, strategy)
        from ctmri_tf.models import deeplab_v3_plus   # keras-cv is imported on first use

        self.config = config
        self.strategy = strategy
        self.global_batch_size = config.data.batch_size
        self.num_classes = config.model.num_classes
        with strategy.scope():
            self.model = deeplab_v3_plus(config.data.image_size,
                                         num_classes=config.model.num_classes,
                                         width=config.model.width, blocks=config.model.blocks)
            self.optimizer = linear_decay_adam(config.optimizer, config.schedule, "adam")
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


# ----------------------------------------------------------------------------- run folders
def load_segmentation_model(run_dir: str | os.PathLike, image_size=None, *,
                            any_size: bool = False) -> keras.Model:
    """The trained DeepLabV3+ of a segmentation run folder (float32).

    Builds only a float32 ``deeplab_v3_plus`` for ``image_size`` and reads the run's newest
    intact checkpoint into it (``ctmri_tf.training.restore.restore_models``, with every weight
    listed as :meth:`Segmentation.checkpoint_objects` does; no optimizer, the global dtype
    policy left as it was).

    Args:
        run_dir: the run folder.
        image_size: int or ``(height, width)``, multiples of 32; default the training size.
        any_size: build the copy for any image size (multiples of 32) instead, as the export
            does; ``image_size`` must then be None.

    Returns:
        ``keras.Model``: image (B, H, W, 1) in [-1, 1] -> logits (B, H, W, num_classes); the body
        mask is ``argmax`` over the last axis.

    Raises:
        CtmriInputError: not a segmentation run folder, or no restorable checkpoint (naming the
            file or folder).
    """
    from ctmri_tf.models import deeplab_v3_plus

    if any_size and image_size is not None:
        raise ValueError("give image_size or any_size, not both")
    def build(config):
        size = None if any_size else image_size or config.data.image_size
        try:
            model = deeplab_v3_plus(size, num_classes=config.model.num_classes,
                                    width=config.model.width, blocks=config.model.blocks)
        except ValueError as err:
            raise CtmriInputError(None, str(err)) from None
        return {"model": model, "model_weights": list(model.weights)}

    _, _, models = restore_models(run_dir, "segmentation", build)
    return models["model"]


def after_training(task: Segmentation, prepared, result) -> list[str]:
    """Mean IoU and Dice on every slice of the validation and test splits, written to
    ``metrics.json`` (and TensorBoard) by the chief; returns the lines to print."""
    from ctmri_tf.training.run_dir import write_final_metrics

    config = prepared.config
    results = evaluate_segmentation(task.model, prepared.inputs.evaluation,
                                    config.model.num_classes)
    path = write_final_metrics(prepared.run, result.step, results,
                               enabled=prepared.strategy.extended.should_checkpoint)
    return [f"{split}: mean IoU {m['mean_iou']:.4f}, Dice {m['dice']:.4f} ({m['slices']} slices)"
            for split, m in results.items()] + [f"metrics: {path}"]


def load_any_size_model(run_dir: str | os.PathLike) -> keras.Model:
    """The trained DeepLabV3+ of a run folder built for any image size (multiples of 32):
    the experiment registry's inference model (``load_segmentation_model(any_size=True)``)."""
    return load_segmentation_model(run_dir, any_size=True)

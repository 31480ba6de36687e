"""The CT/MRI modality classifier (``ctmri_tf.models.modality_classifier``) and its training.

Each training step takes a global batch ``(image (B, H, W, 1) [-1, 1], label (B,) int32 0 = CT,
1 = MRI)`` from ``ctmri_tf.data.modality_batches`` and minimises the softmax cross-entropy of the
logits (reduced with ``tf.nn.compute_average_loss(..., global_batch_size=B)``) with Adam, the
learning rate decaying linearly to 0 over the last ``schedule.decay_steps`` steps.

Metrics: every ``schedule.validation_every`` steps the ``cross_entropy`` (nats) and ``accuracy`` of
the validation batches (``validation/`` in TensorBoard); at the end (:func:`evaluate_classifier`)
the accuracy, per-modality accuracy and confusion matrix of the whole validation and test splits,
logged as ``validation/accuracy``, ``test/accuracy``, ... and written to ``<run_dir>/metrics.json``
(``ctmri_tf.training.run_dir.write_final_metrics``).

Inputs are normalised without the label's help: every slice, CT or MRI, by its own percentiles
(``ctmri_tf.intensity.percentile_to_unit``, in ``modality_batches``), as the exported ``classify``
signature does. With ``data.augment`` (every preset) each training slice is a new random view
(field of view, size, resolution, noise; MRI bias field and contrast gamma) every time it is
drawn. After training, ``python -m train.classifier`` fits a temperature on the validation split
(:func:`classifier_logits`, ``ctmri_tf.calibration``) that the export builds in.

The evaluation uses the classifier to tell whether translated slices look like the target
modality (``ctmri_tf.evaluate.evaluate(..., classifier=...)``); :func:`load_classifier` gives it
the trained model of a run folder.
"""
from __future__ import annotations

import os
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from ctmri_tf.configs import ClassifierConfig
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io.volume import MODALITIES
from ctmri_tf.models.classifier import modality_classifier
from ctmri_tf.training.restore import restore_models
from ctmri_tf.training.runtime import prepare_task
from ctmri_tf.training.schedules import linear_decay_adam


def _cross_entropy(labels, logits) -> tf.Tensor:
    """Softmax cross-entropy (nats) per example ``(B,)``; logits computed in float32."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


class ModalityClassifier:
    """The CT/MRI classifier training task (implements ``ctmri_tf.training.loop.TrainingTask``).

    Builds the classifier and its optimizer under ``strategy.scope()`` after seeding and setting
    the precision policy from ``config``.

    Args:
        config: a validated :class:`ctmri_tf.configs.ClassifierConfig`.
        strategy: the ``tf.distribute.Strategy`` that will run the steps.

    Raises:
        CtmriInputError: the config is invalid, or ``data.batch_size`` is not divisible by the
            number of replicas.
    """

    def __init__(self, config: ClassifierConfig, strategy: tf.distribute.Strategy):
        prepare_task(config, strategy)
        self.config = config
        self.strategy = strategy
        self.global_batch_size = config.data.batch_size
        with strategy.scope():
            self.model = modality_classifier(config.data.image_size, filters=config.model.filters)
            self.optimizer = linear_decay_adam(config.optimizer, config.schedule, "adam")
            self.optimizer.build(self.model.trainable_variables)

    # ------------------------------------------------------------------ TrainingTask protocol
    def checkpoint_objects(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer}

    def step_kind(self, step: int) -> str:
        return "train"

    def learning_rates(self) -> dict:
        return {"optimizer": self.optimizer.learning_rate}

    def replica_step(self, batch, seed, kind: str) -> dict:
        """One replica's step on ``(image (b, H, W, 1) [-1, 1], label (b,) 0 = CT, 1 = MRI)``."""
        images, labels = batch
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = tf.nn.compute_average_loss(_cross_entropy(labels, logits),
                                              global_batch_size=self.global_batch_size)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"cross_entropy": loss}

    def validation_metrics(self, batch) -> dict:
        """Per example ``(B,)``: ``cross_entropy`` (nats) and ``accuracy`` (1 when correct)."""
        images, labels = batch
        logits = self.model(images, training=False)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {"cross_entropy": _cross_entropy(labels, logits),
                "accuracy": tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32)}

    def sample_rows(self, batch, max_examples: int = 6):
        """One grid row of images in [-1, 1], titled ``<true> -> <predicted> <probability>``."""
        images, labels = batch
        images, labels = images[:max_examples], np.asarray(labels[:max_examples])
        probabilities = tf.nn.softmax(self.model(images, training=False)).numpy()
        predicted = probabilities.argmax(axis=-1)
        titles = [f"{MODALITIES[t]}->{MODALITIES[p]} {probabilities[i, p]:.2f}"
                  for i, (t, p) in enumerate(zip(labels, predicted))]
        return [[np.asarray(image) for image in images]], titles


def classifier_logits(model: keras.Model, dataset: tf.data.Dataset
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, 2) float32, labels (N,) int64)`` of every ``(image, label)`` batch of a
    finite dataset (N = 0 when it is empty); inference mode, in a ``tf.function``."""
    logits_of = tf.function(lambda images: model(images, training=False),
                            input_signature=[tf.TensorSpec(model.input_shape, tf.float32)])
    labels, logits = [], []
    for images, batch_labels in dataset:
        logits.append(logits_of(tf.cast(images, tf.float32)).numpy())
        labels.append(np.asarray(batch_labels, np.int64))
    if not labels:
        return np.zeros((0, len(MODALITIES)), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(logits), np.concatenate(labels)


def evaluate_classifier(model: keras.Model, datasets: Mapping[str, tf.data.Dataset]
                        ) -> dict[str, dict]:
    """Accuracy of ``model`` on each dataset of ``(image, label)`` batches.

    Args:
        model: image (B, H, W, 1) [-1, 1] -> logits (B, 2), 0 = CT, 1 = MRI.
        datasets: ``{split: dataset}``, finite (``ctmri_tf.data.modality_batches``).

    Returns:
        ``{split: {"accuracy", "accuracy_ct", "accuracy_mri", "cross_entropy", "slices",
        "confusion"}}``: accuracies are fractions in [0, 1] (NaN for a modality the split lacks),
        ``cross_entropy`` the mean in nats, ``confusion[true][predicted]`` slice counts.

    Raises:
        CtmriInputError: a dataset is empty (naming the split).
    """
    results = {}
    for split, dataset in datasets.items():
        logits, labels = classifier_logits(model, dataset)
        if not len(labels):
            raise CtmriInputError(None, f"the {split} dataset holds no image to evaluate")
        predicted = logits.argmax(axis=-1)
        confusion = np.zeros((len(MODALITIES), len(MODALITIES)), np.int64)
        np.add.at(confusion, (labels, predicted), 1)
        result = {"accuracy": float(np.mean(predicted == labels))}
        for index, modality in enumerate(MODALITIES):
            of_modality = labels == index
            result[f"accuracy_{modality}"] = (float(np.mean(predicted[of_modality] == index))
                                              if of_modality.any() else float("nan"))
        result["cross_entropy"] = float(np.mean(_cross_entropy(labels, logits).numpy()))
        result["slices"] = int(len(labels))
        result["confusion"] = confusion.tolist()
        results[split] = result
    return results


# ----------------------------------------------------------------------------- run folders
def load_classifier(run_dir: str | os.PathLike) -> keras.Model:
    """The trained CT/MRI classifier of a run folder, for any image size (float32).

    Builds only a float32 ``modality_classifier(image_size=None)`` and reads the run's newest
    intact checkpoint into it (``ctmri_tf.training.restore.restore_models``; no optimizer, the
    global dtype policy left as it was).

    Returns:
        ``keras.Model``: image (B, H, W, 1) in [-1, 1] (each image by its own percentiles,
        ``ctmri_tf.intensity.percentile_to_unit``) -> logits (B, 2), 0 = CT, 1 = MRI.

    Raises:
        CtmriInputError: not a classifier run folder, or no restorable checkpoint (naming the
            file or folder).
    """
    _, _, models = restore_models(run_dir, "classifier", lambda config: {
        "model": modality_classifier(filters=config.model.filters)})
    return models["model"]


def after_training(task: ModalityClassifier, prepared, result) -> list[str]:
    """Accuracy on every slice of the validation and test splits (``metrics.json``), then the
    calibration temperature fitted on the validation split (its slices as they are plus one
    augmented view each when the config augments; ``ctmri_tf.calibration``), written to
    ``calibration.json`` by the chief. Returns the lines to print."""
    from ctmri_tf import calibration, data
    from ctmri_tf.training.run_dir import write_final_metrics

    config, evaluation = prepared.config, prepared.inputs.evaluation
    enabled = prepared.strategy.extended.should_checkpoint
    results = evaluate_classifier(task.model, evaluation)
    path = write_final_metrics(prepared.run, result.step, results, enabled=enabled)
    lines = [f"{split}: accuracy {m['accuracy']:.4f} ({m['slices']} slices)"
             for split, m in results.items()]
    if "validation" in evaluation:
        logits, labels = classifier_logits(task.model, evaluation["validation"])
        if config.data.augment:
            d = config.data
            views = data.modality_batches("validation", d.validation_batch_size, d.image_size,
                                          augment=True, shuffle=False, seed=config.seed + 1,
                                          mask_inputs=d.mask_inputs, config=d.dataset_config,
                                          data_dir=d.data_dir)
            more_logits, more_labels = classifier_logits(task.model, views)
            logits, labels = (np.concatenate([logits, more_logits]),
                              np.concatenate([labels, more_labels]))
        record = calibration.calibration_record(logits, labels, split="validation")
    else:
        record = calibration.calibration_record([], [], split=None)
    written = calibration.write_calibration(prepared.run.root, record, enabled=enabled)
    lines.append(f"calibration: temperature {record['temperature']:.3f} on "
                 f"{record['split'] or 'no validation split (T = 1)'}"
                 + (f", NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f} nats"
                    if record["split"] else "") + f" ({written})")
    return lines + [f"metrics: {path}"]

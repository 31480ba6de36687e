"""The datasets each experiment trains and is evaluated on, from its config.

:func:`experiment_inputs` is what the experiment registry (:mod:`ctmri_tf.experiments`) calls:

* StarGAN: the seeded training stream of ``ctmri_tf.training.stargan.training_batches``
  (unpaired, or registered pairs with ``loss.lambda_paired > 0``) and the paired MRI/CT
  validation batches (PSNR/SSIM of both directions);
* CycleGAN: unpaired CT and MRI batches and the same paired validation batches;
* segmentation, classifier: the training stream, the first ``data.validation_batches`` batches
  of the validation split for the periodic validation, and every slice of the validation and
  test splits for the final metrics (``metrics.json``).

Images are in model space [-1, 1] at ``data.image_size`` pixels (``ctmri_tf.data``).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable

from ctmri_tf import configs
from ctmri_tf.errors import CtmriInputError

EVALUATION_SPLITS = ("validation", "test")
"""The splits the segmentation and classifier trainers evaluate at the end (``metrics.json``)."""


@dataclasses.dataclass
class Inputs:
    """An experiment's datasets.

    Attributes:
        train: the infinite, seeded training stream.
        validation: the finite periodic-validation batches, or None.
        evaluation: ``{split: dataset}`` of whole splits for the final metrics (segmentation,
            classifier; empty for the translation models).
    """
    train: Any
    validation: Any = None
    evaluation: dict = dataclasses.field(default_factory=dict)


def optional_split(split: str, make: Callable[[str], Any], consequence: str) -> Any | None:
    """``make(split)``, or None with a warning (ending in ``consequence``) when the built
    dataset has no such split (tfds raises ``ValueError``/``KeyError``).

    Raises:
        CtmriInputError: from ``make``, e.g. the dataset is not built at all.
    """
    try:
        return make(split)
    except CtmriInputError:
        raise
    except (ValueError, KeyError) as err:  # tfds: the built dataset has no such split
        print(f"warning: no {split} split ({err}); {consequence}", file=sys.stderr)
        return None


def evaluation_datasets(config: configs.ExperimentConfig, make: Callable[[str], Any]
                        ) -> tuple[Any | None, dict]:
    """``(validation, evaluation)`` of a trainer that evaluates at the end: the first
    ``data.validation_batches`` batches of the validation split (None when there are none) and
    ``{split: dataset}`` of the :data:`EVALUATION_SPLITS` that were built.

    Args:
        config: the experiment config.
        make: ``make(split)`` -> every slice of ``split`` in file order (a finite dataset).
    """
    evaluation = {split: ds for split in EVALUATION_SPLITS
                  if (ds := optional_split(split, make, "it is not evaluated")) is not None}
    validation = evaluation.get("validation")
    if validation is None or config.data.validation_batches <= 0:
        return None, evaluation
    return validation.take(config.data.validation_batches), evaluation


def paired_validation(config: configs.ExperimentConfig) -> Any | None:
    """The translation trainers' periodic validation: the first ``data.validation_batches``
    paired MRI/CT batches of the validation split, or None (none asked for, or no validation
    split). A 2.5-D model (``model.context_slices`` k > 1) gets k-slice stacks on both sides
    (``paired_batches(..., stack_target=True)``); other experiments 2-D slices."""
    from ctmri_tf import data

    d = config.data
    k = getattr(getattr(config, "model", None), "context_slices", 1)
    if d.validation_batches == 0:
        return None
    validation = optional_split(
        "validation",
        lambda split: data.paired_batches(split, d.validation_batch_size, d.image_size,
                                          source="mri", mask_inputs=d.mask_inputs,
                                          shuffle=False, config=d.dataset_config,
                                          data_dir=d.data_dir, context_slices=k,
                                          stack_target=k > 1),
        "training without validation")
    return None if validation is None else validation.take(d.validation_batches)


def stargan_inputs(config: configs.StarGANConfig) -> Inputs:
    from ctmri_tf.training.stargan import training_batches

    return Inputs(training_batches(config), paired_validation(config))


def cyclegan_inputs(config: configs.CycleGANConfig) -> Inputs:
    from ctmri_tf import data

    d = config.data
    train = data.unpaired_batches("train", d.batch_size, d.image_size, mask_inputs=d.mask_inputs,
                                  augment=d.augment, seed=config.seed, repeat=True,
                                  drop_remainder=True, config=d.dataset_config,
                                  data_dir=d.data_dir, context_slices=config.model.context_slices)
    return Inputs(train, paired_validation(config))


def segmentation_inputs(config: configs.SegmentationConfig) -> Inputs:
    from ctmri_tf import data

    d = config.data
    source = dict(config=d.dataset_config, data_dir=d.data_dir)
    train = data.segmentation_batches("train", d.batch_size, d.image_size, augment=d.augment,
                                      seed=config.seed, repeat=True, drop_remainder=True,
                                      **source)
    validation, evaluation = evaluation_datasets(
        config, lambda split: data.segmentation_batches(split, d.validation_batch_size,
                                                        d.image_size, shuffle=False, **source))
    return Inputs(train, validation, evaluation)


def classifier_inputs(config: configs.ClassifierConfig) -> Inputs:
    from ctmri_tf import data

    d = config.data
    source = dict(mask_inputs=d.mask_inputs, config=d.dataset_config, data_dir=d.data_dir)
    train = data.modality_batches("train", d.batch_size, d.image_size, augment=d.augment,
                                  seed=config.seed, repeat=True, drop_remainder=True, **source)
    validation, evaluation = evaluation_datasets(
        config, lambda split: data.modality_batches(split, d.validation_batch_size, d.image_size,
                                                    shuffle=False, **source))
    return Inputs(train, validation, evaluation)

"""Train the CT/MRI modality classifier on the tfds ``ctmri`` dataset.

    python -m datasets.ctmri build --data_dir DATA            # once
    python -m train.classifier --strategy mirrored --preset demo --data-dir DATA \\
        [--run-dir runs/classifier-demo] [--resume] [--set model.filters=16]

The run folder holds ``config.json``, ``checkpoints/``, ``logs/`` (``tensorboard --logdir``),
``samples/`` (PNG rows of slices titled true -> predicted modality) and, at the end,
``metrics.json``: accuracy of the whole ``validation`` and ``test`` splits (also in TensorBoard).
Training batches: slices of both modalities of the ``train`` split labelled 0 = CT, 1 = MRI
(shuffled with ``--seed``; background set to -1 when ``data.mask_inputs``); every
``schedule.validation_every`` steps the cross-entropy and accuracy of ``data.validation_batches``
validation batches are logged.
"""
from __future__ import annotations

import sys

import tensorflow as tf

from ctmri_tf import data
from ctmri_tf.configs import ClassifierConfig
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.training import loop
from ctmri_tf.training.classifier import (ModalityClassifier, evaluate_classifier,
                                          write_final_metrics)
from ctmri_tf.training.summaries import flatten_hparams
from train import common

EVALUATION_SPLITS = ("validation", "test")


def _split(config: ClassifierConfig, split: str) -> tf.data.Dataset | None:
    """Every slice of ``split`` in file order, or None (with a warning) when it was not built."""
    d = config.data
    try:
        return data.modality_batches(split, d.validation_batch_size, d.image_size,
                                     mask_inputs=d.mask_inputs, shuffle=False,
                                     config=d.dataset_config, data_dir=d.data_dir)
    except CtmriInputError:
        raise
    except (ValueError, KeyError) as err:  # tfds: the built dataset has no such split
        print(f"warning: no {split} split ({err}); it is not evaluated", file=sys.stderr)
        return None


def build_datasets(config: ClassifierConfig):
    """``(train, validation, evaluation)``: the infinite, seeded training stream, the periodic
    validation batches (or None) and ``{split: dataset}`` of the whole validation and test
    splits for the final metrics.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command).
    """
    d = config.data
    train = data.modality_batches("train", d.batch_size, d.image_size, mask_inputs=d.mask_inputs,
                                  augment=d.augment, seed=config.seed, repeat=True,
                                  drop_remainder=True, config=d.dataset_config,
                                  data_dir=d.data_dir)
    evaluation = {split: ds for split in EVALUATION_SPLITS
                  if (ds := _split(config, split)) is not None}
    validation = evaluation.get("validation")
    if validation is not None and d.validation_batches > 0:
        validation = validation.take(d.validation_batches)
    else:
        validation = None
    return train, validation, evaluation


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser("classifier", __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    prepared = common.prepare(args, "classifier", make_inputs=build_datasets)
    config, strategy, run = prepared.config, prepared.strategy, prepared.run
    train_data, validation, evaluation = prepared.inputs
    task = ModalityClassifier(config, strategy)
    hparams = {**flatten_hparams(config), "strategy": args.strategy,
               "replicas": strategy.num_replicas_in_sync}
    print(f"CT/MRI classifier {config.preset}: {config.data.image_size} px, batch "
          f"{config.data.batch_size}, {strategy.num_replicas_in_sync} replica(s) "
          f"({args.strategy}), run folder {run.root}", file=sys.stderr)
    result = loop.train(task, strategy=strategy, train_dataset=train_data,
                        schedule=config.schedule, run_dir=run, seed=config.seed,
                        resume=prepared.resume, validation_dataset=validation, hparams=hparams)
    results = evaluate_classifier(task.model, evaluation)
    path = write_final_metrics(run, result.step, results,
                               enabled=strategy.extended.should_checkpoint)
    for split, metrics in results.items():
        print(f"{split}: accuracy {metrics['accuracy']:.4f} ({metrics['slices']} slices)",
              file=sys.stderr)
    print(f"done: step {result.step}/{config.schedule.steps}, "
          f"{result.seconds_per_step:.3f} s/step, checkpoint {result.checkpoint}, metrics {path}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))

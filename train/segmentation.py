"""Train the DeepLabV3+ body segmentation on CT and MRI slices of the tfds ``ctmri`` dataset.

    python -m datasets.ctmri build --data_dir DATA            # once
    python -m train.segmentation --strategy mirrored --preset demo --data-dir DATA \\
        [--run-dir runs/segmentation-demo] [--resume] [--set model.width=32]

The run folder holds ``config.json``, ``checkpoints/``, ``logs/`` (``tensorboard --logdir``),
``samples/`` (PNG grids: image | predicted mask | true mask) and, at the end, ``metrics.json``:
mean IoU and Dice of the whole ``validation`` and ``test`` splits (also in TensorBoard).
Training batches: slices of both modalities of the ``train`` split with their body masks
(shuffled with ``--seed``); every ``schedule.validation_every`` steps the cross-entropy and pixel
accuracy of ``data.validation_batches`` validation batches are logged.
"""
from __future__ import annotations

import sys

import tensorflow as tf

from ctmri_tf import data
from ctmri_tf.configs import SegmentationConfig
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.training import loop
from ctmri_tf.training.segmentation import (Segmentation, evaluate_segmentation,
                                            write_final_metrics)
from ctmri_tf.training.summaries import flatten_hparams
from train import common

EVALUATION_SPLITS = ("validation", "test")


def _split(config: SegmentationConfig, split: str) -> tf.data.Dataset | None:
    """Every slice of ``split`` in file order, or None (with a warning) when it was not built."""
    d = config.data
    try:
        return data.segmentation_batches(split, d.validation_batch_size, d.image_size,
                                         shuffle=False, config=d.dataset_config,
                                         data_dir=d.data_dir)
    except CtmriInputError:
        raise
    except (ValueError, KeyError) as err:  # tfds: the built dataset has no such split
        print(f"warning: no {split} split ({err}); it is not evaluated", file=sys.stderr)
        return None


def build_datasets(config: SegmentationConfig):
    """``(train, validation, evaluation)``: the infinite, seeded training stream, the periodic
    validation batches (or None) and ``{split: dataset}`` of the whole validation and test
    splits for the final metrics.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command).
    """
    d = config.data
    train = data.segmentation_batches("train", d.batch_size, d.image_size, augment=d.augment,
                                      seed=config.seed, repeat=True, drop_remainder=True,
                                      config=d.dataset_config, data_dir=d.data_dir)
    evaluation = {split: ds for split in EVALUATION_SPLITS
                  if (ds := _split(config, split)) is not None}
    validation = evaluation.get("validation")
    if validation is not None and d.validation_batches > 0:
        validation = validation.take(d.validation_batches)
    else:
        validation = None
    return train, validation, evaluation


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser("segmentation", __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    prepared = common.prepare(args, "segmentation", make_inputs=build_datasets)
    config, strategy, run = prepared.config, prepared.strategy, prepared.run
    train_data, validation, evaluation = prepared.inputs
    task = Segmentation(config, strategy)
    hparams = {**flatten_hparams(config), "strategy": args.strategy,
               "replicas": strategy.num_replicas_in_sync}
    print(f"DeepLabV3+ {config.preset}: {config.data.image_size} px, batch "
          f"{config.data.batch_size}, {strategy.num_replicas_in_sync} replica(s) "
          f"({args.strategy}), run folder {run.root}", file=sys.stderr)
    result = loop.train(task, strategy=strategy, train_dataset=train_data,
                        schedule=config.schedule, run_dir=run, seed=config.seed,
                        resume=prepared.resume, validation_dataset=validation, hparams=hparams)
    results = evaluate_segmentation(task.model, evaluation, config.model.num_classes)
    path = write_final_metrics(run, result.step, results,
                               enabled=strategy.extended.should_checkpoint)
    for split, metrics in results.items():
        print(f"{split}: mean IoU {metrics['mean_iou']:.4f}, Dice {metrics['dice']:.4f} "
              f"({metrics['slices']} slices)", file=sys.stderr)
    print(f"done: step {result.step}/{config.schedule.steps}, "
          f"{result.seconds_per_step:.3f} s/step, checkpoint {result.checkpoint}, metrics {path}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))

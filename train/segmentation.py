"""Train the DeepLabV3+ body segmentation on CT and MRI slices of the tfds ``ctmri`` dataset.

    python -m datasets.ctmri build --data_dir DATA            # once
    python -m train.segmentation --strategy mirrored --preset demo --data-dir DATA \\
        [--run-dir runs/segmentation-demo] [--resume] [--set model.width=32]

The run folder holds ``config.json``, ``checkpoints/``, TensorBoard events (``--logdir runs/``),
``samples/`` (PNG grids: image | predicted mask | true mask) and, at the end, ``metrics.json``:
mean IoU and Dice of the whole ``validation`` and ``test`` splits (also in TensorBoard).
Training batches: slices of both modalities of the ``train`` split with their body masks
(shuffled with ``--seed``); every ``schedule.validation_every`` steps the cross-entropy and pixel
accuracy of ``data.validation_batches`` validation batches are logged.
"""
from __future__ import annotations

import sys

from ctmri_tf import data
from ctmri_tf.configs import SegmentationConfig
from ctmri_tf.training.run_dir import write_final_metrics
from ctmri_tf.training.segmentation import Segmentation, evaluate_segmentation
from train import common


def build_datasets(config: SegmentationConfig):
    """``(train, validation, evaluation)``: the infinite, seeded training stream, the periodic
    validation batches (or None) and ``{split: dataset}`` of the whole validation and test
    splits for the final metrics.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command).
    """
    d = config.data
    source = dict(config=d.dataset_config, data_dir=d.data_dir)
    train = data.segmentation_batches("train", d.batch_size, d.image_size, augment=d.augment,
                                      seed=config.seed, repeat=True, drop_remainder=True,
                                      **source)
    validation, evaluation = common.evaluation_datasets(
        config, lambda split: data.segmentation_batches(split, d.validation_batch_size,
                                                        d.image_size, shuffle=False, **source))
    return train, validation, evaluation


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser("segmentation", __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    prepared = common.prepare(args, "segmentation", make_inputs=build_datasets)
    config, strategy = prepared.config, prepared.strategy
    _, validation, evaluation = prepared.inputs
    task = Segmentation(config, strategy)
    result = common.train(task, prepared, args, "DeepLabV3+", validation=validation)
    results = evaluate_segmentation(task.model, evaluation, config.model.num_classes)
    path = write_final_metrics(prepared.run, result.step, results,
                               enabled=strategy.extended.should_checkpoint)
    for split, metrics in results.items():
        print(f"{split}: mean IoU {metrics['mean_iou']:.4f}, Dice {metrics['dice']:.4f} "
              f"({metrics['slices']} slices)", file=sys.stderr)
    print(common.done_message(result, config, f", metrics {path}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))

"""Train StarGAN CT <-> MRI on the tfds ``ctmri`` dataset.

    python -m datasets.ctmri build --data_dir DATA            # once
    python -m train.stargan --strategy mirrored --preset demo --data-dir DATA \\
        [--run-dir runs/stargan-demo] [--resume] [--set loss.lambda_rec=5]

The run folder holds ``config.json``, ``checkpoints/``, the TensorBoard events
(``tensorboard --logdir runs/`` shows the run by its folder name) and ``samples/`` (PNG grids,
rows labelled MRI->CT / CT->MRI with CT in a brain and a bone window: input | translated |
reconstructed, without it when ``loss.lambda_rec`` is 0 | ground truth).
Training batches: ``data.batch_size / 2`` CT and as many MRI slices of the ``train`` split
(unpaired, shuffled with ``--seed``; registered pairs with ``--set loss.lambda_paired=100``);
validation: paired MRI/CT slices of the ``validation``
split (PSNR/SSIM of MRI->CT and CT->MRI).
"""
from __future__ import annotations

import sys

import tensorflow as tf

from ctmri_tf.configs import StarGANConfig
from ctmri_tf.training.stargan import StarGAN, training_batches
from train import common


def build_datasets(config: StarGANConfig) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The infinite, seeded training stream and the (finite) paired validation set.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command).
    """
    return training_batches(config), common.paired_validation(config)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser("stargan", __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    prepared = common.prepare(args, "stargan", make_inputs=build_datasets)
    task = StarGAN(prepared.config, prepared.strategy)
    result = common.train(task, prepared, args, "StarGAN", validation=prepared.inputs[1])
    print(common.done_message(result, prepared.config), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))

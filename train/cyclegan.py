"""Train CycleGAN CT <-> MRI on the tfds ``ctmri`` dataset.

    python -m datasets.ctmri build --data_dir DATA            # once
    python -m train.cyclegan --strategy mirrored --preset demo --data-dir DATA \\
        [--direction mri2ct] [--run-dir runs/cyclegan-demo] [--resume] [--set loss.pool_size=50]

One run trains both generators (CT->MRI and MRI->CT); ``--direction`` (default mri2ct) records
which one is the run's primary model for export and evaluation (``<run-dir>/direction.json``).
The run folder holds ``config.json``, ``checkpoints/``, the TensorBoard events
(``tensorboard --logdir runs/`` shows the run by its folder name) and ``samples/`` (PNG grids,
rows labelled MRI->CT / CT->MRI with CT in a brain and a bone window: input | translated |
reconstructed | ground truth).
Training batches: ``data.batch_size`` CT and as many MRI slices of the ``train`` split
(unpaired, shuffled with ``--seed``); validation: paired MRI/CT slices of the ``validation``
split (PSNR/SSIM of MRI->CT and CT->MRI).
"""
from __future__ import annotations

import sys

import tensorflow as tf

from ctmri_tf import data
from ctmri_tf.configs import CycleGANConfig
from ctmri_tf.training.cyclegan import (DEFAULT_DIRECTION, DIRECTIONS, CycleGAN,
                                        read_primary_direction, write_primary_direction)
from train import common


def build_datasets(config: CycleGANConfig) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The infinite, seeded training stream and the (finite) paired validation set.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command).
    """
    d = config.data
    train = data.unpaired_batches("train", d.batch_size, d.image_size, mask_inputs=d.mask_inputs,
                                  augment=d.augment, seed=config.seed, repeat=True,
                                  drop_remainder=True, config=d.dataset_config,
                                  data_dir=d.data_dir)
    return train, common.paired_validation(config)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser("cyclegan", __doc__.split("\n\n")[0])
    parser.add_argument("--direction", choices=DIRECTIONS, default=None,
                        help="the run's primary generator, for export and evaluation "
                             "(default: mri2ct; a resumed run keeps its own unless given)")
    args = parser.parse_args(argv)
    prepared = common.prepare(args, "cyclegan", make_inputs=build_datasets)
    run = prepared.run
    if prepared.strategy.extended.should_checkpoint and (args.direction or not prepared.resume):
        write_primary_direction(run, args.direction or DEFAULT_DIRECTION)
    direction = read_primary_direction(run.root)
    task = CycleGAN(prepared.config, prepared.strategy)
    result = common.train(task, prepared, args, "CycleGAN", validation=prepared.inputs[1],
                          hparams={"direction": direction},
                          note=f", primary direction {direction}")
    print(common.done_message(result, prepared.config), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))

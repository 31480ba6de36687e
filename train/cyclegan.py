"""Train CycleGAN CT <-> MRI on the tfds ``ctmri`` dataset.

    python -m datasets.ctmri build --data_dir DATA            # once
    python -m train.cyclegan --strategy mirrored --preset demo --data-dir DATA \\
        [--direction mri2ct] [--run-dir runs/cyclegan-demo] [--resume] [--set loss.pool_size=50]

One run trains both generators (CT->MRI and MRI->CT); ``--direction`` (default mri2ct) records
which one is the run's primary model for export and evaluation (``<run-dir>/direction.json``).
The run folder holds ``config.json``, ``checkpoints/``, ``logs/`` (``tensorboard --logdir``) and
``samples/`` (PNG grids: input | translated | reconstructed | ground truth).
Training batches: ``data.batch_size`` CT and as many MRI slices of the ``train`` split
(unpaired, shuffled with ``--seed``); validation: paired MRI/CT slices of the ``validation``
split (PSNR/SSIM of MRI->CT and CT->MRI).
"""
from __future__ import annotations

import sys

import tensorflow as tf

from ctmri_tf import data
from ctmri_tf.configs import CycleGANConfig
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.training import loop
from ctmri_tf.training.cyclegan import (DEFAULT_DIRECTION, DIRECTIONS, CycleGAN,
                                        read_primary_direction, write_primary_direction)
from ctmri_tf.training.summaries import flatten_hparams
from train import common


def build_datasets(config: CycleGANConfig) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The infinite, seeded training stream and the (finite) paired validation set.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command).
    """
    d = config.data
    source = dict(config=d.dataset_config, data_dir=d.data_dir)
    train = data.unpaired_batches("train", d.batch_size, d.image_size, mask_inputs=d.mask_inputs,
                                  augment=d.augment, seed=config.seed, repeat=True,
                                  drop_remainder=True, **source)
    if d.validation_batches == 0:
        return train, None
    try:
        validation = data.paired_batches("validation", d.validation_batch_size, d.image_size,
                                         source="mri", mask_inputs=d.mask_inputs, shuffle=False,
                                         **source)
    except CtmriInputError:
        raise
    except (ValueError, KeyError) as err:  # tfds: the built dataset has no validation split
        print(f"warning: no validation split ({err}); training without validation",
              file=sys.stderr)
        return train, None
    return train, validation.take(d.validation_batches)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser("cyclegan", __doc__.split("\n\n")[0])
    parser.add_argument("--direction", choices=DIRECTIONS, default=None,
                        help="the run's primary generator, for export and evaluation "
                             "(default: mri2ct; a resumed run keeps its own unless given)")
    args = parser.parse_args(argv)
    prepared = common.prepare(args, "cyclegan", make_inputs=build_datasets)
    config, strategy, run = prepared.config, prepared.strategy, prepared.run
    train_data, validation = prepared.inputs
    if strategy.extended.should_checkpoint and (args.direction or not prepared.resume):
        write_primary_direction(run, args.direction or DEFAULT_DIRECTION)
    direction = read_primary_direction(run.root)
    task = CycleGAN(config, strategy)
    hparams = {**flatten_hparams(config), "direction": direction, "strategy": args.strategy,
               "replicas": strategy.num_replicas_in_sync}
    print(f"CycleGAN {config.preset}: {config.data.image_size} px, batch {config.data.batch_size}, "
          f"{strategy.num_replicas_in_sync} replica(s) ({args.strategy}), primary direction "
          f"{direction}, run folder {run.root}", file=sys.stderr)
    result = loop.train(task, strategy=strategy, train_dataset=train_data,
                        schedule=config.schedule, run_dir=run, seed=config.seed,
                        resume=prepared.resume, validation_dataset=validation, hparams=hparams)
    print(f"done: step {result.step}/{config.schedule.steps}, "
          f"{result.seconds_per_step:.3f} s/step, checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))

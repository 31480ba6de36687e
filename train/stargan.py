"""Train StarGAN CT <-> MRI on the tfds ``ctmri`` dataset.

    python -m datasets.ctmri build --data_dir DATA            # once
    python -m train.stargan --strategy mirrored --preset demo --data-dir DATA \\
        [--run-dir runs/stargan-demo] [--resume] [--set loss.lambda_rec=5]

The run folder holds ``config.json``, ``checkpoints/``, ``logs/`` (``tensorboard --logdir``) and
``samples/`` (PNG grids: input | translated | reconstructed | ground truth).
Training batches: ``data.batch_size / 2`` CT and as many MRI slices of the ``train`` split
(unpaired, shuffled with ``--seed``); validation: paired MRI/CT slices of the ``validation``
split (PSNR/SSIM of MRI->CT and CT->MRI).
"""
from __future__ import annotations

import sys

import tensorflow as tf

from ctmri_tf import data
from ctmri_tf.configs import StarGANConfig
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.training import loop
from ctmri_tf.training.stargan import StarGAN
from ctmri_tf.training.summaries import flatten_hparams
from train import common


def build_datasets(config: StarGANConfig) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The infinite, seeded training stream and the (finite) paired validation set.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command).
    """
    d = config.data
    source = dict(config=d.dataset_config, data_dir=d.data_dir)
    train = data.unpaired_batches("train", d.batch_size // 2, d.image_size,
                                  mask_inputs=d.mask_inputs, augment=d.augment, seed=config.seed,
                                  repeat=True, drop_remainder=True, **source)
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
    parser = common.build_parser("stargan", __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    prepared = common.prepare(args, "stargan", make_inputs=build_datasets)
    config, strategy = prepared.config, prepared.strategy
    train_data, validation = prepared.inputs
    task = StarGAN(config, strategy)
    hparams = {**flatten_hparams(config), "strategy": args.strategy,
               "replicas": strategy.num_replicas_in_sync}
    print(f"StarGAN {config.preset}: {config.data.image_size} px, batch {config.data.batch_size}, "
          f"{strategy.num_replicas_in_sync} replica(s) ({args.strategy}), "
          f"run folder {prepared.run.root}", file=sys.stderr)
    result = loop.train(task, strategy=strategy, train_dataset=train_data,
                        schedule=config.schedule, run_dir=prepared.run, seed=config.seed,
                        resume=prepared.resume, validation_dataset=validation, hparams=hparams)
    print(f"done: step {result.step}/{config.schedule.steps}, "
          f"{result.seconds_per_step:.3f} s/step, checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))

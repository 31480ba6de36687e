"""Train the CT/MRI modality classifier on the tfds ``ctmri`` dataset.

    python -m datasets.ctmri build --data_dir DATA            # once
    python -m train.classifier --strategy mirrored --preset demo --data-dir DATA \\
        [--run-dir runs/classifier-demo] [--resume] [--set model.filters=16]

The run folder holds ``config.json``, ``checkpoints/``, TensorBoard events (``--logdir runs/``),
``samples/`` (PNG rows of slices titled true -> predicted modality) and, at the end,
``metrics.json``: accuracy of the whole ``validation`` and ``test`` splits (also in TensorBoard),
and ``calibration.json``: the temperature ``T`` fitted on the validation split
(``ctmri_tf.calibration``; every slice as it is plus, with ``data.augment``, one augmented view
of it, so that T also reflects inputs unlike the phantom's grid), which
``python -m export.saved_model`` builds into the export.
Training batches: slices of both modalities of the ``train`` split labelled 0 = CT, 1 = MRI
(shuffled with ``--seed``; background set to -1 when ``data.mask_inputs``); every
``schedule.validation_every`` steps the cross-entropy and accuracy of ``data.validation_batches``
validation batches are logged.
"""
from __future__ import annotations

import sys

import numpy as np

from ctmri_tf import calibration, data
from ctmri_tf.configs import ClassifierConfig
from ctmri_tf.training.classifier import (ModalityClassifier, classifier_logits,
                                          evaluate_classifier)
from ctmri_tf.training.run_dir import write_final_metrics
from train import common


def build_datasets(config: ClassifierConfig):
    """``(train, validation, evaluation)``: the infinite, seeded training stream, the periodic
    validation batches (or None) and ``{split: dataset}`` of the whole validation and test
    splits for the final metrics.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command).
    """
    d = config.data
    source = dict(mask_inputs=d.mask_inputs, config=d.dataset_config, data_dir=d.data_dir)
    train = data.modality_batches("train", d.batch_size, d.image_size, augment=d.augment,
                                  seed=config.seed, repeat=True, drop_remainder=True, **source)
    validation, evaluation = common.evaluation_datasets(
        config, lambda split: data.modality_batches(split, d.validation_batch_size, d.image_size,
                                                    shuffle=False, **source))
    return train, validation, evaluation


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser("classifier", __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    prepared = common.prepare(args, "classifier", make_inputs=build_datasets)
    config, strategy = prepared.config, prepared.strategy
    _, validation, evaluation = prepared.inputs
    task = ModalityClassifier(config, strategy)
    result = common.train(task, prepared, args, "CT/MRI classifier", validation=validation)
    results = evaluate_classifier(task.model, evaluation)
    path = write_final_metrics(prepared.run, result.step, results,
                               enabled=strategy.extended.should_checkpoint)
    for split, metrics in results.items():
        print(f"{split}: accuracy {metrics['accuracy']:.4f} ({metrics['slices']} slices)",
              file=sys.stderr)
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
    written = calibration.write_calibration(prepared.run.root, record,
                                            enabled=strategy.extended.should_checkpoint)
    print(f"calibration: temperature {record['temperature']:.3f} on "
          f"{record['split'] or 'no validation split (T = 1)'}"
          + (f", NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f} nats"
             if record["split"] else "") + f" ({written})", file=sys.stderr)
    print(common.done_message(result, config, f", metrics {path}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_cli(main))

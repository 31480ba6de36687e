"""Translation quality at a fixed training budget: StarGAN and CycleGAN vs baselines.

    python -m benchmarks.quality [--models stargan,cyclegan] [--preset demo] [--minutes 30]
        [--steps N] [--data-dir artifacts/tensorflow_datasets] [--dataset-config NAME]
        [--precision float32] [--seed 0] [--set FIELD=VALUE ...] [--keep DIR]
        [--out benchmarks/results/quality.json] [--overwrite] [--quick]

1. The tfds ``ctmri`` dataset (default: the preset's 40 phantoms x 32 slices rendered at the
   model's input size, ``synthetic_40x32x128`` for ``demo``, paired CT/MRI with true HU) is
   built in ``--data-dir`` unless it is there already. With a dataset of another size the
   models' outputs are resized to it, and a "ground truth via N px" row gives the best score
   possible through that resize. On phantoms a "noise-free ground truth" row gives the best score
   of any model: the test subjects rendered without noise, scored against the noisy truth.
2. Each model is trained from scratch on the ``train`` split, with the preset's config
   (``ctmri_tf.configs``), its trainer (``ctmri_tf.training``) and the training loop
   (``ctmri_tf.training.loop.train``), for a fixed budget of ``--minutes`` of training each: the
   seconds per iteration are first measured with ``benchmarks.train_speed`` on the same config
   and input (not counted in the budget), and the run gets ``schedule.steps = budget /
   (s/iteration)`` (StarGAN: whole n_critic cycles), its learning rate decaying linearly over
   the preset's share of them. ``--steps`` gives the step count directly instead.
3. The trained generators, the identity and the histogram-matching baselines
   (``ctmri_tf.baselines``, reference histograms of the ``train`` split) are evaluated on the
   held-out ``test`` subjects with ``ctmri_tf.evaluate.evaluate`` (SynthRAD 2023 protocol, per
   subject volume; generators run at their training size, outputs resized back to the data's).

Printed and written: the comparison table (mean ± std over test subjects, inside the body and on
the whole image) and, beside the StarGAN figures, the targets: MRI->CT MAE <= 80 HU inside the
body and CT->MRI SSIM >= 0.80 inside the body (both at the ``demo`` preset).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402
from ctmri_tf.atomic import atomic_output  # noqa: E402
from ctmri_tf.errors import CtmriInputError  # noqa: E402
from ctmri_tf.flags import FlagParser  # noqa: E402

NAME = "quality"
MODELS = {"stargan": "stargan", "cyclegan": "cyclegan"}
MODEL_LABELS = {"stargan": "StarGAN", "cyclegan": "CycleGAN"}
TARGET_MRI_TO_CT_MAE_HU = 80.0
TARGET_CT_TO_MRI_SSIM = 0.80
TARGET_PRESET = "demo"
DEFAULT_DATA_DIR = common.REPO_ROOT / "artifacts" / "tensorflow_datasets"
"""``make demo``'s tfds data folder (the Makefile's ``DATA_DIR``)."""
QUICK_STEPS = 2
QUICK_PRESET = "smoke"
CALIBRATION_WARMUP = 10
CALIBRATION_ITERATIONS = 20
"""Calibration: untimed, then timed iterations. With 2 and 10 the demo StarGAN in bf16 was
calibrated at 0.61 s/iteration and trained at 0.54 s: 27 of the 30 minutes."""
HEADLINE = {  # row field -> (direction, region, metric)
    "mri_to_ct_mae_body_hu": ("mri->ct", "body", "mae"),
    "mri_to_ct_psnr_body_db": ("mri->ct", "body", "psnr"),
    "mri_to_ct_ssim_body": ("mri->ct", "body", "ssim"),
    "ct_to_mri_mae_body": ("ct->mri", "body", "mae"),
    "ct_to_mri_psnr_body_db": ("ct->mri", "body", "psnr"),
    "ct_to_mri_ssim_body": ("ct->mri", "body", "ssim"),
}
KEY_FIELDS = ("model", "preset", "dataset", "budget")
SYNTHETIC_SUBJECTS, SYNTHETIC_SLICES, SYNTHETIC_IMAGE_SIZE = 40, 32, 256
"""The default ``synthetic`` config: subjects, slices per subject, pixels."""


def training_config(model: str, preset: str, *, data_dir, dataset_config: str | None,
                    precision: str, seed: int, overrides: dict | None = None):
    """The preset's config with the data source, precision, seed and ``overrides``
    (``{"loss.lambda_rec": "5", ...}``, as ``--set``) applied; ``dataset_config`` None: the
    phantoms at the model's size (:func:`native_dataset`)."""
    from ctmri_tf import configs

    values = {"data.data_dir": str(data_dir), "precision": precision, "seed": seed,
              **(overrides or {})}
    config = configs.override(configs.get_config(model, preset), values)
    return configs.override(config, {"data.dataset_config": dataset_config
                                     or native_dataset(config)})


def native_dataset(config) -> str:
    """The dataset the benchmark evaluates ``config`` on when ``--dataset-config`` is not given.

    The preset's ``synthetic`` phantoms (40 subjects x 32 slices x 256 px) are rendered at the
    model's input size instead (``synthetic_40x32x128`` for ``demo``, ``make demo``'s dataset),
    so the model is scored against ground truth at its own resolution: resizing its output back
    to 256 px would blur every edge and cost more than the targets allow (see
    :func:`resolution_floor`).
    """
    d = config.data
    if d.dataset_config != "synthetic" or d.image_size == SYNTHETIC_IMAGE_SIZE:
        return d.dataset_config
    from ctmri_tf.datasets.ctmri import synthetic_config
    return synthetic_config(num_subjects=SYNTHETIC_SUBJECTS, num_slices=SYNTHETIC_SLICES,
                            image_size=d.image_size).name


_BODY_FIELDS = {(direction, metric): field
                for field, (direction, region, metric) in HEADLINE.items() if region == "body"}
"""(direction, metric) -> the :data:`HEADLINE` field of its body-region figure."""


def _mean_body_scores(subjects, prediction) -> dict:
    """The :data:`HEADLINE` body fields, means over ``subjects``, of ``prediction(subject,
    target)`` (a volume in physical units: CT in HU, MRI signal) scored against each subject's
    ``target`` volume inside the body, as ``ctmri_tf.evaluate`` scores a model (HU for CT MAE,
    [0, 1] MRI scale)."""
    import numpy as np

    from ctmri_tf import metrics

    values: dict[str, list[float]] = {field: [] for field in _BODY_FIELDS.values()}
    for subject in subjects:
        for target, direction in (("ct", "mri->ct"), ("mri", "ct->mri")):
            truth, low_high = subject.images[target], subject.ranges[target]
            pred = prediction(subject, target)
            if target == "ct":
                value_range = metrics.CT_RANGE_HU
            else:
                pred, truth = (metrics.mri_to_unit_interval(x, low_high) for x in (pred, truth))
                value_range = metrics.MRI_UNIT_RANGE
            body = metrics.image_metrics(pred, truth, subject.masks[target], value_range)["body"]
            for metric, value in body.items():
                values[_BODY_FIELDS[direction, metric]].append(value)
    return {field: float(np.mean(v)) for field, v in values.items()}


def resolution_floor(subjects, image_size: int) -> dict | None:
    """The score of a perfect model that runs at ``image_size``: each subject's ground truth
    resized to ``image_size`` and back (bilinear, as ``evaluate.resized_translator``), scored
    against itself inside the body. None when the subjects already have that size.

    Returns:
        The :data:`HEADLINE` fields, means over subjects (HU for CT MAE, [0, 1] MRI scale).
    """
    import tensorflow as tf

    from ctmri_tf import intensity

    if all(s.images["ct"].shape[1:] == (image_size, image_size) for s in subjects):
        return None

    def round_trip(subject, target):
        truth, low_high = subject.images[target], subject.ranges[target]
        unit = intensity.to_unit(truth, target, low_high)[..., None]
        small = tf.image.resize(unit, (image_size, image_size), method="bilinear", antialias=True)
        back = tf.image.resize(small, truth.shape[1:], method="bilinear").numpy()[..., 0]
        return intensity.from_unit(back, target, low_high)

    return _mean_body_scores(subjects, round_trip)


def noise_floor(subjects, dataset_config: str) -> dict | None:
    """The score of a perfect model on synthetic phantoms: each test subject rendered again
    without noise (``phantom.make_subject(..., noise=False)``), scored against the stored, noisy
    ground truth inside the body. No model can predict the noise, so none can beat it. None for
    non-synthetic data, or when a re-rendered noisy subject does not match the stored one.

    Returns:
        The :data:`HEADLINE` fields, means over subjects (HU for CT MAE, [0, 1] MRI scale).
    """
    import numpy as np

    from ctmri_tf import phantom
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import SOURCE_SYNTHETIC, known_config

    try:
        config = known_config(dataset_config)
    except CtmriInputError:
        return None
    if config.source != SOURCE_SYNTHETIC:
        return None
    prefix = f"phantom-{config.seed}-"
    if not all(subject.subject_id.startswith(prefix) for subject in subjects):
        return None
    grid = dict(image_size=config.image_size, num_slices=config.num_slices, seed=config.seed)
    clean = {}
    for subject in subjects:
        index = int(subject.subject_id[len(prefix):])
        noisy = phantom.make_subject(index, **grid)
        if not (np.allclose(noisy.ct, subject.images["ct"], atol=1e-3)
                and np.allclose(noisy.mri, subject.images["mri"], rtol=1e-5, atol=1e-3)):
            return None
        clean[subject.subject_id] = phantom.make_subject(index, noise=False, **grid)
    return _mean_body_scores(subjects,
                             lambda subject, target: getattr(clean[subject.subject_id], target))


def calibrate(config, overrides=None) -> float:
    """Seconds per training iteration of ``config`` (the preset with ``overrides``, the
    ``--set`` fields) on its tfds input (``benchmarks.train_speed.measure``, in this process)."""
    from benchmarks import train_speed

    spec = train_speed.Spec(config.experiment, config.preset, config.precision,
                            config.data.batch_size, iterations=CALIBRATION_ITERATIONS,
                            warmup=CALIBRATION_WARMUP, data_dir=config.data.data_dir,
                            dataset_config=config.data.dataset_config, seed=config.seed,
                            overrides=tuple(sorted((overrides or {}).items())))
    return train_speed.measure(spec)["seconds_per_iteration"]


def budget_steps(seconds: float, seconds_per_iteration: float, cycle: int) -> int:
    """Whole ``cycle``s of iterations that fit in ``seconds`` (at least one cycle)."""
    cycles = max(1, int(seconds // (seconds_per_iteration * cycle)))
    return cycles * cycle


def scheduled(config, steps: int):
    """``config`` with ``steps`` training steps: the learning-rate decay keeps the preset's
    share of the run, image grids four times, one checkpoint at the end."""
    from ctmri_tf import configs

    share = config.schedule.decay_steps / config.schedule.steps
    every = max(1, steps // 10)
    return configs.override(config, {
        "schedule.steps": steps, "schedule.decay_steps": int(round(steps * share)),
        "schedule.log_every": every, "schedule.summary_every": every,
        "schedule.validation_every": steps, "schedule.sample_every": max(1, steps // 4),
        "schedule.checkpoint_every": steps, "schedule.keep_checkpoints": 1})


def train_model(config, run_root: Path, progress: bool):
    """Train ``config`` from scratch with ``loop.train``; return ``(task, TrainingResult,
    seconds)``."""
    import tensorflow as tf

    from ctmri_tf.training import loop
    from ctmri_tf.training.run_dir import create_run_dir
    from ctmri_tf.training.runtime import configure_keras

    strategy = tf.distribute.get_strategy()
    configure_keras(config.seed, config.precision)   # tf.data shuffles use the global seed
    from ctmri_tf import experiments

    entry = experiments.get(config.experiment)       # the trainers' own inputs and task
    train_data = entry.inputs(config).train
    task = entry.task(config, strategy)
    run = create_run_dir(run_root, config)
    start = time.perf_counter()
    result = loop.train(task, strategy=strategy, train_dataset=train_data,
                        schedule=config.schedule, run_dir=run, seed=config.seed,
                        progress=progress)
    return task, result, time.perf_counter() - start


def translator_of(task, config):
    """The evaluation translator of a trained task, run at its training size."""
    from ctmri_tf import evaluate

    if config.experiment == "stargan":
        translator = evaluate.stargan_translator(task.generator)
    else:
        translator = evaluate.cyclegan_translator(task.generators())
    return evaluate.resized_translator(translator, config.data.image_size)


def headline(summary: dict) -> dict:
    """The body-region means of one model's summary (``evaluate``'s ``summary[model]``)."""
    values = {}
    for field, (direction, region, metric) in HEADLINE.items():
        stats = summary.get(direction, {}).get(region, {}).get(metric)
        values[field] = stats["mean"] if stats and stats["n"] else math.nan
    return values


def target_lines(rows: list[dict]) -> list[str]:
    """The StarGAN figures beside their targets (met / missed)."""
    lines = []
    for row in rows:
        if row["model"] != "StarGAN":
            continue
        mae, ssim = row["mri_to_ct_mae_body_hu"], row["ct_to_mri_ssim_body"]
        preset = "" if row["preset"] == TARGET_PRESET else (
            f" (targets are for the {TARGET_PRESET} preset; this is {row['preset']})")
        lines.append(f"StarGAN MRI->CT MAE in body: {mae:.1f} HU (target <= "
                     f"{TARGET_MRI_TO_CT_MAE_HU:.0f} HU: "
                     f"{'met' if mae <= TARGET_MRI_TO_CT_MAE_HU else 'missed'}){preset}")
        lines.append(f"StarGAN CT->MRI SSIM in body: {ssim:.3f} (target >= "
                     f"{TARGET_CT_TO_MRI_SSIM:.2f}: "
                     f"{'met' if ssim >= TARGET_CT_TO_MRI_SSIM else 'missed'}){preset}")
    return lines


COLUMNS = [
    common.Column("model", "model"),
    common.Column("steps", "steps"),
    common.Column("train_minutes", "train min", "{:.1f}"),
    common.Column("mri_to_ct_mae_body_hu", "MRI→CT MAE body (HU)", "{:.1f}"),
    common.Column("mri_to_ct_psnr_body_db", "MRI→CT PSNR body (dB)", "{:.2f}"),
    common.Column("mri_to_ct_ssim_body", "MRI→CT SSIM body", "{:.4f}"),
    common.Column("ct_to_mri_mae_body", "CT→MRI MAE body ([0,1])", "{:.4f}"),
    common.Column("ct_to_mri_ssim_body", "CT→MRI SSIM body", "{:.4f}"),
]


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(prog="python -m benchmarks.quality",
                        description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="stargan,cyclegan",
                        help="comma-separated: stargan, cyclegan (default: both)")
    parser.add_argument("--preset", default=TARGET_PRESET,
                        help="smoke, demo or paper (default: demo)")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training budget per model, minutes (default: 30)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train exactly this many steps instead of a time budget")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="tfds data folder; the dataset is built there if missing "
                             "(default: artifacts/tensorflow_datasets, as make demo; --quick: a "
                             "temporary folder)")
    parser.add_argument("--dataset-config", default=None,
                        help="tfds ctmri config (default: the preset's phantoms rendered at the "
                             "model's image size, e.g. synthetic_40x32x128 for demo)")
    parser.add_argument("--precision", default="float32", help="float32 or mixed_bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="override a config field of every trained model, e.g. --set "
                             "loss.n_critic=1 (repeatable; see python -m train.stargan --help)")
    parser.add_argument("--eval-batch-size", type=int, default=16,
                        help="slices per translator call during evaluation")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the run folders and the evaluation report (metrics.csv, "
                             "comparison.md, grids) in this new folder (default: deleted)")
    common.add_output_arguments(parser, NAME)
    return parser


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    models = common.parse_choices(args.models, MODELS, "model")
    if args.quick:
        args.preset, args.steps = QUICK_PRESET, QUICK_STEPS
    if args.steps is not None and args.steps < 1:
        raise CtmriInputError(None, f"--steps must be >= 1, got {args.steps}")
    if args.steps is None and not args.minutes > 0:
        raise CtmriInputError(None, f"--minutes must be positive, got {args.minutes}")
    if args.keep is not None and args.keep.exists():
        raise CtmriInputError(args.keep, "already exists; --keep takes a new folder")
    common.check_out(args.out, args.overwrite)
    previous = common.previous_results(args)
    machine = common.machine_info()

    from ctmri_tf.training.cli import parse_set
    overrides = parse_set(args.overrides)
    work = Path(tempfile.mkdtemp(prefix="ctmri-quality-"))
    try:
        data_dir = args.data_dir or (work / "tfds" if args.quick else DEFAULT_DATA_DIR)
        configs_ = {model: training_config(model, args.preset, data_dir=data_dir,
                                           dataset_config=args.dataset_config,
                                           precision=args.precision, seed=args.seed,
                                           overrides=overrides)
                    for model in models}
        dataset = next(iter(configs_.values())).data.dataset_config
        from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build
        print(f"[{NAME}] dataset ctmri/{dataset} in {data_dir} ...", file=sys.stderr, flush=True)
        report = build(dataset, data_dir=data_dir)
        print(report.summary(), file=sys.stderr)

        from ctmri_tf import baselines, evaluate
        translators = dict(baselines.baseline_translators(
            baselines.reference_from_split("train", config=dataset, data_dir=data_dir)))
        trained: dict[str, dict] = {}
        for model, config in configs_.items():
            label = MODEL_LABELS[model]
            seconds_per_iteration = None
            if args.steps is None:
                print(f"[{NAME}] {label}: measuring s/iteration ...", file=sys.stderr, flush=True)
                seconds_per_iteration = calibrate(config, overrides)
                from benchmarks.train_speed import cycle_length
                steps = budget_steps(args.minutes * 60, seconds_per_iteration,
                                     cycle_length(config))
            else:
                steps = args.steps
            config = scheduled(config, steps)
            print(f"[{NAME}] {label}: training {steps} steps ({config.preset}, "
                  f"{config.data.image_size} px, batch {config.data.batch_size}) ...",
                  file=sys.stderr, flush=True)
            task, result, seconds = train_model(config, work / "runs" / model,
                                                progress=not args.quick)
            translators[label] = translator_of(task, config)
            trained[label] = {"steps": result.step, "train_minutes": seconds / 60,
                              "seconds_per_iteration_calibrated": seconds_per_iteration,
                              "seconds_per_step_training": result.seconds_per_step,
                              "config": config}
        print(f"[{NAME}] evaluating on the test subjects ...", file=sys.stderr, flush=True)
        subjects = evaluate.load_subjects("test", config=dataset, data_dir=data_dir)
        sizes = {config.data.image_size for config in configs_.values()}
        floors = {size: floor for size in sorted(sizes)
                  if (floor := resolution_floor(subjects, size)) is not None}
        noise = noise_floor(subjects, dataset)
        results = evaluate.evaluate(translators, subjects, work / "evaluation",
                                    batch_size=args.eval_batch_size, progress=not args.quick)
        if args.keep is not None:
            with atomic_output(args.keep, directory=True) as kept:
                shutil.copytree(work / "evaluation", kept / "evaluation")
                shutil.copytree(work / "runs", kept / "runs")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    from ctmri_tf import configs as config_module
    budget = f"{args.steps} steps" if args.steps is not None else f"{args.minutes:g} min"
    rows = []
    for name in results["models"]:
        info = trained.get(name, {})
        row = {"model": name, "kind": "trained" if name in trained else "baseline",
               "preset": args.preset, "dataset": dataset, "budget": budget,
               "test_subjects": len(results["subjects"]),
               **{k: v for k, v in info.items() if k != "config"},
               **headline(results["summary"].get(name, {})),
               "summary": results["summary"].get(name, {})}
        if "config" in info:
            row["config"] = config_module.to_dict(info["config"])
        rows.append(row)
    for size, floor in floors.items():
        rows.append({"model": f"ground truth via {size} px", "kind": "resolution floor",
                     "preset": args.preset, "dataset": dataset, "budget": budget,
                     "test_subjects": len(results["subjects"]), **floor})
    if noise is not None:
        rows.append({"model": "noise-free ground truth", "kind": "noise floor",
                     "preset": args.preset, "dataset": dataset, "budget": budget,
                     "test_subjects": len(results["subjects"]), **noise})
    print(evaluate.comparison_markdown(results))
    for size in floors:
        print(f"[{NAME}] the models run at {size} px and are scored at the data's size: the "
              f"'ground truth via {size} px' row is the best any model at that size can score",
              file=sys.stderr)
    notes = {"protocol": results["protocol"], "subjects": results["subjects"],
             "targets": {"stargan_mri_to_ct_mae_body_hu_max": TARGET_MRI_TO_CT_MAE_HU,
                         "stargan_ct_to_mri_ssim_body_min": TARGET_CT_TO_MRI_SSIM,
                         "preset": TARGET_PRESET},
             "comparison_markdown": evaluate.comparison_markdown(results),
             "dataset_build": dataclasses.asdict(report)}
    common.finish(args, benchmark=NAME, rows=rows, columns=COLUMNS, notes=notes, machine=machine,
                  previous=previous, key_fields=KEY_FIELDS, metric="mri_to_ct_mae_body_hu",
                  higher_is_better=False, summary=target_lines(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments or input (message on stderr)."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

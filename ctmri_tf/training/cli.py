"""The trainers' command line: ``ctmri train <experiment>`` and ``python -m train.<experiment>``.

Every experiment of :mod:`ctmri_tf.experiments` trains through :func:`main`: parse the flags
(before TensorFlow is imported: ``--help`` is instant), resolve the config (the preset's
dataclass, then the flags), create the strategy, build the inputs (the registry's), create or
open the run folder, run the experiment's ``before_training`` hook, train with
:func:`ctmri_tf.training.loop.train`, run its ``after_training`` hook (final metrics,
calibration) and print the result once.

Flags common to all trainers::

    --preset {smoke,demo,paper}   starting config (default: demo); each names its dataset config
    --build-dataset               build the preset's dataset first when it is not built yet
    --strategy NAME               default, one_device, mirrored, multi_worker_mirrored
    --run-dir DIR                 run folder (default: runs/<experiment>-<preset>)
    --resume                      continue the run in --run-dir from its newest checkpoint
    --seed N                      weight initialisation, data order and per-step randomness
    --precision P                 float32 or mixed_bfloat16
    --steps N                     total training steps (the LR decay keeps the preset's share)
    --batch-size N                global batch, all replicas together
    --image-size PX               model input size in pixels
    --data-dir DIR                tfds data folder holding the built ``ctmri`` dataset
    --dataset-config NAME         tfds ``ctmri`` config (synthetic, synthetic_small, folder)
    --set FIELD=VALUE             any other config field, e.g. --set loss.lambda_rec=5 (repeatable)
    --verbose                     show the library logs hidden by default (ctmri_tf.console)

Every flag also answers to its underscore spelling (``--data_dir``; ``ctmri_tf.flags``).

With ``--resume`` the config comes from ``<run-dir>/config.json``; flags given again override it
(e.g. ``--steps`` to train longer) and the updated config is written back once the checkpoint
has been restored (a resume that fails leaves ``config.json`` as it was). The model architecture
(``model.*``) of a resumed run cannot change. One training at a time writes to a run folder
(``run.lock``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Callable

from ctmri_tf import configs
from ctmri_tf.errors import CtmriInputError, DatasetNotBuiltError
from ctmri_tf.flags import FlagParser
from ctmri_tf.training import run_dir as run_dirs
from ctmri_tf.training.strategy import STRATEGIES

# flag attribute -> config field
FLAG_FIELDS = {
    "seed": "seed",
    "precision": "precision",
    "steps": "schedule.steps",
    "batch_size": "data.batch_size",
    "image_size": "data.image_size",
    "data_dir": "data.data_dir",
    "dataset_config": "data.dataset_config",
}


@dataclasses.dataclass
class Prepared:
    """What a trainer needs after the flags are handled."""
    config: configs.ExperimentConfig
    strategy: object
    run: run_dirs.RunDir
    resume: bool
    inputs: Any = None
    config_changed: bool = False
    """``--resume`` changed the saved config: :func:`train` writes ``config.json`` once the
    checkpoint is restored."""


def build_parser(experiment: str, description: str, *, prog: str | None = None
                 ) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the common flags (an experiment may add its own)."""
    parser = FlagParser(prog=prog or f"ctmri train {experiment}", description=description,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None,
                        help=f"starting config: {', '.join(configs.presets(experiment))} "
                             f"(default: demo; paper is the published architecture at 256 px; "
                             f"*_2p5d: 2.5-D generators, 3 slices in)")
    parser.add_argument("--build-dataset", action="store_true",
                        help="build the config's dataset (data.dataset_config in data.data_dir) "
                             "first if it is not built yet")
    parser.add_argument("--strategy", default="default",
                        help=f"tf.distribute strategy: {', '.join(STRATEGIES)} (default: default)")
    parser.add_argument("--run-dir", default=None,
                        help="run folder (default: runs/<experiment>-<preset>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its newest checkpoint")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    parser.add_argument("--precision", default=None,
                        help=f"{' or '.join(configs.PRECISIONS)} (default: float32)")
    parser.add_argument("--steps", type=int, default=None,
                        help="total training steps; the learning-rate decay (and StarGAN's "
                             "regression warm-up) keep the preset's share of the run unless "
                             "schedule.decay_steps (loss.adversarial_start_step) is --set")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global batch size (all replicas together)")
    parser.add_argument("--image-size", type=int, default=None, help="model input size, pixels")
    parser.add_argument("--data-dir", default=None,
                        help="tfds data folder where the ctmri dataset was built")
    parser.add_argument("--dataset-config", default=None,
                        help="ctmri dataset config: synthetic, synthetic_small, folder, ...")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="override any config field (repeatable)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the library logs and warnings hidden by default")
    return parser


def parse_set(items: list[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}``.

    Raises:
        CtmriInputError: an item without ``=``.
    """
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise CtmriInputError(None, f"--set {item!r}: expected FIELD=VALUE, e.g. "
                                        "--set loss.lambda_rec=5")
        overrides[field.strip()] = value.strip()
    return overrides


def collect_overrides(args: argparse.Namespace, base: configs.ExperimentConfig) -> dict:
    """Config overrides from the dedicated flags and ``--set`` (``--set`` wins)."""
    overrides = {field: getattr(args, flag) for flag, field in FLAG_FIELDS.items()
                 if getattr(args, flag) is not None}
    explicit = parse_set(args.overrides)
    if args.steps is not None:     # the decay (and StarGAN's warm-up) keep their share
        overrides.update({field: value for field, value
                          in configs.run_share_overrides(base, args.steps).items()
                          if field not in explicit})
    overrides.update(explicit)
    return overrides


def prepare(args: argparse.Namespace, experiment: str,
            make_inputs: Callable[[configs.ExperimentConfig], Any] | None = None) -> Prepared:
    """Resolve the config, create the strategy, build the inputs and create (or open, with
    ``--resume``) the run folder.

    The strategy is created before any other TensorFlow op runs (multi-worker needs it); then
    the seeds and precision policy are set (``configure_keras``: tf.data shuffles combine their
    seed with the global one, so the data order depends on ``--seed`` only), and
    ``make_inputs(config)`` (the datasets) runs before a new run folder is created, so that a
    missing dataset leaves no half-started run behind. An empty ``data.pixel_spacing_mm`` is
    then resolved from the built dataset (``ctmri_tf.data.resolve_pixel_spacing``: the spacing
    the model sees) and written with the config.

    Raises:
        CtmriInputError: unknown preset/strategy/field, bad values, a run folder that exists
            without ``--resume`` or is missing with it, a ``--resume`` that changes ``model.*``
            (nothing is written then).
    """
    from ctmri_tf import data
    from ctmri_tf.training.runtime import configure_keras
    from ctmri_tf.training.strategy import make_strategy

    preset = args.preset or "demo"
    if args.resume:
        root = Path(args.run_dir) if args.run_dir else run_dirs.default_run_dir(
            configs.get_config(experiment, preset))
        run, config = run_dirs.open_run_dir(root)
        if config.experiment != experiment:
            raise CtmriInputError(run.config_path, f"holds a {config.experiment} run, not "
                                                   f"{experiment}")
        if args.preset and args.preset != config.preset:
            raise CtmriInputError(run.config_path, f"the run was started with --preset "
                                                   f"{config.preset}; a resumed run keeps it")
        overrides = collect_overrides(args, config)
        saved, config = config, configs.override(config, overrides)
        check_same_model(run, saved, config)
        strategy = make_strategy(args.strategy)
        configure_keras(config.seed, config.precision)   # tf.data shuffles use the global seed
        inputs = _make_inputs(make_inputs, config, args)
        resolved = data.resolve_pixel_spacing(config)     # a run started before it was recorded
        # config.json is rewritten only once the checkpoint is restored (train(), on_restored):
        # a resume that fails leaves the run resumable as it was
        return Prepared(resolved, strategy, run, True, inputs, config_changed=resolved != saved)

    base = configs.get_config(experiment, preset)
    config = configs.override(base, collect_overrides(args, base))
    root = Path(args.run_dir) if args.run_dir else run_dirs.default_run_dir(config)
    strategy = make_strategy(args.strategy)
    # only the chief creates (so checks) the folder: a non-chief worker sharing it may see the
    # chief's files already there
    if strategy.extended.should_checkpoint and root.exists() and (
            not root.is_dir() or any(root.iterdir())):
        raise CtmriInputError(root, "already exists and is not an empty folder; pass --resume "
                                    "to continue that run or choose another --run-dir")
    configure_keras(config.seed, config.precision)       # tf.data shuffles use the global seed
    inputs = _make_inputs(make_inputs, config, args)
    config = data.resolve_pixel_spacing(config)           # config.json: data.pixel_spacing_mm
    if strategy.extended.should_checkpoint:
        run = run_dirs.create_run_dir(root, config)
    else:  # a non-chief worker of a multi-worker run writes nothing
        run = run_dirs.RunDir(root)
    return Prepared(config, strategy, run, False, inputs)


def _make_inputs(make_inputs, config: configs.ExperimentConfig, args: argparse.Namespace):
    """``make_inputs(config)``; with ``--build-dataset`` a missing dataset is built first
    (``python -m datasets.ctmri build`` in process), without it the error says both ways.

    Raises:
        CtmriInputError: the dataset is not built (the message gives the build command and
            ``--build-dataset``), or other bad input.
    """
    if make_inputs is None:
        return None
    try:
        return make_inputs(config)
    except DatasetNotBuiltError as missing:
        if not getattr(args, "build_dataset", False):
            raise CtmriInputError(missing.path, f"{missing.problem}, or add --build-dataset "
                                                f"to this command") from None
        from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build

        report = build(missing.config, data_dir=missing.data_dir)
        print(f"built dataset {report.data_path}", file=sys.stderr)
        return make_inputs(config)


def check_same_model(run: run_dirs.RunDir, saved: configs.ExperimentConfig,
                     config: configs.ExperimentConfig) -> None:
    """Refuse a resumed config whose ``model`` (the architecture the checkpoint holds) differs
    from the run's; nothing is written.

    Raises:
        CtmriInputError: naming ``config.json`` and each differing field (saved -> asked).
    """
    before, after = dataclasses.asdict(saved.model), dataclasses.asdict(config.model)
    changed = [f"model.{name}: {before[name]!r} -> {after[name]!r}" for name in before
               if before[name] != after[name]]
    if changed:
        raise CtmriInputError(run.config_path, f"--resume cannot change the model "
                                               f"architecture the checkpoints hold "
                                               f"({'; '.join(changed)}); start a new run in "
                                               f"another --run-dir to train another model")


def train(task, prepared: Prepared, args: argparse.Namespace, title: str, *,
          validation=None, hparams: dict | None = None, note: str = "",
          say: Callable[[str], None] | None = None):
    """Announce the run on stderr and train ``task`` with ``ctmri_tf.training.loop.train``.

    Args:
        task: the trainer's ``TrainingTask``.
        prepared: from :func:`prepare` (config, strategy, run folder, resume; ``inputs[0]`` is
            the training stream).
        args: the parsed flags (``--strategy`` goes into the hyperparameters).
        title: what is trained, e.g. ``"StarGAN"``.
        validation: the periodic validation dataset, or None.
        hparams: extra TensorBoard hyperparameters next to the flattened config.
        note: extra text for the announcement, e.g. ``", primary direction mri2ct"``.
        say: prints the announcement (default: to stderr).

    Returns:
        The loop's ``TrainingResult``.
    """
    from ctmri_tf.training import loop
    from ctmri_tf.training.summaries import flatten_hparams

    config, strategy, run = prepared.config, prepared.strategy, prepared.run
    replicas = strategy.num_replicas_in_sync
    (say or _stderr)(f"{title} {config.preset}: {config.data.image_size} px, batch "
                     f"{config.data.batch_size}, {replicas} replica(s) ({args.strategy}){note}, "
                     f"run folder {run.root}")
    hparams = {**flatten_hparams(config), **(hparams or {}), "strategy": args.strategy,
               "replicas": replicas}
    write_config = None
    if prepared.resume and prepared.config_changed and strategy.extended.should_checkpoint:
        def write_config(step: int) -> None:
            run_dirs.update_config(run, config)
    return loop.train(task, strategy=strategy, train_dataset=prepared.inputs.train,
                      schedule=config.schedule, run_dir=run, seed=config.seed,
                      resume=prepared.resume, validation_dataset=validation, hparams=hparams,
                      on_restored=write_config)


def done_message(result, config: configs.ExperimentConfig, extra: str = "") -> str:
    """``done: step N/M, S s/step (wall), checkpoint PATH<extra>`` (a non-chief worker:
    ``checkpoint written by the chief``). S is the wall time of the whole loop per step
    (validation, summaries and checkpoints included), the rate the progress bar shows."""
    checkpoint = result.checkpoint or "written by the chief"
    return (f"done: step {result.step}/{config.schedule.steps}, "
            f"{result.wall_seconds_per_step:.3f} s/step (wall), checkpoint {checkpoint}{extra}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def main(experiment: str, argv: list[str] | None = None, *, prog: str | None = None,
         run_dir_shown_as: str | os.PathLike | None = None) -> int:
    """Train ``experiment`` (a name of :mod:`ctmri_tf.experiments`) with the flags ``argv``;
    return the exit status (see the module docstring). Bad input raises
    :class:`~ctmri_tf.errors.CtmriInputError`: :func:`run_cli` prints it.

    ``run_dir_shown_as``: the path the console names instead of ``--run-dir`` (the pipeline's
    Trainer trains in a hidden temporary folder that is renamed when it succeeds, and prints
    the final one)."""
    from ctmri_tf import experiments

    entry = experiments.get(experiment)
    parser = build_parser(experiment, entry.summary, prog=prog)
    entry.add_arguments(parser)
    args = parser.parse_args(argv)
    prepared = prepare(args, experiment, make_inputs=entry.inputs)
    extras = entry.before_training(prepared, args)
    task = entry.task(prepared.config, prepared.strategy)
    say = _stderr
    if run_dir_shown_as is not None:
        real, shown = os.fspath(prepared.run.root), os.fspath(run_dir_shown_as)

        def say(line: str) -> None:
            _stderr(line.replace(real, shown))
    result = train(task, prepared, args, entry.title, validation=prepared.inputs.validation,
                   hparams=extras.get("hparams"), note=extras.get("note", ""), say=say)
    for line in entry.after_training(task, prepared, result):
        say(line)
    say(done_message(result, prepared.config))
    return 0


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a trainer's ``main``; bad input ends with ``error: <path>: <problem>`` and exit 2."""
    try:
        return main(argv)
    except CtmriInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130

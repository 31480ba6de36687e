"""Command-line handling shared by every trainer in ``train/`` (the library parses nothing).

Flags common to all trainers::

    --preset {smoke,demo,paper}   starting config (default: paper)
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

With ``--resume`` the config comes from ``<run-dir>/config.json``; flags given again override it
(e.g. ``--steps`` to train longer) and the updated config is written back.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable

from ctmri_tf import configs
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.training import run_dir as run_dirs
from ctmri_tf.training.runtime import configure_keras
from ctmri_tf.training.strategy import STRATEGIES, make_strategy

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


def build_parser(experiment: str, description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the common flags (trainers may add their own)."""
    parser = argparse.ArgumentParser(prog=f"python -m train.{experiment}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None,
                        help=f"starting config: {', '.join(configs.PRESETS)} (default: paper)")
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
                        help="total training steps; the learning-rate decay keeps the preset's "
                             "share of the run unless schedule.decay_steps is --set")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global batch size (all replicas together)")
    parser.add_argument("--image-size", type=int, default=None, help="model input size, pixels")
    parser.add_argument("--data-dir", default=None,
                        help="tfds data folder where the ctmri dataset was built")
    parser.add_argument("--dataset-config", default=None,
                        help="ctmri dataset config: synthetic, synthetic_small, folder, ...")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="override any config field (repeatable)")
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
    if args.steps is not None and "schedule.decay_steps" not in explicit:
        share = base.schedule.decay_steps / base.schedule.steps
        overrides["schedule.decay_steps"] = int(round(args.steps * share))
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
    missing dataset leaves no half-started run behind.

    Raises:
        CtmriInputError: unknown preset/strategy/field, bad values, a run folder that exists
            without ``--resume`` or is missing with it.
    """
    preset = args.preset or "paper"
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
        config = configs.override(config, overrides)
        strategy = make_strategy(args.strategy)
        configure_keras(config.seed, config.precision)   # tf.data shuffles use the global seed
        inputs = make_inputs(config) if make_inputs else None
        if overrides and strategy.extended.should_checkpoint:
            run_dirs.update_config(run, config)
        return Prepared(config, strategy, run, True, inputs)

    base = configs.get_config(experiment, preset)
    config = configs.override(base, collect_overrides(args, base))
    root = Path(args.run_dir) if args.run_dir else run_dirs.default_run_dir(config)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise CtmriInputError(root, "already exists and is not an empty folder; pass --resume "
                                    "to continue that run or choose another --run-dir")
    strategy = make_strategy(args.strategy)
    configure_keras(config.seed, config.precision)       # tf.data shuffles use the global seed
    inputs = make_inputs(config) if make_inputs else None
    if strategy.extended.should_checkpoint:
        run = run_dirs.create_run_dir(root, config)
    else:  # a non-chief worker of a multi-worker run writes nothing
        run = run_dirs.RunDir(root)
    return Prepared(config, strategy, run, False, inputs)


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

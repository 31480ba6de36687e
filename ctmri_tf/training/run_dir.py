"""The run folder: everything one training run writes, in one place.

Layout::

    <run_dir>/config.json     the resolved experiment config (``ctmri_tf.configs.to_json``)
    <run_dir>/checkpoints/    ``tf.train.CheckpointManager`` checkpoints (``ckpt-<step>``)
    <run_dir>/logs/           TensorBoard event files
    <run_dir>/samples/        PNG image grids, ``step_<step>.png``
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ctmri_tf import configs
from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder."""
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def samples(self) -> Path:
        return self.root / "samples"


def default_run_dir(config: configs.ExperimentConfig, base: str | os.PathLike = "runs") -> Path:
    """``runs/<experiment>-<preset>``."""
    return Path(base) / f"{config.experiment}-{config.preset}"


def create_run_dir(root: str | os.PathLike, config: configs.ExperimentConfig) -> RunDir:
    """Create a new run folder holding ``config.json`` and the empty sub-folders.

    The folder appears complete or not at all (built as a temporary sibling, then renamed).

    Raises:
        CtmriInputError: ``root`` exists and is not empty (a previous run lives there: resume it
            or choose another folder).
    """
    root = Path(root)
    if root.exists():
        if not root.is_dir() or any(root.iterdir()):
            raise CtmriInputError(root, "already exists and is not an empty folder; pass --resume "
                                        "to continue that run or choose another --run-dir")
    with atomic_output(root, directory=True, overwrite=root.exists()) as tmp:
        (tmp / CONFIG_FILE).write_text(configs.to_json(config))
        run = RunDir(tmp)
        for folder in (run.checkpoints, run.logs, run.samples):
            folder.mkdir()
    return RunDir(root)


def open_run_dir(root: str | os.PathLike) -> tuple[RunDir, configs.ExperimentConfig]:
    """Open an existing run folder (to resume it) and read its config.

    Raises:
        CtmriInputError: the folder or its ``config.json`` is missing or unreadable.
    """
    run = RunDir(Path(root))
    if not run.root.is_dir():
        raise CtmriInputError(run.root, "run folder does not exist; nothing to resume "
                                        "(start without --resume)")
    if not run.config_path.is_file():
        raise CtmriInputError(run.config_path, "missing; this folder is not a ctmri-tf run folder")
    config = configs.from_json(run.config_path.read_text(), source=str(run.config_path))
    for folder in (run.checkpoints, run.logs, run.samples):
        folder.mkdir(exist_ok=True)
    return run, config


def update_config(run: RunDir, config: configs.ExperimentConfig) -> None:
    """Replace ``config.json`` (atomically), e.g. after ``--resume --steps N`` extended a run."""
    with atomic_output(run.config_path, overwrite=True) as tmp:
        tmp.write_text(configs.to_json(config))

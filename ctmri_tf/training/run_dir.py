"""The run folder: everything one training run writes, in one place.

Layout::

    <run_dir>/config.json     the resolved experiment config (``ctmri_tf.configs.to_json``)
    <run_dir>/checkpoints/    ``tf.train.CheckpointManager`` checkpoints (``ckpt-<step>``)
    <run_dir>/events.out.tfevents.*   TensorBoard event files, in the run folder itself:
                              ``tensorboard --logdir runs/`` names each run by its folder
                              (``stargan-demo``), not ``stargan-demo/logs``. A run folder made
                              before this layout keeps writing to its ``logs/`` (resume).
    <run_dir>/samples/        PNG image grids, ``step_<step>.png``
    <run_dir>/metrics.json    segmentation and classifier runs: the final validation/test
                              metrics (:func:`write_final_metrics`)
    <run_dir>/run.lock        while a training writes to the folder: ``{"pid", "host",
                              "started"}`` of that process (:func:`lock_run`)
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import socket
import warnings
from pathlib import Path
from typing import Iterator, Mapping

from ctmri_tf import configs
from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOCK_FILE = "run.lock"
LEGACY_LOGS = "logs"
"""Where older run folders hold their TensorBoard events; a resumed one keeps using it."""


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
        """The TensorBoard event folder: the run folder itself, or ``logs/`` in a run folder
        made before events moved to the run folder (so a resumed run stays one TensorBoard
        run)."""
        legacy = self.root / LEGACY_LOGS
        return legacy if legacy.is_dir() else self.root

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE


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
        for folder in (run.checkpoints, run.samples):
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
    config = _read_config(run)
    for folder in (run.checkpoints, run.samples):
        folder.mkdir(exist_ok=True)
    return run, config


def update_config(run: RunDir, config: configs.ExperimentConfig) -> None:
    """Replace ``config.json`` (atomically), e.g. after ``--resume --steps N`` extended a run."""
    with atomic_output(run.config_path, overwrite=True) as tmp:
        tmp.write_text(configs.to_json(config))


@contextlib.contextmanager
def lock_run(run: RunDir, *, enabled: bool = True) -> Iterator[None]:
    """Hold ``<run_dir>/run.lock`` for the block: one training at a time per run folder.

    The lock file is created atomically (``O_CREAT | O_EXCL``) and holds this process's pid and
    host as JSON; it is removed when the block ends, also on an exception. A lock whose process
    is dead (same host, pid gone) or whose content is unreadable is taken over with a
    ``UserWarning``: it was left by a crash or a kill.

    Args:
        run: the run folder (must exist).
        enabled: ``False`` on non-chief workers of a multi-worker run (they write nothing).

    Raises:
        CtmriInputError: naming ``run.lock``, while another live process (or a process on
            another host, which cannot be checked) holds the lock.
    """
    if not enabled:
        yield
        return
    mine = _acquire_lock(run.lock_path)
    try:
        yield
    finally:
        _release_lock(run.lock_path, mine)


def _lock_owner(text: str | None) -> dict | None:
    try:
        owner = json.loads(text or "")
        pid = owner["pid"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    return owner


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    except OSError:
        return False
    return True


def _read_lock(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


def _acquire_lock(path: Path) -> str:
    host = socket.gethostname()
    mine = json.dumps({"pid": os.getpid(), "host": host,
                       "started": datetime.datetime.now(datetime.timezone.utc)
                       .isoformat(timespec="seconds")}) + "\n"
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read_lock(path)
            if held is None:          # released meanwhile: try again
                continue
            owner = _lock_owner(held)
            if owner is not None and owner.get("host", host) != host:
                raise CtmriInputError(path, f"another training (pid {owner['pid']} on host "
                                            f"{owner.get('host')}) is writing to this run folder; "
                                            f"if it is no longer running, delete this file")
            if owner is not None and _pid_alive(owner["pid"]):
                raise CtmriInputError(path, f"another training (pid {owner['pid']}, started "
                                            f"{owner.get('started', '?')}) is writing to this run "
                                            f"folder; wait for it to end or stop it (if pid "
                                            f"{owner['pid']} is no training, e.g. after a reboot, "
                                            f"delete this file)")
            what = (f"left by pid {owner['pid']}, which is no longer running" if owner
                    else "unreadable")
            warnings.warn(f"{path}: stale lock ({what}); taking it over", UserWarning,
                          stacklevel=4)
            if _read_lock(path) == held:   # still the stale one: remove it, then race for it
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            continue
        try:
            with os.fdopen(fd, "w") as f:
                f.write(mine)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return mine
    raise CtmriInputError(path, "cannot take the run folder's lock: other processes keep "
                                "taking it; is another training starting on this folder?")


def _release_lock(path: Path, mine: str) -> None:
    if _read_lock(path) == mine:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_config(run: RunDir) -> configs.ExperimentConfig:
    if not run.config_path.is_file():
        raise CtmriInputError(run.config_path, "missing; this folder is not a ctmri-tf run folder")
    return configs.from_json(run.config_path.read_text(), source=str(run.config_path))


def read_run(root: str | os.PathLike, experiment: str | None = None
             ) -> tuple[RunDir, configs.ExperimentConfig]:
    """An existing run folder and its config, read only (to load a trained model: unlike
    :func:`open_run_dir`, nothing is created).

    Args:
        root: the run folder.
        experiment: when given, the experiment the run must be (``stargan``, ``cyclegan``,
            ``segmentation``, ``classifier``).

    Raises:
        CtmriInputError: the folder or its ``config.json`` is missing or unreadable, or the run
            is another experiment (naming ``config.json``).
    """
    run = RunDir(Path(root))
    if not run.root.is_dir():
        raise CtmriInputError(run.root, "run folder does not exist")
    config = _read_config(run)
    if experiment is not None and config.experiment != experiment:
        raise CtmriInputError(run.config_path, f"is a {config.experiment!r} run, not a "
                                               f"{experiment} run")
    return run, config


def _json_ready(value):
    """NaN -> None (JSON ``null``), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_final_metrics(run: RunDir, step: int, results: Mapping[str, Mapping],
                        *, enabled: bool = True) -> Path:
    """Log the final metrics of each split to TensorBoard and write ``<run_dir>/metrics.json``.

    Args:
        run: the run folder.
        step: the training step the model was evaluated at (the TensorBoard step).
        results: ``{split: metrics}``, e.g. ``{"validation": {...}, "test": {...}}`` from
            ``evaluate_segmentation`` or ``evaluate_classifier``; scalar (float) metrics are
            logged as ``<split>/<metric>``.
        enabled: ``False`` on non-chief workers (nothing is written).

    Returns:
        The path of ``metrics.json`` (``{"step": step, split: metrics, ...}``, NaN as ``null``);
        it replaces the file of an earlier session of the same run.
    """
    from ctmri_tf.training.summaries import SummaryWriter   # TensorFlow: only when writing

    path = run.root / METRICS_FILE
    if not enabled:
        return path
    writer = SummaryWriter(run.logs)
    for split, metrics in results.items():
        writer.scalars(step, {name: value for name, value in metrics.items()
                              if isinstance(value, float)}, prefix=f"{split}/")
    writer.close()
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(_json_ready({"step": int(step), **results}), indent=2) + "\n")
    return path

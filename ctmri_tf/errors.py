"""Errors raised for bad user input.

Every error about a user's file names the file and says what is wrong with it, so that a
researcher with a folder of 300 DICOM files knows which one to look at.
"""
from __future__ import annotations

import os


class CtmriInputError(ValueError):
    """A user's input (file, folder, argument) cannot be used.

    Attributes:
        path: the offending file or folder (``str``), or ``None`` for non-file input.
        problem: a one-sentence description of what is wrong.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class DatasetNotBuiltError(CtmriInputError):
    """The tfds dataset a command needs has not been built.

    Attributes:
        config: the dataset config name (e.g. ``synthetic_small``).
        data_dir: the tfds data folder looked in (``None``: tfds' default).
    """

    def __init__(self, path, config: str, data_dir):
        self.config = config
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        where = f" --data-dir {self.data_dir}" if self.data_dir is not None else ""
        super().__init__(path, f"the ctmri/{config} dataset is not built; build it with: "
                               f"python -m datasets.ctmri build --config {config}{where}")


class CtmriInputWarning(UserWarning):
    """A user's input was read, but not exactly as it is stored (a skipped localizer or series,
    gantry-tilt shear, uneven slices resampled, padding set to air). The message starts with the
    file or folder, like :class:`CtmriInputError`."""

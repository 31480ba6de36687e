"""Write outputs so that nobody ever sees half of one.

Every writer in ctmri-tf writes to a temporary sibling (same folder, so the final
``os.replace`` is atomic on POSIX) and renames it into place only when the whole output
is complete. An existing path is never replaced unless the caller asks for it, and a
user's input is never a valid output.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ctmri_tf.errors import CtmriInputError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, directory: bool = False,
                  overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; move it to ``path`` when the block succeeds.

    Args:
        path: the final file (or folder, with ``directory=True``).
        directory: create and yield an empty temporary folder instead of a file path.
        overwrite: replace an existing ``path``. Without it an existing ``path`` is an error.

    Raises:
        CtmriInputError: ``path`` exists and ``overwrite`` is false; ``path`` is an existing
            folder where a file is expected (or a file where a folder is expected), even with
            ``overwrite``; its parent is not a folder. Nothing is created then.

    If the block raises, or the final rename fails, the temporary output is deleted and
    ``path`` is left untouched: no temporary sibling remains on any failure.
    """
    final = Path(path)
    check_output_path(final, directory=directory, overwrite=overwrite)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CtmriInputError(final.parent, "is not a folder, so nothing can be written "
                                            "inside it") from None
    prefix = f".{final.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix="".join(final.suffixes), dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if not directory:
            os.chmod(tmp, 0o644)
        _move_into_place(tmp, final, directory=directory)
    except BaseException:
        _remove(tmp)
        raise


def check_output_path(path: str | os.PathLike, *, directory: bool = False,
                      overwrite: bool = False) -> None:
    """Raise what :func:`atomic_output` would for ``path`` before it writes anything.

    Raises:
        CtmriInputError: ``path`` is a folder where a file is expected or a file where a folder
            is expected (even with ``overwrite``), or it exists and ``overwrite`` is false.
    """
    final = Path(path)
    if directory and final.exists() and not final.is_dir():
        raise CtmriInputError(final, "is an existing file, but the output here is a folder; "
                                     "give a folder name (an existing file is never replaced "
                                     "by a folder)")
    if not directory and final.is_dir():
        raise CtmriInputError(final, "is an existing folder, but the output here is a file; "
                                     "give a file name (an existing folder is never replaced "
                                     "by a file)")
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise CtmriInputError(final, "output already exists; refusing to overwrite it "
                                     "(choose another path, or use --overwrite / overwrite=True)")


def _move_into_place(tmp: Path, final: Path, *, directory: bool) -> None:
    if not (directory and final.exists()):
        os.replace(tmp, final)
        return
    # os.replace cannot replace a non-empty folder: move the old one aside first (to a fresh
    # empty folder, which rename may replace), and put it back if the new one cannot go in.
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    try:
        os.replace(final, old)
    except BaseException:
        old.rmdir()
        raise
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    _remove(old)

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
        CtmriInputError: ``path`` exists and ``overwrite`` is false.

    If the block raises, the temporary output is deleted and ``path`` is left untouched.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise CtmriInputError(final, "output already exists; refusing to overwrite it "
                                     "(choose another path, or use --overwrite / overwrite=True)")
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix="".join(final.suffixes), dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if final.exists() and directory:
        # os.replace cannot replace a non-empty folder: move the old one aside first.
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)
    if not directory:
        os.chmod(final, 0o644)

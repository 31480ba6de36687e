"""atomic_output: all or nothing, never over an existing path unless asked."""
import os

import pytest

from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError


def test_file_appears_only_when_complete(tmp_path):
    final = tmp_path / "out" / "volume.nii.gz"
    with atomic_output(final) as tmp:
        assert tmp.parent == final.parent and tmp != final
        tmp.write_bytes(b"abc")
        assert not final.exists()
    assert final.read_bytes() == b"abc"
    assert sorted(p.name for p in final.parent.iterdir()) == ["volume.nii.gz"]


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "series"
    with pytest.raises(RuntimeError):
        with atomic_output(final, directory=True) as tmp:
            (tmp / "slice_000.dcm").write_bytes(b"x")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_unless_overwrite(tmp_path):
    final = tmp_path / "mask.png"
    final.write_bytes(b"user data")
    with pytest.raises(CtmriInputError, match="mask.png.*already exists"):
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"new")
    assert final.read_bytes() == b"user data"
    with atomic_output(final, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"


def test_overwrite_folder_replaces_whole_folder(tmp_path):
    final = tmp_path / "voc"
    final.mkdir()
    (final / "stale.txt").write_text("old")
    with atomic_output(final, directory=True, overwrite=True) as tmp:
        (tmp / "class_names.txt").write_text("body\n")
    assert sorted(p.name for p in final.iterdir()) == ["class_names.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["voc"]


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("overwrite", [False, True])
def test_existing_folder_where_a_file_is_expected_is_refused_before_any_temp(tmp_path,
                                                                            overwrite):
    final = tmp_path / "ct.nii.gz"
    final.mkdir()
    (final / "keep.txt").write_text("user data")
    entered = False
    with pytest.raises(CtmriInputError) as err:
        with atomic_output(final, overwrite=overwrite) as tmp:
            entered = True
            tmp.write_bytes(b"new")
    assert not entered and err.value.path == str(final)
    assert "existing folder" in err.value.problem and "file" in err.value.problem
    assert _listing(tmp_path) == ["ct.nii.gz", "ct.nii.gz/keep.txt"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_existing_file_where_a_folder_is_expected_is_refused(tmp_path, overwrite):
    final = tmp_path / "series"
    final.write_bytes(b"user data")
    with pytest.raises(CtmriInputError, match="existing file.*folder") as err:
        with atomic_output(final, directory=True, overwrite=overwrite) as tmp:
            (tmp / "slice.dcm").write_bytes(b"x")
    assert err.value.path == str(final)
    assert _listing(tmp_path) == ["series"] and final.read_bytes() == b"user data"


def test_parent_that_is_a_file_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CtmriInputError, match="not a folder") as err:
        with atomic_output(tmp_path / "notes.txt" / "out.png"):
            pass
    assert err.value.path == str(tmp_path / "notes.txt")
    assert _listing(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("directory", [False, True])
def test_failed_final_rename_leaves_no_temporary_sibling(tmp_path, monkeypatch, directory):
    final = tmp_path / ("voc" if directory else "mask.png")
    if directory:
        final.mkdir()
        (final / "old.txt").write_text("old")
    else:
        final.write_bytes(b"old")
    real_replace = os.replace

    def failing_replace(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        with atomic_output(final, directory=directory, overwrite=True) as tmp:
            if directory:
                (tmp / "class_names.txt").write_text("body\n")
            else:
                tmp.write_bytes(b"new")
    monkeypatch.undo()
    # the old output is back in place and nothing else is left
    assert _listing(tmp_path) == (["voc", "voc/old.txt"] if directory else ["mask.png"])
    assert (final / "old.txt").read_text() == "old" if directory else final.read_bytes() == b"old"

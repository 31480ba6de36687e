"""atomic_output: all or nothing, never over an existing path unless asked."""
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

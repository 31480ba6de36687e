"""The `ctmri` command line (ctmri_tf.cli), end to end through main([...])."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import ctmri_tf
from ctmri_tf import cli
from ctmri_tf.errors import CtmriInputError


def write_annotated_slice(folder, stem, *, rect=((2, 3), (9, 7)), label="body"):
    """A 12x16 8-bit PNG and its labelme JSON with one rectangle."""
    folder.mkdir(exist_ok=True)
    cv2.imwrite(str(folder / f"{stem}.png"), np.full((12, 16), 100, np.uint8))
    (folder / f"{stem}.json").write_text(json.dumps({
        "version": "6.3.1", "flags": {}, "imagePath": f"{stem}.png", "imageData": None,
        "imageHeight": 12, "imageWidth": 16,
        "shapes": [{"label": label, "points": [list(p) for p in rect], "group_id": None,
                    "description": "", "shape_type": "rectangle", "flags": {}}]}))


@pytest.fixture
def annotated(tmp_path):
    for i in range(4):
        write_annotated_slice(tmp_path / "in", f"slice_{i}")
    return tmp_path / "in"


def test_labelme_to_masks_end_to_end(annotated, tmp_path, capsys):
    out = tmp_path / "masks"
    assert cli.main(["labelme-to-masks", str(annotated), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"slice_{i}.png" for i in range(4)]
    mask = cv2.imread(str(out / "slice_0.png"), cv2.IMREAD_UNCHANGED)
    expected = np.zeros((12, 16), np.uint8)
    expected[3:8, 2:10] = 255
    np.testing.assert_array_equal(mask, expected)
    assert f"wrote 4 mask(s) to {out}" in capsys.readouterr().out


def test_input_error_is_one_line_on_stderr_with_status_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status = cli.main(["labelme-to-masks", str(tmp_path / "empty"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert f"ctmri: error: {tmp_path / 'empty'}: no labelme .json files" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(annotated, tmp_path, capsys):
    out = tmp_path / "masks"
    out.mkdir()
    assert cli.main(["labelme-to-masks", str(annotated), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert cli.main(["labelme-to-masks", str(annotated), str(out), "--overwrite"]) == 0
    assert len(list(out.iterdir())) == 4


def test_labelme_to_voc_end_to_end(annotated, tmp_path):
    write_annotated_slice(annotated, "slice_9", rect=((0, 0), (3, 3)), label="lesion")
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nbody\nlesion\n")
    out = tmp_path / "voc"
    status = cli.main(["labelme-to-voc", str(annotated), str(out), "--labels", str(labels),
                       "--val-fraction", "0.4", "--seed", "3"])
    assert status == 0
    sets = out / "ImageSets" / "Segmentation"
    val = (sets / "val.txt").read_text().split()
    train = (sets / "train.txt").read_text().split()
    assert len(val) == 2 and sorted(train + val) == sorted(f"slice_{i}" for i in (0, 1, 2, 3, 9))
    assert (out / "class_names.txt").read_text().split() == ["_background_", "body", "lesion"]
    # The palette PNG holds class ids: 2 for the "lesion" rectangle.
    import PIL.Image
    with PIL.Image.open(out / "SegmentationClass" / "slice_9.png") as png:
        ids = np.asarray(png)
    assert set(np.unique(ids)) == {0, 2} and (ids == 2).sum() == 16


def test_labelme_to_voc_bad_label_reports_file_and_label(annotated, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nlesion\n")
    status = cli.main(["labelme-to-voc", str(annotated), str(tmp_path / "voc"),
                       "--labels", str(labels)])
    err = capsys.readouterr().err
    assert status == 2
    last_line = err.splitlines()[-1]  # after tqdm's progress bar
    assert last_line.startswith(f"ctmri: error: {annotated / 'slice_0.json'}: label 'body'")
    assert "'body'" in err and "Traceback" not in err
    assert not (tmp_path / "voc").exists()


@pytest.mark.parametrize("argv, expected", [
    ([], "the following arguments are required: COMMAND"),
    (["labelme-to-voc", "in", "out"], "the following arguments are required: --labels"),
    (["labelme-to-voc", "in", "out", "--labels", "l.txt", "--seed", "x"], "invalid int value"),
    (["no-such-command"], "invalid choice"),
])
def test_usage_errors_exit_2(argv, expected, capsys):
    assert cli.main(argv) == 2
    assert expected in capsys.readouterr().err


def test_help_and_version_exit_0(capsys):
    assert cli.main(["--version"]) == 0
    assert ctmri_tf.__version__ in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "labelme-to-masks" in out and "labelme-to-voc" in out


def test_other_exceptions_propagate(annotated, tmp_path, monkeypatch):
    import ctmri_tf.io.annotations as annotations

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(annotations, "convert_labelme_to_masks", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["labelme-to-masks", str(annotated), str(tmp_path / "out")])


def test_a_new_command_is_one_registered_function(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_COMMANDS", dict(cli._COMMANDS))
    calls = []

    def arguments(parser):
        parser.add_argument("path")
        parser.add_argument("--fail", action="store_true")

    @cli.command("echo-path", help="print PATH", arguments=arguments)
    def _echo(args):
        """Print PATH, or refuse it."""
        if args.fail:
            raise CtmriInputError(args.path, "refused")
        calls.append(args.path)
        return 0

    assert cli.main(["echo-path", "some/file"]) == 0 and calls == ["some/file"]
    assert cli.main(["echo-path", "some/file", "--fail"]) == 2
    assert "ctmri: error: some/file: refused" in capsys.readouterr().err
    with pytest.raises(ValueError, match="registered twice"):
        cli.command("echo-path", help="again", arguments=arguments)(_echo)


def test_python_dash_m_runs_without_importing_tensorflow(annotated, tmp_path):
    out = tmp_path / "masks"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ctmri_tf.cli", "labelme-to-masks",
         str(annotated), str(out)],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(out.glob("*.png"))) == 4
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "ctmri_tf.io.annotations" in imported and "labelme" in imported
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras")}

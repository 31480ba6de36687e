"""``ctmri translate`` on real-world DICOM folders (localizers, several series, uneven tilted
stacks), with an identity "model" so that no TensorFlow is needed: only the I/O is under test."""
from __future__ import annotations

import medical_fixtures as fx
import numpy as np
import pytest

from ctmri_tf import cli
from ctmri_tf.errors import CtmriInputWarning
from ctmri_tf.io import read_dicom
from ctmri_tf.translate import ModelSet, translate_file

SIZE = 16


@pytest.fixture
def identity_models(tmp_path, monkeypatch):
    """An export base whose StarGAN returns its input (model space [-1, 1]) unchanged."""
    base = tmp_path / "exports"
    (base / "stargan").mkdir(parents=True)
    monkeypatch.setattr(ModelSet, "translate_unit", lambda self, images, source, target: images)
    monkeypatch.setattr(ModelSet, "describe_translator", lambda self, source, target: "identity")
    # what an export records beside the model: no data card, trained at the input's own spacing
    monkeypatch.setattr(ModelSet, "data_card", lambda self, source, target: None)
    monkeypatch.setattr(ModelSet, "pixel_spacing", lambda self: None)
    monkeypatch.setattr(ModelSet, "warn_matrix_resize", lambda self, size: None)
    monkeypatch.setattr(ModelSet, "context_slices", lambda self: 1)          # a 2-D model
    return base


def head_ct(slices: int) -> np.ndarray:
    """Integer HU: air around a 40 HU head with a 1000 HU rim, different in every slice."""
    hu = np.full((slices, SIZE, SIZE), -1000.0)
    hu[:, 3:13, 3:13] = 1000.0
    hu[:, 4:12, 4:12] = 40.0 + 10.0 * np.arange(slices)[:, None, None]
    return hu


def test_series_option_picks_the_series_and_the_default_skips_the_localizer(
        tmp_path, identity_models, capsys):
    folder = tmp_path / "exam"
    study = "1.2.826.0.1.8"
    fx.write_dicom_series(folder, head_ct(1), study_uid=study, series_uid=study + ".1",
                          name_prefix="SCOUT", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                          orientation=(0, 1, 0, 0, 0, -1), SeriesDescription="Scout")
    fx.write_dicom_series(folder, head_ct(4), study_uid=study, series_uid=study + ".2",
                          name_prefix="AX", SeriesDescription="Head")
    small = fx.write_dicom_series(folder, head_ct(2), study_uid=study, series_uid=study + ".3",
                                  name_prefix="BONE", spacing=(3.0, 0.8, 0.8),
                                  SeriesDescription="Head bone")

    out = tmp_path / "mri_default"
    assert cli.main(["translate", str(folder), str(out), "--models", str(identity_models),
                     "--image-size", str(SIZE)]) == 0
    captured = capsys.readouterr()
    assert f"series {study}.2" in captured.out
    assert "ctmri: warning:" in captured.err and "('Scout', 1 image(s): localizer)" in captured.err
    assert read_dicom(out).shape == (4, SIZE, SIZE)

    out = tmp_path / "mri_bone"
    assert cli.main(["translate", str(folder), str(out), "--models", str(identity_models),
                     "--image-size", str(SIZE), "--series", study + ".3"]) == 0
    assert "warning" not in capsys.readouterr().err
    result = read_dicom(out)
    assert result.shape == (2, SIZE, SIZE) and result.modality == "mri"
    assert result.spacing == pytest.approx((3.0, 0.8, 0.8))
    np.testing.assert_array_equal(result.meta["slice_positions"],
                                  [fx.read_dicom_header(p).ImagePositionPatient for p in small])

    assert cli.main(["translate", str(folder), str(tmp_path / "x"), "--models",
                     str(identity_models), "--series", "9.9.9"]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: has no series 9.9.9; available:" in err and "('Head bone', CT, 2 slices)" \
        in err
    assert not (tmp_path / "x").exists()


def test_tilted_uneven_ct_translates_to_dicom_at_the_exact_positions(tmp_path, identity_models):
    gaps = (4.0, 4.0, 7.0, 7.0)
    orientation, positions = fx.tilted_two_stack_geometry(gaps, tilt_deg=12.0)
    fx.write_dicom_series(tmp_path / "ge", head_ct(5), spacing=(4.0, 0.9, 0.9),
                          orientation=orientation, positions=positions, GantryDetectorTilt=12.0)
    with pytest.warns(CtmriInputWarning, match="gantry tilt of 12.00 degrees"):
        out = translate_file(tmp_path / "ge", tmp_path / "mri",
                             models=ModelSet(identity_models, image_size=SIZE), progress=False)
    written = sorted(out.iterdir())
    assert len(written) == 5
    in_files = np.array([[float(v) for v in p] for p in positions])
    out_files = np.array(sorted(([float(v) for v in fx.read_dicom_header(f).ImagePositionPatient]
                                 for f in written), key=lambda p: p[2]))
    np.testing.assert_array_equal(out_files, in_files)           # bit for bit, not re-gridded
    assert {fx.read_dicom_header(f).Modality for f in written} == {"MR"}

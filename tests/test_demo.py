"""`make demo` on a tiny synthetic config with the smoke presets and 2 training steps, through the
pipeline: dataset built, contact sheet written with the expected layout and the phantom's CT in the
display window, then every component of the pipeline: training runs with TensorBoard event files
and final metrics, the evaluation reports, the blessed models pushed as SavedModels with
``models.config`` (a model that is not blessed is not pushed), the translated NIfTI on the input's
grid; a second demo finds every component cached."""
import dataclasses
import json

import cv2
import nibabel as nib
import numpy as np

from ctmri_tf import demo, phantom_v2
from ctmri_tf.export.saved_model import model_versions
from ctmri_tf.io import read_nifti
from ctmri_tf.datasets.ctmri import ctmri_dataset_builder
from ctmri_tf.visualize import (CONTACT_SHEET_CT_WINDOW_HU, SEPARATOR_PX, TITLE_HEIGHT_PX,
                                to_uint8)

SUBJECTS, SLICES, SIZE = 3, 4, 32   # phantom v2: subject 0 train, 1 validation, 2 test
STEPS = 2


def _bless_stargan(config):
    """The demo's pipeline with StarGAN blessed whatever its MAE (a 2-step model cannot beat
    histogram matching); the segmentation model and the classifier keep their thresholds (Dice
    0.9, accuracy 0.95), which 2 steps do not reach: they are evaluated and not pushed."""
    models = []
    for spec in config.models:
        evaluator = spec.evaluator
        if spec.trainer.experiment == "stargan":
            evaluator = dataclasses.replace(evaluator, beat_baselines=())
        models.append(dataclasses.replace(spec, evaluator=evaluator))
    return dataclasses.replace(config, models=tuple(models))


def test_demo_runs_the_pipeline_end_to_end_and_a_rerun_is_cached(tmp_path, capsys, monkeypatch):
    original = demo.demo_pipeline
    monkeypatch.setattr(demo, "demo_pipeline",
                        lambda run: _bless_stargan(original(run)))
    argv = ["--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "demo"),
            "--num-subjects", str(SUBJECTS), "--num-slices", str(SLICES),
            "--image-size", str(SIZE), "--preset", "smoke", "--steps", str(STEPS)]
    assert demo.main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    console = captured.out + captured.err
    # every result printed once: the trainers print their final metrics, the demo does not repeat
    for result in ("test: mean IoU", "validation: mean IoU", "test: accuracy", "calibration: "):
        assert console.count(result) == 1, result
    assert "slices/s" in printed and "contact_sheet.png" in printed
    # the console names the folders that stay, not the components' hidden temporary ones
    assert ".tmp-" not in console and "run folder " in console
    assert (tmp_path / "tfds" / "ctmri" / f"synthetic_v2_{SUBJECTS}x{SLICES}x{SIZE}" /
            str(ctmri_dataset_builder.Builder.VERSION) / "dataset_info.json").is_file()

    sheet = cv2.imread(str(tmp_path / "demo" / "contact_sheet.png"), cv2.IMREAD_UNCHANGED)
    top = TITLE_HEIGHT_PX + SEPARATOR_PX
    assert sheet.dtype == np.uint8
    assert sheet.shape == (top + SLICES * SIZE + (SLICES - 1) * SEPARATOR_PX,
                           3 * SIZE + 2 * SEPARATOR_PX)
    test_subject = phantom_v2.make_subject(2, image_size=SIZE, num_slices=SLICES)
    for k in range(SLICES):  # rows: every slice of the test subject, in order
        y = top + k * (SIZE + SEPARATOR_PX)
        np.testing.assert_array_equal(sheet[y:y + SIZE, :SIZE],
                                      to_uint8(test_subject.ct[k], CONTACT_SHEET_CT_WINDOW_HU))
        np.testing.assert_array_equal(sheet[y:y + SIZE, -SIZE:], test_subject.mask[k] * 255)

    out = tmp_path / "demo"
    lines = [line for line in printed.splitlines() if line.startswith("[pipeline] ")]
    components = [line.split()[1] for line in lines[1:-1]]
    assert components == ["ExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator"] + [
        f"{kind}.{name}" for name in ("stargan", "segmentation", "classifier")
        for kind in ("Trainer", "Evaluator", "Pusher")]
    assert all(line.split()[2] == "executed" for line in lines[1:-1])
    # training runs: config, TensorBoard event files, a checkpoint at the last step
    for experiment in ("stargan", "segmentation", "classifier"):
        (run,) = (out / "pipeline" / f"Trainer.{experiment}").glob("*/run")
        assert json.loads((run / "config.json").read_text())["schedule"]["steps"] == STEPS
        assert list(run.glob("events.out.tfevents.*")), experiment
        assert (run / "checkpoints" / f"ckpt-{STEPS}.index").is_file(), experiment
    assert "identity (no translation)" in console and "validation PSNR" in console

    # evaluation: StarGAN and the baselines, the table printed
    (results,) = (out / "pipeline" / "Evaluator.stargan").glob("*/evaluation")
    rows = (results / "metrics.csv").read_text().splitlines()
    assert {row.split(",")[0] for row in rows[1:]} == {"identity", "histogram matching",
                                                       "StarGAN"}
    comparison = (results / "comparison.md").read_text()
    assert "| StarGAN |" in comparison and comparison.splitlines()[0] in printed
    (accuracy,) = (out / "pipeline" / "Evaluator.classifier").glob("*/evaluation/metrics.json")
    assert json.loads(accuracy.read_text())["split"] == "test"

    # exports: the blessed StarGAN, version 1, in TF Serving's config; the others not pushed
    exports = out / "exports"
    assert (exports / "stargan" / "1" / "saved_model.pb").is_file()
    assert f'base_path: "{exports.resolve() / "stargan"}"' in (exports / "models.config").read_text()
    assert not (exports / "classifier").exists() and not (exports / "segmentation").exists()
    assert "not pushed: ACCURACY" in printed and "not pushed: DICE" in printed
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temporary leftovers

    # the translated test subject: NIfTI CT on the MRI's grid, air outside the body
    test_subject = phantom_v2.make_subject(SUBJECTS - 1, image_size=SIZE, num_slices=SLICES)
    source = out / "translate" / f"{test_subject.subject_id}_mri.nii.gz"
    translated = out / "translate" / f"{test_subject.subject_id}_synthetic_ct.nii.gz"
    np.testing.assert_array_equal(nib.load(translated).affine, nib.load(source).affine)
    np.testing.assert_allclose(read_nifti(source).data, test_subject.mri, rtol=1e-6)
    ct = read_nifti(translated).data
    assert ct.shape == (SLICES, SIZE, SIZE) and (ct == -1000.0).any()
    # ... and its picture: inner slices 1 and 2, input | synthetic | true | error
    picture = cv2.imread(str(out / "translate" / f"{test_subject.subject_id}_synthetic_ct.png"),
                         cv2.IMREAD_UNCHANGED)
    assert picture.shape[0] == TITLE_HEIGHT_PX + SEPARATOR_PX + 2 * SIZE + SEPARATOR_PX
    assert "slices of input MRI | synthetic CT | true CT | error" in printed
    assert "no classifier is served: --from mri" in printed
    assert "no segmentation model is served: body mask by thresholds" in printed
    assert "MAE" in printed and f"tensorboard --logdir {(out / 'pipeline').resolve()}" in printed
    # and how its MAE relates to the evaluation's: the subject's own score there
    assert printed.count("scores this subject") == 1

    # a second demo: the data reused, every component cached, nothing trained or pushed again
    before = translated.stat().st_mtime_ns
    assert demo.main(argv) == 0
    again = capsys.readouterr()
    assert "already built" in again.out
    lines = [line for line in again.out.splitlines() if line.startswith("[pipeline] ")]
    assert all(line.split()[2] == "cached" for line in lines[1:-1]), lines
    assert "(13 cached)" in lines[-1]
    assert "done: step" not in again.err                     # no trainer ran
    assert model_versions(exports / "stargan") == [1]
    assert translated.stat().st_mtime_ns != before           # the translation is redone


def test_spread_slices_picks_evenly_over_one_subject():
    examples = [{"modality": m, "has_counterpart": True, "subject_id": s, "slice_index": k}
                for s in (b"a", b"b") for k in range(20) for m in (0, 1)]
    picked = demo.spread_slices(examples, 6)
    assert [e["slice_index"] for e in picked] == [0, 4, 8, 11, 15, 19]
    assert {e["subject_id"] for e in picked} == {b"a"} and all(e["modality"] == 0 for e in picked)


def test_the_demo_translates_a_held_out_domain_subject_of_phantom_v2():
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import known_config

    subject, about = demo.demo_subject(known_config("synthetic_v2_10x4x32"))
    assert subject.subject_id == "phantom2-0-0009-heldout"          # 10 subjects: 1 held out
    assert subject.settings["domain"] == "heldout" and subject.mri.shape == (4, 32, 32)
    assert about.startswith("phantom v2 held-out domain, never seen in training: ")
    assert f"{subject.settings['slice_thickness_mm']:.1f} mm slices" in about
    # no held-out split (3 subjects): the last test subject; phantom v1: the last subject
    subject, about = demo.demo_subject(known_config("synthetic_v2_3x4x32"))
    assert subject.subject_id == "phantom2-0-0002" and about.startswith("a phantom v2 test")
    subject, about = demo.demo_subject(known_config("synthetic_3x4x32"))
    assert subject.subject_id == "phantom-0-0002" and "v1" in about

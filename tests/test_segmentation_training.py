"""DeepLabV3+ body-segmentation training end to end: the CLI on a tiny built tfds dataset
(4 phantom subjects x 6 slices x 32 px: 24 train, 12 validation and 12 test slices), its run
folder, TensorBoard output, final metrics and resume.
"""
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import configs, data
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.metrics import segmentation_metrics
from ctmri_tf.training.segmentation import load_segmentation_model, pixel_cross_entropy
from dataset_fixtures import tiny_dataset  # noqa: F401  (pytest fixture)
from train import segmentation as segmentation_cli


def events(logdir):
    """``{tag: {step: summary value}}`` of every event file in ``logdir``."""
    found = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = value
    return found


def scalar(value) -> float:
    return float(tf.make_ndarray(value.tensor))


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    """A 4-step smoke run through the CLI (MirroredStrategy over this process's CPU)."""
    name, data_dir = tiny_dataset
    root = tmp_path_factory.mktemp("segmentation") / "run"
    code = segmentation_cli.main([
        "--preset", "smoke", "--strategy", "mirrored", "--data-dir", str(data_dir),
        "--dataset-config", name, "--run-dir", str(root), "--steps", "4",
        "--set", "schedule.summary_every=2", "--set", "schedule.checkpoint_every=2",
        "--set", "schedule.sample_every=2", "--set", "schedule.validation_every=2"])
    assert code == 0
    return root, name, data_dir


def test_pixel_cross_entropy_matches_hand_computed_values():
    # one 1x2 image: pixel 0 is body with logits (0, ln 3) -> p = 3/4; pixel 1 is background
    # with logits (0, 0) -> p = 1/2; the mean of -ln p over the two pixels
    logits = tf.constant([[[[0.0, np.log(3.0)], [0.0, 0.0]]]])
    labels = tf.constant([[[1, 0]]])
    want = (-np.log(0.75) - np.log(0.5)) / 2
    np.testing.assert_allclose(pixel_cross_entropy(labels, logits).numpy(), [want], rtol=1e-6)


def test_cli_run_writes_config_checkpoints_tensorboard_samples_and_metrics(run):
    root, name, _ = run
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("events.out.")) \
        == ["checkpoints", "config.json", "metrics.json", "samples"]
    config = configs.from_json((root / "config.json").read_text())
    assert (config.schedule.steps, config.schedule.decay_steps) == (4, 2)
    assert config.data.dataset_config == name
    assert sorted(p.name for p in (root / "checkpoints").glob("*.index")) == ["ckpt-2.index",
                                                                               "ckpt-4.index"]
    assert sorted(p.name for p in (root / "samples").iterdir()) == ["step_0000002.png",
                                                                    "step_0000004.png"]
    found = events(root)
    assert set(found["loss/cross_entropy"]) == {2, 4}
    assert all(np.isfinite(scalar(v)) for v in found["loss/cross_entropy"].values())
    # Adam 1e-3, 4 steps, decay over the last 2: the rate of the next update after step 2 is
    # 1e-3, after step 4 (none left) 0
    assert scalar(found["learning_rate/optimizer"][2]) == pytest.approx(1e-3)
    assert scalar(found["learning_rate/optimizer"][4]) == pytest.approx(0.0, abs=1e-12)
    for tag in ("validation/cross_entropy", "validation/pixel_accuracy"):
        assert set(found[tag]) == {2, 4}, tag
    assert 0.0 <= scalar(found["validation/pixel_accuracy"][4]) <= 1.0
    for tag in ("validation/mean_iou", "validation/dice", "test/mean_iou", "test/dice"):
        assert set(found[tag]) == {4}, tag
    image = found["samples"][4]
    assert image.metadata.plugin_data.plugin_name == "images"
    grid = tf.image.decode_png(image.tensor.string_val[2]).numpy()
    assert grid.shape[1] > 3 * 32 and grid.shape[0] > 2 * 32       # 3 columns, batch rows
    hparams = found["_hparams_/session_start_info"][0].metadata.plugin_data
    assert hparams.plugin_name == "hparams" and b"model.blocks" in hparams.content


def test_final_metrics_equal_segmentation_metrics_of_the_saved_model(run):
    root, name, data_dir = run
    written = json.loads((root / "metrics.json").read_text())
    assert written["step"] == 4 and set(written) == {"step", "validation", "test"}
    model = load_segmentation_model(root)
    found = events(root)
    for split in ("validation", "test"):
        predicted, truth = [], []
        for images, masks in data.segmentation_batches(split, 12, 32, shuffle=False, config=name,
                                                       data_dir=data_dir):
            predicted.append(np.argmax(model(images).numpy(), axis=-1))
            truth.append(masks.numpy()[..., 0])
        predicted, truth = np.concatenate(predicted), np.concatenate(truth)
        want = segmentation_metrics(predicted, truth)
        got = written[split]
        assert got["slices"] == 12
        assert got["mean_iou"] == pytest.approx(want["mean_iou"], abs=1e-6)
        assert got["dice"] == pytest.approx(want["dice"], abs=1e-6)
        assert [np.nan if v is None else v for v in got["iou_per_class"]] == pytest.approx(
            want["iou_per_class"], abs=1e-6, nan_ok=True)
        assert got["pixel_accuracy"] == pytest.approx(np.mean(predicted == truth), abs=1e-6)
        assert scalar(found[f"{split}/mean_iou"][4]) == pytest.approx(got["mean_iou"], abs=1e-6)
        assert scalar(found[f"{split}/dice"][4]) == pytest.approx(got["dice"], abs=1e-6)


def test_resume_continues_at_the_saved_step(run, tmp_path):
    root, _, _ = run
    resumed = tmp_path / "run"
    shutil.copytree(root, resumed)
    assert segmentation_cli.main(["--resume", "--run-dir", str(resumed), "--steps", "6"]) == 0
    config = configs.from_json((resumed / "config.json").read_text())
    assert (config.schedule.steps, config.schedule.decay_steps) == (6, 3)   # the preset's half
    reader = tf.train.load_checkpoint(str(resumed / "checkpoints" / "ckpt-6"))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 6
    assert int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 6
    found = events(resumed)
    assert set(found["loss/cross_entropy"]) == {2, 4, 6}                 # continued at step 5
    assert set(found["test/mean_iou"]) == {4, 6}
    assert json.loads((resumed / "metrics.json").read_text())["step"] == 6


def test_loading_a_run_that_is_not_a_segmentation_run_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(configs.to_json(configs.get_config("classifier",
                                                                             "smoke")))
    with pytest.raises(CtmriInputError) as err:
        load_segmentation_model(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value)
    assert "not a segmentation run" in str(err.value)

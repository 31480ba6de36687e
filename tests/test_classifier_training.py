"""CT/MRI classifier training end to end: the CLI on a tiny built tfds dataset (4 phantom
subjects x 6 slices x 32 px: 24 train, 12 validation and 12 test slices), its run folder,
TensorBoard output, final metrics, resume and mixed precision; the augmented training pipeline,
temperature scaling and the calibrated, data-carded export.
"""
import json
import os
import shutil
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import calibration, configs, data, intensity
from ctmri_tf.data_card import SYNTHETIC_NOTE
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.training import loop, run_dir as run_dirs
from ctmri_tf.training.classifier import ModalityClassifier, classifier_logits, load_classifier
from ctmri_tf.training.strategy import make_strategy
from dataset_fixtures import tiny_dataset  # noqa: F401  (pytest fixture)
from ctmri_tf.export import saved_model
from train import classifier as classifier_cli


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
    root = tmp_path_factory.mktemp("classifier") / "run"
    code = classifier_cli.main([
        "--preset", "smoke", "--strategy", "mirrored", "--data-dir", str(data_dir),
        "--dataset-config", name, "--run-dir", str(root), "--steps", "4", "--seed", "3",
        "--set", "schedule.summary_every=2", "--set", "schedule.checkpoint_every=2",
        "--set", "schedule.sample_every=2", "--set", "schedule.validation_every=2"])
    assert code == 0
    return root, name, data_dir


def test_cli_run_writes_config_checkpoints_tensorboard_samples_and_metrics(run):
    root, name, data_dir = run
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("events.out.")) \
        == ["calibration.json", "checkpoints", "config.json", "metrics.json", "samples"]
    config = configs.from_json((root / "config.json").read_text())
    assert (config.seed, config.schedule.steps, config.data.dataset_config) == (3, 4, name)
    assert sorted(p.name for p in (root / "checkpoints").glob("*.index")) == ["ckpt-2.index",
                                                                               "ckpt-4.index"]
    assert sorted(p.name for p in (root / "samples").iterdir()) == ["step_0000002.png",
                                                                    "step_0000004.png"]
    found = events(root)
    assert set(found["loss/cross_entropy"]) == {2, 4}
    assert scalar(found["learning_rate/optimizer"][2]) == pytest.approx(1e-3)
    for tag in ("validation/cross_entropy", "validation/accuracy"):
        assert set(found[tag]) == {2, 4}, tag
    for tag in ("validation/accuracy", "test/accuracy", "test/accuracy_ct", "test/accuracy_mri",
                "test/cross_entropy"):
        assert 4 in found[tag], tag
    assert found["samples"][4].metadata.plugin_data.plugin_name == "images"
    assert found["_hparams_/session_start_info"][0].metadata.plugin_data.plugin_name == "hparams"

    # metrics.json equals the accuracy recomputed with the model loaded from the run folder
    written = json.loads((root / "metrics.json").read_text())
    assert written["step"] == 4 and set(written) == {"step", "validation", "test"}
    model = load_classifier(root)
    for split in ("validation", "test"):
        labels, predicted = [], []
        for images, batch_labels in data.modality_batches(split, 12, 32, mask_inputs=True,
                                                          shuffle=False, config=name,
                                                          data_dir=data_dir):
            predicted.append(np.argmax(model(images).numpy(), axis=-1))
            labels.append(batch_labels.numpy())
        labels, predicted = np.concatenate(labels), np.concatenate(predicted)
        got = written[split]
        assert got["slices"] == 12 and sorted(labels.tolist()) == [0] * 6 + [1] * 6
        assert got["accuracy"] == pytest.approx(np.mean(predicted == labels))
        assert got["accuracy_mri"] == pytest.approx(np.mean(predicted[labels == 1] == 1))
        confusion = [[int(np.sum((labels == t) & (predicted == p))) for p in (0, 1)]
                     for t in (0, 1)]
        assert got["confusion"] == confusion
        assert scalar(found[f"{split}/accuracy"][4]) == pytest.approx(got["accuracy"])
    # the loaded classifier takes any size
    assert model(np.zeros((2, 40, 24, 1), np.float32)).shape == (2, 2)


def test_resume_continues_at_the_saved_step(run, tmp_path):
    root, _, _ = run
    resumed = tmp_path / "run"
    shutil.copytree(root, resumed)
    assert classifier_cli.main(["--resume", "--run-dir", str(resumed), "--steps", "6"]) == 0
    reader = tf.train.load_checkpoint(str(resumed / "checkpoints" / "ckpt-6"))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 6
    assert int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 6
    found = events(resumed)
    assert set(found["loss/cross_entropy"]) == {2, 4, 6}
    assert set(found["test/accuracy"]) == {4, 6}
    assert json.loads((resumed / "metrics.json").read_text())["step"] == 6


def test_a_failed_resume_leaves_config_json_and_the_run_resumable(run, tmp_path):
    root, _, _ = run
    resumed = tmp_path / "run"
    shutil.copytree(root, resumed)
    config_file = resumed / "config.json"
    before = config_file.read_bytes()
    filters = configs.from_json(before.decode()).model.filters
    # another architecture: refused before anything is written, naming the field
    with pytest.raises(CtmriInputError, match=f"model.filters: {filters} -> {filters * 2}") as err:
        classifier_cli.main(["--resume", "--run-dir", str(resumed), "--steps", "6",
                             "--set", f"model.filters={filters * 2}"])
    assert err.value.path == str(config_file) and config_file.read_bytes() == before
    # a restore that fails (every checkpoint corrupt) does not rewrite config.json either
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    for data_file in (broken / "checkpoints").glob("ckpt-*.data-*"):
        data_file.write_bytes(data_file.read_bytes()[:20])
    with pytest.raises(CtmriInputError, match="cannot be restored"):
        classifier_cli.main(["--resume", "--run-dir", str(broken), "--steps", "6"])
    assert (broken / "config.json").read_bytes() == before
    assert not (broken / "run.lock").exists()                 # released on the error
    # the refused run still resumes, at its saved step, and then records the new steps
    assert classifier_cli.main(["--resume", "--run-dir", str(resumed), "--steps", "6"]) == 0
    assert configs.from_json(config_file.read_text()).schedule.steps == 6
    reader = tf.train.load_checkpoint(str(resumed / "checkpoints" / "ckpt-6"))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 6
    assert set(events(resumed)["loss/cross_entropy"]) == {2, 4, 6}


def test_a_second_training_on_a_locked_run_folder_is_refused(run, tmp_path):
    root, _, _ = run
    resumed = tmp_path / "run"
    shutil.copytree(root, resumed)
    before = (resumed / "config.json").read_bytes()
    run_folder = run_dirs.RunDir(resumed)
    with run_dirs.lock_run(run_folder):        # as if another training were writing there
        with pytest.raises(CtmriInputError, match=f"pid {os.getpid()}") as err:
            classifier_cli.main(["--resume", "--run-dir", str(resumed), "--steps", "6"])
        assert err.value.path == str(resumed / "run.lock")
    assert (resumed / "config.json").read_bytes() == before
    assert sorted(p.name for p in (resumed / "checkpoints").glob("*.index")) == [
        "ckpt-2.index", "ckpt-4.index"]


def test_mixed_bfloat16_computes_in_bfloat16_with_float32_logits_and_loss(tmp_path):
    config = configs.override(configs.get_config("classifier", "smoke"),
                              {"precision": "mixed_bfloat16", "schedule.steps": 2,
                               "schedule.decay_steps": 1})
    images = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 1)).astype(np.float32)
    labels = np.array([0, 1] * 4, np.int32)
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(4)
    strategy = make_strategy("default")
    try:
        task = ModalityClassifier(config, strategy)
        assert task.model.get_layer("stage1_down_conv").compute_dtype == "bfloat16"
        assert task.model.get_layer("logits").compute_dtype == "float32"
        assert all(w.dtype == "float32" for w in task.model.trainable_weights)
        run = run_dirs.create_run_dir(tmp_path / "run", config)
        began = time.perf_counter()
        result = loop.train(task, strategy=strategy, train_dataset=batches,
                            schedule=config.schedule, run_dir=run, progress=False)
        elapsed = time.perf_counter() - began
    finally:
        keras.mixed_precision.set_global_policy("float32")
    (step, losses), = [h for h in result.history if h[0] == 2]
    assert np.isfinite(losses["cross_entropy"]) and losses["cross_entropy"] > 0
    # the reported wall time per step is the loop's whole time over its steps (what the
    # progress bar shows), not the step call alone
    steps = result.step - result.start_step
    assert 0.5 * elapsed <= result.wall_seconds_per_step * steps <= elapsed


def test_loading_a_run_that_is_not_a_classifier_run_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(configs.to_json(configs.get_config("segmentation",
                                                                             "smoke")))
    with pytest.raises(CtmriInputError) as err:
        load_classifier(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value)
    assert "not a classifier run" in str(err.value)


# ----------------------------------------------------------------------------- augmentation

def test_training_pipeline_gives_new_random_views_every_epoch(tiny_dataset):
    name, data_dir = tiny_dataset
    config = configs.get_config("classifier", "smoke")
    assert config.data.augment                              # every preset augments

    def batches(seed):
        ds = data.modality_batches("train", 8, 32, augment=True, shuffle=False, repeat=True,
                                   seed=seed, config=name, data_dir=data_dir)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(6)]

    first = batches(0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, batches(0)))  # seeded
    for (x, y), (x2, y2) in zip(first[:3], first[3:]):     # 24 slices: epoch 2 = batches 3-5
        assert x.shape == (8, 32, 32, 1) and x.min() >= -1.0 and x.max() <= 1.0
        np.testing.assert_array_equal(y, y2)                # the same slices, in the same order
        assert np.abs(x - x2).mean() > 0.05                 # ... seen differently
    other_seed = batches(1)
    assert not np.array_equal(first[0][0], other_seed[0][0])
    # the anatomy's size in pixels varies (field of view / spacing / size augmentation); over
    # 96 views (two seeds) its range is more than twice that of the 24 plain slices
    body = np.concatenate([(x[..., 0] > -0.8).mean(axis=(1, 2)) for x, _ in first + other_seed])
    plain = data.modality_batches("train", 24, 32, shuffle=False, config=name,
                                  data_dir=data_dir)
    (images, _), = list(plain)
    reference = (images.numpy()[..., 0] > -0.8).mean(axis=(1, 2))
    assert body.max() - body.min() > 2 * (reference.max() - reference.min())


def test_augmentation_skull_strips_mri_views_and_never_ct(monkeypatch):
    # a 64 px "head": body disk of radius 28 px, signal 100 inside, 0 outside (MRI and CT alike)
    monkeypatch.setattr(data, "CLASSIFIER_SKULL_STRIP", (1.0, (0.1, 0.1)))     # always, 6 px
    monkeypatch.setattr(data, "CLASSIFIER_FIELD_OF_VIEW", (1.0, 1.0))          # the whole slice
    monkeypatch.setattr(data, "CLASSIFIER_RESOLUTION", (1.0, 1.0))
    monkeypatch.setattr(data, "CLASSIFIER_NOISE", 0.0)
    rows, cols = np.mgrid[:64, :64]
    radius = np.hypot(rows - 31.5, cols - 31.5)
    mask = (radius < 28).astype(np.uint8)
    image = np.where(mask, 100.0 + radius, 0.0).astype(np.float32)
    seed = tf.constant([3, 4], tf.int64)
    kept = {}
    for name, is_mri in (("mri", True), ("ct", False)):
        x, out_mask = data._classifier_augment(tf.constant(image), tf.constant(mask),
                                               tf.constant(is_mri), (64, 64), seed)
        x, out_mask = x.numpy()[..., 0], out_mask.numpy()[..., 0]
        kept[name] = out_mask.sum() / mask.sum()
        assert x[out_mask == 0].max() == -1.0          # the background (stripped or not) is -1
    # MRI: only the brain is left, the outer 6 px (radius 22-28) are 0, as skull stripping does
    assert kept["mri"] == pytest.approx((22 / 28) ** 2, abs=0.04)
    assert kept["ct"] == 1.0


# ----------------------------------------------------------------------------- calibration

def test_temperature_scaling_recovers_a_known_optimum():
    # every slice has logits (0, 6) and 80 % are MRI: the NLL is least where
    # sigmoid(6 / T) = 0.8, i.e. T = 6 / ln 4
    logits = np.tile([[0.0, 6.0]], (1000, 1))
    labels = np.array([1] * 800 + [0] * 200)
    temperature = calibration.fit_temperature(logits, labels)
    assert temperature == pytest.approx(6 / np.log(4), rel=1e-4)
    # never sharper than the raw softmax: logits (0, 1) with every label right wants T -> 0
    assert calibration.fit_temperature([[0.0, 1.0]] * 10, [1] * 10) == pytest.approx(1.0,
                                                                                    abs=1e-4)
    assert (calibration.negative_log_likelihood(logits, labels, temperature)
            < calibration.negative_log_likelihood(logits, labels))
    with pytest.raises(CtmriInputError, match="temperature scaling needs"):
        calibration.fit_temperature(np.zeros((0, 2)), np.zeros(0))


def test_run_is_calibrated_on_validation_and_the_export_applies_it(run, tmp_path):
    root, name, data_dir = run
    record = json.loads((root / "calibration.json").read_text())
    model = load_classifier(root)
    logits, labels = [], []
    for augment in (False, True):   # the slices as they are + one augmented view (seed + 1)
        views = data.modality_batches("validation", 12, 32, shuffle=False, augment=augment,
                                      seed=4, mask_inputs=True, config=name, data_dir=data_dir)
        logits.append(classifier_logits(model, views)[0])
        labels.append(classifier_logits(model, views)[1])
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    assert record["split"] == "validation" and record["slices"] == 24
    assert record["temperature"] == pytest.approx(calibration.fit_temperature(logits, labels),
                                                  rel=1e-3)
    assert record["nll_after"] <= record["nll_before"] + 1e-9
    assert calibration.read_temperature(root) == record["temperature"]
    assert calibration.read_temperature(tmp_path) == 1.0        # no calibration.json: T = 1

    # export_run builds T into the SavedModel and records it with the size and the data card
    version, = saved_model.export_run("classifier", root, tmp_path / "exports")
    info = saved_model.read_export_info(version)
    assert info["temperature"] == record["temperature"]
    assert info["training_image_size"] == [32, 32]
    card = info["data_card"]
    assert card["dataset"] == f"ctmri/{name}" and card["note"] == SYNTHETIC_NOTE
    assert card["anatomy"].startswith("head (synthetic phantom")
    assert card["modalities"] == ["ct", "mri"] and "T1-weighted" in card["mri_contrasts"][0]
    assert card["slices_sampled"] == 24 and card["pixel_spacing_mm"] == [7.5, 7.5]
    assert card["intensity"]["ct"]["50"] < 200 and card["body_extent_mm"]["rows"][1] > 100

    images = np.random.default_rng(0).uniform(-1000, 1500, (3, 32, 32)).astype(np.float32)
    loaded = tf.saved_model.load(str(version))
    for temperature, served in [(record["temperature"], loaded),
                                (2.5, tf.saved_model.load(str(saved_model.export_classifier(
                                    model, tmp_path / "t", temperature=2.5))))]:
        out = served.signatures["classify"](image=tf.constant(images[..., None]))
        raw = model(intensity.percentile_to_unit(images)[..., None]).numpy()
        np.testing.assert_allclose(out["probabilities"].numpy(),
                                   tf.nn.softmax(raw / temperature).numpy(), atol=1e-5)
    with pytest.raises(CtmriInputError, match="temperature must be positive"):
        saved_model.export_classifier(model, tmp_path / "bad", temperature=0.0)

"""Configs, strategies, schedules, run folders, checkpoints, summaries and the shared CLI flags."""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import configs
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.training import cli as common
from ctmri_tf.training import run_dir as run_dirs
from ctmri_tf.training.checkpointing import TrainingCheckpoint
from ctmri_tf.training.runtime import configure_keras
from ctmri_tf.training.schedules import LinearDecayToZero
from ctmri_tf.training.strategy import make_strategy
from ctmri_tf.training.summaries import SummaryWriter, flatten_hparams


# ------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("experiment", sorted(configs.EXPERIMENTS))
@pytest.mark.parametrize("preset", configs.PRESETS)
def test_every_preset_is_valid_and_round_trips_through_json(experiment, preset):
    config = configs.get_config(experiment, preset)
    assert config.preset == preset and config.experiment == experiment
    text = configs.to_json(config)
    assert json.loads(text)["experiment"] == experiment
    assert configs.from_json(text) == config
    assert config.data.image_size % config.downsampling_factor == 0


def test_presets_have_the_published_and_the_tiny_architectures():
    paper = configs.get_config("stargan", "paper")
    assert (paper.data.image_size, paper.data.batch_size) == (256, 16)
    assert dataclasses.astuple(paper.model) == (64, 6, 64, 6, (), 1)  # no CT window, 2-D
    assert dataclasses.astuple(paper.loss) == (10.0, 1.0, 10.0, 5, 0.0, 0, 0.0, ("ct", "mri"))
    assert dataclasses.astuple(paper.generator_optimizer) == (1e-4, 0.5, 0.999, 1e-8)
    assert dataclasses.astuple(paper.discriminator_optimizer) == (1e-4, 0.5, 0.999, 1e-8)
    assert (paper.schedule.steps, paper.schedule.decay_steps) == (200_000, 100_000)
    cycle = configs.get_config("cyclegan", "paper")
    assert (cycle.model.generator_filters, cycle.model.generator_residual_blocks) == (64, 9)
    assert cycle.generator_optimizer.learning_rate == 2e-4
    smoke = configs.get_config("stargan", "smoke")
    assert (smoke.model.generator_filters, smoke.data.image_size) == (8, 32)
    assert smoke.model.generator_residual_blocks <= 2 and smoke.schedule.steps <= 10
    demo = configs.get_config("stargan", "demo")
    assert (demo.data.image_size, demo.data.batch_size) == (128, 8)
    # demo: registered pairs with L1, a generator update per step; paper: the unpaired original
    assert (demo.loss.lambda_paired, demo.loss.n_critic, demo.loss.lambda_rec) == (100.0, 1, 0.0)
    assert demo.loss.lambda_paired_ssim == 0.0             # an option (--set), not the default
    assert demo.model.ct_windows() == ((0.0, 80.0),)                # the brain window
    assert demo.generator_optimizer.learning_rate == demo.discriminator_optimizer.learning_rate \
        == 5e-4
    assert paper.generator_optimizer.learning_rate == 1e-4     # paper: lambda_paired 0 above


def test_override_converts_command_line_strings_to_field_types():
    base = configs.get_config("segmentation", "smoke")
    config = configs.override(base, {"model.width": "16", "optimizer.learning_rate": "2e-4",
                                     "data.augment": "yes", "data.data_dir": "none",
                                     "model.blocks": "3,4,6,3", "seed": 7})
    assert config.model.width == 16 and isinstance(config.model.width, int)
    assert config.optimizer.learning_rate == 2e-4
    assert config.data.augment is True and config.data.data_dir is None
    assert config.model.blocks == (3, 4, 6, 3) and config.seed == 7
    assert base.model.width == 8 and base.seed == 0          # the original is untouched
    assert configs.from_json(configs.to_json(config)) == config


def test_override_unknown_field_lists_the_valid_ones():
    with pytest.raises(CtmriInputError) as err:
        configs.override(configs.get_config("stargan", "smoke"), {"model.generator_filter": 3})
    assert "model.generator_filter'" in str(err.value)
    assert "model.generator_filters" in str(err.value) and "loss.n_critic" in str(err.value)


@pytest.mark.parametrize("field, value", [("schedule.steps", "ten"), ("schedule.steps", "2.5"),
                                          ("data.augment", "maybe"), ("precision", "float16")])
def test_override_bad_value_names_the_field(field, value):
    with pytest.raises(CtmriInputError) as err:
        configs.override(configs.get_config("stargan", "smoke"), {field: value})
    assert field in str(err.value)


def test_unknown_preset_and_experiment_list_the_valid_ones():
    with pytest.raises(CtmriInputError, match="unknown preset 'large'; valid presets: "
                                              "smoke, demo, paper"):
        configs.get_config("stargan", "large")
    with pytest.raises(CtmriInputError, match="stargan, cyclegan, segmentation, classifier"):
        configs.get_config("pix2pix", "demo")


def test_image_size_not_divisible_by_downsampling_factor_is_refused():
    config = configs.get_config("stargan", "paper")       # 6 critic layers: factor 64
    with pytest.raises(CtmriInputError) as err:
        configs.override(config, {"data.image_size": 250})
    assert "250" in str(err.value) and "64" in str(err.value)
    with pytest.raises(CtmriInputError, match="80 px is not a positive multiple of 32"):
        configs.override(configs.get_config("segmentation", "demo"), {"data.image_size": 80})


def test_config_json_errors_name_the_file(tmp_path):
    run = run_dirs.create_run_dir(tmp_path / "run", configs.get_config("stargan", "smoke"))
    values = json.loads(run.config_path.read_text())
    values["model"]["width"] = 3
    run.config_path.write_text(json.dumps(values))
    with pytest.raises(CtmriInputError) as err:
        run_dirs.open_run_dir(run.root)
    assert err.value.path == str(run.config_path) and "model.width" in err.value.problem
    run.config_path.write_text("{not json")
    with pytest.raises(CtmriInputError, match="not valid JSON") as err:
        run_dirs.open_run_dir(run.root)
    assert err.value.path == str(run.config_path)


# ------------------------------------------------------------------------- strategy, runtime
def test_make_strategy_by_name(monkeypatch):
    assert make_strategy("default").num_replicas_in_sync == 1
    one = make_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    mirrored = make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(CtmriInputError, match="unknown strategy 'tpu'; valid strategies: "
                                              "default, one_device, mirrored"):
        make_strategy("tpu")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}}')
    with pytest.raises(CtmriInputError, match="TF_CONFIG must be JSON like"):
        make_strategy("multi_worker_mirrored")


def test_configure_keras_sets_policy_and_seed():
    try:
        configure_keras(3, "mixed_bfloat16")
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        first = keras.layers.Dense(2)
        first.build((None, 3))
        configure_keras(3, "float32")
        second = keras.layers.Dense(2)
        second.build((None, 3))
        assert keras.mixed_precision.global_policy().name == "float32"
        np.testing.assert_array_equal(first.kernel.numpy(), second.kernel.numpy())
        with pytest.raises(CtmriInputError, match="mixed_float16"):
            configure_keras(0, "mixed_float16")
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------------- schedules
def test_linear_decay_to_zero_matches_hand_computed_rates():
    # 10 steps, decay over the last 4: steps 0..6 at the full rate, then 3/4, 2/4, 1/4
    schedule = LinearDecayToZero(1e-4, total_steps=10, decay_steps=4)
    rates = [float(schedule(i)) for i in range(10)]
    np.testing.assert_allclose(rates, [1e-4] * 7 + [0.75e-4, 0.5e-4, 0.25e-4], rtol=1e-6)
    # the generator of StarGAN (updated every 5th step): updates 0, 1 are steps 4, 9
    generator = LinearDecayToZero(1e-4, total_steps=10, decay_steps=4, steps_per_update=5)
    np.testing.assert_allclose([float(generator(0)), float(generator(1))], [1e-4, 0.25e-4],
                               rtol=1e-6)
    assert float(LinearDecayToZero(2e-4, 10, 0)(9)) == pytest.approx(2e-4)
    # StarGAN with a 3-step regression warm-up, n_critic 2, 10 steps, decay over the last 4:
    # generator updates 0, 1, 2 are steps 0, 1, 2, then every 2nd step: 3 -> step 4, 4 -> 6,
    # 5 -> 8 (rates 1, 1, 1, 1, 1, 2/4); the critic starts at step 3: updates 0..6 are steps 3..9
    generator = LinearDecayToZero(1e-4, total_steps=10, decay_steps=4, steps_per_update=2,
                                  dense_updates=3)
    np.testing.assert_allclose([float(generator(k)) for k in range(6)],
                               [1e-4] * 5 + [0.5e-4], rtol=1e-6)
    critic = LinearDecayToZero(1e-4, total_steps=10, decay_steps=4, first_step=3)
    np.testing.assert_allclose([float(critic(k)) for k in range(7)],
                               [1e-4] * 4 + [0.75e-4, 0.5e-4, 0.25e-4], rtol=1e-6)


# ---------------------------------------------------------------------------------- run dirs
def test_fused_adam_follows_keras_adam_and_the_decay_schedule():
    from ctmri_tf.training.optimizers import FusedAdam

    rng = np.random.default_rng(0)
    shapes = [(3, 3, 2, 4), (4,), (5,)]
    start = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(4)]
    results = []
    for cls in (keras.optimizers.Adam, FusedAdam):
        weights = [keras.Variable(w) for w in start]
        opt = cls(learning_rate=LinearDecayToZero(1e-2, total_steps=4, decay_steps=2),
                  beta_1=0.5, beta_2=0.999, epsilon=1e-8)
        opt.build(weights)
        step = tf.function(lambda g: opt.apply(g, weights))
        for g in grads:
            step([tf.constant(x) for x in g])
        results.append([w.numpy() for w in weights])
    # by hand, first update of the (5,) weight: m = 0.5 g, v = 0.001 g^2, lr_t = 1e-2 *
    # sqrt(0.001) / 0.5, so the step is -lr_t * 0.5 g / (sqrt(0.001) |g| + 1e-8) ~ -1e-2 sign(g)
    for keras_w, fused_w in zip(*results):
        np.testing.assert_allclose(fused_w, keras_w, rtol=1e-5, atol=1e-6)   # float32 rounding
    one = [keras.Variable(w) for w in start]
    opt = FusedAdam(learning_rate=1e-2, beta_1=0.5)
    opt.build(one)
    opt.apply([tf.constant(x) for x in grads[0]], one)
    np.testing.assert_allclose(one[2].numpy(), start[2] - 1e-2 * np.sign(grads[0][2]), atol=1e-6)
    assert not np.array_equal(results[1][0], start[0])


def test_run_dir_layout_and_refusals(tmp_path):
    config = configs.get_config("stargan", "smoke")
    run = run_dirs.create_run_dir(tmp_path / "run", config)
    assert sorted(p.name for p in run.root.iterdir()) == ["checkpoints", "config.json",
                                                          "samples"]
    assert run.logs == run.root     # TensorBoard names the run by its folder
    assert run.config_path.read_text() == configs.to_json(config)
    assert run_dirs.open_run_dir(run.root)[1] == config
    with pytest.raises(CtmriInputError, match="--resume") as err:
        run_dirs.create_run_dir(run.root, config)
    assert err.value.path == str(run.root)
    (tmp_path / "empty").mkdir()
    assert run_dirs.create_run_dir(tmp_path / "empty", config).config_path.is_file()
    with pytest.raises(CtmriInputError, match="does not exist") as err:
        run_dirs.open_run_dir(tmp_path / "missing")
    assert err.value.path == str(tmp_path / "missing")
    assert str(run_dirs.default_run_dir(config)) == "runs/stargan-smoke"
    # a run folder of the earlier layout keeps its events in logs/ when resumed
    (run.root / "logs").mkdir()
    assert run_dirs.open_run_dir(run.root)[0].logs == run.root / "logs"


# ------------------------------------------------------------------------------ checkpoints
def _state(seed=0):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    rng = tf.random.Generator.from_seed(seed)
    return model, optimizer, step, rng


def _train_once(model, optimizer):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones((4, 3))) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))


def test_checkpoint_restores_models_optimizers_step_and_rng(tmp_path):
    model, optimizer, step, rng = _state()
    ckpt = TrainingCheckpoint(tmp_path, step=step, rng=rng, max_to_keep=2, model=model,
                              optimizer=optimizer)
    for _ in range(3):
        _train_once(model, optimizer)
        rng.normal([2])
        step.assign_add(1)
        ckpt.save()
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-2.index", "ckpt-3.index"]
    expected_weights = [w.numpy() for w in model.weights]
    _train_once(model, optimizer)
    expected_next = [w.numpy() for w in model.weights]
    expected_draw = rng.normal([4]).numpy()

    model2, optimizer2, step2, rng2 = _state(seed=99)
    restored = TrainingCheckpoint(tmp_path, step=step2, rng=rng2, model=model2,
                                  optimizer=optimizer2)
    assert restored.restore_latest() == 3 and int(step2.numpy()) == 3
    for got, want in zip(model2.weights, expected_weights):
        np.testing.assert_array_equal(got.numpy(), want)
    assert int(optimizer2.iterations.numpy()) == 3
    _train_once(model2, optimizer2)            # Adam moments restored: the same next update
    for got, want in zip(model2.weights, expected_next):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    np.testing.assert_array_equal(rng2.normal([4]).numpy(), expected_draw)


def test_checkpoint_errors_name_the_folder(tmp_path):
    model, optimizer, step, rng = _state()
    with pytest.raises(CtmriInputError, match="does not exist") as err:
        TrainingCheckpoint(tmp_path / "missing", step=step, rng=rng,
                           model=model).restore_latest()
    assert err.value.path == str(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CtmriInputError, match="no checkpoint") as err:
        TrainingCheckpoint(tmp_path / "empty", step=step, rng=rng, model=model).restore_latest()
    assert err.value.path == str(tmp_path / "empty")

    good = tmp_path / "ckpt"
    TrainingCheckpoint(good, step=step, rng=rng, model=model, optimizer=optimizer).save()
    # a checkpoint of another architecture
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    with pytest.raises(CtmriInputError, match="different model config") as err:
        TrainingCheckpoint(good, step=step, rng=rng, model=other).restore_latest()
    assert err.value.path == str(good)
    # truncated data file
    data_file = next(good.glob("ckpt-0.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:20])
    with pytest.raises(CtmriInputError, match="corrupt") as err:
        TrainingCheckpoint(good, step=step, rng=rng, model=model,
                           optimizer=optimizer).restore_latest()
    assert err.value.path == str(good) and "ckpt-0" in err.value.problem


def _saved_checkpoints(directory, steps=(1, 2, 3)):
    """Checkpoints ckpt-1..3 of a small state whose dense kernel is filled with the step."""
    model, optimizer, step, rng = _state()
    ckpt = TrainingCheckpoint(directory, step=step, rng=rng, max_to_keep=5, model=model,
                              optimizer=optimizer)
    for n in steps:
        step.assign(n)
        model.layers[0].kernel.assign(np.full((3, 2), float(n), np.float32))
        ckpt.save()
    return directory


def _restore(directory, **kwargs):
    model, optimizer, step, rng = _state(seed=7)
    ckpt = TrainingCheckpoint(directory, step=step, rng=rng, model=model, optimizer=optimizer)
    restored = ckpt.restore_latest(**kwargs)
    assert float(model.layers[0].kernel.numpy()[0, 0]) == restored   # all of that checkpoint
    return restored, ckpt


def test_a_relative_or_moved_run_folder_restores_its_newest_checkpoint_quietly(tmp_path,
                                                                            monkeypatch):
    """The default run folder (``runs/<experiment>-<preset>``) is relative, and a run folder may
    be moved: the index names checkpoints of its own folder either way, with no warning."""
    monkeypatch.chdir(tmp_path)
    _saved_checkpoints(Path("runs") / "x" / "checkpoints")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _restore(Path("runs") / "x" / "checkpoints")[0] == 3
        (tmp_path / "runs" / "x").rename(tmp_path / "moved")
        assert _restore(tmp_path / "moved" / "checkpoints")[0] == 3


@pytest.mark.parametrize("index_text", ["", 'model_checkpoint_path: "ckpt-3"\nall_model_check',
                                        "\x00\x13garbage{{", 'model_checkpoint_path: "ckpt-9"\n'])
def test_unusable_index_falls_back_to_the_newest_intact_checkpoint(tmp_path, index_text):
    directory = _saved_checkpoints(tmp_path / "checkpoints")
    index = directory / "checkpoint"
    index.write_text(index_text)           # empty, truncated, garbled, naming a missing one
    with pytest.warns(UserWarning, match=f"{index}: the checkpoint index .*falling back"):
        restored, ckpt = _restore(directory)
    assert restored == 3 and ckpt.restored == str(directory / "ckpt-3")
    assert index.read_text() == index_text          # a read-only restore changes nothing
    with pytest.warns(UserWarning):
        _, ckpt = _restore(directory, repair_index=True)   # a resuming training repairs it
    assert tf.train.get_checkpoint_state(str(directory)).all_model_checkpoint_paths == [
        str(directory / f"ckpt-{n}") for n in (1, 2, 3)]
    ckpt.step.assign(4)
    assert ckpt.save() == str(directory / "ckpt-4")       # and saves on from there
    assert tf.train.latest_checkpoint(str(directory)) == str(directory / "ckpt-4")


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    directory = _saved_checkpoints(tmp_path / "checkpoints")
    data = next(directory.glob("ckpt-3.data-*"))
    data.write_bytes(data.read_bytes()[:20])            # truncated newest data file
    with pytest.warns(UserWarning, match="ckpt-3 cannot be restored.*using the older ckpt-2"):
        assert _restore(directory)[0] == 2
    data.unlink()                                     # a missing data file, and a bad .index
    (directory / "ckpt-2.index").write_bytes(b"\x00" * 10)
    with pytest.warns(UserWarning, match="using the older ckpt-1"):
        restored, ckpt = _restore(directory, repair_index=True)
    assert restored == 1
    assert tf.train.latest_checkpoint(str(directory)) == str(directory / "ckpt-1")
    # nothing intact at all: an error naming the newest one's problem
    for f in directory.glob("ckpt-1.data-*"):
        f.write_bytes(b"")
    with pytest.raises(CtmriInputError, match="ckpt-1 cannot be restored") as err:
        _restore(directory)
    assert err.value.path == str(directory)


def test_empty_index_without_checkpoints_names_the_index(tmp_path):
    (tmp_path / "checkpoint").write_text("")
    model, optimizer, step, rng = _state()
    with pytest.raises(CtmriInputError, match="no ckpt-<N> checkpoint files") as err:
        TrainingCheckpoint(tmp_path, step=step, rng=rng, model=model).restore_latest()
    assert err.value.path == str(tmp_path / "checkpoint")


# ------------------------------------------------------------------------------ run lock
def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_run_lock_refuses_a_live_training_and_takes_over_a_dead_ones(tmp_path):
    run = run_dirs.create_run_dir(tmp_path / "run", configs.get_config("stargan", "smoke"))
    with run_dirs.lock_run(run):
        owner = json.loads(run.lock_path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(CtmriInputError, match=f"another training \\(pid {os.getpid()}") as err:
            with run_dirs.lock_run(run):
                pass
        assert err.value.path == str(run.lock_path)
        assert json.loads(run.lock_path.read_text()) == owner      # still the first one's
    assert not run.lock_path.exists()                               # released

    with pytest.raises(RuntimeError):                               # released on exceptions too
        with run_dirs.lock_run(run):
            raise RuntimeError("out of memory")
    assert not run.lock_path.exists()

    dead = _dead_pid()
    run.lock_path.write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with pytest.warns(UserWarning, match=f"stale lock .*pid {dead}.*taking it over"):
        with run_dirs.lock_run(run):
            assert json.loads(run.lock_path.read_text())["pid"] == os.getpid()
    assert not run.lock_path.exists()
    run.lock_path.write_text("")                                    # a crash while writing it
    with pytest.warns(UserWarning, match="stale lock \\(unreadable\\)"):
        with run_dirs.lock_run(run):
            pass
    run.lock_path.write_text(json.dumps({"pid": 1, "host": "other-node"}))
    with pytest.raises(CtmriInputError, match="pid 1 on host other-node"):
        with run_dirs.lock_run(run):
            pass
    assert json.loads(run.lock_path.read_text())["host"] == "other-node"   # not touched
    with run_dirs.lock_run(run, enabled=False):                     # non-chief workers
        pass


# -------------------------------------------------------------------------------- summaries
def test_summary_writer_writes_scalars_images_and_hparams(tmp_path):
    writer = SummaryWriter(tmp_path)
    config = configs.get_config("stargan", "smoke")
    hparams = flatten_hparams(config)
    assert hparams["model.generator_filters"] == 8 and hparams["data.data_dir"] == "None"
    writer.hparams(hparams, trial_id="trial")
    writer.scalars(3, {"d_total": 1.5}, prefix="loss/")
    writer.image(3, "samples", np.full((4, 6), 200, np.uint8))
    writer.close()
    found = {}
    for path in tmp_path.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found[value.tag] = (event.step, value)
    assert found["loss/d_total"][0] == 3
    assert float(tf.make_ndarray(found["loss/d_total"][1].tensor)) == 1.5
    image = found["samples"][1]
    assert image.metadata.plugin_data.plugin_name == "images"
    dims = tf.make_ndarray(image.tensor)[:2]
    assert [int(d) for d in dims] == [6, 4]                          # width, height
    assert found["_hparams_/session_start_info"][1].metadata.plugin_data.plugin_name == "hparams"
    assert b"model.generator_filters" in found["_hparams_/session_start_info"][1] \
        .metadata.plugin_data.content


# ------------------------------------------------------------------------- shared CLI flags
def _args(*argv):
    return common.build_parser("stargan", "test").parse_args(list(argv))


def test_flags_map_to_config_fields():
    base = configs.get_config("stargan", "demo")
    overrides = common.collect_overrides(
        _args("--steps", "100", "--batch-size", "4", "--image-size", "64", "--seed", "5",
              "--data-dir", "/data", "--dataset-config", "synthetic_small",
              "--precision", "mixed_bfloat16", "--set", "loss.lambda_rec=5"), base)
    config = configs.override(base, overrides)
    assert (config.schedule.steps, config.schedule.decay_steps) == (100, 50)  # demo decays 1/2
    assert (config.data.batch_size, config.data.image_size, config.seed) == (4, 64, 5)
    assert (config.data.data_dir, config.data.dataset_config) == ("/data", "synthetic_small")
    assert config.precision == "mixed_bfloat16" and config.loss.lambda_rec == 5.0
    explicit = common.collect_overrides(_args("--steps", "100", "--set",
                                              "schedule.decay_steps=10"), base)
    assert explicit["schedule.decay_steps"] == "10"
    # StarGAN's regression warm-up keeps its share too (half of the demo's 300 steps here)
    warm = configs.override(base, {"loss.adversarial_start_step": 150})
    scaled = common.collect_overrides(_args("--steps", "100"), warm)
    assert scaled["loss.adversarial_start_step"] == 50
    assert configs.run_share_overrides(configs.get_config("classifier", "demo"), 100) == {
        "schedule.decay_steps": 50}                          # no warm-up field: not touched
    with pytest.raises(CtmriInputError, match="expected FIELD=VALUE"):
        common.parse_set(["loss.lambda_rec"])


def test_prepare_refuses_bad_runs(tmp_path):
    with pytest.raises(CtmriInputError, match="unknown strategy 'gpus'"):
        common.prepare(_args("--preset", "smoke", "--strategy", "gpus",
                             "--run-dir", str(tmp_path / "a")), "stargan")
    assert not (tmp_path / "a").exists()
    prepared = common.prepare(_args("--preset", "smoke", "--run-dir", str(tmp_path / "b")),
                              "stargan", make_inputs=lambda config: config.data.image_size)
    assert prepared.inputs == 32 and prepared.run.config_path.is_file() and not prepared.resume
    with pytest.raises(CtmriInputError, match="pass --resume") as err:
        common.prepare(_args("--preset", "smoke", "--run-dir", str(tmp_path / "b")), "stargan")
    assert err.value.path == str(tmp_path / "b")
    resumed = common.prepare(_args("--resume", "--steps", "20", "--run-dir", str(tmp_path / "b")),
                             "stargan")
    assert resumed.resume and resumed.config.schedule.steps == 20 and resumed.config_changed
    # config.json is rewritten by train() once the checkpoint is restored, not here
    assert configs.from_json(resumed.run.config_path.read_text()) == prepared.config
    with pytest.raises(CtmriInputError, match="model.generator_filters: 8 -> 16") as err:
        common.prepare(_args("--resume", "--set", "model.generator_filters=16",
                             "--run-dir", str(tmp_path / "b")), "stargan")
    assert err.value.path == str(tmp_path / "b" / "config.json")
    assert configs.from_json(resumed.run.config_path.read_text()) == prepared.config
    with pytest.raises(CtmriInputError, match="keeps it"):
        common.prepare(_args("--resume", "--preset", "demo", "--run-dir", str(tmp_path / "b")),
                       "stargan")
    with pytest.raises(CtmriInputError, match="nothing to resume"):
        common.prepare(_args("--resume", "--run-dir", str(tmp_path / "c")), "stargan")

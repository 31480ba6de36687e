"""StarGAN training: distribution equivalence, exact resume, run folder and TensorBoard output.

Everything runs at the smoke size (width 8, 32 px, batch 4) on phantom slices held in memory;
the tfds dataset is never needed.
"""
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import configs, intensity, visualize
from ctmri_tf.phantom import make_subject
from ctmri_tf.training import loop, run_dir as run_dirs
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.training.stargan import StarGAN, load_stargan_generator
from ctmri_tf.training.strategy import make_strategy
from ctmri_tf.training import cli as common
from ctmri_tf.training import inputs as training_inputs
from ctmri_tf.training.inputs import Inputs
from train import stargan as stargan_cli

from dataset_fixtures import tiny_dataset  # noqa: F401  (session fixture)

SIZE = 32



def phantom_slices(size=SIZE, subjects=2, slices=4):
    """CT and MRI slices ``(N, size, size, 1)`` in [-1, 1] of registered phantom subjects."""
    ct, mri = [], []
    for index in range(subjects):
        subject = make_subject(index, image_size=size, num_slices=slices)
        ct.append(intensity.ct_to_unit(subject.ct))
        mri.append(intensity.mri_to_unit(subject.mri,
                                         intensity.fit_mri_scale(subject.mri, subject.mask)))
    return (np.concatenate(ct)[..., None].astype(np.float32),
            np.concatenate(mri)[..., None].astype(np.float32))


def unpaired(ct, mri, global_batch, seed=0):
    """An infinite, seeded stream of ``{"ct", "mri"}`` half batches, as
    ``ctmri_tf.data.unpaired_batches(..., repeat=True)`` (also run by the subprocess script)."""
    def side(x, s):
        return tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=s).repeat()
    return tf.data.Dataset.zip({"ct": side(ct, seed), "mri": side(mri, seed + 1)}).batch(
        global_batch // 2, drop_remainder=True)


def paired_stream(ct, mri, global_batch, seed=0):
    """An infinite, seeded stream of registered ``{"ct", "mri"}`` half batches (the same
    slices on both sides, as StarGAN's paired ``training_batches``)."""
    pairs = tf.data.Dataset.from_tensor_slices({"ct": ct, "mri": mri})
    return pairs.shuffle(len(ct), seed=seed).repeat().batch(global_batch // 2,
                                                            drop_remainder=True)


def smoke_config(**overrides):
    return configs.override(configs.get_config("stargan", "smoke"), overrides)


@pytest.fixture(scope="module")
def slices():
    return phantom_slices()


def paired_validation(ct, mri):
    """The first two slices as registered MRI -> CT pairs (ctmri_tf.data.paired_batches keys)."""
    return tf.data.Dataset.from_tensor_slices({"source": mri[:2], "target": ct[:2]}).batch(2)


# --------------------------------------------------------------------- MirroredStrategy
MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
""") + inspect.getsource(unpaired) + textwrap.dedent("""
    from ctmri_tf import configs
    from ctmri_tf.errors import CtmriInputError
    from ctmri_tf.training import loop, run_dir, stargan, strategy as strategies

    # Adam's epsilon 1e-5 instead of 1e-8: the label channels of the generator's first conv
    # feed an instance norm that cancels constants, so their true gradient is ~0 and float
    # rounding (summing 2 + 2 examples instead of 4) would become a full +-lr Adam step.
    config = configs.override(configs.get_config("stargan", "smoke"), {
        "schedule.steps": 3, "schedule.decay_steps": 2, "loss.n_critic": 1,
        "data.batch_size": 4, "generator_optimizer.epsilon": 1e-5,
        "discriminator_optimizer.epsilon": 1e-5})
    arrays = np.load(sys.argv[1])
    ct, mri = arrays["ct"], arrays["mri"]
    out = {}
    for name in ("default", "mirrored"):
        strategy = strategies.make_strategy(name)
        task = stargan.StarGAN(config, strategy)
        initial = [w.numpy() for w in task.generator.weights + task.discriminator.weights]
        run = run_dir.create_run_dir(tempfile.mkdtemp() + "/run", config)
        validation = tf.data.Dataset.from_tensor_slices({"source": mri[:2], "target": ct[:2]})
        result = loop.train(task, strategy=strategy, train_dataset=unpaired(ct, mri, 4),
                            schedule=config.schedule, run_dir=run, seed=3, progress=False,
                            validation_dataset=validation.batch(2))
        final = [w.numpy() for w in task.generator.weights + task.discriminator.weights]
        out[name] = {"replicas": strategy.num_replicas_in_sync, "history": result.history,
                     "validation": result.validation,
                     "final": final,
                     "moved": max(float(np.abs(a - b).max()) for a, b in zip(initial, final))}
    finals = zip(out["default"].pop("final"), out["mirrored"].pop("final"))
    out["max_weight_difference"] = max(float(np.abs(a - b).max()) for a, b in finals)
    try:
        stargan.StarGAN(configs.override(config, {"data.batch_size": 6}),
                        strategies.make_strategy("mirrored"))
        out["split_error"] = None
    except CtmriInputError as err:
        out["split_error"] = str(err)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module", autouse=True)
def mirrored_process(tmp_path_factory, slices):
    """Start the two-device script at the beginning of this module: it needs a fresh process
    (logical devices must be configured before TensorFlow initialises them), and running it
    while the in-process tests run shortens this module's wall time. The last test
    of the module collects it."""
    folder = tmp_path_factory.mktemp("mirrored")
    (folder / "mirrored.py").write_text(MIRRORED_SCRIPT)
    np.savez(folder / "slices.npz", ct=slices[0], mri=slices[1])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(folder / "stdout.txt", "w") as stdout, open(folder / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(folder / "mirrored.py"),
                                 str(folder / "slices.npz")], stdout=stdout, stderr=stderr,
                                env=env)
    proc.folder = folder
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------- resume
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, slices):
    ct, mri = slices
    config = smoke_config(**{"schedule.steps": 6, "schedule.decay_steps": 4,
                             "loss.n_critic": 2, "schedule.checkpoint_every": 3,
                             "schedule.sample_every": 100, "schedule.summary_every": 100})
    strategy = make_strategy("default")

    def session(run, task_config, scramble=False, **kwargs):
        task = StarGAN(task_config, strategy)
        if scramble:
            for weight in task.generator.weights + task.discriminator.weights:
                weight.assign(weight + 0.5)
        result = loop.train(task, strategy=strategy, train_dataset=unpaired(ct, mri, 4),
                            schedule=config.schedule, run_dir=run, seed=0, progress=False,
                            **kwargs)
        return task, result

    full_run = run_dirs.create_run_dir(tmp_path / "full", config)
    full_task, full = session(full_run, config)
    assert full.checkpoint.endswith("ckpt-6")
    # The same run killed right after its step-3 checkpoint: a copy without the step-6 one.
    run = run_dirs.RunDir(tmp_path / "killed")
    shutil.copytree(full_run.root, run.root)
    for path in run.checkpoints.glob("ckpt-6.*"):
        path.unlink()
    (run.checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n'
                                                'all_model_checkpoint_paths: "ckpt-3"\n')
    # A fresh task whose weights are scrambled: the checkpoint must restore the weights, Adam
    # moments, step counter and RNG; the data continues at step 4.
    resumed_task, resumed = session(run, config, resume=True, scramble=True)
    assert (resumed.start_step, resumed.step) == (3, 6)
    assert [s for s, _ in resumed.history] == [4, 5, 6]
    uninterrupted = dict(full.history)
    for step, losses in resumed.history:
        assert set(losses) == set(uninterrupted[step])
        for name, value in losses.items():
            assert value == pytest.approx(uninterrupted[step][name], rel=1e-5, abs=1e-7), \
                (step, name)
    assert "g_rec" in dict(resumed.history)[6]
    for got, want in zip(resumed_task.generator.weights, full_task.generator.weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    assert sorted(p.name for p in run.checkpoints.glob("*.index")) == ["ckpt-3.index",
                                                                       "ckpt-6.index"]
    assert int(resumed_task.generator_optimizer.iterations.numpy()) == 3    # steps 2, 4, 6


# -------------------------------------------------------------------------- mixed precision
def test_mixed_bfloat16_session_stops_at_a_step_with_float32_losses(tmp_path, slices):
    """bfloat16 compute, float32 variables and losses; ``stop_at`` ends a session early with a
    checkpoint (a time-limited job), to be continued with ``resume=True``."""
    ct, mri = slices
    config = smoke_config(**{"precision": "mixed_bfloat16", "schedule.steps": 4,
                             "schedule.decay_steps": 1, "loss.n_critic": 1})
    strategy = make_strategy("default")
    try:
        task = StarGAN(config, strategy)
        assert task.generator.get_layer("down1_conv").compute_dtype == "bfloat16"
        assert task.generator.get_layer("to_image").compute_dtype == "float32"
        assert all(w.dtype == "float32" for w in task.generator.weights)
        result = loop.train(task, strategy=strategy, train_dataset=unpaired(ct, mri, 4),
                            schedule=config.schedule,
                            run_dir=run_dirs.create_run_dir(tmp_path / "run", config),
                            progress=False, stop_at=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert (result.start_step, result.step) == (0, 2)
    assert result.checkpoint.endswith("ckpt-2") and [s for s, _ in result.history] == [1, 2]
    losses = result.history[-1][1]
    assert {"d_total", "g_total"} <= set(losses)
    assert all(isinstance(v, float) and np.isfinite(v) for v in losses.values())


# --------------------------------------------------------------------------- paired L1
def test_paired_loss_is_l1_to_the_registered_counterpart(slices):
    """With ``loss.lambda_paired`` the generator loss adds lambda x mean |G(x, other) - x'|,
    x' being the registered counterpart of x (the CT half's is the MRI half and vice versa)."""
    ct, mri = slices
    config = smoke_config(**{"loss.lambda_paired": 7.0, "loss.n_critic": 1})
    task = StarGAN(config, make_strategy("default"))
    batch = {"ct": tf.constant(ct[:2]), "mri": tf.constant(mri[:2])}   # slices 0, 1: pairs
    # The generator's forward before the step (the critic update does not change it).
    fake_mri = task.translate(ct[:2], 1).numpy()
    fake_ct = task.translate(mri[:2], 0).numpy()
    expected = np.mean([np.mean(np.abs(fake_mri[i] - mri[i])) for i in range(2)]
                       + [np.mean(np.abs(fake_ct[i] - ct[i])) for i in range(2)])
    losses = {k: float(v) for k, v in task.replica_step(batch, tf.constant([1, 2]),
                                                         "d+g").items()}
    assert losses["g_paired"] == pytest.approx(expected, rel=1e-4)
    assert losses["g_total"] == pytest.approx(
        losses["g_adv"] + 10 * losses["g_rec"] + losses["g_cls"] + 7.0 * expected, rel=1e-4)
    # Unpaired (the paper's StarGAN, the default): no such term.
    plain = StarGAN(smoke_config(**{"loss.n_critic": 1}), make_strategy("default"))
    assert "g_paired" not in plain.replica_step(batch, tf.constant([1, 2]), "d+g")


@pytest.mark.parametrize("domains", [("ct", "mri"), ("mri",)])
def test_paired_ssim_term_is_one_minus_ssim_to_the_registered_counterpart(slices, domains):
    """``loss.lambda_paired_ssim`` adds lambda x mean(1 - SSIM(G(x, other), x')) over the
    translations into ``loss.paired_ssim_domains``, SSIM computed by hand here (11 x 11
    Gaussian window, sigma 1.5, C1 = (0.01 x 2)^2, C2 = (0.03 x 2)^2 for [-1, 1])."""
    ct, mri = slices
    config = smoke_config(**{"loss.lambda_paired": 7.0, "loss.n_critic": 1,
                             "loss.lambda_rec": 0.0, "loss.lambda_paired_ssim": 3.0,
                             "loss.paired_ssim_domains": ",".join(domains)})
    task = StarGAN(config, make_strategy("default"))
    batch = {"ct": tf.constant(ct[:2]), "mri": tf.constant(mri[:2])}
    fake = {"mri": task.translate(ct[:2], 1).numpy()[..., 0],
            "ct": task.translate(mri[:2], 0).numpy()[..., 0]}
    real = {"mri": mri[:2, ..., 0], "ct": ct[:2, ..., 0]}

    g = np.exp(-0.5 * (np.arange(11) - 5.0) ** 2 / 1.5 ** 2)
    window = np.outer(g, g) / np.outer(g, g).sum()

    def local_mean(x):   # 'VALID' 11 x 11 weighted mean
        n = x.shape[0] - 10
        return np.array([[np.sum(window * x[i:i + 11, j:j + 11]) for j in range(n)]
                         for i in range(n)])

    def ssim(x, y):
        c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
        mx, my = local_mean(x), local_mean(y)
        vx, vy = local_mean(x * x) - mx ** 2, local_mean(y * y) - my ** 2
        cov = local_mean(x * y) - mx * my
        return np.mean((2 * mx * my + c1) * (2 * cov + c2)
                       / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))

    expected = np.mean([1 - ssim(fake[d][i], real[d][i]) for d in domains for i in range(2)])
    losses = {k: float(v) for k, v in task.replica_step(batch, tf.constant([1, 2]),
                                                         "g").items()}
    assert set(losses) == {"g_paired", "g_paired_ssim", "g_total"}
    assert losses["g_paired_ssim"] == pytest.approx(expected, rel=1e-3)
    assert losses["g_total"] == pytest.approx(
        7.0 * losses["g_paired"] + 3.0 * expected, rel=1e-3)


def test_paired_ssim_term_needs_pairs_and_known_domains():
    with pytest.raises(CtmriInputError, match="lambda_paired_ssim=1.0 .*lambda_paired > 0 "
                                              r"\(unpaired training: --set "
                                              "loss.lambda_paired_ssim=0 too\\)"):
        smoke_config(**{"loss.lambda_paired_ssim": 1.0})
    with pytest.raises(CtmriInputError, match=r"paired_ssim_domains=\['pet'\] must name"):
        smoke_config(**{"loss.lambda_paired": 1.0, "loss.lambda_paired_ssim": 1.0,
                        "loss.paired_ssim_domains": "pet"})


def test_without_the_cycle_loss_the_generator_follows_the_remaining_terms(slices):
    """``loss.lambda_rec`` 0 skips the reconstruction pass: the generator's update is the one of
    adversarial + classification + paired terms alone (checked against a hand-built tape)."""
    ct, mri = slices
    config = smoke_config(**{"loss.lambda_paired": 5.0, "loss.n_critic": 1,
                             "loss.lambda_rec": 0.0})
    task = StarGAN(config, make_strategy("default"))
    twin = StarGAN(config, make_strategy("default"))
    for a, b in ((task.generator, twin.generator), (task.discriminator, twin.discriminator)):
        b.set_weights(a.get_weights())
    batch = {"ct": tf.constant(ct[:2]), "mri": tf.constant(mri[:2])}
    seed = tf.constant([1, 2])
    losses = task.replica_step(batch, seed, "d+g")
    assert "g_rec" not in losses
    assert float(losses["g_total"]) == pytest.approx(
        float(losses["g_adv"] + losses["g_cls"] + 5.0 * losses["g_paired"]), rel=1e-5)

    # by hand: the critic step, then the generator's gradient of adv + cls + 5 x paired
    x_real, label_org, label_trg, alpha = twin._inputs(batch, seed)
    G, D = twin.generator, twin.discriminator
    with tf.GradientTape() as tape:
        x_fake = G([x_real, label_trg], training=True)
        with tape.stop_recording():
            twin._train_discriminator(x_real, tf.stop_gradient(x_fake), label_org, alpha)
        src, cls = D(x_fake, training=True)
        counterpart = tf.concat(tf.split(x_real, 2, axis=0)[::-1], axis=0)
        total = (tf.reduce_mean(-tf.reduce_mean(src, axis=[1, 2, 3]))
                 + tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(label_trg, cls))
                 + 5.0 * tf.reduce_mean(tf.abs(counterpart - x_fake)))
    twin._apply(twin.generator_optimizer, tape.gradient(total, G.trainable_variables),
                G.trainable_variables)
    assert float(total) == pytest.approx(float(losses["g_total"]), rel=1e-5)
    for a, b in zip(task.generator.get_weights(), twin.generator.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_regression_warm_up_trains_the_generator_on_the_paired_l1_alone(slices, tmp_path):
    """``loss.adversarial_start_step`` N: steps 0..N-1 are generator-only regression steps on
    lambda_paired x the paired L1 (checked against a hand-built update), the critic is not
    touched; the paper's alternation (here n_critic 2) starts at step N."""
    ct, mri = slices
    config = smoke_config(**{"loss.lambda_paired": 5.0, "loss.n_critic": 2,
                             "loss.lambda_rec": 0.0, "loss.adversarial_start_step": 3})
    task = StarGAN(config, make_strategy("default"))
    assert [task.step_kind(i) for i in range(7)] == ["g", "g", "g", "d", "d+g", "d", "d+g"]
    twin = StarGAN(config, make_strategy("default"))
    twin.generator.set_weights(task.generator.get_weights())
    critic = [w.numpy() for w in task.discriminator.weights]
    batch = {"ct": tf.constant(ct[:2]), "mri": tf.constant(mri[:2])}
    losses = task.replica_step(batch, tf.constant([1, 2]), "g")
    assert set(losses) == {"g_paired", "g_total"}
    for before, after in zip(critic, task.discriminator.weights):
        np.testing.assert_array_equal(before, after.numpy())

    x_real, _, label_trg, _ = twin._inputs(batch, tf.constant([1, 2]))
    with tf.GradientTape() as tape:
        x_fake = twin.generator([x_real, label_trg], training=True)
        counterpart = tf.concat(tf.split(x_real, 2, axis=0)[::-1], axis=0)
        total = 5.0 * tf.reduce_mean(tf.abs(counterpart - x_fake))
    twin._apply(twin.generator_optimizer,
                tape.gradient(total, twin.generator.trainable_variables),
                twin.generator.trainable_variables)
    assert float(losses["g_total"]) == pytest.approx(float(total), rel=1e-5)
    for a, b in zip(task.generator.get_weights(), twin.generator.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # A whole run: the critic's first update is at step 3, the generator's rate schedule
    # knows its dense warm-up (7 steps: 3 regression + 2 cycles of n_critic 2 = 5 updates).
    run = run_dirs.create_run_dir(tmp_path / "run", config)
    trained = StarGAN(configs.override(config, {"schedule.steps": 7}), make_strategy("default"))
    loop.train(trained, strategy=make_strategy("default"), train_dataset=paired_stream(ct, mri, 4),
               schedule=configs.override(config, {"schedule.steps": 7}).schedule, run_dir=run,
               seed=0, progress=False)
    assert int(trained.generator_optimizer.iterations) == 5
    assert int(trained.discriminator_optimizer.iterations) == 4


def test_regression_warm_up_needs_paired_data():
    with pytest.raises(CtmriInputError, match="adversarial_start_step=5 .*lambda_paired > 0"):
        smoke_config(**{"loss.adversarial_start_step": 5}).validate()
    with pytest.raises(CtmriInputError, match="adversarial_start_step=-1 must be >= 0"):
        smoke_config(**{"loss.adversarial_start_step": -1,
                        "loss.lambda_paired": 1.0}).validate()


def test_paired_training_batches_hold_the_same_slice_on_both_sides(tiny_dataset):
    from ctmri_tf.training.stargan import training_batches

    name, data_dir = tiny_dataset
    config = smoke_config(**{"data.dataset_config": name, "data.data_dir": str(data_dir),
                             "data.batch_size": 8})

    def background_disagreement(cfg):
        batch = next(iter(training_batches(cfg)))
        ct, mri = batch["ct"].numpy(), batch["mri"].numpy()
        assert ct.shape == mri.shape == (4, 32, 32, 1)
        # the masked background is exactly -1 on both sides of a registered pair
        return np.mean((ct == -1.0) != (mri == -1.0))

    assert background_disagreement(configs.override(config, {"loss.lambda_paired": 100.0})) < 0.02
    assert background_disagreement(config) > 0.05          # unpaired: unrelated slices


def test_paired_training_without_pairs_is_a_clear_error(tiny_dataset, monkeypatch):
    from ctmri_tf import data
    from ctmri_tf.errors import CtmriInputError
    from ctmri_tf.training.stargan import training_batches

    name, data_dir = tiny_dataset
    config = smoke_config(**{"data.dataset_config": name, "data.data_dir": str(data_dir),
                             "loss.lambda_paired": 100.0, "loss.lambda_paired_ssim": 40.0})
    # an unpaired dataset (folder_unpaired): the paired stream of its split is empty
    monkeypatch.setattr(data, "paired_batches",
                        lambda *a, **k: tf.data.Dataset.from_tensor_slices(
                            {"source": np.zeros((0, 32, 32, 1), np.float32),
                             "target": np.zeros((0, 32, 32, 1), np.float32)}))
    with pytest.raises(CtmriInputError, match="lambda_paired=100.0 needs registered CT/MRI "
                                              "pairs.*--set loss.lambda_paired=0 --set "
                                              "loss.lambda_paired_ssim=0$"):
        training_batches(config)
    # the demo preset's unpaired recipe, as the message says, validates
    configs.override(config, {"loss.lambda_paired": 0, "loss.lambda_paired_ssim": 0})
    with pytest.raises(CtmriInputError, match="lambda_paired=-1.0 must be >= 0"):
        smoke_config(**{"loss.lambda_paired": -1.0}).validate()


# ------------------------------------------------------------------------------------- CLI
def _events(logdir):
    found = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = value
    return found


def test_cli_run_writes_config_checkpoints_tensorboard_and_samples(tmp_path, slices,
                                                                   monkeypatch):
    ct, mri = slices
    validation = paired_validation(ct, mri)
    monkeypatch.setattr(training_inputs, "stargan_inputs", lambda config: Inputs(
        unpaired(ct, mri, config.data.batch_size, seed=config.seed), validation))
    root = tmp_path / "run"
    code = stargan_cli.main(["--preset", "smoke", "--strategy", "mirrored", "--run-dir",
                             str(root), "--steps", "4", "--set", "loss.n_critic=2",
                             "--set", "schedule.summary_every=2",
                             "--set", "schedule.sample_every=2",
                             "--set", "model.generator_ct_windows_hu=0,80"])
    assert code == 0
    config = configs.from_json((root / "config.json").read_text())
    assert config.model.ct_windows() == ((0.0, 80.0),)
    assert (config.schedule.steps, config.schedule.decay_steps, config.loss.n_critic) == (4, 2, 2)
    # TensorBoard events in the run folder itself: `tensorboard --logdir runs/` names it "run"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("events.out.")) == [
        "checkpoints", "config.json", "samples"]
    assert len(list(root.glob("events.out.tfevents.*"))) == 1
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path))       # as `tensorboard --logdir <parent>`
    assert list(multiplexer.Runs()) == ["run"]              # the run folder's name, not run/logs
    assert (root / "checkpoints" / "ckpt-4.index").is_file()
    assert sorted(p.name for p in (root / "samples").iterdir()) == ["step_0000002.png",
                                                                    "step_0000004.png"]

    events = _events(root)
    for name in ("d_adv", "d_cls", "d_gp", "d_total", "g_adv", "g_cls", "g_rec", "g_total"):
        assert set(events[f"loss/{name}"]) == {2, 4}
    # learning rates after step 2 (hand-computed, 4 steps, decay over the last 2): the critic's
    # next update is step 2 (full rate), the generator's is step 3 (half way down).
    lr = {name: float(tf.make_ndarray(events[f"learning_rate/{name}"][2].tensor))
          for name in ("discriminator", "generator")}
    assert lr["discriminator"] == pytest.approx(1e-4) and lr["generator"] == pytest.approx(5e-5)
    assert events["samples"][4].metadata.plugin_data.plugin_name == "images"
    # the grid: 2 examples x 2 directions x (brain, bone window) rows of input | translated |
    # reconstructed | ground truth, 32 px cells, a title band and a row-label band
    grid = tf.image.decode_png(events["samples"][4].tensor.string_val[2]).numpy()
    assert grid.shape[0] == 18 + 2 + 8 * 32 + 7 * 2
    assert grid.shape[1] - (4 * 32 + 3 * 2) > 30              # labels, left of the cells
    hparams = events["_hparams_/session_start_info"][0].metadata.plugin_data
    assert hparams.plugin_name == "hparams" and b"model.generator_filters" in hparams.content
    # the HParams dashboard is told which scalars are the run's metrics
    from tensorboard.plugins.hparams import plugin_data_pb2
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events["_hparams_/experiment"][0].metadata.plugin_data.content).experiment
    assert [m.name.tag for m in experiment.metric_infos] == [
        "validation/mri_to_ct/psnr_db_hu_range", "validation/mri_to_ct/ssim_hu_range",
        "validation/mri_to_ct/mae_hu", "validation/ct_to_mri/psnr_db_unit_range",
        "validation/ct_to_mri/ssim_unit_range"]
    assert experiment.metric_infos[0].display_name == "MRI->CT PSNR (dB, CT -1024..3000 HU)"
    assert {h.name for h in experiment.hparam_infos} >= {"model.generator_filters", "strategy"}
    for tag in (m.name.tag for m in experiment.metric_infos):
        assert 4 in events[tag], tag                          # the final value, at the last step

    # the validation scalars equal PSNR/SSIM recomputed from the final checkpoint's generator
    task = StarGAN(config, make_strategy("default"))
    tf.train.Checkpoint(generator=task.generator).restore(
        str(root / "checkpoints" / "ckpt-4")).expect_partial()
    fake_ct = task.translate(mri[:2], 0).numpy()
    mse = np.mean(((np.clip(fake_ct, -1, 1) + 1) / 2 - (ct[:2] + 1) / 2) ** 2, axis=(1, 2, 3))
    psnr = events["validation/mri_to_ct/psnr_db_hu_range"][4]
    assert float(tf.make_ndarray(psnr.tensor)) == pytest.approx(
        np.mean(10 * np.log10(1.0 / mse)), abs=1e-3)
    # the tag names direction and scale; its description says them in words
    assert "-1024..3000 HU" in psnr.metadata.summary_description
    mae = float(tf.make_ndarray(events["validation/mri_to_ct/mae_hu"][4].tensor))
    assert mae == pytest.approx(np.mean(np.abs(np.clip(fake_ct, -1, 1) - ct[:2])) * 2012, rel=1e-4)
    for tag in ("mri_to_ct/ssim_hu_range", "ct_to_mri/psnr_db_unit_range",
                "ct_to_mri/ssim_unit_range"):
        assert 4 in events[f"validation/{tag}"]
        assert "[0, 1]" in events[f"validation/{tag}"][4].metadata.summary_description
    assert "MRI scale" in events["validation/ct_to_mri/ssim_unit_range"][4] \
        .metadata.summary_description
    # the identity baseline beside it: the MRI itself scored against the CT
    identity_mse = np.mean(((mri[:2] + 1) / 2 - (ct[:2] + 1) / 2) ** 2, axis=(1, 2, 3))
    identity = float(tf.make_ndarray(
        events["validation/mri_to_ct/identity_psnr_db_hu_range"][4].tensor))
    assert identity == pytest.approx(np.mean(10 * np.log10(1.0 / identity_mse)), abs=1e-3)

    # the any-size generator restored from the run keeps the brain-window input channel
    loaded = load_stargan_generator(root)
    assert loaded.get_layer("intensity_windows").windows == pytest.approx(
        [(float(intensity.ct_to_unit(0.0)), float(intensity.ct_to_unit(80.0)))])
    label = np.tile(np.float32([[1, 0]]), (2, 1))
    np.testing.assert_allclose(loaded([mri[:2], label]), fake_ct, atol=1e-5)


def test_sample_grid_drops_the_reconstructed_column_without_the_cycle_term(slices):
    ct, mri = slices
    batch = next(iter(paired_validation(ct, mri)))
    grids = {}
    for lambda_rec in (10.0, 0.0):
        task = StarGAN(smoke_config(**{"loss.lambda_rec": lambda_rec}), make_strategy("default"))
        rows, titles, labels = task.sample_rows(batch)
        grids[lambda_rec] = visualize.image_grid(rows, titles=titles, row_labels=labels)
        assert len(rows) == len(labels) == 8                 # 2 examples x 2 directions x 2
        assert labels[:2] == ["MRI->CT\nCT 0..80 HU", "MRI->CT\nCT -450..1050 HU"]
        assert labels[4:6] == ["CT->MRI\nCT 0..80 HU", "CT->MRI\nCT -450..1050 HU"]
        # bone-window rows show only the CT cells: MRI->CT translated and ground truth
        assert [cell is None for cell in rows[1]] == (
            [True, False, True, False] if lambda_rec else [True, False, False])
        assert titles == (["input", "translated", "reconstructed", "ground truth"] if lambda_rec
                          else ["input", "translated", "ground truth"])
    assert grids[10.0].shape[0] == grids[0.0].shape[0]
    assert grids[10.0].shape[1] - grids[0.0].shape[1] == SIZE + 2    # one column less


def test_cli_without_built_dataset_says_how_to_build_it(tmp_path, capsys):
    code = common.run_cli(stargan_cli.main, ["--preset", "smoke", "--data-dir",
                                             str(tmp_path / "tfds"), "--run-dir",
                                             str(tmp_path / "run")])
    assert code == 2
    message = capsys.readouterr().err
    assert str(tmp_path / "tfds") in message
    assert ("python -m datasets.ctmri build --config synthetic_small --data-dir "
            f"{tmp_path / 'tfds'}, or add --build-dataset to this command") in message
    assert not (tmp_path / "run").exists()          # no half-started run folder


def test_build_dataset_builds_the_presets_dataset_then_trains(tmp_path, monkeypatch):
    """``--build-dataset`` builds the config the preset names (here a tiny one, through
    ``--dataset_config``: the tfds spelling is accepted too) and the run trains on it."""
    from ctmri_tf.datasets.ctmri import ctmri_dataset_builder

    built = []
    real = ctmri_dataset_builder.build
    monkeypatch.setattr(ctmri_dataset_builder, "build",
                        lambda config, **kw: built.append(config) or real(config, **kw))
    code = common.run_cli(stargan_cli.main, [
        "--preset", "smoke", "--steps", "1", "--data_dir", str(tmp_path / "tfds"),
        "--dataset_config", "synthetic_3x2x32", "--run_dir", str(tmp_path / "run"),
        "--build-dataset"])
    assert code == 0
    assert built == ["synthetic_3x2x32"]
    assert (tmp_path / "tfds" / "ctmri" / "synthetic_3x2x32").is_dir()
    assert (tmp_path / "run" / "checkpoints" / "checkpoint").is_file()


@pytest.mark.parametrize("argv, expected", [
    (["--preset", "huge"], "unknown preset 'huge'; valid presets: smoke, demo, paper"),
    (["--preset", "smoke", "--strategy", "tpu"], "unknown strategy 'tpu'"),
    (["--preset", "smoke", "--image-size", "36"], "36 px is not a positive multiple of 8"),
    (["--preset", "smoke", "--set", "model.generator_ct_windows_hu=80"],
     "model.generator_ct_windows_hu=[80.0] must be (low, high) pairs in HU"),
    (["--preset", "smoke", "--set", "model.generator_ct_windows_hu=80,0"],
     "with low < high"),
])
def test_cli_bad_arguments_fail_with_clear_errors(tmp_path, capsys, argv, expected):
    code = common.run_cli(stargan_cli.main, argv + ["--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert expected in capsys.readouterr().err


# Last, so that the subprocess started by mirrored_process ran alongside the tests above.
def test_mirrored_over_two_devices_matches_one_device(mirrored_process):
    """MirroredStrategy over two logical CPUs = one device on the same global batch and seed."""
    returncode = mirrored_process.wait(timeout=300)
    stderr = (mirrored_process.folder / "stderr.txt").read_text()
    assert returncode == 0, stderr[-3000:]
    stdout = (mirrored_process.folder / "stdout.txt").read_text()
    line = next(l for l in stdout.splitlines() if l.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    single, mirrored = out["default"], out["mirrored"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    assert single["moved"] > 1e-4                       # training did change the weights
    assert out["max_weight_difference"] < 1e-5
    assert [s for s, _ in single["history"]] == [1, 2, 3]
    for (step, want), (_, got) in zip(single["history"], mirrored["history"]):
        assert set(got) == set(want) == {"d_adv", "d_cls", "d_gp", "d_total",
                                         "g_adv", "g_cls", "g_rec", "g_total"}
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-6), (step, name)
    (step, want), = single["validation"]
    names = {"psnr_mri_to_ct", "ssim_mri_to_ct", "psnr_ct_to_mri", "ssim_ct_to_mri"}
    assert step == 3 and set(want) == names | {f"identity_{n}" for n in names} | {
        "mae_hu_mri_to_ct"}
    assert mirrored["validation"][0][1] == pytest.approx(want, rel=1e-5)
    assert "data.batch_size=6 must be divisible by 2 x 2 replicas" in out["split_error"]


@pytest.mark.parametrize("preset, dataset", [(None, "synthetic_v2_40x32x128"),
                                             ("smoke", "synthetic_small"), ("paper", "synthetic")])
def test_each_preset_names_its_dataset(preset, dataset, tmp_path, capsys):
    """Without --preset a trainer takes ``demo`` (minutes on a CPU, not the 256 px paper
    model), and each preset names the dataset config it trains on: ``demo`` the one
    ``make demo`` builds."""
    argv = ["--data-dir", str(tmp_path / "tfds"), "--run-dir", str(tmp_path / "run")]
    code = common.run_cli(stargan_cli.main, argv + (["--preset", preset] if preset else []))
    assert code == 2
    assert f"--config {dataset} --data-dir" in capsys.readouterr().err

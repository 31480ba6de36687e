"""CycleGAN training: the history pool (also over two MirroredStrategy replicas), the CLI's run
folder and TensorBoard output, and exact resume (pool included).

Everything runs at the smoke size (width 8, 32 px, batch 2, pool of 4) on phantom slices held
in memory; the tfds dataset is never needed. One uninterrupted 6-step CLI run under
MirroredStrategy (one CPU replica in this process) is the reference; a copy of its folder as it
was after step 3 is resumed by the CLI on the default strategy and must reproduce steps 4-6 and
the final pools. The two-replica check of the pool runs in a subprocess (logical devices must be
configured before TensorFlow starts), started first so that it overlaps.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import configs, intensity
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.phantom import make_subject
from ctmri_tf.training.cyclegan import (CycleGAN, load_cyclegan_generators,
                                        load_primary_generator, read_primary_direction)
from ctmri_tf.training.image_pool import ImagePool, query_history
from ctmri_tf.training import cli as common
from ctmri_tf.training import inputs as training_inputs
from ctmri_tf.training.inputs import Inputs
from train import cyclegan as cyclegan_cli

SIZE = 32
STEPS = 6
LOSSES = ("g_adv_mri", "g_adv_ct", "cycle_ct", "cycle_mri", "identity_mri", "identity_ct",
          "g_total", "d_mri", "d_ct", "d_total")
FLAGS = ["--preset", "smoke", "--steps", str(STEPS), "--set", "schedule.summary_every=1",
         "--set", "schedule.checkpoint_every=3", "--set", "schedule.sample_every=3",
         "--set", "schedule.validation_every=3"]


def phantom_slices(size=SIZE, subjects=2, slices=4):
    """CT and MRI slices ``(N, size, size, 1)`` in [-1, 1] of phantom subjects."""
    ct, mri = [], []
    for index in range(subjects):
        subject = make_subject(index, image_size=size, num_slices=slices)
        ct.append(intensity.ct_to_unit(subject.ct))
        mri.append(intensity.mri_to_unit(subject.mri,
                                         intensity.fit_mri_scale(subject.mri, subject.mask)))
    return (np.concatenate(ct)[..., None].astype(np.float32),
            np.concatenate(mri)[..., None].astype(np.float32))


def unpaired(ct, mri, batch_size, seed=0):
    """An infinite, seeded stream of ``{"ct", "mri"}`` batches, as
    ``ctmri_tf.data.unpaired_batches(..., repeat=True)`` (also run by the subprocess script)."""
    def side(x, s):
        return tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=s).repeat()
    return tf.data.Dataset.zip({"ct": side(ct, seed), "mri": side(mri, seed + 1)}).batch(
        batch_size, drop_remainder=True)


def smoke_config():
    """The config the CLI resolves from ``FLAGS``."""
    base = configs.get_config("cyclegan", "smoke")
    return configs.override(base, {"schedule.steps": STEPS, "schedule.decay_steps": 3,
                                   "schedule.summary_every": 1, "schedule.checkpoint_every": 3,
                                   "schedule.sample_every": 3, "schedule.validation_every": 3})


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


def loss_values(root):
    """``{loss name: {step: value}}`` from a run folder's TensorBoard scalars."""
    return {tag[len("loss/"):]: {step: scalar(value) for step, value in values.items()}
            for tag, values in events(root).items() if tag.startswith("loss/")}


def checkpoint_values(prefix, name):
    """The saved tensors of a checkpoint whose key starts with ``name/``."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith(name + "/")}


# ------------------------------------------------------------------------------ history pool
def test_pool_query_follows_the_official_rule_image_by_image():
    # pool of 2; images 1..5; exchange draws True, False, True, True, False; slots 0, 0, 1, 1, 0
    images = tf.reshape(tf.range(1.0, 6.0), [5, 1, 1, 1])
    returned, pool, count = query_history(
        tf.zeros([2, 1, 1, 1]), tf.constant(0), images,
        tf.constant([True, False, True, True, False]), tf.constant([0, 0, 1, 1, 0]))
    # 1, 2 fill the pool and come back; 3 is exchanged for 2 (slot 1); 4 for 3, stored a
    # moment ago in the same batch; 5 is not exchanged and the pool keeps [1, 4].
    np.testing.assert_array_equal(returned.numpy().ravel(), [1, 2, 2, 3, 5])
    np.testing.assert_array_equal(pool.numpy().ravel(), [1, 4])
    assert int(count) == 2


def test_pool_in_a_tf_function_is_seeded_and_only_returns_generated_images():
    def run_pool():
        pool = ImagePool(3, (2, 2, 1))
        query = tf.function(pool.query)
        outputs = [query(tf.fill([2, 2, 2, 1], float(b)) + [[[[0.0]]], [[[0.5]]]],
                         tf.constant([7, b], tf.int64)).numpy() for b in range(8)]
        return pool, np.stack(outputs)

    pool, outputs = run_pool()
    _, again = run_pool()
    np.testing.assert_array_equal(outputs, again)                  # the seed decides everything
    assert int(pool.count.numpy()) == 3
    values = outputs[:, :, 0, 0, 0]                                # (batches, 2)
    generated = {b + k for b in range(8) for k in (0.0, 0.5)}
    assert set(values.ravel()) <= generated
    for b in range(8):
        assert all(v <= b + 0.5 for v in values[b])                # never an image from the future
    assert np.any(values != np.arange(8)[:, None] + [0.0, 0.5])    # some images were exchanged
    stored = set(pool.images.numpy().ravel())
    assert stored <= generated and len(stored) == 3
    disabled = ImagePool(0, (2, 2, 1)).query(tf.fill([2, 2, 2, 1], 0.25),
                                             tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(disabled.numpy(), np.full([2, 2, 2, 1], 0.25))


# ---------------------------------------------------------------------- the reference run
MIRRORED_POOL_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ctmri_tf.training.image_pool import ImagePool
    from ctmri_tf.training.strategy import make_strategy

    # 6 global batches of 4 distinct images through a pool of 5, as CycleGAN queries it:
    # inside strategy.run, each replica with its half of the batch, the same seed everywhere
    batches = np.arange(6 * 4, dtype=np.float32).reshape(6, 4, 1, 1, 1) + np.zeros((1, 1, 2, 2, 1))
    out = {}
    for name in ("default", "mirrored"):
        strategy = make_strategy(name)
        with strategy.scope():
            pool = ImagePool(5, (2, 2, 1))
        dataset = tf.data.Dataset.from_tensor_slices(batches).unbatch().batch(4)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))

        @tf.function
        def step(iterator, seed):
            returned = strategy.run(pool.query, args=(next(iterator), seed))
            return strategy.gather(returned, axis=0)

        returned = [step(iterator, tf.constant([3, b], tf.int64)).numpy()[:, 0, 0, 0].tolist()
                    for b in range(6)]
        replica_pools = [v.numpy()[:, 0, 0, 0].tolist()
                         for v in strategy.experimental_local_results(pool.images)]
        out[name] = {"replicas": strategy.num_replicas_in_sync, "returned": returned,
                     "pools": replica_pools, "count": int(pool.count.numpy())}
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference CLI run (6 steps, MirroredStrategy over this process's one CPU device) and
    the two-device pool check (a subprocess, started first so that it overlaps)."""
    tmp = tmp_path_factory.mktemp("cyclegan")
    (tmp / "mirrored_pool.py").write_text(MIRRORED_POOL_SCRIPT)
    mirrored = subprocess.Popen([sys.executable, str(tmp / "mirrored_pool.py")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    ct, mri = phantom_slices()
    validation = tf.data.Dataset.from_tensor_slices({"source": mri[:2], "target": ct[:2]}).batch(2)
    root = tmp / "reference"
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(training_inputs, "cyclegan_inputs", lambda c: Inputs(
                unpaired(ct, mri, c.data.batch_size, seed=c.seed), validation))
            code = cyclegan_cli.main(FLAGS + ["--strategy", "mirrored", "--direction", "ct2mri",
                                              "--run-dir", str(root)])
        stdout, stderr = mirrored.communicate(timeout=300)
    finally:
        mirrored.kill()
    assert code == 0
    assert mirrored.returncode == 0, stderr[-3000:]
    line = next(l for l in stdout.splitlines() if l.startswith("RESULT "))
    return dict(root=root, config=smoke_config(), ct=ct, mri=mri, validation=validation,
                mirrored_pool=json.loads(line[len("RESULT "):]))


def test_cli_run_writes_config_checkpoints_tensorboard_and_samples(runs):
    root = runs["root"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("events.out.")) \
        == ["checkpoints", "config.json", "direction.json", "samples"]     # events: in the root
    assert configs.from_json((root / "config.json").read_text()) == runs["config"]
    assert read_primary_direction(root) == "ct2mri"
    assert sorted(p.name for p in (root / "checkpoints").glob("*.index")) == ["ckpt-3.index",
                                                                               "ckpt-6.index"]
    assert sorted(p.name for p in (root / "samples").iterdir()) == ["step_0000003.png",
                                                                    "step_0000006.png"]
    found = events(root)
    for name in LOSSES:
        assert set(found[f"loss/{name}"]) == set(range(1, STEPS + 1)), name
    # g_total = adversarial + 10 x cycle + 5 x identity (lambda 10, identity 0.5 x lambda)
    step4 = {name: scalar(found[f"loss/{name}"][4]) for name in LOSSES}
    assert step4["g_total"] == pytest.approx(
        step4["g_adv_mri"] + step4["g_adv_ct"] + 10 * (step4["cycle_ct"] + step4["cycle_mri"])
        + 5 * (step4["identity_mri"] + step4["identity_ct"]), rel=1e-5)
    assert step4["d_total"] == pytest.approx(step4["d_mri"] + step4["d_ct"], rel=1e-6)
    # 6 steps, linear decay over the last 3: after step t the next update (step t + 1, 1-based)
    # uses 2e-4 x min(1, (6 - t) / 3)
    for done, want in ((1, 2e-4), (3, 2e-4), (4, 2e-4 * 2 / 3), (5, 2e-4 / 3)):
        for name in ("generator", "discriminator"):
            assert scalar(found[f"learning_rate/{name}"][done]) == pytest.approx(want), done
    for done in (3, 6):
        assert found["samples"][done].metadata.plugin_data.plugin_name == "images"
    image = tf.image.decode_png(found["samples"][6].tensor.string_val[2]).numpy()
    assert image.shape[0] > 4 * SIZE and image.shape[1] > 4 * SIZE   # 4 rows x 4 columns
    hparams = found["_hparams_/session_start_info"][0].metadata.plugin_data
    assert hparams.plugin_name == "hparams"
    assert b"loss.pool_size" in hparams.content and b"ct2mri" in hparams.content

    # the validation scalars equal PSNR recomputed with the generators loaded from the run
    generators = load_cyclegan_generators(root)
    assert set(generators) == {"ct->mri", "mri->ct"}
    direction, primary = load_primary_generator(root)
    assert direction == "ct2mri"
    ct, mri = runs["ct"][:2], runs["mri"][:2]
    for tag, generator, source, target in (
            ("ct_to_mri/psnr_db_unit_range", primary, ct, mri),
            ("mri_to_ct/psnr_db_hu_range", generators["mri->ct"], mri, ct)):
        fake = generator(source).numpy()
        mse = np.mean(((np.clip(fake, -1, 1) + 1) / 2 - (target + 1) / 2) ** 2, axis=(1, 2, 3))
        want = np.mean(10 * np.log10(1.0 / mse))
        assert scalar(found[f"validation/{tag}"][6]) == pytest.approx(want, abs=1e-3), tag
    # the loaded generators take any multiple of 4 (here 48 px)
    assert generators["ct->mri"](np.zeros((1, 48, 48, 1), np.float32)).shape == (1, 48, 48, 1)


def test_pool_over_two_replicas_behaves_like_one_device(runs):
    single, mirrored = runs["mirrored_pool"]["default"], runs["mirrored_pool"]["mirrored"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    # the same images come back in the same batch positions, the pools hold the same images in
    # the same slots on both devices, and the count is 5 (full)
    assert mirrored["returned"] == single["returned"]
    assert mirrored["pools"] == single["pools"] * 2
    assert single["count"] == mirrored["count"] == 5
    returned = np.array(single["returned"])
    np.testing.assert_array_equal(returned[0], [0, 1, 2, 3])     # filling: the new images
    np.testing.assert_array_equal(returned[1, :1], [4])          # the 5th image fills the pool
    assert np.any(returned != np.arange(24).reshape(6, 4))       # then some are exchanged
    assert set(single["pools"][0]) <= set(range(24)) and len(set(single["pools"][0])) == 5


def test_resume_continues_at_the_saved_step_like_the_uninterrupted_run(runs, tmp_path):
    # a copy of the reference run as it was on disk after step 3 (its ckpt-3, as after a crash)
    root = tmp_path / "resumed"
    shutil.copytree(runs["root"], root, ignore=shutil.ignore_patterns("ckpt-6.*", "events.*",
                                                                      "step_0000006.png"))
    (root / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-3"\n')
    ct, mri = runs["ct"], runs["mri"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_inputs, "cyclegan_inputs", lambda c: Inputs(
            unpaired(ct, mri, c.data.batch_size, seed=c.seed), runs["validation"]))
        assert cyclegan_cli.main(["--resume", "--run-dir", str(root)]) == 0
    assert read_primary_direction(root) == "ct2mri"            # kept without --direction
    resumed, reference = loss_values(root), loss_values(runs["root"])
    for name in LOSSES:
        assert set(resumed[name]) == {4, 5, 6}, name            # continued at the saved step
        for step in (4, 5, 6):
            assert resumed[name][step] == pytest.approx(reference[name][step], rel=1e-6), \
                (step, name)

    final = root / "checkpoints" / "ckpt-6"
    for pool in ("pool_mri", "pool_ct"):
        want = checkpoint_values(runs["root"] / "checkpoints" / "ckpt-6", pool)
        got, before = checkpoint_values(final, pool), checkpoint_values(root / "checkpoints" /
                                                                        "ckpt-3", pool)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=key)
        images = next(k for k in want if "/images/" in k)
        assert np.abs(got[images] - before[images]).max() > 0.01   # steps 4-6 exchanged images
    reader = tf.train.load_checkpoint(str(final))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 6
    assert int(reader.get_tensor("generator_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 6


# ----------------------------------------------------------------------------- bad input
def test_loading_a_run_that_is_not_a_cyclegan_run_names_the_file(tmp_path):
    stargan = tmp_path / "stargan"
    stargan.mkdir()
    (stargan / "config.json").write_text(configs.to_json(configs.get_config("stargan", "smoke")))
    with pytest.raises(CtmriInputError) as err:
        load_cyclegan_generators(stargan)
    assert str(stargan / "config.json") in str(err.value) and "not a cyclegan run" in str(err.value)

    empty = tmp_path / "untrained"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.json").write_text(configs.to_json(configs.get_config("cyclegan", "smoke")))
    with pytest.raises(CtmriInputError) as err:
        load_cyclegan_generators(empty)
    assert str(empty / "checkpoints") in str(err.value) and "no checkpoint" in str(err.value)


def test_batch_that_does_not_split_over_the_replicas_is_refused():
    class TwoReplicas:
        num_replicas_in_sync = 2
    config = configs.override(configs.get_config("cyclegan", "smoke"), {"data.batch_size": 3})
    with pytest.raises(CtmriInputError, match="data.batch_size=3 must be divisible by the 2"):
        CycleGAN(config, TwoReplicas())


def test_cli_rejects_an_unknown_direction(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        common.run_cli(cyclegan_cli.main, ["--preset", "smoke", "--direction", "pet2ct",
                                           "--run-dir", str(tmp_path / "run")])
    assert exit_.value.code == 2
    assert "invalid choice: 'pet2ct'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_without_built_dataset_says_how_to_build_it(tmp_path, capsys):
    code = common.run_cli(cyclegan_cli.main, ["--preset", "smoke", "--data-dir",
                                              str(tmp_path / "tfds"), "--run-dir",
                                              str(tmp_path / "run")])
    assert code == 2
    message = capsys.readouterr().err
    assert str(tmp_path / "tfds") in message
    assert "python -m datasets.ctmri build --config synthetic_small" in message
    assert not (tmp_path / "run").exists()          # no half-started run folder

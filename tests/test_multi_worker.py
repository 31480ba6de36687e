"""MultiWorkerMirroredStrategy for real: two worker processes on 127.0.0.1 (``TF_CONFIG``, free
ports) train the smoke StarGAN on the tiny tfds dataset, sharing one run folder, and end with
the weights of a single-process run on the same global batch and seed.

The three trainings (worker 0, worker 1, single process) run at the same time as subprocesses
of ``train.stargan``'s CLI, started once for the module; each one also dumps its models'
weights before and after training (a wrapper around ``loop.train`` in the subprocess, so the
non-chief's in-memory weights can be compared: its checkpoints are scratch copies it deletes).
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dataset_fixtures import tiny_dataset  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240
STEPS = 3

RUNNER = """
import sys
import numpy as np
from ctmri_tf.training import loop
from ctmri_tf.training import cli as common
from train import stargan

dump, argv = sys.argv[1], sys.argv[2:]
train = loop.train


def weights(task):
    return [w.numpy() for w in task.generator.weights + task.discriminator.weights]


def train_and_dump(task, **kwargs):
    initial = weights(task)
    result = train(task, **kwargs)
    np.savez(dump, initial=np.array(initial, dtype=object), final=np.array(weights(task),
             dtype=object))
    return result


loop.train = train_and_dump
sys.exit(common.run_cli(stargan.main, argv))
"""


def free_ports(n):
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):  # noqa: F811
    config_name, data_dir = tiny_dataset
    tmp = tmp_path_factory.mktemp("multi_worker")
    # Adam's epsilon 1e-5 (as the MirroredStrategy test): gradients that are ~0 in truth
    # (the generator's label channels feed an instance norm) must not turn float rounding into
    # full +-lr steps. n_critic 1: the generator is updated at every step too.
    flags = ["--preset", "smoke", "--steps", str(STEPS), "--seed", "7", "--batch-size", "4",
             "--data-dir", str(data_dir), "--dataset-config", config_name,
             "--set", "loss.n_critic=1", "--set", "generator_optimizer.epsilon=1e-5",
             "--set", "discriminator_optimizer.epsilon=1e-5"]
    base_env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    base_env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                    PYTHONPATH=os.pathsep.join(p for p in (str(REPO),
                                                           os.environ.get("PYTHONPATH")) if p))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    jobs = {}
    for name in ("worker0", "worker1", "single"):
        env = dict(base_env, TMPDIR=str(tmp / f"{name}_tmp"))
        (tmp / f"{name}_tmp").mkdir()
        if name == "single":
            argv = flags + ["--strategy", "default", "--run-dir", str(tmp / "single")]
        else:
            env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                           "task": {"type": "worker", "index": int(name[-1])}})
            argv = flags + ["--strategy", "multi_worker_mirrored", "--run-dir", str(tmp / "run")]
        with open(tmp / f"{name}.out", "w") as out:
            jobs[name] = subprocess.Popen(
                [sys.executable, "-c", RUNNER, str(tmp / f"{name}.npz"), *argv], cwd=REPO,
                env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for name, job in jobs.items():
            try:
                job.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {TIMEOUT_S} s (a worker waiting for "
                            f"its peer?); output:\n{_tail(tmp / f'{name}.out')}")
    finally:
        for job in jobs.values():
            if job.poll() is None:
                job.kill()
                job.wait()
    for name, job in jobs.items():
        assert job.returncode == 0, f"{name} failed:\n{_tail(tmp / f'{name}.out')}"
    return tmp, {name: job.pid for name, job in jobs.items()}


def _tail(path, chars=4000):
    return path.read_text(errors="replace")[-chars:]


def _weights(tmp, name):
    with np.load(tmp / f"{name}.npz", allow_pickle=True) as dump:
        return list(dump["initial"]), list(dump["final"])


def _checkpoint(prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_two_workers_end_with_the_single_process_weights(runs):
    tmp, _ = runs
    initial, single = _weights(tmp, "single")
    _, chief = _weights(tmp, "worker0")
    _, other = _weights(tmp, "worker1")
    moved = max(float(np.abs(a - b).max()) for a, b in zip(initial, single))
    assert moved > 1e-4                                   # training did change the weights
    # both workers applied the same all-reduced gradients to the same variables: bit-identical
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)
    # The single process sums the 4 examples' losses in one reduction; the workers each sum
    # their 2, then the all-reduce adds the two parts: the same sum in another float32 order
    # (~1e-7 relative). Adam's update is ~lr * m / sqrt(v), so that changes each of the 3
    # updates by ~1e-7 * lr; 1e-5 is a tenth of one full step (lr 1e-4). A wrong split of the
    # global batch (each worker the whole batch, or other examples) moves weights by O(lr).
    worst = max(float(np.abs(a - b).max()) for a, b in zip(chief, single))
    assert worst < 1e-5, worst
    # the chief's checkpoint holds that state: models, optimizer slots, step and RNG
    ours = _checkpoint(tmp / "run" / "checkpoints" / f"ckpt-{STEPS}")
    theirs = _checkpoint(tmp / "single" / "checkpoints" / f"ckpt-{STEPS}")
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        if np.asarray(value).dtype.kind == "f":
            np.testing.assert_allclose(ours[name], value, rtol=0, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(ours[name], value, err_msg=name)
    assert int(ours["step/.ATTRIBUTES/VARIABLE_VALUE"]) == STEPS
    assert int(ours["generator_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == STEPS


def test_only_the_chief_writes_the_shared_run_folder(runs):
    tmp, pids = runs
    run, single = tmp / "run", tmp / "single"

    def listing(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if not p.name.startswith("events.out.tfevents."))

    # what a single-process run writes, once: config, checkpoints, samples; no run.lock left
    assert listing(run) == listing(single)
    assert "run.lock" not in listing(run)
    assert (run / "checkpoints" / f"ckpt-{STEPS}.index").is_file()
    assert (run / "samples" / f"step_{STEPS:07d}.png").is_file()
    # one TensorBoard event file, the chief's (the file name holds the writer's pid)
    events = list(run.glob("events.out.tfevents.*"))
    assert len(events) == 1 and f".{pids['worker0']}." in events[0].name, events
    # the non-chief's scratch checkpoints (collective saves) went to its temp folder, deleted
    assert not list((tmp / "worker1_tmp").glob("ctmri-ckpt-*"))
    assert "checkpoint written by the chief" in (tmp / "worker1.out").read_text()
    assert f"checkpoint {run / 'checkpoints' / f'ckpt-{STEPS}'}" in \
        (tmp / "worker0.out").read_text()


def test_non_chief_checkpoints_go_to_a_scratch_folder_deleted_at_close(tmp_path, monkeypatch):
    from ctmri_tf.training.checkpointing import TrainingCheckpoint

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)          # re-read TMPDIR
    step = tf.Variable(2, dtype=tf.int64)
    ckpt = TrainingCheckpoint(tmp_path / "run" / "checkpoints", step=step,
                              rng=tf.random.Generator.from_seed(0), write=False,
                              weights=tf.Variable([1.0, 2.0]))
    assert not list((tmp_path / "tmp").iterdir())          # nothing before the first save
    prefix = Path(ckpt.save())
    assert prefix.parent.parent == tmp_path / "tmp" and prefix.name == "ckpt-2"
    ckpt.close()
    assert not list((tmp_path / "tmp").iterdir())
    assert not (tmp_path / "run").exists()

"""What a user sees on the console: the commands as a user runs them (subprocesses, with no
``TF_CPP_MIN_LOG_LEVEL`` in the environment) print one progress bar per long task and their
results, without TensorFlow's start-up banners, CUDA probes on a CPU machine or library
deprecation warnings; real errors and the user's warnings still come through, and
``--verbose`` shows everything."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ctmri_tf.console import NATIVE_NOISE

ROOT = Path(__file__).resolve().parents[1]
NOISE_TEXT = re.compile(r"deprecated|cache_dataset_ops|The calling iterator did not fully read|"
                        r"Downloading and preparing dataset|downloaded and prepared to|"
                        r"WARNING:absl|oneDNN|cuInit|cuda", re.IGNORECASE)


def _user_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "CTMRI_VERBOSE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_user_env(), text=True,
                          capture_output=True, timeout=timeout)


def _lines(text: str) -> list[str]:
    """Console lines as a terminal shows them (progress-bar redraws split at ``\\r``)."""
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def _noise(text: str) -> list[str]:
    return [line for line in _lines(text) if NATIVE_NOISE.search(line) or NOISE_TEXT.search(line)]


SCRIPT = """
import os, sys, warnings
from ctmri_tf import console
console.quiet()
import tensorflow as tf
tf.constant(1.0) + 1.0
print("python line", file=sys.stderr, flush=True)
warnings.warn("a warning about the user's data")
os.write(2, b"a native error line\\n")
"""


def test_quiet_hides_the_start_up_noise_and_keeps_real_messages():
    quiet = subprocess.run([sys.executable, "-c", SCRIPT], env=_user_env(), text=True,
                           capture_output=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert _noise(quiet.stderr) == []
    assert "python line" in quiet.stderr
    assert "a warning about the user's data" in quiet.stderr
    assert "a native error line" in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", SCRIPT], text=True, capture_output=True,
                          env={**_user_env(), "CTMRI_VERBOSE": "1"}, timeout=120)
    assert [line for line in _lines(loud.stderr) if NATIVE_NOISE.search(line)]   # TF's banners
    assert "a native error line" in loud.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    result = _run("-m", "datasets.ctmri", "build", "--config", "synthetic_4x6x32",
                  "--data_dir", str(data_dir))
    return data_dir, result


def test_a_dataset_build_shows_one_progress_bar_and_its_report(built):
    data_dir, result = built
    assert result.returncode == 0, result.stderr
    assert _noise(result.stderr + result.stdout) == []
    bars = {line.split(":")[0] for line in _lines(result.stderr) if re.search(r"\d+/\d+", line)}
    assert bars == {"ctmri/synthetic_4x6x32"}                       # one bar for the build
    report = result.stdout
    assert report.count("dataset: ") == 1 and str(data_dir) in report
    assert report.count("slices: 48 (train 24, validation 12, test 12)") == 1   # CT + MRI


def test_a_training_run_prints_its_bar_and_result_without_library_noise(built, tmp_path):
    data_dir, _ = built
    result = _run("-m", "train.stargan", "--preset", "smoke", "--steps", "2",
                  "--data-dir", str(data_dir), "--dataset-config", "synthetic_4x6x32",
                  "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert _noise(result.stderr + result.stdout) == []
    assert sum(line.startswith("done: ") for line in _lines(result.stderr)) == 1
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_errors_still_reach_the_user(built, tmp_path):
    result = _run("-m", "train.stargan", "--preset", "smoke", "--steps", "2",
                  "--data-dir", str(tmp_path / "nothing-here"),
                  "--dataset-config", "synthetic_4x6x32", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "error: " in result.stderr and "datasets.ctmri build" in result.stderr
    assert _noise(result.stderr) == []

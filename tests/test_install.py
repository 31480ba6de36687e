"""``pip install ctmri-tf`` next to other packages: the wheel installs ``ctmri_tf`` and nothing
under a generic name, so HuggingFace ``datasets`` keeps working beside it, a user's own
``train.py`` does not shadow the trainers, and the ``ctmri`` command works from any folder.

The wheel is built from this checkout and installed into a new virtual environment that sees
the test environment's packages (TensorFlow...) through a ``.pth`` line, without its editable
install of ctmri-tf; HuggingFace ``datasets`` is installed there from the package index (only
what the test environment lacks is downloaded).
"""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HF_DATASETS = "datasets==5.2.0"


def _run(*args, cwd=None, timeout=300, env=None):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, f"{args}: {result.stdout[-1500:]}{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", out, ROOT, timeout=300)
    [built] = out.glob("ctmri_tf-*.whl")
    return built


def test_the_wheel_installs_ctmri_tf_only(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = {name.split("/", 1)[0] for name in names}
        [info] = [n for n in top_level if n.endswith(".dist-info")]
        assert top_level == {"ctmri_tf", info}
        assert archive.read(f"{info}/top_level.txt").decode().split() == ["ctmri_tf"]
        # the tfds builder ships with its data files
        assert "ctmri_tf/datasets/ctmri/CITATIONS.bib" in names
        assert any(n.startswith("ctmri_tf/datasets/ctmri/dummy_data/") for n in names)
        assert "ctmri_tf/pipeline/configs/demo.yaml" in names   # the demo's pipeline config


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A new venv with the wheel and HuggingFace ``datasets``; the test environment's
    site-packages are appended to its path (a ``.pth`` line adds the folder without running the
    ``.pth`` files in it, so the editable install of the checkout stays out)."""
    root = tmp_path_factory.mktemp("venv") / "env"
    _run(sys.executable, "-m", "venv", root, timeout=120)
    python = root / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    (site / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel)
    _run(python, "-m", "pip", "install", "-q", HF_DATASETS, timeout=600)
    return root


def test_huggingface_datasets_and_ctmri_tf_import_side_by_side(venv, tmp_path):
    code = ("import datasets, ctmri_tf, ctmri_tf.datasets.ctmri as builder\n"
            "from datasets import load_dataset\n"
            "import importlib.util as u\n"
            "print(datasets.__file__); print(ctmri_tf.__file__)\n"
            "print(builder.Builder.name, u.find_spec('train'), u.find_spec('export'))\n")
    out = _run(venv / "bin" / "python", "-c", code, cwd=tmp_path).stdout.splitlines()
    site = str(venv)
    assert out[0].startswith(site) and out[0].endswith("datasets/__init__.py")   # HF's
    assert out[1].startswith(site) and out[1].endswith("ctmri_tf/__init__.py")   # the wheel's
    assert out[2] == "ctmri None None"


def test_the_ctmri_command_works_from_a_folder_with_its_own_train_py(venv, tmp_path):
    (tmp_path / "train.py").write_text("raise SystemExit('the user train.py ran')\n")
    (tmp_path / "datasets.py").write_text("raise SystemExit('the user datasets.py ran')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = _run(venv / "bin" / "ctmri", "train", "stargan", "--help", cwd=tmp_path, env=env)
    assert "--preset" in result.stdout and "user" not in result.stdout + result.stderr
    result = _run(venv / "bin" / "ctmri", "train", "--help", cwd=tmp_path, env=env)
    assert all(name in result.stdout
               for name in ("stargan", "cyclegan", "segmentation", "classifier"))
    result = _run(venv / "bin" / "ctmri", "dataset", "build", "--help", cwd=tmp_path, env=env)
    assert "--data-dir" in result.stdout or "--data_dir" in result.stdout


def test_the_dataset_builder_does_not_import_labelme_or_onnxruntime():
    """labelme (and through it onnxruntime, which writes into ~/.cache) is imported only where
    Labelme files are read or converted."""
    code = ("import sys, ctmri_tf.datasets.ctmri, ctmri_tf.translate\n"
            "print(sorted(m for m in ('labelme', 'onnxruntime', 'imgviz') if m in sys.modules))")
    out = _run(sys.executable, "-c", code, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["-m", "train.stargan", "--help"],
                                     ["-m", "ctmri_tf.cli", "train", "cyclegan", "--help"],
                                     ["-m", "export.saved_model", "--help"]])
def test_help_is_printed_before_tensorflow_is_imported(command):
    """The trainers and export parse their flags first: ``--help`` (and a usage error) never
    waits for TensorFlow to load."""
    result = _run(sys.executable, "-X", "importtime", *command, cwd=ROOT, timeout=120)
    assert "usage:" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "tensorflow" not in imported and "keras" not in imported

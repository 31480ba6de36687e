"""The experiment registry (``ctmri_tf.experiments``) is the one map from experiment names to
code: every entry trains through ``ctmri train <name>``, loads for inference and exports for TF
Serving, on the smoke preset; importing it imports no TensorFlow."""
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import configs, experiments
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.export.saved_model import read_export_info
from ctmri_tf.training import cli
from dataset_fixtures import tiny_dataset  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_the_registry_lists_every_experiment_and_refuses_others():
    assert experiments.names() == ("stargan", "cyclegan", "segmentation", "classifier")
    for name in experiments.names():
        entry = experiments.get(name)
        assert entry.config("smoke").experiment == name
        assert isinstance(entry.config("smoke"), type(configs.get_config(name, "paper")))
    with pytest.raises(CtmriInputError, match="unknown experiment 'pix2pix'; registered "
                                              "experiments: stargan, cyclegan"):
        experiments.get("pix2pix")


def test_importing_the_registry_and_the_trainers_cli_imports_no_tensorflow():
    code = ("import sys, ctmri_tf.experiments, ctmri_tf.training.cli, ctmri_tf.cli\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _one_image(loaded) -> np.ndarray:
    """Call the loaded inference model(s) on one [-1, 1] image (the model-facing contract)."""
    image = np.zeros((1, 32, 32, 1), np.float32)
    if isinstance(loaded, dict):                           # CycleGAN: both generators
        return np.stack([np.asarray(g(image)) for g in loaded.values()])
    if len(loaded.inputs) == 2:                            # StarGAN: image + target domain
        return np.asarray(loaded([image, np.array([[1.0, 0.0]], np.float32)]))
    return np.asarray(loaded(image))


def _load_model_only(entry, run, monkeypatch):
    """``entry.load(run)`` while building a critic or an optimizer fails, under a
    mixed-precision global policy that the load must leave as it is."""
    def refuse(*args, **kwargs):
        raise AssertionError("an inference load built a critic or an optimizer")

    with monkeypatch.context() as patch:
        patch.setattr("ctmri_tf.training.stargan.stargan_discriminator", refuse)
        patch.setattr("ctmri_tf.training.cyclegan.patchgan_discriminator", refuse)
        patch.setattr(keras.optimizers.Optimizer, "__init__", refuse)
        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            loaded = entry.load(run)
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
        finally:
            keras.config.set_dtype_policy("float32")
    return loaded


@pytest.mark.parametrize("name", experiments.names())
def test_each_entry_trains_loads_and_exports_on_the_smoke_preset(name, tiny_dataset, tmp_path,
                                                                   monkeypatch):
    config_name, data_dir = tiny_dataset
    run = tmp_path / "run"
    code = cli.run_cli(lambda argv: cli.main(name, argv), [
        "--preset", "smoke", "--steps", "1", "--data-dir", str(data_dir),
        "--dataset-config", config_name, "--run-dir", str(run),
        "--set", "data.validation_batches=0"])
    assert code == 0
    assert configs.from_json((run / "config.json").read_text()).experiment == name

    entry = experiments.get(name)
    loaded = _load_model_only(entry, run, monkeypatch)
    models = list(loaded.values()) if isinstance(loaded, dict) else [loaded]
    assert all(isinstance(m, keras.Model) for m in models)
    assert all(w.dtype == "float32" for m in models for w in m.weights)
    assert np.isfinite(_one_image(loaded)).all()
    # every kernel holds a value of the checkpoint (a fresh initialisation would not)
    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    saved = [reader.get_tensor(key) for key, shape in reader.get_variable_to_shape_map().items()
             if len(shape) >= 2]
    kernels = [np.asarray(w) for m in models for w in m.weights if len(w.shape) >= 2]
    assert kernels and all(any(k.shape == t.shape and np.array_equal(k, t) for t in saved)
                           for k in kernels)

    versions = entry.export(run, tmp_path / "exports")
    assert versions and all((v / "saved_model.pb").is_file() for v in versions)
    assert all(read_export_info(v)["data_card"]["dataset"] == f"ctmri/{config_name}"
               for v in versions)
    served = tf.saved_model.load(str(versions[0]))
    assert "serving_default" in served.signatures

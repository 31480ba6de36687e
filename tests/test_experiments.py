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


@pytest.mark.parametrize("name", experiments.names())
def test_each_entry_trains_loads_and_exports_on_the_smoke_preset(name, tiny_dataset, tmp_path):
    config_name, data_dir = tiny_dataset
    run = tmp_path / "run"
    code = cli.run_cli(lambda argv: cli.main(name, argv), [
        "--preset", "smoke", "--steps", "1", "--data-dir", str(data_dir),
        "--dataset-config", config_name, "--run-dir", str(run),
        "--set", "data.validation_batches=0"])
    assert code == 0
    assert configs.from_json((run / "config.json").read_text()).experiment == name

    entry = experiments.get(name)
    loaded = entry.load(run)
    models = loaded.values() if isinstance(loaded, dict) else [loaded]
    assert all(isinstance(m, keras.Model) for m in models)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert np.isfinite(_one_image(loaded)).all()

    versions = entry.export(run, tmp_path / "exports")
    assert versions and all((v / "saved_model.pb").is_file() for v in versions)
    assert all(read_export_info(v)["data_card"]["dataset"] == f"ctmri/{config_name}"
               for v in versions)
    served = tf.saved_model.load(str(versions[0]))
    assert "serving_default" in served.signatures

"""The tiny pipeline config of the end-to-end tests (``ctmri pipeline run`` and the Kubeflow
spec): the session's tiny dataset (``dataset_fixtures.tiny_dataset``), smoke StarGAN, 1
training step, no validation batches, an evaluation batch of 8 and one grid subject."""
from __future__ import annotations

from pathlib import Path


def write_tiny_pipeline_config(path: Path, *, pipeline_root: Path, dataset: tuple[str, Path],
                               serving_base: Path, name: str = "e2e",
                               evaluator: str = "") -> Path:
    """Write the tiny pipeline's YAML to ``path`` (``dataset``: the ``tiny_dataset``
    fixture's ``(config name, data dir)``; ``evaluator``: more ``key: value`` entries of the
    evaluator section, e.g. ``"beat_baselines: []"``); return ``path``."""
    config_name, data_dir = dataset
    extra = f", {evaluator}" if evaluator else ""
    path.write_text(f"""
name: {name}
pipeline_root: {pipeline_root}
dataset: {{config: {config_name}, data_dir: {data_dir}}}
trainer:
  experiment: stargan
  preset: smoke
  steps: 1
  overrides: {{data.validation_batches: 0}}
evaluator: {{batch_size: 8, grid_subjects: 1{extra}}}
pusher: {{serving_base: {serving_base}}}
""")
    return path

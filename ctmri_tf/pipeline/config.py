"""The pipeline config: a frozen dataclass, read from YAML (PyYAML ``safe_load``).

Example (``ctmri_tf/pipeline/configs/demo.yaml``; every key optional but ``pipeline_root``)::

    name: demo
    pipeline_root: artifacts/pipeline       # executions and metadata.sqlite
    dataset:                                 # ExampleGen: the tfds ctmri builder
      config: synthetic_40x32x128
      data_dir: artifacts/tensorflow_datasets
    validator:                               # SchemaGen + ExampleValidator
      schema: null                           # a schema.json to check against (null: inferred)
      require_paired: true                   # both modalities, registered, in every split
      ct_hu_limits: [-1100, 4000]            # physical limits of CT body percentiles, HU
    trainer:                                 # the experiment registry's training
      experiment: stargan
      preset: demo
      steps: 450                             # null: the preset's
      overrides: {data.validation_batches: 2}  # any config field, as ctmri train --set
    evaluator:                               # SynthRAD table vs identity + histogram matching
      split: test
      reference_split: train
      batch_size: 16
      metric: mae                            # mae (lower is better), psnr or ssim (higher)
      direction: mri->ct
      region: body
      beat_baselines: [histogram matching]   # blessed only if better than each of these
      beat_pushed: true                      # ... and than the model currently pushed
      threshold: null                        # ... and below (mae) / above this value
    pusher:
      serving_base: artifacts/exports        # TF Serving base: <base>/<name>/<version>/
      model_name: null                       # null: the experiment's default (stargan)

Relative paths are taken from the current folder (as every command-line path), not from the
YAML file's. Unknown keys are errors. Importing this module imports no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from ctmri_tf.errors import CtmriInputError

METRICS = {"mae": "lower", "psnr": "higher", "ssim": "higher"}
"""Blessing metrics of the SynthRAD table and which way is better."""
CONFIG_FOLDER = Path(__file__).resolve().parent / "configs"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    config: str = "synthetic_40x32x128"
    data_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class ValidatorSpec:
    schema: str | None = None
    require_paired: bool = True
    ct_hu_limits: tuple[float, float] = (-1100.0, 4000.0)


@dataclasses.dataclass(frozen=True)
class TrainerSpec:
    experiment: str = "stargan"
    preset: str = "demo"
    steps: int | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EvaluatorSpec:
    split: str = "test"
    reference_split: str = "train"
    batch_size: int = 16
    metric: str = "mae"
    direction: str = "mri->ct"
    region: str = "body"
    beat_baselines: tuple[str, ...] = ("histogram matching",)
    beat_pushed: bool = True
    threshold: float | None = None
    grid_subjects: int = 4


@dataclasses.dataclass(frozen=True)
class PusherSpec:
    serving_base: str = "exports"
    model_name: str | None = None


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    pipeline_root: str
    name: str = "ctmri"
    dataset: DatasetSpec = DatasetSpec()
    validator: ValidatorSpec = ValidatorSpec()
    trainer: TrainerSpec = TrainerSpec()
    evaluator: EvaluatorSpec = EvaluatorSpec()
    pusher: PusherSpec = PusherSpec()

    def check(self, source: str | os.PathLike | None = None) -> "PipelineConfig":
        """Raise CtmriInputError (naming ``source``) for values no component could use."""
        evaluator = self.evaluator
        if evaluator.metric not in METRICS:
            raise CtmriInputError(source, f"evaluator.metric must be one of "
                                          f"{', '.join(METRICS)}, got {evaluator.metric!r}")
        if evaluator.direction not in ("mri->ct", "ct->mri"):
            raise CtmriInputError(source, f"evaluator.direction must be mri->ct or ct->mri, "
                                          f"got {evaluator.direction!r}")
        if evaluator.region not in ("body", "image"):
            raise CtmriInputError(source, f"evaluator.region must be body or image, got "
                                          f"{evaluator.region!r}")
        if evaluator.split == evaluator.reference_split:
            raise CtmriInputError(source, "evaluator.reference_split is the evaluated split: "
                                          "histogram matching would see the test targets")
        if self.trainer.steps is not None and self.trainer.steps < 1:
            raise CtmriInputError(source, f"trainer.steps must be >= 1, got "
                                          f"{self.trainer.steps}")
        low, high = self.validator.ct_hu_limits
        if not low < high:
            raise CtmriInputError(source, f"validator.ct_hu_limits must be [low, high], got "
                                          f"{list(self.validator.ct_hu_limits)}")
        return self

    def schema_sha256(self) -> str | None:
        """sha256 of the schema file, when one is configured (part of SchemaGen's cache key).

        Raises:
            CtmriInputError: the file does not exist.
        """
        if self.validator.schema is None:
            return None
        path = Path(self.validator.schema)
        if not path.is_file():
            raise CtmriInputError(path, "validator.schema: no such file")
        return hashlib.sha256(path.read_bytes()).hexdigest()


_SECTIONS = {"dataset": DatasetSpec, "validator": ValidatorSpec, "trainer": TrainerSpec,
             "evaluator": EvaluatorSpec, "pusher": PusherSpec}


def _build(cls, values: Any, where: str, source) -> Any:
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise CtmriInputError(source, f"{where} must be a mapping, got {values!r}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise CtmriInputError(source, f"unknown key(s) {', '.join(unknown)} in {where}; known: "
                                      f"{', '.join(sorted(fields))}")
    values = dict(values)
    for name in ("ct_hu_limits", "beat_baselines"):
        if name in values and isinstance(values[name], list):
            values[name] = tuple(values[name])
    if "overrides" in values and not isinstance(values["overrides"] or {}, dict):
        raise CtmriInputError(source, f"{where}.overrides must be a mapping FIELD: VALUE")
    if "overrides" in values:
        values["overrides"] = dict(values["overrides"] or {})
    return cls(**values)


def from_dict(values: dict, source: str | os.PathLike | None = None) -> PipelineConfig:
    """The config of a parsed YAML mapping (``source``: the file, for the errors)."""
    if not isinstance(values, dict):
        raise CtmriInputError(source, "a pipeline config must be a YAML mapping")
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CtmriInputError(source, f"unknown key(s) {', '.join(unknown)}; known: "
                                      f"{', '.join(sorted(known))}")
    if not values.get("pipeline_root"):
        raise CtmriInputError(source, "pipeline_root is required (where executions and "
                                      "metadata.sqlite go)")
    sections = {name: _build(cls, values.get(name), name, source)
                for name, cls in _SECTIONS.items()}
    top = {k: values[k] for k in ("name",) if k in values}
    return PipelineConfig(pipeline_root=str(values["pipeline_root"]), **top,
                          **sections).check(source)


def load(path: str | os.PathLike) -> PipelineConfig:
    """Read a pipeline config YAML file.

    Raises:
        CtmriInputError: missing file, bad YAML, unknown keys or bad values (naming the file).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CtmriInputError(path, "no such pipeline config file")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CtmriInputError(path, f"is not valid YAML ({err})") from None
    try:
        return from_dict(values, path)
    except TypeError as err:
        raise CtmriInputError(path, f"bad value: {err}") from None


def demo_config(out: str | os.PathLike, *, data_dir: str | os.PathLike,
                dataset: str = "synthetic_40x32x128", preset: str = "demo",
                steps: int | None = 450) -> PipelineConfig:
    """The demo's pipeline (``configs/demo.yaml`` with the demo's folders): StarGAN, root
    ``<out>/pipeline``, serving base ``<out>/exports``."""
    out = Path(out)
    return PipelineConfig(
        name="demo", pipeline_root=os.fspath(out / "pipeline"),
        dataset=DatasetSpec(config=dataset, data_dir=os.fspath(data_dir)),
        trainer=TrainerSpec(experiment="stargan", preset=preset, steps=steps),
        pusher=PusherSpec(serving_base=os.fspath(out / "exports"))).check()

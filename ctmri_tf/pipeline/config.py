"""The pipeline config: a frozen dataclass, read from YAML (PyYAML ``safe_load``).

Example (``ctmri_tf/pipeline/configs/demo.yaml``; every key optional but ``pipeline_root``)::

    name: demo
    pipeline_root: artifacts/pipeline       # executions and metadata.sqlite
    dataset:                                 # ExampleGen: the tfds ctmri builder
      config: synthetic_v2_40x32x128
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

Several models on the same examples (``make demo``: StarGAN, the body segmentation and the
CT/MRI classifier) replace ``trainer`` / ``evaluator`` by ``models``, a list of
``{trainer, evaluator, model_name, id}`` (``id``: the nodes' suffix, default the experiment:
``Trainer.segmentation``, ``Evaluator.segmentation``, ``Pusher.segmentation``); all push to the
one ``pusher.serving_base``::

    models:
      - trainer: {experiment: stargan, steps: 450}
      - trainer: {experiment: segmentation, steps: 200}
        evaluator: {metric: dice, threshold: 0.9}     # fractions; no baselines to beat
      - trainer: {experiment: classifier, steps: 300}
        evaluator: {metric: accuracy, threshold: 0.95}

An evaluator's ``metric`` defaults to the experiment's first (``ctmri_tf.experiments``: mae,
dice, accuracy), ``beat_baselines`` to ``[histogram matching]`` for a translation model and to
none otherwise; ``direction``, ``region`` and ``reference_split`` concern translation only.

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

METRICS = {"mae": "lower", "psnr": "higher", "ssim": "higher", "dice": "higher",
           "mean_iou": "higher", "accuracy": "higher"}
"""Blessing metrics (the SynthRAD table's; segmentation's; the classifier's) and which way is
better."""
DEFAULT_BASELINES = ("histogram matching",)
"""What a translation model must beat unless its evaluator says otherwise."""
CONFIG_FOLDER = Path(__file__).resolve().parent / "configs"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    config: str = "synthetic_v2_40x32x128"
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
    metric: str | None = None                      # None: the experiment's default metric
    direction: str = "mri->ct"
    region: str = "body"
    beat_baselines: tuple[str, ...] | None = None  # None: DEFAULT_BASELINES when translating
    beat_pushed: bool = True
    threshold: float | None = None
    grid_subjects: int = 4

    def resolved(self, experiment: str) -> "EvaluatorSpec":
        """This spec with the defaults of ``experiment`` filled in (``metric``,
        ``beat_baselines``) and, for a model that does not translate, ``direction`` and
        ``region`` set to None (they do not apply)."""
        from ctmri_tf import experiments

        entry = experiments.get(experiment)
        baselines = self.beat_baselines
        if baselines is None:
            baselines = DEFAULT_BASELINES if entry.translates else ()
        values = {"metric": self.metric or entry.metrics[0], "beat_baselines": tuple(baselines)}
        if not entry.translates:
            values.update(direction=None, region=None)
        return dataclasses.replace(self, **values)


@dataclasses.dataclass(frozen=True)
class PusherSpec:
    serving_base: str = "exports"
    model_name: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the pipeline: its Trainer, Evaluator and Pusher (``model_name``: the TF
    Serving name, None: the experiment's default; ``id``: the nodes' suffix in a pipeline of
    several models, default the experiment)."""
    trainer: TrainerSpec = TrainerSpec()
    evaluator: EvaluatorSpec = EvaluatorSpec()
    model_name: str | None = None
    id: str | None = None


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    pipeline_root: str
    name: str = "ctmri"
    dataset: DatasetSpec = DatasetSpec()
    validator: ValidatorSpec = ValidatorSpec()
    trainer: TrainerSpec = TrainerSpec()
    evaluator: EvaluatorSpec = EvaluatorSpec()
    pusher: PusherSpec = PusherSpec()
    models: tuple[ModelSpec, ...] = ()

    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The models: ``models``, or the one of ``trainer`` / ``evaluator`` /
        ``pusher.model_name``."""
        if self.models:
            return self.models
        return (ModelSpec(self.trainer, self.evaluator, self.pusher.model_name),)

    def node_suffixes(self) -> list[str]:
        """Per model, what follows ``Trainer`` / ``Evaluator`` / ``Pusher`` in its node names:
        ``""`` for a single model, ``".<id>"`` for several."""
        if not self.models:
            return [""]
        return [f".{spec.id or spec.trainer.experiment}" for spec in self.models]

    def check(self, source: str | os.PathLike | None = None) -> "PipelineConfig":
        """Raise CtmriInputError (naming ``source``) for values no component could use."""
        from ctmri_tf import experiments

        suffixes = self.node_suffixes()
        if len(set(suffixes)) != len(suffixes):
            raise CtmriInputError(source, f"models: two models with the same id "
                                          f"({', '.join(s[1:] for s in suffixes)}); give each "
                                          f"an id")
        for spec, suffix in zip(self.model_specs(), suffixes):
            where = f"models[{suffix[1:]}]." if suffix else ""
            experiments.get(spec.trainer.experiment)       # names the registered ones
            self._check_model(spec, where, source)
        low, high = self.validator.ct_hu_limits
        if not low < high:
            raise CtmriInputError(source, f"validator.ct_hu_limits must be [low, high], got "
                                          f"{list(self.validator.ct_hu_limits)}")
        return self

    @staticmethod
    def _check_model(spec: ModelSpec, where: str, source) -> None:
        from ctmri_tf import experiments

        entry = experiments.get(spec.trainer.experiment)
        evaluator = spec.evaluator.resolved(entry.name)
        if evaluator.metric not in entry.metrics:
            raise CtmriInputError(source, f"{where}evaluator.metric must be one of "
                                          f"{', '.join(entry.metrics)} for {entry.name}, got "
                                          f"{evaluator.metric!r}")
        if entry.translates:
            if evaluator.direction not in ("mri->ct", "ct->mri"):
                raise CtmriInputError(source, f"{where}evaluator.direction must be mri->ct or "
                                              f"ct->mri, got {evaluator.direction!r}")
            if evaluator.region not in ("body", "image"):
                raise CtmriInputError(source, f"{where}evaluator.region must be body or image, "
                                              f"got {evaluator.region!r}")
            if evaluator.split == evaluator.reference_split:
                raise CtmriInputError(source, f"{where}evaluator.reference_split is the "
                                              f"evaluated split: histogram matching would see "
                                              f"the test targets")
        elif evaluator.beat_baselines:
            raise CtmriInputError(source, f"{where}evaluator.beat_baselines: {entry.name} has no "
                                          f"baselines (only translation models do)")
        if spec.trainer.steps is not None and spec.trainer.steps < 1:
            raise CtmriInputError(source, f"{where}trainer.steps must be >= 1, got "
                                          f"{spec.trainer.steps}")

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
    if values.get("models") is not None:
        if "trainer" in values or "evaluator" in values:
            raise CtmriInputError(source, "give either models (a list) or trainer/evaluator (one "
                                          "model), not both")
        top["models"] = _models(values["models"], source)
    return PipelineConfig(pipeline_root=str(values["pipeline_root"]), **top,
                          **sections).check(source)


def _models(values: Any, source) -> tuple[ModelSpec, ...]:
    if not isinstance(values, list) or not values:
        raise CtmriInputError(source, "models must be a non-empty list of {trainer, evaluator, "
                                      "model_name, id}")
    specs = []
    for index, item in enumerate(values):
        where = f"models[{index}]"
        if not isinstance(item, dict):
            raise CtmriInputError(source, f"{where} must be a mapping, got {item!r}")
        unknown = sorted(set(item) - {"trainer", "evaluator", "model_name", "id"})
        if unknown:
            raise CtmriInputError(source, f"unknown key(s) {', '.join(unknown)} in {where}; "
                                          f"known: evaluator, id, model_name, trainer")
        specs.append(ModelSpec(
            trainer=_build(TrainerSpec, item.get("trainer"), f"{where}.trainer", source),
            evaluator=_build(EvaluatorSpec, item.get("evaluator"), f"{where}.evaluator", source),
            model_name=item.get("model_name"), id=item.get("id")))
    return tuple(specs)


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


DEMO_STEPS = {"stargan": 450, "segmentation": 200, "classifier": 1000}
"""Training steps per model of the demo (preset ``demo``), sized so that the whole demo takes
about 11 minutes on an idle 2-core CPU: StarGAN about 0.5 s per step (``benchmarks/quality.py``
trains it longer), DeepLabV3+ about 1.2 s per step (it needs about 200 steps for a test Dice
above 0.95), the classifier about 0.05 s per step (on phantom v2 it needs about 1000 steps for a
test accuracy above 0.95: at 300 it scored 0.945, skull-stripped MRI and the vertex slices being
the hard ones)."""
DEMO_THRESHOLDS = {"segmentation": ("dice", 0.9), "classifier": ("accuracy", 0.95)}
"""What the demo's segmentation model and classifier must exceed on the test split to be
pushed (and then used by the demo's ``ctmri translate``); StarGAN must beat histogram
matching's MRI -> CT MAE."""


def demo_config(out: str | os.PathLike, *, data_dir: str | os.PathLike,
                dataset: str = "synthetic_v2_40x32x128", preset: str = "demo",
                steps: dict | int | None = None) -> PipelineConfig:
    """The demo's pipeline (``configs/demo.yaml`` with the demo's folders): StarGAN, the
    DeepLabV3+ body segmentation and the CT/MRI classifier on one dataset, root
    ``<out>/pipeline``, serving base ``<out>/exports``.

    Args:
        steps: training steps, per experiment (a dict) or of every model (an int); default
            :data:`DEMO_STEPS` with the ``demo`` preset, the preset's own otherwise.
    """
    out = Path(out)
    if steps is None or isinstance(steps, int):
        steps = {name: steps if steps is not None else
                 (DEMO_STEPS[name] if preset == "demo" else None) for name in DEMO_STEPS}
    models = []
    for name in DEMO_STEPS:
        metric, threshold = DEMO_THRESHOLDS.get(name, (None, None))
        models.append(ModelSpec(
            trainer=TrainerSpec(experiment=name, preset=preset, steps=steps.get(name)),
            evaluator=EvaluatorSpec(metric=metric, threshold=threshold)))
    return PipelineConfig(
        name="demo", pipeline_root=os.fspath(out / "pipeline"),
        dataset=DatasetSpec(config=dataset, data_dir=os.fspath(data_dir)),
        pusher=PusherSpec(serving_base=os.fspath(out / "exports")),
        models=tuple(models)).check()

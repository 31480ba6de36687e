"""The experiment registry: the one place that maps an experiment name to its code.

As tensorflow/models' ``exp_factory`` / ``task_factory``: each :class:`Experiment` holds its
config (the dataclass presets of :mod:`ctmri_tf.configs`), its training task, how its inputs
are built, what it does before and after training, how it is loaded for inference and how it
is exported. ``ctmri train``, ``python -m train.<name>``, the demo, the exports, ``ctmri
evaluate``, ``ctmri translate`` and the benchmarks find experiments here, never by name
elsewhere::

    from ctmri_tf import experiments

    experiment = experiments.get("stargan")
    config = experiment.config("smoke")
    inputs = experiment.inputs(config)              # ctmri_tf.training.inputs.Inputs
    task = experiment.task(config, strategy)        # a ctmri_tf.training.loop.TrainingTask
    generator = experiment.load(run_dir)            # the trained model(s), float32
    result = experiment.evaluate(run_dir, "results/", split="test",
                                 dataset_config="synthetic")   # ctmri_tf.evaluate.RunEvaluation
    versions = experiment.export(run_dir, "exports/")   # SavedModels for TF Serving

Entries name their code by import path (``module:attribute``), imported on first use: importing
this module imports no TensorFlow, so command lines can list the experiments in ``--help``.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Callable

from ctmri_tf import configs
from ctmri_tf.errors import CtmriInputError


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment of the registry.

    Attributes:
        name: ``stargan``, ``cyclegan``, ``segmentation`` or ``classifier`` (the config's
            ``experiment`` and the run folder's prefix).
        title: what is trained, for the console (``"StarGAN"``).
        summary: one line for ``--help``.
        task_path: ``module:Class`` of the training task, called ``(config, strategy)``.
        inputs_path: ``module:function`` ``(config) -> Inputs``.
        load_path: ``module:function`` ``(run_dir) -> model(s)`` for inference: float32, any
            image size, the global dtype policy left at float32.
        export_path: ``module:function`` ``(run_dir, base, load, sizes, *, name, direction,
            **options) -> [version folders]``: how ``ctmri_tf.export.saved_model.export_run``
            exports the run (``load()`` gives :meth:`load`'s model(s)).
        evaluate_path: ``module:function`` ``(experiment, run_dir, out_dir, *, split,
            dataset_config, data_dir, **options) -> ctmri_tf.evaluate.RunEvaluation``: the
            run's evaluation on a split of a dataset (translation: the SynthRAD table with the
            baselines; segmentation: Dice / IoU; classifier: accuracy).
        metrics: the metric names ``evaluate`` reports for the model and that a pipeline may
            bless on, the default first; translation metrics are per direction and region.
        translator_path: translation experiments: ``module:function`` ``(run_dir) ->`` a
            ``ctmri_tf.evaluate`` translator of the run (at its training size).
        add_arguments_path: optional ``module:function`` ``(parser)``: the experiment's own
            command-line flags (CycleGAN's ``--direction``).
        before_training_path: optional ``module:function`` ``(prepared, args) -> dict``: run
            after the run folder is ready, before training; returns extra TensorBoard
            hyperparameters and an announcement ``note`` (``{"hparams": {...}, "note": str}``).
        after_training_path: optional ``module:function`` ``(task, prepared, result) ->
            list[str]``: final work once training has ended (final metrics, calibration),
            returning the lines to print.
    """

    name: str
    title: str
    summary: str
    task_path: str
    inputs_path: str
    load_path: str
    export_path: str
    evaluate_path: str
    metrics: tuple[str, ...]
    translator_path: str | None = None
    add_arguments_path: str | None = None
    before_training_path: str | None = None
    after_training_path: str | None = None

    def config(self, preset: str = "demo") -> configs.ExperimentConfig:
        """The experiment's config at ``preset`` (``smoke``, ``demo``, ``paper``)."""
        return configs.get_config(self.name, preset)

    def task(self, config: configs.ExperimentConfig, strategy) -> Any:
        """The training task (``ctmri_tf.training.loop.TrainingTask``) under ``strategy``."""
        return _resolve(self.task_path)(config, strategy)

    def inputs(self, config: configs.ExperimentConfig):
        """The datasets (``ctmri_tf.training.inputs.Inputs``) of ``config``.

        Raises:
            CtmriInputError: the dataset is not built (``DatasetNotBuiltError``), or unusable.
        """
        return _resolve(self.inputs_path)(config)

    def load(self, run_dir: str | os.PathLike) -> Any:
        """The trained model(s) of a run folder of this experiment, for inference."""
        return _resolve(self.load_path)(run_dir)

    def export(self, run_dir: str | os.PathLike, base: str | os.PathLike, **kwargs) -> list:
        """Export the run's model(s) as SavedModels under ``base`` (TF Serving's layout); see
        ``ctmri_tf.export.saved_model.export_run`` for ``kwargs``. Returns the version
        folders."""
        from ctmri_tf.export.saved_model import export_run

        return export_run(self.name, run_dir, base, **kwargs)

    @property
    def translates(self) -> bool:
        """Whether this is a CT <-> MRI translation experiment (metrics per direction and
        region, compared with the baselines)."""
        return self.translator_path is not None

    def translator(self, run_dir: str | os.PathLike) -> Any:
        """The run's translator for ``ctmri_tf.evaluate`` (translation experiments only).

        Raises:
            CtmriInputError: not a translation experiment, or the run folder is unusable.
        """
        if not self.translates:
            raise CtmriInputError(run_dir, f"{self.name} is not a translation experiment")
        return _resolve(self.translator_path)(run_dir)

    def evaluate(self, run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, split: str,
                 dataset_config: str, data_dir: str | os.PathLike | None = None,
                 **options) -> Any:
        """Evaluate the run on ``split`` of ``ctmri/<dataset_config>``, writing the report
        folder ``out_dir``; returns a ``ctmri_tf.evaluate.RunEvaluation``. ``options``
        (translation): ``reference_split``, ``batch_size``, ``grid_subjects``."""
        return _resolve(self.evaluate_path)(self, run_dir, out_dir, split=split,
                                            dataset_config=dataset_config, data_dir=data_dir,
                                            **options)

    def add_arguments(self, parser) -> None:
        if self.add_arguments_path:
            _resolve(self.add_arguments_path)(parser)

    def before_training(self, prepared, args) -> dict:
        if self.before_training_path:
            return _resolve(self.before_training_path)(prepared, args) or {}
        return {}

    def after_training(self, task, prepared, result) -> list[str]:
        if self.after_training_path:
            return list(_resolve(self.after_training_path)(task, prepared, result))
        return []


_TRAINING = "ctmri_tf.training"
_EXPORT = "ctmri_tf.export.saved_model"
_TRANSLATION_EVALUATION = "ctmri_tf.evaluate:evaluate_translation_run"
TRANSLATION_METRICS = ("mae", "psnr", "ssim")
"""Metrics of the translation experiments' table (``ctmri_tf.evaluate``; MAE default)."""
_REGISTRY: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        name="stargan", title="StarGAN",
        summary="StarGAN CT <-> MRI: one generator for both directions (Choi et al. 2018)",
        task_path=f"{_TRAINING}.stargan:StarGAN",
        inputs_path=f"{_TRAINING}.inputs:stargan_inputs",
        load_path=f"{_TRAINING}.stargan:load_stargan_generator",
        export_path=f"{_EXPORT}:export_stargan_run",
        evaluate_path=_TRANSLATION_EVALUATION, metrics=TRANSLATION_METRICS,
        translator_path="ctmri_tf.evaluate:stargan_run_translator",
        after_training_path=f"{_TRAINING}.translation_validation:after_training"),
    Experiment(
        name="cyclegan", title="CycleGAN",
        summary="CycleGAN MRI -> CT and CT -> MRI, both generators in one run (Zhu et al. 2017)",
        task_path=f"{_TRAINING}.cyclegan:CycleGAN",
        inputs_path=f"{_TRAINING}.inputs:cyclegan_inputs",
        load_path=f"{_TRAINING}.cyclegan:load_cyclegan_generators",
        export_path=f"{_EXPORT}:export_cyclegan_run",
        evaluate_path=_TRANSLATION_EVALUATION, metrics=TRANSLATION_METRICS,
        translator_path="ctmri_tf.evaluate:cyclegan_run_translator",
        add_arguments_path=f"{_TRAINING}.cyclegan_options:add_arguments",
        before_training_path=f"{_TRAINING}.cyclegan:before_training",
        after_training_path=f"{_TRAINING}.translation_validation:after_training"),
    Experiment(
        name="segmentation", title="DeepLabV3+",
        summary="DeepLabV3+ body segmentation of CT and MRI slices (Chen et al. 2018)",
        task_path=f"{_TRAINING}.segmentation:Segmentation",
        inputs_path=f"{_TRAINING}.inputs:segmentation_inputs",
        load_path=f"{_TRAINING}.segmentation:load_any_size_model",
        export_path=f"{_EXPORT}:export_segmentation_run",
        evaluate_path=f"{_TRAINING}.segmentation:evaluate_run", metrics=("dice", "mean_iou"),
        after_training_path=f"{_TRAINING}.segmentation:after_training"),
    Experiment(
        name="classifier", title="CT/MRI classifier",
        summary="CT/MRI modality classifier, calibrated on the validation split",
        task_path=f"{_TRAINING}.classifier:ModalityClassifier",
        inputs_path=f"{_TRAINING}.inputs:classifier_inputs",
        load_path=f"{_TRAINING}.classifier:load_classifier",
        export_path=f"{_EXPORT}:export_classifier_run",
        evaluate_path=f"{_TRAINING}.classifier:evaluate_run", metrics=("accuracy",),
        after_training_path=f"{_TRAINING}.classifier:after_training"),
)}


def names() -> tuple[str, ...]:
    """The registered experiment names."""
    return tuple(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment registered as ``name``.

    Raises:
        CtmriInputError: unknown name (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CtmriInputError(None, f"unknown experiment {name!r}; registered experiments: "
                                    f"{', '.join(_REGISTRY)}") from None


def hook(path: str) -> Callable:
    """The callable behind a ``module:attribute`` path of an entry (for tests and tools)."""
    return _resolve(path)

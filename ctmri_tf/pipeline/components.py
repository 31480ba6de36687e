"""The pipeline's components (TFX's names), each a function ``(ctx, inputs, **parameters) ->
ComponentResult`` run by :mod:`ctmri_tf.pipeline.runner`, and :func:`pipeline_nodes`, the
pipeline a :class:`~ctmri_tf.pipeline.config.PipelineConfig` describes::

    ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> Trainer -> Evaluator -> Pusher

with one Trainer -> Evaluator -> Pusher chain per model of the config (``Trainer.<id>`` ... when
there are several, as in ``make demo``).

* **ExampleGen** (no input): ``ctmri_tf.datasets.ctmri.ctmri_dataset_builder.build`` of the
  dataset config in its tfds data folder (reused when built). Output ``examples``
  (:class:`Examples`, uri the dataset folder; fingerprint: sha256 of its ``dataset_info.json``).
* **StatisticsGen** (examples): per split and modality (:class:`StatisticsAccumulator`): slices,
  subjects, slices with a registered counterpart, image shapes (pixels), pixel spacing range
  (mm), percentiles 0.1/1/50/99/99.9 of the values inside the body mask (HU for CT, MR signal
  for MRI), the ``intensity_range`` bounds (physical units), NaN/Inf counts, empty body masks.
  Output ``statistics`` (``statistics.json``).
* **SchemaGen** (statistics): the schema file of the config, else :func:`infer_schema` from the
  statistics (the splits and shapes seen, the spacing range widened by 10 %, the config's
  physical limits). Output ``schema`` (``schema.json``; copy it to ``validator.schema`` to pin
  it, as TFX's ImportSchemaGen).
* **ExampleValidator** (statistics, schema): :func:`validate`; any anomaly raises
  :class:`ExampleAnomalyError` naming the dataset and each failed check, which stops the run
  before training. Output ``anomalies`` (``anomalies.json``: the checks passed).
* **Trainer** (examples, anomalies): ``ctmri_tf.training.cli.main(experiment, argv)`` in process
  (the registry's training, as ``ctmri train``) into ``<execution>/run``. Output ``model``
  (:class:`Model`, the run folder).
* **Evaluator** (examples, model, pushed_model): the registry's evaluation of the model
  (``experiments.get(name).evaluate``: for StarGAN / CycleGAN the SynthRAD-protocol table of the
  model, the identity and histogram matching, reference the ``reference_split``; for the
  segmentation model Dice / mean IoU; for the classifier accuracy) on ``split`` into
  ``<execution>/evaluation``; the blessing (:func:`blessing_decision`) into
  ``<execution>/blessing``. ``pushed_model`` is resolved from the store
  (:func:`pushed_model_resolver`; under Kubeflow, from the Pusher's records in the serving
  base): the newest PushedModel of this serving base and model name pushed from another model,
  still on disk; its recorded metric is the bar to beat. Outputs
  ``evaluation`` (:class:`ModelEvaluation`) and ``blessing`` (:class:`ModelBlessing`).
* **Pusher** (model, blessing): blessed: the registry's export (``experiments.get(name).export``)
  into ``<execution>/staging``, the version folder copied into a hidden temporary folder in
  ``<serving_base>/<name>/`` and renamed to the next free version, ``models.config``
  regenerated; output ``pushed_model`` (:class:`PushedModel`); a model already pushed there
  (same fingerprint, e.g. re-evaluated by a runner without cache) is not pushed again: its
  version is the output, note ``already pushed: <name> version <n>``. The version folder holds the
  pipeline record :data:`~ctmri_tf.pipeline.lineage.PIPELINE_INFO` (the store, execution and
  the PushedModel's properties, metric value included). Not blessed: no output, the note
  ``not pushed: <reasons>`` (also in ``push.json``).

TensorFlow is imported inside the components that need it, not by this module.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.pipeline.artifacts import (ExampleAnomalies, Examples, ExampleStatistics, Model,
                                         ModelBlessing, ModelEvaluation, PushedModel, Schema,
                                         sha256_bytes)
from ctmri_tf.pipeline.config import METRICS, PipelineConfig
from ctmri_tf.pipeline.lineage import PIPELINE_INFO
from ctmri_tf.pipeline.runner import ComponentResult, ExecutionContext, Node, Resolver

MODALITIES = ("ct", "mri")            # the dataset's ClassLabel order
PERCENTILES = (0.1, 1.0, 50.0, 99.0, 99.9)
BODY_SAMPLE_STRIDE = 4
"""StatisticsGen keeps every 4th body voxel of each slice for the percentiles (memory)."""
SPACING_TOLERANCE = 0.1
"""An inferred schema accepts pixel spacings 10 % beyond the range seen."""
EVALUATED_MODEL = "model"
"""The trained model's row in a table without a title for it (the Evaluator uses the
experiment's title, e.g. ``StarGAN``)."""


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- ExampleGen

def example_gen(ctx: ExecutionContext, inputs: Mapping, *, config: str,
                data_dir: str | None) -> ComponentResult:
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build

    report = build(config, data_dir=data_dir)
    info = Path(report.data_path) / "dataset_info.json"
    if not info.is_file():
        raise CtmriInputError(report.data_path, "built, but holds no dataset_info.json")
    properties = {"config": config, "data_dir": data_dir, "splits": report.num_examples,
                  "fingerprint": sha256_bytes(info.read_bytes())}
    _write_json(ctx.output_dir / "examples.json", {"uri": report.data_path, **properties})
    note = ("built" if report.built else "reused") + f" {report.total_examples} slices"
    return ComponentResult({"examples": Examples(report.data_path, properties)}, note)


# ----------------------------------------------------------------------------- StatisticsGen

class StatisticsAccumulator:
    """Statistics of one split, one slice at a time (NumPy; see the module docstring)."""

    def __init__(self):
        self._by_modality: dict[str, dict] = {}

    def add(self, *, image: np.ndarray, mask: np.ndarray, modality: str, subject_id: str,
            pixel_spacing, intensity_range, has_counterpart: bool) -> None:
        """One slice: ``image`` (rows, cols) physical (HU / MR signal), ``mask`` {0, 1},
        ``pixel_spacing`` (2,) mm, ``intensity_range`` (2,) physical."""
        entry = self._by_modality.setdefault(modality, {
            "slices": 0, "subjects": set(), "with_counterpart": 0, "shapes": set(),
            "spacing_min": [math.inf, math.inf], "spacing_max": [-math.inf, -math.inf],
            "range_low": math.inf, "range_high": -math.inf, "nan": 0, "inf": 0,
            "empty_masks": 0, "body": []})
        image = np.asarray(image, np.float64)
        body = np.asarray(mask) > 0
        entry["slices"] += 1
        entry["subjects"].add(subject_id)
        entry["with_counterpart"] += bool(has_counterpart)
        entry["shapes"].add(tuple(int(n) for n in image.shape))
        spacing = [float(s) for s in np.asarray(pixel_spacing).reshape(-1)[:2]]
        entry["spacing_min"] = [min(a, b) for a, b in zip(entry["spacing_min"], spacing)]
        entry["spacing_max"] = [max(a, b) for a, b in zip(entry["spacing_max"], spacing)]
        low, high = (float(v) for v in np.asarray(intensity_range).reshape(-1)[:2])
        entry["range_low"], entry["range_high"] = (min(entry["range_low"], low),
                                                   max(entry["range_high"], high))
        entry["nan"] += int(np.isnan(image).sum())
        entry["inf"] += int(np.isinf(image).sum())
        if not body.any():
            entry["empty_masks"] += 1
            return
        values = image[body][::BODY_SAMPLE_STRIDE]
        entry["body"].append(values[np.isfinite(values)].astype(np.float32))

    def result(self) -> dict:
        out = {}
        for modality, entry in sorted(self._by_modality.items()):
            body = np.concatenate(entry["body"]) if entry["body"] else np.zeros(0, np.float32)
            percentiles = ({f"p{p:g}": float(np.percentile(body, p)) for p in PERCENTILES}
                           if body.size else {})
            out[modality] = {
                "slices": entry["slices"], "subjects": len(entry["subjects"]),
                "with_counterpart": entry["with_counterpart"],
                "shapes": sorted(list(s) for s in entry["shapes"]),
                "pixel_spacing_mm": {"min": entry["spacing_min"], "max": entry["spacing_max"]},
                "intensity_range": {"min": entry["range_low"], "max": entry["range_high"]},
                "body_percentiles": percentiles, "nan": entry["nan"], "inf": entry["inf"],
                "empty_masks": entry["empty_masks"]}
        return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def split_statistics(examples: Iterable[Mapping]) -> dict:
    """Statistics of raw ``ctmri`` examples (``ctmri_tf.data.load`` as NumPy) of one split."""
    accumulator = StatisticsAccumulator()
    for example in examples:
        accumulator.add(image=example["image"], mask=example["mask"],
                        modality=MODALITIES[int(example["modality"])],
                        subject_id=_text(example["subject_id"]),
                        pixel_spacing=example["pixel_spacing"],
                        intensity_range=example["intensity_range"],
                        has_counterpart=bool(example["has_counterpart"]))
    return accumulator.result()


def statistics_gen(ctx: ExecutionContext, inputs: Mapping) -> ComponentResult:
    import tensorflow_datasets as tfds

    from ctmri_tf import data

    examples = inputs["examples"]
    config, data_dir = examples.properties["config"], examples.properties.get("data_dir")
    splits = {}
    for split in sorted(examples.properties["splits"]):
        splits[split] = split_statistics(tfds.as_numpy(data.load(
            split, config=config, data_dir=data_dir, decode_counterpart=False)))
    statistics = {"dataset": f"ctmri/{config}", "uri": examples.uri, "splits": splits}
    path = ctx.output_dir / "statistics.json"
    _write_json(path, statistics)
    total = sum(m["slices"] for s in splits.values() for m in s.values())
    return ComponentResult({"statistics": ExampleStatistics(os.fspath(path),
                                                            {"dataset": f"ctmri/{config}"})},
                           f"{total} slices in {len(splits)} splits")


# ----------------------------------------------------------------------------- SchemaGen

MAX_EMPTY_MASK_FRACTION = 0.01
"""Slices of a split (per modality) that may have an empty body mask: the ends of a scan's
coverage in the air above the vertex (real whole-head scans, phantom v2) are legitimate."""


def infer_schema(statistics: Mapping, *, require_paired: bool = True,
                 ct_hu_limits=(-1100.0, 4000.0)) -> dict:
    """A schema accepting ``statistics`` (see the module docstring)."""
    splits = statistics["splits"]
    shapes = sorted({tuple(s) for split in splits.values() for m in split.values()
                     for s in m["shapes"]})
    lows = [m["pixel_spacing_mm"]["min"] for s in splits.values() for m in s.values()]
    highs = [m["pixel_spacing_mm"]["max"] for s in splits.values() for m in s.values()]
    low = min(min(v) for v in lows) if lows else 0.0
    high = max(max(v) for v in highs) if highs else math.inf
    return {"dataset": statistics.get("dataset"), "splits": sorted(splits),
            "modalities": list(MODALITIES), "require_paired": bool(require_paired),
            "shapes": [list(s) for s in shapes],
            "pixel_spacing_mm": {"min": low * (1 - SPACING_TOLERANCE),
                                 "max": high * (1 + SPACING_TOLERANCE)},
            "ct_hu_limits": [float(v) for v in ct_hu_limits],
            "max_nan": 0, "max_inf": 0, "max_empty_mask_fraction": MAX_EMPTY_MASK_FRACTION}


def schema_gen(ctx: ExecutionContext, inputs: Mapping, *, schema_file: str | None,
               schema_sha256: str | None, require_paired: bool,
               ct_hu_limits: list) -> ComponentResult:
    path = ctx.output_dir / "schema.json"
    if schema_file:
        try:
            schema = json.loads(Path(schema_file).read_text())
        except (OSError, ValueError) as err:
            raise CtmriInputError(schema_file, f"is not a readable schema JSON ({err})") from None
        note = f"from {schema_file}"
    else:
        statistics = json.loads(Path(inputs["statistics"].uri).read_text())
        schema = infer_schema(statistics, require_paired=require_paired,
                              ct_hu_limits=ct_hu_limits)
        note = "inferred from the statistics"
    _write_json(path, schema)
    return ComponentResult({"schema": Schema(os.fspath(path))}, note)


# ----------------------------------------------------------------------------- ExampleValidator

class ExampleAnomalyError(CtmriInputError):
    """The examples break the schema; ``anomalies``: ``[{"check", "split", "modality",
    "problem"}]``."""

    def __init__(self, path, dataset: str, anomalies: list[dict]):
        self.anomalies = anomalies
        listed = "; ".join(f"{a['check']}: {a['problem']}" for a in anomalies)
        super().__init__(path, f"ExampleValidator: {len(anomalies)} anomal"
                               f"{'y' if len(anomalies) == 1 else 'ies'} in {dataset} "
                               f"({listed}); the pipeline stops before training")


def validate(statistics: Mapping, schema: Mapping) -> tuple[list[str], list[dict]]:
    """Check the statistics against the schema; return ``(checks run, anomalies)``.

    Checks, per split of the schema and modality: ``split_present`` (the split has slices),
    ``modality_present``, ``paired`` (with ``require_paired``: every slice has its registered
    counterpart), ``finite`` (NaN/Inf counts within ``max_nan``/``max_inf``), ``shape`` (every
    image shape among the schema's), ``pixel_spacing`` (mm, within the schema's range),
    ``ct_hu_range`` (CT body percentiles 0.1 and 99.9 within ``ct_hu_limits``, HU),
    ``mri_signal`` (MRI body percentile 0.1 >= 0: MR signal is not negative) and ``body_mask``
    (at most ``max_empty_mask_fraction`` of the slices with an empty body mask: a scan's first
    or last slice may lie in the air beyond the head, a mask that is empty more often than that
    is broken).
    """
    checks, anomalies = [], []

    def check(name: str, ok: bool, split: str, modality: str | None, problem: str) -> None:
        checks.append(f"{name}:{split}" + (f":{modality}" if modality else ""))
        if not ok:
            where = split + (f" {modality.upper()}" if modality else "")
            anomalies.append({"check": name, "split": split, "modality": modality,
                              "problem": f"{where}: {problem}"})

    shapes = {tuple(s) for s in schema.get("shapes", [])}
    spacing = schema.get("pixel_spacing_mm", {"min": 0.0, "max": math.inf})
    low_hu, high_hu = schema.get("ct_hu_limits", (-1100.0, 4000.0))
    for split in schema.get("splits", []):
        stats = statistics["splits"].get(split, {})
        total = sum(m["slices"] for m in stats.values())
        check("split_present", total > 0, split, None, "no slices")
        if total == 0:
            continue
        for modality in schema.get("modalities", MODALITIES):
            m = stats.get(modality)
            check("modality_present", bool(m and m["slices"]), split, modality,
                  "no slices of this modality")
            if not m or not m["slices"]:
                continue
            if schema.get("require_paired", True):
                check("paired", m["with_counterpart"] == m["slices"], split, modality,
                      f"{m['slices'] - m['with_counterpart']} of {m['slices']} slices have no "
                      f"registered counterpart (paired training needs both)")
            check("finite", m["nan"] <= schema.get("max_nan", 0)
                  and m["inf"] <= schema.get("max_inf", 0), split, modality,
                  f"{m['nan']} NaN and {m['inf']} Inf pixel values")
            if shapes:
                odd = [s for s in m["shapes"] if tuple(s) not in shapes]
                check("shape", not odd, split, modality,
                      f"image shapes {odd} not among the schema's {sorted(shapes)}")
            lo, hi = min(m["pixel_spacing_mm"]["min"]), max(m["pixel_spacing_mm"]["max"])
            check("pixel_spacing", spacing["min"] <= lo and hi <= spacing["max"], split,
                  modality, f"pixel spacing {lo:g}..{hi:g} mm outside the schema's "
                            f"{spacing['min']:g}..{spacing['max']:g} mm")
            p = m.get("body_percentiles") or {}
            if modality == "ct" and p:
                check("ct_hu_range", low_hu <= p["p0.1"] and p["p99.9"] <= high_hu, split,
                      modality, f"body values {p['p0.1']:.0f}..{p['p99.9']:.0f} HU (0.1-99.9 "
                                f"percentiles) outside the physical {low_hu:g}..{high_hu:g} HU")
            if modality == "mri" and p:
                check("mri_signal", p["p0.1"] >= 0.0, split, modality,
                      f"negative MR signal in the body (0.1 percentile {p['p0.1']:.3g})")
            allowed = schema.get("max_empty_mask_fraction", 0.0)
            check("body_mask", m["empty_masks"] <= allowed * m["slices"], split, modality,
                  f"{m['empty_masks']} of {m['slices']} slices with an empty body mask (at "
                  f"most {100 * allowed:g} % may lie beyond the body)")
    return checks, anomalies


def example_validator(ctx: ExecutionContext, inputs: Mapping) -> ComponentResult:
    statistics = json.loads(Path(inputs["statistics"].uri).read_text())
    schema = json.loads(Path(inputs["schema"].uri).read_text())
    checks, anomalies = validate(statistics, schema)
    if anomalies:
        raise ExampleAnomalyError(statistics.get("uri"), statistics.get("dataset", "the dataset"),
                                  anomalies)
    path = ctx.output_dir / "anomalies.json"
    _write_json(path, {"dataset": statistics.get("dataset"), "checks": checks, "anomalies": []})
    return ComponentResult({"anomalies": ExampleAnomalies(os.fspath(path), {"count": 0})},
                           f"{len(checks)} checks passed")


# ----------------------------------------------------------------------------- Trainer

def trainer_argv(*, run_dir: str | os.PathLike, examples: Examples, preset: str,
                 steps: int | None, overrides: Mapping[str, Any]) -> list[str]:
    """The ``ctmri train <experiment>`` flags of a Trainer execution."""
    argv = ["--preset", preset, "--run-dir", os.fspath(run_dir),
            "--dataset-config", str(examples.properties["config"])]
    if examples.properties.get("data_dir"):
        argv += ["--data-dir", str(examples.properties["data_dir"])]
    if steps is not None:
        argv += ["--steps", str(int(steps))]
    for field, value in sorted(overrides.items()):
        argv += ["--set", f"{field}={value}"]
    return argv


def trainer(ctx: ExecutionContext, inputs: Mapping, *, experiment: str, preset: str,
            steps: int | None, overrides: dict) -> ComponentResult:
    from ctmri_tf.training import cli

    run_dir = ctx.output_dir / "run"
    argv = trainer_argv(run_dir=run_dir, examples=inputs["examples"], preset=preset,
                        steps=steps, overrides=overrides)
    code = cli.main(experiment, argv, run_dir_shown_as=ctx.final_dir / "run")
    if code != 0:
        raise RuntimeError(f"ctmri train {experiment} {' '.join(argv)} ended with status {code}")
    config = json.loads((run_dir / "config.json").read_text())
    properties = {"experiment": experiment, "preset": preset,
                  "steps": config["schedule"]["steps"]}
    return ComponentResult({"model": Model(os.fspath(run_dir), properties)},
                           f"{experiment} {preset}, {properties['steps']} steps")


# ----------------------------------------------------------------------------- Evaluator

def _better(value: float, than: float, metric: str) -> bool:
    if value is None or than is None or math.isnan(value) or math.isnan(than):
        return False
    return value < than if METRICS[metric] == "lower" else value > than


def blessing_decision(values: Mapping[str, float], *, metric: str, direction: str | None,
                      region: str | None, beat_baselines: Iterable[str],
                      pushed: Mapping | None, beat_pushed: bool,
                      threshold: float | None, model: str = EVALUATED_MODEL) -> dict:
    """Bless the model (``values[model]``, the table's row of the trained model) iff its
    metric is better (MAE: lower; PSNR/SSIM: higher) than each baseline of
    ``beat_baselines``, than the currently pushed model's recorded value (``pushed``: the
    PushedModel's properties; with ``beat_pushed``, when one exists and was measured the same
    way) and than ``threshold`` (when set).

    Returns:
        ``{"blessed", "metric", "direction", "region", "value", "reasons": [...],
        "failed": [...]}``: one reason per condition, the failed ones also in ``failed``.
    """
    word = "below" if METRICS[metric] == "lower" else "above"
    unit = " HU" if metric == "mae" and (direction or "").endswith("ct") else ""
    value = values.get(model, math.nan)
    where = ", ".join(p for p in (direction, region) if p)
    shown = f"{metric.upper()} {value:.4g}{unit}" + (f" ({where})" if where else "")
    reasons, failed = [], []

    def condition(ok: bool, text: str) -> None:
        line = f"{shown} is {'' if ok else 'not '}{word} {text}"
        reasons.append(line)
        if not ok:
            failed.append(line)

    for name in beat_baselines:
        if name not in values:
            raise CtmriInputError(None, f"evaluator.beat_baselines: no baseline {name!r} in the "
                                        f"table (it has {', '.join(sorted(values))})")
        condition(_better(value, values[name], metric), f"{name}'s {values[name]:.4g}{unit}")
    if beat_pushed and pushed is not None:
        same = (pushed.get("metric"), pushed.get("direction"), pushed.get("region")) == (
            metric, direction, region)
        if same:
            condition(_better(value, pushed["value"], metric),
                      f"the pushed model's {pushed['value']:.4g}{unit} "
                      f"({pushed.get('model_name')} version {pushed.get('version')})")
        else:
            reasons.append("the pushed model was measured otherwise: not compared")
    if threshold is not None:
        condition(_better(value, float(threshold), metric), f"the threshold {threshold:g}{unit}")
    if not math.isfinite(value) and not failed:
        failed.append(f"{shown} is not a finite number")
    return {"blessed": not failed, "metric": metric, "direction": direction, "region": region,
            "value": value, "reasons": reasons, "failed": failed}


def evaluator(ctx: ExecutionContext, inputs: Mapping, *, split: str, reference_split: str,
              batch_size: int, metric: str, direction: str | None, region: str | None,
              beat_baselines: list, beat_pushed: bool, threshold: float | None,
              grid_subjects: int) -> ComponentResult:
    from ctmri_tf import evaluate, experiments

    examples, model = inputs["examples"], inputs["model"]
    entry = experiments.get(model.properties["experiment"])
    pushed = inputs.get("pushed_model")
    folder = ctx.output_dir / "evaluation"
    result = entry.evaluate(model.uri, folder, split=split,
                            dataset_config=examples.properties["config"],
                            data_dir=examples.properties.get("data_dir"),
                            reference_split=reference_split, batch_size=batch_size,
                            grid_subjects=grid_subjects)
    row, key = result.model, evaluate.metric_key(metric, direction, region)
    values = {name: float(metrics.get(key, math.nan))
              for name, metrics in result.values.items()}
    decision = blessing_decision(values, metric=metric, direction=direction, region=region,
                                 beat_baselines=beat_baselines,
                                 pushed=None if pushed is None else pushed.properties,
                                 beat_pushed=beat_pushed, threshold=threshold, model=row)
    blessing_dir = ctx.output_dir / "blessing"
    blessing_dir.mkdir()
    _write_json(blessing_dir / "blessing.json", {
        **decision, "value": evaluate._json_safe(decision["value"]),
        "pushed_model": None if pushed is None else pushed.uri})
    (blessing_dir / ("BLESSED" if decision["blessed"] else "NOT_BLESSED")).write_text("")
    measured = {"metric": metric, "direction": direction, "region": region}
    evaluation = ModelEvaluation(os.fspath(folder), {
        **measured, "values": evaluate._json_safe(values), "model": row, "split": split})
    blessing = ModelBlessing(os.fspath(blessing_dir), {
        **measured, "blessed": decision["blessed"], "reasons": decision["reasons"],
        "failed": decision["failed"], "value": evaluate._json_safe(decision["value"])})
    note = ("blessed" if decision["blessed"] else "not blessed") + ": " + "; ".join(
        decision["failed"] or decision["reasons"] or ["no condition"])
    return ComponentResult({"evaluation": evaluation, "blessing": blessing}, note)


def _competes(pushed: PushedModel, *, base: str, model_name: str | None,
              model: Model | None) -> bool:
    """Whether ``pushed`` is the bar for ``model`` (see :func:`pushed_model_resolver`)."""
    p = pushed.properties
    if p.get("serving_base") != base or not Path(pushed.uri).is_dir():
        return False
    if model_name is not None and p.get("model_name") != model_name:
        return False
    if model is not None and model_name is None and p.get("experiment") != \
            model.properties.get("experiment"):
        return False
    return model is None or p.get("model_fingerprint") != model.fingerprint


def pushed_versions(serving_base: str | os.PathLike,
                    model_name: str | None = None) -> list[PushedModel]:
    """The versions of ``serving_base`` (of ``model_name``; None: of every model) that a
    pipeline pushed, read back from the record the Pusher writes into each
    (:data:`~ctmri_tf.pipeline.lineage.PIPELINE_INFO`, its ``pushed_model`` properties),
    newest push first. Versions without a record (exported by hand, or pushed before the
    record held the properties) are left out."""
    from ctmri_tf.export.saved_model import model_versions

    base = Path(serving_base)
    names = [model_name] if model_name is not None else sorted(
        child.name for child in base.iterdir() if child.is_dir()) if base.is_dir() else []
    found = []
    for name in names:
        for version in model_versions(base / name):
            folder = base / name / str(version)
            try:
                record = json.loads((folder / PIPELINE_INFO).read_text())
                properties = dict(record["pushed_model"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            found.append((float(record.get("pushed") or 0.0), version,
                          PushedModel(os.fspath(folder), properties)))
    found.sort(key=lambda entry: entry[:2], reverse=True)
    return [pushed for _, _, pushed in found]


def pushed_model_resolver(serving_base: str, model_name: str | None) -> Resolver:
    """The newest PushedModel of ``serving_base`` (and ``model_name``; None: any of the
    model's experiment) whose folder still exists and that was pushed from another model than
    the node's ``model`` input (a rerun does not compete with its own earlier push).

    With the store (embedded runner): the newest recorded PushedModel artifact. Without
    (Kubeflow): the newest version of the serving base whose Pusher record
    (:func:`pushed_versions`) passes the same test, so it may also be one another pipeline
    pushed into the same serving base."""
    base = os.path.abspath(serving_base)

    def resolve(store, inputs):
        for artifact in store.artifacts_of_type(PushedModel.type_name):
            if _competes(artifact, base=base, model_name=model_name, model=inputs.get("model")):
                return artifact
        return None

    def without_store(inputs):
        for pushed in pushed_versions(base, model_name):
            if _competes(pushed, base=base, model_name=model_name, model=inputs.get("model")):
                return pushed
        return None

    return Resolver("latest PushedModel", resolve, without_store, factory=(
        f"{__name__}:pushed_model_resolver", {"serving_base": base, "model_name": model_name}))


# ----------------------------------------------------------------------------- Pusher

def pusher(ctx: ExecutionContext, inputs: Mapping, *, serving_base: str,
           model_name: str | None) -> ComponentResult:
    model, blessing = inputs["model"], inputs["blessing"]
    if not blessing.properties.get("blessed"):
        reason = "; ".join(blessing.properties.get("failed") or ["the model is not blessed"])
        _write_json(ctx.output_dir / "push.json", {"pushed": False, "reason": reason,
                                                   "model": model.uri})
        return ComponentResult({}, f"not pushed: {reason}")
    from ctmri_tf import experiments
    from ctmri_tf.export.saved_model import next_version, write_models_config

    experiment = model.properties["experiment"]
    for earlier in pushed_versions(os.path.abspath(serving_base), model_name):
        p = earlier.properties
        if p.get("experiment") == experiment and p.get("model_fingerprint") == \
                model.fingerprint and Path(earlier.uri, "saved_model.pb").is_file():
            _write_json(ctx.output_dir / "push.json", {"pushed": False, "uri": earlier.uri,
                                                       "reason": "already pushed", **p})
            return ComponentResult({"pushed_model": earlier}, f"already pushed: "
                                   f"{p.get('model_name')} version {p.get('version')}")
    staging = ctx.output_dir / "staging"
    versions = experiments.get(experiment).export(model.uri, staging, name=model_name)
    if len(versions) != 1:
        raise CtmriInputError(model.uri, f"the Pusher pushes one model; the export wrote "
                                         f"{len(versions)}")
    staged = Path(versions[0])
    name = staged.parent.name
    base = Path(serving_base).absolute()
    model_dir = base / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir)
    target = model_dir / str(version)
    properties = {"serving_base": os.fspath(base), "model_name": name, "version": version,
                  "experiment": experiment, "model_fingerprint": model.fingerprint,
                  **{k: blessing.properties.get(k) for k in ("metric", "direction", "region",
                                                              "value")}}
    properties["fingerprint"] = sha256_bytes(json.dumps(
        [os.fspath(target), model.fingerprint]).encode())
    record = {"runner": ctx.runner,
              "metadata": None if ctx.store is None else os.fspath(ctx.store.path),
              "pipeline_root": None if ctx.pipeline_root is None else os.fspath(
                  ctx.pipeline_root),
              "execution_id": ctx.execution_id, "execution_dir": os.fspath(ctx.final_dir),
              "model": model.uri, "pushed": time.time(), "pushed_model": properties}
    (staged / PIPELINE_INFO).parent.mkdir(parents=True, exist_ok=True)
    _write_json(staged / PIPELINE_INFO, record)
    with atomic_output(target, directory=True) as tmp:   # hidden name: TF Serving ignores it
        shutil.copytree(staged, tmp, dirs_exist_ok=True)
    write_models_config(base)
    shutil.rmtree(staging)
    _write_json(ctx.output_dir / "push.json", {"pushed": True, "uri": os.fspath(target),
                                               **properties})
    return ComponentResult({"pushed_model": PushedModel(os.fspath(target), properties)},
                           f"pushed {name} version {version}")


# ----------------------------------------------------------------------------- the pipeline

def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def pipeline_nodes(config: PipelineConfig) -> list[Node]:
    """The nodes of the pipeline ``config`` describes (see the module docstring): the data
    nodes, then a Trainer, an Evaluator and a Pusher per model (named ``Trainer`` ... for one
    model, ``Trainer.<id>`` ... for several: :meth:`PipelineConfig.node_suffixes`)."""
    validator = config.validator
    nodes = [
        Node("ExampleGen", example_gen, {}, {"config": config.dataset.config,
                                             "data_dir": _absolute(config.dataset.data_dir)},
             ("examples",)),
        Node("StatisticsGen", statistics_gen, {"examples": "ExampleGen.examples"}, {},
             ("statistics",)),
        Node("SchemaGen", schema_gen, {"statistics": "StatisticsGen.statistics"}, {
            "schema_file": _absolute(validator.schema), "schema_sha256": config.schema_sha256(),
            "require_paired": validator.require_paired,
            "ct_hu_limits": [float(v) for v in validator.ct_hu_limits]}, ("schema",)),
        Node("ExampleValidator", example_validator, {"statistics": "StatisticsGen.statistics",
                                                     "schema": "SchemaGen.schema"}, {},
             ("anomalies",)),
    ]
    serving_base = os.path.abspath(config.pusher.serving_base)
    for spec, suffix in zip(config.model_specs(), config.node_suffixes()):
        train, ev = spec.trainer, spec.evaluator.resolved(spec.trainer.experiment)
        names = {kind: f"{kind}{suffix}" for kind in ("Trainer", "Evaluator", "Pusher")}
        nodes += [
            Node(names["Trainer"], trainer, {"examples": "ExampleGen.examples",
                                             "anomalies": "ExampleValidator.anomalies"}, {
                "experiment": train.experiment, "preset": train.preset, "steps": train.steps,
                "overrides": dict(train.overrides)}, ("model",)),
            Node(names["Evaluator"], evaluator, {
                "examples": "ExampleGen.examples", "model": f"{names['Trainer']}.model",
                "pushed_model": pushed_model_resolver(serving_base, spec.model_name)}, {
                "split": ev.split, "reference_split": ev.reference_split,
                "batch_size": ev.batch_size, "metric": ev.metric, "direction": ev.direction,
                "region": ev.region, "beat_baselines": list(ev.beat_baselines),
                "beat_pushed": ev.beat_pushed, "threshold": ev.threshold,
                "grid_subjects": ev.grid_subjects}, ("evaluation", "blessing")),
            Node(names["Pusher"], pusher, {"model": f"{names['Trainer']}.model",
                                           "blessing": f"{names['Evaluator']}.blessing"}, {
                "serving_base": serving_base, "model_name": spec.model_name},
                 ("pushed_model",)),
        ]
    return nodes


def run_pipeline(config: PipelineConfig, *, log=None, enable_cache: bool = True):
    """Run the pipeline of ``config`` with the embedded runner; return its ``RunResult``."""
    from ctmri_tf.pipeline import runner

    return runner.run(pipeline_nodes(config), config.pipeline_root, pipeline=config.name,
                      log=log, enable_cache=enable_cache)

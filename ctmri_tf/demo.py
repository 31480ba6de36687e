"""``make demo``: the project end to end on synthetic head phantoms, as a list of steps.

    python -m ctmri_tf.demo --data-dir artifacts/tensorflow_datasets --out artifacts/demo
                            [--config synthetic_40x32x128] [--num-subjects N --num-slices N
                            --image-size N] [--preset demo|smoke] [--steps N]

Steps (each a function of :class:`DemoRun`, run in order; later steps use what earlier ones put
in ``run.results``):

1. ``dataset``: build the tfds ``ctmri`` dataset (tfds' progress bars, then where it went and the
   slices/s). The demo builds ``synthetic_40x32x128`` (40 phantoms x 32 slices x 128 px) rather
   than the default ``synthetic`` (256 px): every demo model trains at 128 px, so 256 px slices
   would only be resized down again in every batch, and on a 2-core CPU the 128 px build takes
   15-25 s (2560 slices, 280 MiB) against about four times as long (and 1.2 GiB) at 256 px:
   time the 15-minute budget gives to training instead. Evaluation and the translated volume
   are then at the models' own resolution;
2. ``contact sheet``: ``<out>/contact_sheet.png``, CT | MRI | body mask of slices spread over one
   test subject;
3. ``stargan``: train StarGAN (preset ``demo``: 128 px, width 32, batch 8, registered pairs
   with an L1 term, a critic and a generator update every step, a brain-window input channel;
   :data:`DEMO_STEPS` steps, about 0.8 s per step on 2 CPU cores) in
   ``<out>/runs/stargan-<preset>/`` with the library (``ctmri_tf.training``), then print its
   validation PSNR against the identity's (the input itself taken as the translation) on the
   same validation slices;
4. ``segmentation``: train the DeepLabV3+ body segmentation (same preset) in
   ``<out>/runs/segmentation-<preset>/`` by running ``python -m train.segmentation``'s ``main``
   in this process (training, then Dice and mean IoU of the validation and test splits in the
   run's ``metrics.json``, printed);
5. ``classifier``: the same for the CT/MRI classifier (``python -m train.classifier``; test
   accuracy), in ``<out>/runs/classifier-<preset>/``;
6. ``evaluation``: StarGAN against the identity and histogram-matching baselines on the test
   split (``ctmri_tf.evaluate``, SynthRAD protocol): ``<out>/results/`` (``metrics.csv``,
   ``metrics.json``, ``comparison.md``, ``grids/``), and the comparison table printed;
7. ``export``: SavedModels for TF Serving in ``<out>/exports/`` (``stargan``, ``segmentation``,
   ``classifier``, version 1 each, and ``models.config``);
8. ``translate``: a phantom MRI test volume written as ``<out>/translate/<subject>_mri.nii.gz``
   translated to CT with :func:`ctmri_tf.translate.translate_file` and the exports, and its MAE
   against the phantom's true CT. The classifier decides the modality and the segmentation model
   gives the body mask only when they passed their test split (:data:`MIN_CLASSIFIER_ACCURACY`,
   :data:`MIN_SEGMENTATION_DICE`); otherwise ``--from mri`` / ``--body-mask threshold``, said.

At the end the demo prints where the TensorBoard logs (``tensorboard --logdir <out>/runs``),
results and exports are. ``--preset smoke --steps N`` runs the same steps with the tiny presets
(tests). Outputs are replaced on a rerun (each written atomically; a training run folder is
written progressively while it trains, as TensorBoard reads it, after the previous run of that
name is removed). The dataset is reused when it is already built.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from ctmri_tf import data, experiments, visualize
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.flags import FlagParser
from ctmri_tf.datasets.ctmri import CtmriConfig
from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build, resolve_config

CONTACT_SHEET_ROWS = 6
DEMO_DATASET = "synthetic_40x32x128"
"""The dataset the demo builds (module docstring: why 128 px)."""
DEMO_STEPS = {"stargan": 450, "segmentation": 200, "classifier": 300}
"""Training steps per model with the ``demo`` preset, sized so that the whole demo takes about
12 minutes on an idle 2-core CPU: StarGAN about 0.8 s per step (``benchmarks/quality.py``
trains it longer), DeepLabV3+ 0.9-1.8 s per step (it needs about 200 steps for a test Dice above
0.95), the classifier about 0.1 s per step."""
MIN_SEGMENTATION_DICE = 0.9
"""The demo's translation uses the exported segmentation model from this test Dice on."""
MIN_CLASSIFIER_ACCURACY = 0.95
"""The demo's translation lets the exported classifier decide the modality from this test
accuracy on."""


@dataclasses.dataclass
class DemoRun:
    """The settings of one demo run and what its steps produced.

    Attributes:
        data_dir: tfds data folder.
        out: folder for the demo's outputs.
        config: the dataset config (name or :class:`CtmriConfig`).
        preset: the trainers' preset (``demo``; ``smoke`` for tests).
        steps: training steps of every model (default :data:`DEMO_STEPS` for ``demo``, the
            preset's own otherwise).
        results: step name -> what the step produced (paths, reports).
    """

    data_dir: Path
    out: Path
    config: str | CtmriConfig = DEMO_DATASET
    preset: str = "demo"
    steps: int | None = None
    results: dict = dataclasses.field(default_factory=dict)

    @property
    def config_name(self) -> str:
        return self.config.name if isinstance(self.config, CtmriConfig) else str(self.config)

    @property
    def runs(self) -> Path:
        """Training run folders (``tensorboard --logdir`` this folder)."""
        return self.out / "runs"

    @property
    def exports(self) -> Path:
        return self.out / "exports"

    def trainer_config(self, experiment: str):
        """The ``preset`` config of ``experiment`` on this demo's dataset, with ``steps`` (the
        learning-rate decay keeping the preset's share of the run, as ``--steps`` does)."""
        from ctmri_tf import configs

        base = configs.get_config(experiment, self.preset)
        steps = self.steps or (DEMO_STEPS[experiment] if self.preset == "demo"
                               else base.schedule.steps)
        share = base.schedule.decay_steps / base.schedule.steps
        return configs.override(base, {
            "data.dataset_config": self.config_name, "data.data_dir": str(self.data_dir),
            "schedule.steps": steps, "schedule.decay_steps": int(round(steps * share))})


def build_dataset(run: DemoRun) -> None:
    """Build (or reuse) the dataset and print where it is and how fast it was generated."""
    print(f"[dataset] building ctmri/{run.config_name} in {run.data_dir} ...", flush=True)
    report = build(run.config, data_dir=run.data_dir)
    print(report.summary(), flush=True)
    run.results["dataset"] = report


def spread_slices(examples: list[dict], n: int) -> list[dict]:
    """``n`` paired CT examples of the first test subject, evenly spread over its slices."""
    paired = sorted((e for e in examples if e["modality"] == 0 and e["has_counterpart"]),
                    key=lambda e: (e["subject_id"], int(e["slice_index"])))
    if not paired:
        return []
    first = [e for e in paired if e["subject_id"] == paired[0]["subject_id"]]
    picks = np.unique(np.linspace(0, len(first) - 1, min(n, len(first))).round().astype(int))
    return [first[i] for i in picks]


def write_contact_sheet(run: DemoRun) -> None:
    """``<out>/contact_sheet.png``: CT | MRI | mask rows of one test subject."""
    examples = list(tfds.as_numpy(data.load("test", config=run.config, data_dir=run.data_dir)))
    rows = spread_slices(examples, CONTACT_SHEET_ROWS)
    if not rows:
        raise CtmriInputError(run.data_dir, f"ctmri/{run.config_name} has no paired CT/MRI "
                                            f"test slices for the contact sheet")
    path = visualize.contact_sheet(rows, run.out / "contact_sheet.png", n=CONTACT_SHEET_ROWS,
                                   overwrite=True)
    subject = rows[0]["subject_id"].decode()
    print(f"[contact sheet] {path} ({subject}, slices "
          f"{', '.join(str(int(e['slice_index'])) for e in rows)})", flush=True)
    run.results["contact sheet"] = path


def _run_root(run: DemoRun, config) -> Path:
    """``<out>/runs/<experiment>-<preset>/``, removed when a previous demo left it there (the
    demo replaces its outputs), so that a trainer can create it anew."""
    from ctmri_tf.training.run_dir import CONFIG_FILE

    root = run.runs / f"{config.experiment}-{config.preset}"
    if root.exists():
        if not (root / CONFIG_FILE).is_file():
            raise CtmriInputError(root, "exists but is not a run folder; the demo replaces only "
                                        "its own run folders")
        shutil.rmtree(root)
    return root


def train_stargan(run: DemoRun) -> None:
    """Train StarGAN with the library (``ctmri_tf.training``: the task and the shared loop, as
    ``python -m train.stargan`` does), then print its validation PSNR (last validation) against
    the identity's."""
    import tensorflow as tf

    from ctmri_tf.training import loop
    from ctmri_tf.training.run_dir import create_run_dir
    from ctmri_tf.training.runtime import configure_keras
    from ctmri_tf.training.stargan import StarGAN, load_stargan_generator
    from ctmri_tf.training.summaries import flatten_hparams

    config = run.trainer_config("stargan")
    configure_keras(config.seed, config.precision)   # before the datasets: tf.data seeds
    inputs = experiments.get("stargan").inputs(config)
    train_data, validation = inputs.train, inputs.validation
    config = data.resolve_pixel_spacing(config)      # config.json: what the trainer records
    task = StarGAN(config, tf.distribute.get_strategy())
    run_dir = create_run_dir(_run_root(run, config), config)
    print(f"[stargan] {config.preset}: {config.schedule.steps} steps, "
          f"{config.data.image_size} px, batch {config.data.batch_size}, run folder "
          f"{run_dir.root}", flush=True)
    started = time.monotonic()
    result = loop.train(task, strategy=tf.distribute.get_strategy(), train_dataset=train_data,
                        schedule=config.schedule, run_dir=run_dir, seed=config.seed,
                        validation_dataset=validation, hparams=flatten_hparams(config))
    print(f"[stargan] {result.step} steps in {time.monotonic() - started:.0f} s "
          f"({result.wall_seconds_per_step:.2f} s/step)", flush=True)
    summary = {"run_dir": run_dir.root, "config": config, "result": result}
    if result.validation:      # means over the validation batches, identity_* = no translation
        step, metrics = result.validation[-1]
        for direction, title in (("mri_to_ct", "MRI->CT"), ("ct_to_mri", "CT->MRI")):
            print(f"[stargan] validation PSNR at step {step}, {title} ([0, 1] scale): "
                  f"{metrics[f'psnr_{direction}']:.2f} dB; identity (no translation) "
                  f"{metrics[f'identity_psnr_{direction}']:.2f} dB", flush=True)
        summary["validation"] = metrics
    summary["generator"] = load_stargan_generator(run_dir.root)   # any size, float32
    run.results["stargan"] = summary


def _train_by_cli(run: DemoRun, experiment: str):
    """Run ``ctmri train <experiment>`` in this process (:func:`ctmri_tf.training.cli.main`:
    training, then the final metrics of the validation and test splits, printed once and
    written to ``<run>/metrics.json``) in a fresh ``<out>/runs/<experiment>-<preset>/``;
    returns ``(run folder, config, metrics)``."""
    import json

    from ctmri_tf import configs
    from ctmri_tf.training import cli

    config = run.trainer_config(experiment)
    root = _run_root(run, config)
    argv = ["--preset", config.preset, "--run-dir", str(root), "--data-dir", str(run.data_dir),
            "--dataset-config", run.config_name, "--steps", str(config.schedule.steps),
            "--seed", str(config.seed)]
    print(f"[{experiment}] ctmri train {experiment} {' '.join(argv)}", flush=True)
    started = time.monotonic()
    if cli.main(experiment, argv) != 0:
        raise CtmriInputError(root, f"the {experiment} trainer failed (see its message above)")
    config = configs.from_json((root / "config.json").read_text())
    metrics = json.loads((root / "metrics.json").read_text())
    print(f"[{experiment}] {config.schedule.steps} steps in {time.monotonic() - started:.0f} s",
          flush=True)
    return root, config, {split: values for split, values in metrics.items()
                          if isinstance(values, dict)}


def train_segmentation(run: DemoRun) -> None:
    """Train the DeepLabV3+ body segmentation (``ctmri train segmentation``: it prints the mean
    IoU and Dice of the validation and test splits, also in the run's ``metrics.json``)."""
    root, config, metrics = _train_by_cli(run, "segmentation")
    run.results["segmentation"] = {"run_dir": root, "config": config, "metrics": metrics}


def train_classifier(run: DemoRun) -> None:
    """Train the CT/MRI classifier (``ctmri train classifier``: it prints its accuracy on the
    validation and test splits and its calibration)."""
    root, config, metrics = _train_by_cli(run, "classifier")
    run.results["classifier"] = {"run_dir": root, "config": config, "metrics": metrics}


def evaluate_models(run: DemoRun) -> None:
    """StarGAN vs the identity and histogram-matching baselines on the test split; print the
    comparison table and write ``<out>/results/``."""
    from ctmri_tf import baselines, evaluate

    stargan = run.results["stargan"]
    translators = baselines.baseline_translators(baselines.reference_from_split(
        "train", config=run.config_name, data_dir=run.data_dir))
    translators["StarGAN"] = evaluate.resized_translator(
        evaluate.stargan_translator(stargan["generator"]), stargan["config"].data.image_size)
    subjects = evaluate.load_subjects("test", config=run.config_name, data_dir=run.data_dir)
    out = run.out / "results"
    print(f"[evaluation] {', '.join(translators)} on {len(subjects)} test subject(s) ...",
          flush=True)
    evaluate.evaluate(translators, subjects, out, overwrite=True)
    print((out / "comparison.md").read_text(), flush=True)
    print(f"[evaluation] {out}", flush=True)
    run.results["evaluation"] = out


def export_models(run: DemoRun) -> None:
    """SavedModels of every trained model in ``<out>/exports/`` (version 1) + ``models.config``;
    the folder is built beside and renamed into place, its ``models.config`` naming the final
    path. Each model is exported from its run folder through the experiment registry
    (``ctmri_tf.experiments``: the same export as ``ctmri export``), so each carries the data card
    of its run (``ctmri_tf.data_card``: the demo models are trained on synthetic head phantoms
    only), its training size and pixel spacing, and the classifier its calibration
    temperature."""
    from ctmri_tf.atomic import atomic_output
    from ctmri_tf.export import saved_model

    final = run.exports
    serving_base = str(final.resolve())
    with atomic_output(final, directory=True, overwrite=True) as tmp:
        for name in ("stargan", "segmentation", "classifier"):
            experiments.get(name).export(run.results[name]["run_dir"], tmp, version=1,
                                         serving_base=serving_base)
    names = saved_model.served_models(final)
    print(f"[export] {', '.join(names)} in {final}; TF Serving: tensorflow_model_server "
          f"--model_config_file={final.resolve() / saved_model.MODELS_CONFIG}", flush=True)
    run.results["export"] = final


def _test_metric(result: dict, name: str) -> float:
    """A model's metric on the test split (validation when no test split was built)."""
    metrics = result["metrics"]
    split = "test" if "test" in metrics else next(iter(metrics))
    return float(metrics[split][name])


def translate_test_volume(run: DemoRun) -> None:
    """Write a phantom MRI test volume as NIfTI and translate it to CT with the exports.

    The exported segmentation model gives the body mask when its test Dice reaches
    :data:`MIN_SEGMENTATION_DICE` (else the thresholds, ``--body-mask threshold``), and the
    exported classifier decides the modality when its test accuracy reaches
    :data:`MIN_CLASSIFIER_ACCURACY` (else ``--from mri``): a short demo run may not train them
    that far, and the demo says so instead of translating garbage.
    """
    from ctmri_tf import metrics, phantom
    from ctmri_tf.io import Volume, read_nifti, write_nifti
    from ctmri_tf.translate import AIR_HU, ModelSet, translate_file
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import known_config

    dataset = run.config if isinstance(run.config, CtmriConfig) else known_config(run.config)
    index = dataset.num_subjects - 1                       # the last subject is a test subject
    subject = phantom.make_subject(index, image_size=dataset.image_size,
                                   num_slices=dataset.num_slices, seed=dataset.seed)
    slice_mm, row_mm, col_mm = subject.spacing
    affine = np.array([[-col_mm, 0, 0, col_mm * (dataset.image_size - 1) / 2],
                       [0, -row_mm, 0, row_mm * (dataset.image_size - 1) / 2],
                       [0, 0, slice_mm, -slice_mm * (dataset.num_slices - 1) / 2],
                       [0, 0, 0, 1]], dtype=np.float64)      # RAS+, centred on the head
    folder = run.out / "translate"
    source = write_nifti(Volume(subject.mri, None, subject.spacing, affine),
                         folder / f"{subject.subject_id}_mri.nii.gz", overwrite=True)
    output = folder / f"{subject.subject_id}_synthetic_ct.nii.gz"

    def say(line: str) -> None:
        print(f"[translate] {line}", flush=True)

    dice = _test_metric(run.results["segmentation"], "dice")
    use_segmenter = dice >= MIN_SEGMENTATION_DICE
    if not use_segmenter:
        say(f"the segmentation model's test Dice {dice:.3f} < {MIN_SEGMENTATION_DICE}: body "
            f"mask by thresholds (--body-mask threshold)")
    models = ModelSet(run.exports, image_size=run.results["stargan"]["config"].data.image_size,
                      use_segmenter=use_segmenter)
    accuracy = _test_metric(run.results["classifier"], "accuracy")
    given = None                                  # the classifier decides
    if accuracy < MIN_CLASSIFIER_ACCURACY:
        given = "mri"
        say(f"the classifier's test accuracy {accuracy:.3f} < {MIN_CLASSIFIER_ACCURACY}: "
            f"--from mri")
    say(f"ctmri translate {source} {output} --models {run.exports}"
        + (" --from mri" if given else "") + ("" if use_segmenter else " --body-mask threshold"))
    translate_file(source, output, models=models, source=given, overwrite=True, log=say)
    synthetic = read_nifti(output).data
    body = subject.mask.astype(bool)
    error = metrics.mae(synthetic, subject.ct, body, value_range=metrics.CT_RANGE_HU)
    say(f"synthetic CT vs the phantom's true CT: MAE {error:.1f} HU inside the body")
    # Why this differs from the evaluation table: the table is the mean over the test subjects,
    # with the true body mask; ctmri translate finds the body itself and writes air outside it.
    missed = body & (synthetic == AIR_HU)           # body voxels outside translate's body mask
    if missed.any() and (~missed & body).any():
        inside = metrics.mae(synthetic, subject.ct, body & ~missed,
                             value_range=metrics.CT_RANGE_HU)
        say(f"  of which {error - inside:.1f} HU from the {100 * missed.sum() / body.sum():.1f} % "
            f"of body voxels outside translate's body mask (written as air); "
            f"{inside:.1f} HU where both masks agree")
    evaluated = _subject_mae(run.results.get("evaluation"), subject.subject_id)
    if evaluated is not None:
        say(f"  the evaluation (true body mask) scores this subject {evaluated:.1f} HU; its table "
            f"is the mean over the test subjects")
    run.results["translate"] = output


def _subject_mae(results: Path | None, subject_id: str) -> float | None:
    """StarGAN's MRI->CT MAE (HU, body) of one subject in an evaluation's ``metrics.json``."""
    import json

    if results is None or not (Path(results) / "metrics.json").is_file():
        return None
    table = json.loads((Path(results) / "metrics.json").read_text())
    rows = [dict(zip(table["columns"], row)) if isinstance(row, list) else row
            for row in table.get("rows", [])]
    found = [r["mae"] for r in rows if r.get("model") == "StarGAN" and r.get("region") == "body"
             and r.get("subject_id") == subject_id and str(r.get("direction")).startswith("mri")]
    return float(found[0]) if found else None


STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("dataset", build_dataset),
    ("contact sheet", write_contact_sheet),
    ("stargan", train_stargan),
    ("segmentation", train_segmentation),
    ("classifier", train_classifier),
    ("evaluation", evaluate_models),
    ("export", export_models),
    ("translate", translate_test_volume),
]


def run_demo(data_dir: str | os.PathLike, out: str | os.PathLike, *,
             config: str | CtmriConfig = DEMO_DATASET, preset: str = "demo",
             steps: int | None = None) -> DemoRun:
    """Run every step of :data:`STEPS` in order; returns the run with its results."""
    run = DemoRun(data_dir=Path(data_dir), out=Path(out), config=config, preset=preset,
                  steps=steps)
    run.out.mkdir(parents=True, exist_ok=True)
    for _, step in STEPS:
        step(run)
    return run


def _where(result) -> object:
    if hasattr(result, "data_path"):
        return result.data_path
    if isinstance(result, dict):
        return result["run_dir"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(prog="python -m ctmri_tf.demo",
                        description="Run the ctmri-tf demo on synthetic phantoms.")
    parser.add_argument("--data-dir", type=Path, required=True, help="tfds data folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the demo outputs")
    parser.add_argument("--config", default=DEMO_DATASET,
                        help=f"dataset config (default {DEMO_DATASET}: 40 x 32 x 128 px)")
    parser.add_argument("--num-subjects", type=int, help="override: phantom subjects")
    parser.add_argument("--num-slices", type=int, help="override: slices per subject")
    parser.add_argument("--image-size", type=int, help="override: pixels per side")
    parser.add_argument("--preset", default="demo", choices=("smoke", "demo"),
                        help="trainers' preset (default: %(default)s)")
    parser.add_argument("--steps", type=int,
                        help="training steps of every model (default: "
                             + ", ".join(f"{k} {v}" for k, v in DEMO_STEPS.items())
                             + " with --preset demo)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the library logs and warnings hidden by default")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        config = resolve_config(args.config, num_subjects=args.num_subjects,
                                num_slices=args.num_slices, image_size=args.image_size)
        run = run_demo(args.data_dir, args.out, config=config, preset=args.preset,
                       steps=args.steps)
    except CtmriInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"demo done in {time.monotonic() - started:.0f} s; outputs in {run.out.resolve()}:")
    for name, result in run.results.items():
        print(f"  {name}: {_where(result)}")
    print(f"TensorBoard: tensorboard --logdir {run.runs.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

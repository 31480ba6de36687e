"""``make demo``: the project end to end on synthetic head phantoms, through the pipeline.

    python -m ctmri_tf.demo --data-dir artifacts/tensorflow_datasets --out artifacts/demo
                            [--config synthetic_v2_40x32x128] [--num-subjects N --num-slices N
                            --image-size N] [--preset demo|smoke] [--steps N]

Steps (each a function of :class:`DemoRun`, run in order; later steps use what earlier ones put
in ``run.results``):

1. ``dataset``: build the tfds ``ctmri`` dataset (one progress bar, then where it went and the
   slices/s). The demo builds ``synthetic_v2_40x32x128``: 40 domain-randomised phantoms
   (:mod:`ctmri_tf.phantom_v2`: MRI contrast, resolution, slice thickness, field of view, pose,
   skull stripping, CT kernel and noise drawn per subject; 4 of them in the held-out domain) x
   32 slices x 128 px, so that the models it exports have seen more than one scanner's head
   (the v1 phantom, ``--config synthetic_40x32x128``, has one contrast and one grid). 128 px
   rather than 256: every demo model trains at 128 px, so 256 px slices would only be resized
   down again in every batch, and on a 2-core CPU the 128 px build takes about 20 s (2560
   slices, 270 MiB) against about four times as long (and 1.1 GiB) at 256 px;
2. ``contact sheet``: ``<out>/contact_sheet.png``, CT | MRI | body mask of slices spread over one
   test subject;
3. ``pipeline``: the demo's pipeline (:func:`ctmri_tf.pipeline.config.demo_config`, the same as
   ``ctmri pipeline run --config ctmri_tf/pipeline/configs/demo.yaml``) with the embedded runner,
   root ``<out>/pipeline`` (executions and ``metadata.sqlite``): ExampleGen (the dataset of step
   1, reused), StatisticsGen, SchemaGen, ExampleValidator, then for StarGAN, the DeepLabV3+ body
   segmentation and the CT/MRI classifier a Trainer (``ctmri train <name> --preset demo`` with
   :data:`~ctmri_tf.pipeline.config.DEMO_STEPS` steps), an Evaluator (StarGAN: the SynthRAD table
   against the identity and histogram matching on the test split, blessed when its MRI -> CT MAE
   is below histogram matching's and the pushed model's; segmentation: test Dice above 0.9;
   classifier: test accuracy above 0.95, :data:`~ctmri_tf.pipeline.config.DEMO_THRESHOLDS`) and
   a Pusher (a blessed model becomes the next version in the TF Serving base ``<out>/exports``,
   ``models.config`` rewritten). One line per component as it ends. A second ``make demo``
   finds every component cached (same inputs, parameters and code) and trains nothing;
4. ``results``: StarGAN's comparison table (printed) and the segmentation and classifier test
   metrics, with where the evaluation reports are;
5. ``translate``: a phantom MRI test volume (:func:`demo_subject`: with phantom v2 a subject of
   the held-out domain, a contrast and geometry no training subject has) written as
   ``<out>/translate/<subject>_mri.nii.gz``
   translated to CT with :func:`ctmri_tf.translate.translate_file` and what ``<out>/exports``
   serves, and its MAE against the phantom's true CT; ``<subject>_synthetic_ct.png`` beside it
   shows slices of input MRI | synthetic CT | true CT | error. The classifier decides the modality and the
   segmentation model gives the body mask when they are served (pushed: blessed now or before);
   otherwise ``--from mri`` / ``--body-mask threshold``, said. Without a served StarGAN there is
   nothing to translate with, and the demo says so.

At the end the demo prints where the TensorBoard logs (``tensorboard --logdir <out>/pipeline``),
evaluations and exports are. ``--preset smoke --steps N`` runs the same steps with the tiny
presets (tests). The dataset is reused when it is already built; the contact sheet and the
translated volume and its picture are replaced on a rerun (each written atomically).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from ctmri_tf import data, visualize
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.flags import FlagParser
from ctmri_tf.datasets.ctmri import CtmriConfig
from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build, resolve_config
from ctmri_tf.pipeline.config import DEMO_STEPS

CONTACT_SHEET_ROWS = 6
DEMO_DATASET = "synthetic_v2_40x32x128"
"""The dataset the demo builds (module docstring: why 128 px)."""


@dataclasses.dataclass
class DemoRun:
    """The settings of one demo run and what its steps produced.

    Attributes:
        data_dir: tfds data folder.
        out: folder for the demo's outputs.
        config: the dataset config (name or :class:`CtmriConfig`).
        preset: the trainers' preset (``demo``; ``smoke`` for tests).
        steps: training steps of every model (default
            :data:`~ctmri_tf.pipeline.config.DEMO_STEPS` for ``demo``, the preset's own
            otherwise).
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
    def pipeline_root(self) -> Path:
        """Pipeline executions and ``metadata.sqlite`` (``tensorboard --logdir`` this folder:
        the training runs are its ``Trainer.*/<id>/run`` folders)."""
        return self.out / "pipeline"

    @property
    def exports(self) -> Path:
        """The TF Serving base the Pushers push to."""
        return self.out / "exports"


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


def demo_pipeline(run: DemoRun):
    """The demo's pipeline config (:func:`ctmri_tf.pipeline.config.demo_config`) for ``run``."""
    from ctmri_tf.pipeline.config import demo_config

    return demo_config(run.out, data_dir=run.data_dir, dataset=run.config_name,
                       preset=run.preset, steps=run.steps)


def run_pipeline(run: DemoRun) -> None:
    """Run the demo's pipeline with the embedded runner, one line per component."""
    from ctmri_tf.pipeline.components import run_pipeline as run_nodes

    config = demo_pipeline(run)
    print(f"[pipeline] {config.name}: {len(config.model_specs())} models, root "
          f"{run.pipeline_root}, serving base {run.exports} (components whose inputs, "
          f"parameters and code are unchanged are cached)", flush=True)
    result = run_nodes(config, log=lambda line: print(f"[pipeline] {line}", flush=True))
    cached = sum(r.state == "CACHED" for r in result.executions)
    print(f"[pipeline] {len(result.executions)} components in {result.seconds:.0f} s "
          f"({cached} cached)", flush=True)
    run.results["pipeline"] = result


def _outputs(run: DemoRun, experiment: str) -> dict:
    """The artifacts of ``experiment``'s Trainer, Evaluator and Pusher in this run."""
    records = run.results["pipeline"].by_component()
    return {kind: records[f"{kind}.{experiment}"].outputs
            for kind in ("Trainer", "Evaluator", "Pusher")}


def report_results(run: DemoRun) -> None:
    """Print StarGAN's comparison table and the other models' test metrics (the Evaluators'
    reports) and whether each was pushed."""
    lines = []
    for experiment in ("stargan", "segmentation", "classifier"):
        outputs = _outputs(run, experiment)
        evaluation = outputs["Evaluator"]["evaluation"]
        blessing = outputs["Evaluator"]["blessing"].properties
        folder = Path(evaluation.uri)
        if experiment == "stargan":
            print((folder / "comparison.md").read_text(), flush=True)
            run.results["evaluation"] = folder
        pushed = outputs["Pusher"].get("pushed_model")
        if pushed:
            verdict = (f"{'; '.join(blessing['reasons'])} -> pushed as "
                       f"{pushed.properties['model_name']} version {pushed.properties['version']}")
        else:
            verdict = "not pushed: " + "; ".join(blessing["failed"] or ["not blessed"])
        lines.append(f"[results] {experiment}: {verdict}; report {folder}")
    print("\n".join(lines), flush=True)


def translate_test_volume(run: DemoRun) -> None:
    """Write a phantom MRI test volume as NIfTI and translate it to CT with what the serving
    base serves.

    The served segmentation model gives the body mask (else the thresholds, ``--body-mask
    threshold``) and the served classifier decides the modality (else ``--from mri``): a model
    is served only once an Evaluator blessed it, so a short demo run may have none, and the demo
    says so instead of translating with an unvetted model. Without a served StarGAN nothing is
    translated.
    """
    from ctmri_tf import metrics
    from ctmri_tf.export.saved_model import model_versions, served_models
    from ctmri_tf.io import Volume, read_nifti, write_nifti
    from ctmri_tf.translate import AIR_HU, ModelSet, translate_file
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import known_config

    dataset = run.config if isinstance(run.config, CtmriConfig) else known_config(run.config)
    subject, about = demo_subject(dataset)
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

    served = served_models(run.exports)
    if "stargan" not in served:
        say(f"{run.exports} serves no StarGAN (no Evaluator has blessed one yet): nothing to "
            f"translate with")
        return
    use_segmenter = "segmentation" in served
    if not use_segmenter:
        say("no segmentation model is served: body mask by thresholds (--body-mask threshold)")
    models = ModelSet(run.exports, use_segmenter=use_segmenter)
    given = None                                  # the classifier decides
    if "classifier" not in served:
        given = "mri"
        say("no classifier is served: --from mri")
    versions = ", ".join(f"{name} {max(model_versions(run.exports / name))}" for name in served)
    say(f"served versions: {versions}")
    say(f"{subject.subject_id}: {about}")
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
    picture = write_translation_grid(folder / f"{subject.subject_id}_synthetic_ct.png",
                                     subject, synthetic)
    say(f"  slices of input MRI | synthetic CT | true CT | error: {picture}")
    evaluated = _subject_mae(run.results.get("evaluation"), subject.subject_id)
    if evaluated is not None:
        say(f"  the evaluation (true body mask, no test-time mirroring) scores this subject "
            f"{evaluated:.1f} HU; its table is the mean over the test subjects")
    elif subject.subject_id.endswith("-heldout"):
        say("  (a held-out-domain subject: the evaluation table above is over the in-domain "
            "test subjects; benchmarks/quality.py measures both splits)")
    run.results["translate"] = output


GRID_SLICES = 4
"""Rows of the translated volume's picture (slices spread over the volume)."""


def write_translation_grid(path: Path, subject, synthetic: np.ndarray) -> Path:
    """``path`` (PNG, replaced): :data:`GRID_SLICES` slices spread over the volume, each a row
    input MRI (its own 0.5-99.5 % range) | synthetic CT | true CT (both in the evaluation's
    display window, HU) | |error| (0 to the evaluation's error range, HU)."""
    from ctmri_tf.evaluate import DISPLAY_CT_WINDOW_HU, ERROR_DISPLAY_HU
    from ctmri_tf.visualize import save_grid_png

    mri, ct = subject.mri, subject.ct
    picks = np.unique(np.linspace(0, len(ct) - 1, min(GRID_SLICES, len(ct)) + 2)
                      .round().astype(int)[1:-1])        # inner slices: not the scan's ends
    mri_range = tuple(float(v) for v in np.percentile(mri, (0.5, 99.5)))
    rows = [[mri[k], synthetic[k], ct[k], np.abs(synthetic[k] - ct[k])] for k in picks]
    return save_grid_png(path, rows, overwrite=True,
                         titles=["input MRI", "synthetic CT", "true CT",
                                 f"|error| 0-{ERROR_DISPLAY_HU:g} HU"],
                         value_ranges=[mri_range, DISPLAY_CT_WINDOW_HU, DISPLAY_CT_WINDOW_HU,
                                       (0.0, ERROR_DISPLAY_HU)],
                         row_labels=[f"slice {k}" for k in picks])


def demo_subject(dataset: CtmriConfig):
    """The phantom subject the demo translates, and a line saying what it is.

    Phantom v2 (``synthetic_v2*``): the first subject of the held-out-domain test split when the
    config has one (an MRI contrast and geometry that no training subject has: as close to a new
    user's scan as the phantom gets), else the last test subject; v1: the last subject (a test
    subject).
    """
    from ctmri_tf import phantom, phantom_v2
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import (SOURCE_SYNTHETIC_V2,
                                                               synthetic_v2_members)

    kwargs = dict(image_size=dataset.image_size, num_slices=dataset.num_slices, seed=dataset.seed)
    if dataset.source != SOURCE_SYNTHETIC_V2:
        return (phantom.make_subject(dataset.num_subjects - 1, **kwargs),
                "a test subject of phantom v1")
    members = synthetic_v2_members(dataset)
    heldout = members.get(phantom_v2.SPLIT_HELDOUT)
    index, domain = heldout[0] if heldout else members["test"][-1]
    subject = phantom_v2.make_subject(index, domain=domain, **kwargs)
    s = subject.settings
    sequence = {"spin_echo": "spin-echo T1", "spoiled_gre": "spoiled gradient echo",
                "mprage": "MPRAGE"}.get(s["sequence"], s["sequence"])
    what = (f"{sequence} (TR {s['tr_ms']:.0f} ms"
            + (f", TI {s['ti_ms']:.0f} ms" if s.get("ti_ms") else "")
            + f"), {s['pixel_spacing_mm']:.2f} mm in-plane, {s['slice_thickness_mm']:.1f} mm "
              f"slices" + (", skull-stripped" if s["skull_stripped"] else ""))
    if heldout:
        return subject, f"phantom v2 held-out domain, never seen in training: {what}"
    return subject, f"a phantom v2 test subject: {what}"


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
    ("pipeline", run_pipeline),
    ("results", report_results),
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
    if hasattr(result, "pipeline_root"):
        return result.pipeline_root
    return result


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(prog="python -m ctmri_tf.demo",
                        description="Run the ctmri-tf demo on synthetic phantoms.")
    parser.add_argument("--data-dir", type=Path, required=True, help="tfds data folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the demo outputs")
    parser.add_argument("--config", default=DEMO_DATASET,
                        help=f"dataset config (default {DEMO_DATASET}: phantom v2, 40 x 32 x 128 px)")
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
    print(f"  exports: {run.exports.resolve()} (TF Serving: tensorflow_model_server "
          f"--model_config_file={run.exports.resolve() / 'models.config'})")
    print(f"TensorBoard: tensorboard --logdir {run.pipeline_root.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

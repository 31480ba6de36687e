"""Inference speed: slices/s of the exported SavedModels and of ``ctmri translate`` end to end.

    python -m benchmarks.inference_speed [--exports BASE] [--models stargan,segmentation,classifier]
        [--image-size 256] [--batch-sizes 1,32] [--iterations 10] [--warmup 3]
        [--volume-slices 64] [--volume-runs 3] [--cli-runs 1] [--work-dir DIR]
        [--out benchmarks/results/inference_speed.json] [--overwrite] [--quick]

Models: the SavedModels under ``--exports`` (TF Serving's layout, ``python -m export.saved_model``;
the newest version of ``stargan/``, ``segmentation/``, ``classifier/``), or, without it, untrained
models of the ``paper`` architectures (StarGAN generator 64 filters / 6 residual blocks, always;
DeepLabV3+ on ResNet50V2 at ``--image-size`` and the classifier with 16 filters when ``--models``
lists them) exported into a temporary folder with ``export.saved_model`` (weights do not change
the speed of these networks).

Measurements, each on phantom slices in physical units (``ctmri_tf.phantom``: MRI signal, CT
in HU) at ``--image-size`` px, at every ``--batch-sizes``:

* ``stargan/translate``: MRI -> CT through the ``translate`` signature (normalisation,
  generator, back to HU in the graph);
* ``segmentation/segment``: body masks of MRI slices;
* ``classifier/classify``: CT/MRI probabilities of MRI slices.

Each call is timed until its outputs are NumPy arrays; ``--warmup`` untimed calls first, then the
median of ``--iterations``; slices/s = batch size / median. ``load_s`` is the time
``tf.saved_model.load`` took.

End to end: a ``--volume-slices`` phantom MRI volume written as NIfTI is translated to CT

* in this process with ``ctmri_tf.translate.translate_file`` (models loaded once by the
  untimed first run; then the median of ``--volume-runs`` runs): NIfTI reading, modality from
  the classifier (NIfTI has no modality tag; ``--from mri`` when there is no classifier), body
  mask from the segmentation export, translation in batches of 8 with the default test-time
  augmentation (``--tta lr``: two generator passes per slice, recorded as ``tta``), NIfTI
  writing;
* as a user runs it, ``python -m ctmri_tf.cli translate IN OUT --models BASE`` in a fresh
  process (``--cli-runs`` times, median): the above plus Python and TensorFlow start-up and
  SavedModel loading. Skipped by ``--quick``.

Peak RSS is this process's peak after each measurement (cumulative: exports and loaded models
stay in memory).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402
from ctmri_tf.errors import CtmriInputError  # noqa: E402
from ctmri_tf.flags import FlagParser  # noqa: E402

NAME = "inference_speed"
MODELS = {"stargan": "stargan", "segmentation": "segmentation", "deeplab": "segmentation",
          "classifier": "classifier"}
SIGNATURES = {"stargan": ("translate", "translated"), "segmentation": ("segment", "mask"),
              "classifier": ("classify", "probabilities")}
"""Served model -> (timed signature, output fetched)."""
QUICK = {"image_size": 32, "batch_sizes": "1,2", "volume_slices": 4, "volume_runs": 1}
TRANSLATE_BATCH = 8
KEY_FIELDS = ("measurement", "image_size", "batch_size", "models_from")


# ----------------------------------------------------------------------------- models

def export_untrained(base: Path, image_size: int, preset: str = "paper",
                     models=("stargan", "segmentation", "classifier")) -> None:
    """Export untrained models of ``preset``'s architectures (``ctmri_tf.configs``; seed 0)
    under ``base`` (version 1 of each): the StarGAN generator (always: ``translate_file``
    needs a translator), and the DeepLabV3+ at ``image_size`` px and the classifier when
    listed in ``models``."""
    import keras

    from ctmri_tf import configs
    from ctmri_tf.models import deeplab_v3_plus, modality_classifier
    from ctmri_tf.training.stargan import generator_from_config
    from ctmri_tf.export.saved_model import export_classifier, export_segmentation, export_stargan

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    stargan = configs.get_config("stargan", preset).model
    export_stargan(generator_from_config(stargan), base)
    if "segmentation" in models:
        segmentation = configs.get_config("segmentation", preset).model
        export_segmentation(deeplab_v3_plus(None, num_classes=segmentation.num_classes,
                                            width=segmentation.width,
                                            blocks=segmentation.blocks), base,
                            training_image_size=image_size)
    if "classifier" in models:
        classifier = configs.get_config("classifier", preset).model
        export_classifier(modality_classifier(filters=classifier.filters), base)


def latest_version(base: Path, name: str) -> Path:
    """The newest ``<base>/<name>/<version>/`` holding a SavedModel.

    Raises:
        CtmriInputError: naming the folder when there is none.
    """
    from ctmri_tf.export.saved_model import model_versions

    folder = Path(base) / name
    versions = [v for v in model_versions(folder) if (folder / str(v) / "saved_model.pb").is_file()]
    if not versions:
        raise CtmriInputError(folder, "holds no exported version (<version>/saved_model.pb); "
                                      "export one with python -m export.saved_model or leave "
                                      "out --exports")
    return folder / str(versions[-1])


def phantom_mri(num_slices: int, image_size: int):
    """Phantom 0 with ``num_slices`` slices of ``image_size`` px (MRI in signal units, CT in
    HU, spacing mm)."""
    from ctmri_tf import phantom

    return phantom.make_subject(0, image_size=image_size, num_slices=num_slices)


def spread(count: int, total: int):
    """``count`` slice indices spread evenly over ``total`` slices."""
    import numpy as np
    return np.linspace(0, total - 1, count).round().astype(int)


def signature_inputs(model: str, images):
    """The keyword inputs of the timed signature for a batch of MRI slices ``(B, H, W)``."""
    import tensorflow as tf

    batch = images.shape[0]
    image = tf.constant(images[..., None])
    if model == "stargan":
        return {"image": image, "target_domain": tf.constant(["ct"] * batch)}
    if model == "segmentation":
        return {"image": image, "modality": tf.constant(["mri"] * batch)}
    return {"image": image}


def measure_signature(base: Path, model: str, subject, batch_sizes: list[int], iterations: int,
                      warmup: int, models_from: str) -> list[dict]:
    """Rows of slices/s of ``model``'s timed signature at each batch size."""
    import tensorflow as tf

    version_dir = latest_version(base, model)
    start = time.perf_counter()
    loaded = tf.saved_model.load(str(version_dir))
    load_seconds = time.perf_counter() - start
    signature, output = SIGNATURES[model]
    if signature not in loaded.signatures:
        raise CtmriInputError(version_dir, f"has no {signature!r} signature")
    function = loaded.signatures[signature]
    rows = []
    for batch in batch_sizes:
        images = subject.mri[spread(batch, subject.mri.shape[0])]
        inputs = signature_inputs(model, images)
        try:
            function(**inputs)[output].numpy()           # first call: fail here, not timed
        except tf.errors.InvalidArgumentError as err:
            raise CtmriInputError(version_dir, f"rejected {batch} slices of {images.shape[1]} x "
                                               f"{images.shape[2]} px (--image-size must be the "
                                               f"size it was exported for): "
                                               f"{err.message.splitlines()[0]}") from None
        timing = common.time_calls(lambda: function(**inputs)[output].numpy(),
                                   iterations=iterations, warmup=warmup)
        rows.append({"measurement": f"{model}/{signature}", "models_from": models_from,
                     "model_dir": str(version_dir), "image_size": int(images.shape[1]),
                     "batch_size": batch, "load_s": load_seconds, **timing.as_dict(),
                     "slices_per_second": timing.per_second(batch),
                     "peak_rss_bytes": common.peak_rss_bytes()})
    return rows


# ----------------------------------------------------------------------------- end to end

def write_volume(path: Path, subject) -> Path:
    """The phantom's MRI (signal units) as a NIfTI file, affine ``diag(col, row, slice)`` mm."""
    import numpy as np

    from ctmri_tf.io import Volume, write_nifti

    slice_mm, row_mm, col_mm = (float(v) for v in subject.spacing)
    volume = Volume(data=np.asarray(subject.mri, np.float32), modality=None,
                    spacing=(slice_mm, row_mm, col_mm),
                    affine=np.diag([col_mm, row_mm, slice_mm, 1.0]))
    return write_nifti(volume, path)


def measure_translate_file(base: Path, volume_path: Path, out_dir: Path, runs: int,
                           models_from: str) -> dict:
    """slices/s of ``translate_file`` on the NIfTI volume, models loaded by an untimed run."""
    from ctmri_tf.io import read_nifti
    from ctmri_tf.translate import DEFAULT_TTA, ModelSet, translate_file

    models = ModelSet(base)
    source = None if models.has_classifier else "mri"
    decisions: list[str] = []
    num_slices, image_size = read_nifti(volume_path).shape[:2]

    def run(index: int, log=None) -> None:
        # min_confidence 0: a timing, whose classifier may be untrained (its vote near 0.5
        # would make translate_file abstain)
        translate_file(volume_path, out_dir / f"translated_{index}.nii.gz", source=source,
                       models=models, batch_size=TRANSLATE_BATCH, progress=False, log=log,
                       min_confidence=0.0)

    start = time.perf_counter()
    run(0, log=decisions.append)                     # loads and traces the models
    first = time.perf_counter() - start
    samples = []
    for index in range(1, runs + 1):
        began = time.perf_counter()
        run(index)
        samples.append(time.perf_counter() - began)
    timing = common.Timing(tuple(samples), warmup=1)
    return {"measurement": "translate_file (models loaded)", "models_from": models_from,
            "image_size": image_size, "batch_size": TRANSLATE_BATCH, "volume_slices": num_slices,
            "tta": DEFAULT_TTA,
            "first_run_s": first, **timing.as_dict(),
            "slices_per_second": timing.per_second(num_slices), "decisions": decisions,
            "peak_rss_bytes": common.peak_rss_bytes()}


def measure_cli(base: Path, volume_path: Path, out_dir: Path, runs: int, num_slices: int,
                image_size: int, models_from: str, source: str | None) -> dict:
    """Wall time of ``ctmri translate`` in a fresh process, ``runs`` times (median)."""
    samples = []
    peak = 0
    for index in range(runs):
        command = [sys.executable, "-m", "ctmri_tf.cli", "translate", str(volume_path),
                   str(out_dir / f"cli_{index}.nii.gz"), "--models", str(base),
                   "--batch-size", str(TRANSLATE_BATCH), "--min-confidence", "0"]
        if source:
            command += ["--from", source]
        began = time.perf_counter()
        done = subprocess.run(command, cwd=common.REPO_ROOT, capture_output=True, text=True)
        samples.append(time.perf_counter() - began)
        if done.returncode:
            raise RuntimeError(f"ctmri translate failed ({done.returncode}): "
                               f"{done.stderr[-2000:]}")
        peak = max(peak, common.peak_rss_children_bytes())
    timing = common.Timing(tuple(samples), warmup=0)
    return {"measurement": "ctmri translate (fresh process)", "models_from": models_from,
            "image_size": image_size, "batch_size": TRANSLATE_BATCH, "volume_slices": num_slices,
            **timing.as_dict(), "slices_per_second": timing.per_second(num_slices),
            "peak_rss_bytes": peak, "peak_rss_scope": "largest ctmri translate process"}


# ----------------------------------------------------------------------------- command line

COLUMNS = [
    common.Column("measurement", "measurement"),
    common.Column("image_size", "px"),
    common.Column("batch_size", "batch"),
    common.Column("volume_slices", "slices"),
    common.Column("median_s", "median s", "{:.4f}"),
    common.Column("slices_per_second", "slices/s", "{:.1f}"),
    common.Column("load_s", "load s", "{:.1f}"),
    common.Column("peak_rss_bytes", "peak RSS", common.format_bytes),
]


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(prog="python -m benchmarks.inference_speed",
                        description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", type=Path, default=None, metavar="BASE",
                        help="export base folder (default: untrained paper-architecture models "
                             "exported into a temporary folder)")
    parser.add_argument("--models", default="stargan,segmentation,classifier",
                        help="SavedModels to time: stargan, segmentation, classifier")
    parser.add_argument("--image-size", type=int, default=256, help="slice size, px (default 256)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--iterations", type=int, default=common.MIN_ITERATIONS,
                        help=f"timed calls per batch size, >= {common.MIN_ITERATIONS}")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--volume-slices", type=int, default=64,
                        help="slices of the NIfTI volume translated end to end (default 64)")
    parser.add_argument("--volume-runs", type=int, default=3,
                        help="timed translate_file runs after the first (default 3)")
    parser.add_argument("--cli-runs", type=int, default=1,
                        help="ctmri translate processes timed (default 1; 0 skips)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep exports, volume and outputs here (a new or empty folder; "
                             "default: a temporary folder, deleted)")
    common.add_output_arguments(parser, NAME)
    return parser


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.image_size, args.volume_slices = QUICK["image_size"], QUICK["volume_slices"]
        args.batch_sizes, args.volume_runs = QUICK["batch_sizes"], QUICK["volume_runs"]
        args.iterations = min(args.iterations, common.QUICK_ITERATIONS)
        args.warmup = min(args.warmup, common.QUICK_WARMUP)
        args.cli_runs = 0
    common.check_iterations(args.iterations, args.warmup, args.quick)
    models = common.parse_choices(args.models, MODELS, "model")
    batch_sizes = common.parse_ints(args.batch_sizes, "--batch-sizes")
    if args.image_size < 32 or args.image_size % 32:
        raise CtmriInputError(None, f"--image-size {args.image_size}: must be a multiple of 32 "
                                    f"(DeepLabV3+'s output stride)")
    if args.volume_slices < 1 or args.volume_runs < 1 or args.cli_runs < 0:
        raise CtmriInputError(None, "--volume-slices and --volume-runs must be >= 1, "
                                    "--cli-runs >= 0")
    if args.exports is not None and not Path(args.exports).is_dir():
        raise CtmriInputError(args.exports, "export base folder does not exist")
    common.check_out(args.out, args.overwrite)
    previous = common.previous_results(args)
    machine = common.machine_info()

    if args.work_dir is None:
        holder = tempfile.TemporaryDirectory(prefix="ctmri-inference-")
        work = Path(holder.name)
    else:
        holder, work = None, Path(args.work_dir)
        if work.exists() and (not work.is_dir() or any(work.iterdir())):
            raise CtmriInputError(work, "--work-dir must be a new or empty folder")
        work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        if args.exports is None:
            base = work / "exports"
            preset = "smoke" if args.quick else "paper"
            models_from = f"untrained {preset} architectures"
            print(f"[{NAME}] exporting untrained {preset} models to {base} ...", file=sys.stderr,
                  flush=True)
            start = time.perf_counter()
            export_untrained(base, args.image_size, preset, models)
            export_seconds = time.perf_counter() - start
        else:
            base, models_from, export_seconds = Path(args.exports), str(args.exports), None
        subject = phantom_mri(max(args.volume_slices, max(batch_sizes)), args.image_size)
        for model in models:
            print(f"[{NAME}] {model} ...", file=sys.stderr, flush=True)
            rows += measure_signature(base, model, subject, batch_sizes, args.iterations,
                                      args.warmup, models_from)
        volume_subject = phantom_mri(args.volume_slices, args.image_size)
        volume_path = write_volume(work / "volume" / "mri.nii.gz", volume_subject)
        out_dir = work / "translated"
        out_dir.mkdir()
        print(f"[{NAME}] translate_file on {args.volume_slices} slices ...", file=sys.stderr,
              flush=True)
        row = measure_translate_file(base, volume_path, out_dir, args.volume_runs, models_from)
        rows.append(row)
        if args.cli_runs:
            print(f"[{NAME}] ctmri translate ...", file=sys.stderr, flush=True)
            source = None if (base / "classifier").is_dir() else "mri"
            rows.append(measure_cli(base, volume_path, out_dir, args.cli_runs,
                                    args.volume_slices, args.image_size, models_from, source))
    finally:
        if holder is not None:
            holder.cleanup()
    for row in rows:
        row.setdefault("peak_rss_scope", "this process so far")
    notes = {"models_from": models_from, "export_s": export_seconds,
             "slices_per_second": "batch size (or volume slices) / median seconds per call"}
    common.finish(args, benchmark=NAME, rows=rows, columns=COLUMNS, notes=notes, machine=machine,
                  previous=previous, key_fields=KEY_FIELDS, metric="slices_per_second",
                  higher_is_better=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments or input (message on stderr)."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

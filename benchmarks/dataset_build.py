"""Dataset build speed: slices/s of the tfds ``ctmri`` builder, synthetic and from DICOM/NIfTI.

    python -m benchmarks.dataset_build [--configs synthetic,folder]
        [--num-subjects 40 --num-slices 32 --image-size 256]
        [--folder-subjects 10 --folder-slices 32 --folder-image-size 256]
        [--demo] [--work-dir DIR] [--in-process]
        [--out benchmarks/results/dataset_build.json] [--overwrite] [--quick]

Measurements (each build goes into a fresh tfds data folder, so it is generated, never reused):

* ``synthetic``: ``datasets.ctmri.ctmri_dataset_builder.build`` of the synthetic config of the
  given size (default: the default config ``synthetic``, 40 phantoms x 32 slices x 256 px):
  phantom rendering, body masks, MRI percentiles, tfds serialisation (zlib) and writing.
* ``folder``: first a ``manual_dir`` of ``--folder-subjects`` phantom subjects is written with the
  project's writers, CT as a DICOM series (``ctmri_tf.io.write_dicom_series``, int16 + rescale,
  one file per slice) and MRI as NIfTI (``ctmri_tf.io.write_nifti``, ``.nii.gz``); then the
  ``folder`` config is built from it: DICOM and NIfTI reading, automatic body masks
  (``ctmri_tf.body_mask``: no mask files are written), MRI percentiles, pairing and writing.
  Writing the manual_dir is timed separately and not counted in the build's slices/s.
* ``--demo``: ``make demo`` (``python -m ctmri_tf.demo``: dataset, training, evaluation, export,
  translation) in a child process with a fresh data folder, for its wall time and peak RSS
  (target < 4 GiB). With ``--quick``: the tiny dataset, smoke presets and 2 training steps.

slices/s counts the examples the build wrote (one per modality and slice: a subject of 32 slices
gives 64) per second of ``build``'s wall time. Each build runs in a fresh process (peak RSS of
that build alone) unless ``--in-process``.
"""
from __future__ import annotations

import argparse
import dataclasses
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

NAME = "dataset_build"
CONFIGS = {"synthetic": "synthetic", "folder": "folder"}
DEFAULT_SYNTHETIC = (40, 32, 256)
"""The default ``synthetic`` config: subjects, slices, pixels."""
DEFAULT_FOLDER = (10, 32, 256)
QUICK_SYNTHETIC = (3, 2, 32)
QUICK_FOLDER = (3, 2, 32)
TARGET_DEMO_PEAK_RSS = 4 * 1024 ** 3
KEY_FIELDS = ("config", "subjects", "slices_per_subject", "image_size")


def phantom_volumes(index: int, image_size: int, num_slices: int):
    """``(subject_id, ct Volume, mri Volume)`` of phantom ``index``: CT in HU, MRI in signal
    units, affine ``diag(col, row, slice spacing)`` mm (RAS+)."""
    import numpy as np

    from ctmri_tf import phantom
    from ctmri_tf.io import Volume

    subject = phantom.make_subject(index, image_size=image_size, num_slices=num_slices)
    slice_mm, row_mm, col_mm = (float(v) for v in subject.spacing)
    affine = np.diag([col_mm, row_mm, slice_mm, 1.0])
    geometry = dict(spacing=(slice_mm, row_mm, col_mm), affine=affine)
    return (f"subject{index:03d}",
            Volume(data=np.asarray(subject.ct, np.float32), modality="ct", **geometry),
            Volume(data=np.asarray(subject.mri, np.float32), modality="mri", **geometry))


def write_manual_dir(root: Path, subjects: int, num_slices: int, image_size: int) -> dict:
    """Write ``root/ct/<id>/`` (DICOM series) and ``root/mri/<id>/mri.nii.gz`` for ``subjects``
    phantoms; return the file count, bytes and seconds."""
    from ctmri_tf.io import write_dicom_series, write_nifti

    start = time.perf_counter()
    for index in range(subjects):
        subject_id, ct, mri = phantom_volumes(index, image_size, num_slices)
        write_dicom_series(ct, root / "ct" / subject_id, modality="ct")
        write_nifti(mri, root / "mri" / subject_id / "mri.nii.gz")
    seconds = time.perf_counter() - start
    files = [p for p in root.rglob("*") if p.is_file()]
    return {"seconds": seconds, "files": len(files),
            "bytes": int(sum(p.stat().st_size for p in files))}


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    """One build to time (picklable for the child process). Sizes: subjects, slices per
    subject, pixels per side; ``work`` is an empty folder the build may fill."""

    config: str
    subjects: int
    slices: int
    image_size: int
    work: str


def measure_build(values: dict) -> dict:
    """Time one build of ``BuildSpec(**values)``; return the result row."""
    from ctmri_tf.datasets.ctmri import synthetic_config
    from ctmri_tf.datasets.ctmri.ctmri_dataset_builder import build

    spec = BuildSpec(**values)
    work = Path(spec.work)
    row = {"config": spec.config, "subjects": spec.subjects, "slices_per_subject": spec.slices,
           "image_size": spec.image_size}
    if spec.config == "synthetic":
        if (spec.subjects, spec.slices, spec.image_size) == DEFAULT_SYNTHETIC:
            config = "synthetic"
        else:
            config = synthetic_config(spec.subjects, spec.slices, spec.image_size)
        report = build(config, data_dir=work / "tfds")
        row["input"] = "phantoms rendered during the build"
    else:
        manual = work / "manual_dir"
        written = write_manual_dir(manual, spec.subjects, spec.slices, spec.image_size)
        row.update({"manual_dir_write_s": written["seconds"], "manual_dir_files": written["files"],
                    "manual_dir_bytes": written["bytes"]})
        report = build("folder", data_dir=work / "tfds", manual_dir=manual)
        row["input"] = "DICOM CT series + NIfTI MRI, automatic body masks"
    if not report.built:
        raise RuntimeError(f"{report.data_path} was reused, not built: the work folder was not "
                           f"empty")
    row.update({"dataset": os.path.basename(os.path.dirname(report.data_path)),
                "examples": report.total_examples, "examples_per_split": report.num_examples,
                "build_s": report.seconds, "slices_per_second": report.slices_per_second,
                "size_bytes": report.size_bytes, "peak_rss_bytes": common.peak_rss_bytes()})
    return row


def measure_demo(work: Path, size: tuple[int, int, int] | None = None,
                 timeout_s: float = 7200) -> dict:
    """Run ``python -m ctmri_tf.demo`` as ``make demo`` does, in a child process; its wall time
    and peak RSS (the largest peak among the children waited for, ``getrusage(RUSAGE_CHILDREN)``:
    call it before any other large child process; the small ``git`` calls do not matter). ``size`` (subjects, slices, px)
    shrinks the demo's dataset (``--quick``); default: the demo's own, as ``make demo``."""
    command = [sys.executable, "-m", "ctmri_tf.demo", "--data-dir", str(work / "tfds"),
               "--out", str(work / "demo")]
    if size is not None:   # the tiny presets and 2 training steps: checks the path only
        command += ["--num-subjects", str(size[0]), "--num-slices", str(size[1]),
                    "--image-size", str(size[2]), "--preset", "smoke", "--steps", "2"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=common.REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout_s)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"the demo failed ({done.returncode}): {done.stderr[-2000:]}")
    peak = common.peak_rss_children_bytes()
    return {"config": "make demo", "input": " ".join(command[2:3] + command[7:]),
            "subjects": size[0] if size else None, "slices_per_subject": size[1] if size else None,
            "image_size": size[2] if size else None, "demo_s": seconds,
            "peak_rss_bytes": peak, "peak_rss_scope": "child process (RUSAGE_CHILDREN)",
            "meets_peak_rss_target": peak < TARGET_DEMO_PEAK_RSS}


COLUMNS = [
    common.Column("config", "config"),
    common.Column("subjects", "subjects"),
    common.Column("slices_per_subject", "slices"),
    common.Column("image_size", "px"),
    common.Column("examples", "examples"),
    common.Column("manual_dir_write_s", "write inputs s", "{:.1f}"),
    common.Column("build_s", "build s", "{:.1f}"),
    common.Column("slices_per_second", "slices/s", "{:.1f}"),
    common.Column("size_bytes", "on disk", common.format_bytes),
    common.Column("demo_s", "demo s", "{:.0f}"),
    common.Column("peak_rss_bytes", "peak RSS", common.format_bytes),
]


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(prog="python -m benchmarks.dataset_build",
                        description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="synthetic,folder",
                        help="comma-separated: synthetic, folder (default: both)")
    n, s, px = DEFAULT_SYNTHETIC
    parser.add_argument("--num-subjects", type=int, default=n, help=f"synthetic (default {n})")
    parser.add_argument("--num-slices", type=int, default=s, help=f"synthetic (default {s})")
    parser.add_argument("--image-size", type=int, default=px, help=f"synthetic (default {px})")
    n, s, px = DEFAULT_FOLDER
    parser.add_argument("--folder-subjects", type=int, default=n,
                        help=f"folder: phantom subjects written (default {n})")
    parser.add_argument("--folder-slices", type=int, default=s, help=f"folder (default {s})")
    parser.add_argument("--folder-image-size", type=int, default=px,
                        help=f"folder (default {px})")
    parser.add_argument("--demo", action="store_true",
                        help="also run make demo's python -m ctmri_tf.demo for its peak RSS")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the built datasets and manual_dir here (an empty or new "
                             "folder; default: a temporary folder, deleted)")
    parser.add_argument("--in-process", action="store_true",
                        help="build in this process (peak RSS cumulative); --quick implies it")
    common.add_output_arguments(parser, NAME)
    return parser


def _work_folder(args) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if args.work_dir is None:
        holder = tempfile.TemporaryDirectory(prefix="ctmri-dataset-build-")
        return Path(holder.name), holder
    work = Path(args.work_dir)
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise CtmriInputError(work, "--work-dir must be a new or empty folder (builds into it "
                                    "must generate, not reuse)")
    work.mkdir(parents=True, exist_ok=True)
    return work, None


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    configs = common.parse_choices(args.configs, CONFIGS, "config")
    sizes = {"synthetic": (args.num_subjects, args.num_slices, args.image_size),
             "folder": (args.folder_subjects, args.folder_slices, args.folder_image_size)}
    if args.quick:
        sizes = {"synthetic": QUICK_SYNTHETIC, "folder": QUICK_FOLDER}
        args.in_process = True
    for name, values in sizes.items():
        if min(values) < 1 or values[2] < 16:
            raise CtmriInputError(None, f"{name} sizes must be positive (image size >= 16 px), "
                                        f"got {values}")
    common.check_out(args.out, args.overwrite)
    previous = common.previous_results(args)
    machine = common.machine_info()
    work, holder = _work_folder(args)
    rows = []
    try:
        if args.demo:   # first: RUSAGE_CHILDREN must not include other children
            print(f"[{NAME}] make demo ...", file=sys.stderr, flush=True)
            rows.append(measure_demo(work / "demo", QUICK_SYNTHETIC if args.quick else None))
        from benchmarks import dataset_build   # importable by name in a child process
        for name in configs:
            subjects, slices, size = sizes[name]
            print(f"[{NAME}] {name}: {subjects} subjects x {slices} slices x {size} px ...",
                  file=sys.stderr, flush=True)
            spec = dataclasses.asdict(BuildSpec(name, subjects, slices, size, str(work / name)))
            if args.in_process:
                row = measure_build(spec)
                row["peak_rss_scope"] = "process so far (--in-process)"
            else:
                row = common.run_isolated(dataset_build.measure_build, spec)
                row["peak_rss_scope"] = "this build (own process)"
            rows.append(row)
    finally:
        if holder is not None:
            holder.cleanup()
    summary = []
    for row in rows:
        if row["config"] == "make demo":
            verdict = "meets" if row["meets_peak_rss_target"] else "misses"
            summary.append(f"make demo: peak RSS {common.format_bytes(row['peak_rss_bytes'])} "
                           f"({verdict} the target < "
                           f"{common.format_bytes(TARGET_DEMO_PEAK_RSS)}), "
                           f"{row['demo_s']:.0f} s")
    common.finish(args, benchmark=NAME, rows=rows, columns=COLUMNS,
                  notes={"slices_per_second": "examples written (one per modality and slice) "
                                              "per second of build wall time",
                         "targets": {"make_demo_peak_rss_bytes_max": TARGET_DEMO_PEAK_RSS}},
                  machine=machine, previous=previous, key_fields=KEY_FIELDS,
                  metric="slices_per_second", higher_is_better=True, summary=summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments or input (message on stderr)."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

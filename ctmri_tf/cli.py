"""The ``ctmri`` command line: ``ctmri <command> [options]``.

Each command is one function ``run(args) -> int`` registered with :func:`command`, which also
takes a small function adding the command's arguments::

    def _my_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("in_dir", type=Path)

    @command("my-command", help="one line for `ctmri --help`", arguments=_my_arguments)
    def _my_command(args: argparse.Namespace) -> int:
        from ctmri_tf.something import do_it   # import heavy modules here, not at the top
        do_it(args.in_dir)
        return 0

Start-up stays fast because this module imports only the standard library and
:mod:`ctmri_tf.errors`; each command imports what it needs (TensorFlow included) when it runs.
A :class:`~ctmri_tf.errors.CtmriInputError` is reported as ``ctmri: error: <message>`` on stderr
with exit status 2 (as argparse reports bad arguments); any other exception propagates with its
traceback, because it is a bug rather than a problem with the user's input. A
:class:`~ctmri_tf.errors.CtmriInputWarning` (an input read, but not exactly as stored: a skipped
localizer, gantry tilt...) is printed as ``ctmri: warning: <message>`` on stderr, every time.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctmri_tf import __version__
from ctmri_tf.errors import CtmriInputError, CtmriInputWarning
from ctmri_tf.flags import FlagParser

PROG = "ctmri"
INPUT_ERROR_STATUS = 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_COMMANDS: dict[str, Command] = {}


def command(name: str, *, help: str,
            arguments: Callable[[argparse.ArgumentParser], None]) -> Callable:
    """Register ``run(args) -> int`` as ``ctmri <name>``; its docstring is the command's
    ``--help`` description."""
    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in _COMMANDS:
            raise ValueError(f"ctmri command {name!r} is registered twice")
        _COMMANDS[name] = Command(name, help, arguments, run)
        return run
    return register


def build_parser() -> argparse.ArgumentParser:
    """The ``ctmri`` parser with one subparser per registered command."""
    parser = FlagParser(
        prog=PROG, description="CT <-> MRI translation toolkit (ctmri-tf).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show the library logs and warnings hidden by default "
                             "(TensorFlow's start-up messages, deprecations)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in FORWARDED.items():   # listed in --help; main() runs them before parsing
        subparsers.add_parser(name, help=text)
    for cmd in _COMMANDS.values():
        description = " ".join((cmd.run.__doc__ or cmd.help).split())  # argparse re-wraps it
        sub = subparsers.add_parser(cmd.name, help=cmd.help, description=description)
        cmd.arguments(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def run() -> int:
    """The ``ctmri`` console script: silence library noise (``ctmri_tf.console``; not with
    ``--verbose``) before any command imports TensorFlow, then :func:`main`."""
    from ctmri_tf import console

    console.quiet()
    return main()


FORWARDED = {
    "train": "train a model: ctmri train {stargan,cyclegan,segmentation,classifier} [flags] "
             "(ctmri train stargan --help)",
    "dataset": "build the tfds ctmri dataset: ctmri dataset build [--config NAME] "
               "[--data-dir DIR] ... (ctmri dataset --help)",
    "export": "export a training run as a TF Serving SavedModel: ctmri export --kind KIND "
              "--run-dir RUN --base DIR (ctmri export --help)",
}
"""Commands whose flags are those of their own command line (``ctmri_tf.training.cli``,
``ctmri_tf.datasets.ctmri.__main__``, ``ctmri_tf.export.saved_model``), forwarded as they are."""


def _forward(name: str, rest: list[str]) -> int:
    """Run a :data:`FORWARDED` command with its own flags."""
    if name == "train":
        from ctmri_tf import experiments
        from ctmri_tf.training import cli as training_cli

        if not rest or rest[0] in ("-h", "--help"):
            print(f"usage: {PROG} train EXPERIMENT [flags]\n\nexperiments:", file=sys.stdout)
            for entry in map(experiments.get, experiments.names()):
                print(f"  {entry.name:14s}{entry.summary}", file=sys.stdout)
            print(f"\n{PROG} train EXPERIMENT --help lists the flags.", file=sys.stdout)
            return 0 if rest else INPUT_ERROR_STATUS
        experiment, flags = rest[0], rest[1:]
        return training_cli.run_cli(
            lambda argv: training_cli.main(experiment, argv, prog=f"{PROG} train {experiment}"),
            flags)
    if name == "dataset":
        from ctmri_tf.datasets.ctmri.__main__ import main as dataset_main
        return dataset_main(rest, prog=f"{PROG} dataset")
    from ctmri_tf.export.saved_model import main as export_main
    return export_main(rest, prog=f"{PROG} export")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ctmri`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = [a for a in argv if a != "--verbose"]        # console.quiet() has read it already
    if rest and rest[0] in FORWARDED:
        try:
            return _forward(rest[0], rest[1:])
        except SystemExit as exit_:  # their --help or usage errors
            return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None
                                                                   else 1)
        except CtmriInputError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return INPUT_ERROR_STATUS
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", CtmriInputWarning)
            default_show = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, CtmriInputWarning):
                    print(f"{PROG}: warning: {message}", file=sys.stderr)
                else:
                    default_show(message, category, filename, lineno, file, line)
            warnings.showwarning = show
            return args._run(args)
    except CtmriInputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return INPUT_ERROR_STATUS


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def _overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR if it exists (default: refuse)")


def _labelme_to_masks_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("in_dir", metavar="IN_DIR", type=Path,
                        help="folder of labelme .json files (images beside them are checked)")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path,
                        help="folder to create with one <stem>.png mask per .json file")
    _overwrite_argument(parser)


@command("labelme-to-masks", help="labelme JSON annotations -> 0/255 body mask PNGs",
         arguments=_labelme_to_masks_arguments)
def _labelme_to_masks(args: argparse.Namespace) -> int:
    """Write the union of the polygons, rectangles and circles of every labelme .json file in
    IN_DIR as OUT_DIR/<stem>.png (uint8, 0 = outside, 255 = body). Lines and points are
    skipped. OUT_DIR appears only when every file has been converted."""
    from ctmri_tf.io.annotations import convert_labelme_to_masks

    written = convert_labelme_to_masks(args.in_dir, args.out_dir, overwrite=args.overwrite)
    print(f"wrote {len(written)} mask(s) to {args.out_dir}")
    return 0


def _labelme_to_voc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("in_dir", metavar="IN_DIR", type=Path, help="folder of labelme .json files")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="VOC dataset folder to create")
    parser.add_argument("--labels", metavar="LABELS_TXT", type=Path, required=True,
                        help="labels file: __ignore__, _background_, then one class per line")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="fraction of images in val.txt, in [0, 1) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train/val split (default: %(default)s)")
    _overwrite_argument(parser)


@command("labelme-to-voc", help="labelme JSON annotations -> PASCAL VOC segmentation dataset",
         arguments=_labelme_to_voc_arguments)
def _labelme_to_voc(args: argparse.Namespace) -> int:
    """Convert labelme .json files to a PASCAL VOC semantic segmentation dataset: JPEGImages/,
    SegmentationClass/ (palette PNGs of class ids, 255 = __ignore__),
    SegmentationClassVisualization/, ImageSets/Segmentation/{train,val,trainval}.txt and
    class_names.txt. 16-bit images are stretched min-max per image to 8-bit JPEG."""
    from ctmri_tf.io.annotations import convert_labelme_to_voc

    out_dir = convert_labelme_to_voc(args.in_dir, args.out_dir, args.labels,
                                     val_fraction=args.val_fraction, seed=args.seed,
                                     overwrite=args.overwrite)
    print(f"wrote VOC dataset to {out_dir}")
    return 0


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="tfds data folder the ctmri dataset was built in")
    parser.add_argument("--dataset-config", default="synthetic",
                        help="ctmri dataset config (default: %(default)s)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    parser.add_argument("--stargan", type=Path, metavar="RUN_DIR",
                        help="a StarGAN training run folder (its newest checkpoint)")
    parser.add_argument("--cyclegan", type=Path, metavar="RUN_DIR",
                        help="a CycleGAN training run folder (its newest checkpoint: both "
                             "generators)")
    parser.add_argument("--baselines", action="store_true",
                        help="evaluate the identity and histogram-matching baselines")
    parser.add_argument("--reference-split", default="train",
                        help="split whose histograms the histogram-matching baseline matches "
                             "onto; never the evaluated one (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT_DIR",
                        help="results folder to create, e.g. results/NAME")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="slices per translator call (default: %(default)s)")
    parser.add_argument("--no-mask-inputs", dest="mask_inputs", action="store_false",
                        help="keep the input background instead of setting it to -1")
    _overwrite_argument(parser)


@command("evaluate", help="MAE (HU) / PSNR / SSIM of CT<->MRI translation vs baselines",
         arguments=_evaluate_arguments)
def _evaluate(args: argparse.Namespace) -> int:
    """Evaluate translation on a built ctmri dataset split and write OUT_DIR/metrics.csv,
    metrics.json, comparison.md and grids/*.png. Paired data: MRI->CT MAE in HU, PSNR and SSIM
    (SynthRAD 2023 protocol) and CT->MRI on the [0, 1]-scaled MRI, whole image and body, per
    subject, mean +- std over subjects. Unpaired data: no reference exists, so only the
    cycle-reconstruction error is reported. A StarGAN or CycleGAN run (its newest checkpoint;
    CycleGAN: both generators) is applied at its training image size and its output resized
    back, so metrics stay at the dataset's resolution."""
    from ctmri_tf import baselines, evaluate, experiments

    if not (args.baselines or args.stargan or args.cyclegan):
        raise CtmriInputError(None, "nothing to evaluate: pass --stargan RUN_DIR, --cyclegan "
                                    "RUN_DIR and/or --baselines")
    translators = {}
    if args.baselines:
        if args.reference_split == args.split:
            raise CtmriInputError(None, f"--reference-split {args.reference_split} is the "
                                        f"evaluated split: histogram matching would see the "
                                        f"test targets")
        reference = baselines.reference_from_split(args.reference_split,
                                                   config=args.dataset_config,
                                                   data_dir=args.data_dir)
        translators.update(baselines.baseline_translators(reference))
    for name in ("stargan", "cyclegan"):   # the loaders name the folder when it is unusable
        if getattr(args, name):
            entry = experiments.get(name)
            translators[entry.title] = entry.translator(getattr(args, name))
    subjects = evaluate.load_subjects(args.split, config=args.dataset_config,
                                      data_dir=args.data_dir)
    evaluate.evaluate(translators, subjects, args.out, mask_inputs=args.mask_inputs,
                      batch_size=args.batch_size, overwrite=args.overwrite)
    print((args.out / "comparison.md").read_text())
    print(f"wrote results to {args.out}")
    return 0


def _translate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", type=Path,
                        help="DICOM series folder or file, .nii/.nii.gz volume, or PNG/TIFF "
                             "image (or a folder of slices)")
    parser.add_argument("output", metavar="OUTPUT", type=Path,
                        help="where to write the translated scan, in INPUT's format: a .nii/"
                             ".nii.gz file, a DICOM series folder, a .png file or a folder of "
                             "16-bit PNGs")
    parser.add_argument("--to", choices=("ct", "mri"),
                        help="target modality (default: the other one)")
    parser.add_argument("--from", dest="source", choices=("ct", "mri"),
                        help="INPUT's modality, when neither a DICOM Modality tag nor the "
                             "physics rules and the exported classifier should decide it")
    parser.add_argument("--min-confidence", type=float, default=None, metavar="P",
                        help="refuse the classifier's vote below this calibrated confidence "
                             "and ask for --from (default: 0.9)")
    parser.add_argument("--models", type=Path, default=Path("exports"), metavar="DIR",
                        help="export base folder (stargan/, cyclegan_*/, segmentation/, "
                             "classifier/ as written by python -m export.saved_model) or a "
                             "StarGAN/CycleGAN training run folder (default: %(default)s)")
    parser.add_argument("--image-size", type=int, metavar="PX",
                        help="size the generator runs at (default: a run's training size, "
                             "else the segmentation export's, else the input's)")
    parser.add_argument("--body-mask", choices=("model", "threshold"), default="model",
                        help="model: the exported segmentation model when there is one, else "
                             "thresholds; threshold: always thresholds (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="slices per model call (default: %(default)s)")
    parser.add_argument("--series", metavar="UID",
                        help="SeriesInstanceUID to translate when the INPUT DICOM folder holds "
                             "several series (default: the largest axial CT/MR series; "
                             "localizers are skipped and everything skipped is named)")
    parser.add_argument("--tta", choices=("none", "lr", "lr+ud"), default="lr",
                        help="test-time augmentation: also translate each slice mirrored "
                             "left-right (lr), or left-right and up-down (lr+ud, 4 passes), "
                             "mirror back and average (default: %(default)s: the generators "
                             "train with left-right flips only)")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write the per-voxel standard deviation over the --tta "
                             "passes (HU for a CT output, the [0, 1] scale for MRI) as "
                             "<OUTPUT stem>_uncertainty.<same kind> (a DICOM output: "
                             "<OUTPUT>_uncertainty.nii.gz); needs --tta lr or lr+ud")
    parser.add_argument("--tile-overlap", type=float, default=0.5, metavar="F",
                        help="least fraction of a tile that neighbouring tiles share when a "
                             "slice is larger than the model's field of view, in [0, 1); "
                             "tiles are blended with a Gaussian window (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUTPUT (and its uncertainty map) if it exists (never "
                             "INPUT; default: refuse)")


@command("translate", help="translate a CT scan to MRI or an MRI scan to CT (DICOM/NIfTI/PNG)",
         arguments=_translate_arguments)
def _translate(args: argparse.Namespace) -> int:
    """Translate INPUT (a DICOM series, a NIfTI volume, or PNG/TIFF slices) to the other
    modality with the exported StarGAN (or CycleGAN) and write OUTPUT in the same format: NIfTI
    with the input's affine and header, a DICOM series with new UIDs and the target Modality, or
    16-bit PNG (CT as HU + 1024, MRI scaled to 0..65535). The modality comes from --from, else
    the DICOM Modality tag (other than CT/MR: refused), else physics (values below -200 are CT),
    else the exported classifier (majority vote over slices, refused below --min-confidence).
    The models' data card (what they were trained on) is printed, with a warning for each way
    INPUT is far from it. Outside
    the body (the exported segmentation model, else thresholds) the output is air: -1000 HU for
    CT, 0 for MRI. Slices are translated at the model's pixel spacing, in Gaussian-blended
    tiles when larger than its field of view, and with --tta lr (default) also mirrored
    left-right, the passes averaged; --uncertainty writes their standard deviation beside
    OUTPUT. The output appears only when complete; INPUT is never modified."""
    from ctmri_tf.translate import MIN_CONFIDENCE, ModelSet, translate_file

    models = ModelSet(args.models, image_size=args.image_size,
                      use_segmenter=args.body_mask == "model")
    min_confidence = MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence
    if not 0.0 <= min_confidence <= 1.0:
        raise CtmriInputError(None, f"--min-confidence must be in [0, 1], got {min_confidence}")
    translate_file(args.input, args.output, to=args.to, source=args.source, models=models,
                   overwrite=args.overwrite, batch_size=args.batch_size, log=print,
                   series=args.series, min_confidence=min_confidence, tta=args.tta,
                   tile_overlap=args.tile_overlap, uncertainty=args.uncertainty)
    return 0


def _pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="run the pipeline of a YAML config in this process",
                             description="Run ExampleGen, StatisticsGen, SchemaGen, "
                                         "ExampleValidator, Trainer, Evaluator and Pusher; "
                                         "components whose inputs, parameters and code are "
                                         "unchanged are skipped (cached).")
    run.add_argument("--config", type=Path, required=True, metavar="FILE",
                     help="pipeline config YAML, e.g. ctmri_tf/pipeline/configs/demo.yaml")
    run.add_argument("--no-cache", dest="cache", action="store_false",
                     help="execute every component, even unchanged ones")
    lineage = actions.add_parser("lineage", help="print the chain from an export back to the "
                                                 "dataset",
                                 description="Print, one line per execution, the components "
                                             "(execution id, parameters, artifact) behind "
                                             "EXPORT_DIR, back to the dataset.")
    lineage.add_argument("export_dir", metavar="EXPORT_DIR", type=Path,
                         help="a pushed version folder, <serving base>/<name>/<version>")
    lineage.add_argument("--metadata", type=Path, metavar="STORE",
                         help="the metadata store (default: the one the Pusher recorded in "
                              "EXPORT_DIR/assets.extra/ctmri_pipeline.json)")
    compile_ = actions.add_parser(
        "compile", help="write the Kubeflow Pipelines / Vertex AI pipeline spec of a config",
        description="Compile the same components into a Kubeflow Pipelines (v2) pipeline spec: "
                    "one lightweight Python component per component of the pipeline, running "
                    "the installed ctmri_tf in the image (nothing is installed when a task "
                    "starts). Paths of the config are made absolute and must mean the same in "
                    "the tasks (a shared file system). Needs the kfp extra: pip install "
                    "'ctmri-tf[kfp]'.")
    compile_.add_argument("--config", type=Path, required=True, metavar="FILE",
                          help="pipeline config YAML, e.g. ctmri_tf/pipeline/configs/demo.yaml")
    compile_.add_argument("--output", type=Path, required=True, metavar="SPEC",
                          help="the pipeline spec to write: .yaml (KFP's format) or .json "
                               "(deprecated by KFP, still read by Vertex AI)")
    compile_.add_argument("--image", default="python:3.11", metavar="IMAGE",
                          help="the components' base image; it must have ctmri-tf[kfp] "
                               "installed (default: %(default)s, which has not: build one "
                               "FROM it)")
    compile_.add_argument("--no-cache", dest="cache", action="store_false",
                          help="turn Kubeflow's caching off for every task (tasks that read "
                               "the serving base always have it off)")


@command("pipeline", help="train, validate, evaluate and push through the pipeline "
                          "(run, lineage, compile)", arguments=_pipeline_arguments)
def _pipeline(args: argparse.Namespace) -> int:
    """ctmri pipeline run --config FILE: run the TFX-style pipeline of FILE in this process,
    one line per component (executed or cached, seconds, outputs). ctmri pipeline lineage
    EXPORT_DIR: the executions behind a pushed export, back to the dataset. ctmri pipeline
    compile --config FILE --output SPEC: the same components as a Kubeflow Pipelines / Vertex
    AI pipeline spec."""
    if args.pipeline_command == "compile":
        from ctmri_tf.pipeline import config as pipeline_config
        from ctmri_tf.pipeline.kubeflow import compile_pipeline

        config = pipeline_config.load(args.config)
        path = compile_pipeline(config, args.output, image=args.image, enable_cache=args.cache)
        print(f"wrote the Kubeflow pipeline spec of {config.name} to {path} (image "
              f"{args.image})")
        return 0
    if args.pipeline_command == "lineage":
        from ctmri_tf.pipeline.lineage import lineage, store_for_export
        from ctmri_tf.pipeline.metadata import MetadataStore

        path = args.metadata or store_for_export(args.export_dir)
        if not Path(path).is_file():
            raise CtmriInputError(path, "no such pipeline metadata store")
        with MetadataStore(path) as store:
            for step in lineage(store, args.export_dir.absolute()):
                print(step.line())
        return 0
    from ctmri_tf.pipeline import config as pipeline_config
    from ctmri_tf.pipeline.components import run_pipeline

    config = pipeline_config.load(args.config)
    result = run_pipeline(config, log=lambda line: print(line, flush=True),
                          enable_cache=args.cache)
    executed = sum(r.state == "COMPLETE" for r in result.executions)
    store = Path(config.pipeline_root) / "metadata.sqlite"
    print(f"pipeline {config.name}: {executed} executed, {len(result.executions) - executed} "
          f"cached, {result.seconds:.1f} s; metadata {store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

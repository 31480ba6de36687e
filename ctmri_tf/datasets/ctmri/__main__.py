"""Build the tfds ``ctmri`` dataset, without apache-beam or, with ``--beam``, on Apache Beam.

    ctmri dataset build [--config synthetic] [--data-dir DIR] [--manual-dir DIR]
                        [--num-subjects N --num-slices N --image-size N --seed K]
                        [--overwrite] [--beam [--beam-options FLAGS]] [--verbose]

(from the checkout also ``python -m datasets.ctmri build ...``; the tfds spellings
``--data_dir``, ``--manual_dir``... work too).

``--beam`` (needs ``pip install -e '.[beam]'``) generates the subjects as a Beam pipeline on an
in-process runner; ``--beam-options`` passes comma-separated pipeline flags, e.g.
``direct_num_workers=2,direct_running_mode=multi_processing`` or another ``runner=...``.

``--num-subjects/--num-slices/--image-size/--seed`` override a synthetic config; the result is
the config ``synthetic_<subjects>x<slices>x<px>[_seed<k>]`` (``synthetic_v2_...`` from a v2
config; load it by that name). Prints where
the dataset went, its splits, its size and the generation throughput in slices per second.
"""
from __future__ import annotations

import sys

from ctmri_tf.errors import CtmriInputError
from ctmri_tf.flags import FlagParser

from .ctmri_dataset_builder import build, resolve_config


def main(argv: list[str] | None = None, *, prog: str = "python -m datasets.ctmri") -> int:
    parser = FlagParser(prog=prog,
                        description="Build the tfds ctmri dataset.")
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="generate a config of the dataset")
    build_parser.add_argument("--config", default="synthetic",
                              help="synthetic (default), synthetic_small, synthetic_v2 "
                                   "(domain-randomised, with a test_heldout_domain split), "
                                   "folder, folder_unpaired, synthetic_<n>x<slices>x<px> or "
                                   "synthetic_v2_<n>x<slices>x<px>")
    build_parser.add_argument("--data-dir", default=None,
                              help="tfds data folder (default: $TFDS_DATA_DIR or "
                                   "~/tensorflow_datasets)")
    build_parser.add_argument("--manual-dir", default=None,
                              help="your data for the folder configs: ct/<subject>/..., "
                                   "mri/<subject>/...")
    build_parser.add_argument("--num-subjects", type=int, help="synthetic: number of subjects")
    build_parser.add_argument("--num-slices", type=int, help="synthetic: slices per subject")
    build_parser.add_argument("--image-size", type=int, help="synthetic: pixels per side")
    build_parser.add_argument("--seed", type=int, help="synthetic: phantom seed")
    build_parser.add_argument("--verbose", action="store_true",
                              help="show the library logs and tfds messages hidden by default")
    build_parser.add_argument("--overwrite", action="store_true",
                              help="rebuild if the dataset already exists")
    build_parser.add_argument("--beam", action="store_true",
                              help="generate with Apache Beam, one subject per element "
                                   "(needs the beam extra; default runner: in-process)")
    build_parser.add_argument("--beam-options", default=None, metavar="FLAGS",
                              help="with --beam: comma-separated Beam pipeline flags without "
                                   "'--', e.g. direct_num_workers=2 or runner=...")
    args = parser.parse_args(argv)
    if args.beam_options and not args.beam:
        parser.error("--beam-options needs --beam")
    try:
        config = resolve_config(args.config, num_subjects=args.num_subjects,
                                num_slices=args.num_slices, image_size=args.image_size,
                                seed=args.seed)
        report = build(config, data_dir=args.data_dir, manual_dir=args.manual_dir,
                       overwrite=args.overwrite, beam=args.beam,
                       beam_options=args.beam_options)
    except CtmriInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

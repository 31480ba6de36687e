"""CycleGAN's run-level choice that needs no TensorFlow: which generator is the run's primary
one (``--direction``), so ``ctmri train cyclegan --help`` answers before TensorFlow loads.

``DIRECTIONS`` names the two generators: ``mri2ct`` (MRI -> CT) and ``ct2mri`` (CT -> MRI).
"""
from __future__ import annotations

DIRECTIONS = ("mri2ct", "ct2mri")
DEFAULT_DIRECTION = "mri2ct"


def add_arguments(parser) -> None:
    """CycleGAN's own flag (``ctmri train cyclegan``, ``python -m train.cyclegan``)."""
    parser.add_argument("--direction", choices=DIRECTIONS, default=None,
                        help="the run's primary generator, for export and evaluation "
                             "(default: mri2ct; a resumed run keeps its own unless given)")

"""``python -m train.stargan [flags]`` from the checkout (``ctmri train stargan [flags]`` anywhere).

The trainer is :func:`ctmri_tf.training.cli.main` with the ``stargan`` entry of
:mod:`ctmri_tf.experiments`; ``--help`` lists the flags.
"""
import sys

from ctmri_tf.training import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("stargan", argv, prog="python -m train.stargan")


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))

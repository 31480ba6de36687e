"""``python -m train.cyclegan [flags]`` from the checkout (``ctmri train cyclegan [flags]`` anywhere).

The trainer is :func:`ctmri_tf.training.cli.main` with the ``cyclegan`` entry of
:mod:`ctmri_tf.experiments`; ``--help`` lists the flags.
"""
import sys

from ctmri_tf.training import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("cyclegan", argv, prog="python -m train.cyclegan")


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))

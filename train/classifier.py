"""``python -m train.classifier [flags]`` from the checkout (``ctmri train classifier [flags]`` anywhere).

The trainer is :func:`ctmri_tf.training.cli.main` with the ``classifier`` entry of
:mod:`ctmri_tf.experiments`; ``--help`` lists the flags.
"""
import sys

from ctmri_tf.training import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("classifier", argv, prog="python -m train.classifier")


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))

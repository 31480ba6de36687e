"""``python -m export.saved_model --kind KIND --run-dir RUN --base DIR`` from the checkout
(``ctmri export ...``); the code is :mod:`ctmri_tf.export.saved_model`."""
import sys

from ctmri_tf.export.saved_model import main

if __name__ == "__main__":
    sys.exit(main())

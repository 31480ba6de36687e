"""``python -m datasets.ctmri build ...`` from the checkout (``ctmri dataset build ...``)."""
import sys

from ctmri_tf.datasets.ctmri.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

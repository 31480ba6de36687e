"""ctmri-tf: CT <-> MRI translation with TensorFlow and Keras.

Modules, each holding one thing:
    errors      the exception raised for bad user input (names the file and the problem)
    atomic      write-to-temporary-then-rename outputs
    io          DICOM, NIfTI, PNG/TIFF and Labelme readers and writers
    intensity   HU windowing and MRI percentile scaling to and from [-1, 1]
    body_mask   automatic body masks (threshold, largest component, hole filling)
    phantom     paired, registered CT/MRI head phantoms with true Hounsfield units
    data        tf.data input pipelines over the tfds ``ctmri`` dataset
    visualize   PNG grids and contact sheets
"""

__version__ = "0.1.0"

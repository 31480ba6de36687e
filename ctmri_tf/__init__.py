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
    models      StarGAN, CycleGAN, DeepLabV3+ (keras-cv), CT/MRI classifier
    losses      WGAN-GP, domain classification, LSGAN and L1 losses (per example)
    configs     one dataclass config per experiment, presets smoke / demo / paper
    training    strategies, checkpoints, TensorBoard summaries, the training loop
    metrics     MAE in HU, PSNR and SSIM (SynthRAD protocol), IoU and Dice
    evaluate    model-vs-baseline comparison tables and error-map grids
    serving     client for TF Serving's REST and gRPC APIs
    console     what the commands print: library noise silenced, ``--verbose`` to see it
"""
import sys as _sys

__version__ = "0.1.0"

if _sys.argv[:1] == ["-m"]:
    # ``python -m <module>`` is locating one of this project's commands (train.*, datasets.ctmri,
    # export.saved_model, ctmri_tf.demo, benchmarks.*): Python sets argv[0] to "-m" until the
    # module is found, which is before TensorFlow is imported, the moment its start-up noise can
    # still be silenced. Library use and test runs never get here.
    from ctmri_tf import console as _console

    _console.quiet()

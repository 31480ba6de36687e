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
"""

__version__ = "0.1.0"

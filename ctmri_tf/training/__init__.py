"""Model-agnostic distributed training machinery and the trainers built on it.

Modules, each holding one thing:
    strategy       ``make_strategy(name)``: default, one_device, mirrored, multi_worker_mirrored
    runtime        ``configure_keras(seed, precision)``: seeds and the Keras dtype policy
    schedules      learning-rate schedules (linear decay to zero over the last steps) and the
                   Adam optimizer every trainer builds with one
    run_dir        the run folder: ``config.json``, ``checkpoints/``, events, ``samples/``,
                   ``metrics.json``
    checkpointing  models, optimizers, step counter and RNG state in one ``tf.train.Checkpoint``
    restore        a trained model out of a run folder (the trainers' ``load_*`` functions)
    summaries      TensorBoard scalars, images and hyperparameters
    loop           the generic distributed loop (progress bar, periodic hooks) and the
                   ``TrainingTask`` protocol an algorithm implements
    translation_validation  PSNR/SSIM and sample grids the translation trainers report

Trainers (each a ``TrainingTask`` plus a ``load_*`` function for its run folders):
    stargan        StarGAN (Choi et al. 2018), CT <-> MRI with one generator
    cyclegan       CycleGAN (Zhu et al. 2017), one generator per direction, history pools
    image_pool     CycleGAN's 50-image history of generated images
    segmentation   DeepLabV3+ body segmentation (mean IoU / Dice at the end)
    classifier     the CT/MRI modality classifier (accuracy at the end)
"""

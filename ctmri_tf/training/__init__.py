"""Model-agnostic distributed training machinery and the trainers built on it.

Modules, each holding one thing:
    strategy       ``make_strategy(name)``: default, one_device, mirrored, multi_worker_mirrored
    runtime        ``configure_keras(seed, precision)``: seeds and the Keras dtype policy
    schedules      learning-rate schedules (linear decay to zero over the last steps)
    run_dir        the run folder: ``config.json``, ``checkpoints/``, ``logs/``, ``samples/``
    checkpointing  models, optimizers, step counter and RNG state in one ``tf.train.Checkpoint``
    summaries      TensorBoard scalars, images and hyperparameters
    loop           the generic distributed loop (progress bar, periodic hooks) and the
                   ``TrainingTask`` protocol an algorithm implements
    stargan        the StarGAN algorithm (Choi et al. 2018): models, optimizers, train steps
"""

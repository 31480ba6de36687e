"""TFX-style training pipeline, run in process (no TFX, no server).

    ctmri pipeline run --config ctmri_tf/pipeline/configs/demo.yaml
    ctmri pipeline lineage artifacts/demo/exports/stargan/1

Modules: :mod:`~ctmri_tf.pipeline.config` (the YAML config), :mod:`~ctmri_tf.pipeline.artifacts`
(typed artifacts), :mod:`~ctmri_tf.pipeline.metadata` (the SQLite store, shaped like ML
Metadata), :mod:`~ctmri_tf.pipeline.runner` (the embedded runner and its cache),
:mod:`~ctmri_tf.pipeline.components` (ExampleGen, StatisticsGen, SchemaGen, ExampleValidator,
Trainer, Evaluator, Pusher) and :mod:`~ctmri_tf.pipeline.lineage`. Importing any of them
imports no TensorFlow; the components import it when they run.
"""

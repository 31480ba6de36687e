"""TFX-style training pipeline, run in process (no TFX, no server).

    ctmri pipeline run --config ctmri_tf/pipeline/configs/demo.yaml
    ctmri pipeline lineage artifacts/demo/exports/stargan/1
    ctmri pipeline compile --config ctmri_tf/pipeline/configs/demo.yaml --output demo.yaml

Modules: :mod:`~ctmri_tf.pipeline.config` (the YAML config), :mod:`~ctmri_tf.pipeline.artifacts`
(typed artifacts), :mod:`~ctmri_tf.pipeline.metadata` (the SQLite store, shaped like ML
Metadata), :mod:`~ctmri_tf.pipeline.runner` (the embedded runner and its cache),
:mod:`~ctmri_tf.pipeline.components` (ExampleGen, StatisticsGen, SchemaGen, ExampleValidator,
Trainer, Evaluator, Pusher), :mod:`~ctmri_tf.pipeline.lineage` and
:mod:`~ctmri_tf.pipeline.kubeflow` (the same components as a Kubeflow Pipelines / Vertex AI
pipeline spec; the ``kfp`` extra). Importing any of them imports no TensorFlow (nor kfp); the
components import it when they run.
"""

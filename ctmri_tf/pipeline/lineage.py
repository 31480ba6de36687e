"""Lineage: from an artifact (a pushed export folder) back to the dataset it came from.

:func:`lineage` finds the newest artifact recorded with the given uri, then walks the events
backwards: the execution that produced it (its first OUTPUT event: the ``COMPLETE`` execution,
never a ``CACHED`` one that reused it), that execution's input artifacts, their producers, and
so on, depth first in input order, each execution once, until artifacts with no producer
(the Examples ExampleGen recorded). One :class:`Step` per execution, the artifact asked about
first. Importing this module imports no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ctmri_tf.errors import CtmriInputError
from ctmri_tf.pipeline.artifacts import Artifact
from ctmri_tf.pipeline.metadata import MetadataStore

PIPELINE_INFO = "assets.extra/ctmri_pipeline.json"
"""Written by Pusher into each pushed version folder (TF Serving ignores ``assets.extra``):
``{"runner": "embedded" | "kubeflow", "metadata": <store path>, "pipeline_root": ...,
"execution_id": ..., "execution_dir": ..., "model": <Model uri>, "pushed": <Unix time>,
"pushed_model": <the PushedModel's properties>}``: how ``ctmri pipeline lineage EXPORT_DIR``
finds the store, and how a runner without the store finds the pushed model's metric
(``components.pushed_versions``). Under Kubeflow ``metadata``, ``pipeline_root`` and
``execution_id`` are null (the lineage is in Kubeflow's metadata)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One execution on the way back: the artifact it produced (``output_name``: ``artifact``),
    the component, execution id, state, parameters and its inputs' names."""
    depth: int
    output_name: str
    artifact: Artifact
    component: str
    execution_id: int
    parameters: dict
    inputs: dict[str, int]         # input name -> artifact id

    def line(self) -> str:
        params = json.dumps(self.parameters, sort_keys=True, separators=(",", ":"))
        return (f"{'  ' * self.depth}{self.artifact.type_name} {self.artifact.uri} <- "
                f"{self.component} #{self.execution_id} {params}")


def lineage(store: MetadataStore, uri: str | os.PathLike) -> list[Step]:
    """The chain of executions behind the artifact at ``uri`` (see the module docstring).

    Raises:
        CtmriInputError: no artifact with ``uri`` in the store (naming both).
    """
    found = store.artifacts_at(uri)
    if not found:
        raise CtmriInputError(uri, f"is not an artifact recorded in the pipeline metadata "
                                   f"store {store.path}")
    steps: list[Step] = []
    seen: set[int] = set()

    def walk(artifact: Artifact, output_name: str, depth: int) -> None:
        execution_id = store.producer(artifact.id)
        if execution_id is None or execution_id in seen:
            return
        seen.add(execution_id)
        execution = store.execution(execution_id)
        inputs = store.inputs(execution_id)
        steps.append(Step(depth, output_name, artifact, execution["component"], execution_id,
                          execution["parameters"], {k: a.id for k, a in inputs.items()}))
        for name, upstream in inputs.items():
            walk(upstream, name, depth + 1)

    walk(found[0], found[0].type_name, 0)
    return steps


def store_for_export(export_dir: str | os.PathLike) -> Path:
    """The metadata store named by ``<export_dir>/assets.extra/ctmri_pipeline.json``.

    Raises:
        CtmriInputError: the folder has no such file (not pushed by a pipeline) or it is bad.
    """
    path = Path(export_dir) / PIPELINE_INFO
    if not path.is_file():
        raise CtmriInputError(export_dir, f"has no {PIPELINE_INFO}: it was not pushed by "
                                          f"ctmri pipeline run; pass --metadata STORE")
    try:
        record = json.loads(path.read_text())
        store = record["metadata"]
    except (ValueError, KeyError, TypeError) as err:
        raise CtmriInputError(path, f"is not a pipeline record ({err})") from None
    if store is None:
        raise CtmriInputError(export_dir, f"was pushed by a {record.get('runner')} pipeline run "
                                          f"(execution {record.get('execution_dir')}): its "
                                          f"lineage is in that runner's metadata, not in a "
                                          f"ctmri store")
    return Path(store)

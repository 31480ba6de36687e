"""Typed pipeline artifacts (the names of TFX's standard artifacts).

An artifact is a file or folder one component execution wrote (or, for :class:`Examples` and
:class:`PushedModel`, the dataset and the served version folder it put in place), described by
its ``type_name``, its ``uri`` (an absolute path) and JSON ``properties``. The ``fingerprint``
property identifies its content; the runner's cache keys are built from it:

* :class:`Examples`: sha256 of the built dataset's ``dataset_info.json`` (set by ExampleGen),
  so a rebuild of the same config gives the same fingerprint;
* :class:`PushedModel`: sha256 of its uri and the pushed Model's fingerprint (set by Pusher);
* every other artifact: :func:`content_fingerprint` of its uri, computed by the runner when the
  component sets none: sha256 over the relative paths and bytes of every file below it.

Importing this module imports no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar


@dataclasses.dataclass
class Artifact:
    """One artifact: ``uri`` (absolute path), ``properties`` (JSON-serialisable) and, once
    recorded in a :class:`~ctmri_tf.pipeline.metadata.MetadataStore`, its ``id``."""

    type_name: ClassVar[str] = "Artifact"
    uri: str
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    id: int | None = None

    @property
    def fingerprint(self) -> str:
        return str(self.properties.get("fingerprint", ""))

    def __str__(self) -> str:
        return f"{self.type_name} {self.uri}"


class Examples(Artifact):
    """A built tfds ``ctmri`` dataset (``uri``: ``<data_dir>/ctmri/<config>/<version>``);
    properties ``config``, ``data_dir``, ``splits`` ({split: slices})."""
    type_name = "Examples"


class ExampleStatistics(Artifact):
    """``statistics.json``: per split and modality slice counts, shapes, spacings (mm),
    intensity percentiles inside the body (HU / MR signal), NaN/Inf counts."""
    type_name = "ExampleStatistics"


class Schema(Artifact):
    """``schema.json``: what the examples must satisfy (see ``components.infer_schema``)."""
    type_name = "Schema"


class ExampleAnomalies(Artifact):
    """``anomalies.json``: the checks run and the anomalies found (none, or the run stops)."""
    type_name = "ExampleAnomalies"


class Model(Artifact):
    """A training run folder (``config.json``, ``checkpoints/``, TensorBoard logs);
    properties ``experiment``, ``preset``, ``steps``."""
    type_name = "Model"


class ModelEvaluation(Artifact):
    """An evaluation folder of ``ctmri_tf.evaluate`` (``metrics.csv``, ``metrics.json``,
    ``comparison.md``, ``grids/``); properties: the blessing metric of each translator."""
    type_name = "ModelEvaluation"


class ModelBlessing(Artifact):
    """``blessing.json`` (and an empty ``BLESSED`` or ``NOT_BLESSED`` file); properties
    ``blessed`` (bool), ``reasons`` (list of str), ``metric``, ``value``."""
    type_name = "ModelBlessing"


class PushedModel(Artifact):
    """A version folder in the TF Serving base (``<base>/<name>/<version>/``); properties
    ``serving_base``, ``model_name``, ``version``, ``metric``, ``value``, ``model_fingerprint``."""
    type_name = "PushedModel"


TYPES: dict[str, type[Artifact]] = {cls.type_name: cls for cls in (
    Artifact, Examples, ExampleStatistics, Schema, ExampleAnomalies, Model, ModelEvaluation,
    ModelBlessing, PushedModel)}


def make(type_name: str, uri: str, properties: dict | None = None,
         artifact_id: int | None = None) -> Artifact:
    """An artifact of the registered type ``type_name`` (an unknown name: plain Artifact)."""
    cls = TYPES.get(type_name)
    if cls is None:
        cls = type(type_name, (Artifact,), {"type_name": type_name})
    return cls(uri=uri, properties=dict(properties or {}), id=artifact_id)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over the relative path and bytes of every file below ``path`` (or of the file),
    in sorted order; a missing path hashes as empty."""
    root = Path(path)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() if file != root else b"")
        digest.update(b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()

"""The embedded pipeline runner: components run in this process, in dependency order.

A pipeline is a list of :class:`Node`\\ s. Each names its component function, its inputs
(``"Producer.output"`` of an earlier node, or a :class:`Resolver` that picks a recorded
artifact from the store, as TFX's resolver nodes) and its JSON parameters. :func:`run` orders
the nodes topologically (ties keep the list order) and, for each node:

1. resolves its inputs and computes the **cache key**: sha256 of the component name, its
   parameters (canonical JSON), the ``fingerprint`` of every input artifact (by input name;
   a missing optional input counts as ``null``) and the component's **code version**
   (:func:`code_version`: ``ctmri_tf.__version__``, the git commit of the checkout when there is
   one, and a sha256 of the component's module source, so that editing it invalidates the
   cache);
2. if a ``COMPLETE`` execution with that key exists and all its output uris still exist, it
   records a ``CACHED`` execution whose OUTPUT events point to those artifacts (nothing runs,
   nothing is written);
3. otherwise it records a ``RUNNING`` execution (id N), calls the component with an
   :class:`ExecutionContext` whose ``output_dir`` is a hidden temporary folder beside
   ``<pipeline_root>/<component>/<N>/``, renames that folder into place once the component
   returned, fingerprints the outputs (:func:`~ctmri_tf.pipeline.artifacts.content_fingerprint`
   unless the component set one) and records them, state ``COMPLETE``, with the timings.

A component that raises leaves no execution folder (the temporary one is removed), is recorded
``FAILED`` with the error as its note, and stops the run: the error propagates. Components write
only under ``ctx.output_dir``; ExampleGen (the tfds data folder) and Pusher (the serving base)
put their one outside output in place atomically themselves. Importing this module imports no
TensorFlow.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import ctmri_tf
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.pipeline import artifacts as artifact_types
from ctmri_tf.pipeline.artifacts import Artifact
from ctmri_tf.pipeline.metadata import MetadataStore


@dataclasses.dataclass(frozen=True)
class Resolver:
    """An input taken from the store rather than from an upstream node: ``resolve(store,
    inputs)`` gets the node's other, already resolved, inputs and returns a recorded artifact
    or None (then the input is absent: ``inputs[name]`` is None).

    ``without_store(inputs)``, when set, resolves the same input where there is no store (a
    Kubeflow task, :mod:`~ctmri_tf.pipeline.kubeflow`), and ``factory``, ``("module:function",
    {keyword arguments})``, rebuilds this resolver in another process (``function(**kwargs)``);
    without both such a runner passes None.
    """
    name: str
    resolve: Callable[[MetadataStore, dict[str, Artifact | None]], Artifact | None]
    without_store: Callable[[dict[str, Artifact | None]], Artifact | None] | None = None
    factory: tuple[str, Mapping[str, Any]] | None = None


@dataclasses.dataclass(frozen=True)
class Node:
    """One component of a pipeline.

    Attributes:
        name: the component's name (TFX's: ``ExampleGen``, ``Trainer``...), unique in the
            pipeline; its executions go to ``<pipeline_root>/<name>/<execution id>/``.
        function: ``function(ctx, inputs, **parameters) -> ComponentResult``.
        inputs: ``{input name: "Producer.output" | Resolver}`` (split at the last dot: a
            producer may be named ``Trainer.segmentation``, an output has no dot).
        parameters: JSON-serialisable keyword arguments (part of the cache key).
        outputs: the names of the outputs the component may return (it may return fewer,
            e.g. a Pusher that pushes nothing). Empty: undeclared, anything goes. A runner that
            must declare outputs before running (Kubeflow) needs them; when declared, this
            runner refuses a component returning another one.
    """
    name: str
    function: Callable[..., "ComponentResult"]
    inputs: Mapping[str, str | Resolver] = dataclasses.field(default_factory=dict)
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    outputs: tuple[str, ...] = ()


@dataclasses.dataclass
class ComponentResult:
    """What a component returns: its output artifacts (uris under ``ctx.output_dir``, or an
    outside location it put in place) and a one-line note for the console and the store."""
    outputs: dict[str, Artifact] = dataclasses.field(default_factory=dict)
    note: str = ""


@dataclasses.dataclass(frozen=True)
class ExecutionContext:
    """Handed to a component: where to write (``output_dir``, empty, renamed to
    ``final_dir`` when the component returns), its execution id, the store (read only, for
    components that look up earlier results) and the pipeline root. ``runner`` names the
    runner; under ``"kubeflow"`` there is no store, execution id nor pipeline root (None)."""
    output_dir: Path
    final_dir: Path
    execution_id: int | None
    store: MetadataStore | None
    pipeline_root: Path | None
    runner: str = "embedded"


@dataclasses.dataclass(frozen=True)
class ExecutionRecord:
    """One line of a run's report."""
    component: str
    execution_id: int
    state: str                     # COMPLETE or CACHED (a FAILED one raises)
    seconds: float
    outputs: dict[str, Artifact]
    note: str
    cached_from: int | None = None

    def line(self) -> str:
        """``Trainer      executed   12.3 s  #4  model=/root/Trainer/4/run  (note)``."""
        word = {"COMPLETE": "executed", "CACHED": "cached"}.get(self.state, self.state.lower())
        outputs = "  ".join(f"{name}={artifact.uri}" for name, artifact in self.outputs.items())
        reused = f" (of #{self.cached_from})" if self.cached_from else ""
        text = (f"{self.component:16s} {word:8s} {self.seconds:7.1f} s  #{self.execution_id}"
                f"{reused}  {outputs}")
        return text + (f"  {self.note}" if self.note else "")


@dataclasses.dataclass(frozen=True)
class RunResult:
    run_id: str
    pipeline_root: Path
    executions: list[ExecutionRecord]
    seconds: float

    def by_component(self) -> dict[str, ExecutionRecord]:
        return {record.component: record for record in self.executions}


# ----------------------------------------------------------------------------- code version

@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The checkout's ``git rev-parse HEAD`` (the folder holding ``ctmri_tf``), or ``""``
    (installed package, no git)."""
    folder = Path(ctmri_tf.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def code_version(function: Callable) -> str:
    """``<ctmri_tf version>+<git commit or "nogit">+<sha256 of the function's module source,
    12 hex digits>``."""
    module = inspect.getmodule(function)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        source = getattr(function, "__qualname__", repr(function))
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return f"{ctmri_tf.__version__}+{git_commit()[:12] or 'nogit'}+{digest}"


def cache_key(component: str, parameters: Mapping, inputs: Mapping[str, Artifact | None],
              version: str) -> str:
    """sha256 of the component name, its parameters, its inputs' fingerprints and the code
    version (canonical JSON)."""
    payload = {"component": component, "parameters": parameters, "code_version": version,
               "inputs": {name: None if a is None else [a.type_name, a.fingerprint]
                          for name, a in sorted(inputs.items())}}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- ordering

def topological_order(nodes: list[Node]) -> list[Node]:
    """The nodes with every producer before its consumers (ties in list order).

    Raises:
        CtmriInputError: a duplicate name, an input naming an unknown node, or a cycle.
    """
    by_name: dict[str, Node] = {}
    for node in nodes:
        if node.name in by_name:
            raise CtmriInputError(None, f"pipeline: component {node.name!r} appears twice")
        by_name[node.name] = node
    upstream = {}
    for node in nodes:
        deps = set()
        for name, source in node.inputs.items():
            if isinstance(source, Resolver):
                continue
            producer, _, _ = str(source).rpartition(".")
            if producer not in by_name:
                raise CtmriInputError(None, f"pipeline: {node.name} input {name!r} = "
                                            f"{source!r} names no component of the pipeline")
            deps.add(producer)
        upstream[node.name] = deps
    ordered, done = [], set()
    while len(ordered) < len(nodes):
        ready = [n for n in nodes if n.name not in done and upstream[n.name] <= done]
        if not ready:
            left = sorted(set(by_name) - done)
            raise CtmriInputError(None, f"pipeline: the inputs of {', '.join(left)} form a cycle")
        ordered.append(ready[0])
        done.add(ready[0].name)
    return ordered


# ----------------------------------------------------------------------------- running

def check_result(node: Node, result: Any) -> None:
    """Raise TypeError unless ``result`` is a ComponentResult with only declared outputs
    (when ``node.outputs`` declares them)."""
    if not isinstance(result, ComponentResult):
        raise TypeError(f"{node.name} returned {type(result).__name__}, not a ComponentResult")
    undeclared = sorted(set(result.outputs) - set(node.outputs)) if node.outputs else []
    if undeclared:
        raise TypeError(f"{node.name} returned the output(s) {', '.join(undeclared)} its node "
                        f"does not declare (outputs: {', '.join(node.outputs)})")


def _relocate(artifact: Artifact, tmp: Path, final: Path) -> None:
    uri = Path(artifact.uri)
    try:
        artifact.uri = os.fspath(final / uri.relative_to(tmp))
    except ValueError:
        artifact.uri = os.fspath(uri)        # outside the execution folder (Pusher, ExampleGen)


def _outputs_exist(outputs: Mapping[str, Artifact]) -> bool:
    return all(Path(artifact.uri).exists() for artifact in outputs.values())


def run(nodes: list[Node], pipeline_root: str | os.PathLike, *, pipeline: str = "ctmri",
        log: Callable[[str], None] | None = None,
        version_of: Callable[[Callable], str] = code_version,
        enable_cache: bool = True) -> RunResult:
    """Run the pipeline ``nodes`` (see the module docstring); return one record per node.

    Args:
        nodes: the components; any order (sorted topologically).
        pipeline_root: where execution folders and ``metadata.sqlite`` live (created).
        pipeline: the pipeline's name (recorded with each execution).
        log: called with one line per component when it ends (:meth:`ExecutionRecord.line`).
        version_of: the code version of a component function (tests change it).
        enable_cache: ``False`` executes every component.

    Raises:
        whatever a component raises (after recording it ``FAILED``); CtmriInputError for a
        badly wired pipeline (before anything runs).
    """
    ordered = topological_order(list(nodes))
    root = Path(pipeline_root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    produced: dict[str, dict[str, Artifact]] = {}
    records: list[ExecutionRecord] = []
    start = time.perf_counter()
    with MetadataStore.at_root(root) as store:
        for node in ordered:
            inputs: dict[str, Artifact | None] = {}
            for name, source in node.inputs.items():
                if isinstance(source, Resolver):
                    continue
                producer, _, output = str(source).rpartition(".")
                if output not in produced[producer]:
                    raise CtmriInputError(None, f"pipeline: {node.name} input {name!r}: "
                                                f"{producer} produced no {output!r} "
                                                f"(it has {sorted(produced[producer])})")
                inputs[name] = produced[producer][output]
            for name, source in node.inputs.items():
                if isinstance(source, Resolver):
                    inputs[name] = source.resolve(store, dict(inputs))
            parameters = json.loads(json.dumps(dict(node.parameters), sort_keys=True))
            version = version_of(node.function)
            key = cache_key(node.name, parameters, inputs, version)
            present = {k: v for k, v in inputs.items() if v is not None}
            record = None
            if enable_cache:
                earlier = store.cached_execution(node.name, key)
                if earlier is not None:
                    outputs = store.outputs(earlier)
                    if _outputs_exist(outputs):
                        t0 = time.perf_counter()
                        execution_id = store.start_execution(
                            pipeline=pipeline, run_id=run_id, component=node.name,
                            parameters=parameters, code_version=version, cache_key=key,
                            inputs=present)
                        note = store.execution(earlier)["note"]
                        seconds = time.perf_counter() - t0
                        store.finish_execution(execution_id, "CACHED", outputs=outputs,
                                               note=note, cached_from=earlier, seconds=seconds)
                        record = ExecutionRecord(node.name, execution_id, "CACHED", seconds,
                                                 outputs, note, cached_from=earlier)
            if record is None:
                record = _execute(node, store, root, pipeline, run_id, parameters, version,
                                  key, inputs, present)
            produced[node.name] = record.outputs
            records.append(record)
            if log is not None:
                log(record.line())
    return RunResult(run_id, root, records, time.perf_counter() - start)


def _execute(node: Node, store: MetadataStore, root: Path, pipeline: str, run_id: str,
             parameters: dict, version: str, key: str, inputs: dict, present: dict
             ) -> ExecutionRecord:
    execution_id = store.start_execution(pipeline=pipeline, run_id=run_id, component=node.name,
                                         parameters=parameters, code_version=version,
                                         cache_key=key, inputs=present)
    folder = root / node.name
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / str(execution_id)
    if final.exists():          # left by a store that was deleted: never mix two executions
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{execution_id}.tmp-", dir=folder))
    t0 = time.perf_counter()
    try:
        ctx = ExecutionContext(output_dir=tmp, final_dir=final, execution_id=execution_id,
                               store=store, pipeline_root=root)
        result = node.function(ctx, dict(inputs), **parameters)
        check_result(node, result)
        os.replace(tmp, final)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        store.finish_execution(execution_id, "FAILED", note=f"{type(error).__name__}: {error}",
                               seconds=time.perf_counter() - t0)
        raise
    for artifact in result.outputs.values():
        _relocate(artifact, tmp, final)
        if not artifact.fingerprint:
            artifact.properties["fingerprint"] = artifact_types.content_fingerprint(artifact.uri)
    seconds = time.perf_counter() - t0
    store.finish_execution(execution_id, "COMPLETE", outputs=result.outputs, note=result.note,
                           seconds=seconds)
    return ExecutionRecord(node.name, execution_id, "COMPLETE", seconds, result.outputs,
                           result.note)


"""The pipeline of a config as a Kubeflow Pipelines (KFP v2) / Vertex AI pipeline spec.

    ctmri pipeline compile --config pipeline.yaml --output pipeline.yaml [--image IMAGE]

:func:`compile_pipeline` turns the nodes of :func:`~ctmri_tf.pipeline.components.pipeline_nodes`
into one KFP lightweight Python component per node, wired as the nodes' ``"Producer.output"``
inputs say, and compiles them (``kfp.compiler.Compiler``). Nothing here names a component:
the tasks, their inputs, outputs and parameters come from the nodes. Needs the ``kfp`` extra
(``pip install 'ctmri-tf[kfp]'``); importing this module imports neither kfp nor TensorFlow.

**A task** runs a generated shim (KFP serializes a component's source, so it stays tiny) that
imports the *installed* ``ctmri_tf`` and calls :func:`run_node` with the task's constants, which
describe its node: ``ctmri_node`` (the name), ``ctmri_function`` (the component function,
``module:name``), ``ctmri_parameters`` (JSON), ``ctmri_inputs`` (JSON: each input's
``"Producer.output"``, or its resolver's name and ``factory``) and ``ctmri_code_version`` (the
compiling checkout's :func:`~ctmri_tf.pipeline.runner.code_version` of the function). So a
task's inputs are what the embedded runner's cache key holds, and KFP's cache (keyed on them and
on the upstream artifacts, whose metadata holds our fingerprints) misses when they change, as the
embedded runner's does; a task does not depend on the rest of the config. :func:`run_node`
imports the function and runs the **same component function** as the embedded runner, with an
:class:`~ctmri_tf.pipeline.runner.ExecutionContext` whose ``output_dir`` is the path of the
task's ``ctmri_execution`` output artifact (the execution folder; ``runner="kubeflow"``, no
store, no execution id).

**Artifacts** cross tasks as KFP ``Output[Artifact]`` / ``Input[Artifact]`` (``system.Artifact``)
named as the node's outputs. An output the component wrote inside the execution folder is moved
to its KFP artifact's path (``<artifact path>/<its name>``: a Model's ``run/``, the
``statistics.json``...); one it put outside (ExampleGen's dataset, the Pusher's served version)
stays where it is. Either way the KFP artifact's metadata ``ctmri_artifact`` holds our artifact
as JSON (``type_name``, ``uri``, ``properties`` with the ``fingerprint``; JSON text, because
KFP's metadata would turn integers into floats), and a downstream task rebuilds it from there;
the same JSON is the file ``ctmri_artifact.json`` in the KFP artifact's folder (which so always
exists: KFP's local cache treats a missing artifact path as a deleted output).
An output the component did not return (a Pusher that pushed nothing) has ``ctmri_artifact``
``null``; a task consuming it fails as the embedded runner does.

**Resolver inputs** (the Evaluator's currently pushed model) are no DAG edges: KFP has no store
to resolve them from. A task rebuilds the resolver from its ``factory`` and resolves them with
its ``without_store`` (for the pushed model: the Pusher's records in the serving base,
``components.pushed_versions``), or gets None when the resolver has neither. A task with a
resolver input is compiled with KFP's caching off (its result depends on more than its inputs).
A component function must be importable by name (a module-level function): compiling refuses
another.

**Paths** are absolute (``pipeline_nodes`` makes the config's absolute, as the compiler's
current folder sees them) and must mean the same in the tasks: a shared file system (on Vertex
AI, e.g. ``/gcs/BUCKET/...`` paths) for the tfds data folder, the schema and the serving base.
The image (``--image``, default :data:`DEFAULT_IMAGE`) must have ``ctmri-tf[kfp]`` installed:
nothing is pip-installed when a task starts (``install_kfp_package=False``, no
``packages_to_install``).

Unlike the embedded runner there is no ``metadata.sqlite`` (KFP records executions and artifacts
in its own ML Metadata; ``config.pipeline_root`` is unused: KFP writes under the pipeline root
given when the run is submitted) and ``ctmri pipeline lineage`` cannot follow a version a
Kubeflow run pushed (its record says so). Caching is KFP's: keyed on the component, image and
inputs (the constants above and the upstream artifacts' uris and metadata); unlike the embedded
runner's it does not check that a cached output (a served version) still exists, and the
Evaluator, which reads the serving base, is never cached, so a rerun evaluates again (the Pusher
then does not push the same model twice: ``already pushed``). In a local rerun with
``kfp.local.init(enable_caching=True)`` everything but the Evaluator and the Pusher was cached
(6 s instead of 36 s).
"""
from __future__ import annotations

import dataclasses
import json
import keyword
import linecache
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from ctmri_tf.errors import CtmriInputError
from ctmri_tf.pipeline import artifacts as artifact_types
from ctmri_tf.pipeline.artifacts import Artifact
from ctmri_tf.pipeline.runner import (ExecutionContext, Node, Resolver, check_result,
                                      code_version, topological_order)

DEFAULT_IMAGE = "python:3.11"
"""The components' default base image. It must have ``ctmri-tf[kfp]`` installed (build one
``FROM python:3.11`` with ``pip install 'ctmri-tf[kfp]'``): tasks install nothing."""
INSTALL_HINT = "pip install 'ctmri-tf[kfp]'"
RUNNER = "kubeflow"
EXECUTION_OUTPUT = "ctmri_execution"
"""Every task's extra output: the execution folder (``ctx.output_dir``)."""
METADATA_KEY = "ctmri_artifact"
ARTIFACT_FILE = "ctmri_artifact.json"
"""Also in each output's KFP folder: the ``ctmri_artifact`` metadata, as a file."""
CONSTANTS = ("ctmri_node", "ctmri_function", "ctmri_parameters", "ctmri_inputs",
             "ctmri_code_version")
"""Every task's constant (string) inputs, in the shim's order."""


def _kfp():
    """``(kfp.dsl, kfp.compiler)``, or CtmriInputError naming the extra to install."""
    try:
        from kfp import compiler, dsl
    except ImportError as err:
        raise CtmriInputError(None, f"compiling for Kubeflow Pipelines needs kfp ({err}): "
                                    f"{INSTALL_HINT}") from None
    return dsl, compiler


# ----------------------------------------------------------------------------- planning

def _identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit() or keyword.iskeyword(ident):
        ident = "_" + ident
    return ident


def _function_name(node_name: str) -> str:
    """``ExampleGen`` -> ``example_gen``, ``Trainer.segmentation`` -> ``trainer_segmentation``
    (KFP names the component and the task after it: ``example-gen``)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", node_name)
    return _identifier(re.sub(r"_+", "_", re.sub(r"\W", "_", snake)).strip("_").lower() or "node")


@dataclasses.dataclass(frozen=True)
class TaskPlan:
    """How one node becomes a KFP component: the shim's ``function`` name, its artifact
    inputs ``{input name: (producer node, output name)}``, its ``outputs`` (declared by the node,
    then any other a consumer names) and the Python parameter name of each input and output
    (``identifiers``)."""
    node: Node
    function: str
    inputs: dict[str, tuple[str, str]]
    outputs: tuple[str, ...]
    identifiers: dict[str, str]

    @property
    def resolvers(self) -> dict[str, Resolver]:
        return {name: source for name, source in self.node.inputs.items()
                if isinstance(source, Resolver)}


def plan(nodes: list[Node]) -> list[TaskPlan]:
    """One :class:`TaskPlan` per node, producers first.

    Raises:
        CtmriInputError: a badly wired pipeline (see ``runner.topological_order``), an input
            naming an output its producer does not declare, or input/output names that clash
            once made Python identifiers.
    """
    ordered = topological_order(list(nodes))
    by_name = {node.name: node for node in ordered}
    consumed: dict[str, list[str]] = {node.name: [] for node in ordered}
    edges: dict[str, dict[str, tuple[str, str]]] = {}
    for node in ordered:
        edges[node.name] = {}
        for name, source in node.inputs.items():
            if isinstance(source, Resolver):
                continue
            producer, _, output = str(source).rpartition(".")
            declared = by_name[producer].outputs
            if not output or (declared and output not in declared):
                raise CtmriInputError(None, f"pipeline: {node.name} input {name!r} = {source!r}: "
                                            f"{producer} declares no output {output!r} (it "
                                            f"declares {', '.join(declared) or 'none'})")
            edges[node.name][name] = (producer, output)
            if output not in consumed[producer]:
                consumed[producer].append(output)
    plans, functions = [], set()
    for node in ordered:
        outputs = tuple(node.outputs) + tuple(o for o in consumed[node.name]
                                              if o not in node.outputs)
        identifiers: dict[str, str] = {}
        for name in [*edges[node.name], *outputs]:
            ident = _identifier(name)
            if ident in identifiers.values() or ident in CONSTANTS + (EXECUTION_OUTPUT,):
                raise CtmriInputError(None, f"pipeline: {node.name}: the input/output name "
                                            f"{name!r} clashes with another one in Kubeflow "
                                            f"(as {ident!r})")
            identifiers[name] = ident
        function, suffix = _function_name(node.name), 2
        while function in functions:
            function, suffix = f"{_function_name(node.name)}_{suffix}", suffix + 1
        functions.add(function)
        plans.append(TaskPlan(node, function, edges[node.name], outputs, identifiers))
    return plans


def shim_source(task: TaskPlan) -> str:
    """The source of the KFP component function of ``task`` (self-contained: KFP runs this
    text in the task; it imports the installed ctmri_tf)."""
    ids = task.identifiers
    params = [f"{name}: str" for name in CONSTANTS]
    params += [f"{ids[name]}: Input[Artifact]" for name in task.inputs]
    params += [f"{ids[name]}: Output[Artifact]" for name in task.outputs]
    params.append(f"{EXECUTION_OUTPUT}: Output[Artifact]")
    inputs = ", ".join(f"{name!r}: {ids[name]}" for name in task.inputs)
    outputs = ", ".join([*(f"{name!r}: {ids[name]}" for name in task.outputs),
                         f"{EXECUTION_OUTPUT!r}: {EXECUTION_OUTPUT}"])
    function = task.node.function
    where = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', '?')}"
    return (f"def {task.function}({', '.join(params)}):\n"
            f"    \"\"\"ctmri-tf pipeline node {task.node.name} ({where}).\"\"\"\n"
            f"    from ctmri_tf.pipeline import kubeflow\n"
            f"    kubeflow.run_node({', '.join(CONSTANTS)},\n"
            f"                      inputs={{{inputs}}},\n"
            f"                      outputs={{{outputs}}})\n")


def _component(task: TaskPlan, image: str):
    """The KFP lightweight component of ``task``: the shim, compiled from text (registered in
    ``linecache``, where KFP's ``inspect.getsource`` reads it back)."""
    dsl, _ = _kfp()
    source = shim_source(task)
    filename = f"<ctmri-kubeflow {task.function}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec", dont_inherit=True),  # noqa: S102 (our text)
         {"Input": dsl.Input, "Output": dsl.Output, "Artifact": dsl.Artifact,
          "__name__": __name__}, namespace)
    function = namespace[task.function]
    return dsl.component(function, base_image=image, install_kfp_package=False,
                         packages_to_install=[])


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def pipeline_name(config) -> str:
    """The config's ``name`` as KFP accepts it (lower case, digits, dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", config.name.lower()).strip("-") or "ctmri"


def function_path(function) -> str:
    """``module:name`` of a component function, checked to import back to it.

    Raises:
        CtmriInputError: it does not (a nested function, a lambda): a task could not run it.
    """
    path = f"{getattr(function, '__module__', '')}:{getattr(function, '__qualname__', '')}"
    try:
        found = _import(path)
    except (ImportError, AttributeError, ValueError):
        found = None
    if found is not function:
        raise CtmriInputError(None, f"pipeline: the component function {path} cannot be "
                                    f"imported by name, so a Kubeflow task cannot run it")
    return path


def _import(path: str):
    import importlib

    module, _, name = path.partition(":")
    value = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value


def task_constants(task: TaskPlan) -> dict[str, str]:
    """The constant inputs of ``task``'s KFP task (see the module docstring)."""
    inputs = {}
    for name, source in task.node.inputs.items():
        if isinstance(source, Resolver):
            factory = None if source.factory is None else [source.factory[0],
                                                           dict(source.factory[1])]
            inputs[name] = {"resolver": source.name, "factory": factory}
        else:
            inputs[name] = str(source)
    return {"ctmri_node": task.node.name, "ctmri_function": function_path(task.node.function),
            "ctmri_parameters": json.dumps(_canonical(dict(task.node.parameters)),
                                           sort_keys=True),
            "ctmri_inputs": json.dumps(_canonical(inputs), sort_keys=True),
            "ctmri_code_version": code_version(task.node.function)}


def build_pipeline(config, *, image: str = DEFAULT_IMAGE, enable_cache: bool = True):
    """The KFP pipeline (a ``@dsl.pipeline`` graph component) of ``config``.

    Args:
        config: a :class:`~ctmri_tf.pipeline.config.PipelineConfig` (``pipeline_nodes`` makes
            its paths absolute).
        image: the components' base image (with ``ctmri-tf[kfp]`` installed).
        enable_cache: ``False`` turns KFP's caching off for every task (tasks with resolver
            inputs always have it off).
    """
    from ctmri_tf.pipeline.components import pipeline_nodes

    dsl, _ = _kfp()
    plans = plan(pipeline_nodes(config))
    constants = {task.node.name: task_constants(task) for task in plans}
    components = {task.node.name: _component(task, image) for task in plans}
    by_name = {task.node.name: task for task in plans}
    description = (f"ctmri-tf pipeline {config.name}: "
                   + ", ".join(task.node.name for task in plans))

    def ctmri_pipeline():
        tasks = {}
        for task in plans:
            arguments = dict(constants[task.node.name])
            for name, (producer, output) in task.inputs.items():
                arguments[task.identifiers[name]] = tasks[producer].outputs[
                    by_name[producer].identifiers[output]]
            kfp_task = components[task.node.name](**arguments)
            kfp_task.set_caching_options(enable_cache and not task.resolvers)
            tasks[task.node.name] = kfp_task

    return dsl.pipeline(name=pipeline_name(config), description=description)(ctmri_pipeline)


def compile_pipeline(config, output_path: str | os.PathLike, *, image: str = DEFAULT_IMAGE,
                     enable_cache: bool = True) -> Path:
    """Write the KFP v2 pipeline spec of ``config`` (see the module docstring) to
    ``output_path`` (``.yaml``/``.yml``: KFP's format; ``.json``: deprecated by KFP, still read
    by Vertex AI); return the path.

    Raises:
        CtmriInputError: kfp is not installed, another file extension, a badly wired pipeline.
    """
    output_path = Path(output_path)
    if output_path.suffix not in (".yaml", ".yml", ".json"):
        raise CtmriInputError(output_path, "the pipeline spec is written as .yaml (or .json)")
    _, compiler = _kfp()
    pipeline = build_pipeline(config, image=image, enable_cache=enable_cache)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, os.fspath(output_path))
    return output_path


# ----------------------------------------------------------------------------- in the task

def read_artifact(kfp_artifact) -> Artifact | None:
    """Our artifact carried by a KFP artifact's metadata (None: its producer returned none)."""
    text = (kfp_artifact.metadata or {}).get(METADATA_KEY)
    if text is None:
        raise CtmriInputError(getattr(kfp_artifact, "uri", None),
                              f"is not an artifact of a ctmri-tf task (no {METADATA_KEY} "
                              f"metadata)")
    value = json.loads(text)
    if value is None:
        return None
    return artifact_types.make(value["type_name"], value["uri"], value["properties"])


def write_artifact(kfp_artifact, artifact: Artifact | None) -> None:
    """Carry ``artifact`` (None: absent) in ``kfp_artifact``'s metadata."""
    value = None if artifact is None else {"type_name": artifact.type_name, "uri": artifact.uri,
                                           "properties": artifact.properties}
    text = json.dumps(value, sort_keys=True, allow_nan=False)
    kfp_artifact.metadata[METADATA_KEY] = text
    if artifact is not None:       # shown as they are in the KFP / Vertex AI UIs
        kfp_artifact.metadata["ctmri_type"] = artifact.type_name
        kfp_artifact.metadata["ctmri_uri"] = artifact.uri


def _move_into(outputs: Mapping[str, Artifact], execution: Path, kfp_outputs: Mapping) -> None:
    """Move each output written inside ``execution`` to its KFP artifact's path, unless
    another output lies in the same top folder (then they stay together)."""
    tops: dict[str, list[str]] = {}
    relative: dict[str, Path] = {}
    for name, artifact in outputs.items():
        try:
            rel = Path(artifact.uri).relative_to(execution)
        except ValueError:
            continue                       # outside the execution folder: stays
        if rel.parts:
            relative[name] = rel
            tops.setdefault(rel.parts[0], []).append(name)
    for top, names in tops.items():
        if len(names) != 1:
            continue
        [name] = names
        target = Path(kfp_outputs[name].path)
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(execution / top), os.fspath(target / top))
        outputs[name].uri = os.fspath(target / relative[name])


def _node(ctmri_node: str, ctmri_function: str, ctmri_parameters: str, ctmri_inputs: str,
          outputs) -> Node:
    """The node a task's constants describe (its resolvers rebuilt from their factories)."""
    inputs: dict[str, str | Resolver] = {}
    for name, source in json.loads(ctmri_inputs).items():
        if isinstance(source, str):
            inputs[name] = source
        elif source.get("factory"):
            path, kwargs = source["factory"]
            inputs[name] = _import(path)(**kwargs)
        else:
            inputs[name] = Resolver(source["resolver"], lambda store, inputs: None)
    return Node(ctmri_node, _import(ctmri_function), inputs, json.loads(ctmri_parameters),
                tuple(name for name in outputs if name != EXECUTION_OUTPUT))


def run_node(ctmri_node: str, ctmri_function: str, ctmri_parameters: str, ctmri_inputs: str,
             ctmri_code_version: str, *, inputs: Mapping, outputs: Mapping) -> None:
    """Run one node in a KFP task (called by the generated shim; see the module docstring).

    Args:
        ctmri_node, ctmri_function, ctmri_parameters, ctmri_inputs, ctmri_code_version: the
            task's constants (:func:`task_constants`).
        inputs: ``{input name: kfp Input[Artifact]}``, the node's upstream inputs.
        outputs: ``{output name: kfp Output[Artifact]}`` and the ``ctmri_execution`` folder.
    """
    from ctmri_tf import console

    console.quiet()      # as every ctmri-tf entry point (CTMRI_VERBOSE=1 in the task: all)
    node = _node(ctmri_node, ctmri_function, ctmri_parameters, ctmri_inputs, outputs)
    resolved: dict[str, Artifact | None] = {}
    for name, source in node.inputs.items():
        if isinstance(source, Resolver):
            continue
        artifact = read_artifact(inputs[name])
        if artifact is None:
            producer, _, output = str(source).rpartition(".")
            raise CtmriInputError(None, f"pipeline: {node.name} input {name!r}: {producer} "
                                        f"produced no {output!r}")
        resolved[name] = artifact
    for name, source in node.inputs.items():
        if isinstance(source, Resolver):
            found = None if source.without_store is None else source.without_store(
                dict(resolved))
            resolved[name] = found
            print(f"{node.name}: input {name!r} ({source.name}): "
                  f"{found if found is not None else 'none'}"
                  f"{'' if source.without_store else ' (it cannot be resolved without a store)'}",
                  flush=True)
    execution = Path(outputs[EXECUTION_OUTPUT].path)
    if execution.exists():                 # a retried task: never mix two executions
        shutil.rmtree(execution)
    execution.mkdir(parents=True)
    ctx = ExecutionContext(output_dir=execution, final_dir=execution, execution_id=None,
                           store=None, pipeline_root=None, runner=RUNNER)
    t0 = time.perf_counter()
    try:
        result = node.function(ctx, dict(resolved), **node.parameters)
        check_result(node, result)
    except BaseException:
        shutil.rmtree(execution, ignore_errors=True)
        raise
    produced = dict(result.outputs)
    _move_into(produced, execution, outputs)
    for artifact in produced.values():
        if not artifact.fingerprint:
            artifact.properties["fingerprint"] = artifact_types.content_fingerprint(artifact.uri)
    for name, kfp_artifact in outputs.items():
        if name != EXECUTION_OUTPUT:
            write_artifact(kfp_artifact, produced.get(name))
            folder = Path(kfp_artifact.path)   # exists, or KFP's cache takes it for deleted
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ARTIFACT_FILE).write_text(kfp_artifact.metadata[METADATA_KEY] + "\n")
    seconds = time.perf_counter() - t0
    outputs[EXECUTION_OUTPUT].metadata.update({
        "ctmri_node": node.name, "ctmri_note": result.note, "ctmri_seconds": round(seconds, 3),
        "ctmri_code_version": ctmri_code_version,
        "ctmri_task_code_version": code_version(node.function)})
    shown = "  ".join(f"{name}={artifact.uri}" for name, artifact in produced.items())
    print(f"{node.name} executed {seconds:.1f} s  {shown}"
          + (f"  {result.note}" if result.note else ""), flush=True)

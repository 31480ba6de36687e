"""``ctmri pipeline compile``: the tiny pipeline of test_pipeline_end_to_end.py as a Kubeflow
Pipelines spec (one lightweight component per node, wired as the nodes say), run with
``kfp.local.SubprocessRunner`` (each task a new Python process importing the installed
ctmri_tf): the Evaluator resolves the version already in the serving base from its Pusher
record, blesses the model, and the Pusher pushes the next version. Needs the kfp extra."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctmri_tf import cli
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.pipeline import config as pipeline_config
from ctmri_tf.pipeline import kubeflow
from ctmri_tf.pipeline.artifacts import Model
from ctmri_tf.pipeline.components import pipeline_nodes
from ctmri_tf.pipeline.lineage import PIPELINE_INFO
from ctmri_tf.pipeline.runner import ComponentResult, Node, Resolver
from dataset_fixtures import tiny_dataset  # noqa: F401  (session fixture)
from pipeline_fixtures import write_tiny_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
EARLIER_MAE = 1e9
"""The MAE recorded for the version already in the serving base: the bar, beaten."""


def _noop(ctx, inputs, **parameters):
    return ComponentResult({})


def test_nodes_become_tasks_generically_dotted_names_undeclared_outputs_and_clashes():
    nodes = [
        Node("ExampleGen", _noop, {}, {}, ("examples",)),
        Node("Trainer.segmentation", _noop, {"examples": "ExampleGen.examples"}, {"steps": 2},
             ("model",)),
        Node("Trainer.stargan", _noop, {"examples": "ExampleGen.examples"}),
        Node("Evaluator.stargan", _noop, {"model": "Trainer.stargan.model",
                                          "pushed": Resolver("r", lambda store, inputs: None)}),
    ]
    plans = {p.node.name: p for p in kubeflow.plan(nodes)}
    assert [p.function for p in plans.values()] == ["example_gen", "trainer_segmentation",
                                                    "trainer_stargan", "evaluator_stargan"]
    assert plans["Trainer.segmentation"].inputs == {"examples": ("ExampleGen", "examples")}
    assert plans["Evaluator.stargan"].inputs == {"model": ("Trainer.stargan", "model")}
    assert list(plans["Evaluator.stargan"].resolvers) == ["pushed"]
    assert plans["Trainer.stargan"].outputs == ("model",)       # undeclared: the consumed ones
    source = kubeflow.shim_source(plans["Evaluator.stargan"])
    assert source.startswith("def evaluator_stargan(ctmri_node: str, ctmri_function: str, "
                             "ctmri_parameters: str, ctmri_inputs: str, ctmri_code_version: "
                             "str, model: Input[Artifact], ctmri_execution: Output[Artifact]):")
    assert "from ctmri_tf.pipeline import kubeflow" in source
    with pytest.raises(CtmriInputError, match="ExampleGen declares no output 'model'"):
        kubeflow.plan(nodes + [Node("Pusher", _noop, {"model": "ExampleGen.model"})])
    with pytest.raises(CtmriInputError, match="names no component"):
        kubeflow.plan(nodes + [Node("Pusher", _noop, {"model": "Trainer.model"})])
    with pytest.raises(CtmriInputError, match="clashes"):
        kubeflow.plan([Node("A", _noop, {}, {}, ("x-y", "x_y"))])
    assert kubeflow.task_constants(plans["Trainer.segmentation"])["ctmri_function"] == (
        f"{__name__}:_noop")
    with pytest.raises(CtmriInputError, match="cannot be imported by name"):
        kubeflow.task_constants(kubeflow.plan([Node("L", lambda ctx, inputs: None)])[0])


class _KfpArtifact:
    def __init__(self, metadata=None):
        self.uri, self.metadata = "/kfp/out", dict(metadata or {})


def test_our_artifacts_cross_tasks_in_kfp_metadata_as_json_and_an_absent_one_as_null():
    out = _KfpArtifact()
    kubeflow.write_artifact(out, Model("/runs/1", {"steps": 3, "fingerprint": "f"}))
    assert out.metadata["ctmri_type"] == "Model" and out.metadata["ctmri_uri"] == "/runs/1"
    back = kubeflow.read_artifact(_KfpArtifact(out.metadata))
    assert isinstance(back, Model) and back.properties == {"steps": 3, "fingerprint": "f"}
    assert type(back.properties["steps"]) is int        # KFP's Struct would make it 3.0
    none = _KfpArtifact()
    kubeflow.write_artifact(none, None)                 # a Pusher that pushed nothing
    assert kubeflow.read_artifact(none) is None
    with pytest.raises(CtmriInputError, match="not an artifact of a ctmri-tf task"):
        kubeflow.read_artifact(_KfpArtifact())


def test_compile_help_imports_neither_tensorflow_nor_kfp():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ctmri_tf.cli", "pipeline", "compile",
         "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0 and "--image IMAGE" in result.stdout, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "kfp")}


def test_without_kfp_compile_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"pipeline_root: {tmp_path / 'root'}\n")
    monkeypatch.setitem(sys.modules, "kfp", None)            # import kfp: ImportError
    assert cli.main(["pipeline", "compile", "--config", str(config), "--output",
                     str(tmp_path / "spec.yaml")]) == 2
    assert "pip install 'ctmri-tf[kfp]'" in capsys.readouterr().err
    assert not (tmp_path / "spec.yaml").exists()


def test_compiling_to_json_prints_no_library_deprecation(tiny_dataset, tmp_path):  # noqa: F811
    pytest.importorskip("kfp", reason="the kfp extra: pip install 'ctmri-tf[kfp]'")
    config = write_tiny_pipeline_config(tmp_path / "pipeline.yaml", pipeline_root=tmp_path,
                                        dataset=tiny_dataset, serving_base=tmp_path / "serving")
    spec = tmp_path / "spec.json"
    result = subprocess.run(          # the console script's entry point, warnings all shown
        [sys.executable, "-c", "import sys; from ctmri_tf.cli import run; sys.exit(run())",
         "pipeline", "compile", "--config", str(config), "--output", str(spec)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "default"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "" and result.stdout.startswith("wrote the Kubeflow pipeline spec")
    assert json.loads(spec.read_text())["pipelineInfo"]["name"] == "e2e"


def _seed_serving_base(serving: Path) -> Path:
    """Version 1 of ``stargan``, as a Pusher records it, with a poor MAE (no SavedModel: only
    its record is read)."""
    version = serving / "stargan" / "1"
    (version / PIPELINE_INFO).parent.mkdir(parents=True)
    (version / PIPELINE_INFO).write_text(json.dumps({
        "runner": "embedded", "metadata": None, "pushed": 1.0, "pushed_model": {
            "serving_base": str(serving), "model_name": "stargan", "version": 1,
            "experiment": "stargan", "model_fingerprint": "an earlier model", "metric": "mae",
            "direction": "mri->ct", "region": "body", "value": EARLIER_MAE}}))
    return version


@pytest.fixture(scope="module")
def compiled(tiny_dataset, tmp_path_factory):   # noqa: F811
    pytest.importorskip("kfp", reason="the kfp extra: pip install 'ctmri-tf[kfp]'")
    import yaml

    folder = tmp_path_factory.mktemp("kubeflow")
    serving = folder / "serving"
    _seed_serving_base(serving)
    config_file = write_tiny_pipeline_config(
        folder / "pipeline.yaml", pipeline_root=folder / "root", dataset=tiny_dataset,
        serving_base=serving, name="e2e-kfp", evaluator="beat_baselines: []")
    spec_file = folder / "pipeline.yaml.spec.yaml"
    t0 = time.perf_counter()
    assert cli.main(["pipeline", "compile", "--config", str(config_file), "--output",
                     str(spec_file)]) == 0
    seconds = time.perf_counter() - t0
    config = pipeline_config.load(config_file)
    return config, spec_file, yaml.safe_load(spec_file.read_text()), serving, seconds


def _constant(task, name):
    return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def test_the_spec_has_a_component_per_node_the_nodes_edges_and_parameters(compiled):
    config, _, spec, _, seconds = compiled
    assert seconds < 10
    nodes = pipeline_nodes(config)
    tasks = spec["root"]["dag"]["tasks"]
    by_node = {_constant(task, "ctmri_node"): (name, task) for name, task in tasks.items()}
    assert set(by_node) == {node.name for node in nodes}
    assert len(spec["components"]) == len(nodes) == len(spec["deploymentSpec"]["executors"])
    for node in nodes:
        name, task = by_node[node.name]
        component = spec["components"][task["componentRef"]["name"]]
        edges = {key: value["taskOutputArtifact"] for key, value in
                 task["inputs"].get("artifacts", {}).items()}
        expected = {key: source.split(".") for key, source in node.inputs.items()
                    if not isinstance(source, Resolver)}
        assert {key: [_constant(tasks[edge["producerTask"]], "ctmri_node"),
                      edge["outputArtifactKey"]] for key, edge in edges.items()} == expected
        assert set(task.get("dependentTasks", [])) == {by_node[p][0] for p, _ in
                                                       expected.values()}
        assert set(component["outputDefinitions"]["artifacts"]) == {*node.outputs,
                                                                   "ctmri_execution"}
        assert json.loads(_constant(task, "ctmri_parameters")) == json.loads(
            json.dumps(dict(node.parameters)))
        resolves = any(isinstance(s, Resolver) for s in node.inputs.values())
        assert task["cachingOptions"].get("enableCache", False) is not resolves, node.name
        executor = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        assert executor["image"] == kubeflow.DEFAULT_IMAGE
        assert "pip install" not in " ".join(executor["command"])        # nothing installed
        assert "kubeflow.run_node(" in executor["command"][-1]
    assert json.loads(_constant(by_node["Pusher"][1], "ctmri_parameters"))[
        "serving_base"] == config.pusher.serving_base
    assert json.loads(_constant(by_node["Trainer"][1], "ctmri_parameters"))["steps"] == 1
    assert _constant(by_node["Trainer"][1], "ctmri_function") == (
        "ctmri_tf.pipeline.components:trainer")
    evaluator_inputs = json.loads(_constant(by_node["Evaluator"][1], "ctmri_inputs"))
    assert evaluator_inputs["model"] == "Trainer.model"
    assert evaluator_inputs["pushed_model"] == {"resolver": "latest PushedModel", "factory": [
        "ctmri_tf.pipeline.components:pushed_model_resolver",
        {"serving_base": config.pusher.serving_base, "model_name": None}]}
    assert all("ctmri_config" not in task["inputs"]["parameters"] for task in tasks.values())


def _executor_outputs(run_dir: Path) -> dict:
    """``{task: {output: metadata}}`` from the local run's ``executor_output.json`` files."""
    found = {}
    for path in run_dir.glob("*/executor_output.json"):
        artifacts = json.loads(path.read_text()).get("artifacts", {})
        found[path.parent.name] = {name: entry["artifacts"][0].get("metadata", {})
                                   for name, entry in artifacts.items()}
    return found


def test_the_spec_runs_with_the_subprocess_runner_and_pushes_a_loadable_version(
        compiled, tmp_path, capsys):
    from kfp import components, local

    config, spec_file, spec, serving, _ = compiled
    kfp_root = tmp_path / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(kfp_root))
    t0 = time.perf_counter()
    try:
        components.load_component_from_file(str(spec_file))()
    finally:
        local.config.LocalExecutionConfig.instance = None       # no local runs beyond this
    seconds = time.perf_counter() - t0
    with capsys.disabled():        # the timing, in the -s / -rA output
        print(f"\nKubeflow local run (7 tasks, subprocesses): {seconds:.1f} s")
    [run_dir] = kfp_root.iterdir()
    outputs = _executor_outputs(run_dir)
    assert set(outputs) == set(spec["root"]["dag"]["tasks"])

    def ours(task, output):
        return kubeflow.read_artifact(_KfpArtifact(outputs[task][output]))

    model = ours("trainer", "model")
    assert isinstance(model, Model) and model.properties["steps"] == 1
    assert model.uri == str(run_dir / "trainer" / "model" / "run")    # moved to its KFP path
    assert (Path(model.uri) / "config.json").is_file()
    evaluation = ours("evaluator", "evaluation")
    assert (Path(evaluation.uri) / "metrics.json").is_file()
    assert set(evaluation.properties["values"]) == {"identity", "histogram matching", "StarGAN"}
    blessing = ours("evaluator", "blessing")
    assert blessing.properties["blessed"] is True
    assert (Path(blessing.uri) / "BLESSED").is_file()
    assert any("the pushed model's 1e+09 HU (stargan version 1)" in reason
               for reason in blessing.properties["reasons"]), blessing.properties["reasons"]
    pushed = ours("pusher", "pushed_model")
    export = serving / "stargan" / "2"
    assert pushed.uri == str(export) and pushed.properties["version"] == 2
    assert json.loads((run_dir / "pusher" / "pushed_model" / "ctmri_artifact.json").read_text()
                      )["uri"] == str(export)        # the KFP artifact's folder says where
    assert (export / "saved_model.pb").is_file()
    record = json.loads((export / PIPELINE_INFO).read_text())
    assert record["runner"] == "kubeflow" and record["metadata"] is None
    assert record["pushed_model"]["value"] == blessing.properties["value"]
    assert f'base_path: "{serving / "stargan"}"' in (serving / "models.config").read_text()
    assert outputs["pusher"]["ctmri_execution"]["ctmri_note"] == "pushed stargan version 2"
    assert cli.main(["pipeline", "lineage", str(export)]) == 2    # its lineage is in KFP's
    import tensorflow as tf            # imported already (the tiny dataset's build)

    assert "serving_default" in tf.saved_model.load(str(export)).signatures

"""The embedded pipeline runner, its metadata store, cache and lineage, with fake components
(pure Python, no TensorFlow: milliseconds); the ExampleValidator's checks, the blessing rule,
the Pusher's refusal and the config. The real components run end to end in
test_pipeline_end_to_end.py."""
import json
import sqlite3
from pathlib import Path

import pytest

from ctmri_tf import cli
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.pipeline import config as pipeline_config
from ctmri_tf.pipeline import runner
from ctmri_tf.pipeline.artifacts import Artifact, Examples, Model, ModelBlessing, PushedModel
from ctmri_tf.pipeline.components import (ExampleAnomalyError, blessing_decision,
                                          example_validator, infer_schema, pipeline_nodes, pusher,
                                          validate)
from ctmri_tf.pipeline.lineage import PIPELINE_INFO, lineage
from ctmri_tf.pipeline.metadata import MetadataStore
from ctmri_tf.pipeline.runner import ComponentResult, Node, Resolver

CALLS = []


def make_data(ctx, inputs, *, text):
    CALLS.append("MakeData")
    path = ctx.output_dir / "data.txt"
    path.write_text(text)
    return ComponentResult({"data": Examples(str(path), {"config": "fake"})}, "made")


def train(ctx, inputs, *, steps):
    CALLS.append("Train")
    folder = ctx.output_dir / "run"
    folder.mkdir()
    (folder / "weights.txt").write_text(Path(inputs["data"].uri).read_text() * steps)
    return ComponentResult({"model": Model(str(folder), {"experiment": "stargan"})})


def push(ctx, inputs, *, base):
    CALLS.append("Push")
    target = Path(base) / "stargan" / "1"
    (target / "assets.extra").mkdir(parents=True)
    (target / "saved_model.pb").write_text("fake")
    (target / PIPELINE_INFO).write_text(json.dumps({"metadata": str(ctx.store.path)}))
    return ComponentResult({"pushed": PushedModel(str(target), {"fingerprint": "p1"})},
                           "pushed stargan version 1")


def broken(ctx, inputs):
    CALLS.append("Broken")
    (ctx.output_dir / "half.txt").write_text("half an output")
    raise RuntimeError("disk full")


def nodes(text="abc", steps=2, extra=()):
    return [Node("Train", train, {"data": "MakeData.data"}, {"steps": steps}),   # out of order
            Node("MakeData", make_data, {}, {"text": text}), *extra]


def states(result):
    return [(r.component, r.state) for r in result.executions]


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()


def test_executions_write_their_folders_and_the_store_records_artifacts_and_events(tmp_path):
    root = tmp_path / "root"
    lines = []
    result = runner.run(nodes(), root, pipeline="fake", log=lines.append)
    assert states(result) == [("MakeData", "COMPLETE"), ("Train", "COMPLETE")]
    assert CALLS == ["MakeData", "Train"]
    made, trained = result.executions
    assert (root / "MakeData" / str(made.execution_id) / "data.txt").read_text() == "abc"
    model = trained.outputs["model"]
    assert model.uri == str(root / "Train" / str(trained.execution_id) / "run")
    assert (Path(model.uri) / "weights.txt").read_text() == "abcabc"
    assert not [p for p in root.rglob(".*") if p.name != "metadata.sqlite"]  # no temporaries
    assert lines[0].startswith("MakeData") and "executed" in lines[0] and "made" in lines[0]

    db = sqlite3.connect(root / "metadata.sqlite")
    assert {r[0] for r in db.execute("SELECT name FROM artifact_types")} == {"Examples", "Model"}
    rows = db.execute("SELECT component, parameters, code_version, state, seconds, ended >= "
                      "started FROM executions ORDER BY id").fetchall()
    assert [(r[0], json.loads(r[1]), r[3], r[5]) for r in rows] == [
        ("MakeData", {"text": "abc"}, "COMPLETE", 1), ("Train", {"steps": 2}, "COMPLETE", 1)]
    assert all(r[2].startswith("0.1.0+") and r[4] >= 0 for r in rows)
    events = db.execute("SELECT e.execution_id, e.kind, e.name, a.uri FROM events e JOIN "
                        "artifacts a ON a.id = e.artifact_id ORDER BY e.rowid").fetchall()
    data_uri = made.outputs["data"].uri
    assert events == [(made.execution_id, "OUTPUT", "data", data_uri),
                      (trained.execution_id, "INPUT", "data", data_uri),
                      (trained.execution_id, "OUTPUT", "model", model.uri)]
    fingerprints = [r[0] for r in db.execute("SELECT fingerprint FROM artifacts")]
    assert all(len(f) == 64 for f in fingerprints)


def test_a_rerun_with_unchanged_inputs_parameters_and_code_is_cached(tmp_path):
    first = runner.run(nodes(), tmp_path)
    CALLS.clear()
    again = runner.run(nodes(), tmp_path)
    assert states(again) == [("MakeData", "CACHED"), ("Train", "CACHED")]
    assert CALLS == []
    for old, new in zip(first.executions, again.executions):
        assert new.cached_from == old.execution_id and new.execution_id > old.execution_id
        assert {k: a.id for k, a in new.outputs.items()} == {k: a.id for k, a in
                                                             old.outputs.items()}
        assert not (tmp_path / new.component / str(new.execution_id)).exists()
    with MetadataStore.at_root(tmp_path) as store:
        cached = store.execution(again.executions[1].execution_id)
        assert cached["state"] == "CACHED"
        assert cached["cached_from"] == first.executions[1].execution_id
        assert store.outputs(cached["id"])["model"].id == first.executions[1].outputs["model"].id


def test_a_changed_parameter_or_code_version_executes_again(tmp_path):
    runner.run(nodes(), tmp_path)
    CALLS.clear()
    assert states(runner.run(nodes(steps=3), tmp_path)) == [("MakeData", "CACHED"),
                                                             ("Train", "COMPLETE")]
    CALLS.clear()
    assert states(runner.run(nodes(text="xyz"), tmp_path)) == [("MakeData", "COMPLETE"),
                                                                ("Train", "COMPLETE")]
    CALLS.clear()
    new_code = runner.run(nodes(text="xyz"), tmp_path,
                          version_of=lambda f: "2.0+edited" if f is make_data else "0.1.0+same")
    # MakeData's code changed: it runs again; its output has the same content (fingerprint),
    # so Train is a cache hit, but only with its own code version unchanged
    assert states(new_code)[0] == ("MakeData", "COMPLETE")
    CALLS.clear()
    same_again = runner.run(nodes(text="xyz"), tmp_path,
                            version_of=lambda f: "2.0+edited" if f is make_data else "0.1.0+same")
    assert states(same_again) == [("MakeData", "CACHED"), ("Train", "CACHED")]
    CALLS.clear()
    retrained = runner.run(nodes(text="xyz"), tmp_path,
                           version_of=lambda f: "2.0+edited" if f is make_data else "0.1.1")
    assert states(retrained) == [("MakeData", "CACHED"), ("Train", "COMPLETE")]
    assert CALLS == ["Train"]


def test_upstream_re_executed_with_the_same_content_keeps_downstream_cached(tmp_path):
    runner.run(nodes(), tmp_path)
    CALLS.clear()
    result = runner.run(nodes(), tmp_path, version_of=lambda f: "v2" if f is make_data
                        else runner.code_version(f))
    assert states(result) == [("MakeData", "COMPLETE"), ("Train", "CACHED")]


def test_a_deleted_output_is_produced_again(tmp_path):
    first = runner.run(nodes(), tmp_path)
    import shutil
    shutil.rmtree(first.executions[1].outputs["model"].uri)
    assert states(runner.run(nodes(), tmp_path)) == [("MakeData", "CACHED"),
                                                     ("Train", "COMPLETE")]


def test_a_failing_component_leaves_no_output_and_is_recorded_failed(tmp_path):
    pipeline = nodes(extra=[Node("Broken", broken, {"model": "Train.model"}),
                            Node("After", make_data, {"x": "Broken.data"}, {"text": "never"})])
    with pytest.raises(RuntimeError, match="disk full"):
        runner.run(pipeline, tmp_path)
    assert CALLS == ["MakeData", "Train", "Broken"]           # After never ran
    assert not (tmp_path / "Broken").exists() or not any((tmp_path / "Broken").iterdir())
    with MetadataStore.at_root(tmp_path) as store:
        failed = store.executions("Broken")
        assert [e["state"] for e in failed] == ["FAILED"]
        assert failed[0]["note"] == "RuntimeError: disk full" and failed[0]["seconds"] >= 0
        assert store.outputs(failed[0]["id"]) == {}
        assert store.executions("After") == []
    CALLS.clear()                 # a failure is never a cache hit: it runs (and fails) again
    with pytest.raises(RuntimeError):
        runner.run(pipeline, tmp_path)
    assert CALLS == ["Broken"]


def test_a_badly_wired_pipeline_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(CtmriInputError, match="names no component"):
        runner.run([Node("Train", train, {"data": "Nowhere.data"}, {"steps": 1})], tmp_path)
    cycle = [Node("A", make_data, {"x": "B.data"}, {"text": ""}),
             Node("B", make_data, {"x": "A.data"}, {"text": ""})]
    with pytest.raises(CtmriInputError, match="form a cycle"):
        runner.run(cycle, tmp_path)
    assert CALLS == []


def test_lineage_walks_back_from_a_pushed_export_to_the_dataset(tmp_path, capsys):
    base = tmp_path / "serving"
    pipeline = nodes(extra=[Node("Push", push, {"model": "Train.model"}, {"base": str(base)})])
    first = runner.run(pipeline, tmp_path / "root")
    runner.run(pipeline, tmp_path / "root")                # cached: lineage still names the
    export = base / "stargan" / "1"                         # executions that wrote the files
    with MetadataStore.at_root(tmp_path / "root") as store:
        steps = lineage(store, export)
    ids = {r.component: r.execution_id for r in first.executions}
    assert [(s.component, s.execution_id, s.depth) for s in steps] == [
        ("Push", ids["Push"], 0), ("Train", ids["Train"], 1), ("MakeData", ids["MakeData"], 2)]
    assert steps[1].parameters == {"steps": 2} and steps[2].artifact.type_name == "Examples"

    assert cli.main(["pipeline", "lineage", str(export)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"PushedModel {export} <- Push #{ids['Push']}")
    assert out[1].startswith("  Model ") and '{"steps":2}' in out[1]
    assert out[2].startswith("    Examples ") and "<- MakeData" in out[2]
    assert cli.main(["pipeline", "lineage", str(tmp_path)]) == 2
    assert "was not pushed by ctmri pipeline run" in capsys.readouterr().err


def test_resolver_inputs_come_from_the_store_and_enter_the_cache_key(tmp_path):
    seen = []

    def latest(store, inputs):
        found = store.artifacts_of_type("Model")
        return found[0] if found else None

    def use(ctx, inputs):
        seen.append(inputs["earlier"])
        return ComponentResult({})
    pipeline = [Node("Use", use, {"earlier": Resolver("latest Model", latest)})]
    runner.run(pipeline, tmp_path)
    assert seen == [None]
    runner.run(nodes(), tmp_path)                           # a Model appears in the store
    result = runner.run(pipeline, tmp_path)
    assert states(result) == [("Use", "COMPLETE")] and seen[-1].type_name == "Model"


# ----------------------------------------------------------------------------- ExampleValidator

def statistics(tamper=None):
    def modality(kind, **changes):
        values = {"slices": 6, "subjects": 1, "with_counterpart": 6, "shapes": [[32, 32]],
                  "pixel_spacing_mm": {"min": [1.0, 1.0], "max": [1.0, 1.0]},
                  "intensity_range": {"min": 0.0, "max": 1.0},
                  "body_percentiles": ({"p0.1": -950.0, "p1": -900.0, "p50": 30.0,
                                        "p99": 1200.0, "p99.9": 1500.0} if kind == "ct" else
                                       {"p0.1": 0.0, "p1": 10.0, "p50": 300.0, "p99": 900.0,
                                        "p99.9": 1000.0}),
                  "nan": 0, "inf": 0, "empty_masks": 0}
        values.update(changes)
        return values
    splits = {split: {"ct": modality("ct"), "mri": modality("mri")}
              for split in ("train", "validation", "test")}
    for (split, kind), changes in (tamper or {}).items():
        if changes is None:
            del splits[split][kind]
        else:
            splits[split][kind].update(changes)
    return {"dataset": "ctmri/synthetic_4x6x32", "uri": "/data/ctmri/synthetic_4x6x32/1.0.0",
            "splits": splits}


def test_statistics_count_slices_shapes_spacings_non_finite_values_and_body_percentiles():
    import numpy as np

    from ctmri_tf.pipeline.components import StatisticsAccumulator

    accumulator = StatisticsAccumulator()
    ct = np.full((8, 8), -1000.0, np.float32)
    ct[2:6, 2:6] = np.linspace(0.0, 1500.0, 16).reshape(4, 4)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    for subject, spacing in (("a", (1.0, 1.0)), ("b", (0.5, 0.8))):
        accumulator.add(image=ct, mask=mask, modality="ct", subject_id=subject,
                        pixel_spacing=spacing, intensity_range=(-160.0, 240.0),
                        has_counterpart=True)
    broken = np.full((4, 6), np.nan, np.float32)
    accumulator.add(image=broken, mask=np.zeros((4, 6), np.uint8), modality="mri",
                    subject_id="a", pixel_spacing=(1.0, 1.0), intensity_range=(0.0, 9.0),
                    has_counterpart=False)
    result = accumulator.result()
    assert result["ct"]["slices"] == 2 and result["ct"]["subjects"] == 2
    assert result["ct"]["shapes"] == [[8, 8]] and result["ct"]["with_counterpart"] == 2
    assert result["ct"]["pixel_spacing_mm"] == {"min": [0.5, 0.8], "max": [1.0, 1.0]}
    assert result["ct"]["nan"] == 0 and result["ct"]["empty_masks"] == 0
    p = result["ct"]["body_percentiles"]
    assert 0.0 <= p["p0.1"] < p["p50"] < p["p99.9"] <= 1500.0    # body only: no -1000 air
    assert result["mri"]["nan"] == 24 and result["mri"]["empty_masks"] == 1
    assert result["mri"]["body_percentiles"] == {} and result["mri"]["with_counterpart"] == 0


def test_the_inferred_schema_accepts_its_statistics_and_tampered_ones_are_anomalies():
    schema = infer_schema(statistics())
    checks, anomalies = validate(statistics(), schema)
    assert anomalies == [] and "ct_hu_range:test:ct" in checks and "paired:train:mri" in checks
    bad = statistics({("train", "ct"): {"nan": 3, "body_percentiles": {
        "p0.1": -1000.0, "p1": 0.0, "p50": 0.0, "p99": 0.0, "p99.9": 5200.0}},
        ("test", "mri"): None, ("validation", "ct"): {"shapes": [[64, 64]],
                                                      "with_counterpart": 4}})
    _, anomalies = validate(bad, schema)
    found = {(a["check"], a["split"], a["modality"]) for a in anomalies}
    assert found == {("finite", "train", "ct"), ("ct_hu_range", "train", "ct"),
                     ("modality_present", "test", "mri"), ("shape", "validation", "ct"),
                     ("paired", "validation", "ct")}
    hu = next(a for a in anomalies if a["check"] == "ct_hu_range")["problem"]
    assert "5200 HU" in hu and "-1100..4000 HU" in hu


def test_a_slice_beyond_the_head_is_allowed_but_a_broken_body_mask_is_an_anomaly():
    # a whole-head scan's last slice above the vertex: 1 empty mask in 200 slices (0.5 %)
    schema = infer_schema(statistics())
    long = {"slices": 200, "with_counterpart": 200}
    _, anomalies = validate(statistics({("train", "ct"): {**long, "empty_masks": 1},
                                        ("train", "mri"): {**long, "empty_masks": 1}}), schema)
    assert anomalies == []
    _, anomalies = validate(statistics({("train", "ct"): {**long, "empty_masks": 3},
                                        ("test", "mri"): {"empty_masks": 1}}), schema)
    assert {(a["check"], a["split"], a["modality"]) for a in anomalies} == {
        ("body_mask", "train", "ct"), ("body_mask", "test", "mri")}
    assert any("train CT: 3 of 200 slices with an empty body mask" in a["problem"]
               for a in anomalies)


def test_an_anomaly_stops_the_pipeline_naming_the_dataset_and_the_check(tmp_path):
    def fake_statistics(ctx, inputs, *, tampered):
        path = ctx.output_dir / "statistics.json"
        stats = statistics({("test", "ct"): {"inf": 2}} if tampered else None)
        path.write_text(json.dumps(stats))
        return ComponentResult({"statistics": Artifact(str(path))})

    def fake_schema(ctx, inputs):
        path = ctx.output_dir / "schema.json"
        path.write_text(json.dumps(infer_schema(statistics())))  # the schema of a good dataset
        return ComponentResult({"schema": Artifact(str(path))})

    def pipeline(tampered):
        return [Node("StatisticsGen", fake_statistics, {}, {"tampered": tampered}),
                Node("SchemaGen", fake_schema),
                Node("ExampleValidator", example_validator,
                     {"statistics": "StatisticsGen.statistics", "schema": "SchemaGen.schema"}),
                Node("Train", train, {"data": "ExampleValidator.anomalies"}, {"steps": 1})]
    good = runner.run(pipeline(False), tmp_path)
    assert good.by_component()["ExampleValidator"].note.endswith("checks passed")
    CALLS.clear()
    with pytest.raises(ExampleAnomalyError) as caught:
        runner.run(pipeline(True), tmp_path)
    message = str(caught.value)
    assert message.startswith("/data/ctmri/synthetic_4x6x32/1.0.0: ExampleValidator: 1 anomaly "
                              "in ctmri/synthetic_4x6x32 (finite: test CT: 0 NaN and 2 Inf")
    assert CALLS == []                                      # training never started
    with MetadataStore.at_root(tmp_path) as store:
        assert [e["state"] for e in store.executions("ExampleValidator")] == ["COMPLETE",
                                                                              "FAILED"]


# ----------------------------------------------------------------------------- blessing, Pusher

def test_the_model_is_blessed_only_below_the_baselines_and_the_pushed_model():
    kwargs = dict(metric="mae", direction="mri->ct", region="body",
                  beat_baselines=["histogram matching"], beat_pushed=True, threshold=None,
                  model="StarGAN")
    pushed = {"metric": "mae", "direction": "mri->ct", "region": "body", "value": 80.0,
              "model_name": "stargan", "version": 3}
    values = {"identity": 400.0, "histogram matching": 150.0, "StarGAN": 90.0}
    assert blessing_decision(values, pushed=None, **kwargs)["blessed"]
    decision = blessing_decision(values, pushed=pushed, **kwargs)
    assert not decision["blessed"]
    assert decision["failed"] == ["MAE 90 HU (mri->ct, body) is not below the pushed model's "
                                  "80 HU (stargan version 3)"]
    assert blessing_decision({**values, "StarGAN": 70.0}, pushed=pushed, **kwargs)["blessed"]
    worse = blessing_decision({**values, "StarGAN": 300.0}, pushed=None, **kwargs)
    assert worse["failed"] == ["MAE 300 HU (mri->ct, body) is not below histogram matching's "
                               "150 HU"]
    psnr = blessing_decision({"histogram matching": 20.0, "StarGAN": 25.0}, pushed=None,
                             **{**kwargs, "metric": "psnr", "threshold": 30.0})
    assert psnr["failed"] == ["PSNR 25 (mri->ct, body) is not above the threshold 30"]
    nan = blessing_decision({"histogram matching": 20.0, "StarGAN": float("nan")}, pushed=None,
                            **{**kwargs, "beat_baselines": []})
    assert not nan["blessed"]


def test_the_pusher_pushes_nothing_without_a_blessing_and_says_why(tmp_path):
    def blessing(ctx, inputs):
        return ComponentResult({"blessing": ModelBlessing(str(ctx.output_dir), {
            "blessed": False, "failed": ["MAE 300 HU (mri->ct, body) is not below histogram "
                                         "matching's 150 HU"]})})
    result = runner.run(nodes(extra=[
        Node("Evaluator", blessing),
        Node("Pusher", pusher, {"model": "Train.model", "blessing": "Evaluator.blessing"},
             {"serving_base": str(tmp_path / "serving"), "model_name": None})]), tmp_path)
    record = result.by_component()["Pusher"]
    assert record.outputs == {} and record.note == (
        "not pushed: MAE 300 HU (mri->ct, body) is not below histogram matching's 150 HU")
    assert not (tmp_path / "serving").exists()
    push_json = tmp_path / "Pusher" / str(record.execution_id) / "push.json"
    assert json.loads(push_json.read_text())["pushed"] is False


# ----------------------------------------------------------------------------- config

def test_the_demo_config_loads_and_bad_configs_name_the_file(tmp_path):
    demo = pipeline_config.load(pipeline_config.CONFIG_FOLDER / "demo.yaml")
    built = pipeline_config.demo_config(tmp_path, data_dir=tmp_path / "tfds")
    assert built.pusher.serving_base == str(tmp_path / "exports")
    for config in (demo, built):      # the YAML file and make demo's pipeline are one pipeline
        specs = config.model_specs()
        assert [(s.trainer.experiment, s.trainer.steps) for s in specs] == [
            ("stargan", 450), ("segmentation", 200), ("classifier", 1000)]
        evaluators = [s.evaluator.resolved(s.trainer.experiment) for s in specs]
        assert [(e.metric, e.beat_baselines, e.threshold) for e in evaluators] == [
            ("mae", ("histogram matching",), None), ("dice", (), 0.9), ("accuracy", (), 0.95)]
        assert config.node_suffixes() == [".stargan", ".segmentation", ".classifier"]
    assert demo.validator.ct_hu_limits == (-1100, 4000)
    names = [n.name for n in pipeline_nodes(built)]
    assert names[:4] == ["ExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator"]
    assert names[4:7] == ["Trainer.stargan", "Evaluator.stargan", "Pusher.stargan"]
    assert pipeline_nodes(built)[8].inputs["model"] == "Trainer.segmentation.model"
    # ctmri pipeline run --config demo.yaml from the checkout's root is make demo's pipeline:
    # the same nodes and parameters, hence the same cache keys
    make_demo = pipeline_config.demo_config("artifacts/demo", data_dir="artifacts/tensorflow_datasets")
    def keyed(config):   # parameters as the cache key sees them (JSON: 4000 is not 4000.0)
        return [(n.name, json.dumps(n.parameters, sort_keys=True)) for n in pipeline_nodes(config)]

    assert keyed(demo) == keyed(make_demo)
    one = pipeline_config.from_dict({"pipeline_root": "x"})
    assert [n.name for n in pipeline_nodes(one)][4:] == ["Trainer", "Evaluator", "Pusher"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline_root: x\ntrainer: {experiment: stargan, step: 3}\n")
    with pytest.raises(CtmriInputError, match=r"bad.yaml: unknown key\(s\) step in trainer"):
        pipeline_config.load(bad)
    bad.write_text("pipeline_root: x\nevaluator: {metric: rmse}\n")
    with pytest.raises(CtmriInputError, match="evaluator.metric must be one of mae, psnr, ssim"):
        pipeline_config.load(bad)
    bad.write_text("pipeline_root: x\nmodels: [{trainer: {experiment: segmentation}, "
                   "evaluator: {metric: mae}}]\n")
    with pytest.raises(CtmriInputError, match=r"models\[segmentation\].evaluator.metric must "
                                              r"be one of dice, mean_iou for segmentation"):
        pipeline_config.load(bad)
    bad.write_text("pipeline_root: x\nmodels: [{trainer: {experiment: classifier}, "
                   "evaluator: {beat_baselines: [identity]}}]\n")
    with pytest.raises(CtmriInputError, match="classifier has no baselines"):
        pipeline_config.load(bad)
    bad.write_text("pipeline_root: x\ntrainer: {experiment: stargan}\nmodels: "
                   "[{trainer: {experiment: classifier}}]\n")
    with pytest.raises(CtmriInputError, match="either models .* or trainer/evaluator"):
        pipeline_config.load(bad)
    bad.write_text("pipeline_root: x\nmodels: [{trainer: {experiment: classifier}}, "
                   "{trainer: {experiment: classifier}}]\n")
    with pytest.raises(CtmriInputError, match="two models with the same id"):
        pipeline_config.load(bad)
    bad.write_text("dataset: {config: synthetic}\n")
    with pytest.raises(CtmriInputError, match="pipeline_root is required"):
        pipeline_config.load(bad)


def test_importing_the_pipeline_and_its_command_imports_no_tensorflow():
    import subprocess
    import sys
    code = ("import sys, ctmri_tf.pipeline.components, ctmri_tf.pipeline.lineage, ctmri_tf.cli\n"
            "import ctmri_tf.pipeline.kubeflow\n"
            "print('tensorflow' in sys.modules or 'kfp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# ----------------------------------------------------------------------------- without a store

def _pushed_record(folder, *, pushed, fingerprint, value, name="stargan", experiment="stargan"):
    (folder / "assets.extra").mkdir(parents=True)
    (folder / PIPELINE_INFO).write_text(json.dumps({
        "runner": "kubeflow", "metadata": None, "pushed": pushed, "pushed_model": {
            "serving_base": str(folder.parent.parent), "model_name": name,
            "version": int(folder.name), "experiment": experiment, "value": value,
            "model_fingerprint": fingerprint, "metric": "mae"}}))


def test_without_a_store_the_pushed_model_is_read_back_from_the_serving_base(tmp_path):
    from ctmri_tf.pipeline.components import pushed_model_resolver, pushed_versions

    base = tmp_path / "serving"
    _pushed_record(base / "stargan" / "1", pushed=10.0, fingerprint="m1", value=300.0)
    _pushed_record(base / "stargan" / "2", pushed=20.0, fingerprint="m2", value=200.0)
    _pushed_record(base / "cyclegan" / "1", pushed=30.0, fingerprint="c1", value=100.0,
                   name="cyclegan", experiment="cyclegan")
    (base / "stargan" / "3").mkdir()                       # exported by hand: no record
    assert [(p.properties["model_name"], p.properties["version"])
            for p in pushed_versions(base)] == [("cyclegan", 1), ("stargan", 2), ("stargan", 1)]
    assert [p.uri for p in pushed_versions(base, "stargan")] == [
        str(base / "stargan" / "2"), str(base / "stargan" / "1")]
    assert pushed_versions(tmp_path / "nothing") == []
    resolve = pushed_model_resolver(str(base), None).without_store
    stargan = Model("/runs/new", {"experiment": "stargan", "fingerprint": "new"})
    found = resolve({"model": stargan})                    # newest of the model's experiment
    assert found.uri == str(base / "stargan" / "2") and found.properties["value"] == 200.0
    again = Model("/runs/m2", {"experiment": "stargan", "fingerprint": "m2"})
    assert resolve({"model": again}).properties["version"] == 1    # not its own push
    assert pushed_model_resolver(str(base), "cyclegan").without_store(
        {"model": stargan}).properties["model_name"] == "cyclegan"
    assert pushed_model_resolver(str(tmp_path / "empty"), None).without_store(
        {"model": stargan}) is None


def test_a_node_declaring_its_outputs_may_return_fewer_but_no_other(tmp_path):
    def make(ctx, inputs, *, extra):
        outputs = {"data": Examples(str(ctx.output_dir))}
        if extra:
            outputs["surprise"] = Examples(str(ctx.output_dir))
        return ComponentResult(outputs)
    runner.run([Node("Make", make, {}, {"extra": False}, ("data", "more"))], tmp_path)
    with pytest.raises(TypeError, match="returned the output.s. surprise its node does not "
                                        "declare .outputs: data, more."):
        runner.run([Node("Make", make, {}, {"extra": True}, ("data", "more"))], tmp_path)


def test_the_pusher_does_not_push_a_model_already_in_the_serving_base_again(tmp_path):
    from ctmri_tf.pipeline.runner import ExecutionContext

    base = tmp_path / "serving"
    _pushed_record(base / "stargan" / "1", pushed=10.0, fingerprint="m1", value=300.0)
    (base / "stargan" / "1" / "saved_model.pb").write_text("fake")
    out = tmp_path / "Pusher"
    out.mkdir()
    ctx = ExecutionContext(out, out, None, None, None, runner="kubeflow")
    result = pusher(ctx, {"model": Model("/runs/1", {"experiment": "stargan",
                                                     "fingerprint": "m1"}),
                          "blessing": ModelBlessing("/b", {"blessed": True})},
                    serving_base=str(base), model_name=None)
    assert result.note == "already pushed: stargan version 1"
    assert result.outputs["pushed_model"].uri == str(base / "stargan" / "1")
    assert json.loads((out / "push.json").read_text())["reason"] == "already pushed"
    assert sorted(p.name for p in (base / "stargan").iterdir()) == ["1"]

"""``ctmri pipeline run`` with the real components on the tiny session dataset (smoke StarGAN,
1 training step): evaluated and not pushed (it does not beat histogram matching), a rerun fully
cached, then with the baseline condition dropped: blessed, pushed as version 1 of the serving
base with models.config, and ``ctmri pipeline lineage`` back to the dataset."""
import dataclasses
import json
from pathlib import Path

import tensorflow as tf

from ctmri_tf import cli
from ctmri_tf.export.saved_model import model_versions, read_export_info
from ctmri_tf.pipeline import config as pipeline_config
from ctmri_tf.pipeline import runner
from ctmri_tf.pipeline.components import run_pipeline
from ctmri_tf.pipeline.lineage import PIPELINE_INFO
from ctmri_tf.pipeline.metadata import MetadataStore
from dataset_fixtures import tiny_dataset  # noqa: F401  (session fixture)
from pipeline_fixtures import write_tiny_pipeline_config

COMPONENTS = ["ExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Trainer",
              "Evaluator", "Pusher"]


def states(result):
    return {r.component: r.state for r in result.executions}


def timings(result):
    return ", ".join(f"{r.component} {r.state} {r.seconds:.2f} s" for r in result.executions)


def test_a_one_step_model_is_evaluated_not_pushed_cached_on_rerun_and_pushed_when_blessed(
        tiny_dataset, tmp_path, capsys):
    config_name, _ = tiny_dataset
    serving = tmp_path / "serving"
    yaml_file = write_tiny_pipeline_config(tmp_path / "pipeline.yaml",
                                           pipeline_root=tmp_path / "root",
                                           dataset=tiny_dataset, serving_base=serving)
    assert cli.main(["pipeline", "run", "--config", str(yaml_file)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.split()[:1] and line.split()[0] in COMPONENTS + ["pipeline"]]
    assert [line.split()[:2] for line in printed[:7]] == [[c, "executed"] for c in COMPONENTS]
    assert printed[6].split("  ")[-1].startswith("not pushed: MAE ")
    assert printed[7].startswith("pipeline e2e: 7 executed, 0 cached")
    config = pipeline_config.load(yaml_file)
    with MetadataStore.at_root(config.pipeline_root) as store:
        ids = [e["id"] for e in store.executions()]
        first = runner.RunResult("", Path(config.pipeline_root), [
            runner.ExecutionRecord(e["component"], e["id"], e["state"], e["seconds"],
                                   store.outputs(e["id"]), e["note"])
            for e in map(store.execution, ids)], 0.0)
    assert [r.component for r in first.executions] == COMPONENTS
    assert set(states(first).values()) == {"COMPLETE"}, timings(first)
    records = first.by_component()
    blessing = records["Evaluator"].outputs["blessing"]
    assert blessing.properties["blessed"] is False
    assert "is not below histogram matching's" in blessing.properties["failed"][0]
    assert records["Pusher"].outputs == {}
    assert records["Pusher"].note.startswith("not pushed: MAE ")
    assert "histogram matching" in records["Pusher"].note
    evaluation = records["Evaluator"].outputs["evaluation"]
    table = json.loads((Path(evaluation.uri) / "metrics.json").read_text())
    assert set(table["models"]) == {"identity", "histogram matching", "StarGAN"}
    assert not serving.exists()

    again = run_pipeline(config)
    assert set(states(again).values()) == {"CACHED"}, timings(again)
    assert again.seconds < 5, f"cached rerun took {again.seconds:.2f} s: {timings(again)}"
    with capsys.disabled():      # the timings, in the -s / -rA output
        print(f"\nfirst run: {timings(first)}\nrerun ({again.seconds:.2f} s): {timings(again)}")

    lenient = dataclasses.replace(config, evaluator=dataclasses.replace(
        config.evaluator, beat_baselines=()))
    pushed = run_pipeline(lenient)
    assert states(pushed) == {**{c: "CACHED" for c in COMPONENTS[:5]},
                              "Evaluator": "COMPLETE", "Pusher": "COMPLETE"}, timings(pushed)
    with capsys.disabled():
        print(f"blessed run: {timings(pushed)}")
    export = serving / "stargan" / "1"
    assert pushed.by_component()["Pusher"].outputs["pushed_model"].uri == str(export)
    assert model_versions(serving / "stargan") == [1]
    assert f'base_path: "{serving / "stargan"}"' in (serving / "models.config").read_text()
    assert read_export_info(export)["data_card"]["dataset"] == f"ctmri/{config_name}"
    record = json.loads((export / PIPELINE_INFO).read_text())      # what Kubeflow reads back
    assert record["runner"] == "embedded" and record["pushed_model"]["version"] == 1
    assert record["pushed_model"]["value"] == pushed.by_component()["Evaluator"].outputs[
        "blessing"].properties["value"]
    assert "serving_default" in tf.saved_model.load(str(export)).signatures
    # its own push is not the bar a rerun must beat: still fully cached
    assert set(states(run_pipeline(lenient)).values()) == {"CACHED"}

    capsys.readouterr()
    assert cli.main(["pipeline", "lineage", str(export)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" <- ")[1].split(" #")[0] for line in lines] == [
        "Pusher", "Trainer", "ExampleGen", "ExampleValidator", "StatisticsGen", "SchemaGen",
        "Evaluator"]
    assert lines[0].startswith(f"PushedModel {export} <- Pusher #")
    assert '"steps":1' in lines[1] and lines[2].lstrip().startswith("Examples ")

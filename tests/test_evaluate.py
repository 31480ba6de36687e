"""evaluate() end to end on tiny in-memory phantoms (32 px x 4 slices): a perfect translator, the
identity baseline against hand-computed values, the written files, the unpaired path, adapters
and the `ctmri evaluate` command on a tiny built dataset."""
import csv
import json
import math

import cv2
import numpy as np
import pytest
from dataset_fixtures import tiny_dataset  # noqa: F401  (session fixture)

from ctmri_tf import cli, intensity, phantom
from ctmri_tf.baselines import identity_translator
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.evaluate import (NO_REFERENCE_MESSAGE, EvaluationSubject, compute_results,
                               cyclegan_translator, evaluate, load_subjects, paired_subject,
                               resized_translator, stargan_translator, subjects_from_examples,
                               subjects_from_paired_batches)

SIZE, SLICES = 32, 4


def _subject(index):
    s = phantom.make_subject(index, image_size=SIZE, num_slices=SLICES)
    return paired_subject(s.subject_id, ct=s.ct, mri=s.mri, mask=s.mask)


@pytest.fixture(scope="module")
def subjects():
    return [_subject(3), _subject(4)]


def _masked_unit(subject, modality):
    unit = intensity.to_unit(subject.images[modality], modality, subject.ranges[modality])
    return np.where(subject.masks[modality] > 0, unit, -1.0).astype(np.float32)


def perfect_translator(subjects):
    """Returns each input's registered ground truth in [-1, 1] (looked up by the input)."""
    truth = {}
    for s in subjects:
        for source, target in (("mri", "ct"), ("ct", "mri")):
            key = (source, _masked_unit(s, source).tobytes())
            truth[key] = intensity.to_unit(s.images[target], target, s.ranges[target])

    def translate(images, source, target):
        return truth[(source, np.asarray(images)[..., 0].tobytes())][..., None]

    return translate


def _rows(results, **where):
    return [r for r in results["rows"] if all(r[k] == v for k, v in where.items())]


# ----------------------------------------------------------------------------- paired

def test_perfect_translator_and_identity_end_to_end(subjects, tmp_path):
    out = tmp_path / "results" / "run1"
    results = evaluate({"identity": identity_translator, "perfect": perfect_translator(subjects)},
                       subjects, out, batch_size=SLICES, progress=False)
    assert results["evaluation"] == "paired" and results["reference"] is True
    assert results["subjects"] == [s.subject_id for s in subjects]

    # perfect: MAE 0 and SSIM 1 up to the float32 rounding of the [-1, 1] round trip
    for row in _rows(results, model="perfect"):
        tolerance = 1e-3 if row["direction"] == "mri->ct" else 1e-6  # HU / MRI [0, 1]
        assert row["mae"] < tolerance and row["through_plane_mae"] < 2 * tolerance
        assert row["ssim"] == pytest.approx(1.0, abs=1e-5)
        assert row["psnr"] > 100.0

    # identity MRI->CT, body: the MRI's [-1, 1] image read as a CT [-1, 1] image, by hand
    for s in subjects:
        lo, hi = s.ranges["mri"]
        u = 2.0 * (np.clip(s.images["mri"].astype(np.float64), lo, hi) - lo) / (hi - lo) - 1.0
        u = np.where(s.masks["mri"] > 0, u, -1.0)
        hu = (u + 1.0) / 2.0 * 4024.0 - 1024.0
        body = s.masks["mri"] > 0
        ct = np.clip(s.images["ct"].astype(np.float64), -1024.0, 3000.0)
        (row,) = _rows(results, model="identity", direction="mri->ct", subject_id=s.subject_id,
                       region="body")
        assert row["units"] == "HU"
        assert row["mae"] == pytest.approx(np.abs(hu - ct)[body].mean(), rel=1e-5)
        # through-plane: |d/dz(pred) - d/dz(true)| over voxel pairs in the body in both slices
        pairs = body[1:] & body[:-1]
        assert row["through_plane_mae"] == pytest.approx(
            np.abs(np.diff(hu, axis=0) - np.diff(ct, axis=0))[pairs].mean(), rel=1e-5)
        mse = np.mean((hu - ct)[body] ** 2)
        assert row["psnr"] == pytest.approx(10 * np.log10(4024.0 ** 2 / mse), abs=1e-3)
        # CT->MRI whole image: [0, 1] MRI scale, all voxels
        ct_unit = np.where(body, (ct + 1024.0) / 4024.0, 0.0)
        mri01 = np.clip((s.images["mri"].astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
        (row,) = _rows(results, model="identity", direction="ct->mri", subject_id=s.subject_id,
                       region="image")
        assert row["mae"] == pytest.approx(np.abs(ct_unit - mri01).mean(), rel=1e-4)

    # summary: mean and sample std over the two subjects
    body_mae = [r["mae"] for r in _rows(results, model="identity", direction="mri->ct",
                                        region="body")]
    stats = results["summary"]["identity"]["mri->ct"]["body"]["mae"]
    assert stats["n"] == 2
    assert stats["mean"] == pytest.approx(np.mean(body_mae))
    assert stats["std"] == pytest.approx(np.std(body_mae, ddof=1))

    # the files
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md", "grids", "metrics.csv",
                                                     "metrics.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * 2 * 2 * 2  # models x directions x subjects x regions
    assert list(table[0]) == ["model", "direction", "subject_id", "region", "units", "mae",
                              "through_plane_mae", "psnr", "ssim"]
    assert float(table[0]["through_plane_mae"]) == pytest.approx(
        results["rows"][0]["through_plane_mae"])
    assert float(table[0]["mae"]) == pytest.approx(results["rows"][0]["mae"])
    loaded = json.loads((out / "metrics.json").read_text())
    assert loaded["summary"]["identity"]["mri->ct"]["body"]["mae"]["mean"] == pytest.approx(
        stats["mean"])
    markdown = (out / "comparison.md").read_text()
    assert markdown.count("| identity |") == 2 and markdown.count("| perfect |") == 2
    header = next(line for line in markdown.splitlines() if line.startswith("| model"))
    assert header == ("| model | MRI→CT MAE (HU) | MRI→CT through-plane MAE (HU/slice) | "
                      "MRI→CT PSNR (dB) | MRI→CT SSIM | CT→MRI MAE ([0,1]) | "
                      "CT→MRI through-plane MAE ([0,1]/slice) | CT→MRI PSNR (dB) | "
                      "CT→MRI SSIM |")
    assert "through_plane_mae" in loaded["protocol"]
    identity_line = next(line for line in markdown.splitlines()
                         if line.startswith("| identity |"))
    assert f"{stats['mean']:.1f} ± {stats['std']:.1f}" in identity_line
    grids = sorted(p.name for p in (out / "grids").iterdir())
    assert grids == ["identity_ct-to-mri.png", "identity_mri-to-ct.png",
                     "perfect_ct-to-mri.png", "perfect_mri-to-ct.png"]
    grid = cv2.imread(str(out / "grids" / "perfect_mri-to-ct.png"), cv2.IMREAD_UNCHANGED)
    assert grid.shape[1] == 4 * SIZE + 3 * 2  # input | translated | truth | error
    # perfect translation: the error column is black
    error_column = grid[-SIZE:, 3 * (SIZE + 2):]
    assert error_column.max() == 0


def test_infinite_psnr_is_reported_as_inf_everywhere(tmp_path):
    # values on a grid that the [-1, 1] round trip reproduces exactly in float32
    s = phantom.make_subject(5, image_size=SIZE, num_slices=SLICES)
    ct = (-1024.0 + 503.0 * np.round((np.clip(s.ct, -1024, 3000) + 1024.0) / 503.0)).astype(
        np.float32)
    mri = np.round(np.clip(s.mri / s.mri.max() * 8.0, 0, 8)).astype(np.float32)
    subject = paired_subject("exact", ct=ct, mri=mri, mask=s.mask, mri_range=(0.0, 8.0))
    results = evaluate({"perfect": perfect_translator([subject])}, [subject], tmp_path / "r",
                       batch_size=SLICES, progress=False)
    for row in results["rows"]:
        assert row["psnr"] == math.inf and row["mae"] == 0.0 == row["through_plane_mae"]
    assert results["summary"]["perfect"]["mri->ct"]["body"]["psnr"]["mean"] == math.inf
    assert ",inf," in (tmp_path / "r" / "metrics.csv").read_text()
    text = (tmp_path / "r" / "metrics.json").read_text()
    assert "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["rows"][0]["psnr"] == "inf"
    assert loaded["summary"]["perfect"]["mri->ct"]["body"]["psnr"]["std"] is None
    line = next(ln for ln in (tmp_path / "r" / "comparison.md").read_text().splitlines()
                if ln.startswith("| perfect |"))
    assert line.split(" | ")[3] == "inf"


def test_existing_output_and_bad_translators_are_errors(subjects, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(CtmriInputError, match="taken: output already exists"):
        evaluate({"identity": identity_translator}, subjects, tmp_path / "taken", progress=False)
    with pytest.raises(CtmriInputError, match="returned shape"):
        compute_results({"broken": lambda x, s, t: np.asarray(x)[:, :-1]}, subjects)
    with pytest.raises(CtmriInputError, match="NaN"):
        compute_results({"nan": lambda x, s, t: np.full(np.shape(x), np.nan)}, subjects)
    with pytest.raises(CtmriInputError, match="no translator"):
        compute_results({}, subjects)
    with pytest.raises(CtmriInputError, match="empty"):
        compute_results({"identity": identity_translator}, [])
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- unpaired

def _unpaired(subjects):
    first, second = subjects
    return [
        EvaluationSubject("ct-only", {"ct": first.images["ct"]}, {"ct": first.masks["ct"]},
                          {"ct": first.ranges["ct"]}, paired=False),
        EvaluationSubject("mri-only", {"mri": second.images["mri"]}, {"mri": second.masks["mri"]},
                          {"mri": second.ranges["mri"]}, paired=False),
    ]


def test_unpaired_reports_no_reference_metrics(subjects, tmp_path):
    def quarter(images, source, target):  # lossy: translating twice keeps a quarter
        return np.asarray(images) / 2.0

    seen = []

    def always_ct(images, training=False):  # a "classifier": logits favouring CT
        seen.append(np.asarray(images))
        return np.tile([[2.0, -2.0]], (np.shape(images)[0], 1))

    data = _unpaired(subjects)
    results = evaluate({"identity": identity_translator, "halve": quarter}, data,
                       tmp_path / "u", classifier=always_ct, batch_size=3, progress=False)
    assert results["evaluation"] == "unpaired" and results["reference"] is False
    assert results["message"] == NO_REFERENCE_MESSAGE
    assert NO_REFERENCE_MESSAGE.startswith("No reference exists")
    for row in results["rows"]:
        assert not {"mae", "psnr", "ssim"} & set(row)
    # identity: the cycle would compare the input with itself, so none is reported
    assert all(math.isnan(r["cycle_mae"]) for r in _rows(results, model="identity"))
    # halve twice: CT -> MRI -> CT reconstruction is u / 4; MAE by hand in HU inside the body
    ct_subject = subjects[0]
    u = _masked_unit(ct_subject, "ct").astype(np.float64)
    body = ct_subject.masks["ct"] > 0
    expected = np.abs((u / 4 - u) / 2 * 4024.0)[body].mean()
    (row,) = _rows(results, model="halve", direction="ct->mri", region="body")
    assert row["units"] == "HU" and row["cycle_mae"] == pytest.approx(expected, rel=1e-4)
    # classifier fractions: every translated slice is called CT
    (row,) = _rows(results, model="halve", direction="mri->ct", region="image")
    assert row["target_fraction"] == 1.0
    (row,) = _rows(results, model="halve", direction="ct->mri", region="image")
    assert row["target_fraction"] == 0.0
    # it sees the translated slices normalised as it was trained: each by its own percentiles
    # ("halve" outputs lie in [-0.5, 0.5]; the classifier gets them stretched to [-1, 1])
    assert seen and all(batch.shape[1:] == (SIZE, SIZE, 1) for batch in seen)
    for batch in seen:
        np.testing.assert_allclose(batch.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
        np.testing.assert_allclose(batch.min(axis=(1, 2, 3)), -1.0, atol=1e-6)
    markdown = (tmp_path / "u" / "comparison.md").read_text()
    assert NO_REFERENCE_MESSAGE in markdown
    tables = markdown.replace(NO_REFERENCE_MESSAGE, "")
    assert "MAE (HU)" not in tables.replace("cycle MAE (HU)", "") and "SSIM" not in tables
    identity_line = next(ln for ln in markdown.splitlines() if ln.startswith("| identity |"))
    assert "n/a" in identity_line
    assert "| halve |" in markdown and "classified CT" in markdown


# ----------------------------------------------------------------------------- data and adapters

def test_subjects_from_examples_groups_sorts_and_pairs(subjects):
    s = subjects[0]
    examples = []
    for k in (2, 0, 3, 1):  # out of order, as a shuffled dataset would give them
        for m, (modality, other) in enumerate((("ct", "mri"), ("mri", "ct"))):
            examples.append({
                "image": s.images[modality][k], "mask": s.masks[modality][k],
                "modality": np.int64(m), "subject_id": s.subject_id.encode(),
                "slice_index": np.int32(k),
                "intensity_range": np.asarray(s.ranges[modality], np.float32),
                "has_counterpart": True, "counterpart": s.images[other][k],
                "counterpart_range": np.asarray(s.ranges[other], np.float32)})
    (built,) = subjects_from_examples(examples)
    assert built.paired and built.subject_id == s.subject_id
    np.testing.assert_array_equal(built.images["ct"], s.images["ct"])
    np.testing.assert_array_equal(built.masks["mri"], s.masks["mri"])
    assert built.ranges["mri"] == pytest.approx(s.ranges["mri"])
    assert built.indices("ct") == built.indices("mri") == (0, 1, 2, 3)
    # a split that holds slices 0, 1 and 3 only: the through-plane MAE compares (0, 1) alone
    gappy = subjects_from_examples([e for e in examples if e["slice_index"] != 2])[0]
    assert gappy.paired and gappy.indices("ct") == (0, 1, 3)
    offsets = np.array([10.0, 40.0, 25.0])[:, None, None] / 2012.0    # HU -> [-1, 1]

    def flickering(images, source, target):      # the truth, off by an offset per slice
        truth = intensity.to_unit(gappy.images[target], target, gappy.ranges[target])
        return (truth + offsets)[..., None]
    results = compute_results({"flicker": flickering}, [gappy], batch_size=SLICES)
    (row,) = _rows(results, direction="mri->ct", region="body")       # no voxel clipped
    assert row["through_plane_mae"] == pytest.approx(30.0, abs=1e-2)     # |40 - 10| HU/slice
    assert row["mae"] > 0
    one = paired_subject("one", ct=s.images["ct"][:1], mri=s.images["mri"][:1],
                         mask=s.masks["mri"][:1])
    (row, _, _, _) = compute_results({"identity": identity_translator}, [one])["rows"]
    assert math.isnan(row["through_plane_mae"])                           # no slice pair
    with pytest.raises(CtmriInputError, match="slice indices must be one increasing integer"):
        paired_subject("bad", ct=s.images["ct"], mri=s.images["mri"], mask=s.masks["mri"],
                       slice_indices=[0, 1, 1, 2])
    # only the MRI examples, unpaired: one modality, not paired
    lone = [{**e, "has_counterpart": False} for e in examples if e["modality"] == 1]
    (built,) = subjects_from_examples(lone)
    assert not built.paired and set(built.images) == {"mri"}


def test_subjects_from_paired_batches_returns_physical_units(subjects):
    s = subjects[0]
    batch = {
        "source": intensity.to_unit(s.images["mri"], "mri", s.ranges["mri"])[..., None],
        "target": intensity.to_unit(s.images["ct"], "ct", s.ranges["ct"])[..., None],
        "mask": s.masks["mri"][..., None].astype(np.float32),
        "source_range": np.tile(np.asarray(s.ranges["mri"], np.float32), (SLICES, 1)),
        "target_range": np.tile(np.asarray(s.ranges["ct"], np.float32), (SLICES, 1)),
        "subject_id": np.array([s.subject_id.encode()] * SLICES),
        "slice_index": np.arange(SLICES, dtype=np.int32)}
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    (built,) = subjects_from_paired_batches(halves[::-1], source="mri")
    np.testing.assert_allclose(built.images["ct"], np.clip(s.images["ct"], -1024, 3000),
                               atol=1e-3)
    lo, hi = s.ranges["mri"]
    np.testing.assert_allclose(built.images["mri"], np.clip(s.images["mri"], lo, hi),
                               atol=1e-4 * hi)


def test_stargan_adapter_sends_one_hot_target_domain():
    seen = []

    def generator(inputs, training):
        images, labels = inputs
        seen.append((np.asarray(labels), training))
        return images * 0.5

    translate = stargan_translator(generator)
    x = np.ones((3, 8, 8, 1), np.float32)
    np.testing.assert_allclose(translate(x, "mri", "ct"), 0.5)
    translate(x, "ct", "mri")
    np.testing.assert_array_equal(seen[0][0], [[1, 0]] * 3)   # CT = 0
    np.testing.assert_array_equal(seen[1][0], [[0, 1]] * 3)   # MRI = 1
    assert seen[0][1] is False


def test_cyclegan_adapter_and_missing_direction_in_table(subjects, tmp_path):
    translate = cyclegan_translator({"mri->ct": lambda x, training: -x})
    x = np.full((1, 4, 4, 1), 0.25, np.float32)
    np.testing.assert_allclose(translate(x, "mri", "ct"), -0.25)
    with pytest.raises(CtmriInputError, match="no ct->mri generator"):
        translate(x, "ct", "mri")
    with pytest.raises(CtmriInputError, match="keyed by"):
        cyclegan_translator({"ct2mri": lambda x, training: x})
    evaluate({"cyclegan": translate}, subjects, tmp_path / "c", progress=False)
    line = next(ln for ln in (tmp_path / "c" / "comparison.md").read_text().splitlines()
                if ln.startswith("| cyclegan |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5:] == ["-"] * 4 and all(c != "-" for c in cells[1:5])   # 4 per direction


# ----------------------------------------------------------------------------- command line

def test_ctmri_evaluate_baselines_on_a_built_dataset(tiny_dataset, tmp_path, capsys):
    config, data_dir = tiny_dataset
    out = tmp_path / "results" / "baselines"
    status = cli.main(["evaluate", "--data-dir", str(data_dir), "--dataset-config", config,
                       "--baselines", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| identity |" in printed and "| histogram matching |" in printed
    assert f"wrote results to {out}" in printed
    table = list(csv.DictReader(open(out / "metrics.csv", newline="")))
    # 2 models x 2 directions x 1 test subject (phantom 3 of 4) x 2 regions
    assert len(table) == 8 and {r["subject_id"] for r in table} == {"phantom-0-0003"}
    # the baselines must not be fitted on the evaluated split
    status = cli.main(["evaluate", "--data-dir", str(data_dir), "--dataset-config", config,
                       "--baselines", "--reference-split", "test", "--out", str(tmp_path / "x")])
    assert status == 2 and "would see the test targets" in capsys.readouterr().err
    assert cli.main(["evaluate", "--data-dir", str(data_dir), "--out", str(tmp_path / "y")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_resized_translator_runs_at_the_training_size_and_returns_the_data_size():
    seen = []

    def translator(images, source, target):
        seen.append(tuple(np.shape(images)))
        return -np.asarray(images)

    translator.directions = (("mri", "ct"),)
    resized = resized_translator(translator, 16)
    x = np.full((2, 32, 32, 1), 0.5, np.float32)
    out = np.asarray(resized(x, "mri", "ct"))
    assert seen == [(2, 16, 16, 1)] and out.shape == (2, 32, 32, 1)
    np.testing.assert_allclose(out, -0.5, atol=1e-6)   # a constant survives both resizes
    assert resized.directions == (("mri", "ct"),)
    resized(np.zeros((1, 16, 16, 1), np.float32), "mri", "ct")
    assert seen[-1] == (1, 16, 16, 1)                  # already at size: passed through


def test_mirrored_translator_averages_the_mirrored_passes():
    from ctmri_tf.evaluate import mirrored_translator

    columns = np.arange(8, dtype=np.float32)

    def translator(images, source, target):        # adds its column index: not mirror-symmetric
        return np.asarray(images) + columns[None, None, :, None]

    translator.context_slices = 1
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, 8, 1)).astype(np.float32)
    # pass 1 sees x mirrored, adds the column index there, is mirrored back: x + (7 - column);
    # the mean of both passes is x + 3.5 everywhere
    out = mirrored_translator(translator)(x, "mri", "ct")
    np.testing.assert_allclose(out, x + 3.5, atol=1e-6)
    assert mirrored_translator(translator).context_slices == 1
    # lr+ud: four passes, the row flips cancel for a translator that ignores the rows
    np.testing.assert_allclose(mirrored_translator(translator, "lr+ud")(x, "mri", "ct"),
                               x + 3.5, atol=1e-6)
    with pytest.raises(ValueError, match="tta must be one of"):
        mirrored_translator(translator, "diagonal")


def _saved_run(root, experiment, image_size):
    """A StarGAN or CycleGAN run folder written with the trainer's own objects, its generators
    moved away from the seeded initialisation (a loader that skipped the checkpoint would
    differ); returns the folder and the task, whose generators hold the checkpointed weights."""
    import keras
    import tensorflow as tf

    from ctmri_tf import configs
    from ctmri_tf.training.checkpointing import TrainingCheckpoint
    from ctmri_tf.training.cyclegan import CycleGAN
    from ctmri_tf.training.run_dir import create_run_dir
    from ctmri_tf.training.stargan import StarGAN

    config = configs.override(configs.get_config(experiment, "smoke"),
                              {"data.image_size": image_size})
    run = create_run_dir(root, config)
    task = {"stargan": StarGAN, "cyclegan": CycleGAN}[experiment](config,
                                                                  tf.distribute.get_strategy())
    rng = np.random.default_rng(7)
    for name, model in task.checkpoint_objects().items():
        if name.startswith("generator") and isinstance(model, keras.Model):
            model.set_weights([w + rng.normal(0.0, 0.05, w.shape).astype(w.dtype)
                               for w in model.get_weights()])
    TrainingCheckpoint(run.checkpoints, step=tf.Variable(0, dtype=tf.int64, trainable=False),
                       rng=tf.random.Generator.from_seed(0), **task.checkpoint_objects()).save()
    return run.root, task


def test_ctmri_evaluate_a_stargan_run_folder(tiny_dataset, tmp_path, capsys):
    config, data_dir = tiny_dataset
    run, task = _saved_run(tmp_path / "run", "stargan", 16)
    out = tmp_path / "results" / "stargan"
    assert cli.main(["evaluate", "--data-dir", str(data_dir), "--dataset-config", config,
                     "--stargan", str(run), "--out", str(out)]) == 0
    assert "| StarGAN |" in capsys.readouterr().out
    table = list(csv.DictReader(open(out / "metrics.csv", newline="")))
    assert {r["model"] for r in table} == {"StarGAN"} and len(table) == 4
    # the same numbers as evaluating the restored generator from Python at 16 px
    subjects = load_subjects("test", config=config, data_dir=data_dir)
    expected = compute_results(
        {"StarGAN": resized_translator(stargan_translator(task.generator), 16)}, subjects)
    for row, want in zip(table, expected["rows"]):
        assert float(row["mae"]) == pytest.approx(want["mae"], rel=1e-5)
    assert cli.main(["evaluate", "--data-dir", str(data_dir), "--dataset-config", config,
                     "--stargan", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_ctmri_evaluate_a_cyclegan_run_folder(tiny_dataset, tmp_path, capsys):
    config, data_dir = tiny_dataset
    run, task = _saved_run(tmp_path / "run", "cyclegan", 16)
    out = tmp_path / "results" / "cyclegan"
    assert cli.main(["evaluate", "--data-dir", str(data_dir), "--dataset-config", config,
                     "--cyclegan", str(run), "--out", str(out)]) == 0
    assert "| CycleGAN |" in capsys.readouterr().out
    table = list(csv.DictReader(open(out / "metrics.csv", newline="")))
    # both generators: 2 directions x 1 test subject x 2 regions
    assert {r["model"] for r in table} == {"CycleGAN"} and len(table) == 4
    assert {r["direction"] for r in table} == {"mri->ct", "ct->mri"}
    # the same numbers as evaluating the restored generators from Python at 16 px
    subjects = load_subjects("test", config=config, data_dir=data_dir)
    expected = compute_results(
        {"CycleGAN": resized_translator(cyclegan_translator(task.generators()), 16)}, subjects)
    for row, want in zip(table, expected["rows"]):
        assert (row["direction"], row["region"]) == (want["direction"], want["region"])
        assert float(row["mae"]) == pytest.approx(want["mae"], rel=1e-5)
    # a StarGAN run folder is not a CycleGAN run: the error names its config.json
    stargan_run, _ = _saved_run(tmp_path / "stargan", "stargan", 16)
    assert cli.main(["evaluate", "--data-dir", str(data_dir), "--dataset-config", config,
                     "--cyclegan", str(stargan_run), "--out", str(tmp_path / "z")]) == 2
    assert (f"{stargan_run / 'config.json'}: is a 'stargan' run, not a cyclegan run"
            in capsys.readouterr().err)
    assert not (tmp_path / "z").exists()

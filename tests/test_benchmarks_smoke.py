"""The benchmark scripts still run: each ``main([..., "--quick"])`` at the tiniest size.

Not a measurement: it checks that every script works end to end against the current library
code and that the JSON it writes is consistent (figures derived from the samples the way the
README says, counts of what was built and timed). The scripts chain as a user would run them:
``dataset_build`` builds a 3-subject synthetic dataset that ``train_speed`` and ``quality`` read
through the real tfds pipeline.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

# benchmarks/ is a folder of scripts at the repository root, not an installed package.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import dataset_build, inference_speed, quality, train_speed  # noqa: E402
from ctmri_tf import configs  # noqa: E402
from ctmri_tf.errors import CtmriInputError  # noqa: E402


def _results(path: Path) -> dict:
    payload = json.loads(path.read_text())
    assert payload["machine"]["tensorflow"] == tf.__version__
    assert payload["machine"]["cpu_model"] and payload["machine"]["logical_cores"] >= 1
    assert "commit" in payload["machine"]["git"]
    return payload


def test_benchmark_scripts_run_quick(tmp_path, capsys):
    # --- dataset_build: synthetic 3 subjects x 2 slices x 32 px, and the same as DICOM/NIfTI
    work = tmp_path / "build"
    out = tmp_path / "dataset_build.json"
    assert dataset_build.main(["--quick", "--work-dir", str(work), "--out", str(out)]) == 0
    rows = {row["config"]: row for row in _results(out)["rows"]}
    for row in rows.values():          # one example per modality and slice: 3 x 2 x 2
        assert row["examples"] == 12
        assert row["examples_per_split"] == {"train": 4, "validation": 4, "test": 4}
        assert row["slices_per_second"] == pytest.approx(12 / row["build_s"])
    assert rows["folder"]["manual_dir_files"] == 3 * 2 + 3    # DICOM slices + NIfTI volumes
    assert "DICOM" in rows["folder"]["input"]
    # an existing results file is refused before anything runs, naming the file
    assert dataset_build.main(["--quick", "--out", str(out)]) == 2
    assert f"{out}: results file already exists" in capsys.readouterr().err

    data_dir, dataset = work / "synthetic" / "tfds", "synthetic_3x2x32"
    assert (data_dir / "ctmri" / dataset).is_dir()

    # --- train_speed: StarGAN on the tfds pipeline, iterations rounded to a whole n_critic cycle
    out = tmp_path / "train_speed.json"
    assert train_speed.main(["--quick", "--models", "stargan", "--precisions", "fp32",
                             "--data-dir", str(data_dir), "--dataset-config", dataset,
                             "--out", str(out)]) == 0
    [row] = _results(out)["rows"]
    assert (row["model"], row["preset"], row["input_kind"]) == ("stargan", "smoke", "tfds")
    assert row["iterations"] == 5 and len(row["samples_s"]) == 5
    assert {k: v["count"] for k, v in row["step_kinds"].items()} == {"d": 4, "d+g": 1}
    assert row["seconds_per_iteration"] == pytest.approx(statistics.fmean(row["samples_s"]))
    assert row["seconds_per_step_median"] == pytest.approx(statistics.median(row["samples_s"]))
    assert row["images_per_second"] == pytest.approx(2 / row["seconds_per_iteration"])
    assert row["input_wait_fraction"] == pytest.approx(
        sum(row["input_wait_samples_s"]) / sum(row["samples_s"]))
    assert row["peak_rss_bytes"] > 0
    # the official-architecture configuration is exactly the PyTorch measurement's
    official = train_speed.experiment_config(
        train_speed.Spec("stargan", train_speed.OFFICIAL, "float32", 8, 10, 3))
    assert (official.data.image_size, official.data.batch_size) == (128, 8)
    assert (official.model.generator_filters, official.model.generator_residual_blocks,
            official.model.discriminator_layers) == (64, 6, 6)
    assert train_speed.official_seconds(official) == 4.9

    # --- inference_speed: exported StarGAN signature and translate_file on a NIfTI volume
    out = tmp_path / "inference_speed.json"
    assert inference_speed.main(["--quick", "--models", "stargan", "--out", str(out)]) == 0
    rows = _results(out)["rows"]
    signature_rows = [r for r in rows if r["measurement"] == "stargan/translate"]
    assert [r["batch_size"] for r in signature_rows] == [1, 2]
    for r in signature_rows:
        assert r["slices_per_second"] == pytest.approx(r["batch_size"] / r["median_s"])
    [volume] = [r for r in rows if r["measurement"].startswith("translate_file")]
    assert volume["volume_slices"] == 4
    assert volume["slices_per_second"] == pytest.approx(4 / volume["median_s"])
    assert "MRI (--from)" in volume["decisions"][0]        # no classifier exported

    # --- quality: StarGAN trained 2 steps, evaluated with the baselines on the test subject
    out = tmp_path / "quality.json"
    assert quality.main(["--quick", "--models", "stargan", "--data-dir", str(data_dir),
                         "--dataset-config", dataset, "--out", str(out)]) == 0
    payload = _results(out)
    rows = {row["model"]: row for row in payload["rows"]}
    assert list(rows) == ["identity", "histogram matching", "StarGAN", "noise-free ground truth",
                          quality.MRI_ONLY_FLOOR]
    assert {row["split"] for row in rows.values()} == {"test"}
    assert rows["StarGAN"]["steps"] == 2 and rows["StarGAN"]["test_subjects"] == 1
    floor = rows.pop("noise-free ground truth")          # phantoms: the best any model can score
    assert floor["kind"] == "noise floor" and 0 < floor["mri_to_ct_mae_body_hu"] < 25
    # ... and the best any model that sees only the MRI can: the bone HU is a guess
    mri_only = rows.pop(quality.MRI_ONLY_FLOOR)
    assert mri_only["kind"] == "information floor" and "ct_to_mri_ssim_body" not in mri_only
    assert mri_only["mri_to_ct_mae_body_hu"] > floor["mri_to_ct_mae_body_hu"] + 1
    # where the error is: the floor's excess over the noise is in the bone, whose HU it guesses
    groups = ("bone", "brain", "air", "soft_tissue")
    for row in (floor, mri_only, rows["StarGAN"]):
        assert sum(row[f"{g}_error_share"] for g in groups) == pytest.approx(1.0)
        assert sum(row[f"{g}_voxel_share"] for g in groups) == pytest.approx(1.0)
    assert mri_only["bone_mae_hu"] > floor["bone_mae_hu"] + 50
    assert (mri_only["bone_mae_hu"] - floor["bone_mae_hu"]
            > 3 * (mri_only["brain_mae_hu"] - floor["brain_mae_hu"]))   # brain: partial volume
    for row in rows.values():
        assert row["mri_to_ct_mae_body_hu"] == row["summary"]["mri->ct"]["body"]["mae"]["mean"]
        assert row["mri_to_ct_mae_body_hu"] > floor["mri_to_ct_mae_body_hu"]
        assert 0.0 <= row["brain_bone_fraction"] <= 1.0      # v1 labels regenerated
    assert [c["target"] for c in payload["notes"]["target_checks"]] == [
        "mri_to_ct_mae_body_hu_max", "ct_to_mri_ssim_body_min"]
    printed = capsys.readouterr().out
    assert "StarGAN MRI->CT MAE in body" in printed and "target <= 60 HU" in printed
    assert "target >= 0.85" in printed

    # --- quality trained on other subjects (another seed), scored on the same test subject
    out = tmp_path / "quality_other_train.json"
    assert quality.main(["--quick", "--models", "stargan", "--data-dir", str(data_dir),
                         "--dataset-config", dataset, "--train-dataset-config",
                         "synthetic_3x2x32_seed1", "--out", str(out)]) == 0
    payload = _results(out)
    other = {row["model"]: row for row in payload["rows"]}
    assert payload["notes"]["train_dataset"] == "synthetic_3x2x32_seed1"
    assert other["StarGAN"]["config"]["data"]["dataset_config"] == "synthetic_3x2x32_seed1"
    assert {row["train_dataset"] for row in other.values()} == {"synthetic_3x2x32_seed1"}
    assert {row["dataset"] for row in other.values()} == {dataset}
    assert other["StarGAN"]["test_subjects"] == 1
    # the floors are the test subject's, whatever the model was trained on
    assert other["noise-free ground truth"]["mri_to_ct_mae_body_hu"] == pytest.approx(
        floor["mri_to_ct_mae_body_hu"])
    capsys.readouterr()
    # a training set that holds the test subject is refused, naming it
    assert quality.main(["--quick", "--models", "stargan", "--data-dir", str(data_dir),
                         "--dataset-config", dataset, "--train-dataset-config",
                         "synthetic_5x2x32", "--out", str(tmp_path / "leak.json")]) == 2
    err = capsys.readouterr().err
    assert "synthetic_5x2x32" in err and "phantom-0-0002" in err and "test split" in err
    assert not (tmp_path / "leak.json").exists()

    # --- quality on phantom v2: in-domain and held-out-domain test subjects, 2-D vs 2.5-D
    out = tmp_path / "quality_v2.json"
    assert quality.main(["--quick", "--models", "stargan", "--dataset-config",
                         "synthetic_v2_6x4x32", "--compare-context", "--tta", "lr",
                         "--out", str(out)]) == 0
    payload = _results(out)
    notes = payload["notes"]
    assert notes["splits"] == ["test", "test_heldout_domain"] and notes["phantom_version"] == 2
    assert notes["presets"] == ["smoke", "smoke_2p5d"]
    rows = {(row["model"], row["split"]): row for row in payload["rows"]}
    models = ["identity", "histogram matching", "StarGAN", "StarGAN + lr TTA", "StarGAN 2.5-D",
              "StarGAN 2.5-D + lr TTA", "noise-free ground truth", quality.MRI_ONLY_FLOOR]
    assert list(rows) == [(m, s) for s in notes["splits"] for m in models]
    for split in notes["splits"]:
        flat, context = rows["StarGAN", split], rows["StarGAN 2.5-D", split]
        assert (flat["preset"], flat["context_slices"]) == ("smoke", 1)
        assert (context["preset"], context["context_slices"], context["steps"]) == (
            "smoke_2p5d", 3, 2)
        for row in (flat, context):
            body = row["summary"]["mri->ct"]["body"]
            assert row["mri_to_ct_through_plane_mae_body_hu"] == body["through_plane_mae"]["mean"]
            assert 0.0 <= row["brain_bone_fraction"] <= 1.0
            assert row["wm_median_error_hu"] >= 0 and row["gm_median_error_hu"] >= 0
            [checks] = row["anatomy"].values()                 # one subject per split here
            assert checks["brain_voxels"] > checks["wm_voxels"] > 0
            assert row["wm_median_error_hu"] == pytest.approx(
                abs(checks["wm_median_hu"] - checks["wm_true_median_hu"]))
            # the tissue breakdown scores the same voxels as the evaluation's body MAE
            assert checks["body_mae_hu"] == pytest.approx(row["mri_to_ct_mae_body_hu"],
                                                          rel=1e-4)
            assert row["mri_to_ct_mae_visible_hu"] == checks["visible_mae_hu"]
            if checks["visible_voxel_share"] == 1.0:
                assert checks["visible_mae_hu"] == checks["body_mae_hu"]
        noise_free = rows["noise-free ground truth", split]
        assert noise_free["wm_median_error_hu"] < 10 and noise_free["brain_bone_fraction"] < 0.02
        mirrored = rows["StarGAN + lr TTA", split]          # the same model, mirrored passes
        assert mirrored["tta"] == "lr" and mirrored["steps"] == flat["steps"]
        assert mirrored["mri_to_ct_mae_body_hu"] != flat["mri_to_ct_mae_body_hu"]
    held, base = rows["StarGAN", "test_heldout_domain"], rows["StarGAN", "test"]
    assert held["heldout_to_in_domain_mae_ratio"] == pytest.approx(
        held["mri_to_ct_mae_body_hu"] / base["mri_to_ct_mae_body_hu"])
    assert notes["heldout_to_in_domain_mae_ratio"]["StarGAN"] == held[
        "heldout_to_in_domain_mae_ratio"]
    targets = {(c["target"], c["model"], c["split"]): c for c in notes["target_checks"]}
    for model in ("StarGAN", "StarGAN 2.5-D", "StarGAN + lr TTA"):
        for target in ("heldout_mri_to_ct_mae_body_hu_max", "heldout_to_in_domain_mae_ratio_max",
                       "brain_bone_fraction_max", "wm_median_error_hu_max",
                       "gm_median_error_hu_max"):
            check = targets[target, model, "test_heldout_domain"]
            assert isinstance(check["passed"], bool) and check["line"] in notes["summary"]
    for split in notes["splits"]:
        check = targets["context_beats_2d_through_plane", "StarGAN 2.5-D", split]
        assert check["passed"] == (check["value"] < check["limit"])
        assert check["limit"] == rows["StarGAN", split]["mri_to_ct_through_plane_mae_body_hu"]
        mirrored = targets["context_beats_2d_through_plane", "StarGAN 2.5-D + lr TTA", split]
        assert mirrored["baseline_model"] == "StarGAN + lr TTA"     # TTA against TTA
    assert not any(t == "mri_to_ct_mae_body_hu_max" for t, _, _ in targets)   # v1 targets: v1
    printed = capsys.readouterr().out
    assert "2.5-D beats 2-D on through-plane error" in printed
    assert "held-out / in-domain MRI->CT MAE" in printed and "target <= 100 HU" in printed


def test_quality_scores_models_at_their_own_resolution():
    """The demo model (128 px) is scored on phantoms rendered at 128 px; a resize to another
    data size has a floor: zero for a flat volume, positive for one with edges."""
    from ctmri_tf import configs
    from ctmri_tf.evaluate import paired_subject

    demo, paper = (configs.get_config("stargan", p) for p in ("demo", "paper"))
    assert quality.native_dataset(demo) == "synthetic_v2_40x32x128"
    assert quality.native_dataset(paper) == "synthetic"
    custom = configs.override(demo, {"data.dataset_config": "folder"})
    assert quality.native_dataset(custom) == "folder"

    mask = np.ones((2, 64, 64), np.uint8)
    flat = paired_subject("flat", ct=np.full((2, 64, 64), 40.0), mask=mask,
                          mri=np.full((2, 64, 64), 300.0), mri_range=(0.0, 600.0))
    assert quality.resolution_floor([flat], 64) is None
    floor = quality.resolution_floor([flat], 32)
    assert floor["mri_to_ct_mae_body_hu"] == pytest.approx(0.0, abs=1e-3)
    assert floor["ct_to_mri_mae_body"] == pytest.approx(0.0, abs=1e-6)
    ct = np.full((2, 64, 64), -100.0)
    ct[:, :, 31:] = 1000.0                             # a bone edge between two pixels
    edged = paired_subject("edged", ct=ct, mri=np.full((2, 64, 64), 300.0), mask=mask,
                           mri_range=(0.0, 600.0))
    floor = quality.resolution_floor([edged], 32)
    assert 1.0 < floor["mri_to_ct_mae_body_hu"] < 1100.0 / 2
    assert floor["mri_to_ct_ssim_body"] < 1.0


def test_noise_floor_is_the_noise_free_phantom_scored_against_the_stored_one():
    from ctmri_tf import phantom
    from ctmri_tf.evaluate import paired_subject
    from ctmri_tf.intensity import fit_mri_scale

    def stored(index, ct_shift=0.0):
        s = phantom.make_subject(index, image_size=32, num_slices=4, seed=0)
        return paired_subject(s.subject_id, ct=s.ct + ct_shift, mri=s.mri, mask=s.mask,
                              mri_range=fit_mri_scale(s.mri, s.mask).as_tuple())

    floor = quality.noise_floor([stored(1), stored(2)], "synthetic_3x4x32")
    # by hand for the CT: mean |noise| inside the body, = sigma sqrt(2 / pi) for Gaussian noise
    expected = []
    for index in (1, 2):
        noisy, clean = (phantom.make_subject(index, image_size=32, num_slices=4, noise=n)
                        for n in (True, False))
        expected.append(np.abs(noisy.ct - clean.ct)[noisy.mask > 0].mean())
    assert floor["mri_to_ct_mae_body_hu"] == pytest.approx(np.mean(expected), rel=1e-3)
    assert 8.0 < floor["mri_to_ct_mae_body_hu"] < 17.0
    assert 0.0 < floor["ct_to_mri_mae_body"] < 0.05 and floor["ct_to_mri_ssim_body"] < 1.0
    # not the phantoms it claims to be, or not synthetic at all: no floor
    assert quality.noise_floor([stored(1, ct_shift=5.0)], "synthetic_3x4x32") is None
    assert quality.noise_floor([stored(1)], "folder") is None


def test_v2_mri_only_floor_does_not_know_the_ct_kernel():
    """Phantom v2's MRI-only floor predicts the per-voxel median over kernels that sample the
    kernel distribution, whatever the subject's own kernel: two subjects that differ only in
    their kernel get the same floor CT, the median of the quantile kernels' renderings."""
    import dataclasses

    from ctmri_tf import phantom_v2

    kernels = phantom_v2.ct_kernel_quantiles(5)      # q = 0.1 .. 0.9: 2 sharp, 3 smooth
    assert kernels == [("sharp", pytest.approx(0.75)), ("sharp", pytest.approx(1.25)),
                       ("smooth", pytest.approx(0.4 + 0.8 / 6)), ("smooth", pytest.approx(0.8)),
                       ("smooth", pytest.approx(1.2 - 0.8 / 6))]
    grid = dict(image_size=32, num_slices=2, seed=0)
    domain = phantom_v2.TRAINING_DOMAIN
    floor = quality.median_subject_v2(3, domain, **grid)
    drawn = dataclasses.replace(phantom_v2.subject_settings(3, seed=0, domain=domain),
                                ct_hu=quality.median_ct_hu_v2())
    renders = [phantom_v2.make_subject(3, noise=False, domain=domain, **grid,
                                       settings=dataclasses.replace(drawn, ct_kernel=k,
                                                                    ct_kernel_strength=a)).ct
               for k, a in phantom_v2.ct_kernel_quantiles(quality.FLOOR_KERNELS)]
    np.testing.assert_allclose(floor.ct, np.median(renders, axis=0), atol=1e-3)
    own = phantom_v2.make_subject(3, noise=False, domain=domain, settings=drawn, **grid).ct
    assert np.abs(floor.ct - own).max() > 50          # not the subject's own kernel
    np.testing.assert_array_equal(floor.mri, phantom_v2.make_subject(
        3, noise=False, domain=domain, **grid).mri)
    assert floor.settings["ct_kernel"] == "median"


def test_brain_hu_checks_on_a_hand_made_volume():
    """Bone predicted in the brain and white / grey matter medians, counted by hand."""
    from ctmri_tf import phantom_v2

    t = phantom_v2.TISSUES
    labels = np.array([[[t["white_matter"]] * 3 + [t["grey_matter"]] * 2,
                        [t["csf"], t["ventricle"], t["cortical_bone"], t["background"],
                         t["deep_grey"]]]], np.uint8)                     # (1, 2, 5)
    truth = np.array([[[25, 27, 29, 40, 42], [320, 8, 1000, -1000, 38]]], np.float32)
    synthetic = np.array([[[30, 500, 34, 41, 45], [350, 10, 900, -1000, 44]]], np.float32)
    checks = quality.brain_hu_checks(synthetic, truth, labels)
    # brain: 3 WM + 2 GM + CSF + ventricle + deep grey = 8 voxels (bone, background not)
    assert checks["brain_voxels"] == 8
    # > 300 HU: 500 in WM and 350 in the CSF voxel, whose true CT is 320 (partial volume with
    # the skull): bone predicted where the truth has none is the WM voxel only
    assert checks["any_bone_fraction"] == pytest.approx(2 / 8)
    assert checks["true_bone_fraction"] == pytest.approx(1 / 8)
    assert checks["bone_fraction"] == pytest.approx(1 / 8)
    assert (checks["wm_voxels"], checks["wm_median_hu"], checks["wm_true_median_hu"]) == (
        3, 34.0, 27.0)
    assert checks["wm_median_error_hu"] == 7.0
    # grey matter: cortex and deep grey, synthetic 41, 45, 44 -> 44; true 40, 42, 38 -> 40
    assert (checks["gm_voxels"], checks["gm_median_hu"], checks["gm_true_median_hu"]) == (
        3, 44.0, 40.0)
    assert checks["gm_median_error_hu"] == 4.0
    # clipped to the metrics' CT range first: 5000 HU counts as 3000
    clipped = quality.brain_hu_checks(np.full((1, 1, 1), 5000.0), np.zeros((1, 1, 1)),
                                      np.full((1, 1, 1), t["white_matter"]))
    assert clipped["wm_median_hu"] == 3000.0 and clipped["bone_fraction"] == 1.0
    # no grey matter: NaN; over subjects: mean and worst, NaN ignored
    no_grey = quality.brain_hu_checks(truth, truth, np.where(
        np.isin(labels, [t["grey_matter"], t["deep_grey"]]), t["white_matter"], labels))
    assert np.isnan(no_grey["gm_median_hu"]) and no_grey["wm_median_error_hu"] == 0.0
    summary = quality.anatomy_summary({"a": checks, "b": no_grey})
    assert summary["brain_bone_fraction"] == pytest.approx((1 / 8 + 0.0) / 2)
    assert summary["brain_bone_fraction_max"] == pytest.approx(1 / 8)
    assert summary["brain_any_bone_fraction"] == pytest.approx((2 / 8 + 1 / 8) / 2)
    assert summary["gm_median_error_hu"] == 4.0 and summary["gm_median_error_hu_max"] == 4.0
    assert set(summary["anatomy"]) == {"a", "b"}
    with pytest.raises(CtmriInputError, match="one shape"):
        quality.brain_hu_checks(synthetic, truth[:, :1], labels)


def test_tissue_errors_split_the_body_error_by_tissue_by_hand():
    """MRI -> CT error inside the body by bone / brain / air / soft tissue, counted by hand."""
    from ctmri_tf import phantom_v2

    t = phantom_v2.TISSUES
    labels = np.array([[[t["cortical_bone"], t["marrow"], t["white_matter"], t["csf"],
                         t["sinus_air"], t["fat"], t["background"]]]], np.uint8)   # (1, 1, 7)
    truth = np.array([[[1200, 350, 25, -1000, -1000, -100, -1000]]], np.float32)
    synthetic = np.array([[[800, 250, 35, 30, -900, -80, 0]]], np.float32)
    body = np.array([[[1, 1, 1, 1, 1, 1, 0]]], bool)    # the background voxel is outside
    errors = quality.tissue_errors(synthetic, truth, labels, body)
    # errors 400, 100 | 10, 1030 | 100 | 20; summed 1660 over 6 body voxels
    assert errors["bone_mae_hu"] == 250.0 and errors["bone_voxel_share"] == pytest.approx(2 / 6)
    assert errors["bone_error_share"] == pytest.approx(500 / 1660)
    assert errors["brain_mae_hu"] == 520.0
    assert errors["brain_error_share"] == pytest.approx(1040 / 1660)
    assert errors["air_mae_hu"] == 100.0 and errors["air_voxel_share"] == pytest.approx(1 / 6)
    assert errors["soft_tissue_mae_hu"] == 20.0
    assert sum(errors[f"{g}_error_share"] for g in ("bone", "brain", "air", "soft_tissue")
               ) == pytest.approx(1.0)
    assert errors["body_mae_hu"] == pytest.approx(1660 / 6)
    assert errors["visible_mae_hu"] == errors["body_mae_hu"] and errors["visible_voxel_share"] == 1
    # a skull-stripped MRI shows only its brain (white matter and CSF here): errors 10 and 1030
    brain = np.isin(labels, [t["white_matter"], t["csf"]])
    stripped = quality.tissue_errors(synthetic, truth, labels, body, visible=brain)
    assert stripped["visible_mae_hu"] == 520.0
    assert stripped["visible_voxel_share"] == pytest.approx(2 / 6)
    assert stripped["body_mae_hu"] == errors["body_mae_hu"]        # the body figure is unchanged
    assert stripped["bone_mae_hu"] == errors["bone_mae_hu"]
    # a group without voxels is NaN; the summary averages it with the other subjects' figures
    no_air = quality.tissue_errors(synthetic, truth, labels, body & (labels != t["sinus_air"]))
    assert np.isnan(no_air["air_mae_hu"]) and no_air["air_error_share"] == 0.0
    summary = quality.anatomy_summary({"a": errors, "b": no_air})
    assert summary["air_mae_hu"] == 100.0
    assert summary["bone_mae_hu"] == 250.0 and np.isnan(summary["wm_median_error_hu"])
    with pytest.raises(CtmriInputError, match="one shape"):
        quality.tissue_errors(synthetic, truth, labels, body[:, :, :3])
    summary = quality.anatomy_summary({"a": errors, "b": stripped})
    assert summary["mri_to_ct_mae_visible_hu"] == pytest.approx((1660 / 6 + 520) / 2)


def test_only_a_skull_stripped_subjects_mri_visible_region_is_its_brain():
    from ctmri_tf import phantom_v2

    kept, stripped = None, None
    for index in range(40):
        s = phantom_v2.subject_settings(index, seed=0)
        if s.skull_stripped and stripped is None:
            stripped = index
        if not s.skull_stripped and kept is None:
            kept = index
    grid = dict(image_size=32, num_slices=4, seed=0, noise=False)
    subject = phantom_v2.make_subject(stripped, **grid)
    region = quality.mri_visible_region(subject)
    np.testing.assert_array_equal(region, subject.brain)
    assert 0 < region.sum() < subject.mask.sum()
    assert np.all(subject.mri[region == 0] == 0)         # nothing outside it is imaged
    assert quality.mri_visible_region(phantom_v2.make_subject(kept, **grid)) is None


def test_warm_start_budget_counts_regression_then_adversarial_steps():
    # a quarter of the run at 1 s per regression step, the rest at 3 s: 2.5 s per step on
    # average, 100 s -> 40 steps, in whole n_critic-2 cycles
    assert quality.warm_start_budget_steps(100.0, 1.0, 3.0, share=0.25, cycle=2) == 40
    assert quality.warm_start_budget_steps(101.0, 1.0, 3.0, share=0.25, cycle=2) == 40
    assert quality.warm_start_budget_steps(100.0, 1.0, 3.0, share=0.0, cycle=1) == 33
    # a StarGAN run keeps its warm-up's share (scheduled, as train --steps)
    config = configs.override(configs.get_config("stargan", "smoke"), {
        "loss.lambda_paired": 1.0, "loss.adversarial_start_step": 5})    # 5 of 10 steps
    longer = quality.scheduled(config, 40)
    assert (longer.loss.adversarial_start_step, longer.schedule.decay_steps) == (20, 20)
    regression = configs.override(config, {"loss.adversarial_start_step": 1_000_000})
    assert quality.scheduled(regression, 40).loss.adversarial_start_step == 1_000_000


def test_full_measurements_need_ten_iterations_unless_few_are_allowed():
    from benchmarks import common
    from ctmri_tf.errors import CtmriInputError

    with pytest.raises(CtmriInputError, match="at least 10 timed iterations.*--few-iterations"):
        common.check_iterations(3, 1, quick=False)
    common.check_iterations(3, 1, quick=False, few_allowed=True)
    common.check_iterations(2, 1, quick=True)
    with pytest.raises(CtmriInputError, match="--warmup must be >= 0"):
        common.check_iterations(10, -1, quick=False)
    args = train_speed._parser().parse_args(["--models", "cyclegan", "--presets", "paper",
                                             "--iterations", "3", "--few-iterations"])
    [spec] = [s for s in train_speed.specs_from_args(args) if s.precision == "float32"]
    assert (spec.preset, spec.iterations) == ("paper", 3)

"""``ctmri translate``: a raw CT/MRI scan (NIfTI, DICOM, PNG) to the translated scan.

Models are tiny and untrained (StarGAN generator width 8, one residual block) and exported with
the real exporters (``export.saved_model``); phantom volumes are 32 px x 4 slices. Expected
values are computed here from the Keras generator and :mod:`ctmri_tf.intensity`; the generator
is called inside ``tf.function`` because graph mode (as in the SavedModel) fuses ops differently
from eager mode (about 1e-6 in [-1, 1], i.e. a few 1e-3 HU), and the contract is 1e-3 HU.
"""
import shutil
import warnings
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pydicom
import pytest
import tensorflow as tf

from ctmri_tf import cli, configs, intensity, phantom, tiling
from ctmri_tf.body_mask import body_mask
from ctmri_tf.data_card import (SYNTHETIC_NOTE, OutOfDistributionWarning, build_data_card,
                                card_dict)
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io import Volume, read_image, read_volume
from ctmri_tf.modality_rules import NO_NEGATIVE_MRI_LIKELIHOOD_RATIO, combine, physics_evidence
from ctmri_tf.models import modality_classifier, stargan_generator
from ctmri_tf.training.checkpointing import TrainingCheckpoint
from ctmri_tf.training.run_dir import create_run_dir
from ctmri_tf.training.stargan import StarGAN
from ctmri_tf.translate import (AIR_HU, DEFAULT_TTA, TILE_OVERLAP, TRANSLATED_MRI_RANGE,
                                ModelSet, classify_modality, png_values, translate_file,
                                translate_volume, uncertainty_path)
from dataset_fixtures import TINY, tiny_dataset  # noqa: F401  (pytest fixture)
from ctmri_tf.export.saved_model import (export_classifier, export_run, export_segmentation,
                                export_stargan, read_export_info)
from ctmri_tf.export.signatures import MRI_OUTPUT_RANGE
from medical_fixtures import (file_states, raises_naming, write_dicom_series, write_nifti,
                              write_png_slices)

SIZE, SLICES = 32, 4
HU_ATOL = 1e-3
SEGMENTER_THRESHOLD_UNIT = -0.9     # the test segmenter calls "body" what is above this
AFFINE = np.array([[-7.5, 0.0, 0.0, 117.0],
                   [0.0, 7.4, 1.0, -120.0],
                   [0.0, -0.5, 36.0, -60.0],
                   [0.0, 0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def subject():
    return phantom.make_subject(1, image_size=SIZE, num_slices=SLICES)


@pytest.fixture(scope="module")
def generator():
    keras.utils.set_random_seed(3)
    return stargan_generator(filters=8, num_residual=1)


def graph_generator(model):
    """``(unit (B, H, W, 1), target "ct"/"mri") -> unit`` through the Keras model in graph mode."""
    call = tf.function(lambda x, label: model([x, label], training=False))

    def run(unit, target):
        labels = tf.one_hot([("ct", "mri").index(target)] * len(unit), 2)
        return call(tf.constant(unit, tf.float32), labels).numpy()
    return run


def mirrored(generate, tta="lr"):
    """``generate`` with the default test-time augmentation written out: each image and its
    left-right mirror in one batch (interleaved, as the tiles are), the mirror's output mirrored
    back; ``(x, target) -> (mean, std)`` over the passes (``tta=None``: one pass, std 0)."""
    def run(x, target):
        if tta is None:
            out = generate(x, target)
            return out, np.zeros_like(out)
        both = np.stack([x, x[:, :, ::-1]], axis=1).reshape(-1, *x.shape[1:])
        out = generate(both, target).reshape(len(x), 2, *x.shape[1:])
        passes = np.stack([out[:, 0], out[:, 1, :, ::-1]]).astype(np.float64)
        return passes.mean(axis=0), passes.std(axis=0)
    return run


def expected_translation(generate, data, source, target, mask, *, size=None, tta="lr",
                         with_std=False):
    """The documented pipeline, written out: physical -> [-1, 1] (MRI scaled inside the mask),
    background -1, (resize), generator with the default TTA (:func:`mirrored`; resized back per
    pass), physical units, air outside the mask; ``with_std``: also the uncertainty (std of the
    passes x the map's slope, 0 outside the mask)."""
    value_range = (intensity.CT_WINDOW_HU if source == "ct"
                   else intensity.fit_mri_scale(data, mask=mask))
    unit = intensity.to_unit(data, source, value_range).astype(np.float32)
    unit[mask == 0] = -1.0
    x = unit[..., None]
    if size is not None:
        x = tf.image.resize(x, (size, size), method="bilinear", antialias=True).numpy()
    if tta is None or size is None:
        out, std = mirrored(generate, tta)(x, target)
    else:
        outs = [generate(x, target), generate(x[:, :, ::-1], target)[:, :, ::-1]]
        outs = [tf.image.resize(o, data.shape[1:], method="bilinear").numpy() for o in outs]
        out, std = np.mean(outs, axis=0), np.std(outs, axis=0)
    physical = intensity.from_unit(out[..., 0], target, None if target == "ct" else (0.0, 1.0))
    physical[mask == 0] = AIR_HU if target == "ct" else 0.0
    if not with_std:
        return physical
    spread = std[..., 0] * (4024.0 / 2 if target == "ct" else 0.5)
    spread[mask == 0] = 0.0
    return physical, spread


@pytest.fixture(scope="module")
def exports(tmp_path_factory, generator):
    """Export base with only the StarGAN."""
    base = tmp_path_factory.mktemp("exports") / "plain"
    export_stargan(generator, base)
    return base


def _classifier(bias):
    """A CT/MRI classifier whose logits are its bias for every image (a sure, fixed vote)."""
    model = modality_classifier(filters=4)
    layer = model.get_layer("logits")
    kernel, _ = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.asarray(bias, np.float32)])
    return model


def _threshold_segmenter():
    """A 1x1-convolution body segmenter: logits (0, 100 (x + 0.9)), i.e. body where the
    [-1, 1] image exceeds -0.9 (CT: -822.8 HU)."""
    image = keras.Input((SIZE, SIZE, 1))
    logits = keras.layers.Conv2D(2, 1, name="logits")(image)
    model = keras.Model(image, logits)
    model.get_layer("logits").set_weights([np.array([[[[0.0, 100.0]]]], np.float32),
                                           np.array([0.0, -100.0 * SEGMENTER_THRESHOLD_UNIT],
                                                    np.float32)])
    return model


@pytest.fixture(scope="module")
def full_exports(tmp_path_factory, exports):
    """StarGAN + a classifier that votes CT + the threshold segmenter."""
    base = tmp_path_factory.mktemp("exports") / "full"
    shutil.copytree(exports, base)
    export_classifier(_classifier([8.0, 0.0]), base)
    export_segmentation(_threshold_segmenter(), base)
    return base


@pytest.fixture(scope="module")
def mri_classifier_exports(tmp_path_factory, exports):
    base = tmp_path_factory.mktemp("exports") / "mri-classifier"
    shutil.copytree(exports, base)
    export_classifier(_classifier([0.0, 8.0]), base)
    return base


@pytest.fixture
def mri_nifti(tmp_path, subject):
    """The phantom MRI as NIfTI with an oblique affine and a header description."""
    path = write_nifti(tmp_path / "in" / "mri.nii.gz", subject.mri, AFFINE)
    image = nib.load(path)
    image.header["descrip"] = b"phantom T1w"
    nib.save(image, path)
    return path


def outputs_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- formats

def test_nifti_mri_to_ct_by_the_command(mri_nifti, exports, generator, tmp_path, capsys):
    before = file_states([mri_nifti])
    out = tmp_path / "out" / "ct.nii.gz"
    assert cli.main(["translate", str(mri_nifti), str(out), "--models", str(exports),
                     "--from", "mri"]) == 0
    printed = capsys.readouterr().out
    assert "MRI (--from)" in printed and "mri -> ct" in printed and f"wrote {out}" in printed

    result, source = nib.load(out), nib.load(mri_nifti)
    np.testing.assert_array_equal(result.affine, source.affine)
    np.testing.assert_array_equal(result.header.get_sform(), source.header.get_sform())
    np.testing.assert_array_equal(result.header.get_qform(), source.header.get_qform())
    assert result.header["descrip"] == source.header["descrip"]
    assert result.shape == source.shape

    data = read_volume(mri_nifti).data
    mask = body_mask(data, "mri")
    expected = expected_translation(graph_generator(generator), data, "mri", "ct", mask)
    ct = read_volume(out).data
    np.testing.assert_allclose(ct[mask == 1], expected[mask == 1], atol=HU_ATOL, rtol=0)
    assert np.all(ct[mask == 0] == AIR_HU)
    assert ct[mask == 1].min() >= -1024.0 and ct[mask == 1].max() <= 3000.0
    assert file_states([mri_nifti]) == before
    assert outputs_in(out.parent) == ["ct.nii.gz"]            # no temporary leftovers


def test_dicom_modality_from_the_tag_new_uids_and_target_modality(tmp_path, subject, exports,
                                                                  generator):
    files = write_dicom_series(tmp_path / "mr", np.rint(subject.mri * 50), modality="MR",
                               spacing=(4.0, 0.9, 0.9))
    before = file_states([tmp_path / "mr"])
    out = translate_file(tmp_path / "mr", tmp_path / "synthetic-ct", models=exports,
                         progress=False)
    assert out == tmp_path / "synthetic-ct"
    written = sorted(out.iterdir())
    assert len(written) == SLICES
    inputs = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    outputs = [pydicom.dcmread(f, stop_before_pixels=True) for f in written]
    assert {ds.Modality for ds in outputs} == {"CT"}
    assert {ds.SOPClassUID for ds in outputs} == {pydicom.uid.CTImageStorage}
    assert len({ds.SeriesInstanceUID for ds in outputs}) == 1
    assert outputs[0].SeriesInstanceUID != inputs[0].SeriesInstanceUID
    assert outputs[0].StudyInstanceUID != inputs[0].StudyInstanceUID
    assert not {ds.SOPInstanceUID for ds in outputs} & {ds.SOPInstanceUID for ds in inputs}
    assert outputs[0].FrameOfReferenceUID == inputs[0].FrameOfReferenceUID
    assert outputs[0].PatientID == inputs[0].PatientID == "PHANTOM001"

    source, result = read_volume(tmp_path / "mr"), read_volume(out)
    assert result.modality == "ct" and result.shape == source.shape
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-4)
    mask = body_mask(source.data, "mri")
    expected = expected_translation(graph_generator(generator), source.data, "mri", "ct", mask)
    np.testing.assert_allclose(result.data, expected, atol=0.5 + HU_ATOL, rtol=0)  # whole HU
    assert np.all(result.data[mask == 0] == AIR_HU)
    assert file_states([tmp_path / "mr"]) == before


def test_png_folder_modality_from_the_classifier_with_the_segmenter(tmp_path, subject,
                                                                    full_exports, generator,
                                                                    capsys):
    write_png_slices(tmp_path / "ct", np.maximum(subject.ct, -1024))   # 16-bit, HU + 1024
    assert cli.main(["translate", str(tmp_path / "ct"), str(tmp_path / "mri"),
                     "--models", str(full_exports), "--uncertainty"]) == 0
    printed = capsys.readouterr().out
    assert (f"CT (classifier {full_exports / 'classifier' / '1'}: 4 of 4 slices, "
            f"mean probability 1.000)") in printed
    assert f"segmentation model {full_exports / 'segmentation' / '1'}" in printed
    assert outputs_in(tmp_path / "mri") == [f"slice_{k + 1}.png" for k in range(SLICES)]
    assert outputs_in(tmp_path / "mri_uncertainty") == outputs_in(tmp_path / "mri")

    hu = np.stack([read_image(tmp_path / "ct" / f"slice_{k + 1}.png", modality="ct")
                   for k in range(SLICES)])
    mask = (intensity.ct_to_unit(hu) > SEGMENTER_THRESHOLD_UNIT).astype(np.uint8)
    assert 0 < mask.sum() < mask.size and not np.array_equal(mask, body_mask(hu, "ct"))
    expected = expected_translation(graph_generator(generator), hu, "ct", "mri", mask)
    stored = np.stack([read_image(tmp_path / "mri" / f"slice_{k + 1}.png")
                       for k in range(SLICES)])
    np.testing.assert_allclose(stored, expected * 65535, atol=0.5 + 1e-2, rtol=0)
    assert np.all(stored[mask == 0] == 0)

    # --body-mask threshold: the thresholds of ctmri_tf.body_mask instead of the export
    volume = read_volume(tmp_path / "ct", modality="ct")
    translated = translate_volume(volume, models=ModelSet(full_exports, use_segmenter=False))
    np.testing.assert_array_equal(translated.meta["body_mask"], body_mask(hu, "ct"))


def test_one_png_slice_resized_to_the_model_size_and_back(tmp_path, subject, exports,
                                                          generator):
    write_png_slices(tmp_path, np.maximum(subject.ct[2:3], -1024), prefix="ct_")
    out = translate_file(tmp_path / "ct_1.png", tmp_path / "mri.png", source="ct",
                         models=ModelSet(exports, image_size=16), progress=False)
    hu = read_image(tmp_path / "ct_1.png", modality="ct")[None]
    mask = body_mask(hu, "ct")
    expected = expected_translation(graph_generator(generator), hu, "ct", "mri", mask, size=16)
    stored = read_image(out)
    assert stored.shape == (SIZE, SIZE)
    np.testing.assert_allclose(stored, expected[0] * 65535, atol=0.5 + 1e-2, rtol=0)
    np.testing.assert_array_equal(png_values(np.array([[-1024.0, 0.0, 2000.4]]), "ct"),
                                  [[0, 1024, 3024]])
    np.testing.assert_array_equal(png_values(np.array([[0.0, 0.5, 1.0]]), "mri"),
                                  [[0, 32768, 65535]])
    assert TRANSLATED_MRI_RANGE == MRI_OUTPUT_RANGE       # as the SavedModels' `translate`


def test_modality_vote_of_the_classifier(mri_nifti, mri_classifier_exports, capsys, tmp_path):
    volume = read_volume(mri_nifti)
    assert volume.modality is None
    vote = classify_modality(volume, ModelSet(mri_classifier_exports))
    assert vote.modality == "mri" and vote.votes == {"ct": 0, "mri": SLICES}
    assert vote.confidence == pytest.approx(1 / (1 + np.exp(-8.0)), abs=1e-6)
    translate_file(mri_nifti, tmp_path / "ct.nii", models=mri_classifier_exports,
                   progress=False, log=print)
    assert "MRI (classifier" in capsys.readouterr().out
    assert read_volume(tmp_path / "ct.nii").shape == volume.shape


def test_training_run_folder_as_models(tmp_path, subject):
    config = configs.get_config("stargan", "smoke")               # 32 px, width 8
    run = create_run_dir(tmp_path / "run", config)
    task = StarGAN(config, tf.distribute.get_strategy())
    rng = np.random.default_rng(0)
    task.generator.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype)
                                for w in task.generator.get_weights()])
    TrainingCheckpoint(run.checkpoints, step=tf.Variable(3, dtype=tf.int64),
                       rng=tf.random.Generator.from_seed(0), **task.checkpoint_objects()).save()
    volume = read_volume(write_nifti(tmp_path / "ct.nii", subject.ct), modality="ct")
    translated = translate_volume(volume, models=ModelSet(run.root))
    mask = body_mask(volume.data, "ct")
    expected = expected_translation(graph_generator(task.generator), volume.data, "ct", "mri",
                                    mask)
    assert translated.modality == "mri"
    np.testing.assert_array_equal(translated.meta["body_mask"], mask)
    np.testing.assert_allclose(translated.data, expected, atol=1e-5, rtol=0)   # [0, 1] scale
    np.testing.assert_array_equal(translated.affine, volume.affine)


# ----------------------------------------------------------------------------- pixel spacing

def recording_translator(models: ModelSet, monkeypatch) -> list:
    """Record every batch ``models`` hands its generator (the model's own input)."""
    seen, translate_unit = [], models.translate_unit

    def recording(batch, source, target):
        seen.append(np.array(batch))
        return translate_unit(batch, source, target)
    monkeypatch.setattr(models, "translate_unit", recording)
    return seen


def model_space(data, source, mask):
    """Step 4: physical -> [-1, 1] (MRI scaled inside the mask), background -1."""
    value_range = (intensity.CT_WINDOW_HU if source == "ct"
                   else intensity.fit_mri_scale(data, mask=mask))
    unit = intensity.to_unit(data, source, value_range).astype(np.float32)
    unit[mask == 0] = -1.0
    return unit


def test_slices_are_translated_at_the_trained_pixel_spacing_in_overlapping_tiles(
        tmp_path, subject, generator, monkeypatch):
    """A 1.0 mm MRI of 32 x 32 px and a StarGAN exported as trained at 0.5 mm on 16 px: the
    generator sees 16 px tiles of the slice resampled to 0.5 mm (64 x 64 px, 7 x 7 tiles that
    overlap by half a tile, 8 px, each followed by its left-right mirror: the default TTA), not
    the whole slice squeezed to 16 px (2 mm pixels, anatomy at a quarter of the size it was
    trained on); the result is on the input grid and is the pipeline of ``ctmri_tf.tiling``
    written out (Gaussian blending, TTA lr)."""
    base = tmp_path / "exports"
    export_stargan(generator, base, training_image_size=16, training_pixel_spacing_mm=(0.5, 0.5))
    info = read_export_info(base / "stargan" / "1")
    assert (info["training_image_size"], info["training_pixel_spacing_mm"]) == ([16, 16],
                                                                              [0.5, 0.5])
    models = ModelSet(base)
    assert models.pixel_spacing() == (0.5, 0.5) and models.image_size((32, 32)) == (16, 16)
    seen = recording_translator(models, monkeypatch)
    path = write_nifti(tmp_path / "mri.nii.gz", subject.mri, np.diag([1.0, 1.0, 4.0, 1.0]))
    volume = read_volume(path, modality="mri")
    assert volume.spacing == (4.0, 1.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no "resized by matrix size" warning
        translated = translate_volume(volume, models=models, batch_size=10)

    assert translated.shape == volume.shape and translated.spacing == volume.spacing
    tiles = np.concatenate(seen)
    assert tiles.shape == (SLICES * 7 * 7 * 2, 16, 16, 1) and max(len(b) for b in seen) <= 10
    mask = body_mask(volume.data, "mri")
    unit = model_space(volume.data, "mri", mask)[..., None]
    at_trained = tiling.resample(unit, 1.0, 0.5)
    assert at_trained.shape == (SLICES, 64, 64, 1)
    assert TILE_OVERLAP == 0.5 and DEFAULT_TTA == "lr"
    assert tiling.tile_starts(64, 16, TILE_OVERLAP) == [0, 8, 16, 24, 32, 40, 48]
    np.testing.assert_allclose(tiles[0], at_trained[0, :16, :16], atol=1e-6)
    np.testing.assert_allclose(tiles[1], at_trained[0, :16, 15::-1], atol=1e-6)   # mirrored
    np.testing.assert_allclose(tiles[2 * (1 * 7 + 3)], at_trained[0, 8:24, 24:40], atol=1e-6)
    np.testing.assert_allclose(tiles[-2], at_trained[-1, 48:, 48:], atol=1e-6)

    generate = graph_generator(generator)
    out, std = tiling.predict_physical(unit, 1.0, 0.5, (16, 16), lambda b: generate(b, "ct"),
                                       min_overlap=TILE_OVERLAP, batch_size=10, tta="lr",
                                       return_std=True)
    expected = intensity.from_unit(out[..., 0], "ct", None)
    expected[mask == 0] = AIR_HU
    # same batches of 10 tiles as translate_volume; the tolerance covers oneDNN summing float32
    # convolutions in another order should the batching ever differ
    np.testing.assert_allclose(translated.data, expected, atol=HU_ATOL, rtol=1e-5)
    spread = std[..., 0] * 2012.0
    spread[mask == 0] = 0
    np.testing.assert_allclose(translated.meta["uncertainty"], spread, atol=HU_ATOL, rtol=1e-5)
    assert translated.meta["uncertainty"][mask == 1].max() > 0    # an untrained net is not
    #                                                               mirror-symmetric


def test_run_folders_and_their_exports_carry_the_training_pixel_spacing(tmp_path, subject,
                                                                       monkeypatch):
    """A run whose config.json records data.pixel_spacing_mm 3.75 mm (32 px): its export
    records it too, and the 7.5 mm phantom CT reaches the generator as 32 px tiles of the
    slice at 3.75 mm (64 px: 3 x 3 tiles), from the run folder and from the export alike."""
    config = configs.override(configs.get_config("stargan", "smoke"),
                              {"data.pixel_spacing_mm": "3.75,3.75"})
    run = create_run_dir(tmp_path / "run", config)
    task = StarGAN(config, tf.distribute.get_strategy())
    TrainingCheckpoint(run.checkpoints, step=tf.Variable(3, dtype=tf.int64),
                       rng=tf.random.Generator.from_seed(0), **task.checkpoint_objects()).save()
    [version] = export_run("stargan", run.root, tmp_path / "exports")
    info = read_export_info(version)
    assert (info["training_image_size"], info["training_pixel_spacing_mm"]) == ([32, 32],
                                                                              [3.75, 3.75])
    volume = Volume(subject.ct, "ct", subject.spacing, np.eye(4))
    assert subject.spacing[1:] == (7.5, 7.5)
    results = []
    for folder in (run.root, tmp_path / "exports"):
        models = ModelSet(folder)
        assert models.pixel_spacing() == (3.75, 3.75)
        seen = recording_translator(models, monkeypatch)
        results.append(translate_volume(volume, models=models).data)
        assert np.concatenate(seen).shape == (SLICES * 3 * 3 * 2, 32, 32, 1)   # TTA lr
    np.testing.assert_allclose(results[0], results[1], atol=0.05, rtol=0)      # HU


def test_the_segmentation_export_runs_at_its_training_spacing(tmp_path, subject, exports):
    """The threshold segmenter exported as trained at the input's own spacing gives exactly the
    thresholds (no resampling); exported as trained at twice the spacing, nearly the same mask
    (its edges move by up to a pixel)."""
    volume = Volume(np.maximum(subject.ct, -1024), "ct", subject.spacing, np.eye(4))
    truth = (intensity.ct_to_unit(volume.data) > SEGMENTER_THRESHOLD_UNIT).astype(np.uint8)
    for spacing, agreement in ((7.5, 1.0), (15.0, 0.95)):
        base = tmp_path / f"at-{spacing}"
        export_segmentation(_threshold_segmenter(), base, training_pixel_spacing_mm=[spacing] * 2)
        shutil.copytree(exports / "stargan", base / "stargan")
        models = ModelSet(base, pixel_spacing=subject.spacing[1:])   # translator: as the input
        assert models.segmentation_pixel_spacing == (spacing, spacing)
        mask = translate_volume(volume, models=models).meta["body_mask"]
        assert np.mean(mask == truth) >= agreement
        if agreement == 1.0:
            np.testing.assert_array_equal(mask, truth)


def test_without_a_training_spacing_slices_are_resized_by_matrix_size_with_one_warning(
        exports, subject):
    models = ModelSet(exports, image_size=16)        # an older export: no recorded spacing
    assert models.pixel_spacing() is None
    volume = Volume(subject.ct, "ct", (4.0, 0.5, 0.5), np.eye(4))
    with pytest.warns(UserWarning, match="does not record the pixel spacing it was trained at"
                                         ".*resized by matrix size to 16 x 16 px"):
        translate_volume(volume, models=models)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # once per ModelSet
        translate_volume(volume, models=models)
    assert ModelSet(exports, pixel_spacing=0.5).pixel_spacing() == (0.5, 0.5)
    with pytest.raises(CtmriInputError, match="pixel spacing must be two positive mm values"):
        ModelSet(exports, pixel_spacing=(1.0, 0.0))


# ----------------------------------------------------------------------------- uncertainty

def test_uncertainty_is_written_beside_the_nifti_output_on_its_grid(mri_nifti, exports,
                                                                   generator, tmp_path, capsys):
    """``--uncertainty``: ``ct_uncertainty.nii.gz`` beside ``ct.nii.gz``, with the input's affine
    and header, holding the std of the two ``--tta lr`` passes in HU (0 outside the body); one
    log line with its median inside the body; refused when it exists, like the output."""
    out = tmp_path / "out" / "ct.nii.gz"
    spread_path = tmp_path / "out" / "ct_uncertainty.nii.gz"
    command = ["translate", str(mri_nifti), str(out), "--models", str(exports), "--from", "mri",
               "--uncertainty"]
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert outputs_in(out.parent) == ["ct.nii.gz", "ct_uncertainty.nii.gz"]
    result, source = nib.load(spread_path), nib.load(mri_nifti)
    np.testing.assert_array_equal(result.affine, source.affine)
    np.testing.assert_array_equal(result.header.get_sform(), source.header.get_sform())
    assert result.shape == source.shape and result.header["descrip"] == source.header["descrip"]

    data = read_volume(mri_nifti).data
    mask = body_mask(data, "mri")
    ct, spread = expected_translation(graph_generator(generator), data, "mri", "ct", mask,
                                      with_std=True)
    written = read_volume(spread_path).data
    np.testing.assert_allclose(written, spread, atol=HU_ATOL, rtol=0)
    np.testing.assert_allclose(read_volume(out).data, ct, atol=HU_ATOL, rtol=0)
    assert np.all(written[mask == 0] == 0) and written[mask == 1].max() > 0
    median = float(np.median(written[mask == 1]))
    [line] = [line for line in printed.splitlines() if line.startswith("uncertainty")]
    assert line.startswith("uncertainty (std over the 2 --tta lr passes): median ")
    assert line.endswith(" HU inside the body")
    assert float(line.split("median ")[1].split()[0]) == pytest.approx(median, rel=1e-3)
    assert f"wrote {spread_path} (uncertainty" in printed

    # an existing map is refused without --overwrite (before translating), even when the
    # output itself is not there; with --overwrite both are replaced
    out.unlink()
    assert cli.main(command) == 2
    assert f"ctmri: error: {spread_path}: output already exists" in capsys.readouterr().err
    assert outputs_in(out.parent) == ["ct_uncertainty.nii.gz"]
    assert cli.main([*command, "--overwrite", "--tta", "lr+ud"]) == 0
    assert "std over the 4 --tta lr+ud passes" in capsys.readouterr().out
    assert outputs_in(out.parent) == ["ct.nii.gz", "ct_uncertainty.nii.gz"]
    # no TTA passes, no spread: refused, nothing written
    for path in (out, spread_path):
        path.unlink()
    assert cli.main([*command, "--tta", "none"]) == 2
    assert "--uncertainty needs test-time augmentation passes" in capsys.readouterr().err
    assert outputs_in(out.parent) == []


def test_uncertainty_of_png_and_dicom_outputs(tmp_path, subject, exports, generator):
    """A PNG output gets a PNG map in the same 16-bit encoding (MRI: [0, 1] x 65535); a DICOM
    series folder a NIfTI file ``<folder>_uncertainty.nii.gz`` on the input's grid."""
    write_png_slices(tmp_path, np.maximum(subject.ct[2:3], -1024), prefix="ct_")
    lines = []
    translate_file(tmp_path / "ct_1.png", tmp_path / "mri.png", source="ct", models=exports,
                   progress=False, uncertainty=True, log=lines.append)
    assert (tmp_path / "mri_uncertainty.png").is_file()
    hu = read_image(tmp_path / "ct_1.png", modality="ct")[None]
    _, spread = expected_translation(graph_generator(generator), hu, "ct", "mri",
                                     body_mask(hu, "ct"), with_std=True)
    np.testing.assert_allclose(read_image(tmp_path / "mri_uncertainty.png"), spread[0] * 65535,
                               atol=0.5 + 1e-2, rtol=0)
    assert any(line.endswith("MRI scaled [0, 1] inside the body") for line in lines)

    write_dicom_series(tmp_path / "mr", np.rint(subject.mri * 50), modality="MR",
                       spacing=(4.0, 0.9, 0.9))
    lines = []
    out = translate_file(tmp_path / "mr", tmp_path / "synthetic-ct", models=exports,
                         progress=False, uncertainty=True, log=lines.append)
    spread_path = tmp_path / "synthetic-ct_uncertainty.nii.gz"
    assert uncertainty_path(out, "dicom") == spread_path and spread_path.is_file()
    assert any("NIfTI on the input's grid" in line for line in lines)
    source, written = read_volume(tmp_path / "mr"), read_volume(spread_path)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    _, spread = expected_translation(graph_generator(generator), source.data, "mri", "ct",
                                     body_mask(source.data, "mri"), with_std=True)
    np.testing.assert_allclose(written.data, spread, atol=HU_ATOL, rtol=0)

    assert uncertainty_path(Path("a/ct.nii"), "nifti") == Path("a/ct_uncertainty.nii")
    assert uncertainty_path(Path("a/s.1.nii.gz"), "nifti") == Path("a/s.1_uncertainty.nii.gz")
    assert uncertainty_path(Path("a/mri"), "images") == Path("a/mri_uncertainty")


def test_uncertainty_is_not_written_when_a_later_step_fails(mri_nifti, exports, tmp_path,
                                                           monkeypatch, subject):
    """The map is moved into place only once the output is: a failing output write leaves
    neither (nor a temporary file). Without TTA ``translate_volume`` has no map."""
    from ctmri_tf import translate as translate_module

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")
    monkeypatch.setattr(translate_module, "_write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        translate_file(mri_nifti, tmp_path / "out" / "ct.nii.gz", source="mri", models=exports,
                       progress=False, uncertainty=True)
    assert not (tmp_path / "out").exists() or outputs_in(tmp_path / "out") == []

    volume = Volume(subject.ct, "ct", subject.spacing, np.eye(4))
    plain = translate_volume(volume, models=ModelSet(exports), tta="none")
    assert plain.meta["uncertainty"] is None and plain.meta["tta"] == "none"
    with pytest.raises(CtmriInputError, match="--tta must be one of none, lr, lr\\+ud"):
        translate_volume(volume, models=ModelSet(exports), tta="rot90")
    with pytest.raises(CtmriInputError, match="--tile-overlap must be a fraction"):
        translate_volume(volume, models=ModelSet(exports), tile_overlap=1.0)


def test_translate_flags_default_to_the_library_defaults_and_help_needs_no_tensorflow():
    import os
    import subprocess
    import sys

    args = cli.build_parser().parse_args(["translate", "in.nii", "out.nii"])
    assert (args.tta, args.tile_overlap, args.uncertainty) == (DEFAULT_TTA, TILE_OVERLAP, False)
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "ctmri_tf.cli",
                             "translate", "--help"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    assert result.returncode == 0 and "--tta {none,lr,lr+ud}" in result.stdout
    assert "--uncertainty" in result.stdout and "--tile-overlap F" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras")}


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_name_the_file_and_write_nothing(tmp_path, mri_nifti, exports, capsys):
    before = file_states([mri_nifti])
    out = tmp_path / "out.nii.gz"

    def translate(input_path=mri_nifti, output=out, **kw):
        kw = {"models": exports, "progress": False, "source": "mri", **kw}
        return translate_file(input_path, output, **kw)

    unknown = tmp_path / "notes.txt"
    unknown.write_text("not a scan")
    with raises_naming(unknown, "unknown format"):
        translate(unknown)
    with raises_naming(mri_nifti, "cannot decide its modality.*no DICOM Modality tag and no "
                                  "classifier in .*pass --from ct\\|mri"):
        translate(source=None)
    with raises_naming(mri_nifti, "already MRI; --to mri"):
        translate(to="mri")
    with raises_naming(tmp_path / "out.png", "NIfTI, so the output must be"):
        translate(output=tmp_path / "out.png")
    with raises_naming(tmp_path / "nowhere", "models folder does not exist"):
        translate(models=tmp_path / "nowhere")
    (tmp_path / "empty-models" / "stargan").mkdir(parents=True)
    with raises_naming(tmp_path / "empty-models" / "stargan", "no exported version"):
        translate(models=tmp_path / "empty-models")
    export_classifier(_classifier([0.0, 0.0]), tmp_path / "wrong-models", name="stargan")
    with raises_naming(tmp_path / "wrong-models" / "stargan" / "1",
                       "no 'translate_with_ranges' signature"):
        translate(models=tmp_path / "wrong-models")
    with raises_naming(mri_nifti, "is the input"):               # even with overwrite
        translate(output=mri_nifti, overwrite=True)
    with raises_naming(mri_nifti.parent, "is the input .* or contains it"):
        translate(output=mri_nifti.parent, overwrite=True)
    assert not out.exists() and outputs_in(tmp_path / "in") == ["mri.nii.gz"]
    assert file_states([mri_nifti]) == before

    # the command reports the same errors (status 2, message on stderr)
    assert cli.main(["translate", str(mri_nifti), str(out), "--models", str(exports)]) == 2
    assert f"ctmri: error: {mri_nifti}: cannot decide its modality" in capsys.readouterr().err
    assert not out.exists()


def test_output_of_the_wrong_kind_is_refused_and_leaves_no_temporary_file(
        tmp_path, subject, mri_nifti, exports, capsys):
    """An existing folder where a file goes (or a file where a folder goes) is a clear error,
    even with --overwrite; nothing is replaced and no temporary sibling is left."""
    out = tmp_path / "ct.nii.gz"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with raises_naming(out, "is an existing folder, but the output here is a file"):
        translate_file(mri_nifti, out, source="mri", models=exports, overwrite=True,
                       progress=False)
    assert cli.main(["translate", str(mri_nifti), str(out), "--from", "mri", "--overwrite",
                     "--models", str(exports)]) == 2
    err = capsys.readouterr().err
    assert f"ctmri: error: {out}: is an existing folder" in err and "Traceback" not in err
    assert outputs_in(tmp_path) == ["ct.nii.gz", "in"] and outputs_in(out) == ["keep.txt"]

    write_dicom_series(tmp_path / "ct", subject.ct, modality="CT")
    series_out = tmp_path / "mri"
    series_out.write_text("a file, not a folder")
    with raises_naming(series_out, "is an existing file, but the output here is a folder"):
        translate_file(tmp_path / "ct", series_out, models=exports, overwrite=True,
                       progress=False)
    assert series_out.read_text() == "a file, not a folder"
    assert outputs_in(tmp_path) == ["ct", "ct.nii.gz", "in", "mri"]


def test_existing_output_needs_overwrite_and_dicom_output_stays_outside_the_input(
        tmp_path, subject, exports):
    write_dicom_series(tmp_path / "ct", subject.ct, modality="CT")
    out = tmp_path / "mri"
    out.mkdir()
    (out / "old.txt").write_text("keep me unless --overwrite")
    with raises_naming(out, "already exists"):
        translate_file(tmp_path / "ct", out, models=exports, progress=False)
    assert outputs_in(out) == ["old.txt"]
    with raises_naming(tmp_path / "ct" / "mri", "inside the input folder"):
        translate_file(tmp_path / "ct", tmp_path / "ct" / "mri", models=exports,
                       overwrite=True, progress=False)
    with raises_naming(tmp_path / "ct", "is the input"):
        translate_file(tmp_path / "ct", tmp_path / "ct", models=exports, overwrite=True,
                       progress=False)
    translate_file(tmp_path / "ct", out, models=exports, overwrite=True, progress=False)
    assert len(outputs_in(out)) == SLICES and "old.txt" not in outputs_in(out)
    assert read_volume(out).modality == "mri"
    with pytest.raises(CtmriInputError, match="DICOM Modality says 'ct'"):
        translate_file(tmp_path / "ct", tmp_path / "x", source="mri", models=exports,
                       progress=False)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- modality rules

@pytest.fixture(scope="module")
def unsure_exports(tmp_path_factory, exports):
    """StarGAN + a classifier that says 0.5 / 0.5 for every image."""
    base = tmp_path_factory.mktemp("exports") / "unsure"
    shutil.copytree(exports, base)
    export_classifier(_classifier([0.0, 0.0]), base)
    return base


def test_physics_decides_a_ct_before_the_classifier(tmp_path, subject, exports,
                                                    mri_classifier_exports):
    # a constant-air CT and a phantom CT are CT by the air rule alone
    air = physics_evidence(np.full((2, 16, 16), -1000.0, np.float32))
    assert air.modality == "ct" and air.fraction_below_air == 1.0 and "-200" in air.rule
    ct = physics_evidence(subject.ct)
    assert ct.modality == "ct" and ct.fraction_below_air > 0.5
    mri = physics_evidence(subject.mri)                     # magnitude signal: no negatives
    assert mri.modality is None and mri.mri_likelihood_ratio == NO_NEGATIVE_MRI_LIKELIHOOD_RATIO
    noisy = physics_evidence(subject.mri - 1.0)             # negatives, no air: no evidence
    assert noisy.modality is None and noisy.mri_likelihood_ratio == 1.0
    assert combine(0.5, 4.0) == pytest.approx(0.8) and combine(1.0, 4.0) == 1.0

    path = write_nifti(tmp_path / "ct.nii.gz", subject.ct)
    for models in (exports, mri_classifier_exports):        # no classifier / one that says MRI
        lines = []
        translate_file(path, tmp_path / f"{models.name}.nii.gz", models=models, progress=False,
                       log=lines.append)
        assert lines[0].startswith(f"{path}: CT (physics: ") and "classifier" not in lines[0]
        assert read_volume(tmp_path / f"{models.name}.nii.gz").modality is None   # NIfTI


def test_unsure_classifier_abstains_and_asks_for_from(mri_nifti, unsure_exports, tmp_path,
                                                      capsys):
    out = tmp_path / "ct.nii.gz"
    # classifier 0.5, no negative value (MRI odds x 4): 0.8 < 0.9
    with raises_naming(mri_nifti, r"cannot decide its modality with confidence: .*, "
                                  r"probability 0\.800 with the physics evidence \(classifier "
                                  r"alone 0\.500; physics: no value below 0.*confidence 0\.800 "
                                  r"< 0\.9.*pass --from ct\|mri"):
        translate_file(mri_nifti, out, models=unsure_exports, progress=False)
    assert not out.exists()
    assert cli.main(["translate", str(mri_nifti), str(out), "--models",
                     str(unsure_exports)]) == 2
    assert "pass --from ct|mri" in capsys.readouterr().err and not out.exists()
    # a lower threshold, or --from, translates
    assert cli.main(["translate", str(mri_nifti), str(out), "--models", str(unsure_exports),
                     "--min-confidence", "0.75"]) == 0
    printed = capsys.readouterr().out
    assert "MRI (classifier" in printed and "classifier alone 0.500" in printed
    assert cli.main(["translate", str(mri_nifti), str(out), "--models", str(unsure_exports),
                     "--from", "mri", "--overwrite"]) == 0
    # without the physics evidence (values below 0, no air) the classifier's 0.5 stands
    shifted = write_nifti(tmp_path / "shifted.nii.gz", read_volume(mri_nifti).data - 1.0)
    vote = classify_modality(read_volume(shifted), ModelSet(unsure_exports))
    assert vote.confidence == pytest.approx(0.5)
    with raises_naming(shifted, r"confidence 0\.500 < 0\.9"):
        translate_file(shifted, tmp_path / "x.nii.gz", models=unsure_exports, progress=False)


def test_dicom_modality_other_than_ct_or_mr_is_refused(tmp_path, subject, exports):
    write_dicom_series(tmp_path / "us", np.rint(subject.mri * 50), modality="MR", Modality="US")
    for source in (None, "mri"):
        with raises_naming(tmp_path / "us", "DICOM Modality is 'US', neither CT nor MR.*not "
                                            "even with --from"):
            translate_file(tmp_path / "us", tmp_path / "out", source=source, models=exports,
                           progress=False)
    write_dicom_series(tmp_path / "ot", np.rint(subject.mri * 50), modality="MR", Modality="OT")
    with raises_naming(tmp_path / "ot", "DICOM Modality is 'OT', which does not say.*pass "
                                        "--from ct\\|mri"):
        translate_file(tmp_path / "ot", tmp_path / "out", models=exports, progress=False)
    translate_file(tmp_path / "ot", tmp_path / "out", source="mri", models=exports,
                   progress=False)
    assert read_volume(tmp_path / "out").modality == "ct"


# ----------------------------------------------------------------------------- data card

@pytest.fixture(scope="module")
def carded_exports(tmp_path_factory, generator, tiny_dataset):
    """StarGAN exported with the data card of the tiny phantom dataset (4 x 6 x 32 px)."""
    name, data_dir = tiny_dataset
    config = configs.override(configs.get_config("stargan", "smoke"),
                              {"data.dataset_config": name, "data.data_dir": str(data_dir)})
    card = build_data_card(config)
    base = tmp_path_factory.mktemp("exports") / "carded"
    export_stargan(generator, base, training_image_size=32, training_pixel_spacing_mm=(7.5, 7.5),
                   data_card=card)
    return base, card


def _phantom_nifti(path, volume, spacing_mm):
    """A NIfTI volume of ``(slice, row, col)`` spacing ``spacing_mm``."""
    affine = np.diag([spacing_mm[2], spacing_mm[1], spacing_mm[0], 1.0])
    return write_nifti(path, volume, affine)


def test_translate_prints_the_data_card_and_warns_far_from_it(tmp_path, carded_exports):
    base, card = carded_exports
    assert read_export_info(base / "stargan" / "1")["data_card"] == card_dict(card)
    assert card.slices_sampled == 24 and card.note == SYNTHETIC_NOTE   # 2 subjects x 2 x 6

    test_subject = phantom.make_subject(3, image_size=TINY["image_size"],
                                        num_slices=TINY["num_slices"])   # a test subject
    spacing = test_subject.spacing                                     # 24 x 7.5 x 7.5 mm
    for modality, data in (("mri", test_subject.mri), ("ct", test_subject.ct)):
        lines = []
        translate_file(_phantom_nifti(tmp_path / f"{modality}.nii.gz", data, spacing),
                       tmp_path / f"{modality}-out.nii.gz", source=modality, models=base,
                       progress=False, log=lines.append)
        assert any(line.startswith("data card: trained on ctmri/synthetic_4x6x32 at 32 px: head "
                                   "(synthetic phantom") for line in lines), lines
        assert f"data card: {SYNTHETIC_NOTE}" in lines
        assert "data card: pixel spacing 7.50 mm, body extent" in "\n".join(lines)
        assert not [line for line in lines if line.startswith("warning")], lines

    # the same head 3x larger (3x the spacing): spacing and body extent are far from the card
    big = _phantom_nifti(tmp_path / "big.nii.gz", test_subject.mri, [3 * s for s in spacing])
    lines = []
    translate_file(big, tmp_path / "big-out.nii.gz", source="mri", models=base, progress=False,
                   log=lines.append)
    warned = [line for line in lines if line.startswith("warning: ")]
    assert len(warned) == 2, lines
    assert warned[0].startswith("warning: pixel spacing 22.50 x 22.50 mm is outside the trained "
                                "7.50-7.50 mm")
    assert "warning: body extent" in warned[1] and "outside the trained" in warned[1]
    # a CT stored without its rescale intercept (HU + 1024): intensities far from the card
    lines = []
    translate_file(_phantom_nifti(tmp_path / "raw.nii.gz", test_subject.ct + 1024.0, spacing),
                   tmp_path / "raw-out.nii.gz", source="ct", models=base, progress=False,
                   log=lines.append)
    assert any(line.startswith("warning: CT intensities inside the body (p25/p50/p75 ")
               and "rescale intercept" in line for line in lines), lines
    # a CT given as MRI: the physics rules contradict --from (warned before translating)
    lines = []
    translate_file(_phantom_nifti(tmp_path / "ct.nii.gz", test_subject.ct, spacing),
                   tmp_path / "as-mri.nii.gz", source="mri", models=base, progress=False,
                   log=lines.append)
    assert any(line.startswith("warning: --from says MRI but physics: ") for line in lines)
    # without a log: Python warnings
    with pytest.warns(OutOfDistributionWarning) as record:
        translate_file(big, tmp_path / "big-out2.nii.gz", source="mri", models=base,
                       progress=False)
    assert [str(w.message) for w in record] == [f"{big}: {line[len('warning: '):]}"
                                                for line in warned]

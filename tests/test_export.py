"""SavedModel export for TF Serving: signatures against the Keras models, layout, versions,
models.config, saved_model_cli, the command line, and a real tensorflow_model_server when
one is installed.

Tiny models (width 8, 32 px) from smoke-size run folders of every kind (checkpoints written
here the way the trainers write them, no training) exported by the command line; each exported
signature is compared with the Keras model the trainer's loader restores from the run folder.
Each model is exported and reloaded once per module.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import configs, context, intensity, metrics
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.models import deeplab_v3_plus, resnet_generator, stargan_generator
from ctmri_tf.phantom import make_subject
from ctmri_tf.training.checkpointing import TrainingCheckpoint
from ctmri_tf.training.classifier import ModalityClassifier, load_classifier
from ctmri_tf.training.cyclegan import CycleGAN, write_primary_direction
from ctmri_tf.training.run_dir import RunDir, create_run_dir
from ctmri_tf.training.segmentation import Segmentation, load_segmentation_model
from ctmri_tf.training.stargan import StarGAN
from ctmri_tf.export import saved_model as sm

SIZE = 32
UNIT_ATOL = 1e-5              # model space [-1, 1]
HU_ATOL = UNIT_ATOL * 2012.0  # the same in HU: half the CT window's width per unit
SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def phantom():
    """4 registered CT (HU) / MRI (signal) / body-mask slices of 32 x 32 pixels."""
    return make_subject(0, image_size=SIZE, num_slices=4)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


def _perturb(model: keras.Model, rng: np.random.Generator) -> None:
    """Move every weight away from the seeded initialisation (so an export that skipped the
    restore would differ)."""
    model.set_weights([w + rng.normal(0.0, 0.05, w.shape).astype(w.dtype)
                       for w in model.get_weights()])


def _trained_run(root: Path, experiment: str, task_class, seed: int, prefix: str = "generator",
                 count: int | None = None, preset: str = "smoke"):
    """A smoke-size run folder whose checkpoint, saved with the trainer's own objects as the
    training loop does, holds the weights of the task's models named ``prefix*`` moved away
    from the seeded initialisation. Returns the task, whose models hold the checkpointed
    weights."""
    config = configs.get_config(experiment, preset)      # models of width 4-8, 32 px
    run = create_run_dir(root / f"{experiment}-{preset}", config)
    task = task_class(config, tf.distribute.get_strategy())
    rng = np.random.default_rng(seed)
    models = [model for name, model in task.checkpoint_objects().items()
              if name.startswith(prefix) and isinstance(model, keras.Model)]
    assert len(models) == (count or {"stargan": 1, "cyclegan": 2}[experiment])
    for model in models:
        _perturb(model, rng)
        if experiment == "segmentation":   # BatchNorm moving statistics far from (0, 1)
            for weight in model.weights:
                if weight.name == "moving_mean":
                    weight.assign(rng.normal(0.0, 0.5, weight.shape).astype(np.float32))
                elif weight.name == "moving_variance":
                    weight.assign(rng.uniform(0.3, 3.0, weight.shape).astype(np.float32))
    TrainingCheckpoint(run.checkpoints, step=tf.Variable(5, dtype=tf.int64),
                       rng=tf.random.Generator.from_seed(0), **task.checkpoint_objects()).save()
    return run.root, config, task


def _any_size_copy(builder, config, trained):
    """The trained weights in a generator that takes any image size, for the comparisons."""
    generator = builder(filters=config.model.generator_filters,
                        num_residual=config.model.generator_residual_blocks,
                        context_slices=config.model.context_slices)
    generator.set_weights(trained.get_weights())
    return generator


def _listing(folder: Path) -> list:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


def _export_by_cli(run: Path, base: Path, *args: str) -> None:
    before = _listing(run)
    assert sm.main(["--run-dir", str(run), "--base", str(base), *args]) == 0
    assert _listing(run) == before                        # the run folder is an input


@pytest.fixture(scope="module")
def stargan(tmp_path_factory, base):
    """A StarGAN run exported by the command line, and the reloaded SavedModel."""
    run, config, task = _trained_run(tmp_path_factory.mktemp("runs"), "stargan", StarGAN, 5)
    generator = _any_size_copy(stargan_generator, config, task.generator)
    _export_by_cli(run, base, "--kind", "stargan")
    path = base / "stargan" / "1"
    # saved_model_cli imports TensorFlow (seconds): start it now, read it in its test.
    cli = subprocess.Popen([str(SAVED_MODEL_CLI), "show", "--all", "--dir", str(path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    yield generator, path, tf.saved_model.load(str(path)), cli
    if cli.poll() is None:
        cli.kill()
        cli.communicate()


@pytest.fixture(scope="module")
def stargan_2p5d(tmp_path_factory):
    """A 2.5-D StarGAN run (``smoke_2p5d``: 3 slices in) exported by the command line."""
    run, config, task = _trained_run(tmp_path_factory.mktemp("runs"), "stargan", StarGAN, 7,
                                     preset="smoke_2p5d")
    generator = _any_size_copy(stargan_generator, config, task.generator)
    base = tmp_path_factory.mktemp("exports_2p5d")
    _export_by_cli(run, base, "--kind", "stargan")
    return generator, base / "stargan" / "1"


@pytest.fixture(scope="module")
def cyclegan_run(tmp_path_factory):
    """A CycleGAN run folder and its task (both trained generators)."""
    return _trained_run(tmp_path_factory.mktemp("runs"), "cyclegan", CycleGAN, 6)


@pytest.fixture(scope="module")
def cyclegan(cyclegan_run, base):
    """Both directions of a CycleGAN run exported by the command line (``--direction both``)
    and reloaded, with both trained generators for the comparisons."""
    run, config, task = cyclegan_run
    generators = {"mri2ct": _any_size_copy(resnet_generator, config, task.generator_mri2ct),
                  "ct2mri": _any_size_copy(resnet_generator, config, task.generator_ct2mri)}
    _export_by_cli(run, base, "--kind", "cyclegan", "--direction", "both")
    paths = {d: base / f"cyclegan_{d}" / "1" for d in ("mri2ct", "ct2mri")}
    loaded = {d: tf.saved_model.load(str(path)) for d, path in paths.items()}
    return generators, paths["mri2ct"], loaded["mri2ct"], loaded["ct2mri"]


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory, base):
    """A segmentation run whose BatchNorm moving statistics are random (not the initial 0 / 1),
    exported by the command line (any multiple of 32); the any-size Keras model restored by
    ``load_segmentation_model`` and the trainer's own 32 px model that was checkpointed."""
    run, config, task = _trained_run(tmp_path_factory.mktemp("runs"), "segmentation",
                                     Segmentation, 3, prefix="model", count=1)
    _export_by_cli(run, base, "--kind", "segmentation")
    path = base / "segmentation" / "1"
    return (load_segmentation_model(run, any_size=True), path, tf.saved_model.load(str(path)),
            task.model)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, base):
    """A classifier run exported by the command line, and the model ``load_classifier``
    restores from it."""
    run, config, task = _trained_run(tmp_path_factory.mktemp("runs"), "classifier",
                                     ModalityClassifier, 4, prefix="model", count=1)
    _export_by_cli(run, base, "--kind", "classifier")
    path = base / "classifier" / "1"
    return load_classifier(run), path, tf.saved_model.load(str(path)), task.model


# ----------------------------------------------------------------------------- expectations

def unit_of(image, modality, scale=None):
    """What the signatures must feed the model: CT window, or the image's own percentiles."""
    if modality == "ct":
        return intensity.ct_to_unit(image)
    return intensity.mri_to_unit(image, scale or intensity.fit_mri_scale(image))


def stargan_expected(generator, images, sources):
    """Keras reference: per-image normalisation, generator, target units ([0, 1] for MRI)."""
    units = np.stack([unit_of(im, src) for im, src in zip(images, sources)])[..., None]
    onehot = np.array([[1.0, 0.0] if src == "mri" else [0.0, 1.0] for src in sources],
                      np.float32)   # target = the other domain
    out = generator([units, onehot]).numpy()
    physical = np.stack([intensity.unit_to_ct(o) if src == "mri" else (o + 1.0) / 2.0
                         for o, src in zip(out, sources)])
    return out, physical


IMAGE_INPUTS = ("image", "reference", "mask")
IMAGE_OUTPUTS = ("translated", "translated_unit")


def _with_channel(inputs: dict) -> tuple[dict, bool]:
    """Slices ``(B, H, W)`` given for the image inputs -> ``(B, H, W, 1)``, the rank the
    signatures declare; and whether an axis was added."""
    added = any(np.ndim(inputs[k]) == 3 for k in IMAGE_INPUTS if k in inputs)
    return {k: np.asarray(v)[..., None] if k in IMAGE_INPUTS and np.ndim(v) == 3 else v
            for k, v in inputs.items()}, added


def call(loaded, signature, **inputs):
    """Call a signature of a ``tf.saved_model.load``-ed export; slices ``(B, H, W)`` are sent as
    ``(B, H, W, 1)`` and the image outputs come back as ``(B, H, W)``."""
    inputs, added = _with_channel(inputs)
    result = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    out = {k: v.numpy() for k, v in result.items()}
    return {k: v[..., 0] if added and k in IMAGE_OUTPUTS else v for k, v in out.items()}


def session_run(path: Path, signature: str, **inputs) -> dict:
    """Run a signature the way TF Serving loads a SavedModel: a TF1 session over a new graph,
    ``loader.load`` (the restore op, then the init op), then ``Session.run`` on the signature's
    tensor names."""
    inputs, _ = _with_channel(inputs)
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        definition = meta_graph.signature_def[signature]
        feed = {definition.inputs[k].name: np.asarray(v) for k, v in inputs.items()}
        return session.run({k: v.name for k, v in definition.outputs.items()}, feed)


# ----------------------------------------------------------------------------- StarGAN

def test_stargan_translate_matches_keras_for_a_mixed_batch(stargan, phantom):
    generator, _, loaded, _ = stargan
    images = np.stack([phantom.ct[1], phantom.mri[1], phantom.mri[2], phantom.ct[2]])
    sources = ["ct", "mri", "mri", "ct"]
    targets = ["mri", "ct", " CT ", "MRI"]   # case and blanks do not matter
    out = call(loaded, "serving_default", image=images, target_domain=targets)
    unit, physical = stargan_expected(generator, images, sources)
    assert out["translated_unit"].shape == images.shape          # (B, H, W) in, (B, H, W) out
    np.testing.assert_allclose(out["translated_unit"], unit[..., 0], atol=UNIT_ATOL)
    np.testing.assert_allclose(out["translated"][[1, 2]], physical[[1, 2], ..., 0], atol=HU_ATOL)
    np.testing.assert_allclose(out["translated"][[0, 3]], physical[[0, 3], ..., 0],
                               atol=UNIT_ATOL)
    # CT output is HU: the unit image through the CT window.
    np.testing.assert_allclose(out["translated"][1], (out["translated_unit"][1] + 1) * 2012 - 1024,
                               atol=HU_ATOL)
    same = call(loaded, "translate", image=images, target_domain=targets)
    np.testing.assert_array_equal(same["translated"], out["translated"])


def test_stargan_batch_and_image_size_are_flexible(stargan, phantom):
    generator, _, loaded, _ = stargan
    rng = np.random.default_rng(0)
    for shape in [(1, 48, 32, 1), (3, 32, 64)]:
        images = rng.uniform(0, 600, shape).astype(np.float32)   # MR signal -> CT
        out = call(loaded, "translate", image=images, target_domain=["ct"] * shape[0])
        assert out["translated"].shape == shape
        assert out["translated_unit"].shape == shape
        unit, hu = stargan_expected(generator, images.reshape(shape[:3]), ["mri"] * shape[0])
        np.testing.assert_allclose(out["translated_unit"].reshape(unit.shape), unit,
                                   atol=UNIT_ATOL)
        np.testing.assert_allclose(out["translated"].reshape(hu.shape), hu, atol=HU_ATOL)


def test_stargan_translate_with_ranges_uses_the_given_ranges(stargan, phantom):
    generator, _, loaded, _ = stargan
    images = np.stack([phantom.mri[1], phantom.ct[1]])
    source_range = np.array([[0.0, 300.0], [-1024.0, 3000.0]], np.float32)
    target_range = np.array([[-1024.0, 3000.0], [5.0, 505.0]], np.float32)
    out = call(loaded, "translate_with_ranges", image=images, target_domain=["ct", "mri"],
               source_range=source_range, target_range=target_range)
    units = np.stack([intensity.mri_to_unit(images[0], (0.0, 300.0)),
                      intensity.ct_to_unit(images[1])])[..., None]
    expected = generator([units, np.array([[1, 0], [0, 1]], np.float32)]).numpy()[..., 0]
    np.testing.assert_allclose(out["translated_unit"], expected, atol=UNIT_ATOL)
    np.testing.assert_allclose(out["translated"][0], intensity.unit_to_ct(expected[0]),
                               atol=HU_ATOL)
    np.testing.assert_allclose(out["translated"][1],
                               intensity.unit_to_mri(expected[1], (5.0, 505.0)),
                               atol=UNIT_ATOL * 250.0)   # half the range width per unit


def test_stargan_evaluate_matches_ctmri_metrics(stargan, phantom):
    _, _, loaded, _ = stargan
    images = np.stack([phantom.mri[1], phantom.ct[2]])     # MRI -> CT, CT -> MRI
    references = np.stack([phantom.ct[1], phantom.mri[2]])
    masks = np.stack([phantom.mask[1], phantom.mask[2]]).astype(np.uint8)
    plain = call(loaded, "evaluate", image=images, target_domain=["ct", "mri"],
                 reference=references)
    masked = call(loaded, "evaluate_masked", image=images, target_domain=["ct", "mri"],
                  reference=references, mask=masks)
    translated = plain["translated"]
    np.testing.assert_array_equal(masked["translated"], translated)
    mri_reference = metrics.mri_to_unit_interval(references[1],
                                                 intensity.fit_mri_scale(references[1]))
    cases = [(translated[0], references[0], metrics.CT_RANGE_HU),        # HU, range 4024
             (translated[1], mri_reference, metrics.MRI_UNIT_RANGE)]     # [0, 1] MRI scale
    for i, (prediction, reference, value_range) in enumerate(cases):
        assert plain["psnr"][i] == pytest.approx(
            metrics.psnr(prediction, reference, value_range), abs=2e-3)
        assert plain["ssim"][i] == pytest.approx(
            metrics.ssim(prediction, reference, value_range), abs=2e-4)
        assert masked["psnr"][i] == pytest.approx(
            metrics.psnr(prediction, reference, value_range, mask=masks[i]), abs=2e-3)
        assert masked["ssim"][i] == pytest.approx(
            metrics.ssim(prediction, reference, value_range, mask=masks[i]), abs=2e-4)


def test_evaluate_masked_by_hand(stargan, phantom):
    """A reference 100 HU off inside the body (and unrelated outside): PSNR = 20 log10(4024 /
    100) dB; identical inside the body: SSIM 1 and PSNR inf."""
    _, _, loaded, _ = stargan
    image = phantom.mri[1:2]
    mask = phantom.mask[1:2].astype(np.uint8)
    translated = call(loaded, "translate", image=image, target_domain=["ct"])["translated"]
    outside = np.full_like(translated, 2500.0)
    shifted = np.where(translated < 2900.0, translated + 100.0, translated - 100.0)  # in range
    off = np.where(mask == 1, shifted, outside)
    out = call(loaded, "evaluate_masked", image=image, target_domain=["ct"], reference=off,
               mask=mask)
    assert out["psnr"][0] == pytest.approx(20 * np.log10(4024 / 100), abs=1e-3)
    same = np.where(mask == 1, translated, outside)
    out = call(loaded, "evaluate_masked", image=image, target_domain=["ct"], reference=same,
               mask=mask)
    assert out["psnr"][0] == np.inf
    assert out["ssim"][0] == pytest.approx(1.0, abs=1e-6)
    unmasked = call(loaded, "evaluate", image=image, target_domain=["ct"], reference=same)
    assert unmasked["ssim"][0] < 0.9     # the background differs


def test_signatures_reject_bad_input_with_the_rule(stargan, phantom):
    _, _, loaded, _ = stargan
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 4"):
        call(loaded, "translate", image=np.zeros((1, 30, 32), np.float32), target_domain=["ct"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="target_domain must be ct or mri"):
        call(loaded, "translate", image=phantom.ct[:1], target_domain=["pet"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="one entry per image"):
        call(loaded, "translate", image=phantom.ct[:2], target_domain=["mri"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(batch, height, width, 1\)"):
        call(loaded, "translate", image=np.zeros((1, 32, 32, 3), np.float32),
             target_domain=["mri"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="reference must have the same"):
        call(loaded, "evaluate", image=phantom.ct[:1], target_domain=["mri"],
             reference=phantom.mri[:2])


def test_a_blank_mri_slice_maps_to_background_instead_of_failing(stargan):
    generator, _, loaded, _ = stargan
    blank = np.zeros((1, SIZE, SIZE), np.float32)
    out = call(loaded, "translate", image=blank, target_domain=["ct"])
    expected = generator([np.full((1, SIZE, SIZE, 1), -1.0, np.float32),
                          np.array([[1.0, 0.0]], np.float32)]).numpy()[..., 0]
    np.testing.assert_allclose(out["translated_unit"], expected, atol=UNIT_ATOL)


def test_saved_model_cli_lists_signatures_dtypes_and_shapes(stargan):
    *_, cli = stargan
    stdout, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 0, stderr
    signatures = {}
    for block in re.split(r"\nsignature_def\['", stdout)[1:]:
        name = block.split("'", 1)[0]
        tensors = re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+"
                             r"shape: ([^\n]+)", block)
        signatures[name] = {(kind, t): (dtype, shape) for kind, t, dtype, shape in tensors}
    assert {"serving_default", "translate", "translate_with_ranges", "evaluate",
            "evaluate_masked"} <= set(signatures)
    image = ("DT_FLOAT", "(-1, -1, -1, 1)")
    assert signatures["serving_default"] == {
        ("inputs", "image"): image, ("inputs", "target_domain"): ("DT_STRING", "(-1)"),
        ("outputs", "translated"): image, ("outputs", "translated_unit"): image}
    ranges = signatures["translate_with_ranges"]
    assert ranges[("inputs", "source_range")] == ("DT_FLOAT", "(-1, 2)")
    assert ranges[("inputs", "target_range")] == ("DT_FLOAT", "(-1, 2)")
    masked = signatures["evaluate_masked"]
    assert masked[("inputs", "mask")] == ("DT_UINT8", "(-1, -1, -1, 1)")
    assert masked[("inputs", "reference")] == image
    assert masked[("outputs", "psnr")] == ("DT_FLOAT", "(-1)")
    assert masked[("outputs", "ssim")] == ("DT_FLOAT", "(-1)")
    assert ("inputs", "mask") not in signatures["evaluate"]


# ----------------------------------------------------------------------------- CycleGAN

def test_cyclegan_directions_match_keras(cyclegan, phantom):
    generators, path, loaded, loaded_ct2mri = cyclegan
    assert path == path.parents[1] / "cyclegan_mri2ct" / "1"
    mri = phantom.mri[:2]
    out = call(loaded, "serving_default", image=mri[..., None])
    units = np.stack([unit_of(m, "mri") for m in mri])[..., None]
    expected = generators["mri2ct"](units).numpy()
    np.testing.assert_allclose(out["translated_unit"], expected, atol=UNIT_ATOL)
    np.testing.assert_allclose(out["translated"], intensity.unit_to_ct(expected), atol=HU_ATOL)

    ranged = call(loaded, "translate_with_ranges", image=mri,
                  source_range=np.array([[0.0, 250.0]] * 2, np.float32),
                  target_range=np.array([[-1000.0, 1000.0]] * 2, np.float32))
    expected = generators["mri2ct"](intensity.mri_to_unit(mri, (0.0, 250.0))[..., None])
    np.testing.assert_allclose(ranged["translated"],
                               intensity.unit_to_ct(expected.numpy()[..., 0], (-1000.0, 1000.0)),
                               atol=HU_ATOL)

    for name in ("evaluate", "evaluate_masked"):
        extra = {"mask": phantom.mask[:2]} if name == "evaluate_masked" else {}
        ev = call(loaded, name, image=mri, reference=phantom.ct[:2], **extra)
        for i in range(2):
            assert ev["psnr"][i] == pytest.approx(metrics.psnr(
                ev["translated"][i], phantom.ct[i], metrics.CT_RANGE_HU,
                mask=phantom.mask[i] if extra else None), abs=2e-3)

    # ct2mri, exported from the same run: the other target (MRI out as the [0, 1] scaled signal).
    ct = np.random.default_rng(1).uniform(-1024, 1500, (3, 40, 24)).astype(np.float32)
    out = call(loaded_ct2mri, "serving_default", image=ct)
    expected = generators["ct2mri"](intensity.ct_to_unit(ct)[..., None]).numpy()[..., 0]
    np.testing.assert_allclose(out["translated_unit"], expected, atol=UNIT_ATOL)
    np.testing.assert_allclose(out["translated"], (expected + 1) / 2, atol=UNIT_ATOL)


def test_cyclegan_export_defaults_to_the_runs_primary_direction(cyclegan_run, tmp_path):
    run, _, _ = cyclegan_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    write_primary_direction(RunDir(copy), "ct2mri")
    exported = sm.export_run("cyclegan", copy, tmp_path / "exports")
    assert exported == [tmp_path / "exports" / "cyclegan_ct2mri" / "1"]
    assert sm.served_models(tmp_path / "exports") == ["cyclegan_ct2mri"]


# ----------------------------------------------------------------------------- segmentation

def test_segment_matches_keras_and_checks_the_size(segmentation, phantom):
    model, _, loaded, _ = segmentation
    images = np.stack([phantom.ct[1], phantom.mri[1], phantom.ct[3]])
    modality = ["ct", "mri", "ct"]
    out = call(loaded, "serving_default", image=images, modality=modality)
    units = np.stack([unit_of(im, m) for im, m in zip(images, modality)])[..., None]
    probabilities = tf.nn.softmax(model(units), axis=-1).numpy()
    assert out["probabilities"].shape == (3, SIZE, SIZE, 2)
    assert out["mask"].dtype == np.uint8 and out["mask"].shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(out["probabilities"], probabilities, atol=UNIT_ATOL)
    decided = np.abs(probabilities[..., 1] - probabilities[..., 0]) > 1e-4
    np.testing.assert_array_equal(out["mask"][decided], probabilities.argmax(-1)[decided])
    one = call(loaded, "segment", image=images[1:2, ..., None], modality=["mri"])
    np.testing.assert_allclose(one["probabilities"], out["probabilities"][1:2], atol=UNIT_ATOL)
    ranged = call(loaded, "segment_with_range", image=images[1:2], modality=["mri"],
                  intensity_range=np.array([[0.0, 200.0]], np.float32))
    expected = tf.nn.softmax(model(intensity.mri_to_unit(images[1:2], (0.0, 200.0))[..., None]),
                             axis=-1).numpy()
    np.testing.assert_allclose(ranged["probabilities"], expected, atol=UNIT_ATOL)
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 32"):
        call(loaded, "segment", image=np.zeros((1, 48, 32), np.float32), modality=["ct"])


def test_segmentation_export_takes_any_multiple_of_its_stride(segmentation, phantom):
    """Exported from a 32 px run, the model segments 64 x 32 and 32 x 96 slices as the Keras
    model does at those sizes (keras-cv's bilinear up-sampling traced with a dynamic size)."""
    model, _, loaded, _ = segmentation
    rng = np.random.default_rng(7)
    for rows, cols in ((64, 32), (32, 96)):
        images = rng.uniform(-1024.0, 1500.0, (2, rows, cols)).astype(np.float32)
        out = call(loaded, "segment", image=images, modality=["ct", "ct"])
        assert out["probabilities"].shape == (2, rows, cols, 2)
        expected = tf.nn.softmax(model(intensity.ct_to_unit(images)[..., None],
                                       training=False), axis=-1).numpy()
        np.testing.assert_allclose(out["probabilities"], expected, atol=UNIT_ATOL)


def test_segmentation_keeps_random_batchnorm_statistics(segmentation, phantom):
    """The checkpointed model has random BatchNorm moving means and variances (keras-cv's ASPP
    branches included, which ``tf.train.Checkpoint(model=...)`` alone would miss): the reloaded
    SavedModel reproduces that model, not one with the initial statistics."""
    loaded_model, _, loaded, trained = segmentation
    statistics = [w for w in trained.weights if w.name in ("moving_mean", "moving_variance")]
    assert len(statistics) == 66
    assert all(not np.allclose(w.numpy(), 0.0 if w.name == "moving_mean" else 1.0)
               for w in statistics)
    exported = {v.numpy().tobytes() for v in loaded.model_variables}
    assert all(w.numpy().tobytes() in exported for w in statistics)
    images = np.stack([phantom.ct[2], phantom.mri[2]])
    units = np.stack([unit_of(images[0], "ct"), unit_of(images[1], "mri")])[..., None]
    out = call(loaded, "segment", image=images, modality=["ct", "mri"])
    for model in (trained, loaded_model):
        probabilities = tf.nn.softmax(model(units, training=False), axis=-1).numpy()
        np.testing.assert_allclose(out["probabilities"], probabilities, atol=UNIT_ATOL)
    reset = deeplab_v3_plus(SIZE, width=8, blocks=(2, 2, 2, 2))  # initial statistics
    reset.set_weights([np.zeros_like(w) if w.name == "moving_mean" else
                       np.ones_like(w) if w.name == "moving_variance" else w.numpy()
                       for w in trained.weights])
    differs = tf.nn.softmax(reset(units, training=False), axis=-1).numpy()
    assert np.abs(differs - out["probabilities"]).max() > 1e-3


def test_a_fixed_size_segmentation_model_exports_for_its_size_only(tmp_path):
    model = deeplab_v3_plus(SIZE, width=4, blocks=(2, 2, 2, 2))
    loaded = tf.saved_model.load(str(sm.export_segmentation(model, tmp_path)))
    image = np.zeros((1, SIZE, SIZE), np.float32)
    assert call(loaded, "segment", image=image, modality=["ct"])["mask"].shape == (1, SIZE, SIZE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="exactly 32 x 32 pixels"):
        call(loaded, "segment", image=np.zeros((1, 64, 64), np.float32), modality=["ct"])


# ----------------------------------------------------------------------------- classifier

def test_classify_matches_keras_for_any_size(classifier, phantom):
    model, _, loaded, _ = classifier
    for images in (np.stack([phantom.ct[1], phantom.mri[1]]),
                   np.random.default_rng(2).uniform(0, 900, (3, 20, 28, 1)).astype(np.float32)):
        out = call(loaded, "serving_default", image=images)
        flat = images.reshape(images.shape[:3])
        units = np.stack([unit_of(im, "mri") for im in flat])[..., None]  # own percentiles
        # the training normalisation (ctmri_tf.data.modality_batches), whatever the modality
        np.testing.assert_allclose(units[..., 0], intensity.percentile_to_unit(flat), atol=1e-6)
        probabilities = tf.nn.softmax(model(units), axis=-1).numpy()
        assert out["probabilities"].shape == (len(images), 2)
        np.testing.assert_allclose(out["probabilities"], probabilities, atol=UNIT_ATOL)
        assert [v.decode() for v in out["label"]] == [
            ("ct", "mri")[i] for i in probabilities.argmax(-1)]
    blank = call(loaded, "classify", image=np.full((1, 24, 24), -1000.0, np.float32))
    expected = tf.nn.softmax(model(np.full((1, 24, 24, 1), -1.0, np.float32)), axis=-1)
    np.testing.assert_allclose(blank["probabilities"], expected.numpy(), atol=UNIT_ATOL)
    units = intensity.ct_to_unit(phantom.ct[:2])
    out = call(loaded, "classify_unit", image=units)
    np.testing.assert_allclose(out["probabilities"],
                               tf.nn.softmax(model(units[..., None]), axis=-1).numpy(),
                               atol=UNIT_ATOL)


# ----------------------------------------------------------------------------- layout

def test_layout_and_models_config_list_every_model(stargan, cyclegan, segmentation, classifier,
                                                   base):
    names = ["classifier", "cyclegan_ct2mri", "cyclegan_mri2ct", "segmentation", "stargan"]
    assert sm.served_models(base) == names
    for name in names:
        assert (base / name / "1" / "saved_model.pb").is_file()
        assert sorted(p.name for p in (base / name).iterdir()) == ["1"]   # no temp leftovers
    root = str(base.resolve())
    expected = "".join(f'  config {{\n    name: "{n}"\n    base_path: "{root}/{n}"\n'
                       f'    model_platform: "tensorflow"\n  }}\n' for n in names)
    text = (base / "models.config").read_text()
    assert text.split("model_config_list {\n", 1)[1] == expected + "}\n"
    assert all(line.startswith("#") for line in text.split("model_config_list")[0].splitlines())


# ----------------------------------------------------------------------------- TF Serving's loader

@pytest.fixture(scope="module")
def serving_cases(stargan, stargan_2p5d, cyclegan, segmentation, classifier, phantom):
    """One call per export kind (and a 2.5-D StarGAN): ``(export folder, signature, inputs
    (B, H, W, 1) or (B, H, W, 3) stacks, {output: expected from the Keras model})``."""
    generator, stargan_path, _, _ = stargan
    images = np.stack([phantom.ct[1], phantom.mri[1]])[..., None]
    unit, physical = stargan_expected(generator, images[..., 0], ["ct", "mri"])
    cases = [(stargan_path, "serving_default",
              {"image": images, "target_domain": np.array([b"mri", b"ct"])},
              {"translated_unit": unit, "translated": physical})]
    generator, stargan_2p5d_path = stargan_2p5d
    stacks = np.stack([context.stack_neighbours(phantom.ct, 3)[0],     # edge: (0, 0, 1)
                       context.stack_neighbours(phantom.mri, 3)[2]])   # (1, 2, 3)
    units = np.stack([unit_of(stacks[0], "ct"), unit_of(stacks[1], "mri")])
    unit = generator([units, np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)]).numpy()
    cases.append((stargan_2p5d_path, "serving_default",
                  {"image": stacks, "target_domain": np.array([b"mri", b"ct"])},
                  {"translated_unit": unit,
                   "translated": np.stack([(unit[0] + 1.0) / 2.0, intensity.unit_to_ct(unit[1])])}))
    generators, cyclegan_path, _, _ = cyclegan
    mri = phantom.mri[:2]
    expected = generators["mri2ct"](np.stack([unit_of(m, "mri") for m in mri])[..., None])
    cases.append((cyclegan_path, "translate", {"image": mri[..., None]},
                  {"translated_unit": expected.numpy(),
                   "translated": intensity.unit_to_ct(expected.numpy())}))
    model, segmentation_path, _, _ = segmentation
    ct = phantom.ct[2:4, :, :, None]
    cases.append((segmentation_path, "segment", {"image": ct, "modality": np.array([b"ct"] * 2)},
                  {"probabilities": tf.nn.softmax(model(intensity.ct_to_unit(ct)),
                                                  axis=-1).numpy()}))
    model, classifier_path, _, _ = classifier
    both = np.stack([phantom.ct[0], phantom.mri[0]])[..., None]
    cases.append((classifier_path, "classify", {"image": both},
                  {"probabilities": tf.nn.softmax(model(intensity.percentile_to_unit(both)),
                                                  axis=-1).numpy()}))
    return cases


def _assert_outputs(outputs: dict, expected: dict, where) -> None:
    for name, value in expected.items():
        atol = HU_ATOL if name == "translated" else UNIT_ATOL
        np.testing.assert_allclose(outputs[name], value, atol=atol, err_msg=f"{where}: {name}")


def test_every_export_runs_in_a_tf1_session_as_tf_serving_loads_it(serving_cases):
    """TF Serving restores a SavedModel into a TF1 session (restore op, init op) and runs the
    signature's tensors: every variable the graph reads must be one the restore op fills
    (Keras 3's variable wrappers, tracked instead of their tf.Variables, add a second,
    never-restored variable per weight: "Could not find variable ...")."""
    for path, signature, inputs, expected in serving_cases:
        _assert_outputs(session_run(path, signature, **inputs), expected, path)


def test_saved_model_cli_run_gives_the_keras_outputs(serving_cases, tmp_path):
    """``saved_model_cli run`` (the TF1 session loader as a command, .npy inputs and outputs)
    for every export kind; the runs go in parallel (each starts TensorFlow)."""
    runs = []
    for i, (path, signature, inputs, expected) in enumerate(serving_cases):
        folder = tmp_path / str(i)
        (folder / "out").mkdir(parents=True)
        for name, value in inputs.items():
            np.save(folder / f"{name}.npy", value)
        spec = ";".join(f"{name}={folder / name}.npy" for name in inputs)
        runs.append((subprocess.Popen(
            [str(SAVED_MODEL_CLI), "run", "--dir", str(path), "--tag_set", "serve",
             "--signature_def", signature, "--inputs", spec, "--outdir", str(folder / "out")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}), folder, path, expected))
    for process, folder, path, expected in runs:
        _, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, f"{path}: {stderr[-2000:]}"
        outputs = {name: np.load(folder / "out" / f"{name}.npy") for name in expected}
        _assert_outputs(outputs, expected, path)


def test_exports_describe_the_units_of_every_signature(stargan, cyclegan, segmentation,
                                                       classifier, base):
    """``assets.extra/ctmri_export.json`` names a unit for each input and output of each
    signature, and lists exactly the signatures and tensors of the SavedModel."""
    for name in ["classifier", "cyclegan_ct2mri", "cyclegan_mri2ct", "segmentation", "stargan"]:
        path = base / name / "1"
        described = sm.read_export_info(path)["signatures"]
        loaded = tf.saved_model.load(str(path))
        assert set(described) == set(loaded.signatures), name
        for signature, function in loaded.signatures.items():
            assert set(described[signature]["inputs"]) == set(
                function.structured_input_signature[1]), (name, signature)
            assert set(described[signature]["outputs"]) == set(
                function.structured_outputs), (name, signature)
            units = [*described[signature]["inputs"].values(),
                     *described[signature]["outputs"].values()]
            assert all(isinstance(u, str) and u for u in units), (name, signature)
    translate = sm.read_export_info(base / "stargan" / "1")["signatures"]["translate"]
    assert "HU" in translate["outputs"]["translated"]
    assert "[-1, 1]" in translate["outputs"]["translated_unit"]
    assert sm.read_export_info(base / "segmentation" / "1")["training_image_size"] == [SIZE, SIZE]


class Echo(tf.Module):
    """The cheapest servable: one signature returning its input."""

    def signatures(self):
        echo = tf.function(lambda x: {"y": x * 1.0},
                           input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
        return {"serving_default": echo.get_concrete_function()}


def test_versions_are_numbered_and_never_overwritten(tmp_path):
    export_base = tmp_path / "exports"
    export = lambda **kw: sm.export_module(Echo(), export_base, **kw)  # noqa: E731
    assert export(name="echo") == export_base / "echo" / "1"
    assert export(name="echo") == export_base / "echo" / "2"
    with pytest.raises(CtmriInputError, match=r"echo/2: version 2 .* already exists"):
        export(name="echo", version=2)
    assert export(name="echo-b", version=7) == export_base / "echo-b" / "7"
    (export_base / "echo-b" / "notes").mkdir()          # not a version: ignored
    (export_base / "echo-b" / ".8.tmp-x").mkdir()       # an export in progress: ignored
    assert sm.next_version(export_base / "echo-b") == 8
    assert sm.model_versions(export_base / "echo") == [1, 2]
    stamp = (export_base / "echo" / "2" / "saved_model.pb").stat().st_mtime_ns
    export(name="echo", version=2, overwrite=True)
    assert (export_base / "echo" / "2" / "saved_model.pb").stat().st_mtime_ns >= stamp
    assert tf.saved_model.load(str(export_base / "echo" / "2")).signatures["serving_default"](
        x=tf.constant([2.5]))["y"].numpy().tolist() == [2.5]
    with pytest.raises(CtmriInputError, match="version must be a positive integer"):
        export(name="echo", version=0)
    with pytest.raises(CtmriInputError, match="model name"):
        export(name="a/b")
    (export_base / "empty").mkdir()                      # no version: not served
    sm.write_models_config(export_base, serving_base="/models/")
    text = (export_base / "models.config").read_text()
    assert re.findall(r'name: "([^"]+)"\n    base_path: "([^"]+)"', text) == [
        ("echo", "/models/echo"), ("echo-b", "/models/echo-b")]
    assert sorted(p.name for p in export_base.iterdir()) == ["echo", "echo-b", "empty",
                                                              "models.config"]


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    class FailsWhileTracing:
        def signatures(self):
            raise RuntimeError("tracing failed")

    with pytest.raises(RuntimeError, match="tracing failed"):
        sm.export_module(FailsWhileTracing(), tmp_path, "broken")
    assert list((tmp_path / "broken").iterdir()) == []      # no version, no temporary folder
    assert not (tmp_path / "models.config").exists()


# ----------------------------------------------------------------------------- command line

def test_cli_exports_hold_the_trained_weights(stargan, cyclegan, segmentation, classifier):
    """The exported models are the checkpoints', not fresh ones from the configs' seeds."""
    for generator, loaded in [(stargan[0], stargan[2]), (cyclegan[0]["mri2ct"], cyclegan[2]),
                              (cyclegan[0]["ct2mri"], cyclegan[3])]:
        exported = sorted(v.numpy().tobytes() for v in loaded.model_variables)
        assert exported == sorted(w.tobytes() for w in generator.get_weights())
    for trained, loaded in [(segmentation[3], segmentation[2]), (classifier[3], classifier[2])]:
        exported = {v.numpy().tobytes() for v in loaded.model_variables}
        assert all(w.tobytes() in exported for w in trained.get_weights())  # + dropout seed


def test_exports_record_the_training_image_size_for_translate(stargan, cyclegan, tmp_path):
    """A SavedModel cannot say which size its generator was trained at (it takes any multiple
    of 4): the export records it, and ``ctmri translate`` runs the generator at that size."""
    from ctmri_tf.translate import ModelSet

    size = configs.get_config("stargan", "smoke").data.image_size
    info = sm.read_export_info(stargan[1])
    assert set(info) == {"training_image_size", "data_card", "signatures", "context_slices"}
    assert info["context_slices"] == 1
    assert info["training_image_size"] == [size, size]
    assert sm.read_export_info(cyclegan[1])["training_image_size"] == [size, size]
    alone = tmp_path / "exports"
    shutil.copytree(stargan[1], alone / "stargan" / "1")   # no segmentation export beside it
    assert ModelSet(alone).image_size((100, 60)) == (size, size)
    (alone / "stargan" / "1" / sm.EXPORT_INFO).write_text("{not json")
    with pytest.raises(CtmriInputError, match="ctmri_export.json.*not valid JSON"):
        ModelSet(alone).image_size((100, 60))
    (alone / "stargan" / "1" / sm.EXPORT_INFO).unlink()    # an older export: the input's size
    assert ModelSet(alone).image_size((100, 60)) == (100, 60)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    exports = str(tmp_path / "exports")
    assert sm.main(["--kind", "stargan", "--run-dir", str(tmp_path / "nope"),
                    "--base", exports]) == 2
    assert f"{tmp_path / 'nope'}: run folder does not exist" in capsys.readouterr().err
    assert sm.main(["--kind", "segmentation", "--run-dir", str(tmp_path), "--base", exports]) == 2
    assert f"{tmp_path / 'config.json'}: missing" in capsys.readouterr().err
    run = create_run_dir(tmp_path / "run", configs.get_config("classifier", "smoke"))
    assert sm.main(["--kind", "segmentation", "--run-dir", str(run.root), "--base", exports]) == 2
    assert (f"{run.config_path}: is a 'classifier' run, not a segmentation run; pass --kind "
            f"classifier") in capsys.readouterr().err
    run = create_run_dir(tmp_path / "cyclegan", configs.get_config("cyclegan", "smoke"))
    assert sm.main(["--kind", "cyclegan", "--run-dir", str(run.root), "--base", exports,
                    "--direction", "both", "--name", "g"]) == 2
    assert "--direction both exports two" in capsys.readouterr().err
    assert sm.main(["--kind", "stargan", "--run-dir", str(tmp_path), "--base", exports,
                    "--direction", "mri2ct"]) == 2
    assert "--direction applies only to --kind cyclegan" in capsys.readouterr().err
    assert not (tmp_path / "exports").exists()


# ----------------------------------------------------------------------------- TF Serving

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (install TF Serving or run "
                           "its Docker image to test against a real server)")
def test_real_tensorflow_model_server(stargan, classifier, base, phantom):
    from ctmri_tf.serving import RestClient

    _, _, loaded, _ = stargan
    port = _free_port()
    server = subprocess.Popen(
        ["tensorflow_model_server", f"--rest_api_port={port}", f"--port={_free_port()}",
         f"--model_config_file={base / 'models.config'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = RestClient(f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.time() + 60
        while True:
            try:
                status = client.status("stargan")
                if status["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except Exception:
                if time.time() > deadline or server.poll() is not None:
                    raise
            time.sleep(0.5)
        image = phantom.mri[:2]
        served = client.translate("stargan", image, target_domain="ct")
        local = call(loaded, "translate", image=image, target_domain=["ct", "ct"])
        np.testing.assert_allclose(served["translated"], local["translated"], atol=HU_ATOL)
        labels = client.classify("classifier", image)["label"]
        assert set(labels) <= {"ct", "mri"} and len(labels) == 2
        metadata = client.metadata("stargan")
        assert "evaluate_masked" in json.dumps(metadata)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_2p5d_export_takes_k_slice_stacks_and_says_so(stargan_2p5d, phantom):
    """A 2.5-D StarGAN's ``image`` is ``(B, H, W, 3)``, its outputs the centre slice; the export
    info records ``context_slices`` and describes the stacks; ``ctmri translate`` reads it and
    feeds the export each slice with its neighbours."""
    from ctmri_tf.translate import ModelSet

    _, path = stargan_2p5d
    info = sm.read_export_info(path)
    assert info["context_slices"] == 3
    assert "(batch, height, width, 3)" in info["signatures"]["translate"]["inputs"]["image"]
    assert ModelSet(path.parent.parent).context_slices() == 3
    loaded = tf.saved_model.load(str(path))
    function = loaded.signatures["translate"]
    assert function.structured_input_signature[1]["image"].shape.as_list() == [None, None, None, 3]
    stacks = context.stack_neighbours(phantom.mri, 3)[:2]
    out = call(loaded, "translate", image=stacks, target_domain=np.array([b"ct", b"ct"]))
    assert out["translated_unit"].shape == (2, SIZE, SIZE, 1)
    reference = phantom.ct[:2, :, :, None]
    scored = call(loaded, "evaluate", image=stacks, target_domain=np.array([b"ct", b"ct"]),
                  reference=reference)
    np.testing.assert_allclose(scored["translated_unit"], out["translated_unit"], atol=UNIT_ATOL)
    assert scored["psnr"].shape == (2,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="height, width, 3"):
        call(loaded, "translate", image=phantom.mri[:2, :, :, None],
             target_domain=np.array([b"ct", b"ct"]))
    # ctmri translate on the export feeds each slice with its neighbours, as by hand
    from ctmri_tf.io import Volume
    from ctmri_tf.translate import translate_volume

    generator, _ = stargan_2p5d
    scan = Volume(phantom.mri.astype(np.float32), "mri", (3.0, 1.0, 1.0), np.eye(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # no training spacing in a smoke run
        result = translate_volume(scan, models=ModelSet(path.parent.parent), tta="none")
    mask = result.meta["body_mask"]
    unit = intensity.to_unit(scan.data, "mri", result.meta["source_range"]).astype(np.float32)
    unit[mask == 0] = -1.0
    out = generator([context.stack_neighbours(unit, 3), np.tile([[1.0, 0.0]], (len(unit), 1))])
    expected = intensity.unit_to_ct(out.numpy()[..., 0])
    np.testing.assert_allclose(result.data[mask != 0], expected[mask != 0], atol=0.05)

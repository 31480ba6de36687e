"""2.5-D generators (``model.context_slices``): configs, the neighbour stacks of the tf.data
pipelines, training through the command line, loading, ``ctmri translate`` and the evaluation.

Models are the ``smoke_2p5d`` presets (width 8, 32 px, 3 slices in), trained 2 steps on the
session's tiny dataset (4 subjects x 6 slices, ``dataset_fixtures``).
"""
import numpy as np
import pytest
import tensorflow as tf

from ctmri_tf import configs, context, data, evaluate, experiments, intensity, phantom
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.io import Volume
from ctmri_tf.translate import AIR_HU, ModelSet, translate_volume
from dataset_fixtures import tiny_dataset  # noqa: F401  (session fixture)

SLICES = 6      # per subject in the tiny dataset


# ------------------------------------------------------------------------------------ configs
def test_presets_and_bad_values():
    for name in ("stargan", "cyclegan"):
        for preset, base in configs.CONTEXT_PRESETS.items():
            config = configs.get_config(name, preset)
            assert (config.preset, config.model.context_slices) == (preset, 3)
            plain = configs.get_config(name, base)
            assert plain.model.context_slices == 1
            assert config.model == type(plain.model)(**{**vars(plain.model), "context_slices": 3})
            assert configs.from_json(configs.to_json(config)) == config
        assert configs.override(configs.get_config(name, "smoke"),
                                {"model.context_slices": "5"}).model.context_slices == 5
        for bad in ("2", "4", "0", "7"):
            with pytest.raises(CtmriInputError, match="model.context_slices=.* must be one of "
                                                      "1, 3, 5"):
                configs.override(configs.get_config(name, "smoke"), {"model.context_slices": bad})
    with pytest.raises(CtmriInputError, match="unknown preset 'smoke_2p5d'; valid presets: "
                                              "smoke, demo, paper .for segmentation."):
        configs.get_config("segmentation", "smoke_2p5d")
    # a config.json from before the field: 2-D
    old = configs.to_dict(configs.get_config("stargan", "smoke"))
    del old["model"]["context_slices"]
    assert configs.from_dict(old).model.context_slices == 1


def test_stacks_repeat_the_edge_slices():
    volume = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 3), np.float32)
    three = context.stack_neighbours(volume, 3)
    assert three.shape == (4, 2, 3, 3)
    assert three[:, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    five = context.stack_neighbours(volume, 5)
    assert five[:, 0, 0].tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3],
                                      [1, 2, 3, 3, 3]]
    np.testing.assert_array_equal(context.tf_stack_neighbours(volume[..., None], 5).numpy(), five)
    np.testing.assert_array_equal(context.stack_neighbours(volume, 1), volume[..., None])
    single = context.stack_neighbours(volume[:1], 3)        # one slice: itself three times
    assert single[0, 0, 0].tolist() == [0, 0, 0]


# ------------------------------------------------------------------------------------ tf.data
def _reference_slices(name, data_dir, source):
    """``{(subject, slice): (source image, target image, mask)}`` of the 2-D pipeline."""
    found = {}
    for batch in data.paired_batches("train", 4, 32, source=source, shuffle=False, config=name,
                                     data_dir=data_dir):
        for i, (subject, index) in enumerate(zip(batch["subject_id"].numpy(),
                                                 batch["slice_index"].numpy())):
            found[subject.decode(), int(index)] = (batch["source"][i, ..., 0].numpy(),
                                                   batch["target"][i, ..., 0].numpy(),
                                                   batch["mask"][i, ..., 0].numpy())
    return found


def _neighbours(index, k):
    return [min(max(index + j - k // 2, 0), SLICES - 1) for j in range(k)]


def test_paired_stacks_hold_the_neighbours_and_the_centre_target(tiny_dataset):
    name, data_dir = tiny_dataset
    reference = _reference_slices(name, data_dir, "mri")
    seen = set()
    for batch in data.paired_batches("train", 4, 32, source="mri", seed=3, config=name,
                                     data_dir=data_dir, context_slices=3):
        assert batch["source"].shape[1:] == (32, 32, 3) and batch["target"].shape[1:] == (32, 32, 1)
        for i, (subject, index) in enumerate(zip(batch["subject_id"].numpy(),
                                                 batch["slice_index"].numpy())):
            subject, index = subject.decode(), int(index)
            for channel, neighbour in enumerate(_neighbours(index, 3)):
                np.testing.assert_allclose(batch["source"][i, ..., channel],
                                           reference[subject, neighbour][0], atol=1e-6)
            np.testing.assert_allclose(batch["target"][i, ..., 0], reference[subject, index][1],
                                       atol=1e-6)
            np.testing.assert_array_equal(batch["mask"][i, ..., 0], reference[subject, index][2])
            seen.add((subject, index))
    assert seen == set(reference)                          # every slice once
    # stack_target: the counterparts of the same slices
    batch = next(iter(data.paired_batches("train", 4, 32, source="mri", shuffle=False,
                                          config=name, data_dir=data_dir, context_slices=3,
                                          stack_target=True)))
    subject, index = batch["subject_id"][0].numpy().decode(), int(batch["slice_index"][0])
    for channel, neighbour in enumerate(_neighbours(index, 3)):
        np.testing.assert_allclose(batch["target"][0, ..., channel],
                                   reference[subject, neighbour][1], atol=1e-6)


def test_unpaired_stacks_never_mix_subjects_or_modalities(tiny_dataset):
    name, data_dir = tiny_dataset
    references = {"mri": _reference_slices(name, data_dir, "mri"),
                  "ct": _reference_slices(name, data_dir, "ct")}
    seen = {"ct": [], "mri": []}
    for batch in data.unpaired_batches("train", 4, 32, seed=1, config=name, data_dir=data_dir,
                                       context_slices=5):
        for modality, reference in references.items():
            stacks = batch[modality].numpy()
            assert stacks.shape[1:] == (32, 32, 5)
            for stack in stacks:
                # which slice is the centre (the phantom's slices all differ)
                (key,) = [key for key, (image, _, _) in reference.items()
                          if np.allclose(stack[..., 2], image, atol=1e-6)]
                for channel, neighbour in enumerate(_neighbours(key[1], 5)):
                    np.testing.assert_allclose(stack[..., channel],
                                               reference[key[0], neighbour][0], atol=1e-6)
                seen[modality].append(key)
    for modality, reference in references.items():
        assert sorted(seen[modality]) == sorted(reference)


def test_augmentation_moves_all_channels_and_the_target_together(tiny_dataset):
    name, data_dir = tiny_dataset
    batch = next(iter(data.paired_batches("train", 8, 32, source="mri", seed=2, config=name,
                                          data_dir=data_dir, context_slices=3,
                                          stack_target=True, augment=True)))
    assert batch["source"].shape[1:] == batch["target"].shape[1:] == (32, 32, 3)
    # the centre source and target are masked with the same (moved) body mask
    outside = batch["mask"].numpy()[..., 0] == 0
    assert np.all(batch["source"].numpy()[..., 1][outside] == -1.0)
    assert np.all(batch["target"].numpy()[..., 1][outside] == -1.0)


# ----------------------------------------------------------------------------- train and use
@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """smoke_2p5d StarGAN and CycleGAN runs, 2 steps each through the command line (StarGAN
    with the paired L1 term, so its batches are registered stacks on both sides; CycleGAN
    unpaired)."""
    from train import cyclegan as cyclegan_cli, stargan as stargan_cli

    name, data_dir = tiny_dataset
    root = tmp_path_factory.mktemp("runs")
    found = {}
    for experiment, main, extra in (
            ("stargan", stargan_cli.main, ["--set", "loss.lambda_paired=1", "--set",
                                           "loss.n_critic=1"]),
            ("cyclegan", cyclegan_cli.main, [])):
        found[experiment] = root / experiment
        assert main(["--preset", "smoke_2p5d", "--run-dir", str(found[experiment]),
                     "--steps", "2", "--data-dir", str(data_dir), "--dataset-config", name,
                     *extra]) == 0
    return found


@pytest.fixture(scope="module")
def volume():
    subject = phantom.make_subject(3, image_size=32, num_slices=5)
    return subject


def test_runs_load_through_the_registry_with_k_input_channels(runs):
    stargan = experiments.get("stargan").load(runs["stargan"])
    assert stargan.inputs[0].shape[-1] == 3 and stargan.outputs[0].shape[-1] == 1
    cyclegan = experiments.get("cyclegan").load(runs["cyclegan"])
    assert {g.inputs[0].shape[-1] for g in cyclegan.values()} == {3}
    for run in runs.values():
        config = configs.from_json((run / "config.json").read_text())
        assert (config.preset, config.model.context_slices) == ("smoke_2p5d", 3)
        assert list((run / "samples").glob("*.png"))
    assert evaluate.stargan_translator(stargan).context_slices == 3
    assert evaluate.cyclegan_translator(cyclegan).context_slices == 3


def _graph(model, *label):
    call = tf.function(lambda x: model([x, *label], training=False) if label
                       else model(x, training=False))
    return lambda x: call(tf.constant(x, tf.float32)).numpy()


def test_translate_feeds_each_slice_with_its_neighbours(runs, volume):
    generator = experiments.get("stargan").load(runs["stargan"])
    config = configs.from_json((runs["stargan"] / "config.json").read_text())
    spacing = config.data.pixel_spacing_mm or (1.0, 1.0)
    models = ModelSet(runs["stargan"], pixel_spacing=spacing)
    assert models.context_slices() == 3
    scan = Volume(volume.mri.astype(np.float32), "mri", (3.0, *spacing), np.eye(4))
    result = translate_volume(scan, models=models, batch_size=2, tta="none")   # no mirroring
    # by hand: the documented pipeline with the stacks of ctmri_tf.context
    mask = result.meta["body_mask"]
    unit = intensity.to_unit(scan.data, "mri", result.meta["source_range"]).astype(np.float32)
    unit[mask == 0] = -1.0
    labels = tf.one_hot([0] * unit.shape[0], 2)
    out = _graph(generator, labels)(context.stack_neighbours(unit, 3))
    expected = intensity.unit_to_ct(out[..., 0])
    expected[mask == 0] = AIR_HU
    assert result.data.shape == scan.data.shape
    np.testing.assert_allclose(result.data, expected, atol=0.05)     # HU; eager vs graph


def test_evaluate_feeds_the_stacks(runs, volume):
    generators = experiments.get("cyclegan").load(runs["cyclegan"])
    translator = evaluate.cyclegan_translator(generators)
    unit = intensity.ct_to_unit(volume.ct).astype(np.float32)
    got = evaluate._translate("cyclegan", translator, unit, volume.mask, "ct", "mri", 2)
    want = generators["ct->mri"](context.stack_neighbours(unit, 3), training=False).numpy()
    np.testing.assert_allclose(got, want[..., 0], atol=1e-5)
    resized = evaluate.resized_translator(translator, 32)
    assert resized.context_slices == 3

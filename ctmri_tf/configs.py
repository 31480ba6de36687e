"""Experiment configurations: one frozen dataclass per experiment, three presets each.

In the style of tensorflow/models ``official``: an experiment is described entirely by a
config object made of small nested dataclasses (data, model, loss, optimizers, schedule).
Command-line flags only override fields of a preset; the resolved config is written to the
run folder as ``config.json`` and read back on ``--resume``.

Presets:
    ``smoke``  tiny (width 8, 1-2 residual blocks, 32 px, batch 4, 10 steps): seconds, for tests.
    ``demo``   128 px, width 32, 4 residual blocks, batch 8: minutes on a 2-core CPU.
    ``paper``  the published architectures at 256 px (StarGAN: 64 filters, 6 residual blocks,
               6-layer critic; CycleGAN: 64 filters, 9 residual blocks, 70x70 PatchGAN).
    ``smoke_2p5d``, ``demo_2p5d`` (StarGAN and CycleGAN only): ``smoke`` / ``demo`` with 2.5-D
               generators (``model.context_slices = 3``, :mod:`ctmri_tf.context`).

Units: ``image_size`` is in pixels (square model input); learning rates are per optimizer update;
``steps`` count training iterations (one optimizer step of the most frequently updated network).

Example::

    config = get_config("stargan", "demo")
    config = override(config, {"schedule.steps": "500", "data.batch_size": 16})
    assert from_json(to_json(config)) == config
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, ClassVar, Mapping

from ctmri_tf.context import check_context_slices
from ctmri_tf.errors import CtmriInputError

PRESETS = ("smoke", "demo", "paper")
CONTEXT_PRESETS = {"smoke_2p5d": "smoke", "demo_2p5d": "demo"}
"""The 2.5-D presets of the translation experiments (StarGAN, CycleGAN): the base preset
with ``model.context_slices = 3`` (each generator sees a slice and its two neighbours)."""
CONTEXT_EXPERIMENTS = ("stargan", "cyclegan")
PRECISIONS = ("float32", "mixed_bfloat16")


# --------------------------------------------------------------------------------------------
# Building blocks shared by all experiments
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are batched.

    Attributes:
        dataset_config: config of the tfds ``ctmri`` dataset (``synthetic``, ``synthetic_small``,
            ``folder``).
        data_dir: tfds data folder; ``None`` means the tfds default (``~/tensorflow_datasets``).
        image_size: side of the square model input, in pixels.
        batch_size: global batch (all replicas together), in images per training step; each
            experiment says how it is split (StarGAN: half CT, half MRI).
        mask_inputs: set the background (outside the body mask) to -1 in model space.
        augment: random flips/crops in the training pipeline.
        validation_batch_size: images per validation batch (paired MRI/CT slices).
        validation_batches: validation batches evaluated each time (0: none).
        pixel_spacing_mm: in-plane pixel spacing (row, col) in mm of the images the model sees,
            i.e. after the pipeline resized the dataset's slices to ``image_size`` (the median
            field of view of the train slices / ``image_size``). Empty (the presets): the
            trainers resolve it from the built dataset when a run starts
            (``ctmri_tf.data.resolve_pixel_spacing``) and ``config.json`` records it;
            ``ctmri translate`` resamples scans to it. Set it only for data whose spacing the
            dataset does not know.
    """
    dataset_config: str = "synthetic"
    data_dir: str | None = None
    image_size: int = 256
    batch_size: int = 16
    mask_inputs: bool = True
    augment: bool = False
    validation_batch_size: int = 4
    validation_batches: int = 8
    pixel_spacing_mm: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam hyperparameters (``learning_rate`` per update, before the linear decay;
    ``epsilon`` 1e-8 as PyTorch's Adam, which the official StarGAN/CycleGAN code uses)."""
    learning_rate: float = 1e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    epsilon: float = 1e-8


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How long to train and how often the periodic hooks run, in training steps.

    Attributes:
        steps: total training steps.
        decay_steps: the learning rates decay linearly to 0 over the last ``decay_steps`` steps
            (constant before; 0 disables the decay).
        log_every: fetch losses to the host and update the console progress bar.
        summary_every: write loss and learning-rate scalars to TensorBoard.
        validation_every: compute validation metrics (when a validation set is given).
        sample_every: write image grids (TensorBoard and ``samples/*.png``).
        checkpoint_every: save a checkpoint (one is always saved at the end).
        keep_checkpoints: how many recent checkpoints to keep.
    """
    steps: int = 200_000
    decay_steps: int = 100_000
    log_every: int = 10
    summary_every: int = 100
    validation_every: int = 10_000
    sample_every: int = 1_000
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 3


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields every experiment has. Subclasses add ``model``, ``loss`` and optimizers."""
    experiment: ClassVar[str] = ""
    preset: str = "paper"
    seed: int = 0
    precision: str = "float32"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)

    @property
    def downsampling_factor(self) -> int:
        """The image size must be a multiple of this (product of the models' strides)."""
        return 1

    def validate(self) -> "ExperimentConfig":
        """Check values that would otherwise fail deep inside TensorFlow; return ``self``.

        Raises:
            CtmriInputError: naming the field and the allowed values.
        """
        if self.precision not in PRECISIONS:
            raise CtmriInputError(None, f"precision={self.precision!r} is not supported; "
                                        f"valid values: {', '.join(PRECISIONS)}")
        size, factor = self.data.image_size, self.downsampling_factor
        if size <= 0 or size % factor:
            lower, upper = max(factor, (size // factor) * factor), (size // factor + 1) * factor
            raise CtmriInputError(
                None, f"data.image_size={size} px is not a positive multiple of {factor}, the "
                      f"down-sampling factor of the {self.experiment} models; choose e.g. "
                      f"{lower} or {upper}")
        for name in ("batch_size", "validation_batch_size"):
            if getattr(self.data, name) <= 0:
                raise CtmriInputError(None, f"data.{name} must be positive")
        if self.data.validation_batches < 0:
            raise CtmriInputError(None, "data.validation_batches must be >= 0")
        spacing = self.data.pixel_spacing_mm
        if spacing and (len(spacing) != 2 or not all(0 < v < float("inf") for v in spacing)):
            raise CtmriInputError(None, f"data.pixel_spacing_mm={list(spacing)} must be empty "
                                        f"(resolved from the dataset) or two positive mm values "
                                        f"(row, col), e.g. 0.9375,0.9375")
        s = self.schedule
        if s.steps <= 0:
            raise CtmriInputError(None, f"schedule.steps={s.steps} must be positive")
        if not 0 <= s.decay_steps <= s.steps:
            raise CtmriInputError(None, f"schedule.decay_steps={s.decay_steps} must be between 0 "
                                        f"and schedule.steps={s.steps}")
        for name in ("log_every", "summary_every", "validation_every", "sample_every",
                     "checkpoint_every", "keep_checkpoints"):
            if getattr(s, name) <= 0:
                raise CtmriInputError(None, f"schedule.{name} must be positive")
        return self


# --------------------------------------------------------------------------------------------
# StarGAN (Choi et al. 2018)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StarGANModelConfig:
    """Generator: 2 stride-2 down-samplings, residual blocks; critic: ``discriminator_layers``
    stride-2 convolutions, doubling filters each time (official StarGAN).

    ``generator_ct_windows_hu`` is not in the paper: flattened ``(low, high)`` CT windows in HU
    (e.g. ``(0, 80)``, a brain window), each giving the generator one more input channel, the
    input seen through that window (``ctmri_tf.models.layers.IntensityWindows``). Empty (the
    default, and the ``paper`` preset): the paper's single channel. The generator does not know
    its input's modality, so an MRI input gets the same channel (the same model-space interval
    of its [-1, 1] scale); the target-domain label tells the network when the channel matters.

    ``context_slices`` (not in the paper): 1 (the default) is the 2-D generator; 3 or 5 make it
    2.5-D: it sees that many neighbouring slices of the same volume as channels (replicate
    padding at the volume's ends, :mod:`ctmri_tf.context`) and predicts the centre slice. Each
    CT window then adds ``context_slices`` channels (one windowed copy per slice). The critic
    still judges single slices.
    """
    generator_filters: int = 64
    generator_residual_blocks: int = 6
    discriminator_filters: int = 64
    discriminator_layers: int = 6
    generator_ct_windows_hu: tuple[float, ...] = ()
    context_slices: int = 1

    def ct_windows(self) -> tuple[tuple[float, float], ...]:
        """``generator_ct_windows_hu`` as ``(low, high)`` pairs in HU."""
        values = self.generator_ct_windows_hu
        return tuple(zip(values[0::2], values[1::2]))


@dataclasses.dataclass(frozen=True)
class StarGANLossConfig:
    """Loss weights of the official code; the generator is updated every ``n_critic`` steps.

    ``lambda_paired`` is not in the paper: with a paired, registered dataset (the phantom,
    SynthRAD-style planning CT/MRI pairs) it adds ``lambda_paired`` x the L1 distance between
    each translation and the registered counterpart of its input (in [-1, 1] model space) to the
    generator loss, and the training batches become registered pairs (the CT half and the MRI
    half are the same slices). 0 (the default, and the ``paper`` preset) is the unpaired StarGAN
    of Choi et al.

    ``lambda_rec`` 0 drops the cycle-reconstruction term and skips its second generator pass
    (about 40 % of a ``demo`` step): with registered pairs the paired L1 says more than the
    cycle does, as in pix2pix.

    ``adversarial_start_step`` is not in the paper: the first that many training steps train
    the generator by regression alone (``lambda_paired`` x the paired L1, + ``lambda_rec`` x the
    cycle L1 when set), with no critic and no adversarial or classification term, one
    generator update per step (2-3x faster than a critic + generator step); the paper's
    alternating critic / generator updates start after. 0 (the default, and the ``paper``
    preset) is the paper; ``>= schedule.steps`` trains a pure regression model (as the
    SynthRAD winners' U-Nets are), whose critic is never updated. Needs ``lambda_paired > 0``.

    ``lambda_paired_ssim`` is not in the paper either: it adds ``lambda_paired_ssim`` x (1 -
    SSIM) between each translation into one of ``paired_ssim_domains`` (``"ct"``, ``"mri"``)
    and its registered counterpart (``ctmri_tf.losses.ssim_loss``: the benchmarks' 11 x 11
    window), the L1 + SSIM mix of Zhao et al. (IEEE TCI 2017), which L1 alone trails on SSIM:
    L1 predicts the median of what the input leaves open, blurring texture that SSIM counts.
    Needs ``lambda_paired > 0`` (registered pairs).
    """
    lambda_gp: float = 10.0
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    n_critic: int = 5
    lambda_paired: float = 0.0
    adversarial_start_step: int = 0
    lambda_paired_ssim: float = 0.0
    paired_ssim_domains: tuple[str, ...] = ("ct", "mri")


@dataclasses.dataclass(frozen=True)
class StarGANConfig(ExperimentConfig):
    """StarGAN CT <-> MRI (two domains: ct=0, mri=1).

    ``data.batch_size`` counts real images per step, half CT and half MRI; it must be even and
    divisible by twice the number of replicas. ``schedule.steps`` counts critic updates; the
    generator is updated every ``loss.n_critic`` steps.
    """
    experiment: ClassVar[str] = "stargan"
    model: StarGANModelConfig = dataclasses.field(default_factory=StarGANModelConfig)
    loss: StarGANLossConfig = dataclasses.field(default_factory=StarGANLossConfig)
    generator_optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    discriminator_optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)

    @property
    def downsampling_factor(self) -> int:
        # generator: 2 stride-2 convolutions; critic: one per layer
        return 2 ** max(2, self.model.discriminator_layers)

    def validate(self) -> "StarGANConfig":
        super().validate()
        if self.data.batch_size % 2:
            raise CtmriInputError(None, f"data.batch_size={self.data.batch_size} must be even "
                                        "(half CT, half MRI)")
        if self.loss.n_critic < 1:
            raise CtmriInputError(None, "loss.n_critic must be >= 1")
        for name in ("lambda_gp", "lambda_cls", "lambda_rec"):
            if getattr(self.loss, name) < 0:
                raise CtmriInputError(None, f"loss.{name}={getattr(self.loss, name)} must be >= 0")
        if self.loss.lambda_paired < 0:
            raise CtmriInputError(None, f"loss.lambda_paired={self.loss.lambda_paired} must be "
                                        ">= 0 (0: unpaired training)")
        if self.loss.adversarial_start_step < 0:
            raise CtmriInputError(None, "loss.adversarial_start_step="
                                        f"{self.loss.adversarial_start_step} must be >= 0")
        if self.loss.adversarial_start_step > 0 and self.loss.lambda_paired <= 0:
            raise CtmriInputError(None, "loss.adversarial_start_step="
                                        f"{self.loss.adversarial_start_step} trains by regression "
                                        "on registered pairs: it needs loss.lambda_paired > 0")
        if self.loss.lambda_paired_ssim < 0:
            raise CtmriInputError(None, "loss.lambda_paired_ssim="
                                        f"{self.loss.lambda_paired_ssim} must be >= 0")
        if self.loss.lambda_paired_ssim > 0 and self.loss.lambda_paired <= 0:
            raise CtmriInputError(None, "loss.lambda_paired_ssim="
                                        f"{self.loss.lambda_paired_ssim} compares translations "
                                        "with registered pairs: it needs loss.lambda_paired > 0 "
                                        "(unpaired training: --set loss.lambda_paired_ssim=0 "
                                        "too)")
        domains = self.loss.paired_ssim_domains
        if not domains or len(set(domains)) != len(domains) or set(domains) - {"ct", "mri"}:
            raise CtmriInputError(None, f"loss.paired_ssim_domains={list(domains)} must name "
                                        "ct, mri or both, once each (e.g. mri)")
        windows = self.model.generator_ct_windows_hu
        if len(windows) % 2 or any(not low < high for low, high in self.model.ct_windows()):
            raise CtmriInputError(None, f"model.generator_ct_windows_hu={list(windows)} must be "
                                        "(low, high) pairs in HU with low < high, e.g. 0,80")
        check_context_slices(self.model.context_slices)
        return self


# --------------------------------------------------------------------------------------------
# CycleGAN (Zhu et al. 2017)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CycleGANModelConfig:
    """ResNet generator (2 stride-2 down-samplings) and PatchGAN with ``discriminator_layers``
    stride-2 convolutions (3: the 70x70 PatchGAN).

    ``context_slices``: 1 (the default) 2-D generators; 3 or 5: 2.5-D generators that see that
    many neighbouring slices as channels and predict the centre slice (as
    :class:`StarGANModelConfig`); the discriminators judge single slices."""
    generator_filters: int = 64
    generator_residual_blocks: int = 9
    discriminator_filters: int = 64
    discriminator_layers: int = 3
    context_slices: int = 1


@dataclasses.dataclass(frozen=True)
class CycleGANLossConfig:
    """LSGAN losses; cycle weight 10, identity weight 0.5 x ``lambda_cycle``; 50-image pool."""
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50


@dataclasses.dataclass(frozen=True)
class CycleGANConfig(ExperimentConfig):
    """CycleGAN CT <-> MRI. ``data.batch_size`` counts CT/MRI image pairs (unpaired) per step."""
    experiment: ClassVar[str] = "cyclegan"
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(batch_size=1))
    model: CycleGANModelConfig = dataclasses.field(default_factory=CycleGANModelConfig)
    loss: CycleGANLossConfig = dataclasses.field(default_factory=CycleGANLossConfig)
    generator_optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig(learning_rate=2e-4))
    discriminator_optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig(learning_rate=2e-4))

    @property
    def downsampling_factor(self) -> int:
        return 2 ** max(2, self.model.discriminator_layers)

    def validate(self) -> "CycleGANConfig":
        super().validate()
        smallest = 3 * 2 ** self.model.discriminator_layers
        if self.data.image_size < smallest:
            raise CtmriInputError(None, f"data.image_size={self.data.image_size} px is smaller "
                                        f"than {smallest} px, the smallest image the PatchGAN "
                                        f"with {self.model.discriminator_layers} layers can judge")
        check_context_slices(self.model.context_slices)
        return self


# --------------------------------------------------------------------------------------------
# Body segmentation (DeepLabV3+) and the CT/MRI classifier
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SegmentationModelConfig:
    """keras-cv DeepLabV3+ on a from-scratch ResNetV2 backbone (4 stages: output stride 32)."""
    num_classes: int = 2
    width: int = 64
    blocks: tuple[int, ...] = (3, 4, 6, 3)


@dataclasses.dataclass(frozen=True)
class SegmentationConfig(ExperimentConfig):
    """Body segmentation. ``data.batch_size`` counts images (CT and MRI mixed) per step."""
    experiment: ClassVar[str] = "segmentation"
    model: SegmentationModelConfig = dataclasses.field(default_factory=SegmentationModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig(learning_rate=1e-3, beta_1=0.9))

    @property
    def downsampling_factor(self) -> int:
        # stem (stride 2 + max-pool) and one stride-2 stage after the first: P5 is 1/32
        return 2 ** (len(self.model.blocks) + 1)

    def validate(self) -> "SegmentationConfig":
        super().validate()
        if len(self.model.blocks) != 4 or min(self.model.blocks) < 2:
            raise CtmriInputError(None, f"model.blocks={self.model.blocks} must be 4 stages of "
                                        ">= 2 blocks (DeepLabV3+ needs backbone levels P2 and P5)")
        return self


@dataclasses.dataclass(frozen=True)
class ClassifierModelConfig:
    filters: int = 16


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(ExperimentConfig):
    """CT/MRI modality classifier. ``data.batch_size`` counts images per step."""
    experiment: ClassVar[str] = "classifier"
    model: ClassifierModelConfig = dataclasses.field(default_factory=ClassifierModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig(learning_rate=1e-3, beta_1=0.9))


EXPERIMENTS: dict[str, type[ExperimentConfig]] = {
    cls.experiment: cls
    for cls in (StarGANConfig, CycleGANConfig, SegmentationConfig, ClassifierConfig)
}


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------
def _smoke_schedule(**kw) -> ScheduleConfig:
    return ScheduleConfig(**{**dict(steps=10, decay_steps=5, log_every=1, summary_every=5,
                                    validation_every=5, sample_every=5, checkpoint_every=5,
                                    keep_checkpoints=2), **kw})


def _demo_schedule(**kw) -> ScheduleConfig:
    return ScheduleConfig(**{**dict(steps=300, decay_steps=150, log_every=10, summary_every=10,
                                    validation_every=100, sample_every=100,
                                    checkpoint_every=100), **kw})


_SMOKE_DATA = DataConfig(dataset_config="synthetic_small", image_size=32, batch_size=4,
                         validation_batch_size=2, validation_batches=1)
_DEMO_DATA = DataConfig(dataset_config="synthetic_v2_40x32x128", image_size=128, batch_size=8,
                        validation_batch_size=4, validation_batches=2)


def _stargan(preset: str) -> StarGANConfig:
    if preset == "smoke":
        return StarGANConfig(
            preset=preset, data=_SMOKE_DATA, schedule=_smoke_schedule(),
            model=StarGANModelConfig(generator_filters=8, generator_residual_blocks=1,
                                     discriminator_filters=8, discriminator_layers=3))
    if preset == "demo":
        # Minutes on a CPU with the paired phantom: registered pairs with an L1 term and no
        # cycle term (as pix2pix), a generator update every step, Adam at 5e-4 (2.5x pix2pix's
        # batch-1 rate, for batch 8) and a brain window (0-80 HU) as a second generator input
        # (see README, Benchmarks). Not the SSIM term: with the demo's 450 adversarial steps it
        # scored 204.6 HU against 194.3 without (README, Benchmarks).
        demo_adam = OptimizerConfig(learning_rate=5e-4)
        return StarGANConfig(
            preset=preset, data=_DEMO_DATA, schedule=_demo_schedule(),
            model=StarGANModelConfig(generator_filters=32, generator_residual_blocks=4,
                                     discriminator_filters=32, discriminator_layers=5,
                                     generator_ct_windows_hu=(0.0, 80.0)),
            loss=StarGANLossConfig(n_critic=1, lambda_paired=100.0, lambda_rec=0.0),
            generator_optimizer=demo_adam, discriminator_optimizer=demo_adam)
    # official: 200k iterations, decay over the last 100k, checkpoints every 10k
    return StarGANConfig(preset=preset)


def _cyclegan(preset: str) -> CycleGANConfig:
    if preset == "smoke":
        return CycleGANConfig(
            preset=preset, data=dataclasses.replace(_SMOKE_DATA, batch_size=2),
            schedule=_smoke_schedule(),
            model=CycleGANModelConfig(generator_filters=8, generator_residual_blocks=2,
                                      discriminator_filters=8, discriminator_layers=2),
            loss=CycleGANLossConfig(pool_size=4))
    if preset == "demo":
        return CycleGANConfig(
            preset=preset, data=dataclasses.replace(_DEMO_DATA, batch_size=4),
            schedule=_demo_schedule(),
            model=CycleGANModelConfig(generator_filters=32, generator_residual_blocks=4,
                                      discriminator_filters=32, discriminator_layers=3))
    # paper: 200 epochs (100 constant + 100 linear decay) of ~1000 unpaired slices, batch 1
    return CycleGANConfig(preset=preset)


def _segmentation(preset: str) -> SegmentationConfig:
    if preset == "smoke":
        return SegmentationConfig(preset=preset, data=_SMOKE_DATA, schedule=_smoke_schedule(),
                                  model=SegmentationModelConfig(width=8, blocks=(2, 2, 2, 2)))
    if preset == "demo":
        return SegmentationConfig(preset=preset, data=_DEMO_DATA, schedule=_demo_schedule(),
                                  model=SegmentationModelConfig(width=16, blocks=(2, 2, 2, 2)))
    return SegmentationConfig(
        preset=preset, data=DataConfig(batch_size=16),
        schedule=ScheduleConfig(steps=30_000, decay_steps=30_000, validation_every=1_000,
                                checkpoint_every=1_000))


def _classifier(preset: str) -> ClassifierConfig:
    # augment: every preset trains on random views (fields of view, sizes, resolutions, noise,
    # MRI bias fields and contrasts: ctmri_tf.data.modality_batches), so that the classifier
    # does not learn the phantom's one grid and contrast
    if preset == "smoke":
        return ClassifierConfig(preset=preset, data=dataclasses.replace(_SMOKE_DATA, augment=True),
                                schedule=_smoke_schedule(), model=ClassifierModelConfig(filters=4))
    if preset == "demo":
        return ClassifierConfig(preset=preset,
                                data=dataclasses.replace(_DEMO_DATA, batch_size=16, augment=True),
                                schedule=_demo_schedule(), model=ClassifierModelConfig(filters=8))
    return ClassifierConfig(
        preset=preset, data=DataConfig(batch_size=32, augment=True),
        schedule=ScheduleConfig(steps=5_000, decay_steps=0, validation_every=500,
                                checkpoint_every=500))


_PRESET_BUILDERS = {"stargan": _stargan, "cyclegan": _cyclegan,
                    "segmentation": _segmentation, "classifier": _classifier}


def presets(name: str) -> tuple[str, ...]:
    """The presets of experiment ``name``: :data:`PRESETS`, plus the 2.5-D
    :data:`CONTEXT_PRESETS` for StarGAN and CycleGAN."""
    return PRESETS + (tuple(CONTEXT_PRESETS) if name in CONTEXT_EXPERIMENTS else ())


def get_config(name: str, preset: str = "paper") -> ExperimentConfig:
    """The config of experiment ``name`` (stargan, cyclegan, segmentation, classifier) at a preset
    (one of :func:`presets`; ``smoke_2p5d`` / ``demo_2p5d``: the base preset with
    ``model.context_slices = 3`` and ``preset`` recorded as the 2.5-D name).

    Raises:
        CtmriInputError: unknown experiment or preset (the message lists the valid ones).
    """
    if name not in _PRESET_BUILDERS:
        raise CtmriInputError(None, f"unknown experiment {name!r}; valid experiments: "
                                    f"{', '.join(_PRESET_BUILDERS)}")
    if preset not in presets(name):
        raise CtmriInputError(None, f"unknown preset {preset!r}; valid presets: "
                                    f"{', '.join(presets(name))} (for {name})")
    if preset in CONTEXT_PRESETS:
        base = _PRESET_BUILDERS[name](CONTEXT_PRESETS[preset])
        return dataclasses.replace(base, preset=preset,
                                   model=dataclasses.replace(base.model, context_slices=3)
                                   ).validate()
    return _PRESET_BUILDERS[name](preset).validate()


RUN_SHARE_FIELDS = ("schedule.decay_steps", "loss.adversarial_start_step")
"""Step counts that are a share of ``schedule.steps``: a run of another length keeps the
config's share of each (:func:`run_share_overrides`)."""


def run_share_overrides(config: ExperimentConfig, steps: int) -> dict[str, int]:
    """``{field: value}`` for the :data:`RUN_SHARE_FIELDS` that ``config`` has, each the same
    share of ``steps`` as of ``config.schedule.steps`` (rounded; a share above 1 stays above:
    a warm-up longer than the run stays the whole run)."""
    out = {}
    for field in RUN_SHARE_FIELDS:
        section, name = field.split(".")
        part = getattr(config, section, None)
        if part is None or not hasattr(part, name):
            continue
        value = getattr(part, name)
        share = value / config.schedule.steps
        out[field] = int(round(steps * share)) if share < 1.0 else max(value, steps)
    return out


# --------------------------------------------------------------------------------------------
# Overrides and JSON
# --------------------------------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _field_names(cls, prefix: str = "") -> list[str]:
    names = []
    for name, hint in _field_types(cls).items():
        if dataclasses.is_dataclass(hint):
            names += _field_names(hint, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (typically a command-line string) to the field type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    try:
        if origin is tuple:
            item = args[0]
            if isinstance(value, str):
                value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            return tuple(_convert(v, item, key) for v in value)
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("expected true or false")
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            if isinstance(value, str):
                value = value.strip().replace("_", "")
                number = float(value) if any(c in value for c in ".eE") else int(value)
                if isinstance(number, float) and not number.is_integer():
                    raise ValueError("expected an integer")
                return int(number)
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
    except (TypeError, ValueError) as err:
        raise CtmriInputError(None, f"config field {key}: cannot use {value!r} ({err})") from None
    raise CtmriInputError(None, f"config field {key}: unsupported type {hint}")


def _replace(config, parts: list[str], value: Any, key: str):
    types_ = _field_types(type(config))
    name = parts[0]
    if name not in types_:
        raise KeyError(name)
    if len(parts) == 1:
        if dataclasses.is_dataclass(types_[name]):
            raise KeyError(name)
        return dataclasses.replace(config, **{name: _convert(value, types_[name], key)})
    child = getattr(config, name)
    if not dataclasses.is_dataclass(child):
        raise KeyError(name)
    return dataclasses.replace(config, **{name: _replace(child, parts[1:], value, key)})


def override(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``config`` with dotted fields replaced, e.g. ``{"model.generator_filters": "32"}``.

    Strings are converted to the field's type (int, float, bool, optional, tuple of ints as
    ``"2,2,2,2"``). The result is validated.

    Raises:
        CtmriInputError: unknown field (the message lists the valid ones), a value that does not
            convert, or a resulting config that fails ``validate``.
    """
    for key, value in overrides.items():
        try:
            config = _replace(config, key.split("."), value, key)
        except KeyError:
            raise CtmriInputError(
                None, f"unknown config field {key!r} for {type(config).__name__}; valid fields: "
                      f"{', '.join(_field_names(type(config)))}") from None
    return config.validate()


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """A JSON-ready dict: ``{"experiment": name, <fields>...}`` (tuples become lists)."""
    return {"experiment": config.experiment, **dataclasses.asdict(config)}


def to_json(config: ExperimentConfig) -> str:
    """The config as indented JSON; ``from_json(to_json(c)) == c``."""
    return json.dumps(to_dict(config), indent=2) + "\n"


def _from_dict(cls, values: Mapping[str, Any], prefix: str):
    if not isinstance(values, Mapping):
        raise CtmriInputError(None, f"config field {prefix.rstrip('.') or '<root>'} must be an "
                                    "object")
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        fields = ", ".join(prefix + name for name in unknown)
        raise CtmriInputError(None, f"unknown config field(s) {fields} for {cls.__name__}")
    kwargs = {}
    for name, value in values.items():
        hint = types_[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _convert(value, hint, prefix + name)
    return cls(**kwargs)


def from_dict(values: Mapping[str, Any]) -> ExperimentConfig:
    """Inverse of :func:`to_dict`; missing fields take the class defaults."""
    values = dict(values)
    name = values.pop("experiment", None)
    if name not in EXPERIMENTS:
        raise CtmriInputError(None, f"config has experiment={name!r}; valid experiments: "
                                    f"{', '.join(EXPERIMENTS)}")
    return _from_dict(EXPERIMENTS[name], values, "").validate()


def from_json(text: str, *, source: str | None = None) -> ExperimentConfig:
    """Parse a config written by :func:`to_json`.

    Args:
        text: the JSON text.
        source: the file it came from, named in error messages.

    Raises:
        CtmriInputError: invalid JSON, unknown experiment or field, or a value of the wrong type.
    """
    try:
        values = json.loads(text)
        return from_dict(values)
    except json.JSONDecodeError as err:
        raise CtmriInputError(source, f"not valid JSON ({err})") from None
    except CtmriInputError as err:
        if source is None:
            raise
        raise CtmriInputError(source, err.problem) from None

"""CycleGAN (Zhu et al., ICCV 2017) between CT and MRI, as in the official PyTorch code.

Two ResNet generators, ``G``: CT -> MRI and ``F``: MRI -> CT, and two PatchGAN discriminators,
``D_mri`` (real MRI vs ``G(ct)``) and ``D_ct`` (real CT vs ``F(mri)``), trained together. Each
training step takes a global batch of unpaired slices ``{"ct": (B, H, W, 1), "mri": (B, H, W,
1)}`` in [-1, 1] (``ctmri_tf.data.unpaired_batches(split, B, ...)``) and, as the official
``CycleGANModel.optimize_parameters``:

1. generator update (one Adam over the weights of G and F): LSGAN adversarial losses of
   ``G(ct)`` against ``D_mri`` and ``F(mri)`` against ``D_ct``, + ``lambda_cycle`` x the L1 cycle
   losses ``|F(G(ct)) - ct|`` and ``|G(F(mri)) - mri|``, + ``lambda_identity * lambda_cycle`` x the
   L1 identity losses ``|G(mri) - mri|`` and ``|F(ct) - ct|``;
2. discriminator update (one Adam over the weights of both): LSGAN losses
   ``0.5 [(D(real) - 1)^2 + D(fake)^2]``, where the fakes of step 1 go through a 50-image history
   pool per discriminator (:mod:`ctmri_tf.training.image_pool`).

Both optimizers are Adam(2e-4, beta_1=0.5, beta_2=0.999); the learning rates stay constant and
then decay linearly to 0 over the last ``schedule.decay_steps`` steps (the paper: 100 + 100
epochs). Losses are per-example vectors from :mod:`ctmri_tf.losses` reduced with
``tf.nn.compute_average_loss(..., global_batch_size=B)``, so one device and N replicas compute the
same gradients; the pools query the whole global batch (see ``image_pool``), so their choices
are the same too.

2.5-D (``model.context_slices`` k = 3 or 5): the batches hold k-slice stacks ``(B, H, W, k)``
(:mod:`ctmri_tf.context`) and each generator translates a stack to its centre slice; the
discriminators, the pools and every loss see single slices (the real centre slices and the
translations), so the losses are the paper's. The cycle passes feed the translated centre slice
as all k channels (a flat context: the neighbours' translations are not computed); the identity
passes feed the real stacks.

One run trains both directions; the run's *primary* direction (``mri2ct`` or ``ct2mri``,
``--direction``) says which generator the export and evaluation use by default. It is recorded in
``<run_dir>/direction.json`` because :class:`ctmri_tf.configs.CycleGANConfig` has no field for it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from ctmri_tf import losses
from ctmri_tf.atomic import atomic_output
from ctmri_tf.configs import CycleGANConfig
from ctmri_tf.context import centre_slice, flat_context
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.models.cyclegan import patchgan_discriminator, resnet_generator
from ctmri_tf.training import translation_validation
from ctmri_tf.training.image_pool import ImagePool
from ctmri_tf.training.restore import restore_models
from ctmri_tf.training.cyclegan_options import DEFAULT_DIRECTION, DIRECTIONS  # noqa: F401
from ctmri_tf.training.run_dir import RunDir
from ctmri_tf.training.runtime import prepare_task
from ctmri_tf.training.schedules import linear_decay_adam

DIRECTION_FILE = "direction.json"
GENERATOR_KEYS = {"ct2mri": "ct->mri", "mri2ct": "mri->ct"}
CHECKPOINT_NAMES = {"ct->mri": "generator_ct2mri", "mri->ct": "generator_mri2ct"}
"""Each direction's generator and its name in the checkpoint (``CycleGAN.checkpoint_objects``)."""
"""Direction name -> key of the dict returned by :func:`load_cyclegan_generators` (the keys of
``ctmri_tf.evaluate.cyclegan_translator``)."""


class CycleGAN:
    """The CycleGAN training task (implements ``ctmri_tf.training.loop.TrainingTask``).

    Builds the two generators, the two discriminators, their optimizers and the two history
    pools under ``strategy.scope()`` after seeding and setting the precision policy from
    ``config``.

    Args:
        config: a validated :class:`ctmri_tf.configs.CycleGANConfig`.
        strategy: the ``tf.distribute.Strategy`` that will run the steps.

    Attributes:
        generator_ct2mri, generator_mri2ct: ``G`` and ``F`` (``resnet_generator``).
        discriminator_mri, discriminator_ct: ``D_mri`` judges MRI, ``D_ct`` judges CT.
        pool_mri, pool_ct: history pools of generated MRI (for ``D_mri``) and CT (for ``D_ct``).

    Raises:
        CtmriInputError: the config is invalid, or ``data.batch_size`` is not divisible by the
            number of replicas.
    """

    def __init__(self, config: CycleGANConfig, strategy: tf.distribute.Strategy):
        prepare_task(config, strategy, reason=" (each takes as many CT/MRI pairs)")
        self.config = config
        self.strategy = strategy
        self.global_batch_size = config.data.batch_size
        self.context_slices = config.model.context_slices
        model, schedule, size = config.model, config.schedule, config.data.image_size

        def generator():
            return resnet_generator(filters=model.generator_filters,
                                    num_residual=model.generator_residual_blocks,
                                    image_size=size, context_slices=model.context_slices)

        def discriminator():
            return patchgan_discriminator(filters=model.discriminator_filters,
                                          num_layers=model.discriminator_layers, image_size=size)

        with strategy.scope():
            self.generator_ct2mri = generator()         # G
            self.generator_mri2ct = generator()         # F
            self.discriminator_mri = discriminator()    # D_mri
            self.discriminator_ct = discriminator()     # D_ct
            self.generator_optimizer = linear_decay_adam(config.generator_optimizer, schedule,
                                                         "generator_adam")
            self.discriminator_optimizer = linear_decay_adam(config.discriminator_optimizer,
                                                             schedule, "discriminator_adam")
            # Keras 3 optimizers create their slots lazily; under MirroredStrategy that must
            # happen here, in the strategy scope, not inside the first replica step.
            self.generator_optimizer.build(self._generator_variables())
            self.discriminator_optimizer.build(self._discriminator_variables())
            self.pool_mri = ImagePool(config.loss.pool_size, (size, size, 1), name="pool_mri")
            self.pool_ct = ImagePool(config.loss.pool_size, (size, size, 1), name="pool_ct")

    # ------------------------------------------------------------------ TrainingTask protocol
    def checkpoint_objects(self) -> dict:
        return {"generator_ct2mri": self.generator_ct2mri,
                "generator_mri2ct": self.generator_mri2ct,
                "discriminator_mri": self.discriminator_mri,
                "discriminator_ct": self.discriminator_ct,
                "generator_optimizer": self.generator_optimizer,
                "discriminator_optimizer": self.discriminator_optimizer,
                "pool_mri": self.pool_mri, "pool_ct": self.pool_ct}

    def step_kind(self, step: int) -> str:
        """Every step updates the generators and then the discriminators."""
        return "g+d"

    def learning_rates(self) -> dict:
        return {"generator": self.generator_optimizer.learning_rate,
                "discriminator": self.discriminator_optimizer.learning_rate}

    def replica_step(self, batch, seed, kind: str) -> dict:
        """One replica's step on ``{"ct": (b, H, W, k), "mri": (b, H, W, k)}`` in [-1, 1]
        (``k = model.context_slices``)."""
        lambda_cycle = self.config.loss.lambda_cycle
        lambda_identity = self.config.loss.lambda_identity * lambda_cycle
        G, F = self.generator_ct2mri, self.generator_mri2ct
        D_mri, D_ct = self.discriminator_mri, self.discriminator_ct
        k = self.context_slices
        input_ct = tf.cast(batch["ct"], tf.float32)
        input_mri = tf.cast(batch["mri"], tf.float32)
        real_ct, real_mri = centre_slice(input_ct), centre_slice(input_mri)

        # 1. Train the generators G (CT -> MRI) and F (MRI -> CT); the discriminators are fixed.
        with tf.GradientTape() as tape:
            fake_mri = G(input_ct, training=True)
            reconstructed_ct = F(flat_context(fake_mri, k), training=True)
            fake_ct = F(input_mri, training=True)
            reconstructed_mri = G(flat_context(fake_ct, k), training=True)
            # Adversarial: G(ct) should look like MRI to D_mri, F(mri) like CT to D_ct.
            g_adv_mri = self._average(losses.lsgan_generator_loss(D_mri(fake_mri, training=True)))
            g_adv_ct = self._average(losses.lsgan_generator_loss(D_ct(fake_ct, training=True)))
            # Cycle consistency: F(G(ct)) ~ ct and G(F(mri)) ~ mri.
            cycle_ct = self._average(losses.l1_loss(reconstructed_ct, real_ct))
            cycle_mri = self._average(losses.l1_loss(reconstructed_mri, real_mri))
            # Identity: a generator fed an image of its output modality leaves it unchanged.
            identity_mri = self._average(losses.l1_loss(G(input_mri, training=True), real_mri))
            identity_ct = self._average(losses.l1_loss(F(input_ct, training=True), real_ct))
            g_total = (g_adv_mri + g_adv_ct + lambda_cycle * (cycle_ct + cycle_mri)
                       + lambda_identity * (identity_mri + identity_ct))
        variables = self._generator_variables()
        self._apply(self.generator_optimizer, tape.gradient(g_total, variables), variables)

        # 2. Train the discriminators on real images and on fakes from the history pools.
        fake_mri = self.pool_mri.query(tf.stop_gradient(fake_mri),
                                       tf.random.experimental.stateless_fold_in(seed, 1))
        fake_ct = self.pool_ct.query(tf.stop_gradient(fake_ct),
                                     tf.random.experimental.stateless_fold_in(seed, 2))
        with tf.GradientTape() as tape:
            d_mri = self._average(losses.lsgan_discriminator_loss(
                D_mri(real_mri, training=True), D_mri(fake_mri, training=True)))
            d_ct = self._average(losses.lsgan_discriminator_loss(
                D_ct(real_ct, training=True), D_ct(fake_ct, training=True)))
            d_total = d_mri + d_ct
        variables = self._discriminator_variables()
        self._apply(self.discriminator_optimizer, tape.gradient(d_total, variables), variables)

        return {"g_adv_mri": g_adv_mri, "g_adv_ct": g_adv_ct, "cycle_ct": cycle_ct,
                "cycle_mri": cycle_mri, "identity_mri": identity_mri, "identity_ct": identity_ct,
                "g_total": g_total, "d_mri": d_mri, "d_ct": d_ct, "d_total": d_total}

    def validation_metrics(self, batch) -> dict:
        """PSNR (dB) and SSIM of MRI->CT and CT->MRI and the MRI->CT MAE (HU) on a paired
        batch, per example ``(B,)`` (``translation_validation.paired_psnr_ssim``)."""
        return translation_validation.paired_psnr_ssim(self.translate, batch)

    def sample_rows(self, batch, max_examples: int = 2):
        """Labelled image-grid rows in [-1, 1]: input | translated | reconstructed (only with
        the cycle term) (| ground truth) (``translation_validation.sample_rows``)."""
        return translation_validation.sample_rows(self.translate, batch, max_examples,
                                                  reconstruct=self.config.loss.lambda_cycle > 0)

    def validation_tags(self) -> dict:
        """TensorBoard tags and descriptions of :meth:`validation_metrics`
        (``translation_validation.SUMMARY_TAGS``: direction and scale in the name)."""
        return dict(translation_validation.SUMMARY_TAGS)

    def hparam_metrics(self) -> tuple:
        return translation_validation.HPARAM_METRICS

    # ------------------------------------------------------------------ helpers
    def translate(self, images, target: str) -> tf.Tensor:
        """Translate ``images`` in [-1, 1] to ``target`` (``"ct"``: F, ``"mri"``: G): k-slice
        stacks ``(B, H, W, k)`` or single slices ``(B, H, W, 1)`` (fed as a flat context) ->
        ``(B, H, W, 1)`` in [-1, 1]."""
        generator = {"mri": self.generator_ct2mri, "ct": self.generator_mri2ct}[target]
        images = flat_context(tf.convert_to_tensor(images, tf.float32), self.context_slices)
        return generator(images, training=False)

    def generators(self) -> dict:
        """``{"ct->mri": G, "mri->ct": F}``, the keys ``ctmri_tf.evaluate.cyclegan_translator``
        expects."""
        return {"ct->mri": self.generator_ct2mri, "mri->ct": self.generator_mri2ct}

    def _generator_variables(self) -> list:
        return self.generator_ct2mri.trainable_variables + self.generator_mri2ct.trainable_variables

    def _discriminator_variables(self) -> list:
        return (self.discriminator_mri.trainable_variables
                + self.discriminator_ct.trainable_variables)

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(tf.cast(per_example, tf.float32),
                                          global_batch_size=self.global_batch_size)

    @staticmethod
    def _apply(optimizer, gradients, variables) -> None:
        optimizer.apply_gradients(zip(gradients, variables))


# ----------------------------------------------------------------------------- run folders
def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise CtmriInputError(None, f"unknown CycleGAN direction {direction!r}; valid directions: "
                                    f"{', '.join(DIRECTIONS)}")
    return direction


def write_primary_direction(run: RunDir, direction: str) -> Path:
    """Record the run's primary direction in ``<run_dir>/direction.json`` (atomically).

    Raises:
        CtmriInputError: ``direction`` is not ``mri2ct`` or ``ct2mri``.
    """
    _check_direction(direction)
    path = run.root / DIRECTION_FILE
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"primary_direction": direction,
                                   "generator": GENERATOR_KEYS[direction]}, indent=2) + "\n")
    return path


def read_primary_direction(run_dir: str | os.PathLike) -> str:
    """The primary direction of a CycleGAN run folder (``mri2ct`` when it records none).

    Raises:
        CtmriInputError: ``direction.json`` exists but is unreadable or names no valid direction.
    """
    path = Path(run_dir) / DIRECTION_FILE
    if not path.is_file():
        return DEFAULT_DIRECTION
    try:
        direction = json.loads(path.read_text())["primary_direction"]
    except (ValueError, KeyError, TypeError) as err:
        raise CtmriInputError(path, f"not a CycleGAN direction file ({err!r})") from None
    if direction not in DIRECTIONS:
        raise CtmriInputError(path, f"primary_direction {direction!r} is not one of "
                                    f"{', '.join(DIRECTIONS)}")
    return direction


def load_cyclegan_generators(run_dir: str | os.PathLike) -> dict:
    """The trained generators of a CycleGAN run folder, for any image size (float32).

    Builds only the two float32 ``resnet_generator(image_size=None)`` (any size that is a
    multiple of 4) and reads the run's newest intact checkpoint into them
    (``ctmri_tf.training.restore.restore_models``): no discriminator, optimizer or image pool
    is built and the global dtype policy is left as it was.

    Returns:
        ``{"ct->mri": G, "mri->ct": F}``: keras models, image ``(B, H, W, k)`` in [-1, 1] ->
        ``(B, H, W, 1)`` in [-1, 1], ``k`` the run's ``model.context_slices`` (1: 2-D).

    Raises:
        CtmriInputError: not a CycleGAN run folder, or no restorable checkpoint (naming the
            file or folder).
    """
    def build(config):
        return {name: resnet_generator(filters=config.model.generator_filters,
                                       num_residual=config.model.generator_residual_blocks,
                                       context_slices=config.model.context_slices)
                for name in CHECKPOINT_NAMES.values()}

    _, _, models = restore_models(run_dir, "cyclegan", build)
    return {key: models[name] for key, name in CHECKPOINT_NAMES.items()}


def load_primary_generator(run_dir: str | os.PathLike) -> tuple[str, keras.Model]:
    """``(direction, generator)``: the run's primary direction and its generator (see
    :func:`load_cyclegan_generators`, :func:`read_primary_direction`)."""
    direction = read_primary_direction(run_dir)
    return direction, load_cyclegan_generators(run_dir)[GENERATOR_KEYS[direction]]


# ----------------------------------------------------------------------------- command line
def before_training(prepared, args) -> dict:
    """Record the run's primary direction (``--direction``, else the default for a new run;
    a resumed run keeps its own) and announce it."""
    run = prepared.run
    if prepared.strategy.extended.should_checkpoint and (args.direction or not prepared.resume):
        write_primary_direction(run, args.direction or DEFAULT_DIRECTION)
    direction = read_primary_direction(run.root)
    return {"hparams": {"direction": direction}, "note": f", primary direction {direction}"}

"""StarGAN (Choi et al., CVPR 2018) for two domains, CT (0) and MRI (1), as in the official code.

Each training step takes a global batch of real images, half CT and half MRI
(``{"ct": (B/2, H, W, 1), "mri": (B/2, H, W, 1)}`` in [-1, 1], as produced by
``ctmri_tf.data.unpaired_batches(split, B // 2, ...)``), concatenates the halves with their domain
labels, and asks the generator to translate every image to the other domain (with two domains
the paper's random target label is always the other one). Then, as in ``solver.py``:

1. critic update, every step: WGAN critic loss on real and fake images + ``lambda_cls`` x domain
   classification of the *real* images + ``lambda_gp`` x gradient penalty;
2. generator update, every ``n_critic``-th step (after that step's critic update): WGAN adversarial
   loss + ``lambda_cls`` x domain classification of the *fake* images + ``lambda_rec`` x L1
   reconstruction after translating back to the original domain (+ ``lambda_paired`` x L1 to the
   registered counterpart when ``loss.lambda_paired > 0``: the batches are then registered
   pairs, :func:`training_batches`; + ``lambda_paired_ssim`` x (1 - SSIM) to it, for the
   translations into ``loss.paired_ssim_domains``).

Not in the paper: with ``loss.adversarial_start_step`` N > 0 the first N steps are regression
steps (kind ``"g"``): the generator alone, updated on ``lambda_paired`` x the paired L1 (+
``lambda_paired_ssim`` x the paired SSIM term, + ``lambda_rec`` x the cycle L1), no critic.
The alternation above starts at step N.

2.5-D (``model.context_slices`` k = 3 or 5): the batches hold k-slice stacks ``(B/2, H, W, k)``
(:mod:`ctmri_tf.context`); the generator translates a stack to its centre slice and the critic,
the classification, the reconstruction and the paired losses all see single slices (the real
centre slices and the translations), so the losses are the paper's. The reconstruction pass
feeds the translated centre slice as all k channels (a flat context: the neighbours'
translations are not computed).

Two things are computed once where the official code computes them twice, with the same
result: on a generator step the critic update and the generator update use the same
translations (the generator has not changed in between), and the critic scores real and fake
images in one call (it has no batch statistics).

Both optimizers are Adam(lr, beta_1=0.5, beta_2=0.999, epsilon=1e-8 as PyTorch), with the
learning rate constant and then decaying linearly to 0 over the last ``schedule.decay_steps``
steps. Losses are per-example vectors from :mod:`ctmri_tf.losses` reduced with
``tf.nn.compute_average_loss(..., global_batch_size=B)``, so one device and N replicas compute
the same gradients. The GP interpolation weights are drawn for the whole global batch from the
step's seed and each replica takes the slice of its own examples, so the randomness is identical
too.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from ctmri_tf import data, intensity, losses
from ctmri_tf.configs import StarGANConfig, StarGANModelConfig
from ctmri_tf.context import centre_slice, flat_context
from ctmri_tf.errors import CtmriInputError
from ctmri_tf.models.stargan import stargan_discriminator, stargan_generator
from ctmri_tf.training import translation_validation
from ctmri_tf.training.restore import restore_models
from ctmri_tf.training.runtime import prepare_task
from ctmri_tf.training.schedules import linear_decay_adam

DOMAINS = ("ct", "mri")
CT, MRI = 0, 1
NUM_DOMAINS = len(DOMAINS)


def generator_from_config(model: StarGANModelConfig, image_size=None) -> keras.Model:
    """``stargan_generator`` with the sizes of ``model`` (a ``StarGANConfig.model``), its CT
    windows converted from HU to model space (``intensity.ct_to_unit``); ``image_size`` None
    builds it for any size that is a multiple of 4; it takes ``model.context_slices`` image
    channels."""
    windows = tuple((float(intensity.ct_to_unit(low)), float(intensity.ct_to_unit(high)))
                    for low, high in model.ct_windows())
    return stargan_generator(num_domains=NUM_DOMAINS, filters=model.generator_filters,
                             num_residual=model.generator_residual_blocks, image_size=image_size,
                             input_windows=windows, context_slices=model.context_slices)


class StarGAN:
    """The StarGAN training task (implements ``ctmri_tf.training.loop.TrainingTask``).

    Builds the generator, the discriminator and their optimizers under ``strategy.scope()``
    after seeding and setting the precision policy from ``config``.

    Args:
        config: a validated :class:`ctmri_tf.configs.StarGANConfig`.
        strategy: the ``tf.distribute.Strategy`` that will run the steps.

    Raises:
        CtmriInputError: the config is invalid, or ``data.batch_size`` cannot be split into
            equal CT and MRI halves on every replica.
    """

    def __init__(self, config: StarGANConfig, strategy: tf.distribute.Strategy):
        prepare_task(config, strategy, groups=2,
                     reason=": each replica takes as many CT as MRI images")
        self.config = config
        self.strategy = strategy
        self.global_batch_size = config.data.batch_size
        self.images_per_domain = config.data.batch_size // 2
        self.context_slices = config.model.context_slices
        self.regression_steps = min(config.loss.adversarial_start_step, config.schedule.steps)
        model, schedule, loss = config.model, config.schedule, config.loss
        with strategy.scope():
            self.generator = generator_from_config(model, config.data.image_size)
            self.discriminator = stargan_discriminator(
                config.data.image_size, num_domains=NUM_DOMAINS,
                filters=model.discriminator_filters, num_layers=model.discriminator_layers)
            self.generator_optimizer = linear_decay_adam(
                config.generator_optimizer, schedule, "generator_adam",
                steps_per_update=loss.n_critic, dense_updates=self.regression_steps)
            self.discriminator_optimizer = linear_decay_adam(
                config.discriminator_optimizer, schedule, "discriminator_adam",
                first_step=self.regression_steps)
            # Keras 3 optimizers create their slots lazily; under MirroredStrategy that must
            # happen here, in the strategy scope, not inside the first replica step.
            self.generator_optimizer.build(self.generator.trainable_variables)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    # ------------------------------------------------------------------ TrainingTask protocol
    def checkpoint_objects(self) -> dict:
        return {"generator": self.generator, "discriminator": self.discriminator,
                "generator_optimizer": self.generator_optimizer,
                "discriminator_optimizer": self.discriminator_optimizer}

    def step_kind(self, step: int) -> str:
        """``"g"`` (regression) before ``loss.adversarial_start_step``; after it ``"d+g"`` on
        every ``n_critic``-th step (0-based ``step``, counted from the start step), else
        ``"d"``."""
        if step < self.regression_steps:
            return "g"
        return ("d+g" if (step - self.regression_steps + 1) % self.config.loss.n_critic == 0
                else "d")

    def learning_rates(self) -> dict:
        return {"generator": self.generator_optimizer.learning_rate,
                "discriminator": self.discriminator_optimizer.learning_rate}

    def replica_step(self, batch, seed, kind: str) -> dict:
        """One replica's step on ``{"ct": (b, H, W, k), "mri": (b, H, W, k)}`` in [-1, 1]
        (``k = model.context_slices``)."""
        lambda_cls = self.config.loss.lambda_cls
        G, D = self.generator, self.discriminator
        x_input, label_org, label_trg, alpha = self._inputs(batch, seed)
        x_real = centre_slice(x_input)       # what the critic and the losses see

        if kind == "d":
            # The generator is not trained at this step: no tape records its forward pass.
            x_fake = G([x_input, label_trg], training=True)
            return self._train_discriminator(x_real, x_fake, label_org, alpha)
        if kind == "g":
            return self._train_generator_by_regression(x_input, x_real, label_org, label_trg)

        with tf.GradientTape() as tape:
            # Original-to-target domain. The critic update below uses the same translations:
            # the generator has not changed since, so the official code's second forward pass
            # would compute exactly these images again.
            x_fake = G([x_input, label_trg], training=True)
            # 1. Train the discriminator (outside the generator's tape).
            with tape.stop_recording():
                step_losses = self._train_discriminator(x_real, tf.stop_gradient(x_fake),
                                                        label_org, alpha)
            # 2. Train the generator (every n_critic steps), against the updated critic.
            out_src, out_cls = D(x_fake, training=True)
            g_loss_adv = self._average(losses.wgan_generator_loss(out_src))
            g_loss_cls = self._average(losses.domain_classification_loss(label_trg, out_cls))
            rec_loss, rec_terms = self._reconstruction_terms(x_fake, x_real, label_org)
            g_loss = g_loss_adv + lambda_cls * g_loss_cls + rec_loss
        self._apply(self.generator_optimizer, tape.gradient(g_loss, G.trainable_variables),
                    G.trainable_variables)
        step_losses.update({"g_adv": g_loss_adv, "g_cls": g_loss_cls, "g_total": g_loss,
                            **rec_terms})
        return step_losses

    def _train_generator_by_regression(self, x_input, x_real, label_org, label_trg) -> dict:
        """A regression step (before ``loss.adversarial_start_step``): the paired L1 (+ the
        cycle L1 with ``lambda_rec > 0``), no critic."""
        G = self.generator
        with tf.GradientTape() as tape:
            x_fake = G([x_input, label_trg], training=True)
            g_loss, rec_terms = self._reconstruction_terms(x_fake, x_real, label_org)
        self._apply(self.generator_optimizer, tape.gradient(g_loss, G.trainable_variables),
                    G.trainable_variables)
        return {**rec_terms, "g_total": g_loss}

    def _reconstruction_terms(self, x_fake, x_real, label_org):
        """The generator's reconstruction terms of translations ``x_fake`` of ``x_real``:
        ``(lambda_rec x cycle L1 + lambda_paired x paired L1 + lambda_paired_ssim x paired
        (1 - SSIM), {"g_rec", "g_paired", "g_paired_ssim"})``, each term only when its weight
        is > 0 (0.0 and ``{}`` with none). ``g_paired_ssim`` averages over the translations into
        ``loss.paired_ssim_domains`` only."""
        loss = self.config.loss
        total, terms = 0.0, {}
        if loss.lambda_rec > 0:
            # Target-to-original domain. With lambda_rec 0 (paired training can do without
            # the cycle) this second generator pass, about 40 % of a demo step, is skipped.
            x_reconst = self.generator([flat_context(x_fake, self.context_slices), label_org],
                                       training=True)
            terms["g_rec"] = self._average(losses.l1_loss(x_real, x_reconst))
            total += loss.lambda_rec * terms["g_rec"]
        if loss.lambda_paired > 0:
            # Registered pairs: each translation against its input's counterpart (the CT
            # half's counterpart is the MRI half, and the other way round).
            x_counterpart = tf.concat(tf.split(x_real, 2, axis=0)[::-1], axis=0)
            terms["g_paired"] = self._average(losses.l1_loss(x_counterpart, x_fake))
            total += loss.lambda_paired * terms["g_paired"]
        if loss.lambda_paired_ssim > 0:
            # The first half are translations into MRI, the second into CT; a domain not in
            # paired_ssim_domains weighs 0 and the term averages over the others.
            per_side = tf.shape(x_fake)[0] // 2
            weights = tf.concat([tf.fill([per_side], float("mri" in loss.paired_ssim_domains)),
                                 tf.fill([per_side], float("ct" in loss.paired_ssim_domains))], 0)
            share = len(loss.paired_ssim_domains) / NUM_DOMAINS
            terms["g_paired_ssim"] = self._average(
                weights * losses.ssim_loss(x_counterpart, x_fake)) / share
            total += loss.lambda_paired_ssim * terms["g_paired_ssim"]
        return total, terms

    def _train_discriminator(self, x_real, x_fake, label_org, alpha) -> dict:
        """One critic update on real images and the generator's (constant) translations."""
        D = self.discriminator
        with tf.GradientTape() as tape:
            # Real and fake images in one call (the critic has no batch statistics): critic
            # scores of both, domain classification of the real ones.
            src, cls = D(tf.concat([x_real, x_fake], axis=0), training=True)
            out_src, fake_src = tf.split(src, 2, axis=0)
            out_cls = tf.split(cls, 2, axis=0)[0]
            d_loss_cls = self._average(losses.domain_classification_loss(label_org, out_cls))
            d_loss_adv = self._average(losses.wgan_critic_loss(out_src, fake_src))
            # Gradient penalty on random interpolates of real and fake images.
            d_loss_gp = self._average(losses.gradient_penalty(
                lambda x: D(x, training=True)[0], x_real, x_fake, alpha))
            d_loss = (d_loss_adv + self.config.loss.lambda_cls * d_loss_cls
                      + self.config.loss.lambda_gp * d_loss_gp)
        self._apply(self.discriminator_optimizer, tape.gradient(d_loss, D.trainable_variables),
                    D.trainable_variables)
        return {"d_adv": d_loss_adv, "d_cls": d_loss_cls, "d_gp": d_loss_gp, "d_total": d_loss}

    def validation_metrics(self, batch) -> dict:
        """PSNR (dB) and SSIM of MRI->CT and CT->MRI and the MRI->CT MAE (HU) on a paired
        batch, per example ``(B,)`` (``translation_validation.paired_psnr_ssim``)."""
        return translation_validation.paired_psnr_ssim(self._translate_to, batch)

    def sample_rows(self, batch, max_examples: int = 2):
        """Labelled image-grid rows in [-1, 1]: input | translated | reconstructed (only with
        the cycle term) (| ground truth) (``translation_validation.sample_rows``)."""
        return translation_validation.sample_rows(self._translate_to, batch, max_examples,
                                                  reconstruct=self.config.loss.lambda_rec > 0)

    def validation_tags(self) -> dict:
        """TensorBoard tags and descriptions of :meth:`validation_metrics`
        (``translation_validation.SUMMARY_TAGS``: direction and scale in the name)."""
        return dict(translation_validation.SUMMARY_TAGS)

    def hparam_metrics(self) -> tuple:
        return translation_validation.HPARAM_METRICS

    # ------------------------------------------------------------------ helpers
    def translate(self, images, domain: int) -> tf.Tensor:
        """Translate ``images`` in [-1, 1] to ``domain`` (0 = CT, 1 = MRI): ``(B, H, W, k)``
        stacks or single slices ``(B, H, W, 1)`` (fed as a flat context,
        :func:`ctmri_tf.context.flat_context`) -> ``(B, H, W, 1)`` in [-1, 1]."""
        images = flat_context(tf.convert_to_tensor(images, tf.float32), self.context_slices)
        labels = tf.one_hot(tf.fill([tf.shape(images)[0]], domain), NUM_DOMAINS)
        return self.generator([images, labels], training=False)

    def _translate_to(self, images, target: str) -> tf.Tensor:
        """:meth:`translate` to ``target`` ``"ct"`` or ``"mri"``."""
        return self.translate(images, DOMAINS.index(target))

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(tf.cast(per_example, tf.float32),
                                          global_batch_size=self.global_batch_size)

    def _inputs(self, batch, seed):
        """Real images with their domain labels, the target labels and the GP weights.

        The interpolation weights are drawn as a ``(2, B/2)`` array (domain x global example
        index) for the whole global batch; this replica takes the columns of its own examples,
        which ``experimental_distribute_dataset`` hands out in order (replica r gets examples
        ``r*b .. (r+1)*b - 1`` of each domain).
        """
        ct = tf.cast(batch["ct"], tf.float32)
        mri = tf.cast(batch["mri"], tf.float32)
        per_replica = tf.shape(ct)[0]
        x_real = tf.concat([ct, mri], axis=0)
        domain = tf.concat([tf.fill([per_replica], CT), tf.fill([per_replica], MRI)], axis=0)
        label_org = tf.one_hot(domain, NUM_DOMAINS)
        label_trg = tf.one_hot(1 - domain, NUM_DOMAINS)
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
        alpha = tf.random.stateless_uniform([NUM_DOMAINS, self.images_per_domain], seed=seed)
        alpha = alpha[:, replica * per_replica:(replica + 1) * per_replica]
        alpha = tf.reshape(alpha, [-1, 1, 1, 1])
        return x_real, label_org, label_trg, alpha

    @staticmethod
    def _apply(optimizer, gradients, variables) -> None:
        optimizer.apply_gradients(zip(gradients, variables))


# ----------------------------------------------------------------------------- input
def training_batches(config: StarGANConfig, split: str = "train") -> tf.data.Dataset:
    """The infinite, seeded training stream of :class:`StarGAN`:
    ``{"ct": (B/2, H, W, k), "mri": (B/2, H, W, k)}`` in [-1, 1] with ``B = data.batch_size``
    and ``k = model.context_slices`` (neighbouring slices as channels, 1 for 2-D).

    Unpaired (``loss.lambda_paired == 0``): independent CT and MRI streams
    (``ctmri_tf.data.unpaired_batches``). Paired (``loss.lambda_paired > 0``): registered slices
    (``ctmri_tf.data.paired_batches``, MRI as source), so ``ct[i]`` and ``mri[i]`` are the same
    slice of the same subject; both sides of a pair get the same augmentation.

    Raises:
        CtmriInputError: the dataset is not built, or ``lambda_paired > 0`` and ``split`` holds
            no registered CT/MRI pair (e.g. the ``folder_unpaired`` config).
    """
    d = config.data
    per_side = d.batch_size // 2
    if config.loss.lambda_paired <= 0:
        return data.unpaired_batches(split, per_side, d.image_size, mask_inputs=d.mask_inputs,
                                     augment=d.augment, seed=config.seed, repeat=True,
                                     drop_remainder=True, config=d.dataset_config,
                                     data_dir=d.data_dir,
                                     context_slices=config.model.context_slices)

    def pairs(repeat: bool) -> tf.data.Dataset:
        return data.paired_batches(split, per_side, d.image_size, source="mri",
                                   mask_inputs=d.mask_inputs, augment=d.augment, seed=config.seed,
                                   repeat=repeat, drop_remainder=True, config=d.dataset_config,
                                   data_dir=d.data_dir,
                                   context_slices=config.model.context_slices, stack_target=True)

    if not any(True for _ in pairs(repeat=False).take(1)):
        raise CtmriInputError(None, f"loss.lambda_paired={config.loss.lambda_paired} needs "
                                    f"registered CT/MRI pairs, but the {split!r} split of ctmri/"
                                    f"{d.dataset_config} has no batch of {per_side} of them; use "
                                    f"a paired dataset or --set loss.lambda_paired=0"
                                    + (" --set loss.lambda_paired_ssim=0"
                                       if config.loss.lambda_paired_ssim > 0 else ""))
    return pairs(repeat=True).map(lambda b: {"ct": b["target"], "mri": b["source"]},
                                  num_parallel_calls=tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- run folders
def load_stargan_generator(run_dir: str | os.PathLike) -> keras.Model:
    """The trained StarGAN generator of a run folder, for any image size (float32).

    Builds only a float32 ``stargan_generator(image_size=None)`` (any size that is a multiple
    of 4) and reads the run's newest intact checkpoint into it
    (``ctmri_tf.training.restore.restore_models``): no critic or optimizer is built and the
    global dtype policy is left as it was.

    Returns:
        ``keras.Model``: ``[image (B, H, W, k) in [-1, 1], one-hot target domain (B, 2)]`` (0 =
        CT, 1 = MRI) -> image ``(B, H, W, 1)`` in [-1, 1]; ``k`` is the run's
        ``model.context_slices`` (1 for runs from before 2.5-D models).

    Raises:
        CtmriInputError: not a StarGAN run folder, or no restorable checkpoint (naming the file
            or folder).
    """
    _, _, models = restore_models(run_dir, "stargan", lambda config: {
        "generator": generator_from_config(config.model)})
    return models["generator"]

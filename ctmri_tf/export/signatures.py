"""The ``tf.Module`` wrappers whose traced methods become the SavedModels' serving signatures.

Every signature takes images in physical units and hides the normalisation to model space
[-1, 1], using the TensorFlow code paths of :mod:`ctmri_tf.intensity` inside the graph:

* CT is mapped with the fixed CT window :data:`ctmri_tf.intensity.CT_WINDOW_HU` (-1024 to 3000 HU).
* MRI is mapped with a per-image scale: the MR signal at the 0.5 % and 99.5 % percentiles of the
  image's finite pixels (:func:`ctmri_tf.intensity.image_percentile_range`, ``tf.sort``/
  ``tf.gather`` inside the graph, linear interpolation as ``numpy.percentile``). A constant image
  (a blank slice) maps to -1 instead of failing the request. Signatures ending in
  ``_with_ranges`` / ``_with_range`` take the ``(low, high)`` range of each image instead, e.g.
  the per-volume scale the model was trained with (the tfds ``intensity_range`` feature).
* The classifier, whose job is to find the modality, maps every image by its own percentiles
  (:func:`ctmri_tf.intensity.percentile_to_unit`), as it was trained.

Conventions shared by all signatures:

* ``image`` (and ``reference``, ``mask``) is float32 (``mask`` uint8) of shape
  ``(B, H, W, 1)``: the signatures declare that rank, so clients and ``saved_model_cli show``
  see it; image outputs have the same shape. Batch and spatial sizes are free, within each
  model's rule (checked in the graph; a violation fails the request with ``INVALID_ARGUMENT``
  and a message saying the rule):

  - StarGAN and CycleGAN generators: height and width multiples of 4, at least 8 pixels;
  - DeepLabV3+: height and width multiples of 32, its output stride (see :class:`Segmenter`);
  - classifier: any size;
  - ``evaluate*``: at least 11 x 11 pixels (SSIM's Gaussian window).

* modality / domain names are strings ``"ct"`` and ``"mri"`` (case and surrounding blanks are
  ignored), shape ``(B,)``.
* a range input is float32 ``(B, 2)``: the physical ``(low, high)`` that maps to -1 and +1 (HU for
  CT, MR signal for MRI).

2.5-D generators (``model.context_slices`` k = 3 or 5): the translators' ``image`` is
``(B, H, W, k)``, each image the slice and its neighbours (same volume, in slice order,
replicate padding at the ends: :mod:`ctmri_tf.context`); one ``(low, high)`` range maps the whole
stack (the default MRI range: the percentiles of all k slices). The outputs, ``reference`` and
``mask`` are the centre slice's, ``(B, H, W, 1)``. A 2-D export (k = 1) is unchanged.

Translation outputs (``translate*`` and ``evaluate*``):

* ``translated_unit``: the generator's output in model space [-1, 1].
* ``translated``: physical units of the target. CT: HU in the CT window. MRI: without a
  ``target_range``, the unit image mapped linearly onto [0, 1] ("scaled MR signal": MRI has no
  absolute scale); with a ``target_range`` (``*_with_ranges``), MR signal in that range's units.

Metrics (``evaluate``, ``evaluate_masked``), one value per image: the protocol of
:mod:`ctmri_tf.metrics` (SynthRAD, fixed "population" dynamic range) applied to each slice. Both
images are mapped to [0, 1] and compared with ``tf.image.psnr`` / ``tf.image.ssim``
(``max_val=1``, 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03), which equals PSNR/SSIM on
HU clipped to [-1024, 3000] with data range 4024 for CT, and on the [0, 1] scaled signal for MRI
(the reference MRI scaled by its own per-image percentiles). ``evaluate_masked`` sets both
images to 0 (-1024 HU) outside the body mask, as SynthRAD does, and averages the squared error
(PSNR) and the SSIM map (whose entries are the windows centred 5 pixels or more inside the
image) over the mask's pixels; an empty mask gives NaN. PSNR is in dB (``inf`` for identical
images).

Units: each module's :meth:`ServingModule.signature_units` says, for every input and output of
every signature, its unit; ``export.saved_model`` writes that into the export's
``assets.extra/ctmri_export.json`` (``"signatures"``), beside the SavedModel.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from ctmri_tf import intensity, metrics
from ctmri_tf.training.cyclegan_options import DIRECTIONS

MODALITY_NAMES = ("ct", "mri")
"""Domain / class index -> name (StarGAN's one-hot order and the classifier's logits)."""

GENERATOR_MULTIPLE = 4
"""Generators down-sample twice by 2: height and width must be multiples of 4."""

GENERATOR_MIN_SIZE = 8
DEEPLAB_MULTIPLE = 32
"""DeepLabV3+'s output stride: its image size must be a multiple of 32."""

MRI_OUTPUT_RANGE = (0.0, 1.0)
"""Where ``translated`` puts an MRI when no ``target_range`` is given: the [0, 1] scaled signal."""

_IMAGES = tf.TensorSpec((None, None, None, 1), tf.float32)
_FLAGS = tf.TensorSpec((None,), tf.bool)
_RANGES = tf.TensorSpec((None, 2), tf.float32)


# ----------------------------------------------------------------------------- graph helpers

def _batch_image(image: tf.Tensor, name: str, channels: int = 1) -> tf.Tensor:
    """``(B, H, W)`` or ``(B, H, W, 1)`` -> ``(B, H, W, 1)`` (checked in the graph). The
    signatures declare ``(B, H, W, 1)``; the 3-D form serves the modules' eager use. With
    ``channels`` k > 1 (a 2.5-D translator's k-slice stacks) only ``(B, H, W, k)`` is taken."""
    if channels > 1:
        shape = tf.shape(image)
        check = tf.debugging.Assert(
            tf.logical_and(tf.equal(tf.rank(image), 4), tf.equal(shape[-1], channels)),
            [f"{name} must have shape (batch, height, width, {channels}): each slice with its "
             f"neighbours, {channels} slices in order; got shape", shape])
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        return tf.ensure_shape(image, (None, None, None, channels))
    rank = tf.rank(image)
    shape = tf.shape(image)
    ok = tf.logical_or(tf.equal(rank, 3),
                       tf.logical_and(tf.equal(rank, 4), tf.equal(shape[-1], 1)))
    check = tf.debugging.Assert(ok, [f"{name} must have shape (batch, height, width) or "
                                     f"(batch, height, width, 1); got shape", shape])
    with tf.control_dependencies([check]):
        shape = tf.identity(shape)
    image4 = tf.reshape(image, tf.stack([shape[0], shape[1], shape[2], 1]))
    return tf.ensure_shape(image4, (None, None, None, 1))


def _check_same_shape(image4: tf.Tensor, other4: tf.Tensor, name: str) -> tf.Tensor:
    check = tf.debugging.assert_equal(
        tf.shape(image4), tf.shape(other4),
        message=f"{name} must have the same (batch, height, width) as image")
    with tf.control_dependencies([check]):
        return tf.identity(other4)


def _check_spatial(image4: tf.Tensor, multiple: int, minimum: int, model: str) -> tf.Tensor:
    size = tf.shape(image4)[1:3]
    ok = tf.logical_and(tf.reduce_all(tf.equal(size % multiple, 0)),
                        tf.reduce_all(size >= minimum))
    check = tf.debugging.Assert(ok, [f"{model}: height and width must be multiples of "
                                     f"{multiple} and at least {minimum} pixels (pad or crop "
                                     f"the image); got height, width", size])
    with tf.control_dependencies([check]):
        return tf.identity(image4)


def _check_batch(image4: tf.Tensor, values: tf.Tensor, name: str) -> tf.Tensor:
    check = tf.debugging.assert_equal(
        tf.shape(values)[0], tf.shape(image4)[0],
        message=f"{name} must have one entry per image of the batch")
    with tf.control_dependencies([check]):
        return tf.identity(values)


def _is_mri(names: tf.Tensor, image4: tf.Tensor, what: str) -> tf.Tensor:
    """``(B,)`` strings ``"ct"``/``"mri"`` -> ``(B,)`` bool (True for MRI), checked."""
    names = _check_batch(image4, names, what)
    names = tf.strings.lower(tf.strings.strip(names))
    is_mri = tf.equal(names, "mri")
    valid = tf.logical_or(is_mri, tf.equal(names, "ct"))
    check = tf.debugging.Assert(tf.reduce_all(valid), [f"{what} must be ct or mri (one per "
                                                       f"image); got", names], summarize=16)
    with tf.control_dependencies([check]):
        return tf.identity(is_mri)


def _per_image(mask: tf.Tensor) -> tf.Tensor:
    """``(B,)`` -> ``(B, 1, 1, 1)`` to select between whole images with ``tf.where``."""
    return tf.reshape(mask, (-1, 1, 1, 1))


def default_ranges(image4: tf.Tensor, is_mri: tf.Tensor) -> tf.Tensor:
    """The ``(B, 2)`` physical range of each image that maps to [-1, 1] when none is given.

    CT (``is_mri`` False): the CT window :data:`ctmri_tf.intensity.CT_WINDOW_HU`. MRI: the
    image's own MR signal at the 0.5 % / 99.5 % percentiles of its finite pixels
    (:func:`ctmri_tf.intensity.image_percentile_range`: ``tf.sort``/``tf.gather``); a constant
    image gets a range starting at its value so that it maps to -1 (background) instead of
    failing the request. A CT image never reaches the percentile code.
    """
    window = tf.constant(intensity.CT_WINDOW_HU, tf.float32)

    def one(args):
        image, mri = args
        return tf.cond(mri, lambda: intensity.image_percentile_range(image), lambda: window)

    return tf.map_fn(one, (image4, is_mri), fn_output_signature=tf.TensorSpec((2,), tf.float32))


def default_output_ranges(is_mri: tf.Tensor) -> tf.Tensor:
    """``(B, 2)``: the CT window for CT targets, :data:`MRI_OUTPUT_RANGE` for MRI targets."""
    return tf.where(is_mri[:, None], tf.constant([MRI_OUTPUT_RANGE], tf.float32),
                    tf.constant([intensity.CT_WINDOW_HU], tf.float32))


def physical_to_unit(image4: tf.Tensor, is_mri: tf.Tensor, ranges: tf.Tensor) -> tf.Tensor:
    """Physical units -> [-1, 1] with one ``(low, high)`` per image (``ranges`` ``(B, 2)``):
    HU through :func:`ctmri_tf.intensity.ct_to_unit`, MR signal through ``mri_to_unit``."""
    return tf.where(_per_image(is_mri), intensity.mri_to_unit(image4, ranges),
                    intensity.ct_to_unit(image4, ranges))


def unit_to_physical(unit4: tf.Tensor, is_mri: tf.Tensor, ranges: tf.Tensor) -> tf.Tensor:
    """[-1, 1] -> physical units with one ``(low, high)`` per image (inverse of
    :func:`physical_to_unit`)."""
    return tf.where(_per_image(is_mri), intensity.unit_to_mri(unit4, ranges),
                    intensity.unit_to_ct(unit4, ranges))


def image_metrics(translated_unit4, reference4, target_is_mri, reference_ranges, mask4=None):
    """Per-image ``(psnr, ssim)``, each ``(B,)`` float32 (see the module docstring).

    Both images go to [0, 1]: CT as ``(clip(HU, -1024, 3000) + 1024) / 4024``, MRI as the
    scaled signal (the reference through ``reference_ranges``, its percentile scale).
    """
    low, high = metrics.CT_RANGE_HU

    def ct01(hu):
        return (tf.clip_by_value(hu, low, high) - low) / (high - low)

    select = _per_image(target_is_mri)
    pred = tf.where(select, (translated_unit4 + 1.0) * 0.5,
                    ct01(intensity.unit_to_ct(translated_unit4)))
    ref = tf.where(select, (intensity.mri_to_unit(reference4, reference_ranges) + 1.0) * 0.5,
                   ct01(reference4))
    pred = _check_spatial(pred, 1, metrics.SSIM_FILTER_SIZE, "evaluate (SSIM window)")
    ssim_options = dict(max_val=1.0, filter_size=metrics.SSIM_FILTER_SIZE,
                        filter_sigma=metrics.SSIM_FILTER_SIGMA, k1=metrics.SSIM_K1,
                        k2=metrics.SSIM_K2)
    if mask4 is None:
        return tf.image.psnr(pred, ref, max_val=1.0), tf.image.ssim(pred, ref, **ssim_options)
    inside = tf.cast(tf.not_equal(mask4, 0), tf.float32)
    pred, ref = pred * inside, ref * inside
    count = tf.reduce_sum(inside, axis=[1, 2, 3])
    mse = tf.reduce_sum(tf.square(pred - ref), axis=[1, 2, 3]) / count
    psnr = -10.0 * tf.math.log(mse) / tf.math.log(10.0)
    ssim_map = tf.image.ssim(pred, ref, return_index_map=True, **ssim_options)  # (B, H-10, W-10)
    border = metrics.SSIM_BORDER
    inner = inside[:, border:-border, border:-border, 0]
    ssim = tf.reduce_sum(ssim_map * inner, axis=[1, 2]) / tf.reduce_sum(inner, axis=[1, 2])
    return psnr, ssim


def _like(image4: tf.Tensor, original: tf.Tensor) -> tf.Tensor:
    return tf.reshape(image4, tf.shape(original))


# ----------------------------------------------------------------------------- serving modules

class _Hidden:
    """Holds objects out of TensorFlow's object tracking.

    * The Keras model: a tracked Keras 3 model makes ``tf.saved_model.save`` trace an extra
      ``serving_default`` of the model at its built input shape (slow, and impossible for
      keras-cv's DeepLabV3+ with an unknown image size). Like ``keras.export.ExportArchive``,
      the modules track only the model's variables (``model_variables``), which is all the
      signatures capture.
    * Inner ``tf.function``\ s shared by several signatures (the model call, the percentile
      scaling): traced once per module and saved once in the function library, instead of once
      per signature.
    """

    def __init__(self, **values):
        self.__dict__.update(values)


def serving_variables(model) -> list[tf.Variable]:
    """The plain ``tf.Variable``\ s under a Keras 3 model's variables, for a module to track.

    A Keras 3 variable (``keras.Variable`` on the TensorFlow backend) wraps a ``tf.Variable``;
    the model's traced calls capture the inner variable's resource handle. Tracking the wrapper
    instead makes ``tf.saved_model.save`` write, for each weight, a second variable
    (``KerasVariable._export_to_saved_model_graph`` copies it) that the SavedModel's restore op
    never initialises: ``tf.saved_model.load`` works, but TF Serving's loader (a TF1 session:
    restore, then run) fails with "Could not find variable ..." (keras-team/keras#19274,
    tensorflow/serving#2226). Tracking the inner variables gives one resource per weight.

    Raises:
        TypeError: a variable that is not backed by a ``tf.Variable`` (another Keras backend).
    """
    found = []
    for variable in model.variables:
        inner = variable.value if isinstance(variable, keras.Variable) else variable
        if not isinstance(inner, tf.Variable):
            raise TypeError(f"variable {variable.path if hasattr(variable, 'path') else variable}"
                            f" is not backed by a tf.Variable (Keras backend "
                            f"{keras.backend.backend()!r}); export needs the TensorFlow backend")
        found.append(inner)
    return found


def signature(*input_signature: tf.TensorSpec):
    """Mark a method of a :class:`ServingModule` as a serving signature with these inputs."""
    def mark(method):
        method.input_signature = input_signature
        return method
    return mark


def _image(name: str = "image", dtype=tf.float32, channels: int = 1) -> tf.TensorSpec:
    """An image input ``(B, H, W, channels)``."""
    return tf.TensorSpec((None, None, None, channels), dtype, name=name)


def _names(name: str) -> tf.TensorSpec:
    return tf.TensorSpec((None,), tf.string, name=name)


def _ranges(name: str) -> tf.TensorSpec:
    return tf.TensorSpec((None, 2), tf.float32, name=name)


def _inner(fn, *input_signature) -> tf.types.experimental.PolymorphicFunction:
    return tf.function(fn, input_signature=list(input_signature), autograph=False)


class ServingModule(tf.Module):
    """A Keras model plus the methods (marked with :func:`signature`) that become its serving
    signatures. The methods are plain graph code: :meth:`signatures` traces each one once (no
    AutoGraph, nothing to convert) for ``tf.saved_model.save(module, path, signatures=...)``;
    they also run eagerly, which is handy for debugging.
    """

    DEFAULT_SIGNATURE = ""
    """The signature also exported as ``serving_default``."""

    def __init__(self, model, label: str, **inner):
        super().__init__(name=label)
        self.model_variables = serving_variables(model)
        self.hidden = _Hidden(model=model, default_ranges=_inner(default_ranges, _IMAGES, _FLAGS),
                              **inner)

    def signature_methods(self) -> dict:
        """``{signature name: (bound method, input signature)}``."""
        found = {}
        for klass in reversed(type(self).__mro__):
            for name, attr in vars(klass).items():
                specs = getattr(attr, "input_signature", None)
                if callable(attr) and specs is not None:
                    found[name] = (getattr(self, name), specs)
        return found

    UNITS: dict = {}
    """``{tensor name: unit}`` for the inputs and outputs of this module's signatures."""

    def signature_units(self) -> dict:
        """``{signature name: {"inputs": {name: unit}, "outputs": {name: unit}}}`` for every
        signature, ``serving_default`` included (JSON-ready; written into the export's
        ``assets.extra/ctmri_export.json`` by ``export.saved_model``).

        Raises:
            KeyError: a signature tensor without a unit in :attr:`UNITS` (a programming error,
                caught by the tests).
        """
        described = {}
        for name, function in self.signatures().items():
            inputs = [spec.name for spec in tf.nest.flatten(function.structured_input_signature)]
            outputs = function.structured_outputs
            described[name] = {
                "inputs": {key: self.UNITS[key] for key in sorted(inputs)},
                "outputs": {key: self.UNITS[key] for key in sorted(outputs)}}
        return described

    def signatures(self) -> dict:
        """``{signature name: concrete function}``, ``serving_default`` included (traced once
        per module)."""
        if getattr(self.hidden, "concrete", None) is not None:
            return self.hidden.concrete
        concrete = {name: _inner(method, *specs).get_concrete_function()
                    for name, (method, specs) in self.signature_methods().items()}
        concrete["serving_default"] = concrete[self.DEFAULT_SIGNATURE]
        self.hidden.concrete = concrete
        return concrete


# ----------------------------------------------------------------------------- translators

class _Translator(ServingModule):
    """Shared translate / evaluate logic; subclasses say how the generator is called and which
    modality each image is translated to (the source is the other one)."""

    DEFAULT_SIGNATURE = "translate"

    UNITS = {
        "image": "physical units of the source: HU for a CT, MR signal (scanner units) for an "
                 "MRI; (batch, height, width, 1)",
        "target_domain": "string per image: 'ct' or 'mri' (the source is the other one)",
        "source_range": "(low, high) of the source in its physical units (HU or MR signal) "
                        "that maps to [-1, 1]",
        "target_range": "(low, high) in the target's physical units that [-1, 1] maps to",
        "reference": "the registered target image in physical units (HU or MR signal)",
        "mask": "uint8, nonzero inside the body",
        "translated": "HU (CT target, CT window -1024..3000) or the [0, 1] scaled MR signal "
                      "(MRI target; MR signal in target_range units with *_with_ranges)",
        "translated_unit": "model space [-1, 1]",
        "psnr": "dB, per image (SynthRAD protocol: CT on [-1024, 3000] HU, MRI on [0, 1])",
        "ssim": "unitless in [-1, 1], per image (11x11 Gaussian window, sigma 1.5)",
    }

    def __init__(self, generator, label: str):
        channels = generator.inputs[0].shape[-1]
        if channels not in (1, 3, 5):
            raise ValueError(f"the generator takes {channels} image channels; the export "
                             f"supports 1 (2-D) or 3 / 5 neighbouring slices (2.5-D)")
        self.context_slices = int(channels)
        """Slices per input image (1: 2-D; 3 or 5: a 2.5-D generator's stacks)."""
        images = _image("image", channels=self.context_slices)
        super().__init__(generator, label,
                         core=_inner(self._core, images, _FLAGS, _RANGES, _RANGES))
        # the source's ranges: of the whole k-slice stack; the reference's: of one slice
        self.hidden.reference_ranges = self.hidden.default_ranges
        if self.context_slices > 1:
            self.hidden.default_ranges = _inner(default_ranges, images, _FLAGS)
            self.UNITS = {**self.UNITS, "image": (
                f"physical units of the source: HU for a CT, MR signal (scanner units) for an "
                f"MRI; (batch, height, width, {self.context_slices}): each slice with its "
                f"{self.context_slices - 1} neighbours of the same volume in slice order (edge "
                f"slices repeated), the output is the centre slice's (channel "
                f"{self.context_slices // 2})"),
                "translated": self.UNITS["translated"] + "; the centre slice, (batch, height, "
                                                         "width, 1)"}

    def signature_methods(self) -> dict:
        """As :meth:`ServingModule.signature_methods`, the ``image`` input with
        :attr:`context_slices` channels."""
        found = super().signature_methods()
        if self.context_slices == 1:
            return found
        stacked = _image("image", channels=self.context_slices)
        return {name: (method, tuple(stacked if spec.name == "image" else spec for spec in specs))
                for name, (method, specs) in found.items()}

    # Each subclass defines ``_generate(unit4 in [-1, 1], target_is_mri (B,))`` -> translated
    # unit image (B, H, W, 1): how its generator is called.

    def _core(self, image4, target_is_mri, source_ranges, target_ranges):
        unit = physical_to_unit(image4, tf.logical_not(target_is_mri), source_ranges)
        out = self._generate(unit, target_is_mri)
        return out, unit_to_physical(out, target_is_mri, target_ranges)

    def _translate(self, image, target_is_mri_fn, source_ranges=None, target_ranges=None):
        image4 = _check_spatial(_batch_image(image, "image", self.context_slices),
                                GENERATOR_MULTIPLE, GENERATOR_MIN_SIZE, self.name)
        target_is_mri = target_is_mri_fn(image4)
        if source_ranges is None:
            source_ranges = self.hidden.default_ranges(image4, tf.logical_not(target_is_mri))
            target_ranges = default_output_ranges(target_is_mri)
        else:
            source_ranges = _check_batch(image4, source_ranges, "source_range")
            target_ranges = _check_batch(image4, target_ranges, "target_range")
        out, translated = self.hidden.core(image4, target_is_mri, source_ranges, target_ranges)
        return image4, target_is_mri, out, translated

    def _translation(self, image, target_is_mri_fn, source_ranges=None, target_ranges=None):
        _, _, out, translated = self._translate(image, target_is_mri_fn, source_ranges,
                                                target_ranges)
        return {"translated": self._like(translated, image),
                "translated_unit": self._like(out, image)}

    def _like(self, out4: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
        """The output in the input's layout: a 2-D input's own shape ``(B, H, W)`` or
        ``(B, H, W, 1)``; a 2.5-D stack's centre slice ``(B, H, W, 1)``."""
        return out4 if self.context_slices > 1 else _like(out4, image)

    def _evaluation(self, image, reference, target_is_mri_fn, mask=None):
        image4, target_is_mri, out, translated = self._translate(image, target_is_mri_fn)
        centre4 = image4[..., self.context_slices // 2:self.context_slices // 2 + 1]
        reference4 = _check_same_shape(centre4, _batch_image(reference, "reference"), "reference")
        mask4 = None
        if mask is not None:
            mask4 = _check_same_shape(centre4, _batch_image(mask, "mask"), "mask")
        reference_ranges = self.hidden.reference_ranges(reference4, target_is_mri)
        psnr, ssim = image_metrics(out, reference4, target_is_mri, reference_ranges, mask4)
        return {"translated": self._like(translated, image),
                "translated_unit": self._like(out, image), "psnr": psnr, "ssim": ssim}


class StarGANTranslator(_Translator):
    """Serving signatures of a StarGAN generator (2 domains: index 0 = ct, 1 = mri).

    ``target_domain`` is a string per image, ``"ct"`` or ``"mri"``; the source modality is the
    other one (an MRI for ``"ct"``, a CT for ``"mri"``), which decides how ``image`` is
    normalised.

    Signatures:
        ``serving_default`` = ``translate``: ``image``, ``target_domain`` ->
            ``translated``, ``translated_unit``.
        ``translate_with_ranges``: ``image``, ``target_domain``, ``source_range`` (B, 2),
            ``target_range`` (B, 2) -> ``translated`` (in ``target_range`` units),
            ``translated_unit``.
        ``evaluate``: ``image``, ``target_domain``, ``reference`` (target modality, physical
            units, shape of ``image``) -> ``translated``, ``translated_unit``, ``psnr``, ``ssim``.
        ``evaluate_masked``: as ``evaluate`` plus ``mask`` (uint8, shape of ``image``, nonzero =
            body).
    """

    def __init__(self, generator):
        num_domains = generator.inputs[1].shape[-1]
        if num_domains != len(MODALITY_NAMES):
            raise ValueError(f"the StarGAN generator has {num_domains} domains; the export "
                             f"supports exactly {len(MODALITY_NAMES)}: {MODALITY_NAMES}")
        super().__init__(generator, "stargan_generator")

    def _generate(self, unit4, target_is_mri):
        label = tf.one_hot(tf.cast(target_is_mri, tf.int32), len(MODALITY_NAMES))
        return self.hidden.model([unit4, label], training=False)

    @staticmethod
    def _domain(target_domain):
        return lambda image4: _is_mri(target_domain, image4, "target_domain")

    @signature(_image(), _names("target_domain"))
    def translate(self, image, target_domain):
        return self._translation(image, self._domain(target_domain))

    @signature(_image(), _names("target_domain"), _ranges("source_range"),
               _ranges("target_range"))
    def translate_with_ranges(self, image, target_domain, source_range, target_range):
        return self._translation(image, self._domain(target_domain), source_range, target_range)

    @signature(_image(), _names("target_domain"), _image("reference"))
    def evaluate(self, image, target_domain, reference):
        return self._evaluation(image, reference, self._domain(target_domain))

    @signature(_image(), _names("target_domain"), _image("reference"), _image("mask", tf.uint8))
    def evaluate_masked(self, image, target_domain, reference, mask):
        return self._evaluation(image, reference, self._domain(target_domain), mask)


CYCLEGAN_DIRECTIONS = DIRECTIONS
"""``mri2ct``, ``ct2mri``: a CycleGAN export translates one direction."""


class CycleGANTranslator(_Translator):
    """Serving signatures of one CycleGAN generator (one direction: ``mri2ct`` or ``ct2mri``).

    Signatures (as :class:`StarGANTranslator`, without ``target_domain``):
        ``serving_default`` = ``translate``: ``image`` -> ``translated``, ``translated_unit``.
        ``translate_with_ranges``: ``image``, ``source_range``, ``target_range``.
        ``evaluate``: ``image``, ``reference`` -> + ``psnr``, ``ssim``.
        ``evaluate_masked``: ``image``, ``reference``, ``mask``.
    """

    def __init__(self, generator, direction: str):
        if direction not in CYCLEGAN_DIRECTIONS:
            raise ValueError(f"direction must be one of {CYCLEGAN_DIRECTIONS}, got {direction!r}")
        super().__init__(generator, f"cyclegan_{direction}")
        self.direction = direction

    def _generate(self, unit4, target_is_mri):
        return self.hidden.model(unit4, training=False)

    def _domain(self):
        target_is_mri = self.direction == "ct2mri"
        return lambda image4: tf.fill(tf.shape(image4)[:1], target_is_mri)

    @signature(_image())
    def translate(self, image):
        return self._translation(image, self._domain())

    @signature(_image(), _ranges("source_range"), _ranges("target_range"))
    def translate_with_ranges(self, image, source_range, target_range):
        return self._translation(image, self._domain(), source_range, target_range)

    @signature(_image(), _image("reference"))
    def evaluate(self, image, reference):
        return self._evaluation(image, reference, self._domain())

    @signature(_image(), _image("reference"), _image("mask", tf.uint8))
    def evaluate_masked(self, image, reference, mask):
        return self._evaluation(image, reference, self._domain(), mask)


# ----------------------------------------------------------------------------- segmentation

class Segmenter(ServingModule):
    """Serving signatures of the DeepLabV3+ body segmentation model.

    Signatures:
        ``serving_default`` = ``segment``: ``image`` (physical units), ``modality`` (B,) ->
            ``mask`` uint8 (B, H, W) (argmax class: 1 = body for the 2-class model),
            ``probabilities`` float32 (B, H, W, num_classes) (softmax of the logits).
        ``segment_with_range``: ``image``, ``modality``, ``intensity_range`` (B, 2).

    Batch and image size are free: any height and width that are multiples of 32 (the model's
    output stride), when the model was built for any size (``deeplab_v3_plus(None, ...)``, as
    ``export.saved_model.export_segmentation`` does); a model built for one size exports for
    that size only. Other sizes fail the request with a message giving the rule.

    Args:
        model: ``ctmri_tf.models.deeplab_v3_plus`` model.
    """

    DEFAULT_SIGNATURE = "segment"
    UNITS = {
        "image": "physical units: HU for a CT, MR signal for an MRI; (batch, height, width, 1)",
        "modality": "string per image: 'ct' or 'mri'",
        "intensity_range": "(low, high) physical units of each image that map to [-1, 1]",
        "mask": "uint8 class index per pixel (1 = body); (batch, height, width)",
        "probabilities": "softmax over the classes (0 = background, 1 = body), float32 in "
                         "[0, 1]; (batch, height, width, classes)",
    }

    def __init__(self, model):
        built = tuple(model.input_shape[1:3])
        if any(side is not None and (side % DEEPLAB_MULTIPLE or side < DEEPLAB_MULTIPLE)
               for side in built):
            raise ValueError(f"deeplab_v3_plus: the model's input size {built} must be "
                             f"multiples of {DEEPLAB_MULTIPLE}")
        spec = tf.TensorSpec((None, *built, 1), tf.float32)
        super().__init__(model, "deeplab_v3_plus", core=_inner(self._core, spec, _FLAGS, _RANGES))
        self.image_size = None if None in built else built
        """``(height, width)`` of a fixed-size model, None for any multiple of 32."""

    def _core(self, image4, is_mri, ranges):
        logits = self.hidden.model(physical_to_unit(image4, is_mri, ranges), training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return {"mask": tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8),
                "probabilities": probabilities}

    def _segment(self, image, modality, ranges=None):
        image4 = _batch_image(image, "image")
        if self.image_size is None:
            image4 = _check_spatial(image4, DEEPLAB_MULTIPLE, DEEPLAB_MULTIPLE, self.name)
        else:
            height, width = self.image_size
            size = tf.shape(image4)[1:3]
            check = tf.debugging.Assert(
                tf.reduce_all(tf.equal(size, [height, width])),
                [f"{self.name}: this export takes images of exactly {height} x {width} pixels "
                 f"(the size the model was built for); got height, width", size])
            with tf.control_dependencies([check]):
                image4 = tf.ensure_shape(tf.identity(image4), (None, height, width, 1))
        is_mri = _is_mri(modality, image4, "modality")
        if ranges is None:
            ranges = self.hidden.default_ranges(image4, is_mri)
        else:
            ranges = _check_batch(image4, ranges, "intensity_range")
        return self.hidden.core(image4, is_mri, ranges)

    @signature(_image(), _names("modality"))
    def segment(self, image, modality):
        return self._segment(image, modality)

    @signature(_image(), _names("modality"), _ranges("intensity_range"))
    def segment_with_range(self, image, modality, intensity_range):
        return self._segment(image, modality, intensity_range)


# ----------------------------------------------------------------------------- classifier

class Classifier(ServingModule):
    """Serving signatures of the CT/MRI modality classifier.

    Signatures:
        ``serving_default`` = ``classify``: ``image`` in physical units (HU or MR signal; the
            modality is what is asked, so every image is mapped to [-1, 1] by its own 0.5 % /
            99.5 % percentiles whatever it is, with
            :func:`ctmri_tf.intensity.percentile_to_unit`, the normalisation of training in
            ``ctmri_tf.data.modality_batches``) -> ``probabilities`` float32 (B, 2) (index 0 =
            ct, 1 = mri), calibrated: ``softmax(logits / temperature)``, and ``label`` string
            (B,) ``"ct"`` or ``"mri"``.
        ``classify_unit``: ``image`` already in model space [-1, 1], normalised as in training
            (``percentile_to_unit``).

    Args:
        model: the Keras classifier (logits).
        temperature: the temperature-scaling ``T > 0`` fitted on the validation split
            (``ctmri_tf.calibration``; 1 = the raw softmax), a constant of the graph.
    """

    DEFAULT_SIGNATURE = "classify"
    UNITS = {
        "image": "physical units, any modality (HU or MR signal; classify_unit: model space "
                 "[-1, 1] as in training); (batch, height, width, 1)",
        "probabilities": "calibrated softmax(logits / temperature), float32 in [0, 1]; "
                         "(batch, 2): index 0 = ct, 1 = mri",
        "label": "string per image: 'ct' or 'mri' (the argmax)",
    }

    def __init__(self, model, temperature: float = 1.0):
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        super().__init__(model, "modality_classifier", core=_inner(self._core, _IMAGES))

    def _core(self, unit4):
        logits = self.hidden.model(unit4, training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32) / self.temperature, axis=-1)
        label = tf.gather(tf.constant(MODALITY_NAMES), tf.argmax(probabilities, axis=-1))
        return {"probabilities": probabilities, "label": label}

    @signature(_image())
    def classify(self, image):
        return self.hidden.core(intensity.percentile_to_unit(_batch_image(image, "image")))

    @signature(_image())
    def classify_unit(self, image):
        return self.hidden.core(_batch_image(image, "image"))

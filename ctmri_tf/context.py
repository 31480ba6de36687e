"""2.5-D slice context: a slice and its neighbours, stacked as channels.

A 2.5-D generator (``model.context_slices`` k = 3 or 5 in the StarGAN and CycleGAN configs)
sees ``k`` neighbouring slices of one volume (same subject, same modality), in slice order,
as its ``k`` input channels, and predicts the centre slice (channel ``k // 2``). Channel ``j``
holds slice ``i + j - k // 2`` of centre slice ``i``. At a volume edge a missing neighbour
repeats the edge slice (replicate padding): with k = 3, slice 0's stack is ``(0, 0, 1)`` and
the last slice ``n - 1``'s is ``(n - 2, n - 1, n - 1)``.

The same rule is used everywhere a stack is built: the tf.data pipelines
(``ctmri_tf.data.unpaired_batches`` / ``paired_batches`` with ``context_slices``, through
:func:`tf_stack_neighbours`), the evaluation (``ctmri_tf.evaluate``) and ``ctmri translate``
(``ctmri_tf.translate``, through :func:`stack_neighbours`). Values are not changed: a stack of
slices in model space [-1, 1] (or HU, or MR signal) stays in those units. ``k = 1`` is the
plain 2-D model: the stack is the slice itself, ``(S, H, W, 1)``.
"""
from __future__ import annotations

import numpy as np

from ctmri_tf.errors import CtmriInputError

CONTEXT_SLICES = (1, 3, 5)
"""The supported numbers of input slices (1: 2-D)."""


def check_context_slices(k, what: str = "model.context_slices") -> int:
    """``k`` as an int when it is one of :data:`CONTEXT_SLICES`.

    Raises:
        CtmriInputError: any other value, naming ``what`` and the valid values.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) not in CONTEXT_SLICES:
        raise CtmriInputError(None, f"{what}={k!r} must be one of "
                                    f"{', '.join(map(str, CONTEXT_SLICES))} (1: 2-D slices; 3 or "
                                    f"5: the slice and its neighbours as channels, 2.5-D)")
    return int(k)


def centre_channel(k: int) -> int:
    """The channel of the centre slice in a stack of ``k`` slices (``k // 2``)."""
    return int(k) // 2


def neighbour_indices(num_slices: int, k: int) -> np.ndarray:
    """``(num_slices, k)`` int: row ``i`` lists the slices stacked for centre slice ``i``, in
    channel order, clipped to ``[0, num_slices - 1]`` (replicate padding)."""
    k = check_context_slices(k, "context_slices")
    if num_slices < 1:
        raise CtmriInputError(None, "a volume needs at least one slice")
    offsets = np.arange(k) - centre_channel(k)
    return np.clip(np.arange(num_slices)[:, None] + offsets[None, :], 0, num_slices - 1)


def stack_neighbours(volume: np.ndarray, k: int) -> np.ndarray:
    """``volume`` ``(S, H, W)`` (slices in order) -> ``(S, H, W, k)``: channel ``j`` of slice
    ``i`` is slice ``clip(i + j - k // 2, 0, S - 1)``. Same dtype and units as ``volume``."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise CtmriInputError(None, f"expected a (slices, rows, cols) volume, got shape "
                                    f"{volume.shape}")
    index = neighbour_indices(volume.shape[0], k)
    if k == 1:
        return volume[..., np.newaxis]      # the 2-D input, exactly as before 2.5-D models
    return np.ascontiguousarray(np.moveaxis(volume[index], 1, -1))


def tf_stack_neighbours(volume, k: int):
    """The TensorFlow :func:`stack_neighbours`: ``(S, H, W)`` or ``(S, H, W, 1)`` tensor ->
    ``(S, H, W, k)`` (graph code, any dtype)."""
    import tensorflow as tf

    k = check_context_slices(k, "context_slices")
    volume = tf.convert_to_tensor(volume)
    if volume.shape.rank == 4:
        volume = volume[..., 0]
    count = tf.shape(volume)[0]
    offsets = tf.range(k) - centre_channel(k)
    index = tf.clip_by_value(tf.range(count)[:, None] + offsets[None, :], 0, count - 1)
    stacked = tf.gather(volume, index)                  # (S, k, H, W)
    return tf.transpose(stacked, [0, 2, 3, 1])


def centre_slice(images):
    """The centre slice ``(B, H, W, 1)`` of stacks ``(B, H, W, k)`` (a tensor; k odd, k = 1:
    itself). Units unchanged."""
    c = centre_channel(images.shape[-1])
    return images[..., c:c + 1]


def flat_context(images, k: int):
    """Single slices ``(B, H, W, 1)`` tensor as a k-slice input, every channel the slice itself
    (the trainers' cycle passes feed a translation this way); ``(B, H, W, k)`` stacks pass
    through. Units unchanged (model space [-1, 1])."""
    import tensorflow as tf

    if k == 1 or images.shape[-1] == k:
        return images
    return tf.repeat(images, k, axis=-1)

"""CycleGAN's history of generated images (Shrivastava et al. 2017; Zhu et al. 2017, Sec. 4).

The discriminators are updated with generated images drawn from a buffer of the last
``pool_size`` fakes rather than only the newest ones, which damps oscillation. As the official
``ImagePool.query`` (pytorch-CycleGAN-and-pix2pix, ``util/image_pool.py``), for each generated
image of the batch, in order:

* while the pool holds fewer than ``pool_size`` images: store the image and return it;
* otherwise, with probability 0.5: return a uniformly chosen stored image and store the new one
  in its place; else return the new image (the pool is unchanged).

The pool's contents and fill count are ``tf.Variable``s of an ``ImagePool`` (a ``tf.Module``),
so they are saved in the training checkpoint and resumed exactly, and ``query`` works inside a
``tf.function``. Randomness comes from a stateless seed (the training loop's per-step seed drawn
from its checkpointed generator), never from a global RNG.

Distribution: there is one pool per discriminator for the whole global batch, not one per
replica. ``query`` called in replica context (inside ``strategy.run``) steps out to cross-replica
context with ``merge_call``, gathers every replica's fakes in replica order (the order of the
global batch that ``experimental_distribute_dataset`` split), runs the sequential query on the
global batch and hands each replica back its own slice. So N replicas behave exactly like one
device given the same global batch and seed, and the pool variables (mirrored, written only in
cross-replica context) hold the same values on every device and in the checkpoint.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def query_history(pool: tf.Tensor, count: tf.Tensor, images: tf.Tensor, use_stored: tf.Tensor,
                  slots: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The official ``ImagePool.query`` as a pure function of its random draws.

    Args:
        pool: stored images ``(pool_size, H, W, C)`` (only the first ``count`` are valid).
        count: int32 scalar, how many images the pool holds (``<= pool_size``).
        images: the new generated images ``(B, H, W, C)``, processed in batch order.
        use_stored: bool ``(B,)``: once the pool is full, whether image ``i`` is exchanged for a
            stored one (the official ``random.uniform(0, 1) > 0.5``).
        slots: int32 ``(B,)`` in ``[0, pool_size)``: which stored image is exchanged.

    Returns:
        ``(returned, new_pool, new_count)``: the images to show the discriminator ``(B, H, W, C)``
        (same units as ``images``), the updated pool and count.
    """
    pool_size = tf.shape(pool)[0]
    images = tf.convert_to_tensor(images, pool.dtype)
    num_images = tf.shape(images)[0]
    returned = tf.TensorArray(pool.dtype, size=num_images, element_shape=images.shape[1:])

    def body(i, pool, count, returned):
        image = images[i]
        filling = count < pool_size
        exchange = tf.logical_and(tf.logical_not(filling), use_stored[i])
        slot = tf.where(filling, count, slots[i])
        stored = pool[slot]
        returned = returned.write(i, tf.where(exchange, stored, image))
        kept = tf.where(tf.logical_or(filling, exchange), image, stored)
        pool = tf.tensor_scatter_nd_update(pool, [[slot]], kept[None])
        return i + 1, pool, count + tf.cast(filling, count.dtype), returned

    _, pool, count, returned = tf.while_loop(
        lambda i, *_: i < num_images, body,
        (tf.constant(0), pool, tf.convert_to_tensor(count, tf.int32), returned))
    return returned.stack(), pool, count


class ImagePool(tf.Module):
    """A history of ``pool_size`` generated images for one discriminator.

    Create it under the training strategy's scope; checkpoint it with the models.

    Args:
        pool_size: images kept (50 in the paper); 0 disables the history (``query`` returns its
            input).
        image_shape: ``(H, W, C)`` of one image (model space [-1, 1]).
        name: module name (also names the variables).

    Attributes:
        images: ``tf.Variable`` ``(max(pool_size, 1), H, W, C)`` float32, the stored images.
        count: ``tf.Variable`` int32 scalar, how many are stored.
    """

    def __init__(self, pool_size: int, image_shape: Sequence[int], name: str | None = None):
        super().__init__(name=name)
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.pool_size = int(pool_size)
        self.images = tf.Variable(tf.zeros([max(self.pool_size, 1), *image_shape], tf.float32),
                                  trainable=False, name="images")
        self.count = tf.Variable(0, dtype=tf.int32, trainable=False, name="count")

    def query(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Images to show the discriminator instead of ``images``; updates the pool.

        Args:
            images: this replica's generated images ``(b, H, W, C)`` in [-1, 1].
            seed: int64 ``(2,)`` stateless seed, the same on every replica.

        Works eagerly, in a ``tf.function``, in replica context (any ``tf.distribute``
        strategy: the query runs once on the global batch) and in cross-replica context.

        Returns:
            ``(b, H, W, C)`` float32: per image either itself or an older generated image.
        """
        images = tf.cast(images, tf.float32)
        if self.pool_size == 0:
            return images
        context = tf.distribute.get_replica_context()
        if context is None:   # cross-replica context: ``images`` is the global batch
            return self._query_global(images, seed)
        return context.merge_call(self._merge, args=(images, seed))

    def _merge(self, strategy: tf.distribute.Strategy, images, seed):
        """Cross-replica part of :meth:`query`: the global batch in, each replica's slice out."""
        everything = strategy.gather(images, axis=0)            # replica order = batch order
        seed = strategy.experimental_local_results(seed)[0]     # identical on every replica
        returned = self._query_global(everything, seed)
        per_replica = tf.shape(everything)[0] // strategy.num_replicas_in_sync

        def replica_slice(context):
            start = context.replica_id_in_sync_group * per_replica
            return returned[start:start + per_replica]

        return strategy.experimental_distribute_values_from_function(replica_slice)

    def _query_global(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        draws = tf.random.stateless_uniform([tf.shape(images)[0], 2], seed=seed)
        use_stored = draws[:, 0] > 0.5
        slots = tf.minimum(tf.cast(draws[:, 1] * self.pool_size, tf.int32), self.pool_size - 1)
        returned, pool, count = query_history(tf.convert_to_tensor(self.images), self.count,
                                              images, use_stored, slots)
        self.images.assign(pool)
        self.count.assign(count)
        return returned

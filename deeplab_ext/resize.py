"""Resizing with TF1 semantics, as DeepLab and the PseudoSeg release resize.

TF2's `tf.image.resize` uses half-pixel centres and gives different numbers; the official
graph resizes features and logits bilinearly with `align_corners=True` and masks/labels by
nearest neighbour with `align_corners=False, half_pixel_centers=False`.
"""

import tensorflow as tf


def resize_bilinear(images, size):
    """Bilinear resize with align_corners=True (DeepLab's `_resize_bilinear`)."""
    dtype = images.dtype
    out = tf.raw_ops.ResizeBilinear(
        images=images, size=size, align_corners=True, half_pixel_centers=False
    )
    return tf.cast(out, dtype)


def resize_nearest(images, size):
    """Nearest-neighbour resize with TF1 defaults (no corner alignment, no half-pixel)."""
    return tf.raw_ops.ResizeNearestNeighbor(
        images=images, size=size, align_corners=False, half_pixel_centers=False
    )


def scale_dimension(dim, scale):
    """DeepLab's size rule: int((dim - 1) * scale + 1), on ints or tensors."""
    if isinstance(dim, tf.Tensor):
        return tf.cast((tf.cast(dim, tf.float32) - 1.0) * scale + 1.0, tf.int32)
    return int((float(dim) - 1.0) * scale + 1.0)

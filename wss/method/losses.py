"""PseudoSeg training losses as pure float32 tensor functions (spec section 4).

  * supervised_ce: DeepLab's softmax CE with logits upsampled to the labels (L_s, L_sa),
    optionally class-weighted (weighted mean over valid pixels; off by default).
  * unlabeled_ce: the consistency loss L_u between pseudo labels and strong-view logits.
  * classification_loss: sigmoid CE of the image-level classifier (L_x).
  * weight_decay: slim-style L2 regulariser over the kernels the model chooses.
  * resize_mask_nearest / resize_logits_bilinear: TF1 resize semantics used by the above.

Callers may run mixed precision; every input is cast to float32 before any arithmetic.
"""

import tensorflow as tf

from deeplab_ext.resize import resize_bilinear, resize_nearest
from wss.data.descriptors import IGNORE_LABEL
from wss.method import fusion


def div_maybe_zero(total, count):
    """total / max(1e-5, count) when count > 0, else 0 (DeepLab's `_div_maybe_zero`)."""
    total = tf.cast(total, tf.float32)
    count = tf.cast(count, tf.float32)
    return tf.cast(count > 0, tf.float32) * (total / tf.maximum(1e-5, count))


def _spatial_size(size):
    """Returns `size` as (h, w); accepts a pair, a shape, or a 1-D int tensor."""
    if isinstance(size, tf.TensorShape):
        size = size.as_list()
    return size


def resize_mask_nearest(mask, size):
    """Nearest-neighbour resize of a mask or label map with TF1 semantics.

    The same op as tf.compat.v1.image.resize_nearest_neighbor(align_corners=False,
    half_pixel_centers=False), as the release uses for the valid mask and the monitors.

    Args:
      mask: [B, H, W] or [B, H, W, 1] of any integer, float or bool dtype.
      size: target (h, w).

    Returns:
      The resized mask with the input's rank and dtype.
    """
    mask = tf.convert_to_tensor(mask)
    dtype = mask.dtype
    squeeze = mask.shape.rank == 3
    if squeeze:
        mask = mask[..., tf.newaxis]
    if dtype == tf.bool:
        mask = tf.cast(mask, tf.uint8)
    out = resize_nearest(mask, _spatial_size(size))
    out = tf.cast(out, dtype)
    return out[..., 0] if squeeze else out


def resize_logits_bilinear(logits, size):
    """float32 bilinear resize with align_corners=True (DeepLab's logit upsampling)."""
    return resize_bilinear(tf.cast(logits, tf.float32), _spatial_size(size))


def _squeeze_channel(x):
    """[B, H, W, 1] -> [B, H, W]; rank-3 inputs are returned unchanged."""
    if x.shape.rank == 4:
        return tf.squeeze(x, axis=-1)
    return x


def supervised_ce(
    logits, labels, ignore_label=IGNORE_LABEL, upsample_logits=True, class_weights=None
):
    """Softmax cross-entropy averaged over non-ignored pixels (L_s and L_sa).

    Mirrors DeepLab's add_softmax_cross_entropy_loss_for_each_scale with
    upsample_logits=True, top_k_percent_pixels=1 and unit label weights: the logits are
    resized bilinearly (align_corners=True) to the label size, and the loss is
    sum(per-pixel CE over pixels whose label != ignore) / number of such pixels, or 0
    when there are none.

    With `class_weights` (off by default, as in the paper) every valid pixel's CE is
    multiplied by class_weights[label] and the sum is divided by the SUM OF THE WEIGHTS
    of the valid pixels (a weighted mean; 0 when that sum is 0):
        sum_p w[y_p] * CE_p / sum_p w[y_p]   over pixels p with y_p != ignore.
    All-ones weights give exactly the unweighted loss, and scaling every weight by the
    same factor leaves the loss unchanged. (DeepLab's own weighted loss divides by the
    NUMBER of non-zero-weight pixels instead; only the relative weights matter here.)

    Args:
      logits: [B, h, w, C] logits (decoder or SGC resolution).
      labels: [B, H, W] or [B, H, W, 1] integer labels in [0, C) or `ignore_label`.
      ignore_label: label value excluded from the loss and the count.
      upsample_logits: set False only when the logits already have the label size.
      class_weights: None, or C non-negative per-class weights (list, array or tensor),
        e.g. wss.data.class_stats.inverse_frequency_weights.

    Returns:
      float32 scalar.
    """
    labels = tf.cast(_squeeze_channel(tf.convert_to_tensor(labels)), tf.int32)
    logits = tf.cast(logits, tf.float32)
    if upsample_logits:
        logits = resize_logits_bilinear(logits, tf.shape(labels)[1:3])
    keep = tf.not_equal(labels, ignore_label)
    # Sparse CE rejects out-of-range ids on CPU; ignored pixels get class 0 and weight 0.
    safe_labels = tf.where(keep, labels, tf.zeros_like(labels))
    pixel_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    keep = tf.cast(keep, tf.float32)
    if class_weights is not None:
        weights = tf.reshape(tf.cast(tf.convert_to_tensor(class_weights), tf.float32), [-1])
        num_classes = logits.shape[-1]
        if (
            weights.shape[0] is not None
            and num_classes is not None
            and weights.shape[0] != num_classes
        ):
            raise ValueError(
                f"class_weights has {weights.shape[0]} entries for {num_classes} classes"
            )
        keep = keep * tf.gather(weights, safe_labels)
    return div_maybe_zero(tf.reduce_sum(pixel_ce * keep), tf.reduce_sum(keep))


def unlabeled_ce(
    pseudo_probs, strong_logits, valid, confidence_threshold=0.0, soft=True, weight=1.0
):
    """Consistency loss L_u between pseudo labels P and the strong view's decoder logits.

    Per-pixel CE (soft: -sum_c P_c log softmax(z)_c; hard: sparse CE against argmax_c P)
    multiplied by valid * [max_c P >= t] (the score mask only when t > 0), summed, and
    divided by sum(valid) -- the divisor deliberately excludes the score mask, as in the
    release -- then multiplied by `weight`.

    Args:
      pseudo_probs: [B, h, w, C] pseudo-label probabilities (from
        fusion.fuse; gradient is stopped again here).
      strong_logits: [B, h, w, C] decoder logits of the strong view.
      valid: [B, h, w] or [B, h, w, 1] valid-pixel mask at decoder resolution (use
        resize_mask_nearest on the full-resolution mask first).
      confidence_threshold: t; pixels with max_c P < t are zeroed in the sum if t > 0.
      soft: soft-label CE or hard (argmax) CE.
      weight: unlabeled loss weight.

    Returns:
      float32 scalar.
    """
    probs = tf.stop_gradient(tf.cast(pseudo_probs, tf.float32))
    logits = tf.cast(strong_logits, tf.float32)
    valid = tf.cast(_squeeze_channel(tf.convert_to_tensor(valid)), tf.float32)
    if soft:
        pixel_ce = tf.nn.softmax_cross_entropy_with_logits(labels=probs, logits=logits)
    else:
        hard = tf.argmax(probs, axis=-1, output_type=tf.int32)
        pixel_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=hard, logits=logits)
    mask = valid
    if confidence_threshold > 0:
        mask = mask * fusion.confidence_mask(probs, confidence_threshold)
    loss = div_maybe_zero(tf.reduce_sum(pixel_ce * mask), tf.reduce_sum(valid))
    return loss * weight


def classification_loss(cls_logits, image_labels):
    """Sigmoid cross-entropy of the image-level classifier, mean over classes and batch (L_x).

    Args:
      cls_logits: [B, K] (or [B, 1, 1, K]) logits over the K = C - 1 foreground classes.
      image_labels: [B, K] multi-hot labels.
    """
    labels = tf.cast(image_labels, tf.float32)
    logits = tf.reshape(tf.cast(cls_logits, tf.float32), tf.shape(labels))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def weight_decay(kernels, coeff=4e-5):
    """coeff * sum_w sum(w^2) / 2 over `kernels` (slim.l2_regularizer semantics).

    Which variables are regularised is the model's decision; an empty list gives 0.
    """
    terms = [tf.nn.l2_loss(tf.cast(w, tf.float32)) for w in kernels]
    if not terms:
        return tf.constant(0.0, tf.float32)
    return tf.cast(coeff, tf.float32) * tf.add_n(terms)

"""Grad-CAM of the classification head, exact and in one shot (no per-class backward loop).

The release loops `tf.gradients` over the C-1 foreground classes. For a head that sees the
last block A only through its spatial mean g = mean_ij A_ij (PseudoSeg's head: global pool,
dropout, 1x1 conv), d logit_c / d A_ijk = (d logit_c / d g_k) / (H W) at every position, so
the Grad-CAM weight mean_ij(d logit_c / d A_ijk) equals (d logit_c / d g_k) / (H W) exactly.
We take that jacobian with one `GradientTape.batch_jacobian` on g ([B, C-1, K]) instead of
C-1 backward passes through A. `tests/test_gradcam.py` checks it against the loop.
"""

import tensorflow as tf

from wss.method.losses import div_maybe_zero


def grad_cam(features, classify_pooled, image_labels=None, dropout=False):
    """Grad-CAM maps of every foreground class, masked and max-normalised.

    Args:
      features: [B, H, W, K] activation of the last backbone block.
      classify_pooled: function [B, 1, 1, K] pooled features -> [B, C-1] logits
        (e.g. `DeepLabV3Plus.classify_pooled` with the dropout switch bound).
      image_labels: [B, C-1] multi-hot labels that mask the maps; None uses the
        classifier's own prediction sigmoid(logit) >= 0.5 as a constant.
      dropout: passed to `classify_pooled` (the release keeps dropout on in training).
    Returns:
      (cam [B, H, W, C-1] in [0, 1], stop-gradient; logits [B, C-1]; labels used [B, C-1]).
      The logits stay differentiable for the classification loss.
    """
    features = tf.cast(features, tf.float32)
    pooled = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
    with tf.GradientTape() as tape:
        tape.watch(pooled)
        logits = tf.cast(classify_pooled(pooled, dropout), tf.float32)
    jac = tape.batch_jacobian(logits, pooled)  # [B, C-1, 1, 1, K]
    area = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], tf.float32)
    weights = tf.stop_gradient(tf.squeeze(jac, axis=[2, 3]) / area)  # [B, C-1, K]
    cam = tf.nn.relu(tf.einsum("bhwk,bck->bhwc", tf.stop_gradient(features), weights))
    if image_labels is None:
        labels = tf.cast(tf.sigmoid(logits) >= 0.5, tf.float32)
    else:
        labels = tf.cast(image_labels, tf.float32)
    labels = tf.stop_gradient(labels)
    cam = cam * labels[:, tf.newaxis, tf.newaxis, :]
    cam = div_maybe_zero(cam, tf.reduce_max(cam, axis=[1, 2], keepdims=True))
    return tf.stop_gradient(cam), logits, labels

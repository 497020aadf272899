"""DeepLab training/eval preprocessing and PseudoSeg's strong view, as pure tf ops.

All randomness is stateless and driven by one int64 seed per element, so a seeded
pipeline is reproducible regardless of parallelism, and the weak and strong views can
share their geometry exactly. Images are float32 in [0, 255].
"""

import dataclasses
from typing import Dict, Optional

import tensorflow as tf

from wss.data.descriptors import IGNORE_LABEL

PAD_PIXEL = 127.5

# Sub-seed indices: each random decision uses its own stream of the element's seed.
_SCALE, _CROP_Y, _CROP_X, _FLIP, _JITTER_ORDER, _CUTOUT_Y, _CUTOUT_X = range(7)
_JITTER_OP_BASE = 100


@dataclasses.dataclass
class AugmentConfig:
    """DeepLab training geometry (the weak view) but the crop size, which is
    Experiment.crop_size. Gin binds it as `AugmentConfig.*` into a program's
    wss.experiment.RunConfig.

    Attributes:
      min_scale, max_scale, scale_step: the scale is drawn uniformly from
        {min, min+step, ..., max}; step 0 draws from the interval [min, max).
      flip_prob: probability of a left-right flip.
      pad_value: image value of padding.
      ignore_label: label value of padding (and of cut-out pixels).
    """

    min_scale: float = 0.5
    max_scale: float = 2.0
    scale_step: float = 0.25
    flip_prob: float = 0.5
    pad_value: float = PAD_PIXEL
    ignore_label: int = IGNORE_LABEL


@dataclasses.dataclass
class StrongConfig:
    """The strong view of an extra-set image (same geometry as the weak view). Gin binds
    it as `StrongConfig.*` into a program's wss.experiment.RunConfig.

    Attributes:
      jitter_strength: scalar multiplying the release's jitter ranges (brightness 0.5,
        contrast 0.5, saturation 0.5, hue 0.25); 0 disables colour jitter.
      jitter_prob: probability of applying colour jitter.
      cutout_half_size: half side of the CutOut square; 0 disables CutOut.
      shared_valid: True (release): one valid mask for both views, zero on padding and
        inside the cut-out square. False: also output 'weak_valid', padding only.
      image_labels_before_cutout: derive image-level labels from the cropped label before
        CutOut blanks it (the release derives them after).
    """

    jitter_strength: float = 1.0
    jitter_prob: float = 1.0
    cutout_half_size: int = 50
    shared_valid: bool = True
    image_labels_before_cutout: bool = False


RELEASE_CROP = 513  # the crop the release's CutOut size (half size 50) was chosen for
MAX_CUTOUT_SHARE = 0.25


def cutout_advice(crop_size: int, strong: "StrongConfig") -> Optional[str]:
    """A warning when the CutOut square can cover more than a quarter of the crop.

    Cut-out pixels are excluded from L_u and from the SGC attention, so a square sized for
    the release's 513 crop (up to 100x100) leaves almost nothing to learn from at a small
    crop (at 65 it covers the whole crop); its half size should scale with the crop.
    """
    side = 2 * strong.cutout_half_size
    if side * side <= MAX_CUTOUT_SHARE * crop_size * crop_size:
        return None
    scaled = max(1, round(50 * crop_size / RELEASE_CROP))
    return (
        f"the CutOut square (up to {side}x{side} px, StrongConfig.cutout_half_size = "
        f"{strong.cutout_half_size}) can cover over {MAX_CUTOUT_SHARE:.0%} of the "
        f"{crop_size} px crop, and cut-out pixels are excluded from the unlabeled loss; "
        f"the release used 50 at crop {RELEASE_CROP}. Consider "
        f"StrongConfig.cutout_half_size = {scaled}"
    )


def _sub(seed, k):
    """A stateless-op seed pair for sub-stream k of an element seed."""
    return tf.stack([tf.cast(seed, tf.int64), tf.constant(k, tf.int64)])


def scale_values(min_scale: float, max_scale: float, step: float):
    """The discrete scale set DeepLab draws from, as a Python list."""
    n = int((max_scale - min_scale) / step + 1)
    return [min_scale + i * (max_scale - min_scale) / max(n - 1, 1) for i in range(n)]


def random_scale(seed, min_scale: float, max_scale: float, step: float):
    """Draws the random scale factor (float32 scalar) for one element."""
    if min_scale < 0 or min_scale > max_scale:
        raise ValueError(f"Bad scale range [{min_scale}, {max_scale}]")
    if min_scale == max_scale:
        return tf.constant(min_scale, tf.float32)
    if step == 0:
        return tf.random.stateless_uniform([], _sub(seed, _SCALE), min_scale, max_scale)
    values = tf.constant(scale_values(min_scale, max_scale, step), tf.float32)
    i = tf.random.stateless_uniform([], _sub(seed, _SCALE), 0, values.shape[0], tf.int32)
    return values[i]


def resize_by_scale(image, label, scale):
    """Scales an image (bilinear, antialiased) and label (nearest, TF1 align_corners).

    New size = floor(size * scale), as the release computes it.
    """
    hw = tf.shape(image)[:2]
    new_hw = tf.cast(tf.cast(hw, tf.float32) * scale, tf.int32)
    image = tf.image.resize(image, new_hw, method="bilinear", antialias=True)
    # The op behind tf.compat.v1.image.resize_nearest_neighbor(align_corners=True).
    label = tf.raw_ops.ResizeNearestNeighbor(
        images=label[tf.newaxis], size=new_hw, align_corners=True, half_pixel_centers=False
    )[0]
    return image, label


def pad_bottom_right(x, height, width, value):
    """Pads x [H,W,C] at the bottom/right to at least [height, width] with `value`."""
    hw = tf.shape(x)[:2]
    pad_h = tf.maximum(height - hw[0], 0)
    pad_w = tf.maximum(width - hw[1], 0)
    return tf.pad(x, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=value)


def image_labels_from_label(label, num_classes: int):
    """Multi-hot float32 [C-1] of foreground classes present in `label` (0/255 ignored)."""
    flat = tf.reshape(label, [-1])
    flat = tf.where(flat < num_classes, flat, tf.zeros_like(flat))
    counts = tf.math.bincount(flat, minlength=num_classes, maxlength=num_classes)
    return tf.cast(counts[1:] > 0, tf.float32)


def image_labels_from_ids(class_ids, num_classes: int):
    """Multi-hot float32 [C-1] from a list of foreground class ids (1..C-1)."""
    ids = tf.cast(class_ids, tf.int32) - 1
    hot = tf.reduce_max(tf.one_hot(ids, num_classes - 1), axis=0)
    return tf.where(tf.size(ids) > 0, hot, tf.zeros([num_classes - 1]))


def color_jitter(image01, seed, strength: float = 1.0):
    """Release colour jitter on a [0,1] image: brightness, contrast, saturation, hue with
    ranges 0.5/0.5/0.5/0.25 times `strength`, in random order, clipped after each."""
    b, c, s, h = 0.5 * strength, 0.5 * strength, 0.5 * strength, min(0.25 * strength, 0.5)

    def op(j, x):
        sd = _sub(seed, _JITTER_OP_BASE + j)
        if j == 0:
            return tf.image.stateless_random_brightness(x, b, sd)
        if j == 1:
            return tf.image.stateless_random_contrast(x, max(1 - c, 0.0), 1 + c, sd)
        if j == 2:
            return tf.image.stateless_random_saturation(x, max(1 - s, 0.0), 1 + s, sd)
        return tf.image.stateless_random_hue(x, h, sd)

    order = tf.argsort(tf.random.stateless_uniform([4], _sub(seed, _JITTER_ORDER)))
    for step in range(4):
        image01 = tf.switch_case(order[step], [lambda j=j: op(j, image01) for j in range(4)])
        image01 = tf.clip_by_value(image01, 0.0, 1.0)
    return image01


def cutout_mask(seed, height: int, width: int, half_size: int):
    """Bool [H,W,1], True inside one square of half side `half_size` whose centre is
    uniform over the crop (the square is clipped at the borders)."""
    cy = tf.random.stateless_uniform([], _sub(seed, _CUTOUT_Y), 0, height, tf.int32)
    cx = tf.random.stateless_uniform([], _sub(seed, _CUTOUT_X), 0, width, tf.int32)
    ys = tf.range(height)[:, tf.newaxis]
    xs = tf.range(width)[tf.newaxis, :]
    inside = (
        (ys >= cy - half_size)
        & (ys < cy + half_size)
        & (xs >= cx - half_size)
        & (xs < cx + half_size)
    )
    return inside[..., tf.newaxis]


def _crop_and_flip_params(seed, padded_hw, crop, flip_prob):
    oy = tf.random.stateless_uniform([], _sub(seed, _CROP_Y), 0, padded_hw[0] - crop + 1, tf.int32)
    ox = tf.random.stateless_uniform([], _sub(seed, _CROP_X), 0, padded_hw[1] - crop + 1, tf.int32)
    flip = tf.random.stateless_uniform([], _sub(seed, _FLIP)) < flip_prob
    return oy, ox, flip


def _crop(x, oy, ox, crop):
    return tf.slice(x, tf.stack([oy, ox, 0]), tf.stack([crop, crop, tf.shape(x)[2]]))


def _flip(x, flip):
    return tf.cond(flip, lambda: tf.reverse(x, [1]), lambda: x)


def train_views(
    image,
    label,
    seed,
    num_classes: int,
    crop_size: int,
    config: AugmentConfig,
    strong: Optional[StrongConfig] = None,
) -> Dict[str, tf.Tensor]:
    """DeepLab training preprocessing of one element, plus the strong view if asked.

    Args:
      image: uint8 or float [H,W,3] in [0,255].
      label: int32 [H,W,1], 255 = ignore.
      seed: int64 scalar element seed.
      num_classes: class count (for image-level labels).
      crop_size: side of the square crop.
      config: the rest of the geometry.
      strong: if given, also build 'strong' sharing scale, crop and flip.

    Returns:
      'image' float32 [crop,crop,3], 'label' int32 [crop,crop,1], 'valid' float32
      [crop,crop,1], 'image_labels' float32 [C-1]; with `strong`, also 'strong' and, when
      strong.shared_valid is False, 'weak_valid'.
    """
    crop = crop_size
    image = tf.cast(image, tf.float32)
    label = tf.cast(label, tf.int32)
    scale = random_scale(seed, config.min_scale, config.max_scale, config.scale_step)
    image, label = resize_by_scale(image, label, scale)
    scaled_hw = tf.shape(image)[:2]

    strong_image = None
    if strong is not None:
        strong_image = image
        if strong.jitter_strength > 0 and strong.jitter_prob > 0:
            jittered = color_jitter(image / 255.0, seed, strong.jitter_strength) * 255.0
            apply = tf.random.stateless_uniform([], _sub(seed, _JITTER_ORDER + 50)) < (
                strong.jitter_prob
            )
            strong_image = tf.where(apply, jittered, image)

    image = pad_bottom_right(image, crop, crop, config.pad_value)
    label = pad_bottom_right(label, crop, crop, config.ignore_label)
    oy, ox, flip = _crop_and_flip_params(seed, tf.shape(image)[:2], crop, config.flip_prob)
    image = _crop(image, oy, ox, crop)
    label = _crop(label, oy, ox, crop)
    # Padding only exists when the scaled image is smaller than the crop, in which case
    # the crop offset along that side is 0, so crop coordinates equal image coordinates.
    ys = tf.range(crop)[:, tf.newaxis] + oy
    xs = tf.range(crop)[tf.newaxis, :] + ox
    valid = tf.cast((ys < scaled_hw[0]) & (xs < scaled_hw[1]), tf.float32)[..., tf.newaxis]

    out = {}
    labels_for_classes = label
    if strong is not None:
        s = pad_bottom_right(strong_image, crop, crop, config.pad_value)
        s = _crop(s, oy, ox, crop)
        weak_valid = valid
        if strong.cutout_half_size > 0:
            inside = cutout_mask(seed, crop, crop, strong.cutout_half_size)
            s = tf.where(inside, tf.constant(config.pad_value, tf.float32), s)
            if not strong.image_labels_before_cutout:
                labels_for_classes = None
            label = tf.where(inside, config.ignore_label, label)
            valid = tf.where(inside, 0.0, valid)
        out["strong"] = tf.ensure_shape(_flip(s, flip), [crop, crop, 3])
        if not strong.shared_valid:
            out["weak_valid"] = tf.ensure_shape(_flip(weak_valid, flip), [crop, crop, 1])
    if labels_for_classes is None:
        labels_for_classes = label
    out["image"] = tf.ensure_shape(_flip(image, flip), [crop, crop, 3])
    out["label"] = tf.ensure_shape(_flip(label, flip), [crop, crop, 1])
    out["valid"] = tf.ensure_shape(_flip(valid, flip), [crop, crop, 1])
    out["image_labels"] = image_labels_from_label(labels_for_classes, num_classes)
    return out


def eval_view(
    image, label, crop_size: int, pad_value: float = PAD_PIXEL, ignore_label: int = IGNORE_LABEL
) -> Dict[str, tf.Tensor]:
    """Pads an eval image/label at the bottom/right to crop_size (no scaling).

    Returns 'image', 'label', 'valid', 'height', 'width' (original size, int32).
    The caller must make sure the image fits (see pipeline's size check).
    """
    hw = tf.shape(image)[:2]
    image = pad_bottom_right(tf.cast(image, tf.float32), crop_size, crop_size, pad_value)
    label = pad_bottom_right(tf.cast(label, tf.int32), crop_size, crop_size, ignore_label)
    ys = tf.range(crop_size)[:, tf.newaxis]
    xs = tf.range(crop_size)[tf.newaxis, :]
    valid = tf.cast((ys < hw[0]) & (xs < hw[1]), tf.float32)[..., tf.newaxis]
    return {
        "image": tf.ensure_shape(image, [crop_size, crop_size, 3]),
        "label": tf.ensure_shape(label, [crop_size, crop_size, 1]),
        "valid": valid,
        "height": hw[0],
        "width": hw[1],
    }

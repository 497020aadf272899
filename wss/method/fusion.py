"""Calibrated fusion of decoder and SGC predictions into PseudoSeg pseudo labels.

Pure tensor functions (no Keras layers, no gin) implementing spec section 3.4: the
optional batch-wide RMS logit norm, the gamma-weighted average of the two softmaxes,
temperature sharpening and the stop-gradient. Everything is computed in float32 whatever
the callers' compute dtype.

Each pseudo-label source (MethodOptions.source) is a rule in one registry, RULES:
`fuse(p, m, options)` runs the rule named `options.source`, then the sharpening and the
stop-gradient every source shares. Adding a source is one function decorated with
`@register_fusion(name)` (and its test); options validation, the model's weak branch and
the calibration's variants read the registry.

Release semantics (googleinterns/wss, train_wss.py) are the defaults:
  * source='decoder': P = softmax(p), never normalised.
  * source='sgc':     P = softmax(m), never normalised.
  * source='fusion':  s = 1 / sqrt(mean(v^2) + 1e-8) with v = [p; m] stacked over the
                      batch (one scalar per batch, s = 1 if the norm is off), and
                      P = gamma * softmax(s p) + (1 - gamma) * softmax(s m).
  * sharpening only for soft labels with T != 1: P^(1/T) / sum_c P^(1/T).
"""

import dataclasses
from typing import Any, Callable, Dict, Mapping

import tensorflow as tf

RMS_EPSILON = 1e-8
NORM_FORMS = ("release", "paper", "pixel")


def logit_scale(decoder_logits, sgc_logits, form="release"):
    """Returns the factor s that the fused logits are multiplied by before the softmax.

    Args:
      decoder_logits: [B, h, w, C] decoder logits p of the weak view.
      sgc_logits: [B, h, w, C] SGC logits m, already resized to the decoder size.
      form: 'release' -> scalar rsqrt(mean(v^2) + 1e-8) over the whole batch, v being p
        and m stacked along the batch axis (what the release runs);
        'paper' -> scalar rsqrt(sum(v^2) + 1e-8) over the same v (a literal "sum" reading
        of eq. 4; with ~1e6 entries per batch it flattens P to almost uniform);
        'pixel' -> [B, h, w, 1] rsqrt(sum_c(p_c^2 + m_c^2) + 1e-8), one factor per pixel
        (a per-pixel reading of the paper's Norm(p, m) over the C classes; not in the
        release, offered for ablations).

    Returns:
      float32 scalar for 'release' and 'paper', float32 [B, h, w, 1] for 'pixel'.
    """
    p = tf.cast(decoder_logits, tf.float32)
    m = tf.cast(sgc_logits, tf.float32)
    if form == "pixel":
        sq = tf.reduce_sum(tf.square(p) + tf.square(m), axis=-1, keepdims=True)
        return tf.math.rsqrt(sq + RMS_EPSILON)
    # Sums instead of an explicit concat: same value, and no batch-sized copy.
    total = tf.reduce_sum(tf.square(p)) + tf.reduce_sum(tf.square(m))
    if form == "release":
        count = tf.cast(tf.size(p), tf.float32) + tf.cast(tf.size(m), tf.float32)
        return tf.math.rsqrt(total / count + RMS_EPSILON)
    if form == "paper":
        return tf.math.rsqrt(total + RMS_EPSILON)
    raise ValueError(f"Unknown norm form {form!r}; expected one of {NORM_FORMS}.")


def sharpen(probs, temperature):
    """Temperature sharpening over the last axis: P^(1/T) / sum_c P^(1/T).

    T = 1 returns the probabilities unchanged (cast to float32).
    """
    probs = tf.cast(probs, tf.float32)
    if temperature == 1.0:
        return probs
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    # Dividing by the per-pixel max first is mathematically a no-op but keeps the largest
    # term at 1, so small T cannot underflow every class to 0 and give 0/0.
    peak = tf.reduce_max(probs, axis=-1, keepdims=True)
    powered = tf.pow(probs / tf.maximum(peak, 1e-30), 1.0 / temperature)
    return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class FusionRule:
    """One registered pseudo-label source (see register_fusion)."""

    name: str
    probs: Callable  # (decoder_logits, sgc_logits, options) -> float32 [B, h, w, C]
    needs_sgc: bool
    # Settings of the rule the calibration compares: {variant suffix: option changes}.
    variants: Mapping[str, Mapping[str, Any]]


RULES: Dict[str, FusionRule] = {}


def register_fusion(name, needs_sgc=True, variants=None):
    """Decorator registering `rule(decoder_logits, sgc_logits, options)` as the
    pseudo-label source `name` (MethodOptions.source).

    The rule returns float32 probabilities [B, h, w, C] before sharpening and the stop-
    gradient, which `fuse` applies to every rule; it reads what it needs from the options
    (a MethodOptions). `needs_sgc` False: the SGC (and Grad-CAM, L_sa) need not run for
    it, and `sgc_logits` may be None. `variants`: {suffix: option changes} naming the
    settings wss.evaluation.reliability calibrates (default: the rule as configured).
    """

    def register(rule):
        if name in RULES:
            raise ValueError(f"pseudo-label source {name!r} is already registered")
        RULES[name] = FusionRule(name, rule, needs_sgc, dict(variants or {"": {}}))
        return rule

    return register


def get_rule(source):
    """The FusionRule registered as `source`; ValueError naming the known ones."""
    if source not in RULES:
        raise ValueError(f"Unknown pseudo-label source {source!r}; expected one of {tuple(RULES)}.")
    return RULES[source]


@register_fusion("decoder", needs_sgc=False)
def decoder_only(decoder_logits, sgc_logits, options):
    """P = softmax(p), never normalised (the release's 'decoder' source)."""
    return tf.nn.softmax(tf.cast(decoder_logits, tf.float32), axis=-1)


@register_fusion("sgc")
def sgc_only(decoder_logits, sgc_logits, options):
    """P = softmax(m), never normalised (the release's 'sgc' source)."""
    return tf.nn.softmax(tf.cast(sgc_logits, tf.float32), axis=-1)


@register_fusion("fusion", variants={"norm": {"logit_norm": True}, "nonorm": {"logit_norm": False}})
def calibrated_fusion(decoder_logits, sgc_logits, options):
    """Calibrated fusion gamma * softmax(s p) + (1 - gamma) * softmax(s m) (spec 3.4).

    s = logit_scale(p, m, options.norm_form) if options.logit_norm else 1.
    """
    p = tf.cast(decoder_logits, tf.float32)
    m = tf.cast(sgc_logits, tf.float32)
    if options.logit_norm:
        s = logit_scale(p, m, form=options.norm_form)
        p = p * s
        m = m * s
    gamma = options.gamma
    return gamma * tf.nn.softmax(p, axis=-1) + (1.0 - gamma) * tf.nn.softmax(m, axis=-1)


def fuse(decoder_logits, sgc_logits, options):
    """Pseudo-label distribution P for the weak view (spec section 3.4), gradient-stopped:
    the rule registered as `options.source`, then sharpening.

    Args:
      decoder_logits: [B, h, w, C] decoder logits p of the weak view.
      sgc_logits: [B, h, w, C] SGC logits m, already upsampled by the caller to the
        decoder size (bilinear, align_corners=True); None for a rule without the SGC.
      options: a MethodOptions: `source` picks the rule, which reads its own fields
        (gamma, logit_norm, norm_form for 'fusion'); sharpening with `temperature` applies
        only to soft labels (`soft_labels`; hard labels take the argmax of the
        unsharpened P, which sharpening leaves unchanged anyway).

    Returns:
      float32 [B, h, w, C] probabilities with stop_gradient applied.
    """
    rule = get_rule(options.source)
    if rule.needs_sgc:
        if sgc_logits is None:
            raise ValueError(f"source={rule.name!r} needs sgc_logits.")
        p_shape = tf.TensorShape(decoder_logits.shape)
        m_shape = tf.TensorShape(sgc_logits.shape)
        if (
            p_shape.rank == 4
            and m_shape.rank == 4
            and not p_shape[1:].is_compatible_with(m_shape[1:])
        ):
            raise ValueError(
                f"sgc_logits {m_shape} must be resized to the decoder logits "
                f"{p_shape} before the fusion."
            )
    probs = rule.probs(decoder_logits, sgc_logits, options)
    if options.soft_labels and options.temperature != 1.0:
        probs = sharpen(probs, options.temperature)
    return tf.stop_gradient(probs)


def confidence_mask(probs, threshold):
    """float32 [B, h, w] mask of pixels whose max_c P is >= threshold (all ones if <= 0)."""
    probs = tf.cast(probs, tf.float32)
    confidence = tf.reduce_max(probs, axis=-1)
    if threshold <= 0:
        return tf.ones_like(confidence)
    return tf.cast(confidence >= threshold, tf.float32)

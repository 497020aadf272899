"""Calibration (ECE, Guo et al. 2017) of a model's predictions and of its pseudo labels.

On a split with ground truth, every batch runs the model's own weak branch once
(`PseudoSegModel.pseudo_labels`, spec section 3): an inference-mode backbone pass giving
the model's own logits, the Grad-CAM and the SGC logits (upsampled to the decoder size),
plus the decoder logits p of the pseudo-label pass (training-mode batch norm by default,
as in training). Each variant is then the model's fusion (`PseudoSegModel.fuse`) with the
model's MethodOptions changed to one registered fusion rule (wss.method.fusion.RULES) and
one of the settings the rule registers, soft, unsharpened and sharpened with the model's T:

  model                     softmax of the inference-mode decoder logits
  decoder[_sharpened]       softmax(p) (then sharpened with the model's T)
  sgc[_sharpened]           softmax(m)
  fusion_norm[_sharpened]   calibrated fusion with the RMS logit norm
  fusion_nonorm[_sharpened] the same fusion without the norm
  <rule>[_sharpened]        any other registered rule

Labels are resized to the decoder size by TF1 nearest neighbour; ECE uses 15 bins over
valid pixels. The batch-norm moving statistics the training-mode passes move are put back
after every batch (`PseudoSegModel.frozen_statistics`), so the model is left as it was.
The command line is wss.calibration.
"""

import dataclasses
import json

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from deeplab_ext.resize import resize_nearest
from wss.data.descriptors import IGNORE_LABEL
from wss.evaluation import metrics
from wss.method import fusion

MODEL_VARIANT = "model"  # the model's own prediction, not a pseudo label


def pseudo_label_variants():
    """{variant name: (fusion rule name, MethodOptions changes)} of every registered
    fusion rule and setting (wss.method.fusion.RULES), each unsharpened and sharpened."""
    out = {}
    for rule in fusion.RULES.values():
        for suffix, changes in rule.variants.items():
            name = f"{rule.name}_{suffix}" if suffix else rule.name
            out[name] = (rule.name, dict(changes, temperature=1.0))
            out[f"{name}_sharpened"] = (rule.name, dict(changes))
    return out


# The variants of the rules registered at import (the default of calibrate).
VARIANTS = (MODEL_VARIANT,) + tuple(pseudo_label_variants())


def image_labels_from_mask(labels, num_classes):
    """Multi-hot [B, C-1] of the foreground classes present in labels [B, H, W(, 1)]."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [tf.shape(labels)[0], -1])
    hot = tf.reduce_max(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=1)
    return hot[:, 1:]  # 255 one-hots to zeros; background dropped


def variant_options(options, variant):
    """The MethodOptions whose pseudo labels are `variant` (not 'model'): `options` with
    the variant's rule and settings, soft labels, sharpened with the model's T only for
    '*_sharpened'."""
    source, changes = pseudo_label_variants()[variant]
    return dataclasses.replace(options, source=source, soft_labels=True, **changes)


def source_probs(
    model, images, valid, image_labels=None, variants=VARIANTS, decoder_bn_training=True
):
    """{variant: probabilities [B, h, w, C]} of one batch from one run of the weak branch.

    Run it under `model.frozen_statistics()`: the training-mode pass moves the batch-norm
    moving statistics.
    """
    branch = model.pseudo_labels(
        images,
        valid,
        image_labels,
        dropout=False,
        with_sgc=True,
        inference_logits=True,
        weak_training=decoder_bn_training,
    )
    out = {}
    for name in variants:
        if name == MODEL_VARIANT:
            out[name] = tf.nn.softmax(tf.cast(branch["inference_logits"], tf.float32))
        else:
            out[name] = model.fuse(branch, variant_options(model.options, name))
    return out


def calibrate(
    model,
    dataset,
    num_classes,
    variants=VARIANTS,
    use_image_labels=None,
    decoder_bn_training=True,
    num_bins=metrics.NUM_ECE_BINS,
    max_batches=None,
    progress_every=0,
    log=print,
):
    """ECE of each variant over a split with ground truth.

    use_image_labels: mask the Grad-CAM with ground-truth image labels (from the masks);
      default: only when the model's method mode is 'weakly'.
    Returns {variant: {'ece', 'accuracy', 'confidence', 'miou', 'per_class_iou',
    'num_pixels', 'accumulator'}}: 'miou' is the mean IoU of the variant's arg-max labels,
    the quality of hard pseudo labels from that source.
    """
    if use_image_labels is None:
        use_image_labels = model.options.mode == "weakly"
    variants = tuple(variants)
    known = (MODEL_VARIANT,) + tuple(pseudo_label_variants())
    unknown = set(variants) - set(known)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {known}")

    @tf.function(reduce_retracing=True)
    def step(images, labels, valid):
        image_labels = image_labels_from_mask(labels, num_classes) if use_image_labels else None
        probs = source_probs(model, images, valid, image_labels, variants, decoder_bn_training)
        size = tf.shape(next(iter(probs.values())))[1:3]
        small = resize_nearest(tf.cast(labels, tf.int32), size)[..., 0]
        out = {}
        for name, pr in probs.items():
            label = tf.argmax(pr, axis=-1, output_type=tf.int32)
            out[name] = (
                tf.reduce_max(pr, axis=-1),
                label == small,
                metrics.confusion_matrix_tf(small, label, num_classes),
            )
        return out, small != IGNORE_LABEL

    accumulators = {name: metrics.CalibrationAccumulator(num_bins) for name in variants}
    confusions = {name: np.zeros((num_classes, num_classes), np.int64) for name in variants}
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        with model.frozen_statistics():  # every batch sees the same statistics
            per_variant, keep = step(batch["image"], batch["label"], batch["valid"])
        keep = keep.numpy()
        for name, (confidence, correct, confusion) in per_variant.items():
            accumulators[name].update_from_confidence(confidence.numpy(), correct.numpy(), keep)
            confusions[name] = confusions[name] + confusion.numpy()
        if progress_every and (index + 1) % progress_every == 0:
            log(f"  batch {index + 1}")
    return {
        name: {
            "ece": acc.ece(),
            "accuracy": float(acc.correct_sum.sum() / max(acc.counts.sum(), 1)),
            "confidence": float(acc.confidence_sum.sum() / max(acc.counts.sum(), 1)),
            "miou": float(metrics.mean_iou(confusions[name])),
            "per_class_iou": [
                None if np.isnan(v) else float(v) for v in metrics.per_class_iou(confusions[name])
            ],
            "num_pixels": int(acc.counts.sum()),
            "accumulator": acc,
        }
        for name, acc in accumulators.items()
    }


def save_results_json(results, path, **fields):
    """Writes `fields` and the results per variant (without the accumulators) as JSON."""
    variants = {
        name: {k: v for k, v in r.items() if k != "accumulator"} for name, r in results.items()
    }
    with open(path, "w") as f:
        json.dump(dict(fields, variants=variants), f, indent=1)
    return path


def format_table(results):
    """Printable table of ECE, accuracy, mean confidence and mIoU per variant (in %)."""
    lines = [f"{'source':<26} {'ECE':>7} {'acc':>7} {'conf':>7} {'mIoU':>7} {'pixels':>10}"]
    for name, r in results.items():
        lines.append(
            f"{name:<26} {100 * r['ece']:7.2f} {100 * r['accuracy']:7.2f} "
            f"{100 * r['confidence']:7.2f} {100 * r['miou']:7.2f} "
            f"{r['num_pixels']:>10}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ reliability diagram


def reliability_image(results, panel=150, margin=24):
    """uint8 RGB reliability diagrams, one panel per variant, side by side.

    Blue bars: accuracy per confidence bin; red: the gap to the bin's mean confidence;
    grey: the diagonal of perfect calibration.
    """
    names = list(results)
    width = len(names) * (panel + margin) + margin
    height = panel + 2 * margin
    canvas = np.full((height, width, 3), 255, np.uint8)
    for k, name in enumerate(names):
        rel = results[name]["accumulator"].reliability()
        x0, y1 = margin + k * (panel + margin), margin + panel  # y1: bottom of the plot
        bins = len(rel["count"])
        for b in range(bins):
            if rel["count"][b] == 0:
                continue
            left = x0 + int(round(b * panel / bins))
            right = x0 + int(round((b + 1) * panel / bins)) - 1
            acc_top = y1 - int(round(rel["accuracy"][b] * panel))
            conf_top = y1 - int(round(rel["confidence"][b] * panel))
            canvas[acc_top:y1, left:right] = (60, 90, 200)
            lo, hi = sorted((acc_top, conf_top))
            canvas[lo:hi, left:right] = (220, 70, 60)
        for i in range(panel):  # diagonal, then the frame
            canvas[y1 - 1 - i, x0 + i] = (128, 128, 128)
        canvas[margin, x0 : x0 + panel] = canvas[y1 - 1, x0 : x0 + panel] = 0
        canvas[margin:y1, x0] = canvas[margin:y1, x0 + panel - 1] = 0
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for k, name in enumerate(names):
        x0 = margin + k * (panel + margin)
        draw.text((x0, 4), name, fill=(0, 0, 0))
        draw.text(
            (x0, margin + panel + 4), f"ECE {100 * results[name]['ece']:.2f}%", fill=(0, 0, 0)
        )
    return np.asarray(image)


def save_reliability_png(results, path):
    """Writes the reliability diagrams of `results` to a PNG; returns the path."""
    Image.fromarray(reliability_image(results)).save(path)
    return path

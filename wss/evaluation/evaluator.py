"""Streaming mIoU evaluation of a PseudoSeg model (spec section 6).

Each eval batch is padded to the eval crop (pipeline.eval_dataset); the model's logits
are upsampled to the padded input (bilinear, align_corners), optionally averaged over
scales and a left-right flip, arg-maxed and cut back to every image's original height
and width before the confusion matrix (label 255 ignored) is accumulated. The command
line over it is wss.eval; training, export and pseudo-labelling use it too.
"""

import os
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from deeplab_ext.resize import resize_bilinear, scale_dimension
from wss import files
from wss.data.descriptors import IGNORE_LABEL
from wss.data.errors import DataError
from wss.evaluation import metrics

# ------------------------------------------------------------------------ prediction


def base_logits_fn(model):
    """fn(images [B,H,W,3] float [0,255]) -> logits [B,H,W,C] at the input size.

    Accepts a PseudoSegModel, a DeepLabV3Plus, or any such callable (e.g. a fake model).
    """
    if hasattr(model, "deeplab"):
        return model.deeplab.predict_logits
    if hasattr(model, "predict_logits"):
        return model.predict_logits
    if callable(model):
        return model
    raise TypeError(
        f"cannot predict with {type(model).__name__}: need a PseudoSegModel, "
        "a DeepLabV3Plus or a callable images -> logits."
    )


def make_logits_fn(model, scales=(1.0,), flip=False, merge="logits"):
    """Test-time-augmented logits at the input size (no augmentation by default).

    For each scale s the image is resized (bilinear, align_corners) to DeepLab's
    int((dim - 1) * s + 1), its logits are resized back to the input size and, with
    `flip`, the mirrored image's mirrored logits are added. `merge` averages 'logits'
    or softmax 'probs' (DeepLab's multi-scale eval averages probabilities).
    """
    scales = tuple(float(s) for s in (scales or (1.0,)))
    if merge not in ("logits", "probs"):
        raise ValueError(f"merge must be 'logits' or 'probs', got {merge!r}")
    base = base_logits_fn(model)
    if scales == (1.0,) and not flip and merge == "logits":
        return base

    def fn(images):
        size = tf.shape(images)[1:3]
        outputs = []
        for s in scales:
            scaled = images
            if s != 1.0:
                scaled = resize_bilinear(
                    images, [scale_dimension(size[0], s), scale_dimension(size[1], s)]
                )
            views = [(scaled, False)] + ([(tf.reverse(scaled, [2]), True)] if flip else [])
            for view, flipped in views:
                logits = base(view)
                if flipped:
                    logits = tf.reverse(logits, [2])
                logits = resize_bilinear(tf.cast(logits, tf.float32), size)
                outputs.append(tf.nn.softmax(logits) if merge == "probs" else logits)
        return tf.add_n(outputs) / float(len(outputs))

    return fn


def crop_mask(height, width, size):
    """bool [B, size[0], size[1]] mask of each image's original (unpadded) area."""
    ys = tf.range(size[0])[tf.newaxis, :, tf.newaxis]
    xs = tf.range(size[1])[tf.newaxis, tf.newaxis, :]
    return (ys < height[:, tf.newaxis, tf.newaxis]) & (xs < width[:, tf.newaxis, tf.newaxis])


def make_eval_step(model, num_classes, scales=(1.0,), flip=False, merge="logits"):
    """A tf.function batch -> (confusion matrix int64 [C,C], predictions [B,H,W] int32,
    number of labels outside [0, C) that are not 255)."""
    logits_fn = make_logits_fn(model, scales, flip, merge)

    @tf.function(reduce_retracing=True)
    def step(images, labels, height, width):
        logits = logits_fn(tf.cast(images, tf.float32))
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        labels = tf.reshape(tf.cast(labels, tf.int32), tf.shape(predictions))
        inside = crop_mask(height, width, tf.shape(predictions)[1:3])
        labels = tf.where(inside, labels, IGNORE_LABEL)
        bad = tf.reduce_sum(
            tf.cast((labels != IGNORE_LABEL) & ((labels < 0) | (labels >= num_classes)), tf.int32)
        )
        cm = metrics.confusion_matrix_tf(labels, predictions, num_classes)
        return cm, predictions, bad

    return step


def _batch_sizes(batch):
    """Original heights/widths of a batch (from 'height'/'width', else the full image)."""
    shape = tf.shape(batch["image"])
    if "height" in batch and "width" in batch:
        return tf.cast(batch["height"], tf.int32), tf.cast(batch["width"], tf.int32)
    return tf.fill([shape[0]], shape[1]), tf.fill([shape[0]], shape[2])


def evaluate(
    model,
    dataset,
    num_classes,
    scales=(1.0,),
    flip=False,
    merge="logits",
    progress_every=0,
    log=print,
    max_batches=None,
    on_batch=None,
):
    """Streams `dataset` once and returns the segmentation metrics.

    Args:
      model: PseudoSegModel / DeepLabV3Plus / callable images -> logits at input size.
      dataset: batches with 'image' [B,H,W,3] in [0,255], 'label' [B,H,W(,1)] (255 =
        ignore) and optionally 'height'/'width' (original sizes; pixels beyond them are
        padding and ignored) and 'filename'.
      num_classes: number of classes incl. background.
      scales / flip / merge: test-time augmentation (see make_logits_fn); off by default.
      progress_every: log a progress line every N batches (0: never).
      max_batches: stop after this many batches (None: the whole split).
      on_batch: optional fn(batch, predictions numpy [B,H,W]) called per batch.

    Returns:
      dict with 'miou', 'per_class_iou' (list, NaN for absent classes),
      'pixel_accuracy', 'confusion_matrix' (int64 numpy [C, C]), 'num_images',
      'num_pixels' and 'seconds'.
    """
    step = make_eval_step(model, num_classes, scales, flip, merge)
    cm = np.zeros((num_classes, num_classes), np.int64)
    num_images = 0
    start = time.time()
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        height, width = _batch_sizes(batch)
        batch_cm, predictions, bad = step(batch["image"], batch["label"], height, width)
        if int(bad):
            names = [
                n.decode() if isinstance(n, bytes) else str(n)
                for n in batch.get("filename", tf.constant([])).numpy().tolist()
            ]
            raise ValueError(
                f"{int(bad)} label pixels outside [0, {num_classes}) and not "
                f"{IGNORE_LABEL} in batch {index} (images {names}). Fix: check "
                "the dataset name / num_classes against the records."
            )
        cm += batch_cm.numpy()
        num_images += int(tf.shape(batch["image"])[0])
        if on_batch is not None:
            on_batch(batch, predictions.numpy())
        if progress_every and (index + 1) % progress_every == 0:
            log(
                f"  batch {index + 1}: {num_images} images, running mIoU "
                f"{metrics.mean_iou(cm):.4f} ({time.time() - start:.1f}s)"
            )
    return {
        "miou": metrics.mean_iou(cm),
        "per_class_iou": metrics.per_class_iou(cm).tolist(),
        "pixel_accuracy": metrics.pixel_accuracy(cm),
        "confusion_matrix": cm,
        "num_images": num_images,
        "num_pixels": int(cm.sum()),
        "seconds": time.time() - start,
    }


def format_table(result, class_names):
    """Per-class IoU table plus mIoU and pixel accuracy, as printable text."""
    width = max([len(n) for n in class_names] + [10])
    lines = [f"{'class':<{width}}  IoU (%)", "-" * (width + 9)]
    for name, iou in zip(class_names, result["per_class_iou"]):
        value = "    n/a" if iou is None or np.isnan(iou) else f"{100 * iou:7.2f}"
        lines.append(f"{name:<{width}}  {value}")
    lines.append("-" * (width + 9))
    lines.append(f"{'mIoU':<{width}}  {100 * result['miou']:7.2f}")
    lines.append(f"{'pixel acc':<{width}}  {100 * result['pixel_accuracy']:7.2f}")
    lines.append(f"({result['num_images']} images, {result['num_pixels']} pixels)")
    return "\n".join(lines)


def result_to_json(result, class_names, **extra):
    """JSON-serialisable copy of an evaluate() result (NaN IoU -> null)."""
    per_class = {
        name: (None if np.isnan(v) else float(v))
        for name, v in zip(class_names, result["per_class_iou"])
    }
    out = {
        "miou": float(result["miou"]),
        "pixel_accuracy": float(result["pixel_accuracy"]),
        "per_class_iou": per_class,
        "num_images": int(result["num_images"]),
        "num_pixels": int(result["num_pixels"]),
        "confusion_matrix": np.asarray(result["confusion_matrix"]).tolist(),
    }
    out.update(extra)
    return out


def write_scalar(tag, value, step):
    """A TensorBoard scalar via tf.summary.write (works without the tensorboard package,
    which tf.summary.scalar needs)."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


def evaluate_checkpoint(
    model,
    ckpt,
    step,
    dataset_fn,
    desc,
    split,
    output_dir,
    scales,
    flip,
    progress_every,
    writer=None,
):
    """Evaluates `model`, already restored from checkpoint `ckpt` (training step `step`;
    wss.restore restores), prints the table, writes the JSON and the summaries."""
    print(f"Evaluating {ckpt} (step {step}) on {desc.name}/{split} ...", flush=True)
    result = evaluate(
        model,
        dataset_fn(),
        desc.num_classes,
        scales=scales,
        flip=flip,
        progress_every=progress_every,
        log=lambda s: print(s, flush=True),
    )
    if result["num_images"] == 0:
        raise DataError(f"split {split!r} of {desc.name} gave no images to evaluate.")
    print(format_table(result, desc.class_names), flush=True)
    files.makedirs(output_dir)
    path = os.path.join(output_dir, f"eval_{split}_{step}.json")
    files.write_json(
        path,
        result_to_json(
            result,
            desc.class_names,
            step=step,
            checkpoint=ckpt,
            split=split,
            dataset=desc.name,
            scales=list(scales),
            flip=bool(flip),
        ),
        indent=1,
    )
    print(f"Wrote {path}", flush=True)
    if writer is not None:
        with writer.as_default():
            write_scalar(f"eval/{split}/miou", result["miou"], step)
            write_scalar(f"eval/{split}/pixel_accuracy", result["pixel_accuracy"], step)
            for name, iou in zip(desc.class_names, result["per_class_iou"]):
                if not np.isnan(iou):
                    write_scalar(f"eval/{split}/iou/{name}", iou, step)
        writer.flush()
    result["step"], result["json_path"] = step, path
    return result

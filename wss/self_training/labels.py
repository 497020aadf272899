"""The teacher's hard pseudo labels and their statistics (the self-training baseline).

A pixel gets the teacher's arg-max class when its maximum softmax probability is STRICTLY
above the threshold (the paper, Sec. 4: "higher than 0.5"; exactly 0.5 is ignored) and
255 (ignore) elsewhere. `make_label_fn` runs the teacher like the evaluator (same scales
and flip handling); `LabelStats` counts coverage and, where the split has ground truth,
the confusion matrix of the covered pixels.
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from wss.evaluation import evaluator, metrics
from wss.evaluation.metrics import IGNORE_LABEL

DEFAULT_THRESHOLD = 0.5


def threshold_labels(probs, threshold=DEFAULT_THRESHOLD, ignore_label=IGNORE_LABEL):
    """Hard pseudo labels from class probabilities [..., C].

    The arg-max class (first one on ties, like np.argmax) where the maximum probability
    is strictly above `threshold`, `ignore_label` elsewhere (a maximum of exactly the
    threshold is ignored). Returns int32 labels [...]: a numpy array for numpy input, a
    tensor for a tensor (usable inside tf.function).
    """
    as_numpy = not tf.is_tensor(probs)
    probs = tf.convert_to_tensor(probs)
    labels = tf.argmax(probs, axis=-1, output_type=tf.int32)
    confident = tf.reduce_max(probs, axis=-1) > tf.cast(threshold, probs.dtype)
    labels = tf.where(confident, labels, tf.constant(ignore_label, tf.int32))
    return labels.numpy() if as_numpy else labels


def make_label_fn(model, threshold=DEFAULT_THRESHOLD, scales=(1.0,), flip=False, merge="probs"):
    """A tf.function images [B,H,W,3] (float, [0,255]) -> pseudo labels int32 [B,H,W].

    Probabilities come from wss.evaluation.evaluator.make_logits_fn (same scales/flip handling as
    the evaluator); merge='probs' averages softmax probabilities over the views (DeepLab's
    multi-scale rule), merge='logits' averages logits, then takes the softmax.
    """
    if merge not in ("probs", "logits"):
        raise ValueError(f"merge must be 'probs' or 'logits', got {merge!r}")
    out_fn = evaluator.make_logits_fn(model, scales, flip, merge)

    @tf.function(reduce_retracing=True)
    def label_fn(images):
        out = tf.cast(out_fn(tf.cast(images, tf.float32)), tf.float32)
        probs = out if merge == "probs" else tf.nn.softmax(out)
        return threshold_labels(probs, threshold)

    return label_fn


@dataclasses.dataclass
class LabelStats:
    """Pixel counts of pseudo labels (inside the images only) and, against ground truth
    (255 = none), the confusion matrix of the covered pixels."""

    num_classes: int
    num_images: int = 0
    num_pixels: int = 0
    labeled_pixels: int = 0  # pseudo label != 255
    gt_pixels: int = 0  # ground truth != 255
    confusion: Optional[np.ndarray] = None  # [C, C] rows: ground truth, cols: pseudo

    def __post_init__(self):
        if self.confusion is None:
            self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.confusion = np.asarray(self.confusion, np.int64)

    def add(self, pseudo, ground_truth=None):
        """Adds one image's pseudo label [H,W] and optional ground truth [H,W]."""
        pseudo = np.asarray(pseudo)
        self.num_images += 1
        self.num_pixels += int(pseudo.size)
        covered = pseudo != IGNORE_LABEL
        self.labeled_pixels += int(covered.sum())
        if ground_truth is not None:
            gt = np.asarray(ground_truth).reshape(pseudo.shape)
            self.gt_pixels += int((gt != IGNORE_LABEL).sum())
            self.confusion += metrics.confusion_matrix(
                gt[covered], pseudo[covered], self.num_classes
            )

    def merge(self, other):
        """Adds the counts of another LabelStats (e.g. one shard's) to these."""
        self.num_images += other.num_images
        self.num_pixels += other.num_pixels
        self.labeled_pixels += other.labeled_pixels
        self.gt_pixels += other.gt_pixels
        self.confusion += other.confusion

    def to_json(self):
        """The counts as JSON-able values (a shard's saved statistics)."""
        return {
            "num_images": self.num_images,
            "num_pixels": self.num_pixels,
            "labeled_pixels": self.labeled_pixels,
            "gt_pixels": self.gt_pixels,
            "confusion_matrix": self.confusion.tolist(),
        }

    @classmethod
    def from_json(cls, num_classes, data):
        """The LabelStats of `to_json`'s output."""
        return cls(
            num_classes,
            data["num_images"],
            data["num_pixels"],
            data["labeled_pixels"],
            data["gt_pixels"],
            np.asarray(data["confusion_matrix"], np.int64),
        )

    def summary(self, class_names=None):
        """Coverage, and (with ground truth) mIoU / pixel accuracy on covered pixels."""
        out = {
            "num_images": self.num_images,
            "num_pixels": self.num_pixels,
            "labeled_pixels": self.labeled_pixels,
            "coverage": self.labeled_pixels / self.num_pixels if self.num_pixels else 0.0,
            "has_ground_truth": self.gt_pixels > 0,
            "gt_pixels": self.gt_pixels,
            "miou": None,
            "pixel_accuracy": None,
            "per_class_iou": None,
            "gt_coverage": None,
            "confusion_matrix": self.confusion.tolist(),
        }
        if self.gt_pixels > 0:
            iou = metrics.per_class_iou(self.confusion)
            names = list(class_names or [str(i) for i in range(self.num_classes)])
            out.update(
                miou=metrics.mean_iou(self.confusion),
                pixel_accuracy=metrics.pixel_accuracy(self.confusion),
                per_class_iou={n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
                # Share of the ground-truth-labeled pixels that got a pseudo label.
                gt_coverage=float(self.confusion.sum()) / self.gt_pixels,
            )
        return out

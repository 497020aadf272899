"""Class statistics read from a split's records (TFRecord folder or 'tfds:' dataset).

* class_presence: per-image foreground classes (input to the split sampler).
* class_pixel_counts / inverse_frequency_weights / class_weights_from_split: per-class
  loss weights for losses.supervised_ce(class_weights=...) (off by default, as in the
  paper), saved and loaded as JSON by save_class_weights / load_class_weights.

Records come through wss.data.pipeline.decoded_records, the training pipeline's own door:
the same checks (a bad record raises naming it), the same id lists, and a 'tfds:'
`dataset_name` reads TensorFlow Datasets (`dataset_dir` is then its data directory).
"""

import json
import os
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf

from wss import files
from wss.data import pipeline, reader


def _labels(dataset_dir, split, num_classes, id_list=None, dataset_name=None):
    """(filename, label) of every checked record of the split (unlabeled: all 255)."""
    ds = pipeline.decoded_records(
        dataset_dir,
        split,
        num_classes,
        require_label=False,
        id_list=id_list,
        dataset_name=dataset_name,
    )
    return ds.map(lambda x: (x["filename"], x["label"]), num_parallel_calls=tf.data.AUTOTUNE)


def class_presence(
    dataset_dir: str, split: str, num_classes: int, dataset_name: Optional[str] = None
) -> Tuple[List[str], List[Set[int]]]:
    """Ids of a split and, per id, the set of foreground classes in its mask.

    Records are checked like the training pipeline does (bad ones raise naming the
    record); unlabeled records give an empty set.
    """

    def present(name, label):
        flat = tf.reshape(label, [-1])
        flat = tf.where(flat < num_classes, flat, 0)
        counts = tf.math.bincount(flat, minlength=num_classes, maxlength=num_classes)
        return name, counts > 0

    ds = _labels(dataset_dir, split, num_classes, dataset_name=dataset_name)
    ds = ds.map(present, num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    ids, classes = [], []
    for names, hits in ds:
        for n, h in zip(names.numpy(), hits.numpy()):
            ids.append(reader.image_id(n.decode("utf-8")))
            classes.append({c for c in range(1, num_classes) if h[c]})
    order = sorted(range(len(ids)), key=ids.__getitem__)  # independent of sharding
    return [ids[i] for i in order], [classes[i] for i in order]


# ------------------------------------------------------------ class weights (off by default)


def class_pixel_counts(
    dataset_dir: str,
    split: str,
    num_classes: int,
    id_list=None,
    dataset_name: Optional[str] = None,
) -> np.ndarray:
    """Labeled pixels per class (int64 [C]) over a split, optionally only the ids of
    `id_list` (a file path or a list of ids); 255 (ignore) and unlabeled records count
    nothing. Records are checked like the training pipeline does."""

    def count(name, label):
        del name
        flat = tf.reshape(label, [-1])
        flat = tf.where(flat < num_classes, flat, num_classes)  # 255 -> dropped bin
        return tf.math.bincount(
            flat, minlength=num_classes + 1, maxlength=num_classes + 1, dtype=tf.int64
        )[:num_classes]

    ds = _labels(dataset_dir, split, num_classes, id_list, dataset_name)
    total = np.zeros([num_classes], np.int64)
    for c in ds.map(count, num_parallel_calls=tf.data.AUTOTUNE).batch(64):
        total += c.numpy().sum(axis=0)
    return total


def inverse_frequency_weights(counts, normalize: bool = True) -> np.ndarray:
    """weights_c = total / (C * count_c) (total = sum of counts, C = len(counts)); classes
    with no pixels get 0. With `normalize`, the weights are divided by their mean over the
    present classes (so that mean is 1)."""
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
        raise ValueError(f"counts must be a non-empty 1-D array of pixel counts, got {counts}")
    present = counts > 0
    if not present.any():
        raise ValueError("no labeled pixels: every class count is 0 (is the split unlabeled?)")
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (counts.size * counts[present])
    if normalize:
        weights /= weights[present].mean()
    return weights


def class_weights_from_split(
    dataset_dir: str,
    split: str,
    num_classes: int,
    id_list=None,
    normalize: bool = True,
    dataset_name: Optional[str] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """(weights, counts): inverse-frequency weights of a labeled split (or id list)."""
    counts = class_pixel_counts(dataset_dir, split, num_classes, id_list, dataset_name)
    return inverse_frequency_weights(counts, normalize), counts


def save_class_weights(
    path: str, weights, class_names: Optional[Sequence[str]] = None, counts=None, **info
) -> str:
    """Writes {'class_weights': [...], 'class_names', 'pixel_counts', ...info} as JSON."""
    weights = [float(w) for w in np.asarray(weights, np.float64).reshape(-1)]
    if class_names is not None and len(class_names) != len(weights):
        raise ValueError(f"{len(class_names)} class names for {len(weights)} weights")
    d = {"class_weights": weights}
    if class_names is not None:
        d["class_names"] = list(class_names)
    if counts is not None:
        d["pixel_counts"] = [int(c) for c in np.asarray(counts).reshape(-1)]
    d.update(info)
    files.write_json(path, d)
    return path


def load_class_weights(path: str, num_classes: Optional[int] = None) -> List[float]:
    """The weights of a class_weights.json (or a bare JSON list); checks their number and
    that they are finite and >= 0."""
    try:
        d = files.read_json(path)
    except (OSError, tf.errors.OpError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read class weights ({e})") from None
    weights = d.get("class_weights") if isinstance(d, dict) else d
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(
            f'{path}: expected {{"class_weights": [numbers]}} or a JSON list of numbers'
        ) from None
    if num_classes is not None and len(weights) != num_classes:
        raise ValueError(f"{path}: {len(weights)} class weights for {num_classes} classes")
    if not all(np.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"{path}: class weights must be finite and >= 0, got {weights}")
    return weights


def write_split_class_weights(
    dataset_dir: str,
    split: str,
    descriptor,
    id_list=None,
    path: Optional[str] = None,
    normalize: bool = True,
) -> str:
    """Computes a split's inverse-frequency weights and saves them; `descriptor` is a
    DatasetDescriptor or name/path. A 'tfds:<builder>' name reads TensorFlow Datasets
    from the data directory `dataset_dir`. Default path: dataset_dir/class_weights.json,
    for TFDS dataset_dir/<builder>_class_weights.json (the data directory holds others)."""
    from wss.data import descriptors, tfds_registry

    desc = descriptors.get_descriptor(descriptor)
    tfds_name = descriptor if tfds_registry.is_tfds_name(descriptor) else None
    weights, counts = class_weights_from_split(
        dataset_dir, split, desc.num_classes, id_list, normalize, dataset_name=tfds_name
    )
    info = {"dataset": tfds_name} if tfds_name else {}
    default_name = "class_weights.json"
    if tfds_name:
        default_name = tfds_registry.lookup(tfds_name).key + "_class_weights.json"
    return save_class_weights(
        path or os.path.join(dataset_dir, default_name),
        weights,
        desc.class_names,
        counts,
        split=split,
        id_list=id_list if isinstance(id_list, str) else None,
        normalized=normalize,
        rule="total / (C * count_c); 0 for absent classes",
        **info,
    )

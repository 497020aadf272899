"""Which images of a split go to which pseudo-label shard, and reading them for the teacher.

The images of the split (in file order, then record order, after the id lists) are
assigned to shards deterministically: shard i holds images [i*n//k, (i+1)*n//k). The
inference dataset reads only the records of the shards still to write, in output order,
as eval-style padded batches that also carry each record's original encoded image.
"""

import bisect
import dataclasses
from typing import List

import numpy as np
import tensorflow as tf

from wss.data import augment, pipeline, reader, schema, tfds_registry
from wss.errors import UserError


class PseudoLabelError(UserError, RuntimeError):
    """Pseudo labels cannot be written as asked (names the problem and the fix)."""


def check_dataset(dataset_name, fix="train with PseudoSeg instead (MethodOptions.mode = 'semi')"):
    """A PseudoLabelError for a 'tfds:' dataset, before any work starts.

    Self-training's pseudo labels are TFRecord shards that the student reads beside its
    labeled split ('DIR:name' sources); a TFDS dataset's splits cannot be mixed with a
    folder (wss.data.tfds_source), and the shards are planned by record position in the
    split's files. `fix` says what to do instead.
    """
    if tfds_registry.is_tfds_name(dataset_name):
        raise PseudoLabelError(
            f"self-training reads TFRecord folders, not the TFDS dataset {dataset_name!r} "
            "(its student reads the teacher's TFRecord shards beside the labeled split, "
            f"which a TFDS split cannot be mixed with). Fix: {fix}, or write its images and "
            "masks to folders, build them with datasets/build_folder_data.py and "
            "self-train on that"
        )


@dataclasses.dataclass
class Plan:
    """Which records of the input go to which output shard (deterministic)."""

    files: List[str]
    counts: List[int]  # readable records per file
    items: List[tuple]  # (file index, record index, filename), in output order
    bounds: List[int]  # shard i holds items[bounds[i]:bounds[i + 1]]

    @property
    def num_shards(self):
        return len(self.bounds) - 1

    def shard_of(self, position):
        """The shard of the image at `position` in the output order."""
        return bisect.bisect_right(self.bounds, position) - 1

    def shard_size(self, shard):
        return self.bounds[shard + 1] - self.bounds[shard]

    def shard_filenames(self, shard):
        """The filenames of the images of `shard`, in order."""
        return [self.items[i][2] for i in range(self.bounds[shard], self.bounds[shard + 1])]


def make_plan(dataset_dir, split, num_shards, id_list=None, exclude_ids=None):
    """Lists the split's records (file order, then record order) after the id lists and
    splits them into min(num_shards, n) contiguous, non-empty, balanced shards."""
    files = reader.split_files(dataset_dir, split)
    scans = reader.scan_files(files)
    keep = pipeline._ids(id_list)
    if keep is not None:
        reader.select_ids(scans, keep, f"id list {id_list if isinstance(id_list, str) else ''}")
        keep = set(keep)
    drop = set(pipeline._ids(exclude_ids) or ())
    items = []
    for f, scan in enumerate(scans):
        for r, name in enumerate(scan.ids):
            stem = reader.image_id(name)
            if (keep is None or stem in keep) and stem not in drop:
                items.append((f, r, name))
    if not items:
        raise PseudoLabelError(
            f"split {split!r} in {dataset_dir!r} has no images to label (after the id lists)."
        )
    k = max(1, min(int(num_shards), len(items)))
    bounds = [i * len(items) // k for i in range(k + 1)]
    return Plan(list(files), [len(s.ids) for s in scans], items, bounds)


def _positions_table(plan, shards):
    """int64 [total records]: output position of each input record, -1 to skip it."""
    offsets = np.concatenate([[0], np.cumsum(plan.counts)]).astype(np.int64)
    table = np.full(int(offsets[-1]), -1, np.int64)
    wanted = set(shards)
    for position, (f, r, _) in enumerate(plan.items):
        if plan.shard_of(position) in wanted:
            table[offsets[f] + r] = position
    return offsets[:-1], table


def inference_dataset(plan, shards, num_classes, crop_size, batch_size):
    """Eval-style batches of the planned records of `shards`, in output order.

    Per element: 'image' float32 padded to crop_size, 'label' (ground truth, 255 if
    none), 'height', 'width', 'filename', 'encoded' (original image bytes) and
    'position' (index in plan.items).
    """
    offsets, table = _positions_table(plan, shards)
    table = tf.constant(table)
    spec = {schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value="")}

    def read(path, count, offset):
        recs = tf.data.TFRecordDataset(path).take(count).enumerate()
        return recs.map(lambda i, r: (path, i, tf.gather(table, offset + i), r))

    ds = tf.data.Dataset.from_tensor_slices(
        (plan.files, tf.constant(plan.counts, tf.int64), tf.constant(offsets))
    )
    ds = ds.flat_map(read).filter(lambda p, i, pos, r: pos >= 0)

    def prep(path, index, position, record):
        x = reader.assert_ok(reader.decode_record(path, index, record, num_classes, False))
        hw = tf.shape(x["image"])[:2]
        fits = tf.cond(
            tf.reduce_all(hw <= crop_size),
            lambda: tf.constant(True),
            lambda: tf.py_function(
                pipeline._raise_too_big,
                [path, index, hw[0], hw[1], crop_size],
                tf.bool,
            ),
        )
        with tf.control_dependencies([fits]):
            out = augment.eval_view(tf.identity(x["image"]), x["label"], crop_size)
        out["filename"] = x["filename"]
        out["encoded"] = tf.io.parse_single_example(record, spec)[schema.IMAGE_ENCODED]
        out["position"] = position
        return out

    # Deterministic order (the default): records arrive in output position order.
    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

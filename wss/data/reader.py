"""Reads a split's TFRecords into tf.data: the one door the pipelines go through.

Every decoded element carries its source file and record index so that any check that
fails (undecodable image, label values out of range, size mismatch, missing label) can
name the record and say how to fix it. With `skip_bad=True` such records are dropped and
counted in a `SkipCounter` instead, which is logged and readable afterwards.

The work is split by job: shards (finding and scanning a split's files), record_ids (the
id rule), record_checks (decoding and checking one record); this module streams the
records of scanned files, selected by id list, and offers the names of all of them.
"""

from typing import Optional, Sequence

import tensorflow as tf

from wss.data import schema
from wss.data.errors import DataError
from wss.data.record_checks import (
    BAD_CLASS_LABEL,
    BAD_IMAGE,
    BAD_LABEL,
    IGNORE_LABEL,
    LABEL_RANGE,
    NO_LABEL,
    OK,
    REASONS,
    SIZE_MISMATCH,
    SkipCounter,
    assert_ok,
    decode_record,
    skip_filter,
)
from wss.data.record_ids import image_id, image_id_tensor
from wss.data.shards import (
    FileScan,
    Source,
    check_shard_set,
    files_from_pattern,
    parse_sources,
    scan_file,
    scan_files,
    select_ids,
    source_files,
    split_files,
)

# The names this module has always offered (the pipelines, tools and tests use them).
__all__ = [
    "BAD_CLASS_LABEL",
    "BAD_IMAGE",
    "BAD_LABEL",
    "IGNORE_LABEL",
    "LABEL_RANGE",
    "NO_LABEL",
    "OK",
    "REASONS",
    "SIZE_MISMATCH",
    "DataError",
    "FileScan",
    "SkipCounter",
    "Source",
    "assert_ok",
    "check_shard_set",
    "decode_record",
    "files_from_pattern",
    "image_id",
    "image_id_tensor",
    "parse_sources",
    "records_dataset",
    "scan_file",
    "scan_files",
    "select_ids",
    "skip_filter",
    "source_files",
    "split_files",
]


def records_dataset(
    scans: Sequence[FileScan],
    ids: Optional[Sequence[str]] = None,
    shuffle_files: bool = False,
    seed: Optional[int] = None,
    num_parallel_reads=tf.data.AUTOTUNE,
    deterministic: Optional[bool] = None,
    shard: Optional[tuple] = None,
    ids_apply_to: Optional[Sequence[str]] = None,
) -> tf.data.Dataset:
    """Dataset of (path, record index, serialized record) over scanned files.

    Only the readable prefix of each file is read. `ids` keeps only records whose id is
    listed; with `ids_apply_to` (file paths) only records of those files are filtered and
    all records of the other files are kept. `shard=(num, index)` keeps every num-th file
    (or record if files are fewer).
    """
    paths = [s.path for s in scans]
    counts = [len(s.ids) for s in scans]
    ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(counts, tf.int64)))
    shard_records = False
    if shard is not None and shard[0] > 1:
        if len(paths) >= shard[0]:
            ds = ds.shard(shard[0], shard[1])
        else:
            shard_records = True
    if shuffle_files:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def read(path, count):
        recs = tf.data.TFRecordDataset(path).take(count).enumerate()
        return recs.map(lambda i, r: (path, i, r))

    ds = ds.interleave(
        read,
        cycle_length=min(len(paths), 8) or 1,
        block_length=1,
        num_parallel_calls=num_parallel_reads,
        deterministic=deterministic,
    )
    if shard_records:
        ds = ds.shard(shard[0], shard[1])
    if ids is not None:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(ids), tf.string), tf.ones([len(ids)], tf.int32)
            ),
            0,
        )

        filtered = None
        if ids_apply_to is not None:
            apply = sorted(set(ids_apply_to))
            filtered = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(apply or [""], tf.string),
                    tf.constant([1] * len(apply) or [0], tf.int32),
                ),
                0,
            )

        def keep(path, index, record):
            del index
            name = tf.io.parse_single_example(record, schema.filename_spec())[schema.IMAGE_FILENAME]
            listed = table.lookup(image_id_tensor(name)) > 0
            if filtered is None:
                return listed
            return tf.logical_or(listed, filtered.lookup(path) == 0)

        ds = ds.filter(keep)
    return ds

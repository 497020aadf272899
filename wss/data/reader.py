"""Finds a split's TFRecord shards, checks them, and decodes records in tf.data.

Every decoded element carries its source file and record index so that any check that
fails (undecodable image, label values out of range, size mismatch, missing label) can
name the record and say how to fix it. With `skip_bad=True` such records are dropped and
counted in a `SkipCounter` instead, which is logged and readable afterwards.
"""

import collections
import glob
import os
import re
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging

from wss.data import schema
from wss.errors import UserError

IGNORE_LABEL = 255
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.tfrecord$")

# Reason codes for a record that fails a check.
OK, BAD_IMAGE, BAD_LABEL, SIZE_MISMATCH, LABEL_RANGE, NO_LABEL, BAD_CLASS_LABEL = range(7)
REASONS = {
    BAD_IMAGE: (
        "image/encoded is not a decodable JPEG or PNG",
        "re-encode the image or rebuild the record",
    ),
    BAD_LABEL: (
        "image/segmentation/class/encoded is not a decodable PNG",
        "rebuild the record with an index PNG label",
    ),
    SIZE_MISMATCH: (
        "label size differs from image size (or from image/height, image/width)",
        "the label belongs to another image; rebuild",
    ),
    LABEL_RANGE: (
        "label has values outside [0, num_classes) that are not 255",
        "convert colour labels to class indices, or fix num_classes",
    ),
    NO_LABEL: (
        "record has no segmentation label but this stream needs one",
        "use this split as an extra set, or build it with labels",
    ),
    BAD_CLASS_LABEL: (
        "image/class/label has ids outside [1, num_classes)",
        "store foreground class ids 1..num_classes-1",
    ),
}


class DataError(UserError, ValueError):
    """A dataset problem found before the pipeline runs (names the files and the fix)."""


def split_files(dataset_dir: str, split) -> List[str]:
    """Shards of `split` in `dataset_dir` (pattern `{split}-*`), sorted and complete.

    A list/tuple of sources (see parse_sources) gives the shards of all of them, in
    order. Raises DataError when the folder or split is missing, when only part of a
    `-of-N` shard set is present, or when a shard is empty.
    """
    if not isinstance(split, str):
        return source_files(dataset_dir, split)[0]
    if not os.path.isdir(dataset_dir):
        raise DataError(
            f"Dataset folder {dataset_dir!r} does not exist; build it first "
            "(datasets/build_*_data.py) or fix --dataset_dir"
        )
    pattern = os.path.join(dataset_dir, f"{split}-*")
    files = sorted(glob.glob(pattern))
    if not files:
        present = sorted(
            {
                re.sub(r"-\d{5}-of-\d{5}\.tfrecord$", "", f)
                for f in os.listdir(dataset_dir)
                if f.endswith(".tfrecord")
            }
        )
        raise DataError(
            f"No files match {pattern!r} (split {split!r} missing); splits "
            f"present: {present}. Build the split or fix the split name."
        )
    return check_shard_set(files, pattern)


# A source of a split union: `name` (a split of the dataset directory) or `DIR:name` (a
# split in another directory, e.g. a teacher's pseudo labels 'runs/t/pseudo:pseudo').
Source = collections.namedtuple("Source", ["directory", "split", "plain"])


def parse_sources(dataset_dir: str, split) -> List[Source]:
    """The sources of `split`: one name, or a list/tuple of names and 'DIR:name' entries.

    A plain name (no ':') is a split of `dataset_dir` (plain=True); 'DIR:name' is split
    `name` of folder DIR (absolute, or relative to the working directory; everything
    before the last ':' is the folder), plain=False. Id lists select records of the plain
    sources only (see pipeline.decoded_records).
    """
    entries = [split] if isinstance(split, str) else list(split)
    if not entries:
        raise DataError("The split list is empty; name at least one split")
    out = []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise DataError(f"Split entries must be non-empty strings, got {entry!r} in {split!r}")
        directory, sep, name = entry.rpartition(":")
        if not sep:
            out.append(Source(dataset_dir, entry, True))
        elif not directory or not name:
            raise DataError(f"Split entry {entry!r} is not NAME or DIR:NAME")
        else:
            out.append(Source(directory, name, False))
    return out


def source_files(dataset_dir: str, split) -> Tuple[List[str], List[str]]:
    """(all shards, shards of the plain-name sources) of a split or union of splits.

    Id lists apply to the second list only (records_dataset's `ids_apply_to`).
    """
    files, plain = [], []
    for source in parse_sources(dataset_dir, split):
        found = split_files(source.directory, source.split)
        files.extend(found)
        if source.plain:
            plain.extend(found)
    return files, plain


def files_from_pattern(pattern: str) -> List[str]:
    """Files matching a glob pattern (comma-separated patterns allowed); raises if none."""
    files = []
    for p in pattern.split(","):
        files.extend(sorted(glob.glob(p.strip())))
    if not files:
        raise DataError(f"File pattern {pattern!r} matches no files; check the path")
    return check_shard_set(files, pattern)


def check_shard_set(files: Sequence[str], pattern: str) -> List[str]:
    """Raises if a `-of-N` shard set is incomplete or a file is empty."""
    groups = collections.defaultdict(set)
    for f in files:
        m = _SHARD_RE.search(f)
        if m:
            groups[(f[: m.start()], int(m.group(2)))].add(int(m.group(1)))
        if os.path.getsize(f) == 0:
            raise DataError(f"{f} is empty (an interrupted build?); rebuild the split")
    for (prefix, count), seen in groups.items():
        missing = sorted(set(range(count)) - seen)
        if missing:
            raise DataError(
                f"{pattern!r}: shards {missing} of {count} for {prefix!r} are "
                "missing (an interrupted build?); rebuild the split"
            )
    return list(files)


_SCAN_CACHE: Dict[tuple, "FileScan"] = {}
FileScan = collections.namedtuple("FileScan", ["path", "ids", "error"])


def scan_file(path: str) -> FileScan:
    """Reads every record of one file (framing and CRC) and returns the image ids.

    `error` is None, or a message naming the file and the index of the first record that
    cannot be read; `ids` then holds the records before it. Cached per path/size/mtime.
    """
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key in _SCAN_CACHE:
        return _SCAN_CACHE[key]
    ds = (
        tf.data.TFRecordDataset(path)
        .map(lambda r: tf.io.parse_single_example(r, schema.filename_spec())[schema.IMAGE_FILENAME])
        .batch(256)
    )
    ids, error = [], None
    it = iter(ds)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            break
        except tf.errors.DataLossError:
            # Re-read one record at a time to find the first unreadable one.
            good = 0
            try:
                for _ in tf.data.TFRecordDataset(path):
                    good += 1
            except tf.errors.DataLossError:
                pass
            ids = ids[:good]
            error = (
                f"{path}: record {good} is corrupt or truncated (DataLossError); "
                "rebuild this shard, or set skip_bad_records to read only the "
                f"{good} records before it"
            )
            break
        except tf.errors.InvalidArgumentError as e:
            error = (
                f"{path}: a record after index {len(ids)} is not a tf.train.Example "
                f"({e.message.splitlines()[0]}); is this a DeepLab TFRecord file?"
            )
            break
        ids.extend(x.decode("utf-8") for x in batch.numpy())
    result = FileScan(path, ids, error)
    _SCAN_CACHE[key] = result
    return result


def image_id(filename: str) -> str:
    """The id of a record: image/filename without a final extension."""
    base, ext = os.path.splitext(filename)
    return base if ext.lower() in (".jpg", ".jpeg", ".png") else filename


def scan_files(files: Sequence[str], skip_bad: bool = False) -> List[FileScan]:
    """Scans each file; raises DataError on the first corrupt file unless skip_bad."""
    scans = []
    for f in files:
        s = scan_file(f)
        if s.error and not skip_bad:
            raise DataError(s.error)
        if s.error:
            logging.warning("Skipping the rest of a file: %s", s.error)
        scans.append(s)
    return scans


def select_ids(scans: Sequence[FileScan], ids: Sequence[str], source: str) -> None:
    """Raises DataError unless every id of an id list is present in the scanned records."""
    present = {image_id(i) for s in scans for i in s.ids}
    missing = [i for i in ids if i not in present]
    if missing:
        raise DataError(
            f"{len(missing)} ids of {source} are not in the records (first: "
            f"{missing[:5]}); the id list does not belong to this split"
        )


class SkipCounter:
    """Thread-safe count of records dropped by skip_bad, by reason, with examples."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts = collections.Counter()
        self.examples: List[str] = []

    def add(self, path: bytes, index: int, reason: int):
        msg = f"{path.decode()} record {index}: {REASONS[reason][0]}"
        with self._lock:
            self.counts[REASONS[reason][0]] += 1
            if len(self.examples) < 100:
                self.examples.append(msg)
        logging.warning("Skipped bad record: %s", msg)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no records skipped"
        lines = [f"{n} x {r}" for r, n in self.counts.items()]
        return f"skipped {self.total} records: " + "; ".join(lines)


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
            stem = tf.strings.regex_replace(name, r"\.(jpg|jpeg|png|JPG|JPEG|PNG)$", "")
            listed = table.lookup(stem) > 0
            if filtered is None:
                return listed
            return tf.logical_or(listed, filtered.lookup(path) == 0)

        ds = ds.filter(keep)
    return ds


def _is_jpeg_or_png(data):
    return tf.logical_or(
        tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff",
        tf.strings.substr(data, 0, 8) == b"\x89PNG\r\n\x1a\n",
    )


def decode_record(path, index, record, num_classes: int, require_label: bool):
    """Parses and decodes one record; never raises on bad content.

    Returns a dict with 'image' uint8 [H,W,3], 'label' int32 [H,W,1] (all 255 if none),
    'has_label' bool, 'class_ids' int64 [K], 'filename', 'path', 'index', and 'reason'
    (OK or the first failed check's code).
    """
    f = tf.io.parse_single_example(record, schema.parse_spec())
    image_bytes = f[schema.IMAGE_ENCODED]
    label_bytes = f[schema.LABEL_ENCODED]
    has_label = tf.strings.length(label_bytes) > 0
    image_ok = _is_jpeg_or_png(image_bytes)
    label_ok = tf.logical_or(tf.logical_not(has_label), _is_jpeg_or_png(label_bytes))

    image = tf.cond(
        image_ok,
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
        lambda: tf.zeros([1, 1, 3], tf.uint8),
    )
    image.set_shape([None, None, 3])
    shape = tf.shape(image)[:2]
    label = tf.cond(
        tf.logical_and(has_label, label_ok),
        lambda: tf.cast(
            tf.io.decode_image(label_bytes, channels=1, expand_animations=False), tf.int32
        ),
        lambda: tf.fill(tf.concat([shape, [1]], 0), IGNORE_LABEL),
    )
    label.set_shape([None, None, 1])
    header = tf.cast(tf.stack([f[schema.IMAGE_HEIGHT], f[schema.IMAGE_WIDTH]]), tf.int32)
    header_ok = tf.logical_or(
        tf.reduce_all(tf.equal(header, 0)), tf.reduce_all(tf.equal(header, shape))
    )
    same_size = tf.logical_and(tf.reduce_all(tf.equal(tf.shape(label)[:2], shape)), header_ok)
    in_range = tf.reduce_all(tf.logical_or(label < num_classes, label == IGNORE_LABEL))
    in_range = tf.logical_and(in_range, tf.reduce_all(label >= 0))
    class_ids = tf.sparse.to_dense(f[schema.IMAGE_CLASS_LABEL])
    class_ok = tf.reduce_all(tf.logical_and(class_ids >= 1, class_ids < num_classes))

    checks = [
        (image_ok, BAD_IMAGE),
        (label_ok, BAD_LABEL),
        (same_size, SIZE_MISMATCH),
        (in_range, LABEL_RANGE),
        (tf.logical_or(has_label, not require_label), NO_LABEL),
        (class_ok, BAD_CLASS_LABEL),
    ]
    reason = tf.constant(OK)
    for ok, code in reversed(checks):  # First failing check wins.
        reason = tf.where(ok, reason, code)
    return {
        "image": image,
        "label": label,
        "has_label": has_label,
        "class_ids": class_ids,
        "filename": f[schema.IMAGE_FILENAME],
        "path": path,
        "index": index,
        "reason": reason,
    }


def _raise_bad_record(path, index, reason):
    what, fix = REASONS[int(reason)]
    raise DataError(
        f"{path.numpy().decode()} record {int(index)}: {what}. Fix: {fix} "
        "(or set skip_bad_records=True to skip and count such records)."
    )


def assert_ok(x):
    """Returns x unchanged, or raises DataError naming the record if a check failed."""
    ok = tf.cond(
        x["reason"] == OK,
        lambda: tf.constant(True),
        lambda: tf.py_function(_raise_bad_record, [x["path"], x["index"], x["reason"]], tf.bool),
    )
    with tf.control_dependencies([ok]):
        x = dict(x)
        x["image"] = tf.identity(x["image"])
    return x


def skip_filter(counter: SkipCounter):
    """A tf.data filter predicate keeping good records and counting the others."""

    def record_skip(path, index, reason):
        counter.add(path.numpy(), int(index), int(reason))
        return False

    def keep(x):
        return tf.cond(
            x["reason"] == OK,
            lambda: tf.constant(True),
            lambda: tf.py_function(record_skip, [x["path"], x["index"], x["reason"]], tf.bool),
        )

    return keep

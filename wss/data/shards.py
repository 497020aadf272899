"""Finds a split's TFRecord shards and checks them: folders, complete shard sets, and a
scan of every record's framing and id, so a corrupt file or an id missing from the split
is reported by name before a pipeline runs.
"""

import collections
import os
import re
from typing import Dict, List, Sequence, Tuple

import tensorflow as tf
from absl import logging

from wss import files as file_layer
from wss.data import schema
from wss.data.errors import DataError
from wss.data.record_ids import image_id

_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.tfrecord$")


def split_files(dataset_dir: str, split) -> List[str]:
    """Shards of `split` in `dataset_dir` (pattern `{split}-*`), sorted and complete.

    A list/tuple of sources (see parse_sources) gives the shards of all of them, in
    order. Raises DataError when the folder or split is missing, when only part of a
    `-of-N` shard set is present, or when a shard is empty.
    """
    if not isinstance(split, str):
        return source_files(dataset_dir, split)[0]
    if not file_layer.isdir(dataset_dir):
        raise DataError(
            f"Dataset folder {dataset_dir!r} does not exist; build it first "
            "(datasets/build_*_data.py) or fix --dataset_dir"
        )
    pattern = os.path.join(dataset_dir, f"{split}-*")
    files = file_layer.glob(pattern)
    if not files:
        present = sorted(
            {
                re.sub(r"-\d{5}-of-\d{5}\.tfrecord$", "", f)
                for f in file_layer.listdir(dataset_dir)
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
        files.extend(file_layer.glob(p.strip()))
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
        if file_layer.size(f) == 0:
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
    # ram:// keeps no modification time (0): such files are scanned every time.
    key = (file_layer.absolute(path), file_layer.size(path), file_layer.mtime_ns(path))
    if key[2] and key in _SCAN_CACHE:
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

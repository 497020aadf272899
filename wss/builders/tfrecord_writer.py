"""Writes DeepLab-format TFRecord shards in parallel, checked, and atomically.

Builders hand over a list of picklable work items and a top-level function that turns one
item into an `EncodedRecord` (reading, checking and encoding happen in worker processes);
this module shards, serialises and writes. A shard is written under a hidden temporary
name and renamed only when complete, so an interrupted run never leaves a file that
matches `{split}-*` but is half-written.
"""

import dataclasses
import math
import multiprocessing
import os
import sys
import time
from typing import Callable, Dict, List, Sequence

import tensorflow as tf

from wss import files
from wss.data import image_io, records, schema

EncodedRecord = records.EncodedRecord


@dataclasses.dataclass
class WriteReport:
    """What a write_split call did."""

    split: str
    files: List[str]
    written: int
    skipped: List[str]  # messages of bad items skipped (skip_bad=True only)


class _Progress:
    """A single self-overwriting progress line on stderr."""

    def __init__(self, split: str, total: int):
        self.split, self.total, self.start, self.last = split, total, time.time(), 0.0

    def update(self, done: int, force: bool = False):
        now = time.time()
        if force or now - self.last > 0.5:
            self.last = now
            rate = done / max(now - self.start, 1e-6)
            sys.stderr.write(f"\r[{self.split}] {done}/{self.total} images ({rate:.1f}/s)")
            if force:
                sys.stderr.write("\n")
            sys.stderr.flush()


def write_split(
    output_dir: str,
    split: str,
    items: Sequence,
    encode_fn: Callable[[object], EncodedRecord],
    num_shards: int = 4,
    num_workers: int = 0,
    skip_bad: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> WriteReport:
    """Encodes `items` with `encode_fn` and writes them as `num_shards` shards of `split`.

    Args:
      output_dir: folder for the shards (created if missing).
      split: split name; shards are `{split}-{i:05d}-of-{n:05d}.tfrecord`.
      items: picklable work items, written in this order (shard i gets a contiguous run).
      encode_fn: module-level function item -> EncodedRecord; raises BadPairError for a
        bad item.
      num_shards: number of shards (reduced to len(items) if larger).
      num_workers: worker processes; 0 = os.cpu_count(), 1 = run in this process.
      skip_bad: skip (and report) bad items instead of stopping at the first.
      resume: keep shards that already exist complete (same split, shard count).
      progress: print a progress line.
    """
    if not items:
        raise ValueError(
            f"No images to write for split {split!r}; check the input folder and id list"
        )
    files.makedirs(output_dir)
    num_shards = max(1, min(num_shards, len(items)))
    per_shard = int(math.ceil(len(items) / num_shards))
    num_workers = num_workers or os.cpu_count() or 1
    pool = None
    if num_workers > 1:
        # spawn: workers must not inherit TensorFlow's threads from a fork.
        pool = multiprocessing.get_context("spawn").Pool(num_workers)
    report = WriteReport(split, [], 0, [])
    bar = _Progress(split, len(items)) if progress else None
    done = 0
    try:
        for shard in range(num_shards):
            chunk = items[shard * per_shard : (shard + 1) * per_shard]
            path = os.path.join(output_dir, schema.shard_name(split, shard, num_shards))
            report.files.append(path)
            if resume and files.exists(path):
                done += len(chunk)
                continue
            args = [(encode_fn, item) for item in chunk]
            results = (
                pool.imap(records.safe_call, args, chunksize=4)
                if pool
                else map(records.safe_call, args)
            )
            with files.atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
                for record, error in results:
                    done += 1
                    if error is not None:
                        if not skip_bad:
                            raise image_io.BadPairError(
                                f"{error}\n(split {split!r}; rerun with --skip_bad to skip and "
                                "report bad images instead)"
                            )
                        report.skipped.append(error)
                    else:
                        writer.write(record.to_example().SerializeToString())
                        report.written += 1
                    if bar:
                        bar.update(done)
    finally:
        if pool:
            pool.terminate()
            pool.join()
    if bar:
        bar.update(done, force=True)
    if report.skipped:
        sys.stderr.write(
            f"[{split}] skipped {len(report.skipped)} bad images:\n  "
            + "\n  ".join(report.skipped)
            + "\n"
        )
    return report


def write_splits(
    output_dir: str,
    split_items: Dict[str, Sequence],
    encode_fn: Callable[[object], EncodedRecord],
    num_shards: int = 4,
    num_workers: int = 0,
    skip_bad: bool = False,
    resume: bool = False,
) -> Dict[str, int]:
    """write_split for each {split: items} in order; returns {split: records written}."""
    written = {}
    for split, items in split_items.items():
        report = write_split(
            output_dir,
            split,
            items,
            encode_fn,
            num_shards,
            num_workers,
            skip_bad=skip_bad,
            resume=resume,
        )
        written[split] = report.written
    return written

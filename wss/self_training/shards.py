"""Writing pseudo-label shards so that each is written exactly once, and resuming.

A shard is written under a hidden temporary name, its statistics (and the settings and
image list it was written with) are saved to OUT/.pseudo_label_stats/, and only then is it
renamed to `{output_split}-{i:05d}-of-{k:05d}.tfrecord`: a shard that exists is complete.
A rerun skips every existing shard after checking it was written with the same settings
and images; a rerun with other settings into the same folder is refused.
"""

import dataclasses
import glob
import json
import os
import re
from typing import List

import tensorflow as tf

from wss.data import schema
from wss.self_training.labels import LabelStats
from wss.self_training.plan import PseudoLabelError

STATS_DIR = ".pseudo_label_stats"


def atomic_json(path, data):
    """Writes `data` as JSON to `path` through a temporary file (never half written)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class ShardTarget:
    """Where one run's shards go and the settings each records (a resume must match)."""

    output_dir: str
    output_split: str
    num_shards: int
    num_classes: int
    settings: dict

    def path(self, shard):
        return os.path.join(
            self.output_dir, schema.shard_name(self.output_split, shard, self.num_shards)
        )

    def stats_path(self, shard):
        name = schema.shard_name(self.output_split, shard, self.num_shards)
        return os.path.join(self.output_dir, STATS_DIR, name + ".json")


class ShardWriter:
    """Writes one shard to a hidden temporary file; `commit` saves its statistics, then
    renames the file to its final name (so an existing shard is always complete)."""

    def __init__(self, target, shard):
        self.target, self.shard = target, shard
        self.path = target.path(shard)
        self.tmp = os.path.join(
            target.output_dir, f".{os.path.basename(self.path)}.tmp-{os.getpid()}"
        )
        self.writer = tf.io.TFRecordWriter(self.tmp)
        self.stats = LabelStats(target.num_classes)
        self.filenames = []

    def add(self, record, pseudo, ground_truth):
        """Writes one EncodedRecord and counts its pseudo label against the ground truth."""
        self.writer.write(record.to_example().SerializeToString())
        self.filenames.append(record.filename)
        self.stats.add(pseudo, ground_truth)

    def commit(self):
        self.writer.close()
        atomic_json(
            self.target.stats_path(self.shard),
            {
                "settings": self.target.settings,
                "filenames": self.filenames,
                "stats": self.stats.to_json(),
            },
        )
        os.replace(self.tmp, self.path)

    def abort(self):
        self.writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def finish_shard(writer, plan, total):
    """Commits `writer` if it holds exactly its planned images; adds its stats to `total`."""
    expected = plan.shard_filenames(writer.shard)
    if writer.filenames != expected:
        writer.abort()
        raise PseudoLabelError(
            f"shard {writer.shard} got {len(writer.filenames)} images, "
            f"expected {len(expected)} (input changed while reading?)"
        )
    writer.commit()
    total.merge(writer.stats)


def check_output(output_dir, output_split, num_shards, dataset_dir, split):
    """Refuses to overwrite the input split, or to mix shard counts in one folder."""
    if os.path.abspath(output_dir) == os.path.abspath(dataset_dir) and output_split == split:
        raise PseudoLabelError(
            f"--output_split {output_split!r} in --output_dir would "
            "overwrite the input split; choose another split name or "
            "folder."
        )
    pattern = os.path.join(output_dir, f"{output_split}-*.tfrecord")
    for path in glob.glob(pattern):
        m = re.search(r"-\d{5}-of-(\d{5})\.tfrecord$", path)
        if m and int(m.group(1)) != num_shards:
            raise PseudoLabelError(
                f"{path} belongs to a run with {int(m.group(1))} shards, this run has "
                f"{num_shards}. Fix: rerun with the same --num_shards, or use a new "
                "--output_dir / --output_split."
            )


@dataclasses.dataclass
class ResumeState:
    """The shards already complete and those to write, with the statistics so far."""

    done: List[int]
    todo: List[int]
    missing_stats: List[int]  # complete shards whose statistics were lost
    total: LabelStats


def resume_state(target, plan):
    """Sorts the planned shards into complete and to write; checks the complete ones were
    written with target.settings and the planned images, and sums their statistics."""
    state = ResumeState([], [], [], LabelStats(target.num_classes))
    for shard in range(plan.num_shards):
        if not os.path.exists(target.path(shard)):
            state.todo.append(shard)
            continue
        state.done.append(shard)
        if not os.path.exists(target.stats_path(shard)):
            state.missing_stats.append(shard)
            continue
        with open(target.stats_path(shard)) as f:
            saved = json.load(f)
        _check_saved(target.path(shard), saved, target.settings, plan.shard_filenames(shard))
        state.total.merge(LabelStats.from_json(target.num_classes, saved["stats"]))
    return state


def _check_saved(path, saved, settings, filenames):
    if saved["settings"] == settings and saved["filenames"] == filenames:
        return
    diff = sorted(
        key
        for key in set(saved["settings"]) | set(settings)
        if saved["settings"].get(key) != settings.get(key)
    )
    raise PseudoLabelError(
        f"{path} was written with other settings or images (differs in "
        f"{diff or ['the image list']}). Fix: rerun with the original settings, or "
        "write to a new --output_dir (or delete the old shards)."
    )

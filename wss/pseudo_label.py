"""Offline pseudo labels of a teacher model: the self-training baseline's data (issue 14).

A trained teacher (e.g. the supervised baseline) is run in inference mode over a split,
exactly like the evaluator (each batch padded to the eval crop, optional multi-scale and
flip, predictions cut back to each image's height and width). A pixel gets the teacher's
arg-max class when its maximum softmax probability is STRICTLY above the threshold (the
paper: "higher than 0.5"; exactly 0.5 is ignored) and 255 (ignore) elsewhere. The result
is written as DeepLab-format TFRecords (the original encoded image passed through,
filename kept) that the normal pipeline reads; the student then trains with the
supervised step on the union of the labeled split and these records, e.g.

    Experiment.labeled_split = ('train', 'runs/voc_1_8_teacher/pseudo:pseudo')

(see gin/voc_1_8_self_training.gin; the id list applies to 'train' only).

    python -m wss.pseudo_label --gin_file=gin/voc_1_8_supervised.gin \
        --model_dir=runs/voc_1_8_teacher --dataset_dir=/data/voc_tfrecord \
        --split=train_aug --output_dir=runs/voc_1_8_teacher/pseudo \
        [--output_split=pseudo] [--threshold=0.5] [--scales=0.75 --scales=1 --flip] \
        [--num_shards=16] [--exclude_id_list=datasets/splits/pascal_voc_seg/8_clean.txt]

Sharding and resume: the images of the split (in file order, after the id lists) are
assigned to shards deterministically (shard i holds images [i*n//k, (i+1)*n//k)). A
shard is written under a hidden temporary name, its statistics are saved to
OUT/.pseudo_label_stats/, and only then is it renamed to
`{output_split}-{i:05d}-of-{k:05d}.tfrecord`. A rerun of the same command skips every
shard that exists (no inference for its images), so after an interruption each shard is
written exactly once. A rerun with other settings (threshold, split, shard count, ...)
into the same folder is refused.

OUT/pseudo_label_report.json (also printed) holds the coverage (share of pixels that got
a label) and, where the split has ground truth, the pseudo labels' mIoU, per-class IoU
and pixel accuracy on the covered pixels.
"""

import bisect
import dataclasses
import glob
import json
import os
import re
import time
from typing import List, Optional

import numpy as np
import tensorflow as tf
from absl import flags

from wss import evaluation, metrics, program, restore
from wss.data import augment, image_io, pipeline, reader, records, schema
from wss.errors import UserError

IGNORE_LABEL = 255
DEFAULT_THRESHOLD = 0.5
DEFAULT_OUTPUT_SPLIT = "pseudo"
REPORT_NAME = "pseudo_label_report.json"
STATS_DIR = ".pseudo_label_stats"


class PseudoLabelError(UserError, RuntimeError):
    """Pseudo labels cannot be written as asked (names the problem and the fix)."""


# --------------------------------------------------------------------------- labels


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

    Probabilities come from wss.eval.make_logits_fn (same scales/flip handling as the
    evaluator); merge='probs' averages softmax probabilities over the views (DeepLab's
    multi-scale rule), merge='logits' averages logits, then takes the softmax.
    """
    if merge not in ("probs", "logits"):
        raise ValueError(f"merge must be 'probs' or 'logits', got {merge!r}")
    out_fn = evaluation.make_logits_fn(model, scales, flip, merge)

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
        self.num_images += other.num_images
        self.num_pixels += other.num_pixels
        self.labeled_pixels += other.labeled_pixels
        self.gt_pixels += other.gt_pixels
        self.confusion += other.confusion

    def to_json(self):
        return {
            "num_images": self.num_images,
            "num_pixels": self.num_pixels,
            "labeled_pixels": self.labeled_pixels,
            "gt_pixels": self.gt_pixels,
            "confusion_matrix": self.confusion.tolist(),
        }

    @classmethod
    def from_json(cls, num_classes, data):
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


# ---------------------------------------------------------------------- the plan


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
        return bisect.bisect_right(self.bounds, position) - 1

    def shard_filenames(self, shard):
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


# ---------------------------------------------------------------------- writing


def _atomic_json(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _stats_path(output_dir, output_split, shard, num_shards):
    return os.path.join(
        output_dir, STATS_DIR, schema.shard_name(output_split, shard, num_shards) + ".json"
    )


class _ShardWriter:
    """Writes one shard to a hidden temporary file; `commit` saves its statistics, then
    renames the file to its final name (so an existing shard is always complete)."""

    def __init__(self, output_dir, output_split, shard, num_shards, num_classes):
        self.path = os.path.join(output_dir, schema.shard_name(output_split, shard, num_shards))
        self.stats_path = _stats_path(output_dir, output_split, shard, num_shards)
        self.tmp = os.path.join(output_dir, f".{os.path.basename(self.path)}.tmp-{os.getpid()}")
        self.shard = shard
        self.writer = tf.io.TFRecordWriter(self.tmp)
        self.stats = LabelStats(num_classes)
        self.filenames = []

    def write(self, record):
        self.writer.write(record.to_example().SerializeToString())
        self.filenames.append(record.filename)

    def commit(self, settings):
        self.writer.close()
        _atomic_json(
            self.stats_path,
            {"settings": settings, "filenames": self.filenames, "stats": self.stats.to_json()},
        )
        os.replace(self.tmp, self.path)

    def abort(self):
        self.writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def _check_output(output_dir, output_split, num_shards, dataset_dir, split):
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


def generate(
    model,
    dataset_dir,
    split,
    output_dir,
    num_classes,
    crop_size,
    output_split=DEFAULT_OUTPUT_SPLIT,
    threshold=DEFAULT_THRESHOLD,
    scales=(1.0,),
    flip=False,
    merge="probs",
    num_shards=4,
    batch_size=4,
    id_list=None,
    exclude_ids=None,
    class_names=None,
    settings=None,
    progress_every=10,
    log=print,
):
    """Writes the teacher's thresholded pseudo labels of `split` as TFRecord shards.

    Args:
      model: the teacher (PseudoSegModel / DeepLabV3Plus / callable images -> logits at
        the input size, as wss.eval accepts), run in inference mode.
      dataset_dir, split: the input records (ground truth, if present, is only used for
        the report). id_list / exclude_ids: optional id selection (file path or ids).
      output_dir, output_split: shards `{output_split}-{i:05d}-of-{k:05d}.tfrecord`.
      num_classes: classes incl. background. crop_size: eval pad size (>= every image).
      threshold: a pixel is labeled iff its max probability is > threshold.
      scales, flip, merge: test-time augmentation (see make_label_fn).
      num_shards: shard count (at most the number of images).
      class_names: names for the report's per-class IoU.
      settings: extra JSON-able settings recorded per shard (e.g. the checkpoint);
        a resumed run must match them.
      progress_every: progress line every N batches (0: never).

    Returns the report dict (also written to output_dir/pseudo_label_report.json).
    """
    start = time.time()
    os.makedirs(os.path.join(output_dir, STATS_DIR), exist_ok=True)
    plan = make_plan(dataset_dir, split, num_shards, id_list, exclude_ids)
    k = plan.num_shards
    _check_output(output_dir, output_split, k, dataset_dir, split)
    settings = dict(settings or {})
    settings.update(
        dataset_dir=os.path.abspath(dataset_dir),
        split=split,
        output_split=output_split,
        threshold=float(threshold),
        scales=[float(s) for s in scales],
        flip=bool(flip),
        merge=merge,
        num_shards=k,
        num_images=len(plan.items),
        num_classes=int(num_classes),
    )
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples -> lists)

    done_shards, todo, total = [], [], LabelStats(num_classes)
    missing_stats = []
    for shard in range(k):
        path = os.path.join(output_dir, schema.shard_name(output_split, shard, k))
        if not os.path.exists(path):
            todo.append(shard)
            continue
        done_shards.append(shard)
        stats_path = _stats_path(output_dir, output_split, shard, k)
        if not os.path.exists(stats_path):
            missing_stats.append(shard)
            continue
        with open(stats_path) as f:
            saved = json.load(f)
        if saved["settings"] != settings or saved["filenames"] != plan.shard_filenames(shard):
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
        total.merge(LabelStats.from_json(num_classes, saved["stats"]))
    if missing_stats:
        log(
            f"warning: shards {missing_stats} exist without statistics in "
            f"{os.path.join(output_dir, STATS_DIR)}; the report leaves them out."
        )
    todo_images = sum(plan.bounds[s + 1] - plan.bounds[s] for s in todo)
    log(
        f"Pseudo-labeling {split!r} of {dataset_dir}: {len(plan.items)} images in {k} "
        f"shards; {len(done_shards)} shards already complete, {len(todo)} to write "
        f"({todo_images} images), threshold {threshold}."
    )

    if todo:
        label_fn = make_label_fn(model, threshold, scales, flip, merge)
        ds = inference_dataset(plan, todo, num_classes, crop_size, batch_size)
        current, done, t0 = None, 0, time.time()
        try:
            for index, batch in enumerate(ds):
                labels = label_fn(batch["image"]).numpy()
                gts = batch["label"].numpy()[..., 0]
                heights, widths = batch["height"].numpy(), batch["width"].numpy()
                for j in range(labels.shape[0]):
                    position = int(batch["position"][j])
                    shard = plan.shard_of(position)
                    if current is None or current.shard != shard:
                        if current is not None:
                            _finish_shard(current, plan, settings, total)
                        current = _ShardWriter(output_dir, output_split, shard, k, num_classes)
                    h, w = int(heights[j]), int(widths[j])
                    pseudo = labels[j, :h, :w].astype(np.uint8)
                    current.stats.add(pseudo, gts[j, :h, :w])
                    image_bytes = batch["encoded"][j].numpy()
                    current.write(
                        records.EncodedRecord(
                            filename=batch["filename"][j].numpy().decode("utf-8"),
                            image_bytes=image_bytes,
                            image_format=image_io.sniff_format(image_bytes) or "jpeg",
                            height=h,
                            width=w,
                            label_bytes=image_io.encode_label(pseudo),
                        )
                    )
                    done += 1
                if progress_every and ((index + 1) % progress_every == 0 or done == todo_images):
                    rate = done / max(time.time() - t0, 1e-6)
                    log(
                        f"  [{output_split}] {done}/{todo_images} images "
                        f"({rate:.1f}/s), shard {current.shard + 1}/{k}"
                    )
            if current is not None:
                _finish_shard(current, plan, settings, total)
                current = None
        finally:
            if current is not None:
                current.abort()

    report = total.summary(class_names)
    report.update(
        split=split,
        dataset_dir=dataset_dir,
        output_dir=output_dir,
        output_split=output_split,
        threshold=float(threshold),
        num_shards=k,
        shards_written=todo,
        shards_reused=done_shards,
        shards_without_stats=missing_stats,
        settings=settings,
        seconds=time.time() - start,
    )
    _atomic_json(os.path.join(output_dir, REPORT_NAME), report)
    log(format_report(report))
    return report


def _finish_shard(writer, plan, settings, total):
    expected = plan.shard_filenames(writer.shard)
    if writer.filenames != expected:
        writer.abort()
        raise PseudoLabelError(
            f"shard {writer.shard} got {len(writer.filenames)} images, "
            f"expected {len(expected)} (input changed while reading?)"
        )
    writer.commit(settings)
    total.merge(writer.stats)


def format_report(report):
    lines = [
        f"Pseudo labels: {report['num_images']} images, coverage "
        f"{100 * report['coverage']:.2f}% of {report['num_pixels']} pixels "
        f"(threshold {report['threshold']})"
    ]
    if report["has_ground_truth"]:
        lines.append(
            f"  vs ground truth on covered pixels: mIoU "
            f"{100 * report['miou']:.2f}, pixel accuracy "
            f"{100 * report['pixel_accuracy']:.2f} (covers "
            f"{100 * report['gt_coverage']:.2f}% of labeled ground truth)"
        )
    else:
        lines.append("  (no ground truth in the split: no mIoU)")
    lines.append(
        f"  shards {report['output_dir']}/{report['output_split']}-*: "
        f"{len(report['shards_written'])} written, "
        f"{len(report['shards_reused'])} already complete"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- CLI

FLAGS = program.flag_values()
restore.define_model_flags(FLAGS)
restore.define_data_flags(
    FLAGS, split_help="Split to pseudo-label (default: Experiment.extra_split)."
)
flags.DEFINE_string(
    "output_dir",
    None,
    "Folder for the pseudo-label shards and pseudo_label_report.json.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "output_split", DEFAULT_OUTPUT_SPLIT, "Split name of the written shards.", flag_values=FLAGS
)
flags.DEFINE_float(
    "threshold",
    DEFAULT_THRESHOLD,
    "Label a pixel iff the teacher's max probability is strictly above this.",
    flag_values=FLAGS,
)
flags.DEFINE_multi_float(
    "scales", [1.0], "Teacher scales (multi-scale: e.g. 0.75 1 1.25).", flag_values=FLAGS
)
flags.DEFINE_bool("flip", False, "Also average the left-right flipped view.", flag_values=FLAGS)
flags.DEFINE_enum(
    "merge",
    "probs",
    ["probs", "logits"],
    "Average probabilities (DeepLab) or logits over scales/flip.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_shards", 4, "Output shards.", flag_values=FLAGS)
flags.DEFINE_string(
    "id_list", None, "Only pseudo-label these ids (id list file).", flag_values=FLAGS
)
flags.DEFINE_string(
    "exclude_id_list",
    None,
    "Leave these ids out (e.g. the labeled list, whose ground truth the student already has).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "progress_every", 10, "Progress line every N batches (0: off).", flag_values=FLAGS
)


def main(argv=None):
    """CLI entry point; returns the report dict (None for --help)."""
    from wss import experiment

    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    if not fv.output_dir:
        raise restore.RestoreError("pass --output_dir (where the pseudo labels go).")
    setup = restore.setup_from_flags(fv, what="the teacher")
    model_dir, model, desc = setup.model_dir, setup.model, setup.descriptor
    name, dataset_dir, crop = setup.dataset_name, setup.dataset_dir, setup.crop
    split = fv.split or experiment.Experiment().extra_split
    ckpt = restore.restore_model(model, fv.checkpoint or model_dir)
    try:
        return generate(
            model,
            dataset_dir,
            split,
            fv.output_dir,
            desc.num_classes,
            crop or desc.eval_crop_size,
            output_split=fv.output_split,
            threshold=fv.threshold,
            scales=fv.scales,
            flip=fv.flip,
            merge=fv.merge,
            num_shards=fv.num_shards,
            batch_size=fv.batch_size,
            id_list=experiment.resolve_path(fv.id_list),
            exclude_ids=experiment.resolve_path(fv.exclude_id_list),
            class_names=desc.class_names,
            settings={
                "checkpoint": os.path.abspath(ckpt),
                "dataset": name,
                "id_list": fv.id_list,
                "exclude_id_list": fv.exclude_id_list,
                "eval_crop_size": crop,
            },
            progress_every=fv.progress_every,
            log=lambda s: print(s, flush=True),
        )
    except (reader.DataError, PseudoLabelError) as e:
        raise restore.RestoreError(str(e)) from e


if __name__ == "__main__":
    program.run(main, FLAGS)

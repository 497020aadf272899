"""Offline pseudo labels of a teacher model: the self-training baseline's data (issue 14).

A trained teacher (e.g. the supervised baseline) is run in inference mode over a split,
exactly like the evaluator (each batch padded to the eval crop, optional multi-scale and
flip, predictions cut back to each image's height and width). A pixel gets the teacher's
arg-max class when its maximum softmax probability is strictly above the threshold and
255 (ignore) elsewhere (wss.self_training.labels). The result is written as
DeepLab-format TFRecords (the original encoded image passed through, filename kept) that
the normal pipeline reads; the student then trains with the supervised step on the union
of the labeled split and these records, e.g.

    Experiment.labeled_split = ('train', 'runs/voc_1_8_teacher/pseudo:pseudo')

(see gin/voc_1_8_self_training.gin; the id list applies to 'train' only).

`generate` runs the steps: plan the shards (wss.self_training.plan), find those already
complete (wss.self_training.shards: each shard is written exactly once, a rerun resumes),
label and write the rest, then write OUT/pseudo_label_report.json: the coverage (share of
pixels that got a label) and, where the split has ground truth, the pseudo labels' mIoU,
per-class IoU and pixel accuracy on the covered pixels. The command line is
wss.pseudo_label.
"""

import json
import os
import time

import numpy as np

from wss.data import image_io, records
from wss.self_training.labels import DEFAULT_THRESHOLD, make_label_fn
from wss.self_training.plan import inference_dataset, make_plan
from wss.self_training.shards import (
    STATS_DIR,
    ShardTarget,
    ShardWriter,
    atomic_json,
    check_output,
    finish_shard,
    resume_state,
)

DEFAULT_OUTPUT_SPLIT = "pseudo"
REPORT_NAME = "pseudo_label_report.json"


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
        the input size, as wss.evaluation.evaluator accepts), run in inference mode.
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
    check_output(output_dir, output_split, plan.num_shards, dataset_dir, split)
    recorded = _recorded_settings(
        settings,
        plan,
        dataset_dir,
        split=split,
        output_split=output_split,
        threshold=float(threshold),
        scales=[float(s) for s in scales],
        flip=bool(flip),
        merge=merge,
        num_classes=int(num_classes),
    )
    target = ShardTarget(output_dir, output_split, plan.num_shards, int(num_classes), recorded)
    state = resume_state(target, plan)
    _log_start(log, state, plan, target, dataset_dir, split, threshold)
    if state.todo:
        label_fn = make_label_fn(model, threshold, scales, flip, merge)
        batches = inference_dataset(plan, state.todo, num_classes, crop_size, batch_size)
        todo_images = sum(plan.shard_size(s) for s in state.todo)
        progress = _Progress(todo_images, progress_every, target, log)
        write_shards(batches, label_fn, plan, target, state.total, progress)
    report = _report(state, target, class_names, split, dataset_dir, threshold)
    report["seconds"] = time.time() - start
    atomic_json(os.path.join(output_dir, REPORT_NAME), report)
    log(format_report(report))
    return report


def _recorded_settings(extra, plan, dataset_dir, **values):
    """The settings every shard records (a resumed run must match them), as JSON reads
    them back (tuples become lists): `extra`, the labelling values and the plan's size."""
    recorded = dict(extra or {})
    recorded.update(
        values,
        dataset_dir=os.path.abspath(dataset_dir),
        num_shards=plan.num_shards,
        num_images=len(plan.items),
    )
    return json.loads(json.dumps(recorded))


def _report(state, target, class_names, split, dataset_dir, threshold):
    """The run's report: the statistics of every shard with statistics, and what ran."""
    report = state.total.summary(class_names)
    report.update(
        split=split,
        dataset_dir=dataset_dir,
        output_dir=target.output_dir,
        output_split=target.output_split,
        threshold=float(threshold),
        num_shards=target.num_shards,
        shards_written=state.todo,
        shards_reused=state.done,
        shards_without_stats=state.missing_stats,
        settings=target.settings,
    )
    return report


def _log_start(log, state, plan, target, dataset_dir, split, threshold):
    if state.missing_stats:
        log(
            f"warning: shards {state.missing_stats} exist without statistics in "
            f"{os.path.join(target.output_dir, STATS_DIR)}; the report leaves them out."
        )
    todo_images = sum(plan.shard_size(s) for s in state.todo)
    log(
        f"Pseudo-labeling {split!r} of {dataset_dir}: {len(plan.items)} images in "
        f"{plan.num_shards} shards; {len(state.done)} shards already complete, "
        f"{len(state.todo)} to write ({todo_images} images), threshold {threshold}."
    )


def write_shards(batches, label_fn, plan, target, total, progress):
    """Labels each batch and writes every image into its planned shard; a shard is
    committed when the next one starts (batches arrive in output order)."""
    writer = None
    try:
        for index, batch in enumerate(batches):
            labels = label_fn(batch["image"]).numpy()
            for position, record, pseudo, ground_truth in batch_records(batch, labels):
                shard = plan.shard_of(position)
                if writer is None or writer.shard != shard:
                    if writer is not None:
                        finish_shard(writer, plan, total)
                    writer = ShardWriter(target, shard)
                writer.add(record, pseudo, ground_truth)
                progress.images += 1
            progress.batch_done(index, writer.shard)
        if writer is not None:
            finish_shard(writer, plan, total)
            writer = None
    finally:
        if writer is not None:
            writer.abort()


def batch_records(batch, labels):
    """Per image of a labelled inference batch: (output position, EncodedRecord of the
    original image with its pseudo label, pseudo label [h,w] uint8, ground truth [h,w]),
    both cut back from the padded batch to the image's size."""
    ground_truth = batch["label"].numpy()[..., 0]
    heights, widths = batch["height"].numpy(), batch["width"].numpy()
    for j in range(labels.shape[0]):
        h, w = int(heights[j]), int(widths[j])
        pseudo = labels[j, :h, :w].astype(np.uint8)
        image_bytes = batch["encoded"][j].numpy()
        record = records.EncodedRecord(
            filename=batch["filename"][j].numpy().decode("utf-8"),
            image_bytes=image_bytes,
            image_format=image_io.sniff_format(image_bytes) or "jpeg",
            height=h,
            width=w,
            label_bytes=image_io.encode_label(pseudo),
        )
        yield int(batch["position"][j]), record, pseudo, ground_truth[j, :h, :w]


class _Progress:
    """A progress line every `every` batches (and after the last image)."""

    def __init__(self, total_images, every, target, log):
        self.total, self.every, self.target, self.log = total_images, every, target, log
        self.images, self.start = 0, time.time()

    def batch_done(self, index, shard):
        if not self.every or ((index + 1) % self.every and self.images != self.total):
            return
        rate = self.images / max(time.time() - self.start, 1e-6)
        self.log(
            f"  [{self.target.output_split}] {self.images}/{self.total} images "
            f"({rate:.1f}/s), shard {shard + 1}/{self.target.num_shards}"
        )


def format_report(report):
    """The report's few lines for the console: coverage, mIoU, shards written."""
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

"""Writes a teacher's offline pseudo labels of a split: the self-training baseline's data.

    python -m wss.pseudo_label --gin_file=gin/voc_1_8_supervised.gin \
        --model_dir=runs/voc_1_8_teacher --dataset_dir=/data/voc_tfrecord \
        --split=train_aug --output_dir=runs/voc_1_8_teacher/pseudo \
        [--output_split=pseudo] [--threshold=0.5] [--scales=0.75 --scales=1 --flip] \
        [--num_shards=16] [--exclude_id_list=datasets/splits/pascal_voc_seg/8_clean.txt]

A pixel gets the teacher's arg-max class where its maximum probability is strictly above
--threshold, 255 (ignore) elsewhere; the shards `{output_split}-{i:05d}-of-{k:05d}.tfrecord`
are DeepLab-format TFRecords a student reads as part of its labeled set (see
gin/voc_1_8_self_training.gin). A rerun of the same command skips every shard already
written, so an interrupted run resumes; a rerun with other settings into the same folder
is refused. OUT/pseudo_label_report.json (also printed) holds the coverage and, where the
split has ground truth, the pseudo labels' mIoU on the covered pixels.

The work lives in wss.self_training.labeller. A 'tfds:' dataset is refused at once with
one error line (wss.self_training.plan.check_dataset says why and what to do instead).
"""

from absl import flags

from wss import files, program, restore
from wss.data import reader
from wss.self_training import labeller
from wss.self_training.labels import DEFAULT_THRESHOLD
from wss.self_training.plan import PseudoLabelError, check_dataset

FLAGS = program.flag_values()
program.define_model_flags(FLAGS)
program.define_data_flags(
    FLAGS, split_help="Split to pseudo-label (default: Experiment.extra_split)."
)
flags.DEFINE_string(
    "output_dir",
    None,
    "Folder for the pseudo-label shards and pseudo_label_report.json.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "output_split",
    labeller.DEFAULT_OUTPUT_SPLIT,
    "Split name of the written shards.",
    flag_values=FLAGS,
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
    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    if not fv.output_dir:
        raise restore.RestoreError("pass --output_dir (where the pseudo labels go).")
    setup = restore.setup_tool(
        **program.model_flag_values(fv), **program.data_flag_values(fv), what="the teacher"
    )
    check_dataset(setup.dataset_name)
    split = fv.split or setup.config.experiment.extra_split
    checkpoint = restore.restore_model(setup.model, fv.checkpoint or setup.model_dir)
    try:
        return labeller.generate(
            setup.model,
            setup.dataset_dir,
            split,
            fv.output_dir,
            setup.descriptor.num_classes,
            setup.crop,
            output_split=fv.output_split,
            threshold=fv.threshold,
            scales=fv.scales,
            flip=fv.flip,
            merge=fv.merge,
            num_shards=fv.num_shards,
            batch_size=fv.batch_size,
            id_list=files.resolve_path(fv.id_list),
            exclude_ids=files.resolve_path(fv.exclude_id_list),
            class_names=setup.descriptor.class_names,
            settings={
                "checkpoint": files.absolute(checkpoint),
                "dataset": setup.dataset_name,
                "id_list": fv.id_list,
                "exclude_id_list": fv.exclude_id_list,
                "eval_crop_size": setup.crop,
            },
            progress_every=fv.progress_every,
            log=lambda s: print(s, flush=True),
        )
    except (reader.DataError, PseudoLabelError) as e:
        raise restore.RestoreError(str(e)) from e


if __name__ == "__main__":
    program.run(main, FLAGS)

"""Draws class-balanced labeled subsets of a split, or checks a labeled id list.

  python datasets/make_splits.py --dataset=pascal_voc_seg --dataset_dir=data/voc \
      --split=train --fractions=2,4,8,16 --min_per_class=1 --seed=8888 --output_dir=splits
  python datasets/make_splits.py --dataset=pascal_voc_seg --dataset_dir=data/voc \
      --check=splits/4_train_seed8888.txt --extra_split=train_aug

Each written list starts with '#' lines recording seed, draw and sizes. A 'tfds:<builder>'
--dataset reads TensorFlow Datasets (--dataset_dir is then its data directory and the
splits TFDS split strings).
"""

import math
import os

import _path  # noqa: F401
from absl import flags

from wss import program
from wss.data import class_stats, descriptors, reader, splits, tfds_registry

FLAGS = program.flag_values()
flags.DEFINE_string(
    "dataset", "pascal_voc_seg", "Registered dataset name (or 'tfds:<builder>').", flag_values=FLAGS
)
flags.DEFINE_string(
    "dataset_dir",
    None,
    "Folder of the TFRecords (for a 'tfds:' --dataset, the TFDS data directory).",
    flag_values=FLAGS,
)
flags.DEFINE_string("split", "train", "Split to draw from.", flag_values=FLAGS)
flags.DEFINE_list(
    "fractions",
    None,
    "Denominators, e.g. 2,4,8,16 (default: the dataset's paper fractions).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "min_per_class", 1, "Every class must be in at least k images.", flag_values=FLAGS
)
flags.DEFINE_integer("seed", 8888, "Sampling seed (recorded in the output).", flag_values=FLAGS)
flags.DEFINE_integer("num_draws", 1, "Independent subsets per fraction.", flag_values=FLAGS)
flags.DEFINE_string("output_dir", "splits", "Folder for the id lists.", flag_values=FLAGS)
flags.DEFINE_string(
    "check",
    None,
    "Instead of sampling: check this id list against --extra_split and report the overlap.",
    flag_values=FLAGS,
)
flags.DEFINE_string("extra_split", "train_aug", "Extra split for --check.", flag_values=FLAGS)
flags.mark_flag_as_required("dataset_dir", flag_values=FLAGS)


def _check():
    labeled = splits.read_id_list(FLAGS.check)
    if tfds_registry.is_tfds_name(FLAGS.dataset):
        from wss.data import tfds_source  # imports tensorflow_datasets: TFDS names only

        extra = tfds_source.split_ids(FLAGS.dataset, FLAGS.dataset_dir, FLAGS.extra_split)
    else:
        scans = reader.scan_files(reader.split_files(FLAGS.dataset_dir, FLAGS.extra_split))
        reader.select_ids(scans, labeled, FLAGS.check)
        extra = [reader.image_id(i) for s in scans for i in s.ids]
    rep = splits.check_labeled_against_extra(labeled, extra)
    print(
        f"{FLAGS.check}: {rep.num_labeled} labeled ids, all in {FLAGS.extra_split} "
        f"({rep.num_extra} records); {len(rep.overlap)} overlap (the release keeps them "
        "in the extra set; pass exclude_ids to the extra pipeline to drop them)."
    )


def main(argv=None):
    if not program.parse_flags(FLAGS, argv):
        return None
    if FLAGS.check:
        _check()
        return
    desc = descriptors.get_descriptor(FLAGS.dataset)
    fractions = [
        int(f) for f in (FLAGS.fractions or descriptors.LABELED_FRACTIONS.get(FLAGS.dataset, (8,)))
    ]
    ids, classes = class_stats.class_presence(
        FLAGS.dataset_dir, FLAGS.split, desc.num_classes, dataset_name=FLAGS.dataset
    )
    for frac in fractions:
        size = int(math.ceil(len(ids) / frac))
        for draw in range(FLAGS.num_draws):
            sample = splits.sample_balanced(
                ids,
                classes,
                size,
                desc.num_classes,
                FLAGS.min_per_class,
                FLAGS.seed,
                skip_draws=draw,
            )
            name = f"{frac}_{FLAGS.split}_seed{FLAGS.seed}" + (f"_{draw}" if draw else "") + ".txt"
            path = os.path.join(FLAGS.output_dir, name)
            splits.write_id_list(
                path,
                sample.ids,
                splits.sample_header(
                    sample, f"{FLAGS.dataset}/{FLAGS.split}", f"fraction=1/{frac}"
                ),
            )
            print(f"{path}: {size} ids (draw {sample.draw})")


if __name__ == "__main__":
    program.run(main, FLAGS)

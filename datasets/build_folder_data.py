"""Converts a folder of images and masks (matched by file stem) to DeepLab TFRecords.

  python datasets/build_folder_data.py --images=DIR --masks=DIR [--unlabeled=DIR] \
      --classes=classes.txt --output_dir=DIR [--val_fraction=0.1] \
      [--label_map=0:0,255:1] [--seed=0] [--allow_missing_masks] [--class_weights]

classes.txt: one class name per line, line i = class id i (background first), each
optionally followed by a colour `#rrggbb`. Masks are index PNGs (grey or palette: the
index values are the class ids; 255 = ignore); --label_map maps raw values first (e.g.
binary masks saved as 0/255: --label_map=0:0,255:1). Writes the splits train, val,
unlabeled and extra (train + unlabeled), their id lists, and descriptor.json; then train
with `Experiment.dataset_name = 'OUTPUT_DIR/descriptor.json'`.
"""

import os

import _path  # noqa: F401
from absl import flags

from wss import files, program
from wss.builders import folder

FLAGS = program.flag_values()
flags.DEFINE_string("images", None, "Folder of images (ids = file stems).", flag_values=FLAGS)
flags.DEFINE_string(
    "masks", None, "Folder of masks with the same stems as the images.", flag_values=FLAGS
)
flags.DEFINE_string(
    "unlabeled", None, "Optional folder of images without masks.", flag_values=FLAGS
)
flags.DEFINE_string(
    "classes", None, "classes.txt: one class name per line, background first.", flag_values=FLAGS
)
flags.DEFINE_float(
    "val_fraction", 0.1, "Fraction of the labeled images held out as val.", flag_values=FLAGS
)
flags.DEFINE_string(
    "label_map",
    None,
    "RAW:CLASS pairs applied to mask values first, "
    "e.g. 0:0,255:1; a value mapped to 255 is ignored.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("seed", 0, "Seed of the train/val split.", flag_values=FLAGS)
flags.DEFINE_bool(
    "allow_missing_masks",
    False,
    "Write images of --images that have no mask as unlabeled instead of stopping.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "name",
    None,
    "Dataset name in the descriptor (default: the output folder name).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "train_crop_size",
    None,
    "Default training crop (default: min(513, eval crop)).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "eval_crop_size",
    None,
    "Eval crop (default: smallest 16k+1 >= the largest image side).",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "extra_split",
    True,
    "Also write 'extra' = train + unlabeled (the "
    "PseudoSeg extra set), when there are unlabeled images.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "class_weights",
    False,
    "Also write class_weights.json (inverse "
    "pixel frequency over the train split, mean 1 over present classes).",
    flag_values=FLAGS,
)
program.define_builder_flags(
    FLAGS,
    num_shards=4,
    output_help="Folder for the TFRecords and descriptor.json.",
    resumable=False,
)
flags.DEFINE_bool(
    "overwrite", False, "Replace an earlier build in --output_dir.", flag_values=FLAGS
)
flags.mark_flags_as_required(["images", "masks", "classes", "output_dir"], flag_values=FLAGS)


def main(argv=None):
    if not program.parse_flags(FLAGS, argv):
        return None
    path = folder.build_folder(
        FLAGS.images,
        FLAGS.masks,
        FLAGS.classes,
        FLAGS.output_dir,
        unlabeled_dir=FLAGS.unlabeled,
        val_fraction=FLAGS.val_fraction,
        label_map=FLAGS.label_map,
        seed=FLAGS.seed,
        allow_missing_masks=FLAGS.allow_missing_masks,
        name=FLAGS.name,
        train_crop_size=FLAGS.train_crop_size,
        eval_crop_size=FLAGS.eval_crop_size,
        num_shards=FLAGS.num_shards,
        num_workers=FLAGS.num_workers,
        write_extra=FLAGS.extra_split,
        overwrite=FLAGS.overwrite,
    )
    from wss.data import descriptors

    desc = descriptors.load_descriptor(path)
    print(
        f"Wrote {desc.splits_to_sizes} ({desc.num_classes} classes, crops "
        f"{desc.train_crop_size}/{desc.eval_crop_size}) and {path}"
    )
    if FLAGS.class_weights:
        from wss.data import class_stats

        out = class_stats.write_split_class_weights(FLAGS.output_dir, "train", desc)
        print(f"Wrote {out}")
    path = files.absolute(path)
    print(
        f"Train with: --gin_param=\"Experiment.dataset_name='{path}'\" "
        f"--dataset_dir={os.path.dirname(path)}"
    )


if __name__ == "__main__":
    program.run(main, FLAGS)

"""Converts COCO 2017 instance annotations to 81-class semantic TFRecords.

  python datasets/build_coco_data.py --coco_dir=coco --output_dir=data/coco \
      [--unlabeled_dir=coco/unlabeled2017]

Reads {coco_dir}/annotations/instances_{train,val}2017.json and {coco_dir}/{train,val}2017;
needs pycocotools (pip install -e ".[coco]"). Every source is checked before anything is
written; the last line counts each split (train 118,287, val 5,000, unlabeled 123,403
on the full COCO 2017).
"""

import os

import _path  # noqa: F401
from absl import flags

from wss import program
from wss.builders import coco

FLAGS = program.flag_values()
flags.DEFINE_string(
    "coco_dir", None, "COCO root with annotations/ and image folders.", flag_values=FLAGS
)
flags.DEFINE_list("splits", ["train", "val"], "Labeled splits to write.", flag_values=FLAGS)
flags.DEFINE_string(
    "unlabeled_dir",
    None,
    'Optional folder of images written as image-only records in split "unlabeled".',
    flag_values=FLAGS,
)
program.define_builder_flags(FLAGS, num_shards=256)
flags.mark_flags_as_required(["coco_dir", "output_dir"], flag_values=FLAGS)


def main(argv=None):
    if not program.parse_flags(FLAGS, argv):
        return None
    todo = {}
    for s in FLAGS.splits:
        todo[s] = (
            os.path.join(FLAGS.coco_dir, "annotations", f"instances_{s}2017.json"),
            os.path.join(FLAGS.coco_dir, f"{s}2017"),
        )
    if FLAGS.unlabeled_dir:
        todo["unlabeled"] = (None, FLAGS.unlabeled_dir)
    _, summary = coco.build_coco(
        FLAGS.output_dir,
        todo,
        FLAGS.num_shards,
        FLAGS.num_workers,
        FLAGS.skip_bad,
        FLAGS.resume,
    )
    print(f"Wrote {summary} to {FLAGS.output_dir}")


if __name__ == "__main__":
    program.run(main, FLAGS)

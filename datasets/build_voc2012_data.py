"""Converts PASCAL VOC 2012 (+ SBD augmented labels) to DeepLab TFRecords.

  python datasets/build_voc2012_data.py --voc_dir=VOCdevkit/VOC2012 \
      --aug_label_dir=SegmentationClassAug --output_dir=data/voc \
      --splits=train,val,train_aug [--id_list=4_clean=datasets/splits/pascal_voc_seg/4_clean.txt]

  python datasets/build_voc2012_data.py --voc_dir=VOCdevkit/VOC2012 \
      --sbd_dir=benchmark_RELEASE/dataset/cls --output_dir=data/voc   # pip install -e ".[voc]"

Every source is checked before anything is written (a label folder that yields no labels,
or far fewer than its lists name, stops with one error line); palette label PNGs become
index PNGs; every pair is checked (decodable, same size, values in [0, 21) or 255);
shards are written atomically, in parallel. The last line counts each split per source
(train_aug 10,582 = 1,464 VOC + 9,118 SBD on the full datasets).
"""

import _path  # noqa: F401
from absl import flags

from wss import program
from wss.builders import voc

FLAGS = program.flag_values()
flags.DEFINE_string("voc_dir", None, "VOCdevkit/VOC2012 (or VOCdevkit).", flag_values=FLAGS)
flags.DEFINE_string(
    "aug_label_dir", None, "SegmentationClassAug folder of index PNGs.", flag_values=FLAGS
)
flags.DEFINE_string(
    "sbd_dir",
    None,
    'SBD\'s benchmark_RELEASE/dataset/cls folder of .mat labels (pip install -e ".[voc]").',
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "splits", ["train", "val", "train_aug"], "VOC splits to write.", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "id_list", [], "Extra split as name=path of an id list.", flag_values=FLAGS
)
program.define_builder_flags(FLAGS, num_shards=4)
flags.mark_flags_as_required(["voc_dir", "output_dir"], flag_values=FLAGS)


def main(argv=None):
    if not program.parse_flags(FLAGS, argv):
        return None
    id_lists = dict(item.split("=", 1) for item in FLAGS.id_list)
    _, summary = voc.build_voc(
        FLAGS.voc_dir,
        FLAGS.output_dir,
        FLAGS.splits,
        FLAGS.aug_label_dir,
        FLAGS.sbd_dir,
        id_lists,
        FLAGS.num_shards,
        FLAGS.num_workers,
        FLAGS.skip_bad,
        FLAGS.resume,
    )
    print(f"Wrote {summary} to {FLAGS.output_dir}")


if __name__ == "__main__":
    program.run(main, FLAGS)

"""Builds the synthetic 'demo' dataset (see wss/builders/demo.py) as DeepLab TFRecords.

  python datasets/build_demo_data.py --output_dir=demo_data [--seed=0]
  python datasets/build_demo_data.py --as_folders --output_dir=mine [--num_labeled=64]

--as_folders writes the images as PNG folders instead (images/, masks/, unlabeled/,
classes.txt), the input of datasets/build_folder_data.py, to try that path end to end.
"""

import time

import _path  # noqa: F401
from absl import flags

from wss import program
from wss.builders import demo

FLAGS = program.flag_values()
flags.DEFINE_string("output_dir", "demo_data", "Folder for the TFRecords.", flag_values=FLAGS)
flags.DEFINE_integer(
    "seed", 0, "Generation seed; the same seed gives the same data.", flag_values=FLAGS
)
flags.DEFINE_bool(
    "as_folders",
    False,
    "Write PNG folders (images, masks, unlabeled, classes.txt) instead of TFRecords.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "num_labeled", 64, "With --as_folders: images written with masks.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "num_unlabeled",
    demo.DEMO_TRAIN - 64,
    "With --as_folders: images written without masks.",
    flag_values=FLAGS,
)


def main(argv=None):
    if not program.parse_flags(FLAGS, argv):
        return None
    start = time.time()
    if FLAGS.as_folders:
        sizes = demo.export_demo_folders(
            FLAGS.output_dir,
            seed=FLAGS.seed,
            num_labeled=FLAGS.num_labeled,
            num_unlabeled=FLAGS.num_unlabeled,
        )
    else:
        sizes = demo.build_demo_dataset(FLAGS.output_dir, seed=FLAGS.seed, progress=True)
    print(f"Wrote {sizes} to {FLAGS.output_dir} in {time.time() - start:.1f}s")


if __name__ == "__main__":
    program.run(main, FLAGS)

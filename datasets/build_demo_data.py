"""Builds the synthetic 'demo' dataset (see wss/data/demo.py) as DeepLab TFRecords.

  python datasets/build_demo_data.py --output_dir=demo_data [--seed=0]
"""
import time

from absl import app
from absl import flags

import _path  # noqa: F401  pylint: disable=unused-import
from wss.data import demo

flags.DEFINE_string('output_dir', 'demo_data', 'Folder for the TFRecords.')
flags.DEFINE_integer('seed', 0, 'Generation seed; the same seed gives the same data.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  start = time.time()
  sizes = demo.build_demo_dataset(FLAGS.output_dir, seed=FLAGS.seed, progress=True)
  print(f'Wrote {sizes} to {FLAGS.output_dir} in {time.time() - start:.1f}s')


if __name__ == '__main__':
  app.run(main)

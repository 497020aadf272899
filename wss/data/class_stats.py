"""Per-image class presence read from a split's TFRecords (input to the split sampler)."""
import functools
from typing import List, Set, Tuple

import tensorflow as tf

from wss.data import reader


def class_presence(dataset_dir: str, split: str,
                   num_classes: int) -> Tuple[List[str], List[Set[int]]]:
  """Ids of a split and, per id, the set of foreground classes in its mask.

  Records are checked like the training pipeline does (bad ones raise naming the
  record); unlabeled records give an empty set.
  """
  files = reader.split_files(dataset_dir, split)
  scans = reader.scan_files(files)
  ds = reader.records_dataset(scans, num_parallel_reads=1, deterministic=True)
  decode = functools.partial(reader.decode_record, num_classes=num_classes,
                             require_label=False)

  def present(p, i, r):
    x = reader.assert_ok(decode(p, i, r))
    flat = tf.reshape(x['label'], [-1])
    flat = tf.where(flat < num_classes, flat, 0)
    counts = tf.math.bincount(flat, minlength=num_classes, maxlength=num_classes)
    return x['filename'], counts > 0

  ds = ds.map(present, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(64)
  ids, classes = [], []
  for names, hits in ds:
    for n, h in zip(names.numpy(), hits.numpy()):
      ids.append(reader.image_id(n.decode('utf-8')))
      classes.append({c for c in range(1, num_classes) if h[c]})
  order = sorted(range(len(ids)), key=ids.__getitem__)  # independent of sharding
  return [ids[i] for i in order], [classes[i] for i in order]

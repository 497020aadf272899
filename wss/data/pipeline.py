"""The three tf.data input streams of PseudoSeg: labeled, extra (weak + strong), eval.

Output contract (per batch):
  labeled: 'image' float32 [B,crop,crop,3] in [0,255] (padding 127.5), 'label' int32
    [B,crop,crop,1] (255 = ignore, incl. padding), 'valid' float32 [B,crop,crop,1],
    'image_labels' float32 [B,C-1] (classes present in the cropped label).
  extra: 'image' (weak view), 'strong', 'valid' (shared mask), 'label' (ground truth
    or all 255), 'has_label' float32 [B], 'image_labels' float32 [B,C-1]; plus
    'weak_valid' only if StrongConfig.shared_valid is False.
  eval: 'image', 'label', 'valid' padded to the eval crop, 'height', 'width' int32 [B],
    'filename' string [B].
The two training streams share one description of what they read (`TrainingStream`).
Each builder takes `input_context` (tf.distribute.InputContext) to shard by input
pipeline; `make_dataset_fn` wraps a builder for distribute_datasets_from_function.

TPUStrategy's rules, which the training streams keep on every strategy: every shape is
static (the batch through drop_remainder, the crop, the class count), no string tensor
reaches the step, and each host (input pipeline) reads its own shard of the files
through the input context. Files are read by tf.data, so `gs://` paths work where the
shard listing (wss.data.reader) does.
"""

import dataclasses
import functools
from typing import Optional, Sequence, Union

import tensorflow as tf

from wss.data import augment, descriptors, reader, splits, tfds_registry

AUTOTUNE = tf.data.AUTOTUNE
IdList = Union[None, str, Sequence[str]]
# A split name, or a list/tuple of split names and 'DIR:name' sources read as one stream.
Split = Union[str, Sequence[str]]


def _ids(id_list: IdList) -> Optional[list]:
    if id_list is None:
        return None
    if isinstance(id_list, str):
        return splits.read_id_list(id_list)
    return list(id_list)


def _pipeline_seed(seed, input_context):
    if seed is None or input_context is None:
        return seed
    return seed + 7919 * input_context.input_pipeline_id


def decoded_records(
    dataset_dir: str,
    split: Split,
    num_classes: int,
    require_label: bool,
    id_list: IdList = None,
    exclude_ids: IdList = None,
    skip_bad_records: bool = False,
    skip_counter: Optional[reader.SkipCounter] = None,
    shuffle_buffer: int = 0,
    repeat: bool = False,
    seed: Optional[int] = None,
    num_parallel_calls=AUTOTUNE,
    input_context=None,
    dataset_name: Optional[str] = None,
) -> tf.data.Dataset:
    """Checked, decoded records of a split or a union of splits (optionally by id list).

    `split` is a split name of `dataset_dir`, or a list/tuple of sources, each a split
    name of `dataset_dir` or 'DIR:name' (split `name` in folder DIR, e.g. a teacher's
    pseudo labels), read together as one stream (see reader.parse_sources). `id_list`
    and `exclude_ids` select records of the plain-name sources only; 'DIR:name' sources
    are always read whole. Files are scanned first (record framing, ids), so a corrupt
    file or an id missing from the split is reported by name before training starts.
    A 'tfds:' `dataset_name` reads TensorFlow Datasets instead (wss.data.tfds_source:
    `dataset_dir` is the TFDS data directory, `split` a TFDS split string), giving the
    same elements.
    """
    if tfds_registry.is_tfds_name(dataset_name):
        from wss.data import tfds_source  # imports tensorflow_datasets: TFDS names only

        return tfds_source.decoded_examples(
            dataset_name,
            dataset_dir,
            split,
            id_list=_ids(id_list),
            exclude_ids=_ids(exclude_ids),
            skip_bad_records=skip_bad_records,
            skip_counter=skip_counter,
            shuffle_buffer=shuffle_buffer,
            repeat=repeat,
            seed=seed,
            num_parallel_calls=num_parallel_calls,
            input_context=input_context,
        )
    files, plain_files = reader.source_files(dataset_dir, split)
    scans = reader.scan_files(files, skip_bad=skip_bad_records)
    plain_set = set(plain_files)
    plain_scans = [s for s in scans if s.path in plain_set]
    keep = _ids(id_list)
    drop = _ids(exclude_ids)
    if (keep is not None or drop is not None) and not plain_scans:
        raise reader.DataError(
            f"An id list is set but split {split!r} has no source in {dataset_dir!r} to "
            "apply it to (id lists select records of plain split names only, never of "
            "'DIR:name' entries); unset the id list or add the split name"
        )
    if keep is not None:
        reader.select_ids(
            plain_scans, keep, f"id list {id_list if isinstance(id_list, str) else ''}"
        )
    if drop is not None:
        if keep is None:
            keep = [reader.image_id(i) for s in plain_scans for i in s.ids]
        drop_set = set(drop)
        keep = [i for i in keep if i not in drop_set]
        if not keep and len(plain_scans) == len(scans):
            raise reader.DataError(f"Excluding {len(drop)} ids leaves split {split!r} empty")
    if sum(len(s.ids) for s in scans) == 0:
        raise reader.DataError(f"Split {split!r} in {dataset_dir!r} holds no records")
    ids_apply_to = None
    if keep is not None and len(plain_scans) < len(scans):
        ids_apply_to = [s.path for s in plain_scans]
    shard = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
    ds = reader.records_dataset(
        scans,
        ids=keep,
        shuffle_files=shuffle_buffer > 0,
        seed=seed,
        shard=shard,
        ids_apply_to=ids_apply_to,
    )
    if shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    decode = functools.partial(
        reader.decode_record, num_classes=num_classes, require_label=require_label
    )
    if skip_bad_records:
        counter = skip_counter if skip_counter is not None else reader.SkipCounter()
        ds = ds.map(decode, num_parallel_calls=num_parallel_calls)
        ds = ds.filter(reader.skip_filter(counter))
    else:
        ds = ds.map(
            lambda p, i, r: reader.assert_ok(decode(p, i, r)), num_parallel_calls=num_parallel_calls
        )
    return ds


def _with_seeds(ds: tf.data.Dataset, seed: Optional[int]) -> tf.data.Dataset:
    """Pairs every element with an int64 augmentation seed (reproducible if seed given)."""
    return tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed)))


def _finish(ds, batch_size, drop_remainder, seed, prefetch=AUTOTUNE):
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = seed is not None
    ds = ds.with_options(options)
    return ds.prefetch(prefetch)


@dataclasses.dataclass(frozen=True)
class TrainingStream:
    """What a training stream reads and how it draws it: the arguments labeled_dataset
    and extra_dataset share.

    dataset_dir / split / dataset_name: the records. `split` is a split name of
      `dataset_dir` or a list/tuple of sources read as one stream: split names of
      `dataset_dir` and 'DIR:name' entries (split `name` in folder DIR, absolute or
      relative to the working directory), see decoded_records.
    id_list: ids (file path or list) selecting records of the plain split names only;
      'DIR:name' sources are read whole. Self-training: split=('train',
      'runs/voc_1_8_teacher/pseudo:pseudo') with the 1/8 id list trains on the labeled
      1/8 of 'train' plus all of the teacher's pseudo labels (wss.pseudo_label).
    crop_size: side of the square training crop (a RunConfig's Experiment.crop_size).
    augment_config: the rest of the geometry (default: DeepLab's).
    shuffle_buffer, repeat, drop_remainder, seed: how records are drawn and batched.
    skip_bad_records / skip_counter / num_parallel_calls: as decoded_records.
    """

    dataset_dir: str
    split: Split
    crop_size: int
    dataset_name: str = "pascal_voc_seg"
    id_list: IdList = None
    augment_config: augment.AugmentConfig = dataclasses.field(default_factory=augment.AugmentConfig)
    shuffle_buffer: int = 1000
    repeat: bool = True
    drop_remainder: bool = True
    seed: Optional[int] = None
    skip_bad_records: bool = False
    skip_counter: Optional[reader.SkipCounter] = None
    num_parallel_calls: int = AUTOTUNE


def _training_dataset(stream, batch_size, require_label, views, exclude_ids, input_context):
    """The records of `stream`, each mapped by `views(record, seed, num_classes)` with its
    own augmentation seed, then batched (the body both training streams share)."""
    desc = descriptors.get_descriptor(stream.dataset_name)
    seed = _pipeline_seed(stream.seed, input_context)
    ds = decoded_records(
        stream.dataset_dir,
        stream.split,
        desc.num_classes,
        require_label,
        id_list=stream.id_list,
        exclude_ids=exclude_ids,
        skip_bad_records=stream.skip_bad_records,
        skip_counter=stream.skip_counter,
        shuffle_buffer=stream.shuffle_buffer,
        repeat=stream.repeat,
        seed=seed,
        num_parallel_calls=stream.num_parallel_calls,
        input_context=input_context,
        dataset_name=stream.dataset_name,
    )
    ds = _with_seeds(ds, seed).map(
        lambda x, s: views(x, s, desc.num_classes), num_parallel_calls=stream.num_parallel_calls
    )
    return _finish(ds, batch_size, stream.drop_remainder, seed)


def labeled_dataset(stream: TrainingStream, batch_size: int, input_context=None) -> tf.data.Dataset:
    """The pixel-labeled training stream (DeepLab training preprocessing) of `stream`."""

    def views(x, s, num_classes):
        out = augment.train_views(
            x["image"], x["label"], s, num_classes, stream.crop_size, stream.augment_config
        )
        # Static for XLA/TPU (the extra stream's tf.where makes its own static).
        out["image_labels"] = tf.ensure_shape(out["image_labels"], [num_classes - 1])
        return out

    return _training_dataset(stream, batch_size, True, views, None, input_context)


def extra_dataset(
    stream: TrainingStream,
    batch_size: int,
    strong_config: Optional[augment.StrongConfig] = None,
    exclude_ids: IdList = None,
    image_labels_source: str = "auto",
    input_context=None,
) -> tf.data.Dataset:
    """The extra-set stream of `stream`: weak and strong views sharing scale, crop and flip.

    Args:
      strong_config: the strong view (None: StrongConfig's defaults, the release's).
      exclude_ids: ids to leave out (e.g. the labeled list, for the paper's
        "train_aug minus labeled"; the release leaves them in).
      image_labels_source: 'auto' (the record's image/class/label if non-empty, else
        from the cropped mask, else zeros), 'record' (always the record's list) or 'mask'.
    """
    if image_labels_source not in ("auto", "record", "mask"):
        raise ValueError(
            f"image_labels_source must be auto, record or mask, got {image_labels_source!r}"
        )
    strong = strong_config or augment.StrongConfig()

    def views(x, s, c):
        out = augment.train_views(
            x["image"], x["label"], s, c, stream.crop_size, stream.augment_config, strong
        )
        from_mask = tf.where(x["has_label"], out["image_labels"], tf.zeros([c - 1]))
        from_record = augment.image_labels_from_ids(x["class_ids"], c)
        if image_labels_source == "record":
            out["image_labels"] = from_record
        elif image_labels_source == "mask":
            out["image_labels"] = from_mask
        else:
            out["image_labels"] = tf.where(tf.size(x["class_ids"]) > 0, from_record, from_mask)
        # Static for XLA/TPU: with 2 classes tf.where broadcasts [1] against [None].
        out["image_labels"] = tf.ensure_shape(out["image_labels"], [c - 1])
        out["has_label"] = tf.cast(x["has_label"], tf.float32)
        return out

    return _training_dataset(stream, batch_size, False, views, exclude_ids, input_context)


def _raise_too_big(path, index, h, w, crop):
    raise reader.DataError(
        f"{path.numpy().decode()} record {int(index)}: image {int(h)}x{int(w)} is larger "
        f"than the eval crop {int(crop)}. Fix: raise eval_crop_size to at least "
        f"{max(int(h), int(w))}."
    )


def eval_dataset(
    dataset_dir: str,
    batch_size: int,
    split: str = "val",
    dataset_name: str = "pascal_voc_seg",
    id_list: IdList = None,
    eval_crop_size: Optional[int] = None,
    skip_bad_records: bool = False,
    skip_counter: Optional[reader.SkipCounter] = None,
    num_parallel_calls=AUTOTUNE,
    input_context=None,
) -> tf.data.Dataset:
    """The eval stream: one pass, no scaling, padded to the eval crop, original size kept."""
    desc = descriptors.get_descriptor(dataset_name)
    crop = eval_crop_size or desc.eval_crop_size
    ds = decoded_records(
        dataset_dir,
        split,
        desc.num_classes,
        False,
        id_list=id_list,
        skip_bad_records=skip_bad_records,
        skip_counter=skip_counter,
        num_parallel_calls=num_parallel_calls,
        input_context=input_context,
        dataset_name=dataset_name,
    )

    def prep(x):
        hw = tf.shape(x["image"])[:2]
        fits = tf.cond(
            tf.reduce_all(hw <= crop),
            lambda: tf.constant(True),
            lambda: tf.py_function(
                _raise_too_big, [x["path"], x["index"], hw[0], hw[1], crop], tf.bool
            ),
        )
        with tf.control_dependencies([fits]):
            out = augment.eval_view(tf.identity(x["image"]), x["label"], crop)
        out["filename"] = x["filename"]
        return out

    ds = ds.map(prep, num_parallel_calls=num_parallel_calls)
    ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(AUTOTUNE)


def check_static(element_spec, what="the input"):
    """Raises ValueError naming every tensor of `element_spec` whose shape is not fully
    static, or that is a string: XLA (and so every TPU step) needs neither."""
    bad = []
    for path, spec in _flat_specs(element_spec):
        if not spec.shape.is_fully_defined():
            bad.append(f"{path} has shape {spec.shape}")
        elif spec.dtype == tf.string:
            bad.append(f"{path} is a string tensor")
    if bad:
        raise ValueError(
            f"{what} is not fit for a compiled (XLA/TPU) step: {'; '.join(bad)}. Batch "
            "with drop_remainder=True and give every tensor a fixed size."
        )


def _flat_specs(element_spec, prefix=""):
    if isinstance(element_spec, dict):
        items = element_spec.items()
    elif isinstance(element_spec, (tuple, list)):
        items = enumerate(element_spec)
    else:
        return [(prefix or "element", element_spec)]
    out = []
    for key, value in items:
        out.extend(_flat_specs(value, f"{prefix}[{key!r}]"))
    return out


def make_dataset_fn(builder, global_batch_size: int, *, static_shapes: bool = False, **kwargs):
    """A `fn(input_context)` for tf.distribute's distribute_datasets_from_function.

    Each input pipeline (one per host) reads its shard of the files (or records) and
    batches input_context.get_per_replica_batch_size(global_batch_size) elements, which
    raises unless the global batch divides by the replicas. With `static_shapes` (the
    training streams) the dataset must pass check_static: a TPU step compiles for one
    shape.
    """

    def dataset_fn(input_context: tf.distribute.InputContext):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        ds = builder(batch_size=per_replica, input_context=input_context, **kwargs)
        if static_shapes:
            check_static(ds.element_spec, getattr(builder, "__name__", "the input"))
        return ds

    return dataset_fn

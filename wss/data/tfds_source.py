"""TensorFlow Datasets as a data source: a registered TFDS builder's split read into the
decoded-example stream the TFRecord source gives (wss.data.pipeline.decoded_records).

The elements are the same dicts as wss.data.record_checks.decode_record's ('image' uint8
[H,W,3], 'label' int32 [H,W,1] in class ids with 255 ignored, 'has_label', 'class_ids',
'filename', 'path', 'index', 'reason') and pass the same checks (assert_ok, or
skip_filter with skip_bad_records), so the labeled, extra and eval streams, their
augmentation, weak/strong views, CutOut and evaluation are the TFRecord source's own.

Splits are TFDS split strings ('train', 'train[:10%]', 'train[10%:]', 'train+test'); an
id list selects (or excludes) examples by the registry's id feature (a file_name without
its extension for the Oxford pets, as the paper's split lists name images). Images and
labels are read as encoded bytes, selected and shuffled, and only then decoded, converted
to class ids (the registry's label_map) and, where the registry says so, resized down to
its max_size. The builder is downloaded and prepared into the data directory on first use
(Cityscapes needs a manual download: its registry entry says which files).
"""

import os
import re
from typing import List, Optional, Sequence, Union

import tensorflow as tf
import tensorflow_datasets as tfds

from wss.data import record_checks
from wss.data.augment import resize_by_scale
from wss.data.errors import DataError
from wss.data.record_ids import image_id, image_id_tensor
from wss.data.tfds_registry import TfdsDataset, lookup
from wss.errors import MissingPackageError

AUTOTUNE = tf.data.AUTOTUNE
TFDS_ID = "tfds_id"  # TFDS's per-example id, for builders without a name feature
# pip's names of the modules TFDS builders import lazily, where they differ.
_PIP_NAMES = {"cv2": "opencv-python", "skimage": "scikit-image", "PIL": "pillow"}


def resolve_data_dir(data_dir: Optional[str]) -> str:
    """The TFDS data directory: `data_dir` (a folder or a gs:// URL) or TFDS's default
    ($TFDS_DATA_DIR, else ~/tensorflow_datasets)."""
    return data_dir or tfds.core.constants.DATA_DIR


def split_text(split: Union[str, Sequence[str]]) -> str:
    """The TFDS split string of an Experiment split (a tuple reads its parts as one)."""
    parts = [split] if isinstance(split, str) else list(split)
    for part in parts:
        if ":" in part.split("[")[0]:
            raise DataError(
                f"split {part!r}: a TFDS dataset reads TFDS splits ('train', "
                "'train[:10%]', 'train+test'), not 'DIR:name' sources"
            )
    return "+".join(parts)


def _missing_package(entry: TfdsDataset, error: ImportError) -> MissingPackageError:
    """One error line for a package a TFDS builder needs (TFDS says 'Failed importing
    <module>'), with the command that installs it."""
    match = re.search(r"Failed importing ([\w.]+)", str(error))
    module = (match.group(1) if match else error.name or str(error)).split(".")[0]
    package = _PIP_NAMES.get(module, module)
    return MissingPackageError(
        f"{entry.name}: TFDS builder {entry.builder!r} needs the package {module!r}, which "
        f"is not installed. Fix: pip install {package}"
    )


def load_builder(entry: TfdsDataset, data_dir: Optional[str]):
    """The entry's prepared TFDS builder in `data_dir`; downloads and prepares it on first
    use. A missing manual download or a failed download is a DataError saying what to do."""
    data_dir = resolve_data_dir(data_dir)
    try:
        builder = tfds.builder(entry.builder, data_dir=data_dir)
    except ImportError as e:
        raise _missing_package(entry, e) from None
    if builder.is_prepared():
        return builder
    manual_dir = os.path.join(data_dir, "downloads", "manual")
    try:
        builder.download_and_prepare()
    except ImportError as e:  # a package the TFDS builder imports lazily to prepare
        raise _missing_package(entry, e) from None
    except AssertionError as e:  # what TFDS's Cityscapes builder raises without its zips
        if entry.manual_download is None:
            raise
        del e  # TFDS's own text names the files too, over several lines
        raise DataError(
            f"{entry.name}: {entry.manual_download.format(manual_dir=manual_dir)}"
        ) from None
    except OSError as e:  # no network, a refused download, an unwritable data_dir
        raise DataError(
            f"{entry.name}: could not download and prepare TFDS {entry.builder!r} into "
            f"{data_dir} ({e}). Fix: run where the download works (or `tfds build "
            f"{entry.builder} --data_dir=DIR` there) and pass that DIR as --dataset_dir "
            "or Experiment.tfds_data_dir"
        ) from None
    return builder


def check_split(entry: TfdsDataset, builder, split: str) -> None:
    """A DataError naming the builder's splits when `split` reads one it lacks (splits
    are only known once the builder is prepared)."""
    known = sorted(builder.info.splits.keys())
    if not known:
        return
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in known:
            raise DataError(
                f"{entry.name} has no split {base!r} (in {split!r}); its splits: "
                f"{', '.join(known)}. Fix: name one of them, e.g. Experiment.eval_split = "
                f"{entry.eval_split!r}, Experiment.labeled_split = 'train[:10%]'"
            )


def _encoded_examples(entry: TfdsDataset, builder, split: str, shuffle_files=False, seed=None):
    """(encoded image, encoded label, id, file name) of a split, nothing decoded yet."""
    decoders = {
        entry.image_feature: tfds.decode.SkipDecoding(),
        entry.label_feature: tfds.decode.SkipDecoding(),
    }
    read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=entry.id_feature is None)
    ds = builder.as_dataset(
        split=split, decoders=decoders, shuffle_files=shuffle_files, read_config=read_config
    )
    name_key = entry.id_feature or TFDS_ID

    def select(example):
        name = example[name_key]
        return {
            "image": example[entry.image_feature],
            "label": example[entry.label_feature],
            "id": image_id_tensor(name),
            "filename": name,
        }

    return ds.map(select, num_parallel_calls=AUTOTUNE)


def split_ids(dataset_name: str, data_dir: Optional[str], split) -> List[str]:
    """The ids of every example of a split, in read order (e.g. the labeled slice, to
    leave it out of the extra set)."""
    entry = lookup(dataset_name)
    split = split_text(split)
    builder = load_builder(entry, data_dir)
    check_split(entry, builder, split)
    ds = _encoded_examples(entry, builder, split).map(lambda x: x["id"])
    return [i.decode() for i in ds.as_numpy_iterator()]


def _selection(entry, data_dir, split, id_list, exclude_ids) -> Optional[List[str]]:
    """The ids to keep (None: all), after checking every listed id is in the split."""
    if id_list is None and exclude_ids is None:
        return None
    present = split_ids(entry.name, data_dir, split)
    if id_list is not None:
        keep = [image_id(i) for i in id_list]
        have = set(present)
        missing = [i for i in keep if i not in have]
        if missing:
            named = entry.id_feature or TFDS_ID
            raise DataError(
                f"{len(missing)} of {len(keep)} listed ids are not in {entry.name} split "
                f"{split!r} (e.g. {missing[:3]}); ids are the examples' {named!r} without "
                "a .jpg/.png extension. Fix: list ids of that split, or read the split "
                "that holds them"
            )
    else:
        keep = present
    drop = set(image_id(i) for i in exclude_ids or ())
    keep = [i for i in keep if i not in drop]
    if not keep:
        raise DataError(f"the id lists leave {entry.name} split {split!r} empty")
    return keep


def _keep_ids(ids: Sequence[str]):
    """A tf.data predicate keeping the examples whose id is in `ids`."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(ids), tf.string), tf.ones([len(ids)], tf.int32)
        ),
        0,
    )
    return lambda index, x: table.lookup(x["id"]) > 0


def decode_example(entry: TfdsDataset, where: str, index, x):
    """decode_record's dict of one encoded example; never raises on bad content (a label
    of another size is SIZE_MISMATCH, a raw value the registry does not map LABEL_RANGE)."""
    image = tf.io.decode_image(x["image"], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    raw = tf.io.decode_image(x["label"], expand_animations=False)
    raw = raw[..., entry.label_channel : entry.label_channel + 1]
    table = tf.constant(entry.lookup_table(), tf.int32)
    label = tf.gather(table, tf.cast(raw, tf.int32))
    label.set_shape([None, None, 1])
    hw = tf.shape(image)[:2]
    same_size = tf.reduce_all(tf.equal(tf.shape(label)[:2], hw))
    known = tf.reduce_all(label >= 0)
    reason = tf.where(
        same_size,
        tf.where(known, record_checks.OK, record_checks.LABEL_RANGE),
        record_checks.SIZE_MISMATCH,
    )
    if entry.max_size is not None:
        # DeepLab's max_resize_value: the longer side down to max_size, before any crop.
        longer = tf.cast(tf.reduce_max(hw), tf.float32)

        def shrink():
            small, small_label = resize_by_scale(
                tf.cast(image, tf.float32), label, entry.max_size / longer
            )
            small = tf.cast(tf.round(tf.clip_by_value(small, 0.0, 255.0)), tf.uint8)
            return small, small_label

        fits = tf.logical_or(longer <= entry.max_size, tf.logical_not(same_size))
        image, label = tf.cond(fits, lambda: (image, label), shrink)
    return {
        "image": image,
        "label": label,
        "has_label": tf.constant(True),
        "class_ids": tf.zeros([0], tf.int64),
        "filename": x["filename"],
        "path": tf.strings.join([where, x["filename"]]),
        "index": index,
        "reason": reason,
    }


def decoded_examples(
    dataset_name: str,
    data_dir: Optional[str],
    split,
    id_list: Optional[Sequence[str]] = None,
    exclude_ids: Optional[Sequence[str]] = None,
    skip_bad_records: bool = False,
    skip_counter: Optional[record_checks.SkipCounter] = None,
    shuffle_buffer: int = 0,
    repeat: bool = False,
    seed: Optional[int] = None,
    num_parallel_calls=AUTOTUNE,
    input_context=None,
) -> tf.data.Dataset:
    """Checked, decoded examples of a TFDS split: what pipeline.decoded_records gives.

    `split` is a TFDS split string (or a tuple of them, read as one); `id_list` keeps and
    `exclude_ids` drops examples by id (every listed id must be in the split). With an
    input context of several input pipelines each reads every n-th example.
    """
    entry = lookup(dataset_name)
    split = split_text(split)
    builder = load_builder(entry, data_dir)
    check_split(entry, builder, split)
    keep = _selection(entry, data_dir, split, id_list, exclude_ids)
    ds = _encoded_examples(entry, builder, split, shuffle_files=shuffle_buffer > 0, seed=seed)
    ds = ds.enumerate()
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if keep is not None:
        ds = ds.filter(_keep_ids(keep))
    if shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    where = f"{entry.name} split {split!r} example "

    def decode(index, x):
        return decode_example(entry, where, index, x)

    ds = ds.map(decode, num_parallel_calls=num_parallel_calls)
    if skip_bad_records:
        counter = skip_counter if skip_counter is not None else record_checks.SkipCounter()
        return ds.filter(record_checks.skip_filter(counter))
    return ds.map(record_checks.assert_ok, num_parallel_calls=num_parallel_calls)

"""Every kind of bad input gives an error naming the file (and record), or is skipped
and counted when asked."""

import data_test_utils as u
import numpy as np
import pytest
import tensorflow as tf

from wss.builders import voc
from wss.data import image_io, pipeline, reader


def _good(name="good", seed=0):
    image, label = u.random_pair(seed, 33, 40)
    return u.example(
        name, image_io.encode_image(image, "png"), image_io.encode_label(label), 33, 40
    )


def _read_all(tmp_path, split="val", **kw):
    return u.collect(
        pipeline.eval_dataset(str(tmp_path), 2, split=split, dataset_name="demo", **kw)
    )


def _expect_error(tmp_path, *fragments, split="val"):
    with pytest.raises(
        (reader.DataError, tf.errors.InvalidArgumentError, tf.errors.UnknownError)
    ) as err:
        _read_all(tmp_path, split)
    msg = str(err.value)
    for f in fragments:
        assert f in msg, msg
    return msg


def test_undecodable_image_names_record(tmp_path):
    path = tmp_path / "val-00000-of-00001.tfrecord"
    u.write_raw(path, [_good(), u.example("bad", b"not an image at all")])
    _expect_error(tmp_path, str(path), "record 1", "not a decodable JPEG or PNG")


def test_label_out_of_range_names_record(tmp_path):
    image, label = u.random_pair(0, 33, 40)
    label[5, 5] = 17  # demo has 6 classes
    path = tmp_path / "val-00000-of-00001.tfrecord"
    u.write_raw(
        path, [u.example("r", image_io.encode_image(image, "png"), image_io.encode_label(label))]
    )
    _expect_error(tmp_path, str(path), "record 0", "outside [0, num_classes)")


def test_size_mismatch_names_record(tmp_path):
    image, _ = u.random_pair(0, 33, 40)
    _, label = u.random_pair(0, 34, 40)
    path = tmp_path / "val-00000-of-00001.tfrecord"
    u.write_raw(
        path,
        [
            _good(),
            _good("g2"),
            u.example("m", image_io.encode_image(image, "png"), image_io.encode_label(label)),
        ],
    )
    _expect_error(tmp_path, str(path), "record 2", "label size differs")


def test_corrupt_record_names_file_and_index(tmp_path):
    path = tmp_path / "val-00000-of-00001.tfrecord"
    u.write_raw(path, [_good("a"), _good("b"), _good("c")])
    data = bytearray(path.read_bytes())
    first = len(_good("a").SerializeToString()) + 16
    data[first + 30] ^= 0xFF  # inside record 1's payload
    path.write_bytes(bytes(data))
    with pytest.raises(reader.DataError, match=r"record 1 is corrupt"):
        _read_all(tmp_path)
    with pytest.raises(reader.DataError, match=str(path)):
        _read_all(tmp_path)


def test_missing_split_and_empty_pattern(tmp_path):
    u.write_raw(tmp_path / "val-00000-of-00001.tfrecord", [_good()])
    with pytest.raises(reader.DataError, match=r"train-\*.*missing.*splits present: \['val'\]"):
        pipeline.labeled_dataset(
            pipeline.TrainingStream(str(tmp_path), "train", 65, dataset_name="demo"), 1
        )
    with pytest.raises(reader.DataError, match="does not exist"):
        reader.split_files(str(tmp_path / "nowhere"), "val")
    with pytest.raises(reader.DataError, match="matches no files"):
        reader.files_from_pattern(str(tmp_path / "nothing-*"))


def test_incomplete_shard_set_and_empty_file(tmp_path):
    u.write_raw(tmp_path / "val-00000-of-00002.tfrecord", [_good()])
    with pytest.raises(reader.DataError, match=r"shards \[1\] of 2.*missing"):
        reader.split_files(str(tmp_path), "val")
    (tmp_path / "val-00001-of-00002.tfrecord").write_bytes(b"")
    with pytest.raises(reader.DataError, match="is empty"):
        reader.split_files(str(tmp_path), "val")


def test_unlabeled_record_in_labeled_stream(tmp_path):
    image, _ = u.random_pair(0, 40, 40)
    path = tmp_path / "train-00000-of-00001.tfrecord"
    u.write_raw(path, [u.example("u", image_io.encode_image(image, "png"))])
    ds = pipeline.labeled_dataset(
        pipeline.TrainingStream(str(tmp_path), "train", 65, dataset_name="demo", repeat=False), 1
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="no segmentation label"):
        next(iter(ds))


def test_skip_bad_records_counts_and_reports(tmp_path):
    image, label = u.random_pair(0, 33, 40)
    bad_range = label.copy()
    bad_range[0, 0] = 99
    u.write_raw(
        tmp_path / "val-00000-of-00001.tfrecord",
        [
            _good("a"),
            u.example("b", b"garbage"),
            u.example("c", image_io.encode_image(image, "png"), image_io.encode_label(bad_range)),
            _good("d", 1),
        ],
    )
    counter = reader.SkipCounter()
    got = _read_all(tmp_path, skip_bad_records=True, skip_counter=counter)
    assert sorted(got["filename"].tolist()) == [b"a", b"d"]
    assert counter.total == 2
    assert "skipped 2 records" in counter.summary()
    assert any("record 1" in e for e in counter.examples)


def test_builder_rejects_bad_pairs_naming_files(tmp_path):
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    image, label = u.random_pair(0, 33, 40, num_classes=21)
    image_io_path = root / "JPEGImages" / "a.jpg"
    image_io_path.write_bytes(image_io.encode_image(image, "jpeg"))
    bad = np.full((33, 41), 3, np.uint8)  # wrong width
    (root / "SegmentationClass" / "a.png").write_bytes(image_io.encode_label(bad))
    (root / "JPEGImages" / "b.jpg").write_bytes(b"broken")
    (root / "SegmentationClass" / "b.png").write_bytes(image_io.encode_label(label))
    (root / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    with pytest.raises(image_io.BadPairError, match=r"a\.jpg.*label size"):
        voc.build_voc(str(root), str(out), splits=("train",), num_workers=1)
    assert not list(out.glob("train-*"))  # nothing that looks like a finished shard
    assert not list(out.iterdir())  # and no temp file left behind
    from wss.builders import tfrecord_writer

    rep = tfrecord_writer.write_split(
        str(out),
        "train",
        voc.make_items(["a", "b"], str(root)),
        voc.encode_item,
        num_shards=1,
        num_workers=1,
        skip_bad=True,
        progress=False,
    )
    assert rep.written == 0 and len(rep.skipped) == 2
    assert "b.jpg" in rep.skipped[1] and "cannot decode" in rep.skipped[1]


def test_eval_image_larger_than_crop(tmp_path):
    u.write_raw(
        tmp_path / "val-00000-of-00001.tfrecord",
        [u.example("big", image_io.encode_image(u.random_pair(0, 70, 40)[0], "png"))],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the eval crop 65"):
        _read_all(tmp_path)

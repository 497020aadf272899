"""Builders write records that read back to the same pixels and labels."""

import io
import os

import data_test_utils as u
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wss.builders import voc
from wss.data import image_io, pipeline, reader, schema


def _by_name(batch):
    return {n.decode(): i for i, n in enumerate(batch["filename"])}


def test_png_round_trip_exact(tmp_path):
    pairs = {f"im{i}": u.random_pair(i, 33 + i, 41) for i in range(5)}
    u.write_records(tmp_path, "train", [u.encoded(n, *p) for n, p in pairs.items()])
    got = u.collect(pipeline.eval_dataset(str(tmp_path), 2, split="train", dataset_name="demo"))
    assert sorted(_by_name(got)) == sorted(pairs)
    for name, i in _by_name(got).items():
        image, label = pairs[name]
        h, w = label.shape
        assert (got["height"][i], got["width"][i]) == (h, w)
        np.testing.assert_array_equal(got["image"][i, :h, :w], image.astype(np.float32))
        np.testing.assert_array_equal(got["label"][i, :h, :w, 0], label)


def _make_voc(root, n=6, rgb_label_ids=()):
    """A tiny VOCdevkit/VOC2012 with JPEG images and palette (or colour) labels."""
    voc_root = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc_root / d).mkdir(parents=True)
    ids, pairs = [], {}
    palette = image_io.voc_colormap().flatten().tolist()
    for i in range(n):
        image, label = u.random_pair(i, 35, 45, num_classes=21)
        name = f"2007_{i:06d}"
        Image.fromarray(image).save(voc_root / "JPEGImages" / f"{name}.jpg", quality=90)
        if name in rgb_label_ids:
            Image.fromarray(image_io.voc_colormap()[label]).save(
                voc_root / "SegmentationClass" / f"{name}.png"
            )
        else:
            p = Image.fromarray(label, mode="P")
            p.putpalette(palette)
            p.save(voc_root / "SegmentationClass" / f"{name}.png")
        ids.append(name)
        pairs[name] = (image, label)
    (voc_root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:4]) + "\n")
    (voc_root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[4:]) + "\n")
    return voc_root, pairs


@pytest.mark.parametrize("workers", [1, 2])
def test_voc_builder_round_trip(tmp_path, workers):
    voc_root, pairs = _make_voc(tmp_path, rgb_label_ids=("2007_000001",))
    id_list = tmp_path / "two.txt"
    id_list.write_text("# comment line\n2007_000000\n2007_000002\n")
    out = tmp_path / "records"
    written, _ = voc.build_voc(
        str(voc_root.parent),
        str(out),
        splits=("train", "val"),
        id_lists={"two": str(id_list)},
        num_shards=2,
        num_workers=workers,
    )
    assert written == {"train": 4, "val": 2, "two": 2}
    assert not [f for f in os.listdir(out) if "tmp" in f]
    got = u.collect(
        pipeline.eval_dataset(str(out), 4, split="train", dataset_name="pascal_voc_seg")
    )
    for name, i in _by_name(got).items():
        image, label = pairs[name]
        np.testing.assert_array_equal(got["label"][i, :35, :45, 0], label)
        # The record keeps the original JPEG bytes; TF's and PIL's decoders agree closely.
        jpeg = np.asarray(Image.open(voc_root / "JPEGImages" / f"{name}.jpg"))
        assert np.abs(got["image"][i, :35, :45] - jpeg).mean() < 3.0
    raw = next(iter(tf.data.TFRecordDataset(reader.split_files(str(out), "two")[0])))
    ex = tf.train.Example.FromString(raw.numpy()).features.feature
    name = ex[schema.IMAGE_FILENAME].bytes_list.value[0].decode()
    assert (
        ex[schema.IMAGE_ENCODED].bytes_list.value[0]
        == (voc_root / "JPEGImages" / f"{name}.jpg").read_bytes()
    )
    assert ex[schema.IMAGE_FORMAT].bytes_list.value[0] == b"jpeg"
    assert ex[schema.IMAGE_CHANNELS].int64_list.value[0] == 3


def test_deeplab_style_record_parses(tmp_path):
    """DeepLab's build_voc2012_data.py stores JPEG bytes while image/format says 'png'
    (its flag default), plus a grey index PNG label; decoding must go by content."""
    image, label = u.random_pair(3, 37, 33, num_classes=21)
    jpeg = image_io.encode_image(image, "jpeg")
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"2008_0"])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[37])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[33])),
        "image/channels": tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
        "image/segmentation/class/encoded": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[image_io.encode_label(label)])
        ),
        "image/segmentation/class/format": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[b"png"])
        ),
    }
    ex = tf.train.Example(features=tf.train.Features(feature=feature))
    u.write_raw(tmp_path / "val-00000-of-00001.tfrecord", [ex])
    got = u.collect(pipeline.eval_dataset(str(tmp_path), 1, split="val"))
    assert got["filename"][0] == b"2008_0"
    assert got["image"].shape == (1, 513, 513, 3)
    np.testing.assert_array_equal(got["label"][0, :37, :33, 0], label)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert np.abs(got["image"][0, :37, :33] - decoded).mean() < 3.0


def test_jpeg_image_and_unlabeled_records(tmp_path):
    image, _ = u.random_pair(1, 40, 40)
    recs = [
        u.encoded("a", image, None, fmt="jpeg", class_ids=[2, 4]),
        u.encoded("b", image, None, fmt="jpeg"),
    ]
    u.write_records(tmp_path, "extra", recs, num_shards=1)
    ds = pipeline.extra_dataset(
        pipeline.TrainingStream(
            str(tmp_path), "extra", 65, dataset_name="demo", shuffle_buffer=0, seed=0
        ),
        2,
    )
    b = next(iter(ds))
    order = {n: i for i, n in enumerate(["a", "b"])}
    assert b["has_label"].numpy().tolist() == [0.0, 0.0]
    assert np.all(b["label"].numpy() == 255)
    labels = b["image_labels"].numpy()
    rows = sorted(labels.tolist(), key=sum, reverse=True)
    assert rows[0] == [0, 1, 0, 1, 0] and rows[1] == [0] * 5
    del order

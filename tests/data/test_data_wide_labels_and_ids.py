"""Two losses that used to be silent: 16-bit label values above 255 wrapped into other
classes, and records whose filename has a mixed-case extension (`a.Jpg`) selected by an
id list but then dropped from the stream."""

import data_test_utils as u
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wss.builders import folder, voc
from wss.data import image_io, pipeline, reader, record_ids, splits


def _save_16bit(path, values):
    """A real 16-bit grey PNG (PIL mode I;16) of the uint16 array `values`."""
    Image.fromarray(np.asarray(values, np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # PIL reads it back as a 16-bit image
    return str(path)


def _build(tmp_path, names, **kw):
    """Builds tmp_path/images + masks with classes `names` into tmp_path/out, all train."""
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "out"
    folder.build_folder(
        str(tmp_path / "images"),
        str(tmp_path / "masks"),
        str(tmp_path / "classes.txt"),
        str(out),
        val_fraction=0.0,
        num_shards=1,
        num_workers=1,
        progress=False,
        **kw,
    )
    return out


def test_16bit_label_above_255_raises_naming_the_file_and_the_fix(tmp_path):
    wide = np.array([[0, 1, 300], [256, 2, 1]])  # 300 and 256 would wrap to 44 and 0
    path = _save_16bit(tmp_path / "wide.png", wide)
    with pytest.raises(image_io.BadPairError, match=r"wide\.png.*\[256, 300\].*--label_map"):
        image_io.load_label_file(path)
    assert isinstance(image_io.BadPairError("x"), reader.DataError)  # one family to catch
    # A 16-bit label with values that fit keeps them.
    fits = np.array([[0, 1, 255], [2, 2, 1]])
    np.testing.assert_array_equal(
        image_io.load_label_file(_save_16bit(tmp_path / "ok.png", fits)), fits
    )


def test_voc_builder_refuses_a_16bit_label_above_255(tmp_path):
    image = np.zeros((2, 3, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.jpg")
    label = _save_16bit(tmp_path / "a.png", [[0, 1, 300], [1, 1, 1]])
    item = voc.VocItem("a", str(tmp_path / "a.jpg"), label, 21)
    with pytest.raises(image_io.BadPairError, match=r"a\.png.*8 bits"):
        voc.encode_item(item)


def test_folder_builder_maps_16bit_masks_through_label_map_or_refuses_them(tmp_path):
    raw = np.array([[0, 0, 1000, 1000], [0, 300, 300, 1000]])
    masks = tmp_path / "masks"
    images = tmp_path / "images"
    masks.mkdir()
    images.mkdir()
    path = _save_16bit(masks / "im.png", raw)
    with pytest.raises(image_io.BadPairError, match=r"im\.png.*\[300, 1000\].*--label_map"):
        folder.load_mask(path, 3)
    got = folder.load_mask(path, 3, folder.parse_label_map("0:0,300:1,1000:2", 3))
    np.testing.assert_array_equal(got, [[0, 0, 2, 2], [0, 1, 1, 2]])
    # Built and read back: the mapped ids, not 1000 % 256 = 232 or 300 % 256 = 44.
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(images / "im.png")
    out = _build(tmp_path, ["background", "a", "b"], label_map="0:0,300:1,1000:2")
    (x,) = list(pipeline.decoded_records(str(out), "train", 3, require_label=True))
    np.testing.assert_array_equal(x["label"].numpy()[..., 0], got)


NAMES = ["a.Jpg", "b.PNG", "c.jpeg", "d.JPEG", "e", "f.gif", "g.jpg.Png"]


def test_one_id_rule_in_python_and_in_the_graph():
    python = [record_ids.image_id(n) for n in NAMES]
    graph = [x.decode() for x in record_ids.image_id_tensor(tf.constant(NAMES)).numpy()]
    assert python == graph == ["a", "b", "c", "d", "e", "f.gif", "g.jpg"]
    assert reader.image_id is record_ids.image_id


def test_mixed_case_extensions_survive_id_list_selection(tmp_path):
    records = []
    for k, name in enumerate(NAMES):
        image, label = u.random_pair(k, h=8, w=9, num_classes=3)
        records.append(u.encoded(name, image, label))
    u.write_records(tmp_path, "train", records, num_shards=2)
    ids = ["a", "b", "d", "g.jpg"]
    id_file = tmp_path / "ids.txt"
    splits.write_id_list(str(id_file), ids)
    ds = pipeline.decoded_records(str(tmp_path), "train", 3, True, id_list=str(id_file))
    got = sorted(record_ids.image_id(x["filename"].numpy().decode()) for x in ds)
    assert got == sorted(ids)
    # Excluding ids works the same way: the rest of the split, all of it.
    ds = pipeline.decoded_records(str(tmp_path), "train", 3, True, exclude_ids=["a", "c"])
    got = sorted(record_ids.image_id(x["filename"].numpy().decode()) for x in ds)
    assert got == ["b", "d", "e", "f.gif", "g.jpg"]


def test_folder_build_with_mixed_case_files_reads_back_by_id_list(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for k, (img, mask) in enumerate([("a.Jpg", "a.PNG"), ("b.PNG", "b.png"), ("c.jpeg", "c.Png")]):
        Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(
            images / img, format="JPEG" if img.lower().endswith(("jpg", "jpeg")) else "PNG"
        )
        Image.fromarray(np.full((8, 8), k % 2, np.uint8), mode="L").save(masks / mask, format="PNG")
    out = _build(tmp_path, ["background", "thing"])
    assert splits.read_id_list(str(out / "train.txt")) == ["a", "b", "c"]
    ds = pipeline.decoded_records(str(out), "train", 2, True, id_list=["a", "b"])
    assert sorted(x["filename"].numpy().decode() for x in ds) == ["a", "b"]

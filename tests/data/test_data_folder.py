"""The folder builder (datasets/build_folder_data.py): images + masks matched by stem to
TFRecords and a descriptor.json, read back through the reader and pipelines."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wss.builders import folder
from wss.data import descriptors, image_io, pipeline, splits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = [(16, 20), (24, 17), (33, 40), (48, 31), (20, 20), (17, 45)]


def _image(seed, h, w):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _mask(seed, h, w, values):
    rng = np.random.RandomState(100 + seed)
    coarse = rng.choice(values, (h // 4 + 1, w // 4 + 1))
    return np.kron(coarse, np.ones((4, 4), int))[:h, :w].astype(np.uint8)


def _classes(path, names):
    path.write_text("\n".join(names) + "\n")
    return str(path)


def _make(tmp_path, n=6, values=(0, 1, 2, 255), mode="L", palette=None, ext="png"):
    """n images (PNG) and masks; returns (images dir, masks dir, {id: (image, mask)})."""
    img_dir, mask_dir = tmp_path / "images", tmp_path / "masks"
    img_dir.mkdir(exist_ok=True)
    mask_dir.mkdir(exist_ok=True)
    truth = {}
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        image, mask = _image(i, h, w), _mask(i, h, w, values)
        Image.fromarray(image).save(img_dir / f"im{i}.{ext}")
        m = Image.fromarray(mask, mode="L")
        if mode == "P":
            m = m.convert("P")
            m.putpalette(palette)
        m.save(mask_dir / f"im{i}.png")
        truth[f"im{i}"] = (image, mask)
    return str(img_dir), str(mask_dir), truth


def _decoded(out, split, num_classes):
    """{id: (image, label HxW, has_label)} of a split, read through the pipeline reader."""
    ds = pipeline.decoded_records(str(out), split, num_classes, require_label=False)
    got = {}
    for x in ds:
        got[x["filename"].numpy().decode()] = (
            x["image"].numpy(),
            x["label"].numpy()[..., 0],
            bool(x["has_label"].numpy()),
        )
    return got


def _build(tmp_path, img_dir, mask_dir, classes, **kw):
    kw.setdefault("num_workers", 1)
    kw.setdefault("progress", False)
    kw.setdefault("num_shards", 2)
    return folder.build_folder(img_dir, mask_dir, classes, str(tmp_path / "out"), **kw)


def test_index_masks_round_trip_through_reader_and_pipelines(tmp_path):
    img_dir, mask_dir, truth = _make(tmp_path)
    classes = _classes(tmp_path / "classes.txt", ["background", "cat", "dog"])
    path = _build(tmp_path, img_dir, mask_dir, classes, val_fraction=0.34, seed=3)
    out = tmp_path / "out"
    assert path == str(out / "descriptor.json")
    desc = descriptors.get_descriptor(path)
    assert desc == descriptors.get_descriptor(str(out))  # file or folder
    assert desc.class_names == ("background", "cat", "dog") and desc.num_classes == 3
    assert desc.ignore_label == 255 and desc.name == "out"
    assert desc.splits_to_sizes == {"train": 4, "val": 2}  # no unlabeled -> no extra
    assert desc.eval_crop_size == 49 and desc.train_crop_size == 49  # 16k+1 >= 48
    assert desc.class_colors == tuple(map(tuple, image_io.voc_colormap(3).tolist()))
    train, val = folder.split_labeled(sorted(truth), 0.34, 3)
    assert splits.read_id_list(str(out / "train.txt")) == train
    assert splits.read_id_list(str(out / "val.txt")) == val
    assert sorted(train + val) == sorted(truth)
    for split, ids in (("train", train), ("val", val)):
        got = _decoded(out, split, 3)
        assert sorted(got) == ids
        for i in ids:
            np.testing.assert_array_equal(got[i][0], truth[i][0])
            np.testing.assert_array_equal(got[i][1], truth[i][1])
            assert got[i][2]
    # The descriptor path works wherever a dataset name does.
    ev = next(iter(pipeline.eval_dataset(str(out), 8, split="val", dataset_name=path)))
    assert ev["image"].shape[1:3] == (49, 49)
    for b in range(2):
        name = ev["filename"][b].numpy().decode()
        h, w = int(ev["height"][b]), int(ev["width"][b])
        np.testing.assert_array_equal(ev["label"][b, :h, :w, 0].numpy(), truth[name][1])


def test_palette_masks_and_other_image_formats(tmp_path):
    palette = [0, 0, 0, 10, 200, 30, 250, 0, 100] + [7] * (3 * 253)
    img_dir, mask_dir, truth = _make(
        tmp_path, n=4, values=(0, 1, 2), mode="P", palette=palette, ext="bmp"
    )
    with Image.open(os.path.join(mask_dir, "im0.png")) as m:
        assert m.mode == "P"
    classes = tmp_path / "classes.txt"
    classes.write_text("background\nleaf #00ff00\nflower\n")
    path = _build(tmp_path, img_dir, mask_dir, str(classes), val_fraction=0.0)
    desc = descriptors.load_descriptor(path)
    # classes.txt colour first, else the masks' palette.
    assert desc.class_colors == ((0, 0, 0), (0, 255, 0), (250, 0, 100))
    assert desc.splits_to_sizes == {"train": 4}
    got = _decoded(tmp_path / "out", "train", 3)
    assert sorted(got) == sorted(truth)
    for i, (image, mask) in truth.items():  # BMP images are re-encoded losslessly
        np.testing.assert_array_equal(got[i][0], image)
        np.testing.assert_array_equal(got[i][1], mask)


def test_binary_masks_need_a_label_map(tmp_path):
    img_dir, mask_dir, truth = _make(tmp_path, n=3, values=(0, 255))
    classes = _classes(tmp_path / "classes.txt", ["background", "object"])
    with pytest.raises(image_io.BadPairError) as err:
        _build(tmp_path, img_dir, mask_dir, classes)
    assert "masks" in str(err.value) and ".png" in str(err.value)
    assert "--label_map=0:0,255:1" in str(err.value)
    _build(
        tmp_path,
        img_dir,
        mask_dir,
        classes,
        label_map="0:0,255:1",
        overwrite=True,
        val_fraction=0.0,
    )
    got = _decoded(tmp_path / "out", "train", 2)
    for i, (image, mask) in truth.items():
        np.testing.assert_array_equal(got[i][0], image)
        np.testing.assert_array_equal(got[i][1], (mask == 255).astype(np.uint8))
    build = json.loads((tmp_path / "out" / "descriptor.json").read_text())["build"]
    assert build["label_map"] == {"0": 0, "255": 1}
    # A value mapped to 255 is ignore.
    assert (
        folder.load_mask(os.path.join(mask_dir, "im0.png"), 2, {0: 255, 255: 1})
        == np.where(truth["im0"][1] == 255, 1, 255)
    ).all()


def test_unlabeled_folder_and_missing_masks(tmp_path):
    img_dir, mask_dir, truth = _make(tmp_path, n=4)
    os.remove(os.path.join(mask_dir, "im3.png"))
    un_dir = tmp_path / "unlabeled"
    un_dir.mkdir()
    extra = {f"u{k}": _image(50 + k, 20 + k, 30) for k in range(2)}
    for k, im in extra.items():
        Image.fromarray(im).save(un_dir / f"{k}.png")
    classes = _classes(tmp_path / "classes.txt", ["background", "a", "b"])
    with pytest.raises(folder.FolderDataError) as err:
        _build(tmp_path, img_dir, mask_dir, classes, unlabeled_dir=str(un_dir))
    assert os.path.join(img_dir, "im3.png") in str(err.value)
    assert "--allow_missing_masks" in str(err.value)
    path = _build(
        tmp_path,
        img_dir,
        mask_dir,
        classes,
        unlabeled_dir=str(un_dir),
        allow_missing_masks=True,
        val_fraction=0.34,
    )
    desc = descriptors.get_descriptor(path)
    assert desc.splits_to_sizes == {"train": 2, "val": 1, "unlabeled": 3, "extra": 5}
    out = tmp_path / "out"
    unl = _decoded(out, "unlabeled", 3)
    assert sorted(unl) == ["im3", "u0", "u1"]
    extra["im3"] = truth["im3"][0]
    for i, (image, label, has_label) in unl.items():
        np.testing.assert_array_equal(image, extra[i])
        assert not has_label and (label == 255).all()
    ext = _decoded(out, "extra", 3)
    train = splits.read_id_list(str(out / "train.txt"))
    assert sorted(ext) == sorted(train + ["im3", "u0", "u1"])
    for i in train:
        assert ext[i][2]
        np.testing.assert_array_equal(ext[i][1], truth[i][1])
    batch = next(
        iter(
            pipeline.extra_dataset(
                pipeline.TrainingStream(
                    str(out),
                    "extra",
                    descriptors.get_descriptor(path).train_crop_size,
                    dataset_name=path,
                    seed=0,
                    repeat=False,
                    shuffle_buffer=0,
                ),
                5,
            )
        )
    )
    np.testing.assert_array_equal(np.sort(batch["has_label"].numpy()), [0, 0, 0, 1, 1])


def _bad_case(tmp_path, mutate, classes=("background", "a", "b")):
    img_dir, mask_dir, _ = _make(tmp_path, n=3)
    mutate(img_dir, mask_dir)
    with pytest.raises(image_io.BadPairError) as err:
        _build(tmp_path, img_dir, mask_dir, _classes(tmp_path / "classes.txt", classes))
    return str(err.value), img_dir, mask_dir


def test_mask_size_mismatch_names_the_files(tmp_path):
    def mutate(_, m):
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(os.path.join(m, "im1.png"))

    msg, img_dir, mask_dir = _bad_case(tmp_path, mutate)
    assert os.path.join(mask_dir, "im1.png") in msg and os.path.join(img_dir, "im1.png") in msg
    assert "mask size 12x10 (WxH) differs from the size 17x24" in msg


def test_mask_value_out_of_range_names_the_file(tmp_path):
    def mutate(_, m):
        mask = np.zeros((24, 17), np.uint8)
        mask[3, 3] = 7
        Image.fromarray(mask).save(os.path.join(m, "im1.png"))

    msg, _, mask_dir = _bad_case(tmp_path, mutate)
    assert os.path.join(mask_dir, "im1.png") in msg
    assert "mask values [7] are not class ids 0..2" in msg and "label_map" in msg


def test_undecodable_files_name_the_file(tmp_path):
    def bad_image(i, _):
        with open(os.path.join(i, "im2.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\nthis is not really a png")

    msg, img_dir, _ = _bad_case(tmp_path, bad_image)
    assert os.path.join(img_dir, "im2.png") in msg and "cannot decode image" in msg

    def bad_mask(_, m):
        with open(os.path.join(m, "im0.png"), "wb") as f:
            f.write(b"garbage")

    (tmp_path / "b").mkdir()
    msg, _, mask_dir = _bad_case(tmp_path / "b", bad_mask)
    assert os.path.join(mask_dir, "im0.png") in msg and "cannot decode mask" in msg


def test_classes_file_and_label_map_errors(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("background\n\ncat\n")
    with pytest.raises(folder.FolderDataError, match=r"c\.txt: line 2 is empty"):
        folder.read_classes(str(p))
    p.write_text("background\n")
    with pytest.raises(folder.FolderDataError, match="need at least 2"):
        folder.read_classes(str(p))
    p.write_text("background #000000\ntraffic light\n\n")
    assert folder.read_classes(str(p)) == (["background", "traffic light"], [(0, 0, 0), None])
    assert folder.parse_label_map("0:0, 255:1,128:255", 2) == {0: 0, 255: 1, 128: 255}
    with pytest.raises(folder.FolderDataError, match="not a class id 0..1"):
        folder.parse_label_map("255:2", 2)
    with pytest.raises(folder.FolderDataError, match="RAW:CLASS"):
        folder.parse_label_map("255", 2)


def test_refuses_to_mix_with_an_earlier_build(tmp_path):
    img_dir, mask_dir, _ = _make(tmp_path, n=3)
    classes = _classes(tmp_path / "classes.txt", ["background", "a", "b"])
    _build(tmp_path, img_dir, mask_dir, classes, num_shards=3)
    with pytest.raises(folder.FolderDataError, match="--overwrite"):
        _build(tmp_path, img_dir, mask_dir, classes)
    _build(tmp_path, img_dir, mask_dir, classes, overwrite=True, num_shards=1)
    assert sorted(f for f in os.listdir(tmp_path / "out") if f.endswith(".tfrecord")) == [
        "train-00000-of-00001.tfrecord",
        "val-00000-of-00001.tfrecord",
    ]


def test_descriptor_json_round_trip_and_errors(tmp_path):
    d = descriptors.DatasetDescriptor(
        name="mine",
        num_classes=3,
        class_names=("bg", "a", "b"),
        ignore_label=255,
        splits_to_sizes={"train": 5, "val": 2},
        eval_crop_size=65,
        train_crop_size=33,
        class_colors=((0, 0, 0), (1, 2, 3), (4, 5, 6)),
    )
    path = descriptors.save_descriptor(d, str(tmp_path), extra={"build": {"seed": 1}})
    assert path == str(tmp_path / "descriptor.json")
    back = descriptors.get_descriptor(path)
    assert back == descriptors.DatasetDescriptor(**{**d.__dict__, "source": path})
    assert descriptors.get_descriptor(str(tmp_path)) is back  # cached per file version
    assert descriptors.default_dataset_dir(path) == str(tmp_path)
    assert descriptors.default_dataset_dir("demo") is None
    assert descriptors.get_descriptor("demo").name == "demo"
    with pytest.raises(ValueError, match="does not exist"):
        descriptors.get_descriptor(str(tmp_path / "nothing" / "descriptor.json"))
    with pytest.raises(ValueError, match=r"Unknown dataset 'nope'.*descriptor\.json"):
        descriptors.get_descriptor("nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "descriptor.json").write_text('{"name": "x", ')
    with pytest.raises(ValueError, match="not valid JSON"):
        descriptors.get_descriptor(str(bad))
    (bad / "descriptor.json").write_text('{"name": "x", "num_classes": 2}')
    with pytest.raises(ValueError, match=r"descriptor\.json: missing keys \['class_names'"):
        descriptors.get_descriptor(str(bad / "descriptor.json"))


def test_command_line(tmp_path):
    img_dir, mask_dir, _ = _make(tmp_path, n=3, values=(0, 255))
    os.remove(os.path.join(mask_dir, "im2.png"))
    classes = _classes(tmp_path / "classes.txt", ["background", "object"])
    cmd = [
        sys.executable,
        os.path.join(ROOT, "datasets", "build_folder_data.py"),
        f"--images={img_dir}",
        f"--masks={mask_dir}",
        f"--classes={classes}",
        f"--output_dir={tmp_path / 'out'}",
        "--num_workers=1",
        "--val_fraction=0.34",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and os.path.join(img_dir, "im2.png") in bad.stderr
    assert "--allow_missing_masks" in bad.stderr
    good = subprocess.run(
        cmd + ["--label_map=0:0,255:1", "--class_weights", "--allow_missing_masks"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert good.returncode == 0, good.stderr
    desc = descriptors.load_descriptor(str(tmp_path / "out"))
    assert desc.splits_to_sizes == {"train": 1, "val": 1, "unlabeled": 1, "extra": 2}
    weights = json.loads((tmp_path / "out" / "class_weights.json").read_text())
    assert len(weights["class_weights"]) == 2 and weights["split"] == "train"

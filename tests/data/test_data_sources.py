"""The dataset builders on small stand-ins in the public datasets' real formats (a VOC
palette PNG with a 255 border, SBD's MATLAB `GTcls` struct, a COCO instances JSON with a
polygon and a crowd RLE): correct labels, a summary that counts each source, and every
missing source or package stopped with one error line before anything is written."""

import importlib.util
import io
import json
import os
import runpy
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_ext.errors import DeepLabError
from wss import errors, program
from wss.builders import coco, folder, tfrecord_writer, voc
from wss.data import image_io, schema
from wss.data.errors import DataError
from wss.experiment import parse_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAS_SCIPY = importlib.util.find_spec("scipy") is not None
HAS_COCO = importlib.util.find_spec("pycocotools") is not None
H, W = 16, 20
# COCO 2017's 80 category ids (1..90 with ten unused): id 13 is class 12, 90 is class 80.
COCO_CATEGORY_IDS = [c for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _records(out, split):
    """{filename: label} of every record of a split (labels decoded from their PNG)."""
    found = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(out, f"{split}-*.tfrecord"))):
        for raw in tf.data.TFRecordDataset(path):
            feats = tf.train.Example.FromString(raw.numpy()).features.feature
            name = feats[schema.IMAGE_FILENAME].bytes_list.value[0].decode()
            label = feats[schema.LABEL_ENCODED].bytes_list.value
            found[name] = np.asarray(Image.open(io.BytesIO(label[0]))) if label else None
    return found


def _label(seed):
    """A blocky VOC label with the 255 'void' border real VOC annotations draw."""
    label = np.full((H, W), (seed * 5) % 20 + 1, np.uint8)
    label[: H // 2, : W // 2] = 0
    label[[0, -1], :] = 255
    label[:, [0, -1]] = 255
    return label


def _jpeg(path, seed):
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 256, (H, W, 3)).astype(np.uint8)).save(path, quality=90)


def make_voc(root, train=("2007_000001", "2007_000002"), val=("2007_000003",)):
    """VOCdevkit/VOC2012 with JPEGs, palette label PNGs and the Segmentation lists."""
    voc_root = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc_root / d).mkdir(parents=True)
    labels = {}
    for n, i in enumerate(train + val):
        _jpeg(voc_root / "JPEGImages" / f"{i}.jpg", n)
        labels[i] = _label(n)
        png = Image.fromarray(labels[i], mode="P")
        png.putpalette(image_io.voc_colormap().flatten().tolist())
        png.save(voc_root / "SegmentationClass" / f"{i}.png")
    (voc_root / "ImageSets/Segmentation/train.txt").write_text("\n".join(train) + "\n")
    (voc_root / "ImageSets/Segmentation/val.txt").write_text("\n".join(val) + "\n")
    return voc_root, labels


def make_sbd(root, voc_root, ids=("2008_000001", "2008_000002")):
    """benchmark_RELEASE/dataset with cls/<id>.mat (a MATLAB v5 `GTcls` struct written
    by scipy), img/<id>.jpg and SBD's train.txt / val.txt; returns (dataset, labels)."""
    import scipy.io
    import scipy.sparse

    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    (dataset / "img").mkdir()
    labels = {}
    for n, i in enumerate(ids):
        _jpeg(voc_root / "JPEGImages" / f"{i}.jpg", 10 + n)
        labels[i] = np.full((H, W), 7 + n, np.uint8)
        labels[i][4:9, 3:12] = 15
        boundaries = np.empty((20, 1), object)  # a cell of one sparse edge map per class
        for k in range(20):
            boundaries[k, 0] = scipy.sparse.csc_matrix((H, W), dtype=bool)
        gtcls = {
            "Segmentation": labels[i],
            "Boundaries": boundaries,
            "CategoriesPresent": np.array([[7 + n], [15]], np.uint8),
        }
        scipy.io.savemat(str(dataset / "cls" / f"{i}.mat"), {"GTcls": gtcls}, format="5")
    (dataset / "train.txt").write_text(ids[0] + "\n")
    (dataset / "val.txt").write_text("\n".join(ids[1:]) + "\n")
    return dataset, labels


def assert_user_error(exc, *fragments):
    """The error is the project's own: one `error:` line naming every fragment."""
    line = program.user_message(exc)
    assert line is not None, repr(exc)
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.mark.skipif(not HAS_SCIPY, reason="scipy is not installed (the voc extra)")
def test_voc_palette_and_sbd_mat_labels_and_the_per_source_summary(tmp_path):
    voc_root, voc_labels = make_voc(tmp_path)
    dataset, sbd_labels = make_sbd(tmp_path, voc_root)
    out = str(tmp_path / "out")
    plan = voc.plan_voc(str(voc_root), ("train", "val", "train_aug"), None, str(dataset / "cls"))
    written = tfrecord_writer.write_splits(out, plan.splits, voc.encode_item, 1, 1)
    assert voc.summary(plan, written) == ("train 2 (VOC); val 1 (VOC); train_aug 4 = 2 VOC + 2 SBD")
    aug = _records(out, "train_aug")
    assert sorted(aug) == sorted(["2007_000001", "2007_000002", *sbd_labels])
    for name, label in {**voc_labels, **sbd_labels}.items():
        if name in aug:  # palette indices (255 border kept), GTcls.Segmentation exactly
            np.testing.assert_array_equal(aug[name], label)
    np.testing.assert_array_equal(_records(out, "val")["2007_000003"], voc_labels["2007_000003"])


@pytest.mark.skipif(not HAS_SCIPY, reason="scipy is not installed (the voc extra)")
def test_voc_command_line_prints_the_count_per_source(tmp_path, monkeypatch, capsys):
    voc_root, _ = make_voc(tmp_path)
    dataset, _ = make_sbd(tmp_path, voc_root)
    monkeypatch.syspath_prepend(os.path.join(ROOT, "datasets"))
    tool = runpy.run_path(os.path.join(ROOT, "datasets", "build_voc2012_data.py"))
    out = tmp_path / "out"
    flags = [f"--voc_dir={voc_root.parent}", f"--sbd_dir={dataset / 'cls'}", f"--output_dir={out}"]
    tool["main"](["build_voc2012_data.py", *flags, "--num_workers=1"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"Wrote train 2 (VOC); val 1 (VOC); train_aug 4 = 2 VOC + 2 SBD to {out}"
    )


@pytest.mark.skipif(not HAS_SCIPY, reason="scipy is not installed (the voc extra)")
def test_sbd_dir_one_level_above_cls_stops_before_writing(tmp_path):
    voc_root, _ = make_voc(tmp_path)
    dataset, _ = make_sbd(tmp_path, voc_root)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        voc.build_voc(str(voc_root), str(out), sbd_dir=str(dataset), num_workers=1)
    assert_user_error(
        info.value,
        f"--sbd_dir={dataset}",
        "holds no SBD .mat labels (<id>.mat)",
        "benchmark_RELEASE/dataset/cls/",
        "found 0 ids, SBD's train.txt and val.txt name 2",
        f"Fix: pass --sbd_dir={dataset / 'cls'}",
    )
    assert not out.exists()


@pytest.mark.skipif(not HAS_SCIPY, reason="scipy is not installed (the voc extra)")
def test_sbd_folder_holding_far_fewer_labels_than_its_lists(tmp_path):
    voc_root, _ = make_voc(tmp_path)
    dataset, _ = make_sbd(tmp_path, voc_root)
    (dataset / "val.txt").write_text("2008_000002\n2008_000003\n2008_000004\n")
    with pytest.raises(DataError) as info:
        voc.plan_voc(str(voc_root), ("train_aug",), None, str(dataset / "cls"))
    assert_user_error(info.value, "holds 2 SBD .mat labels", "far fewer than the 4 ids", "extract")


@pytest.mark.skipif(not HAS_SCIPY, reason="scipy is not installed (the voc extra)")
def test_sbd_instance_labels_instead_of_class_labels(tmp_path):
    import scipy.io

    voc_root, _ = make_voc(tmp_path)
    inst = tmp_path / "inst"
    inst.mkdir()
    _jpeg(voc_root / "JPEGImages" / "2008_000001.jpg", 0)
    scipy.io.savemat(str(inst / "2008_000001.mat"), {"GTinst": {"Segmentation": _label(0)}})
    with pytest.raises(DataError) as info:
        voc.plan_voc(str(voc_root), ("train_aug",), None, str(inst))
    assert_user_error(info.value, "2008_000001.mat holds no GTcls struct", "['GTinst']")


@pytest.mark.skipif(not HAS_SCIPY, reason="scipy is not installed (the voc extra)")
def test_sbd_without_scipy_writes_nothing(tmp_path, monkeypatch):
    voc_root, _ = make_voc(tmp_path)
    dataset, _ = make_sbd(tmp_path, voc_root)
    for name in [m for m in sys.modules if m == "scipy" or m.startswith("scipy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy.io` now fails
    out = tmp_path / "out"
    with pytest.raises(errors.MissingPackageError) as info:
        voc.build_voc(str(voc_root), str(out), sbd_dir=str(dataset / "cls"), num_workers=1)
    line = assert_user_error(info.value, "'scipy'", 'pip install -e ".[voc]"')
    assert "--skip_bad" not in line
    assert not out.exists()


def test_train_aug_without_an_sbd_source_and_an_empty_aug_folder(tmp_path):
    voc_root, _ = make_voc(tmp_path)
    with pytest.raises(DataError) as info:
        voc.plan_voc(str(voc_root), ("train", "train_aug"))
    assert_user_error(info.value, "'train_aug'", "--sbd_dir=benchmark_RELEASE/dataset/cls")
    aug = tmp_path / "SegmentationClassAug"
    aug.mkdir()
    with pytest.raises(DataError) as info:
        voc.plan_voc(str(voc_root), ("train_aug",), str(aug))
    assert_user_error(info.value, f"--aug_label_dir={aug}", "found 0 ids", "holds 12,031")


def test_listed_ids_without_image_name_the_split_and_counts(tmp_path):
    voc_root, _ = make_voc(tmp_path)
    os.remove(voc_root / "JPEGImages" / "2007_000002.jpg")
    with pytest.raises(DataError) as info:
        voc.plan_voc(str(voc_root), ("train", "val"))
    assert_user_error(info.value, "1 of 2 ids of split 'train' have no image", "2007_000002")


def _instances(image_dir, names):
    """A COCO instances JSON over `names` with the 80 real category ids: in the first
    image a polygon of category 13 and a crowd (uncompressed RLE) of category 90."""
    crowd = np.zeros((H, W), np.uint8)
    crowd[10:14, 12:18] = 1
    counts, value, run = [], 0, 0  # COCO's RLE: runs down the columns, zeros first
    for v in crowd.flatten(order="F"):
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    images = [
        {"id": n + 1, "file_name": f"{name}.jpg", "height": H, "width": W}
        for n, name in enumerate(names)
    ]
    polygon = [[2.0, 2.0, 10.0, 2.0, 10.0, 8.0, 2.0, 8.0]]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 13, "iscrowd": 0, "area": 48.0,
         "segmentation": polygon, "bbox": [2, 2, 8, 6]},
        {"id": 2, "image_id": 1, "category_id": 90, "iscrowd": 1, "area": 24.0,
         "segmentation": {"size": [H, W], "counts": counts}, "bbox": [12, 10, 6, 4]},
    ]  # fmt: skip
    cats = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in COCO_CATEGORY_IDS]
    for n, name in enumerate(names):
        _jpeg(os.path.join(image_dir, f"{name}.jpg"), n)
    return {"images": images, "annotations": anns, "categories": cats}, crowd.astype(bool)


def _coco_dir(root, names=("000000000001", "000000000002")):
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    content, crowd = _instances(str(root / "val2017"), names)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(content))
    return crowd


@pytest.mark.skipif(not HAS_COCO, reason="pycocotools is not installed (the coco extra)")
def test_coco_polygon_and_crowd_rle_and_the_summary(tmp_path):
    crowd = _coco_dir(tmp_path)
    (tmp_path / "unlabeled2017").mkdir()
    _jpeg(tmp_path / "unlabeled2017" / "000000000009.jpg", 9)
    splits = {
        "val": (str(tmp_path / "annotations/instances_val2017.json"), str(tmp_path / "val2017")),
        "unlabeled": (None, str(tmp_path / "unlabeled2017")),
    }
    plan = coco.plan_coco(splits)
    out = str(tmp_path / "out")
    written = tfrecord_writer.write_splits(out, plan.splits, coco.encode_item, 1, 1)
    assert coco.summary(plan, written) == (
        "val 2 (instances_val2017.json + val2017/); unlabeled 1 (unlabeled2017/, no labels)"
    )
    label = _records(out, "val")["val2017/000000000001"]
    assert set(np.unique(label)) == {0, 12, 255}  # category 13 -> class 12, crowd -> ignore
    np.testing.assert_array_equal(label == 255, crowd)
    thing = label == 12  # the polygon x 2..10, y 2..8: its inside, up to the edge pixels
    assert thing[3:8, 3:10].all() and not thing[:2].any() and not thing[9:].any()
    assert not thing[:, :2].any() and not thing[:, 11:].any()
    assert not _records(out, "val")["val2017/000000000002"].any()  # an image without annotations
    assert _records(out, "unlabeled") == {"unlabeled2017/000000000009": None}


@pytest.mark.skipif(not HAS_COCO, reason="pycocotools is not installed (the coco extra)")
def test_coco_image_folder_missing_listed_images(tmp_path):
    _coco_dir(tmp_path)
    os.remove(tmp_path / "val2017" / "000000000002.jpg")
    splits = {
        "val": (str(tmp_path / "annotations/instances_val2017.json"), str(tmp_path / "val2017"))
    }
    with pytest.raises(DataError) as info:
        coco.build_coco(str(tmp_path / "out"), splits, num_workers=1)
    assert_user_error(info.value, "holds 1 of the images instances_val2017.json lists 2")
    assert not (tmp_path / "out").exists()


def test_coco_without_pycocotools_and_an_empty_unlabeled_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    splits = {"val": (str(tmp_path / "instances_val2017.json"), str(tmp_path))}
    with pytest.raises(errors.MissingPackageError) as info:
        coco.plan_coco(splits)
    assert_user_error(info.value, "'pycocotools'", 'pip install -e ".[coco]"')
    (tmp_path / "unlabeled2017").mkdir()
    with pytest.raises(DataError) as info:
        coco.plan_coco({"unlabeled": (None, str(tmp_path / "unlabeled2017"))})
    assert_user_error(info.value, "unlabeled2017 holds no images", "--unlabeled_dir")


def test_folder_builder_empty_masks_and_unlabeled_folders(tmp_path):
    for d in ("images", "masks", "unlabeled"):
        (tmp_path / d).mkdir()
    _jpeg(tmp_path / "images" / "a.jpg", 0)
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    args = [str(tmp_path / d) for d in ("images", "masks")] + [str(tmp_path / "classes.txt")]
    with pytest.raises(DataError) as info:
        folder.build_folder(*args, str(tmp_path / "out"))
    assert_user_error(info.value, "holds no masks", "for the 1 images")
    image_io.save_png(np.zeros((H, W), np.uint8), str(tmp_path / "masks" / "a.png"))
    with pytest.raises(DataError) as info:
        folder.build_folder(*args, str(tmp_path / "out"), unlabeled_dir=str(tmp_path / "unlabeled"))
    assert_user_error(info.value, "unlabeled folder", "holds no images")
    assert not (tmp_path / "out").exists()


def test_missing_keras_hub_is_one_error_line(monkeypatch):
    from deeplab_ext import hub_backbone

    monkeypatch.setitem(sys.modules, "keras_hub", None)
    with pytest.raises(DeepLabError) as info:
        hub_backbone.import_keras_hub()
    assert isinstance(info.value, ImportError)
    assert_user_error(info.value, "'keras-hub'", 'pip install -e ".[hub]"')
    # Before any work: parsing a config that names the backbone stops already.
    with pytest.raises(DeepLabError, match="keras-hub"):
        parse_run_config(gin_params=["ModelSettings.backbone = 'keras_hub'"])


def test_missing_package_of_a_tfds_builder_is_one_error_line(tmp_path, monkeypatch):
    from wss.data import tfds_registry, tfds_source

    def needs_cv2(*args, **kwargs):
        raise ModuleNotFoundError(
            "No module named 'cv2'\nFailed importing cv2. This likely means that the "
            "dataset requires additional dependencies"
        )

    monkeypatch.setattr(tfds_source.tfds, "builder", needs_cv2)
    entry = tfds_registry.lookup("tfds:oxford_iiit_pet")
    with pytest.raises(errors.MissingPackageError) as info:
        tfds_source.load_builder(entry, str(tmp_path))
    assert_user_error(info.value, "'cv2'", "pip install opencv-python")


def test_demo_folders_need_a_labeled_image(tmp_path):
    from wss.builders import demo

    with pytest.raises(errors.InputError) as info:
        demo.export_demo_folders(str(tmp_path / "out"), num_labeled=0)
    assert_user_error(info.value, "--num_labeled=0", "Fix: --num_labeled=64")
    assert not (tmp_path / "out").exists()

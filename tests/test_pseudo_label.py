"""Tests of the self-training labelling (wss.self_training) and its command line
wss.pseudo_label: thresholding, records written and read back, the report's
coverage / mIoU against a hand-computed case, and resume after an interruption."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from wss import pseudo_label
from wss.builders import tfrecord_writer
from wss.data import image_io, pipeline, reader
from wss.self_training import labeller
from wss.self_training.labels import threshold_labels
from wss.self_training.plan import PseudoLabelError, make_plan

C = 6  # the demo dataset's classes, so the normal pipeline reads the records back
CROP = 12


def _identity(x):
    return x


def _record(name, image, label=None):
    return tfrecord_writer.EncodedRecord(
        filename=name,
        image_bytes=image_io.encode_image(image, "png"),
        image_format="png",
        height=image.shape[0],
        width=image.shape[1],
        label_bytes=None if label is None else image_io.encode_label(label),
    )


def _write(directory, split, recs, num_shards=1):
    tfrecord_writer.write_split(
        str(directory), split, recs, _identity, num_shards=num_shards, num_workers=1, progress=False
    )


def _image(classes, confident):
    """An image for the fake teacher: red = 40 * class, green = 255 where confident."""
    classes, confident = np.asarray(classes), np.asarray(confident, bool)
    image = np.zeros(classes.shape + (3,), np.uint8)
    image[..., 0] = 40 * classes
    image[..., 1] = np.where(confident, 255, 0)
    return image


def make_teacher(limit=None):
    """A fake teacher: logits = 10 * one_hot(red / 40) where green > 127 (probability
    ~1), all zero elsewhere (uniform 1/6: ignored). Counts the images it sees and fails
    after `limit` of them (a simulated crash)."""
    seen = {"n": 0}

    def tick(images):
        seen["n"] += int(images.shape[0])
        if limit is not None and seen["n"] > limit:
            raise RuntimeError("simulated crash")
        return images

    def teacher(images):
        images = tf.py_function(tick, [images], tf.float32)
        images.set_shape([None, None, None, 3])
        cls = tf.cast(tf.round(images[..., 0] / 40.0), tf.int32)
        strength = tf.where(images[..., 1] > 127.0, 10.0, 0.0)[..., tf.newaxis]
        return tf.one_hot(cls, C) * strength

    return teacher, seen


pytestmark = pytest.mark.usefixtures("clear_gin")


# ------------------------------------------------------------------------ threshold


def test_threshold_labels_matches_numpy_reference():
    rng = np.random.RandomState(0)
    logits = rng.normal(0, 2, (3, 7, 5, 4)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    # Exact ties at the threshold (ignored) and just above it (kept).
    probs[0, 0, 0] = [0.5, 0.5, 0.0, 0.0]
    probs[0, 0, 1] = [0.0, 0.5, 0.25, 0.25]
    probs[0, 0, 2] = [0.0, 0.0, 0.5001, 0.4999]
    for threshold in (0.5, 0.3, 0.9):
        ref = np.where(probs.max(-1) > threshold, probs.argmax(-1), 255)
        got = threshold_labels(probs, threshold)
        assert isinstance(got, np.ndarray) and got.dtype == np.int32
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(threshold_labels(tf.constant(probs), threshold).numpy(), ref)
    got = threshold_labels(probs, 0.5)
    assert got[0, 0, 0] == 255 and got[0, 0, 1] == 255 and got[0, 0, 2] == 2
    assert (got == 255).any() and (got != 255).any()


# ------------------------------------------------------------- hand-computed report

# Image 'a' (2x3) and 'b' (2x2): the teacher's class, where it is confident, and the
# ground truth. Pseudo labels: a = [[1,1,255],[0,2,2]], b = [[255,255],[3,3]].
A_CLS, A_CONF, A_GT = [[1, 1, 2], [0, 2, 2]], [[1, 1, 0], [1, 1, 1]], [[1, 2, 2], [0, 2, 255]]
B_CLS, B_CONF, B_GT = [[3, 3], [3, 3]], [[0, 0], [1, 1]], [[3, 3], [1, 3]]
A_PSEUDO = [[1, 1, 255], [0, 2, 2]]
B_PSEUDO = [[255, 255], [3, 3]]


def _hand_dataset(directory):
    _write(
        directory,
        "train",
        [
            _record("a.png", _image(A_CLS, A_CONF), np.asarray(A_GT, np.uint8)),
            _record("b.png", _image(B_CLS, B_CONF), np.asarray(B_GT, np.uint8)),
        ],
    )


def test_report_coverage_and_miou_by_hand_and_records_read_back(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _hand_dataset(data)
    teacher, seen = make_teacher()
    lines = []
    report = labeller.generate(
        teacher,
        str(data),
        "train",
        str(out),
        C,
        CROP,
        num_shards=1,
        batch_size=2,
        log=lines.append,
        progress_every=1,
    )
    assert seen["n"] == 2
    # Coverage: 5 of 6 + 2 of 4 pixels. Covered pixels with ground truth (gt, pseudo):
    # a: (1,1) (2,1) (0,0) (2,2) [(255,2) ignored]; b: (1,3) (3,3) -> 4 of 6 right.
    # IoU: c0 1/1, c1 1/(2+2-1), c2 1/(2+1-1), c3 1/(1+2-1); c4, c5 absent.
    assert report["num_images"] == 2 and report["num_pixels"] == 10
    assert report["labeled_pixels"] == 7 and report["coverage"] == pytest.approx(0.7)
    assert report["has_ground_truth"] and report["gt_pixels"] == 9
    assert report["pixel_accuracy"] == pytest.approx(4 / 6)
    assert report["gt_coverage"] == pytest.approx(6 / 9)
    assert report["miou"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    assert report["per_class_iou"]["1"] == pytest.approx(1 / 3)
    assert report["per_class_iou"]["4"] is None
    with open(out / labeller.REPORT_NAME) as f:
        assert json.load(f)["miou"] == pytest.approx(report["miou"])
    assert any("coverage 70.00%" in s for s in lines)
    assert any("2/2 images" in s for s in lines)  # progress line
    assert set(os.listdir(out)) == {
        ".pseudo_label_stats",
        labeller.REPORT_NAME,
        "pseudo-00000-of-00001.tfrecord",
    }

    # Read back through the normal eval pipeline: same labels, same images and names.
    batch = next(
        iter(
            pipeline.eval_dataset(
                str(out), 2, split="pseudo", dataset_name="demo", eval_crop_size=CROP
            )
        )
    )
    assert [n.decode() for n in batch["filename"].numpy()] == ["a.png", "b.png"]
    np.testing.assert_array_equal(batch["label"][0, :2, :3, 0], A_PSEUDO)
    np.testing.assert_array_equal(batch["label"][1, :2, :2, 0], B_PSEUDO)
    assert (batch["height"].numpy().tolist(), batch["width"].numpy().tolist()) == ([2, 2], [3, 2])
    np.testing.assert_array_equal(
        batch["image"][0, :2, :3].numpy(), _image(A_CLS, A_CONF).astype(np.float32)
    )
    # ... and as a labeled (training) split.
    lab = pipeline.labeled_dataset(
        pipeline.TrainingStream(
            str(out), "pseudo", 65, dataset_name="demo", shuffle_buffer=0, repeat=False, seed=0
        ),
        2,
    )
    labels = np.concatenate([b["label"].numpy().ravel() for b in lab])
    assert labels.size == 2 * 65 * 65  # both records, at the demo's train crop
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3, 255} and (labels != 255).any()


def test_no_ground_truth_gives_coverage_only(tmp_path):
    data = tmp_path / "data"
    _write(data, "extra", [_record("u.png", _image(A_CLS, A_CONF))])
    teacher, _ = make_teacher()
    report = labeller.generate(
        teacher, str(data), "extra", str(tmp_path / "o"), C, CROP, log=lambda s: None
    )
    assert report["coverage"] == pytest.approx(5 / 6)
    assert not report["has_ground_truth"] and report["miou"] is None


# -------------------------------------------------------------------------- resume


def _many(directory, n=7):
    rng = np.random.RandomState(1)
    recs = []
    for i in range(n):
        h, w = 3 + i % 3, 4 + i % 4
        recs.append(
            _record(
                f"img{i}.png",
                _image(rng.randint(0, C, (h, w)), rng.rand(h, w) > 0.4),
                rng.randint(0, C, (h, w)).astype(np.uint8),
            )
        )
    _write(directory, "train", recs, num_shards=2)


def _mtimes(out):
    return {
        f: os.stat(os.path.join(out, f)).st_mtime_ns
        for f in os.listdir(out)
        if f.endswith(".tfrecord")
    }


def test_resume_after_crash_writes_each_shard_once(tmp_path):
    data, out, fresh = tmp_path / "data", str(tmp_path / "out"), str(tmp_path / "fresh")
    _many(data)
    kw = dict(num_shards=3, batch_size=1, log=lambda s: None)  # shards of 2, 2, 3 images
    teacher, _ = make_teacher(limit=5)  # dies on the 6th image (in the last shard)
    with pytest.raises(Exception, match="simulated crash"):
        labeller.generate(teacher, str(data), "train", out, C, CROP, **kw)
    assert sorted(_mtimes(out)) == [
        "pseudo-00000-of-00003.tfrecord",
        "pseudo-00001-of-00003.tfrecord",
    ]
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # temp file cleaned up
    before = _mtimes(out)

    teacher, seen = make_teacher()
    report = labeller.generate(teacher, str(data), "train", out, C, CROP, **kw)
    assert seen["n"] == 3  # only the missing shard's images were predicted
    assert report["shards_written"] == [2] and report["shards_reused"] == [0, 1]
    after = _mtimes(out)
    assert len(after) == 3 and all(after[f] == t for f, t in before.items())

    # Delete one shard: a rerun rewrites exactly that one.
    os.remove(os.path.join(out, "pseudo-00001-of-00003.tfrecord"))
    keep = {f: t for f, t in after.items() if "00001" not in f}
    teacher, seen = make_teacher()
    report = labeller.generate(teacher, str(data), "train", out, C, CROP, **kw)
    assert seen["n"] == 2 and report["shards_written"] == [1]
    assert all(_mtimes(out)[f] == t for f, t in keep.items())

    # Same bytes and report as one uninterrupted run.
    teacher, seen = make_teacher()
    full = labeller.generate(teacher, str(data), "train", fresh, C, CROP, **kw)
    assert seen["n"] == 7 and full["num_images"] == report["num_images"] == 7
    for name in _mtimes(fresh):
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(fresh, name), "rb") as b:
            assert a.read() == b.read(), name
    for key in ("coverage", "miou", "pixel_accuracy", "labeled_pixels", "confusion_matrix"):
        assert report[key] == full[key], key

    # Nothing left to do; other settings into the same folder are refused.
    teacher, seen = make_teacher()
    labeller.generate(teacher, str(data), "train", out, C, CROP, **kw)
    assert seen["n"] == 0
    with pytest.raises(PseudoLabelError, match="threshold"):
        labeller.generate(teacher, str(data), "train", out, C, CROP, threshold=0.9, **kw)
    with pytest.raises(PseudoLabelError, match="4 shards|3 shards"):
        labeller.generate(
            teacher,
            str(data),
            "train",
            out,
            C,
            CROP,
            num_shards=4,
            batch_size=1,
            log=lambda s: None,
        )


def test_plan_is_deterministic_and_id_lists_apply(tmp_path):
    _many(tmp_path)
    plan = make_plan(str(tmp_path), "train", 3)
    assert plan.bounds == [0, 2, 4, 7]
    assert [i[2] for i in plan.items] == [f"img{i}.png" for i in range(7)]
    plan = make_plan(str(tmp_path), "train", 10, exclude_ids=["img0", "img5"])
    assert plan.num_shards == 5 and len(plan.items) == 5
    assert "img0.png" not in [i[2] for i in plan.items]
    plan = make_plan(str(tmp_path), "train", 2, id_list=["img1", "img2"])
    assert [i[2] for i in plan.items] == ["img1.png", "img2.png"]
    with pytest.raises(reader.DataError, match="not in the records"):
        make_plan(str(tmp_path), "train", 2, id_list=["nope"])


# ----------------------------------------------------------------------------- CLI


def test_cli_end_to_end_with_a_fake_teacher(tmp_path, monkeypatch, capsys):
    """The CLI's flags, gin and data resolution, with the model build and restore (the
    same calls as wss.eval, covered by tests/test_eval.py) replaced by the fake teacher
    so the test stays fast."""
    from wss import model as model_lib
    from wss import restore

    data, out = tmp_path / "data", tmp_path / "out"
    _many(data, n=5)
    ids = tmp_path / "exclude.txt"
    ids.write_text("img1\n")
    gin_file = tmp_path / "t.gin"
    gin_file.write_text("Experiment.dataset_name = 'demo'\nExperiment.extra_split = 'train'\n")
    teacher, seen = make_teacher()
    monkeypatch.setattr(model_lib, "build_model", lambda *args, **kwargs: teacher)
    monkeypatch.setattr(restore, "restore_model", lambda model, path: os.path.join(path, "ckpt-7"))
    argv = [
        "pseudo_label",
        f"--gin_file={gin_file}",
        f"--model_dir={tmp_path}",
        f"--dataset_dir={data}",
        f"--output_dir={out}",
        "--num_shards=2",
        "--batch_size=2",
        "--flip",
        "--scales=1",
        "--scales=0.5",
        "--threshold=0.6",
        f"--exclude_id_list={ids}",
        "--output_split=pl",
    ]
    report = pseudo_label.main(argv)
    printed = capsys.readouterr().out
    assert "coverage" in printed and "mIoU" in printed and "4/4 images" in printed
    assert seen["n"] == 4 * 4  # 4 images (img1 excluded) x 2 scales x 2 flips
    assert report["num_images"] == 4 and report["has_ground_truth"]
    assert report["split"] == "train"  # Experiment.extra_split by default
    s = report["settings"]
    assert s["checkpoint"].endswith("ckpt-7") and s["threshold"] == 0.6
    assert s["scales"] == [1.0, 0.5] and s["flip"]
    assert s["eval_crop_size"] == 65  # the demo's eval crop, as parse_run_config resolved it
    assert sorted(f for f in os.listdir(out) if f.endswith(".tfrecord")) == [
        "pl-00000-of-00002.tfrecord",
        "pl-00001-of-00002.tfrecord",
    ]
    names = [
        n.decode()
        for b in pipeline.eval_dataset(str(out), 4, split="pl", dataset_name="demo")
        for n in b["filename"].numpy()
    ]
    assert sorted(names) == ["img0.png", "img2.png", "img3.png", "img4.png"]
    # Rerun: nothing to do; a bad dataset dir is a clean error.
    assert pseudo_label.main(argv)["shards_written"] == [] and seen["n"] == 16
    with pytest.raises(restore.RestoreError, match="nope"):
        pseudo_label.main(argv[:3] + [f"--dataset_dir={tmp_path / 'nope'}", f"--output_dir={out}"])
    with pytest.raises(restore.RestoreError, match="--model_dir of the teacher"):
        pseudo_label.main(["pseudo_label", f"--output_dir={out}"])


@pytest.mark.parametrize("ratio", [4, 8, 16])
def test_self_training_gin_binds_the_union(ratio):
    from wss.experiment import parse_run_config

    config = parse_run_config([f"voc_1_{ratio}_self_training.gin"])
    exp = config.experiment
    assert exp.labeled_split == ("train", f"runs/voc_1_{ratio}_teacher/pseudo:pseudo")
    assert exp.labeled_id_list.startswith(f"datasets/splits/pascal_voc_seg/{ratio}_clean")
    assert config.method.mode == "supervised"
    sources = reader.parse_sources("/voc", exp.labeled_split)
    assert [(s.directory, s.split, s.plain) for s in sources] == [
        ("/voc", "train", True),
        (f"runs/voc_1_{ratio}_teacher/pseudo", "pseudo", False),
    ]
    demo = parse_run_config(["demo_self_training.gin"]).experiment
    assert demo.labeled_split == ("labeled", "runs/demo_teacher/pseudo:pseudo")

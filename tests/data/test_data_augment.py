"""Training/eval preprocessing: geometry shared by views, padding, CutOut, labels."""

import data_test_utils as u
import numpy as np
import pytest
import tensorflow as tf

from wss.data import augment, pipeline

NUM_CLASSES = 6


def _views(seed, h=40, w=50, crop=65, strong=None, **cfg):
    image, label = u.random_pair(seed, h, w, NUM_CLASSES)
    out = augment.train_views(
        tf.constant(image),
        tf.constant(label[..., None], tf.int32),
        tf.constant(seed, tf.int64),
        NUM_CLASSES,
        crop,
        augment.AugmentConfig(**cfg),
        strong,
    )
    return {k: v.numpy() for k, v in out.items()}


def test_scale_factors_come_from_the_discrete_set():
    allowed = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert augment.scale_values(0.5, 2.0, 0.25) == allowed
    drawn = {
        round(float(augment.random_scale(tf.constant(s, tf.int64), 0.5, 2.0, 0.25)), 6)
        for s in range(300)
    }
    assert drawn == set(allowed)


def test_resize_sizes_and_label_resize_match_tf1():
    image, label = u.random_pair(0, 37, 45)
    lab = tf.constant(label[..., None], tf.int32)
    for scale in (0.5, 0.75, 1.25, 2.0):
        im2, lab2 = augment.resize_by_scale(tf.constant(image, tf.float32), lab, scale)
        expect = (int(37 * scale), int(45 * scale))
        assert im2.shape[:2] == expect and lab2.shape[:2] == expect
        ref = tf.compat.v1.image.resize_nearest_neighbor(lab[None], expect, align_corners=True)[0]
        np.testing.assert_array_equal(lab2.numpy(), ref.numpy())
    im_same, lab_same = augment.resize_by_scale(tf.constant(image, tf.float32), lab, 1.0)
    np.testing.assert_allclose(im_same.numpy(), image, atol=1e-3)
    np.testing.assert_array_equal(lab_same.numpy(), lab.numpy())


def test_padding_values_and_valid_mask():
    out = _views(1, h=33, w=37, crop=97, min_scale=1.0, max_scale=1.0, flip_prob=0.0)
    assert np.all(out["image"][33:] == 127.5) and np.all(out["image"][:, 37:] == 127.5)
    assert np.all(out["label"][33:] == 255) and np.all(out["label"][:, 37:] == 255)
    assert np.all(out["valid"][:33, :37] == 1)
    assert out["valid"].sum() == 33 * 37
    image, label = u.random_pair(1, 33, 37, NUM_CLASSES)
    np.testing.assert_allclose(out["image"][:33, :37], image, atol=1e-3)
    np.testing.assert_array_equal(out["label"][:33, :37, 0], label)


@pytest.mark.parametrize("seed", range(6))
def test_weak_and_strong_share_geometry(seed):
    strong = augment.StrongConfig(jitter_strength=0.0, cutout_half_size=10)
    out = _views(seed, h=33, w=45, crop=49, strong=strong)
    valid = out["valid"][..., 0] > 0
    assert valid.any()
    np.testing.assert_array_equal(out["strong"][valid], out["image"][valid])
    # Outside the valid area the strong view is padding or cut-out, both 127.5.
    assert np.all(out["strong"][~valid] == 127.5)
    # Same weak view and label as the labeled preprocessing for the same seed.
    plain = _views(seed, h=33, w=45, crop=49)
    np.testing.assert_array_equal(plain["image"], out["image"])
    assert np.all(out["label"][~valid] == 255)


def test_jittered_strong_view_keeps_geometry():
    strong = augment.StrongConfig(jitter_strength=1.0, cutout_half_size=0)
    out = _views(3, h=33, w=40, crop=65, strong=strong, min_scale=1.0, max_scale=1.0, flip_prob=0.0)
    assert np.all(out["strong"][33:] == 127.5) and np.all(out["strong"][:, 40:] == 127.5)
    assert not np.allclose(out["strong"][:33, :40], out["image"][:33, :40])
    assert out["strong"][:33, :40].min() >= 0 and out["strong"][:33, :40].max() <= 255


def test_cutout_is_ignored_in_label_and_valid():
    seed, crop, half = 7, 65, 12
    strong = augment.StrongConfig(jitter_strength=0.0, cutout_half_size=half)
    out = _views(
        seed, h=70, w=80, crop=crop, strong=strong, min_scale=1.0, max_scale=1.0, flip_prob=0.0
    )
    inside = augment.cutout_mask(tf.constant(seed, tf.int64), crop, crop, half).numpy()[..., 0]
    assert 0 < inside.sum() <= (2 * half) ** 2
    assert np.all(out["label"][inside] == 255)
    assert np.all(out["valid"][inside] == 0) and np.all(out["valid"][~inside] == 1)
    assert np.all(out["strong"][inside] == 127.5)
    assert not np.all(out["image"][inside] == 127.5)  # the weak view is intact


def test_weak_view_padding_only_mask_option():
    strong = augment.StrongConfig(jitter_strength=0.0, cutout_half_size=12, shared_valid=False)
    out = _views(7, h=70, w=80, crop=65, strong=strong, min_scale=1.0, max_scale=1.0)
    assert np.all(out["weak_valid"] == 1) and out["valid"].sum() < 65 * 65


def test_image_labels_equal_classes_in_crop(tmp_path):
    recs = [u.encoded(f"i{k}", *u.random_pair(k, 60, 70, NUM_CLASSES)) for k in range(8)]
    u.write_records(tmp_path, "train", recs)
    ds = pipeline.labeled_dataset(
        pipeline.TrainingStream(str(tmp_path), "train", 33, dataset_name="demo", seed=3), 4
    )
    for batch in ds.take(4):
        labels = batch["label"].numpy()
        for b in range(4):
            present = set(np.unique(labels[b])) - {0, 255}
            expect = np.array([c in present for c in range(1, NUM_CLASSES)], np.float32)
            np.testing.assert_array_equal(batch["image_labels"][b].numpy(), expect)


def test_seeded_pipeline_is_reproducible_and_shapes(tmp_path):
    recs = [u.encoded(f"i{k}", *u.random_pair(k, 40, 50, NUM_CLASSES)) for k in range(6)]
    u.write_records(tmp_path, "train", recs)

    def first():
        stream = pipeline.TrainingStream(str(tmp_path), "train", 65, dataset_name="demo", seed=11)
        ds = pipeline.extra_dataset(stream, 3)
        return {k: v.numpy() for k, v in next(iter(ds)).items()}

    a, b = first(), first()
    assert set(a) == {"image", "strong", "valid", "label", "has_label", "image_labels"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["image"].shape == (3, 65, 65, 3) and a["image"].dtype == np.float32
    assert a["label"].dtype == np.int32 and a["has_label"].tolist() == [1, 1, 1]
    assert a["image_labels"].shape == (3, NUM_CLASSES - 1)


def test_distribute_dataset_fn_shards_and_batches(tmp_path):
    recs = [u.encoded(f"i{k}", *u.random_pair(k, 40, 50, NUM_CLASSES)) for k in range(8)]
    u.write_records(tmp_path, "val", recs, num_shards=4)
    fn = pipeline.make_dataset_fn(
        pipeline.eval_dataset, 4, dataset_dir=str(tmp_path), split="val", dataset_name="demo"
    )
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2
        )
        got = u.collect(fn(ctx))
        assert max(len(b) for b in fn(ctx).map(lambda x: x["filename"])) == 2
        seen.append(set(got["filename"].tolist()))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 8


def test_eval_stream_keeps_sizes(tmp_path):
    recs = [u.encoded("x", *u.random_pair(0, 33, 60, NUM_CLASSES))]
    u.write_records(tmp_path, "val", recs, num_shards=1)
    got = u.collect(pipeline.eval_dataset(str(tmp_path), 1, split="val", dataset_name="demo"))
    assert got["height"].tolist() == [33] and got["width"].tolist() == [60]
    assert got["image"].shape == (1, 65, 65, 3) and got["valid"].sum() == 33 * 60
    assert np.all(got["label"][0, 33:] == 255)


def test_configs_are_bound_by_gin_only_through_the_run_config():
    from wss.experiment import parse_run_config

    config = parse_run_config(
        [],
        [
            "Experiment.crop_size = 33",
            "AugmentConfig.min_scale = 0.75",
            "StrongConfig.jitter_strength = 0.5",
        ],
    )
    assert (config.experiment.crop_size, config.augment.min_scale) == (33, 0.75)
    assert config.strong.jitter_strength == 0.5
    # Built anywhere else, a config class keeps its documented defaults.
    assert augment.AugmentConfig().min_scale == 0.5
    assert augment.StrongConfig().jitter_strength == 1.0
    # One crop size: the geometry has none of its own to bind.
    with pytest.raises(ValueError, match="crop_size"):
        parse_run_config([], ["AugmentConfig.crop_size = 33"])


def test_cutout_advice_scales_the_release_square_with_the_crop():
    release = augment.StrongConfig()
    assert augment.cutout_advice(513, release) is None  # the release's own setting
    advice = augment.cutout_advice(65, release)  # a 100 px square on a 65 px crop
    assert "StrongConfig.cutout_half_size = 6" in advice and "65 px crop" in advice
    assert augment.cutout_advice(65, augment.StrongConfig(cutout_half_size=6)) is None

"""The tools beside training and evaluation on a TensorFlow Datasets dataset, on the mocked
builders of test_tfds_source: class statistics count what a numpy reading of the same
examples counts, the comparison's runs get Experiment.tfds_data_dir, and self-training
(which needs TFRecord folders) stops at once with one error line."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import write_gin
from tests.data.test_tfds_source import FAKES, mocked_tfds
from wss import program
from wss.builders import tfrecord_writer
from wss.comparison import runner, runs
from wss.comparison.rows import run_spec
from wss.data import class_stats, records, tfds_registry
from wss.data.record_ids import image_id
from wss.self_training.plan import PseudoLabelError

pytestmark = pytest.mark.usefixtures("clear_gin")

PETS = tfds_registry.OXFORD_IIIT_PET


def _reference_labels(entry, split, count):
    """{id: class-id label [h,w]} of the first `count` mocked examples, read with numpy
    and the registry's lookup table (not through the source)."""
    table = np.array(entry.lookup_table())
    _, fake = FAKES[entry.builder.split("/")[0]]
    out = {}
    for _, label, name in fake[split][:count]:
        raw = tf.io.decode_png(label).numpy()[..., entry.label_channel]
        out[image_id(name)] = table[raw]
    return out


def _counts(labels, num_classes):
    flat = np.concatenate([lab.reshape(-1) for lab in labels])
    return np.bincount(flat[flat < num_classes], minlength=num_classes)


def test_class_statistics_read_a_tfds_split(tmp_path):
    ref = _reference_labels(PETS, "train", 6)
    picked = ["train_pet_1", "train_pet_4"]
    with mocked_tfds():
        counts = class_stats.class_pixel_counts("/unused", "train[:6]", 2, dataset_name=PETS.name)
        sub = class_stats.class_pixel_counts(
            "/unused", "train", 2, id_list=picked, dataset_name=PETS.name
        )
        ids, classes = class_stats.class_presence("/unused", "train[:6]", 2, PETS.name)
        path = class_stats.write_split_class_weights(str(tmp_path), "train[:6]", PETS.name)
    np.testing.assert_array_equal(counts, _counts(ref.values(), 2))
    np.testing.assert_array_equal(sub, _counts([ref[i] for i in picked], 2))
    assert ids == sorted(ref)
    assert classes == [{1} if (ref[i] == 1).any() else set() for i in ids]
    assert path == os.path.join(str(tmp_path), "oxford_iiit_pet_class_weights.json")
    saved = json.loads(open(path).read())
    assert saved["dataset"] == PETS.name and saved["pixel_counts"] == counts.tolist()
    expected = class_stats.inverse_frequency_weights(counts)
    np.testing.assert_allclose(class_stats.load_class_weights(path, 2), expected)


def test_class_presence_of_a_tfrecord_folder(tmp_path):
    """The TFRecord folder reads the same way through the pipeline: sorted ids, the
    foreground classes of each mask (255 and unlabeled records: none)."""

    def record(name, label=None):
        return records.EncodedRecord(
            filename=name,
            image_bytes=tf.io.encode_png(np.zeros((2, 3, 3), np.uint8)).numpy(),
            image_format="png",
            height=2,
            width=3,
            label_bytes=None
            if label is None
            else tf.io.encode_png(np.array(label, np.uint8)[..., None]).numpy(),
        )

    recs = [
        record("c.jpg", [[0, 3, 3], [255, 0, 1]]),
        record("a.png", [[0, 0, 2], [2, 255, 0]]),
        record("b"),
    ]
    tfrecord_writer.write_split(
        str(tmp_path), "train", recs, lambda x: x, num_shards=2, num_workers=1, progress=False
    )
    ids, classes = class_stats.class_presence(str(tmp_path), "train", 4)
    assert ids == ["a", "b", "c"] and classes == [{2}, set(), {1, 3}]


def _tfds_params(data_dir):
    return [
        f"Experiment.dataset_name = '{PETS.name}'",
        f"Experiment.tfds_data_dir = '{data_dir}'",
        "Experiment.labeled_split = 'train[:50%]'",
        "Experiment.extra_split = 'train[50%:]'",
    ]


class _Reached(Exception):
    """Raised where a comparison run would start training, carrying its data folder."""


def test_comparison_runs_read_the_experiments_tfds_data_dir(tmp_path, monkeypatch):
    def stop(run_dir, config, dataset_dir, eval_json, log):
        raise _Reached(dataset_dir)

    monkeypatch.setattr(runs, "_train_or_reuse", stop)
    data_dir = str(tmp_path / "tfds")
    params = _tfds_params(data_dir)
    with pytest.raises(_Reached) as reached:
        runner.run_comparison(
            str(tmp_path / "out"), seeds=(0,), rows=("supervised",), gin_params=params, log=str
        )
    assert reached.value.args == (data_dir,)
    # A run started on its own (no folder given) finds it too.
    spec = run_spec("supervised", 0, str(tmp_path / "one"), [runner.DEFAULT_GIN], params, 1)
    with pytest.raises(_Reached) as reached:
        runs.run_one(spec, log=str)
    assert reached.value.args == (data_dir,)


def test_self_training_on_tfds_is_one_error_line_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PseudoLabelError) as caught:
        runner.run_comparison(
            str(out),
            seeds=(0,),
            rows=("supervised", "self_training"),
            gin_params=_tfds_params(tmp_path),
            log=str,
        )
    line = program.user_message(caught.value)
    assert "\n" not in line and PETS.name in line
    assert "--rows=supervised,semi,weakly,decoder,sgc" in line
    assert not out.exists()  # no run started

    from wss import pseudo_label

    argv = [
        "pseudo_label",
        f"--gin_file={write_gin(tmp_path)}",
        f"--gin_param=Experiment.dataset_name = '{PETS.name}'",
        f"--model_dir={tmp_path / 'no_checkpoint_here'}",
        f"--output_dir={out}",
    ]
    with pytest.raises(PseudoLabelError) as caught:  # before the checkpoint is looked for
        pseudo_label.main(argv)
    line = program.user_message(caught.value)
    assert "\n" not in line and PETS.name in line and "MethodOptions.mode = 'semi'" in line
    assert not out.exists()

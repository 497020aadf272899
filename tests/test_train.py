"""The training driver: resume after SIGKILL, checkpoints that always load, NaN stops."""

import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_MODEL, TINY_TRAIN_PARAMS, gin_param_flags, random_step_batches
from wss.checkpointing import training_checkpoint
from wss.experiment import parse_run_config
from wss.method.options import MethodOptions
from wss.model import build_model
from wss.schedule import PolyWithSlowStart, build_optimizer

# Training runs, subprocesses or XLA compiles: minutes each (the full suite runs them).
pytestmark = pytest.mark.slow


def command(model_dir, demo_dir, *params):
    args = [
        sys.executable,
        "-m",
        "wss.train",
        "--gin_file=gin/demo.gin",
        f"--model_dir={model_dir}",
        f"--dataset_dir={demo_dir}",
        "--images_every=0",
        "--eval_at_end=false",
    ]
    return args + gin_param_flags(TINY_TRAIN_PARAMS + tuple(params))


def restore_latest(model_dir):
    """Restores the latest checkpoint into a fresh tiny model + optimizer (all consumed)."""
    config = parse_run_config(["gin/demo.gin"], TINY_TRAIN_PARAMS)
    model = build_model(6, config.model, config.method)
    optimizer = build_optimizer(config.experiment, model)
    path = tf.train.latest_checkpoint(model_dir)
    training_checkpoint(model, optimizer).restore(path).assert_consumed()
    return model, optimizer, path


def test_sigkill_then_resume_continues_exactly(tmp_path, demo_dir):
    model_dir = tmp_path / "run"
    cmd = command(
        model_dir,
        demo_dir,
        "Experiment.num_steps = 8",
        "TrainLoop.checkpoint_every = 2",
        "TrainLoop.log_every = 1",
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (model_dir / "ckpt-4.index").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint at step 4 in time"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)  # not a clean exit
    proc.wait()
    # Whatever was being written when the kill landed, the latest checkpoint loads.
    _, optimizer, path = restore_latest(str(model_dir))
    saved_step = int(re.search(r"ckpt-(\d+)", path).group(1))
    assert saved_step >= 4 and int(optimizer.iterations.numpy()) == saved_step
    momentum = [v for v in optimizer.variables if "momentum" in v.path]
    assert any(np.abs(v.numpy()).max() > 0 for v in momentum), "optimizer slots not saved"

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert f"resumed from {path} at step {saved_step}" in text
    steps = [int(s) for s in re.findall(r"^step (\d+)/8", text, re.M)]
    assert steps and steps[0] == saved_step + 1 and steps[-1] == 8
    first = re.search(rf"^step {saved_step + 1}/8 .*learning_rate=([0-9.e-]+)", text, re.M)
    base_rate = parse_run_config(["gin/demo.gin"]).experiment.learning_rate
    expected = PolyWithSlowStart(base_rate, 8)(saved_step).numpy()
    assert float(first.group(1)) == pytest.approx(expected, rel=1e-3)
    assert (model_dir / "ckpt-8.index").exists()


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, demo_dir):
    model_dir = tmp_path / "nan"
    cmd = command(
        model_dir,
        demo_dir,
        "Experiment.num_steps = 20",
        "Experiment.base_learning_rate = 1e30",
        "TrainLoop.checkpoint_every = 1",
        "TrainLoop.log_every = 1",
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stdout + out.stderr
    match = re.search(
        r"error: loss became (nan|inf|-inf) at step (\d+).*Last good checkpoint: (\S+)\.",
        out.stderr,
    )
    assert match, out.stderr
    bad_step, kept = int(match.group(2)), match.group(3)
    assert not os.path.exists(f"{model_dir}/ckpt-{bad_step}.index")
    model, _, path = restore_latest(str(model_dir))
    assert path == kept
    assert all(np.isfinite(v.numpy()).all() for v in model.weights)


def test_demo_command_trains_evaluates_and_says_where_outputs_are(tmp_path, demo_dir):
    """The README's demo command, with the demo model as shipped, for one step."""
    model_dir = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "wss.train",
        "--gin_file=gin/demo.gin",
        f"--model_dir={model_dir}",
        f"--dataset_dir={demo_dir}",
        "--gin_param=Experiment.num_steps = 1",
        "--gin_param=TrainLoop.log_every = 1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert re.search(r"^step 1/1 total_loss=[0-9.]+ ", text, re.M)
    match = re.search(r"final mIoU on val: ([0-9.]+)%", text)
    assert match and 0.0 <= float(match.group(1)) <= 100.0
    assert (model_dir / "eval_val_1.json").exists() and (
        model_dir / "operative_config.gin"
    ).exists()
    assert f"outputs: checkpoints, operative_config.gin and eval JSON in {model_dir}" in text


def test_initialising_a_3_class_model_from_a_21_class_checkpoint_skips_class_layers(tmp_path):
    from deeplab_ext.checkpoint import save_tf1_checkpoint
    from wss.model import PseudoSegModel
    from wss.training import initialize

    source = PseudoSegModel(deeplab_config=dict(num_classes=21, **TINY_MODEL))
    source.build()
    for var in source.tf1_variable_map().values():
        var.assign(var + 0.01)  # distinguishable from a fresh init
    prefix = save_tf1_checkpoint(source, str(tmp_path / "voc.ckpt"))
    target = PseudoSegModel(deeplab_config=dict(num_classes=3, **TINY_MODEL))
    target.build()
    message = initialize(target, prefix)
    assert "class count differs" in message
    src, dst = source.tf1_variable_map(), target.tf1_variable_map()
    np.testing.assert_array_equal(dst["aspp0/weights"].numpy(), src["aspp0/weights"].numpy())
    np.testing.assert_array_equal(
        dst["hyper_column/key/weights"].numpy(), src["hyper_column/key/weights"].numpy()
    )
    assert dst["logits/semantic/weights"].shape[-1] == 3
    assert dst["pixel_normalization/weights"].shape == (1, 1, 3, 3)
    assert not np.array_equal(
        dst["xception_65/logits/biases"].numpy(), src["xception_65/logits/biases"].numpy()[:2]
    )
    # and it trains: a few supervised steps on random data give finite losses
    target.options = MethodOptions(mode="semi")
    target.compile(optimizer=keras.optimizers.SGD(0.01))
    batch, extra = random_step_batches(num_classes=3)
    logs = target.train_step((batch, extra))
    assert np.isfinite(float(logs["total_loss"]))


def test_excluding_the_labeled_split_from_the_extra_set(demo_dir):
    from wss.data import reader
    from wss.training import labeled_ids

    ids = labeled_ids(parse_run_config(["gin/demo.gin"]).experiment, demo_dir)
    all_labeled = [
        i for s in reader.scan_files(reader.split_files(demo_dir, "labeled")) for i in s.ids
    ]
    assert sorted(ids) == sorted(all_labeled) and len(ids) == 32


def test_demo_backbone_init_is_pretrained_once_then_loaded(tmp_path, demo_dir):
    quick = [
        "Experiment.init_checkpoint = 'demo_backbone'",
        "Experiment.num_steps = 1",
        "PretrainConfig.num_images = 4",
        "PretrainConfig.steps = 2",
        "PretrainConfig.batch_size = 2",
    ]
    first = subprocess.run(
        command(tmp_path / "a", demo_dir, *quick), capture_output=True, text=True, timeout=600
    )
    text = first.stdout + first.stderr
    assert first.returncode == 0, text
    folder = re.search(r"pretraining the demo backbone into (\S+) ", text).group(1)
    assert os.path.dirname(folder) == str(demo_dir)
    assert re.search(rf"initialised from {re.escape(folder)}/model.ckpt: loaded \d+", text)
    second = subprocess.run(
        command(tmp_path / "b", demo_dir, *quick), capture_output=True, text=True, timeout=600
    )
    text = second.stdout + second.stderr
    assert second.returncode == 0, text
    assert "pretraining the demo backbone" not in text and f"initialised from {folder}" in text

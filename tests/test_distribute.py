"""tf.distribute: N replicas give the same step as one device; workers stay in sync."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import random_step_batches, tiny_deeplab_config

# Training runs, subprocesses or XLA compiles: minutes each (the full suite runs them).
pytestmark = pytest.mark.slow

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, env=None):
    return subprocess.Popen(
        [sys.executable, WORKER] + args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Weights after the steps on 1 and on 2 mirrored replicas ('1', '2'), both from one
    worker process (one TensorFlow start-up)."""
    folder = tmp_path_factory.mktemp("mirrored")
    finish(run([str(folder), "mirrored", "1,2"]))
    return {n: np.load(folder / f"mirrored_{n}.npy") for n in ("1", "2")}


@pytest.fixture(scope="module")
def one_device(mirrored):
    """Weights after the steps on a single device (the reference of both tests)."""
    return mirrored["1"]


def test_mirrored_two_replicas_equal_one_device_on_the_same_global_batch(one_device, mirrored):
    two = mirrored["2"]
    assert np.abs(one_device - two).max() <= 1e-6 * np.abs(one_device).max()


def test_synchronized_batch_norm_on_two_replicas_equals_one_device(tmp_path):
    """Fine-tuned batch norm: with synchronized statistics 2 replicas of 2 images give the
    gradients of 1 device with 4 (float64, to rounding); with per-replica statistics they
    do not (why the option exists)."""
    script = os.path.join(os.path.dirname(__file__), "sync_bn_worker.py")
    # One process computes all three (one TensorFlow start-up instead of three).
    finish(
        subprocess.Popen(
            [sys.executable, script, str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    one, two, local = (np.load(tmp_path / f"{name}.npy") for name in ("one", "two", "local"))
    scale = np.abs(one).max()
    assert np.abs(one - two).max() <= 1e-9 * scale
    assert np.abs(one - local).max() > 1e-3 * scale


def test_small_batch_advice_names_the_fix():
    from wss.distribute import small_batch_advice

    assert small_batch_advice(64, 8) == []  # 8 images per replica at the paper's batch
    assert "batches of 4 images" in small_batch_advice(64, 16)[0]  # the paper's 16 GPUs
    advice = small_batch_advice(16, 4)  # 4 images per replica, batch norm fine-tuned
    assert "batches of 4 images" in advice[0] and "sync_batch_norm = True" in advice[0]
    assert "scale_learning_rate_with_batch" in advice[1]
    assert len(small_batch_advice(16, 4, sync_batch_norm=True, scale_learning_rate=True)) == 0
    assert small_batch_advice(4, 1, fine_tune_batch_norm=False, scale_learning_rate=True) == []
    assert small_batch_advice(8, 1, base_learning_rate=0.05) == []  # a rate of one's own
    only_freeze = small_batch_advice(4, 1, scale_learning_rate=True)
    assert "fine_tune_batch_norm = False" in only_freeze[0] and "sync" not in only_freeze[0]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_mirrored_keeps_two_workers_identical(tmp_path, one_device):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        procs.append(run([str(tmp_path / f"w{index}.npy"), "multi_worker"], env=env))
    outs = [finish(p) for p in procs]
    w0, w1 = np.load(tmp_path / "w0.npy"), np.load(tmp_path / "w1.npy")
    np.testing.assert_array_equal(w0, w1)
    assert np.abs(one_device - w0).max() <= 1e-6 * np.abs(w0).max(), outs


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_is_finite_with_float32_losses(policy):
    """In this process (the global policy is put back after): no TensorFlow start-up."""
    import keras
    import tensorflow as tf

    from wss import distribute
    from wss.method.options import MethodOptions
    from wss.model import PseudoSegModel

    before = keras.config.dtype_policy().name
    distribute.set_precision(policy)
    try:
        model = PseudoSegModel(
            deeplab_config=tiny_deeplab_config(num_classes=5), options=MethodOptions(mode="semi")
        )
        model.build()
        opt = keras.optimizers.SGD(0.01, momentum=0.9)
        if policy == "mixed_float16":
            opt = keras.optimizers.LossScaleOptimizer(opt)
        model.compile(optimizer=opt)
        b, e = random_step_batches(num_classes=5)
        logs = tf.function(model.train_step)((b, e))
        assert model.deeplab.compute_dtype != "float32"
        losses = [float(logs[k]) for k in ("total_loss", "sup_loss", "unsup_loss")]
    finally:
        distribute.set_precision(before)
    assert all(np.isfinite(losses)) and losses[1] > 0


def test_training_input_on_8_replicas_is_static_and_sharded_by_host(tmp_path, demo_dir):
    """TPUStrategy's input rules, checked on 8 logical CPUs: every replica gets a static
    per-replica batch (16 / 8 = 2) of its own images, and 2 hosts read disjoint shards
    that together are the whole split."""
    from wss.data.pipeline import check_static

    out = tmp_path / "input.json"
    finish(
        subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(__file__), "input_worker.py")]
            + [demo_dir, str(out)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    got = json.loads(out.read_text())
    assert got["replicas"] == 8
    expected = {"image": [2, 33, 33, 3], "label": [2, 33, 33, 1], "valid": [2, 33, 33, 1]}
    expected["image_labels"] = [2, 5]
    for stream in ("labeled", "extra"):
        for key, shape in expected.items():
            assert got["shapes"][f"{stream}/{key}"] == [shape] * 8, (stream, key)
        assert got["distinct"][stream] == 8, stream
    assert got["shapes"]["extra/strong"] == [[2, 33, 33, 3]] * 8
    assert got["shapes"]["extra/has_label"] == [[2]] * 8
    first, second = (set(h["ids"]) for h in got["hosts"])
    assert first and second and not first & second and len(first | second) == 400
    assert [h["batch"] for h in got["hosts"]] == [2, 2]

    import tensorflow as tf

    with pytest.raises(ValueError, match=r"\['label'\] has shape \(None, 33\)"):
        check_static({"label": tf.TensorSpec([None, 33], tf.int32)})
    with pytest.raises(ValueError, match="string"):
        check_static({"filename": tf.TensorSpec([2], tf.string)})


JIT_ON_CPUS = """
import tensorflow as tf
cpus = tf.config.list_physical_devices('CPU')
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from wss.distribute import check_jit_devices
check_jit_devices(tf.distribute.get_strategy())  # one device compiles
check_jit_devices(tf.distribute.MirroredStrategy(['/cpu:0']))
try:
    check_jit_devices(tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
except ValueError as e:
    print('REFUSED', e)
"""


def test_xla_on_several_cpu_replicas_is_refused_with_the_way_out():
    out = subprocess.run(
        [sys.executable, "-c", JIT_ON_CPUS], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "REFUSED jit_compile needs GPU replicas under MirroredStrategy" in out.stdout
    assert "without --jit_compile" in out.stdout

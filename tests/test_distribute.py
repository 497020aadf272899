"""tf.distribute: N replicas give the same step as one device; workers stay in sync."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, env=None):
    return subprocess.Popen([sys.executable, WORKER] + args, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """Weights after the steps on a single device (the reference of both tests)."""
    path = tmp_path_factory.mktemp("one") / "one.npy"
    finish(run([str(path), "mirrored", "1"]))
    return np.load(path)


def test_mirrored_two_replicas_equal_one_device_on_the_same_global_batch(tmp_path, one_device):
    finish(run([str(tmp_path / "two.npy"), "mirrored", "2"]))
    two = np.load(tmp_path / "two.npy")
    assert np.abs(one_device - two).max() <= 1e-6 * np.abs(one_device).max()


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
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        procs.append(run([str(tmp_path / f"w{index}.npy"), "multi_worker"], env=env))
    outs = [finish(p) for p in procs]
    w0, w1 = np.load(tmp_path / "w0.npy"), np.load(tmp_path / "w1.npy")
    np.testing.assert_array_equal(w0, w1)
    assert np.abs(one_device - w0).max() <= 1e-6 * np.abs(w0).max(), outs

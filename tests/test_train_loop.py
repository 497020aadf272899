"""The training loop's calls: several steps per tf.function call, XLA, exact resume.

Runs wss.training.train in process on the tiny demo config (deterministic batches: the demo
pipeline is seeded) and compares the weights different loop settings reach.
"""

import re

import gin
import numpy as np
import pytest

from tests.conftest import TINY_TRAIN_PARAMS
from wss.experiment import parse_run_config
from wss.training import crossed, steps_in_call, train

# Training runs, subprocesses or XLA compiles: minutes each (the full suite runs them).
pytestmark = pytest.mark.slow


class Stop(Exception):
    """Raised by the print hook: the process 'dies' right after a checkpoint."""


def run_training(model_dir, demo_dir, params, stop_after=None, jit_compile=None):
    """Trains with the tiny demo config + `params`; returns (weights by name, logs, lines).

    `stop_after` (a checkpoint path suffix such as 'ckpt-4') raises Stop once it is saved,
    as a kill between two calls would."""
    lines = []

    def hook(line):
        lines.append(line)
        if stop_after and line.startswith("saved") and line.endswith(stop_after):
            raise Stop(line)

    config = parse_run_config(["gin/demo.gin"], list(TINY_TRAIN_PARAMS + tuple(params)))
    try:
        model, logs, _, _ = train(
            str(model_dir),
            demo_dir,
            images_every=0,
            print_fn=hook,
            jit_compile=jit_compile,
            config=config,
        )
    finally:
        gin.clear_config()
    weights = {name: v.numpy() for name, v in model.tf1_variable_map().items()}
    return weights, logs, lines


def checkpoint_weights(path):
    """The model weights stored in a training checkpoint, by DeepLab name."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(path)
    prefix = "model/variables_by_name/"
    return {
        key[len(prefix) :].split("/.ATTRIBUTES")[0]: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith(prefix)
    }


def assert_same_weights(a, b, rtol=1e-5):
    """Same names; every tensor equal to `rtol` of the largest magnitude of its own."""
    assert sorted(a) == sorted(b)
    for name in a:
        scale = max(float(np.abs(a[name]).max()), 1e-6)
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=rtol * scale, err_msg=name)


COMMON = ["Experiment.num_steps = 8", "TrainLoop.log_every = 4", "TrainLoop.checkpoint_every = 4"]


@pytest.fixture(scope="module")
def one_per_call(tmp_path_factory, demo_dir):
    """The reference: 8 steps, one per call; keeps its step-4 checkpoint."""
    model_dir = tmp_path_factory.mktemp("n1")
    weights, logs, lines = run_training(model_dir, demo_dir, COMMON)
    return weights, logs, lines, model_dir


def test_call_boundaries():
    assert [steps_in_call(s, 10, 4) for s in (0, 4, 8, 9, 6)] == [4, 4, 2, 1, 2]
    assert steps_in_call(3, 100, 1) == 1
    assert crossed(0, 4, 4) and crossed(2, 6, 4) and not crossed(4, 7, 4)
    assert crossed(9, 10, 10) and not crossed(10, 11, 10)


def test_four_steps_per_call_reach_the_weights_of_one_step_per_call(
    tmp_path, demo_dir, one_per_call
):
    reference, ref_logs, ref_lines, _ = one_per_call
    weights, logs, lines = run_training(
        tmp_path, demo_dir, COMMON + ["TrainLoop.steps_per_execution = 4"]
    )
    # The same ops on the same batches in the same order: equal to float rounding.
    assert_same_weights(reference, weights)
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["4/8", "8/8"]
    assert [line.split()[1] for line in ref_lines if line.startswith("step ")] == ["4/8", "8/8"]
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.index")) == ["ckpt-4.index", "ckpt-8.index"]
    # One step per call logs the last step's values, four per call their mean over 5..8.
    assert np.isfinite(logs["total_loss"]) and np.isfinite(ref_logs["total_loss"])


def test_a_kill_between_calls_resumes_at_the_same_step_and_weights(
    tmp_path, demo_dir, one_per_call
):
    _, _, _, ref_dir = one_per_call
    params = COMMON + ["TrainLoop.steps_per_execution = 4"]
    with pytest.raises(Stop):
        run_training(tmp_path, demo_dir, params, stop_after="ckpt-4")
    assert not (tmp_path / "ckpt-8.index").exists()
    # What the killed run left is what one step per call had after 4 steps.
    assert_same_weights(
        checkpoint_weights(str(ref_dir / "ckpt-4")), checkpoint_weights(str(tmp_path / "ckpt-4"))
    )
    _, logs, lines = run_training(tmp_path, demo_dir, params)
    text = "\n".join(lines)
    assert re.search(r"^resumed from \S+ckpt-4 at step 4$", text, re.M), text
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["8/8"]
    assert (tmp_path / "ckpt-8.index").exists() and np.isfinite(logs["total_loss"])


def test_adamw_trains_and_resumes_but_not_as_a_momentum_run(tmp_path, demo_dir):
    adamw = ["Experiment.num_steps = 2", "Experiment.optimizer = 'adamw'"]
    _, logs, _ = run_training(tmp_path, demo_dir, adamw)
    assert np.isfinite(logs["total_loss"])
    # Resuming the finished run restores its own optimizer state (Adam's m and v).
    _, _, again = run_training(tmp_path, demo_dir, adamw)
    assert any(line.startswith("resumed from") for line in again)

    from wss.restore import RestoreError

    with pytest.raises(RestoreError, match=r"cannot resume from .*ckpt-2.*operative_config"):
        run_training(tmp_path, demo_dir, ["Experiment.num_steps = 3"])  # momentum

    # A checkpoint whose data file was cut short is named as unreadable, not as a mismatch.
    (data,) = tmp_path.glob("ckpt-2.data-*")
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(
        RestoreError,
        match=r"cannot read checkpoint .*ckpt-2.*truncated or corrupt.*earlier checkpoint",
    ):
        run_training(tmp_path, demo_dir, adamw)

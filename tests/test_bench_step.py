"""Smoke test of the step benchmark (wss.bench.step) on a tiny model."""

import json
import math

import pytest

from tests.conftest import TINY_MODEL_PARAMS, gin_param_flags
from wss.bench import step
from wss.benchmarking import step_parts, step_timing

SEMI_PARTS = (
    "labeled_pass",
    "pseudo_labels",
    "cam_backbone_pass",
    "gradcam_sgc",
    "strong_pass",
    "optimizer",
)


# Each test parses its own config and leaves none behind.
# Training runs, subprocesses or XLA compiles: minutes each (the full suite runs them).
pytestmark = [pytest.mark.usefixtures("clear_gin"), pytest.mark.slow]


def _run(tmp_path, *extra_args):
    """Runs the tool's main at crop 33 for 2 steps; returns the JSON it wrote."""
    path = tmp_path / "bench.json"
    argv = ["step", "--crop=33", "--steps=2", f"--json={path}"]
    argv += gin_param_flags(TINY_MODEL_PARAMS) + list(extra_args)
    step.main(argv)
    return json.loads(path.read_text())


def _positive(value):
    """A finite number > 0."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_semi_train_step_and_split(tmp_path):
    """Step timings, throughput, memory and the split of a PseudoSeg step."""
    out = _run(tmp_path, "--what=train_step", "--mode=semi")
    assert out["mode"] == "semi" and out["num_classes"] == 21
    for key in ("median_s", "min_s", "max_s", "images_per_s", "peak_rss_gb"):
        assert _positive(out[key]), key
    assert out["min_s"] <= out["median_s"] <= out["max_s"]
    assert len(out["times_s"]) == 2
    assert out["strategy"] == "default" and out["replicas"] == 1
    assert isinstance(out["peak_memory_bytes"], int) and out["peak_memory_bytes"] > 2**20
    for name in SEMI_PARTS:
        part = out["split"][name]
        assert _positive(part["median_s"]), name
        assert 0 < part["share"] <= 1.5, (name, part["share"])
    # The pieces of the weak branch are inside its time, not added to the step's.
    assert out["split"]["gradcam_sgc"]["within"] == "pseudo_labels"
    summed = sum(out["split"][name]["median_s"] for name in step_parts.SUMMED)
    assert out["split"]["sum_of_parts"]["median_s"] == pytest.approx(summed)


@pytest.fixture(scope="module")
def forward_runs(tmp_path_factory):
    """The bare model's inference pass timed in mixed_bfloat16, then in the default
    precision (one run each, shared by the two forward tests), and the global policy
    right after the bfloat16 run."""
    import gin
    import keras

    folder = tmp_path_factory.mktemp("forward")
    try:
        bfloat16 = _run(folder, "--what=forward", "--precision=mixed_bfloat16")
        policy_after = keras.config.dtype_policy().name
        default = _run(folder, "--what=forward")
    finally:
        gin.clear_config()
    return {"mixed_bfloat16": bfloat16, "policy_after": policy_after, "default": default}


def test_forward(forward_runs):
    """The bare model's inference pass: timings and no split."""
    out = forward_runs["default"]
    for key in ("median_s", "min_s", "max_s", "images_per_s", "peak_rss_gb"):
        assert _positive(out[key]), key
    assert out["images_per_step"] == 1
    assert "split" not in out


def test_bfloat16_forward_is_opt_in_and_leaves_the_policy_as_it_was(forward_runs):
    out = forward_runs["mixed_bfloat16"]
    assert out["precision"] == "mixed_bfloat16" and _positive(out["median_s"])
    assert forward_runs["policy_after"] == "float32"
    assert forward_runs["default"]["precision"] == "float32"


def test_sweep_under_mirrored_writes_every_setting(tmp_path):
    """One command: float32 and mixed_float16, XLA off and on, each with step time,
    images_per_s and peak_memory_bytes; without a GPU it says so and runs on the CPU."""
    import tensorflow as tf

    out = _run(
        tmp_path,
        "--strategy=mirrored",
        "--sweep",
        "--nosplit",
        "--mode=supervised",
        "--labeled_batch=2",
        "--steps=1",
    )
    gpus = len(tf.config.list_physical_devices("GPU"))
    assert out["strategy"] == "mirrored" and out["gpus"] == gpus
    assert out["replicas"] == max(gpus, 1)
    if not gpus:
        assert out["device_note"] == "no GPU visible: running on the CPU"
    settings = [(r["precision"], r["jit_compile"]) for r in out["runs"]]
    assert settings == list(step_timing.SWEEP)
    for r in out["runs"]:
        assert _positive(r["median_s"]) and _positive(r["images_per_s"]), r
        assert r["images_per_step"] == 2 * out["replicas"]
        assert r["images_per_s"] == pytest.approx(r["images_per_step"] / r["median_s"])
        assert isinstance(r["peak_memory_bytes"], int) and r["peak_memory_bytes"] > 0
        assert r["peak_memory_source"] == ("gpu_allocator_peak" if gpus else "process_peak_rss")
        assert "split" not in r

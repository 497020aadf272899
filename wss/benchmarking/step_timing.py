"""Times the configured model's forward pass and training step on synthetic batches.

`run` builds the model the gin config describes, times the full training step through
wss.distribute.make_train_function (the function training runs) or the bare inference
pass, and, for the step on one device, each of its parts (wss.benchmarking.step_parts).
`sweep` runs it for float32 and mixed_float16, each with XLA off and on.
"""

import math
import os

import keras
import tensorflow as tf

from wss import distribute, experiment, files, schedule
from wss import model as model_lib
from wss.benchmarking import step_parts, timing
from wss.benchmarking.synthetic import synthetic_batches

DEFAULT_GIN = os.path.join(files.PROJECT_ROOT, "gin", "base.gin")
SWEEP = (("float32", False), ("float32", True), ("mixed_float16", False), ("mixed_float16", True))


def build(gin_files, gin_params, mode, precision="float32", strategy=None):
    """Parses gin (mode override last) and returns (model with optimizer, Experiment),
    built in `strategy`'s scope (default: the current strategy)."""
    distribute.set_precision(precision)
    params = list(gin_params)
    if mode:
        params.append(f"MethodOptions.mode = '{mode}'")
    config = experiment.parse_run_config(gin_files or [DEFAULT_GIN], params)
    exp = config.experiment
    with (strategy or tf.distribute.get_strategy()).scope():
        model = model_lib.build_model(exp.descriptor.num_classes, config.model, config.method)
        model.compile(optimizer=schedule.build_optimizer(exp, model, precision))
    return model, exp


def distributed_step(strategy, model, batch, jit_compile):
    """A no-argument callable running one training step through the training program's
    function (wss.distribute.make_train_function) on `batch`, given to every replica."""
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: tf.data.Dataset.from_tensors(batch).repeat()
    )
    iterator = iter(dataset)
    run_steps = distribute.make_train_function(strategy, model, jit_compile)
    one = tf.constant(1)
    return lambda: run_steps(iterator, one)


def run(
    gin_files=(),
    gin_params=(),
    crop=None,
    labeled_batch=1,
    extra_batch=1,
    steps=5,
    warmup=1,
    split_steps=None,
    mode=None,
    what="train_step",
    split=True,
    jit_compile=False,
    seed=0,
    print_fn=print,
    precision="float32",
    strategy_name="default",
):
    """Builds the configured model, times it and returns a dict of every number.

    Batch sizes are per replica: under 'mirrored' each GPU gets them.
    """
    keras.utils.set_random_seed(seed)
    strategy = distribute.make_strategy(strategy_name)
    replicas = strategy.num_replicas_in_sync
    try:
        model, exp = build(gin_files, gin_params, mode, precision, strategy)
    finally:
        distribute.set_precision("float32")  # the policy is global; the model keeps its own
    opts = model.options
    crop = crop or exp.crop_size
    labeled, extra = synthetic_batches(labeled_batch, extra_batch, crop, model.num_classes, seed)
    result = {
        "what": what,
        "mode": opts.mode,
        "crop": crop,
        "labeled_batch": labeled_batch,
        "extra_batch": extra_batch,
        "steps": steps,
        "warmup": warmup,
        "jit_compile": jit_compile,
        "precision": precision,
        "replicas": replicas,
        **timing.device_info(strategy_name),
        "num_classes": model.num_classes,
        "backbone": model.deeplab.backbone_name,
        "parameters": int(sum(v.numpy().size for v in model.trainable_variables)),
        "tensorflow": tf.__version__,
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
    }
    if what == "forward":

        def forward(images):
            """Inference-mode decoder logits."""
            return model.deeplab.forward(images, training=False)["logits"]

        if replicas > 1:
            raise ValueError("--what=forward times one device; use --strategy=default")
        fn = tf.function(forward, jit_compile=jit_compile)
        args, images = (labeled["image"],), labeled_batch
    else:
        supervised = opts.mode == "supervised"
        fn = distributed_step(
            strategy, model, labeled if supervised else (labeled, extra), jit_compile
        )
        args = ()
        images = replicas * (labeled_batch + (0 if supervised else extra_batch))
    timing.reset_peak_memory()
    full = timing.summarize(*timing.time_calls(fn, args, warmup, steps))
    peak, source, per_device = timing.peak_memory()
    result.update(
        full,
        images_per_step=images,
        images_per_s=images / full["median_s"],
        peak_rss_gb=timing.peak_rss_gb(),
        peak_memory_bytes=peak,
        peak_memory_source=source,
        peak_memory_per_device=per_device,
    )
    print_fn(
        f"{what} ({opts.mode}, crop {crop}, batch {labeled_batch}"
        f"{'' if what == 'forward' or opts.mode == 'supervised' else f'+{extra_batch}'})"
        f": median {full['median_s']:.3f} s, min {full['min_s']:.3f} s, "
        f"max {full['max_s']:.3f} s (CPU {full['cpu_median_s']:.3f} s), "
        f"{result['images_per_s']:.2f} images/s, "
        f"peak RSS {result['peak_rss_gb']:.2f} GB, peak memory {peak / 2.0**30:.2f} GB "
        f"({source}) [{result['device_note']}, {replicas} replica(s)]"
    )
    if what == "train_step" and split and replicas == 1:
        result["split"] = step_parts.time_split(
            model,
            labeled,
            None if opts.mode == "supervised" else extra,
            warmup,
            split_steps or steps,
            full["median_s"],
            jit_compile,
            print_fn,
        )
        result["peak_rss_after_split_gb"] = timing.peak_rss_gb()
    result["load_average_end"] = os.getloadavg()[0]
    return result


def sweep(print_fn=print, **kwargs):
    """run() for float32 and mixed_float16, each with XLA off and on; returns
    {device fields, "runs": [result, ...]}."""
    runs = []
    for precision, jit_compile in SWEEP:
        print_fn(f"-- {precision}, XLA {'on' if jit_compile else 'off'}")
        runs.append(run(precision=precision, jit_compile=jit_compile, print_fn=print_fn, **kwargs))
    keys = ("strategy", "replicas", "gpus", "gpu_names", "device_note", "tensorflow")
    return {**{k: runs[0][k] for k in keys}, "runs": runs}


def non_finite_keys(result):
    """Keys of the top-level numbers of `result` (or of each of its sweep runs) that are
    NaN or infinite."""
    return [
        key
        for one in result.get("runs", [result])
        for key, value in one.items()
        if isinstance(value, float) and not math.isfinite(value)
    ]

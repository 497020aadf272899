"""Measures the model's forward pass and training step on synthetic data.

    python -m wss.bench.step [--gin_file=gin/voc_1_16.gin] [--gin_param=...] --crop=513 \
        --labeled_batch=1 --extra_batch=1 --steps=5 --mode=supervised|semi|weakly \
        [--what=forward|train_step] [--json=PATH]

On GPUs (every visible one, the paper's per-GPU batch; one command, all four settings):

    python -m wss.bench.step --gin_file=gin/voc_1_8.gin --strategy=mirrored --crop=513 \
        --labeled_batch=4 --extra_batch=4 --mode=semi --sweep --nosplit --json=gpu_step.json

The model is the one the gin config builds (default: gin/base.gin, whose dataset is
pascal_voc_seg with 21 classes; the full Xception-65 unless gin params shrink it). Batches
are random but have the real pipelines' keys, dtypes and shapes. Every timed computation
is a tf.function, as in training; warm-up calls (tracing included) are not timed.
Reported: median / min / max seconds per call, images per second, peak memory
(`peak_memory_bytes`: the accelerator allocator's peak, summed over the GPUs, reset before
each setting; without GPUs the process's peak RSS, a high-water mark over the whole
process) and, for train_step on one device, the time split of the step: each part runs
as its own tf.function on the same model and inputs, differentiated where the step
differentiates it, and its median is given as a share of the full step's median.

The full train step is timed through wss.distribute.make_train_function, the function
training runs: under `--strategy=mirrored` every replica (GPU) gets `--labeled_batch` +
`--extra_batch` images, so the global batch and images_per_s grow with the GPUs.
`--sweep` times float32 and mixed_float16, each with XLA off and on, in one process and
writes them all under "runs".
"""

import functools
import math
import os
import resource
import statistics
import sys
import time

import keras
import tensorflow as tf
from absl import flags

from deeplab_ext.resize import resize_bilinear
from wss import distribute, experiment, files, program
from wss.data.descriptors import IGNORE_LABEL
from wss.method import losses
from wss.method.options import MODES

DEFAULT_GIN = os.path.join(experiment.PROJECT_ROOT, "gin", "base.gin")


FLAGS = program.flag_values()
flags.DEFINE_multi_string("gin_file", [], "Gin files (default: gin/base.gin).", flag_values=FLAGS)
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings.", flag_values=FLAGS)
flags.DEFINE_integer("crop", None, "Crop size (default: Experiment.crop_size).", flag_values=FLAGS)
flags.DEFINE_integer(
    "labeled_batch", 1, "Labeled images per step (forward: batch).", flag_values=FLAGS
)
flags.DEFINE_integer("extra_batch", 1, "Extra (weak + strong) images per step.", flag_values=FLAGS)
flags.DEFINE_integer("steps", 5, "Timed calls.", flag_values=FLAGS)
flags.DEFINE_integer("warmup", 1, "Untimed calls first (the first one traces).", flag_values=FLAGS)
flags.DEFINE_integer(
    "split_steps", None, "Timed calls per split part (default: --steps).", flag_values=FLAGS
)
flags.DEFINE_enum("mode", None, list(MODES), "Overrides MethodOptions.mode.", flag_values=FLAGS)
flags.DEFINE_enum(
    "what",
    "train_step",
    ["train_step", "forward"],
    "The full training step, or the bare model's inference pass.",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "split", True, "Time the parts of the step (train_step only).", flag_values=FLAGS
)
flags.DEFINE_boolean(
    "jit_compile", False, "Compile every timed function with XLA.", flag_values=FLAGS
)
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_bfloat16", "mixed_float16"],
    "Keras dtype policy (changes numerics: opt-in, measured apart).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("seed", 0, "Seed of the weights and the synthetic data.", flag_values=FLAGS)
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored"],
    "default: one device; mirrored: every visible GPU (per-replica batches).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "sweep",
    False,
    "Time float32 and mixed_float16, each with XLA off and on (train_step).",
    flag_values=FLAGS,
)
flags.DEFINE_string("json", None, "Write all numbers to this JSON file.", flag_values=FLAGS)


# ----------------------------------------------------------------------- synthetic data


def synthetic_labels(batch, crop, num_classes, seed):
    """Label maps [B, crop, crop, 1] int32 of a few blocky classes, ~5% ignore pixels and
    an ignored padding strip; and the valid mask (0 on the strip) [B, crop, crop, 1]."""
    cells = 8
    grid_seed = tf.constant([seed, 1], tf.int32)
    # Each image uses background plus up to three foreground classes, so that the
    # image-level labels are sparse as in real data.
    palette = tf.random.stateless_uniform([batch, 4], grid_seed, 1, num_classes, tf.int32)
    palette = tf.concat([tf.zeros([batch, 1], tf.int32), palette[:, 1:]], axis=1)
    pick = tf.random.stateless_uniform([batch, cells, cells], grid_seed + 1, 0, 4, tf.int32)
    grid = tf.gather(palette, pick, batch_dims=1)[..., tf.newaxis]
    label = tf.image.resize(grid, [crop, crop], method="nearest")
    noise = tf.random.stateless_uniform([batch, crop, crop, 1], grid_seed + 2)
    label = tf.where(noise < 0.05, IGNORE_LABEL, label)
    rows = tf.range(crop)[tf.newaxis, :, tf.newaxis, tf.newaxis]
    valid = tf.cast(rows < crop - max(1, crop // 8), tf.float32) * tf.ones_like(noise)
    label = tf.where(valid > 0, label, IGNORE_LABEL)
    return tf.cast(label, tf.int32), valid


def image_labels_of(label, num_classes):
    """Multi-hot [B, C-1] of the foreground classes present in each label map."""
    flat = tf.reshape(label, [tf.shape(label)[0], -1])
    hot = tf.one_hot(flat, num_classes, dtype=tf.float32)  # 255 gives an all-zero row
    return tf.reduce_max(hot, axis=1)[:, 1:]


def synthetic_batches(labeled_batch, extra_batch, crop, num_classes, seed=0):
    """(labeled, extra) dicts with the pipelines' keys, dtypes and shapes."""

    def images(batch, offset):
        """Uniform [0, 255] float32 images."""
        return tf.random.stateless_uniform([batch, crop, crop, 3], [seed, offset], 0.0, 255.0)

    label, valid = synthetic_labels(labeled_batch, crop, num_classes, seed)
    labeled = {
        "image": images(labeled_batch, 10),
        "label": label,
        "valid": valid,
        "image_labels": image_labels_of(label, num_classes),
    }
    label, valid = synthetic_labels(extra_batch, crop, num_classes, seed + 1)
    extra = {
        "image": images(extra_batch, 11),
        "strong": images(extra_batch, 12),
        "valid": valid,
        "label": label,
        "has_label": tf.ones([extra_batch]),
        "image_labels": image_labels_of(label, num_classes),
    }
    return labeled, extra


# ----------------------------------------------------------------------- timing


def _wait(outputs):
    """Blocks until `outputs` exist by fetching one (small) tensor of them."""
    tensors = [t for t in tf.nest.flatten(outputs) if isinstance(t, tf.Tensor)]
    if tensors:
        sizes = [t.shape.num_elements() or 0 for t in tensors]
        tensors[sizes.index(min(sizes))].numpy()


def time_calls(fn, args, warmup, steps):
    """(wall seconds, process CPU seconds) of each of `steps` calls of `fn(*args)`, after
    `warmup` untimed calls."""
    for _ in range(warmup):
        _wait(fn(*args))
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        _wait(fn(*args))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return times, cpu


def summarize(times, cpu):
    """Median, min, max and all call times (wall seconds), and the median CPU seconds
    (all threads; less sensitive than wall time to other jobs on a shared machine)."""
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": list(times),
        "cpu_median_s": statistics.median(cpu),
    }


def peak_rss_gb():
    """The process's resident-set high-water mark in GB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2.0**20


def gpu_names():
    """Names of the visible GPUs ('GPU:0', ...)."""
    return [f"GPU:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]


def reset_peak_memory():
    """Restarts the GPUs' peak-memory counters (no-op without GPUs)."""
    for name in gpu_names():
        tf.config.experimental.reset_memory_stats(name)


def peak_memory():
    """(peak bytes, source, per-device peaks): the GPU allocators' peaks since the last
    reset, summed; without GPUs the process's peak RSS."""
    names = gpu_names()
    if names:
        peaks = [int(tf.config.experimental.get_memory_info(n)["peak"]) for n in names]
        return sum(peaks), "gpu_allocator_peak", peaks
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KB
    return rss, "process_peak_rss", [rss]


def device_info(strategy_name):
    """What the benchmark runs on, for the JSON and a line for the reader."""
    gpus = tf.config.list_physical_devices("GPU")
    details = []
    for gpu in gpus:
        try:
            details.append(tf.config.experimental.get_device_details(gpu).get("device_name"))
        except (ValueError, RuntimeError):
            details.append(None)
    info = {"strategy": strategy_name, "gpus": len(gpus), "gpu_names": details}
    info["device_note"] = (
        f"{len(gpus)} GPU(s): {details}" if gpus else "no GPU visible: running on the CPU"
    )
    return info


# ----------------------------------------------------------------------- step parts


def split_parts(model, labeled, extra, jit_compile=False):
    """The parts of one train step as separate computations on the step's inputs.

    Returns a list of (name, fn, args); the `args` of later parts are outputs of earlier
    ones (computed once here, untimed). Names: labeled_pass, cam_backbone_pass (the
    inference-mode backbone pass that feeds Grad-CAM), gradcam_sgc (both Grad-CAM + SGC
    heads, with the backward of L_sa and L_x into the heads), weak_pass (training-mode
    weak view and fusion), strong_pass, optimizer.
    """
    opts = model.options
    dl = model.deeplab
    variables = model.trainable_variables

    def gradients(tape, loss):
        """{variable path: gradient} of the variables `loss` depends on."""
        grads = tape.gradient(loss, variables)
        return {v.path: g for v, g in zip(variables, grads) if g is not None}

    def labeled_pass(images, label):
        """Training-mode pass of the labeled images with L_s and weight decay, backward."""
        with tf.GradientTape() as tape:
            end_points = dl.extract_features(images, training=True)
            logits = dl.segmentation_logits(end_points, training=True)
            loss = losses.supervised_ce(logits, label) + losses.weight_decay(
                dl.regularized_kernels(), opts.weight_decay
            )
        return loss, gradients(tape, loss)

    def features(images, training):
        """The end points Grad-CAM and the SGC read, and the decoder size."""
        end_points = dl.extract_features(images, training=training)
        backbone = dl.backbone
        names = (backbone.cam_end_point,) + tuple(backbone.hypercolumn_end_points)
        needed = {name: end_points[name] for name in names}
        return needed, dl.decoder_size(end_points)

    def cam_backbone_pass(images):
        """The inference-mode backbone pass of the weak view (forward only)."""
        return features(images, False)

    def gradcam_sgc(weak_points, weak_size, lab_points, lab_size):
        """Both Grad-CAM + SGC calls of a step; L_sa (+ L_x in semi mode) backward."""
        weak_labels = extra["image_labels"] if opts.mode == "weakly" else None
        weak = model.cam_and_sgc(
            weak_points,
            extra["valid"],
            weak_size,
            weak_labels,
            dropout=False,
            sgc_bn_training=opts.sgc_bn_training_in_weak_branch,
        )
        sgc_up = resize_bilinear(weak["sgc_logits"], weak_size)
        with tf.GradientTape() as tape:
            lab = model.cam_and_sgc(
                lab_points, labeled["valid"], lab_size, labeled["image_labels"], dropout=True
            )
            loss = losses.supervised_ce(lab["sgc_logits"], labeled["label"])
            if opts.mode == "semi":
                loss += losses.classification_loss(lab["cls_logits"], labeled["image_labels"])
        return sgc_up, loss, gradients(tape, loss)

    def weak_pass(images, sgc_up):
        """Training-mode weak view and fusion; backward of L_x in weakly mode only."""
        with tf.GradientTape() as tape:
            out = dl.forward(images, training=True, dropout=True)
            loss = tf.constant(0.0)
            if opts.mode == "weakly":
                loss = losses.classification_loss(out["cls_logits"], extra["image_labels"])
        probs = model.fuse({"weak": out, "sgc_logits_upsampled": sgc_up})
        grads = gradients(tape, loss) if opts.mode == "weakly" else {}
        return probs, grads

    def strong_pass(images, probs):
        """Training-mode strong view with L_u against fixed pseudo labels, backward."""
        with tf.GradientTape() as tape:
            logits = dl.forward(images, training=True)["logits"]
            valid = losses.resize_mask_nearest(extra["valid"], tf.shape(logits)[1:3])
            loss = losses.unlabeled_ce(
                probs,
                logits,
                valid,
                confidence_threshold=opts.confidence_threshold,
                soft=opts.soft_labels,
                weight=opts.unlabeled_weight,
            )
        return loss, gradients(tape, loss)

    def compile_(fn):
        """A tf.function of `fn`, as every timed computation is."""
        return tf.function(fn, jit_compile=jit_compile)

    parts = [("labeled_pass", compile_(labeled_pass), (labeled["image"], labeled["label"]))]
    touched = set(parts[0][1](*parts[0][2])[1])
    if extra is not None:
        sgc_up = None
        if opts.uses_sgc:
            cam_fn = compile_(cam_backbone_pass)
            weak_points, weak_size = cam_fn(extra["image"])
            lab_points, lab_size = compile_(features)(labeled["image"], True)
            heads = compile_(gradcam_sgc)
            head_args = (weak_points, weak_size, lab_points, lab_size)
            sgc_up, _, grads = heads(*head_args)
            touched |= set(grads)
            parts += [
                ("cam_backbone_pass", cam_fn, (extra["image"],)),
                ("gradcam_sgc", heads, head_args),
            ]
        weak_fn = compile_(weak_pass)
        probs, grads = weak_fn(extra["image"], sgc_up)
        touched |= set(grads)
        strong_fn = compile_(strong_pass)
        touched |= set(strong_fn(extra["strong"], probs)[1])
        parts += [
            ("weak_pass", weak_fn, (extra["image"], sgc_up)),
            ("strong_pass", strong_fn, (extra["strong"], probs)),
        ]
    # The optimizer updates the variables that receive a gradient in the step.
    updated = [v for v in variables if v.path in touched]
    zeros = [tf.zeros_like(v) for v in updated]

    def optimizer(grads):
        """SGD-momentum update of the step's variables."""
        model.optimizer.apply(grads, updated)

    apply = compile_(optimizer)
    parts.append(("optimizer", apply, (zeros,)))
    return parts


# ----------------------------------------------------------------------- the tool


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
        model = experiment.build_model(exp.descriptor.num_classes, config.model, config.method)
        model.compile(optimizer=experiment.build_optimizer(exp, model, precision))
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
        **device_info(strategy_name),
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
    reset_peak_memory()
    full = summarize(*time_calls(fn, args, warmup, steps))
    peak, source, per_device = peak_memory()
    result.update(
        full,
        images_per_step=images,
        images_per_s=images / full["median_s"],
        peak_rss_gb=peak_rss_gb(),
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
        result["split"] = time_split(
            model,
            labeled,
            None if opts.mode == "supervised" else extra,
            warmup,
            split_steps or steps,
            full["median_s"],
            jit_compile,
            print_fn,
        )
        result["peak_rss_after_split_gb"] = peak_rss_gb()
    result["load_average_end"] = os.getloadavg()[0]
    return result


def time_split(
    model, labeled, extra, warmup, steps, full_median, jit_compile=False, print_fn=print
):
    """Median of each part of the step and its share of the full step's median."""
    out = {}
    for name, fn, args in split_parts(model, labeled, extra, jit_compile):
        times, cpu = time_calls(fn, args, warmup, steps)
        median = statistics.median(times)
        out[name] = {
            "median_s": median,
            "share": median / full_median,
            "cpu_median_s": statistics.median(cpu),
        }
        print_fn(f"  {name:18s} {median:8.3f} s  {100 * median / full_median:5.1f}%")
    total = sum(p["median_s"] for p in out.values())
    out["sum_of_parts"] = {"median_s": total, "share": total / full_median}
    if "gradcam_sgc" in out:
        both = out["gradcam_sgc"]["median_s"] + out["cam_backbone_pass"]["median_s"]
        out["gradcam_sgc_with_backbone"] = {"median_s": both, "share": both / full_median}
    print_fn(f"  {'sum of parts':18s} {total:8.3f} s  {100 * total / full_median:5.1f}%")
    return out


SWEEP = (("float32", False), ("float32", True), ("mixed_float16", False), ("mixed_float16", True))


def sweep(print_fn=print, **kwargs):
    """run() for float32 and mixed_float16, each with XLA off and on; returns
    {device fields, "runs": [result, ...]}."""
    runs = []
    for precision, jit_compile in SWEEP:
        print_fn(f"-- {precision}, XLA {'on' if jit_compile else 'off'}")
        runs.append(run(precision=precision, jit_compile=jit_compile, print_fn=print_fn, **kwargs))
    keys = ("strategy", "replicas", "gpus", "gpu_names", "device_note", "tensorflow")
    return {**{k: runs[0][k] for k in keys}, "runs": runs}


def main(argv=None):
    """Command line entry; returns the result dict (None for --help)."""
    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    print_fn = functools.partial(print, flush=True)
    print_fn(device_info(fv.strategy)["device_note"])
    kwargs = dict(
        gin_files=fv.gin_file,
        gin_params=fv.gin_param,
        crop=fv.crop,
        labeled_batch=fv.labeled_batch,
        extra_batch=fv.extra_batch,
        steps=fv.steps,
        warmup=fv.warmup,
        split_steps=fv.split_steps,
        mode=fv.mode,
        what=fv.what,
        split=fv.split,
        seed=fv.seed,
        strategy_name=fv.strategy,
    )
    if fv.sweep:
        if fv.what != "train_step":
            raise program.UsageError("--sweep times the train step (--what=train_step)")
        result = sweep(print_fn=print_fn, **kwargs)
    else:
        result = run(
            jit_compile=fv.jit_compile, precision=fv.precision, print_fn=print_fn, **kwargs
        )
    if fv.json:
        files.write_json(fv.json, result)
    flat = [r.items() for r in result.get("runs", [result])]
    bad = [k for items in flat for k, v in items if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        print(f"warning: non-finite numbers: {bad}", file=sys.stderr)
    return result


if __name__ == "__main__":
    program.run(main, FLAGS)

"""Choosing a tf.distribute strategy and a mixed-precision policy from flag values, the
distributed (optionally XLA-compiled, several-steps-per-call) training function, and
advice for runs on fewer devices than the paper's 16 GPUs."""

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
PAPER_LABELED_BATCH = 64  # the global labeled batch the paper's learning rate is tuned for
PAPER_LEARNING_RATE = 0.007
MIN_BATCH_NORM_BATCH = 8  # fewer images give batch statistics too noisy to fine-tune on


def make_strategy(name="default", tpu=""):
    """Returns the tf.distribute strategy `name` ('default', 'mirrored', 'multi_worker',
    'tpu'; `tpu` is the TPU address for TPUStrategy)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")


def set_precision(policy):
    """Sets Keras's global dtype policy: 'float32', 'mixed_float16' (GPU) or
    'mixed_bfloat16' (TPU). Losses and softmaxes are computed in float32 regardless."""
    if policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"unknown precision policy {policy!r}")
    keras.mixed_precision.set_global_policy(policy)


def small_batch_advice(
    labeled_batch_size,
    replicas,
    fine_tune_batch_norm=True,
    sync_batch_norm=False,
    scale_learning_rate=False,
    base_learning_rate=PAPER_LEARNING_RATE,
):
    """Warnings for a run whose batches are smaller than the paper's, each naming the gin
    binding that fixes it: batch norm fine-tuned on fewer than 8 images (per replica, or
    per global batch when synchronized), and the paper's learning rate on a smaller batch
    without linear scaling (a learning rate of one's own is left alone)."""
    advice = []
    per_replica = labeled_batch_size // max(replicas, 1)
    stats_batch = labeled_batch_size if sync_batch_norm else per_replica
    if fine_tune_batch_norm and stats_batch < MIN_BATCH_NORM_BATCH:
        fixes = ["ModelSettings.fine_tune_batch_norm = False (keep the checkpoint's statistics)"]
        if replicas > 1 and not sync_batch_norm and labeled_batch_size >= MIN_BATCH_NORM_BATCH:
            fixes.insert(
                0,
                "ModelSettings.sync_batch_norm = True (statistics over all "
                f"{replicas} replicas' {labeled_batch_size} images)",
            )
        advice.append(
            f"batch norm is fine-tuned on batches of {stats_batch} images "
            f"(< {MIN_BATCH_NORM_BATCH}); its statistics will be noisy and mIoU "
            "lower. Consider " + " or ".join(fixes)
        )
    if (
        labeled_batch_size < PAPER_LABELED_BATCH
        and not scale_learning_rate
        and base_learning_rate == PAPER_LEARNING_RATE
    ):
        advice.append(
            f"global labeled batch {labeled_batch_size} < the paper's "
            f"{PAPER_LABELED_BATCH}, at the paper's learning rate; consider "
            "Experiment.scale_learning_rate_with_batch = True (linear scaling)"
        )
    return advice


def check_jit_devices(strategy):
    """Raises ValueError for XLA under several replicas that are not all GPUs.

    Mirrored strategies leave the optimizer's cross-replica update inside the compiled
    step only when every replica is a GPU (NCCL all-reduce in XLA); elsewhere the update
    reads the other replicas' variables, which an XLA program cannot (seen on logical
    CPUs: 'Trying to access resource ... located in device CPU:1 from device CPU:0').
    """
    if strategy.num_replicas_in_sync < 2:
        return  # one device (the default strategy has no worker_devices)
    devices = strategy.extended.worker_devices
    if not all("GPU" in d.upper() for d in devices):
        raise ValueError(
            f"jit_compile needs GPU replicas under {type(strategy).__name__} "
            f"(got {list(devices)}); train without --jit_compile, on one device, or "
            "on TPUs (--strategy=tpu always compiles)"
        )


def make_train_function(strategy, model, jit_compile=False):
    """A tf.function `run(iterator, num_steps)` that runs `num_steps` training steps under
    `strategy` and returns the means of the model's trackers over those steps (per replica,
    then averaged over replicas), fetched once per call.

    With `jit_compile` each replica's step is compiled by XLA (under TPUStrategy it is
    anyway); the loop and the iterator stay outside XLA, whose programs cannot read a
    tf.data iterator.
    """
    step_fn = model.train_step
    if jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy):
        check_jit_devices(strategy)
        step_fn = tf.function(model.train_step, jit_compile=True)

    def reset():
        for tracker in model.metrics:
            tracker.reset_state()

    def results():
        return {tracker.name: tracker.result() for tracker in model.metrics}

    @tf.function
    def run(iterator, num_steps):
        # Trackers are per replica (sync on read): reset and read them in replica context.
        strategy.run(reset)
        for _ in tf.range(num_steps):
            strategy.run(step_fn, args=(next(iterator),))
        per_replica = strategy.run(results)
        return {
            k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in per_replica.items()
        }

    return run

"""Timing and memory of repeated calls: wall and CPU seconds, peak memory, the device."""

import resource
import statistics
import time

import tensorflow as tf


def wait(outputs):
    """Blocks until `outputs` exist by fetching one (small) tensor of them."""
    tensors = [t for t in tf.nest.flatten(outputs) if isinstance(t, tf.Tensor)]
    if tensors:
        sizes = [t.shape.num_elements() or 0 for t in tensors]
        tensors[sizes.index(min(sizes))].numpy()


def time_calls(fn, args, warmup, steps):
    """(wall seconds, process CPU seconds) of each of `steps` calls of `fn(*args)`, after
    `warmup` untimed calls."""
    for _ in range(warmup):
        wait(fn(*args))
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        wait(fn(*args))
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


def images_per_second(dataset, batch_size, steps, warmup=3):
    """Images/s of iterating `dataset` for `steps` batches after `warmup` batches."""
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch_size / (time.perf_counter() - start)


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

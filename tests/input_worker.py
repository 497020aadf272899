"""The training input on 8 logical CPU devices, for tests/test_distribute.py.

    python tests/input_worker.py DEMO_DIR OUT.json

Builds wss.training.make_input under a MirroredStrategy of 8 logical CPUs with the options a
TPU run uses (static shapes, drop_remainder, per-host shards via the input context) and
writes what the test checks: each replica's shapes, whether replicas got different
images, and the record ids each of 2 simulated hosts reads.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

REPLICAS = 8
GLOBAL_BATCH = 16


def main(demo_dir, out_path):
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )
    import numpy as np

    from wss.data import pipeline
    from wss.experiment import parse_run_config
    from wss.training import make_input

    config = parse_run_config(
        ["gin/demo.gin"],
        [
            "Experiment.crop_size = 33",
            f"Experiment.labeled_batch_size = {GLOBAL_BATCH}",
            f"Experiment.extra_batch_size = {GLOBAL_BATCH}",
        ],
    )
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
    exp = config.experiment
    dataset = make_input(strategy, config, demo_dir)
    labeled, extra = next(iter(dataset))
    result = {"replicas": strategy.num_replicas_in_sync, "shapes": {}, "distinct": {}}
    for stream, batch in (("labeled", labeled), ("extra", extra)):
        for key, value in batch.items():
            parts = strategy.experimental_local_results(value)
            result["shapes"][f"{stream}/{key}"] = [list(p.shape) for p in parts]
        images = [p.numpy() for p in strategy.experimental_local_results(batch["image"])]
        result["distinct"][stream] = len({im.tobytes() for im in images})
    # Two hosts of 4 replicas each: the records each host's pipeline reads.
    hosts = []
    for host in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=host, num_replicas_in_sync=REPLICAS
        )
        records = pipeline.decoded_records(
            demo_dir, exp.extra_split, exp.descriptor.num_classes, False, input_context=ctx
        )
        ids = [x["filename"].numpy().decode() for x in records]
        fn = pipeline.make_dataset_fn(
            pipeline.extra_dataset,
            GLOBAL_BATCH,
            static_shapes=True,
            stream=pipeline.TrainingStream(
                demo_dir, exp.extra_split, exp.crop_size, dataset_name=exp.dataset_name
            ),
        )
        batch = next(iter(fn(ctx)))
        hosts.append({"ids": ids, "batch": int(np.shape(batch["image"])[0])})
    result["hosts"] = hosts
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

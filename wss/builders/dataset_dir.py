"""Where a dataset's records are: the folder a run reads, the demo's built on first use.

`resolve_dataset_dir` is called once at a program's edge (the training and comparison
command lines, the tools that read a run) and the folder it returns is passed down.
"""

import os

from wss import files
from wss.builders import demo
from wss.data import descriptors, tfds_registry
from wss.errors import ConfigError


def resolve_dataset_dir(dataset_name, dataset_dir=None, tfds_data_dir=None):
    """The TFRecord folder of a dataset: `dataset_dir` if given; the demo data (built into
    ./demo_data when absent) for 'demo'; the folder of a descriptor.json given by path.
    For a 'tfds:' name, the TFDS data directory: `dataset_dir`, else `tfds_data_dir`
    (Experiment.tfds_data_dir), else TFDS's default."""
    if tfds_registry.is_tfds_name(dataset_name):
        from wss.data import tfds_source  # TensorFlow Datasets: only for a 'tfds:' name

        return tfds_source.resolve_data_dir(dataset_dir or tfds_data_dir)
    if dataset_dir:
        if not files.isdir(dataset_dir):
            raise FileNotFoundError(f"dataset directory {dataset_dir!r} does not exist")
        return dataset_dir
    if dataset_name == "demo":
        return demo.ensure_demo_dataset(os.path.abspath("demo_data"))
    default = descriptors.default_dataset_dir(dataset_name)
    if default:
        return default
    raise ConfigError(
        f"--dataset_dir is required for dataset {dataset_name!r} (a folder of "
        "DeepLab-format TFRecords; see the README's Data section)"
    )

"""Installs the PseudoSeg reimplementation: `deeplab_ext` (Keras DeepLab) and `wss` (the method).

The top-level `datasets/` folder holds dataset-building scripts and split lists; it is
deliberately not installed as a package, since a top-level `datasets` package would clash
with the popular PyPI package of that name.
"""

from setuptools import find_packages, setup

setup(
    name="pseudoseg-tf2",
    version="0.1.0",
    description="PseudoSeg (ICLR 2021) in TensorFlow 2 / Keras 3, faithful to DeepLab",
    packages=find_packages(include=["deeplab_ext", "deeplab_ext.*", "wss", "wss.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "tensorboard>=2.20,<2.22",
        "tensorflow-datasets>=4.9,<5",
        # TFDS 4.9 imports it to prepare a dataset but declares it for Python < 3.9 only.
        "importlib_resources>=5,<8",
        "numpy>=1.26,<3",
        "absl-py>=2.0,<3",
        "gin-config>=0.5,<0.6",
        "pillow>=10,<14",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "pytest-xdist>=3.6,<4",
            "ruff==0.17.5",
            # The local Google Cloud Storage of tests/gcs_rig.py (it patches the emulator's
            # internals, hence the exact version) and the throw-away CA of its TLS proxy.
            "gcp-storage-emulator==2026.7.19",
            "trustme>=1.2,<2",
            # scipy and pycocotools: the tests of the VOC + SBD and COCO builders run, not skip.
            "scipy>=1.10,<2",
            "pycocotools>=2.0.7,<3",
        ],
        "coco": ["pycocotools>=2.0.7,<3"],
        # SBD's cls/*.mat labels (VOC train_aug with --sbd_dir) are MATLAB files: scipy reads them.
        "voc": ["scipy>=1.10,<2"],
        # keras-hub encoders (ResNet, MiT, DINOv2 presets) as backbones: backbone 'keras_hub'.
        "hub": ["keras-hub==0.32.0"],
    },
)

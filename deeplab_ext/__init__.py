"""DeepLabv3+ as Keras layers with DeepLab's TF1 variable names (see docs/architecture.md).

Importing the package imports the backbone modules, which fills the backbone registry
(deeplab_ext.backbone) and registers their layers for Keras serialization.
"""

from deeplab_ext import resnet, xception  # noqa: F401  (they register themselves)

"""The training, evaluation and calibration stages a comparison run calls.

The one place the comparison library reaches the training and calibration libraries.
"""

from wss.reliability import VARIANTS, calibrate, save_reliability_png
from wss.training import evaluate_final, labeled_ids, train

__all__ = [
    "VARIANTS",
    "calibrate",
    "evaluate_final",
    "labeled_ids",
    "save_reliability_png",
    "train",
]

"""Evaluation: streaming mIoU (`evaluator`, `metrics`), calibration (`reliability`), pictures.

`pictures` and `colormap` draw the readable side-by-side PNGs; the command lines are
wss.eval, wss.calibration and wss.vis.
"""

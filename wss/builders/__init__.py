"""The dataset builders' library: VOC 2012, COCO 2017, a folder of images and masks, and
the synthetic demo, each turned into DeepLab-format TFRecords (the command lines are
datasets/build_*.py). The training input (reading those records) is wss.data."""

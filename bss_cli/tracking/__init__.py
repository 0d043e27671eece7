"""Experiment trackers (TensorBoard, MLflow, Weights & Biases, CSV) for bss train and bss study."""

from bss_cli.tracking.backends import BACKENDS, Target, parse_names
from bss_cli.tracking.hub import Tracking, epoch_values, final_values

__all__ = ["BACKENDS", "Target", "Tracking", "epoch_values", "final_values", "parse_names"]

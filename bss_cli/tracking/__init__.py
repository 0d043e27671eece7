"""Experiment trackers (TensorBoard, MLflow, Weights & Biases, CSV) for bss train and bss study.

Owns the tracker backends and the background thread that drives them. May import the ground floor
(errors, artifacts) and numpy; each tracker's own library is imported only when that tracker is
asked for (no tracker is a dependency of the base install)."""

from bss_cli.tracking.backends import BACKENDS, Target, parse_names
from bss_cli.tracking.hub import Tracking, epoch_values, final_values

__all__ = ["BACKENDS", "Target", "Tracking", "epoch_values", "final_values", "parse_names"]

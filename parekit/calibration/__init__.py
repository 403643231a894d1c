"""Calibration: statistics for passes, collected by running the model over chosen data."""

from parekit.calibration.collect import CalibrationSet, collect

__all__ = ["CalibrationSet", "collect"]

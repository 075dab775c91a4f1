"""Workflows: what combines several layers (models, data, weights, training, deploy, compression) into one job.

Prediction with any model file, evaluation of a model on its own data split or a folder, int8 calibration images
from a model's training data, and the compression chain. The CLI and the experiment scripts call these; nothing
below this package imports it.
"""

from .calibrate import calibration_images
from .evaluate import EvalReport, evaluate_model
from .predict import Prediction, Predictor, read_image

__all__ = ["EvalReport", "Prediction", "Predictor", "calibration_images", "evaluate_model", "read_image"]

"""Workflows: what combines several layers (models, data, weights, training, deploy, compression) into one job.

Prediction with any model file, evaluation of a model on its own data split or a folder, int8 calibration images
from a model's training data, and the compression chain. The CLI and the experiment scripts call these; nothing
below this package imports it.
"""

from .calibrate import calibration_images
from .compress import ChainPlan, Stage, compress_model, format_stages
from .evaluate import EvalReport, evaluate_model
from .predict import Prediction, Predictor, read_image

__all__ = ["ChainPlan", "EvalReport", "Prediction", "Predictor", "Stage", "calibration_images", "compress_model",
           "evaluate_model", "format_stages", "read_image"]  # fmt: skip

"""Why residual networks work, measured on any resnetkit model: lesion studies, paths, loss landscapes, feature
reuse, gradient flow and class activation maps (see ``docs/analysis.md``).

Each analysis is a function from a model and image tensors to a result dataclass (``as_dict()`` for JSON) and a
``plot_*`` function drawing one or more results (a ResNet beside its plain twin) into a PNG.
"""

from .cam import CamResult, class_activation_maps, overlay, plot_cam, to_uint8_images
from .gradients import GradientResult, gradient_norms, plot_gradients
from .landscape import LandscapeResult, filter_normalized_direction, landscape, plot_landscape, smoothness
from .lesion import LesionResult, lesion, plot_lesion
from .paths import PathsResult, path_gradient, paths, plot_paths
from .reuse import ReuseResult, linear_cka, plot_reuse, reuse
from .units import Unit, forward_units, residual_units, without_branch

__all__ = [
    "CamResult", "GradientResult", "LandscapeResult", "LesionResult", "PathsResult", "ReuseResult", "Unit",
    "class_activation_maps", "filter_normalized_direction", "forward_units", "gradient_norms", "landscape",
    "lesion", "linear_cka", "overlay", "path_gradient", "paths", "plot_cam", "plot_gradients", "plot_landscape",
    "plot_lesion", "plot_paths", "plot_reuse", "residual_units", "reuse", "smoothness", "to_uint8_images",
    "without_branch",
]  # fmt: skip

"""Why residual networks work, measured on any resnetkit model: lesion studies, paths, loss landscapes, feature
reuse, gradient flow and class activation maps (see ``docs/analysis.md``).

Each analysis is a function from a model and image tensors to a result dataclass (``as_dict()`` for JSON) and a
``plot_*`` function drawing one or more results (a ResNet beside its plain twin) into a PNG.
"""

from .units import Unit, forward_units, residual_units, without_branch

__all__ = ["Unit", "forward_units", "residual_units", "without_branch"]

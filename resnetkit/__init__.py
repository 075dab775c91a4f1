"""resnetkit: residual networks (He et al. 2015) and their family, defined once, as data.

    >>> import resnetkit
    >>> model = resnetkit.create_model("cifar_resnet20")
    >>> resnetkit.list_models("cifar_resnet*")[:2]
    ['cifar_resnet20', 'cifar_resnet32']
"""

from .models import *  # noqa: F403  (the public model API, listed in models.__all__)
from .models import __all__ as _model_api
from .weights import load_model

__version__ = "0.1.0"
__all__ = list(_model_api) + ["load_model", "__version__"]

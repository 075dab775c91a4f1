"""torchvision-style builder functions: ``resnet50(num_classes=10, replace_stride_with_dilation=[False, True, True])``.

Each builder takes torchvision's keyword arguments (``num_classes``, ``groups``, ``width_per_group``,
``replace_stride_with_dilation``, ``norm_layer``, ``zero_init_residual``) and any :class:`ResNetConfig` field,
and returns the same :class:`ResNet` that ``create_model`` builds.
"""

from __future__ import annotations

from typing import Any, Callable

from .registry import create_model
from .resnet import ResNet


def _builder(name: str) -> Callable[..., ResNet]:
    def build(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> ResNet:
        if weights is not None:
            raise NotImplementedError(
                f"{name}(weights=...) is not supported yet: build the model, then model.load_state_dict(...) "
                "with a torchvision or timm state dict (parameter names are identical)"
            )
        return create_model(name, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"Build ``{name}`` with torchvision's keyword arguments; see :func:`resnetkit.create_model`."
    return build


resnet18 = _builder("resnet18")
resnet34 = _builder("resnet34")
resnet50 = _builder("resnet50")
resnet101 = _builder("resnet101")
resnet152 = _builder("resnet152")
resnext50_32x4d = _builder("resnext50_32x4d")
resnext101_32x8d = _builder("resnext101_32x8d")
resnext101_64x4d = _builder("resnext101_64x4d")
wide_resnet50_2 = _builder("wide_resnet50_2")
wide_resnet101_2 = _builder("wide_resnet101_2")

"""torch.hub entry points: every resnetkit variant, by name, with optional pretrained weights.

    >>> model = torch.hub.load("<owner>/resnetkit", "resnet50", pretrained=True)        # default weights
    >>> model = torch.hub.load("<owner>/resnetkit", "resnet50", pretrained="tv_in1k")   # a tag
    >>> model = torch.hub.load("path/to/resnetkit", "cifar_resnet20", source="local", num_classes=100)

torch.hub looks entry points up with ``getattr`` and lists them with ``dir``; the module-level ``__getattr__`` and
``__dir__`` (PEP 562) answer both from the variant table, so every variant is an entry point without one function
per name.
"""

import functools

dependencies = ["torch", "torchvision", "safetensors"]


def __getattr__(name):
    from resnetkit.models import VARIANTS, create_model

    if name not in VARIANTS:
        raise AttributeError(f"resnetkit has no model {name!r}")
    entry = functools.partial(create_model, name)
    entry.__doc__ = f"resnetkit {name}: create_model({name!r}, pretrained=False, **overrides)"
    return entry


def __dir__():
    from resnetkit.models import VARIANTS

    return sorted([*VARIANTS, "dependencies"])

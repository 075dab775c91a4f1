"""Pretrained weights: one safe format (safetensors + metadata), a registry of ``name.tag``, a download cache and
converters from torchvision, timm, training checkpoints and Keras Applications.

    >>> import resnetkit
    >>> model = resnetkit.load_model("resnet50.tv2_in1k")        # from the registry (downloaded once)
    >>> model = resnetkit.load_model("runs/r20/weights.safetensors")  # or from a file alone
    >>> resnetkit.weights.convert("resnet50_dp.pth", "resnet50.safetensors")  # module.-prefixed, wrapped, ...
"""

from .convert import convert, convert_state_dict, infer_arch, read_state_dict
from .format import Metric, Preprocess, WeightsError, WeightsMeta, load_checked, read_weights, save_weights
from .hub import cache_dir, fetch, load_model, load_pretrained
from .keras import convert_keras
from .registry import PRETRAINED, WeightsEntry, get_weights, list_weights

__all__ = [
    "convert", "convert_keras", "convert_state_dict", "infer_arch", "read_state_dict",
    "Metric", "Preprocess", "WeightsError", "WeightsMeta", "load_checked", "read_weights", "save_weights",
    "cache_dir", "fetch", "load_model", "load_pretrained", "PRETRAINED", "WeightsEntry", "get_weights", "list_weights",
]  # fmt: skip

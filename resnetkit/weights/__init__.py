"""Pretrained weights: one safe format (safetensors + the model record), a registry of ``name.tag``, a download
cache and converters from torchvision, timm, training checkpoints and Keras Applications.

    >>> import resnetkit
    >>> model = resnetkit.load_model("cifar_resnet20.c10jpeg_cpu30")  # from the registry (shipped, or downloaded)
    >>> model.record.metrics[0].split
    'val (5000 held out, split_seed 0)'

Importing this package installs :func:`load_pretrained` as what ``create_model(..., pretrained=...)`` calls: the
models layer below knows nothing of weights.
"""

from ..models import Metric, Preprocess
from ..models.registry import set_pretrained_loader
from .convert import convert, convert_state_dict, infer_arch, read_any, read_state_dict, record_for_state_dict
from .format import (
    WeightsError,
    WeightsMeta,
    load_checked,
    model_with,
    read_train_state,
    read_weights,
    save_weights,
)
from .hub import adapt_input_conv, cache_dir, fetch, load_model, load_pretrained
from .keras import convert_keras
from .registry import PRETRAINED, WeightsEntry, get_weights, list_weights

set_pretrained_loader(load_pretrained)

__all__ = [
    "Metric", "Preprocess", "convert_keras",
    "convert", "convert_state_dict", "infer_arch", "read_any", "read_state_dict", "record_for_state_dict",
    "WeightsError", "WeightsMeta", "load_checked", "model_with", "read_train_state", "read_weights", "save_weights",
    "adapt_input_conv", "cache_dir", "fetch", "load_model", "load_pretrained",
    "PRETRAINED", "WeightsEntry", "get_weights", "list_weights",
]  # fmt: skip

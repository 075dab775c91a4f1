"""Architecture only: configs, layers, residual units, the ResNet, the variant table and its registry, the model
record and architecture edits. Nothing here imports weights, train, deploy or compress."""

from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResidualUnit
from .builders import (
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)
from .complexity import count_macs, count_params, model_table
from .config import BlockType, Norm, ResNetConfig, Shortcut, Stem
from .features import FeatureExtractor, FeatureInfo
from .mobile import MOBILE_VARIANTS, MobileConfig, MobileFeatureExtractor, MobileNetwork, MobileNetV2, ShuffleNetV2
from .record import IMAGENET_MEAN, IMAGENET_STD, Metric, ModelRecord, Preprocess
from .registry import create_model, get_variant, list_models, model_config
from .resnet import ResNet
from .variants import VARIANTS

__all__ = [
    "BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck", "ResidualUnit",
    "BlockType", "Norm", "ResNetConfig", "Shortcut", "Stem", "ResNet", "VARIANTS", "FeatureExtractor", "FeatureInfo",
    "IMAGENET_MEAN", "IMAGENET_STD", "Metric", "ModelRecord", "Preprocess",
    "create_model", "get_variant", "list_models", "model_config", "count_macs", "count_params", "model_table",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
    "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
    "MOBILE_VARIANTS", "MobileConfig", "MobileFeatureExtractor", "MobileNetwork", "MobileNetV2", "ShuffleNetV2",
]  # fmt: skip

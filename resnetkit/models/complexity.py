"""Parameter and multiply-accumulate counts, and the model table built from them.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's own counter, which sees every
convolution and matrix product the forward pass runs) on the meta device, so even ResNet-1202 or a Wide ResNet
costs no memory and no arithmetic. One multiply-add is two FLOPs; the ResNet paper's "FLOPs" are multiply-adds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from .config import ResNetConfig
from .registry import get_variant, list_models
from .resnet import ResNet
from .variants import PaperMetric, paper_config


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int | tuple[int, int], in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass of a single image of ``input_size``.

    The pass runs in eval mode (a batch of one has no batch statistics; stochastic depth and dropout are off);
    every module is then put back in the mode it had, so counting in the middle of training changes nothing.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    device = next(model.parameters()).device
    x = torch.empty(1, in_chans, h, w, device=device)
    counter = FlopCounterMode(display=False)
    modes = {module: module.training for module in model.modules()}  # per module: a frozen BN stays in eval
    try:
        with counter, torch.no_grad():
            model.eval()(x)
    finally:
        for module, training in modes.items():
            module.training = training
    return counter.get_total_flops() // 2


def complexity(config: ResNetConfig, input_size: int) -> tuple[int, int]:
    """(params, MACs) of the network ``config`` describes, counted on the meta device."""
    with torch.device("meta"):
        model = ResNet.from_config(config)
    return count_params(model), count_macs(model, input_size, config.in_chans)


@dataclass(frozen=True)
class ModelRow:
    """One line of the model table."""

    name: str
    input_size: int
    params: int
    macs: int
    paper_metric: PaperMetric | None = None
    paper_value: float | None = None
    ours_in_paper_setting: float | None = None  # our count of the same metric in the paper's setting
    paper_source: str = ""
    paper_setting: str = ""  # the overrides that give the paper's setting, e.g. "stride_in_1x1"

    @property
    def paper_diff(self) -> float | None:
        """Relative difference of our count from the paper's figure."""
        if self.paper_value is None or self.ours_in_paper_setting is None:
            return None
        return self.ours_in_paper_setting / self.paper_value - 1.0


@functools.lru_cache(maxsize=None)
def model_row(name: str) -> ModelRow:
    """Count a variant, and the same metric in the setting of its paper figure, if it has one (cached)."""
    variant = get_variant(name)
    params, macs = complexity(variant.config, variant.input_size)
    row = ModelRow(name, variant.input_size, params, macs)
    if variant.paper is None:
        return row
    setting = paper_config(variant)
    paper_params, paper_macs = (params, macs) if setting == variant.config else complexity(setting, variant.input_size)
    ours = paper_macs if variant.paper.metric is PaperMetric.MACS else paper_params
    setting_label = ", ".join(k if v is True else f"{k}={v}" for k, v in variant.paper.setting.items())
    return ModelRow(name, variant.input_size, params, macs, variant.paper.metric, variant.paper.value, ours,
                    variant.paper.source, setting_label)  # fmt: skip


def model_table(pattern: str = "*", progress: bool = False) -> list[ModelRow]:
    """Rows for every variant matching ``pattern``, with a progress bar on stderr if ``progress``."""
    names = list_models(pattern)
    return [model_row(name) for name in tqdm(names, desc="counting", unit="model", disable=not progress, leave=False)]

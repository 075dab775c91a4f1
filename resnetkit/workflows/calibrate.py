"""Calibration images for int8: real images, prepared as the model expects, from the model's own training data.

This combines layers (a model's record, the training data pipeline, folder loading), so it sits above them; the
quantizer in :mod:`resnetkit.deploy.quantize` takes the images as a tensor and knows nothing of datasets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..data.stream import folder_loader
from ..models import ModelRecord
from ..train.config import TrainConfig
from ..train.data import build_data
from ..train.distributed import World
from ..weights import load_model


def calibration_images(
    model: str | Path | ModelRecord, count: int = 512, *, dataset: str | None = None, split: str = "train"
) -> torch.Tensor:
    """The first ``count`` images of a model's own training split, normalised as in training, unaugmented.

    For a model trained by resnetkit, the dataset, split seed, input size and normalisation come from its record,
    so the images are the ones (or, with ``dataset``, like the ones) it was trained on. Other weights need
    ``dataset``, an image folder or zip, read in order with the weights' own preprocessing.

    Args:
        model: a model file or registry name, or its :class:`~resnetkit.models.ModelRecord`.
        count: how many images; fewer come back if the split is smaller.
        dataset: another dataset (``cifar10``, a folder or ``.zip``) in place of the model's own.
        split: ``train`` (default), ``val`` or ``test``. A streamed folder (``in_memory: false``) has only
            ``val`` without augmentation, and uses it.
    """
    if count < 1:
        raise ValueError(f"the number of calibration images must be at least 1, got {count}")
    record = model if isinstance(model, ModelRecord) else load_model(model).record
    if record.train_config:
        batches = _run_batches(record, dataset, split)
    elif dataset is not None:
        # labels do not matter here: a folder of one class (or a few images in one folder) calibrates as well
        loader = folder_loader(dataset, record.preprocess, 64, shuffle=False, workers=0, min_classes=1)
        batches = (x for x, _ in loader)
    else:
        raise ValueError(f"{record.arch} weights do not say what data they were trained on; give calibration "
                         "images (--data FOLDER_OR_ZIP)")  # fmt: skip
    images, taken = [], 0
    for x in batches:
        images.append(x[: count - taken].float().contiguous())
        taken += len(images[-1])
        if taken >= count:
            break
    return torch.cat(images)


def _run_batches(record: ModelRecord, dataset: str | None, split: str):
    cfg = TrainConfig.from_dict(record.train_config)
    if dataset is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset))
    data = build_data(cfg, torch.device("cpu"), World(), normalize=(record.preprocess.mean, record.preprocess.std))
    splits = data.eval_splits(include_train=True)
    if split == "train" and split not in splits:  # a streamed folder evaluates val only
        split = "val"
    if split not in splits:
        raise ValueError(f"split {split!r} does not exist for {cfg.data.dataset}; choose from {sorted(splits)}")
    return (x for x, _ in splits[split])

"""Getting weights onto disk and into a model: the download cache, ``load_model`` and ``pretrained=``.

Downloads go to ``$RESNETKIT_CACHE`` if set, else ``$TORCH_HOME/resnetkit`` (``TORCH_HOME`` defaults to
``$XDG_CACHE_HOME/torch``, then ``~/.cache/torch``, as in torch.hub). A file torchvision already downloaded into
``$TORCH_HOME/hub/checkpoints`` is used in place. Downloads resume after an interruption, are verified by
checksum before they get their final name, and offline fail with one line naming the file to place where.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..io import checksum_mismatch, download_url, file_digest
from ..models import ResNet
from .convert import convert_state_dict, read_any, read_state_dict
from .format import WeightsError, load_checked, model_with
from .registry import SHIPPED, SourceFormat, WeightsEntry, get_weights


def torch_home() -> Path:
    xdg = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return Path(os.environ.get("TORCH_HOME", xdg / "torch")).expanduser()


def cache_dir(override: str | Path | None = None) -> Path:
    """Where downloaded and converted weights live (see the module docstring for the order of precedence)."""
    if override is not None:
        return Path(override).expanduser()
    if "RESNETKIT_CACHE" in os.environ:
        return Path(os.environ["RESNETKIT_CACHE"]).expanduser()
    return torch_home() / "resnetkit"


def fetch(entry: WeightsEntry, cache: str | Path | None = None, progress: bool = True) -> Path:
    """The local resnetkit weights file of a registry entry: shipped, cached, or downloaded and converted now."""
    if entry.url is None:
        return checked_shipped(entry)
    folder = cache_dir(cache)
    converted = folder / f"{entry.name}.safetensors"
    if converted.is_file():
        return converted
    original = torch_home() / "hub" / "checkpoints" / entry.filename  # torchvision's own cache
    if not original.is_file() or checksum_mismatch(original, sha256=entry.sha256):  # the name promises a hash
        original = download_url(entry.url, folder / entry.filename, sha256=entry.sha256, progress=progress)
    if entry.source_format is SourceFormat.RESNETKIT:
        return original
    convert_state_dict(read_state_dict(original), converted, entry.arch, preprocess=entry.preprocess,
                       metrics=entry.metrics, recipe=entry.recipe, source=entry.url,
                       source_sha256=file_digest(original), extra={"name": entry.name})  # fmt: skip
    return converted


def checked_shipped(entry: Any) -> Path:
    """A shipped file, after checking it is there and whole (its SHA-256 against the manifest's). ``entry``: a
    :class:`WeightsEntry` or a task model's entry (anything with ``name``, ``filename`` and ``sha256``)."""
    path = SHIPPED / entry.filename
    if not path.is_file():
        raise FileNotFoundError(f"shipped weights {entry.name} are missing from {SHIPPED}; reinstall resnetkit")
    if file_digest(path, "sha256") != entry.sha256:
        raise WeightsError(f"shipped weights {path} are damaged: SHA-256 differs from the manifest's; reinstall resnetkit")
    return path


def resolve(source: str | Path, cache: str | Path | None = None, progress: bool = True) -> Path:
    """A model file path, or a registry name (``resnet50.tv2_in1k``, or ``resnet50`` for its default)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".safetensors", ".pth", ".pt", ".bin", ".h5", ".keras") or os.sep in str(source):
        raise FileNotFoundError(f"model file {str(source)!r} not found")
    return fetch(get_weights(str(source)), cache, progress)


def load_model(source: str | Path, cache: str | Path | None = None, progress: bool = True) -> ResNet:
    """Rebuild a model from a file or a registry name alone, with no other argument.

    ``source`` is anything resnetkit writes (a run's ``last.safetensors``, ``best.safetensors`` or
    ``weights.safetensors``, a converted or published file, and the files of resnetkit 0.1), a checkpoint that
    ``resnetkit convert`` accepts (torchvision, timm, DDP-wrapped, Keras ``.h5``; converted in memory), or a
    registry name. The model carries its :class:`~resnetkit.models.ModelRecord` (preprocessing, classes,
    metrics, provenance) as ``model.record``.

    Example:
        >>> model = load_model("cifar_resnet20.c10jpeg_cpu30").eval()  # shipped in the package
        >>> model.record.preprocess.crop_size, len(model.record.classes)
        (32, 10)
    """
    state, record = _read(source, cache, progress)
    return model_with(record, state, source=f"weights {source}")


def load_pretrained(model: ResNet, arch: str, pretrained: bool | str | Path, **kwargs: Any) -> ResNet:
    """Load weights into ``model``, a variant built by ``create_model(arch, ...)`` (on the meta device or not).

    ``pretrained`` is ``True`` (the arch's default tag), a tag (``"tv_in1k"``), a full name or a file. The model
    may differ from the weights' in any option that keeps the parameters' shapes (stochastic depth, dropout,
    output stride, zero-init, frozen BatchNorm, ...). A classifier of another size is left freshly initialised,
    and a stem for another number of input channels is adapted from the weights' (as timm does); any other
    difference is a one-line error naming the first tensor whose shape differs.
    """
    source = _weights_source(arch, pretrained)
    state, record = _read(source, **kwargs)
    state = _fit_to(model, state, record, str(source))
    load_checked(model, state, source=f"weights {source}", assign=True)
    if record.config.num_classes != model.config.num_classes:
        model.reset_classifier(model.config.num_classes)  # fresh (real, not meta) head
    _check_materialised(model)
    model.record = record.replace(config=model.config, classes=record.classes if model.num_classes ==
                                  record.config.num_classes else ())  # fmt: skip
    return model


def _read(source: str | Path, cache: str | Path | None = None, progress: bool = True):
    """The tensors and record of a file or registry name; a converted file in the cache that reads back damaged is
    deleted and converted again, once, rather than failing until someone deletes it by hand."""
    path = resolve(source, cache, progress)
    try:
        return read_any(path)
    except WeightsError as err:
        if path.parent != cache_dir(cache) or not path.name.endswith(".safetensors"):
            raise
        warnings.warn(f"{err}; converting it again", stacklevel=3)
        path.unlink()
        return read_any(resolve(source, cache, progress))


def _weights_source(arch: str, pretrained: bool | str | Path) -> str | Path:
    if pretrained is True:
        return arch
    if isinstance(pretrained, str) and "." not in pretrained and not Path(pretrained).exists():
        return f"{arch}.{pretrained}"
    return pretrained


def _fit_to(model: ResNet, state: dict[str, torch.Tensor], record: Any, source: str) -> dict[str, torch.Tensor]:
    """The weights' tensors as ``model`` needs them: its own classifier, an adapted stem, BatchNorm counters
    dropped where its norm has none (frozen BatchNorm); then every shape must agree."""
    if record.edits:
        raise WeightsError(f"weights {source} are of an edited (pruned or factorised) network; "
                           f"use resnetkit.load_model({source!r})")  # fmt: skip
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in expected)}
    if record.config.num_classes != model.config.num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        state |= {k: v for k, v in expected.items() if k.startswith("fc.")}  # replaced by a fresh head after
    stem = next(iter(k for k in expected if k.endswith("weight") and expected[k].dim() == 4))
    if stem in state and state[stem].shape[1] != expected[stem].shape[1]:
        state[stem] = adapt_input_conv(state[stem], expected[stem].shape[1])
    for key, tensor in expected.items():
        if key in state and state[key].shape != tensor.shape:
            raise WeightsError(f"weights {source} do not fit the model asked for: {key} is "
                               f"{tuple(state[key].shape)} in the weights, {tuple(tensor.shape)} in the model")  # fmt: skip
    return state


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first-convolution kernel ``(out, c, kh, kw)`` for ``in_chans`` input channels, as timm adapts it: summed
    over the channels for one (a grey image then gives what an RGB image of equal channels gave), else repeated
    and scaled by ``c / in_chans`` so the output keeps its magnitude."""
    c = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // c)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (c / in_chans)


def _check_materialised(model: ResNet) -> None:
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(f"the weights left {len(left)} tensors without values, e.g. {left[0]}")

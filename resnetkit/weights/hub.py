"""Getting weights onto disk and into a model: the download cache, ``load_model`` and ``pretrained=``.

Downloads go to ``$RESNETKIT_CACHE`` if set, else ``$TORCH_HOME/resnetkit`` (``TORCH_HOME`` defaults to
``$XDG_CACHE_HOME/torch``, then ``~/.cache/torch``, as in torch.hub). A file torchvision already downloaded into
``$TORCH_HOME/hub/checkpoints`` is used in place. Downloads resume after an interruption, are verified by
checksum before they get their final name, and offline fail with one line naming the file to place where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data.download import download_url, file_digest
from ..models import ResNet
from .convert import convert_state_dict, read_state_dict
from .format import WeightsError, load_checked, model_with, read_weights
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
        return _checked_shipped(entry)
    folder = cache_dir(cache)
    converted = folder / f"{entry.name}.safetensors"
    if converted.is_file():
        return converted
    original = torch_home() / "hub" / "checkpoints" / entry.filename  # torchvision's own cache
    if not original.is_file():
        original = download_url(entry.url, folder / entry.filename, sha256=entry.sha256, progress=progress)
    if entry.source_format is SourceFormat.RESNETKIT:
        return original
    convert_state_dict(read_state_dict(original), converted, entry.arch, preprocess=entry.preprocess,
                       metrics=entry.metrics, recipe=entry.recipe, source=entry.url, source_sha256=entry.sha256,
                       extra={"name": entry.name})  # fmt: skip
    return converted


def _checked_shipped(entry: WeightsEntry) -> Path:
    """A shipped file, after checking it is there and whole (its SHA-256 against the manifest's)."""
    path = SHIPPED / entry.filename
    if not path.is_file():
        raise FileNotFoundError(f"shipped weights {entry.name} are missing from {SHIPPED}; reinstall resnetkit")
    if file_digest(path, "sha256") != entry.sha256:
        raise WeightsError(f"shipped weights {path} are damaged: SHA-256 differs from the manifest's; reinstall resnetkit")
    return path


def resolve(source: str | Path, cache: str | Path | None = None, progress: bool = True) -> Path:
    """A weights file path, or a registry name (``resnet50.tv2_in1k``, or ``resnet50`` for its default)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".safetensors", ".pth", ".pt") or os.sep in str(source):
        raise FileNotFoundError(f"weights file {str(source)!r} not found")
    return fetch(get_weights(str(source)), cache, progress)


def load_model(source: str | Path, cache: str | Path | None = None, progress: bool = True) -> ResNet:
    """Rebuild a model from a resnetkit weights file or a registry name alone, with no other argument.

    The model carries its :class:`WeightsMeta` (preprocessing, classes, metrics) as ``model.weights_meta``.

    Example:
        >>> model = load_model("resnet50.tv2_in1k").eval()  # downloads once, then reads the cache
        >>> model.weights_meta.preprocess.resize_size
        232
    """
    state, meta = read_weights(resolve(source, cache, progress))
    model = model_with(meta.config, state, source=f"weights {source}")
    model.weights_meta = meta
    return model


def load_pretrained(model: ResNet, arch: str, pretrained: bool | str | Path, **kwargs: Any) -> ResNet:
    """Load weights into ``model``, a variant built by ``create_model(arch, ...)``.

    ``pretrained`` is ``True`` (the arch's default tag), a tag (``"tv_in1k"``), a full name or a file. When the
    model was asked for another number of classes than the weights have, everything but the classifier is loaded
    and the classifier keeps its fresh initialisation (as in timm); every other difference is an error.
    """
    if pretrained is True:
        source: str | Path = arch
    elif isinstance(pretrained, str) and "." not in pretrained and not Path(pretrained).exists():
        source = f"{arch}.{pretrained}"
    else:
        source = pretrained
    state, meta = read_weights(resolve(source, **kwargs))
    if meta.config.replace(num_classes=model.config.num_classes) != model.config:
        raise WeightsError(f"weights {source} are for {meta.arch} with another architecture than the model asked "
                           f"for; use resnetkit.load_model({str(source)!r}) to rebuild theirs")  # fmt: skip
    if meta.config.num_classes != model.config.num_classes:
        head = {k for k in state if k.startswith("fc.")}
        state = {k: v for k, v in state.items() if k not in head} | {k: v for k, v in model.state_dict().items() if k.startswith("fc.")}
    load_checked(model, state, source=f"weights {source}")
    model.weights_meta = meta
    return model

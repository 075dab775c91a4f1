"""Keras Applications ResNets as resnetkit models: ResNet50/101/152 (v1) and ResNet50V2/101V2/152V2.

Files are read with h5py alone (Keras is not needed): Keras 2 weight files such as the published
``resnet50_weights_tf_dim_ordering_tf_kernels.h5`` (and its ``_notop`` twin), whole models saved with
``model.save("x.h5")``, and Keras 3 ``.weights.h5`` files, which name layers only by class and position.

What Keras builds differently from torchvision (keras/src/applications/resnet.py and resnet_v2.py), and the
resnetkit option that reproduces it:

- Every v1 convolution has a bias, and so have the V2 stem, projection and last 1x1 convolutions
  (``conv_bias``; zeros where Keras has none). BatchNorm epsilon is 1.001e-5 (``norm_eps``).
- v1 strides on the first 1x1 of a bottleneck, as in the paper (``stride_in_1x1``).
- V2 (pre-activation, He et al. 2016) strides in the last unit of stages 1-3, whose identity shortcut is a 1x1
  max-pool with stride, i.e. subsampling (``stride_last_unit``), and pads its stem max-pool with zeros, which
  matters there because no ReLU precedes it (``stem_pool_zero_pad``).
- Explicit ``ZeroPadding2D`` layers (3 before the 7x7/2 stem, 1 before V2's 3x3s) are PyTorch's symmetric padding.
- v1 expects 'caffe' input (BGR, ImageNet mean subtracted, 0-255): the stem's input channels are reversed here so
  the model takes RGB, and the preprocessing becomes mean/std in [0, 1] units. V2 expects 'tf' input (RGB,
  x / 127.5 - 1): mean 0.5, std 0.5.

References:
    He et al. 2015, "Deep Residual Learning for Image Recognition".
    He et al. 2016, "Identity Mappings in Deep Residual Networks".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import torch

from ..models import ResNet, create_model
from ..models.variants import IMAGENET_DEPTHS
from .format import WeightsError

KERAS_EPS = 1.001e-5
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # Keras subtracts these (in BGR order) from 0-255 pixels
LayerWeights = dict[str, np.ndarray]  # Keras weight name ("kernel", "gamma", ...) -> array
ByClass = dict[str, list[tuple[str, list[np.ndarray]]]]  # Keras 3 class -> [(key, arrays)] in position order


@dataclass(frozen=True)
class KerasArch:
    """One Keras Applications ResNet: its Keras name, depth and version."""

    keras_name: str  # "ResNet50", "ResNet50V2", ...
    depth: int
    v2: bool

    @property
    def variant(self) -> str:
        """The resnetkit variant it is built from."""
        return f"preact_resnet{self.depth}" if self.v2 else f"resnet{self.depth}"

    @property
    def overrides(self) -> dict[str, Any]:
        """Config overrides that turn :attr:`variant` into the Keras architecture (classifier size aside)."""
        common = {"conv_bias": True, "norm_eps": KERAS_EPS}
        if self.v2:
            return common | {"stride_last_unit": True, "stem_pool_zero_pad": True}
        return common | {"stride_in_1x1": True}

    @property
    def layers(self) -> tuple[int, ...]:
        return IMAGENET_DEPTHS[self.depth][1]


ARCHS = {a.keras_name.lower(): a for a in (KerasArch(f"ResNet{d}{'V2' if v2 else ''}", d, v2)
                                            for v2 in (False, True) for d in (50, 101, 152))}  # fmt: skip
# keras-applications' resnet_common.py, which wrote the published weight files, named the classifier "probs".
LAYER_ALIASES = {"probs": "predictions"}
KERAS_CLASSES = {"conv2d": ("kernel", "bias"), "dense": ("kernel", "bias"),
                 "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance")}  # fmt: skip


def convert_keras(path: str | Path, arch: str | None = None) -> tuple[ResNet, dict[str, Any]]:
    """Read a Keras Applications ResNet ``.h5``/``.weights.h5`` file into the resnetkit model holding its weights.

    A file without the ``predictions`` layer (Keras' ``include_top=False``) gives a headless model
    (``num_classes=0``); the classifier size otherwise comes from the file. A whole-model file whose layer names
    are not Keras Applications' (a ResNet written by hand) is read by its graph instead, with Keras (see
    :mod:`resnetkit.weights.keras_graph`).

    Args:
        path: the Keras file.
        arch: ``resnet50``, ``resnet101``, ``resnet152``, ``resnet50v2``, ... or the Keras names (``ResNet50V2``);
            inferred from the file's layer names (or, in ``.weights.h5`` files, layer counts) when ``None``.

    Returns:
        The model (eval mode, RGB input), and preprocessing and provenance: ``arch`` and ``overrides`` (so that
        ``create_model(arch, **overrides)`` rebuilds it), ``config``, ``mean``/``std`` in [0, 1] units,
        ``input_size``, ``resize_size``, ``crop_size``, ``interpolation`` and ``source`` (``"keras:ResNet50"``).

    Raises:
        ValueError: the file is not a Keras file of that architecture; lists every missing, unexpected and
            misshaped layer in one line.
    """
    try:
        spec, layers = read_keras_layers(path, arch)
    except ValueError:
        if arch is not None or not _is_whole_model(path):
            raise
        from .keras_graph import convert_keras_graph  # any functional Keras ResNet, read by its graph

        return convert_keras_graph(path)
    num_classes = layers["predictions"]["kernel"].shape[-1] if "kernel" in layers.get("predictions", {}) else 0
    overrides = spec.overrides | {"num_classes": num_classes}
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = create_model(spec.variant, **overrides)
    model.load_state_dict(keras_state_dict(spec, layers, model.state_dict(), path), assign=True)
    mean, std = ((0.5,) * 3, (0.5,) * 3) if spec.v2 else (tuple(m / 255 for m in CAFFE_MEAN_RGB), (1 / 255,) * 3)
    info = {"arch": spec.variant, "overrides": overrides, "config": model.config, "mean": mean, "std": std,
            "input_size": 224, "resize_size": 256, "crop_size": 224, "interpolation": "bilinear",
            "source": f"keras:{spec.keras_name}"}  # fmt: skip
    return model.eval(), info


def _is_whole_model(path: str | Path) -> bool:
    """Whether ``path`` holds a whole Keras model (its graph): a ``.keras`` archive, or an ``.h5`` with a config."""
    path = Path(path)
    if path.suffix == ".keras":
        return path.is_file()
    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs
    except OSError:
        return False


def keras_arch(name: str) -> KerasArch:
    """Look a Keras ResNet up by name, case-insensitively: ``resnet50``, ``ResNet101V2``, ``resnet152_v2``."""
    try:
        return ARCHS[name.lower().replace("_", "")]
    except KeyError:
        raise ValueError(f"unknown Keras ResNet {name!r}; choose one of {', '.join(ARCHS)}") from None


# -- the layer table -------------------------------------------------------------------------------------------


def keras_layers(spec: KerasArch, top: bool = True) -> list[tuple[str, str]]:
    """(Keras layer, resnetkit module) for every layer with weights, in Keras' own ``model.layers`` order.

    Keras orders a functional model's layers by their distance from the output, so a projection shortcut's conv
    (and v1's norm after it) sits beside the branch's last conv (and norm). The order matters only for
    ``.weights.h5`` files, which know each layer by class and position.
    """
    table = [("conv1_conv", "conv1")] + ([] if spec.v2 else [("conv1_bn", "bn1")])
    for s, depth in enumerate(spec.layers):
        for b in range(depth):
            table += list(_unit_layers(f"conv{s + 2}_block{b + 1}", f"layer{s + 1}.{b}", spec.v2, projection=b == 0))
    table += [("post_bn", "norm")] if spec.v2 else []
    return table + ([("predictions", "fc")] if top else [])


def _unit_layers(k: str, t: str, v2: bool, projection: bool) -> Iterator[tuple[str, str]]:
    """One residual unit's layers: Keras ``{k}_{i}_conv``/``_bn`` (``_0_`` is the shortcut), resnetkit ``{t}``."""
    if v2:  # pre-activation: the norm before each conv is bn1..bn3, the branch ends in conv3
        yield from [(f"{k}_preact_bn", f"{t}.bn1"), (f"{k}_1_conv", f"{t}.conv1"), (f"{k}_1_bn", f"{t}.bn2"),
                    (f"{k}_2_conv", f"{t}.conv2"), (f"{k}_2_bn", f"{t}.bn3")]  # fmt: skip
        yield from [(f"{k}_0_conv", f"{t}.downsample.0")] if projection else []
        yield f"{k}_3_conv", f"{t}.conv3"
        return
    yield from [(f"{k}_1_conv", f"{t}.conv1"), (f"{k}_1_bn", f"{t}.bn1"),
                (f"{k}_2_conv", f"{t}.conv2"), (f"{k}_2_bn", f"{t}.bn2")]  # fmt: skip
    if projection:
        yield from [(f"{k}_0_conv", f"{t}.downsample.0"), (f"{k}_3_conv", f"{t}.conv3"),
                    (f"{k}_0_bn", f"{t}.downsample.1"), (f"{k}_3_bn", f"{t}.bn3")]  # fmt: skip
    else:
        yield from [(f"{k}_3_conv", f"{t}.conv3"), (f"{k}_3_bn", f"{t}.bn3")]


def _keras_class(layer: str) -> str:
    """The Keras class (as Keras 3 files name it) of a layer in :func:`keras_layers`."""
    return "dense" if layer == "predictions" else "conv2d" if layer.endswith("_conv") else "batch_normalization"


# -- reading the file ------------------------------------------------------------------------------------------


def read_keras_layers(path: str | Path, arch: str | None = None) -> tuple[KerasArch, dict[str, LayerWeights]]:
    """The file's architecture and its layers with weights, ``{layer name: {"kernel": array, ...}}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an HDF5 file, not a Keras one, or the architecture cannot be told (pass ``arch``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras file {str(path)!r} not found")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not an HDF5 file ({str(err).splitlines()[0]})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f  # whole models keep the weights one level down
        if _attr_list(root, "layer_names"):  # Keras 2 weights, or any Keras .h5 model or weights file
            layers = _read_named(root)
            return (keras_arch(arch) if arch else _arch_from_names(layers, path)), layers
        if isinstance(f.get("layers"), h5py.Group):  # Keras 3 .weights.h5
            by_class = _read_by_class(f["layers"])
            spec = keras_arch(arch) if arch else _arch_from_counts(by_class, path)
            return spec, _name_by_position(by_class, spec)
    raise ValueError(f"{path} is not a Keras weights file: it has neither 'layer_names' nor a 'layers' group")


def _attr_list(group: h5py.Group, name: str) -> list[str]:
    """A list-of-strings attribute, which Keras splits into ``name0``, ``name1``, ... when it is long."""
    values = list(group.attrs[name]) if name in group.attrs else []
    i = 0
    while f"{name}{i}" in group.attrs:
        values += list(group.attrs[f"{name}{i}"])
        i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_named(root: h5py.Group) -> dict[str, LayerWeights]:
    """Layers of a Keras .h5 file; weight paths such as ``conv1_conv/kernel:0`` are reduced to ``kernel``."""
    layers = {}
    for name in _attr_list(root, "layer_names"):
        group = root[name]
        weights = {w.split("/")[-1].split(":")[0]: np.asarray(group[w]) for w in _attr_list(group, "weight_names")}
        if weights:
            layers[name] = weights
    for alias, name in LAYER_ALIASES.items():
        if alias in layers and name not in layers:
            layers[name] = layers.pop(alias)
    return layers


def _read_by_class(group: h5py.Group) -> ByClass:
    """Keras 3 layers with weights as ``(key, arrays)`` per class (``conv2d``, ``conv2d_1``, ... are ``conv2d``),
    in position order."""
    numbered: dict[str, dict[int, tuple[str, list[np.ndarray]]]] = {}
    for key, layer in group.items():
        variables = layer.get("vars")
        if not isinstance(variables, h5py.Group) or not len(variables):
            continue
        match = re.fullmatch(r"(.*?)(?:_(\d+))?", key)
        arrays = [np.asarray(variables[str(i)]) for i in range(len(variables))]
        numbered.setdefault(match[1], {})[int(match[2] or 0)] = (key, arrays)
    return {cls: [entry for _, entry in sorted(d.items())] for cls, d in numbered.items()}


def _name_by_position(by_class: ByClass, spec: KerasArch) -> dict[str, LayerWeights]:
    """Give Keras 3 layers their Keras names: the n-th ``conv2d`` is the n-th conv of :func:`keras_layers`. Layers
    beyond the table keep their key (``conv2d_57``) and are reported as unexpected."""
    names: dict[str, list[str]] = {}
    for layer, _ in keras_layers(spec, top="dense" in by_class):
        names.setdefault(_keras_class(layer), []).append(layer)
    layers = {}
    for cls, entries in by_class.items():
        known, var_names = names.get(cls, []), KERAS_CLASSES.get(cls, ())
        for i, (key, arrays) in enumerate(entries):
            name = known[i] if i < len(known) else key
            layers[name] = {var_names[j] if j < len(var_names) else str(j): a for j, a in enumerate(arrays)}
    return layers


def _arch_from_names(layers: dict[str, LayerWeights], path: Path) -> KerasArch:
    """Version from the pre-activation norms' names, depth from the number of ``convN_blockM`` units per stage."""
    v2 = "post_bn" in layers or any(name.endswith("_preact_bn") for name in layers)
    blocks = [re.match(r"conv(\d)_block(\d+)_", name) for name in layers]
    units = tuple(max((int(m[2]) for m in blocks if m and m[1] == str(s)), default=0) for s in range(2, 6))
    return _arch_from_units(units, v2, path)


def _arch_from_counts(by_class: ByClass, path: Path) -> KerasArch:
    """From counts alone: convs = 3 per unit + stem + 4 projections; v1 has a norm per conv, V2 three per unit
    plus ``post_bn``."""
    n_conv, n_norm = len(by_class.get("conv2d", ())), len(by_class.get("batch_normalization", ()))
    units, v2 = (n_conv - 5) / 3, n_norm == n_conv - 4
    spec = next((a for a in ARCHS.values() if a.v2 == v2 and sum(a.layers) == units), None)
    if spec is None or not (v2 or n_norm == n_conv):
        raise ValueError(f"cannot tell the architecture of {path} from its {n_conv} convolutions and {n_norm} norms; "
                         f"pass arch (one of {', '.join(ARCHS)})")  # fmt: skip
    return spec


def _arch_from_units(units: tuple[int, ...], v2: bool, path: Path) -> KerasArch:
    spec = next((a for a in ARCHS.values() if a.v2 == v2 and a.layers == units), None)
    if spec is None:
        raise ValueError(f"cannot tell the architecture of {path}: units per stage {units} match no Keras ResNet; "
                         f"pass arch (one of {', '.join(ARCHS)})")  # fmt: skip
    return spec


# -- Keras weights -> resnetkit state dict ---------------------------------------------------------------------

# resnetkit suffix -> (Keras weight name, axis permutation from Keras' layout to PyTorch's)
CONV = {"weight": ("kernel", (3, 2, 0, 1)), "bias": ("bias", (0,))}  # (kh, kw, in, out) -> (out, in, kh, kw)
NORM = {"weight": ("gamma", (0,)), "bias": ("beta", (0,)), "running_mean": ("moving_mean", (0,)),
        "running_var": ("moving_variance", (0,))}  # fmt: skip
DENSE = {"weight": ("kernel", (1, 0)), "bias": ("bias", (0,))}


def keras_state_dict(
    spec: KerasArch, layers: dict[str, LayerWeights], target: dict[str, torch.Tensor], path: str | Path = "file"
) -> dict[str, torch.Tensor]:
    """Translate Keras layers into a state dict with the names, shapes and dtypes of ``target`` (the model's, on
    any device, ``meta`` included): layouts, zero biases where Keras has none and, for v1, the stem's input
    channels from BGR to RGB.

    Raises:
        ValueError: one line listing every missing, unexpected and misshaped Keras layer.
    """
    table = keras_layers(spec, top="fc.weight" in target)
    state = {k: torch.zeros((), dtype=v.dtype) for k, v in target.items() if k.endswith(".num_batches_tracked")}
    missing, misshaped = [], []
    for layer, module in table:
        if layer not in layers:
            missing.append(layer)
            continue
        kind = DENSE if layer == "predictions" else CONV if layer.endswith("_conv") else NORM
        for suffix, (keras_name, perm) in kind.items():
            key = f"{module}.{suffix}"
            if key not in target:
                continue
            value = layers[layer].get(keras_name)
            if value is None and kind is CONV and suffix == "bias":
                state[key] = torch.zeros(target[key].shape, dtype=target[key].dtype)  # Keras has no bias here
            elif value is None:
                missing.append(f"{layer}/{keras_name}")
            elif value.ndim != len(perm) or value.transpose(perm).shape != target[key].shape:
                expected = tuple(target[key].shape[i] for i in np.argsort(perm))  # in Keras' layout
                misshaped.append(f"{layer}/{keras_name} {value.shape} (expected {expected})")
            else:
                state[key] = torch.from_numpy(np.ascontiguousarray(value.transpose(perm))).to(target[key].dtype)
    unexpected = sorted(set(layers) - {layer for layer, _ in table})
    if missing or unexpected or misshaped:
        problems = _problems(missing, unexpected, misshaped)
        raise ValueError(f"{path} does not hold Keras {spec.keras_name} weights: {problems}")
    if set(state) != set(target):  # a gap in the layer table, not in the file
        raise WeightsError(f"no Keras weights map to {sorted(set(target) - set(state))}")
    if not spec.v2:
        state["conv1.weight"] = state["conv1.weight"].flip(1)  # Keras v1 reads BGR; resnetkit models read RGB
    return state


def _problems(missing: list[str], unexpected: list[str], misshaped: list[str], most: int = 20) -> str:
    """'missing (2): a, b; misshaped (1): c (...)', at most ``most`` names per list."""
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
        if names:
            more = f", ... ({len(names) - most} more)" if len(names) > most else ""
            parts.append(f"{label} ({len(names)}): {', '.join(names[:most])}{more}")
    return "; ".join(parts)

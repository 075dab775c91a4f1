"""Keras ResNets read by their graph, whatever their layers are called.

:mod:`resnetkit.weights.keras` knows Keras Applications' ResNets by layer name. This module reads any functional
Keras ResNet (the textbook ``identity_block``/``conv_block`` listing, a ResNet written from the papers, Keras
Applications' own, v1 or v2, basic or bottleneck units) from the order and kind of its layers:

- every ``Add`` joins two paths that fork from one tensor: the path with two or three convolutions is the residual
  branch, the other the shortcut (nothing: identity; a 1x1 convolution and, in v1, a norm: a projection; a 1x1
  max-pool with stride: ResNetV2's subsampling identity);
- what lies between one ``Add`` and the next fork is the previous unit's ReLU (v1) or this unit's pre-activation
  norm and ReLU (v2); before the first fork, the stem; after the last ``Add``, the head;
- a stage starts at a projection; strides, paddings (``ZeroPadding2D`` or ``"same"``), biases and the norms'
  epsilon give the remaining :class:`~resnetkit.models.ResNetConfig` fields.

What has no resnetkit equivalent is refused in one line naming the layer, e.g. TensorFlow's ``"same"`` padding
at stride 2 (it pads one side only) or an unpadded 3x3/2 stem max-pool (55x55 maps where ours are 56x56).

Keras is needed (the graph is Keras' own): pass a ``keras.Model`` or a whole-model file (``.keras``, or ``.h5``
written by ``model.save``); set ``KERAS_BACKEND=torch`` to run Keras without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import VARIANTS, BlockType, ResNet, ResNetConfig, Stem


class Kind(enum.Enum):
    CONV = "Conv2D"
    NORM = "BatchNormalization"
    RELU = "relu"
    PAD = "ZeroPadding2D"
    MAXPOOL = "MaxPooling2D"
    AVGPOOL = "AveragePooling2D"
    GLOBAL_POOL = "GlobalAveragePooling2D"
    FLATTEN = "Flatten"
    DENSE = "Dense"
    SOFTMAX = "softmax"
    ADD = "Add"
    INPUT = "InputLayer"
    IDENTITY = "identity"  # Dropout and linear activations: nothing at inference


PASS_THROUGH = {"Dropout", "SpatialDropout2D", "Activation:linear"}


@dataclass
class Op:
    """One Keras layer in the graph: its kind, the layer, its parents' and children's names."""

    kind: Kind
    layer: Any
    parents: list[str]
    children: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.layer.name


@dataclass
class Unit:
    """One residual unit as found in the graph: what precedes its fork, its branch and its shortcut."""

    pre: list[Op]
    branch: list[Op]
    shortcut: list[Op]


def convert_keras_graph(source: Any) -> tuple[ResNet, dict[str, Any]]:
    """Convert a functional Keras ResNet, read by its graph, into the resnetkit model with its weights.

    Args:
        source: a ``keras.Model`` or the path of a whole-model file (``.keras``, ``.h5``).

    Returns:
        The model (eval mode; it reads NCHW what the Keras model reads NHWC, with the same preprocessing) and
        ``arch``/``overrides`` (``create_model(arch, **overrides)`` rebuilds it), ``config``, ``mean``/``std``
        (0 and 1: pixels as the Keras model reads them), sizes and ``source`` (``"keras-graph:<model name>"``).

    Raises:
        ValueError: the graph is not a ResNet resnetkit can express; names the first layer that is not.
    """
    model = _load(source)
    ops = _graph(model)
    units, stem, tail = _split(ops, model.name)
    config, modules = _describe(units, stem, tail, model.name)
    with torch.device("meta"):
        net = ResNet.from_config(config)
    net.load_state_dict(_state_dict(modules, net.state_dict(), model.name), assign=True)
    arch, overrides = closest_variant(config)
    size, resize = (224, 256) if config.stem is Stem.IMAGENET else (32, 32)
    info = {"arch": arch, "overrides": overrides, "config": config, "mean": (0.0,) * 3, "std": (1.0,) * 3,
            "input_size": size, "resize_size": resize, "crop_size": size,
            "interpolation": "bilinear", "source": f"keras-graph:{model.name}"}  # fmt: skip
    return net.eval(), info


def _load(source: Any) -> Any:
    if hasattr(source, "layers"):
        return source
    import keras

    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Keras model file {str(path)!r} not found")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many kinds here: the file is not a whole model
        raise ValueError(f"{path} is not a whole Keras model file ({type(err).__name__}: {str(err).splitlines()[0]})") from None


# -- the graph ---------------------------------------------------------------------------------------------------


def _kind(layer: Any) -> Kind:
    cls = type(layer).__name__
    activation = getattr(layer, "activation", None)
    act = getattr(activation, "__name__", str(activation)) if activation is not None else None
    if cls in ("Activation", "ReLU"):
        if cls == "ReLU" and (layer.max_value is None and not layer.negative_slope and not layer.threshold):
            return Kind.RELU
        if act in ("relu", "softmax", "linear"):
            return {"relu": Kind.RELU, "softmax": Kind.SOFTMAX, "linear": Kind.IDENTITY}[act]
    elif cls in PASS_THROUGH:
        return Kind.IDENTITY
    elif cls == "Conv2D" and act == "linear":
        return Kind.CONV
    elif cls == "Dense" and act in ("linear", "softmax"):
        return Kind.DENSE
    elif cls in {k.value for k in Kind} and cls not in ("Conv2D", "Dense"):
        return Kind(cls)
    raise ValueError(f"layer {layer.name!r} ({cls}{f', activation {act}' if act else ''}) has no place in a resnetkit ResNet")


def _graph(model: Any) -> dict[str, Op]:
    """Every layer as an :class:`Op`, in the model's (topological) order, with parents and children."""
    ops: dict[str, Op] = {}
    for layer in model.layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise ValueError(f"layer {layer.name!r} is called {len(nodes)} times; a ResNet calls each layer once")
        ops[layer.name] = Op(_kind(layer), layer, [p.operation.name for p in nodes[0].parent_nodes])
    for op in ops.values():
        for parent in op.parents:
            if parent not in ops:  # a keras.ops call (ops.pad, ...) in the graph: not a layer
                raise ValueError(f"layer {op.name!r} reads the output of operation {parent!r}, which is not a layer; "
                                 "the graph reader takes models built of layers")  # fmt: skip
            ops[parent].children.append(op.name)
    if len(model.outputs) != 1 or len(model.inputs) != 1:
        raise ValueError(f"Keras model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; a classifier has one of each")
    return ops


def _walk_back(ops: dict[str, Op], name: str) -> tuple[list[Op], Op]:
    """From ``name`` back to the nearest fork (a tensor read twice) or ``Add``: (the ops after it, in forward order;
    the fork). A path that meets the input first is not a residual path."""
    path = []
    op = ops[name]
    while len(op.children) < 2 and op.kind is not Kind.ADD:
        if len(op.parents) != 1:
            raise ValueError(f"layer {op.name!r} lies on no residual path (it reaches the input without a fork)")
        path.append(op)
        op = ops[op.parents[0]]
    return path[::-1], op


def _back_to_add(ops: dict[str, Op], op: Op) -> list[Op]:
    """The ops from just after the previous ``Add`` (or the input) up to and including ``op``, in forward order."""
    path = []
    while op.kind not in (Kind.ADD, Kind.INPUT):
        path.append(op)
        if len(op.parents) != 1:
            raise ValueError(f"layer {op.name!r} has {len(op.parents)} inputs where a ResNet has one")
        op = ops[op.parents[0]]
    return path[::-1]


def _split(ops: dict[str, Op], name: str) -> tuple[list[Unit], list[Op], list[Op]]:
    """Residual units, the stem (the ops before the first unit's fork) and the tail (after the last ``Add``)."""
    adds = [op for op in ops.values() if op.kind is Kind.ADD]
    if not adds:
        raise ValueError(f"Keras model {name!r} has no Add layer: it is not a residual network")
    units = []
    for add in adds:
        if len(add.parents) != 2:
            raise ValueError(f"layer {add.name!r} adds {len(add.parents)} tensors; a residual unit adds two")
        (a, fork_a), (b, fork_b) = (_walk_back(ops, p) for p in add.parents)
        if fork_a is not fork_b:
            raise ValueError(f"the two inputs of {add.name!r} do not fork from one tensor ({fork_a.name!r}, {fork_b.name!r})")
        branch, shortcut = (a, b) if _count(a, Kind.CONV) >= _count(b, Kind.CONV) else (b, a)
        pre = [] if fork_a.kind is Kind.ADD else _back_to_add(ops, fork_a)
        units.append(Unit(_real(pre), _real(branch), _real(shortcut)))
    output = [op for op in ops.values() if not op.children]
    tail = _back_to_add(ops, output[-1])
    stem, units[0].pre = _split_stem(units[0].pre, _is_preact(units), name)
    seen = {op.name for u in units for op in (*u.pre, *u.branch, *u.shortcut)} | {op.name for op in (*stem, *tail)}
    stray = [op.name for op in ops.values() if op.name not in seen and op.kind not in (Kind.ADD, Kind.INPUT, Kind.IDENTITY)]
    if stray:
        raise ValueError(f"layer {stray[0]!r} of {name!r} lies outside the stem -> units -> head chain")
    return units, stem, _real(tail)


def _real(ops: list[Op]) -> list[Op]:
    return [op for op in ops if op.kind is not Kind.IDENTITY]


def _count(ops: list[Op], kind: Kind) -> int:
    return sum(op.kind is kind for op in ops)


def _is_preact(units: list[Unit]) -> bool:
    """Pre-activation units normalise before their first convolution: at the start of the branch, or before the
    fork when a projection shares that norm (the first unit's ``pre`` still holds the stem: not looked at)."""
    return any(u.branch and u.branch[0].kind is Kind.NORM for u in units) or any(_count(u.pre, Kind.NORM) for u in units[1:])


def _split_stem(first_pre: list[Op], preact: bool, name: str) -> tuple[list[Op], list[Op]]:
    """Split what precedes the first fork into the stem ([pad] conv [norm relu] [[pad] max-pool]; no norm in a
    pre-activation stem) and the first unit's pre-activation."""
    ops = _real(first_pre)
    i = 1 if ops and ops[0].kind is Kind.PAD else 0
    if len(ops) <= i or ops[i].kind is not Kind.CONV:
        raise ValueError(f"{name!r} does not start with a convolution (found {[op.name for op in ops[:2]]})")
    i += 1
    if not preact and [op.kind for op in ops[i:i + 2]] == [Kind.NORM, Kind.RELU]:
        i += 2
    if i < len(ops) and ops[i].kind is Kind.PAD and i + 1 < len(ops) and ops[i + 1].kind is Kind.MAXPOOL:
        i += 2
    elif i < len(ops) and ops[i].kind is Kind.MAXPOOL:
        i += 1
    return ops[:i], ops[i:]


# -- graph -> config and module names ----------------------------------------------------------------------------


def _describe(units: list[Unit], stem: list[Op], tail: list[Op], name: str) -> tuple[ResNetConfig, list[tuple[Op, str]]]:
    """The config the graph describes, and every weighted Keras layer with the resnetkit module it becomes."""
    preact = _is_preact(units)
    modules: list[tuple[Op, str]] = []
    fields = _stem_fields(stem, preact, modules, name)
    n_convs = {_count(u.branch, Kind.CONV) for u in units}
    if n_convs - {2, 3} or len(n_convs) != 1:
        raise ValueError(f"{name!r} mixes or has unknown residual units ({sorted(n_convs)} convolutions per branch)")
    block = BlockType.BOTTLENECK if n_convs == {3} else BlockType.BASIC
    stages: list[int] = []  # units per stage
    strided: list[tuple[int, int]] = []  # (stage, unit in stage) of every strided unit
    in_1x1, biased, widths = set(), fields.pop("bias"), []
    for u, unit in enumerate(units):
        if u == 0 or any(op.kind is Kind.CONV for op in unit.shortcut):  # a projection starts a stage
            stages.append(0)
        convs = _unit_modules(unit, preact, u, f"layer{len(stages)}.{stages[-1]}", modules, name)
        if stages[-1] == 0:
            widths.append(_planes(convs, block, name))
        stride = max(op.layer.strides[0] for op in convs)
        if stride > 1:
            strided.append((len(stages) - 1, stages[-1]))
            in_1x1.add(block is BlockType.BOTTLENECK and convs[0].layer.strides[0] > 1)
        stages[-1] += 1
        biased |= any(op.layer.use_bias for op in convs + [op for op in unit.shortcut if op.kind is Kind.CONV])
    stride_last = bool(strided) and all(i == stages[s] - 1 and i > 0 for s, i in strided)
    if not stride_last and any(i > 0 for _, i in strided):
        raise ValueError(f"{name!r} strides inside a stage; resnetkit strides a stage's first unit (or, as ResNetV2, its last)")
    width = _bottleneck_width(units, block, widths)
    num_classes = _head(tail, preact, modules, name)
    eps = {float(op.layer.epsilon) for op, _ in modules if op.kind is Kind.NORM}
    if len(eps) > 1:
        raise ValueError(f"{name!r} uses several BatchNormalization epsilons {sorted(eps)}; resnetkit has one")
    config = ResNetConfig(block=block, layers=tuple(stages), widths=tuple(widths), preact=preact, stride_in_1x1=in_1x1 == {True},
                          stride_last_unit=stride_last, conv_bias=biased, norm_eps=eps.pop() if eps else 1e-5,
                          num_classes=num_classes, width_per_group=width, **fields)  # fmt: skip
    _check_strides(config, strided, len(stages), name)
    if len(in_1x1) > 1:
        raise ValueError(f"{name!r} strides some bottlenecks in the first 1x1 and others in the 3x3")
    return config, modules


def _stem_fields(stem: list[Op], preact: bool, modules: list[tuple[Op, str]], name: str) -> dict[str, Any]:
    pad = stem[0] if stem[0].kind is Kind.PAD else None
    conv = stem[1] if pad else stem[0]
    modules.append((conv, "conv1"))
    k, s, p = conv.layer.kernel_size[0], conv.layer.strides[0], _padding(conv, pad)
    pool = next((op for op in stem if op.kind is Kind.MAXPOOL), None)
    norm = next((op for op in stem if op.kind is Kind.NORM), None)
    if norm is not None:
        modules.append((norm, "bn1"))
    if (k, s, p) == (7, 2, 3) and pool is not None:
        stem_kind = Stem.IMAGENET
    elif (k, s, p) == (3, 1, 1) and pool is None:
        stem_kind = Stem.CIFAR
    else:
        raise ValueError(f"stem convolution {conv.name!r} ({k}x{k}/{s}, padding {p}{', max-pool' if pool else ''}) is "
                         "neither the ImageNet stem (7x7/2, padding 3, 3x3/2 max-pool) nor the CIFAR one (3x3/1, padding 1)")  # fmt: skip
    return {"stem": stem_kind, "stem_width": conv.layer.filters, "in_chans": conv.layer.kernel.shape[2],
            "stem_pool_zero_pad": _stem_pool_zero_pad(pool, stem, name) if pool else False, "bias": conv.layer.use_bias}  # fmt: skip


def _stem_pool_zero_pad(pool: Op, stem: list[Op], name: str) -> bool:
    i = stem.index(pool)
    pad = stem[i - 1] if stem[i - 1].kind is Kind.PAD else None
    size, stride = tuple(pool.layer.pool_size), tuple(pool.layer.strides)
    if size != (3, 3) or stride != (2, 2):
        raise ValueError(f"stem max-pool {pool.name!r} is {size}/{stride}; resnetkit's is 3x3/2")
    if pool.layer.padding == "valid" and pad is not None and _symmetric(pad) == 1:
        return True
    raise ValueError(f"stem max-pool {pool.name!r} is not padded by 1 on every side (as ZeroPadding2D(1) before it "
                     "does); an unpadded or 'same'-padded 3x3/2 pool gives other map sizes or windows than resnetkit's")  # fmt: skip


def _padding(conv: Op, pad: Op | None) -> int:
    """The symmetric padding of a convolution: its ``ZeroPadding2D`` and/or ``"same"`` (at stride 1 only: at stride
    2 TensorFlow pads the bottom/right side alone)."""
    k, s = conv.layer.kernel_size[0], conv.layer.strides[0]
    if tuple(conv.layer.dilation_rate) != (1, 1) or conv.layer.groups != 1 or conv.layer.kernel_size[0] != conv.layer.kernel_size[1]:
        raise ValueError(f"convolution {conv.name!r} is dilated, grouped or not square; resnetkit's graph reader takes plain ones")
    same = (k - 1) // 2 if conv.layer.padding == "same" else 0
    if same and s > 1:
        raise ValueError(f"convolution {conv.name!r} has padding='same' at stride {s}, which pads one side only; "
                         "resnetkit pads both (ZeroPadding2D and padding='valid' in Keras)")  # fmt: skip
    return same + (_symmetric(pad) if pad else 0)


def _symmetric(pad: Op) -> int:
    (top, bottom), (left, right) = pad.layer.padding
    if len({top, bottom, left, right}) != 1:
        raise ValueError(f"{pad.name!r} pads unevenly {pad.layer.padding}; resnetkit pads every side alike")
    return top


def _unit_modules(unit: Unit, preact: bool, u: int, prefix: str, modules: list[tuple[Op, str]], name: str) -> list[Op]:
    """Check the order of unit ``u``'s layers and name them ``{prefix}.conv1``, ...; returns the branch's convolutions."""
    branch = unit.branch
    kinds = [op.kind for op in branch if op.kind is not Kind.PAD]
    convs = [op for op in branch if op.kind is Kind.CONV]
    n = len(convs)
    pre_kinds = [op.kind for op in unit.pre]
    if preact:
        head = [Kind.NORM, Kind.RELU] if pre_kinds != [Kind.NORM, Kind.RELU] else []
        expected = head + [Kind.CONV] + [Kind.NORM, Kind.RELU, Kind.CONV] * (n - 1)
        ok_pre = pre_kinds in ([], [Kind.NORM, Kind.RELU])
    else:
        expected = [Kind.CONV, Kind.NORM, Kind.RELU] * (n - 1) + [Kind.CONV, Kind.NORM]
        ok_pre = pre_kinds == ([] if u == 0 else [Kind.RELU])
    if kinds != expected or not ok_pre:
        found = [op.kind.value for op in unit.pre] + ["|"] + [k.value for k in kinds]
        raise ValueError(f"residual unit {u + 1} of {name!r} (ending at {branch[-1].name!r}) is not a "
                         f"{'pre-activation' if preact else 'post-activation'} ResNet unit: {found}")  # fmt: skip
    _check_unit_paddings(branch, name)
    norms = [op for op in unit.pre + branch if op.kind is Kind.NORM]
    named = [(c, f"conv{i + 1}") for i, c in enumerate(convs)] + [(m, f"bn{i + 1}") for i, m in enumerate(norms)]
    modules += [(op, f"{prefix}.{module}") for op, module in named + _shortcut_modules(unit, preact, convs, name)]
    return convs


def _check_unit_paddings(branch: list[Op], name: str) -> None:
    for i, op in enumerate(branch):
        if op.kind is Kind.CONV:
            pad = branch[i - 1] if i and branch[i - 1].kind is Kind.PAD else None
            k = op.layer.kernel_size[0]
            if k not in (1, 3) or _padding(op, pad) != k // 2:
                raise ValueError(f"convolution {op.name!r} ({k}x{k}, padding {_padding(op, pad)}) keeps no resnetkit shape rule")


def _shortcut_modules(unit: Unit, preact: bool, convs: list[Op], name: str) -> list[tuple[Op, str]]:
    kinds = [op.kind for op in unit.shortcut]
    stride = max(op.layer.strides[0] for op in convs)
    if not kinds:
        return []
    if kinds == [Kind.MAXPOOL] and preact:
        pool = unit.shortcut[0].layer
        if tuple(pool.pool_size) == (1, 1) and tuple(pool.strides) == (stride, stride):
            return []
    elif kinds == ([Kind.CONV] if preact else [Kind.CONV, Kind.NORM]):
        conv = unit.shortcut[0]
        if conv.layer.kernel_size[0] == 1 and conv.layer.strides[0] == stride and _padding(conv, None) == 0:
            if preact and not unit.pre:
                raise ValueError(f"projection {conv.name!r} reads the un-normalised input; resnetkit's "
                                 "pre-activation projections read the normalised one (as Keras' ResNetV2)")  # fmt: skip
            return [(conv, "downsample.0")] + ([(unit.shortcut[1], "downsample.1")] if not preact else [])
    raise ValueError(f"the shortcut {[op.name for op in unit.shortcut]} of {name!r} is neither an identity, a "
                     "subsampling 1x1 max-pool, nor a 1x1 projection at the unit's stride")  # fmt: skip


def _planes(convs: list[Op], block: BlockType, name: str) -> int:
    out = convs[-1].layer.filters
    if block is BlockType.BOTTLENECK and out % 4:
        raise ValueError(f"bottleneck {convs[-1].name!r} outputs {out} channels, not 4x its planes")
    return out // 4 if block is BlockType.BOTTLENECK else out


def _bottleneck_width(units: list[Unit], block: BlockType, widths: list[int]) -> int:
    """``width_per_group`` from the first bottleneck's inner width (64 unless a Wide ResNet); groups are 1."""
    if block is BlockType.BASIC:
        return 64
    inner = next(op for op in units[0].branch if op.kind is Kind.CONV).layer.filters
    return inner * 64 // widths[0]


def _head(tail: list[Op], preact: bool, modules: list[tuple[Op, str]], name: str) -> int:
    """Check the head (ReLU, or norm and ReLU; global average pooling; optional dense) and return its classes."""
    kinds = [op.kind for op in tail]
    start = [Kind.NORM, Kind.RELU] if preact else [Kind.RELU]
    if kinds[: len(start)] != start:
        raise ValueError(f"{name!r} does not end its last unit with {'norm and ' if preact else ''}ReLU: {[k.value for k in kinds]}")
    if preact:
        modules.append((tail[0], "norm"))
    rest = tail[len(start):]
    if not rest or rest[0].kind not in (Kind.GLOBAL_POOL, Kind.AVGPOOL):
        raise ValueError(f"{name!r} has no global average pooling after its last unit (found {[op.name for op in rest[:1]]})")
    if rest[0].kind is Kind.AVGPOOL:
        _check_global(rest[0])
    rest = [op for op in rest[1:] if op.kind is not Kind.FLATTEN]
    if rest and rest[-1].kind is Kind.SOFTMAX:
        rest = rest[:-1]
    if not rest:
        return 0
    if len(rest) != 1 or rest[0].kind is not Kind.DENSE:
        raise ValueError(f"{name!r} has more than one dense layer after pooling: {[op.name for op in rest]}")
    modules.append((rest[0], "fc"))
    return rest[0].layer.units


def _check_global(pool: Op) -> None:
    shape = tuple(pool.layer.input.shape[1:3])
    if None in shape or tuple(pool.layer.pool_size) != shape:
        raise ValueError(f"average pool {pool.name!r} ({tuple(pool.layer.pool_size)} on maps of {shape}) is not global; "
                         "build the Keras model with a fixed input size, or use GlobalAveragePooling2D")  # fmt: skip


def _check_strides(config: ResNetConfig, strided: list[tuple[int, int]], n_stages: int, name: str) -> None:
    """The stages must stride as the config's do (1, 2, 2, 2; or ResNetV2's 2, 2, 2, 1)."""
    found = [1] * n_stages
    for s, _ in strided:
        found[s] *= 2
    if tuple(found) != config.stage_strides:
        raise ValueError(f"{name!r} strides its stages {tuple(found)}; resnetkit's stages stride {config.stage_strides}")


def closest_variant(config: ResNetConfig) -> tuple[str, dict[str, Any]]:
    """The registered variant needing the fewest overrides to become ``config``, and those overrides (plain values)."""
    plain = config.to_dict()

    def diff(item: tuple[str, Any]) -> dict[str, Any]:
        other = item[1].config.to_dict()
        return {k: v for k, v in plain.items() if other.get(k) != v}

    name, variant = min(VARIANTS.items(), key=lambda item: len(diff(item)))
    return name, diff((name, variant))


# -- weights -----------------------------------------------------------------------------------------------------


def _state_dict(modules: list[tuple[Op, str]], target: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Keras weights under resnetkit names (layouts transposed, zero biases where Keras has none)."""
    state = {k: torch.zeros((), dtype=v.dtype) for k, v in target.items() if k.endswith(".num_batches_tracked")}
    for op, module in modules:
        arrays = [np.asarray(w) for w in op.layer.get_weights()]
        if op.kind is Kind.CONV:
            values = {"weight": arrays[0].transpose(3, 2, 0, 1), "bias": arrays[1] if len(arrays) > 1 else None}
        elif op.kind is Kind.DENSE:
            values = {"weight": arrays[0].T, "bias": arrays[1] if len(arrays) > 1 else None}
        else:
            values = dict(zip(("weight", "bias", "running_mean", "running_var"), _norm_arrays(op, arrays)))
        for suffix, value in values.items():
            key = f"{module}.{suffix}"
            if key not in target:
                continue
            value = np.zeros(target[key].shape, "float32") if value is None else value
            if tuple(value.shape) != tuple(target[key].shape):
                raise ValueError(f"layer {op.name!r} of {name!r} holds {value.shape} for {key}, which is {tuple(target[key].shape)}")
            state[key] = torch.from_numpy(np.ascontiguousarray(value)).to(target[key].dtype)
    missing = sorted(set(target) - set(state))
    if missing:
        raise ValueError(f"{name!r} gives no weights for {', '.join(missing[:5])}")
    return state


def _norm_arrays(op: Op, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """gamma, beta, mean, variance; ones and zeros where the layer has ``scale``/``center`` off."""
    layer, arrays = op.layer, list(arrays)
    n = arrays[-1].shape[0]
    gamma = arrays.pop(0) if layer.scale else np.ones(n, "float32")
    beta = arrays.pop(0) if layer.center else np.zeros(n, "float32")
    return [gamma, beta, *arrays]

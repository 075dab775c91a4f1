"""Export a network for inference (ONNX, TorchScript, ``torch.export``) and check every file against eager PyTorch.

Each ``export_*`` function writes the file, loads it back in the runtime that will serve it (ONNX Runtime,
``torch.jit.load``, ``torch.export.load``), runs it on a batch of image-like inputs and on a single image, and
compares the outputs with the eager model's: the largest absolute difference and how often the top-1 class agrees.
Past ``atol`` it raises :class:`ParityError`, so a broken export never passes silently. All files have a dynamic
batch axis; running two batch sizes, neither of them the one used to trace, checks it.

ONNX goes through ``torch.onnx.export(dynamo=True)``, the torch.export-based exporter: it is PyTorch's default and
maintained path since 2.9 (the TorchScript-based one is deprecated) and it takes the same ``dynamic_shapes`` as
``torch.export``. It needs ``onnxscript`` (and ``onnx``; ``onnxruntime`` runs the check): ``pip install
resnetkit[deploy]``. It emits opset 18 and later only; for opset 17 (older runtimes) the TorchScript-based
exporter is used, since converting 18 down to 17 fails on ``Pad``. TorchScript is deprecated upstream too; it stays for LibTorch (C++) deployments and is
traced, not scripted (the forward loops over stage names with ``getattr``, which scripting does not accept).
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_ATOL = 1e-4  # fp32: export and fusion reorder float sums; 1e-4 on logits leaves every top-1 unchanged
DEFAULT_OPSET = 18  # the lowest opset the torch.export-based exporter emits natively
Runner = Callable[[torch.Tensor], torch.Tensor]


class Format(enum.Enum):
    """Export formats; the value is the CLI's ``--format`` name."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    EXPORTED = "exported"  # torch.export ExportedProgram (.pt2), for ExecuTorch, AOTInductor and torch.compile

    @property
    def suffix(self) -> str:
        return {"onnx": ".onnx", "torchscript": ".torchscript", "exported": ".pt2"}[self.value]


@dataclass(frozen=True)
class ParityReport:
    """How an exported file's outputs compare with eager PyTorch on the same inputs."""

    format: Format
    path: str
    max_abs_diff: float
    top1_agree: int
    samples: int
    batch_sizes: tuple[int, ...]
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol  # False for NaN too

    @property
    def top1_agreement(self) -> float:
        return self.top1_agree / self.samples

    def line(self) -> str:
        verdict = "OK" if self.ok else f"FAILED (above atol {self.atol:.0e})"
        sizes = " and ".join(map(str, self.batch_sizes))
        return (f"{self.format.value} {self.path}: max |diff| {self.max_abs_diff:.2e} vs eager (atol {self.atol:.0e}), "
                f"top-1 agreement {self.top1_agree}/{self.samples} ({self.top1_agreement:.1%}), batch sizes {sizes}: "
                f"{verdict}")  # fmt: skip


class ParityError(RuntimeError):
    """An exported file whose outputs differ from eager by more than the tolerance; ``report`` says how much."""

    def __init__(self, report: ParityReport):
        super().__init__(report.line())
        self.report = report


def sample_images(
    batch: int,
    size: int,
    in_chans: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Image-like inputs for parity checks: smooth random shapes plus fine texture in [0, 1], then normalised.

    Args:
        batch: number of images.
        size: height and width.
        in_chans: channels.
        mean: per-channel mean the model was trained with (default 0.5).
        std: per-channel standard deviation the model was trained with (default 0.25).
        seed: seed of the generator, so checks are repeatable.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, in_chans, max(size // 8, 2), max(size // 8, 2), generator=g)
    fine = torch.rand(batch, in_chans, size, size, generator=g)
    images = 0.8 * F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) + 0.2 * fine
    mean_t = torch.tensor(mean if mean is not None else [0.5] * in_chans).view(1, -1, 1, 1)
    std_t = torch.tensor(std if std is not None else [0.25] * in_chans).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    *,
    reference: nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    atol: float = DEFAULT_ATOL,
) -> ParityReport:
    """Write ``model`` as ONNX (input ``image``, output ``logits``, dynamic batch) and check it in ONNX Runtime.

    Args:
        model: the network to export; put in eval mode.
        path: the ``.onnx`` file to write (weights inside it: every variant is far below ONNX's 2 GB limit).
        input_size: image height and width; default 32 for CIFAR-stem ResNets, 224 otherwise.
        opset: ONNX opset, 17 or later (17 through the TorchScript-based exporter, see the module docstring).
        reference: the eager model to compare with (default ``model``; e.g. the unfused model).
        inputs: a batch of at least 2 inputs for the check (default: 4 from :func:`sample_images`).
        atol: largest accepted max absolute output difference.

    Raises:
        ParityError: the file's outputs differ from ``reference``'s by more than ``atol``.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old; use 17 or later")
    model, inputs = _prepare(model, input_size, inputs)
    names = {"input_names": ["image"], "output_names": ["logits"], "opset_version": opset}
    with torch.no_grad(), warnings.catch_warnings():
        if opset >= DEFAULT_OPSET:
            torch.onnx.export(model, (inputs[:2],), str(path), dynamo=True, dynamic_shapes=_batch_axis(),
                              external_data=False, verbose=False, **names)  # fmt: skip
        else:  # the torch.export-based exporter writes 18+ only (its down-conversion to 17 fails on Pad)
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", "Constant folding - Only steps=1")  # ZeroPad's strided Slice
            warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)  # its own logging
            dynamic = {"image": {0: "batch"}, "logits": {0: "batch"}}
            torch.onnx.export(model, (inputs[:2],), str(path), dynamo=False, dynamic_axes=dynamic, **names)
    return _checked(Format.ONNX, path, model if reference is None else reference, inputs, atol)


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    input_size: int | None = None,
    *,
    reference: nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    atol: float = DEFAULT_ATOL,
) -> ParityReport:
    """Trace ``model`` with TorchScript, save it and check the reloaded module; arguments as :func:`export_onnx`."""
    model, inputs = _prepare(model, input_size, inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")  # "deprecated": see above
        traced = torch.jit.trace(model, inputs[:2], check_trace=False)
        torch.jit.save(traced, str(path))
    return _checked(Format.TORCHSCRIPT, path, model if reference is None else reference, inputs, atol)


def export_program(
    model: nn.Module,
    path: str | Path,
    input_size: int | None = None,
    *,
    reference: nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    atol: float = DEFAULT_ATOL,
) -> ParityReport:
    """Capture ``model`` with ``torch.export`` (dynamic batch), save the ``.pt2`` and check the reloaded program;
    arguments as :func:`export_onnx`."""
    model, inputs = _prepare(model, input_size, inputs)
    program = torch.export.export(model, (inputs[:2],), dynamic_shapes=_batch_axis())
    torch.export.save(program, str(path))
    return _checked(Format.EXPORTED, path, model if reference is None else reference, inputs, atol)


EXPORTERS: dict[Format, Callable[..., ParityReport]] = {
    Format.ONNX: export_onnx,
    Format.TORCHSCRIPT: export_torchscript,
    Format.EXPORTED: export_program,
}


def check_parity(
    fmt: Format,
    path: str | Path,
    reference: nn.Module,
    inputs: torch.Tensor,
    atol: float = DEFAULT_ATOL,
    run: Runner | None = None,
) -> ParityReport:
    """Run an exported file on ``inputs`` and on ``inputs[:1]`` and compare it with eager ``reference``.

    Returns the report without raising; the ``export_*`` functions raise :class:`ParityError` when it fails.
    ``run`` runs the file for a route outside :class:`Format` (LiteRT, Keras), ``fmt`` then only names it.
    """
    run = load_runner(fmt, path) if run is None else run
    reference.eval()
    diffs, agree, batches = [], 0, (inputs, inputs[:1])
    with torch.no_grad():
        for batch in batches:
            expected, got = reference(batch), run(batch)
            if got.shape != expected.shape:
                diffs.append(float("inf"))
                continue
            diffs.append((got - expected).abs().max().item())
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
    worst = float(torch.tensor(diffs).max())  # NaN propagates, so a NaN output fails
    return ParityReport(fmt, str(path), worst, agree, sum(map(len, batches)), tuple(map(len, batches)), atol)


def load_runner(fmt: Format, path: str | Path) -> Runner:
    """Load an exported file in its runtime, as a function from an input batch to the output tensor."""
    if fmt is Format.ONNX:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    if fmt is Format.TORCHSCRIPT:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            return torch.jit.load(str(path), map_location="cpu")
    return torch.export.load(str(path)).module()


def default_input_size(model: nn.Module) -> int:
    """32 for a resnetkit model with the CIFAR stem, 224 for any other."""
    config = getattr(model, "config", None)
    stem = getattr(getattr(config, "stem", None), "value", None)
    return 32 if stem == "cifar" else 224


def _prepare(model: nn.Module, input_size: int | None, inputs: torch.Tensor | None) -> tuple[nn.Module, torch.Tensor]:
    if inputs is None:
        in_chans = getattr(getattr(model, "config", None), "in_chans", 3)
        inputs = sample_images(4, input_size or default_input_size(model), in_chans)
    if len(inputs) < 2:
        raise ValueError(f"the parity check needs a batch of at least 2 inputs, got {len(inputs)}")
    return model.eval(), inputs


def _batch_axis() -> tuple[dict[int, torch.export.Dim]]:
    """Dim 0 of the one input is dynamic; traced at batch 2, since torch.export specialises sizes 0 and 1."""
    return ({0: torch.export.Dim("batch")},)


def _checked(fmt: Format, path: str | Path, reference: nn.Module, inputs: torch.Tensor, atol: float) -> ParityReport:
    report = check_parity(fmt, path, reference, inputs, atol)
    if not report.ok:
        raise ParityError(report)
    return report

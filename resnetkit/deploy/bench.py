"""Inference speed of one network along every deployment route, measured side by side in one process.

Each route turns the same eval-mode network into a function from an input batch to logits:

* ``eager``: the PyTorch module as trained (NCHW), under ``torch.inference_mode``.
* ``channels_last``: the same module and input in NHWC memory layout, which oneDNN's convolutions prefer.
* ``fused``: BatchNorm folded into the convolutions (:func:`~resnetkit.deploy.fuse.fuse_model`), channels_last.
* ``compiled``: ``torch.compile`` of the fused module (TorchInductor with weight freezing, channels_last).
* ``onnxruntime``: the plain (unfused) model exported to ONNX and run by ONNX Runtime's CPU provider with all
  graph optimisations, the usual production baseline. ONNX Runtime folds the BatchNorms itself.
* ``openvino``: the same fp32 ONNX file compiled by OpenVINO for the CPU (fp32 inference precision is forced:
  on CPUs with bf16 units OpenVINO would otherwise run bf16 and the comparison would not be fp32 against fp32).
* ``int8``: static int8 ONNX (per-channel weights, calibrated activations, see :mod:`.quantize`) run by ONNX
  Runtime; ``openvino_int8`` runs the same int8 file with OpenVINO.
* ``tflite``: the model converted to LiteRT by litert-torch (:mod:`.litert`, parity-checked) and run by the LiteRT
  interpreter with its XNNPACK CPU delegate; ``tflite_int8`` the full-integer int8 file, calibrated like ``int8``.
  Both need the ``litert`` extra. A LiteRT file takes one image per call, as on a phone, so its larger-batch
  throughput is that of a loop over images.
* ``tensorrt``: TensorRT engines built by Torch-TensorRT in fp16 (:mod:`.tensorrt`, parity-checked against eager
  on the GPU); ``tensorrt_int8`` with Model Optimizer's int8 quantize/dequantize pairs, calibrated like ``int8``.
  They appear only where CUDA and the ``tensorrt`` extra are present; their calls take and return CPU tensors, so
  the copies to and from the GPU are inside the measured time, as a caller holding images in memory sees it.

Every route is timed the same way: ``warmup`` calls, then ``repeats`` timed calls; the latency is the median call
time (``time.perf_counter``), at batch 1 and at a larger batch, whose throughput is ``batch / median``. Threads
are fixed for every runtime (``threads``, default all cores), and routes run one after another, never at once.
Beside the speed: parameters and multiply-accumulates of the network each route runs, and the size of the file
it would ship (safetensors for PyTorch routes, the ``.onnx`` otherwise).
"""

from __future__ import annotations

import copy
import enum
import importlib.util
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import safetensors.torch
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.complexity import count_macs, count_params
from ..runtime import hardware_name
from .export import export_onnx, sample_images
from .fuse import fuse_model

Runner = Callable[[torch.Tensor], Any]


BENCH_TFLITE_ATOL = 1e-3  # the fp32 LiteRT file's check here; `resnetkit export --format tflite` checks at 1e-4


class Route(enum.Enum):
    """Inference routes; the value is the CLI's ``--routes`` name."""

    EAGER = "eager"
    CHANNELS_LAST = "channels_last"
    FUSED = "fused"
    COMPILED = "compiled"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    INT8 = "int8"
    OPENVINO_INT8 = "openvino_int8"
    TFLITE = "tflite"
    TFLITE_INT8 = "tflite_int8"
    TENSORRT = "tensorrt"
    TENSORRT_INT8 = "tensorrt_int8"

    @property
    def is_int8(self) -> bool:
        """Runs a static int8 model, which is calibrated on ``BenchSettings.calibration``."""
        return self in (Route.INT8, Route.OPENVINO_INT8, Route.TFLITE_INT8, Route.TENSORRT_INT8)


@dataclass(frozen=True)
class BenchResult:
    """One route at one batch size; ``latency_ms`` is the median of the timed calls."""

    route: str
    batch: int
    latency_ms: float
    images_per_s: float
    params: int
    macs: int
    file_bytes: int
    latency_min_ms: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    """A route ready to time: the call, and what it runs (params, MACs of one image, bytes on disk)."""

    run: Runner
    params: int
    macs: int
    file_bytes: int
    in_chans: int = 3
    channels_last: bool = False  # feed NHWC tensors


@dataclass(frozen=True)
class BenchSettings:
    """How to measure: image size, the larger batch, timed and warm-up calls, threads, int8 calibration."""

    input_size: int = 224
    batch: int = 32
    repeats: int = 30
    warmup: int = 5
    threads: int = 0  # 0: every core torch sees
    calibration: torch.Tensor | None = None  # normalised images for int8; default: synthetic ones


def available_routes() -> list[Route]:
    """Every route whose runtime is installed (OpenVINO and LiteRT are optional; TensorRT also needs CUDA)."""
    return [route for route in Route if unavailable_reason(route) is None]


def unavailable_reason(route: Route) -> str | None:
    """Why ``route`` cannot run on this machine (a missing runtime, no CUDA), or None when it can."""
    if route in (Route.OPENVINO, Route.OPENVINO_INT8) and not importlib.util.find_spec("openvino"):
        return "runtime not installed here (pip install 'resnetkit[openvino]')"
    if route in (Route.TFLITE, Route.TFLITE_INT8) and not all(
        importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert")
    ):
        return "runtime not installed here (pip install 'resnetkit[litert]')"
    if route in (Route.TENSORRT, Route.TENSORRT_INT8):
        if not torch.cuda.is_available():
            return "needs a CUDA GPU (none here)"
        if not importlib.util.find_spec("torch_tensorrt"):
            return "runtime not installed here (pip install 'resnetkit[tensorrt]')"
    return None


def bench(
    model: nn.Module,
    routes: Sequence[Route] | None = None,
    settings: BenchSettings = BenchSettings(),
    workdir: str | Path | None = None,
    progress: bool = False,
) -> list[BenchResult]:
    """Time ``model`` along ``routes`` (default: all available) at batch 1 and ``settings.batch``.

    Args:
        model: the network (left unchanged; routes work on copies or exported files).
        routes: which routes, in order.
        settings: sizes, repetitions, threads and int8 calibration images.
        workdir: where exported files go (default: a temporary directory, deleted afterwards).
        progress: show a progress bar over routes.

    Returns:
        Two results per route: batch 1, then ``settings.batch``.
    """
    routes = list(routes or available_routes())
    threads = settings.threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="resnetkit-bench-") as tmp:
        directory = Path(workdir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        results = []
        try:
            for route in tqdm(routes, desc="routes", unit="route", disable=not progress):
                prepared = prepare(route, model.eval(), settings, directory, threads)
                results += [_time_route(route, prepared, b, settings) for b in (1, settings.batch)]
        finally:
            torch.set_num_threads(previous_threads)
    return results


def prepare(route: Route, model: nn.Module, settings: BenchSettings, directory: Path, threads: int) -> Prepared:
    """Build the callable of one route (exporting, quantising or compiling as needed)."""
    size, in_chans = settings.input_size, _in_chans(model)
    macs = count_macs(model, size, in_chans)
    if route in (Route.EAGER, Route.CHANNELS_LAST):
        module = model if route is Route.EAGER else _channels_last(model)
        return Prepared(_torch_runner(module), count_params(model), macs, safetensors_bytes(model), in_chans,
                        channels_last=route is Route.CHANNELS_LAST)  # fmt: skip
    if route in (Route.FUSED, Route.COMPILED):
        fused = _channels_last(fuse_model(model))
        module = _compiled(fused, size, in_chans) if route is Route.COMPILED else fused
        return Prepared(_torch_runner(module), count_params(fused), macs, safetensors_bytes(fused), in_chans,
                        channels_last=True)  # fmt: skip
    if route in (Route.TFLITE, Route.TFLITE_INT8):
        return _prepare_tflite(route, model, settings, directory, threads, macs)
    if route in (Route.TENSORRT, Route.TENSORRT_INT8):
        return _prepare_tensorrt(route, model, settings, directory, macs)
    onnx_path = _fp32_onnx(model, size, in_chans, directory)
    if route.is_int8:
        onnx_path = _int8_onnx(onnx_path, settings, in_chans)
    make = _openvino_runner if route in (Route.OPENVINO, Route.OPENVINO_INT8) else _onnxruntime_runner
    return Prepared(make(onnx_path, threads), count_params(model), macs, onnx_path.stat().st_size, in_chans)


def _time_route(route: Route, prepared: Prepared, batch: int, settings: BenchSettings) -> BenchResult:
    x = sample_images(batch, settings.input_size, prepared.in_chans, seed=1)
    if prepared.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = time_calls(prepared.run, x, settings.warmup, settings.repeats)
    median = statistics.median(times)
    return BenchResult(route.value, batch, median * 1e3, batch / median, prepared.params, prepared.macs,
                       prepared.file_bytes, min(times) * 1e3, len(times))  # fmt: skip


def time_calls(run: Runner, x: torch.Tensor, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run(x)`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return times


def interleaved_onnx_latencies(paths: Sequence[str | Path], input_size: int, in_chans: int = 3, repeats: int = 50,
                               warmup: int = 10, rounds: int = 0, threads: int = 0) -> list[float]:  # fmt: skip
    """Median batch-1 latency (ms) of each ONNX file in ONNX Runtime, measured side by side: every file is warmed
    up, then the timed calls alternate between files in ``rounds`` rounds (default: one per 10 calls, at least 5),
    so drift of the machine (other load, clock changes) touches every file alike and the ratios between them hold."""
    rounds = rounds or max(5, repeats // 10)
    runs = [_onnxruntime_runner(Path(p), threads or torch.get_num_threads()) for p in paths]
    x = sample_images(1, input_size, in_chans, seed=1)
    times: list[list[float]] = [[] for _ in runs]
    for run in runs:
        time_calls(run, x, warmup, 0)
    per_round = max(repeats // rounds, 1)
    for _ in range(rounds):
        for run, collected in zip(runs, times):
            collected += time_calls(run, x, 0, per_round)
    return [statistics.median(t) * 1e3 for t in times]


# -- the runners ------------------------------------------------------------------------------------------------


def _torch_runner(module: nn.Module) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


def _onnxruntime_runner(path: Path, threads: int) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def _openvino_runner(path: Path, threads: int) -> Runner:
    import openvino

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = openvino.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x.numpy()})[compiled.output(0)]


# -- building the routes' models and files ----------------------------------------------------------------------


def _channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def _compiled(model: nn.Module, size: int, in_chans: int) -> nn.Module:
    """Inductor with frozen weights (constant-folded, pre-packed for oneDNN); compiled by one call here."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    compiled = torch.compile(model, dynamic=False)
    with torch.inference_mode():
        for batch in (1, 2):  # compile now, not inside the timed calls (one graph per batch size)
            compiled(sample_images(batch, size, in_chans).contiguous(memory_format=torch.channels_last))
    return compiled


def _fp32_onnx(model: nn.Module, size: int, in_chans: int, directory: Path) -> Path:
    path = directory / "fp32.onnx"
    if not path.exists():
        export_onnx(model, path, inputs=sample_images(4, size, in_chans))  # parity-checked against eager
    return path


def _int8_onnx(fp32_path: Path, settings: BenchSettings, in_chans: int) -> Path:
    from .quantize import quantize_onnx

    path = fp32_path.with_name("int8.onnx")
    if not path.exists():
        calibration = settings.calibration
        if calibration is None:
            calibration = sample_images(64, settings.input_size, in_chans, seed=2)
        quantize_onnx(fp32_path, path, calibration)
    return path


def _prepare_tflite(route: Route, model: nn.Module, settings: BenchSettings, directory: Path, threads: int,
                    macs: int) -> Prepared:  # fmt: skip
    """The LiteRT file of the route (fp32 checked within 1e-4 of eager; int8 calibrated and checked on agreement)
    in the interpreter, XNNPACK on ``threads`` threads."""
    from .litert import export_tflite, export_tflite_int8, tflite_runner

    size, in_chans = settings.input_size, _in_chans(model)
    path = directory / f"{route.value}.tflite"
    if route is Route.TFLITE:  # random ResNet-50 logits reach ~50, where XNNPACK's sums differ by ~1e-4 already
        export_tflite(model, path, inputs=sample_images(4, size, in_chans), atol=BENCH_TFLITE_ATOL)
    else:
        calibration = settings.calibration
        if calibration is None:
            calibration = sample_images(64, size, in_chans, seed=2)
        export_tflite_int8(model, path, calibration, inputs=calibration[:8], min_top1_agreement=0.0)
    return Prepared(tflite_runner(path, threads), count_params(model), macs, path.stat().st_size, in_chans)


def _prepare_tensorrt(route: Route, model: nn.Module, settings: BenchSettings, directory: Path,
                      macs: int) -> Prepared:  # fmt: skip
    """The route's ``.ep`` file (fp16, or int8 calibrated like ``int8``), checked against eager on the GPU; timed
    with batches up to ``settings.batch``."""
    from .tensorrt import Precision, export_tensorrt, tensorrt_runner

    size, in_chans = settings.input_size, _in_chans(model)
    path = directory / f"{route.value}.ep"
    calibration = None
    if route is Route.TENSORRT_INT8:
        calibration = settings.calibration
        if calibration is None:
            calibration = sample_images(64, size, in_chans, seed=2)
    precision = Precision.INT8 if route is Route.TENSORRT_INT8 else Precision.FP16
    export_tensorrt(model, path, precision, calibration=calibration, inputs=sample_images(4, size, in_chans),
                    min_top1_agreement=0.0, max_batch=max(settings.batch, 4))  # fmt: skip
    return Prepared(tensorrt_runner(path), count_params(model), macs, path.stat().st_size, in_chans)


def safetensors_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict as a safetensors file (what a PyTorch route ships)."""
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    return len(safetensors.torch.save(tensors))


def _in_chans(model: nn.Module) -> int:
    return getattr(getattr(model, "config", None), "in_chans", 3)


# -- reporting --------------------------------------------------------------------------------------------------


def format_results(results: Sequence[BenchResult], baseline: str = Route.ONNXRUNTIME.value) -> str:
    """A terminal table: one row per route, batch-1 latency, throughput at the larger batch, speed-up at batch 1
    against ``baseline`` (when it was measured), params, MACs and file size."""
    by_route: dict[str, dict[int, BenchResult]] = {}
    for r in results:
        by_route.setdefault(r.route, {})[r.batch] = r
    base = by_route.get(baseline, {}).get(1)
    big = max(r.batch for r in results)
    header = ["route", "batch 1 ms", f"img/s @ {big}", f"vs {baseline}" if base else "", "params", "MACs", "file"]
    rows = []
    for route, runs in by_route.items():
        one, many = runs[1], runs[big]
        speedup = f"{base.latency_ms / one.latency_ms:.2f}x" if base else ""
        rows.append([route, f"{one.latency_ms:.2f}", f"{many.images_per_s:.1f}", speedup, f"{one.params / 1e6:.2f}M",
                     f"{one.macs / 1e9:.3f}G", f"{one.file_bytes / 2**20:.1f} MiB"])  # fmt: skip
    widths = [max(len(c) for c in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header, *rows])


def machine_note(threads: int) -> str:
    """One line naming the CPU, the thread count and the runtimes' versions, printed under the table."""
    return f"{hardware_name('cpu')}, {threads} thread{'s' * (threads != 1)}; {runtime_versions()}"


def runtime_versions() -> str:
    """Versions of torch and of the optional runtimes that are installed."""
    versions = [f"torch {torch.__version__}"]
    for module in ("onnxruntime", "openvino", "ai_edge_litert", "torch_tensorrt"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            pass
    return ", ".join(versions)

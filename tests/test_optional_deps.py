"""A base install (``pip install resnetkit``, no extras) imports every module but the HTTP service, and says which
extra a feature needs when it is used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# the packages of the extras (and of the test environment's peers), made unimportable in a fresh interpreter
EXTRAS = ["pycocotools", "torchmetrics", "av", "coremltools", "litert_torch", "ai_edge_litert", "openvino", "fastapi",
          "uvicorn", "prometheus_client", "ray", "pytorch_grad_cam", "keras", "onnx", "onnxruntime", "onnxscript",
          "timm", "pytorchcv"]  # fmt: skip

SCRIPT = """
import importlib, pkgutil, sys
for name in {extras!r}:
    sys.modules[name] = None  # import raises ModuleNotFoundError; importlib.util.find_spec answers None
import resnetkit
failed = []
for module in pkgutil.walk_packages(resnetkit.__path__, "resnetkit."):
    if module.name.startswith("resnetkit.serve") or module.name == "resnetkit.__main__":
        continue  # the service is the serve extra itself; __main__ runs the CLI
    try:
        importlib.import_module(module.name)
    except Exception as error:
        failed.append(f"{{module.name}}: {{error!r}}")
print("\\n".join(failed) or "all imported")
from resnetkit.data.detection import via_to_coco
try:
    via_to_coco({{"a.jpg": {{"filename": "a.jpg", "regions": [{{"shape_attributes": {{"name": "polygon",
                "all_points_x": [0, 4, 4], "all_points_y": [0, 0, 4]}}}}]}}}}, {{"a.jpg": (8, 8)}})
except ImportError as error:
    print(error)
"""


def test_base_install_imports_everything_but_the_service():
    code = textwrap.dedent(SCRIPT.format(extras=EXTRAS))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "all imported", result.stdout
    assert lines[-1] == "COCO-format and VIA detection data need pycocotools: pip install 'resnetkit[tasks]'"

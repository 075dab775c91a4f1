"""Shared helpers: tiny inputs for each layout, norms with non-trivial statistics, a local HTTP server."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from resnetkit import get_variant


def test_size(name: str) -> int:
    """Smallest input the tests use for a variant: 64 for ImageNet layouts (2x2 at stride 32), 32 for CIFAR."""
    return 64 if get_variant(name).input_size > 32 else 32


test_size.__test__ = False  # a helper, not a test


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine terms and running statistics, so eval-mode comparisons see them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real training checkpoint, made quickly: the digits recipe with one unit per stage at 16x16, 4 epochs
    (about 87% val: trained enough that int8 agreement is not decided by near-tied logits)."""
    from resnetkit.train import fit, load_config

    out = tmp_path_factory.mktemp("tiny") / "run"
    fit(load_config("digits", ["model.options={layers: [1, 1, 1]}", "data.input_size=16", "epochs=4",
                               "progress=false", f"out={out}"]))  # fmt: skip
    return out / "last.safetensors"


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves a folder, honours ``Range: bytes=N-`` (for resumed downloads) and records request headers."""

    requests: list[dict[str, str]]

    def do_GET(self) -> None:
        self.requests.append(dict(self.headers))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if "Range" in self.headers else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``: yields (base URL, folder, request log). Plain HTTP
    needs resnetkit's explicit opt-in, which the fixture gives."""
    monkeypatch.setenv("RESNETKIT_ALLOW_INSECURE_DOWNLOADS", "1")
    www = tmp_path / "www"
    www.mkdir()
    log: list[dict[str, str]] = []
    handler = functools.partial(type("Handler", (RangeHandler,), {"requests": log}), directory=str(www))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", www, log
    httpd.shutdown()
    httpd.server_close()

"""Shared by the serving tests: the shipped CIFAR ResNet-20, images, and a real ``resnetkit serve`` process."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra: pip install '.[serve]'")

from resnetkit.serve import Classifier

MODEL = "cifar_resnet20.c10jpeg_cpu30"  # shipped in the package: 0.27 M parameters, no download
TOKEN = "test-token"


def png(seed: int, size: int = 32) -> bytes:
    """A smooth random RGB picture (blobs, not noise), PNG-encoded."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    coarse.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    return Classifier.load(MODEL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    headers: dict[str, str]

    def metric(self, name: str) -> float:
        """One sample of /metrics, e.g. ``resnetkit_batch_size_count``."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.split(" ")[0] == name)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``resnetkit serve`` in its own process on 127.0.0.1, with a token; batches of up to 16 wait 30 ms."""
    port = free_port()
    command = [sys.executable, "-m", "resnetkit", "serve", MODEL, "--port", str(port), "--max-batch", "16",
               "--max-wait-ms", "30", "--max-body-mb", "1", "--timeout", "20"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RESNETKIT_SERVE_TOKEN": TOKEN}
    log = tmp_path_factory.mktemp("serve") / "server.log"
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"resnetkit serve exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("resnetkit serve did not answer /healthz within 60 s")
    yield Server(url, process, {"Authorization": f"Bearer {TOKEN}"})
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()

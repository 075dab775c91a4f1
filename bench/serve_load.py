"""Load test of ``resnetkit serve``: an asyncio + httpx client against a server process on 127.0.0.1 only.

For each model: the server (ONNX Runtime backend) in its own process; ``--requests`` requests of one image each at
concurrency 1, 8 and 32 (bounded in count and ``--seconds``): p50/p95/p99 latency, images/s, errors and the batch
sizes formed (from the server's /metrics); side by side, ONNX Runtime called in this process on batches of the size
the server formed at the highest concurrency, on the same exported model (the service's target: at least 85% of it).
Then a fault run: good clients among bad ones (not an image, truncated, a decompression bomb, a body over the
limit, bad JSON, a client that disconnects mid-upload), counting good requests answered correctly (the same top-1 and
probability as the server's own answer to that image with no load) and bad ones answered 4xx. Server RSS is read
from /proc before and after. Writes JSON to bench/results/serve_<model>.json.

    python bench/serve_load.py --models cifar_resnet56.c10jpeg_paper resnet50

``resnet50`` has random weights here (no download): the speed is that of the real network; the classes mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from resnetkit import create_model
from resnetkit.models import ModelRecord
from resnetkit.models.record import default_preprocess
from resnetkit.serve import Classifier
from resnetkit.weights import save_weights

HOST = "127.0.0.1"  # never anything else: this client loads a server on this machine only
RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = (1, 8, 32)


def picture(seed: int, size: int, quality: int = 90) -> bytes:
    """A smooth random picture, JPEG-encoded at ``size`` (the model's resize size)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def resolve_model(name: str, folder: Path) -> str:
    """A registry name with weights, or a bare architecture saved with random weights (no download)."""
    if "." in name or Path(name).exists():
        return name
    torch.manual_seed(0)
    model = create_model(name).eval()
    path = folder / f"{name}_random.safetensors"
    record = ModelRecord(name, model.config, default_preprocess(model.config), source="random weights (serve_load.py)")
    save_weights(path, model, record)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: str, port: int, max_batch: int, max_wait_ms: float, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "resnetkit", "serve", model, "--backend", "onnxruntime", "--host", HOST,
               "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
               "--max-body-mb", "4", "--timeout", "60"]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("server did not start within 300 s")


def batch_histogram(url: str) -> dict[str, float]:
    """The server's batch-size histogram and its own latency histogram of /v1/predict, from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("resnetkit_batch_size") or line.startswith('resnetkit_request_seconds_bucket{le=')
            and 'route="/v1/predict"' in line}  # fmt: skip


def server_latency(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Requests to /v1/predict answered within each bucket (seconds), as the server timed them: from the moment
    the app gets the request to its answer, without the client's side and the time before the app sees it."""
    keys = [k for k in after if k.startswith("resnetkit_request_seconds_bucket")]
    return {k.split('le="')[1].split('"')[0]: int(after[k] - before.get(k, 0)) for k in keys}


def batch_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, object]:
    count = after["resnetkit_batch_size_count"] - before["resnetkit_batch_size_count"]
    total = after["resnetkit_batch_size_sum"] - before["resnetkit_batch_size_sum"]
    buckets = {
        k.split('"')[1]: after[k] - before.get(k, 0) for k in after if k.startswith("resnetkit_batch_size_bucket")
    }
    return {"batches": int(count), "mean": total / count if count else 0.0,
            "cumulative_le": {k: int(v) for k, v in buckets.items()}}  # fmt: skip


async def load(url: str, images: list[bytes], concurrency: int, requests: int, seconds: float) -> dict[str, object]:
    """``requests`` single-image requests from ``concurrency`` clients, stopping early after ``seconds``."""
    latencies, errors, sent = [], 0, 0
    stop_at = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        while sent < requests and time.perf_counter() < stop_at:
            i, sent = sent, sent + 1
            start = time.perf_counter()
            try:
                answer = await client.post("/v1/predict", files=[("images", ("x.jpg", images[i % len(images)]))])
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = sorted(1000 * t for t in latencies)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"concurrency": concurrency, "requests": len(ms), "errors": errors, "seconds": round(wall, 2),
            "images_per_s": round(len(ms) / wall, 2), "p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1),
            "p99_ms": round(q[98], 1)}  # fmt: skip


def in_process(classifier: Classifier, batch_size: int, seconds: float) -> dict[str, float]:
    """ONNX Runtime on the same exported model in this process: images/s on batches of ``batch_size``."""
    x = torch.randn(batch_size, *classifier.card()["input_size"])
    classifier.run(x)  # warm-up
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < seconds:
        classifier.run(x)
        runs += 1
    wall = time.perf_counter() - start
    return {"batch_size": batch_size, "runs": runs, "images_per_s": round(runs * batch_size / wall, 2)}


def side_by_side(url: str, images: list[bytes], classifier: Classifier, args: argparse.Namespace) -> dict[str, object]:
    """The service at concurrency 32 against ONNX Runtime in process on the batch size the service formed, in
    alternating rounds, so that both see the same load on a shared machine; the median of the rounds' ratios."""
    rounds = []
    for _ in range(args.rounds):
        before = batch_histogram(url)
        level = asyncio.run(load(url, images, LEVELS[-1], args.requests * LEVELS[-1] // 4, args.seconds))
        formed = max(1, round(batch_summary(before, batch_histogram(url))["mean"]))
        direct = in_process(classifier, formed, level["seconds"])
        rounds.append({"service_images_per_s": level["images_per_s"], "batch_size": formed,
                       "in_process_images_per_s": direct["images_per_s"], "p99_ms": level["p99_ms"],
                       "ratio": round(level["images_per_s"] / direct["images_per_s"], 3)})  # fmt: skip
        print("side by side", rounds[-1], flush=True)
    return {"rounds": rounds, "median_ratio": statistics.median(r["ratio"] for r in rounds)}


async def fault_run(url: str, images: list[bytes], reference: list[tuple[str, float]], good: int) -> dict[str, object]:
    """Good clients (concurrency 8) among bad ones; a good answer is correct when it matches ``reference``."""
    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, format="PNG")
    bad_requests = {
        "not an image": {"files": [("images", ("a.jpg", b"definitely not a picture"))]},
        "truncated": {"files": [("images", ("a.jpg", images[0][: len(images[0]) // 3]))]},
        "decompression bomb": {"files": [("images", ("bomb.png", bomb.getvalue()))]},
        "over the body limit": {"files": [("images", ("huge.jpg", os.urandom(5 * 2**20)))]},
        "bad json": {"content": b'{"images": [', "headers": {"content-type": "application/json"}},
        "wrong field": {"files": [("file", ("a.jpg", images[0]))]},
    }
    outcome = {"good_sent": 0, "good_correct": 0, "good_wrong": 0, "good_failed": 0, "bad_sent": 0, "bad_4xx": 0,
               "bad_other": [], "disconnects": 0}  # fmt: skip

    async def good_client(client: httpx.AsyncClient, start: int) -> None:
        for i in range(start, good, 8):
            outcome["good_sent"] += 1
            try:
                answer = await client.post("/v1/predict", files=[("images", ("x.jpg", images[i % len(images)]))])
            except httpx.HTTPError:
                outcome["good_failed"] += 1
                continue
            if answer.status_code != 200:
                outcome["good_failed"] += 1
                continue
            top = answer.json()["predictions"][0]["top"][0]
            name, p = reference[i % len(images)]
            right = top["class"] == name and abs(top["probability"] - p) < 1e-4
            outcome["good_correct" if right else "good_wrong"] += 1

    async def bad_client(client: httpx.AsyncClient) -> None:
        for _ in range(3):
            for case, request in bad_requests.items():
                outcome["bad_sent"] += 1
                try:
                    answer = await client.post("/v1/predict", **request)
                    if 400 <= answer.status_code < 500 and list(answer.json()) == ["error"]:
                        outcome["bad_4xx"] += 1
                    else:
                        outcome["bad_other"].append(f"{case}: {answer.status_code}")
                except httpx.HTTPError as err:  # the server may close a connection that sends too much
                    outcome["bad_other"].append(f"{case}: {type(err).__name__}")
            await disconnect_mid_upload(url)
            outcome["disconnects"] += 1

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await asyncio.gather(*(good_client(client, s) for s in range(8)), bad_client(client))
    return outcome


async def disconnect_mid_upload(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 500000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"images\"; "
                 b"filename=\"a.jpg\"\r\n\r\n" + os.urandom(20000))  # fmt: skip
    await writer.drain()
    writer.close()


def bench_model(name: str, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    model = resolve_model(name, folder)
    classifier = Classifier.load(model, "onnxruntime", workdir=folder)
    card = classifier.card()
    images = [picture(seed, card["preprocess"]["resize_size"]) for seed in range(16)]
    port = free_port()
    url = f"http://{HOST}:{port}"
    process = start_server(model, port, args.max_batch, args.max_wait_ms, folder / f"{card['arch']}.log")
    try:
        weights = "random" if model != name else name
        result: dict[str, object] = {"model": name, "arch": card["arch"], "weights": weights, "params": card["params"],
                                     "macs": card["macs"], "input_size": card["input_size"]}  # fmt: skip
        reference = []
        for data in images:  # the server's own answers with no load: what every later answer must repeat
            top = httpx.post(f"{url}/v1/predict", files=[("images", ("x.jpg", data))]).json()["predictions"][0]
            reference.append((top["top"][0]["class"], top["top"][0]["probability"]))
        rss = {"started": round(rss_mb(process.pid), 1)}
        # warm-up at full batches: ONNX Runtime's memory arena grows to the largest batch once and keeps it
        asyncio.run(load(url, images, LEVELS[-1], 2 * LEVELS[-1], args.seconds))
        rss["warm (one round at 32)"] = result["rss_mb_before"] = round(rss_mb(process.pid), 1)
        levels = []
        for concurrency in LEVELS:
            before = batch_histogram(url)
            level = asyncio.run(load(url, images, concurrency, args.requests * max(1, concurrency // 4), args.seconds))
            after = batch_histogram(url)
            level["batch_sizes"], level["server_latency_le_s"] = (
                batch_summary(before, after),
                server_latency(before, after),
            )
            levels.append(level)
            print(name, json.dumps(level), flush=True)
            rss[f"after concurrency {concurrency}"] = round(rss_mb(process.pid), 1)
        result["levels"] = levels
        result["side_by_side"] = side_by_side(url, images, classifier, args)
        rss["after the side-by-side rounds"] = round(rss_mb(process.pid), 1)
        result["in_process"] = [in_process(classifier, args.max_batch, args.seconds / 6)]
        result["fault_run"] = asyncio.run(fault_run(url, images, reference, args.fault_good))
        print(name, "faults", result["fault_run"], flush=True)
        rss["after the fault run"] = result["rss_mb_after"] = round(rss_mb(process.pid), 1)
        result["rss_mb"] = rss
        print(name, "rss MB", rss, flush=True)
        result["server_alive"] = process.poll() is None
    finally:
        process.terminate()
        process.wait(30)
    return result


def bucket_p99(buckets: dict[str, int]) -> str:
    """``<= X`` for the smallest histogram bound that holds 99% of the requests."""
    total = buckets["+Inf"]
    bound = next(k for k, n in buckets.items() if n >= 0.99 * total)
    return f"≤ {1000 * float(bound):g}" if bound != "+Inf" else "> 10000"


def table(paths: list[Path]) -> str:
    """The docs' table from written results."""
    header = (
        "| model | concurrency | requests | errors | images/s | p50 ms | p95 ms | p99 ms | server p99 ms | mean batch"
    )
    rows = [f"{header} | batches |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        result = json.loads(path.read_text())
        for level in result["levels"]:
            sizes = level["batch_sizes"]
            rows.append(
                f"| {result['model']} | {level['concurrency']} | {level['requests']} | {level['errors']} | "
                f"{level['images_per_s']} | {level['p50_ms']} | {level['p95_ms']} | {level['p99_ms']} | "
                f"{bucket_p99(level['server_latency_le_s'])} | {sizes['mean']:.1f} | {sizes['batches']} |"
            )
        for r in result["side_by_side"]["rounds"]:
            rows.append(
                f"| {result['model']}: service at 32 / ONNX Runtime in process, batch {r['batch_size']} | 32 | "
                f"| | {r['service_images_per_s']} / {r['in_process_images_per_s']} = **{100 * r['ratio']:.0f}%**"
                f" | | | {r['p99_ms']} | | | |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cifar_resnet56.c10jpeg_paper", "resnet50"])
    parser.add_argument("--requests", type=int, default=40, help="requests per level, times concurrency/4 past 4")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per level")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating service / in-process rounds at 32")
    parser.add_argument("--fault-good", type=int, default=64, help="good requests in the fault run")
    parser.add_argument("--table", nargs="+", type=Path, metavar="JSON", help="print the docs' table and stop")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "lscpu": subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()[:20],
               "load_average_at_start": os.getloadavg(), "torch": torch.__version__}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            result = {**bench_model(name, args, Path(tmp)), "machine": machine, "command": " ".join(sys.argv),
                      "settings": vars(args)}  # fmt: skip
            out = RESULTS / f"serve_{name.split('.')[0]}.json"
            out.write_text(json.dumps(result, indent=2) + "\n")
            print("wrote", out)


if __name__ == "__main__":
    main()

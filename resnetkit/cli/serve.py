"""``resnetkit serve MODEL``: an HTTP service for a model, with dynamic batching, metrics and a page to try it;
``--ray --replicas N`` runs the same classifier on Ray Serve instead."""

from __future__ import annotations

import argparse
import os

NAME = "serve"
HELP = "serve a model over HTTP: POST /v1/predict, /v1/model, /metrics, a page at /"
TOKEN_ENV = "RESNETKIT_SERVE_TOKEN"
BACKENDS = ("torch", "onnxruntime", "openvino")  # resnetkit.serve.Backend's: the serve extra is imported when used
MAX_PIXELS = 25_000_000  # resnetkit.serve.classifier.DEFAULT_MAX_PIXELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file or registry name; its record gives the preprocessing and classes")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="what runs the batches (onnxruntime, openvino: the model exported to ONNX at start, "
                        "checked against eager)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=32, help="the most images run as one batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    parser.add_argument("--token", default=None, help=f"require 'Authorization: Bearer TOKEN' (or set {TOKEN_ENV})")
    parser.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest image, in pixels")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take")
    parser.add_argument("--ray", action="store_true", help="run on Ray Serve (a local Ray instance unless "
                        "RAY_ADDRESS names a cluster)")  # fmt: skip
    parser.add_argument("--replicas", type=int, default=1, help="with --ray: model replicas")
    parser.add_argument("--triton-repository", metavar="DIR", help="write a Triton Inference Server model repository "
                        "(ONNX + config.pbtxt with dynamic batching up to --max-batch) into DIR and exit")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve until Ctrl-C."""
    from ..serve import Classifier, ServeSettings, create_app  # FastAPI is an optional extra: imported when used

    token = args.token or os.environ.get(TOKEN_ENV) or None
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, token=token,
                             max_body_bytes=int(args.max_body_mb * 2**20), timeout_s=args.timeout)  # fmt: skip
    if args.triton_repository:
        from ..serve import write_triton_repository

        folder = write_triton_repository(args.model, args.triton_repository, max_batch=args.max_batch,
                                         max_wait_ms=args.max_wait_ms)  # fmt: skip
        print(f"resnetkit serve: Triton model repository {folder.parent} (model {folder.name}): tritonserver "
              f"--model-repository {folder.parent}")  # fmt: skip
        return 0
    if args.ray:
        from ..serve.ray_app import serve_on_ray

        return serve_on_ray(args.model, args.backend, settings, args.replicas, args.host, args.port,
                            max_pixels=args.max_pixels)  # fmt: skip
    import uvicorn

    classifier = Classifier.load(args.model, args.backend, max_pixels=args.max_pixels)
    card = classifier.card()
    where = f"http://{args.host}:{args.port}"
    print(f"resnetkit serve: {card['arch']} ({args.backend}, max batch {args.max_batch}, wait {args.max_wait_ms:g} ms)"
          f" on {where} (page {where}/, API {where}/docs){', token required' if token else ''}",
          flush=True)  # fmt: skip
    uvicorn.run(create_app(classifier, settings), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=5)  # fmt: skip
    return 0

"""The same classifier on Ray Serve: replicas across a cluster, batches gathered by Ray's own ``@serve.batch``.

Each replica loads a :class:`~resnetkit.serve.classifier.Classifier` and answers with the same request parsing
(multipart or base64 JSON) and the same JSON as the FastAPI service: ``POST /v1/predict``, ``GET /v1/model``,
``GET /healthz``. Ray starts a local instance unless ``RAY_ADDRESS`` names a cluster, which then runs it unchanged.
From the command line::

    resnetkit serve cifar_resnet56.c10jpeg_paper --ray --replicas 2

or with Ray's own CLI, ``serve run resnetkit.serve.ray_app:app model=cifar_resnet20.c10jpeg_cpu30 replicas=2``.
Ray is imported only here (``pip install "ray[serve]"``).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import torch
from ray import serve
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from .app import ServeSettings, _read_upload, error
from .classifier import Backend, Classifier, ImageDecodeError, Top


@serve.deployment
class ClassifierDeployment:
    """One replica: a classifier and Ray Serve's batch queue in front of it."""

    def __init__(self, model: str, backend: str, settings: ServeSettings, max_pixels: int):
        self.classifier = Classifier.load(model, backend, max_pixels=max_pixels)
        self.settings = settings
        self.classify.set_max_batch_size(settings.max_batch)
        self.classify.set_batch_wait_timeout_s(settings.max_wait_ms / 1000)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def classify(self, items: list[tuple[torch.Tensor, int]]) -> list[dict[str, Any]]:
        tops: list[Top] = await asyncio.to_thread(self.classifier.classify, [x for x, _ in items],
                                                  [k for _, k in items])  # fmt: skip
        return [{"top": [{"class": c, "probability": p} for c, p in top], "batch_size": len(items)} for top in tops]

    async def __call__(self, request: Request) -> JSONResponse:
        path, token = request.url.path.rstrip("/") or "/", self.settings.token
        if path == "/healthz":
            return JSONResponse({"status": "ok"})
        if token and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {token}"):
            return error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        if path == "/v1/model" and request.method == "GET":
            return JSONResponse({**self.classifier.card(), "serving": "ray"})
        if path != "/v1/predict" or request.method != "POST":
            return error(404, f"no route {request.method} {path}")
        try:
            uploads, top_k = await _read_upload(request, self.settings)
            inputs = [self.classifier.decode(data) for _, data in uploads]
        except HTTPException as err:
            return error(err.status_code, err.detail)
        except ImageDecodeError as err:
            return error(400, f"not a usable image: {err}")
        answers = await asyncio.gather(*(self.classify((x, top_k)) for x in inputs))
        predictions = [{"name": name, **answer} for (name, _), answer in zip(uploads, answers)]
        replica = serve.get_replica_context().replica_id.unique_id
        return JSONResponse({"model": self.classifier.card()["arch"], "replica": replica, "predictions": predictions})


def application(model: str, backend: Backend | str = Backend.TORCH, settings: ServeSettings | None = None,
                replicas: int = 1, max_pixels: int = 25_000_000) -> serve.Application:  # fmt: skip
    """The Ray Serve application for ``model`` with ``replicas`` replicas (``serve.run`` it)."""
    settings = settings or ServeSettings()
    # Ray lets a replica hold 5 requests by default, which would cap its batches at 5
    deployment = ClassifierDeployment.options(num_replicas=replicas, max_ongoing_requests=2 * settings.max_batch)
    return deployment.bind(model, Backend(backend).value, settings, max_pixels)


def app(args: dict[str, str]) -> serve.Application:
    """Ray's ``serve run resnetkit.serve.ray_app:app model=NAME [replicas=N] [backend=B] [max_batch=N]``."""
    settings = ServeSettings(max_batch=int(args.get("max_batch", 32)), max_wait_ms=float(args.get("max_wait_ms", 5)))
    return application(args["model"], args.get("backend", "torch"), settings, int(args.get("replicas", 1)))


def serve_on_ray(model: str, backend: Backend | str, settings: ServeSettings, replicas: int, host: str, port: int,
                 max_pixels: int = 25_000_000) -> int:  # fmt: skip
    """``resnetkit serve --ray``: start (or join) Ray, deploy, and serve until Ctrl-C."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(model, backend, settings, replicas, max_pixels), route_prefix="/")
    print(f"resnetkit serve: {model} on Ray Serve, {replicas} replicas, http://{host}:{port}/v1/predict", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()

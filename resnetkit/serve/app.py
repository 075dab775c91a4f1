"""The HTTP service: a FastAPI app around a :class:`~resnetkit.serve.classifier.Classifier`.

Routes: ``POST /v1/predict`` (multipart upload or JSON with base64 images, one or many; ``top_k``), ``POST /v1/cam``
(one image: the class activation map of its top class as a PNG), ``GET /v1/model``, ``GET /healthz``, ``GET /metrics``
(Prometheus), ``/docs`` (OpenAPI) and the page at ``/``. Safety lives in one ASGI layer, :class:`Guard`: the bearer
token, the body-size limit and the request metrics; the routes add the per-request timeout and answer bad input with
a 4xx and a one-line JSON error, ``{"error": "..."}``. No route reads a file from the server's disk.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .batching import Batcher, QueueFullError
from .classifier import Classifier, ImageDecodeError, Top
from .page import PAGE

PUBLIC = ("/healthz", "/")  # no token needed: the liveness probe and the page (static HTML that holds no data)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
ROUTES = ("/", "/healthz", "/metrics", "/v1/model", "/v1/predict", "/v1/cam", "/docs", "/openapi.json")
IMAGE_FIELDS = ("images", "image")  # the multipart field names an image may come under


@dataclass(frozen=True)
class ServeSettings:
    """How the service batches and what it accepts.

    Args:
        max_batch: the most images run in one batch.
        max_wait_ms: how long the first image of a batch waits for others.
        token: when set, every route but ``/healthz`` and the page needs ``Authorization: Bearer TOKEN``.
        max_body_bytes: larger request bodies are refused (413) while they arrive.
        max_images: the most images in one request.
        max_top_k: the largest ``top_k`` accepted.
        timeout_s: a request not answered within this is refused (408 while its body arrives, else 503).
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    token: str | None = None
    max_body_bytes: int = 16 * 2**20
    max_images: int = 64
    max_top_k: int = 100
    timeout_s: float = 30.0


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("resnetkit_requests", "HTTP requests answered", ["route", "status"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("resnetkit_request_seconds", "Time to answer a request", ["route"],
                                 registry=self.registry)  # fmt: skip
        self.images = Counter("resnetkit_images", "Images classified", registry=self.registry)
        self.batch_size = Histogram("resnetkit_batch_size", "Images per batch run", buckets=BATCH_BUCKETS,
                                    registry=self.registry)  # fmt: skip
        self.batch_seconds = Histogram("resnetkit_batch_seconds", "Time to run one batch", registry=self.registry)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.images.inc(size)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of every error: ``{"error": "one line"}``."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


class Guard:
    """ASGI layer in front of the app: bearer token, body-size limit (declared or streamed), request metrics."""

    def __init__(self, app: Callable, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        start, status = time.perf_counter(), [500]

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, counted_send)
            else:
                await self.app(scope, self._limited(receive), counted_send)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _refusal(self, scope: dict) -> Response | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        token = self.settings.token
        if token and scope["path"] not in PUBLIC:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length", "0")
        if not length.isdigit():
            return error(400, "bad Content-Length header")
        if int(length) > self.settings.max_body_bytes:
            return error(413, f"request body of {int(length)} bytes is over the limit of "
                              f"{self.settings.max_body_bytes}")  # fmt: skip
        return None

    def _limited(self, receive: Callable) -> Callable:
        received, limit = [0], self.settings.max_body_bytes

        async def receive_limited() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > limit:  # a chunked body with no Content-Length; raised inside the route
                    raise HTTPException(413, f"request body is over the limit of {limit} bytes")
            return message

        return receive_limited


def create_app(classifier: Classifier, settings: ServeSettings | None = None) -> FastAPI:
    """The service for ``classifier``; run it with uvicorn (``resnetkit serve``) or test it with TestClient."""
    settings = settings or ServeSettings()
    metrics = Metrics()

    def run_batch(items: list[tuple[bytes, int]]) -> list[Top | ImageDecodeError]:
        # decoded on the worker too: the event loop only reads requests and answers them
        return classifier.classify_encoded([data for data, _ in items], [k for _, k in items])

    batcher: Batcher[tuple[bytes, int], Top | ImageDecodeError] = Batcher(
        run_batch, settings.max_batch, settings.max_wait_ms, max_queue=16 * settings.max_batch + settings.max_images,
        on_batch=metrics.on_batch)  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()
        batcher.close()

    arch = classifier.card()["arch"]
    app = FastAPI(title="resnetkit serve", version="1", lifespan=lifespan,
                  description=f"{arch} ({classifier.backend.value}): image classification")  # fmt: skip
    app.state.classifier, app.state.batcher, app.state.metrics = classifier, batcher, metrics
    app.add_middleware(Guard, settings=settings, metrics=metrics)  # outside the error handlers, inside Starlette's
    _add_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: answers while the server runs (no token needed)."""
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_card() -> dict[str, Any]:
        """Architecture, classes, preprocessing, parameters, MACs, measured accuracy and the weights' hash."""
        return {**classifier.card(), "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format: requests by route and status, latency, images, batch sizes and times."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.post("/v1/predict", openapi_extra=PREDICT_BODY)
    async def predict(request: Request) -> dict[str, Any]:
        """Top-k classes of one or many images: a multipart upload (field ``images``, repeated) or JSON
        ``{"images": [BASE64, ...], "top_k": 5}``; ``top_k`` may also be a query parameter or form field."""
        uploads, top_k = await _read_upload(request, settings)
        try:
            with anyio.fail_after(settings.timeout_s):
                tops = await batcher.submit([(data, top_k) for _, data in uploads])
        except TimeoutError:
            return error(503, f"not answered within the request timeout of {settings.timeout_s:g} s")
        refused = [(name, top) for (name, _), top in zip(uploads, tops) if isinstance(top, ImageDecodeError)]
        if refused:
            raise ImageDecodeError(f"{refused[0][0]}: {refused[0][1]}" if len(uploads) > 1 else str(refused[0][1]))
        predictions = [{"name": name, "top": [{"class": c, "probability": p} for c, p in top]}
                       for (name, _), top in zip(uploads, tops)]  # fmt: skip
        return {"model": classifier.card()["arch"], "predictions": predictions}

    @app.post("/v1/cam", openapi_extra=PREDICT_BODY)
    async def cam(request: Request) -> dict[str, Any]:
        """The class activation map (Grad-CAM) of one image's top class, over the image: a base64 PNG."""
        uploads, _ = await _read_upload(request, settings)
        if len(uploads) != 1:
            return error(422, f"/v1/cam draws one image, got {len(uploads)}")
        try:
            with anyio.fail_after(settings.timeout_s):
                png, (name, p) = await batcher.run_exclusive(classifier.cam_png, uploads[0][1])
        except TimeoutError:
            return error(503, f"not answered within the request timeout of {settings.timeout_s:g} s")
        return {"class": name, "probability": p, "png": base64.b64encode(png).decode()}

    return app


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "top_k": {"type": "integer", "default": 5}}}},
            "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
                "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
                "top_k": {"type": "integer", "default": 5}}}},
        },
    }
}  # fmt: skip


async def _read_upload(request: Request, settings: ServeSettings) -> tuple[list[tuple[str, bytes]], int]:
    """``[(name, encoded bytes), ...]`` and ``top_k`` of a predict request; HTTPException (4xx) for bad ones."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        with anyio.fail_after(settings.timeout_s):
            if kind == "multipart/form-data":
                uploads, fields = await _read_multipart(request, settings)
            elif kind == "application/json":
                uploads, fields = _read_json(await request.body())
            else:
                raise HTTPException(415, f"send multipart/form-data or application/json, not {kind or 'no type'}")
    except TimeoutError:
        raise HTTPException(408, f"the request body did not arrive within {settings.timeout_s:g} s") from None
    if not uploads:
        raise HTTPException(422, "no images: send them in the field 'images'")
    if len(uploads) > settings.max_images:
        raise HTTPException(413, f"{len(uploads)} images in one request, over the limit of {settings.max_images}")
    top_k = fields.get("top_k", request.query_params.get("top_k", 5))
    try:
        top_k = int(top_k)
    except (TypeError, ValueError):
        raise HTTPException(422, f"top_k must be an integer, got {top_k!r}") from None
    if not 1 <= top_k <= settings.max_top_k:
        raise HTTPException(422, f"top_k must be in [1, {settings.max_top_k}], got {top_k}")
    return uploads, top_k


async def _read_multipart(request: Request, settings: ServeSettings) -> tuple[list[tuple[str, bytes]], dict]:
    form = await request.form(max_files=settings.max_images + 1, max_fields=16)
    uploads, fields = [], {}
    for key, value in form.multi_items():
        if key in IMAGE_FIELDS and isinstance(value, UploadFile):
            uploads.append((value.filename or f"image {len(uploads)}", await value.read()))
        elif key == "top_k" and isinstance(value, str):
            fields[key] = value
        else:
            raise HTTPException(422, f"unexpected form field {key!r}: send images in 'images' and an optional 'top_k'")
    await form.close()
    return uploads, fields


def _read_json(body: bytes) -> tuple[list[tuple[str, bytes]], dict]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise HTTPException(422, 'expected a JSON object {"images": [BASE64, ...], "top_k": 5}')
    unknown = set(payload) - {"images", "top_k"}
    if unknown:
        raise HTTPException(422, f"unexpected JSON keys {sorted(unknown)}: only 'images' and 'top_k'")
    uploads = []
    for i, text in enumerate(payload["images"]):
        if not isinstance(text, str):
            raise HTTPException(422, f"images[{i}] is not a base64 string")
        try:
            uploads.append((f"images[{i}]", base64.b64decode(text.split(",")[-1], validate=True)))
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"images[{i}] is not valid base64") from None
    fields = {"top_k": payload["top_k"]} if "top_k" in payload else {}
    if isinstance(fields.get("top_k"), bool):
        raise HTTPException(422, "top_k must be an integer")
    return uploads, fields


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure answers ``{"error": "one line"}``: FastAPI's own 404/405/422, bad images, overload."""

    async def http_error(request: Request, err: HTTPException) -> Response:
        return error(err.status_code, err.detail, getattr(err, "headers", None))

    async def validation_error(request: Request, err: RequestValidationError) -> Response:
        first = err.errors()[0] if err.errors() else {}
        return error(422, f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', 'invalid request')}")

    async def bad_image(request: Request, err: ImageDecodeError) -> Response:
        return error(400, f"not a usable image: {err}")

    async def overloaded(request: Request, err: QueueFullError) -> Response:
        return error(503, str(err), {"Retry-After": "1"})

    async def disconnected(request: Request, err: ClientDisconnect) -> Response:
        return error(400, "the client went away before the body arrived")  # nobody reads it

    handlers: dict[Any, Callable[..., Awaitable[Response]]] = {
        HTTPException: http_error, RequestValidationError: validation_error, ImageDecodeError: bad_image,
        QueueFullError: overloaded, ClientDisconnect: disconnected}  # fmt: skip
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)

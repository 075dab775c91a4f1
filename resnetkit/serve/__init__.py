"""Serving a model over HTTP: ``resnetkit serve MODEL``.

A FastAPI app (:func:`create_app`) runs a :class:`Classifier` (the model, its preprocessing and a backend, eager
PyTorch, ONNX Runtime or OpenVINO) behind a :class:`Batcher` that gathers concurrent requests into batches; the same
classifier deploys on Ray Serve (:mod:`resnetkit.serve.ray_app`) with Ray's own batching and replicas, and
:func:`write_triton_repository` writes a model repository for Triton Inference Server. See ``docs/serving.md``.

    >>> from fastapi.testclient import TestClient
    >>> from resnetkit.serve import Classifier, ServeSettings, create_app
    >>> app = create_app(Classifier.load("cifar_resnet20.c10jpeg_cpu30"), ServeSettings(max_batch=8))
    >>> with TestClient(app) as client:
    ...     client.get("/healthz").json()
    {'status': 'ok'}
"""

from .app import ServeSettings, create_app
from .batching import Batcher, QueueFullError
from .classifier import Backend, Classifier
from .triton import write_triton_repository

__all__ = ["Backend", "Batcher", "Classifier", "QueueFullError", "ServeSettings", "create_app",
           "write_triton_repository"]  # fmt: skip

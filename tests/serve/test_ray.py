"""The same classifier on Ray Serve: a local Ray instance, 2 replicas, Ray's own batching; concurrent requests are
answered as the in-process Predictor answers, by both replicas, in batches of more than one image."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from resnetkit.data.decode import decode_image

from .conftest import MODEL, free_port, png

ray = pytest.importorskip("ray", reason="the ray extra: pip install 'ray[serve]'")
serve = pytest.importorskip("ray.serve")

from resnetkit.serve import ServeSettings
from resnetkit.serve.ray_app import application


@pytest.fixture(scope="module")
def ray_url():
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})  # fmt: skip
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = ServeSettings(max_batch=8, max_wait_ms=50)
        serve.run(application(MODEL, "torch", settings, replicas=2), route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


async def post_all(url: str, images: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post("/v1/predict", files=[("images", (f"{i}.png", d))])
                                      for i, d in enumerate(images)))  # fmt: skip


def test_two_replicas_answer_in_batches(ray_url, classifier):
    status = serve.status().applications["default"].deployments["ClassifierDeployment"]
    assert status.replica_states.get("RUNNING") == 2
    assert httpx.get(f"{ray_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{ray_url}/v1/model").json()["arch"] == "cifar_resnet20"
    images = [png(seed) for seed in range(32)]
    answers = asyncio.run(post_all(ray_url, images))
    assert [a.status_code for a in answers] == [200] * len(images)
    for data, answer in zip(images, answers):
        want = classifier.predictor.predict(decode_image(data), 5)
        assert [t["class"] for t in answer.json()["predictions"][0]["top"]] == [c for c, _ in want]
    assert max(a.json()["predictions"][0]["batch_size"] for a in answers) > 1
    assert len({a.json()["replica"] for a in answers}) == 2
    bad = httpx.post(f"{ray_url}/v1/predict", files=[("images", ("a.png", b"not an image"))])
    assert bad.status_code == 400 and "allowed format" in bad.json()["error"]

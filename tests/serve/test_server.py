"""``resnetkit serve`` as a real uvicorn process on 127.0.0.1: concurrent clients form batches of more than one
image (read back from /metrics), each gets its own answer, and bad clients do not stop the good ones."""

from __future__ import annotations

import asyncio
import socket

import httpx

from resnetkit.data.decode import decode_image

from .conftest import png


async def post_all(server, images: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/predict", files=[("images", (f"{i}.png", data))])
                                      for i, data in enumerate(images)))  # fmt: skip


def test_concurrent_requests_are_batched_and_answered_separately(server, classifier):
    images = [png(seed) for seed in range(24)]
    batches_before = server.metric("resnetkit_batch_size_count")
    singles_before = server.metric('resnetkit_batch_size_bucket{le="1.0"}')
    answers = asyncio.run(post_all(server, images))
    assert [a.status_code for a in answers] == [200] * len(images)
    for data, answer in zip(images, answers):
        top = answer.json()["predictions"][0]["top"]
        want = classifier.predictor.predict(decode_image(data), 5)
        assert [t["class"] for t in top] == [c for c, _ in want]
    batches = server.metric("resnetkit_batch_size_count") - batches_before
    assert batches < len(images), f"{len(images)} concurrent images ran in {batches} batches: none was batched"
    singles = server.metric('resnetkit_batch_size_bucket{le="1.0"}') - singles_before
    assert singles < batches, "every batch held one image"


def test_a_client_that_leaves_mid_upload_does_not_stop_the_server(server):
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: " + server.headers["Authorization"]
                        .encode() + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 90000\r\n"
                        b"\r\n--b\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n\r\n"
                        + png(0)[:50])  # fmt: skip
    answers = asyncio.run(post_all(server, [png(1), png(2)]))
    assert [a.status_code for a in answers] == [200, 200]
    assert server.process.poll() is None


def test_the_token_and_the_body_limit_hold_over_the_network(server):
    assert httpx.get(f"{server.url}/v1/model").status_code == 401
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    huge = httpx.post(f"{server.url}/v1/predict", headers=server.headers,
                      files=[("images", ("big.png", b"\0" * 2 * 2**20))])  # fmt: skip
    assert huge.status_code == 413 and "over the limit" in huge.json()["error"]

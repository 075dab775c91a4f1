"""The FastAPI service in process (TestClient): answers, the model card, token, limits, errors, metrics, CAM."""

from __future__ import annotations

import base64
import dataclasses
import io
import time

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from resnetkit.data.decode import decode_image
from resnetkit.serve import Backend, Classifier, ServeSettings, create_app

from .conftest import png

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(classifier):
    app = create_app(classifier, ServeSettings(max_batch=8, max_wait_ms=2, token=TOKEN, max_body_bytes=200_000))
    with TestClient(app) as client:
        yield client


def expected_top(classifier: Classifier, data: bytes, k: int) -> list[tuple[str, float]]:
    """What the Predictor answers in process for the same bytes."""
    return classifier.predictor.predict(decode_image(data), k)


def tops(answer: dict) -> list[list[tuple[str, float]]]:
    return [[(t["class"], t["probability"]) for t in p["top"]] for p in answer["predictions"]]


def assert_same(got, want):
    assert [[c for c, _ in top] for top in got] == [[c for c, _ in top] for top in want]
    for g, w in zip(got, want):
        assert [p for _, p in g] == pytest.approx([p for _, p in w], abs=1e-5)


def test_multipart_and_json_answer_as_the_predictor(client, classifier):
    images = [png(seed) for seed in range(3)]
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    answer = client.post("/v1/predict?top_k=3", files=files, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert [p["name"] for p in answer.json()["predictions"]] == ["0.png", "1.png", "2.png"]
    want = [expected_top(classifier, data, 3) for data in images]
    assert_same(tops(answer.json()), want)
    encoded = {"images": [base64.b64encode(data).decode() for data in images], "top_k": 2}
    answer = client.post("/v1/predict", json=encoded, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert_same(tops(answer.json()), [top[:2] for top in want])
    form = client.post("/v1/predict", files=files[:1], data={"top_k": "1"}, headers=AUTH).json()
    assert_same(tops(form), [want[0][:1]])


def test_model_card(client, classifier):
    card = client.get("/v1/model", headers=AUTH).json()
    assert card["arch"] == "cifar_resnet20" and card["backend"] == "torch" and len(card["classes"]) == 10
    assert card["classes"][3] == "cat" and card["input_size"] == [3, 32, 32]
    assert card["preprocess"]["crop_size"] == 32 and 0.2e6 < card["params"] < 0.3e6 and 35e6 < card["macs"] < 45e6
    assert card["metrics"][0]["top1"] == pytest.approx(87.24) and "CIFAR-10" in card["metrics"][0]["dataset"]
    assert card["weights_sha256"] == classifier.predictor.model.record.tensors_sha256 != ""
    assert card["max_batch"] == 8


def test_token_guards_every_route_but_healthz_and_the_page(client):
    for path in ("/v1/model", "/metrics", "/docs", "/openapi.json"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 401 and answer.json() == {"error": "missing or wrong bearer token"}
        assert client.get(path, headers=AUTH).status_code == 200
    assert client.post("/v1/predict", files=[("images", ("a.png", png(0)))]).status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "/v1/predict" in page.text  # static: the data it shows needs the token
    assert "/v1/predict" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def bomb() -> bytes:
    """A 12000 x 12000 grey PNG: 144 megapixels in about 140 KB."""
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, format="PNG")
    return buffer.getvalue()


def chunks():
    for _ in range(30):
        yield b"x" * 10_000  # 300 KB with no Content-Length


BAD = {
    "not an image": (400, "allowed format", {"files": [("images", ("a.txt", b"hello, world"))]}),
    "truncated": (400, "truncated", {"files": [("images", ("a.png", png(0)[:120]))]}),
    "decompression bomb": (400, "over the limit", {"files": [("images", ("b.png", bomb()))]}),
    "wrong field": (422, "unexpected form field 'file'", {"files": [("file", ("a.png", png(0)))]}),
    "no images": (422, "no images", {"json": {"images": []}}),
    "bad base64": (400, "not valid base64", {"json": {"images": ["@@@@"]}}),
    "not json": (400, "not valid JSON", {"content": b"{", "headers": {"content-type": "application/json"}}),
    "wrong json key": (422, "unexpected JSON keys", {"json": {"images": [], "topk": 3}}),
    "top_k zero": (422, "top_k must be in", {"json": {"images": [base64.b64encode(png(0)).decode()], "top_k": 0}}),
    "top_k word": (422, "top_k must be an integer", {"files": [("images", ("a.png", png(0)))], "data": {"top_k": "x"}}),
    "wrong type": (415, "send multipart/form-data", {"content": b"abc", "headers": {"content-type": "text/plain"}}),
    "too large": (413, "over the limit of 200000", {"content": b"x" * 300_000,
                                                        "headers": {"content-type": "application/json"}}),
    "too large, chunked": (413, "over the limit of 200000", {"content": chunks(),
                                                                 "headers": {"content-type": "application/json"}}),
}  # fmt: skip


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns; decode_image refuses
@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_input_is_a_one_line_4xx_and_the_server_keeps_serving(client, case):
    status, words, request = BAD[case]
    request = {**request, "headers": {**AUTH, **request.get("headers", {})}}
    answer = client.post("/v1/predict", **request)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["error"] and words in body["error"] and "\n" not in body["error"]
    assert client.post("/v1/predict", files=[("images", ("a.png", png(1)))], headers=AUTH).status_code == 200


def test_unknown_route_and_method_are_json_errors(client):
    assert client.get("/etc/passwd", headers=AUTH).json() == {"error": "Not Found"}
    assert client.get("/v1/predict", headers=AUTH).status_code == 405


def test_metrics_count_requests_and_batches(client):
    client.post("/v1/predict", files=[("images", ("a.png", png(2))), ("images", ("b.png", png(3)))], headers=AUTH)
    text = client.get("/metrics", headers=AUTH).text
    for name in (
        'resnetkit_requests_total{route="/v1/predict",status="200"}',
        "resnetkit_batch_size_bucket",
        "resnetkit_request_seconds_bucket",
        "resnetkit_images_total",
        "resnetkit_batch_seconds_count",
    ):
        assert name in text, name
    sizes = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if "batch_size_bucket" in line}
    assert sizes['resnetkit_batch_size_bucket{le="1.0"}'] < sizes['resnetkit_batch_size_bucket{le="+Inf"}']


def test_cam_is_a_png_of_the_image_size(client, classifier):
    data = png(4, size=48)
    answer = client.post("/v1/cam", files=[("images", ("a.png", data))], headers=AUTH)
    assert answer.status_code == 200, answer.text
    picture = Image.open(io.BytesIO(base64.b64decode(answer.json()["png"])))
    assert picture.format == "PNG" and picture.size == (48, 48) and picture.mode == "RGB"
    assert answer.json()["class"] == expected_top(classifier, data, 1)[0][0]
    two = client.post("/v1/cam", files=[("images", ("a.png", data)), ("images", ("b.png", data))], headers=AUTH)
    assert two.status_code == 422


def test_a_slow_model_answers_503_within_the_timeout(classifier):
    def slow(batch: torch.Tensor) -> torch.Tensor:
        time.sleep(1.0)
        return classifier.run(batch)

    app = create_app(dataclasses.replace(classifier, run=slow), ServeSettings(timeout_s=0.3))
    with TestClient(app) as client:
        start = time.perf_counter()
        answer = client.post("/v1/predict", files=[("images", ("a.png", png(0)))])
        assert answer.status_code == 503 and "timeout" in answer.json()["error"]
        assert time.perf_counter() - start < 0.9


def test_onnxruntime_backend_agrees_with_torch(classifier, tmp_path):
    onnx = Classifier.load("cifar_resnet20.c10jpeg_cpu30", Backend.ONNXRUNTIME, workdir=tmp_path)
    assert (tmp_path / "cifar_resnet20.onnx").is_file()
    inputs = [classifier.decode(png(seed)) for seed in range(5)]
    got, want = onnx.classify(inputs, [3] * 5), classifier.classify(inputs, [3] * 5)
    assert_same(got, want)
    assert onnx.card()["backend"] == "onnxruntime"


def test_one_bad_image_among_good_ones_names_it(client):
    files = [("images", ("good.png", png(0))), ("images", ("bad.png", b"GIF89a broken"))]
    answer = client.post("/v1/predict", files=files, headers=AUTH)
    assert answer.status_code == 400 and answer.json()["error"].startswith("not a usable image: bad.png: ")


def test_openvino_backend_agrees_with_torch(classifier, tmp_path):
    pytest.importorskip("openvino", reason="the openvino extra: pip install openvino")
    openvino = Classifier.load("cifar_resnet20.c10jpeg_cpu30", Backend.OPENVINO, workdir=tmp_path)
    inputs = [classifier.decode(png(seed)) for seed in range(5)]
    for batch in (inputs, inputs[:1]):  # the batch axis stays dynamic
        assert_same(openvino.classify(batch, [3] * len(batch)), classifier.classify(batch, [3] * len(batch)))
    assert openvino.card()["backend"] == "openvino"


def test_a_large_image_gets_a_cam_at_most_1024_pixels_wide(client):
    buffer = io.BytesIO()
    Image.new("RGB", (2400, 1200), (90, 120, 200)).save(buffer, format="JPEG")
    answer = client.post("/v1/cam", files=[("images", ("wide.jpg", buffer.getvalue()))], headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert Image.open(io.BytesIO(base64.b64decode(answer.json()["png"]))).size == (1024, 512)

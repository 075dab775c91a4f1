"""The Triton model repository: the layout and config Triton reads, and an ONNX file that ONNX Runtime runs with
the classifier's answers (Triton itself is not installed here)."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime
import pytest

from resnetkit.serve.triton import write_triton_repository

from .conftest import MODEL, png


def test_the_repository_holds_what_triton_reads(classifier, tmp_path):
    folder = write_triton_repository(MODEL, tmp_path, max_batch=16, max_wait_ms=2)
    assert folder == tmp_path / "cifar_resnet20"
    config = (folder / "config.pbtxt").read_text()
    assert 'name: "cifar_resnet20"' in config and 'platform: "onnxruntime_onnx"' in config
    assert "max_batch_size: 16" in config and "max_queue_delay_microseconds: 2000" in config
    assert re.search(r'name: "image", data_type: TYPE_FP32, dims: \[ 3, 32, 32 \]', config)
    assert re.search(r'name: "logits", data_type: TYPE_FP32, dims: \[ 10 \], label_filename: "labels.txt"', config)
    assert (folder / "labels.txt").read_text().splitlines() == classifier.classes
    session = onnxruntime.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = [classifier.decode(png(seed)) for seed in range(3)]
    batch = np.stack([x.numpy() for x in inputs])
    probs = np.exp(logits := session.run(None, {"image": batch})[0]) / np.exp(logits).sum(1, keepdims=True)
    want = classifier.classify(inputs, [1] * 3)
    assert [classifier.classes[i] for i in probs.argmax(1)] == [top[0][0] for top in want]
    assert probs.max(1) == pytest.approx([top[0][1] for top in want], abs=1e-5)

"""`resnetkit predict` on the image files people actually have: every mode, EXIF rotation, damaged files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.cli import main
from resnetkit.data import ImageDecodeError, load_digits
from resnetkit.workflows import Predictor, read_image


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    """A real handwritten 7 from the digits set, 64x64 grey uint8."""
    data = load_digits()
    seven = data.images[int((data.labels == 7).nonzero()[0])].numpy()[0]
    return np.kron(seven, np.ones((8, 8), dtype=np.uint8))


def save_all_modes(digit: np.ndarray, folder) -> dict[str, object]:
    grey = Image.fromarray(digit)
    rgb = grey.convert("RGB")
    files = {
        "grey.png": grey,
        "rgb.jpg": rgb,
        "rgba.png": rgb.convert("RGBA"),
        "palette.gif": rgb.quantize(colors=32),  # adaptive palette: exact for the 17 grey levels
        "cmyk.jpg": rgb.convert("CMYK"),
        "grey16.png": Image.fromarray(digit.astype(np.uint16) * 257),
    }
    for name, image in files.items():
        image.save(folder / name)
    return files


def test_read_image_handles_every_mode(tmp_path, digit):
    for name in save_all_modes(digit, tmp_path):
        rgb = read_image(tmp_path / name)
        grey = read_image(tmp_path / name, grayscale=True)
        assert rgb.shape == (3, 64, 64) and grey.shape == (1, 64, 64), name
        tolerance = 12 if name.endswith(".jpg") else 1  # JPEG is lossy
        assert (grey[0].int() - torch.from_numpy(digit).int()).abs().max() <= tolerance, name


def test_exif_orientation_is_applied(tmp_path, digit):
    wide = Image.fromarray(np.hstack([digit, np.zeros_like(digit)]))  # 64 x 128
    exif = wide.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    wide.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (3, 128, 64)


def test_damaged_files_raise_one_line_errors(tmp_path, digit):
    Image.fromarray(digit).convert("RGB").save(tmp_path / "ok.jpg")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:200])
    (tmp_path / "notes.png").write_text("not an image")
    for name in ("truncated.jpg", "notes.png", "missing.png"):
        with pytest.raises(ImageDecodeError) as info:
            read_image(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


def test_predict_every_file_and_report_the_bad_ones(tmp_path, digit, tiny_checkpoint, capsys):
    files = list(save_all_modes(digit, tmp_path))
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "rgb.jpg").read_bytes()[:200])
    paths = [str(tmp_path / n) for n in ["truncated.jpg", *files]]
    assert main(["predict", str(tiny_checkpoint), *paths, "--topk", "3"]) == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == len(files)
    assert len(err.strip().splitlines()) == 1 and "truncated.jpg" in err
    predictor = Predictor.load(tiny_checkpoint)
    top = predictor.predict_file(tmp_path / "grey.png", topk=3).top
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] and set(c for c, _ in top) <= set(map(str, range(10)))

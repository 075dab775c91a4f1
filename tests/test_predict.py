"""`resnetkit predict` on the image files people actually have: every mode, EXIF rotation, damaged files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.cli import main
from resnetkit.data import ImageDecodeError, load_digits
from resnetkit.models import Preprocess
from resnetkit.workflows import Predictor, read_image
from resnetkit.workflows.predict import crop_region


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


def ramp(height: int, width: int) -> torch.Tensor:
    """(3, H, W) uint8 whose red channel is the column index and green the row index (scaled to 0..255)."""
    cols = torch.linspace(0, 255, width).round().to(torch.uint8).expand(height, width)
    rows = torch.linspace(0, 255, height).round().to(torch.uint8)[:, None].expand(height, width)
    return torch.stack([cols, rows, torch.zeros_like(cols)])


@pytest.mark.parametrize(
    "height, width, resize, crop", [(40, 64, 32, 32), (90, 50, 36, 32), (32, 32, 32, 32), (37, 101, 40, 33)]
)
def test_crop_region_is_what_the_preprocessing_keeps(height, width, resize, crop):
    preprocess = Preprocess(crop_size=crop, resize_size=resize, mean=(0.0,) * 3, std=(1.0,) * 3)
    top, left, h, w = crop_region(preprocess, height, width)
    assert 0 <= top and 0 <= left and top + h <= height and left + w <= width
    seen = preprocess(ramp(height, width)) * 255  # (3, crop, crop): the ramp values the model sees
    column, row = (width - 1) / 255, (height - 1) / 255  # ramp value -> pixel of the original image
    # the crop's edges are the region's edges, to within a pixel of the original image
    assert abs(seen[0, :, 0].mean() * column - left) <= 1 and abs(seen[0, :, -1].mean() * column - (left + w - 1)) <= 1
    assert abs(seen[1, 0, :].mean() * row - top) <= 1 and abs(seen[1, -1, :].mean() * row - (top + h - 1)) <= 1


def test_predict_cam_writes_the_map_over_the_image(tmp_path, capsys):
    picture = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)  # wide: the model sees a crop
    Image.fromarray(picture).save(tmp_path / "wide.png")
    name = "cifar_resnet20.c10jpeg_cpu30"
    assert main(["predict", name, str(tmp_path / "wide.png"), "--cam", str(tmp_path / "cam.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    top1 = out[0].split(": ")[1].split(",")[0].rsplit(" ", 1)[0]
    assert out[1].startswith(f"{tmp_path / 'cam.png'}: gradcam map of {top1} (")
    with Image.open(tmp_path / "cam.png") as png:
        assert png.format == "PNG" and png.size == (64, 40)
        drawn = np.asarray(png.convert("RGB"))
    top, left, h, w = crop_region(Predictor.load(name).preprocess, 40, 64)
    assert (top, left, h, w) == (0, 13, 40, 40)  # 40x64 -> 32x51, the middle 32 columns
    inside = np.zeros((40, 64), dtype=bool)
    inside[top : top + h, left : left + w] = True
    assert np.array_equal(drawn[~inside], picture[~inside]) and (drawn[inside] != picture[inside]).any(-1).mean() > 0.9

    assert main(["predict", name, str(tmp_path / "wide.png"), "--cam", str(tmp_path / "s.png"),
                 "--cam-method", "scorecam"]) == 0  # fmt: skip
    with Image.open(tmp_path / "s.png") as png:
        assert png.size == (64, 40)
    assert main(["predict", name, str(tmp_path / "wide.png"), str(tmp_path / "wide.png"), "--cam", "x.png"]) == 2
    assert "--cam draws one image" in capsys.readouterr().err

"""Image folders and zips under hostile or careless input (issue 22, items 1, 4 and 8): every archive, member and
image here is built by the test. Each is refused in one line, or skipped with a one-line warning naming it, and
none takes memory out of proportion to its size on disk."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image, features

from resnetkit.data import ImageDecodeError, SkippedImageWarning, decode_image, folder_loader, index_images
from resnetkit.data import decode as decode_module
from resnetkit.data import folder as folder_module
from resnetkit.data.folder import load_image_folder
from resnetkit.models import ModelRecord, Preprocess, create_model
from resnetkit.train.config import load_config, recipe_path
from resnetkit.train.data import build_data
from resnetkit.train.distributed import World
from resnetkit.weights import save_weights
from resnetkit.workflows import evaluate_model

MiB = 2**20


# ---------------------------------------------------------------- builders


def load_measured(path):
    """``load_image_folder(path)`` with every warning it gives and its peak Python memory (tracemalloc)."""
    tracemalloc.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load_image_folder(path, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return images, caught, peak


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def tile(seed: int, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def two_classes(prefix: str = "") -> dict[str, bytes]:
    """Four 8x8 PNGs, two per class: a good dataset to add the odd entries to."""
    return {
        f"{prefix}{name}": encoded(tile(i))
        for i, name in enumerate(["cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"])
    }


def write_zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def write_dataset(tmp_path: Path, files: dict[str, bytes], as_zip: bool) -> Path:
    """``files`` as ``data.zip`` or as the folder ``data/``."""
    if as_zip:
        return write_zip(tmp_path / "data.zip", files)
    for name, data in files.items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(data)
    return tmp_path / "data"


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def black_png(width: int, height: int) -> bytes:
    """A complete 1-bit PNG of ``width x height`` black pixels: zlib packs its zero rows about 1000 to 1."""
    row, packer = bytes(1 + (width + 7) // 8), zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def gif_with_screen(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen, which Pillow decodes whole, claims ``width x height``."""
    data = bytearray(encoded(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def tiff(values: np.ndarray) -> bytes:
    return encoded(Image.fromarray(values), "TIFF")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def patch_central_entry(path: Path, name: str, field_offset: int, value: int) -> None:
    """Overwrite a 2-byte field of ``name``'s central directory entry (8: flags, 10: compression method)."""
    data = bytearray(path.read_bytes())
    start = data.rfind(b"PK\x05\x06")  # end of central directory: where the directory starts
    at = struct.unpack("<I", data[start + 16 : start + 20])[0]
    while data[at : at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[at + 28 : at + 34])
        if data[at + 46 : at + 46 + name_len] == name.encode():
            data[at + field_offset : at + field_offset + 2] = struct.pack("<H", value)
            path.write_bytes(data)
            return
        at += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{name} is not in {path}")


def flip_packed_bytes(path: Path, name: str) -> None:
    """Corrupt the middle of ``name``'s compressed data."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    middle = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    data[middle : middle + 8] = bytes(b ^ 0xA5 for b in data[middle : middle + 8])
    path.write_bytes(data)


def index_quietly(path: Path, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = index_images(path, **options)
    return index, [str(w.message) for w in caught if issubclass(w.category, SkippedImageWarning)]


def refusal(error: type[Exception], call, *args, **kwargs) -> str:
    """The message of the ``error`` that ``call`` raises, checked to be one line."""
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


# ---------------------------------------------------------------- item 1: where the classes start


@pytest.mark.parametrize("stray", ["README.md", "LICENSE", "notes/todo.txt", "__MACOSX/._cat", ".DS_Store"])
def test_a_stray_top_level_entry_does_not_collapse_the_classes(tmp_path, stray):
    """Before: ``train/<class>/`` plus a README trained as one class ``['train']`` (``['', 'train']`` for others)."""
    path = write_zip(tmp_path / "data.zip", {**two_classes("train/"), stray: b"hello\n"})
    index, messages = index_quietly(path)
    assert index.classes == ["cat", "dog"] and index.labels == [0, 0, 1, 1]
    assert index.files == ["train/cat/a.png", "train/cat/b.png", "train/dog/c.png", "train/dog/d.png"]
    hidden = stray.startswith((".", "__MACOSX"))
    assert messages == ([] if hidden else [f"skipping 1 non-image file(s) in {path}, e.g. {stray}"])


@pytest.mark.parametrize("as_zip", [True, False])
def test_the_class_root_is_the_deepest_folder_holding_only_class_folders(tmp_path, as_zip):
    """Wrappers are skipped in folders as in zips (a folder ``data/v1/train/<class>`` was one class, ``v1``)."""
    path = write_dataset(tmp_path, {**two_classes("v1/train/"), "v1/train/LICENSE": b"", "v1/README": b""}, as_zip)
    index, messages = index_quietly(path)
    assert index.classes == ["cat", "dog"] and [f.split("/")[:2] for f in index.files] == [["v1", "train"]] * 4
    assert len(messages) == 1 and messages[0].startswith(f"skipping 2 non-image file(s) in {path}, e.g. v1/")
    images = load_image_folder(path, progress=False)
    assert images.classes == ["cat", "dog"] and images.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "extra, found",
    [({**two_classes("train/"), **two_classes("val/")},
      "no class folder holds images itself (splits side by side, e.g. train/ and val/?); top level: train/, val/"),
     ({**two_classes(), "cover.png": encoded(tile(9))},
      "1 image(s) outside class folders, e.g. 'cover.png'; top level: cat/, cover.png, dog/"),
     ({**two_classes("train/"), "cover.png": encoded(tile(9))},
      "1 image(s) outside class folders, e.g. 'cover.png'; top level: cover.png, train/"),
     ({**two_classes("train/"), "train/cover.png": encoded(tile(9)), "README.md": b""},
      "1 image(s) outside class folders, e.g. 'train/cover.png'; in train/: cat/, cover.png, dog/")],
)  # fmt: skip
@pytest.mark.parametrize("as_zip", [True, False])
def test_an_ambiguous_layout_is_refused_with_the_layout_found(tmp_path, extra, found, as_zip):
    path = write_dataset(tmp_path, extra, as_zip)
    message = refusal(ValueError, index_images, path)
    assert message == f"{path}: ambiguous layout, {found}"


@pytest.mark.parametrize("name", ["../evil.png", "train/cat/../../../evil.png", "/etc/evil.png", "train//cat/x.png"])
def test_member_names_that_climb_out_are_refused_not_dropped(tmp_path, name):
    """Before: a name with ``..`` was dropped as a hidden file, without a word."""
    path = write_zip(tmp_path / "data.zip", {**two_classes("train/"), name: encoded(tile(9))})
    message = refusal(ValueError, index_images, path)
    assert message == f"{path} has 1 unsafe member name(s) (absolute, empty parts or '..'), e.g. {name!r}: refusing it"


def test_a_zip_storing_a_member_name_twice_is_refused(tmp_path):
    """Before: both entries were listed and both read the last copy, so one image counted twice, the other never."""
    path = tmp_path / "data.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's own "Duplicate name" warning while writing
        write_zip(path, {**two_classes("train/")})
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("train/cat/a.png", encoded(tile(7)))
    message = refusal(ValueError, index_images, path)
    assert message == (f"{path} stores 1 member name(s) more than once, e.g. 'train/cat/a.png': which copy is meant "
                       "is ambiguous; refusing it")  # fmt: skip


@pytest.mark.parametrize("as_zip", [True, False])
def test_a_dataset_of_one_class_is_refused(tmp_path, as_zip):
    """Before: one class trained to ``val top-1 100.00%``."""
    path = write_dataset(tmp_path, {"train/cat/a.png": encoded(tile(0)), "train/cat/b.png": encoded(tile(1))}, as_zip)
    expected = f"{path}: 1 class folder(s), a dataset needs at least 2; in train/: cat/"
    assert refusal(ValueError, index_images, path) == expected
    assert refusal(ValueError, load_image_folder, path, progress=False) == expected  # what training reads
    assert index_images(path, min_classes=1).classes == ["cat"]  # e.g. calibration images


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + bytes(100)])
def test_a_file_that_is_not_a_zip_is_a_one_line_error(tmp_path, content):
    """Before: ``zipfile.BadZipFile``, which is no user error, so a traceback."""
    (tmp_path / "data.zip").write_bytes(content)
    assert refusal(ValueError, index_images, tmp_path / "data.zip").startswith(f"{tmp_path / 'data.zip'} is not")


def test_an_empty_folder_names_what_it_found(tmp_path):
    (tmp_path / "data" / "docs").mkdir(parents=True)
    (tmp_path / "data" / "docs" / "a.txt").write_text("no images")
    assert refusal(ValueError, index_images, tmp_path / "data").endswith("top level: docs/")


# ---------------------------------------------------------------- item 4: small inputs, large memory


def test_a_zip_bomb_member_is_refused_before_it_is_inflated(tmp_path):
    """64 MiB of zeros packs into 64 KiB; before, the whole member was read into memory to be decoded."""
    path = write_zip(tmp_path / "data.zip", two_classes("train/"))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive, archive.open("train/cat/bomb.png", "w") as member:
        for _ in range(64):
            member.write(bytes(MiB))
    assert path.stat().st_size < MiB
    images, caught, peak = load_measured(path)
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB"
    assert len(images) == 4 and images.classes == ["cat", "dog"]
    (message,) = [str(w.message) for w in caught if "bomb.png" in str(w.message)]
    assert message.startswith(f"skipping {path}:train/cat/bomb.png: unpacks to 64.0 MiB, ")
    assert message.endswith("times its packed size (the limit is 100 above 1.0 MiB): refused unread")


@pytest.mark.parametrize("as_zip", [True, False])
def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch, as_zip):
    monkeypatch.setattr(folder_module, "MAX_FILE_BYTES", 64 * 2**10)
    noise = np.random.default_rng(0).integers(0, 256, 100 * 2**10, dtype=np.uint8).tobytes()  # does not pack
    index, _ = index_quietly(write_dataset(tmp_path, {**two_classes(), "cat/big.png": noise}, as_zip))
    assert "over the limit of 0.1 MiB: refused unread" in refusal(
        ImageDecodeError, index.decode, index.files.index("cat/big.png")
    )


def test_a_png_of_100_megapixels_is_refused_before_decoding():
    """A 12 KB PNG; before, Pillow only warned, and decoding it took 1.6 GB."""
    data = black_png(10_000, 10_000)
    assert len(data) < 100_000
    tracemalloc.start()
    message = refusal(ImageDecodeError, decode_image, data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB"
    assert message == (
        "PNG image of 10000x10000 = 100.0 megapixels is over the limit of 89.5 "
        "(resnetkit.data.decode.MAX_PIXELS): refused before decoding"
    )


def test_the_pixel_limit_is_configurable():
    small = encoded(tile(0))  # 8x8
    assert decode_image(small).shape == (3, 8, 8)
    assert "over the limit of 0.0" in refusal(ImageDecodeError, decode_image, small, max_pixels=63)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode_module, "MAX_PIXELS", 63)
        refusal(ImageDecodeError, decode_image, small)


def test_a_gif_whose_screen_claims_100_megapixels_is_refused():
    assert "10000x10000" in refusal(ImageDecodeError, decode_image, gif_with_screen(10_000, 10_000))


def test_a_png_past_pillows_own_limit_is_a_one_line_error():
    refusal(ImageDecodeError, decode_image, black_png(20_000, 20_000)[:4096])  # header and a truncated start


DISGUISED = ["EPS", "PDF", "ICO", "TGA", "PCX", "SGI", "IM", "DDS", "QOI", "SPIDER", "ICNS", "JPEG2000"]


@pytest.mark.parametrize("fmt", DISGUISED)
def test_formats_outside_the_allow_list_are_refused_whatever_the_name(tmp_path, monkeypatch, fmt):
    """An EPS named ``.jpg`` reached Pillow's Ghostscript plugin; the other formats opened through their plugins."""
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args) or 1 / 0)
    data = EPS if fmt == "EPS" else encoded(tile(0), fmt)
    message = refusal(ImageDecodeError, decode_image, data)
    assert message == "not an image in an allowed format (JPEG, PNG, WEBP, BMP, TIFF, GIF, PPM)" and not calls


ALLOWED = ["JPEG", "PNG", "BMP", "TIFF", "GIF", "PPM"] + (["WEBP"] if features.check("webp") else [])


@pytest.mark.parametrize("fmt", ALLOWED)
def test_the_allowed_formats_still_decode(fmt):
    image = tile(3)
    pixels = decode_image(encoded(image, fmt))
    assert pixels.shape == (3, 8, 8) and pixels.dtype == torch.uint8
    if fmt in ("PNG", "BMP", "TIFF", "PPM"):  # lossless
        assert torch.equal(pixels, torch.from_numpy(np.array(image)).permute(2, 0, 1))


# ---------------------------------------------------------------- item 8: wide pixel modes


@pytest.mark.parametrize(
    "values, expected",
    [(np.arange(256, dtype=np.int32).reshape(16, 16), np.arange(256)),  # 8-bit data in 32 bits: kept
     (np.arange(256, dtype=np.int32).reshape(16, 16) * 257, np.arange(256)),  # 16-bit data in 32 bits
     (np.arange(256, dtype=np.float32).reshape(16, 16) / 255, np.arange(256)),  # floats in [0, 1]
     (np.arange(256, dtype=np.float32).reshape(16, 16), np.arange(256)),  # floats in [0, 255]
     (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257, np.arange(256)),  # 16-bit TIFF: by its depth
     (np.full((16, 16), 255, dtype=np.uint16), np.ones(256))],  # ... a dark 16-bit image stays dark
)  # fmt: skip
def test_a_wide_tiff_is_scaled_by_the_range_of_its_values(values, expected):
    """Before: a 32-bit TIFF of 0-255 was divided by 257, all but black."""
    pixels = decode_image(tiff(values), grayscale=True)
    assert pixels.flatten().tolist() == expected.tolist()
    assert torch.equal(decode_image(tiff(values)), pixels.expand(3, -1, -1))


@pytest.mark.parametrize(
    "values", [np.arange(-5, 251, dtype=np.int32), np.full(256, np.nan, np.float32), np.full(256, 1e12, np.float32)]
)
def test_a_wide_tiff_whose_range_cannot_be_told_is_refused(values):
    assert "its range cannot be told" in refusal(ImageDecodeError, decode_image, tiff(values.reshape(16, 16)))


# ---------------------------------------------------------------- item 8: streaming evaluation


def broken_among_good(tmp_path: Path) -> Path:
    """A zip of 4 good files and 3 undecodable ones, two of them a whole batch of 2 (in order: c.png, d.png)."""
    good = {
        f"train/{name}": encoded(tile(i)) for i, name in enumerate(["cat/a.png", "cat/b.png", "dog/e.png", "dog/h.png"])
    }
    broken = {"train/cat/c.png": b"text", "train/cat/d.png": encoded(tile(9))[:60], "train/dog/g.png": b""}
    return write_zip(tmp_path / "data.zip", good | broken)


@pytest.mark.parametrize("workers", [0, 1])
def test_streaming_evaluation_skips_and_counts_undecodable_images(tmp_path, workers):
    """Before: a broken image was replaced by its neighbour, so the evaluation counted that one twice."""
    loader = folder_loader(broken_among_good(tmp_path), None, batch_size=2, shuffle=False, workers=workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        for _ in range(2):  # the count is of the latest pass
            batches = list(loader)
            assert [len(y) for _, y in batches] == [2, 1, 1] and loader.skipped == 3
    images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    assert labels.tolist() == [0, 0, 1, 1]
    assert all(torch.equal(image, decode_image(encoded(tile(i)))) for i, image in enumerate(images))


def test_a_streamed_runs_validation_counts_each_image_once(tmp_path):
    """Before: training's streamed validation replaced a broken image by its neighbour, counting that one twice."""
    cfg = load_config(recipe_path("digits"), [f"data.dataset={broken_among_good(tmp_path)}", "data.in_memory=false",
                                              "data.val_size=6", "data.workers=0", "data.batch_size=1",
                                              "data.eval_batch_size=2", "progress=false"])  # fmt: skip
    data = build_data(cfg, torch.device("cpu"), World())
    val = data.evals["val"].dataset  # 6 of the 7 files, at least 2 of them broken
    broken = sum(val.dataset.index.name(i).endswith(("c.png", "d.png", "g.png")) for i in val.indices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        labels = torch.cat([y for _, y in data.val_batches()])
    assert broken >= 2 and len(labels) == 6 - broken and data.skipped("val") == broken


def test_the_evaluation_report_says_how_many_images_were_skipped(tmp_path):
    model = create_model("cifar_resnet20", num_classes=2, in_chans=3).eval()
    weights = tmp_path / "model.safetensors"
    save_weights(weights, model, ModelRecord("cifar_resnet20", model.config, Preprocess(8, 8), classes=("cat", "dog")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        report = evaluate_model(str(weights), dataset=str(broken_among_good(tmp_path)), workers=0)
    assert report.meter.count == 4 and report.skipped == 3 and report.to_dict()["skipped_images"] == 3
    assert "(3 undecodable image(s) skipped)" in report.text().splitlines()[0]


def test_a_streamed_folder_where_nothing_decodes_is_a_one_line_error(tmp_path):
    path = write_zip(tmp_path / "data.zip", {"train/cat/a.png": b"text", "train/dog/b.png": b""})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        message = refusal(ImageDecodeError, list, folder_loader(path, None, batch_size=4, shuffle=False, workers=0))
    assert message == f"none of the 2 files of {path} could be decoded"


# ---------------------------------------------------------------- all the odd inputs together


def odd_members() -> dict[str, bytes]:
    """Odd files, each under a class folder: every one must be skipped, with a one-line warning naming it."""
    odd = {
        "empty.png": b"",
        "text.jpg": b"not an image, despite the name\n",
        "truncated.png": encoded(tile(1))[:50],
        "truncated.jpg": encoded(tile(1), "JPEG")[:200],
        "eps.jpg": EPS,
        "megapixels.png": black_png(10_000, 10_000),
        "gigapixels.png": black_png(20_000, 20_000)[:4096],
        "screen.gif": gif_with_screen(10_000, 10_000),
        "negative.tif": tiff(np.arange(-5, 251, dtype=np.int32).reshape(16, 16)),
        "nan.tif": tiff(np.full((16, 16), np.nan, np.float32)),
    }
    odd |= {f"{fmt.lower()}.png": encoded(tile(2), fmt) for fmt in DISGUISED if fmt != "EPS"}
    return {f"train/{'cat' if i % 2 else 'dog'}/{name}": data for i, (name, data) in enumerate(odd.items())}


ODD_ARCHIVE_MEMBERS = ["bomb.png", "encrypted.png", "unknown-method.png", "corrupt.bmp"]


def test_odd_inputs_in_one_zip_are_each_skipped_in_one_line_with_little_memory(tmp_path):
    """The figures for the reliability page: how many odd files, all skipped, none crashing, peak memory."""
    odd = odd_members()
    path = write_zip(tmp_path / "data.zip", {**two_classes("train/"), **odd})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("train/cat/bomb.png", bytes(64 * MiB), zipfile.ZIP_DEFLATED)
        for name in ("encrypted.png", "unknown-method.png"):
            archive.writestr(f"train/dog/{name}", encoded(tile(4)))
        archive.writestr("train/dog/corrupt.bmp", encoded(tile(5), "BMP"), zipfile.ZIP_DEFLATED)
    patch_central_entry(path, "train/dog/encrypted.png", 8, 0x1)
    patch_central_entry(path, "train/dog/unknown-method.png", 10, 99)
    flip_packed_bytes(path, "train/dog/corrupt.bmp")
    images, caught, peak = load_measured(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedImageWarning)]
    assert len(images) == 4 and images.classes == ["cat", "dog"]
    names = [name.rsplit("/", 1)[1] for name in odd] + ODD_ARCHIVE_MEMBERS
    assert len(names) == 25 and len(messages) == len(names)
    for name in names:
        assert sum(f"/{name}: " in m for m in messages) == 1, name
    assert all("\n" not in m for m in messages)
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB"

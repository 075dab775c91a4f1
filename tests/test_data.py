"""resnetkit.data on real, small data: sklearn's digits, CIFAR-format archives built and served here over HTTP on
127.0.0.1, image folders and zips of real PNG/JPEG files (with broken ones among them), the shared CIFAR zip."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import socket
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.data import (
    NAMED_DATASETS,
    Augment,
    AugmentConfig,
    AutoAugment,
    BatchTransform,
    ChecksumError,
    Cifar,
    DatasetNotFoundError,
    DeviceLoader,
    ImageDecodeError,
    ImageFolderDataset,
    ImageSet,
    Mix,
    SkippedImageWarning,
    batch_mix,
    check_dataset,
    decode_image,
    digits_splits,
    download_url,
    eval_transform,
    extract_tar,
    folder_loader,
    index_images,
    load_cifar,
    load_digits,
    load_image_folder,
    random_crop,
    random_flip,
    read_pickle,
    split_indices,
    train_transform,
    train_val_split,
)
from resnetkit.data import cifar as cifar_module
from resnetkit.errors import UnknownNameError, UnknownOptionError

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg-train.zip"


def numbered_set(n: int, num_classes: int = 4, size: int = 4) -> ImageSet:
    """Images whose first two pixels spell their index (``i // 256``, ``i % 256``), for tracking them through a loader."""
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    images[:, 0, 0, 0] = torch.arange(n) // 256
    images[:, 0, 0, 1] = torch.arange(n) % 256
    return ImageSet(images, torch.arange(n) % num_classes, [f"c{k}" for k in range(num_classes)])


def index_of(batch: torch.Tensor) -> torch.Tensor:
    """Recover :func:`numbered_set` indices from batches made with ``BatchTransform()`` (pixels / 255)."""
    pixels = (batch[:, 0, 0, :2] * 255).round().long()
    return pixels[:, 0] * 256 + pixels[:, 1]


# ---------------------------------------------------------------- digits and splits


def test_digits_are_uint8_images_of_ten_classes():
    digits = load_digits()
    assert digits.images.shape == (1797, 1, 8, 8) and digits.images.dtype == torch.uint8
    assert digits.labels.dtype == torch.int64 and digits.classes == [str(d) for d in range(10)]
    assert int(digits.images.min()) == 0 and int(digits.images.max()) == 255
    assert digits.class_counts().min() >= 170


def test_digits_splits_are_stratified_disjoint_and_fixed_by_seed():
    train, val, test = digits_splits(seed=0)
    assert (len(train), len(val), len(test)) == (1259, 179, 359)
    again = digits_splits(seed=0)
    assert all(torch.equal(a.images, b.images) for a, b in zip((train, val, test), again))
    assert not torch.equal(digits_splits(seed=1)[2].labels, test.labels)
    full = load_digits().class_counts().double()
    for part in (train, val, test):  # every class within one image of its proportional share
        expected = full * len(part) / full.sum()
        assert (part.class_counts() - expected).abs().max() <= 1.0


def test_split_indices_partition_every_item_once():
    labels = torch.arange(103) % 7
    for stratify in (None, labels):
        parts = split_indices(103, [0.6, 0.2, 0.2], seed=3, labels=stratify)
        assert [len(p) for p in parts] == [63, 20, 20]
        assert torch.equal(torch.cat(parts).sort().values, torch.arange(103))
        again = split_indices(103, [0.6, 0.2, 0.2], seed=3, labels=stratify)
        assert all(torch.equal(a, b) for a, b in zip(parts, again))
    with pytest.raises(ValueError, match="add up"):
        split_indices(10, [5, 4])


def test_train_val_split_holds_out_the_requested_count():
    data = numbered_set(50)
    train, val = train_val_split(data, 5, seed=0)
    assert (len(train), len(val)) == (45, 5)
    seen = torch.cat([index_of(train.images.float() / 255), index_of(val.images.float() / 255)])
    assert torch.equal(seen.sort().values, torch.arange(50))


# ---------------------------------------------------------------- CIFAR archives, download, checksums


def write_pickle(path: Path, content: dict) -> None:
    path.write_bytes(pickle.dumps(content, protocol=2))  # the official files are protocol-2 pickles


def make_cifar_tarball(directory: Path, which: Cifar) -> tuple[Path, dict[str, np.ndarray]]:
    """A real-format CIFAR archive with a few random images per batch; returns it and the pixels written."""
    spec = cifar_module.CIFAR_FILES[which]
    folder = directory / "build" / spec.folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    num_classes = 10 if which is Cifar.CIFAR10 else 100
    written = {}
    for i, name in enumerate(spec.train + spec.test):
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, num_classes, 3)]
        batch = {"data": data, spec.label_key: labels, "filenames": [f"img{k}.png" for k in range(3)]}
        if i == 0:  # as Python 2 wrote them when read with encoding="bytes": byte-string keys
            batch = {key.encode(): value for key, value in batch.items()}
        write_pickle(folder / name, batch)
        written[name] = data
    write_pickle(folder / spec.meta, {spec.names_key: [f"class{k}" for k in range(num_classes)]})
    archive = directory / spec.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=spec.folder)
    return archive, written


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


def test_download_verifies_md5_and_renames_into_place(server, tmp_path):
    url, www, _ = server
    archive, _ = make_cifar_tarball(www, Cifar.CIFAR10)
    dest = download_url(url + archive.name, tmp_path / "root" / archive.name, md5_of(archive), progress=False)
    assert dest.read_bytes() == archive.read_bytes()
    assert not dest.with_name(dest.name + ".part").exists()


def test_download_with_a_wrong_md5_raises_and_keeps_nothing(server, tmp_path):
    url, www, _ = server
    archive, _ = make_cifar_tarball(www, Cifar.CIFAR10)
    dest = tmp_path / "root" / archive.name
    with pytest.raises(ChecksumError, match="expected 0123"):
        download_url(url + archive.name, dest, "0123" * 8, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_download_resumes_a_partial_file(server, tmp_path):
    url, www, log = server
    archive, _ = make_cifar_tarball(www, Cifar.CIFAR10)
    dest = tmp_path / archive.name
    half = archive.stat().st_size // 2
    dest.with_name(dest.name + ".part").write_bytes(archive.read_bytes()[:half])
    download_url(url + archive.name, dest, md5_of(archive), progress=False)
    assert dest.read_bytes() == archive.read_bytes()
    assert log[-1]["Range"] == f"bytes={half}-"


def test_offline_download_names_the_file_to_place_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETKIT_ALLOW_INSECURE_DOWNLOADS", "1")  # the unreachable address below is plain http
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError) as err:
        load_cifar(root, url_base=f"http://127.0.0.1:{closed_port()}/", progress=False)
    message = str(err.value)
    assert "\n" not in message and "cifar-10-python.tar.gz" in message and str(root) in message
    assert "c58f30108f718f92721af3b95e74349a" in message


def test_missing_cifar_without_download_names_the_file_to_place(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"place cifar-100-python\.tar\.gz .* in " + str(tmp_path)):
        load_cifar(tmp_path, Cifar.CIFAR100, download=False)


def test_cifar_download_rejects_an_archive_with_the_wrong_checksum(server, tmp_path):
    url, www, _ = server
    make_cifar_tarball(www, Cifar.CIFAR10)  # a valid archive, but not the official one: its MD5 differs
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match="c58f30108f718f92721af3b95e74349a"):
        load_cifar(root, url_base=url, progress=False)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("which", [Cifar.CIFAR10, Cifar.CIFAR100])
def test_cifar_downloads_extracts_and_decodes(server, tmp_path, monkeypatch, which):
    url, www, _ = server
    archive, written = make_cifar_tarball(www, which)
    spec = dataclasses.replace(cifar_module.CIFAR_FILES[which], md5=md5_of(archive))  # our archive's checksum
    monkeypatch.setitem(cifar_module.CIFAR_FILES, which, spec)
    root = tmp_path / "root"
    train = load_cifar(root, which.value, url_base=url, progress=False)
    assert train.images.shape == (3 * len(spec.train), 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:3].reshape(3, -1), torch.from_numpy(written[spec.train[0]]))
    assert train.num_classes == (10 if which is Cifar.CIFAR10 else 100) and train.classes[1] == "class1"
    test = load_cifar(root, which, train=False, download=False)  # from the extracted folder, offline
    assert torch.equal(test.images.reshape(3, -1), torch.from_numpy(written[spec.test[0]]))
    assert (root / archive.name).is_file() and not any(p.name.startswith(".extract") for p in root.iterdir())


def test_cifar_pickles_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="open is not allowed"):
        read_pickle(path)
    assert not marker.exists()


def test_extract_refuses_paths_outside_the_root(tmp_path):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises((tarfile.TarError, ValueError)):
        extract_tar(archive, tmp_path / "root", "cifar-10-batches-py")
    assert not (tmp_path / "escaped.txt").exists()


# ---------------------------------------------------------------- image folders and zips


def png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def folder_files() -> dict[str, bytes]:
    """``<class>/<file>`` -> bytes: RGB, grey, RGBA, palette and CMYK images, a truncated JPEG, text named .jpg."""
    rng = np.random.default_rng(0)
    rgb = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    palette = rgb[3].convert("P")
    return {
        "dog/a.png": png(rgb[0]),
        "dog/b.png": png(rgb[1].convert("L")),
        "dog/notes.jpg": b"not an image, despite the name\n",
        "dog/readme.txt": b"labels by hand\n",
        "cat/c.png": png(rgb[2].convert("RGBA")),
        "cat/d.png": png(palette, transparency=0),
        "cat/broken.jpg": jpeg(rgb[4])[:200],
        "bird/e.jpg": jpeg(rgb[5]),
        "bird/f.jpg": jpeg(rgb[5].convert("CMYK")),
        "bird/.DS_Store": b"\0\0",
    }


def expected_pixels(data: bytes) -> torch.Tensor:
    image = Image.open(io.BytesIO(data))
    image = image.convert("RGBA") if image.mode == "P" else image
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], prefix: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(prefix + name, data)
    return path


def load_and_catch(path: Path, **options) -> tuple[ImageSet, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_image_folder(path, progress=False, **options)
    return data, [str(w.message) for w in caught if issubclass(w.category, SkippedImageWarning)]


def check_folder_set(data: ImageSet, messages: list[str], files: dict[str, bytes]) -> None:
    assert data.classes == ["bird", "cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]  # sorted by class, then by name; 2 broken files skipped
    assert data.images.shape == (6, 3, 8, 8)
    good = ["bird/e.jpg", "bird/f.jpg", "cat/c.png", "cat/d.png", "dog/a.png", "dog/b.png"]
    for image, name in zip(data.images, good):
        assert torch.equal(image, expected_pixels(files[name])), name
    assert any("broken.jpg" in m for m in messages) and any("notes.jpg" in m for m in messages)
    assert any("readme.txt" in m for m in messages) and not any("DS_Store" in m for m in messages)


def test_image_folder_converts_modes_and_skips_broken_files(tmp_path, folder_files):
    data, messages = load_and_catch(write_folder(tmp_path / "images", folder_files))
    check_folder_set(data, messages, folder_files)


@pytest.mark.parametrize("prefix, workers", [("train/", 0), ("", 2)])
def test_image_zip_matches_the_folder(tmp_path, folder_files, prefix, workers):
    data, messages = load_and_catch(write_zip(tmp_path / "images.zip", folder_files, prefix), workers=workers)
    check_folder_set(data, messages, folder_files)


def test_image_sizes_must_agree_unless_resized(tmp_path, folder_files):
    files = {**folder_files, "bird/big.png": png(Image.new("RGB", (12, 10), (255, 0, 0)))}
    root = write_folder(tmp_path / "images", files)
    with pytest.raises(ValueError, match="size="), warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        load_image_folder(root, progress=False)
    data, _ = load_and_catch(root, size=16)
    assert data.images.shape == (7, 3, 16, 16)


def test_streaming_loader_decodes_transforms_and_skips(tmp_path, folder_files):
    path = write_zip(tmp_path / "images.zip", folder_files, "train/")
    cfg = AugmentConfig(size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = folder_loader(path, train_transform(cfg), batch_size=4, workers=0, drop_last=False)
        batches = list(loader)
    assert sum(len(y) for _, y in batches) == 6 and loader.skipped == 2  # the 2 broken files left out, not replaced
    assert all(x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in batches)
    assert any("broken.jpg" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        dataset = ImageFolderDataset(path)
        image, label = dataset[dataset.index.files.index("train/cat/broken.jpg")]  # training: replaced by the next
    assert torch.equal(image, expected_pixels(folder_files["cat/c.png"])) and label == 1


def test_a_folder_of_undecodable_files_is_a_user_error(tmp_path):
    """ImageDecodeError is a ValueError: the command line reports it as one line."""
    path = write_zip(tmp_path / "broken.zip", {"dog/a.jpg": b"text", "cat/b.jpg": b"more text"}, "train/")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        with pytest.raises(ImageDecodeError, match="32 files in a row from .*broken.zip:train/cat/b.jpg on cannot be decoded"):
            ImageFolderDataset(path)[0]


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason="shared CIFAR-10 JPEG zip not present")
def test_shared_cifar_zip_layout_and_a_few_images():
    index = index_images(SHARED_ZIP)
    assert len(index) == 50_000 and index.classes[:2] == ["airplane", "automobile"] and len(index.classes) == 10
    assert index.files[0].startswith("train/airplane/")
    for i in (0, 12_345, 49_999):
        image = decode_image(index.read(i))
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert index.labels[49_999] == 9


# ---------------------------------------------------------------- transforms


def test_augment_config_parses_strings_once():
    cfg = AugmentConfig.from_dict({"augment": "imagenet", "auto_augment": "rand", "mix": "mixup_cutmix", "size": 64})
    assert (cfg.augment, cfg.auto_augment, cfg.mix) == (Augment.IMAGENET, AutoAugment.RAND, Mix.BOTH)
    with pytest.raises(ValueError, match="'cifar'"):
        AugmentConfig(augment="cifar10")
    with pytest.raises(UnknownOptionError, match="'paddding'.*; valid: .*padding"):  # also a TypeError
        AugmentConfig.from_dict({"paddding": 4})


def test_per_sample_pipelines_give_normalised_inputs_of_the_model_size():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    cfg = AugmentConfig(augment="imagenet", size=24, auto_augment="trivial", erase_prob=1.0)
    assert train_transform(cfg)(image).shape == (3, 24, 24)
    assert eval_transform(cfg)(Image.fromarray(image.permute(1, 2, 0).numpy())).shape == (3, 24, 24)
    plain = AugmentConfig(augment="none", mean=(0.0,) * 3, std=(1.0,) * 3)
    out = train_transform(plain)(torch.full((3, 32, 32), 255, dtype=torch.uint8))
    assert out.dtype == torch.float32 and torch.equal(out, torch.ones(3, 32, 32))


def test_batch_mix_makes_soft_labels():
    mix = batch_mix(AugmentConfig(mix="mixup"), num_classes=5)
    _, labels = mix(torch.rand(8, 3, 4, 4), torch.arange(8) % 5)
    assert labels.shape == (8, 5) and torch.allclose(labels.sum(1), torch.ones(8))
    assert batch_mix(AugmentConfig(), 5) is None


def test_random_crop_takes_windows_of_the_zero_padded_image():
    images = torch.rand(64, 3, 6, 5) + 1.0  # strictly positive: zeros can only come from the padding
    crops = random_crop(images, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(images)):  # reference: find the window each crop was taken from
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(crops[i], padded[i, :, dy : dy + 6, dx : dx + 5])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 10  # offsets differ per sample
    assert ((crops == 0).sum(dim=(1, 2, 3)) > 0).float().mean() > 0.5  # most crops show some zero border


def test_random_flip_mirrors_some_images_and_keeps_the_others():
    images = torch.rand(32, 1, 3, 4)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(f, x.flip(-1)) for f, x in zip(flipped, images)])
    kept = torch.tensor([torch.equal(f, x) for f, x in zip(flipped, images)])
    assert torch.all(mirrored ^ kept) and 0 < int(mirrored.sum()) < 32


def test_batch_transform_resizes_normalises_and_lays_out():
    digits = load_digits().subset(range(16))
    cfg = AugmentConfig(size=32, flip=False, mean=(0.3,), std=(0.4,))
    out = BatchTransform.from_config(cfg, train=False, channels_last=True)(digits.images)
    assert out.shape == (16, 1, 32, 32) and out.is_contiguous(memory_format=torch.channels_last)
    reference = torch.nn.functional.interpolate(digits.images / 255, size=32, mode="bilinear", antialias=True)
    assert torch.allclose(out, (reference - 0.3) / 0.4, atol=1e-6)
    with pytest.raises(ValueError, match="folder_loader"):
        BatchTransform.from_config(cfg.__class__(augment="imagenet"), train=True)


@pytest.mark.parametrize(
    "options, on_device",
    [({}, True), ({"augment": "none", "mix": "cutmix"}, True), ({"augment": "imagenet"}, False),
     ({"auto_augment": "trivial"}, False), ({"erase_prob": 0.25}, False)],
)  # fmt: skip
def test_batch_transform_says_which_augmentation_it_can_do(options, on_device):
    cfg = AugmentConfig(**options)
    assert BatchTransform.can_augment(cfg) is on_device
    if not on_device:
        with pytest.raises(ValueError, match="folder_loader"):
            BatchTransform.from_config(cfg, train=True)
    BatchTransform.from_config(cfg, train=False)  # evaluation never augments


# ---------------------------------------------------------------- which dataset a recipe names


def test_named_datasets_and_existing_paths_pass_the_check(tmp_path):
    for dataset in (*NAMED_DATASETS, str(tmp_path), str(tmp_path / ".")):
        check_dataset(dataset)  # nothing is read


@pytest.mark.parametrize("path", ["/no/such.zip", "no/such/folder", "such.zip", "./train"])
def test_a_missing_dataset_path_is_named(path):
    with pytest.raises(FileNotFoundError, match=f"^dataset {path} does not exist"):
        check_dataset(path)


def test_a_mistyped_dataset_name_suggests_the_built_in_one():
    with pytest.raises(UnknownNameError) as info:
        check_dataset("cifar-10")
    assert str(info.value).startswith("unknown dataset 'cifar-10'; did you mean cifar10? give digits, cifar10")


# ---------------------------------------------------------------- device loader


def test_device_loader_batches_cover_each_epoch_in_a_new_order():
    loader = DeviceLoader(numbered_set(70), batch_size=16, seed=0)
    epochs = [[(x, y) for x, y in loader] for _ in range(2)]
    assert len(loader) == 5 and [len(y) for _, y in epochs[0]] == [16, 16, 16, 16, 6]
    x, y = epochs[0][0]
    assert x.dtype == torch.float32 and x.shape == (16, 1, 4, 4) and y.dtype == torch.int64
    orders = [torch.cat([index_of(x) for x, _ in epoch]) for epoch in epochs]
    assert all(torch.equal(o.sort().values, torch.arange(70)) for o in orders)
    assert not torch.equal(orders[0], orders[1])
    assert torch.equal(torch.cat([y for _, y in epochs[0]]), orders[0] % 4)  # labels travel with their images
    fixed = DeviceLoader(numbered_set(70), batch_size=16, shuffle=False, drop_last=True)
    assert len(fixed) == 4 and torch.equal(torch.cat([index_of(x) for x, _ in fixed]), torch.arange(64))


def augmenting_loader(seed: int, mix: bool = False) -> DeviceLoader:
    cfg = AugmentConfig(size=16, padding=2, mean=(0.5,), std=(0.5,), mix="cutmix" if mix else "none")
    transform = BatchTransform.from_config(cfg, train=True)
    return DeviceLoader(numbered_set(40), 8, transform, seed=seed, drop_last=True, mix=batch_mix(cfg, 4))


def test_device_loader_is_fixed_by_its_seed():
    first, same, other = ([x for x, _ in loader] for loader in map(augmenting_loader, (0, 0, 1)))
    assert all(torch.equal(a, b) for a, b in zip(first, same))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("mix", [False, True])
def test_device_loader_resumes_mid_epoch_with_the_same_batches(mix):
    reference = augmenting_loader(seed=5, mix=mix)
    stream = [batch for _ in range(3) for batch in reference]  # 3 uninterrupted epochs of 5 batches
    interrupted = augmenting_loader(seed=5, mix=mix)
    for _ in range(7):  # one epoch and two batches, then a "crash" right after a checkpoint
        next(iter(interrupted))
    state = interrupted.state_dict()
    assert state == {"seed": 5, "epoch": 1, "step": 2}
    resumed = augmenting_loader(seed=0, mix=mix)
    resumed.load_state_dict(state)
    rest = [batch for batch in resumed] + [batch for batch in resumed]
    assert len(rest) == len(stream) - 7
    for (x, y), (x_ref, y_ref) in zip(rest, stream[7:]):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)

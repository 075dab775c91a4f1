"""The video clip reader on generated clips: real .mp4 files encoded with PyAV and frame folders of PNGs, sampling
as the papers sample, the same augmentation for every frame, evaluation views, and errors that name the file."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from resnetkit.data.decode import ImageDecodeError
from resnetkit.data.video import (
    Sampling,
    VideoFolder,
    clip_transform,
    count_frames,
    decode_video,
    read_clip_frames,
    sample_indices,
)
from tests.data_tasks.generated import encode

av = pytest.importorskip("av")

SIZE, FRAMES, SQUARE, STEP = 32, 8, 8, 2


def motion_frames(rng: np.random.Generator, right: bool, size: int = SIZE, frames: int = FRAMES) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: a bright square moving ``STEP`` pixels a frame, right or left, on a dark ground.

    Clips of the two directions hold the same sets of frames (a left clip is a right one played backwards), so only
    the order of the frames tells the direction."""
    travel = STEP * (frames - 1)
    x0, y = int(rng.integers(0, size - SQUARE - travel + 1)), int(rng.integers(0, size - SQUARE + 1))
    xs = [x0 + STEP * t for t in range(frames)]
    out = np.full((frames, size, size, 3), 16, dtype=np.uint8)
    for t, x in enumerate(xs if right else xs[::-1]):
        out[t, y : y + SQUARE, x : x + SQUARE] = 235
    return out


def encode_video(frames: np.ndarray) -> bytes:
    """An H.264 .mp4 of ``(T, H, W, 3)`` uint8 frames (near-lossless, 8 fps)."""
    import io

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8, options={"crf": "1"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def motion_dataset(root: Path, n_train: int = 32, n_val: int = 16, frame_folders: bool = False, seed: int = 0) -> Path:
    """``root/{train,val}/{left,right}/<clip>.mp4`` (or ``<clip>/<frame>.png`` folders); each val right clip has
    its left twin (the same frames reversed)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n // 2):
            right = motion_frames(rng, True)
            for label, frames in (("right", right), ("left", right[::-1])):
                if frame_folders:
                    folder = root / split / label / f"{i:03d}"
                    folder.mkdir(parents=True)
                    for t, frame in enumerate(frames):
                        (folder / f"{t:04d}.png").write_bytes(encode(frame))
                else:
                    (root / split / label).mkdir(parents=True, exist_ok=True)
                    (root / split / label / f"{i:03d}.mp4").write_bytes(encode_video(np.ascontiguousarray(frames)))
    return root


def test_uniform_sampling_takes_one_frame_per_segment():
    assert sample_indices(16, 4, Sampling.UNIFORM) == [2, 6, 10, 14]
    assert sample_indices(16, 4, Sampling.UNIFORM, clip=0, clips=2) == [1, 5, 9, 13]
    rng = random.Random(0)
    for _ in range(20):
        picked = sample_indices(16, 4, Sampling.UNIFORM, rng=rng)
        assert [p // 4 for p in picked] == [0, 1, 2, 3]
    assert sample_indices(3, 6, Sampling.UNIFORM) == [0, 0, 1, 1, 2, 2]  # fewer frames than T: repeated


def test_dense_sampling_takes_consecutive_strided_frames():
    assert sample_indices(20, 4, Sampling.DENSE, 2) == [6, 8, 10, 12]  # centred: room 13, start 6
    assert sample_indices(20, 4, Sampling.DENSE, 2, clip=0, clips=3) == [2, 4, 6, 8]
    assert sample_indices(20, 4, Sampling.DENSE, 2, clip=2, clips=3) == [10, 12, 14, 16]
    rng = random.Random(1)
    starts = {sample_indices(20, 4, Sampling.DENSE, 2, rng=rng)[0] for _ in range(200)}
    assert starts == set(range(14))  # every start that fits
    assert sample_indices(5, 4, Sampling.DENSE, 2) == [0, 2, 4, 4]  # short video: the last frame repeated
    with pytest.raises(ValueError, match="frame_stride"):
        sample_indices(5, 4, Sampling.DENSE, 0)


def test_mp4_round_trip_and_partial_decoding():
    frames = motion_frames(np.random.default_rng(0), True)
    data = encode_video(frames)
    assert count_frames(data) == FRAMES
    decoded = decode_video(data)
    assert len(decoded) == FRAMES and decoded[0].shape == (SIZE, SIZE, 3)
    assert np.abs(np.stack(decoded).astype(int) - frames).mean() < 3  # near-lossless
    picked = decode_video(data, [5, 1, 5])
    assert [np.array_equal(p, decoded[i]) for p, i in zip(picked, [5, 1, 5])] == [True] * 3
    with pytest.raises(ImageDecodeError, match="clip.mp4: frame 9 asked for, the video has 8"):
        decode_video(data, [9], "clip.mp4")
    with pytest.raises(ImageDecodeError, match="bad.mp4: not a decodable video"):
        decode_video(b"not a video", None, "bad.mp4")


@pytest.mark.parametrize("frame_folders", [False, True])
def test_folder_reads_clips_and_views(tmp_path, frame_folders):
    root = motion_dataset(tmp_path / "clips", 4, 2, frame_folders)
    train = VideoFolder(str(root), "train", frames=4, sampling="uniform")
    assert train.classes == ["left", "right"] and len(train) == 4 and sorted(train.labels) == [0, 0, 1, 1]
    clip, label = train[0]
    assert label == train.labels[0]
    assert clip.shape == (3, 4, SIZE, SIZE) and clip.dtype == torch.uint8
    val = VideoFolder(str(root), "val", frames=4, train=False, clips=2, transform=clip_transform(False, 24, (0.5,) * 3,
                      (0.5,) * 3, crops=3), classes=train.classes)  # fmt: skip
    views, _ = val[1]
    assert views.shape == (6, 3, 4, 24, 24) and views.dtype == torch.float32
    raw = VideoFolder(str(root), "val", frames=4, sampling="uniform", train=False, clips=2)
    first, member = raw[0][0], root / raw.samples[0][1][0]
    clip_path = member.parent if frame_folders else member
    read = read_clip_frames(clip_path, 4, "uniform", clips=2)  # one video outside a dataset, sampled alike
    assert len(read) == 2 and all(torch.equal(r.transpose(0, 1), f) for r, f in zip(read, first))


def test_folder_in_a_zip_and_errors_name_files(tmp_path):
    root = motion_dataset(tmp_path / "clips", 2, 2)
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*.mp4")):
            z.write(path, f"ucf/{path.relative_to(root)}")
    data = VideoFolder(str(archive), "train", frames=8, sampling="dense")
    assert len(data) == 2 and data[1][0].shape == (3, 8, SIZE, SIZE)
    with pytest.raises(FileNotFoundError, match="no test/ folder"):
        VideoFolder(str(archive), "test")
    with pytest.raises(ValueError, match=r"class folders \['right'\] are not among the classes \['left'\]"):
        VideoFolder(str(root), "val", classes=["left"])
    (root / "train" / "left" / "000.mp4").write_bytes(b"garbage")
    broken = VideoFolder(str(root), "train")
    with pytest.raises(ImageDecodeError, match="000.mp4: not a decodable video"):
        broken[0]


def test_training_augmentation_is_the_same_for_every_frame():
    torch.manual_seed(0)
    still = torch.randint(0, 256, (1, 3, 40, 48), dtype=torch.uint8).expand(6, -1, -1, -1)  # identical frames
    clip = clip_transform(True, 24, (0.0,) * 3, (1.0,) * 3, scale=(0.2, 0.6))(still)
    assert clip.shape == (3, 6, 24, 24)
    assert all(torch.equal(clip[:, 0], clip[:, t]) for t in range(6))

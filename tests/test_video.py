"""rpfm.video: MP4 (H.264) and GIF round trips read back with PyAV, odd sizes, atomic writes, clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from rpfm.video import iter_frames, pad_to_even, read_video, video_fps, write_video

av = pytest.importorskip("av")   # installed by install.sh (the `video` extra); skipped only where it is absent


def _moving_square(n: int, h: int, w: int) -> list[np.ndarray]:
    """Frame i: grey background, a 10x10 red square at column 4 + 3 i, a blue bar along the bottom."""
    frames = []
    for i in range(n):
        f = np.full((h, w, 3), 90, np.uint8)
        f[6:16, 4 + 3 * i:14 + 3 * i] = (230, 20, 20)
        f[-6:, :] = (20, 20, 220)
        frames.append(f)
    return frames


def _square_column(frame: np.ndarray) -> float:
    red = (frame[..., 0].astype(int) - frame[..., 2].astype(int)) > 100
    return float(np.nonzero(red)[1].mean())


def test_mp4_round_trip(tmp_path):
    frames = _moving_square(6, 34, 50)
    path = write_video(tmp_path / "a.mp4", frames, fps=12)
    with av.open(str(path)) as c:           # read back with PyAV directly: a real H.264 / yuv420p stream
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.format.name == "yuv420p"
        assert float(s.average_rate) == 12
    video = read_video(path)
    assert len(video.frames) == 6 and video.size == (34, 50) and video.fps == 12
    for i, (got, want) in enumerate(zip(video.frames, frames)):
        assert np.abs(got.astype(int) - want).mean() < 6          # lossy, but close
        assert abs(_square_column(got) - (8.5 + 3 * i)) < 0.5      # the square moved as drawn, frames in order


def test_mp4_odd_size_is_padded_to_even(tmp_path):
    frames = _moving_square(3, 33, 47)
    video = read_video(write_video(tmp_path / "odd.mp4", frames, fps=5))
    assert video.size == (34, 48)
    assert np.abs(video.frames[0][:33, :47].astype(int) - frames[0]).mean() < 6
    np.testing.assert_array_equal(pad_to_even(frames[0])[33, :47], frames[0][32])   # last row repeated
    np.testing.assert_array_equal(pad_to_even(frames[0])[:33, 47], frames[0][:, 46])


def test_gif_round_trip_is_exact_for_few_colours(tmp_path):
    frames = _moving_square(5, 33, 47)
    path = write_video(tmp_path / "a.gif", frames, fps=10)
    video = read_video(path)                    # decoded by PyAV's GIF decoder
    assert len(video.frames) == 5 and video.size == (33, 47)
    assert video.fps == pytest.approx(10, rel=0.01)
    for got, want in zip(video.frames, frames):
        np.testing.assert_array_equal(got, want)
    with Image.open(path) as im:                # and a second decoder agrees
        assert im.n_frames == 5 and im.info["loop"] == 0 and im.info["duration"] == 100


def test_accepts_pil_float_and_tensor_frames(tmp_path):
    base = _moving_square(1, 16, 16)[0]
    frames = [Image.fromarray(base), base.astype(np.float32) / 255, torch.from_numpy(base).permute(2, 0, 1) / 255.0]
    video = read_video(write_video(tmp_path / "mixed.gif", frames, fps=4))
    for got in video.frames:
        np.testing.assert_array_equal(got, base)


def test_iter_frames_max_frames_and_fps(tmp_path):
    path = write_video(tmp_path / "a.mp4", _moving_square(5, 20, 30), fps=25)
    assert len(list(iter_frames(path, max_frames=2))) == 2
    assert video_fps(path) == 25


def test_write_is_atomic_and_keeps_old_file_on_error(tmp_path):
    path = write_video(tmp_path / "a.gif", _moving_square(2, 16, 16), fps=4)
    before = path.read_bytes()
    bad = _moving_square(1, 16, 16) + _moving_square(1, 18, 16)
    with pytest.raises(ValueError, match=r"frames\[1\].*same size"):
        write_video(path, bad, fps=4)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]     # no temporary files left behind


def test_write_errors(tmp_path):
    frames = _moving_square(2, 16, 16)
    with pytest.raises(ValueError, match=r"\.avi.*\.mp4.*\.gif"):
        write_video(tmp_path / "a.avi", frames)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_video(tmp_path / "missing" / "a.mp4", frames)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "a.mp4", [])
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", frames, fps=0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_video(tmp_path / "a.mp4", [np.zeros((16, 16), np.uint8)])


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_video(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(ValueError, match="junk.mp4"):
        read_video(junk)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4"):
        read_video(empty)
    with pytest.raises(ValueError, match="folder"):
        read_video(tmp_path)

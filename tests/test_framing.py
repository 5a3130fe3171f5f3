"""resize="crop" | "fit" | "stretch": windows around the person, padding, and keypoints framed like their photo."""
import numpy as np
import pytest
import torch

from rpfm.framing import Window, apply_window, check_resize, frame_keypoints, keypoints_box, resize_square, \
    square_window
from rpfm.images import to_image_tensor
from rpfm.pose.keypoints import Keypoints


def test_windows_keep_the_aspect_and_follow_the_person():
    # a portrait photo (H 300, W 200): fit pads the width, crop without a box takes the middle square
    assert square_window(300, 200, "fit") == Window(0, -50, 300)
    assert square_window(300, 200, "crop") == Window(50, 0, 200)
    # a small person near the top: the 200-px square slides up to contain them, and stays inside the photo
    assert square_window(300, 200, "crop", box=(80, 10, 120, 60)) == Window(0, 0, 200)
    assert square_window(300, 200, "crop", box=(80, 240, 120, 290)) == Window(100, 0, 200)
    # a person taller than the photo is wide: the square grows to the person (plus margin) and pads the sides
    w = square_window(300, 200, "crop", box=(50, 20, 150, 280))
    assert w.side == round(260 * 1.2) and w.left < 0 < w.left + w.side - 200 and w.top == (300 - w.side) // 2
    with pytest.raises(ValueError, match="box"):
        square_window(300, 200, "crop", box=(5, 5, 5, 9))


def test_apply_window_pads_photos_with_edges_and_poses_with_black():
    img = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 3, 2, 4) / 24       # H 2, W 4
    out = apply_window(img, Window(-1, 0, 4), pad="replicate")
    assert out.shape == (1, 3, 4, 4)
    torch.testing.assert_close(out[..., 0, :], img[..., 0, :])                         # top row repeated
    torch.testing.assert_close(out[..., 1:3, :], img)
    black = apply_window(img, Window(-1, 0, 4), pad="zeros")
    assert black[..., 0, :].abs().max() == 0 and black[..., 3, :].abs().max() == 0


def test_to_image_tensor_modes():
    photo = np.zeros((40, 20, 3), np.uint8)
    photo[:, :10] = 255                                            # left half white
    stretched = to_image_tensor(photo, size=20, resize=True, value_range="[0,1]")
    assert check_resize(True) == "stretch" and stretched.shape == (1, 3, 20, 20)
    fit = to_image_tensor(photo, size=20, resize="fit", value_range="[-1,1]")          # 40x40 padded -> 20x20
    assert fit[0, :, :, :3].mean() > 0.9 and fit[0, :, :, -3:].mean() < -0.9          # photo edges repeated
    crop = to_image_tensor(photo, size=20, resize="crop", value_range="[0,1]")         # middle 20x20 square
    torch.testing.assert_close(crop, torch.from_numpy(photo[10:30] / 255.0).float().permute(2, 0, 1)[None])
    pose = to_image_tensor(np.full((40, 20, 3), 255, np.uint8), size=20, resize="fit", value_range="[0,1]")
    assert pose[0, :, :, 0].max() == 0                             # rendered poses are padded with black
    with pytest.raises(ValueError, match="resize: expected False, True or one of"):
        to_image_tensor(photo, size=20, resize="squash")


def test_keypoints_follow_their_photo():
    xy = np.full((18, 2), -1.0)
    xy[0], xy[10], xy[13] = (100, 50), (80, 250), (120, 260)     # nose, ankles in a 300 x 200 photo
    kp = Keypoints(xy, (300, 200))
    assert keypoints_box(kp) == (80.0, 50.0, 120.0, 260.0)
    fit = frame_keypoints(kp, 100, "fit")                         # photo padded to 300 x 300: x shifts by 50
    np.testing.assert_allclose(fit.xy[0], ((100 + 50) / 3, 50 / 3))
    stretch = frame_keypoints(kp, 100, None)
    np.testing.assert_allclose(stretch.xy[0], (50, 50 / 3))
    crop = frame_keypoints(kp, 100, "crop")                       # the joints' box, a square around it
    inside = crop.xy[crop.visible_mask()]
    assert (inside >= 0).all() and (inside <= 100).all() and crop.image_size == (100, 100)
    img = resize_square(torch.rand(1, 3, 300, 200), (100, 100), "crop", box=keypoints_box(kp))
    assert img.shape == (1, 3, 100, 100)

"""Poses: OpenPose COCO-18 keypoints, their file formats and frames, and the skeleton renderer (spec §4.3-4.5).

    from rpfm.pose import load_keypoints, render_pose
    kp = load_keypoints("person_keypoints.json", image_size=(256, 256))   # OpenPose, plain JSON, PIDM txt, npy
    pose = render_pose(kp)                                                # float32 (H, W, 3) in [0, 1]
    kp = load_estimator("blazepose")("photo.jpg")      # pose from a photo (pip install "rpfm[pose]"), or None
"""
from __future__ import annotations

from .formats import (load_keypoints, parse_openpose, read_cfld_annotations, read_keypoints_json,
                      read_keypoints_npy, read_openpose_json, read_pidm_txt, write_cfld_annotations,
                      write_keypoints_json, write_keypoints_npy, write_openpose_json, write_pidm_txt)
from .estimate import PoseDetection, PoseEstimator, load_estimator
from .keypoints import JOINT_NAMES, NUM_JOINTS, Keypoints
from .render import JOINT_COLORS, STYLES, draw_skeleton, render_pose

__all__ = [
    "Keypoints", "JOINT_NAMES", "NUM_JOINTS", "JOINT_COLORS", "STYLES", "render_pose", "draw_skeleton",
    "load_keypoints", "parse_openpose", "read_cfld_annotations", "write_cfld_annotations", "read_pidm_txt",
    "write_pidm_txt", "read_openpose_json", "write_openpose_json", "read_keypoints_json", "write_keypoints_json",
    "read_keypoints_npy", "write_keypoints_npy", "PoseEstimator", "PoseDetection", "load_estimator",
]

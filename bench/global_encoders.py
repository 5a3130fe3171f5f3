"""Which offline image encoder should feed the demo's global branches? Size, CPU speed and how discriminative.

On synthetic people drawn with an unused seed (``--identities`` x ``--images`` at 128 x 128):
  * identity retrieval on the photos: for each image, is its nearest other image (cosine on the pooled token,
    and on all tokens flattened) of the same identity? top-1 accuracy (chance = (images - 1) / (all - 1));
  * pose sensitivity on the rendered skeletons: Spearman correlation, over all pairs, between the feature distance
    and the keypoint distance (mean L2 over joints visible in both, in pixels).
Compared: the ImageNet EfficientNet-Lite0 from its wheel at 224 and at 128, the same network randomly
initialised, and raw 16 x 16 pixels as a floor.

    python bench/global_encoders.py --identities 50 --images 4 --threads 1
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from rpfm.data.synthetic import generate_sample
from rpfm.efficientnet_lite import EfficientNetLite
from rpfm.features import EfficientNetLiteExtractor
from rpfm.pose.render import render_pose_tensor


def _ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty_like(x, dtype=np.float64)
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def nn_accuracy(desc: torch.Tensor, labels: np.ndarray) -> float:
    d = torch.nn.functional.normalize(desc.flatten(1).double(), dim=1)
    sim = d @ d.T
    sim.fill_diagonal_(-2)
    nearest = sim.argmax(1).numpy()
    return float((labels[nearest] == labels).mean())


def keypoint_distances(kps: list) -> np.ndarray:
    n = len(kps)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a, b = kps[i].xy, kps[j].xy
            ok = (a[:, 0] >= 0) & (b[:, 0] >= 0)
            out[i, j] = np.linalg.norm(a[ok] - b[ok], axis=1).mean() if ok.any() else np.inf
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--identities", type=int, default=50)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--seed", type=int, default=9137)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    photos, poses, labels, kps = [], [], [], []
    for ident in range(args.identities):
        for k in range(args.images):
            img, kp, _ = generate_sample(args.seed, ident, k, 128)
            photos.append(torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 127.5 - 1)
            poses.append(render_pose_tensor(kp, 128))
            labels.append(ident)
            kps.append(kp)
    photos, poses, labels = torch.stack(photos), torch.stack(poses).float(), np.array(labels)
    if poses.max() > 1.5:
        poses = poses / 255
    kd = keypoint_distances(kps)
    iu = np.triu_indices(len(kps), 1)
    finite = np.isfinite(kd[iu])

    pretrained = EfficientNetLiteExtractor.from_package(value_range="[-1,1]")
    torch.manual_seed(0)
    random_net = EfficientNetLite("lite0")
    encoders = {
        "lite0 ImageNet @224": pretrained,
        "lite0 ImageNet @128": EfficientNetLiteExtractor(pretrained.model, value_range="[-1,1]", image_size=128),
        "lite0 random init @224": EfficientNetLiteExtractor(random_net, value_range="[-1,1]"),
    }
    results = {"conditions": {"identities": args.identities, "images_per_identity": args.images, "size": 128,
                              "seed": args.seed, "threads": args.threads,
                              "chance_top1": (args.images - 1) / (len(labels) - 1)}}
    pixel = torch.nn.functional.interpolate(photos, size=(16, 16), mode="area")
    pose_pixel = torch.nn.functional.interpolate(poses, size=(16, 16), mode="area")
    pd = torch.cdist(pose_pixel.flatten(1), pose_pixel.flatten(1)).numpy()
    results["raw pixels 16x16"] = {"identity_top1": nn_accuracy(pixel, labels),
                                   "pose_spearman": spearman(pd[iu][finite], kd[iu][finite])}
    for name, enc in encoders.items():
        params = sum(t.numel() for t in enc.model.parameters())
        batch = photos[:16]
        enc(batch[:2])                                               # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(2):
            enc(batch)
        ms = (time.perf_counter() - start) / (2 * len(batch)) * 1e3
        cpu_ms = (time.process_time() - cpu) / (2 * len(batch)) * 1e3   # robust to other jobs on the machine
        f_src = torch.cat([enc(photos[i:i + 32]) for i in range(0, len(photos), 32)])
        pose_enc = EfficientNetLiteExtractor(enc.model, value_range="[0,1]", image_size=enc.image_size)
        f_pose = torch.cat([pose_enc(poses[i:i + 32]) for i in range(0, len(poses), 32)])
        fd = 1 - torch.nn.functional.normalize(f_pose[:, 0].double(), dim=1) @ \
            torch.nn.functional.normalize(f_pose[:, 0].double(), dim=1).T
        fd_all = torch.cdist(torch.nn.functional.normalize(f_pose.flatten(1).double(), dim=1),
                             torch.nn.functional.normalize(f_pose.flatten(1).double(), dim=1))
        results[name] = {
            "params": params, "tokens": list(f_src.shape[1:]), "wall_ms_per_image": round(ms, 1),
            "cpu_ms_per_image": round(cpu_ms, 1),
            "identity_top1_pooled": nn_accuracy(f_src[:, 0], labels),
            "identity_top1_all_tokens": nn_accuracy(f_src, labels),
            "pose_spearman_pooled": spearman(fd.numpy()[iu][finite], kd[iu][finite]),
            "pose_spearman_all_tokens": spearman(fd_all.numpy()[iu][finite], kd[iu][finite]),
        }
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

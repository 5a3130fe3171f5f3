"""The paper's DeepFashion recipes (configs/deepfashion/*.json) and ``rpfm assemble``, end to end on a miniature
DeepFashion-layout set (256 x 176 photos, CFLD annotation and pairs CSVs) with tiny random SD-VAE- and
DINOv2-architecture folders: assemble, train two steps with each recipe's settings, export, generate, evaluate."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from transformers import Dinov2Config, Dinov2Model

from rpfm import RPFMPipeline
from rpfm.cli import main
from rpfm.pose.formats import write_cfld_annotations
from rpfm.pose.keypoints import Keypoints

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"rpfm_b2_256": ("RPFM-B/2", 256, 240), "rpfm_l2_256": ("RPFM-L/2", 256, 104),
           "rpfm_b2_512": ("RPFM-B/2-512", 512, 240)}
DEEPFASHION_TRAIN_PAIRS = 101_966


@pytest.fixture(scope="module")
def components(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4
                  ).save_pretrained(root / "sd-vae")
    for name, hidden in (("dinov2-base", 16), ("dinov2-giant", 24)):
        Dinov2Model(Dinov2Config(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, image_size=224, patch_size=14)).save_pretrained(root / name)
    return {"codec": str(root / "sd-vae"), "pose_encoder": str(root / "dinov2-base"),
            "source_encoder": str(root / "dinov2-giant")}


@pytest.fixture(scope="module")
def deepfashion(tmp_path_factory) -> Path:
    """Two people, two photos each per split, 256 x 176 like DeepFashion, in the CFLD/GFLA layout."""
    root = tmp_path_factory.mktemp("deepfashion")
    rng = np.random.default_rng(0)
    base = np.array([[88, 40], [88, 62], [66, 62], [60, 100], [58, 135], [110, 62], [116, 100], [118, 135],
                     [74, 130], [72, 180], [72, 230], [102, 130], [104, 180], [104, 230], [84, 36], [92, 36],
                     [80, 38], [96, 38]], dtype=float)
    for split in ("train", "test"):
        (root / f"{split}_highres").mkdir()
        annotations, names = {}, []
        for person in range(2):
            for view in range(2):
                name = f"{split}_id{person}_{view}.jpg"
                colour = rng.integers(0, 255, 3)
                img = np.full((256, 176, 3), 230, np.uint8)
                img[40:230, 60 + 10 * view:120 + 10 * view] = colour
                Image.fromarray(img).save(root / f"{split}_highres" / name)
                annotations[name] = Keypoints(base + [10 * view, 0], (256, 176))
                names.append(name)
        write_cfld_annotations(root / f"fasion-resize-annotation-{split}.csv", annotations)
        rows = ["from,to"] + [f"{names[2 * p]},{names[2 * p + 1]}" for p in range(2)]
        (root / f"fasion-resize-pairs-{split}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_is_the_papers(name):
    preset, size, batch = RECIPES[name]
    cfg = json.loads((REPO / "configs" / "deepfashion" / f"{name}.json").read_text())
    assert cfg["model"] == preset and cfg["dataset"]["image_size"] == size and cfg["batch_size"] == batch
    assert cfg["lr"] == 1e-4 and cfg["weight_decay"] == 0.0 and cfg["betas"] == [0.9, 0.999]   # AdamW, lr constant
    assert cfg["steps"] == 500 * math.ceil(DEEPFASHION_TRAIN_PAIRS / batch)                      # 500 epochs
    from rpfm.train.config import from_dict

    from_dict(cfg)   # a valid TrainConfig as shipped


def test_assemble_adapts_the_preset_to_the_components(components, tmp_path, capsys):
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"image_size": 64, "hidden_size": 32, "depth": 1, "num_heads": 2}))
    assert main(["assemble", "--codec", components["codec"], "--pose-encoder", components["pose_encoder"],
                 "--source-encoder", components["source_encoder"], "--config", str(tiny),
                 "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "pose_feature_dim 768 -> 16" in err and "source_feature_dim 1536 -> 24" in err
    pipe = RPFMPipeline.from_pretrained(tmp_path / "p")
    assert (pipe.config.pose_feature_dim, pipe.config.source_feature_dim) == (16, 24)
    assert main(["assemble", "--codec", components["codec"], "--config", str(tiny),
                 "--out", str(tmp_path / "q")]) == 2
    assert "--pose-encoder: the model uses the global_pose branch" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_trains_two_steps_end_to_end(name, components, deepfashion, tmp_path, capsys):
    cfg = json.loads((REPO / "configs" / "deepfashion" / f"{name}.json").read_text())
    # The recipe as shipped, with the model shrunk (same preset, image size and branches), the local tiny
    # component folders and the miniature data set, two steps of batch 2 on the CPU.
    cfg.update(model={"preset": cfg["model"], "depth": 1, "hidden_size": 32, "num_heads": 2,
                      "pose_feature_dim": 16, "source_feature_dim": 24},
               **components, out_dir=str(tmp_path / "run"), batch_size=2, steps=2, ckpt_every=2, log_every=1,
               sample_every=0, num_workers=0, progress=False, device="cpu")
    cfg["dataset"]["root"] = str(deepfashion)
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "run.json")]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 0
    size = cfg["dataset"]["image_size"]
    assert RPFMPipeline.from_pretrained(tmp_path / "model").config.image_size == size
    # The CFLD evaluation protocol on the test split: metrics in the 256 x 176 frame (FID off: no weights here).
    assert main(["eval", "--model", str(tmp_path / "model"), "--data", str(deepfashion), "--out",
                 str(tmp_path / "eval"), "--steps", "2", "--guidance", "1.1", "--metric-size", "256x176",
                 "--fid", "off"]) == 0
    assert "eval: generating" in capsys.readouterr().err           # a progress bar while it generates
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(list((tmp_path / "eval" / "images").glob("*.png"))) == 2
    assert "ssim" in json.dumps(metrics).lower()

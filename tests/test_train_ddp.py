"""torchrun + DDP on CPU (gloo): 2 ranks x batch b train exactly like 1 rank x batch 2b (float tolerance)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rpfm.fileio import load_tensors
from rpfm.train.logs import read_log
from rpfm.train.trainer import train

from .test_train_loop import tiny_config

CHILD = """
import json, sys
from rpfm.train.config import from_dict
from rpfm.train.trainer import train
train(from_dict(json.loads(open(sys.argv[1]).read())))
"""


@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_the_global_batch(tmp_path):
    # Global batch 8 (4 per rank), 16 items: step 3 starts the second epoch. AdamW's first update is ~lr * sign(g),
    # so compare the moments (exp_avg = (1 - beta1) g after step 1), the losses and the gradient norms too.
    common = dict(batch_size=8, steps=3, ckpt_every=3, cond_drop=0.5)
    single = train(tiny_config(tmp_path, run="single", **common))

    cfg = tiny_config(tmp_path, run="ddp", **common)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "child.py").write_text(CHILD)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "child.py"), str(tmp_path / "cfg.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    one, two = read_log(Path(single.out_dir) / "log.jsonl"), read_log(Path(cfg.out_dir) / "log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3], "only rank 0 logs"
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)

    state = json.loads((Path(cfg.out_dir) / "checkpoints" / "step_00000003" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["consumed_batches"] == 3
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_tensors(Path(single.checkpoint) / name)
        b = load_tensors(Path(cfg.out_dir) / "checkpoints" / "step_00000003" / name)
        assert a.keys() == b.keys()
        for k in a:
            if name == "optimizer.safetensors":     # gradient moments: linear in the averaged gradients
                atol = 1e-4 * float(a[k].abs().max())
            else:                                   # Adam normalises g / sqrt(v): near-zero gradients (adaLN-Zero
                atol = 1e-2 * cfg.lr                # weights) amplify summation-order noise, up to ~lr per step
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=atol, msg=f"{name}:{k}")
    rng = load_tensors(Path(cfg.out_dir) / "checkpoints" / "step_00000003" / "rng.safetensors")
    assert set(rng) == {"flow", "codec.rank0", "codec.rank1"}

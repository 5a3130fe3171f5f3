"""Exact resume: a run killed with SIGKILL at a random step and resumed from its last checkpoint repeats the
uninterrupted run bit for bit (CPU, fp32); damaged checkpoints fail clearly and leave the previous one usable."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rpfm.fileio import load_tensors
from rpfm.train import checkpoint as ckpt_mod
from rpfm.train.logs import read_log
from rpfm.train.trainer import Trainer, train

from .test_train_loop import losses, tiny_config

# The child trains with a short sleep per step so that the parent can kill it mid-run.
CHILD = """
import json, sys, time
from rpfm.train.config import from_dict
from rpfm.train.trainer import Trainer

class Slow(Trainer):
    def train_step(self, batches):
        time.sleep(0.04)
        return super().train_step(batches)

Slow(from_dict(json.loads(open(sys.argv[1]).read()))).fit()
"""


def _files(ckpt: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_tensors(ckpt / name) for name in ckpt_mod.TENSOR_FILES}


def test_sigkill_at_a_random_step_then_resume_is_exact(tmp_path):
    steps, every = 12, 3
    reference = train(tiny_config(tmp_path, run="reference", steps=steps, ckpt_every=every))
    expected = losses(reference.out_dir)

    cfg = tiny_config(tmp_path, run="killed", steps=steps, ckpt_every=every)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "child.py").write_text(CHILD)
    kill_after = random.randint(every + 1, steps - 2)          # at least one checkpoint written before the kill
    proc = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "cfg.json")],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = Path(cfg.out_dir) / "log.jsonl"
    deadline = time.monotonic() + 120
    try:
        while max((r["step"] for r in read_log(log)), default=0) < kill_after:
            assert proc.poll() is None, f"child exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(r["step"] for r in read_log(log))
    assert killed_at < steps, "the child finished before it was killed"
    last = ckpt_mod.find_latest(Path(cfg.out_dir) / "checkpoints")
    resumed_from = ckpt_mod.load_checkpoint(last).step
    assert every <= resumed_from <= killed_at

    result = train(cfg.replace(resume=True))
    assert result.step == steps
    got = losses(cfg.out_dir)
    assert sorted(got) == list(range(1, steps + 1)), "the log holds one trajectory after resume"
    after = {s: got[s] for s in got if s > resumed_from}
    assert after == {s: expected[s] for s in after}, (
        f"killed at step {killed_at}, resumed from {resumed_from}: losses differ")
    assert got == expected
    # The final state (weights, EMA, optimizer moments, generators) is identical too.
    a, b = _files(Path(reference.checkpoint)), _files(Path(result.checkpoint))
    for name in a:
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}:{k}"


def test_truncated_or_corrupted_checkpoint_is_named_and_the_previous_one_loads(tmp_path):
    cfg = tiny_config(tmp_path, steps=6, ckpt_every=3)
    train(cfg)
    expected = losses(cfg.out_dir)
    root = Path(cfg.out_dir) / "checkpoints"
    newest, previous = root / "step_00000006", root / "step_00000003"

    model_file = newest / "model.safetensors"
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt_mod.CheckpointError, match=r"step_00000006/model.safetensors' is truncated.*"
                                                        r"previous checkpoint '.*step_00000003' is untouched"):
        ckpt_mod.load_checkpoint(root)
    with pytest.raises(ckpt_mod.CheckpointError, match="model.safetensors' is truncated"):
        Trainer(cfg.replace(resume=True))
    assert ckpt_mod.load_checkpoint(previous).step == 3

    model_file.write_bytes(data)                                  # same size, one byte flipped elsewhere
    ema_file = newest / "ema.safetensors"
    ema = bytearray(ema_file.read_bytes())
    ema[-5] ^= 0xFF
    ema_file.write_bytes(bytes(ema))
    with pytest.raises(ckpt_mod.CheckpointError, match="ema.safetensors' is corrupted"):
        ckpt_mod.load_checkpoint(newest)

    (newest / "trainer_state.json").write_text("{")
    with pytest.raises(ckpt_mod.CheckpointError, match="not valid JSON.*step_00000003' is untouched"):
        ckpt_mod.load_checkpoint(newest)

    # Resuming explicitly from the previous checkpoint repeats steps 4..6 exactly.
    train(cfg.replace(resume=str(previous)))
    assert losses(cfg.out_dir) == expected


def test_a_folder_without_its_state_file_is_not_a_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, steps=6, ckpt_every=3)
    train(cfg)
    root = Path(cfg.out_dir) / "checkpoints"
    (root / "step_00000006" / "trainer_state.json").unlink()     # as if the write had died before its last file
    assert ckpt_mod.find_latest(root).name == "step_00000003"
    assert Trainer(cfg.replace(resume=True)).step == 3

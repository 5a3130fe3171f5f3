"""rpfm bench / rpfm.speed: the paper's speed protocol on tiny models (CPU): report structure, that the configured
number of runs and steps really ran, per-stage times that add up to the total, bad input."""
from __future__ import annotations

import json
import time

import pytest
import torch

from rpfm import RPFMPipeline
from rpfm.cli import main
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config
from rpfm.model import RPFM
from rpfm.speed import STAGES, SpeedProtocol, bench_variant, variant_spec

from .conftest import randomize


def tiny_pipeline() -> RPFMPipeline:
    return RPFMPipeline(randomize(RPFM(demo_config()), std=0.02), PixelCodec(downsample=4))


def test_protocol_runs_what_it_says(tmp_path):
    """Counted independently: every warm-up and timed run makes `steps` batched CFG velocity calls on 2B samples."""
    calls = []

    def make(device, dtype):
        pipe = tiny_pipeline()
        original = pipe.model.velocity

        def counting(x, t, cond):
            calls.append(x.shape[0])
            return original(x, t, cond)

        pipe.model.velocity = counting
        return pipe

    protocol = SpeedProtocol(batch=2, steps=3, guidance=1.5, warmup=2, runs=3)
    t0 = time.perf_counter()
    r = bench_variant(make, "ours", protocol, torch.device("cpu"))
    wall_ms = (time.perf_counter() - t0) * 1e3
    # (warm-up + timed runs + the untimed run that measures peak memory) x steps, CFG batch 2 x 2
    assert calls == [4] * (3 * (2 + 3 + 1))
    assert r["variant"] == "ours-fp32" and r["dtype"] == "float32" and r["image_size"] == 64
    totals = r["total_ms"]["runs"]
    assert len(totals) == 3 and all(t > 0 for t in totals) and sum(totals) < wall_ms
    assert r["total_ms"]["min"] <= r["total_ms"]["mean"] <= r["total_ms"]["max"]
    for i, total in enumerate(totals):
        stage_sum = sum(r["stages_ms"][s]["runs"][i] for s in STAGES)
        assert stage_sum == pytest.approx(total, rel=0.02, abs=0.5)
    assert all(r["stages_ms"][s]["mean"] > 0 for s in STAGES)
    assert r["condition_ms"]["mean"] == pytest.approx(r["stages_ms"]["encode"]["mean"]
                                                      + r["stages_ms"]["features"]["mean"])
    assert r["backends"]["sampler"] == "eager-euler" and r["backends"]["attention"]


def test_rpfm_bench_cli_writes_the_report(tmp_path, capsys):
    tiny_pipeline().save_pretrained(tmp_path / "model")
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tmp_path / "model"), "--batch", "2", "--steps", "2", "--warmup", "1",
                 "--runs", "3", "--device", "cpu", "--variants", "ours,eager-fp32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == {"batch": 2, "steps": 2, "guidance": 1.1, "warmup": 1, "runs": 3, "solver": "euler",
                                  "seed": 0, "stream_frames": 0, "stream_steps": 10}
    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["device_type"] == "cpu" and env["device"].startswith("CPU")
    assert [r["variant"] for r in report["results"]] == ["ours-fp32", "eager-fp32"]
    assert report["results"][1]["backends"]["attention"] == "math"          # eager reference everywhere
    for r in report["results"]:
        assert set(r["stages_ms"]) == set(STAGES) and r["total_ms"]["std"] >= 0
        mem = r["peak_memory_mb"]
        assert mem["kind"].startswith("peak RSS") and mem["whole"] == max(mem[s] for s in STAGES) > 10
    table = capsys.readouterr().out
    assert "peak memory MiB" in table
    assert "| ours-fp32 |" in table and "batch 2" in table and report["table"] in table


@pytest.mark.parametrize("argv, match", [
    (["--variants", "fast-fp32"], "variant: expected KIND"),
    (["--variants", "ours-int8"], "variant: expected KIND"),
    (["--runs", "0"], "runs: expected an int >= 1"),
    (["--solver", "rk4"], "solver"),
    (["--preset", "RPFM-Q/2"], "--preset: unknown name"),
])
def test_rpfm_bench_bad_input(argv, match, capsys):
    assert main(["bench", "--device", "cpu", *argv]) == 2
    assert match in capsys.readouterr().err


def test_variant_names():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert variant_spec("ours", cpu).dtype == torch.float32 and variant_spec("ours", cuda).dtype == torch.bfloat16
    spec = variant_spec("compile-bf16", cpu)
    assert spec.compile and spec.eager_ops and spec.sampler_backend == "eager" and spec.name == "compile-bf16"
    assert variant_spec("ours-bf16", cpu).sampler_backend == "auto"


@pytest.mark.slow
def test_bench_protocol_script_uses_the_same_core(tmp_path):
    """bench/protocol.py: random-weight preset with SD-VAE and DINOv2 stand-ins (the features stage does real work),
    two variants, streaming."""
    from bench.protocol import main as protocol_main

    out = tmp_path / "p.json"
    assert protocol_main(["--device", "cpu", "--batch", "1", "--steps", "1", "--runs", "1", "--warmup", "0",
                          "--stream-frames", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["variant"] for r in report["results"]] == ["eager-fp32", "ours-fp32"]
    assert report["model"] == "preset tiny (random weights)"
    for r in report["results"]:
        assert r["stages_ms"]["features"]["mean"] > 0 and r["stream_fps"] > 0 and r["first_run_s"] > 0

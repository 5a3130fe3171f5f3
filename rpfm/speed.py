"""The speed protocol of the RPFM paper (Table 3, after X-MDPT) as a library and as ``rpfm bench``.

Protocol: a batch of 8 source/pose pairs at the model's size, ``steps`` Euler steps (60 in the paper), guidance 1.1
(classifier-free guidance doubles the batch inside the sampler), warm-up runs, then 10 timed runs of the *whole*
pipeline, reported as mean ± std (population std) in milliseconds, with a per-stage breakdown:

  encode    latent codec: encode the source image and the rendered pose (SD-VAE encoder, twice)
  features  global features (DINOv2-B on the pose, DINOv2-G on the source) and the condition aggregation
  sample    the sampler loop (NFE velocity evaluations; the CUDA-graph sampler on GPUs)
  decode    latent codec: decode the result

``condition`` = encode + features (what the pipeline computes once per sample). Each timed run synchronises the
device between stages (a few microseconds on a GPU), so the stages add up to the run's total. Also recorded:
the device name, torch/CUDA versions, the backend of every op and the sampler, the load time and the first
(warm-up) call, and optionally streaming frames/s (batch 1, the source cached, ``pipe.stream``).

Variants (``variant_spec``): ``ours`` (auto backends and sampler; bf16 on CUDA, fp32 on CPU), ``ours-fp32``,
``ours-bf16``, ``eager-fp32``, ``eager-bf16`` (every op on its eager reference, Python sampler loop),
``compile-bf16`` / ``compile-fp32`` (eager ops, ``torch.compile(mode="max-autotune")`` of the velocity network).

``rpfm bench`` times a pipeline folder (default: the shipped demo release) or a preset with random weights
(timing does not depend on the weights; ``--preset RPFM-B/2`` builds random full-size SD-VAE and DINOv2-B/G
encoders); ``bench/protocol.py`` runs several variants through the same code.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

STAGES = ("encode", "features", "sample", "decode")
DTYPE_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VARIANT_KINDS = ("ours", "eager", "compile")


@dataclass(frozen=True)
class SpeedProtocol:
    """What one measurement does (defaults: the paper's protocol)."""

    batch: int = 8
    steps: int = 60
    guidance: float = 1.1
    warmup: int = 2
    runs: int = 10
    solver: str = "euler"
    seed: int = 0
    stream_frames: int = 0          # 0: no streaming measurement
    stream_steps: int = 10

    def __post_init__(self) -> None:
        for name, low in (("batch", 1), ("steps", 1), ("warmup", 0), ("runs", 1), ("stream_frames", 0),
                          ("stream_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}.")
        if not self.guidance >= 0:
            raise ValueError(f"guidance: expected a scale >= 0, got {self.guidance!r}.")
        from .samplers import SOLVERS

        if self.solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {list(SOLVERS)}, got {self.solver!r}.")


@dataclass(frozen=True)
class VariantSpec:
    name: str
    dtype: torch.dtype
    eager_ops: bool                 # every op on its eager reference (use_backend("*", "eager"))
    sampler_backend: str            # "auto" (graph sampler where available) or "eager"
    compile: bool


def variant_spec(variant: str, device: torch.device) -> VariantSpec:
    """Parse "ours", "ours-fp32", "eager-bf16", "compile-bf16", ... (see the module docstring)."""
    kind, _, dt = variant.partition("-")
    if kind not in VARIANT_KINDS or (dt and dt not in DTYPE_NAMES):
        raise ValueError(f"variant: expected KIND or KIND-DTYPE with KIND in {list(VARIANT_KINDS)} and DTYPE in "
                         f"{list(DTYPE_NAMES)} (e.g. ours, eager-fp32, compile-bf16), got {variant!r}.")
    if not dt:
        dt = "bf16" if device.type == "cuda" else "fp32"
    return VariantSpec(name=f"{kind}-{dt}", dtype=DTYPE_NAMES[dt], eager_ops=kind != "ours",
                       sampler_backend="auto" if kind == "ours" else "eager", compile=kind == "compile")


@contextmanager
def variant_backends(spec: VariantSpec):
    """The op-backend override of a variant (eager references for eager/compile variants)."""
    from .ops import use_backend

    with use_backend("*", "eager") if spec.eager_ops else nullcontext():
        yield


# ---------------------------------------------------------------------------------------------------- pipelines
def random_encoders(full_size: bool, device: torch.device, dtype: torch.dtype):
    """Random-initialised SD-VAE, DINOv2-B and DINOv2-G (real architectures) or tiny stand-ins (for tiny_config)."""
    from diffusers import AutoencoderKL
    from transformers import Dinov2Config, Dinov2Model

    from .codec import SDVAECodec
    from .features import GlobalFeatureExtractor

    if full_size:
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=256, norm_num_groups=32)
        dino_b = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, image_size=518, patch_size=14)
        dino_g = Dinov2Config(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24,
                              intermediate_size=6144, image_size=518, patch_size=14, use_swiglu_ffn=True)
    else:
        vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=64, norm_num_groups=8)
        dino_b = Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                              image_size=224, patch_size=14)
        dino_g = Dinov2Config(hidden_size=40, num_hidden_layers=1, num_attention_heads=2, intermediate_size=80,
                              image_size=224, patch_size=14)
    codec = SDVAECodec(vae)
    return (codec.to(device, dtype), GlobalFeatureExtractor(Dinov2Model(dino_b)).to(device, dtype),
            GlobalFeatureExtractor(Dinov2Model(dino_g)).to(device, dtype))


def random_pipeline(preset: str, device: torch.device, dtype: torch.dtype, *, seed: int = 0):
    """A pipeline of preset ``preset`` ("tiny" or a name of ``rpfm.config.PRESETS``) with N(0, 0.02) weights (the
    adaLN-Zero initialisation would make the network output zeros) and random encoders of the real sizes."""
    from .config import get_preset, tiny_config
    from .model import RPFM
    from .pipeline import RPFMPipeline

    cfg = tiny_config() if preset == "tiny" else get_preset(preset)
    torch.manual_seed(seed)
    model = RPFM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    codec, pose_enc, src_enc = random_encoders(preset != "tiny", device, dtype)
    return RPFMPipeline(model, codec, pose_enc, src_enc).to(device, dtype)


def prepare(pipe, spec: VariantSpec, device: torch.device):
    """Move ``pipe`` to the variant's device and dtype, resolve its backends under the variant's override, and
    compile the velocity network for compile variants."""
    pipe.to(device, spec.dtype)
    with variant_backends(spec):
        pipe.model.reset_backends()
        pipe.model.opset(device, spec.dtype)               # resolved now, under the override, never per step
    if spec.compile:
        pipe.model.velocity = torch.compile(pipe.model.velocity, mode="max-autotune", dynamic=False)
    return pipe


# ---------------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(pipe, src: torch.Tensor, pose: torch.Tensor, protocol: SpeedProtocol, *, sampler_backend: str,
             device: torch.device, memory: dict[str, float] | None = None) -> tuple[dict[str, float], str]:
    """One generation of the whole batch: ({stage: ms, "total": ms}, sampler name).

    src: (B, 3, S, S) in [-1, 1], pose: (B, 3, S, S) in [0, 1], on the pipeline's device and dtype. ``memory``, if
    given, receives each stage's peak memory in MiB (``rpfm.memory.PeakMemory``).
    """
    from .memory import PeakMemory

    cfg = pipe.config
    tracker = PeakMemory(device) if memory is not None else None
    if tracker is not None:
        tracker.start()
    marks = [time.perf_counter()]

    def mark() -> None:
        sync(device)
        marks.append(time.perf_counter())
        if tracker is not None:
            memory[STAGES[len(marks) - 2]] = tracker.peak_mb()
            memory["kind"] = tracker.kind
            tracker.start()

    with torch.no_grad():
        z_s = pipe.codec.encode(src)
        z_p = pipe.codec.encode(pose * 2 - 1)
        mark()
        f_pose = pipe.pose_encoder(pose) if "global_pose" in cfg.branches else None
        f_src = pipe.source_encoder(src) if "global_source" in cfg.branches else None
        cond = pipe.model.prepare_condition(z_s=z_s, z_p=z_p, f_pose=f_pose, f_src=f_src)
        mark()
        x1 = pipe.prepare_noise(src.shape[0], torch.Generator().manual_seed(protocol.seed))
        x0, _, sampler = pipe._sample(cond, x1, num_steps=protocol.steps, guidance_scale=protocol.guidance,
                                      solver=protocol.solver, sampler_backend=sampler_backend, atol=1e-5, rtol=1e-5)
        mark()
        pipe.codec.decode(x0)
        mark()
    times = {name: (b - a) * 1e3 for name, a, b in zip(STAGES, marks[:-1], marks[1:])}
    times["total"] = (marks[-1] - marks[0]) * 1e3
    return times, sampler


def summarize(values: list[float]) -> dict[str, Any]:
    """mean, population std, median, min, max and the raw values (ms)."""
    return {"mean": statistics.mean(values), "std": statistics.pstdev(values), "median": statistics.median(values),
            "min": min(values), "max": max(values), "runs": list(values)}


def inputs(pipe, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random sources in [-1, 1] and poses in [0, 1], (B, 3, S, S) (timing does not depend on content)."""
    size = pipe.config.image_size
    g = torch.Generator().manual_seed(1)
    src = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    pose = torch.rand(batch, 3, size, size, generator=g)
    return src.to(device, pipe.dtype), pose.to(device, pipe.dtype)


def streaming(pipe, src: torch.Tensor, pose: torch.Tensor, protocol: SpeedProtocol, *, sampler_backend: str,
              device: torch.device) -> dict[str, float]:
    """Batch 1 through ``pipe.stream``: the source work is cached once; per frame the pose branch, sampler, decoder."""
    streamer = pipe.stream(src[:1], num_steps=protocol.stream_steps, guidance_scale=protocol.guidance,
                           output_type="pt", sampler_backend=sampler_backend,
                           generator=torch.Generator().manual_seed(protocol.seed))
    for _ in range(3):
        streamer(pose[:1])
    sync(device)
    t0 = time.perf_counter()
    for _ in range(protocol.stream_frames):
        streamer(pose[:1])
    sync(device)
    dt = (time.perf_counter() - t0) / protocol.stream_frames
    return {"stream_fps": 1.0 / dt, "stream_ms_per_frame": dt * 1e3, "stream_steps": protocol.stream_steps}


def bench_variant(make_pipeline: Callable[[torch.device, torch.dtype], Any], variant: str, protocol: SpeedProtocol,
                  device: torch.device) -> dict[str, Any]:
    """Build a pipeline with ``make_pipeline(device, dtype)``, prepare it for ``variant``, warm up, and time
    ``protocol.runs`` runs (the first call counts as a warm-up run). Returns {"variant", "dtype", "load_s",
    "first_run_s", "total_ms": summary, "stages_ms": {stage: summary}, "condition_ms": summary, "backends", ...}
    (summaries from :func:`summarize`, in ms)."""
    spec = variant_spec(variant, device)
    t_load = time.perf_counter()
    pipe = prepare(make_pipeline(device, spec.dtype), spec, device)
    load_s = time.perf_counter() - t_load
    src, pose = inputs(pipe, protocol.batch, device)
    runs: list[dict[str, float]] = []
    with variant_backends(spec):
        t_first = time.perf_counter()
        _, sampler = run_once(pipe, src, pose, protocol, sampler_backend=spec.sampler_backend, device=device)
        first_run_s = time.perf_counter() - t_first
        for _ in range(max(0, protocol.warmup - 1)):          # the first call counts as one warm-up run
            run_once(pipe, src, pose, protocol, sampler_backend=spec.sampler_backend, device=device)
        for _ in range(protocol.runs):
            times, sampler = run_once(pipe, src, pose, protocol, sampler_backend=spec.sampler_backend, device=device)
            runs.append(times)
        memory: dict[str, Any] = {}      # one more run, measuring peak memory per stage (not timed)
        run_once(pipe, src, pose, protocol, sampler_backend=spec.sampler_backend, device=device, memory=memory)
        stream = (streaming(pipe, src, pose, protocol, sampler_backend=spec.sampler_backend, device=device)
                  if protocol.stream_frames else {})
    result = {
        "variant": spec.name, "dtype": str(spec.dtype).replace("torch.", ""), "load_s": load_s,
        "first_run_s": first_run_s, "image_size": pipe.config.image_size,
        "total_ms": summarize([r["total"] for r in runs]),
        "stages_ms": {s: summarize([r[s] for r in runs]) for s in STAGES},
        "condition_ms": summarize([r["encode"] + r["features"] for r in runs]),
        "backends": {**pipe.model.opset(device, spec.dtype).names, "sampler": sampler}, **stream,
        "peak_memory_mb": {**{s: round(memory[s], 1) for s in STAGES},
                           "whole": round(max(memory[s] for s in STAGES), 1), "kind": memory["kind"]},
    }
    del pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------------- report
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, versions and the compiled extension's state: what a timing needs next to it."""
    from . import __version__, _ext

    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "rpfm": __version__,
            "rpfm_ext": "built" if _ext.HAS_EXT else f"unavailable ({_ext.EXT_REASON})",
            "rpfm_ext_cuda": _ext.has_cuda()}


def markdown(report: dict[str, Any]) -> str:
    """The results as a Markdown table (mean ± std ms per stage), with the device and protocol above it."""
    env, proto, results = report["environment"], report["protocol"], report["results"]
    ref = results[0]["total_ms"]["mean"]
    stream = any("stream_fps" in r for r in results)
    lines = [f"{report['model']}; {env['device']}; torch {env['torch']}; batch {proto['batch']}, "
             f"{results[0]['image_size']}x{results[0]['image_size']}, {proto['steps']} {proto['solver']} steps, "
             f"guidance {proto['guidance']}; mean ± std of {proto['runs']} timed runs after {proto['warmup']} "
             "warm-up", "",
             "| variant | whole pipeline ms | vs first | VAE encode | features | condition | sampling | VAE decode |"
             + (" stream fps |" if stream else "") + " sampler | peak memory MiB (encode / features / sampling / "
             "decode) |",
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if stream else "")]

    def ms(s: dict) -> str:
        return f"{s['mean']:.1f} ± {s['std']:.1f}"

    for r in results:
        st = r["stages_ms"]
        lines.append(f"| {r['variant']} | {ms(r['total_ms'])} | {ref / r['total_ms']['mean']:.2f}x | "
                     f"{ms(st['encode'])} | {ms(st['features'])} | {ms(r['condition_ms'])} | {ms(st['sample'])} | "
                     f"{ms(st['decode'])} |" + (f" {r.get('stream_fps', float('nan')):.1f} |" if stream else "")
                     + f" {r['backends']['sampler']} | {_memory_cell(r)} |")
    kinds = sorted({r["peak_memory_mb"]["kind"] for r in results if "peak_memory_mb" in r})
    if kinds:
        lines += ["", f"Peak memory: {', '.join(kinds)} (see rpfm.memory)."]
    return "\n".join(lines)


def _memory_cell(r: dict[str, Any]) -> str:
    mem = r.get("peak_memory_mb")
    if not mem:
        return "-"
    return f"{mem['whole']:.0f} ({' / '.join(f'{mem[s]:.0f}' for s in STAGES)})"


def run_protocol(make_pipeline: Callable[[torch.device, torch.dtype], Any], variants: list[str],
                 protocol: SpeedProtocol, device: torch.device, *, model: str,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every variant through :func:`bench_variant`; the report dict (environment, protocol, results, table)."""
    if not variants:
        raise ValueError("variants: expected at least one variant, got none.")
    for v in variants:
        variant_spec(v, device)                               # refuse a bad name before any timing
    results = []
    for v in variants:
        if log:
            log(f"{v} ...")
        results.append(bench_variant(make_pipeline, v, protocol, device))
    report = {"model": model, "environment": environment(device), "protocol": asdict(protocol),
              "results": results}
    report["table"] = markdown(report)
    return report


# ---------------------------------------------------------------------------------------------------- CLI
def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from .cli_support import device as _device
    from .fileio import atomic_write_json, check_output_file

    if args.model and args.preset:
        raise ValueError("--model and --preset: give one (a pipeline folder, or a preset with random weights).")
    if args.out:
        check_output_file(args.out, "--out")
    device = _device(args.device)
    protocol = SpeedProtocol(batch=args.batch, steps=args.steps, guidance=args.guidance, warmup=args.warmup,
                             runs=args.runs, solver=args.solver, seed=args.seed, stream_frames=args.stream_frames,
                             stream_steps=args.stream_steps)
    if args.preset:
        from .config import PRESETS

        if args.preset != "tiny" and args.preset not in PRESETS:
            raise ValueError(f"--preset: unknown name {args.preset!r}. Choose tiny or one of {sorted(PRESETS)}.")
        model = f"preset {args.preset} (random weights)"

        def make(dev, dtype):
            return random_pipeline(args.preset, dev, dtype, seed=args.seed)
    elif args.model:
        from .pipeline import RPFMPipeline

        model = f"pipeline {args.model}"

        def make(dev, dtype):
            return RPFMPipeline.from_pretrained(args.model, device=dev, dtype=dtype)
    else:
        from .demo import ASSET_DIR, load_release

        model = f"demo release {ASSET_DIR.name}"

        def make(dev, dtype):
            return load_release()[0]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    report = run_protocol(make, variants, protocol, device, model=model,
                          log=lambda m: print(f"rpfm bench: {m}", file=sys.stderr, flush=True))
    if args.out:
        atomic_write_json(args.out, report)
    print(report["table"])
    return report


def add_cli(sub) -> None:
    from .cli_support import plain, seed_arg

    p = sub.add_parser("bench", help="time the whole pipeline with the paper's speed protocol, per stage",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: rpfm bench --preset RPFM-B/2 --device cuda --variants ours,eager-bf16 "
                       "--out bench.json")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="pipeline folder (default: the shipped demo release)")
    src.add_argument("--preset", default=None, help="a preset with random weights instead (tiny, RPFM-B/2, ...)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--variants", default="ours", help="comma-separated: ours, ours-fp32, ours-bf16, eager-fp32, "
                   "eager-bf16, compile-bf16 (default: ours = auto backends; bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default: 8, the paper's)")
    p.add_argument("--steps", type=int, default=60, help="sampler steps (default: 60)")
    p.add_argument("--guidance", type=float, default=1.1, help="guidance scale (default: 1.1; 1.0 = no CFG pass)")
    p.add_argument("--solver", default="euler", help="euler (default), heun or dopri5")
    p.add_argument("--warmup", type=int, default=2, help="warm-up runs before timing (default: 2)")
    p.add_argument("--runs", type=int, default=10, help="timed runs (default: 10)")
    p.add_argument("--stream-frames", type=int, default=0, help="also time streaming over N frames (default: 0)")
    p.add_argument("--stream-steps", type=int, default=10, help="steps per streamed frame (default: 10)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.set_defaults(func=lambda a: (run_bench(a), 0)[1],
                   _flag_names={k: "--" + k.replace("_", "-") for k in ("batch", "steps", "guidance", "warmup", "runs",
                                                                         "stream_frames", "stream_steps", "solver")})

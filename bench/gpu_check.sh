#!/usr/bin/env bash
# One scripted GPU session: build rpfm._C against the machine's torch, run the GPU tests, the kernel and DiT
# microbenchmarks and the speed protocol. Results land in $OUT (default ./gpu_out): logs, JSON, and summary.md.
#
#   bash bench/gpu_check.sh                 # everything
#   STAGES="build tests" bash bench/gpu_check.sh
#   PROTOCOL_VARIANTS=eager-fp32,eager-bf16,compile-bf16,ours bash bench/gpu_check.sh
#
# Packages the GPU machine lacks (diffusers) can be carried as wheels in .whl/ (see README, "GPU check").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
STAGES=${STAGES:-"build tests kernels dit protocol"}
export PYTHONUNBUFFERED=1 RPFM_BENCH_PRESETS=${RPFM_BENCH_PRESETS:-RPFM-B/2,RPFM-XL/2}
summary="$OUT/summary.md"

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/rpfm_site .whl/*.whl \
    && export PYTHONPATH=/tmp/rpfm_site${PYTHONPATH:+:$PYTHONPATH}
fi
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch, triton; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| triton', triton.__version__)"
} | tee "$summary"

has() { [[ " $STAGES " == *" $1 "* ]]; }

if has build; then
  echo "## build" | tee -a "$summary"
  if ! "$PY" -m pip install --no-build-isolation --no-deps . > "$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"; echo "build FAILED" | tee -a "$summary"; exit 1
  fi
  "$PY" -c "import rpfm._ext as e; print(e.EXT_REASON)" 2>&1 | tee -a "$summary"
fi

if has tests; then
  echo "## tests" | tee -a "$summary"
  # the bad-input checks once crashed (segfault) on this machine: run them first, in their own process
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_ext.py -k "bad or Bad" 2>&1 | tail -3 | tee -a "$summary"
  timeout 400 "$PY" -m pytest -q -p no:cacheprovider -rs tests 2>&1 > "$OUT/tests.log"
  grep -E "passed|failed|error" "$OUT/tests.log" | tail -2 | tee -a "$summary"
  grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20 | tee -a "$summary"
fi

if has kernels; then
  echo "## kernel microbenchmarks ($RPFM_BENCH_PRESETS)" | tee -a "$summary"
  timeout 400 "$PY" -m pytest -q -p no:cacheprovider bench/bench_adaln.py bench/bench_gated_residual.py bench/bench_attention.py \
    bench/bench_patchify.py bench/bench_gelu.py --benchmark-json="$OUT/kernels.json" > "$OUT/kernels.log" 2>&1
  tail -1 "$OUT/kernels.log" | tee -a "$summary"
fi

if has dit; then
  echo "## DiT forward" | tee -a "$summary"
  timeout 300 "$PY" -m pytest -q -p no:cacheprovider bench/bench_dit.py bench/bench_integrator.py --benchmark-json="$OUT/dit.json" \
    > "$OUT/dit.log" 2>&1
  tail -1 "$OUT/dit.log" | tee -a "$summary"
fi

if [ -f "$OUT/kernels.json" ] || [ -f "$OUT/dit.json" ]; then
  "$PY" bench/summarize.py "$OUT"/kernels.json "$OUT"/dit.json 2>&1 | tee -a "$summary"
fi

if has protocol; then
  echo "## speed protocol" | tee -a "$summary"
  timeout 400 "$PY" bench/protocol.py --device cuda --variants "${PROTOCOL_VARIANTS:-eager-fp32,eager-bf16,ours}" \
    --json "$OUT/protocol.json" 2> "$OUT/protocol.log" | tee -a "$summary"
  tail -5 "$OUT/protocol.log"
fi

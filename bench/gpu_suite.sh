#!/usr/bin/env bash
# The GPU suite: what a CUDA machine must show, run in one go, results named with the device.
#   bash bench/gpu_suite.sh            (from the repository root, in the project's venv)
# tests/test_cuda.py (the slow compile test included) and the GPU worker of tests/cluster/test_cluster.py
# (skipped where Ray is not installed), then at 1024 px in bfloat16: bench/tracker.py
# (ours eager and compiled; the official predictor plain and --vos-optimized), bench/serve.py
# (eager and --compile, the official side --vos-optimized), bench/display.py and bench/auto.py (the
# detectors' time per 720p frame on the GPU). JSON goes to
# bench/results/*_<device>.json, a log of everything to bench/results/gpu_suite_<device>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY' || { echo "no CUDA device: the GPU suite needs one" >&2; exit 2; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
PY
device=$(python -c "import torch; print(torch.cuda.get_device_name(0))" | tr -c 'A-Za-z0-9\n' '_' | tr -s '_' | sed 's/_$//' | tr 'A-Z' 'a-z')
out=bench/results
log="$out/gpu_suite_${device}.log"
mkdir -p "$out"
: > "$log"
run() {
  echo "+ $*" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
}
status=0
run python -m pytest tests/test_cuda.py -m "slow or not slow" -v || status=1
run python -m pytest tests/cluster/test_cluster.py -k gpu -v -rs || status=1
common=(--device cuda --image-size 1024 --precision bfloat16 --long-frames 1000 --official-long-frames 300)
run python bench/tracker.py "${common[@]}" --out "$out/tracker_${device}_1024.json" || status=1
run python bench/tracker.py "${common[@]}" --compile --vos-optimized --long-frames 0 --official-long-frames 0 \
  --out "$out/tracker_${device}_1024_compiled.json" || status=1
edgetam=(--model edgetam --official-dist "${EDGETAM_DIST:-edgetam-dimos==1.0.1}" --device cuda --image-size 1024
  --precision bfloat16)
run python bench/tracker.py "${edgetam[@]}" --long-frames 1000 --official-long-frames 0 \
  --out "$out/tracker_${device}_edgetam_1024.json" || status=1
run python bench/tracker.py "${edgetam[@]}" --compile --long-frames 0 --official-long-frames 0 \
  --out "$out/tracker_${device}_edgetam_1024_compiled.json" || status=1
run python bench/serve.py --device cuda --image-size 1024 --vos-optimized --out "$out/serve_${device}_1024.json" || status=1
run python bench/serve.py --device cuda --image-size 1024 --compile --vos-optimized --reference-frames 0 \
  --out "$out/serve_${device}_1024_compiled.json" || status=1
run python bench/display.py --out "$out/display_${device}.json" || status=1
run python -m bench.auto --device cuda --out "$out/auto_${device}.json" || status=1
echo "GPU suite finished (status $status); results in $out/*_${device}*.json" | tee -a "$log"
exit $status

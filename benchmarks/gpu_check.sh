#!/usr/bin/env bash
# The GPU check, in one run of under 5 minutes on a CUDA machine: the device tests, the trainer's
# throughput against the measured matmul peak, a whole 50 + 50-trial sweep, then one table.
#
#   benchmarks/gpu_check.sh              # on a CUDA machine (results in $OUT, default /tmp/gpu_check)
#   benchmarks/gpu_check.sh --dry-run    # the same steps on the CPU, small, to check the script
#
# A GPU image with torch but without hydra/optuna/mlflow: put their wheels in .whl/ (see
# docs/gpu.md); they are installed into /tmp/site first, without the network.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ $DRY = 1 ]; then
  DEVICE=cpu; KS="1 8 32"; ITERS=150; E2E_TRIALS=5
else
  DEVICE=cuda; KS="1 32 100 256"; ITERS=1500; E2E_TRIALS=50
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: no CUDA device here (use --dry-run on a CPU machine)" >&2; exit 2; }
fi
ARCHIVE=${ARCHIVE:-}  # the CIFAR-10 JPEG archive (benchmarks/gpu_prepare.sh copies it to .gpu/)
[ -z "$ARCHIVE" ] && [ -f .gpu/cifar10-jpeg.tar.gz ] && ARCHIVE=.gpu/cifar10-jpeg.tar.gz
ARCHIVE_ARGS=()
case "$ARCHIVE" in "") ;; /*) ARCHIVE_ARGS=(--archive "$ARCHIVE") ;; *) ARCHIVE_ARGS=(--archive "$PWD/$ARCHIVE") ;; esac
python3 -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|', \
  [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or 'no GPU')"

echo "== device tests"
timeout 180 python3 -m pytest -q tests/test_devices.py tests/test_batched.py tests/test_gpu_readiness.py \
  tests/test_gpu_workers.py -p no:cacheprovider 2>&1 | tail -n 3 \
  | tee "$OUT/tests.txt"

echo "== trainer throughput ($DEVICE, K = $KS, $ITERS iterations)"
timeout 150 python3 benchmarks/sweep_throughput.py --device "$DEVICE" --ks $KS --iters "$ITERS" \
  --json "$OUT/throughput.json" > "$OUT/throughput.txt" 2>&1 || echo "gpu_check: throughput benchmark failed" >&2
tail -n 12 "$OUT/throughput.txt"

echo "== end-to-end sweep ($E2E_TRIALS + $E2E_TRIALS trials, device=$DEVICE)"
timeout 150 python3 benchmarks/sweep_throughput.py --e2e-only --e2e-trials "$E2E_TRIALS" --iters "$ITERS" \
  --e2e-override "device=$DEVICE" "${ARCHIVE_ARGS[@]}" --json "$OUT/e2e.json" > "$OUT/e2e.txt" 2>&1 \
  || echo "gpu_check: end-to-end sweep failed" >&2
tail -n 8 "$OUT/e2e.txt"

echo "== summary"
python3 - "$OUT" "$DEVICE" <<'EOF'
import json, sys
from pathlib import Path

out, device = Path(sys.argv[1]), sys.argv[2]
rows = []
try:
    t = json.loads((out / "throughput.json").read_text())
    dev = next(iter(t["devices"].values()))
    peak = dev["peak"]["gflops"]
    for r in dev["trainer"]:
        rows.append((f"{r['K']} trials trained ({t['iters']} it), batched", f"{r['batched_s']:.2f} s",
                     f"{r['batched_gflops'] / 1e3:.2f} TFLOP/s = {r['batched_pct_peak']:.0f}% of the measured "
                     f"{peak / 1e3:.2f}; {r['speedup']:.1f}x sequential"))
except Exception as e:  # noqa: BLE001
    rows.append(("trainer throughput", "n/a", str(e)[:80]))
try:
    e = json.loads((out / "e2e.json").read_text())["e2e"]
    overhead = (e["wall_seconds"] - e["studies_split"]["train_seconds"]) / e["trials"]
    rows.append((f"whole sweep, {e['trials']} trials", f"{e['wall_seconds']:.1f} s",
                 f"training {e['studies_split']['train_seconds']:.1f} s, start-up {e['startup_seconds']:.1f} s"))
    rows.append(("per-trial overhead (wall - training) / trials", f"{1e3 * overhead:.0f} ms", ""))
except Exception as err:  # noqa: BLE001
    rows.append(("whole sweep", "n/a", str(err)[:80]))
tests = (out / "tests.txt").read_text().strip().splitlines()
rows.append(("device tests", tests[-1] if tests else "n/a", ""))
width = max(len(r[0]) for r in rows)
print(f"{'check on ' + device:<{width}} | result | detail")
for name, value, detail in rows:
    print(f"{name:<{width}} | {value} | {detail}")
EOF

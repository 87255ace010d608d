#!/usr/bin/env bash
# The documentation's screenshots, from a real sweep on the JPEG copy of CIFAR-10:
#   1. mlflow-runs-table.png      the runs table opened by sweeps.ui_link's link (ranked by val_acc)
#   2. mlflow-trial-templates.png the best trial's templates.png on its MLflow run page
#   3. mlflow-accuracy-map.png    a study's accuracy_map.png on its parent run's page
#   4. compare-report.png         linear-compare's report.html
#
#   docs/screenshots.sh                        # 20 trials per loss, images into docs/img/
#   N_TRIALS=2 OUT=/tmp/shots docs/screenshots.sh
#
# Needs Debian's chromium (apt-get install -y chromium) and linear-sweeps' dependencies. The
# sweep's stores (SQLite), artifacts and the report live in a temporary folder, deleted at the
# end (KEEP=1 keeps it); the browser uses a fresh profile per page and reaches only 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/datasets/cifar10-jpeg.tar.gz}   # from the repository root
N_TRIALS=${N_TRIALS:-20}
NUM_ITERS=${NUM_ITERS:-1500}
OUT=${OUT:-docs/img}
WIDTH=${WIDTH:-1920}
HEIGHT=${HEIGHT:-1080}
BUDGET_MS=${BUDGET_MS:-20000}   # virtual time each page gets to render

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "screenshots.sh: needs chromium (apt-get install -y chromium)" >&2; exit 2; }
[ -e "$DATA" ] || { echo "screenshots.sh: no dataset at $DATA (set DATA=...)" >&2; exit 2; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MLFLOW_DISABLE_TELEMETRY=true

WORK=$(mktemp -d "${TMPDIR:-/tmp}/linear-sweeps-shots.XXXXXX")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -- "-$SERVER_PID" 2>/dev/null || kill "$SERVER_PID" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
mkdir -p "$OUT"
TRACKING="sqlite:///$WORK/mlflow.db"
EXPERIMENT=linear-sweeps-image_folder

echo "== sweep: svm and softmax, $N_TRIALS random-search trials each, on $DATA"
python -m sweeps --multirun loss=svm,softmax sweep=random "hydra.sweeper.n_trials=$N_TRIALS" \
  dataset=image_folder "dataset.root=$DATA" "model.num_iters=$NUM_ITERS" device=cpu \
  "tracking.uri=$TRACKING" "tracking.artifact_location=$WORK/mlartifacts" \
  "hydra.sweeper.storage=sqlite:///$WORK/optuna.db" "hydra.sweep.dir=$WORK/multirun" \
  hydra.sweeper.progress_bar=false

echo "== linear-compare report"
python -m sweeps.compare --tracking-uri "$TRACKING" --experiment "$EXPERIMENT" --out "$WORK/report" --no-log

echo "== mlflow server"
PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
UI="http://127.0.0.1:$PORT"
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid mlflow server --backend-store-uri "$TRACKING" \
  --host 127.0.0.1 --port "$PORT" --workers 1 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 180); do
  curl -sf "$UI/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.5
done
curl -sf "$UI/health" >/dev/null || { echo "mlflow server not ready" >&2; cat "$WORK/server.log" >&2; exit 1; }

# The pages: the link (it saves the runs-table view on the experiment), the best trial, a study.
mapfile -t PAGES < <(python - "$UI" "$EXPERIMENT" <<'EOF'
import sys

import mlflow

from sweeps.ui_link import results_link, run_artifact_url

ui, name = sys.argv[1:]
client = mlflow.MlflowClient(tracking_uri=ui)
exp = client.get_experiment_by_name(name)
url, _ = results_link(ui, exp.experiment_id, client=client)
trials = client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'trial'",
                            order_by=["metrics.val_acc DESC"], max_results=1)
studies = client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'study'", max_results=100)
softmax = [s for s in studies if "softmax" in s.info.run_name] or studies
print(url)
print(run_artifact_url(ui, exp.experiment_id, trials[0].info.run_id, "templates.png"))
print(run_artifact_url(ui, exp.experiment_id, softmax[0].info.run_id, "accuracy_map.png"))
EOF
)

shot() {  # shot NAME URL: a screenshot with a fresh profile, nothing reachable but 127.0.0.1
  local profile="$WORK/profile-$1"
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --disable-default-apps \
    --disable-extensions --hide-scrollbars --mute-audio \
    --host-resolver-rules="MAP * ~NOTFOUND , EXCLUDE 127.0.0.1" \
    --user-data-dir="$profile" --window-size="$WIDTH,$HEIGHT" --virtual-time-budget="$BUDGET_MS" \
    --screenshot="$OUT/$1.png" "$2" 2>>"$WORK/chromium.log" >/dev/null
  echo "$OUT/$1.png  <-  $2"
}

echo "== screenshots"
shot mlflow-runs-table "${PAGES[0]}"
shot mlflow-trial-templates "${PAGES[1]}"
shot mlflow-accuracy-map "${PAGES[2]}"
shot compare-report "file://$WORK/report/report.html"

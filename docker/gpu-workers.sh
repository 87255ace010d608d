#!/bin/bash
# One sweep worker per GPU: runs COMMAND once per GPU id, each copy seeing only its GPU
# (CUDA_VISIBLE_DEVICES), so every GPU trains its own trials and none waits for the others.
# All copies run the same sweep command, so they join one study and share its n_trials.
#   GPU_IDS=0,1,2,3 gpu-workers.sh linear-sweep --multirun ...
# Which GPUs: GPU_IDS if set; else the entries of an existing CUDA_VISIBLE_DEVICES (a SLURM
# allocation of 2,3 gives workers on GPUs 2 and 3, ids or UUIDs as given; torch is not asked);
# else every GPU torch sees (0..N-1).
# Output folders: each worker gets its own Hydra sweep dir, <base>/worker-<id>, appended to its
# command as hydra.sweep.dir=... . <base> is the command's own hydra.sweep.dir=... if it has one
# (that argument is rewritten), else $GPU_WORKERS_DIR, else multirun/<date>/<time> of the start.
# Exits with the last non-zero status of a worker (0 when all succeed). SIGINT/SIGTERM are
# passed on as SIGINT: the workers mark their open trials KILLED and re-queue them.
set -eum  # -m (job control): workers get SIGINT; without it background jobs ignore SIGINT
[ "$#" -gt 0 ] || { echo "usage: GPU_IDS=0,1 $0 COMMAND [ARGS...]" >&2; exit 2; }
ids="${GPU_IDS:-}"
if [ -z "$ids" ] && [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
  ids="$CUDA_VISIBLE_DEVICES"
  [ -n "$ids" ] || { echo "gpu-workers: CUDA_VISIBLE_DEVICES is empty: no GPU visible" >&2; exit 1; }
fi
if [ -z "$ids" ]; then
  n=$(python -c 'import torch; print(torch.cuda.device_count())')
  if [ "$n" -lt 1 ]; then
    echo "gpu-workers: no GPU visible; install the NVIDIA container toolkit or set GPU_IDS" >&2
    exit 1
  fi
  ids=$(seq -s, 0 $((n - 1)))
fi

base="${GPU_WORKERS_DIR:-multirun/$(date +%Y-%m-%d)/$(date +%H-%M-%S)}"
args=()
for arg in "$@"; do
  case "$arg" in
    hydra.sweep.dir=*) base="${arg#hydra.sweep.dir=}" ;;  # the worker's own folder goes under it
    *) args+=("$arg") ;;
  esac
done

pids=""
trap 'kill -INT $pids 2>/dev/null || true' INT TERM
for id in $(echo "$ids" | tr ',' ' '); do
  CUDA_VISIBLE_DEVICES="$id" "${args[@]}" "hydra.sweep.dir=$base/worker-$id" &
  pids="$pids $!"
  echo "gpu-workers: worker pid $! on GPU $id, output in $base/worker-$id"
done
status=0
for pid in $pids; do
  while :; do  # a signal interrupts `wait` (the trap runs): wait again until the worker exits
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  [ "$rc" -eq 0 ] || status=$rc
done
exit "$status"

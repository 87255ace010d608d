"""docker/gpu-workers.sh with a stand-in command: which GPU each worker sees and where it writes.

No GPU is needed: with CUDA_VISIBLE_DEVICES or GPU_IDS set the script must not ask torch (a
`python` that fails is first on PATH to show it)."""
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docker" / "gpu-workers.sh"
# Each worker writes what it saw: its CUDA_VISIBLE_DEVICES and the arguments appended to it.
REPORT = 'printf "%s|%s\\n" "$CUDA_VISIBLE_DEVICES" "$*" > "$REPORTS/gpu-$CUDA_VISIBLE_DEVICES.txt"'


def run_workers(tmp_path, env, *args, command=REPORT):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text("#!/bin/sh\necho 'torch was asked' >&2\nexit 99\n")
    (bin_dir / "python").chmod(0o755)
    reports = tmp_path / "reports"
    reports.mkdir(exist_ok=True)
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "REPORTS": str(reports), **env}
    proc = subprocess.run(["bash", str(SCRIPT), "sh", "-c", command, "sh", *args], env=full_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    seen = {}
    for f in sorted(reports.glob("gpu-*.txt")):
        gpu, _, rest = f.read_text().strip().partition("|")
        seen[gpu] = rest.split()
    return proc, seen


def test_workers_take_the_gpus_of_an_existing_allocation_and_own_folders(tmp_path):
    proc, seen = run_workers(tmp_path, {"CUDA_VISIBLE_DEVICES": "2,3", "GPU_WORKERS_DIR": "out"}, "sweep=tpe")
    assert proc.returncode == 0, proc.stderr
    assert seen == {"2": ["sweep=tpe", "hydra.sweep.dir=out/worker-2"],
                    "3": ["sweep=tpe", "hydra.sweep.dir=out/worker-3"]}


def test_a_given_sweep_dir_is_the_base_of_the_workers_folders(tmp_path):
    proc, seen = run_workers(tmp_path, {"CUDA_VISIBLE_DEVICES": "1"}, "hydra.sweep.dir=/runs/x", "sweep=tpe")
    assert proc.returncode == 0, proc.stderr
    assert seen == {"1": ["sweep=tpe", "hydra.sweep.dir=/runs/x/worker-1"]}


def test_without_a_base_the_folders_share_one_timestamp(tmp_path):
    proc, seen = run_workers(tmp_path, {"GPU_IDS": "0,1"})
    assert proc.returncode == 0, proc.stderr
    dirs = [args[-1].removeprefix("hydra.sweep.dir=") for args in seen.values()]
    assert [Path(d).name for d in dirs] == ["worker-0", "worker-1"]
    assert Path(dirs[0]).parent == Path(dirs[1]).parent and dirs[0].startswith("multirun/")


def test_gpu_ids_win_over_cuda_visible_devices(tmp_path):
    proc, seen = run_workers(tmp_path, {"CUDA_VISIBLE_DEVICES": "2,3", "GPU_IDS": "5"})
    assert proc.returncode == 0, proc.stderr
    assert list(seen) == ["5"]


@pytest.mark.parametrize("env,message", [({"CUDA_VISIBLE_DEVICES": ""}, "CUDA_VISIBLE_DEVICES is empty")])
def test_no_visible_gpu_is_refused(tmp_path, env, message):
    proc, seen = run_workers(tmp_path, env)
    assert proc.returncode == 1 and message in proc.stderr and not seen


def test_a_failing_worker_fails_the_script(tmp_path):
    proc, _ = run_workers(tmp_path, {"CUDA_VISIBLE_DEVICES": "0,1"}, command='[ "$CUDA_VISIBLE_DEVICES" = 0 ] || exit 3')
    assert proc.returncode == 3

"""Does the MLflow runs table of a big sweep still open? A real `mlflow server` on a kept store
(``sweep_scale.py --keep DIR``), the link the sweep printed, rendered in headless chromium.

    python benchmarks/sweep_scale.py --ns 10000 --keep /tmp/big
    python benchmarks/browse_big.py /tmp/big/random-10000

Prints how long the page took, the rows the table shows (MLflow pages runs: the parent run with
its trials nested, more on "Load more"), and whether the first trial row is the study's best.
Needs Debian's chromium. The checks are the same as tests/test_browse.py's, on a real big store.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pg import MLFLOW_SERVER_ENV, Service, free_port  # noqa: E402
from test_browse import VAL, Grid, render  # noqa: E402

from sweeps.ui_link import LOCAL_UI  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path, help="a kept sweep folder: mlflow.db and multirun/optimization_results.yaml")
    parser.add_argument("--browser", default="chromium")
    args = parser.parse_args(argv)
    (study,) = yaml.safe_load((args.work / "multirun" / "optimization_results.yaml").read_text())["studies"]
    with sqlite3.connect(args.work / "mlflow.db") as db:
        n_runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = Service("mlflow", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                    f"sqlite:///{args.work / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
                                    "--workers", "1"], health_url=f"http://127.0.0.1:{port}/health", log_dir=Path(tmp),
                         env=MLFLOW_SERVER_ENV, cwd=args.work).start(timeout=120)
        try:
            url = study["mlflow_url"].replace(LOCAL_UI, f"http://127.0.0.1:{port}")
            t0 = time.perf_counter()
            grid = Grid(render(args.browser, url, Path(tmp) / "profile", budget_ms=30000))
            seconds = time.perf_counter() - t0
        finally:
            server.stop()
    rows = sorted(grid.row_index, key=grid.row_index.get)
    vals = [grid.cells.get((r, VAL)) for r in rows]
    shown = [float(v) for v in vals if v not in (None, "", "-")]
    best = study.get("best_val_acc")
    print(f"{n_runs} MLflow runs; page '{grid.title}' rendered in {seconds:.1f} s (30 s virtual-time budget); "
          f"{len(rows)} rows shown, {len(shown)} with val_acc; first val_acc {shown[:1]}, study best {best}")
    ok = grid.title.startswith("Runs") and shown and abs(shown[0] - best) < 1e-9 and shown == sorted(shown, reverse=True)
    print("runs table opens ranked by val_acc:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

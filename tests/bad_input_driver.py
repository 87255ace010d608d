"""Run several `python -m sweeps` command lines in one process, each as the CLI runs it.

    python tests/bad_input_driver.py CASES.json  ->  RESULTS.json

CASES.json: a list of {"argv": [...], "cwd": folder, "env": {...}}. Each case calls
sweeps.app.main() (the function behind `python -m sweeps` and `linear-sweep`) with its own
sys.argv, working folder and environment, and records its exit code and stderr. Used by
tests/test_bad_inputs.py for the inputs that need torch (data errors): the heavy imports are
paid once for the whole table instead of once per input.
"""
import contextlib
import io
import json
import os
import sys
import traceback


def run_case(case: dict) -> dict:
    from hydra.core.global_hydra import GlobalHydra

    from sweeps.app import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update(case.get("env", {}))
    os.chdir(case["cwd"])
    sys.argv = ["sweeps"] + list(case["argv"])
    err, out, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 -- what Python would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        GlobalHydra.instance().clear()
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return {"rc": code, "stderr": err.getvalue(), "stdout": out.getvalue()}


def main() -> None:
    cases_file, results_file = sys.argv[1], sys.argv[2]
    with open(cases_file) as fh:
        cases = json.load(fh)
    results = [run_case(case) for case in cases]
    with open(results_file, "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main()

"""The code's shape: the largest files, every function over 60 lines, files over 400, and the uses
of Optuna's / MLflow's private names outside the adapter (the sweeps/adapter package).

    python benchmarks/code_shape.py            # exit 1 when a limit is broken
    python benchmarks/code_shape.py --top 15
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("linear_models", "sweeps", "hydra_plugins", "benchmarks", "examples")
ADAPTERS = ("sweeps/adapter/",)
PRIVATE = re.compile(r"\._storage\b|_thread_local|\._suggest\(|optuna\.storages\._|_get_stale|\._trial_id\b|"
                     r"_rdb\b|\._study_id\b|mlflow\.store\.|\._tracking_client\b|mlflow\.tracking\._")
MAX_FILE, MAX_FUNCTION = 400, 60


def sources():
    for folder in FOLDERS:  # not hidden folders: benchmarks/.peer-venv holds a whole venv
        yield from sorted(p for p in (REPO / folder).rglob("*.py")
                          if not any(part.startswith(".") for part in p.relative_to(REPO).parts))


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--top", type=int, default=10, help="how many of the largest files to list")
    args = parser.parse_args(argv)
    files, long_functions, private = [], [], {}
    for path in sources():
        rel = str(path.relative_to(REPO))
        text = path.read_text()
        files.append((len(text.splitlines()), rel))
        long_functions += [(n, rel, name, line) for name, line, n in functions(ast.parse(text)) if n > MAX_FUNCTION]
        hits = len(PRIVATE.findall(text))
        if hits and not rel.startswith(ADAPTERS) and not rel.startswith("benchmarks/code_shape"):
            private[rel] = hits
    files.sort(reverse=True)
    print(f"{'lines':>6}  largest files")
    for n, rel in files[:args.top]:
        print(f"{n:>6}  {rel}{'   <- over ' + str(MAX_FILE) if n > MAX_FILE else ''}")
    print(f"\nfunctions over {MAX_FUNCTION} lines: " + (", ".join(
        f"{rel}:{line} {name} ({n})" for n, rel, name, line in sorted(long_functions, reverse=True)) or "none"))
    print(f"files over {MAX_FILE} lines: {sum(n > MAX_FILE for n, _ in files)}")
    print(f"Optuna/MLflow private names outside {', '.join(ADAPTERS)}: "
          + (", ".join(f"{k} ({v})" for k, v in private.items()) or "0"))
    return int(bool(long_functions or private or any(n > MAX_FILE for n, _ in files)))


if __name__ == "__main__":
    sys.exit(main())

"""One error path for what the user can fix: one line on stderr, exit 2, no traceback.

    linear-sweep: error: model.learning_rate must be > 0, got -0.1

``HYDRA_FULL_ERROR=1`` shows the traceback instead. Program bugs are not caught here: they keep
their traceback. A sweep that stops for too many failed trials is not bad input: one line too,
exit 1.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

PROGRAM = "linear-sweep"
EXIT_USAGE = 2


def user_errors() -> tuple:
    """The exception types that mean "fix your input" (imported lazily: torch, optuna)."""
    from linear_models.data import DataError

    from .config import ConfigError
    from .data import DatasetUnavailable
    from .search_space import SearchSpaceError

    return ConfigError, SearchSpaceError, DataError, DatasetUnavailable, FileNotFoundError


def say(message: str) -> None:
    first, _, rest = str(message).partition("\n")
    print(f"{PROGRAM}: error: {first}", file=sys.stderr)
    if rest.strip():  # at most one hint line
        print(rest.strip().splitlines()[0], file=sys.stderr)


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    from .engine.options import SweepError

    try:
        yield
    except user_errors() as e:
        say(str(e))
        raise SystemExit(EXIT_USAGE) from None
    except SweepError as e:
        say(str(e))
        raise SystemExit(1) from None

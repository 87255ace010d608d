"""One error path for what the user can fix: one line on stderr, exit 2, no traceback.

    linear-sweep: error: model.learning_rate must be > 0, got -0.1

``HYDRA_FULL_ERROR=1`` shows the traceback instead. Program bugs are not caught here: they keep
their traceback. A sweep that stops for too many failed trials is not bad input: one line too,
exit 1. Hydra's own errors about the command line (sweeps/hydra_errors.py) take this path too.

Light: the data error types are only caught once their modules are loaded (none can be raised
before), so a config error is reported without importing torch, Optuna or MLflow.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

PROGRAM = "linear-sweep"
EXIT_USAGE = 2


# (module, exception) pairs caught once the module is loaded: they need torch
_HEAVY_ERRORS = (("linear_models.data.errors", "DataError"), ("sweeps.data", "DatasetUnavailable"))


def user_errors() -> tuple:
    """The exception types that mean "fix your input"."""
    from .config import ConfigError
    from .hydra_errors import CompactHydraException, InterpolationResolutionError
    from .search_space import SearchSpaceError

    loaded = tuple(getattr(sys.modules[m], name) for m, name in _HEAVY_ERRORS if m in sys.modules)
    return (ConfigError, SearchSpaceError, FileNotFoundError, CompactHydraException,
            InterpolationResolutionError) + loaded


def message_of(error: BaseException) -> str:
    from .hydra_errors import CompactHydraException, InterpolationResolutionError

    if isinstance(error, (CompactHydraException, InterpolationResolutionError)):
        from .hydra_errors import describe

        return describe(error)
    return str(error)


def say(message: str, program: str = PROGRAM) -> None:
    """``<program>: error: <first line>`` on stderr, then at most one hint line."""
    first, _, rest = str(message).strip().partition("\n")
    print(f"{program}: error: {first}", file=sys.stderr)
    hint = next((line.strip() for line in rest.splitlines() if line.strip()), "")
    if hint:
        print(hint, file=sys.stderr)


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    from .engine.options import SweepError

    try:
        yield
    except user_errors() as e:
        say(message_of(e))
        raise SystemExit(EXIT_USAGE) from None
    except SweepError as e:
        say(str(e))
        raise SystemExit(1) from None

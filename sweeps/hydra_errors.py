"""Hydra's own errors about the command line, in the one-line format of sweeps/errors.py.

Hydra refuses a key the schema lacks, a value of the wrong type, a config-group option that
does not exist and a malformed override before our code runs; it prints several lines, a hint
about HYDRA_FULL_ERROR and exits 1. :func:`describe` says the same in one line
(``model.num_iters must be an integer, got 'abc'``); :func:`install` routes Hydra's error
reporting through :func:`sweeps.errors.exit_on_user_error`, so they exit 2 like every bad input.
"""
from __future__ import annotations

import dataclasses
import re

from hydra.errors import CompactHydraException, MissingConfigException
from omegaconf.errors import (ConfigAttributeError, ConfigKeyError, InterpolationResolutionError,
                              OmegaConfBaseException)

__all__ = ["CompactHydraException", "InterpolationResolutionError", "describe", "install"]

TYPES = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}
_CONVERT = re.compile(r"Value '(.*)' of type '\w+' could not be converted to (\w+)")
_BOOL = re.compile(r"Value '(.*)' is not a valid bool")
_RAISED = re.compile(r'^\w+ raised while resolving interpolation: "?(.*?)"?$')
_ENV = re.compile(r"Environment variable '(\w+)' not found")


def _fields(kind) -> list:
    return [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else []


def _about_value(cause: OmegaConfBaseException) -> str:
    from .config import did_you_mean

    key = cause.full_key
    msg = str(cause.msg).splitlines()[0] if cause.msg else str(cause)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        section = key.rpartition(".")[0] or "the config"
        return f"{key} is not a key of {section}{did_you_mean(key, _fields(cause.object_type))}"
    converted = _CONVERT.search(msg)
    if converted:
        return f"{key} must be {TYPES.get(converted[2], converted[2])}, got {converted[1]!r}"
    boolean = _BOOL.search(msg)
    if boolean:
        return f"{key} must be true or false, got {boolean[1]!r}"
    return f"{key}: {msg}"


def _about_interpolation(error: InterpolationResolutionError) -> str:
    """``hydra.sweeper.storage: Environment variable 'OPTUNA_STORAGE' not found`` and a hint."""
    first = str(error.msg or error).splitlines()[0]
    raised = _RAISED.match(first)
    what = raised[1] if raised else first
    key = getattr(error, "full_key", None)
    env = _ENV.search(what)
    if env:
        hint = (f"\nset {env[1]} in the environment, or pass {key} on the command line" if key
                else f"\nset {env[1]} in the environment: the config reads it (${{oc.env:{env[1]}}})")
    else:
        hint = ""
    return f"{key}: {what}{hint}" if key else f"{what}{hint}"


def describe(error: Exception) -> str:
    """One line (and at most one hint line) for a Hydra composition or override error, or an
    interpolation that cannot be resolved (``${oc.env:OPTUNA_STORAGE}`` without the variable)."""
    from .config import did_you_mean

    if isinstance(error, InterpolationResolutionError):
        return _about_interpolation(error)
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, name = str(error.missing_cfg_file).rpartition("/")
        if group:
            return (f"{group} must be one of {sorted(error.options)}, got {name!r}"
                    f"{did_you_mean(name, error.options)}")
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return _about_value(cause)
    return str(error)


def install() -> None:
    """Report Hydra's errors (and ours raised inside Hydra) through exit_on_user_error."""
    import hydra._internal.utils as hydra_utils

    from .errors import exit_on_user_error

    original = getattr(hydra_utils, "run_and_report", None)  # Hydra 1.3's; elsewhere: Hydra's own format
    if original is None or getattr(original, "linear_sweeps", False):
        return

    def run_and_report(func):
        def checked():
            with exit_on_user_error():
                return func()

        return original(checked)

    run_and_report.linear_sweeps = True
    hydra_utils.run_and_report = run_and_report

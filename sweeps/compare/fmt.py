"""Small formatters shared by the report, the figures and the command line."""
from __future__ import annotations

import math
import re

import pandas as pd


def finite(v) -> bool:
    """True for a value that converts to a finite float (None, NaN, text: False)."""
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def sci(v) -> str:
    """A learning rate or regularization strength: ``1.23e-04``, or ``n/a``."""
    return f"{float(v):.2e}" if finite(v) else "n/a"


def acc(v) -> str:
    """An accuracy: ``0.4123``, or ``n/a``."""
    return f"{float(v):.4f}" if finite(v) else "n/a"


def cell(v) -> str:
    """A cell of the all-trials table: empty for missing, 4 significant digits for floats."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def metric_key(family: str) -> str:
    """A family label made safe as an MLflow metric-name prefix."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", family)

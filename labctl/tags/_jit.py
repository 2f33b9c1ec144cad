"""Numba selection for the time-tag kernels.

Every hot loop in :mod:`labctl.tags` has a numba ``@njit`` kernel and a pure-numpy fallback that
gives identical results. Which one runs is decided per call:

- ``use_numba=True`` / ``False`` passed to the public function wins;
- otherwise the environment variable ``LABCTL_NO_NUMBA=1`` selects numpy;
- otherwise numba is used when it can be imported.
"""
from __future__ import annotations

import os
from typing import Any, Callable

try:  # numba is a project dependency, but the numpy path must work without it
    from numba import njit as _numba_njit

    HAVE_NUMBA = True
except Exception:  # pragma: no cover - exercised only where numba is missing
    _numba_njit = None
    HAVE_NUMBA = False


def njit(func: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit(cache=True, nogil=True)`` when numba is present, else the plain function."""
    if _numba_njit is None:  # pragma: no cover
        return func
    return _numba_njit(cache=True, nogil=True)(func)


def want_numba(use_numba: bool | None = None) -> bool:
    """Whether a kernel call should use numba (see the module docstring for the rules)."""
    if use_numba is not None:
        return bool(use_numba) and HAVE_NUMBA
    if os.environ.get("LABCTL_NO_NUMBA", "").strip() not in ("", "0", "false", "no"):
        return False
    return HAVE_NUMBA

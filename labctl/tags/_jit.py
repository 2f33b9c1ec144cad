"""Numba selection for the time-tag kernels.

Every hot loop in :mod:`labctl.tags` has a numba ``@njit`` kernel and a pure-numpy fallback that
gives identical results. Which one runs is decided per call:

- ``use_numba=True`` / ``False`` passed to the public function wins;
- otherwise the environment variable ``LABCTL_NO_NUMBA=1`` selects numpy;
- otherwise numba is used when it can be imported.

Kernels are compiled with ``cache=True`` (the machine code is stored next to the module, or in
numba's user cache directory when that is read-only), so only the first call after an install
or an edit pays the compile time, and with ``nogil=True``, so the decoders can run them on
several threads when asked (see :func:`decode_threads`).
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


def decode_threads(threads: int | None = None) -> int:
    """Threads for the block-parallel decoders: ``threads`` if given (at least 1), else the
    environment variable ``LABCTL_THREADS`` (a number, or ``auto`` for the CPUs this process may
    run on, at most 8), else 1.

    One thread is the default because the gain depends on the machine: with an idle second core
    the events-only decode runs ~1.5-2x faster on two threads, but the per-record decode is
    bound by memory bandwidth, and on a busy machine the second thread only waits."""
    if threads is not None:
        return max(1, int(threads))
    env = os.environ.get("LABCTL_THREADS", "").strip().lower()
    if env == "auto":
        return available_cpus()
    try:
        return max(1, int(env)) if env else 1
    except ValueError:
        return 1


def available_cpus() -> int:
    """CPUs this process may run on (at most 8)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


# bit intrinsics for the kernels (LLVM ctpop / cttz: one instruction each on x86-64)
if HAVE_NUMBA:
    from llvmlite import ir as _ir
    from numba import types as _types
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def popcount(typingctx: Any, x: Any) -> Any:  # pragma: no cover - jit
        """Number of set bits of an integer (jitted code only)."""
        if not isinstance(x, _types.Integer):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.ctpop(args[0])
        return x(x), codegen

    @_intrinsic
    def ctz(typingctx: Any, x: Any) -> Any:  # pragma: no cover - jit
        """Trailing zero bits of a non-zero integer (jitted code only)."""
        if not isinstance(x, _types.Integer):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.cttz(args[0], _ir.Constant(_ir.IntType(1), 1))
        return x(x), codegen
else:  # pragma: no cover - the kernels are plain (never called) functions then
    def popcount(x: int) -> int:
        return bin(int(x)).count("1")

    def ctz(x: int) -> int:
        x = int(x)
        return (x & -x).bit_length() - 1

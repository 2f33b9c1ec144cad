"""Cross-correlation histogram between two channels (for calibrating delays between detectors).

``cross_correlation(a, b, bin_width, max_lag)`` histograms the lags ``t_b - t_a`` of every pair of
events with ``-L <= t_b - t_a < L``, where ``L = nbins/2 * bin_width`` is ``max_lag`` rounded up to
whole bins. Times are integers in one unit (e.g. ps, as returned by :func:`photon_times`) and
sorted; bin ``k`` holds lags in ``[-L + k*bin_width, -L + (k+1)*bin_width)``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .records import PHOTON, DecodedRecords
from ._jit import njit, want_numba


def photon_times(d: DecodedRecords, channel: int, global_resolution: float,
                 resolution: float | None = None, unit: float = 1e-12) -> np.ndarray:
    """Absolute photon times of one channel as int64 in units of ``unit`` (s; default ps).

    T2: ``time * global_resolution``; T3: ``nsync * global_resolution + dtime * resolution``
    (float64 arithmetic, so exact to well below 1 ps for runs shorter than about a day).
    """
    sel = (d.kind == PHOTON) & (d.channel == channel)
    t = d.time[sel].astype(np.float64) * (global_resolution / unit)
    if d.fmt.is_t3:
        if resolution is None:
            raise ValueError("T3 photon times need the dtime resolution")
        t = t + d.dtime[sel].astype(np.float64) * (resolution / unit)
    return np.rint(t).astype(np.int64)


@njit
def _xcorr_nb(a, b, bw, half, hist):  # pragma: no cover - jit
    j0 = 0
    nb = b.shape[0]
    for i in range(a.shape[0]):
        ta = a[i]
        lo = ta - half
        while j0 < nb and b[j0] < lo:
            j0 += 1
        j = j0
        hi = ta + half
        while j < nb and b[j] < hi:
            hist[(b[j] - lo) // bw] += 1
            j += 1


def _xcorr_np(a: np.ndarray, b: np.ndarray, bw: int, half: int, hist: np.ndarray,
              block: int = 1 << 16) -> None:
    for s in range(0, a.shape[0], block):
        aa = a[s:s + block]
        lo = np.searchsorted(b, aa - half, "left")
        hi = np.searchsorted(b, aa + half, "left")
        n = hi - lo
        tot = int(n.sum())
        if not tot:
            continue
        owner = np.repeat(np.arange(aa.shape[0]), n)
        offs = np.arange(tot) - np.repeat(np.cumsum(n) - n, n)
        lag = b[lo[owner] + offs] - aa[owner] + half
        hist += np.bincount(lag // bw, minlength=hist.shape[0])[: hist.shape[0]]


def cross_correlation(a: Iterable[int] | np.ndarray, b: Iterable[int] | np.ndarray, bin_width: int,
                      max_lag: int, *, use_numba: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``t_b - t_a`` (see the module docstring).

    Returns ``(left_edges, counts)``: int64 arrays of the bins' lower lag edges (time units of the
    input) and the pair counts.
    """
    bw = int(bin_width)
    if bw <= 0 or max_lag <= 0:
        raise ValueError("bin_width and max_lag must be > 0")
    nhalf = -(-int(max_lag) // bw)
    half = nhalf * bw
    aa = np.ascontiguousarray(np.asarray(a, dtype=np.int64))
    bb = np.ascontiguousarray(np.asarray(b, dtype=np.int64))
    if aa.size > 1 and np.any(np.diff(aa) < 0) or bb.size > 1 and np.any(np.diff(bb) < 0):
        raise ValueError("event times must be sorted")
    hist = np.zeros(2 * nhalf, np.int64)
    if aa.size and bb.size:
        if want_numba(use_numba):
            _xcorr_nb(aa, bb, np.int64(bw), np.int64(half), hist)
        else:
            _xcorr_np(aa, bb, bw, half, hist)
    edges = -half + bw * np.arange(2 * nhalf, dtype=np.int64)
    return edges, hist
